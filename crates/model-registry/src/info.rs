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
    /// The code that serves the model; `None` when no Candle backend can run its
    /// architecture (Kimi K2's `deepseek2`): such a model is estimated and refused, never
    /// loaded.
    pub backend: Option<Backend>,
    /// How the model is served: the facts of its spec's `[serving]` table the runtime uses.
    pub serving: ServingFacts,
    /// The parts of the model as the spec lists them (one for most models; the text
    /// encoders, denoiser and decoder of a text-to-image pipeline).
    pub components: &'static [ComponentInfo],
    /// The spec TOML the values come from (relative to the workspace for the registry's own
    /// models, as written for `candle_model!`).
    pub spec_path: &'static str,
    /// The text of that spec, compiled in: what the estimator reads when it re-runs at other
    /// sizes (a text-to-image request's resolution, a fine-tune's checkpoint), so that a
    /// binary installed without the source tree still has every fact.
    pub spec_toml: &'static str,
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

/// The code that serves a model, decided when the registry is generated from the spec's
/// families and facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// BERT with mean pooling (all-MiniLM-L6-v2).
    Bert,
    /// JinaBERT with ALiBi (Jina v2).
    JinaBert,
    /// Qwen2 encoder + mean pooling + the Sentence-Transformers Dense head (Stella v5).
    Stella,
    /// Qwen2 encoder with last-token pooling (GTE-Qwen2).
    GteQwen2,
    /// Bidirectional Mistral + latent-attention pooling (NV-Embed-v2).
    NvEmbed,
    /// CLIP text and vision towers.
    Clip,
    /// Phi-3 architecture from GGUF (Phi-4).
    Phi3Gguf,
    /// Qwen3 mixture of experts from GGUF (Qwen3-Coder-30B-A3B).
    Qwen3MoeGguf,
    /// LLaVA 1.5 from safetensors.
    Llava15,
    /// FLUX.1 pipeline.
    Flux,
    /// Stable Diffusion 3.5 pipeline.
    Sd3,
}

impl Backend {
    /// Every backend.
    pub const ALL: [Backend; 11] = [
        Backend::Bert,
        Backend::JinaBert,
        Backend::Stella,
        Backend::GteQwen2,
        Backend::NvEmbed,
        Backend::Clip,
        Backend::Phi3Gguf,
        Backend::Qwen3MoeGguf,
        Backend::Llava15,
        Backend::Flux,
        Backend::Sd3,
    ];

    /// Lower-case name, as listings and `--arch` spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Bert => "bert",
            Backend::JinaBert => "jina-bert",
            Backend::Stella => "stella",
            Backend::GteQwen2 => "gte-qwen2",
            Backend::NvEmbed => "nv-embed",
            Backend::Clip => "clip",
            Backend::Phi3Gguf => "phi3",
            Backend::Qwen3MoeGguf => "qwen3moe",
            Backend::Llava15 => "llava",
            Backend::Flux => "flux",
            Backend::Sd3 => "sd3",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts of a spec's `[serving]` table the runtime serves a model by.
#[derive(Debug, Clone, Copy, PartialEq, Hash)]
pub struct ServingFacts {
    /// The architecture as the weights name it: GGUF `general.architecture` where the spec
    /// records one, else the main component's family (`bert`, `qwen2`, `llava`, `flux` …).
    pub architecture: &'static str,
    /// Embedders: how token states become one vector (`mean`, `last_token` …).
    pub pooling: Option<&'static str>,
    /// Embedders: whether vectors are L2-normalized.
    pub normalize: Option<bool>,
    /// Embedders: the instruction prefixed to search queries.
    pub query_instruction: Option<&'static str>,
    /// Generators: the chat format (`chatml`, `chatml-phi`, `kimi`, or LLaVA's prompt).
    pub chat_template: Option<&'static str>,
    /// Generators: the sampling the model card recommends.
    pub sampling: Option<SamplingDefaults>,
    /// Vision models: the side images are resized to, in pixels.
    pub image_size: Option<usize>,
    /// Text-to-image: denoising steps by default.
    pub default_steps: Option<u32>,
    /// Text-to-image: the widest image accepted, in pixels.
    pub max_width: Option<u32>,
    /// Text-to-image: the tallest image accepted, in pixels.
    pub max_height: Option<u32>,
}

/// A generator's sampling defaults. Temperature 0 is greedy decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDefaults {
    /// Softmax temperature (`0`: greedy).
    pub temperature: f64,
    /// Nucleus sampling mass (`1`: off).
    pub top_p: f64,
    /// Most likely tokens kept (`0`: off).
    pub top_k: usize,
    /// Penalty on tokens already in the context (`1`: off).
    pub repetition_penalty: f64,
}

impl std::hash::Hash for SamplingDefaults {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.temperature.to_bits().hash(state);
        self.top_p.to_bits().hash(state);
        self.top_k.hash(state);
        self.repetition_penalty.to_bits().hash(state);
    }
}

impl Eq for SamplingDefaults {}

impl Eq for ServingFacts {}

/// One component of a model as its spec lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ComponentInfo {
    /// Its name in the spec (`model`, `transformer`, `t5_xxl` …).
    pub name: &'static str,
    /// Its family (`bert`, `flux`, `t5_encoder` …).
    pub family: &'static str,
    /// The stage of a request it runs in (`main`, `text_encoder`, `denoiser`, `decoder`).
    pub stage: &'static str,
    /// Its weight files in the repository.
    pub files: &'static [&'static str],
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
