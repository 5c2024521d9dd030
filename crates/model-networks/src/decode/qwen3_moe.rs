//! Qwen3 mixture-of-experts decoder from GGUF (`general.architecture = qwen3moe`;
//! Qwen3-Coder-30B-A3B Q4_K_M is one).
//!
//! The network of candle's `quantized_qwen3_moe` (per-head q/k RMS norms, NeoX RoPE from
//! `rope.freq_base`, softmax router with top-k renormalized weights, SiLU experts), built from
//! candle's own pieces (`quantized_qwen3::RotaryEmbedding`, `QMatMul`, `repeat_kv`), but with
//! the changes serving needs:
//! * experts run on every device: candle's `FusedMoeGGUF` calls `moe_gemm_gguf`, which bails
//!   on anything but CUDA, so candle's model cannot run on a CPU at all. Here each expert's
//!   slice of the stacked `ffn_*_exps` tensors is its own quantized matrix (read straight from
//!   the file, same bytes), and tokens are gathered per selected expert;
//! * the weights are immutable and shared by concurrent requests, each request has its own
//!   [`KvCaches`] (candle's model keeps one concatenating cache inside and has no way to reset
//!   it, so a loaded model could serve exactly one request);
//! * the RoPE tables cover the configured context, not all 262 144 positions (268 MB).

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, Linear};
use candle_transformers::models::quantized_qwen3::RotaryEmbedding;

use super::attention::{self, KvCaches, RmsNorm};
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

    /// KV-cache bytes per token of context (F32 keys and values over all layers).
    pub fn kv_bytes_per_token(&self) -> u64 {
        (2 * self.n_layer * self.n_kv_head * self.head_dim * 4) as u64
    }
}

struct Expert {
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

struct Moe {
    router: Linear,
    experts: Vec<Expert>,
    top_k: usize,
    norm_topk_prob: bool,
}

impl Moe {
    /// `x`: `[tokens, hidden]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        let probs = candle_nn::ops::softmax_last_dim(&self.router.forward(x)?)?;
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
            let h = attention::swiglu(&ex.gate.forward(&xs)?, &ex.up.forward(&xs)?)?;
            let y = ex.down.forward(&h)?;
            let w = Tensor::from_vec(weights, (m, 1), x.device())?;
            out = out.index_add(&idx, &y.broadcast_mul(&w)?, 0)?;
        }
        debug_assert_eq!(out.dim(0)?, n);
        Ok(out)
    }
}

struct Layer {
    attn_norm: RmsNorm,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    ffn_norm: RmsNorm,
    moe: Moe,
}

/// A loaded Qwen3-MoE model. Immutable: share it between requests.
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
        let embed = f.tensor("token_embd.weight", device)?.dequantize(device)?;
        let embed = Embedding::new(embed, config.hidden);
        let output_norm = norm(f, "output_norm.weight")?;
        let output = if f.has("output.weight") {
            qmm(f, "output.weight")?
        } else {
            // Tied embeddings.
            qmm(f, "token_embd.weight")?
        };
        let mut layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            let router = f
                .tensor(&p("ffn_gate_inp.weight"), device)?
                .dequantize(device)?
                .to_dtype(DType::F32)?;
            let gates = f.split_experts(&p("ffn_gate_exps.weight"), device)?;
            let ups = f.split_experts(&p("ffn_up_exps.weight"), device)?;
            let downs = f.split_experts(&p("ffn_down_exps.weight"), device)?;
            if gates.len() != config.n_expert
                || ups.len() != gates.len()
                || downs.len() != gates.len()
            {
                return Err(BackendError::config(
                    &f.path,
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
                .map(|((g, u), d)| {
                    Ok(Expert {
                        gate: QMatMul::from_qtensor(g)?,
                        up: QMatMul::from_qtensor(u)?,
                        down: QMatMul::from_qtensor(d)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            layers.push(Layer {
                attn_norm: norm(f, &p("attn_norm.weight"))?,
                wq: qmm(f, &p("attn_q.weight"))?,
                wk: qmm(f, &p("attn_k.weight"))?,
                wv: qmm(f, &p("attn_v.weight"))?,
                wo: qmm(f, &p("attn_output.weight"))?,
                q_norm: norm(f, &p("attn_q_norm.weight"))?,
                k_norm: norm(f, &p("attn_k_norm.weight"))?,
                ffn_norm: norm(f, &p("ffn_norm.weight"))?,
                moe: Moe {
                    router: Linear::new(router, None),
                    experts,
                    top_k: config.n_expert_used,
                    norm_topk_prob: config.norm_topk_prob,
                },
            });
        }
        let rope = RotaryEmbedding::new(
            DType::F32,
            config.head_dim,
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
        for (i, layer) in self.layers.iter().enumerate() {
            let residual = &x;
            let h = layer.attn_norm.forward(&x)?;
            let heads = |t: Tensor, n: usize| -> Result<Tensor> {
                t.reshape((1, len, n, c.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = heads(layer.wq.forward(&h)?, c.n_head)?;
            let k = heads(layer.wk.forward(&h)?, c.n_kv_head)?;
            let v = heads(layer.wv.forward(&h)?, c.n_kv_head)?;
            // Per-head RMS norm of queries and keys (Qwen3), before RoPE.
            let q = layer.q_norm.forward(&q)?;
            let k = layer.k_norm.forward(&k)?;
            let (q, k) = self.rope.apply(&q, &k, offset)?;
            let y = attention::attend(&q, &k, &v, cache.layer(i), mask.as_ref())?;
            let x1 = (layer.wo.forward(&y)? + residual)?;
            let h = layer.ffn_norm.forward(&x1)?;
            let moe = layer.moe.forward(&h.i(0)?)?.unsqueeze(0)?;
            x = (moe + x1)?;
        }
        cache.advance(len);
        let last = x.narrow(1, len - 1, 1)?;
        let logits = self.output.forward(&self.output_norm.forward(&last)?)?;
        attention::last_position(&logits)
    }
}
