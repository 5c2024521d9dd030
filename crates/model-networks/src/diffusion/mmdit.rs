//! The MMDiT of Stable Diffusion 3.5 (Stability's single-file naming under
//! `model.diffusion_model.`) and its configuration.
//!
//! candle's `mmdit::model::MMDiT` computes the timestep embedding in F16 whatever the weights'
//! dtype, so it only runs F16 weights; the network is assembled here from candle's own public
//! blocks (`MMDiTCore`, the patch, position and vector embedders) with a timestep embedder
//! that follows the weights' dtype, which is what lets it run in F32 on a CPU and in BF16 on
//! a GPU as the run profile says.

use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::mmdit::embedding::{
    PatchEmbedder, PositionEmbedder, Unpatchifier, VectorEmbedder,
};
use candle_transformers::models::mmdit::model::MMDiTCore;
use model_runtime::BackendError;
use model_runtime::model_dir::read_json;
use serde::{Deserialize, Serialize};

/// SD3.5 Large Turbo is distilled for 4 steps; fewer work, more do not help.
pub const MAX_STEPS: u32 = 4;
/// The schedule shift of SD3.5 when the checkpoint has no `scheduler/scheduler_config.json`.
pub const DEFAULT_SHIFT: f64 = 3.0;

/// `transformer/config.json` (Diffusers' `SD3Transformer2DModel`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TransformerConfig {
    /// Latent patch size (2).
    pub patch_size: usize,
    /// Latent channels (16).
    pub in_channels: usize,
    /// Output channels (16).
    pub out_channels: usize,
    /// Joint blocks.
    pub num_layers: usize,
    /// Head size.
    pub attention_head_dim: usize,
    /// Heads (candle ties them to the block count, as every SD3 model has them).
    pub num_attention_heads: usize,
    /// Size of the joint text context (T5's hidden size).
    pub joint_attention_dim: usize,
    /// Width of the projected context (the hidden size).
    pub caption_projection_dim: usize,
    /// Size of the pooled CLIP-L + bigG vector.
    pub pooled_projection_dim: usize,
    /// Side of the learned position-embedding grid, in patches.
    pub pos_embed_max_size: usize,
    /// `"rms_norm"` for SD3.5.
    #[serde(default)]
    pub qk_norm: Option<String>,
    /// MMDiT-X layers (SD3.5 Medium); none for Large.
    #[serde(default)]
    pub dual_attention_layers: Vec<usize>,
}

impl TransformerConfig {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self, BackendError> {
        let c: TransformerConfig = read_json(path)?;
        c.check().map_err(|m| BackendError::config(path, m))?;
        Ok(c)
    }

    /// Hidden size.
    pub fn hidden_size(&self) -> usize {
        self.attention_head_dim * self.num_attention_heads
    }

    fn check(&self) -> Result<(), String> {
        if self.num_attention_heads != self.num_layers {
            return Err(format!(
                "num_attention_heads {} differs from num_layers {}; candle's MMDiT ties them",
                self.num_attention_heads, self.num_layers
            ));
        }
        if self.caption_projection_dim != self.hidden_size() {
            return Err(format!(
                "caption_projection_dim {} is not the hidden size {}",
                self.caption_projection_dim,
                self.hidden_size()
            ));
        }
        if self.in_channels != 16 || self.num_layers < 1 {
            return Err(format!(
                "in_channels {} (16 expected) or num_layers {} is not supported",
                self.in_channels, self.num_layers
            ));
        }
        Ok(())
    }

    /// Largest image side the position embedding covers, in pixels.
    pub fn max_side(&self) -> u32 {
        Self::side(self.pos_embed_max_size as u64, self.patch_size as u64)
    }

    /// Largest image side a `pos`-patch grid of `patch`-sized patches covers: the latents are
    /// 1/8 of the image.
    pub fn side(pos: u64, patch: u64) -> u32 {
        (pos * patch * 8).min(u64::from(u32::MAX)) as u32
    }

    /// The spec architecture values this config sets.
    pub fn spec_architecture(&self) -> Vec<(&'static str, toml::Value)> {
        let i = |v: usize| toml::Value::Integer(v as i64);
        vec![
            ("patch_size", i(self.patch_size)),
            ("in_channels", i(self.in_channels)),
            ("out_channels", i(self.out_channels)),
            ("num_layers", i(self.num_layers)),
            ("attention_head_dim", i(self.attention_head_dim)),
            ("num_attention_heads", i(self.num_attention_heads)),
            ("joint_attention_dim", i(self.joint_attention_dim)),
            ("caption_projection_dim", i(self.caption_projection_dim)),
            ("pooled_projection_dim", i(self.pooled_projection_dim)),
            ("pos_embed_max_size", i(self.pos_embed_max_size)),
            ("qk_norm", toml::Value::Boolean(self.qk_norm.is_some())),
        ]
    }
}

/// The MMDiT, from candle's blocks.
pub struct Mmdit {
    core: MMDiTCore,
    patch_embedder: PatchEmbedder,
    pos_embedder: PositionEmbedder,
    t_mlp0: Linear,
    t_mlp2: Linear,
    y_embedder: VectorEmbedder,
    context_embedder: Linear,
    unpatchifier: Unpatchifier,
}

// SAFETY: candle's MMDiT blocks hold their layers as `Box<dyn JointBlock>` and
// `nn::Sequential` (`Vec<Box<dyn Module>>`), trait objects without `Send`/`Sync` bounds, so
// the compiler cannot see through them. The objects behind them are built inside candle from
// `Linear`, `Conv2d`, `RmsNorm` and `Activation` values only: plain data around `Tensor`s
// (`Arc`-shared, lock-protected storage), read-only in `forward(&self)`. Moving the network to
// another thread or running it from several is therefore as safe as for any candle module.
unsafe impl Send for Mmdit {}
unsafe impl Sync for Mmdit {}

/// Frequencies of the sinusoidal timestep embedding (as in candle's `TimestepEmbedder`).
const FREQUENCY_EMBEDDING_SIZE: usize = 256;

impl Mmdit {
    /// Loads the network from `vb` (already under `model.diffusion_model`).
    pub fn load(c: &TransformerConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let hidden = c.hidden_size();
        Ok(Mmdit {
            core: MMDiTCore::new(
                c.num_layers,
                hidden,
                c.num_attention_heads,
                c.patch_size,
                c.out_channels,
                false,
                vb.clone(),
            )?,
            patch_embedder: PatchEmbedder::new(
                c.patch_size,
                c.in_channels,
                hidden,
                vb.pp("x_embedder"),
            )?,
            pos_embedder: PositionEmbedder::new(
                hidden,
                c.patch_size,
                c.pos_embed_max_size,
                vb.clone(),
            )?,
            t_mlp0: candle_nn::linear(FREQUENCY_EMBEDDING_SIZE, hidden, vb.pp("t_embedder.mlp.0"))?,
            t_mlp2: candle_nn::linear(hidden, hidden, vb.pp("t_embedder.mlp.2"))?,
            y_embedder: VectorEmbedder::new(c.pooled_projection_dim, hidden, vb.pp("y_embedder"))?,
            context_embedder: candle_nn::linear(
                c.joint_attention_dim,
                hidden,
                vb.pp("context_embedder"),
            )?,
            unpatchifier: Unpatchifier::new(c.patch_size, c.out_channels)?,
        })
    }

    /// The velocity at timestep `t` (1000·σ) for latents `x` `(1, 16, h, w)`, pooled vector
    /// `y` and context.
    pub fn forward(
        &self,
        x: &Tensor,
        t: f64,
        y: &Tensor,
        context: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (h, w) = (x.dim(D::Minus2)?, x.dim(D::Minus1)?);
        let pos = self.pos_embedder.get_cropped_pos_embed(h, w)?;
        let xs = self.patch_embedder.forward(x)?.broadcast_add(&pos)?;
        let c = (self.timestep(t, x.dtype(), x.device())? + self.y_embedder.forward(y)?)?;
        let context = self.context_embedder.forward(context)?;
        let xs = self.core.forward(&context, &xs, &c, None)?;
        let xs = self.unpatchifier.unpatchify(&xs, h, w)?;
        xs.narrow(2, 0, h)?.narrow(3, 0, w)
    }

    fn timestep(&self, t: f64, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let half = FREQUENCY_EMBEDDING_SIZE / 2;
        let args: Vec<f32> = (0..half)
            .map(|i| (t * (-(10_000f64.ln()) * i as f64 / half as f64).exp()) as f32)
            .collect();
        let embedding: Vec<f32> = args
            .iter()
            .map(|a| a.cos())
            .chain(args.iter().map(|a| a.sin()))
            .collect();
        let emb =
            Tensor::from_vec(embedding, (1, FREQUENCY_EMBEDDING_SIZE), device)?.to_dtype(dtype)?;
        self.t_mlp2.forward(&self.t_mlp0.forward(&emb)?.silu()?)
    }
}
