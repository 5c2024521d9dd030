//! The randomized stress run shared by `tests/stress.rs` and `examples/stress.rs`: twelve
//! models with the registry's real estimates, a budget that holds a few at a time, many tasks
//! doing random acquire / release / cancel / fault operations, and invariant checks at every
//! step.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use model_pool::size::{GIB, MIB};
use model_pool::{DeviceId, MemoryGovernor, ModelSpec, Pool, PoolError, SchedulerConfig, Tier};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::fake::{FakeLoader, FaultRates};

/// The twelve registry models with their `est_memory_allocation_mb` (MB = 1,048,576 B).
/// Fixture data for the stress run only; the registry crate owns the real figures.
pub const MODELS_MB: [(&str, u64); 12] = [
    ("sentence-transformers/all-MiniLM-L6-v2", 100),
    ("jinaai/jina-embeddings-v2-base-en", 700),
    ("openai/clip-vit-base-patch32", 700),
    ("dunzhang/stella_en_1.5B_v5", 7_200),
    ("Alibaba-NLP/gte-Qwen2-1.5B-instruct", 7_600),
    ("microsoft/phi-4", 10_400),
    ("llava-hf/llava-1.5-7b-hf", 17_000),
    ("nvidia/NV-Embed-v2", 18_100),
    ("unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF", 21_400),
    ("stabilityai/stable-diffusion-3.5-large-turbo", 25_600),
    ("black-forest-labs/FLUX.1-schnell", 27_700),
    ("unsloth/Kimi-K2-Instruct-GGUF", 715_000),
];

/// Budget: the largest models fit one or two at a time, the small ones many.
pub const BUDGET: u64 = 48 * GIB;

#[derive(Debug, Clone, Copy)]
pub struct StressConfig {
    pub ops: u64,
    pub tasks: usize,
    pub seed: u64,
}

#[derive(Debug, Default, Clone)]
pub struct StressReport {
    pub ops: u64,
    pub violations: u64,
    pub leaked_bytes: u64,
    pub live_reservations: u64,
    pub stuck_leases: usize,
    pub stuck_waiters: usize,
    pub live_models: u64,
    pub shutdown_timed_out: bool,
    pub leases: u64,
    pub p50_lease_us: u64,
    pub p99_lease_us: u64,
    pub max_reserved_bytes: u64,
    pub errors: ErrorCounts,
    pub loads: u64,
    pub evictions: u64,
    pub unload_failures: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct ErrorCounts {
    pub never_fits: u64,
    pub busy: u64,
    pub timeout: u64,
    pub load_failed: u64,
    pub cooling_down: u64,
    pub request_panicked: u64,
    pub other: u64,
    pub cancelled: u64,
}

impl StressReport {
    /// The one-line JSON summary the example prints.
    pub fn json(&self) -> String {
        format!(
            concat!(
                "{{\"ops\":{},\"violations\":{},\"leaked_bytes\":{},\"p50_lease_us\":{},\"p99_lease_us\":{},",
                "\"leases\":{},\"loads\":{},\"evictions\":{},\"max_reserved_bytes\":{},\"budget_bytes\":{},",
                "\"stuck_leases\":{},\"stuck_waiters\":{},\"live_reservations\":{},",
                "\"errors\":{{\"never_fits\":{},\"busy\":{},\"timeout\":{},\"load_failed\":{},\"cooling_down\":{},",
                "\"request_panicked\":{},\"cancelled\":{},\"other\":{}}},\"elapsed_ms\":{}}}"
            ),
            self.ops,
            self.violations,
            self.leaked_bytes,
            self.p50_lease_us,
            self.p99_lease_us,
            self.leases,
            self.loads,
            self.evictions,
            self.max_reserved_bytes,
            BUDGET,
            self.stuck_leases,
            self.stuck_waiters,
            self.live_reservations,
            self.errors.never_fits,
            self.errors.busy,
            self.errors.timeout,
            self.errors.load_failed,
            self.errors.cooling_down,
            self.errors.request_panicked,
            self.errors.cancelled,
            self.errors.other,
            self.elapsed.as_millis(),
        )
    }
}

/// Specs for the twelve models: resident ≈ 85% of the estimate, per request ≈ 15%, with a
/// mix of tiers, priorities and limits so that every policy is exercised.
pub fn specs() -> Vec<ModelSpec> {
    MODELS_MB
        .iter()
        .enumerate()
        .map(|(i, &(key, mb))| {
            let total = mb * MIB;
            let resident = total / 100 * 85;
            let spec = ModelSpec::new(key, DeviceId::Cpu, resident, total - resident)
                .max_concurrency(2 + i % 4)
                .max_queue(16 + 8 * (i % 3))
                .priority((i % 3) as i32 - 1);
            match i {
                0 => spec.pinned(),
                1 => spec.tier(Tier::Hot { pinned: false }),
                _ => spec.idle_ttl(Duration::from_millis([0, 1, 5, 20][i % 4])),
            }
        })
        .collect()
}

/// Keeps the thousands of injected panics out of the output; other panics still print.
pub fn silence_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if !message.starts_with("injected") {
            default(info);
        }
    }));
}

/// Runs the stress scenario on the current (multi-threaded) runtime.
pub async fn run(config: StressConfig) -> StressReport {
    let started = Instant::now();
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, BUDGET)]).expect("one device");
    let rates = FaultRates {
        fail: 0.03,
        panic: 0.02,
        oom: 0.03,
        hang: 0.01,
    };
    let loader = FakeLoader::with_faults(config.seed, rates);
    let scheduler = SchedulerConfig {
        max_queued_total: 128,
        request_timeout: Duration::from_millis(250),
        load_timeout: Duration::from_millis(50),
        failure_backoff_base: Duration::from_millis(2),
        failure_backoff_max: Duration::from_millis(40),
        default_retry_after: Duration::from_millis(5),
    };
    let pool = Arc::new(
        Pool::builder(loader.clone())
            .governor(governor.clone())
            .config(scheduler)
            .models(specs())
            .build()
            .expect("valid pool"),
    );
    let ops = Arc::new(AtomicU64::new(0));
    let violations = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..config.tasks {
        let pool = Arc::clone(&pool);
        let governor = governor.clone();
        let ops = Arc::clone(&ops);
        let violations = Arc::clone(&violations);
        let seed = config.seed.wrapping_mul(1_000_003).wrapping_add(t as u64);
        let target = config.ops;
        tasks.push(tokio::spawn(async move {
            worker(pool, governor, ops, violations, seed, target).await
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = ErrorCounts::default();
    let mut leases = 0;
    for task in tasks {
        let (lat, errs, n) = task.await.expect("stress worker panicked outside the pool");
        latencies.extend(lat);
        leases += n;
        errors.never_fits += errs.never_fits;
        errors.busy += errs.busy;
        errors.timeout += errs.timeout;
        errors.load_failed += errs.load_failed;
        errors.cooling_down += errs.cooling_down;
        errors.request_panicked += errs.request_panicked;
        errors.cancelled += errs.cancelled;
        errors.other += errs.other;
    }
    let before_shutdown = pool.status();
    if std::env::var_os("MODEL_POOL_STRESS_DEBUG").is_some() {
        for m in &before_shutdown.models {
            eprintln!(
                "{:50} leases {:6} qto {:6} busy {:6} loads {:5} evict {:5} fail {:4} aborts {:4} cancel {:5}",
                m.key,
                m.counters.leases,
                m.counters.queue_timeouts,
                m.counters.rejected_busy,
                m.counters.loads,
                m.counters.evictions,
                m.counters.load_failures,
                m.counters.load_aborts,
                m.counters.cancellations
            );
        }
    }
    let shutdown_timed_out = tokio::time::timeout(Duration::from_secs(30), pool.shutdown())
        .await
        .is_err();
    let after = pool.status();
    latencies.sort_unstable();
    let pct = |p: f64| -> u64 {
        if latencies.is_empty() {
            0
        } else {
            latencies[((latencies.len() - 1) as f64 * p).round() as usize]
        }
    };
    // Give unload tasks a moment to drop their models after the pool reported completion.
    for _ in 0..100 {
        if loader.live_models() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    StressReport {
        ops: ops.load(Ordering::SeqCst),
        violations: violations.load(Ordering::SeqCst),
        leaked_bytes: governor.total_reserved(),
        live_reservations: governor.live_reservations(),
        stuck_leases: after.models.iter().map(|m| m.leases).sum(),
        stuck_waiters: after.queued,
        live_models: loader.live_models(),
        shutdown_timed_out,
        leases,
        p50_lease_us: pct(0.50),
        p99_lease_us: pct(0.99),
        max_reserved_bytes: governor.usage()[0].high_water_bytes,
        errors,
        loads: before_shutdown.totals.loads,
        evictions: before_shutdown.totals.evictions,
        unload_failures: after.totals.unload_failures,
        elapsed: started.elapsed(),
    }
}

async fn worker(
    pool: Arc<Pool<FakeLoader>>,
    governor: MemoryGovernor,
    ops: Arc<AtomicU64>,
    violations: Arc<AtomicU64>,
    seed: u64,
    target: u64,
) -> (Vec<u64>, ErrorCounts, u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut latencies = Vec::new();
    let mut errors = ErrorCounts::default();
    let mut leases = 0u64;
    let check = |violations: &AtomicU64| {
        if governor.reserved(DeviceId::Cpu).unwrap_or(u64::MAX) > BUDGET {
            violations.fetch_add(1, Ordering::SeqCst);
        }
    };
    while ops.fetch_add(1, Ordering::SeqCst) < target {
        // Small models are asked for far more often than large ones, as in real traffic.
        let model = if rng.random_bool(0.6) {
            rng.random_range(0..3)
        } else {
            rng.random_range(0..MODELS_MB.len())
        };
        let key = MODELS_MB[model].0;
        let timeout = Duration::from_millis(rng.random_range(1..200));
        let op = rng.random_range(0..100);
        let outcome: Result<(), PoolError> = match op {
            // Acquire, hold briefly, release.
            0..=64 => {
                let asked = Instant::now();
                match pool.acquire_timeout(key, timeout).await {
                    Ok(lease) => {
                        latencies.push(asked.elapsed().as_micros() as u64);
                        leases += 1;
                        check(&violations);
                        if lease.reserved_bytes()
                            != pool.status().model(key).map_or(0, |m| m.per_request_bytes)
                        {
                            violations.fetch_add(1, Ordering::SeqCst);
                        }
                        for _ in 0..rng.random_range(0..4) {
                            tokio::task::yield_now().await;
                        }
                        if rng.random_bool(0.05) {
                            tokio::time::sleep(Duration::from_micros(rng.random_range(100..2000)))
                                .await;
                        }
                        drop(lease);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            // Give up while waiting: the future is dropped mid-acquire.
            65..=79 => {
                let patience = Duration::from_micros(rng.random_range(0..300));
                match tokio::time::timeout(patience, pool.acquire_timeout(key, timeout)).await {
                    Ok(Ok(lease)) => {
                        leases += 1;
                        drop(lease);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => {
                        errors.cancelled += 1;
                        Ok(())
                    }
                }
            }
            // Work that panics under its lease.
            80..=87 => {
                pool.run(key, Some(timeout), |_lease| async {
                    tokio::task::yield_now().await;
                    panic!("injected request panic");
                })
                .await
            }
            // Work that hangs past its deadline.
            88..=91 => {
                pool.run(
                    key,
                    Some(Duration::from_millis(rng.random_range(1..5))),
                    |_lease| std::future::pending::<()>(),
                )
                .await
            }
            // Ordinary work through `run`.
            _ => pool
                .run(key, Some(timeout), |lease| async move { lease.key.len() })
                .await
                .map(|_| ()),
        };
        check(&violations);
        match outcome {
            Ok(()) => {}
            Err(PoolError::NeverFits { .. }) => errors.never_fits += 1,
            Err(PoolError::Busy { .. }) => errors.busy += 1,
            Err(PoolError::Timeout { .. }) => errors.timeout += 1,
            Err(
                PoolError::LoadFailed { .. }
                | PoolError::LoadPanicked { .. }
                | PoolError::LoadOutOfMemory { .. },
            ) => errors.load_failed += 1,
            Err(PoolError::CoolingDown { .. }) => errors.cooling_down += 1,
            Err(PoolError::RequestPanicked { .. }) => errors.request_panicked += 1,
            Err(_) => errors.other += 1,
        }
        if rng.random_bool(0.1) {
            tokio::task::yield_now().await;
        }
    }
    (latencies, errors, leases)
}
