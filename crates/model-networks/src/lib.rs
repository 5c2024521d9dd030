//! The networks the pool serves, one module per family in the manner of candle-transformers,
//! grouped by what they do:
//!
//! * [`embed`] — the text embedders (BERT, Jina BERT, Stella, GTE-Qwen2, NV-Embed) and CLIP,
//!   with their tokenization rules; [`embed::EmbeddingModel`] is a loaded embedder.
//! * [`decode`] — the generators (Phi-3 / Phi-4 and Qwen3-MoE from GGUF, LLaVA 1.5);
//!   [`decode::GenerativeModel`] is a loaded generator, [`decode::Session`] one request on it.
//! * [`diffusion`] — the text-to-image components (FLUX and MMDiT transformers, CLIP and T5
//!   text encoders, the autoencoder, the samplers, the prompt tokenizers).
//! * [`image`] — image decoding and CLIP's preprocessing.
//!
//! Every family loads through [`model_runtime`]'s readers from a checkpoint in the Hub layout,
//! the same code for a real checkpoint and a tiny random one. Nothing here knows about the
//! pool: serving, batching, streams and memory reservations are `model-serving`'s.

pub mod decode;
pub mod diffusion;
pub mod embed;
pub mod image;

pub use decode::{Decoder, GenerativeModel, Session};
pub use diffusion::Pipeline;
pub use embed::{EmbeddingModel, Family};
