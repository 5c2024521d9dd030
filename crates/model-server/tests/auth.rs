//! `--api-key`: every endpoint except `/health` needs `Authorization: Bearer <key>` (401 in
//! OpenAI's shape otherwise); the access log has a line per request and never the key.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{TestServer, error_of, fixture};
use model_server::ServerOptions;
use serde_json::json;

const KEY: &str = "sk-test-0123456789abcdef";

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_but_health_needs_the_key_and_the_log_never_shows_it() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let options = ServerOptions {
        api_key: Some(KEY.into()),
        ..ServerOptions::default()
    };
    assert!(!format!("{options:?}").contains(KEY), "Debug hides the key");
    let s = TestServer::start_with(vec![fixture("tiny/bert")], 8 << 30, options).await;
    let embed = json!({"model": "tiny/bert", "input": "hello"});

    let r = s.http.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200, "health needs no key");
    for path in ["/v1/models", "/status", "/metrics", "/v1/models/tiny/bert"] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(error_of(&body)["code"], "invalid_api_key");
        let r = s
            .http
            .get(s.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer sk-test-0123456789abcde"),
        Some(KEY),
        Some("Basic abc"),
    ] {
        let mut req = s.http.post(s.url("/v1/embeddings")).json(&embed);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(!body.to_string().contains(KEY));
    }
    let r = s
        .http
        .post(s.url("/v1/embeddings"))
        .bearer_auth(KEY)
        .json(&embed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("model_server::access") || text.contains("answered"),
        "{text}"
    );
    assert!(
        text.contains("status=401") && text.contains("status=200"),
        "{text}"
    );
    assert!(text.contains("path=/v1/embeddings"), "{text}");
    assert!(!text.contains(KEY), "the key is in the log:\n{text}");
    assert!(
        !text.contains("sk-test"),
        "part of the key is in the log:\n{text}"
    );
}
