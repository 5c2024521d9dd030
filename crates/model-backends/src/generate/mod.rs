//! Text generation on the pool: Phi-4 and Qwen3-Coder-30B-A3B from GGUF, LLaVA 1.5 (image +
//! prompt → text), and the admission of Kimi K2, for which candle has no backend.
//!
//! * One module per family, in the manner of candle-transformers: [`phi3`] (GGUF, RoPE base
//!   from the file), [`qwen3_moe`] (GGUF, experts on any device), [`llava`] (the 1.5 config
//!   built explicitly). Each loads through the same code for tiny test checkpoints and real
//!   ones; the weights of a loaded model are shared, each request has its own KV cache.
//! * [`chat`] — each model's chat template; [`sampling`] — temperature, top-k, top-p,
//!   repetition penalty and seed with the model cards' defaults.
//! * [`GeneratorPool`] — `generate(model, request)` and `describe_image(model, image,
//!   prompt)` return a [`TokenStream`] (an async `Stream` of tokens). A request holds a lease
//!   and a reservation for the KV cache of its context; dropping the stream cancels it and
//!   frees both. Prompt + output is checked against the model's maximum and the context the
//!   reservation covers before anything runs.
//! * [`kimi`] — models without a backend: refused with the pool's `NeverFits` where the
//!   estimate exceeds the budget, else with [`GenerateError::NoBackend`].
//!
//! All pools of a process draw on one governor ([`model_pool::MemoryGovernor::global`] unless
//! one is passed), so generators and embedders share one budget.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use model_backends::generate::{GenerateRequest, GeneratorConfig, GeneratorPool};
//! let pool = GeneratorPool::builder()
//!     .model(GeneratorConfig::registry("microsoft/phi-4", "models/phi-4-Q4_K_M.gguf")?)
//!     .build()?;
//! let answer = pool
//!     .generate("microsoft/phi-4", GenerateRequest::user("Name a prime.").max_tokens(16))
//!     .await?
//!     .collect()
//!     .await?;
//! println!("{}", answer.text);
//! # Ok(()) }
//! ```

pub mod attention;
pub mod chat;
pub mod cli;
pub mod config;
pub mod error;
pub mod estimate;
pub mod gguf;
pub mod kimi;
pub mod llava;
pub mod loader;
pub mod measure;
pub mod model;
pub mod phi3;
pub mod qwen3_moe;
pub mod sampling;
pub mod service;
pub mod stream;

pub use chat::{ChatMessage, ChatTemplate, Role};
pub use config::{Backend, GenMemory, GeneratorConfig};
pub use error::GenerateError;
pub use estimate::estimate_checkpoint;
pub use loader::{GenLoadMeasurement, GenerativeLoader};
pub use measure::{ProfileRun, measure_profile};
pub use model::{GenerativeModel, Session};
pub use sampling::{SamplingOverrides, SamplingParams};
pub use service::{GenerateRequest, GeneratorPool, GeneratorPoolBuilder, Prompt};
pub use stream::{FinishReason, GeneratedToken, Generation, TokenStream, Usage};
