//! The FLUX transformer's configuration: `transformer/config.json` as Diffusers ships it
//! (`FluxTransformer2DModel`), mapped onto candle-transformers' `flux::model::Config` (BFL
//! checkpoint naming). The pipeline around it (T5-XXL, CLIP-L, the autoencoder, the schnell
//! schedule) is the serving layer's.

use std::path::Path;

use candle_transformers::models::flux::model::Config as FluxConfig;
use model_runtime::BackendError;
use model_runtime::model_dir::read_json;
use serde::{Deserialize, Serialize};

/// FLUX.1-schnell is timestep-distilled for 1–4 steps.
pub const MAX_STEPS: u32 = 4;

/// `transformer/config.json` (Diffusers' `FluxTransformer2DModel`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TransformerConfig {
    /// Packed latent channels (16 latent channels × 2 × 2).
    pub in_channels: usize,
    /// Double-stream blocks.
    pub num_layers: usize,
    /// Single-stream blocks.
    pub num_single_layers: usize,
    /// Head size.
    pub attention_head_dim: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Size of the T5 context.
    pub joint_attention_dim: usize,
    /// Size of the pooled CLIP vector.
    pub pooled_projection_dim: usize,
    /// Whether the model takes a guidance input (FLUX.1-dev; schnell does not).
    #[serde(default)]
    pub guidance_embeds: bool,
    /// Rotary dimensions per position axis (they sum to the head size).
    #[serde(default = "axes")]
    pub axes_dims_rope: Vec<usize>,
    /// MLP width over hidden size (not in Diffusers' config: 4 for every FLUX model).
    #[serde(default = "four")]
    pub mlp_ratio: f64,
}

fn axes() -> Vec<usize> {
    vec![16, 56, 56]
}
fn four() -> f64 {
    4.0
}

impl TransformerConfig {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self, BackendError> {
        let c: TransformerConfig = read_json(path)?;
        c.candle().map_err(|m| BackendError::config(path, m))?;
        Ok(c)
    }

    /// Hidden size.
    pub fn hidden_size(&self) -> usize {
        self.attention_head_dim * self.num_attention_heads
    }

    /// candle's configuration.
    pub fn candle(&self) -> Result<FluxConfig, String> {
        let axes: usize = self.axes_dims_rope.iter().sum();
        if axes != self.attention_head_dim || self.axes_dims_rope.iter().any(|a| a % 2 == 1) {
            return Err(format!(
                "axes_dims_rope {:?} must be even and sum to attention_head_dim {}",
                self.axes_dims_rope, self.attention_head_dim
            ));
        }
        if self.in_channels != 64 {
            return Err(format!(
                "in_channels {} is not 64 (16 latent channels packed 2×2)",
                self.in_channels
            ));
        }
        Ok(FluxConfig {
            in_channels: self.in_channels,
            vec_in_dim: self.pooled_projection_dim,
            context_in_dim: self.joint_attention_dim,
            hidden_size: self.hidden_size(),
            mlp_ratio: self.mlp_ratio,
            num_heads: self.num_attention_heads,
            depth: self.num_layers,
            depth_single_blocks: self.num_single_layers,
            axes_dim: self.axes_dims_rope.clone(),
            theta: 10_000,
            qkv_bias: true,
            guidance_embed: self.guidance_embeds,
        })
    }

    /// The spec architecture values this config sets.
    pub fn spec_architecture(&self) -> Vec<(&'static str, toml::Value)> {
        let i = |v: usize| toml::Value::Integer(v as i64);
        vec![
            ("in_channels", i(self.in_channels)),
            ("vec_in_dim", i(self.pooled_projection_dim)),
            ("context_in_dim", i(self.joint_attention_dim)),
            ("hidden_size", i(self.hidden_size())),
            ("mlp_ratio", toml::Value::Float(self.mlp_ratio)),
            ("num_heads", i(self.num_attention_heads)),
            ("depth", i(self.num_layers)),
            ("depth_single_blocks", i(self.num_single_layers)),
            ("guidance_embed", toml::Value::Boolean(self.guidance_embeds)),
        ]
    }
}
