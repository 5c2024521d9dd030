//! CLIP text towers (CLIP-L, OpenCLIP bigG) as the diffusion pipelines use them: the
//! penultimate layer's hidden states (SD3's context), and the final-normalised state at the
//! end token, optionally projected (SD3's pooled vector; FLUX's `vec`).
//!
//! Written here rather than taken from candle-transformers: `clip::text_model` only knows the
//! quick-GELU activation (bigG uses GELU) and hides its layers, and
//! `stable_diffusion::clip::Config` cannot be built for any geometry other than its presets,
//! which the tiny test checkpoints need.

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use model_runtime::BackendError;
use model_runtime::model_dir::read_json;

/// A CLIP text `config.json` (Transformers' `CLIPTextConfig`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Feed-forward size.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Positions (77).
    #[serde(default = "seventy_seven")]
    pub max_position_embeddings: usize,
    /// `quick_gelu` (CLIP-L), `gelu` (bigG, exact erf form) or `gelu_new`.
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    /// Layer-norm epsilon.
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    /// Output size of `text_projection` (checkpoints without one ignore it).
    #[serde(default)]
    pub projection_dim: Option<usize>,
}

fn seventy_seven() -> usize {
    77
}
fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn eps() -> f64 {
    1e-5
}

impl Config {
    /// Reads `path`.
    pub fn read(path: &std::path::Path) -> Result<Self, BackendError> {
        let c: Config = read_json(path)?;
        Activation::parse(&c.hidden_act).map_err(|m| BackendError::config(path, m))?;
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(BackendError::config(
                path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    c.hidden_size, c.num_attention_heads
                ),
            ));
        }
        Ok(c)
    }

    /// The spec architecture values this config sets.
    pub fn spec_architecture(&self) -> Vec<(&'static str, toml::Value)> {
        let i = |v: usize| toml::Value::Integer(v as i64);
        vec![
            ("hidden_size", i(self.hidden_size)),
            ("num_hidden_layers", i(self.num_hidden_layers)),
            ("num_attention_heads", i(self.num_attention_heads)),
            ("intermediate_size", i(self.intermediate_size)),
            ("vocab_size", i(self.vocab_size)),
            ("max_position_embeddings", i(self.max_position_embeddings)),
            (
                "projection_dim",
                i(self.projection_dim.unwrap_or(self.hidden_size)),
            ),
        ]
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    QuickGelu,
    GeluErf,
    GeluTanh,
}

impl Activation {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            other => Err(format!(
                "hidden_act `{other}` is not quick_gelu, gelu or gelu_new"
            )),
        }
    }

    fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702f64)?)?,
            Activation::GeluErf => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
        }
    }
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ln2: LayerNorm,
}

/// The outputs the pipelines use.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// Hidden states after the second-to-last layer, `(1, seq, hidden)`.
    pub penultimate: Tensor,
    /// The final-normalised state at the end token, projected when the tower has a
    /// projection: `(1, hidden or projection_dim)`.
    pub pooled: Tensor,
}

/// One CLIP text tower.
pub struct ClipText {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<Layer>,
    final_layer_norm: LayerNorm,
    projection: Option<Linear>,
    heads: usize,
    activation: Activation,
    positions: usize,
}

impl ClipText {
    /// Loads `text_model.*` (and `text_projection` when `projected`) from `vb`.
    pub fn load(config: &Config, vb: VarBuilder, projected: bool) -> candle_core::Result<Self> {
        let c = config;
        let (h, eps) = (c.hidden_size, c.layer_norm_eps);
        let activation = Activation::parse(&c.hidden_act).map_err(candle_core::Error::msg)?;
        let projection = if projected {
            let out = c.projection_dim.unwrap_or(h);
            Some(candle_nn::linear_no_bias(h, out, vb.pp("text_projection"))?)
        } else {
            None
        };
        let vb = vb.pp("text_model");
        let emb = vb.pp("embeddings");
        let token_embedding = candle_nn::embedding(c.vocab_size, h, emb.pp("token_embedding"))?;
        let position_embedding =
            candle_nn::embedding(c.max_position_embeddings, h, emb.pp("position_embedding"))?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layers.{i}"));
                let a = l.pp("self_attn");
                Ok(Layer {
                    q: candle_nn::linear(h, h, a.pp("q_proj"))?,
                    k: candle_nn::linear(h, h, a.pp("k_proj"))?,
                    v: candle_nn::linear(h, h, a.pp("v_proj"))?,
                    out: candle_nn::linear(h, h, a.pp("out_proj"))?,
                    ln1: candle_nn::layer_norm(h, eps, l.pp("layer_norm1"))?,
                    fc1: candle_nn::linear(h, c.intermediate_size, l.pp("mlp.fc1"))?,
                    fc2: candle_nn::linear(c.intermediate_size, h, l.pp("mlp.fc2"))?,
                    ln2: candle_nn::layer_norm(h, eps, l.pp("layer_norm2"))?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let final_layer_norm = candle_nn::layer_norm(h, eps, vb.pp("final_layer_norm"))?;
        Ok(ClipText {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            projection,
            heads: c.num_attention_heads,
            activation,
            positions: c.max_position_embeddings,
        })
    }

    /// Runs `ids` (one sequence, at most `max_position_embeddings` long) and pools at `eos`.
    pub fn forward(
        &self,
        ids: &[u32],
        eos: usize,
        device: &Device,
    ) -> candle_core::Result<ClipOutput> {
        let seq = ids.len();
        if seq > self.positions || eos >= seq || self.layers.len() < 2 {
            candle_core::bail!(
                "CLIP text input of {seq} tokens (end at {eos}) for {} positions and {} layers",
                self.positions,
                self.layers.len()
            );
        }
        let ids = Tensor::new(ids, device)?.unsqueeze(0)?;
        let positions = Tensor::arange(0u32, seq as u32, device)?.unsqueeze(0)?;
        let mut xs =
            (self.token_embedding.forward(&ids)? + self.position_embedding.forward(&positions)?)?;
        let mask = causal_mask(seq, xs.dtype(), device)?;
        let mut penultimate = None;
        for (i, layer) in self.layers.iter().enumerate() {
            xs = self.layer(layer, &xs, &mask)?;
            if i + 2 == self.layers.len() {
                penultimate = Some(xs.clone());
            }
        }
        let last = self.final_layer_norm.forward(&xs)?;
        let mut pooled = last.i((.., eos, ..))?;
        if let Some(p) = &self.projection {
            pooled = p.forward(&pooled)?;
        }
        Ok(ClipOutput {
            penultimate: penultimate.unwrap_or(xs),
            pooled,
        })
    }

    fn layer(&self, l: &Layer, xs: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, h) = xs.dims3()?;
        let hd = h / self.heads;
        let residual = xs;
        let x = l.ln1.forward(xs)?;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, s, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((l.q.forward(&x)? * (hd as f64).powf(-0.5))?)?;
        let k = split(l.k.forward(&x)?)?;
        let v = split(l.v.forward(&x)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let attn = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
        let xs = (residual + l.out.forward(&attn)?)?;
        let x = l.ln2.forward(&xs)?;
        let x = l
            .fc2
            .forward(&self.activation.apply(&l.fc1.forward(&x)?)?)?;
        xs + x
    }
}

/// `(seq, seq)` with `-inf` above the diagonal.
fn causal_mask(seq: usize, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (seq, seq), device)?.to_dtype(dtype)
}
