//! Every endpoint and every error answer, on tiny checkpoints of each capability: embeddings
//! (text, CLIP images, float and base64), chat and text completions, LLaVA with an image,
//! image generation, models, health, status and metrics; unknown model 404, bad field 400
//! naming it, body over the limit 413, never fits 400 with need and budget, busy 429 with
//! Retry-After, timeout 504, wrong capability, unknown route and method. Nothing leaks: after
//! each answer nothing but resident models is reserved.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{TestServer, error_of, fixture, metric, png_data_url};
use model_server::ServerOptions;
use serde_json::json;

async fn everything() -> TestServer {
    TestServer::start(vec![
        fixture("tiny/bert"),
        fixture("tiny/clip"),
        fixture("tiny/phi3"),
        // The tiny checkpoint carries no chat template of its own; LLaVA's puts the image in.
        fixture("tiny/llava")
            .map_generate(|o| o.template(model_serving::generate::ChatTemplate::llava15()))
            .unwrap(),
        fixture("tiny/flux"),
    ])
    .await
}

/// Nothing is reserved beyond what the loaded models hold, and no lease is held.
async fn nothing_leaked(s: &TestServer) {
    let settled = common::eventually(Duration::from_secs(5), || async {
        let st = s.pool.status();
        st.models.iter().all(|m| m.leases == 0)
            && st.devices[0].reserved_bytes
                == st
                    .models
                    .iter()
                    .filter(|m| m.state == model_pool::ModelStateKind::Ready)
                    .map(|m| m.resident_bytes)
                    .sum::<u64>()
    })
    .await;
    assert!(
        settled.is_some(),
        "reservations left: {:#?}",
        s.pool.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_answer_floats_base64_usage_and_clip_images() {
    let s = everything().await;
    let (status, body) = s
        .post_json(
            "/v1/embeddings",
            &json!({"model": "tiny/bert", "input": "hello world"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "tiny/bert");
    let v: Vec<f32> = serde_json::from_value(body["data"][0]["embedding"].clone()).unwrap();
    assert!(!v.is_empty());
    assert_eq!(body["data"][0]["object"], "embedding");
    let tokens = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens >= 3, "[CLS] hello world [SEP]: {body}");
    assert_eq!(body["usage"]["total_tokens"], tokens);

    let (status, body) = s
        .post_json(
            "/v1/embeddings",
            &json!({"model": "tiny/bert", "input": ["hello world", "a b c d"], "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["index"], 1);
    let b = common::f32_of_base64(body["data"][0]["embedding"].as_str().unwrap());
    assert_eq!(b, v, "base64 carries the same f32 values");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > tokens);

    // CLIP: texts and images (the extension field) in one space.
    let (status, body) = s
        .post_json(
            "/v1/embeddings",
            &json!({"model": "tiny/clip", "input": ["a photo of a cat"], "images": [png_data_url(40, 30)]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(
        data[0]["embedding"].as_array().unwrap().len(),
        data[1]["embedding"].as_array().unwrap().len()
    );
    let (status, body) = s
        .post_json(
            "/v1/embeddings",
            &json!({"model": "tiny/clip", "images": [png_data_url(8, 8)]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 0);

    // Field errors name the field.
    for (request, param) in [
        (
            json!({"model": "tiny/bert", "input": "x", "encoding_format": "int8"}),
            "encoding_format",
        ),
        (json!({"model": "tiny/bert", "input": [1, 2, 3]}), "input"),
        (json!({"model": "tiny/bert", "input": []}), "input"),
        (json!({"model": "tiny/bert", "input": ["ok", ""]}), "input"),
        (json!({"model": "tiny/bert", "input": 7}), "input"),
        (
            json!({"model": "tiny/bert", "input": "x", "dimensions": 3}),
            "dimensions",
        ),
        (
            json!({"model": "tiny/clip", "images": ["https://example.invalid/cat.png"]}),
            "images[0]",
        ),
        (
            json!({"model": "tiny/clip", "images": ["data:image/png;base64,!!!"]}),
            "images[0]",
        ),
        (
            json!({"model": "tiny/bert", "images": [png_data_url(8, 8)]}),
            "model",
        ),
        (json!({"input": "x"}), "body"),
    ] {
        let (status, body) = s.post_json("/v1/embeddings", &request).await;
        assert_eq!(status, 400, "{request} → {body}");
        assert_eq!(error_of(&body)["param"], param, "{request} → {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    nothing_leaked(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_text_completions_answer_whole() {
    let s = everything().await;
    let (status, body) = s
        .post_json(
            "/v1/chat/completions",
            &json!({
                "model": "tiny/phi3",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "hello"},
                    {"role": "assistant", "content": "hi"},
                    {"role": "user", "content": [{"type": "text", "text": "again"}]},
                ],
                "max_tokens": 5,
                "temperature": 0,
                "seed": 3,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].is_string());
    let finish = choice["finish_reason"].as_str().unwrap();
    assert!(finish == "length" || finish == "stop", "{body}");
    let u = &body["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(u["completion_tokens"].as_u64().unwrap() <= 5);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );

    // Greedy is deterministic: the same request, the same answer; max_completion_tokens wins.
    let ask = json!({"model": "tiny/phi3", "messages": [{"role": "user", "content": "hello"}],
                     "max_completion_tokens": 4, "max_tokens": 50, "temperature": 0});
    let (_, a) = s.post_json("/v1/chat/completions", &ask).await;
    let (_, b) = s.post_json("/v1/chat/completions", &ask).await;
    assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
    assert!(a["usage"]["completion_tokens"].as_u64().unwrap() <= 4);

    let (status, body) = s
        .post_json(
            "/v1/completions",
            &json!({"model": "tiny/phi3", "prompt": "Once upon a time", "max_tokens": 3, "temperature": 0, "echo": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
    assert!(
        body["choices"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Once upon a time")
    );
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() <= 3);
    // Without max_tokens a completion stops at 16 tokens, as OpenAI's do.
    let (_, body) = s
        .post_json(
            "/v1/completions",
            &json!({"model": "tiny/phi3", "prompt": ["x y"], "temperature": 0}),
        )
        .await;
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() <= 16,
        "{body}"
    );

    // LLaVA: one image in the first user turn.
    let (status, body) = s
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "tiny/llava", "max_tokens": 3, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": png_data_url(32, 32)}},
            ]}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["usage"]["prompt_tokens"].as_u64().unwrap() > 3,
        "image tokens count: {body}"
    );

    for (path, request, param) in [
        (
            "/v1/chat/completions",
            json!({"model": "tiny/phi3", "messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny/phi3", "messages": [{"role": "user", "content": "x"}], "temperature": 3}),
            "temperature",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny/phi3", "messages": [{"role": "user", "content": "x"}], "top_p": 0}),
            "top_p",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny/phi3", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny/phi3", "messages": [{"role": "user", "content": "x"}], "n": 2}),
            "n",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny/phi3", "messages": [{"role": "user", "content": "x"}], "stop": [""]}),
            "stop",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny/phi3", "messages": []}),
            "messages",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny/phi3", "messages": "hello"}),
            "messages",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny/phi3", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}),
            "messages",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny/phi3", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": png_data_url(8, 8)}}]}]}),
            "model",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny/llava", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": png_data_url(8, 8)}},
            {"type": "image_url", "image_url": {"url": png_data_url(8, 8)}}]}]}),
            "messages[0].content[1].image_url",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny/bert", "messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny/phi3", "prompt": ["a", "b"]}),
            "prompt",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny/phi3", "prompt": [1, 2]}),
            "prompt",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny/phi3", "prompt": "x", "seed": "one"}),
            "seed",
        ),
    ] {
        let (status, body) = s.post_json(path, &request).await;
        assert_eq!(status, 400, "{request} → {body}");
        assert_eq!(error_of(&body)["param"], param, "{request} → {body}");
    }
    let (_, body) = s
        .post_json("/v1/chat/completions", &json!({"model": "tiny/phi3", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}))
        .await;
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    nothing_leaked(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_models_health_status_and_metrics() {
    let s = everything().await;
    let (status, body) = s
        .post_json(
            "/v1/images/generations",
            &json!({"model": "tiny/flux", "prompt": "a red fox", "size": "64x48", "n": 1,
                    "response_format": "b64_json", "steps": 1, "seed": 5}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["seed"], 5);
    let png = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["b64_json"].as_str().unwrap())
        .unwrap();
    let image = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap();
    assert_eq!((image.width(), image.height()), (64, 48));
    for (request, param) in [
        (
            json!({"model": "tiny/flux", "prompt": "x", "size": "60x48", "steps": 1}),
            "size",
        ),
        (
            json!({"model": "tiny/flux", "prompt": "x", "size": "big"}),
            "size",
        ),
        (
            json!({"model": "tiny/flux", "prompt": "x", "size": "64x64", "steps": 9}),
            "steps",
        ),
        (
            json!({"model": "tiny/flux", "prompt": " ", "size": "64x64", "steps": 1}),
            "prompt",
        ),
        (json!({"model": "tiny/flux", "prompt": "x", "n": 2}), "n"),
        (
            json!({"model": "tiny/flux", "prompt": "x", "response_format": "url"}),
            "response_format",
        ),
        (
            json!({"model": "tiny/bert", "prompt": "x", "size": "64x64"}),
            "model",
        ),
    ] {
        let (status, body) = s.post_json("/v1/images/generations", &request).await;
        assert_eq!(status, 400, "{request} → {body}");
        assert_eq!(error_of(&body)["param"], param, "{request} → {body}");
    }

    let (status, body) = s.get_json("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let models = body["data"].as_array().unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "tiny/bert",
            "tiny/clip",
            "tiny/phi3",
            "tiny/llava",
            "tiny/flux"
        ]
    );
    let flux = &models[4];
    assert_eq!(flux["object"], "model");
    assert_eq!(flux["capability"], "text_to_image");
    assert!(flux["estimate_bytes"].as_u64().unwrap() > 0);
    assert!(
        flux["measured_bytes"].is_u64(),
        "loaded above, so measured: {flux}"
    );
    assert!(["ready", "unloaded", "unloading"].contains(&flux["state"].as_str().unwrap()));
    let (status, one) = s.get_json("/v1/models/tiny/phi3").await;
    assert_eq!((status, one["id"].as_str()), (200, Some("tiny/phi3")));
    let (status, body) = s.get_json("/v1/models/no/such").await;
    assert_eq!(
        (status, error_of(&body)["code"].as_str()),
        (404, Some("model_not_found"))
    );

    let (status, body) = s.get_json("/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = s.get_json("/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["devices"][0]["device"], "cpu");
    assert_eq!(body["devices"][0]["budget_bytes"], 8u64 << 30);
    let flux = &body["models"][4];
    assert_eq!(flux["id"], "tiny/flux");
    assert_eq!(flux["counters"]["loads"], 1);
    for field in [
        "state",
        "reserved_bytes",
        "measured_bytes",
        "queue_depth",
        "leases",
        "tier",
    ] {
        assert!(
            flux.get(field).is_some(),
            "/status model without {field}: {flux}"
        );
    }
    assert!(body["totals"]["evictions"].is_u64());

    let text = s.metrics().await;
    for family in [
        "model_pool_model_state",
        "model_pool_device_reserved_bytes",
        "model_pool_evictions_total",
        "model_pool_request_duration_seconds",
        "model_pool_queue_wait_seconds",
        "model_pool_load_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no {family} in\n{text}"
        );
    }
    let images = [
        ("model", "tiny/flux"),
        ("endpoint", "/v1/images/generations"),
        ("status", "200"),
    ];
    assert_eq!(
        metric(&text, "model_pool_request_duration_seconds_count", &images),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "model_pool_load_duration_seconds_count",
            &[("model", "tiny/flux")]
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &text,
            "model_pool_queue_wait_seconds_count",
            &[("model", "tiny/flux")]
        ) >= Some(1.0)
    );
    let bad = [("model", "tiny/flux"), ("status", "400")];
    assert_eq!(
        metric(&text, "model_pool_request_duration_seconds_count", &bad),
        Some(6.0)
    );
    nothing_leaked(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_routes_methods_bad_json_and_large_bodies_are_refused_in_openais_shape() {
    let options = ServerOptions {
        body_limit: 4096,
        ..ServerOptions::default()
    };
    let s = TestServer::start_with(
        vec![fixture("tiny/bert"), fixture("tiny/phi3")],
        8 << 30,
        options,
    )
    .await;
    for (path, request) in [
        ("/v1/embeddings", json!({"model": "no/such", "input": "x"})),
        (
            "/v1/chat/completions",
            json!({"model": "no/such", "messages": [{"role": "user", "content": "x"}]}),
        ),
        (
            "/v1/completions",
            json!({"model": "no/such", "prompt": "x"}),
        ),
        (
            "/v1/images/generations",
            json!({"model": "no/such", "prompt": "x"}),
        ),
    ] {
        let (status, body) = s.post_json(path, &request).await;
        assert_eq!(status, 404, "{path} → {body}");
        let e = error_of(&body);
        assert_eq!(
            (e["code"].as_str(), e["param"].as_str()),
            (Some("model_not_found"), Some("model"))
        );
        assert!(e["message"].as_str().unwrap().contains("no/such"), "{body}");
    }
    let (status, body) = s.get_json("/v2/nothing").await;
    assert_eq!(
        (status, error_of(&body)["code"].as_str()),
        (404, Some("not_found"))
    );
    let r = s.http.get(s.url("/v1/embeddings")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    error_of(&r.json().await.unwrap());

    let r = s
        .http
        .post(s.url("/v1/embeddings"))
        .header("content-type", "application/json")
        .body("{\"model\": \"tiny/bert\", \"input\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        error_of(&body)["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );

    let big = "word ".repeat(2000);
    let (status, body) = s
        .post_json(
            "/v1/embeddings",
            &json!({"model": "tiny/bert", "input": big}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    let e = error_of(&body);
    assert_eq!(e["code"], "request_too_large");
    assert!(e["message"].as_str().unwrap().contains("4096"), "{body}");
    // The server goes on serving.
    let (status, _) = s
        .post_json(
            "/v1/embeddings",
            &json!({"model": "tiny/bert", "input": "ok"}),
        )
        .await;
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_can_never_fit_is_refused_with_its_need_and_the_budget() {
    // 1 MiB holds none of them.
    let s = TestServer::start_with(
        vec![
            fixture("tiny/bert"),
            fixture("tiny/phi3"),
            fixture("tiny/flux"),
        ],
        1 << 20,
        ServerOptions::default(),
    )
    .await;
    for (path, request, param) in [
        (
            "/v1/embeddings",
            json!({"model": "tiny/bert", "input": "x"}),
            "model",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny/phi3", "messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        (
            "/v1/images/generations",
            json!({"model": "tiny/flux", "prompt": "x", "size": "64x64", "steps": 1}),
            "size",
        ),
    ] {
        let (status, body) = s.post_json(path, &request).await;
        assert_eq!(status, 400, "{path} → {body}");
        let e = error_of(&body);
        assert_eq!(
            (e["code"].as_str(), e["param"].as_str()),
            (Some("model_never_fits"), Some(param)),
            "{body}"
        );
        let m = e["message"].as_str().unwrap();
        assert!(
            m.contains("budget") && m.contains("1.0 MiB"),
            "need and budget: {m}"
        );
    }
    assert_eq!(s.pool.governor().total_reserved(), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_a_429_with_retry_after_and_a_deadline_a_504() {
    // One request at a time, one waiting: a long generation holds the slot.
    let phi = common::slow_phi3("slow/phi3")
        .max_concurrency(1)
        .max_queue(1);
    let s = TestServer::start(vec![phi]).await;
    let long = json!({"model": "slow/phi3", "prompt": "x", "max_tokens": 3000, "temperature": 0, "stream": true});
    let running = s.post("/v1/completions", &long).await;
    assert_eq!(running.status(), 200);
    // The second waits in the queue …
    let queued = tokio::spawn({
        let (http, url) = (s.http.clone(), s.url("/v1/completions"));
        let body = json!({"model": "slow/phi3", "prompt": "x", "max_tokens": 1});
        async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let waiting = common::eventually(Duration::from_secs(10), || async {
        s.pool.status().model("slow/phi3").unwrap().queue_depth == 1
    })
    .await;
    assert!(waiting.is_some(), "{:#?}", s.pool.status());
    // … and the third finds the queue full.
    let r = s
        .post(
            "/v1/completions",
            &json!({"model": "slow/phi3", "prompt": "x", "max_tokens": 1}),
        )
        .await;
    assert_eq!(r.status(), 429);
    common::retry_after(&r);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(error_of(&body)["code"], "model_busy");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    drop(running);
    assert_eq!(
        queued.await.unwrap(),
        200,
        "the queued request is served once the slot frees"
    );
    s.stop().await;

    // A deadline shorter than the generation: 504.
    let phi = common::slow_phi3("slow/phi3").request_timeout(Duration::from_millis(300));
    let s = TestServer::start(vec![phi]).await;
    let (status, body) = s
        .post_json(
            "/v1/completions",
            &json!({"model": "slow/phi3", "prompt": "x", "max_tokens": 3000, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(error_of(&body)["code"], "timeout");
    nothing_leaked(&s).await;
    s.stop().await;
}
