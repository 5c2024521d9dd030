//! Forward-pass speed of an encoder family at full size with random weights, on this
//! workspace's CPU kernels: the Rust side of `tools/compare-encoders.sh`, which runs the same
//! checkpoint in PyTorch (`tools/encoder-torch.py`) on the same token ids.
//!
//! ```sh
//! cargo run --release -p model-measure --bin encoder-speed -- \
//!     --family jina-bert --dir .cache/full/jina --write --tokens 128 --batch 1 --n 16
//! ```
//!
//! - `--write` writes the full-size random checkpoint into `--dir` first when it has none
//!   (jina-embeddings-v2-base-en's geometry, F16 as the real one is stored).
//! - The ids: row `r`, position `p` is `(r·31 + p·7) % 30000 + 5`, first `[CLS]`-like 2 and
//!   last 3, the same as `tools/encoder-torch.py` builds.
//! - One untimed warm-up pass, then `n` rows `batch` at a time.
//! - `--check` also loads candle-transformers' network on the same weights and prints how far
//!   the kernels' embeddings are from it (max |Δ|, lowest cosine), instead of timing.
//!
//! Prints one JSON line: `{"rows_per_s":…, "tokens":…, "batch":…, "peak_rss_mb":…, "first":[…]}`,
//! `first` being the first 8 values of row 0's embedding (the PyTorch side prints its own).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use clap::{Parser, ValueEnum};
use model_fixtures::embed::{JinaGeometry, write_jina};
use model_networks::embed::bert::Backend;
use model_networks::embed::jina;
use model_networks::embed::text::Encoded;
use model_runtime::ModelDir;

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    /// JinaBERT (jina-embeddings-v2-base-en's sizes).
    JinaBert,
}

#[derive(Parser)]
struct Args {
    /// The family (and so the full-size geometry `--write` uses).
    #[arg(long, value_enum)]
    family: Which,
    /// Checkpoint directory.
    #[arg(long)]
    dir: PathBuf,
    /// Write the full-size random checkpoint into `--dir` when it has no `config.json`.
    #[arg(long)]
    write: bool,
    /// Tokens per row.
    #[arg(long, default_value_t = 128)]
    tokens: usize,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Rows in the timed part.
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Compare the kernels with candle's network on the same weights instead of timing.
    #[arg(long)]
    check: bool,
}

/// Peak resident set of this process in MiB (`VmHWM`; 0 where unknown).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Row `r` of `tokens` ids (see the module docs).
fn row(r: usize, tokens: usize) -> Encoded {
    let mut ids = vec![2u32];
    ids.extend((1..tokens.saturating_sub(1)).map(|p| ((r * 31 + p * 7) % 30000 + 5) as u32));
    ids.push(3);
    ids.truncate(tokens);
    Encoded {
        ids,
        pool_from: 0,
        truncated: false,
    }
}

fn embed(model: &jina::Model, rows: &[Encoded]) -> Vec<Vec<f32>> {
    let refs: Vec<&Encoded> = rows.iter().collect();
    model
        .forward_unpadded(&refs, &Device::Cpu)
        .and_then(|t| t.to_vec2::<f32>())
        .expect("forward pass")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    assert!(a.batch > 0 && a.n > 0 && a.tokens >= 2, "empty run");
    if a.write && !a.dir.join("config.json").exists() {
        std::fs::create_dir_all(&a.dir)?;
        eprintln!(
            "writing a full-size random checkpoint to {}",
            a.dir.display()
        );
        match a.family {
            Which::JinaBert => write_jina(&a.dir, &JinaGeometry::BASE),
        }
    }
    let dir = ModelDir::local(&a.dir)?;
    let load = |backend| jina::Model::load_with(&dir, a.tokens, DType::F32, &Device::Cpu, backend);
    let rows: Vec<Encoded> = (0..a.n).map(|r| row(r, a.tokens)).collect();
    let model = load(Backend::Kernels)?;
    if a.check {
        let candle = load(Backend::Candle)?;
        let batch = &rows[..a.batch.min(rows.len())];
        let (x, y) = (embed(&model, batch), embed(&candle, batch));
        let (mut worst, mut lowest) = (0f32, f64::INFINITY);
        for (p, q) in x.iter().zip(&y) {
            worst = p
                .iter()
                .zip(q)
                .map(|(u, v)| (u - v).abs())
                .fold(worst, f32::max);
            lowest = lowest.min(model_fixtures::cosine(p, q));
        }
        println!(
            "{{\"rows\":{},\"tokens\":{},\"max_abs_diff\":{worst:e},\"min_cosine\":{lowest:.9}}}",
            batch.len(),
            a.tokens
        );
        return Ok(());
    }
    let first: Vec<String> = embed(&model, &rows[..a.batch.min(rows.len())])[0][..8]
        .iter()
        .map(|v| format!("{v:.6}"))
        .collect();
    let start = Instant::now();
    for chunk in rows.chunks(a.batch) {
        std::hint::black_box(embed(&model, chunk));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"rows_per_s\":{:.3},\"tokens\":{},\"batch\":{},\"peak_rss_mb\":{:.0},\"first\":[{}]}}",
        a.n as f64 / secs,
        a.tokens,
        a.batch,
        peak_rss_mb(),
        first.join(",")
    );
    Ok(())
}
