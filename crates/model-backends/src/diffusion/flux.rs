//! FLUX.1-schnell: candle-transformers' `flux` transformer (BFL checkpoint naming), T5-XXL for
//! the token context, CLIP-L's pooled state for the global vector, the 16-channel autoencoder,
//! and the schnell schedule (1–4 steps, no guidance input).
//!
//! The transformer is configured from `transformer/config.json` as Diffusers ships it
//! (`FluxTransformer2DModel`), mapped onto candle's `flux::model::Config`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::flux::WithForward;
use candle_transformers::models::flux::model::{Config as FluxConfig, Flux as FluxModel};
use candle_transformers::models::flux::sampling::{State, unpack};
use model_spec::ModelSpec;
use serde::{Deserialize, Serialize};

use super::clip_text::{self, ClipText};
use super::layout::{self, Resolved};
use super::request::ImageRequest;
use super::run::{Failure, Held, Run};
use super::t5::{self, T5Text};
use super::tokenizer::PromptTokenizer;
use super::vae::{Vae, VaeConfig};
use super::{Pipeline, Stage, sampler, var_builder};
use crate::error::BackendError;
use crate::model_dir::{ModelDir, read_json};

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

struct Part<C> {
    files: Resolved,
    config: C,
}

struct Resident {
    clip: ClipText,
    t5: T5Text,
    transformer: FluxModel,
    vae: Vae,
}

/// A FLUX.1-schnell pipeline: configs and tokenizers always; the networks too when
/// co-resident, else loaded stage by stage.
pub struct Flux {
    clip: Part<clip_text::Config>,
    t5: Part<candle_transformers::models::t5::Config>,
    transformer: Part<FluxConfig>,
    vae: Part<VaeConfig>,
    clip_tokenizer: PromptTokenizer,
    t5_tokenizer: PromptTokenizer,
    resident: Option<Resident>,
    device: Device,
    dtype: DType,
}

impl Flux {
    /// Reads configs and tokenizers from `dir` (files as `spec` names them), and the networks
    /// unless `staged`. `text_tokens` is the T5 sequence length.
    pub fn load(
        spec: &ModelSpec,
        dir: &ModelDir,
        device: &Device,
        dtype: DType,
        staged: bool,
        text_tokens: usize,
    ) -> Result<Self, BackendError> {
        let resolve = |c: &str| layout::resolve(Pipeline::Flux, spec, dir, c);
        let clip = resolve("clip_l")?;
        let t5 = resolve("t5_xxl")?;
        let transformer = resolve("transformer")?;
        let vae = resolve("ae")?;
        let clip_config = clip_text::Config::read(&clip.config)?;
        let tok_dir = |r: &Resolved| dir.root().join(r.part.tokenizer.unwrap_or_default());
        let clip_tokenizer =
            PromptTokenizer::clip(&tok_dir(&clip), clip_config.max_position_embeddings)?;
        let t5_tokenizer = PromptTokenizer::t5(&tok_dir(&t5), text_tokens)?;
        let mut flux = Flux {
            t5: Part {
                config: t5::read_config(&t5.config)?,
                files: t5,
            },
            clip: Part {
                config: clip_config,
                files: clip,
            },
            transformer: Part {
                config: TransformerConfig::read(&transformer.config)?
                    .candle()
                    .map_err(|m| BackendError::config(&transformer.config, m))?,
                files: transformer,
            },
            vae: Part {
                config: VaeConfig::read(&vae.config)?,
                files: vae,
            },
            clip_tokenizer,
            t5_tokenizer,
            resident: None,
            device: device.clone(),
            dtype,
        };
        if !staged {
            flux.resident = Some(Resident {
                clip: flux.load_clip()?,
                t5: flux.load_t5()?,
                transformer: flux.load_transformer()?,
                vae: flux.load_vae()?,
            });
        }
        Ok(flux)
    }

    fn load_clip(&self) -> Result<ClipText, BackendError> {
        let vb = var_builder(&self.clip.files, self.dtype, &self.device)?;
        Ok(ClipText::load(&self.clip.config, vb, false)?)
    }

    fn load_t5(&self) -> Result<T5Text, BackendError> {
        let vb = var_builder(&self.t5.files, self.dtype, &self.device)?;
        Ok(T5Text::load(&self.t5.config, vb)?)
    }

    fn load_transformer(&self) -> Result<FluxModel, BackendError> {
        let vb = var_builder(&self.transformer.files, self.dtype, &self.device)?;
        Ok(FluxModel::new(&self.transformer.config, vb)?)
    }

    fn load_vae(&self) -> Result<Vae, BackendError> {
        let vb = var_builder(&self.vae.files, self.dtype, &self.device)?;
        Vae::load(&self.vae.config, vb)
    }

    /// Generates `request`'s image as a `(1, 3, h, w)` tensor in [-1, 1].
    pub(crate) fn generate(
        &self,
        request: &ImageRequest,
        run: &Run,
    ) -> Result<Tensor, super::ImageError> {
        let (device, dtype) = (&self.device, self.dtype);
        let r = self.resident.as_ref();
        let (context, pooled) = run.stage(Stage::TextEncoder, || {
            // One encoder at a time: when staged, CLIP-L is released before T5 loads.
            let pooled = {
                let clip = Held::get(r.map(|r| &r.clip), || self.load_clip())?;
                let ids = self.clip_tokenizer.encode(&request.prompt)?;
                clip.forward(&ids.ids, ids.eos, device)?.pooled
            };
            crate::memory::trim_heap();
            let t5 = Held::get(r.map(|r| &r.t5), || self.load_t5())?;
            let ids = self.t5_tokenizer.encode(&request.prompt)?;
            let context = t5.encode(&ids.ids, device)?;
            Ok::<_, Failure>((context, pooled))
        })?;
        let steps = request.steps;
        let (h, w) = (request.height as usize, request.width as usize);
        let latents = run.stage(Stage::Denoiser, || {
            let model = Held::get(r.map(|r| &r.transformer), || self.load_transformer())?;
            let noise = sampler::noise(request.seed, (1, 16, h / 8, w / 8), device, dtype)?;
            let state = State::new(&context, &pooled, &noise)?;
            let schedule = sampler::flux_schnell_schedule(steps as usize);
            let packed = sampler::euler::<Failure>(
                state.img.clone(),
                &schedule,
                |x, t| {
                    let t = Tensor::full(t as f32, 1, device)?;
                    model.forward(
                        x,
                        &state.img_ids,
                        &state.txt,
                        &state.txt_ids,
                        &t,
                        &state.vec,
                        None,
                    )
                },
                |n| run.step(n, steps),
            )?;
            Ok(unpack(&packed, h, w)?)
        })?;
        drop((context, pooled));
        run.stage(Stage::Decoder, || {
            let vae = Held::get(r.map(|r| &r.vae), || self.load_vae())?;
            Ok(vae.decode(&latents)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::random::{self, Geometry};
    use crate::diffusion::{DiffusionConfig, Pipeline};

    #[test]
    fn the_schnell_loop_is_candles_denoise() {
        let dir = std::env::temp_dir().join(format!("flux-loop-{}", std::process::id()));
        random::write(&dir, Pipeline::Flux, &Geometry::tiny(Pipeline::Flux), 5).unwrap();
        let plan = DiffusionConfig::new("tiny", Pipeline::Flux, dir.as_path())
            .plan()
            .unwrap();
        let md = ModelDir::local(&dir).unwrap();
        let dev = Device::Cpu;
        let flux = Flux::load(plan.spec(), &md, &dev, DType::F32, false, 16).unwrap();
        let model = &flux.resident.as_ref().unwrap().transformer;
        let txt = sampler::noise(1, (1, 1, 16, 48), &dev, DType::F32)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let vec = sampler::noise(2, (1, 1, 1, 32), &dev, DType::F32)
            .unwrap()
            .reshape((1, 32))
            .unwrap();
        let noise = sampler::noise(3, (1, 16, 8, 6), &dev, DType::F32).unwrap();
        let s = State::new(&txt, &vec, &noise).unwrap();
        let schedule = sampler::flux_schnell_schedule(3);
        let ours = sampler::euler::<candle_core::Error>(
            s.img.clone(),
            &schedule,
            |x, t| {
                let t = Tensor::full(t as f32, 1, &dev)?;
                model.forward(x, &s.img_ids, &s.txt, &s.txt_ids, &t, &s.vec, None)
            },
            |_| Ok(()),
        )
        .unwrap();
        let reference = candle_transformers::models::flux::sampling::denoise(
            model, &s.img, &s.img_ids, &s.txt, &s.txt_ids, &s.vec, &schedule, 0.0,
        )
        .unwrap();
        let diff: f32 = (ours - &reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0);
        let image = unpack(&reference, 64, 48).unwrap();
        assert_eq!(image.dims(), &[1, 16, 8, 6]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
