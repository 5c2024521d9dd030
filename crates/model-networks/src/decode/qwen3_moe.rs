//! Qwen3 mixture-of-experts decoder from GGUF (`general.architecture = qwen3moe`;
//! Qwen3-Coder-30B-A3B Q4_K_M is one).
//!
//! The network of candle's `quantized_qwen3_moe` (per-head q/k RMS norms, NeoX RoPE from
//! `rope.freq_base`, softmax router with top-k renormalized weights, SiLU experts), built from
//! candle's own pieces (`quantized_qwen3::RotaryEmbedding`, `QLinear`, `repeat_kv`), but with
//! the changes serving needs:
//! * experts run on every device: candle's `FusedMoeGGUF` calls `moe_gemm_gguf`, which bails
//!   on anything but CUDA, so candle's model cannot run on a CPU at all. Here each expert's
//!   slice of the stacked `ffn_*_exps` tensors is its own quantized matrix (read straight from
//!   the file, same bytes), and tokens are gathered per selected expert;
//! * the weights are immutable and shared by concurrent requests, each request has its own
//!   [`KvCaches`] (candle's model keeps one concatenating cache inside and has no way to reset
//!   it, so a loaded model could serve exactly one request);
//! * the RoPE tables cover the configured context, not all 262 144 positions (268 MB).
//!
//! [`KvCaches`]: super::attention::KvCaches

use candle_core::{DType, IndexOp, Module, Result, Tensor};
use candle_nn::Linear;

use super::attention::{self, LayerCache, RmsNorm};
use super::qlinear::QLinear;
use super::trunk::{
    DecoderLayer, DecoderTrunk, GgufWeights, Heads, Step, TrunkShape, expect_architecture,
    vocab_size,
};
use model_runtime::{BackendError, GgufFile};

/// The architecture name in GGUF metadata.
pub const ARCHITECTURE: &str = "qwen3moe";

/// Hyper-parameters, from the GGUF metadata (`qwen3moe.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv_head: usize,
    /// Per-head width (`attention.key_length`; 128 for Qwen3-Coder, not hidden/heads = 64).
    pub head_dim: usize,
    /// Layers.
    pub n_layer: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Experts per layer.
    pub n_expert: usize,
    /// Experts used per token.
    pub n_expert_used: usize,
    /// Width of one expert's feed-forward.
    pub expert_ffn: usize,
    /// Renormalize the selected experts' weights to sum to one.
    pub norm_topk_prob: bool,
    /// RoPE base.
    pub rope_base: f64,
    /// RMS norm epsilon.
    pub rms_eps: f64,
    /// Positions the model was trained for.
    pub context_length: usize,
    /// Vocabulary size.
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
            ("num_experts", self.n_expert as u64),
            ("num_experts_per_tok", self.n_expert_used as u64),
            ("moe_intermediate_size", self.expert_ffn as u64),
            ("vocab_size", self.vocab as u64),
            ("max_position_embeddings", self.context_length as u64),
        ]
    }

    /// Reads the hyper-parameters of a qwen3moe GGUF.
    pub fn from_gguf(f: &GgufFile) -> std::result::Result<Self, BackendError> {
        expect_architecture(f, ARCHITECTURE)?;
        let k = |s: &str| format!("{ARCHITECTURE}.{s}");
        let n_head = f.usize(&k("attention.head_count"))?;
        let hidden = f.usize(&k("embedding_length"))?;
        let head_dim = f
            .optional(&k("attention.key_length"), GgufFile::usize)?
            .unwrap_or(hidden / n_head.max(1));
        let norm_topk_prob = match f.content.metadata.get(&k("expert_weights_norm")) {
            Some(v) => v.to_bool().map_err(|e| {
                BackendError::config(&f.path, model_runtime::error::without_backtrace(e))
            })?,
            // llama.cpp normalizes the top-k weights of qwen3moe unconditionally.
            None => true,
        };
        let vocab = vocab_size(f)?;
        Ok(Config {
            n_head,
            n_kv_head: f.usize(&k("attention.head_count_kv"))?,
            head_dim,
            n_layer: f.usize(&k("block_count"))?,
            hidden,
            n_expert: f.usize(&k("expert_count"))?,
            n_expert_used: f.usize(&k("expert_used_count"))?,
            expert_ffn: f.usize(&k("expert_feed_forward_length"))?,
            norm_topk_prob,
            rope_base: f
                .optional(&k("rope.freq_base"), GgufFile::f64)?
                .unwrap_or(10_000.0),
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

struct Expert {
    gate: QLinear,
    up: QLinear,
    down: QLinear,
}

struct Moe {
    router: Linear,
    experts: Vec<Expert>,
    top_k: usize,
    norm_topk_prob: bool,
}

impl Moe {
    /// `x`: `[tokens, hidden]`; `step` says how matrices are applied to the rows.
    fn forward(&self, x: &Tensor, step: &Step<'_>) -> Result<Tensor> {
        let n = x.dim(0)?;
        let logits = step.rows(x, |r| self.router.forward(r))?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let probs: Vec<Vec<f32>> = probs.to_vec2()?;
        // Per expert: the tokens routed to it and their weights.
        let mut routed: Vec<(Vec<u32>, Vec<f32>)> =
            vec![(Vec::new(), Vec::new()); self.experts.len()];
        for (t, p) in probs.iter().enumerate() {
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let top = &order[..self.top_k.min(order.len())];
            let sum: f32 = top.iter().map(|&e| p[e]).sum();
            for &e in top {
                let w = if self.norm_topk_prob {
                    p[e] / sum
                } else {
                    p[e]
                };
                routed[e].0.push(t as u32);
                routed[e].1.push(w);
            }
        }
        let mut out = x.zeros_like()?;
        for (e, (tokens, weights)) in routed.into_iter().enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let m = tokens.len();
            let idx = Tensor::from_vec(tokens, m, x.device())?;
            let xs = x.index_select(&idx, 0)?;
            let ex = &self.experts[e];
            let xs = xs.unsqueeze(0)?;
            let h = attention::swiglu(&step.linear(&ex.gate, &xs)?, &step.linear(&ex.up, &xs)?)?;
            let y = step.linear(&ex.down, &h)?.squeeze(0)?;
            let w = Tensor::from_vec(weights, (m, 1), x.device())?;
            out = out.index_add(&idx, &y.broadcast_mul(&w)?, 0)?;
        }
        debug_assert_eq!(out.dim(0)?, n);
        Ok(out)
    }
}

/// One Qwen3-MoE layer: attention with per-head query and key norms, then the experts.
pub struct Layer {
    attn_norm: RmsNorm,
    wq: QLinear,
    wk: QLinear,
    wv: QLinear,
    wo: QLinear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    ffn_norm: RmsNorm,
    moe: Moe,
}

/// A loaded Qwen3-MoE model. Immutable: share it between requests.
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
            rope_dim: config.head_dim,
            rope_base: config.rope_base,
            rms_eps: config.rms_eps,
            context_length: config.context_length,
            tied_embeddings: true,
        }
    }

    fn load(
        w: &mut GgufWeights<'_>,
        config: &Config,
        i: usize,
    ) -> std::result::Result<Self, BackendError> {
        let p = |s: &str| format!("blk.{i}.{s}");
        let device = w.device;
        let router = w
            .file
            .tensor(&p("ffn_gate_inp.weight"), device)?
            .dequantize(device)?
            .to_dtype(DType::F32)?;
        let gates = w.experts(&p("ffn_gate_exps.weight"))?;
        let ups = w.experts(&p("ffn_up_exps.weight"))?;
        let downs = w.experts(&p("ffn_down_exps.weight"))?;
        if gates.len() != config.n_expert || ups.len() != gates.len() || downs.len() != gates.len()
        {
            return Err(BackendError::config(
                &w.file.path,
                format!(
                    "layer {i}: expert tensors disagree with expert_count {}",
                    config.n_expert
                ),
            ));
        }
        let experts = gates
            .into_iter()
            .zip(ups)
            .zip(downs)
            .map(|((gate, up), down)| Expert { gate, up, down })
            .collect();
        Ok(Layer {
            attn_norm: w.norm(&p("attn_norm.weight"))?,
            wq: w.matmul(&p("attn_q.weight"))?,
            wk: w.matmul(&p("attn_k.weight"))?,
            wv: w.matmul(&p("attn_v.weight"))?,
            wo: w.matmul(&p("attn_output.weight"))?,
            q_norm: w.norm(&p("attn_q_norm.weight"))?,
            k_norm: w.norm(&p("attn_k_norm.weight"))?,
            ffn_norm: w.norm(&p("ffn_norm.weight"))?,
            moe: Moe {
                router: Linear::new(router, None),
                experts,
                top_k: config.n_expert_used,
                norm_topk_prob: config.norm_topk_prob,
            },
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
        let q = step.linear(&self.wq, &h)?;
        let k = step.linear(&self.wk, &h)?;
        let v = step.linear(&self.wv, &h)?;
        let heads = Heads {
            query: c.n_head,
            kv: c.n_kv_head,
            dim: c.head_dim,
        };
        // Per-head RMS norm of queries and keys (Qwen3), before RoPE.
        let norms = Some((&self.q_norm, &self.k_norm));
        let y = step.attention(heads, (&q, &k, &v), norms, caches)?;
        let x1 = (step.linear(&self.wo, &y)? + x)?;
        let h = self.ffn_norm.forward(&x1)?;
        let moe = self.moe.forward(&h.i(0)?, step)?.unsqueeze(0)?;
        moe + x1
    }
}
