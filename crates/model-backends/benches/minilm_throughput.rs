//! all-MiniLM-L6-v2 throughput in sentences per second, at batch 1 and 32, with ~12- and
//! ~128-token texts, directly on the loaded model and through the pool (queue, batching
//! worker, lease, blocking-pool hop). The difference is the pool's overhead.
//!
//! Needs the real checkpoint (`tools/fetch-minilm.sh`, or `$MINILM_DIR`).
//!
//! ```sh
//! cargo bench -p model-backends --bench minilm_throughput
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use model_backends::{EmbeddingModel, EmbeddingPool, ModelConfig, TextMode};
use model_pool::{DeviceId, MemoryGovernor};

const KEY: &str = "sentence-transformers/all-MiniLM-L6-v2";

const SENTENCES: [&str; 8] = [
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "A memory aware pool keeps models resident until they are idle again.",
    "Rust makes systems programming safer without giving up any performance.",
    "The committee approved the new budget after a long and heated debate.",
    "Fresh bread from the corner bakery sells out before nine every morning.",
    "Astronomers spotted a faint comet moving slowly across the northern sky.",
    "The children built a tall sandcastle while their parents read books.",
    "Heavy rain flooded several streets and delayed trains across the city.",
];

fn checkpoint() -> PathBuf {
    let dir = std::env::var_os("MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/all-MiniLM-L6-v2")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "the real all-MiniLM-L6-v2 is not in {}: run `tools/fetch-minilm.sh` (or set MINILM_DIR)",
        dir.display()
    );
    dir
}

/// `n` texts of about `tokens` tokens each (special tokens included), all different.
fn texts(model: &EmbeddingModel, n: usize, tokens: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut words: Vec<&str> = Vec::new();
            let mut k = i;
            loop {
                let candidate = {
                    let mut w = words.clone();
                    w.extend(SENTENCES[k % SENTENCES.len()].split(' '));
                    w
                };
                let len = |ws: &[&str]| {
                    model
                        .tokenize(&[ws.join(" ")], &TextMode::Document)
                        .unwrap()[0]
                        .len()
                };
                if len(&candidate) <= tokens {
                    words = candidate;
                    k += 1;
                    continue;
                }
                // Fill word by word up to the target.
                for w in SENTENCES[k % SENTENCES.len()].split(' ') {
                    words.push(w);
                    if len(&words) > tokens {
                        words.pop();
                        break;
                    }
                }
                break;
            }
            words.join(" ")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let config = ModelConfig::registry(KEY, checkpoint()).unwrap();
    let model = EmbeddingModel::load(&config).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(async {
        let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, 8 << 30)]).unwrap();
        EmbeddingPool::builder()
            .governor(governor)
            .model(config.clone())
            .build()
            .unwrap()
    });
    let mut group = c.benchmark_group("minilm");
    group.warm_up_time(Duration::from_secs(2));
    for (label, tokens) in [("12tok", 12), ("128tok", 128)] {
        for batch in [1usize, 32] {
            let inputs = texts(&model, batch, tokens);
            let lens: Vec<usize> = model
                .tokenize(&inputs, &TextMode::Document)
                .unwrap()
                .iter()
                .map(|e| e.len())
                .collect();
            eprintln!(
                "{label} batch {batch}: token counts {:?}",
                &lens[..lens.len().min(4)]
            );
            group.throughput(Throughput::Elements(batch as u64));
            let heavy = tokens * batch >= 1024;
            group.sample_size(if heavy { 10 } else { 50 });
            group.measurement_time(Duration::from_secs(if heavy { 12 } else { 6 }));
            let id = format!("{label}/batch{batch}");
            group.bench_with_input(BenchmarkId::new("direct", &id), &inputs, |b, inputs| {
                b.iter(|| model.embed_texts(inputs, &TextMode::Document).unwrap())
            });
            rt.block_on(pool.embed(KEY, inputs.clone())).unwrap();
            group.bench_with_input(BenchmarkId::new("pool", &id), &inputs, |b, inputs| {
                b.to_async(&rt)
                    .iter(|| async { pool.embed(KEY, inputs.clone()).await.unwrap() })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
