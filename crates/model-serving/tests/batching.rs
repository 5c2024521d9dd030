//! Continuous batching through the pool, on tiny random-weight Phi-3 and Qwen3-MoE GGUFs
//! written by `model-fixtures` and loaded by the same code as the real files: eight
//! concurrent requests decode in shared forward passes and each gets exactly the tokens it
//! gets alone (greedy, and sampled with its own seed); a request cancelled mid-stream gives
//! back its KV reservation while the others go on.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use model_fixtures::decode::{self, Geometry};
use model_pool::size::GIB;
use model_pool::{DeviceId, MemoryGovernor};
use model_registry::Backend;
use model_serving::checkpoint::estimate_checkpoint;
use model_serving::loader::{CapabilityLease, LoadedModel};
use model_serving::{GenMemory, GenerateRequest, ModelPool, ServedModel};

const CONCURRENT: usize = 8;

fn served(key: &str, registry: &str, backend: Backend, path: &Path) -> ServedModel {
    let m = estimate_checkpoint(backend, path, None).unwrap();
    let mut served = ServedModel::registry(registry, path).unwrap();
    served.key = key.to_owned();
    served
        .max_concurrency(CONCURRENT + 1)
        .map_generate(|o| {
            o.context_tokens(512)
                .memory(GenMemory::from_estimate(&m, 512))
        })
        .unwrap()
}

fn pool(models: Vec<ServedModel>) -> ModelPool {
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, 16 * GIB)]).unwrap();
    ModelPool::builder()
        .governor(governor)
        .models(models)
        .build()
        .unwrap()
}

/// Request `i` of the eight: different prompts and lengths; the odd ones sampled with their
/// own seed at a high temperature (so that the seed matters), the even ones greedy.
fn request(i: usize) -> GenerateRequest {
    let prompts = [
        "the answer is",
        "on the other hand",
        "qz",
        "once upon a time there",
    ];
    let r =
        GenerateRequest::raw(format!("{} {i}", prompts[i % prompts.len()])).max_tokens(30 + 7 * i);
    if i.is_multiple_of(2) {
        r.greedy()
    } else {
        r.temperature(1.3).top_k(0).top_p(0.95).seed(100 + i as u64)
    }
}

async fn tokens(p: &ModelPool, model: &str, req: GenerateRequest) -> Vec<u32> {
    let g = p
        .generate(model, req)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    g.tokens
}

/// A lease on the loaded generator, to read its batching counts.
async fn lease(p: &ModelPool, key: &str) -> CapabilityLease<model_networks::GenerativeModel> {
    CapabilityLease::new(
        p.pool().acquire(key).await.unwrap(),
        LoadedModel::as_generator,
    )
    .unwrap_or_else(|_| panic!("{key} is a generator"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_requests_get_exactly_the_tokens_each_gets_alone() {
    let dir = model_fixtures::scratch("batching-eight");
    let (phi, qwen) = (dir.join("phi3.gguf"), dir.join("qwen3moe.gguf"));
    decode::write_phi3(&phi, &Geometry::phi3(), 11);
    decode::write_qwen3moe(&qwen, &Geometry::qwen3moe(), 12);
    let p = pool(vec![
        served("phi", "microsoft/phi-4", Backend::Phi3Gguf, &phi),
        served(
            "qwen",
            "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF",
            Backend::Qwen3MoeGguf,
            &qwen,
        ),
    ]);
    let p = Arc::new(p);
    for model in ["phi", "qwen"] {
        let mut alone = Vec::new();
        for i in 0..CONCURRENT {
            alone.push(tokens(&p, model, request(i)).await);
        }
        let before = lease(&p, model).await.batch_stats();
        let together = futures::future::join_all((0..CONCURRENT).map(|i| {
            let p = Arc::clone(&p);
            async move { tokens(&p, model, request(i)).await }
        }))
        .await;
        let after = lease(&p, model).await.batch_stats();
        for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
            assert_eq!(a, t, "{model}: request {i} alone vs among {CONCURRENT}");
        }
        // The concurrent requests did share forward passes.
        let (steps, rows) = (after.steps - before.steps, after.rows - before.rows);
        let decoded: usize = together.iter().map(|t| t.len() - 1).sum();
        assert_eq!(
            rows as usize, decoded,
            "{model}: every decoding step ran once"
        );
        assert!(
            steps * 2 < rows && after.largest >= CONCURRENT / 2,
            "{model}: {rows} sequence-steps in {steps} forward passes (largest {})",
            after.largest
        );
        eprintln!(
            "{model}: {rows} sequence-steps in {steps} forward passes, largest {}",
            after.largest
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_mid_stream_frees_its_kv_at_once_and_the_others_go_on() {
    let path = model_fixtures::scratch("batching-cancel").join("phi3.gguf");
    decode::write_phi3(&path, &Geometry::phi3(), 11);
    let config = served("phi", "microsoft/phi-4", Backend::Phi3Gguf, &path);
    let spec = config.pool_spec(0);
    let p = Arc::new(pool(vec![config]));
    let g = p.governor().clone();
    let long = |i: usize| {
        GenerateRequest::raw(format!("the answer is {i}"))
            .greedy()
            .max_tokens(400)
    };
    let mut alone = Vec::new();
    for i in 0..CONCURRENT {
        alone.push(tokens(&p, "phi", long(i)).await);
    }
    let counts = lease(&p, "phi").await;
    let mut streams = Vec::new();
    for i in 0..CONCURRENT {
        streams.push(p.generate("phi", long(i)).await.unwrap());
    }
    for s in &mut streams {
        s.next_token().await.unwrap().unwrap();
    }
    let mut cancelled = streams.remove(3);
    for _ in 0..4 {
        cancelled.next_token().await.unwrap().unwrap();
    }
    // The others keep being read while the cancelled one goes.
    let readers: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(async move { s.collect().await.unwrap().tokens }))
        .collect();
    let request = spec.per_request_bytes;
    let all = g.reserved(DeviceId::Cpu).unwrap();
    let steps_at_drop = counts.batch_stats().steps;
    drop(cancelled);
    // Watched from a thread of its own, without sleeping between looks.
    let watch = {
        let g = g.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while g.reserved(DeviceId::Cpu).unwrap() > all - request {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "the cancelled request's KV reservation never came back"
                );
                std::hint::spin_loop();
            }
        })
    };
    watch.join().unwrap();
    let steps_at_release = counts.batch_stats().steps;
    eprintln!(
        "{} batched steps between the cancel and the release",
        steps_at_release - steps_at_drop
    );
    let others_running = readers.iter().any(|r| !r.is_finished());
    let rest = futures::future::join_all(readers).await;
    assert!(
        others_running,
        "the reservation came back only once the other requests had ended"
    );
    // The step in flight when the stream was dropped, then the release; a second step may
    // start before the watcher looks.
    assert!(
        steps_at_release - steps_at_drop <= 3,
        "{} batched steps ran between the cancel and the release",
        steps_at_release - steps_at_drop
    );
    // Each stream's first token was read above.
    let expected = alone
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, t)| &t[1..]);
    for (got, want) in rest.iter().zip(expected) {
        assert_eq!(got.as_ref().unwrap(), want, "a request after the cancel");
    }
}
