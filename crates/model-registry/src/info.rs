//! `CandleModelInfo`: everything the pool needs to know about a model before loading it.

use crate::profile::RunProfile;
use std::fmt;

/// 1 MB as used by `est_memory_allocation_mb`: 1,048,576 bytes.
pub const MB: u64 = 1_048_576;

/// One model of the registry, checked when the code compiles.
///
/// There is no `Default` and every field is required: a model without a memory figure does not
/// compile. The generated statics (and `candle_model!`) fill every field
/// from the model's spec TOML after checking `est_memory_allocation_mb` against the estimator
/// (not zero, a multiple of 100, not below the weights, not stale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CandleModelInfo {
    /// Hub repo id, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub registry_key: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Who publishes the model.
    pub provider: &'static str,
    pub capability: Capability,
    /// SPDX-style licence id, when the card states one.
    pub license: Option<&'static str>,
    /// Hub commit the facts describe (`unpinned` until `cargo xtask fetch-cards` pins one).
    pub revision: &'static str,
    /// Weight file format.
    pub format: WeightFormat,
    /// Storage / quantization type used, e.g. `F32`, `Q4_K_M`.
    pub quantization: &'static str,
    /// Longest input the model accepts, in tokens.
    pub max_input_tokens: Option<usize>,
    /// Longest output a generator produces, in tokens.
    pub max_output_tokens: Option<usize>,
    /// Width of the embedding vector (embedders).
    pub embedding_dim: Option<usize>,
    /// The run profile the memory figure was computed for.
    pub default_profile: RunProfile,
    /// Peak resident memory to load the model and serve one request of `default_profile`, in
    /// MB (1 MB = 1,048,576 bytes), rounded up to a multiple of 100.
    pub est_memory_allocation_mb: usize,
    /// The parts `est_memory_allocation_mb` is the sum of.
    pub memory: MemoryBreakdown,
    /// `sha256:` of the estimator inputs the figure was computed from.
    pub fingerprint: &'static str,
    /// The spec TOML the values come from (relative to the workspace for the registry's own
    /// models, as written for `candle_model!`).
    pub spec_path: &'static str,
}

impl CandleModelInfo {
    /// `est_memory_allocation_mb` in bytes.
    pub const fn est_memory_allocation_bytes(&self) -> u64 {
        self.est_memory_allocation_mb as u64 * MB
    }
}

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    TextEmbedding,
    ImageEmbedding,
    TextToText,
    Vision,
    TextToImage,
}

impl Capability {
    /// The name used in spec TOMLs, e.g. `text_embedding`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Capability::TextEmbedding => "text_embedding",
            Capability::ImageEmbedding => "image_embedding",
            Capability::TextToText => "text_to_text",
            Capability::Vision => "vision",
            Capability::TextToImage => "text_to_image",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Weight file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    Safetensors,
    Gguf,
}

/// `est_memory_allocation_mb` as a sum of named parts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryBreakdown {
    /// Weights as the loader holds them (after dtype conversion).
    pub weights_bytes: u64,
    /// KV cache of one request (generators).
    pub kv_cache_bytes: u64,
    /// Largest working set of one forward pass.
    pub activations_bytes: u64,
    /// Runtime base and tokenizer.
    pub overhead_bytes: u64,
    /// Margin on the sum of the parts above.
    pub margin_bytes: u64,
    /// Sum of every part, before rounding up to the next 100 MB.
    pub total_bytes: u64,
}

impl MemoryBreakdown {
    /// Bytes a pool reserves while the model is loaded, shared by concurrent requests: weights
    /// and overhead with their share of the margin.
    pub const fn resident_bytes(&self) -> u64 {
        self.with_margin(self.weights_bytes + self.overhead_bytes)
    }

    /// Bytes a pool reserves for each concurrent request: KV cache and working set with their
    /// share of the margin. With the resident bytes, one request reserves `total_bytes`.
    pub const fn per_request_bytes(&self) -> u64 {
        self.with_margin(self.kv_cache_bytes + self.activations_bytes)
    }

    /// `part` plus its proportional share of the margin (rounded up): the margin covers what
    /// the formulas miss in every part alike, so a reservation carries it too.
    pub const fn with_margin(&self, part: u64) -> u64 {
        let bare = self.total_bytes - self.margin_bytes;
        if bare == 0 {
            return part;
        }
        let share = (part as u128 * self.margin_bytes as u128).div_ceil(bare as u128);
        part + share as u64
    }
}
