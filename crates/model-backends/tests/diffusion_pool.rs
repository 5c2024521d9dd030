//! FLUX.1-schnell and SD3.5 Large Turbo through the pool, on tiny random-weight checkpoints
//! written in the real repositories' layout (shapes from the registry spec, Diffusers
//! configs, CLIP BPE `vocab.json` + `merges.txt`, T5 `tokenizer.json`) and loaded by the same
//! code as the real files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use model_backends::diffusion::random::{self, Geometry};
use model_backends::diffusion::{
    DiffusionConfig, ImageError, ImagePool, ImageRequest, Limits, Pipeline, Progress, Stage,
};
use model_pool::{DeviceId, MemoryGovernor};

const GIB: u64 = 1 << 30;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("diffusion-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny(pipeline: Pipeline, name: &str) -> PathBuf {
    let dir = scratch(name);
    random::write(&dir, pipeline, &Geometry::tiny(pipeline), 7).unwrap();
    dir
}

fn config(pipeline: Pipeline, dir: &Path, staged: bool) -> DiffusionConfig {
    DiffusionConfig::registry(pipeline.registry_key(), dir)
        .unwrap()
        .device(DeviceId::Cpu)
        .dtype(candle_core::DType::F32)
        .staged(staged)
}

fn pool(configs: Vec<DiffusionConfig>, budget: u64) -> (ImagePool, MemoryGovernor) {
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, budget)]).unwrap();
    let mut b = ImagePool::builder().governor(governor.clone());
    for c in configs {
        b = b.model(c);
    }
    (b.build().unwrap(), governor)
}

/// Every progress event with the governor's reserved bytes when it was reported.
type Log = Arc<Mutex<Vec<(Progress, u64)>>>;

fn recorder(governor: &MemoryGovernor) -> (Log, impl Fn(Progress) + Send + Sync + 'static) {
    let log: Log = Arc::default();
    let (l, g) = (Arc::clone(&log), governor.clone());
    (log, move |p| {
        l.lock()
            .unwrap()
            .push((p, g.reserved(DeviceId::Cpu).unwrap()))
    })
}

fn decode(png: &[u8]) -> image::RgbImage {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8()
}

/// Generates twice with one seed and once with another; checks the image, its determinism,
/// the progress events and that each stage reserved exactly its planned bytes.
async fn generate_and_check(pipeline: Pipeline, staged: bool) {
    let key = pipeline.registry_key();
    let dir = tiny(pipeline, &format!("{pipeline}-{staged}"));
    let (pool, governor) = pool(vec![config(pipeline, &dir, staged)], 4 * GIB);
    let request = ImageRequest::new("a red fox on the sea at dawn")
        .size(64, 48)
        .steps(3)
        .seed(11);
    let (log, progress) = recorder(&governor);
    let started = Instant::now();
    let image = pool.generate(key, request.clone(), progress).await.unwrap();
    eprintln!("{pipeline} staged={staged}: {:?}", started.elapsed());

    let rgb = decode(&image.png);
    assert_eq!((rgb.width(), rgb.height()), (64, 48));
    let first = rgb.get_pixel(0, 0);
    assert!(
        rgb.pixels().any(|p| p != first),
        "a random network still draws something that is not one flat colour"
    );

    // Progress: each stage starts and finishes in order, one event per denoising step.
    let events: Vec<Progress> = log.lock().unwrap().iter().map(|(p, _)| *p).collect();
    let memory = &image.memory;
    let stage_bytes = |s: Stage| memory.stage(s).unwrap().bytes();
    let mut expected = Vec::new();
    for stage in [Stage::TextEncoder, Stage::Denoiser, Stage::Decoder] {
        expected.push(Progress::StageStarted {
            stage,
            reserved_bytes: stage_bytes(stage),
        });
        if stage == Stage::Denoiser {
            expected.extend((1..=3).map(|step| Progress::Step { step, steps: 3 }));
        }
        expected.push(Progress::StageFinished { stage });
    }
    assert_eq!(events, expected);

    // Reservations: while a stage runs the governor holds the model's resident bytes plus
    // that stage's, and nothing else; afterwards only the resident bytes.
    let resident = memory.resident_bytes;
    for (event, reserved) in log.lock().unwrap().iter() {
        let want = match event {
            Progress::StageStarted { stage, .. } => resident + stage_bytes(*stage),
            Progress::Step { .. } => resident + stage_bytes(Stage::Denoiser),
            Progress::StageFinished { .. } => resident,
        };
        assert_eq!(*reserved, want, "{event:?}");
    }
    assert_eq!(governor.reserved(DeviceId::Cpu), Some(resident));
    assert_eq!(
        memory.peak_bytes(),
        memory.estimate.total_bytes - memory.estimate.margin_bytes,
        "the peak of the reservations is the estimator's figure for this size, margin aside"
    );
    if staged {
        assert!(stage_bytes(Stage::TextEncoder) > memory.stage(Stage::TextEncoder).unwrap().activations_bytes);
        assert_eq!(resident, memory.estimate.overhead_bytes);
    } else {
        assert!(memory.stages.iter().all(|s| s.weights_bytes == 0));
        assert_eq!(
            resident,
            memory.estimate.weights_bytes + memory.estimate.overhead_bytes
        );
    }
    assert_eq!(
        governor.usage()[0].high_water_bytes,
        memory.peak_bytes(),
        "nothing reserved beyond the plan's peak"
    );

    // Deterministic for a fixed seed; another seed draws another image.
    let again = pool.generate(key, request.clone(), |_| {}).await.unwrap();
    assert_eq!(again.png, image.png, "same seed, same bytes");
    let other = pool
        .text_to_image(key, &request.prompt, 64, 48, 3, 12)
        .await
        .unwrap();
    assert_ne!(other, image.png);

    pool.shutdown().await;
    assert_eq!(governor.reserved(DeviceId::Cpu), Some(0));
    assert_eq!(governor.live_reservations(), 0);
    random::remove(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_co_resident_makes_a_png_through_the_pool() {
    generate_and_check(Pipeline::Flux, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_staged_releases_each_stage() {
    generate_and_check(Pipeline::Flux, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd3_co_resident_makes_a_png_through_the_pool() {
    generate_and_check(Pipeline::Sd3, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd3_staged_releases_each_stage() {
    generate_and_check(Pipeline::Sd3, true).await;
}
