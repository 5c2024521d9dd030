//! Phi-3 family decoder from GGUF (`general.architecture = phi3`; Phi-4 Q4_K_M is one).
//!
//! Same network as candle's `quantized_phi3` (fused `attn_qkv`, fused gate/up `ffn_up`, RMS
//! norms, NeoX-style RoPE), with three differences that serving needs:
//! * the RoPE base is `phi3.rope.freq_base` from the file — candle hard-codes 10 000, while
//!   Phi-4 is trained with 250 000, so candle's model drifts from the first positions on;
//! * the weights are immutable and shared by concurrent requests; each request has its own
//!   [`KvCaches`], sized to its context (candle keeps one cache inside the model, preallocated
//!   to the full `context_length`, 6.7 GB in F32 for Phi-4);
//! * the RoPE tables cover the positions the pool configured, not all `context_length`.
//!
//! [`KvCaches`]: super::attention::KvCaches

use candle_core::{Module, Result, Tensor};

use super::attention::{self, LayerCache, RmsNorm};
use super::qlinear::QLinear;
use super::trunk::{
    DecoderLayer, DecoderTrunk, GgufWeights, Heads, Step, TrunkShape, expect_architecture,
    vocab_size,
};
use model_runtime::{BackendError, GgufFile};

/// The architecture name in GGUF metadata.
pub const ARCHITECTURE: &str = "phi3";

/// RoPE base llama.cpp assumes when a phi3 GGUF states none (and the one candle hard-codes).
pub const DEFAULT_ROPE_BASE: f64 = 10_000.0;

/// Hyper-parameters, from the GGUF metadata (`phi3.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv_head: usize,
    /// Layers.
    pub n_layer: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Feed-forward width (the fused `ffn_up` is twice this).
    pub ffn: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Rotary dimensions per head.
    pub rope_dim: usize,
    /// RoPE base (`phi3.rope.freq_base`).
    pub rope_base: f64,
    /// RMS norm epsilon.
    pub rms_eps: f64,
    /// Positions the model was trained for.
    pub context_length: usize,
    /// Vocabulary size (rows of `token_embd`).
    pub vocab: usize,
}

impl Config {
    /// The values the memory estimator reads, under the spec's names.
    pub fn spec_architecture(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("hidden_size", self.hidden as u64),
            ("num_hidden_layers", self.n_layer as u64),
            ("num_attention_heads", self.n_head as u64),
            ("num_key_value_heads", self.n_kv_head as u64),
            ("head_dim", self.head_dim as u64),
            ("intermediate_size", self.ffn as u64),
            ("vocab_size", self.vocab as u64),
            ("max_position_embeddings", self.context_length as u64),
        ]
    }

    /// Reads the hyper-parameters of a phi3 GGUF.
    pub fn from_gguf(f: &GgufFile) -> std::result::Result<Self, BackendError> {
        expect_architecture(f, ARCHITECTURE)?;
        let k = |s: &str| format!("{ARCHITECTURE}.{s}");
        let n_head = f.usize(&k("attention.head_count"))?;
        let hidden = f.usize(&k("embedding_length"))?;
        let head_dim = hidden / n_head.max(1);
        let rope_dim = f
            .optional(&k("rope.dimension_count"), GgufFile::usize)?
            .unwrap_or(head_dim);
        if rope_dim != head_dim {
            return Err(BackendError::config(
                &f.path,
                format!(
                    "partial rotary embeddings ({rope_dim} of {head_dim} dims) are not supported"
                ),
            ));
        }
        if f.has("rope_factors_long.weight") {
            return Err(BackendError::config(
                &f.path,
                "LongRoPE scaling (rope_factors_long) is not supported; Phi-4 does not use it",
            ));
        }
        let rope_base = match f.optional(&k("rope.freq_base"), GgufFile::f64)? {
            Some(base) => base,
            None => {
                tracing::warn!(file = %f.path.display(), "no phi3.rope.freq_base; using {DEFAULT_ROPE_BASE}");
                DEFAULT_ROPE_BASE
            }
        };
        let vocab = vocab_size(f)?;
        Ok(Config {
            n_head,
            n_kv_head: f.usize(&k("attention.head_count_kv"))?,
            n_layer: f.usize(&k("block_count"))?,
            hidden,
            ffn: f.usize(&k("feed_forward_length"))?,
            head_dim,
            rope_dim,
            rope_base,
            rms_eps: f.f64(&k("attention.layer_norm_rms_epsilon"))?,
            context_length: f.usize(&k("context_length"))?,
            vocab,
        })
    }

    /// KV-cache bytes per token of context (keys and values of `dtype` over all layers).
    pub fn kv_bytes_per_token(&self, dtype: candle_core::DType) -> u64 {
        (2 * self.n_layer * self.n_kv_head * self.head_dim * dtype.size_in_bytes()) as u64
    }
}

/// One Phi-3 layer: attention with fused `attn_qkv`, SwiGLU feed-forward with fused gate/up
/// `ffn_up`.
pub struct Layer {
    attn_norm: RmsNorm,
    attn_qkv: QLinear,
    attn_output: QLinear,
    ffn_norm: RmsNorm,
    ffn_up: QLinear,
    ffn_down: QLinear,
}

/// A loaded Phi-3-family model. Immutable: share it between requests.
pub type Model = DecoderTrunk<Layer>;

impl DecoderLayer for Layer {
    type Config = Config;

    fn read_config(f: &GgufFile) -> std::result::Result<Config, BackendError> {
        Config::from_gguf(f)
    }

    fn shape(config: &Config) -> TrunkShape {
        TrunkShape {
            layers: config.n_layer,
            hidden: config.hidden,
            rope_dim: config.rope_dim,
            rope_base: config.rope_base,
            rms_eps: config.rms_eps,
            context_length: config.context_length,
            tied_embeddings: false,
        }
    }

    fn load(
        w: &mut GgufWeights<'_>,
        _config: &Config,
        i: usize,
    ) -> std::result::Result<Self, BackendError> {
        let p = |s: &str| format!("blk.{i}.{s}");
        Ok(Layer {
            attn_norm: w.norm(&p("attn_norm.weight"))?,
            attn_qkv: w.matmul(&p("attn_qkv.weight"))?,
            attn_output: w.matmul(&p("attn_output.weight"))?,
            ffn_norm: w.norm(&p("ffn_norm.weight"))?,
            ffn_up: w.matmul(&p("ffn_up.weight"))?,
            ffn_down: w.matmul(&p("ffn_down.weight"))?,
        })
    }

    fn forward(
        &self,
        c: &Config,
        x: &Tensor,
        step: &Step<'_>,
        caches: &mut [LayerCache<'_>],
    ) -> Result<Tensor> {
        let h = self.attn_norm.forward(x)?;
        let qkv = step.linear(&self.attn_qkv, &h)?;
        let (q_w, kv_w) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
        let heads = Heads {
            query: c.n_head,
            kv: c.n_kv_head,
            dim: c.head_dim,
        };
        let q = qkv.narrow(2, 0, q_w)?;
        let k = qkv.narrow(2, q_w, kv_w)?;
        let v = qkv.narrow(2, q_w + kv_w, kv_w)?;
        let y = step.attention(heads, (&q, &k, &v), None, caches)?;
        let x1 = (step.linear(&self.attn_output, &y)? + x)?;
        let h = self.ffn_norm.forward(&x1)?;
        let up = step.linear(&self.ffn_up, &h)?;
        let act = attention::swiglu(&up.narrow(2, 0, c.ffn)?, &up.narrow(2, c.ffn, c.ffn)?)?;
        step.linear(&self.ffn_down, &act)? + x1
    }
}
