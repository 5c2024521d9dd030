//! How one text-to-image model is served: its files, pipeline, device, dtype, whether its
//! components are co-resident or staged, and how the pool keeps it.

use std::time::Duration;

use candle_core::DType;
use model_pool::{DeviceId, ModelSpec, Tier};
use model_spec::RunProfile;

use super::plan::MemoryPlan;
use super::request::Limits;
use super::{Pipeline, sd3};
use crate::config::ModelSource;
use crate::error::BackendError;

/// Default deadline of one request (waiting, loading and generating): image generation on a
/// CPU takes minutes, far beyond the pool's default for embeddings.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How to serve one text-to-image model.
#[derive(Debug, Clone)]
pub struct DiffusionConfig {
    /// Key requests use (the registry key for registry models).
    pub key: String,
    /// The model code.
    pub pipeline: Pipeline,
    /// Where the files are.
    pub source: ModelSource,
    /// Where it runs.
    pub device: DeviceId,
    /// Weight and activation dtype.
    pub dtype: DType,
    /// Components loaded stage by stage (`co_resident = false`) instead of all at once.
    pub staged: bool,
    /// T5 tokens per prompt; the run profile's (256) when `None`.
    pub text_tokens: Option<usize>,
    /// Request limits; the spec's serving facts and the checkpoint's own limits when `None`.
    pub limits: Option<Limits>,
    /// Pool tier.
    pub tier: Tier,
    /// Pool priority.
    pub priority: i32,
    /// Most requests waiting for the model.
    pub max_queue: usize,
    /// Deadline of one request.
    pub request_timeout: Duration,
}

impl DiffusionConfig {
    /// A registry model: pipeline, dtype and staging from its run profile. The device stays
    /// the CPU (set [`device`](Self::device) for a GPU build).
    pub fn registry(key: &str, source: impl Into<ModelSource>) -> Result<Self, BackendError> {
        let pipeline = Pipeline::from_key(key).ok_or_else(|| BackendError::UnknownFamily {
            key: key.to_owned(),
            why:
                "not one of the registry's text-to-image models (FLUX.1-schnell, SD3.5 Large Turbo)"
                    .into(),
        })?;
        let info = crate::registry::lookup(key)?;
        let profile = &info.model.default_profile;
        let mut config = DiffusionConfig::new(key, pipeline, source);
        if let Some(d) = profile.load_dtype {
            config.dtype = crate::device::parse_dtype(d)?;
        }
        config.staged = !profile.co_resident;
        Ok(config)
    }

    /// Any checkpoint of `pipeline`'s architecture, on the CPU in F32, co-resident.
    pub fn new(key: impl Into<String>, pipeline: Pipeline, source: impl Into<ModelSource>) -> Self {
        DiffusionConfig {
            key: key.into(),
            pipeline,
            source: source.into(),
            device: DeviceId::Cpu,
            dtype: DType::F32,
            staged: false,
            text_tokens: None,
            limits: None,
            tier: Tier::Warm {
                idle_ttl: ModelSpec::DEFAULT_IDLE_TTL,
            },
            priority: 0,
            max_queue: 8,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Sets the device.
    pub fn device(mut self, device: DeviceId) -> Self {
        self.device = device;
        self
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

    /// Sets the pool tier.
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    /// Sets the request deadline.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The run profile: the registry model's, with this configuration's device, dtype, staging
    /// and text length.
    pub fn profile(&self) -> Result<RunProfile, BackendError> {
        let reg = crate::registry::specs()?;
        let key = self.pipeline.registry_key();
        let entry = reg.get(key).ok_or_else(|| BackendError::UnknownFamily {
            key: key.to_owned(),
            why: "not in the registry's model-cards".into(),
        })?;
        let mut p = entry
            .spec
            .spec
            .profile()
            .cloned()
            .unwrap_or_else(|| entry.entry.profile.clone());
        p.device = match self.device {
            DeviceId::Cpu => model_spec::Device::Cpu,
            DeviceId::Cuda(_) => model_spec::Device::Cuda,
            DeviceId::Metal(_) => model_spec::Device::Metal,
        };
        p.load_dtype = Some(match self.dtype {
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
    pub fn plan(&self) -> Result<MemoryPlan, BackendError> {
        let profile = self.profile()?;
        match self.source.resolve() {
            Ok(dir) => MemoryPlan::checkpoint(self.pipeline, &dir, profile),
            Err(_) => MemoryPlan::registry(self.pipeline, profile),
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
            let side = sd3::TransformerConfig::side(pos, patch);
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

    /// The pool's view: resident bytes from the plan, no fixed per-request bytes (each stage
    /// reserves its own, sized to the request), one request at a time.
    pub fn pool_spec(&self, plan: &MemoryPlan) -> Result<ModelSpec, BackendError> {
        Ok(
            ModelSpec::new(self.key.clone(), self.device, plan.resident_bytes()?, 0)
                .tier(self.tier)
                .priority(self.priority)
                .max_concurrency(1)
                .max_queue(self.max_queue),
        )
    }
}
