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
use model_networks::diffusion::t5::{self, T5Text};
use model_networks::diffusion::tokenizer::PromptTokenizer;
use model_networks::diffusion::vae::{Vae, VaeConfig};
use model_networks::diffusion::{Stage, sampler, var_builder};
use model_runtime::{BackendError, ModelDir};
use model_spec::ModelSpec;

use super::request::ImageRequest;
use super::run::{Failure, Held, Run};
use crate::error::ServeError;

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
    pub(crate) fn generate(&self, request: &ImageRequest, run: &Run) -> Result<Tensor, ServeError> {
        let (device, dtype) = (&self.device, self.dtype);
        let r = self.resident.as_ref();
        let (context, pooled) = run.stage(Stage::TextEncoder, || {
            // One encoder at a time: when staged, CLIP-L is released before T5 loads.
            let pooled = {
                let clip = Held::get(r.map(|r| &r.clip), || self.load_clip())?;
                let ids = self.clip_tokenizer.encode(&request.prompt)?;
                clip.forward(&ids.ids, ids.eos, device)?.pooled
            };
            model_runtime::memory::trim_heap();
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
