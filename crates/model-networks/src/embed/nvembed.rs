//! NV-Embed-v2: a Mistral decoder with its causal mask removed (bidirectional attention over
//! the real tokens), then latent-attention pooling: the token states attend to a learned set of
//! latents, pass a GEGLU feed-forward, and are mean-pooled over the text (instruction tokens
//! excluded).
//!
//! candle-transformers' `nvembed_v2` hard-codes the 7B geometry (4096 wide, 512 latents, 8
//! heads) and its mask helper panics for f16/bf16, the dtype NV-Embed ships in; this module
//! reads every size from the checkpoint's `config.json` and runs in any float dtype. Tensor
//! names are the checkpoint's (`embedding_model.*`, `latent_attention_model.*`).
//!
//! Two networks run the decoder, as for BERT ([`Backend`]): [`Backend::Kernels`]
//! ([`encoder_kernels::qwen2`], rows end to end without padding; f32 on the CPU only) and
//! [`Backend::Candle`] (this module's layers, any dtype and device). The pooling block is
//! candle's in both. Its keys and values come from the latents alone, so they are computed
//! once at load rather than for every input, and the `to_kv` weight is not kept.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Activation, LayerNorm, Linear, RmsNorm, VarBuilder, linear_no_bias};
use candle_transformers::utils::repeat_kv;
use serde::Deserialize;

use super::bert::{Backend, Network};
use super::qwen2::Body;
use super::text::TextRules;
use super::{Batch, Net, Parts, defaults, mean_pool, padded_tokens};
use model_runtime::safetensors::var_builder;
use model_runtime::{BackendError, ModelDir};

/// `config.json` of an NV-Embed checkpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    /// The Mistral decoder.
    pub text_config: TextConfig,
    /// The pooling block.
    #[serde(default)]
    pub latent_attention_config: LatentConfig,
    /// Whether `</s>` is appended to every input.
    #[serde(default = "defaults::yes")]
    pub add_eos: bool,
}

/// `text_config` (Mistral).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TextConfig {
    #[serde(default = "vocab")]
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    #[serde(default = "defaults::f64_1e_5")]
    pub rms_norm_eps: f64,
    #[serde(default = "rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "defaults::silu")]
    pub hidden_act: Activation,
    #[serde(default = "eos")]
    pub eos_token_id: u32,
}

/// `latent_attention_config` (defaults are NV-Embed's `LatentAttentionConfig` defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct LatentConfig {
    pub num_latents_value: usize,
    pub num_cross_heads: usize,
    pub latent_dim: usize,
    pub cross_dim_head: usize,
    pub hidden_dim: usize,
}

impl Default for LatentConfig {
    fn default() -> Self {
        LatentConfig {
            num_latents_value: 512,
            num_cross_heads: 8,
            latent_dim: 4096,
            cross_dim_head: 4096,
            hidden_dim: 4096,
        }
    }
}

fn vocab() -> usize {
    32000
}
fn rope_theta() -> f64 {
    10_000.0
}
fn eos() -> u32 {
    2
}

/// Feed-forward width multiplier of the latent block (fixed in NV-Embed's code).
const FF_MULT: usize = 4;

impl Config {
    /// Reads `config.json` and checks that the pooling block fits the decoder.
    pub fn read(dir: &ModelDir) -> Result<Self, BackendError> {
        let c: Config = dir.json("config.json", "the NV-Embed configuration")?;
        let h = c.text_config.hidden_size;
        let l = &c.latent_attention_config;
        if l.latent_dim != h || l.hidden_dim != h {
            return Err(BackendError::config(
                dir.root().join("config.json"),
                format!(
                    "latent_dim {} and hidden_dim {} must equal text_config.hidden_size {h}",
                    l.latent_dim, l.hidden_dim
                ),
            ));
        }
        Ok(c)
    }

    fn kv_heads(&self) -> usize {
        self.text_config
            .num_key_value_heads
            .unwrap_or(self.text_config.num_attention_heads)
    }

    fn head_dim(&self) -> usize {
        self.text_config
            .head_dim
            .unwrap_or(self.text_config.hidden_size / self.text_config.num_attention_heads)
    }

    /// The decoder's sizes for the kernels (Mistral: no query/key/value biases).
    fn body(&self) -> Body {
        let t = &self.text_config;
        Body {
            vocab: t.vocab_size,
            hidden: t.hidden_size,
            heads: t.num_attention_heads,
            kv_heads: self.kv_heads(),
            head_dim: self.head_dim(),
            intermediate: t.intermediate_size,
            layers: t.num_hidden_layers,
            rope_theta: t.rope_theta,
            eps: t.rms_norm_eps,
            act: t.hidden_act,
            qkv_bias: false,
        }
    }

    /// The architecture values the memory estimator reads.
    pub fn spec_architecture(&self) -> Vec<(&'static str, u64)> {
        let t = &self.text_config;
        let l = &self.latent_attention_config;
        vec![
            ("hidden_size", t.hidden_size as u64),
            ("num_hidden_layers", t.num_hidden_layers as u64),
            ("num_attention_heads", t.num_attention_heads as u64),
            ("num_key_value_heads", self.kv_heads() as u64),
            ("head_dim", self.head_dim() as u64),
            ("intermediate_size", t.intermediate_size as u64),
            ("vocab_size", t.vocab_size as u64),
            ("max_position_embeddings", t.max_position_embeddings as u64),
            ("num_latents", l.num_latents_value as u64),
            ("latent_heads", l.num_cross_heads as u64),
            ("latent_dim_head", l.cross_dim_head as u64),
            ("latent_ff_mult", FF_MULT as u64),
        ]
    }
}

/// Rotary tables for the positions an input can reach.
struct Rotary {
    sin: Tensor,
    cos: Tensor,
}

impl Rotary {
    fn new(
        head_dim: usize,
        positions: usize,
        theta: f64,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let inv: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| (1.0 / theta.powf(i as f64 / head_dim as f64)) as f32)
            .collect();
        let n = inv.len();
        let inv = Tensor::from_vec(inv, (1, n), device)?;
        let t = Tensor::arange(0u32, positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?;
        let freqs = t.matmul(&inv)?;
        Ok(Rotary {
            sin: freqs.sin()?.to_dtype(dtype)?,
            cos: freqs.cos()?.to_dtype(dtype)?,
        })
    }

    fn apply(&self, q: &Tensor, k: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let len = q.dim(2)?;
        let (cos, sin) = (self.cos.narrow(0, 0, len)?, self.sin.narrow(0, 0, len)?);
        Ok((
            candle_nn::rotary_emb::rope(q, &cos, &sin)?,
            candle_nn::rotary_emb::rope(k, &cos, &sin)?,
        ))
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(c: &Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let (h, heads, kv, hd) = (
            c.text_config.hidden_size,
            c.text_config.num_attention_heads,
            c.kv_heads(),
            c.head_dim(),
        );
        Ok(Attention {
            q: linear_no_bias(h, heads * hd, vb.pp("q_proj"))?,
            k: linear_no_bias(h, kv * hd, vb.pp("k_proj"))?,
            v: linear_no_bias(h, kv * hd, vb.pp("v_proj"))?,
            o: linear_no_bias(heads * hd, h, vb.pp("o_proj"))?,
            heads,
            kv_heads: kv,
            head_dim: hd,
        })
    }

    /// `mask` is additive, `[b, 1, 1, l]`: 0 for real keys, −∞ for padding.
    fn forward(&self, xs: &Tensor, mask: &Tensor, rotary: &Rotary) -> candle_core::Result<Tensor> {
        let (b, l, _) = xs.dims3()?;
        let split = |t: Tensor, n: usize| {
            t.reshape((b, l, n, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(xs.apply(&self.q)?, self.heads)?;
        let k = split(xs.apply(&self.k)?, self.kv_heads)?;
        let v = split(xs.apply(&self.v)?, self.kv_heads)?;
        let (q, k) = rotary.apply(&q, &k)?;
        let groups = self.heads / self.kv_heads;
        let k = repeat_kv(k, groups)?.contiguous()?;
        let v = repeat_kv(v, groups)?.contiguous()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, l, self.heads * self.head_dim))?
            .apply(&self.o)
    }
}

struct Layer {
    attention: Attention,
    gate: Linear,
    up: Linear,
    down: Linear,
    act: Activation,
    input_norm: RmsNorm,
    post_norm: RmsNorm,
}

impl Layer {
    fn new(c: &Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let t = &c.text_config;
        let (h, i) = (t.hidden_size, t.intermediate_size);
        Ok(Layer {
            attention: Attention::new(c, vb.pp("self_attn"))?,
            gate: linear_no_bias(h, i, vb.pp("mlp.gate_proj"))?,
            up: linear_no_bias(h, i, vb.pp("mlp.up_proj"))?,
            down: linear_no_bias(i, h, vb.pp("mlp.down_proj"))?,
            act: t.hidden_act,
            input_norm: candle_nn::rms_norm(h, t.rms_norm_eps, vb.pp("input_layernorm"))?,
            post_norm: candle_nn::rms_norm(h, t.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor, rotary: &Rotary) -> candle_core::Result<Tensor> {
        let attended = (self
            .attention
            .forward(&xs.apply(&self.input_norm)?, mask, rotary)?
            + xs)?;
        let normed = attended.apply(&self.post_norm)?;
        let ff = (normed.apply(&self.gate)?.apply(&self.act)? * normed.apply(&self.up)?)?
            .apply(&self.down)?;
        ff + attended
    }
}

/// The latent-attention pooling block.
struct LatentPooling {
    norm: LayerNorm,
    to_q: Linear,
    /// Keys and values of the latents, `[1, heads, latents, dim_head]` each, in f32.
    keys: Tensor,
    values: Tensor,
    to_out: Linear,
    heads: usize,
    dim_head: usize,
    ff_norm: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl LatentPooling {
    fn new(c: &Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let l = &c.latent_attention_config;
        let h = c.text_config.hidden_size;
        let inner = l.num_cross_heads * l.cross_dim_head;
        let ln = candle_nn::LayerNormConfig::default();
        let attn = vb.pp("cross_attend_blocks.0");
        let ff = vb.pp("cross_attend_blocks.1");
        // The context is the latents alone: its keys and values are the same for every
        // input.
        let latents = vb.get((l.num_latents_value, l.latent_dim), "latents")?;
        let norm_context = candle_nn::layer_norm(l.hidden_dim, ln, attn.pp("norm_context"))?;
        let to_kv = linear_no_bias(l.hidden_dim, 2 * inner, attn.pp("fn.to_kv"))?;
        let kv = latents.apply(&norm_context)?.apply(&to_kv)?;
        let heads = |t: Tensor| {
            t.reshape((1, l.num_latents_value, l.num_cross_heads, l.cross_dim_head))?
                .transpose(1, 2)?
                .to_dtype(DType::F32)?
                .contiguous()
        };
        Ok(LatentPooling {
            norm: candle_nn::layer_norm(h, ln, attn.pp("norm"))?,
            to_q: linear_no_bias(h, inner, attn.pp("fn.to_q"))?,
            keys: heads(kv.narrow(1, 0, inner)?)?,
            values: heads(kv.narrow(1, inner, inner)?)?,
            to_out: linear_no_bias(inner, h, attn.pp("fn.to_out"))?,
            heads: l.num_cross_heads,
            dim_head: l.cross_dim_head,
            ff_norm: candle_nn::layer_norm(h, ln, ff.pp("norm"))?,
            ff_in: candle_nn::linear(h, 2 * FF_MULT * h, ff.pp("fn.net.0"))?,
            ff_out: candle_nn::linear(FF_MULT * h, h, ff.pp("fn.net.2"))?,
        })
    }

    /// Token states `[b, l, h]` → pooled `[b, h]` over `pool_mask`.
    fn forward(&self, hidden: &Tensor, pool_mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, l, _) = hidden.dims3()?;
        let q = hidden.apply(&self.norm)?.apply(&self.to_q)?;
        // Attention in f32, as NV-Embed's and candle's implementations do, whatever the dtype.
        let dtype = hidden.dtype();
        let q = q
            .reshape((b, l, self.heads, self.dim_head))?
            .transpose(1, 2)?
            .to_dtype(DType::F32)?
            .contiguous()?;
        let scale = 1.0 / (self.dim_head as f64).sqrt();
        let scores = q.broadcast_matmul(&self.keys.t()?)?;
        let probs = candle_nn::ops::softmax_last_dim(&(scores * scale)?)?;
        let attended = probs
            .broadcast_matmul(&self.values)?
            .to_dtype(dtype)?
            .transpose(1, 2)?
            .reshape((b, l, self.heads * self.dim_head))?;
        let x = (attended.apply(&self.to_out)? + hidden)?;
        let gated = x
            .apply(&self.ff_norm)?
            .apply(&self.ff_in)?
            .chunk(2, D::Minus1)?;
        let ff = (&gated[0] * gated[1].gelu_erf()?)?.apply(&self.ff_out)?;
        mean_pool(&(ff + x)?, pool_mask)
    }
}

/// candle's decoder: embeddings, layers, final norm.
struct Decoder {
    embed_tokens: candle_nn::Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    rotary: Rotary,
    dtype: DType,
}

impl Decoder {
    fn new(c: &Config, em: VarBuilder, positions: usize) -> candle_core::Result<Self> {
        let t = &c.text_config;
        let layers = (0..t.num_hidden_layers)
            .map(|i| Layer::new(c, em.pp(format!("layers.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Decoder {
            embed_tokens: candle_nn::embedding(t.vocab_size, t.hidden_size, em.pp("embed_tokens"))?,
            layers,
            norm: candle_nn::rms_norm(t.hidden_size, t.rms_norm_eps, em.pp("norm"))?,
            rotary: Rotary::new(
                c.head_dim(),
                positions,
                t.rope_theta,
                em.dtype(),
                em.device(),
            )?,
            dtype: em.dtype(),
        })
    }

    /// Final-normed token states `[b, l, hidden]` of a padded batch.
    fn forward(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        let (b, l) = batch.ids.dims2()?;
        let device = batch.ids.device();
        // Bidirectional: every token sees every real token of its row, never padding.
        let keys = batch.mask.reshape((b, 1, 1, l))?;
        let zero = Tensor::zeros((b, 1, 1, l), self.dtype, device)?;
        let blocked =
            Tensor::full(f32::NEG_INFINITY, (b, 1, 1, l), device)?.to_dtype(self.dtype)?;
        let mask = keys.where_cond(&zero, &blocked)?;
        let mut xs = self.embed_tokens.forward(&batch.ids)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &mask, &self.rotary)?;
        }
        xs.apply(&self.norm)
    }
}

/// NV-Embed: bidirectional decoder + latent-attention pooling.
pub struct Model {
    network: Network<Box<encoder_kernels::qwen2::Encoder>, Decoder>,
    pooling: LatentPooling,
    dtype: DType,
    dim: usize,
    eos: Option<u32>,
}

impl Model {
    /// Loads the decoder for the best backend, for inputs of up to `limit` tokens.
    pub fn load(
        dir: &ModelDir,
        limit: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, BackendError> {
        let kernels_can = Config::read(dir)?.body().kernels_refuse().is_none();
        Self::load_with(
            dir,
            limit,
            dtype,
            device,
            Backend::best(kernels_can, dtype, device),
        )
    }

    /// Loads every shard (`model.safetensors.index.json`) in `dtype` for `backend`, with
    /// rotary tables for `limit` positions.
    pub fn load_with(
        dir: &ModelDir,
        limit: usize,
        dtype: DType,
        device: &Device,
        backend: Backend,
    ) -> Result<Self, BackendError> {
        let c = Config::read(dir)?;
        let t = &c.text_config;
        let vb = var_builder(&dir.safetensors("")?, dtype, device)?;
        let em = vb.pp("embedding_model");
        let positions = limit.min(t.max_position_embeddings).max(1);
        let network = match backend {
            Backend::Kernels => Network::Kernels(Box::new(super::qwen2::kernel_body(
                dir,
                Ok(c.body()),
                &em,
                positions,
            )?)),
            Backend::Candle => Network::Candle(Decoder::new(&c, em, positions)?),
        };
        Ok(Model {
            network,
            pooling: LatentPooling::new(&c, vb.pp("latent_attention_model"))?,
            dtype,
            dim: t.hidden_size,
            eos: c.add_eos.then_some(t.eos_token_id),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.network.backend()
    }

    /// Pooled embeddings `[batch, hidden]`.
    pub fn forward(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        let hidden = match &self.network {
            Network::Kernels(decoder) => {
                let (tokens, spans) = super::qwen2::kernel_tokens(decoder, batch)?;
                padded_tokens(&tokens, &spans, batch.ids.dim(1)?, batch.ids.device())?
            }
            Network::Candle(decoder) => decoder.forward(batch)?,
        };
        self.pooling
            .forward(&hidden, &batch.pool_mask.to_dtype(self.dtype)?)
    }

    pub(crate) fn into_parts(self) -> Parts {
        let rules = TextRules {
            query_instruction: None,
            skip_instruction_in_pooling: true,
            append_eos: self.eos,
            default_pad_id: self.eos.unwrap_or(0),
        };
        let dim = self.dim;
        Parts::new(Net::NvEmbed(self), usize::MAX, dim, rules)
    }
}
