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

use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::Embedding;
use candle_transformers::models::quantized_qwen3::RotaryEmbedding;

use super::attention::{self, KvCaches, RmsNorm};
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
        let arch = f.architecture()?;
        if arch != ARCHITECTURE {
            return Err(BackendError::config(
                &f.path,
                format!("general.architecture is `{arch}`, not `{ARCHITECTURE}`"),
            ));
        }
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
        let vocab = f
            .content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .ok_or_else(|| {
                BackendError::config(&f.path, "tensor `token_embd.weight` is missing")
            })?;
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

    /// KV-cache bytes per token of context (F32 keys and values over all layers).
    pub fn kv_bytes_per_token(&self) -> u64 {
        (2 * self.n_layer * self.n_kv_head * self.head_dim * 4) as u64
    }
}

struct Layer {
    attn_norm: RmsNorm,
    attn_qkv: QMatMul,
    attn_output: QMatMul,
    ffn_norm: RmsNorm,
    ffn_up: QMatMul,
    ffn_down: QMatMul,
}

/// A loaded Phi-3-family model. Immutable: share it between requests.
pub struct Model {
    config: Config,
    embed: Embedding,
    layers: Vec<Layer>,
    output_norm: RmsNorm,
    output: QMatMul,
    rope: RotaryEmbedding,
    positions: usize,
    device: Device,
}

impl Model {
    /// Loads the weights of `f` onto `device`, with RoPE tables for `positions` positions
    /// (capped at the model's `context_length`).
    pub fn load(
        f: &mut GgufFile,
        device: &Device,
        positions: usize,
    ) -> std::result::Result<Self, BackendError> {
        let config = Config::from_gguf(f)?;
        let positions = positions.min(config.context_length).max(1);
        let qmm = |f: &mut GgufFile, name: &str| -> std::result::Result<QMatMul, BackendError> {
            Ok(QMatMul::from_qtensor(f.tensor(name, device)?)?)
        };
        let norm = |f: &mut GgufFile, name: &str| -> std::result::Result<RmsNorm, BackendError> {
            Ok(RmsNorm::new(f.tensor(name, device)?, config.rms_eps)?)
        };
        // Dequantized to F32, as candle's GGUF models do (the estimator counts it so).
        let embed = f.tensor("token_embd.weight", device)?.dequantize(device)?;
        let embed = Embedding::new(embed, config.hidden);
        let output_norm = norm(f, "output_norm.weight")?;
        let output = qmm(f, "output.weight")?;
        let mut layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: norm(f, &p("attn_norm.weight"))?,
                attn_qkv: qmm(f, &p("attn_qkv.weight"))?,
                attn_output: qmm(f, &p("attn_output.weight"))?,
                ffn_norm: norm(f, &p("ffn_norm.weight"))?,
                ffn_up: qmm(f, &p("ffn_up.weight"))?,
                ffn_down: qmm(f, &p("ffn_down.weight"))?,
            });
        }
        let rope = RotaryEmbedding::new(
            candle_core::DType::F32,
            config.rope_dim,
            positions,
            config.rope_base,
            device,
        )?;
        Ok(Model {
            config,
            embed,
            layers,
            output_norm,
            output,
            rope,
            positions,
            device: device.clone(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Positions the RoPE tables cover: the longest context a request can have.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// An empty cache for a request of up to `tokens` tokens.
    pub fn new_cache(&self, tokens: usize) -> KvCaches {
        KvCaches::new(self.config.n_layer, tokens.min(self.positions))
    }

    /// Runs `tokens` after what `cache` holds and returns the logits of the last one
    /// (`[vocab]`, F32).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCaches) -> Result<Tensor> {
        let len = tokens.len();
        cache.check_room(len)?;
        let offset = cache.position();
        let c = &self.config;
        let ids = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let mut x = self.embed.forward(&ids)?;
        let mask = attention::causal_mask(len, offset, &self.device)?;
        let (q_w, kv_w) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
        for (i, layer) in self.layers.iter().enumerate() {
            let residual = &x;
            let h = layer.attn_norm.forward(&x)?;
            let qkv = layer.attn_qkv.forward(&h)?;
            let heads = |t: Tensor, n: usize| -> Result<Tensor> {
                t.reshape((1, len, n, c.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = heads(qkv.narrow(2, 0, q_w)?, c.n_head)?;
            let k = heads(qkv.narrow(2, q_w, kv_w)?, c.n_kv_head)?;
            let v = heads(qkv.narrow(2, q_w + kv_w, kv_w)?, c.n_kv_head)?;
            let (q, k) = self.rope.apply(&q, &k, offset)?;
            let y = attention::attend(&q, &k, &v, cache.layer(i), mask.as_ref())?;
            let x1 = (layer.attn_output.forward(&y)? + residual)?;
            let h = layer.ffn_norm.forward(&x1)?;
            let up = layer.ffn_up.forward(&h)?;
            let act = attention::swiglu(&up.narrow(2, 0, c.ffn)?, &up.narrow(2, c.ffn, c.ffn)?)?;
            x = (layer.ffn_down.forward(&act)? + x1)?;
        }
        cache.advance(len);
        let last = x.narrow(1, len - 1, 1)?;
        let logits = self.output.forward(&self.output_norm.forward(&last)?)?;
        attention::last_position(&logits)
    }
}
