//! The one memory-aware pool ([`model_serving::ModelPool`]) behind an OpenAI-compatible HTTP
//! API, as `candle-pool serve` runs it.
//!
//! | endpoint | what |
//! |---|---|
//! | `POST /v1/embeddings` | text embedders and CLIP ([`api::embeddings`]) |
//! | `POST /v1/chat/completions` | generators and LLaVA, whole or streamed ([`api::generate`]) |
//! | `POST /v1/completions` | raw-prompt generation, whole or streamed |
//! | `POST /v1/images/generations` | FLUX.1-schnell, SD3.5 Large Turbo ([`api::images`]) |
//! | `GET /v1/models`, `/v1/models/{id}` | every model with capability, state, estimate and measured bytes |
//! | `GET /health` | 200 while serving, 503 while draining; needs no API key |
//! | `GET /status` | the pool's status as JSON ([`status`]) |
//! | `GET /metrics` | Prometheus text: the pool's `model_pool_*` families and the histograms of [`metrics`] |
//!
//! Errors are OpenAI's shape with the status codes of [`error`]. The crate is a library so
//! that tests run the server on `127.0.0.1:0`:
//!
//! ```no_run
//! # async fn demo(pool: model_serving::ModelPool) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use model_server::{Server, ServerOptions, shutdown_signal};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let server = Server::new(Arc::new(pool), ServerOptions::default());
//! server.serve(listener, shutdown_signal()).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod server;
pub mod setup;
pub mod status;

pub use error::ApiError;
pub use server::{AppState, Server, ServerOptions, Shutdown, shutdown_signal};
pub use setup::{ModelArg, PoolSetup, SetupArgs, SetupError, parse_duration};
