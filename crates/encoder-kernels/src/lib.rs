//! CPU kernels for the encoder embedders, f32 throughout: BERT and JinaBERT ([`bert`]), CLIP's
//! text and vision towers ([`clip`]) and the Qwen2 and Mistral bodies of GTE-Qwen2, Stella and
//! NV-Embed ([`qwen2`]).
//!
//! candle's generic CPU path spends most of an encoder's forward pass outside the matmuls (see
//! `crates/model-networks/docs/encoder-speed.md`); this crate owns that pass instead:
//! - weights packed once at load into column panels that a matmul reads in order, multiplied
//!   by AVX-512 register tiles ([`panel`], [`Linear`]; gemm per panel on other CPUs);
//! - bias, activation, gating, residual, layer/RMS norm and RoPE fused into single passes
//!   vectorised for the CPU at hand ([`simd`]);
//! - attention per (row, head) over unpadded rows, with ALiBi, causal or no score bias and
//!   grouped key/value heads ([`attention`]);
//! - a forward pass runs on rayon's threads with one kept awake for its whole length, so its
//!   hundred short parallel steps never wait for a thread to wake.
//!
//! It has no candle dependency, and the workspace compiles it with optimisations in dev builds
//! too (`[profile.dev.package.encoder-kernels]`), so tests of the crates above stay fast.

pub mod attention;
pub mod bert;
pub mod buffer;
pub mod clip;
pub mod linear;
pub mod panel;
pub mod qwen2;
pub mod simd;

pub use linear::Linear;
pub use simd::Activation;
