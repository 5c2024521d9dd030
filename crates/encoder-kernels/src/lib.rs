//! CPU kernels for the encoder embedders, f32 throughout.
//!
//! candle's generic CPU path spends most of a BERT forward pass outside the matmuls (see
//! `crates/model-networks/docs/encoder-speed.md`); this crate owns that pass instead:
//! weights transposed and fused once at load ([`Linear`]), matmuls on [`gemm`] (the kernel
//! candle uses), bias/activation/residual/layer-norm fused into single passes vectorised for
//! the CPU at hand ([`simd`]), and attention over unpadded rows ([`bert::Encoder`]).
//!
//! It has no candle dependency, and the workspace compiles it with optimisations in dev builds
//! too (`[profile.dev.package.encoder-kernels]`), so tests of the crates above stay fast.

pub mod attention;
pub mod bert;
pub mod clip;
pub mod linear;
pub mod panel;
pub mod qwen2;
pub mod simd;

pub use linear::Linear;
pub use simd::Activation;
