//! The real all-MiniLM-L6-v2 over HTTP against the reference embeddings in the repository
//! (sentence-transformers): every text alone and all in one request, as floats and as base64,
//! at cosine ≥ 0.99999, with `usage.prompt_tokens` the reference's token counts. And a request
//! that times out while its model is still loading: 503 with Retry-After.

mod common;

use std::time::Duration;

use common::{TestServer, error_of};
use model_fixtures::minilm;
use model_pool::Tier;
use model_server::ServerOptions;
use model_serving::ServedModel;
use serde_json::{Value, json};

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

fn vector(v: &Value) -> Vec<f32> {
    match v {
        Value::String(s) => common::f32_of_base64(s),
        other => serde_json::from_value(other.clone()).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_over_http_matches_the_reference() {
    let references = minilm::reference();
    let model = ServedModel::registry(MINILM, minilm::checkpoint()).unwrap();
    let s = TestServer::start(vec![model]).await;
    for format in ["float", "base64"] {
        for r in &references {
            let (status, body) = s
                .post_json(
                    "/v1/embeddings",
                    &json!({"model": MINILM, "input": r.text, "encoding_format": format}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let v = vector(&body["data"][0]["embedding"]);
            let cos = model_fixtures::cosine(&v, &r.embedding);
            assert!(cos >= 0.99999, "{format} {:?}: cosine {cos}", r.text);
            assert_eq!(body["usage"]["prompt_tokens"], r.n_tokens, "{:?}", r.text);
        }
        let texts: Vec<&str> = references.iter().map(|r| r.text.as_str()).collect();
        let (status, body) = s
            .post_json(
                "/v1/embeddings",
                &json!({"model": MINILM, "input": texts, "encoding_format": format}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        for (d, r) in body["data"].as_array().unwrap().iter().zip(&references) {
            let cos = model_fixtures::cosine(&vector(&d["embedding"]), &r.embedding);
            assert!(
                cos >= 0.99999,
                "batched {format} {:?}: cosine {cos}",
                r.text
            );
        }
        let total: usize = references.iter().map(|r| r.n_tokens).sum();
        assert_eq!(body["usage"]["prompt_tokens"], total);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_times_out_while_its_model_loads_is_a_503_with_retry_after() {
    // A hot model starts loading when the pool starts; a request with a 1 ms deadline arrives
    // while the load runs.
    let model = ServedModel::registry(MINILM, minilm::checkpoint())
        .unwrap()
        .tier(Tier::Hot { pinned: true })
        .request_timeout(Duration::from_millis(1));
    let s = TestServer::start_with(vec![model], 8 << 30, ServerOptions::default()).await;
    let r = s
        .post(
            "/v1/embeddings",
            &json!({"model": MINILM, "input": "hello"}),
        )
        .await;
    let loaded = s
        .pool
        .measurements()
        .get(MINILM)
        .map(|m| m.window.1 - m.window.0);
    assert_eq!(
        r.status(),
        503,
        "the load took {loaded:?}: {:#?} {}",
        s.pool.status().models,
        r.text().await.unwrap()
    );
    common::retry_after(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_of(&body)["code"], "model_loading", "{body}");
    s.stop().await;
}
