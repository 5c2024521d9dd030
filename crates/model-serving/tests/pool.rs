//! The embedding API on the pool with real (tiny) Candle models: admission, eviction under a
//! small budget, never-fits refusals and dynamic batching of concurrent callers.

use model_fixtures::embed::{WORDS, tiny, tiny_memory};
use model_pool::{DeviceId, MemoryGovernor, ModelStateKind, PoolError};
use model_serving::{EmbedOptions, Family, ModelPool, ServeError, ServedModel};

fn config(family: Family, key: &str) -> ServedModel {
    let dir = tiny(family);
    let options = EmbedOptions::new()
        .family(family)
        .memory(tiny_memory(family, &dir));
    ServedModel::new(key, dir, options)
}

fn pool(budget: u64, configs: Vec<ServedModel>) -> ModelPool {
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, budget)]).unwrap();
    ModelPool::builder()
        .governor(governor)
        .models(configs)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_for_one_model_serves_two_by_evicting_the_idle_one() {
    let a = config(Family::Bert, "a");
    let b = config(Family::JinaBert, "b");
    let (sa, sb) = (a.pool_spec(0), b.pool_spec(0));
    // Enough for either model with a batch running, not for both resident.
    let need = sa.need_bytes().max(sb.need_bytes());
    let both =
        sa.resident_bytes + sb.resident_bytes + sa.per_request_bytes.max(sb.per_request_bytes);
    assert!(need < both);
    let pool = pool(need + (both - need) / 2, vec![a, b]);
    let first = pool.embed("a", ["hello world"]).await.unwrap();
    pool.embed("b", ["hello world"]).await.unwrap();
    let status = pool.status();
    assert_eq!(
        status.model("a").unwrap().state,
        ModelStateKind::Unloaded,
        "a was evicted for b"
    );
    assert_eq!(status.model("a").unwrap().counters.evictions, 1);
    let again = pool.embed("a", ["hello world"]).await.unwrap();
    assert_eq!(
        first, again,
        "reloaded from the same files, the same vectors"
    );
    let status = pool.status();
    assert_eq!(status.model("a").unwrap().counters.loads, 2);
    // b's batch reservation is the larger one: with b idle, a and its batch fit beside it.
    assert_eq!(status.model("b").unwrap().state, ModelStateKind::Ready);
    let device = status
        .devices
        .iter()
        .find(|d| d.device == DeviceId::Cpu)
        .unwrap();
    assert!(device.high_water_bytes <= device.budget_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_larger_than_the_budget_is_refused_at_once() {
    let a = config(Family::Bert, "a");
    let need = a.pool_spec(0).need_bytes();
    let pool = pool(need / 2, vec![a]);
    let err = pool.embed("a", ["hello"]).await.unwrap_err();
    assert!(
        matches!(err, ServeError::Pool(PoolError::NeverFits { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("can never fit"), "{err}");
    assert_eq!(
        pool.status().model("a").unwrap().counters.loads_started,
        0,
        "nothing was loaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_batches_and_leases() {
    let a = config(Family::Bert, "a");
    let pool = pool(4 << 30, vec![a]);
    let texts: Vec<String> = (0..24)
        .map(|i| format!("{} {}", WORDS[i % 40], WORDS[(i * 7) % 40]))
        .collect();
    let alone = pool.embed("a", texts.clone()).await.unwrap();
    let leases_before = pool.status().model("a").unwrap().counters.leases;
    let answers =
        futures::future::join_all(texts.iter().map(|t| pool.embed("a", [t.as_str()]))).await;
    for (i, a) in answers.into_iter().enumerate() {
        let c = model_fixtures::cosine(&a.unwrap()[0], &alone[i]);
        assert!(c > 0.99999, "text {i}: cosine {c}");
    }
    let leases = pool.status().model("a").unwrap().counters.leases - leases_before;
    assert!(
        leases < 24,
        "24 concurrent requests took {leases} leases: they were not batched"
    );
}
