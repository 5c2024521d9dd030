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
//!   (jina-embeddings-v2-base-en's, clip-vit-base-patch32's, gte-Qwen2-1.5B-instruct's,
//!   stella_en_1.5B_v5's or NV-Embed-v2's geometry, at the checkpoint's initializer scale).
//!   `--layers N` writes only the first N layers of the body, every one full width: NV-Embed's
//!   32 layers are 28 GB in f32, more than a 24 GB machine holds.
//! - Text rows: row `r`, position `p` is `(r·31 + p·7) % 30000 + 5`, first 2 and last 3. Images
//!   (`clip-vision`): image `r`'s pixel `i` (of 3·224·224) is `((r·7 + i·37) % 101) / 50 − 1`.
//!   `tools/encoder-torch.py` builds the same.
//! - One untimed warm-up pass, then `n` rows (texts or images) `batch` at a time.
//! - `--check` also loads candle's network on the same weights and prints how far the
//!   kernels' embeddings are from it (max |Δ|, lowest cosine), instead of timing.
//! - `--backend candle` times candle's network instead of the kernels.
//!
//! Prints one JSON line: `{"rows_per_s":…, "tokens":…, "batch":…, "peak_rss_mb":…, "first":[…]}`,
//! `first` being the first 8 values of row 0's embedding (the PyTorch side prints its own).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clap::{Parser, ValueEnum};
use model_fixtures::embed::{
    ClipGeometry, JinaGeometry, NvEmbedGeometry, Qwen2Geometry, write_clip, write_gte_qwen2,
    write_jina, write_nvembed, write_stella,
};
use model_measure::peak_rss_mb;
use model_networks::embed::bert::Backend;
use model_networks::embed::text::{Encoded, pad_right};
use model_networks::embed::{clip, gte_qwen2, jina, nvembed, stella};
use model_runtime::{BackendError, ModelDir};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    /// JinaBERT (jina-embeddings-v2-base-en's sizes).
    JinaBert,
    /// CLIP ViT-B/32's text tower and projection.
    ClipText,
    /// CLIP ViT-B/32's vision tower and projection (224² images).
    ClipVision,
    /// GTE-Qwen2-1.5B (last-token pooling).
    GteQwen2,
    /// Stella v5 1.5B (mean pooling, Dense head to 1024).
    Stella,
    /// NV-Embed-v2 (Mistral body, latent-attention pooling; f16 on disk, run in f32).
    NvEmbed,
}

/// Which network runs.
#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    /// The workspace's encoder kernels.
    Kernels,
    /// candle's network.
    Candle,
}

/// A loaded network of any family.
enum Network {
    Jina(jina::Model),
    Clip(clip::Model),
    Gte(gte_qwen2::Model),
    Stella(stella::Model),
    NvEmbed(nvembed::Model),
}

impl Network {
    fn load(
        family: Which,
        dir: &ModelDir,
        tokens: usize,
        backend: Backend,
    ) -> Result<Self, BackendError> {
        let (f32, cpu) = (DType::F32, &Device::Cpu);
        Ok(match family {
            Which::JinaBert => {
                Network::Jina(jina::Model::load_with(dir, tokens, f32, cpu, backend)?)
            }
            Which::ClipText | Which::ClipVision => {
                Network::Clip(clip::Model::load_with(dir, f32, cpu, backend)?.0)
            }
            Which::GteQwen2 => {
                Network::Gte(gte_qwen2::Model::load_with(dir, tokens, f32, cpu, backend)?)
            }
            Which::Stella => {
                Network::Stella(stella::Model::load_with(dir, tokens, f32, cpu, backend)?)
            }
            Which::NvEmbed => {
                Network::NvEmbed(nvembed::Model::load_with(dir, tokens, f32, cpu, backend)?)
            }
        })
    }

    /// The embeddings of rows `rows` (texts of `tokens` tokens, or images).
    fn embed(&self, rows: std::ops::Range<usize>, tokens: usize) -> Vec<Vec<f32>> {
        let texts = || -> Vec<Encoded> { rows.clone().map(|r| row(r, tokens)).collect() };
        let out = match self {
            Network::Jina(m) => {
                let texts = texts();
                let refs: Vec<&Encoded> = texts.iter().collect();
                m.forward_unpadded(&refs, &Device::Cpu)
            }
            Network::Gte(_) | Network::Stella(_) | Network::NvEmbed(_) => {
                let texts = texts();
                let refs: Vec<&Encoded> = texts.iter().collect();
                pad_right(&refs, 0, &Device::Cpu).and_then(|b| match self {
                    Network::Gte(m) => m.forward(&b),
                    Network::Stella(m) => m.forward(&b),
                    Network::NvEmbed(m) => m.forward(&b),
                    _ => unreachable!("matched above"),
                })
            }
            Network::Clip(m) if tokens > 0 => {
                let texts = texts();
                let refs: Vec<&Encoded> = texts.iter().collect();
                pad_right(&refs, 0, &Device::Cpu).and_then(|b| m.forward_text(&b))
            }
            Network::Clip(m) => {
                let per = 3 * 224 * 224;
                let pixels: Vec<f32> = rows
                    .clone()
                    .flat_map(|r| {
                        (0..per).map(move |i| ((r * 7 + i * 37) % 101) as f32 / 50.0 - 1.0)
                    })
                    .collect();
                Tensor::from_vec(pixels, (rows.len(), 3, 224, 224), &Device::Cpu)
                    .and_then(|p| m.forward_images(&p))
            }
        };
        out.and_then(|t| t.to_vec2::<f32>()).expect("forward pass")
    }
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
    /// Tokens per text row (not used by `clip-vision`).
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
    /// The network timed.
    #[arg(long, value_enum, default_value = "kernels")]
    backend: BackendArg,
    /// With `--write`: write only this many layers of the body (Stella, GTE-Qwen2, NV-Embed).
    #[arg(long)]
    layers: Option<usize>,
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    assert!(a.batch > 0 && a.n > 0, "empty run");
    // Stella v5 1.5B's body has gte-Qwen2-1.5B's sizes.
    let layers = |g: Qwen2Geometry| Qwen2Geometry {
        layers: a.layers.unwrap_or(g.layers),
        ..g
    };
    if a.write && !a.dir.join("config.json").exists() {
        std::fs::create_dir_all(&a.dir)?;
        eprintln!(
            "writing a full-size random checkpoint to {}",
            a.dir.display()
        );
        match a.family {
            Which::JinaBert => write_jina(&a.dir, &JinaGeometry::BASE),
            Which::ClipText | Which::ClipVision => write_clip(&a.dir, &ClipGeometry::VIT_B_32),
            Which::GteQwen2 => write_gte_qwen2(&a.dir, &layers(Qwen2Geometry::GTE_1_5B)),
            Which::Stella => write_stella(&a.dir, &layers(Qwen2Geometry::GTE_1_5B), 1024),
            Which::NvEmbed => write_nvembed(
                &a.dir,
                &NvEmbedGeometry {
                    body: layers(NvEmbedGeometry::V2.body),
                    ..NvEmbedGeometry::V2
                },
            ),
        }
    }
    // Images have no tokens.
    let tokens = if a.family == Which::ClipVision {
        0
    } else {
        a.tokens
    };
    assert!(
        a.family == Which::ClipVision || tokens >= 2,
        "rows need 2 tokens or more"
    );
    let dir = ModelDir::local(&a.dir)?;
    let backend = match a.backend {
        BackendArg::Kernels => Backend::Kernels,
        BackendArg::Candle => Backend::Candle,
    };
    let model = Network::load(a.family, &dir, tokens, backend)?;
    let first_batch = 0..a.batch.min(a.n);
    if a.check {
        let candle = Network::load(a.family, &dir, tokens, Backend::Candle)?;
        let (x, y) = (
            model.embed(first_batch.clone(), tokens),
            candle.embed(first_batch.clone(), tokens),
        );
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
            "{{\"rows\":{},\"tokens\":{tokens},\"max_abs_diff\":{worst:e},\"min_cosine\":{lowest:.9}}}",
            first_batch.len(),
        );
        return Ok(());
    }
    let first: Vec<String> = model.embed(first_batch, tokens)[0][..8]
        .iter()
        .map(|v| format!("{v:.6}"))
        .collect();
    let start = Instant::now();
    for from in (0..a.n).step_by(a.batch) {
        std::hint::black_box(model.embed(from..(from + a.batch).min(a.n), tokens));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"rows_per_s\":{:.3},\"tokens\":{tokens},\"batch\":{},\"peak_rss_mb\":{:.0},\"first\":[{}]}}",
        a.n as f64 / secs,
        a.batch,
        peak_rss_mb(),
        first.join(",")
    );
    Ok(())
}
