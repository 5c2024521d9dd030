//! Candle backends for the memory-aware pool: the five text embedders of the registry
//! (all-MiniLM-L6-v2, Stella 1.5B v5, GTE-Qwen2 1.5B, Jina v2 base, NV-Embed-v2) and CLIP
//! ViT-B/32 (text and images).
//!
//! * [`models`] — one module per model family, each with a `Config` that deserializes the
//!   model's own `config.json`, loading from a directory in the Hub's layout ([`ModelDir`]).
//! * [`CandleLoader`] — the [`model_pool::ModelLoader`] that loads them on the device and in the
//!   dtype of each model's run profile, and measures what every load really took (RSS delta
//!   on CPU, device-memory delta on CUDA).
//! * [`EmbeddingPool`] — `embed(model, texts)` and `embed_images(model, images)` on top of
//!   [`model_pool::Pool`]: concurrent requests are batched under a token budget per batch
//!   (like text-embeddings-inference's `max_batch_tokens`), each batch runs under one lease.
//! * [`report`] — estimate vs measured memory per model; the `candle-pool` binary prints it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use model_backends::{EmbeddingPool, ModelConfig};
//! let pool = EmbeddingPool::builder()
//!     .model(ModelConfig::registry("sentence-transformers/all-MiniLM-L6-v2", ".cache/all-MiniLM-L6-v2")?)
//!     .build()?;
//! let vectors = pool.embed("sentence-transformers/all-MiniLM-L6-v2", ["hello world"]).await?;
//! assert_eq!(vectors[0].len(), 384);
//! # Ok(()) }
//! ```

pub mod batch;
pub mod config;
pub mod device;
pub mod diffusion;
pub mod error;
pub mod generate;
pub mod image;
pub mod loader;
pub mod memory;
pub mod model_dir;
pub mod models;
pub mod pool_plan;
pub mod registry;
pub mod report;
pub mod service;
pub mod text;

pub use config::{BatchLimits, ModelConfig, Overflow};
pub use device::{device, dtype_of};
pub use error::{BackendError, EmbedError};
pub use loader::CandleLoader;
pub use model_dir::ModelDir;
pub use models::{EmbeddingModel, Family};
pub use service::{EmbeddingPool, EmbeddingPoolBuilder};
pub use text::TextMode;
