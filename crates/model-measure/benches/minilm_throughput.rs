//! all-MiniLM-L6-v2 throughput in sentences per second, at batch 1 and 32, with ~12- and
//! ~128-token texts, directly on the loaded model and through the pool (queue, batching
//! worker, lease, blocking-pool hop). The difference is the pool's overhead.
//!
//! Needs the real checkpoint (`tools/fetch-minilm.sh`, or `$MINILM_DIR`).
//!
//! ```sh
//! cargo bench -p model-measure --bench minilm_throughput
//! ```

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use model_fixtures::minilm::checkpoint;
use model_networks::EmbeddingModel;
use model_pool::{DeviceId, MemoryGovernor};
use model_serving::loader::{LoadedModel, load_measured_blocking};
use model_serving::{ModelPool, ServedModel, TextMode};

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
    let config = ServedModel::registry(KEY, checkpoint()).unwrap();
    // The same loader the pool uses, so that both sides run the same model.
    let LoadedModel::Embedder(model) = load_measured_blocking(&config, None).unwrap().0 else {
        panic!("{KEY} is an embedder")
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(async {
        let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, 8 << 30)]).unwrap();
        ModelPool::builder()
            .governor(governor)
            .model(config.clone())
            .build()
            .unwrap()
    });
    paired(&model, &pool, &rt);
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

/// Direct and pooled runs alternated block by block, so that load from other processes on a
/// shared machine hits both alike; prints median wall time per sentence and the process CPU
/// time (all threads, from /proc/self/stat) per sentence, and the pool's overhead in each.
fn paired(model: &EmbeddingModel, pool: &ModelPool, rt: &tokio::runtime::Runtime) {
    use std::time::Instant;
    eprintln!("paired (direct and pool alternated in blocks; medians over blocks):");
    for (label, tokens) in [("12tok", 12), ("128tok", 128)] {
        for batch in [1usize, 32] {
            let inputs = texts(model, batch, tokens);
            let heavy = tokens * batch >= 1024;
            let (blocks, per_block) = if heavy { (7, 2) } else { (9, 12) };
            let (mut wall, mut cpu) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
            for block in 0..blocks + 1 {
                // Alternate which side goes first, so neither always follows the other.
                for step in 0..2 {
                    let side = (step + block) % 2;
                    let (t, c) = (Instant::now(), cpu_seconds());
                    for _ in 0..per_block {
                        if side == 0 {
                            std::hint::black_box(
                                model.embed_texts(&inputs, &TextMode::Document).unwrap(),
                            );
                        } else {
                            std::hint::black_box(
                                rt.block_on(pool.embed(KEY, inputs.clone())).unwrap(),
                            );
                        }
                    }
                    let n = (per_block * batch) as f64;
                    if block > 0 {
                        wall[side].push(t.elapsed().as_secs_f64() / n);
                        cpu[side].push((cpu_seconds() - c) / n);
                    }
                }
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (wd, wp) = (median(&mut wall[0]), median(&mut wall[1]));
            let (cd, cp) = (median(&mut cpu[0]), median(&mut cpu[1]));
            eprintln!(
                "  {label} batch {batch:>2}: direct {:>7.1} sentences/s, pool {:>7.1} sentences/s, wall overhead {:+.1} %; \
                 CPU per sentence {:.2} ms vs {:.2} ms ({:+.1} %)",
                1.0 / wd,
                1.0 / wp,
                (wp / wd - 1.0) * 100.0,
                cd * 1e3,
                cp * 1e3,
                (cp / cd - 1.0) * 100.0
            );
        }
    }
}

/// User + system CPU time of this process (all threads), in seconds; 0 where unknown.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces): utime is the 12th, stime 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

criterion_group!(benches, bench);
criterion_main!(benches);
