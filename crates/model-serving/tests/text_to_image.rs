//! FLUX.1-schnell and SD3.5 Large Turbo through the pool, on tiny random-weight checkpoints
//! written by `model-fixtures` in the real repositories' layout (shapes from the registry
//! spec, Diffusers configs, CLIP BPE `vocab.json` + `merges.txt`, T5 `tokenizer.json`) and
//! loaded by the same code as the real files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use model_fixtures::diffusion::{self as random, Geometry};
use model_networks::diffusion::Stage;
use model_pool::{DeviceId, MemoryGovernor, PoolError};
use model_serving::text_to_image::{Limits, MemoryPlan, backend_of};
use model_serving::{ImageRequest, ModelPool, Pipeline, Progress, ServeError, ServedModel};

const GIB: u64 = 1 << 30;

/// The registry key of `pipeline`'s model.
fn key(pipeline: Pipeline) -> &'static str {
    model_serving::registry::template(backend_of(pipeline))
        .unwrap()
        .registry_key
}

fn tiny(pipeline: Pipeline, name: &str) -> PathBuf {
    let dir = model_fixtures::scratch(name);
    random::write(&dir, pipeline, &Geometry::tiny(pipeline), 7).unwrap();
    dir
}

fn config(pipeline: Pipeline, dir: &Path, staged: bool) -> ServedModel {
    ServedModel::registry(key(pipeline), dir)
        .unwrap()
        .device(DeviceId::Cpu)
        .map_image(|o| o.dtype(candle_core::DType::F32).staged(staged))
        .unwrap()
}

/// The memory plan the pool computes for `model`.
fn plan(model: &ServedModel) -> MemoryPlan {
    model
        .image_options("plan")
        .unwrap()
        .plan(&model.source, model.device)
        .unwrap()
}

fn pool(configs: Vec<ServedModel>, budget: u64) -> (ModelPool, MemoryGovernor) {
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, budget)]).unwrap();
    let pool = ModelPool::builder()
        .governor(governor.clone())
        .models(configs)
        .build()
        .unwrap();
    (pool, governor)
}

/// The request field an invalid request names.
fn field(e: &ServeError) -> Option<&'static str> {
    match e {
        ServeError::InvalidRequest { param, .. } => *param,
        _ => None,
    }
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
/// the progress events, and that the request's lease held exactly its planned largest stage.
async fn generate_and_check(pipeline: Pipeline, staged: bool) {
    let key = key(pipeline);
    let dir = tiny(pipeline, &format!("{pipeline}-{staged}"));
    let (pool, governor) = pool(vec![config(pipeline, &dir, staged)], 4 * GIB);
    let request = ImageRequest::new("a red fox on the sea at dawn")
        .size(64, 48)
        .steps(3)
        .seed(11);
    let (log, progress) = recorder(&governor);
    let started = Instant::now();
    let image = pool
        .generate_image(key, request.clone(), progress)
        .await
        .unwrap();
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

    // Reservations: while the request runs the governor holds the model's resident bytes
    // plus the request's lease, sized for its largest stage (the stages run one after another
    // within it), and nothing else; afterwards only the resident bytes.
    let resident = memory.resident_bytes;
    let largest = [Stage::TextEncoder, Stage::Denoiser, Stage::Decoder]
        .map(stage_bytes)
        .into_iter()
        .max()
        .unwrap();
    assert_eq!(memory.lease_bytes(), largest);
    for (event, reserved) in log.lock().unwrap().iter() {
        assert_eq!(*reserved, resident + largest, "{event:?}");
    }
    assert_eq!(governor.reserved(DeviceId::Cpu), Some(resident));
    // Each part carries the margin, rounded up on its own: at most a byte per part apart.
    assert!(
        memory.peak_bytes().abs_diff(memory.estimate.total_bytes) <= 2,
        "the peak of the reservations is the estimator's figure for this size: {} vs {}",
        memory.peak_bytes(),
        memory.estimate.total_bytes
    );
    if staged {
        assert!(
            stage_bytes(Stage::TextEncoder)
                > memory.stage(Stage::TextEncoder).unwrap().activations_bytes
        );
        assert_eq!(resident, with_margin(memory.estimate.overhead_bytes));
    } else {
        assert!(memory.stages.iter().all(|s| s.weights_bytes == 0));
        assert_eq!(
            resident,
            with_margin(memory.estimate.weights_bytes + memory.estimate.overhead_bytes)
        );
    }
    assert_eq!(
        governor.usage()[0].high_water_bytes,
        memory.peak_bytes(),
        "nothing reserved beyond the plan's peak"
    );

    // Deterministic for a fixed seed; another seed draws another image.
    let again = pool
        .generate_image(key, request.clone(), |_| {})
        .await
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_typed_errors_and_load_nothing() {
    let dir = tiny(Pipeline::Sd3, "invalid");
    let key = key(Pipeline::Sd3);
    let (pool, governor) = pool(vec![config(Pipeline::Sd3, &dir, false)], 4 * GIB);
    let ok = ImageRequest::new("a blue robot").size(64, 64).steps(4);
    let err = |r: ImageRequest| {
        let pool = &pool;
        async move { pool.generate_image(key, r, |_| {}).await.unwrap_err() }
    };
    let e = err(ok.clone().size(72, 64)).await;
    assert_eq!(field(&e), Some("size"), "{e}");
    assert!(
        e.to_string().contains("72×64") && e.to_string().contains("multiples of 16"),
        "{e}"
    );
    let e = err(ok.clone().steps(0)).await;
    assert_eq!(field(&e), Some("steps"), "{e}");
    assert!(e.to_string().contains("0 steps is outside 1–4"), "{e}");
    let e = err(ok.clone().steps(5)).await;
    assert_eq!(field(&e), Some("steps"), "{e}");
    assert!(e.to_string().contains("5 steps"), "{e}");
    let e = err(ImageRequest::new("   ").size(64, 64)).await;
    assert_eq!(field(&e), Some("prompt"), "{e}");
    // The tiny transformer's position embedding is 16 × 16 patches: 16 · 2 · 8 = 256 px.
    let limits: &Limits = pool.limits(key).unwrap();
    assert_eq!((limits.max_width, limits.max_height), (256, 256));
    let e = err(ok.clone().size(272, 64)).await;
    assert_eq!(field(&e), Some("size"), "{e}");
    assert!(e.to_string().contains("limit of 256×256"), "{e}");
    assert!(e.to_string().contains("position embedding"), "{e}");
    let e = pool
        .text_to_image("acme/unknown", "a fox", 64, 64, 4, 0)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ServeError::Pool(PoolError::UnknownModel { .. })),
        "{e}"
    );
    assert!(
        pool.measurements().is_empty(),
        "no invalid request loads the model"
    );
    assert_eq!(governor.reserved(DeviceId::Cpu), Some(0));
    random::remove(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_models_refuse_sizes_beyond_their_spec() {
    // No files: the plan and the limits come from the registry spec alone.
    let missing = std::env::temp_dir().join("diffusion-no-such-checkpoint");
    let (pool, _) = pool(
        vec![
            config(Pipeline::Flux, &missing, false),
            config(Pipeline::Sd3, &missing, false),
        ],
        1 << 50,
    );
    for (pipeline, max) in [(Pipeline::Flux, 2048), (Pipeline::Sd3, 1536)] {
        let e = pool
            .text_to_image(key(pipeline), "a fox", max + 16, 512, 4, 0)
            .await
            .unwrap_err();
        assert_eq!(field(&e), Some("size"), "{e}");
        assert!(
            e.to_string().contains(&format!("limit of {max}×{max}")),
            "{pipeline}: {e}"
        );
        let limits = pool.limits(key(pipeline)).unwrap();
        assert_eq!((limits.max_width, limits.max_height), (max, max));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolution_sets_the_activation_reservation_and_never_fits_is_refused_at_once() {
    let dir = tiny(Pipeline::Flux, "sizes");
    let key = key(Pipeline::Flux);
    let c = config(Pipeline::Flux, &dir, false);
    let plan = plan(&c);
    let small = plan.request(64, 64).unwrap();
    let large = plan.request(256, 128).unwrap();
    assert_eq!(small.resident_bytes, large.resident_bytes);
    for stage in [Stage::Denoiser, Stage::Decoder] {
        assert!(
            large.stage(stage).unwrap().bytes() > small.stage(stage).unwrap().bytes(),
            "{stage:?}"
        );
    }
    for m in [&small, &large] {
        assert!(m.peak_bytes().abs_diff(m.estimate.total_bytes) <= 2);
    }
    // A budget that holds the model and a 64×64 request but not a 256×128 one.
    let budget = (small.peak_bytes() + large.peak_bytes()) / 2;
    let (pool, governor) = pool(vec![c], budget);
    let e = pool
        .text_to_image(key, "a cat", 256, 128, 1, 0)
        .await
        .unwrap_err();
    match &e {
        ServeError::ImageNeverFits {
            need, budget: b, ..
        } => {
            assert_eq!((need.0, b.0), (large.peak_bytes(), budget))
        }
        other => panic!("{other}"),
    }
    assert!(pool.measurements().is_empty(), "refused before loading");
    let png = pool
        .text_to_image(key, "a cat", 64, 64, 1, 0)
        .await
        .unwrap();
    assert_eq!(decode(&png).dimensions(), (64, 64));
    pool.shutdown().await;
    assert_eq!(governor.reserved(DeviceId::Cpu), Some(0));
    random::remove(&dir).unwrap();
}

/// A request's lease holds its largest stage for the whole request (the scheduler admits it by
/// that size). While another user of the governor holds that memory, the request waits in the
/// queue without running a stage or reserving stage memory: it fails with the pool's timeout
/// when its deadline passes, and runs once the memory is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_memory_is_held_elsewhere_waits_holding_nothing_and_runs_once_it_is_free() {
    let dir = tiny(Pipeline::Sd3, "held");
    let c = config(Pipeline::Sd3, &dir, true);
    let memory = plan(&c).request(64, 64).unwrap();
    let mut impatient = c.clone().request_timeout(Duration::from_millis(300));
    impatient.key = "impatient".into();
    let mut patient = c;
    patient.key = "patient".into();
    let budget = 2 * memory.peak_bytes();
    let (pool, governor) = pool(vec![impatient, patient], budget);
    // Another user of the same governor holds all but what the model and its text stage need;
    // the denoiser needs more.
    let text = memory.stage(Stage::TextEncoder).unwrap().bytes();
    assert!(memory.stage(Stage::Denoiser).unwrap().bytes() > text);
    assert!(memory.lease_bytes() > text);
    let hold = budget - memory.resident_bytes - text;
    let held = governor.try_reserve(DeviceId::Cpu, hold).unwrap();
    let no_stage_memory = |reserved: u64| {
        let extra = reserved - hold;
        assert!(
            extra == 0 || extra == memory.resident_bytes,
            "{extra} bytes beside the held ones: only a loaded model's resident bytes may be"
        );
    };
    let request = || ImageRequest::new("a fox").size(64, 64).steps(2);

    let (log, progress) = recorder(&governor);
    let e = pool
        .generate_image("impatient", request(), progress)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ServeError::Pool(PoolError::Timeout { model, .. }) if model == "impatient"),
        "{e}"
    );
    assert!(log.lock().unwrap().is_empty(), "no stage ran");
    no_stage_memory(governor.reserved(DeviceId::Cpu).unwrap());

    let (log, progress) = recorder(&governor);
    let waiting = Arc::clone(&log);
    let (image, ()) = tokio::join!(pool.generate_image("patient", request(), progress), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            waiting.lock().unwrap().is_empty(),
            "it waits before any stage"
        );
        no_stage_memory(governor.reserved(DeviceId::Cpu).unwrap());
        drop(held);
    });
    let image = image.unwrap();
    assert_eq!(decode(&image.png).dimensions(), (64, 64));
    assert_eq!(
        log.lock().unwrap().len(),
        8,
        "three stages and two steps ran"
    );
    pool.shutdown().await;
    assert_eq!(governor.live_reservations(), 0);
    random::remove(&dir).unwrap();
}

#[test]
fn the_plan_reads_the_checkpoint_it_will_load() {
    for pipeline in Pipeline::ALL {
        let dir = tiny(pipeline, &format!("plan-{pipeline}"));
        let geometry = Geometry::tiny(pipeline);
        let written = random::write(&dir, pipeline, &geometry, 3).unwrap();
        let plan = plan(&config(pipeline, &dir, false));
        // Architecture facts come back from the configs written for them …
        for c in geometry.components(pipeline).unwrap() {
            let read = plan
                .spec()
                .components
                .iter()
                .find(|r| r.name == c.name)
                .unwrap();
            for key in c.family.required_keys() {
                assert_eq!(
                    read.arch_u64(key).map(|v| v as f64).or(read.arch_f64(key)),
                    c.arch_u64(key).map(|v| v as f64).or(c.arch_f64(key)),
                    "{pipeline} {} {key}",
                    c.name
                );
            }
        }
        // … and the inventory is the bytes on disk (SD3's T5 also stores a copy of its
        // embedding that the loader skips: it stays listed, as a row of its own).
        let listed: u64 = plan
            .spec()
            .components
            .iter()
            .map(|c| c.weights.total_bytes())
            .sum();
        assert_eq!(listed, written.bytes, "{pipeline}");
        random::remove(&dir).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_stops_the_work_and_frees_its_memory() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let dir = tiny(Pipeline::Flux, "cancel");
    let key = key(Pipeline::Flux);
    let (pool, governor) = pool(vec![config(Pipeline::Flux, &dir, true)], 4 * GIB);
    // Loaded once, so that the abandoned request gets its lease at once.
    pool.text_to_image(key, "a fox", 32, 32, 1, 0)
        .await
        .unwrap();
    let resident = governor.reserved(DeviceId::Cpu).unwrap();
    let steps = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&steps);
    let slow_steps = move |p| {
        if let Progress::Step { .. } = p {
            seen.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let request = ImageRequest::new("a fox").size(32, 32).steps(4);
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        pool.generate_image(key, request, slow_steps),
    )
    .await;
    assert!(gave_up.is_err(), "the caller stopped waiting");
    // The blocking work notices at its next step and returns the lease and the stage memory.
    let deadline = Instant::now() + Duration::from_secs(20);
    while governor.reserved(DeviceId::Cpu) != Some(resident) {
        assert!(
            Instant::now() < deadline,
            "memory not returned: {governor:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(steps.load(Ordering::SeqCst) < 4, "generation stopped early");
    let png = pool
        .text_to_image(key, "a fox", 32, 32, 1, 0)
        .await
        .unwrap();
    assert_eq!(decode(&png).dimensions(), (32, 32));
    pool.shutdown().await;
    random::remove(&dir).unwrap();
}

/// `bytes` plus the registry profiles' margin, as the plan adds it to each part.
fn with_margin(bytes: u64) -> u64 {
    bytes + model_spec::estimate::margin_on(bytes, model_spec::profile::DEFAULT_MARGIN_PERCENT)
}
