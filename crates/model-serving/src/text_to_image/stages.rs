//! What the pipelines share: a component's files and config ([`Part`]), the T5 encoder and
//! VAE both use ([`Common`]), and the three stages every request runs ([`generate`]): encode
//! the prompt, denoise seeded noise, decode the latents with the VAE.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::t5;
use model_networks::diffusion::layout::Resolved;
use model_networks::diffusion::t5::T5Text;
use model_networks::diffusion::tokenizer::PromptTokenizer;
use model_networks::diffusion::vae::{Vae, VaeConfig};
use model_networks::diffusion::{Stage, sampler, var_builder};
use model_runtime::BackendError;

use super::request::ImageRequest;
use super::run::{Failure, Held, Run};
use crate::error::ServeError;

/// One component of a pipeline: its files and its parsed config.
pub(crate) struct Part<C> {
    pub files: Resolved,
    pub config: C,
}

impl<C> Part<C> {
    /// `files` with the config that `read` parses from their config file.
    pub fn read(
        files: Resolved,
        read: impl FnOnce(&Path) -> Result<C, BackendError>,
    ) -> Result<Self, BackendError> {
        Ok(Part {
            config: read(&files.config)?,
            files,
        })
    }
}

/// What both pipelines hold besides their CLIP encoders and denoiser: T5-XXL and its
/// tokenizer, the VAE, and the device and dtype every network is loaded in.
pub(crate) struct Common {
    pub t5: Part<t5::Config>,
    pub t5_tokenizer: PromptTokenizer,
    pub vae: Part<VaeConfig>,
    pub device: Device,
    pub dtype: DType,
}

impl Common {
    /// `part`'s network as `build` makes it, on the pipeline's device in its dtype.
    pub fn load<C, T, E>(
        &self,
        part: &Part<C>,
        build: impl FnOnce(&C, VarBuilder<'static>) -> Result<T, E>,
    ) -> Result<T, BackendError>
    where
        BackendError: From<E>,
    {
        let vb = var_builder(&part.files, self.dtype, &self.device)?;
        Ok(build(&part.config, vb)?)
    }

    /// A T5 encoder loaded from the weights.
    pub fn load_t5(&self) -> Result<T5Text, BackendError> {
        self.load(&self.t5, T5Text::load)
    }

    /// A VAE loaded from the weights.
    pub fn load_vae(&self) -> Result<Vae, BackendError> {
        self.load(&self.vae, Vae::load)
    }

    /// T5's token context for `prompt`, from the `resident` encoder or one loaded for the call.
    pub fn t5_context(&self, resident: Option<&T5Text>, prompt: &str) -> Result<Tensor, Failure> {
        let t5 = Held::get(resident, || self.load_t5())?;
        let ids = self.t5_tokenizer.encode(prompt)?;
        Ok(t5.encode(&ids.ids, &self.device)?)
    }
}

/// A pipeline's networks, as [`generate`] runs them.
pub(crate) trait Stages {
    /// The denoising network.
    type Denoiser;

    /// The parts every pipeline has.
    fn common(&self) -> &Common;

    /// The text-encoder stage: `prompt` encoded for the denoiser, as the token context and
    /// the pooled vector.
    fn encode(&self, prompt: &str) -> Result<(Tensor, Tensor), Failure>;

    /// The denoiser: the resident one, or one loaded for the stage.
    fn denoiser(&self) -> Result<Held<'_, Self::Denoiser>, BackendError>;

    /// Denoises `noise` into latents under `context` and `pooled` in `request.steps` steps,
    /// reporting each to `run`.
    fn denoise(
        &self,
        denoiser: &Self::Denoiser,
        context: &Tensor,
        pooled: &Tensor,
        noise: Tensor,
        request: &ImageRequest,
        run: &Run,
    ) -> Result<Tensor, Failure>;

    /// The resident VAE, if the pipeline is co-resident.
    fn resident_vae(&self) -> Option<&Vae>;
}

/// Generates `request`'s image with `pipeline` as a `(1, 3, h, w)` tensor in [-1, 1]; the
/// text encoders' output is dropped before the decoder stage starts.
pub(crate) fn generate<S: Stages>(
    pipeline: &S,
    request: &ImageRequest,
    run: &Run,
) -> Result<Tensor, ServeError> {
    let common = pipeline.common();
    let (context, pooled) = run.stage(Stage::TextEncoder, || pipeline.encode(&request.prompt))?;
    let (h, w) = (request.height as usize, request.width as usize);
    let (device, dtype) = (&common.device, common.dtype);
    let latents = run.stage(Stage::Denoiser, || {
        let denoiser = pipeline.denoiser()?;
        let noise = sampler::noise(request.seed, (1, 16, h / 8, w / 8), device, dtype)?;
        pipeline.denoise(&denoiser, &context, &pooled, noise, request, run)
    })?;
    drop((context, pooled));
    run.stage(Stage::Decoder, || {
        let vae = Held::get(pipeline.resident_vae(), || common.load_vae())?;
        Ok(vae.decode(&latents)?)
    })
}
