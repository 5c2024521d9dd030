//! One memory-aware pool for every Candle model.
//!
//! [`ModelPool`] holds the text embedders (all-MiniLM-L6-v2, Stella, GTE-Qwen2, Jina v2,
//! NV-Embed-v2), CLIP, the GGUF generators (Phi-4, Qwen3-Coder), LLaVA 1.5 and the
//! text-to-image pipelines (FLUX.1-schnell, SD3.5 Large Turbo) in ONE `model_pool::Pool`:
//! one scheduler and one governor see every model, so admission, eviction, queues, tiers and
//! the never-fits refusal work across capabilities. The capability APIs are views over it:
//!
//! * [`ModelPool::embed`], [`ModelPool::embed_queries`], [`ModelPool::embed_images`] —
//!   requests are batched under a token budget ([`embed::batch`]), each batch under one lease;
//! * [`ModelPool::generate`], [`ModelPool::describe_image`] — a [`TokenStream`] per request,
//!   which holds its KV-cache reservation while it streams;
//! * [`ModelPool::text_to_image`], [`ModelPool::generate_image`] — each stage of a request
//!   reserves what it needs at the requested size ([`text_to_image::MemoryPlan`]).
//!
//! How a model is served ([`ServedModel`]) comes from the compile-time checked registry for
//! the registry's models ([`registry`]) and from a checkpoint's own files for any other, with
//! the estimator run on its headers ([`checkpoint`]). Every load goes through one loader
//! ([`loader::ServingLoader`]) and is measured; [`report`] puts the measurements next to the
//! estimates, and [`plan_file`] configures a pool from the planner's plan.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use model_serving::{GenerateRequest, ModelPool, ServedModel};
//! let pool = ModelPool::builder()
//!     .model(ServedModel::registry("sentence-transformers/all-MiniLM-L6-v2", ".cache/all-MiniLM-L6-v2")?)
//!     .model(ServedModel::registry("microsoft/phi-4", "models/phi-4-Q4_K_M.gguf")?)
//!     .build()?;
//! let vectors = pool.embed("sentence-transformers/all-MiniLM-L6-v2", ["hello world"]).await?;
//! assert_eq!(vectors[0].len(), 384);
//! let answer = pool
//!     .generate("microsoft/phi-4", GenerateRequest::user("Name a prime.").max_tokens(16))
//!     .await?
//!     .collect()
//!     .await?;
//! println!("{}", answer.text);
//! # Ok(()) }
//! ```

pub mod checkpoint;
pub mod config;
pub mod download;
pub mod embed;
pub mod error;
pub mod generate;
pub mod loader;
pub mod plan_file;
pub mod pool;
pub mod registry;
pub mod report;
pub mod text_to_image;

pub use config::{ModelOptions, ModelSource, ServedModel};
pub use download::DownloadProgress;
pub use embed::batch::Embeddings;
pub use embed::{DeclaredMemory, EmbedOptions};
pub use error::ServeError;
pub use generate::{
    ChatMessage, GenMemory, GenerateOptions, GenerateRequest, Prompt, Role, TokenStream,
};
pub use loader::LoadedModel;
pub use model_hub::{FetchObserver, FetchPlan, HubClient, HubError, HubOptions};
pub use model_networks::embed::BatchLimits;
pub use model_networks::embed::text::{Overflow, TextMode};
pub use model_networks::image::decode as decode_image;
pub use model_networks::{Decoder, Family, Pipeline};
pub use pool::{ModelPool, ModelPoolBuilder};
pub use text_to_image::{ImageOptions, ImageRequest, Progress};
