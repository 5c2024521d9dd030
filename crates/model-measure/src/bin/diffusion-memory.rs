//! Measured vs estimated memory of the text-to-image backends, on random-weight checkpoints of
//! any geometry written in the real layout.
//!
//! ```sh
//! # write a checkpoint (tiny, the real geometry, or the real one with some values changed)
//! cargo run --release -p model-measure --bin diffusion-memory -- \
//!     write --pipeline flux --geometry real --set transformer.depth=4 --out /tmp/flux
//! # load it through the pool, generate one image, and compare every stage with the plan
//! cargo run --release -p model-measure --bin diffusion-memory -- \
//!     measure --pipeline flux --weights /tmp/flux --size 512x512 --steps 1 --staged --dtype bf16
//! ```
//!
//! `measure` samples this process's resident memory every millisecond: the anonymous part
//! (what the process owns: weights, activations, allocator slack) is the measured figure; the
//! total RSS also counts the checkpoint's pages while they are mapped, which the kernel can
//! drop. Figures are relative to the process before the pool was built. On CUDA builds the
//! device-memory delta is reported too.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use model_fixtures::diffusion::{self as random, Geometry};
use model_networks::diffusion::Stage;
use model_pool::{DeviceId, MemoryGovernor};
use model_runtime::memory::{self, PeakSampler};
use model_serving::error::stage_name;
use model_serving::text_to_image::backend_of;
use model_serving::{ImageOptions, ImageRequest, ModelPool, Pipeline, Progress, ServedModel};

const MIB: f64 = 1048576.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("write") => write(&args[1..]),
        Some("measure") => measure(&args[1..]),
        _ => Err("usage: diffusion-memory write|measure … (see the file's header)".into()),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn values<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].as_str())
        .collect()
}

fn pipeline(args: &[String]) -> Result<Pipeline, String> {
    value(args, "--pipeline")
        .ok_or("--pipeline flux|sd3")?
        .parse()
}

fn write(args: &[String]) -> Result<(), String> {
    let pipeline = pipeline(args)?;
    let out = PathBuf::from(value(args, "--out").ok_or("--out DIR")?);
    let mut geometry = match value(args, "--geometry").unwrap_or("tiny") {
        "tiny" => Geometry::tiny(pipeline),
        "real" => Geometry::real(),
        other => return Err(format!("--geometry tiny|real, not {other}")),
    };
    for set in values(args, "--set") {
        let (lhs, v) = set.split_once('=').ok_or("--set component.key=value")?;
        let (component, key) = lhs.split_once('.').ok_or("--set component.key=value")?;
        let v: toml::Value = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .map_err(|e| format!("--set {set}: {e}"))?
            .remove("v")
            .ok_or("--set: no value")?;
        geometry = geometry.set(component, key, v);
    }
    let seed = value(args, "--seed")
        .map_or(Ok(1), str::parse)
        .map_err(|e| format!("--seed: {e}"))?;
    let started = Instant::now();
    let written = random::write(&out, pipeline, &geometry, seed).map_err(|e| e.to_string())?;
    println!(
        "{}: {} tensors, {:.1} MiB of weights, written in {:.1?}",
        out.display(),
        written.tensors,
        written.bytes as f64 / MIB,
        started.elapsed()
    );
    Ok(())
}

/// Peaks of one stage, relative to the baseline.
#[derive(Debug, Default, Clone, Copy)]
struct Sampled {
    /// Anonymous memory when the stage started (what earlier stages left behind, including
    /// freed memory the allocator kept).
    start: u64,
    anon: u64,
    rss: u64,
}

fn measure(args: &[String]) -> Result<(), String> {
    let pipeline = pipeline(args)?;
    let weights = PathBuf::from(value(args, "--weights").ok_or("--weights DIR")?);
    let (w, h) = value(args, "--size")
        .unwrap_or("64x64")
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .ok_or("--size WxH")?;
    let steps: u32 = value(args, "--steps")
        .unwrap_or("1")
        .parse()
        .map_err(|_| "--steps N")?;
    let staged = args.iter().any(|a| a == "--staged");
    let dtype = model_runtime::parse_dtype(value(args, "--dtype").unwrap_or("f32"))
        .map_err(|e| e.to_string())?;
    let device: DeviceId = value(args, "--device")
        .unwrap_or("cpu")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let key = model_serving::registry::template(backend_of(pipeline))
        .map_err(|e| e.to_string())?
        .registry_key;
    let mut options = ImageOptions::new(pipeline).dtype(dtype).staged(staged);
    if let Some(t) = value(args, "--text-tokens") {
        options = options.text_tokens(t.parse().map_err(|_| "--text-tokens N")?);
    }
    let config = ServedModel::registry(key, weights.as_path())
        .map_err(|e| e.to_string())?
        .device(device)
        .map_image(|_| options)
        .map_err(|e| e.to_string())?;
    let plan = config
        .image_options("generate images")
        .and_then(|o| o.plan(&config.source, device))
        .map_err(|e| e.to_string())?;
    let memory = plan.request(w, h).map_err(|e| e.to_string())?;
    let est = &memory.estimate;
    let candle_device = model_runtime::device(device).map_err(|e| e.to_string())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let governor =
        MemoryGovernor::with_budgets([(device, 1u64 << 50)]).map_err(|e| e.to_string())?;
    let baseline = memory::resident();
    let device_baseline = memory::device_used_bytes(&candle_device);
    let whole = PeakSampler::start();
    let stages: Arc<Mutex<Vec<(Stage, Sampled)>>> = Arc::default();
    let current: Arc<Mutex<Option<(Stage, PeakSampler, u64)>>> = Arc::default();
    let started = Instant::now();
    let image = runtime.block_on(async {
        let pool = ModelPool::builder()
            .governor(governor.clone())
            .model(config)
            .build()
            .map_err(|e| e.to_string())?;
        let (st, cur) = (Arc::clone(&stages), Arc::clone(&current));
        let result = pool
            .generate_image(
                key,
                ImageRequest::new("a red fox on the sea at dawn")
                    .size(w, h)
                    .steps(steps)
                    .seed(1),
                move |p| match p {
                    Progress::StageStarted { stage, .. } => {
                        let start = memory::resident().anon.saturating_sub(baseline.anon);
                        *cur.lock().unwrap() = Some((stage, PeakSampler::start(), start));
                    }
                    Progress::StageFinished { .. } => {
                        if let Some((stage, s, start)) = cur.lock().unwrap().take() {
                            let peak = s.stop();
                            st.lock().unwrap().push((
                                stage,
                                Sampled {
                                    start,
                                    anon: peak.anon.saturating_sub(baseline.anon),
                                    rss: peak.rss.saturating_sub(baseline.rss),
                                },
                            ));
                        }
                    }
                    Progress::Step { step, steps } => eprintln!("step {step}/{steps}"),
                },
            )
            .await;
        let loads = pool.measurements();
        pool.shutdown().await;
        result.map(|i| (i, loads)).map_err(|e| e.to_string())
    })?;
    let elapsed = started.elapsed();
    let peak = whole.stop();
    let device_peak = memory::device_used_bytes(&candle_device);
    let (image, loads) = image;
    let mib = |b: u64| b as f64 / MIB;

    println!(
        "# {pipeline} {w}×{h}, {steps} step(s), {dtype:?} on {device}, {}",
        if staged { "staged" } else { "co-resident" }
    );
    println!("checkpoint: {}", weights.display());
    for c in &plan.spec().components {
        let arch: Vec<String> = c
            .architecture
            .iter()
            .filter(|(k, _)| c.family.required_keys().contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={}", v.get_ref().value))
            .collect();
        println!("  {:<12} {}", c.name, arch.join(" "));
    }
    println!(
        "estimate: weights {:.1} MiB + activations {:.1} MiB + overhead {:.1} MiB + margin {:.1} MiB = {:.1} MiB → {} MB",
        mib(est.weights_bytes),
        mib(est.activations_bytes),
        mib(est.overhead_bytes),
        mib(est.margin_bytes),
        mib(est.total_bytes),
        est.est_memory_allocation_mb
    );
    println!(
        "| stage | planned (resident + stage) MiB | anon at start MiB | measured peak anon MiB | measured peak RSS MiB | measured / planned |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    if let Some(m) = loads.values().next() {
        println!(
            "| load | {:.1} | 0.0 | {:.1} | {:.1} | {:.2} |",
            mib(memory.resident_bytes),
            mib(m.peak_anon_bytes),
            mib(m.peak_rss_bytes),
            m.peak_anon_bytes as f64 / memory.resident_bytes.max(1) as f64
        );
    }
    for (stage, s) in stages.lock().unwrap().iter() {
        let planned = memory.resident_bytes + memory.stage(*stage).map_or(0, |s| s.bytes());
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            stage_name(*stage),
            mib(planned),
            mib(s.start),
            mib(s.anon),
            mib(s.rss),
            s.anon as f64 / planned as f64
        );
    }
    let measured = peak.anon.saturating_sub(baseline.anon);
    println!(
        "whole request: measured peak anon {:.1} MiB (RSS {:.1} MiB); reservations peaked at {:.1} MiB; estimate {:.1} MiB ({} MB)",
        mib(measured),
        mib(peak.rss.saturating_sub(baseline.rss)),
        mib(governor.usage()[0].high_water_bytes),
        mib(est.total_bytes),
        est.est_memory_allocation_mb
    );
    println!(
        "measured ≤ estimate: {}; estimate / measured = {:.2}",
        measured <= est.total_bytes,
        est.total_bytes as f64 / measured.max(1) as f64
    );
    if let Some(added) = device_peak
        .zip(device_baseline)
        .and_then(|(after, before)| after.since(&before))
    {
        println!(
            "device memory after the request: {:.1} MiB above the baseline",
            mib(added)
        );
    }
    println!("time: {elapsed:.1?}; PNG {} bytes", image.png.len());
    if let Some(out) = value(args, "--png") {
        std::fs::write(out, &image.png).map_err(|e| e.to_string())?;
    }
    if args.iter().any(|a| a == "--remove") {
        random::remove(&weights).map_err(|e| e.to_string())?;
    }
    Ok(())
}
