//! The embedding API on the pool with real (tiny) Candle models: admission, eviction under a
//! small budget, never-fits refusals, dynamic batching of concurrent callers, and the
//! `candle-pool` binary.

mod common;

use std::process::{Command, Stdio};

use model_backends::config::ModelConfig;
use model_backends::{EmbedError, EmbeddingPool, Family};
use model_pool::{DeviceId, MemoryGovernor, ModelStateKind, PoolError};

fn config(family: Family, key: &str) -> ModelConfig {
    let dir = common::tiny(family);
    ModelConfig::new(key, dir.clone())
        .family(family)
        .memory(common::tiny_memory(family, &dir))
}

fn pool(budget: u64, configs: Vec<ModelConfig>) -> EmbeddingPool {
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, budget)]).unwrap();
    EmbeddingPool::builder()
        .governor(governor)
        .models(configs)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_for_one_model_serves_two_by_evicting_the_idle_one() {
    let a = config(Family::Bert, "a");
    let b = config(Family::JinaBert, "b");
    let (sa, sb) = (a.pool_spec(), b.pool_spec());
    // Enough for either model with a batch running, not for both resident.
    let need = sa.need_bytes().max(sb.need_bytes());
    let both =
        sa.resident_bytes + sb.resident_bytes + sa.per_request_bytes.max(sb.per_request_bytes);
    assert!(need < both);
    let pool = pool(need + (both - need) / 2, vec![a, b]);
    let first = pool.embed("a", ["hello world"]).await.unwrap();
    pool.embed("b", ["hello world"]).await.unwrap();
    let status = pool.status();
    assert_eq!(
        status.model("a").unwrap().state,
        ModelStateKind::Unloaded,
        "a was evicted for b"
    );
    assert_eq!(status.model("a").unwrap().counters.evictions, 1);
    let again = pool.embed("a", ["hello world"]).await.unwrap();
    assert_eq!(
        first, again,
        "reloaded from the same files, the same vectors"
    );
    let status = pool.status();
    assert_eq!(status.model("a").unwrap().counters.loads, 2);
    // b's batch reservation is the larger one: with b idle, a and its batch fit beside it.
    assert_eq!(status.model("b").unwrap().state, ModelStateKind::Ready);
    let device = status
        .devices
        .iter()
        .find(|d| d.device == DeviceId::Cpu)
        .unwrap();
    assert!(device.high_water_bytes <= device.budget_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_larger_than_the_budget_is_refused_at_once() {
    let a = config(Family::Bert, "a");
    let need = a.pool_spec().need_bytes();
    let pool = pool(need / 2, vec![a]);
    let err = pool.embed("a", ["hello"]).await.unwrap_err();
    assert!(
        matches!(err, EmbedError::Pool(PoolError::NeverFits { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("can never fit"), "{err}");
    assert_eq!(
        pool.status().model("a").unwrap().counters.loads_started,
        0,
        "nothing was loaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_batches_and_leases() {
    let a = config(Family::Bert, "a");
    let pool = pool(4 << 30, vec![a]);
    let texts: Vec<String> = (0..24)
        .map(|i| format!("{} {}", common::WORDS[i % 40], common::WORDS[(i * 7) % 40]))
        .collect();
    let alone = pool.embed("a", texts.clone()).await.unwrap();
    let leases_before = pool.status().model("a").unwrap().counters.leases;
    let answers =
        futures::future::join_all(texts.iter().map(|t| pool.embed("a", [t.as_str()]))).await;
    for (i, a) in answers.into_iter().enumerate() {
        let c = common::cosine(&a.unwrap()[0], &alone[i]);
        assert!(c > 0.99999, "text {i}: cosine {c}");
    }
    let leases = pool.status().model("a").unwrap().counters.leases - leases_before;
    assert!(
        leases < 24,
        "24 concurrent requests took {leases} leases: they were not batched"
    );
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_candle-pool"))
}

#[test]
fn cli_lists_the_registry_with_estimates_and_fit() {
    let out = bin()
        .arg("list")
        .env("MODEL_POOL_BUDGET", "4GiB")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("RAM budget: 4.0 GiB"), "{text}");
    let minilm = text
        .lines()
        .find(|l| l.starts_with("sentence-transformers/all-MiniLM-L6-v2"))
        .unwrap();
    assert!(
        minilm.contains(" bert ") && minilm.contains(" 200 ") && minilm.trim_end().ends_with("yes"),
        "{minilm}"
    );
    let stella = text
        .lines()
        .find(|l| l.starts_with("dunzhang/stella_en_1.5B_v5"))
        .unwrap();
    assert!(
        stella.trim_end().ends_with("no"),
        "6900 MB does not fit 4 GiB: {stella}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains('/')).count(),
        12,
        "{text}"
    );
}

#[test]
fn cli_embeds_arguments_and_stdin_as_json() {
    let dir = common::tiny(Family::Bert);
    let out = bin()
        .args(["embed", "--model", "my/tiny-bert", "--weights"])
        .arg(&dir)
        .args(["hello world", "rust"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = json.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["text"], "hello world");
    assert_eq!(items[1]["embedding"].as_array().unwrap().len(), 32);

    let mut child = bin()
        .args(["embed", "--model", "my/tiny-bert", "--weights"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello world\n\nrust\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let from_stdin: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_stdin, json, "stdin lines embed like arguments");

    let out = bin()
        .args([
            "embed",
            "--model",
            "x",
            "--weights",
            "/nonexistent/dir",
            "hi",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/dir"), "{err}");
}
