//! Stable Diffusion 3.5 Large Turbo: candle-transformers' MMDiT blocks (Stability's
//! single-file naming under `model.diffusion_model.`), CLIP-L + OpenCLIP bigG + T5-XXL text
//! conditioning, the 16-channel VAE (`first_stage_model.` in the same file), and the
//! flow-matching Euler sampler with the scheduler's shift (3.0), 4 steps, no CFG (Turbo is
//! distilled for guidance scale 1, so there is no unconditional pass).
//! The MMDiT itself is `model-networks`' (`diffusion::mmdit`).

use candle_core::{D, DType, Device, Tensor};
use model_networks::Pipeline;
use model_networks::diffusion::clip_text::{self, ClipText};
use model_networks::diffusion::layout::{self, Resolved};
use model_networks::diffusion::mmdit::{DEFAULT_SHIFT, Mmdit, TransformerConfig};
use model_networks::diffusion::t5::{self, T5Text};
use model_networks::diffusion::tokenizer::PromptTokenizer;
use model_networks::diffusion::vae::{Vae, VaeConfig};
use model_networks::diffusion::{Stage, sampler, var_builder};
use model_runtime::{BackendError, ModelDir};
use model_spec::ModelSpec;
use serde::Deserialize;

use super::request::ImageRequest;
use super::run::{Failure, Held, Run};
use crate::error::ServeError;

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
    pub(crate) fn generate(&self, request: &ImageRequest, run: &Run) -> Result<Tensor, ServeError> {
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
                model_runtime::memory::trim_heap();
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
