//! The 16-channel KL autoencoder of FLUX and SD3.
//!
//! Both checkpoints store it with the same (LDM/BFL) tensor names and the same architecture
//! (`ch` 128, `ch_mult` [1, 2, 4, 4], no quant convs); they differ only in how latents are
//! scaled (FLUX 0.3611 / shift 0.1159, SD3 1.5305 / 0.0609). So SD3's VAE — which candle keeps
//! in its example — is candle's `flux::autoencoder` configured from the checkpoint's
//! `vae/config.json` (Diffusers' `AutoencoderKL`).

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::flux::autoencoder;
use serde::{Deserialize, Serialize};

use model_runtime::BackendError;
use model_runtime::model_dir::read_json;

/// `vae/config.json`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct VaeConfig {
    /// Image channels in.
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "three")]
    pub out_channels: usize,
    /// Channels per resolution level (`ch × ch_mult`).
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per level (the decoder has one more).
    pub layers_per_block: usize,
    /// Latent channels (16).
    pub latent_channels: usize,
    /// Group-norm groups (candle's autoencoder uses 32).
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    /// Latents are divided by this before decoding …
    pub scaling_factor: f64,
    /// … and this is added.
    #[serde(default)]
    pub shift_factor: Option<f64>,
}

fn three() -> usize {
    3
}
fn thirty_two() -> usize {
    32
}

impl VaeConfig {
    /// Reads and checks `path`.
    pub fn read(path: &std::path::Path) -> Result<Self, BackendError> {
        let c: VaeConfig = read_json(path)?;
        c.autoencoder().map_err(|m| BackendError::config(path, m))?;
        Ok(c)
    }

    /// candle's autoencoder configuration.
    pub fn autoencoder(&self) -> Result<autoencoder::Config, String> {
        let ch = *self
            .block_out_channels
            .first()
            .ok_or("block_out_channels is empty")?;
        if self.norm_num_groups != 32 {
            return Err(format!(
                "norm_num_groups {} is not 32, the only value candle's autoencoder supports",
                self.norm_num_groups
            ));
        }
        let mut ch_mult = Vec::new();
        for c in &self.block_out_channels {
            if ch == 0 || !c.is_multiple_of(ch) || !c.is_multiple_of(32) {
                return Err(format!(
                    "block_out_channels {:?} must be multiples of the first and of 32",
                    self.block_out_channels
                ));
            }
            ch_mult.push(c / ch);
        }
        if ch_mult.len() != 4 {
            return Err(format!(
                "block_out_channels {:?} has {} levels; the latents are 1/8 of the image, which takes 4",
                self.block_out_channels,
                ch_mult.len()
            ));
        }
        Ok(autoencoder::Config {
            resolution: 256,
            in_channels: self.in_channels,
            ch,
            out_ch: self.out_channels,
            ch_mult,
            num_res_blocks: self.layers_per_block,
            z_channels: self.latent_channels,
            scale_factor: self.scaling_factor,
            shift_factor: self.shift_factor.unwrap_or(0.0),
        })
    }

    /// The spec architecture values this config sets.
    pub fn spec_architecture(&self) -> Vec<(&'static str, toml::Value)> {
        let ch = self.block_out_channels.first().copied().unwrap_or(0).max(1);
        let i = |v: usize| toml::Value::Integer(v as i64);
        vec![
            ("ch", i(ch)),
            (
                "ch_mult",
                toml::Value::Array(self.block_out_channels.iter().map(|c| i(c / ch)).collect()),
            ),
            ("num_res_blocks", i(self.layers_per_block)),
            ("z_channels", i(self.latent_channels)),
        ]
    }
}

/// A loaded autoencoder.
pub struct Vae {
    ae: autoencoder::AutoEncoder,
    dtype: DType,
}

impl Vae {
    /// Loads the encoder and decoder from `vb` (the registry's weight figure counts both).
    pub fn load(config: &VaeConfig, vb: VarBuilder) -> Result<Self, BackendError> {
        let cfg = config
            .autoencoder()
            .map_err(|m| BackendError::config("vae/config.json", m))?;
        let dtype = vb.dtype();
        Ok(Vae {
            ae: autoencoder::AutoEncoder::new(&cfg, vb)?,
            dtype,
        })
    }

    /// Decodes `(1, 16, h/8, w/8)` latents to a `(1, 3, h, w)` image in [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> candle_core::Result<Tensor> {
        self.ae.decode(&latents.to_dtype(self.dtype)?)
    }
}
