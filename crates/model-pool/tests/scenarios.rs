//! End-to-end scenarios through the async pool, on Tokio's paused clock: every timeout, TTL
//! and cooldown below passes in virtual time, so nothing sleeps for real and the runs are
//! deterministic. Each test is one policy or fault, named after it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use model_pool::size::GIB;
use model_pool::{
    DeviceId, MemoryGovernor, ModelSpec, ModelStateKind, Pool, PoolError, SchedulerConfig, Tier,
    TimeoutPhase,
};
use support::fake::{FakeLoader, Script};
use tokio::time::Instant;

const CPU: DeviceId = DeviceId::Cpu;

fn spec(key: &str, resident_gib: u64, per_request_gib: u64) -> ModelSpec {
    ModelSpec::new(key, CPU, resident_gib * GIB, per_request_gib * GIB)
}

fn governor(budget_gib: u64) -> MemoryGovernor {
    MemoryGovernor::with_budgets([(CPU, budget_gib * GIB)]).unwrap()
}

fn pool_on(
    governor: &MemoryGovernor,
    loader: &FakeLoader,
    specs: Vec<ModelSpec>,
) -> Pool<FakeLoader> {
    let config = SchedulerConfig {
        request_timeout: Duration::from_secs(30),
        ..SchedulerConfig::default()
    };
    Pool::builder(loader.clone())
        .governor(governor.clone())
        .config(config)
        .models(specs)
        .build()
        .unwrap()
}

/// Lets spawned loads, unloads and waiters run (single-threaded runtime, paused clock).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn state(pool: &Pool<FakeLoader>, key: &str) -> ModelStateKind {
    pool.status().model(key).unwrap().state
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_share_one_load_and_memory_returns_when_leases_drop() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    let pool = Arc::new(pool_on(&gov, &loader, vec![spec("a", 4, 1)]));
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.acquire("a").await })
        })
        .collect();
    let mut leases = Vec::new();
    for t in tasks {
        leases.push(t.await.unwrap().unwrap());
    }
    assert_eq!(
        loader.loads_of("a"),
        1,
        "single-flight: one load for three requests"
    );
    assert_eq!(
        gov.reserved(CPU),
        Some(7 * GIB),
        "weights once, working memory per request"
    );
    assert_eq!(leases[0].reserved_bytes(), GIB);
    drop(leases);
    assert_eq!(
        gov.reserved(CPU),
        Some(4 * GIB),
        "only the resident weights remain"
    );
    assert_eq!(pool.status().model("a").unwrap().leases, 0);
}

#[tokio::test(start_paused = true)]
async fn model_that_can_never_fit_is_refused_without_eviction_loop() {
    let (gov, loader) = (governor(48), FakeLoader::new());
    let pool = pool_on(
        &gov,
        &loader,
        vec![spec("small", 1, 0), spec("kimi", 600, 98)],
    );
    drop(pool.acquire("small").await.unwrap());
    let started = Instant::now();
    let err = pool.acquire("kimi").await.unwrap_err();
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "refused at once, not after a timeout"
    );
    assert!(
        matches!(err, PoolError::NeverFits { need, budget, device: CPU, .. } if need.0 == 698 * GIB && budget.0 == 48 * GIB)
    );
    assert!(err.to_string().contains("can never fit"), "{err}");
    assert_eq!(loader.loads_of("kimi"), 0);
    assert_eq!(
        state(&pool, "small"),
        ModelStateKind::Ready,
        "nothing was evicted for it"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_frees_queue_slot_and_aborts_load() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    loader.script("a", [Script::Hang]);
    let pool = Arc::new(pool_on(&gov, &loader, vec![spec("a", 4, 1).max_queue(1)]));
    let waiting = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.acquire("a").await })
    };
    settle().await;
    assert_eq!(state(&pool, "a"), ModelStateKind::Loading);
    assert_eq!(pool.status().model("a").unwrap().queue_depth, 1);
    assert_eq!(gov.reserved(CPU), Some(5 * GIB));
    // The caller gives up: its future is dropped.
    waiting.abort();
    settle().await;
    assert_eq!(
        loader.loads_dropped(),
        1,
        "nobody else waited: the load was aborted"
    );
    assert_eq!(gov.reserved(CPU), Some(0), "its memory came back");
    let status = pool.status();
    let a = status.model("a").unwrap();
    assert_eq!(
        (
            a.queue_depth,
            a.state,
            a.counters.cancellations,
            a.counters.load_aborts
        ),
        (0, ModelStateKind::Unloaded, 1, 1)
    );
    // The freed slot takes a new request, which loads normally.
    let lease = pool.acquire("a").await.unwrap();
    assert_eq!(loader.loads_of("a"), 2);
    drop(lease);
}

#[tokio::test(start_paused = true)]
async fn timed_out_waiter_is_answered_on_the_timer_and_frees_its_slot() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    let pool = pool_on(
        &gov,
        &loader,
        vec![spec("a", 4, 1).max_concurrency(1).max_queue(1)],
    );
    let held = pool.acquire("a").await.unwrap();
    let started = Instant::now();
    let err = pool
        .acquire_timeout("a", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(
        matches!(err, PoolError::Timeout { phase: TimeoutPhase::Queued, waited, .. } if waited == Duration::from_secs(5))
    );
    assert_eq!(pool.status().model("a").unwrap().queue_depth, 0);
    drop(held);
    drop(pool.acquire("a").await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn full_queue_returns_busy_with_retry_after() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    let pool = Arc::new(pool_on(
        &gov,
        &loader,
        vec![spec("a", 4, 1).max_concurrency(1).max_queue(1)],
    ));
    let held = pool.acquire("a").await.unwrap();
    let queued = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.acquire("a").await.map(drop) })
    };
    settle().await;
    let err = pool.acquire("a").await.unwrap_err();
    assert!(matches!(err, PoolError::Busy { limit: 1, .. }), "{err}");
    assert!(err.retry_after().is_some_and(|d| d > Duration::ZERO));
    drop(held);
    queued.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn load_panic_returns_memory_and_pool_keeps_serving() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    loader.script("a", [Script::Panic]);
    let pool = pool_on(&gov, &loader, vec![spec("a", 4, 1), spec("b", 4, 1)]);
    let err = pool.acquire("a").await.unwrap_err();
    assert!(
        matches!(&err, PoolError::LoadPanicked { model, message, .. } if model == "a" && message.contains("injected"))
    );
    assert_eq!(gov.reserved(CPU), Some(0));
    drop(pool.acquire("b").await.unwrap());
    // During the cooldown "a" is refused with the time left; after it, it loads.
    assert!(matches!(
        pool.acquire("a").await,
        Err(PoolError::CoolingDown { .. })
    ));
    tokio::time::sleep(err.retry_after().unwrap()).await;
    drop(pool.acquire("a").await.unwrap());
    assert_eq!(pool.status().model("a").unwrap().counters.load_panics, 1);
}

#[tokio::test(start_paused = true)]
async fn load_error_is_typed_and_repeated_failures_back_off() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    loader.script(
        "a",
        [Script::Fail("missing shard"), Script::Fail("missing shard")],
    );
    let pool = pool_on(&gov, &loader, vec![spec("a", 4, 1)]);
    let first = pool.acquire("a").await.unwrap_err();
    assert!(
        matches!(&first, PoolError::LoadFailed { attempts: 1, message, .. } if message == "missing shard")
    );
    tokio::time::sleep(first.retry_after().unwrap()).await;
    let second = pool.acquire("a").await.unwrap_err();
    assert_eq!(
        second.retry_after(),
        first.retry_after().map(|d| d * 2),
        "exponential backoff"
    );
    tokio::time::sleep(second.retry_after().unwrap()).await;
    drop(pool.acquire("a").await.unwrap());
    assert_eq!(gov.reserved(CPU), Some(4 * GIB));
}

#[tokio::test(start_paused = true)]
async fn out_of_memory_load_is_retried_once_after_evicting_idle_models() {
    let (gov, loader) = (governor(20), FakeLoader::new());
    loader.script("big", [Script::Oom]);
    let pool = pool_on(&gov, &loader, vec![spec("idle", 3, 0), spec("big", 8, 1)]);
    drop(pool.acquire("idle").await.unwrap());
    let lease = pool.acquire("big").await.unwrap();
    assert_eq!(loader.loads_of("big"), 2, "one retry");
    assert_eq!(
        state(&pool, "idle"),
        ModelStateKind::Unloaded,
        "idle models were evicted before the retry"
    );
    drop(lease);
    // A second out-of-memory after the retry is a typed error, with the memory returned.
    loader.script("other", [Script::Oom, Script::Oom]);
    let pool2 = pool_on(&gov, &loader, vec![spec("other", 2, 1)]);
    let err = pool2.acquire("other").await.unwrap_err();
    assert!(
        matches!(err, PoolError::LoadOutOfMemory { need, budget, .. } if need.0 == 3 * GIB && budget.0 == 20 * GIB)
    );
    assert_eq!(pool2.status().model("other").unwrap().reserved_bytes, 0);
}

#[tokio::test(start_paused = true)]
async fn request_panic_returns_memory_and_pool_keeps_serving() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    let pool = pool_on(&gov, &loader, vec![spec("a", 4, 1)]);
    let err = pool
        .run("a", None, |_lease| async {
            panic!("injected request panic");
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PoolError::RequestPanicked { message, .. } if message == "injected request panic")
    );
    assert_eq!(
        gov.reserved(CPU),
        Some(4 * GIB),
        "the lease's memory came back"
    );
    assert_eq!(
        pool.run("a", None, |lease| async move { lease.key.clone() })
            .await
            .unwrap(),
        "a"
    );
    assert_eq!(pool.status().model("a").unwrap().counters.request_panics, 1);
}

#[tokio::test(start_paused = true)]
async fn request_hang_times_out_and_returns_memory() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    let pool = pool_on(&gov, &loader, vec![spec("a", 4, 1).max_concurrency(1)]);
    let started = Instant::now();
    let err = pool
        .run("a", Some(Duration::from_secs(3)), |_lease| {
            std::future::pending::<()>()
        })
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert!(matches!(
        err,
        PoolError::Timeout {
            phase: TimeoutPhase::Running,
            ..
        }
    ));
    assert_eq!(gov.reserved(CPU), Some(4 * GIB));
    // The only slot is free again.
    drop(
        pool.acquire_timeout("a", Duration::from_millis(1))
            .await
            .unwrap(),
    );
    assert_eq!(
        pool.status().model("a").unwrap().counters.request_timeouts,
        1
    );
}

#[tokio::test(start_paused = true)]
async fn idle_ttl_starts_at_the_last_release_and_unloads() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    let pool = pool_on(
        &gov,
        &loader,
        vec![spec("a", 4, 1).idle_ttl(Duration::from_secs(10))],
    );
    let lease = pool.acquire("a").await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        state(&pool, "a"),
        ModelStateKind::Ready,
        "never unloaded under a lease"
    );
    drop(lease);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(state(&pool, "a"), ModelStateKind::Ready);
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(state(&pool, "a"), ModelStateKind::Unloaded);
    assert_eq!(
        (gov.reserved(CPU), loader.unloads(), loader.live_models()),
        (Some(0), 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn ttl_zero_unloads_when_last_lease_drops() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    let pool = pool_on(
        &gov,
        &loader,
        vec![spec("a", 4, 1).idle_ttl(Duration::ZERO)],
    );
    let (l1, l2) = (
        pool.acquire("a").await.unwrap(),
        pool.acquire("a").await.unwrap(),
    );
    drop(l1);
    settle().await;
    assert_eq!(state(&pool, "a"), ModelStateKind::Ready);
    drop(l2);
    settle().await;
    assert_eq!(state(&pool, "a"), ModelStateKind::Unloaded);
    assert_eq!(gov.reserved(CPU), Some(0));
}

#[tokio::test(start_paused = true)]
async fn pinned_model_is_never_evicted() {
    // LocalAI issue 11101 freed pinned models after each request.
    let (gov, loader) = (governor(10), FakeLoader::new());
    let pool = pool_on(
        &gov,
        &loader,
        vec![
            spec("pinned", 5, 1).pinned(),
            spec("other", 3, 1),
            spec("big", 5, 1),
        ],
    );
    settle().await;
    assert_eq!(
        state(&pool, "pinned"),
        ModelStateKind::Ready,
        "preloaded at start"
    );
    for _ in 0..3 {
        drop(pool.acquire("pinned").await.unwrap());
        drop(pool.acquire("other").await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    let err = pool.acquire("big").await.unwrap_err();
    assert!(
        matches!(err, PoolError::BlockedByPinned { pinned, .. } if pinned.0 == 5 * GIB),
        "{err}"
    );
    assert_eq!(state(&pool, "pinned"), ModelStateKind::Ready);
    assert_eq!(loader.loads_of("pinned"), 1);
}

#[tokio::test(start_paused = true)]
async fn eviction_race_request_for_model_being_evicted_does_not_deadlock() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    let pool = Arc::new(pool_on(
        &gov,
        &loader,
        vec![spec("victim", 6, 1), spec("newcomer", 6, 1)],
    ));
    drop(pool.acquire("victim").await.unwrap());
    let newcomer = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move {
            let lease = pool.acquire("newcomer").await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(lease);
            Ok::<_, PoolError>(())
        })
    };
    // Let the newcomer's admission start evicting the victim, then ask for the victim while
    // its unload is in flight.
    tokio::task::yield_now().await;
    assert_eq!(state(&pool, "victim"), ModelStateKind::Unloading);
    let victim = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.acquire("victim").await.map(drop) })
    };
    let both = async {
        newcomer.await.unwrap().unwrap();
        victim.await.unwrap().unwrap();
    };
    tokio::time::timeout(Duration::from_secs(5), both)
        .await
        .expect("deadlock: the race did not resolve");
    assert_eq!(
        loader.loads_of("victim"),
        2,
        "evicted, then loaded again for the racing request"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_fails_waiters_unloads_everything_and_governor_reports_zero() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    loader.script("loading", [Script::Hang]);
    let specs = vec![
        spec("held", 4, 1),
        spec("idle", 2, 1),
        spec("loading", 2, 1),
        spec("pinned", 1, 0).pinned(),
    ];
    let pool = Arc::new(pool_on(&gov, &loader, specs));
    let held = pool.acquire("held").await.unwrap();
    drop(pool.acquire("idle").await.unwrap());
    let waiter = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.acquire("loading").await.map(drop) })
    };
    settle().await;
    let shutdown = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.shutdown().await })
    };
    assert!(matches!(
        waiter.await.unwrap(),
        Err(PoolError::ShuttingDown { .. })
    ));
    settle().await;
    assert!(!shutdown.is_finished(), "waits for the lease still held");
    assert!(matches!(
        pool.acquire("idle").await,
        Err(PoolError::ShuttingDown { .. })
    ));
    drop(held);
    tokio::time::timeout(Duration::from_secs(1), shutdown)
        .await
        .expect("shutdown finished")
        .unwrap();
    settle().await;
    assert_eq!(gov.total_reserved(), 0);
    assert_eq!(gov.live_reservations(), 0);
    assert_eq!(loader.live_models(), 0, "every loaded model was freed");
    assert_eq!(loader.loads_dropped(), 1, "the hanging load was aborted");
    assert!(
        pool.status()
            .models
            .iter()
            .all(|m| m.state == ModelStateKind::Unloaded)
    );
}

#[tokio::test(start_paused = true)]
async fn pools_sharing_one_governor_wake_each_other_on_release() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    let first = pool_on(
        &gov,
        &loader,
        vec![spec("a", 5, 1).idle_ttl(Duration::ZERO)],
    );
    let second = Arc::new(pool_on(&gov, &loader, vec![spec("b", 5, 1)]));
    let lease = first.acquire("a").await.unwrap();
    let waiting = {
        let second = Arc::clone(&second);
        tokio::spawn(async move { second.acquire("b").await.map(drop) })
    };
    settle().await;
    assert!(
        !waiting.is_finished(),
        "another pool's model cannot be evicted from here"
    );
    drop(lease); // TTL 0: "a" unloads, the governor signals the release to the other pool
    tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("woken by the release")
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn status_and_prometheus_show_estimate_measured_and_counters() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    loader.script("a", [Script::OkMeasured(5 * GIB)]);
    let pool = pool_on(&gov, &loader, vec![spec("a", 4, 1), spec("huge", 20, 1)]);
    let lease = pool.acquire("a").await.unwrap();
    let _ = pool.acquire("huge").await;
    let status = pool.status();
    let a = status.model("a").unwrap();
    assert_eq!(
        (a.state, a.leases, a.reserved_bytes, a.estimate_bytes),
        (ModelStateKind::Ready, 1, 5 * GIB, 5 * GIB)
    );
    assert_eq!(
        (a.measured_bytes, a.estimate_exceeded),
        (Some(5 * GIB), true)
    );
    assert_eq!(status.reserved_on(CPU), Some(5 * GIB));
    let text = pool.prometheus();
    for line in [
        "model_pool_model_state{model=\"a\",device=\"cpu\",state=\"ready\"} 1",
        "model_pool_model_leases{model=\"a\"} 1",
        "model_pool_model_measured_bytes{model=\"a\"} 5368709120",
        "model_pool_device_budget_bytes{device=\"cpu\"} 10737418240",
        "model_pool_device_reserved_bytes{device=\"cpu\"} 5368709120",
        "model_pool_rejections_total{model=\"huge\",reason=\"never_fits\"} 1",
        "model_pool_loads_total{model=\"a\"} 1",
        "# TYPE model_pool_evictions_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
    drop(lease);
    assert!(matches!(
        pool.acquire("nope").await,
        Err(PoolError::UnknownModel { .. })
    ));
    assert!(matches!(
        pool.record_measured("nope", 1),
        Err(PoolError::UnknownModel { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn hot_unpinned_model_comes_back_after_an_eviction() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    let hot = spec("hot", 5, 0).tier(Tier::Hot { pinned: false });
    let pool = pool_on(
        &gov,
        &loader,
        vec![hot, spec("big", 8, 0).idle_ttl(Duration::ZERO)],
    );
    settle().await;
    assert_eq!(state(&pool, "hot"), ModelStateKind::Ready);
    drop(pool.acquire("big").await.unwrap());
    settle().await;
    assert_eq!(
        state(&pool, "hot"),
        ModelStateKind::Ready,
        "preloaded again once room came back"
    );
    assert_eq!(loader.loads_of("hot"), 2);
}

#[tokio::test]
async fn build_refuses_inconsistent_configurations() {
    let (gov, loader) = (governor(10), FakeLoader::new());
    let build = |specs: Vec<ModelSpec>| {
        Pool::builder(loader.clone())
            .governor(gov.clone())
            .models(specs)
            .build()
            .map(drop)
    };
    use model_pool::BuildError;
    assert!(matches!(
        build(vec![spec("a", 1, 0), spec("a", 1, 0)]),
        Err(BuildError::DuplicateModel(_))
    ));
    assert!(matches!(
        build(vec![spec("a", 1, 0).max_concurrency(0)]),
        Err(BuildError::InvalidSpec { .. })
    ));
    let gpu = ModelSpec::new("g", DeviceId::Cuda(0), GIB, 0);
    assert!(matches!(
        build(vec![gpu]),
        Err(BuildError::UnknownDevice { .. })
    ));
    let pinned = vec![spec("p1", 6, 0).pinned(), spec("p2", 6, 0).pinned()];
    assert!(matches!(
        build(pinned),
        Err(BuildError::PinnedExceedBudget { .. })
    ));
    assert!(
        build(vec![spec("kimi", 700, 0)]).is_ok(),
        "a model that never fits is registrable, refused per request"
    );
}

#[test]
fn build_outside_a_runtime_is_an_error_not_a_panic() {
    let result = Pool::builder(FakeLoader::new())
        .governor(governor(1))
        .build();
    assert!(matches!(result, Err(model_pool::BuildError::NoRuntime)));
}
