//! The real all-MiniLM-L6-v2 through the pool, against reference embeddings computed by an
//! independent implementation (`../shared/minilm-reference.json`: mean pooling, L2 norm,
//! truncation at 256 tokens). Cosine ≥ 0.99999 per text, one at a time and batched.
//!
//! The checkpoint comes from `tools/fetch-minilm.sh` (into `.cache/all-MiniLM-L6-v2/`, or
//! `$MINILM_DIR`); without it these tests fail and say so.

mod common;


use common::cosine;
use model_backends::config::ModelConfig;
use model_backends::model_dir::ModelDir;
use model_backends::{EmbeddingModel, EmbeddingPool, TextMode};
use model_pool::{DeviceId, MemoryGovernor};

const KEY: &str = "sentence-transformers/all-MiniLM-L6-v2";

use common::minilm::{checkpoint, reference};

fn pool() -> EmbeddingPool {
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, 8 << 30)]).unwrap();
    let config = ModelConfig::registry(KEY, checkpoint()).unwrap();
    EmbeddingPool::builder()
        .governor(governor)
        .model(config)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_minilm_matches_the_reference_one_by_one_and_batched() {
    let refs = reference();
    let pool = pool();
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let batched = pool.embed(KEY, texts.clone()).await.unwrap();
    for (r, got) in refs.iter().zip(&batched) {
        assert_eq!(got.len(), 384);
        let c = cosine(got, &r.embedding);
        assert!(c >= 0.99999, "batched `{}`: cosine {c}", r.text);
    }
    for r in &refs {
        let single = pool.embed(KEY, [r.text.as_str()]).await.unwrap();
        let c = cosine(&single[0], &r.embedding);
        assert!(c >= 0.99999, "alone `{}`: cosine {c}", r.text);
    }
    // Concurrent callers are batched together by the worker; results are unchanged.
    let concurrent = futures::future::join_all(texts.iter().map(|t| pool.embed(KEY, [*t]))).await;
    for (r, got) in refs.iter().zip(concurrent) {
        let c = cosine(&got.unwrap()[0], &r.embedding);
        assert!(c >= 0.99999, "concurrent `{}`: cosine {c}", r.text);
    }
    let status = pool.status();
    let m = status.model(KEY).unwrap();
    assert_eq!(m.counters.loads, 1);
    let measured = m.measured_bytes.expect("the load is measured");
    // The weights alone are 86.6 MiB: the measured resident set cannot be less than most of it.
    assert!(measured > 60 << 20, "measured {measured} bytes");
    println!("{}", pool.memory_report());
}

#[test]
fn token_counts_and_truncation_at_256() {
    let refs = reference();
    let config = ModelConfig::registry(KEY, checkpoint()).unwrap();
    let model = EmbeddingModel::load(&config).unwrap();
    assert_eq!(
        model.max_input_tokens(),
        256,
        "sentence_bert_config.json max_seq_length"
    );
    let texts: Vec<String> = refs.iter().map(|r| r.text.clone()).collect();
    let encoded = model.tokenize(&texts, &TextMode::Document).unwrap();
    for (r, e) in refs.iter().zip(&encoded) {
        assert_eq!(e.len(), r.n_tokens, "`{}`", r.text);
    }
    // The checkpoint's tokenizer.json says "truncate at 128, pad to 128"; Sentence-Transformers
    // (and the reference) truncate at 256 and do not pad.
    let long = model_backends::report::synthetic_text(400);
    let e = &model
        .tokenize(std::slice::from_ref(&long), &TextMode::Document)
        .unwrap()[0];
    assert_eq!(e.len(), 256);
    assert!(e.truncated);
    assert_eq!(*e.ids.last().unwrap(), 102, "[SEP] is kept at the end");
    let short = model
        .tokenize(&["hello world".to_owned()], &TextMode::Document)
        .unwrap();
    assert_eq!(short[0].len(), 4, "no padding");
    // A long text embeds like its first 254 word pieces.
    let head: String = long.split(' ').take(254).collect::<Vec<_>>().join(" ");
    let v = model
        .embed_texts(&[long, head], &TextMode::Document)
        .unwrap();
    assert!(cosine(&v[0], &v[1]) > 0.99999);
}

#[test]
fn estimate_of_the_real_checkpoint_is_the_registry_figure() {
    // Re-running the estimator on the checkpoint on disk (its config.json, safetensors header
    // and tokenizer size) gives the figure the registry compiled in.
    let dir = ModelDir::local(checkpoint()).unwrap();
    let e = model_backends::registry::estimate_checkpoint(KEY, &dir, None).unwrap();
    assert_eq!(
        e.est_memory_allocation_mb,
        model_registry::ALL_MINILM_L6_V2.est_memory_allocation_mb as u64
    );
    assert_eq!(
        e.weights_bytes,
        model_registry::ALL_MINILM_L6_V2.memory.weights_bytes
    );
}

#[test]
fn cli_reports_estimate_against_measured_memory() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_candle-pool"))
        .args(["report", "--model", KEY, "--weights"])
        .arg(checkpoint())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with(KEY))
        .unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], "200", "the registry estimate: {row}");
    let measured: f64 = cols[3].parse().unwrap();
    let peak: f64 = cols[5].parse().unwrap();
    // 86.6 MiB of F32 weights must show up in what the load leaves resident and in the peak.
    assert!(measured > 60.0 && peak >= measured, "{row}");
}
