//! Streaming: server-sent events for chat and text completions (role first, one chunk per
//! piece of text, the finish reason, the usage when asked, `data: [DONE]`), the same text as
//! the whole answer; a client that disconnects mid-stream cancels the generation, and its lease
//! and KV reservation are back within a second, as `/metrics` shows.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, fixture, metric, sse_events};
use futures_util::StreamExt;
use serde_json::{Value, json};

fn parse_chunks(events: &[String]) -> Vec<Value> {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_the_same_text_as_the_whole_answer() {
    let s = TestServer::start(vec![fixture("tiny/phi3")]).await;
    let ask = json!({"model": "tiny/phi3", "messages": [{"role": "user", "content": "hello"}],
                     "max_tokens": 12, "temperature": 0});
    let (_, whole) = s.post_json("/v1/chat/completions", &ask).await;

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let r = s.post("/v1/chat/completions", &streamed).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let chunks = parse_chunks(&sse_events(r).await);
    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let id = first["id"].as_str().unwrap();
    assert!(chunks.iter().all(|c| c["id"] == id), "one id per stream");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(
        finish["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], whole["usage"]);

    // Without include_usage: no usage chunk.
    streamed["stream_options"] = json!({"include_usage": false});
    let chunks = parse_chunks(&sse_events(s.post("/v1/chat/completions", &streamed).await).await);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert!(chunks.last().unwrap()["choices"][0]["finish_reason"].is_string());

    // Text completions stream `text` pieces, echo first.
    let r = s
        .post(
            "/v1/completions",
            &json!({"model": "tiny/phi3", "prompt": "abc", "max_tokens": 6, "temperature": 0,
                    "stream": true, "echo": true, "stream_options": {"include_usage": true}}),
        )
        .await;
    let chunks = parse_chunks(&sse_events(r).await);
    assert_eq!(chunks[0]["object"], "text_completion");
    assert_eq!(chunks[0]["choices"][0]["text"], "abc");
    assert!(
        chunks.last().unwrap()["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            <= 6
    );

    let text = s.metrics().await;
    let ttft = metric(
        &text,
        "model_pool_time_to_first_token_seconds_count",
        &[("model", "tiny/phi3")],
    );
    assert_eq!(ttft, Some(4.0), "{text}");
    let rate = metric(
        &text,
        "model_pool_tokens_per_second_count",
        &[("model", "tiny/phi3")],
    );
    assert!(rate >= Some(1.0), "{text}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_gets_its_lease_and_kv_back_within_a_second() {
    let s = TestServer::start(vec![common::slow_phi3("slow/phi3")]).await;
    let r = s
        .post(
            "/v1/chat/completions",
            &json!({"model": "slow/phi3", "messages": [{"role": "user", "content": "tell me everything"}],
                    "max_tokens": 3500, "temperature": 0, "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    // Read until a few tokens have arrived: the generation is running.
    let mut seen = 0;
    while seen < 5 {
        let chunk = body.next().await.unwrap().unwrap();
        seen += chunk.windows(6).filter(|w| w == b"data: ").count();
    }
    let text = s.metrics().await;
    let model = [("model", "slow/phi3")];
    assert_eq!(
        metric(&text, "model_pool_model_leases", &model),
        Some(1.0),
        "{text}"
    );
    let resident = metric(&text, "model_pool_model_resident_estimate_bytes", &model).unwrap();
    let reserved = metric(&text, "model_pool_model_reserved_bytes", &model).unwrap();
    assert!(
        reserved > resident,
        "the request holds its KV reservation: {reserved} vs {resident}"
    );

    drop(body);
    let gone = Instant::now();
    let released = common::eventually(Duration::from_secs(5), || async {
        let text = s.metrics().await;
        metric(&text, "model_pool_model_leases", &model) == Some(0.0)
            && metric(&text, "model_pool_model_reserved_bytes", &model) == Some(resident)
    })
    .await;
    let took = released.unwrap_or_else(|| panic!("still held after 5 s: {:#?}", s.pool.status()));
    assert!(
        took < Duration::from_secs(1),
        "released after {:?}",
        gone.elapsed()
    );
    let text = s.metrics().await;
    let dropped = [("model", "slow/phi3"), ("status", "499")];
    assert_eq!(
        metric(&text, "model_pool_request_duration_seconds_count", &dropped),
        Some(1.0)
    );
    // Nothing finished: the generation stopped, it did not run to its end.
    assert_eq!(
        metric(&text, "model_pool_tokens_per_second_count", &model),
        None
    );
    s.stop().await;
}
