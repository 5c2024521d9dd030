//! One pool for every capability: an embedder, a generator and a text-to-image model on one
//! budget that holds only one of them at a time. Every request is served, the pool evicts
//! whichever idle model is in the way (whatever its capability), the reserved total never
//! exceeds the budget, and nothing is reserved after shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use model_fixtures::decode::{Geometry, write_phi3};
use model_fixtures::diffusion;
use model_pool::{DeviceId, MemoryGovernor};
use model_registry::Backend;
use model_serving::{Family, GenerateRequest, ImageRequest, ModelPool, Pipeline, ServedModel};

const EMBED: &str = "tiny/bert";
const GENERATE: &str = "tiny/phi3";
const PAINT: &str = "tiny/flux";

fn models() -> Vec<ServedModel> {
    let bert = model_fixtures::embed::tiny(Family::Bert);
    let phi3 = model_fixtures::scratch("phi3").join("model.gguf");
    write_phi3(&phi3, &Geometry::phi3(), 7);
    let flux = model_fixtures::scratch("flux");
    diffusion::write(
        &flux,
        Pipeline::Flux,
        &diffusion::Geometry::tiny(Pipeline::Flux),
        3,
    )
    .unwrap();
    vec![
        ServedModel::with_backend(EMBED, bert, Backend::Bert).unwrap(),
        ServedModel::with_backend(GENERATE, phi3, Backend::Phi3Gguf).unwrap(),
        ServedModel::with_backend(PAINT, flux, Backend::Flux).unwrap(),
    ]
}

/// Resident bytes and the most one request adds (images of `side`²), per model, as the pool
/// reserves them.
fn needs(pool: &ModelPool, side: u32) -> Vec<(String, u64, u64)> {
    pool.models()
        .map(|m| {
            let plan = pool.plan(&m.key);
            let resident = plan.map_or(0, |p| p.resident_bytes().unwrap());
            let spec = m.pool_spec(resident);
            let request = match plan {
                Some(p) => {
                    let r = p.request(side, side).unwrap();
                    r.peak_bytes() - r.resident_bytes
                }
                None => spec.per_request_bytes,
            };
            (m.key.clone(), spec.resident_bytes, request)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_for_one_model_serves_all_three_capabilities_in_turn() {
    // Size the budget from the pool's own figures: the largest single need, and an image size
    // at which no model fits beside another one that runs a request.
    let probe = ModelPool::builder()
        .governor(MemoryGovernor::with_budgets([(DeviceId::Cpu, 1 << 40)]).unwrap())
        .models(models())
        .build()
        .unwrap();
    let one_at_a_time = |needs: &[(String, u64, u64)]| {
        let budget = needs.iter().map(|(_, r, q)| r + q).max().unwrap();
        let exclusive = needs.iter().all(|(a, ra, _)| {
            needs
                .iter()
                .all(|(b, rb, qb)| a == b || ra + rb + qb > budget)
        });
        exclusive.then_some(budget)
    };
    let (side, budget) = (64..=512)
        .step_by(16)
        .find_map(|side| one_at_a_time(&needs(&probe, side)).map(|b| (side, b)))
        .expect("an image size at which the budget holds one model at a time");
    probe.shutdown().await;

    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, budget)]).unwrap();
    let pool = Arc::new(
        ModelPool::builder()
            .governor(governor.clone())
            .models(models())
            .build()
            .unwrap(),
    );
    // Watches the reserved total while the requests run.
    let most = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (governor, most, stop) = (governor.clone(), Arc::clone(&most), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                most.fetch_max(governor.reserved(DeviceId::Cpu).unwrap(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    for step in 0..20 {
        match step % 3 {
            0 => {
                let v = pool.embed(EMBED, ["hello world"]).await.unwrap();
                assert_eq!(v[0].len(), 32);
            }
            1 => {
                let answer = pool
                    .generate(
                        GENERATE,
                        GenerateRequest::raw("hello").greedy().max_tokens(3),
                    )
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
                assert!(!answer.tokens.is_empty());
            }
            _ => {
                let image = pool
                    .generate_image(
                        PAINT,
                        ImageRequest::new("a fox").size(side, side).steps(1),
                        |_| {},
                    )
                    .await
                    .unwrap();
                assert_eq!((image.width, image.height), (side, side));
            }
        }
        let reserved = governor.reserved(DeviceId::Cpu).unwrap();
        assert!(
            reserved <= budget,
            "step {step}: {reserved} of {budget} reserved"
        );
    }
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let status = pool.status();
    let device = status
        .devices
        .iter()
        .find(|d| d.device == DeviceId::Cpu)
        .unwrap();
    assert!(device.high_water_bytes <= budget, "{device:?}");
    assert!(most.load(Ordering::Relaxed) <= budget);
    let evictions: u64 = status.models.iter().map(|m| m.counters.evictions).sum();
    // Each request but the first found another capability's model in the way.
    assert!(
        evictions >= 19,
        "{evictions} evictions: {:?}",
        status.models
    );
    for key in [EMBED, GENERATE, PAINT] {
        assert!(
            status.model(key).unwrap().counters.loads >= 6,
            "{key}: {status:?}"
        );
    }
    pool.shutdown().await;
    assert_eq!(
        governor.total_reserved(),
        0,
        "nothing reserved after shutdown"
    );
    assert_eq!(governor.live_reservations(), 0);
}
