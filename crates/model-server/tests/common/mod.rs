//! The server on 127.0.0.1 port 0 over `cargo xtask fixtures`-style checkpoints (written with
//! `model_fixtures::manifest::write_all`), a client, and a reader of `/metrics` samples.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use model_fixtures::decode::{Geometry, write_phi3};
use model_fixtures::manifest::{self, Fixture};
use model_pool::size::GIB;
use model_pool::{DeviceId, MemoryGovernor};
use model_server::{Server, ServerOptions, Shutdown};
use model_serving::{ModelPool, ServedModel};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The manifest's checkpoints, written once per test binary.
pub fn fixtures() -> &'static (PathBuf, Vec<Fixture>) {
    static FIXTURES: OnceLock<(PathBuf, Vec<Fixture>)> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let dir = model_fixtures::scratch("server-fixtures");
        let written = manifest::write_all(&dir).expect("write the fixtures");
        (dir, written)
    })
}

/// The fixture served under `key` (`tiny/bert`, `tiny/phi3`, `tiny/flux` …), as the manifest
/// describes it.
pub fn fixture(key: &str) -> ServedModel {
    let (dir, all) = fixtures();
    let f = all
        .iter()
        .find(|f| f.key == key)
        .unwrap_or_else(|| panic!("no fixture {key}"));
    let backend = model_serving::config::parse_backend(&f.family).unwrap();
    ServedModel::with_backend(&f.key, dir.join(&f.path), backend).unwrap()
}

/// A Phi-3 GGUF large enough that a long answer takes seconds (tens of ms per token in a dev
/// build), for the tests that must catch a generation while it runs.
pub fn slow_phi3(key: &str) -> ServedModel {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        let path = model_fixtures::scratch("slow-phi3").join("model.gguf");
        let g = Geometry {
            hidden: 512,
            layers: 8,
            heads: 8,
            kv_heads: 4,
            head_dim: 64,
            ffn: 1024,
            context: 4096,
            ..Geometry::phi3()
        };
        write_phi3(&path, &g, 11);
        path
    });
    ServedModel::with_backend(key, path, model_registry::Backend::Phi3Gguf).unwrap()
}

/// A governor with `bytes` on the CPU.
pub fn budget(bytes: u64) -> MemoryGovernor {
    MemoryGovernor::with_budgets([(DeviceId::Cpu, bytes)]).unwrap()
}

/// A running server.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The pool behind it.
    pub pool: Arc<ModelPool>,
    /// A client.
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<Shutdown>>>,
}

impl TestServer {
    /// Serves `models` on an 8 GiB budget.
    pub async fn start(models: Vec<ServedModel>) -> Self {
        Self::start_with(models, 8 * GIB, ServerOptions::default()).await
    }

    /// Serves `models` on `budget_bytes` with `options`.
    pub async fn start_with(
        models: Vec<ServedModel>,
        budget_bytes: u64,
        options: ServerOptions,
    ) -> Self {
        let pool = ModelPool::builder()
            .governor(budget(budget_bytes))
            .models(models)
            .build()
            .unwrap();
        Self::serve(pool, options).await
    }

    /// Serves `pool`.
    pub async fn serve(pool: ModelPool, options: ServerOptions) -> Self {
        let pool = Arc::new(pool);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = Server::new(Arc::clone(&pool), options);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        TestServer {
            base,
            pool,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` as JSON.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs and reads the JSON answer with its status.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.post(path, body).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// GETs and reads the JSON answer with its status.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// Starts the shutdown and waits for it.
    pub async fn stop(mut self) -> Shutdown {
        self.begin_stop();
        self.wait().await
    }

    /// Starts the shutdown (SIGTERM's effect).
    pub fn begin_stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Waits for the server to finish shutting down.
    pub async fn wait(&mut self) -> Shutdown {
        let task = self.task.take().expect("not waited for yet");
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the server shut down within a minute")
            .unwrap()
            .unwrap()
    }
}

/// The value of the sample `name` whose labels include `labels`; `None` when there is none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse().ok())
            .flatten()
        })
        .next()
}

/// An OpenAI error body's `error` object, checked for the four fields.
pub fn error_of(body: &Value) -> &Value {
    let e = &body["error"];
    for field in ["message", "type", "param", "code"] {
        assert!(e.get(field).is_some(), "error without `{field}`: {body}");
    }
    e
}

/// A PNG data URL of a `w`×`h` noise image.
pub fn png_data_url(w: u32, h: u32) -> String {
    use base64::Engine as _;
    let image = model_serving::report::noise_image(w, h, 3);
    let mut png = std::io::Cursor::new(Vec::new());
    image.write_to(&mut png, image::ImageFormat::Png).unwrap();
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png.into_inner())
    )
}

/// Reads a server-sent-event stream to its end: the `data:` payloads in order.
pub async fn sse_events(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_owned)
        .collect()
}

/// Polls `check` every 10 ms until it holds or `within` passes; how long it took.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// A `base64` embedding (little-endian `f32` bytes) as floats.
pub fn f32_of_base64(s: &str) -> Vec<f32> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The `Retry-After` of an answer, in seconds (at least 1).
pub fn retry_after(r: &reqwest::Response) -> u64 {
    let header = r
        .headers()
        .get("retry-after")
        .expect("a Retry-After header");
    let seconds: u64 = header.to_str().unwrap().parse().unwrap();
    assert!(seconds >= 1, "Retry-After: {seconds}");
    seconds
}
