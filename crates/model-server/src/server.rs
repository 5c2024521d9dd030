//! The router, its state, the API-key check, the access log and the graceful shutdown.

use std::future::{Future, IntoFuture};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use model_serving::ModelPool;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::api;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// How the server runs.
#[derive(Clone)]
pub struct ServerOptions {
    /// Every endpoint except `/health` then needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Largest request body in bytes (images travel as data URLs: keep room for them).
    pub body_limit: usize,
    /// How long in-flight requests may take to finish once shutdown begins; those still running
    /// then are cancelled.
    pub drain_timeout: Duration,
    /// How long the pool may take to unload every model after the drain.
    pub unload_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            api_key: None,
            body_limit: 32 << 20,
            drain_timeout: Duration::from_secs(30),
            unload_timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for ServerOptions {
    // The key is never printed, not even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("body_limit", &self.body_limit)
            .field("drain_timeout", &self.drain_timeout)
            .field("unload_timeout", &self.unload_timeout)
            .finish()
    }
}

/// What every handler sees.
pub struct Shared {
    /// The one pool.
    pub pool: Arc<ModelPool>,
    /// The histograms.
    pub metrics: Metrics,
    /// The options.
    pub options: ServerOptions,
    /// When the server started (the models' `created`).
    pub started_unix: u64,
    key_digest: Option<[u8; 32]>,
    draining: AtomicBool,
    abort: watch::Sender<bool>,
}

/// The handlers' state.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Whether shutdown has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Runs `work` unless the drain deadline passes first: then the work is dropped (which
    /// cancels it) and the answer is a 503.
    pub async fn run<T>(&self, work: impl Future<Output = T>) -> Result<T, ApiError> {
        let mut abort = self.abort.subscribe();
        tokio::select! {
            out = work => Ok(out),
            _ = abort.wait_for(|a| *a) => Err(ApiError::shutting_down()),
        }
    }
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    /// Every in-flight request finished before the drain deadline.
    pub drained: bool,
    /// Every model was unloaded before the unload deadline.
    pub unloaded: bool,
}

/// The server: the pool behind the HTTP API.
pub struct Server {
    state: AppState,
}

impl Server {
    /// A server for `pool`.
    pub fn new(pool: Arc<ModelPool>, options: ServerOptions) -> Self {
        let key_digest = options
            .api_key
            .as_ref()
            .map(|k| Sha256::digest(k.as_bytes()).into());
        let (abort, _) = watch::channel(false);
        Server {
            state: AppState(Arc::new(Shared {
                pool,
                metrics: Metrics::new(),
                options,
                started_unix: api::unix_now(),
                key_digest,
                draining: AtomicBool::new(false),
                abort,
            })),
        }
    }

    /// The state handlers share.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The router (for tests that drive it without a socket, and for embedding).
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let authenticated = Router::new()
            .route("/v1/embeddings", post(api::embeddings::embeddings))
            .route("/v1/chat/completions", post(api::generate::chat))
            .route("/v1/completions", post(api::generate::completions))
            .route("/v1/images/generations", post(api::images::images))
            .route("/v1/models", get(api::models::list))
            .route("/v1/models/{*id}", get(api::models::one))
            .route("/status", get(api::ops::status))
            .route("/metrics", get(api::ops::metrics))
            .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
        Router::new()
            .merge(authenticated)
            .route("/health", get(api::ops::health))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(state.options.body_limit))
            .layer(CatchPanicLayer::custom(|_| {
                ApiError::internal("the request failed inside the server (a bug; it was contained)")
                    .into_response()
            }))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|req: &Request| {
                        tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
                    })
                    .on_request(())
                    .on_response(|res: &Response, latency: Duration, _: &tracing::Span| {
                        tracing::info!(
                            target: "model_server::access",
                            status = res.status().as_u16(),
                            ms = latency.as_secs_f64() * 1e3,
                            "answered"
                        );
                    })
                    .on_failure(()),
            )
            .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
            .with_state(state)
    }

    /// Serves on `listener` until `shutdown` resolves, then drains: no new connections,
    /// in-flight requests get up to [`ServerOptions::drain_timeout`] to finish (those still
    /// running then are cancelled: their leases and KV reservations are returned), and the
    /// pool unloads every model.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<Shutdown> {
        let state = self.state.clone();
        let (begun_tx, begun_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = {
            let state = state.clone();
            async move {
                shutdown.await;
                state.draining.store(true, Ordering::Relaxed);
                tracing::info!("shutting down: draining in-flight requests");
                let _ = begun_tx.send(());
            }
        };
        let collector = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    state.metrics.collect_loads(&state.pool);
                }
            })
        };
        // Every token of a stream is its own small write: without TCP_NODELAY, Nagle's
        // algorithm would hold each one back until the previous one is acknowledged.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = axum::serve(listener, self.router())
            .with_graceful_shutdown(signal)
            .into_future();
        tokio::pin!(server);
        let drain = state.options.drain_timeout;
        let drained = tokio::select! {
            r = &mut server => { r?; true }
            _ = async { if begun_rx.await.is_ok() { tokio::time::sleep(drain).await } else { std::future::pending().await } } => false,
        };
        if !drained {
            tracing::warn!(
                "drain deadline of {drain:?} passed: cancelling the requests still running"
            );
            state.abort.send_replace(true);
            // The cancelled requests answer 503 (or end their stream with an error event).
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut server).await;
        }
        collector.abort();
        let unloaded = state
            .pool
            .shutdown_within(state.options.unload_timeout)
            .await;
        tracing::info!(drained, unloaded, "shut down");
        Ok(Shutdown { drained, unloaded })
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// The API-key check: the SHA-256 of the bearer token against the key's, compared in constant
/// time (hashing first also hides the key's length).
async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(digest) = &state.key_digest {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| {
            let g: [u8; 32] = Sha256::digest(g.trim().as_bytes()).into();
            bool::from(g.ct_eq(digest))
        });
        if !ok {
            return ApiError::unauthorized(if given.is_some() {
                "the API key is not valid"
            } else {
                "this server needs an API key: send `Authorization: Bearer <key>`"
            })
            .into_response();
        }
    }
    next.run(req).await
}

async fn not_found(req: Request) -> Response {
    ApiError::not_found(format!(
        "no route {} {}; the API is under /v1 (embeddings, chat/completions, completions, images/generations, models), with /health, /status and /metrics",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::method_not_allowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}
