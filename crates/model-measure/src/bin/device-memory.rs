//! Estimated against measured memory of registry models on one device, on random-weight
//! checkpoints of their real geometry written on this machine's own disk: what a GPU machine
//! without network (and without the real weights) can measure.
//!
//! ```sh
//! # on the GPU machine (build with --features cuda beforehand; see README "On an NVIDIA GPU")
//! device-memory --device cuda:0 --scratch /local/disk/dir
//! # the same program at a tiny geometry on the CPU (what the test runs)
//! cargo run --release -p model-measure --bin device-memory -- --device cpu --geometry tiny
//! ```
//!
//! For each model (smallest first, so that a short slot still yields the first rows) it writes
//! the checkpoint with `model_fixtures::spec_checkpoint`, then measures it in a child process
//! (a clean baseline each time: no CUDA context, no allocator cache), then deletes it (the
//! nine together would not fit a 64 GiB disk). The child serves the model through the normal
//! pool on the device, sends one request of the registry's run profile, sends it again, and
//! prints one JSON line:
//!
//! * `estimate_bytes` / `estimate_mb` — the estimator's figure for this very checkpoint under
//!   the registry's run profile moved to this device (its files, its small tokenizer), and
//!   `registry_mb`, the registry's own figure (for the registry's device);
//! * `measured_peak_bytes` — the peak over load and both requests: on CUDA this process's
//!   device memory as NVML reports it (`measure` says whether the driver gave the
//!   per-process figure or only the whole device's), elsewhere the anonymous resident memory
//!   above the baseline;
//! * `estimate_over_measured`, and `within` (measured ≤ estimate ≤ 1.25 × measured);
//! * `load_ms`, `first_request_ms` (the load included), `request_ms` (the second request),
//!   `write_s` and `checkpoint_bytes`.
//!
//! Exits non-zero if any model failed to write, load or answer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use model_fixtures::spec_checkpoint::{self, Geometry};
use model_pool::{DeviceId, MemoryGovernor};
use model_registry::{Backend, Capability};
use model_runtime::memory::{self, PeakSampler};
use model_serving::report::{noise_image, synthetic_text};
use model_serving::{GenerateRequest, ImageRequest, ModelPool, ServedModel, TextMode};
use serde_json::{Value, json};

/// The models of the GPU table, smallest checkpoint first.
const MODELS: [&str; 9] = [
    "sentence-transformers/all-MiniLM-L6-v2",
    "jinaai/jina-embeddings-v2-base-en",
    "openai/clip-vit-base-patch32",
    "dunzhang/stella_en_1.5B_v5",
    "Alibaba-NLP/gte-Qwen2-1.5B-instruct",
    "llava-hf/llava-1.5-7b-hf",
    "nvidia/NV-Embed-v2",
    "stabilityai/stable-diffusion-3.5-large-turbo",
    "black-forest-labs/FLUX.1-schnell",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum GeometryKind {
    /// The registry model's own sizes (gigabytes).
    Real,
    /// A few kilobytes per model, every code path of the real one.
    Tiny,
}

#[derive(Parser)]
#[command(
    about = "Estimated vs measured memory of registry models on one device, on random-weight checkpoints written here"
)]
struct Args {
    /// Device to measure on (`cuda:0`, `cpu`, `metal:0`).
    #[arg(long, default_value = "cuda:0")]
    device: DeviceId,
    /// Registry models to measure (default: the nine of the GPU table).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Checkpoint sizes.
    #[arg(long, value_enum, default_value_t = GeometryKind::Real)]
    geometry: GeometryKind,
    /// Folder for the checkpoints (each is deleted after its measurement unless --keep).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Keep the checkpoints.
    #[arg(long)]
    keep: bool,
    /// Child mode: measure the checkpoint in this folder (the parent passes it).
    #[arg(long, hide = true, requires = "one_key")]
    one_dir: Option<PathBuf>,
    #[arg(long, hide = true)]
    one_key: Option<String>,
}

fn main() {
    let args = Args::parse();
    if let (Some(dir), Some(key)) = (&args.one_dir, &args.one_key) {
        match measure_one(key, dir, args.device, args.geometry) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let models: Vec<String> = if args.models.is_empty() {
        MODELS.iter().map(|m| m.to_string()).collect()
    } else {
        args.models.clone()
    };
    let scratch = args
        .scratch
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("device-memory"));
    let mut failed = 0;
    for key in &models {
        if let Err(e) = write_and_measure(&args, key, &scratch) {
            eprintln!("error: {key}: {e}");
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} models failed", models.len());
        std::process::exit(1);
    }
}

fn write_and_measure(args: &Args, key: &str, scratch: &Path) -> Result<(), String> {
    let dir = scratch.join(key.replace('/', "--"));
    let geometry = match args.geometry {
        GeometryKind::Real => Geometry::real(),
        GeometryKind::Tiny => Geometry::tiny_of(key).map_err(|e| e.to_string())?,
    };
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{key}: writing a random checkpoint into {}", dir.display());
    let started = Instant::now();
    let written =
        spec_checkpoint::write(&dir, key, &geometry, 1).map_err(|e| format!("writing: {e}"))?;
    let write_s = started.elapsed().as_secs_f64();
    eprintln!(
        "{key}: {} tensors, {} in {write_s:.1} s; measuring on {}",
        written.tensors,
        model_pool::ByteSize(written.bytes),
        args.device
    );
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(["--device", &args.device.to_string(), "--one-key", key])
        .args(["--geometry", &geometry_name(args.geometry)])
        .arg("--one-dir")
        .arg(&dir)
        .output()
        .map_err(|e| format!("starting the measurement: {e}"))?;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let mut line: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the measurement printed no JSON line: {e}"))?;
    line["geometry"] = json!(geometry_name(args.geometry));
    line["write_s"] = json!((write_s * 10.0).round() / 10.0);
    line["checkpoint_bytes"] = json!(written.bytes);
    println!("{line}");
    Ok(())
}

fn geometry_name(g: GeometryKind) -> String {
    format!("{g:?}").to_lowercase()
}

/// Peak memory as this device can report it.
enum Sampler {
    Gpu(gpu_memory::UsageSampler),
    Host(PeakSampler, memory::Resident),
}

impl Sampler {
    fn start(device: DeviceId) -> Result<Self, String> {
        match device {
            DeviceId::Cuda(ordinal) => {
                let driver = gpu_memory::Driver::system().map_err(|e| e.to_string())?;
                gpu_memory::UsageSampler::start(driver, ordinal)
                    .map(Sampler::Gpu)
                    .map_err(|e| e.to_string())
            }
            _ => Ok(Sampler::Host(PeakSampler::start(), memory::resident())),
        }
    }

    /// The peak in bytes and what it counts.
    fn stop(self) -> (u64, &'static str) {
        match self {
            Sampler::Gpu(s) => {
                let usage = s.stop();
                let what = match usage.scope {
                    gpu_memory::UsageScope::Process => "nvml process memory",
                    gpu_memory::UsageScope::Device => "nvml device memory (no per-process figure)",
                };
                (usage.bytes, what)
            }
            Sampler::Host(s, baseline) => (
                s.stop().anon.saturating_sub(baseline.anon),
                "anonymous resident memory",
            ),
        }
    }
}

fn measure_one(
    key: &str,
    dir: &Path,
    device: DeviceId,
    geometry: GeometryKind,
) -> Result<Value, String> {
    let info = model_serving::registry::lookup(key).map_err(|e| e.to_string())?;
    let backend = info
        .backend
        .ok_or_else(|| format!("{key} has no backend"))?;
    let entry = model_serving::registry::spec(info).map_err(|e| e.to_string())?;
    let mut profile = entry
        .spec
        .spec
        .profile()
        .ok_or_else(|| format!("{key} has no run profile"))?
        .clone();
    profile.device = match device {
        DeviceId::Cpu => model_spec::Device::Cpu,
        DeviceId::Cuda(_) => model_spec::Device::Cuda,
        _ => model_spec::Device::Metal,
    };
    let mut steps = info.serving.default_steps.unwrap_or(1);
    if geometry == GeometryKind::Tiny {
        // A tiny transformer's position table covers a few hundred pixels; one step shows
        // every stage.
        profile.width = Some(64);
        profile.height = Some(64);
        steps = 1;
    }
    let estimate = model_serving::checkpoint::estimate_checkpoint(backend, dir, Some(&profile))
        .map_err(|e| e.to_string())?;
    let seq_len = profile.seq_len.map(|s| s as usize);
    let mut config = ServedModel::registry(key, dir)
        .map_err(|e| e.to_string())?
        .device(device);
    if let (Some(n), true) = (seq_len, is_embedder(info.capability)) {
        config = config
            .map_embed(|o| o.max_input_tokens(n))
            .map_err(|e| e.to_string())?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // No budget limits the measurement; the pool still reserves what it declares.
    let mut budgets = vec![(DeviceId::Cpu, 1u64 << 50)];
    if device != DeviceId::Cpu {
        budgets.push((device, 1u64 << 50));
    }
    let governor = MemoryGovernor::with_budgets(budgets).map_err(|e| e.to_string())?;
    let sampler = Sampler::start(device)?;
    let (first, second, loads) = runtime.block_on(async {
        let pool = ModelPool::builder()
            .governor(governor)
            .model(config)
            .build()
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        one_request(&pool, key, backend, &profile, steps).await?;
        let first = started.elapsed();
        let started = Instant::now();
        one_request(&pool, key, backend, &profile, steps).await?;
        let second = started.elapsed();
        let loads = pool.measurements();
        pool.shutdown().await;
        Ok::<_, String>((first, second, loads))
    })?;
    let (peak, measure) = sampler.stop();
    let total = estimate.total_bytes;
    let ratio = total as f64 / peak.max(1) as f64;
    Ok(json!({
        "model": key,
        "device": device.to_string(),
        "estimate_bytes": total,
        "estimate_mb": estimate.est_memory_allocation_mb,
        "registry_mb": info.est_memory_allocation_mb,
        "measured_peak_bytes": peak,
        "measure": measure,
        "estimate_over_measured": (ratio * 1000.0).round() / 1000.0,
        "within": peak <= total && ratio <= 1.25,
        "load_ms": loads.values().map(|m| m.load_millis).sum::<u64>(),
        "first_request_ms": first.as_millis() as u64,
        "request_ms": second.as_millis() as u64,
    }))
}

fn is_embedder(c: Capability) -> bool {
    matches!(c, Capability::TextEmbedding | Capability::ImageEmbedding)
}

/// One request of the run profile: `batch` texts of `seq_len` tokens (and one image for
/// CLIP), a prompt of `prompt_tokens` about one image for LLaVA, one image of the profile's
/// size in `steps` steps for the pipelines.
async fn one_request(
    pool: &ModelPool,
    key: &str,
    backend: Backend,
    profile: &model_spec::RunProfile,
    steps: u32,
) -> Result<(), String> {
    let err = |e: model_serving::ServeError| e.to_string();
    let words = |n: Option<u64>| synthetic_text(n.unwrap_or(64) as usize);
    match backend {
        Backend::Llava15 => {
            let side = profile.image_size.unwrap_or(336) as u32;
            let prompt = words(profile.prompt_tokens);
            let request = GenerateRequest::user(prompt).max_tokens(4);
            pool.describe_image_with(key, noise_image(side, side, 1), request)
                .await
                .map_err(err)?
                .collect()
                .await
                .map_err(err)?;
        }
        Backend::Flux | Backend::Sd3 => {
            let w = profile.width.unwrap_or(1024) as u32;
            let h = profile.height.unwrap_or(1024) as u32;
            let request = ImageRequest::new("a red fox on the sea at dawn")
                .size(w, h)
                .steps(steps)
                .seed(1);
            pool.generate_image(key, request, |_| {})
                .await
                .map_err(err)?;
        }
        _ => {
            if backend == Backend::Clip {
                let side = profile.image_size.unwrap_or(224) as u32;
                pool.embed_images(key, vec![noise_image(side, side, 1)])
                    .await
                    .map_err(err)?;
            }
            let texts = vec![words(profile.seq_len.map(|s| s * 2)); profile.batch.max(1) as usize];
            pool.embed_with_usage(key, texts, TextMode::Document)
                .await
                .map_err(err)?;
        }
    }
    Ok(())
}
