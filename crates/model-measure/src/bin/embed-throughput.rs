//! Embedding throughput through the pool, in sentences per second, on texts built the same way
//! as `tools/st-throughput.py` builds them for sentence-transformers, so that the two can be
//! compared line for line (`tools/compare-throughput.sh` runs both).
//!
//! ```sh
//! cargo run --release -p model-measure --bin embed-throughput -- \
//!     --model-dir .cache/all-MiniLM-L6-v2 --words 13 --batch 32 --n 256
//! ```
//!
//! The `n` texts each have `words` words drawn deterministically from a fixed ten-word
//! vocabulary (every word is one word piece, so a text is `words + 2` tokens with [CLS] and
//! [SEP]). They go through [`ModelPool::embed`](model_serving::ModelPool::embed) `batch` at a time, one call after the
//! other. One untimed warm-up pass loads the model and touches every code path first.
//!
//! Prints one JSON line: `{"sentences_per_s":…, "tokens":…, "batch":…, "peak_rss_mb":…}`;
//! `tokens` counts one text's tokens (special tokens included), `peak_rss_mb` is the whole
//! process's peak resident set (`VmHWM`, MiB).

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use model_measure::peak_rss_mb;
use model_networks::embed::text::{TextEncoder, TextRules};
use model_pool::{DeviceId, MemoryGovernor};
use model_serving::{ModelPool, Overflow, ServedModel, TextMode};

/// The vocabulary of the benchmark texts (each word one word piece in the BERT vocabulary).
const VOCAB: [&str; 10] = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "river", "bank",
];

#[derive(Parser)]
struct Args {
    /// Checkpoint directory in the Hub layout.
    #[arg(long)]
    model_dir: PathBuf,
    /// Registry key of the checkpoint (family, dtype and declared memory come from it).
    #[arg(long, default_value = "sentence-transformers/all-MiniLM-L6-v2")]
    key: String,
    /// Words per text.
    #[arg(long)]
    words: usize,
    /// Texts per `embed` call.
    #[arg(long)]
    batch: usize,
    /// Texts in the timed pass.
    #[arg(long, default_value_t = 256)]
    n: usize,
}

/// Text `i`: `words` words, the same sequence `tools/st-throughput.py` builds.
fn text(i: usize, words: usize) -> String {
    (0..words)
        .map(|j| VOCAB[(i * 7 + j * 3 + (i / 10) * j) % VOCAB.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    assert!(args.batch > 0 && args.n > 0 && args.words > 0);
    let texts: Vec<String> = (0..args.n).map(|i| text(i, args.words)).collect();

    let config = ServedModel::registry(&args.key, args.model_dir.clone())?;
    let tokens = {
        let tokenizer = model_runtime::ModelDir::local(&args.model_dir)?
            .file("tokenizer.json", "the tokenizer")?;
        let encoder =
            TextEncoder::from_file(&tokenizer, 512, Overflow::Truncate, TextRules::default())?;
        encoder.encode(&texts[..1], &TextMode::Document)?[0].len()
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rate = rt.block_on(async {
        let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, 8 << 30)])?;
        let pool = ModelPool::builder()
            .governor(governor)
            .model(config)
            .build()?;
        // Warm-up: loads the model, then one pass over a few batches.
        for chunk in texts.chunks(args.batch).take(4) {
            pool.embed(&args.key, chunk.to_vec()).await?;
        }
        let started = Instant::now();
        let mut rows = 0;
        for chunk in texts.chunks(args.batch) {
            rows += pool.embed(&args.key, chunk.to_vec()).await?.len();
        }
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(rows, texts.len());
        pool.shutdown().await;
        Ok::<_, Box<dyn std::error::Error>>(rows as f64 / seconds)
    })?;
    println!(
        "{{\"sentences_per_s\": {rate:.2}, \"tokens\": {tokens}, \"batch\": {}, \"peak_rss_mb\": {:.1}}}",
        args.batch,
        peak_rss_mb()
    );
    Ok(())
}
