//! The per-model spec TOML (`model-cards/<capability>/<slug>.toml`): facts with provenance.

use crate::dtype::DType;
use crate::error::{SpecError, from_toml, line_of};
use crate::profile::RunProfile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use toml::Spanned;

/// The spec schema this crate reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a fact comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// Read from the Hub by `cargo xtask fetch-cards` (config.json, weight headers).
    Fetched,
    /// Public metadata recorded by hand; `source` names where it was read.
    Recorded,
    /// Computed from other facts; `formula` names how.
    Derived,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provenance::Fetched => "fetched",
            Provenance::Recorded => "recorded",
            Provenance::Derived => "derived",
        })
    }
}

/// What a model does; also the folder its card lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    TextEmbedding,
    ImageEmbedding,
    TextToText,
    Vision,
    TextToImage,
}

impl Capability {
    pub const ALL: [Capability; 5] = [
        Capability::TextEmbedding,
        Capability::ImageEmbedding,
        Capability::TextToText,
        Capability::Vision,
        Capability::TextToImage,
    ];

    pub fn as_str(self) -> &'static str {
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

/// One sourced fact: a value plus where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fact {
    pub value: toml::Value,
    pub provenance: Provenance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<String>,
}

/// Architecture family: selects the tensor-shape derivation and the activation model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// BERT encoder (all-MiniLM-L6-v2).
    Bert,
    /// JinaBERT: ALiBi, GEGLU feed-forward.
    JinaBert,
    /// Qwen2 decoder used as an encoder (Stella, GTE-Qwen2).
    Qwen2,
    /// Sentence-Transformers `Dense` projection head.
    Dense,
    /// Mistral-7B backbone + latent-attention pooling (NV-Embed-v2).
    NvEmbed,
    /// CLIP text + vision towers with projections.
    Clip,
    /// LLaVA 1.5: CLIP-L/336 vision tower, MLP projector, Llama decoder.
    Llava,
    /// GGUF `phi3` (Phi-4).
    Phi3,
    /// GGUF `qwen3moe` (Qwen3-Coder-30B-A3B).
    #[serde(rename = "qwen3moe")]
    Qwen3Moe,
    /// GGUF `deepseek2` (Kimi K2: MLA + MoE).
    Deepseek2,
    /// FLUX rectified-flow transformer.
    Flux,
    /// FLUX / SD3 16-channel autoencoder.
    Autoencoder16,
    /// T5 v1.1 encoder (T5-XXL text encoder of FLUX and SD3.5).
    T5Encoder,
    /// CLIP text tower on its own (CLIP-L, OpenCLIP-bigG) as a diffusion text encoder.
    ClipText,
    /// SD3.x MMDiT.
    Mmdit,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::JinaBert => "jina_bert",
            Family::Qwen2 => "qwen2",
            Family::Dense => "dense",
            Family::NvEmbed => "nv_embed",
            Family::Clip => "clip",
            Family::Llava => "llava",
            Family::Phi3 => "phi3",
            Family::Qwen3Moe => "qwen3moe",
            Family::Deepseek2 => "deepseek2",
            Family::Flux => "flux",
            Family::Autoencoder16 => "autoencoder16",
            Family::T5Encoder => "t5_encoder",
            Family::ClipText => "clip_text",
            Family::Mmdit => "mmdit",
        }
    }

    /// Architecture values this family's shape derivation and estimator read.
    pub fn required_keys(self) -> &'static [&'static str] {
        match self {
            Family::Bert => &[
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "vocab_size",
                "max_position_embeddings",
                "type_vocab_size",
            ],
            Family::JinaBert => &[
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "vocab_size",
                "type_vocab_size",
            ],
            Family::Qwen2 => &[
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "intermediate_size",
                "vocab_size",
            ],
            Family::Dense => &["in_features", "out_features"],
            Family::NvEmbed => &[
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "intermediate_size",
                "vocab_size",
                "num_latents",
                "latent_heads",
            ],
            Family::Clip => &[
                "projection_dim",
                "text_hidden_size",
                "text_num_hidden_layers",
                "text_num_attention_heads",
                "text_intermediate_size",
                "text_vocab_size",
                "text_max_position_embeddings",
                "vision_hidden_size",
                "vision_num_hidden_layers",
                "vision_num_attention_heads",
                "vision_intermediate_size",
                "vision_image_size",
                "vision_patch_size",
            ],
            Family::Llava => &[
                "text_hidden_size",
                "text_num_hidden_layers",
                "text_num_attention_heads",
                "text_num_key_value_heads",
                "text_intermediate_size",
                "text_vocab_size",
                "vision_hidden_size",
                "vision_num_hidden_layers",
                "vision_num_attention_heads",
                "vision_intermediate_size",
                "vision_image_size",
                "vision_patch_size",
            ],
            Family::Phi3 => &[
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "head_dim",
                "intermediate_size",
                "vocab_size",
            ],
            Family::Qwen3Moe => &[
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "head_dim",
                "moe_intermediate_size",
                "num_experts",
                "num_experts_per_tok",
                "vocab_size",
            ],
            Family::Deepseek2 => &[
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "first_k_dense_replace",
                "intermediate_size",
                "moe_intermediate_size",
                "n_routed_experts",
                "n_shared_experts",
                "num_experts_per_tok",
                "kv_lora_rank",
                "q_lora_rank",
                "qk_nope_head_dim",
                "qk_rope_head_dim",
                "v_head_dim",
                "vocab_size",
            ],
            Family::Flux => &[
                "in_channels",
                "vec_in_dim",
                "context_in_dim",
                "hidden_size",
                "mlp_ratio",
                "num_heads",
                "depth",
                "depth_single_blocks",
                "guidance_embed",
            ],
            Family::Autoencoder16 => &["ch", "ch_mult", "num_res_blocks", "z_channels"],
            Family::T5Encoder => &[
                "d_model",
                "d_ff",
                "num_layers",
                "num_heads",
                "d_kv",
                "vocab_size",
            ],
            Family::ClipText => &[
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "vocab_size",
                "max_position_embeddings",
                "projection_dim",
            ],
            Family::Mmdit => &[
                "patch_size",
                "in_channels",
                "out_channels",
                "num_layers",
                "attention_head_dim",
                "num_attention_heads",
                "joint_attention_dim",
                "caption_projection_dim",
                "pooled_projection_dim",
                "pos_embed_max_size",
            ],
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Weight file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Safetensors,
    Gguf,
}

/// One row of a tensor inventory: all tensors of one storage type (or one named tensor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryRow {
    pub dtype: DType,
    pub tensors: u64,
    pub params: u64,
    pub bytes: u64,
    /// Set when the row is one named tensor that a loader treats specially
    /// (e.g. `token_embd.weight`, which candle's GGUF loaders dequantize to F32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The tensor inventory of one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    pub provenance: Provenance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<String>,
    /// Published size of the weight files on disk, for the cross-check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_bytes: Option<Fact>,
    #[serde(default)]
    pub inventory: Vec<InventoryRow>,
}

impl Weights {
    pub fn total_bytes(&self) -> u64 {
        self.inventory.iter().map(|r| r.bytes).sum()
    }
    pub fn total_params(&self) -> u64 {
        self.inventory.iter().map(|r| r.params).sum()
    }
}

/// When a multi-component model holds a component in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Needed for the whole request (single-component models).
    #[default]
    Main,
    /// Encodes the prompt, then may be released (diffusion text encoders).
    TextEncoder,
    /// The denoising network.
    Denoiser,
    /// Decodes latents to pixels.
    Decoder,
}

/// One loadable part of a model: its files, architecture facts and tensor inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    pub family: Family,
    pub format: Format,
    pub files: Vec<String>,
    #[serde(default)]
    pub stage: Stage,
    pub architecture: BTreeMap<String, Spanned<Fact>>,
    pub weights: Weights,
}

/// `[revision]`: the Hub commit the facts describe.
pub type Revision = Fact;

/// A parsed spec file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub schema_version: u32,
    pub registry_key: Spanned<String>,
    pub name: String,
    pub provider: String,
    pub capability: Capability,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    pub revision: Revision,
    /// Limits and serving facts the pool needs (max input tokens, embedding dimension …).
    #[serde(default)]
    pub serving: BTreeMap<String, Spanned<Fact>>,
    #[serde(rename = "component")]
    pub components: Vec<Component>,
    /// Written by `cargo xtask gen-memory-specs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<crate::memory::MemorySection>,
}

/// A spec plus the text it was parsed from (for locating later errors).
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub path: std::path::PathBuf,
    pub text: String,
    pub spec: ModelSpec,
}

impl LoadedSpec {
    /// Line of a byte span in the source text.
    pub fn line(&self, span: std::ops::Range<usize>) -> usize {
        line_of(&self.text, span.start)
    }

    /// An error located at `span`.
    pub fn error_at(
        &self,
        span: Option<std::ops::Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> SpecError {
        SpecError::new(&self.path, field, message).at(span.map(|s| self.line(s)))
    }

    /// The first line on which `needle` appears (for fields without a recorded span).
    pub fn line_containing(&self, needle: &str) -> Option<usize> {
        self.text
            .lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
    }
}

/// Parses a spec from text; `path` is only used to name the file in errors.
pub fn parse_spec(path: &Path, text: &str) -> Result<LoadedSpec, SpecError> {
    let spec: ModelSpec = toml::from_str(text).map_err(|e| from_toml(path, text, &e))?;
    let loaded = LoadedSpec {
        path: path.to_path_buf(),
        text: text.to_owned(),
        spec,
    };
    crate::validate::validate_spec(&loaded)?;
    Ok(loaded)
}

/// Reads and parses a spec file.
pub fn load_spec(path: &Path) -> Result<LoadedSpec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecError::new(path, "(file)", format!("cannot read spec: {e}"))
            .fix("check the `spec` path in model-cards/models.toml")
    })?;
    parse_spec(path, &text)
}

impl Component {
    /// An architecture value as an unsigned integer.
    pub fn arch_u64(&self, key: &str) -> Option<u64> {
        self.architecture
            .get(key)
            .and_then(|f| match &f.get_ref().value {
                toml::Value::Integer(i) => u64::try_from(*i).ok(),
                toml::Value::Float(x) if x.fract() == 0.0 && *x >= 0.0 => Some(*x as u64),
                _ => None,
            })
    }

    /// An architecture value as a float.
    pub fn arch_f64(&self, key: &str) -> Option<f64> {
        self.architecture
            .get(key)
            .and_then(|f| match &f.get_ref().value {
                toml::Value::Integer(i) => Some(*i as f64),
                toml::Value::Float(x) => Some(*x),
                _ => None,
            })
    }

    /// An architecture value as a bool.
    pub fn arch_bool(&self, key: &str) -> Option<bool> {
        self.architecture
            .get(key)
            .and_then(|f| f.get_ref().value.as_bool())
    }

    /// An architecture value as a list of integers.
    pub fn arch_list(&self, key: &str) -> Option<Vec<u64>> {
        let arr = self.architecture.get(key)?.get_ref().value.as_array()?;
        arr.iter()
            .map(|v| v.as_integer().and_then(|i| u64::try_from(i).ok()))
            .collect()
    }
}

impl ModelSpec {
    /// A serving value (e.g. `max_input_tokens`) as an unsigned integer.
    pub fn serving_u64(&self, key: &str) -> Option<u64> {
        self.serving
            .get(key)
            .and_then(|f| f.get_ref().value.as_integer())
            .and_then(|i| u64::try_from(i).ok())
    }

    /// The run profile recorded with the memory figure, if gen-memory-specs has run.
    pub fn profile(&self) -> Option<&RunProfile> {
        self.memory.as_ref().map(|m| &m.profile)
    }
}
