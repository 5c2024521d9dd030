//! Graceful shutdown: once it begins, no new connection is taken, in-flight requests finish
//! (a stream runs to its `[DONE]`), every model is unloaded and nothing stays reserved; past
//! the drain deadline the requests still running are cancelled (a stream ends with an error
//! event) and their leases returned. SIGTERM begins it (`shutdown_signal`).

mod common;

use std::time::Duration;

use common::{TestServer, fixture, sse_events};
use model_server::{Server, ServerOptions, Shutdown};
use serde_json::json;

fn long_stream(max_tokens: u32) -> serde_json::Value {
    json!({"model": "slow/phi3", "messages": [{"role": "user", "content": "go on"}],
           "max_tokens": max_tokens, "temperature": 0, "stream": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_then_everything_is_unloaded() {
    let mut s = TestServer::start(vec![common::slow_phi3("slow/phi3"), fixture("tiny/bert")]).await;
    let (status, _) = s
        .post_json(
            "/v1/embeddings",
            &json!({"model": "tiny/bert", "input": "x"}),
        )
        .await;
    assert_eq!(status, 200);
    let r = s.post("/v1/chat/completions", &long_stream(40)).await;
    assert_eq!(r.status(), 200);
    let stream = tokio::spawn(sse_events(r));
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.begin_stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No new connections once draining.
    let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        fresh.get(s.url("/health")).send().await.is_err(),
        "the listener is closed"
    );
    let events = stream.await.unwrap();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "the stream ran to its end"
    );
    assert!(events.iter().all(|e| !e.contains("\"error\"")));
    let done = s.wait().await;
    assert_eq!(
        done,
        Shutdown {
            drained: true,
            unloaded: true
        }
    );
    assert_eq!(s.pool.governor().total_reserved(), 0);
    assert!(
        s.pool
            .status()
            .models
            .iter()
            .all(|m| m.state == model_pool::ModelStateKind::Unloaded)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_drain_deadline_running_requests_are_cancelled() {
    let options = ServerOptions {
        drain_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let mut s =
        TestServer::start_with(vec![common::slow_phi3("slow/phi3")], 8 << 30, options).await;
    let r = s.post("/v1/chat/completions", &long_stream(3500)).await;
    assert_eq!(r.status(), 200);
    let stream = tokio::spawn(sse_events(r));
    let whole = tokio::spawn({
        let (http, url) = (s.http.clone(), s.url("/v1/completions"));
        async move {
            let body =
                json!({"model": "slow/phi3", "prompt": "x", "max_tokens": 3500, "temperature": 0});
            let r = http.post(url).json(&body).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.begin_stop();
    let events = stream.await.unwrap();
    let last = events.last().unwrap();
    assert!(
        last.contains("shutting_down"),
        "the stream ends with an error event: {last}"
    );
    let (status, body) = whole.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "shutting_down");
    let done = s.wait().await;
    assert_eq!(
        done,
        Shutdown {
            drained: false,
            unloaded: true
        }
    );
    assert_eq!(s.pool.governor().total_reserved(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_begins_the_shutdown() {
    // A listener of our own first, so that SIGTERM never takes the default action (exit) on
    // this test process.
    let mut ours =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    let pool = model_serving::ModelPool::builder()
        .governor(common::budget(8 << 30))
        .model(fixture("tiny/bert"))
        .build()
        .unwrap();
    let pool = std::sync::Arc::new(pool);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/embeddings", listener.local_addr().unwrap());
    let server = Server::new(pool.clone(), ServerOptions::default());
    let task = tokio::spawn(async move {
        server
            .serve(listener, model_server::shutdown_signal())
            .await
    });
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .post(&url)
        .json(&json!({"model": "tiny/bert", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pid = std::process::id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    ours.recv().await;
    let done = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        done,
        Shutdown {
            drained: true,
            unloaded: true
        }
    );
    assert_eq!(pool.governor().total_reserved(), 0);
}
