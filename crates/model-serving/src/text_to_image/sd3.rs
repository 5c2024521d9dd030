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
use model_networks::diffusion::sampler;
use model_networks::diffusion::t5::{self, T5Text};
use model_networks::diffusion::tokenizer::PromptTokenizer;
use model_networks::diffusion::vae::{Vae, VaeConfig};
use model_runtime::{BackendError, ModelDir};
use serde::Deserialize;

use super::plan::MemoryPlan;
use super::request::ImageRequest;
use super::run::{Failure, Held, Run};
use super::stages::{Common, Part, Stages};

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
    mmdit: Part<TransformerConfig>,
    clip_tokenizers: [PromptTokenizer; 2],
    shift: f64,
    common: Common,
    resident: Option<Resident>,
}

impl Sd3 {
    /// Reads configs and tokenizers from `dir` (files as `plan`'s spec names them), and the
    /// networks unless the plan is staged; T5's sequence length is the plan's.
    pub fn load(
        plan: &MemoryPlan,
        dir: &ModelDir,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, BackendError> {
        let resolve = |c: &str| layout::resolve(Pipeline::Sd3, plan.spec(), dir, c);
        let clip_l = Part::read(resolve("clip_l")?, clip_text::Config::read)?;
        let clip_g = Part::read(resolve("clip_g")?, clip_text::Config::read)?;
        let t5 = Part::read(resolve("t5_xxl")?, t5::read_config)?;
        let mmdit = Part::read(resolve("transformer")?, TransformerConfig::read)?;
        let vae = Part::read(resolve("vae")?, VaeConfig::read)?;
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
        let clip_tokenizers = [
            PromptTokenizer::clip(&tok(&clip_l.files), clip_l.config.max_position_embeddings)?,
            PromptTokenizer::clip(&tok(&clip_g.files), clip_g.config.max_position_embeddings)?,
        ];
        let t5_tokenizer = PromptTokenizer::t5(&tok(&t5.files), plan.text_tokens())?;
        let shift = read_shift(dir)?;
        let mut sd3 = Sd3 {
            clip_l,
            clip_g,
            mmdit,
            clip_tokenizers,
            shift,
            common: Common {
                t5,
                t5_tokenizer,
                vae,
                device: device.clone(),
                dtype,
            },
            resident: None,
        };
        if !plan.staged() {
            sd3.resident = Some(Resident {
                clip_l: sd3.load_clip(false)?,
                clip_g: sd3.load_clip(true)?,
                t5: sd3.common.load_t5()?,
                mmdit: sd3.load_mmdit()?,
                vae: sd3.common.load_vae()?,
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
        // SD3 pools bigG through its text projection and CLIP-L without one.
        self.common.load(part, |c, vb| ClipText::load(c, vb, g))
    }

    fn load_mmdit(&self) -> Result<Mmdit, BackendError> {
        self.common.load(&self.mmdit, Mmdit::load)
    }
}

impl Stages for Sd3 {
    type Denoiser = Mmdit;

    fn common(&self) -> &Common {
        &self.common
    }

    fn encode(&self, prompt: &str) -> Result<(Tensor, Tensor), Failure> {
        let r = self.resident.as_ref();
        let joint = self.mmdit.config.joint_attention_dim;
        let mut penultimate = Vec::new();
        let mut pooled = Vec::new();
        let [clip_l, clip_g] = &self.clip_tokenizers;
        for (g, tokenizer) in [(false, clip_l), (true, clip_g)] {
            let resident = r.map(|r| if g { &r.clip_g } else { &r.clip_l });
            let clip = Held::get(resident, || self.load_clip(g))?;
            let ids = tokenizer.encode(prompt)?;
            let out = clip.forward(&ids.ids, ids.eos, &self.common.device)?;
            penultimate.push(out.penultimate);
            pooled.push(out.pooled);
            drop(clip);
            model_runtime::memory::trim_heap();
        }
        let clip_context = Tensor::cat(&penultimate, D::Minus1)?;
        let width = clip_context.dim(D::Minus1)?;
        let clip_context = clip_context.pad_with_zeros(D::Minus1, 0, joint - width)?;
        let t5_context = self.common.t5_context(r.map(|r| &r.t5), prompt)?;
        let context = Tensor::cat(&[clip_context, t5_context], 1)?;
        Ok((context, Tensor::cat(&pooled, D::Minus1)?))
    }

    fn denoiser(&self) -> Result<Held<'_, Mmdit>, BackendError> {
        Held::get(self.resident.as_ref().map(|r| &r.mmdit), || {
            self.load_mmdit()
        })
    }

    fn denoise(
        &self,
        mmdit: &Mmdit,
        context: &Tensor,
        pooled: &Tensor,
        noise: Tensor,
        request: &ImageRequest,
        run: &Run,
    ) -> Result<Tensor, Failure> {
        let steps = request.steps;
        let schedule = sampler::sd3_schedule(steps as usize, self.shift);
        sampler::euler::<Failure>(
            noise,
            &schedule,
            |x, sigma| mmdit.forward(x, sigma * 1000.0, pooled, context),
            |n| run.step(n, steps),
        )
    }

    fn resident_vae(&self) -> Option<&Vae> {
        self.resident.as_ref().map(|r| &r.vae)
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
