//! `candle-pool` fetching a model from its key alone, against the fixture hub (the Hub's URL
//! paths, Range, ETag, the CDN redirect of LFS files) serving the real all-MiniLM-L6-v2 and a
//! tiny checkpoint written by the fixtures code: the same vector as the local-directory run,
//! nothing fetched offline, never-fits refused before a byte, an unknown repo fetched by id.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fixture_hub::{Fault, FixtureHub, FixtureRepo};

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The binary with the Hub pointed at `hub`, the cache at `cache`, and nothing of the caller's
/// Hub settings (token, offline flag) leaking in.
fn candle_pool(hub: &FixtureHub, cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_candle-pool"));
    c.args(args)
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HOME", cache.join("home"))
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env_remove("MODEL_POOL_BUDGET")
        .env_remove("MODEL_CARDS_DIR");
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run candle-pool")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn embedding(out: &Output) -> Vec<f64> {
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// Runs `args` with `env` set, expecting a failure that asked the hub nothing: its stderr.
fn refused_with_nothing_fetched(hub: &FixtureHub, args: &[&str], env: (&str, &str)) -> String {
    let cache = tempfile::tempdir().unwrap();
    let out = run(candle_pool(hub, cache.path(), args).env(env.0, env.1));
    assert!(!out.status.success());
    assert!(hub.log().is_empty(), "{:#?}", hub.log());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `candle-pool pull --model` MiniLM, which must succeed: the folder it prints.
fn pull_minilm(hub: &FixtureHub, cache: &Path) -> String {
    let out = ok(run(&mut candle_pool(
        hub,
        cache,
        &["pull", "--model", MINILM],
    )));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn minilm_hub() -> (FixtureHub, std::path::PathBuf) {
    let dir = model_fixtures::minilm::checkpoint();
    let repo = FixtureRepo::from_dir(MINILM, &dir, FixtureRepo::default_lfs).unwrap();
    (FixtureHub::start(vec![repo]), dir)
}

#[test]
fn a_registry_key_alone_fetches_minilm_and_embeds_as_the_local_copy_does_then_offline_fetches_nothing()
 {
    let (hub, dir) = minilm_hub();
    let cache = tempfile::tempdir().unwrap();
    let local = ok(run(candle_pool(
        &hub,
        cache.path(),
        &["embed", "--model", MINILM],
    )
    .arg("--weights")
    .arg(&dir)
    .arg("hello world")));
    assert!(hub.log().is_empty(), "a local directory needs no Hub");

    let started = std::time::Instant::now();
    let fetched = ok(run(&mut candle_pool(
        &hub,
        cache.path(),
        &["embed", "--model", MINILM, "hello world"],
    )));
    let first_run = started.elapsed();
    assert_eq!(embedding(&fetched), embedding(&local));
    let weights = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .len();
    let sent = hub.file_bytes_sent();
    assert!(
        sent >= weights,
        "{sent} B sent, the weights alone are {weights} B"
    );
    let stderr = String::from_utf8_lossy(&fetched.stderr);
    assert!(
        stderr.contains("downloading") && stderr.contains("model.safetensors"),
        "progress lines on a non-terminal stderr: {stderr}"
    );
    // Only what the model needs: not the card.
    assert_eq!(hub.requests_matching("README.md"), 0, "{:#?}", hub.log());
    eprintln!(
        "first run from an empty cache: {sent} B of files fetched, {:.2} s to the embedding",
        first_run.as_secs_f64()
    );

    hub.clear_log();
    let offline = ok(run(candle_pool(
        &hub,
        cache.path(),
        &["embed", "--model", MINILM, "hello world"],
    )
    .env("HF_HUB_OFFLINE", "1")));
    assert_eq!(embedding(&offline), embedding(&local));
    assert!(hub.log().is_empty(), "offline: {:#?}", hub.log());

    // Online again with everything cached: listings only, no file bytes.
    hub.clear_log();
    ok(run(&mut candle_pool(
        &hub,
        cache.path(),
        &["embed", "--model", MINILM, "hello world"],
    )));
    assert_eq!(hub.file_bytes_sent(), 0, "{:#?}", hub.log());

    // `pull` prints the snapshot folder, and fetches nothing that is there.
    hub.clear_log();
    let folder = pull_minilm(&hub, cache.path());
    assert!(
        Path::new(&folder).join("model.safetensors").is_file(),
        "{folder}"
    );
    assert!(
        folder.starts_with(cache.path().to_str().unwrap()),
        "{folder}"
    );
    assert_eq!(hub.file_bytes_sent(), 0, "{:#?}", hub.log());
}

#[test]
fn a_model_that_can_never_fit_is_refused_before_a_byte_is_fetched() {
    let (hub, _) = minilm_hub();
    for args in [
        &["embed", "--model", MINILM, "hello world"][..],
        &["pull", "--model", MINILM][..],
    ] {
        let err = refused_with_nothing_fetched(&hub, args, ("MODEL_POOL_BUDGET", "50MB"));
        assert!(
            err.contains("never fit") && err.contains(MINILM),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn offline_without_the_files_says_what_is_missing_and_how_to_get_it() {
    let (hub, _) = minilm_hub();
    let err = refused_with_nothing_fetched(
        &hub,
        &["embed", "--model", MINILM, "hello world"],
        ("HF_HUB_OFFLINE", "1"),
    );
    assert!(
        err.contains(MINILM) && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
}

#[test]
fn a_repository_outside_the_registry_is_fetched_by_id_and_revision() {
    let dir = model_fixtures::embed::tiny(model_serving::Family::Bert);
    let repo = FixtureRepo::from_dir("acme/tiny-bert", &dir, FixtureRepo::default_lfs).unwrap();
    let sha = repo.sha.clone();
    let hub = FixtureHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let local = ok(run(candle_pool(
        &hub,
        cache.path(),
        &["embed", "--model", "acme/tiny-bert"],
    )
    .arg("--weights")
    .arg(&dir)
    .arg("rust")));
    let fetched = ok(run(&mut candle_pool(
        &hub,
        cache.path(),
        &[
            "embed",
            "--model",
            "acme/tiny-bert",
            "--revision",
            &sha,
            "rust",
        ],
    )));
    assert_eq!(embedding(&fetched), embedding(&local));
    assert!(
        cache
            .path()
            .join("models--acme--tiny-bert/snapshots")
            .join(&sha)
            .join("config.json")
            .is_file()
    );

    let out = run(&mut candle_pool(
        &hub,
        cache.path(),
        &["embed", "--model", "acme/no-such-model", "rust"],
    ));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("acme/no-such-model") && err.contains("404"),
        "{err}"
    );
}

#[test]
fn kimi_k2_never_starts_its_621_gb_download() {
    let hub = FixtureHub::start(vec![]);
    for args in [
        &["generate", "--model", "unsloth/Kimi-K2-Instruct-GGUF", "hi"][..],
        &["pull", "--model", "unsloth/Kimi-K2-Instruct-GGUF"][..],
    ] {
        let err = refused_with_nothing_fetched(&hub, args, ("MODEL_POOL_BUDGET", "24GiB"));
        assert!(
            err.contains("Kimi-K2") && err.contains("never fit"),
            "{err}"
        );
    }
}

#[test]
fn a_download_killed_midway_resumes_where_it_stopped() {
    let (hub, dir) = minilm_hub();
    let cache = tempfile::tempdir().unwrap();
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    hub.fault(Fault::StallAfter {
        path: "model.safetensors".into(),
        keep: 24 << 20,
    });
    let mut child = candle_pool(&hub, cache.path(), &["pull", "--model", MINILM])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the transfer is held open midway and the client has written part of it.
    let blobs = cache
        .path()
        .join("models--sentence-transformers--all-MiniLM-L6-v2/blobs");
    let partial_len = || -> u64 {
        std::fs::read_dir(&blobs)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while hub.stalled() == 0 || partial_len() < 8 << 20 {
        assert!(Instant::now() < deadline, "the download never got midway");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = partial_len();
    assert!(kept > 0 && kept < weights.len() as u64, "{kept}");
    let snapshot = cache
        .path()
        .join("models--sentence-transformers--all-MiniLM-L6-v2/snapshots");
    assert!(
        !walk_has(&snapshot, "model.safetensors"),
        "a partial file never stands at the final path"
    );

    hub.clear_faults();
    hub.release_stalls();
    hub.clear_log();
    let folder = pull_minilm(&hub, cache.path());
    assert_eq!(
        std::fs::read(Path::new(&folder).join("model.safetensors")).unwrap(),
        weights
    );
    let gets: Vec<_> = hub
        .log()
        .into_iter()
        .filter(|l| l.method == "GET" && l.url.starts_with("/cdn/"))
        .collect();
    assert_eq!(gets.len(), 1, "{gets:#?}");
    assert_eq!(
        gets[0].range.as_deref(),
        Some(format!("bytes={kept}-{}", weights.len() - 1).as_str()),
        "resumed from the partial file"
    );
    assert_eq!(gets[0].sent, weights.len() as u64 - kept);
}

/// Whether a file named `name` is anywhere under `dir`.
fn walk_has(dir: &Path, name: &str) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let p = e.path();
            p.file_name().is_some_and(|n| n == name) || (p.is_dir() && walk_has(&p, name))
        })
}
