//! The official OpenAI Python client (and `prometheus_client`'s parser) against the server:
//! `tests/python/openai_client.py`, in a virtualenv that `tools/openai-client-venv.sh` creates
//! from the package registry on first use. Without Python or the packages this test fails,
//! saying what to install.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{TestServer, fixture};
use model_fixtures::minilm;
use model_server::ServerOptions;
use model_serving::ServedModel;

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
const KEY: &str = "sk-python-client-test";

/// The interpreter: $OPENAI_CLIENT_PYTHON, else the virtualenv's (created if need be).
async fn python(root: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("OPENAI_CLIENT_PYTHON") {
        return p.into();
    }
    let script = root.join("tools/openai-client-venv.sh");
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("creating the virtualenv took over ten minutes")
    .unwrap_or_else(|e| {
        panic!(
            "cannot run {}: {e}; install bash and python3",
            script.display()
        )
    });
    assert!(
        out.status.success(),
        "{} failed ({}): {}\nThe Python client test needs python3 with the venv module (e.g. \
         `apt-get install python3 python3-venv`) and the package registry for `openai` and \
         `prometheus_client`; or set OPENAI_CLIENT_PYTHON to an interpreter that has both.",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("the script prints the interpreter")
            .trim(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_gets_what_it_expects() {
    let root = minilm::workspace();
    let python = python(&root).await;
    let models = vec![
        ServedModel::registry(MINILM, minilm::checkpoint()).unwrap(),
        fixture("tiny/bert"),
        fixture("tiny/phi3"),
        fixture("tiny/flux"),
    ];
    let options = ServerOptions {
        api_key: Some(KEY.into()),
        body_limit: 1 << 20,
        ..ServerOptions::default()
    };
    let s = TestServer::start_with(models, 8 << 30, options).await;
    let script = root.join("crates/model-server/tests/python/openai_client.py");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .env("SERVER_URL", &s.base)
        .env("SERVER_API_KEY", KEY)
        .env("MINILM", MINILM)
        .env(
            "MINILM_REFERENCE",
            root.join("tests/data/minilm-reference.json"),
        )
        .env("EMBEDDER", "tiny/bert")
        .env("GENERATOR", "tiny/phi3")
        .env("PAINTER", "tiny/flux")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the Python client finished within five minutes")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}",
        script.display(),
        out.status
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
    s.stop().await;
}
