//! The real all-MiniLM-L6-v2 through the pool, against reference embeddings computed by an
//! independent implementation (`tests/data/minilm-reference.json`: sentence-transformers'
//! mean pooling, L2 norm, truncation at 256 tokens). Cosine ≥ 0.99999 per text, one at a time
//! and batched. (A test binary of its own: it checks the measured load memory, and resident
//! sets are process-wide.)
//!
//! The checkpoint comes from `tools/fetch-minilm.sh` (into `.cache/all-MiniLM-L6-v2/`, or
//! `$MINILM_DIR`); without it these tests fail and say so.

use model_fixtures::cosine;
use model_fixtures::minilm::{checkpoint, reference};
use model_networks::EmbeddingModel;
use model_pool::{DeviceId, MemoryGovernor};
use model_registry::Backend;
use model_serving::loader::{LoadedModel, load_measured_blocking};
use model_serving::{ModelPool, ServedModel, TextMode};

const KEY: &str = "sentence-transformers/all-MiniLM-L6-v2";

fn pool() -> ModelPool {
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, 8 << 30)]).unwrap();
    ModelPool::builder()
        .governor(governor)
        .model(ServedModel::registry(KEY, checkpoint()).unwrap())
        .build()
        .unwrap()
}

/// The registry model loaded as the pool loads it, outside a pool.
fn load() -> EmbeddingModel {
    let served = ServedModel::registry(KEY, checkpoint()).unwrap();
    match load_measured_blocking(&served, None).unwrap().0 {
        LoadedModel::Embedder(m) => m,
        other => panic!("{KEY} loaded as {other:?}"),
    }
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
    let model = load();
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
    let long = model_serving::report::synthetic_text(400);
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
    let e =
        model_serving::checkpoint::estimate_checkpoint(Backend::Bert, &checkpoint(), None).unwrap();
    assert_eq!(
        e.est_memory_allocation_mb,
        model_registry::ALL_MINILM_L6_V2.est_memory_allocation_mb as u64
    );
    assert_eq!(
        e.weights_bytes,
        model_registry::ALL_MINILM_L6_V2.memory.weights_bytes
    );
}
