//! Text-to-image on the pool: FLUX.1-schnell ([`flux`]) and Stable Diffusion 3.5 Large Turbo
//! ([`sd3`]) pipelines over the networks of `model-networks`.
//!
//! * [`MemoryPlan`] — what a model holds resident and what each stage of a request reserves,
//!   from the registry's estimator at the requested resolution. Requests run in three stages
//!   (encode the prompt, denoise, decode); a co-resident model keeps every component loaded and
//!   reserves only each stage's working set, a staged one loads each stage's components for
//!   that stage alone and reserves their weights too. The peak of the reservations is the
//!   estimate for that size.
//! * [`DiffusionModel`] — a loaded pipeline; [`ImageRequest`] and [`Progress`] — one request
//!   and the events it reports (one per denoising step).

pub mod flux;
pub mod model;
pub mod plan;
pub mod request;
mod run;
pub mod sd3;
mod stages;

use candle_core::DType;
use model_networks::Pipeline;
use model_networks::diffusion::mmdit;
use model_pool::DeviceId;
use model_registry::CandleModelInfo;
use model_spec::RunProfile;

pub use model::{DiffusionModel, GeneratedImage};
pub use plan::{MemoryPlan, RequestMemory, StageMemory};
pub use request::{ImageRequest, Limits, Progress};
pub use run::ProgressFn;

use crate::config::ModelSource;
use crate::error::ServeError;

/// How a text-to-image model is served.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOptions {
    /// The model code.
    pub pipeline: Pipeline,
    /// Weight and activation dtype.
    pub dtype: DType,
    /// Components loaded stage by stage (`co_resident = false`) instead of all at once.
    pub staged: bool,
    /// T5 tokens per prompt; the run profile's (256) when `None`.
    pub text_tokens: Option<usize>,
    /// Request limits; the spec's serving facts and the checkpoint's own limits when `None`.
    pub limits: Option<Limits>,
}

impl ImageOptions {
    /// Any checkpoint of `pipeline`'s architecture, in F32, co-resident.
    pub fn new(pipeline: Pipeline) -> Self {
        ImageOptions {
            pipeline,
            dtype: DType::F32,
            staged: false,
            text_tokens: None,
            limits: None,
        }
    }

    /// A registry model's options: pipeline, dtype and staging from its run profile.
    pub fn registry(info: &CandleModelInfo) -> Result<Self, ServeError> {
        let pipeline = info
            .backend
            .and_then(crate::config::pipeline_of)
            .ok_or_else(|| ServeError::WrongCapability {
                model: info.registry_key.to_owned(),
                capability: info.capability,
                asked: "generate images",
            })?;
        let mut o = ImageOptions::new(pipeline);
        if let Some(d) = crate::config::profile_dtype(info)? {
            o.dtype = d;
        }
        o.staged = !info.default_profile.co_resident;
        Ok(o)
    }

    /// Sets the dtype.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// Loads components stage by stage (`true`) or keeps them all resident.
    pub fn staged(mut self, staged: bool) -> Self {
        self.staged = staged;
        self
    }

    /// Sets the T5 sequence length.
    pub fn text_tokens(mut self, tokens: usize) -> Self {
        self.text_tokens = Some(tokens);
        self
    }

    /// Sets the request limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The dtype the pipeline runs in on `device`: the configured one, except that candle's
    /// CPU backend has no BF16 matmul, so BF16 (the registry's GPU profile) runs in F32 there.
    pub fn dtype_on(&self, device: DeviceId) -> DType {
        match (device, self.dtype) {
            (DeviceId::Cpu, DType::BF16) => DType::F32,
            (_, dtype) => dtype,
        }
    }

    /// The registry model whose spec describes this pipeline.
    fn template(&self) -> Result<&'static CandleModelInfo, ServeError> {
        crate::registry::template(backend_of(self.pipeline))
    }

    /// The run profile: the registry template's, with these options' device, dtype, staging
    /// and text length.
    pub fn profile(&self, device: DeviceId) -> Result<RunProfile, ServeError> {
        let entry = crate::registry::spec(self.template()?)?;
        let mut p = entry
            .spec
            .spec
            .profile()
            .cloned()
            .unwrap_or_else(|| entry.entry.profile.clone());
        p.device = match device {
            DeviceId::Cpu => model_spec::Device::Cpu,
            DeviceId::Cuda(_) => model_spec::Device::Cuda,
            DeviceId::Metal(_) => model_spec::Device::Metal,
        };
        p.load_dtype = Some(match self.dtype_on(device) {
            DType::F16 => model_spec::DType::F16,
            DType::BF16 => model_spec::DType::BF16,
            DType::F64 => model_spec::DType::F64,
            _ => model_spec::DType::F32,
        });
        p.activation_dtype = None;
        p.co_resident = !self.staged;
        if let Some(t) = self.text_tokens {
            p.text_tokens = Some(t as u64);
        }
        let limit = entry.spec.spec.serving_u64("max_input_tokens");
        if let (Some(t), Some(limit)) = (p.text_tokens, limit) {
            p.text_tokens = Some(t.min(limit));
        }
        Ok(p)
    }

    /// The memory plan: from the checkpoint's own configs and headers when its files are
    /// there, else from the registry spec (the real model's figures).
    pub fn plan(&self, source: &ModelSource, device: DeviceId) -> Result<MemoryPlan, ServeError> {
        let profile = self.profile(device)?;
        match source.resolve().ok().filter(|p| p.is_dir()) {
            Some(dir) => MemoryPlan::checkpoint(backend_of(self.pipeline), &dir, profile),
            None => MemoryPlan::registry(self.template()?, profile),
        }
    }

    /// The request limits: the configured ones, else the spec's `max_width`/`max_height`
    /// (capped, for SD3, by what the checkpoint's position embedding covers) and the steps
    /// the pipeline is distilled for.
    pub fn limits_for(&self, plan: &MemoryPlan) -> Limits {
        if let Some(l) = &self.limits {
            return l.clone();
        }
        let spec = plan.spec();
        let serving = |k: &str| spec.serving_u64(k).map(|v| v as u32);
        let (mut w, mut h) = (
            serving("max_width").unwrap_or(2048),
            serving("max_height").unwrap_or(2048),
        );
        let mut source = format!("`max_width`/`max_height` of the {} spec", spec.name);
        if self.pipeline == Pipeline::Sd3
            && let Some(t) = spec.components.iter().find(|c| c.name == "transformer")
            && let (Some(pos), Some(patch)) =
                (t.arch_u64("pos_embed_max_size"), t.arch_u64("patch_size"))
        {
            let side = mmdit::TransformerConfig::side(pos, patch);
            if side < w.min(h) {
                source = format!("the transformer's {pos}×{pos}-patch position embedding");
            }
            (w, h) = (w.min(side), h.min(side));
        }
        Limits {
            max_width: w,
            max_height: h,
            min_steps: 1,
            max_steps: self.pipeline.max_steps(),
            size_source: source,
        }
    }
}

/// The registry backend of a pipeline.
pub fn backend_of(pipeline: Pipeline) -> model_registry::Backend {
    match pipeline {
        Pipeline::Flux => model_registry::Backend::Flux,
        Pipeline::Sd3 => model_registry::Backend::Sd3,
    }
}
