//! Lease acquire + release on a resident model, 64 concurrent tasks on a two-worker runtime.
//!
//! Criterion reports the time per operation over all tasks (throughput); the per-operation
//! latency distribution, which Criterion does not keep, is collected alongside and printed
//! as p50 / p99 at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use model_pool::size::{GIB, MIB};
use model_pool::{DeviceId, Loaded, MemoryGovernor, ModelLoader, ModelSpec, Pool, Tier};
use parking_lot::Mutex;

const TASKS: u64 = 64;

struct Resident;

impl ModelLoader for Resident {
    type Model = ();

    async fn load(&self, _spec: &ModelSpec) -> Result<Loaded<()>, model_pool::LoadError> {
        Ok(Loaded::new(()))
    }
}

fn lease(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let pool = runtime.block_on(async {
        let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, 16 * GIB)]).expect("governor");
        let spec = ModelSpec::new("resident", DeviceId::Cpu, GIB, MIB)
            .tier(Tier::Hot { pinned: true })
            .max_concurrency(TASKS as usize);
        let pool = Pool::builder(Resident)
            .governor(governor)
            .model(spec)
            .build()
            .expect("pool");
        // Load it before measuring.
        drop(pool.acquire("resident").await.expect("lease"));
        Arc::new(pool)
    });
    let latencies_ns: Arc<Mutex<Vec<u64>>> = Arc::default();

    c.bench_function("lease_acquire_release_64_tasks", |b| {
        b.iter_custom(|iters| {
            let pool = Arc::clone(&pool);
            let latencies_ns = Arc::clone(&latencies_ns);
            runtime.block_on(async move {
                let per_task = iters.div_ceil(TASKS).max(1);
                let started = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let pool = Arc::clone(&pool);
                        tokio::spawn(async move {
                            let mut local = Vec::with_capacity(per_task as usize);
                            for _ in 0..per_task {
                                let t0 = Instant::now();
                                let lease = pool.acquire("resident").await.expect("lease");
                                drop(lease);
                                local.push(t0.elapsed().as_nanos() as u64);
                                // Let the other 63 tasks interleave, as concurrent requests do.
                                tokio::task::yield_now().await;
                            }
                            local
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await.expect("task"));
                }
                let elapsed = started.elapsed();
                latencies_ns.lock().extend(all);
                // Time per operation over all tasks.
                elapsed.mul_f64(iters as f64 / (per_task * TASKS) as f64)
            })
        })
    });

    let mut all = std::mem::take(&mut *latencies_ns.lock());
    all.sort_unstable();
    if !all.is_empty() {
        let pct = |p: f64| Duration::from_nanos(all[((all.len() - 1) as f64 * p).round() as usize]);
        println!(
            "lease acquire+release latency over {} ops, {TASKS} tasks, 2 workers: p50 = {:.2?}, p99 = {:.2?}, p99.9 = {:.2?}",
            all.len(),
            pct(0.50),
            pct(0.99),
            pct(0.999)
        );
    }
    let status = pool.status();
    assert_eq!(
        status.model("resident").map(|m| m.leases),
        Some(0),
        "every lease was returned"
    );
}

criterion_group!(benches, lease);
criterion_main!(benches);
