//! A bounded load test on loopback: 64 concurrent clients mixing embeddings, chat and image
//! requests on a budget that holds one of an embedder, a generator and a text-to-image model
//! at a time, so that they evict each other. Every answer is a success or a typed 429/503 with
//! `Retry-After`; afterwards `/metrics` shows no lease held and nothing reserved beyond the
//! resident models.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestServer, fixture, metric};
use model_server::ServerOptions;
use model_serving::{ModelPool, ServedModel};
use serde_json::{Value, json};

const CLIENTS: usize = 64;
const REQUESTS_PER_CLIENT: usize = 6;

fn models() -> Vec<ServedModel> {
    vec![
        fixture("tiny/bert"),
        fixture("tiny/phi3"),
        fixture("tiny/flux"),
    ]
}

/// Resident bytes and the most one request adds at `side`² images, per model.
fn needs(pool: &ModelPool, side: u32) -> Vec<(u64, u64)> {
    pool.models()
        .map(|m| {
            let plan = pool.plan(&m.key);
            let spec = m.pool_spec(plan.map_or(0, |p| p.resident_bytes().unwrap()));
            let request = match plan {
                Some(p) => {
                    let r = p.request(side, side).unwrap();
                    r.peak_bytes() - r.resident_bytes
                }
                None => spec.per_request_bytes,
            };
            (spec.resident_bytes, request)
        })
        .collect()
}

/// A budget (and image side) at which no model fits beside another one that runs a request.
fn one_at_a_time() -> (u64, u32) {
    let probe = ModelPool::builder()
        .governor(common::budget(1 << 40))
        .models(models())
        .build()
        .unwrap();
    (64..=512)
        .step_by(16)
        .find_map(|side| {
            let n = needs(&probe, side);
            let budget = n.iter().map(|(r, q)| r + q).max().unwrap();
            let exclusive = n.iter().enumerate().all(|(i, (ra, _))| {
                n.iter()
                    .enumerate()
                    .all(|(j, (rb, qb))| i == j || ra + rb + qb > budget)
            });
            exclusive.then_some((budget, side))
        })
        .expect("an image size at which the budget holds one model at a time")
}

#[derive(Debug, Default)]
struct Tally {
    ok: BTreeMap<&'static str, usize>,
    refused: BTreeMap<u16, usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_on_a_budget_that_forces_evictions() {
    let (budget, side) = one_at_a_time();
    let s = Arc::new(TestServer::start_with(models(), budget, ServerOptions::default()).await);
    let size = format!("{side}x{side}");
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (s, size) = (Arc::clone(&s), size.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for k in 0..REQUESTS_PER_CLIENT {
                    let (kind, path, body) = match (c + k) % 8 {
                        7 => ("image", "/v1/images/generations", json!({"model": "tiny/flux", "prompt": "a fox", "size": size, "steps": 1, "seed": c})),
                        n if n % 2 == 0 => ("embed", "/v1/embeddings", json!({"model": "tiny/bert", "input": [format!("client {c} request {k}")]})),
                        _ => ("chat", "/v1/chat/completions", json!({"model": "tiny/phi3", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0})),
                    };
                    let r = s.post(path, &body).await;
                    let status = r.status().as_u16();
                    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                    let answer: Value = r.json().await.unwrap();
                    match status {
                        200 => *tally.ok.entry(kind).or_default() += 1,
                        429 | 503 => {
                            let e = common::error_of(&answer);
                            assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() >= 1), "{status} without Retry-After: {answer}");
                            assert!(e["code"].is_string(), "{answer}");
                            *tally.refused.entry(status).or_default() += 1;
                        }
                        other => panic!("{kind}: {other} {answer}"),
                    }
                }
                tally
            })
        })
        .collect();
    let mut ok: BTreeMap<&str, usize> = BTreeMap::new();
    let mut refused: BTreeMap<u16, usize> = BTreeMap::new();
    for c in clients {
        let t = tokio::time::timeout(Duration::from_secs(300), c)
            .await
            .expect("every client finished within five minutes")
            .unwrap();
        for (k, n) in t.ok {
            *ok.entry(k).or_default() += n;
        }
        for (k, n) in t.refused {
            *refused.entry(k).or_default() += n;
        }
    }
    let answered: usize = ok.values().sum::<usize>() + refused.values().sum::<usize>();
    assert_eq!(answered, CLIENTS * REQUESTS_PER_CLIENT);
    for kind in ["embed", "chat", "image"] {
        assert!(
            ok.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} served: {ok:?} {refused:?}"
        );
    }
    eprintln!(
        "{answered} requests in {:?}: served {ok:?}, refused {refused:?}",
        started.elapsed()
    );

    let text = s.metrics().await;
    let evictions: f64 = ["tiny/bert", "tiny/phi3", "tiny/flux"]
        .iter()
        .map(|m| metric(&text, "model_pool_evictions_total", &[("model", m)]).unwrap())
        .sum();
    assert!(
        evictions >= 2.0,
        "the models evicted each other: {evictions}\n{text}"
    );
    let mut resident_of_loaded = 0.0;
    for m in ["tiny/bert", "tiny/phi3", "tiny/flux"] {
        let model = [("model", m)];
        assert_eq!(
            metric(&text, "model_pool_model_leases", &model),
            Some(0.0),
            "{m} leaks a lease\n{text}"
        );
        assert_eq!(
            metric(&text, "model_pool_model_queue_depth", &model),
            Some(0.0)
        );
        let ready = metric(
            &text,
            "model_pool_model_state",
            &[("model", m), ("state", "ready")],
        ) == Some(1.0);
        let resident = metric(&text, "model_pool_model_resident_estimate_bytes", &model).unwrap();
        let reserved = metric(&text, "model_pool_model_reserved_bytes", &model).unwrap();
        assert_eq!(reserved, if ready { resident } else { 0.0 }, "{m}\n{text}");
        if ready {
            resident_of_loaded += resident;
        }
    }
    let device = metric(
        &text,
        "model_pool_device_reserved_bytes",
        &[("device", "cpu")],
    )
    .unwrap();
    assert_eq!(
        device, resident_of_loaded,
        "nothing reserved beyond the resident models\n{text}"
    );
    assert!(device <= budget as f64);
    let s = Arc::into_inner(s).expect("every client is done");
    s.stop().await;
}
