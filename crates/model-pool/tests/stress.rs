//! Randomized stress: twelve models with the registry's real estimates, a 48 GiB budget,
//! concurrent acquire / release / cancel / fault operations, invariants at every step.
//!
//! `MODEL_POOL_STRESS_OPS` sets the number of operations (default 100,000);
//! `MODEL_POOL_STRESS_SEED` the seed.

mod support;

use support::stress::{self, StressConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_operations_never_exceed_the_budget_and_leak_nothing() {
    stress::silence_injected_panics();
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let config = StressConfig {
        ops: env("MODEL_POOL_STRESS_OPS", 100_000),
        tasks: 64,
        seed: env("MODEL_POOL_STRESS_SEED", 7),
    };
    let report = stress::run(config).await;
    println!("{}", report.json());
    assert!(report.ops >= config.ops);
    assert_eq!(
        report.violations, 0,
        "reserved exceeded the budget or a lease held the wrong bytes"
    );
    assert!(report.max_reserved_bytes <= stress::BUDGET);
    assert!(
        !report.shutdown_timed_out,
        "shutdown hung: something is stuck"
    );
    assert_eq!(
        report.leaked_bytes, 0,
        "bytes still reserved after shutdown"
    );
    assert_eq!(report.live_reservations, 0);
    assert_eq!((report.stuck_leases, report.stuck_waiters), (0, 0));
    assert_eq!(report.live_models, 0, "a loaded model was never freed");
    assert_eq!(
        report.unload_failures, 0,
        "an unload ran while a lease still held its model"
    );
    // The run exercised what it claims to: the pool served, evicted, refused and recovered.
    assert!(report.leases > config.ops / 4, "{report:?}");
    assert!(report.evictions > 0 && report.loads > 12, "{report:?}");
    assert!(
        report.errors.never_fits > 0,
        "Kimi K2 must be refused: {report:?}"
    );
    assert!(
        report.errors.request_panicked > 0 && report.errors.load_failed > 0,
        "{report:?}"
    );
}
