//! FLUX.1-schnell: candle-transformers' `flux` transformer (BFL checkpoint naming), T5-XXL for
//! the token context, CLIP-L's pooled state for the global vector, the 16-channel autoencoder,
//! and the schnell schedule (1–4 steps, no guidance input).
//!
//! The transformer is configured from `transformer/config.json` as Diffusers ships it
//! (`FluxTransformer2DModel`), mapped onto candle's `flux::model::Config`.

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::flux::WithForward;
use candle_transformers::models::flux::model::{Config as FluxConfig, Flux as FluxModel};
use candle_transformers::models::flux::sampling::{State, unpack};
use model_networks::Pipeline;
use model_networks::diffusion::clip_text::{self, ClipText};
use model_networks::diffusion::flux::TransformerConfig;
use model_networks::diffusion::layout::{self, Resolved};
use model_networks::diffusion::sampler;
use model_networks::diffusion::t5::{self, T5Text};
use model_networks::diffusion::tokenizer::PromptTokenizer;
use model_networks::diffusion::vae::{Vae, VaeConfig};
use model_runtime::{BackendError, ModelDir};

use super::plan::MemoryPlan;
use super::request::ImageRequest;
use super::run::{Failure, Held, Run};
use super::stages::{Common, Part, Stages};

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
    transformer: Part<FluxConfig>,
    clip_tokenizer: PromptTokenizer,
    common: Common,
    resident: Option<Resident>,
}

impl Flux {
    /// Reads configs and tokenizers from `dir` (files as `plan`'s spec names them), and the
    /// networks unless the plan is staged; T5's sequence length is the plan's.
    pub fn load(
        plan: &MemoryPlan,
        dir: &ModelDir,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, BackendError> {
        let resolve = |c: &str| layout::resolve(Pipeline::Flux, plan.spec(), dir, c);
        let clip = resolve("clip_l")?;
        let t5 = resolve("t5_xxl")?;
        let transformer = resolve("transformer")?;
        let vae = resolve("ae")?;
        let clip = Part::read(clip, clip_text::Config::read)?;
        let tok_dir = |r: &Resolved| dir.root().join(r.part.tokenizer.unwrap_or_default());
        let clip_tokenizer =
            PromptTokenizer::clip(&tok_dir(&clip.files), clip.config.max_position_embeddings)?;
        let t5_tokenizer = PromptTokenizer::t5(&tok_dir(&t5), plan.text_tokens())?;
        let t5 = Part::read(t5, t5::read_config)?;
        let transformer = Part::read(transformer, |path| {
            TransformerConfig::read(path)?
                .candle()
                .map_err(|m| BackendError::config(path, m))
        })?;
        let common = Common {
            t5,
            t5_tokenizer,
            vae: Part::read(vae, VaeConfig::read)?,
            device: device.clone(),
            dtype,
        };
        let mut flux = Flux {
            clip,
            transformer,
            clip_tokenizer,
            common,
            resident: None,
        };
        if !plan.staged() {
            flux.resident = Some(Resident {
                clip: flux.load_clip()?,
                t5: flux.common.load_t5()?,
                transformer: flux.load_transformer()?,
                vae: flux.common.load_vae()?,
            });
        }
        Ok(flux)
    }

    fn load_clip(&self) -> Result<ClipText, BackendError> {
        self.common
            .load(&self.clip, |c, vb| ClipText::load(c, vb, false))
    }

    fn load_transformer(&self) -> Result<FluxModel, BackendError> {
        self.common.load(&self.transformer, FluxModel::new)
    }
}

impl Stages for Flux {
    type Denoiser = FluxModel;

    fn common(&self) -> &Common {
        &self.common
    }

    fn encode(&self, prompt: &str) -> Result<(Tensor, Tensor), Failure> {
        let r = self.resident.as_ref();
        // One encoder at a time: when staged, CLIP-L is released before T5 loads.
        let pooled = {
            let clip = Held::get(r.map(|r| &r.clip), || self.load_clip())?;
            let ids = self.clip_tokenizer.encode(prompt)?;
            clip.forward(&ids.ids, ids.eos, &self.common.device)?.pooled
        };
        model_runtime::memory::trim_heap();
        let context = self.common.t5_context(r.map(|r| &r.t5), prompt)?;
        Ok((context, pooled))
    }

    fn denoiser(&self) -> Result<Held<'_, FluxModel>, BackendError> {
        let r = self.resident.as_ref();
        Held::get(r.map(|r| &r.transformer), || self.load_transformer())
    }

    fn denoise(
        &self,
        model: &FluxModel,
        context: &Tensor,
        pooled: &Tensor,
        noise: Tensor,
        request: &ImageRequest,
        run: &Run,
    ) -> Result<Tensor, Failure> {
        let steps = request.steps;
        let state = State::new(context, pooled, &noise)?;
        let schedule = sampler::flux_schnell_schedule(steps as usize);
        let packed = sampler::euler::<Failure>(
            state.img.clone(),
            &schedule,
            |x, t| {
                let t = Tensor::full(t as f32, 1, &self.common.device)?;
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
        Ok(unpack(
            &packed,
            request.height as usize,
            request.width as usize,
        )?)
    }

    fn resident_vae(&self) -> Option<&Vae> {
        self.resident.as_ref().map(|r| &r.vae)
    }
}
