//! Stable Diffusion 3.5 Large Turbo: candle-transformers' MMDiT blocks (Stability's
//! single-file naming under `model.diffusion_model.`), CLIP-L + OpenCLIP bigG + T5-XXL text
//! conditioning, the 16-channel VAE (`first_stage_model.` in the same file), and the
//! flow-matching Euler sampler with the scheduler's shift (3.0), 4 steps, no CFG (Turbo is
//! distilled for guidance scale 1, so there is no unconditional pass).
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

struct Part<C> {
    files: Resolved,
    config: C,
}

struct Resident {
    clip_l: ClipText,
    clip_g: ClipText,
    t5: T5Text,
    mmdit: Mmdit,
    vae: Vae,
}

/// An SD3.5 pipeline: configs and tokenizers always; the networks too when co-resident.
pub struct Sd3 {
    clip_l: Part<clip_text::Config>,
    clip_g: Part<clip_text::Config>,
    t5: Part<candle_transformers::models::t5::Config>,
    mmdit: Part<TransformerConfig>,
    vae: Part<VaeConfig>,
    tokenizers: [PromptTokenizer; 3],
    shift: f64,
    resident: Option<Resident>,
    device: Device,
    dtype: DType,
}

impl Sd3 {
    /// Reads configs and tokenizers from `dir`, and the networks unless `staged`.
    pub fn load(
        spec: &ModelSpec,
        dir: &ModelDir,
        device: &Device,
        dtype: DType,
        staged: bool,
        text_tokens: usize,
    ) -> Result<Self, BackendError> {
        let resolve = |c: &str| layout::resolve(Pipeline::Sd3, spec, dir, c);
        let clip = |r: Resolved| -> Result<_, BackendError> {
            Ok(Part {
                config: clip_text::Config::read(&r.config)?,
                files: r,
            })
        };
        let clip_l = clip(resolve("clip_l")?)?;
        let clip_g = clip(resolve("clip_g")?)?;
        let t5 = resolve("t5_xxl")?;
        let t5 = Part {
            config: t5::read_config(&t5.config)?,
            files: t5,
        };
        let mmdit = resolve("transformer")?;
        let mmdit = Part {
            config: TransformerConfig::read(&mmdit.config)?,
            files: mmdit,
        };
        let vae = resolve("vae")?;
        let vae = Part {
            config: VaeConfig::read(&vae.config)?,
            files: vae,
        };
        let clip_width = clip_l.config.hidden_size + clip_g.config.hidden_size;
        let pooled = clip_l.config.hidden_size
            + clip_g
                .config
                .projection_dim
                .unwrap_or(clip_g.config.hidden_size);
        let c = &mmdit.config;
        if clip_width > c.joint_attention_dim
            || t5.config.d_model != c.joint_attention_dim
            || pooled != c.pooled_projection_dim
        {
            return Err(BackendError::config(
                &mmdit.files.config,
                format!(
                    "the text encoders do not match the transformer: CLIP-L + bigG hidden {clip_width} must fit \
                     joint_attention_dim {} = T5 d_model {}, and pooled CLIP-L + bigG projection {pooled} must be \
                     pooled_projection_dim {}",
                    c.joint_attention_dim, t5.config.d_model, c.pooled_projection_dim
                ),
            ));
        }
        let tok = |r: &Resolved| dir.root().join(r.part.tokenizer.unwrap_or_default());
        let tokenizers = [
            PromptTokenizer::clip(&tok(&clip_l.files), clip_l.config.max_position_embeddings)?,
            PromptTokenizer::clip(&tok(&clip_g.files), clip_g.config.max_position_embeddings)?,
            PromptTokenizer::t5(&tok(&t5.files), text_tokens)?,
        ];
        let shift = read_shift(dir)?;
        let mut sd3 = Sd3 {
            clip_l,
            clip_g,
            t5,
            mmdit,
            vae,
            tokenizers,
            shift,
            resident: None,
            device: device.clone(),
            dtype,
        };
        if !staged {
            sd3.resident = Some(Resident {
                clip_l: sd3.load_clip(false)?,
                clip_g: sd3.load_clip(true)?,
                t5: sd3.load_t5()?,
                mmdit: sd3.load_mmdit()?,
                vae: sd3.load_vae()?,
            });
        }
        Ok(sd3)
    }

    /// Largest image side the transformer's position embedding covers.
    pub fn max_side(&self) -> u32 {
        self.mmdit.config.max_side()
    }

    fn load_clip(&self, g: bool) -> Result<ClipText, BackendError> {
        let part = if g { &self.clip_g } else { &self.clip_l };
        let vb = var_builder(&part.files, self.dtype, &self.device)?;
        // SD3 pools bigG through its text projection and CLIP-L without one.
        Ok(ClipText::load(&part.config, vb, g)?)
    }

    fn load_t5(&self) -> Result<T5Text, BackendError> {
        let vb = var_builder(&self.t5.files, self.dtype, &self.device)?;
        Ok(T5Text::load(&self.t5.config, vb)?)
    }

    fn load_mmdit(&self) -> Result<Mmdit, BackendError> {
        let vb = var_builder(&self.mmdit.files, self.dtype, &self.device)?;
        Ok(Mmdit::load(&self.mmdit.config, vb)?)
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
        let joint = self.mmdit.config.joint_attention_dim;
        let (context, pooled) = run.stage(Stage::TextEncoder, || {
            let mut penultimate = Vec::new();
            let mut pooled = Vec::new();
            for (g, tokenizer) in [(false, &self.tokenizers[0]), (true, &self.tokenizers[1])] {
                let resident = r.map(|r| if g { &r.clip_g } else { &r.clip_l });
                let clip = Held::get(resident, || self.load_clip(g))?;
                let ids = tokenizer.encode(&request.prompt)?;
                let out = clip.forward(&ids.ids, ids.eos, device)?;
                penultimate.push(out.penultimate);
                pooled.push(out.pooled);
                drop(clip);
                crate::memory::trim_heap();
            }
            let clip_context = Tensor::cat(&penultimate, D::Minus1)?;
            let width = clip_context.dim(D::Minus1)?;
            let clip_context = clip_context.pad_with_zeros(D::Minus1, 0, joint - width)?;
            let t5 = Held::get(r.map(|r| &r.t5), || self.load_t5())?;
            let ids = self.tokenizers[2].encode(&request.prompt)?;
            let t5_context = t5.encode(&ids.ids, device)?;
            let context = Tensor::cat(&[clip_context, t5_context], 1)?;
            Ok::<_, Failure>((context, Tensor::cat(&pooled, D::Minus1)?))
        })?;
        let steps = request.steps;
        let (h, w) = (request.height as usize, request.width as usize);
        let latents = run.stage(Stage::Denoiser, || {
            let mmdit = Held::get(r.map(|r| &r.mmdit), || self.load_mmdit())?;
            let noise = sampler::noise(request.seed, (1, 16, h / 8, w / 8), device, dtype)?;
            let schedule = sampler::sd3_schedule(steps as usize, self.shift);
            sampler::euler::<Failure>(
                noise,
                &schedule,
                |x, sigma| mmdit.forward(x, sigma * 1000.0, &pooled, &context),
                |n| run.step(n, steps),
            )
        })?;
        drop((context, pooled));
        run.stage(Stage::Decoder, || {
            let vae = Held::get(r.map(|r| &r.vae), || self.load_vae())?;
            Ok(vae.decode(&latents)?)
        })
    }
}

/// `shift` from `scheduler/scheduler_config.json`, else [`DEFAULT_SHIFT`].
fn read_shift(dir: &ModelDir) -> Result<f64, BackendError> {
    #[derive(Deserialize)]
    struct Scheduler {
        shift: Option<f64>,
    }
    Ok(dir
        .optional_json::<Scheduler>("scheduler/scheduler_config.json")?
        .and_then(|s| s.shift)
        .unwrap_or(DEFAULT_SHIFT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::DiffusionConfig;
    use crate::diffusion::random::{self, Geometry};
    use candle_transformers::models::mmdit::model::{Config as CandleConfig, MMDiT};

    /// The network assembled here is candle's `MMDiT` except for the dtype of the timestep
    /// embedding: in F16, where candle's runs, both give the same velocity.
    #[test]
    fn the_assembled_mmdit_matches_candles_in_f16() {
        let dir = std::env::temp_dir().join(format!("mmdit-{}", std::process::id()));
        random::write(&dir, Pipeline::Sd3, &Geometry::tiny(Pipeline::Sd3), 5).unwrap();
        let plan = DiffusionConfig::new("tiny", Pipeline::Sd3, dir.as_path())
            .plan()
            .unwrap();
        let md = ModelDir::local(&dir).unwrap();
        let dev = Device::Cpu;
        let transformer = layout::resolve(Pipeline::Sd3, plan.spec(), &md, "transformer").unwrap();
        let c = TransformerConfig::read(&transformer.config).unwrap();
        let vb = || var_builder(&transformer, DType::F16, &dev).unwrap();
        let ours = Mmdit::load(&c, vb()).unwrap();
        let cfg = CandleConfig {
            patch_size: c.patch_size,
            in_channels: c.in_channels,
            out_channels: c.out_channels,
            depth: c.num_layers,
            head_size: c.attention_head_dim,
            adm_in_channels: c.pooled_projection_dim,
            pos_embed_max_size: c.pos_embed_max_size,
            context_embed_size: c.joint_attention_dim,
            frequency_embedding_size: 256,
        };
        let theirs = MMDiT::new(&cfg, false, vb()).unwrap();
        let noise = |seed, shape| sampler::noise(seed, shape, &dev, DType::F16).unwrap();
        let x = noise(1, (1, 16, 8, 6));
        let y = noise(2, (1, 1, 1, 64)).reshape((1, 64)).unwrap();
        let context = noise(3, (1, 1, 20, 96)).squeeze(0).unwrap();
        let t = 750.0;
        let a = ours.forward(&x, t, &y, &context).unwrap();
        let b = theirs
            .forward(
                &x,
                &Tensor::new(&[t as f32], &dev).unwrap(),
                &y,
                &context,
                None,
            )
            .unwrap();
        let f32s = |t: Tensor| -> Vec<f32> {
            t.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let (a, b) = (f32s(a), f32s(b));
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            scale > 0.0 && worst <= 0.02 * scale,
            "max |Δ| {worst} of {scale}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
