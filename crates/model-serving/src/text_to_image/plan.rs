//! The memory a text-to-image model holds and each request reserves, from the registry's
//! estimator, per component and per stage, at the size the request asks for.
//!
//! The pool holds `resident_bytes` while the model is loaded: every component's weights plus
//! the runtime overhead when the run profile is co-resident, the overhead alone when staged.
//! Each stage of a request then reserves from the governor exactly what it needs on top:
//! its working set at the requested resolution (the largest of its components'), plus its
//! components' weights when staged. The stages run one after another, so the peak is
//! `resident + the largest stage`, which is the estimator's total for that resolution:
//! estimate, reservations and staging are one computation. Every part carries the profile's
//! margin, as the estimate does: measured stage peaks run a few percent above the bare
//! formulas (FLUX's denoiser at 1024²: 9,472 MiB measured against 9,152 without the margin,
//! 10,525 with it).
//!
//! The text encoders run one after another and, when staged, each is released before the
//! next loads, so the staged text stage reserves its largest encoder (weights + working
//! set), as the estimator counts it.

use std::path::Path;

use model_networks::diffusion::Stage;
use model_registry::{Backend, CandleModelInfo};
use model_runtime::BackendError;
use model_spec::estimate::MemoryEstimate;
use model_spec::{ModelSpec, RunProfile};

use crate::error::ServeError;

/// The stages of a request, in the order they run.
pub const STAGES: [Stage; 3] = [Stage::TextEncoder, Stage::Denoiser, Stage::Decoder];

/// A model's spec (facts of its checkpoint) and run profile.
#[derive(Debug, Clone)]
pub struct MemoryPlan {
    spec: ModelSpec,
    profile: RunProfile,
}

/// What one stage reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageMemory {
    /// The stage.
    pub stage: Stage,
    /// Weights loaded for the stage (0 when co-resident: they are part of the resident bytes).
    pub weights_bytes: u64,
    /// Its working set at the requested size.
    pub activations_bytes: u64,
}

impl StageMemory {
    /// Bytes the stage reserves.
    pub fn bytes(&self) -> u64 {
        self.weights_bytes + self.activations_bytes
    }
}

/// The memory of one request.
#[derive(Debug, Clone)]
pub struct RequestMemory {
    /// Width asked for.
    pub width: u32,
    /// Height asked for.
    pub height: u32,
    /// Held by the pool while the model is loaded.
    pub resident_bytes: u64,
    /// Reserved per stage, in run order.
    pub stages: Vec<StageMemory>,
    /// The estimator's figure for this size.
    pub estimate: MemoryEstimate,
}

impl RequestMemory {
    /// The reservation of `stage`.
    pub fn stage(&self, stage: Stage) -> Option<&StageMemory> {
        self.stages.iter().find(|s| s.stage == stage)
    }

    /// The largest stage: what the request's lease holds on top of the resident bytes (the
    /// stages run one after another within it).
    pub fn lease_bytes(&self) -> u64 {
        self.stages
            .iter()
            .map(StageMemory::bytes)
            .max()
            .unwrap_or(0)
    }

    /// Resident bytes plus the largest stage: the most the request holds at once.
    pub fn peak_bytes(&self) -> u64 {
        self.resident_bytes
            + self
                .stages
                .iter()
                .map(StageMemory::bytes)
                .max()
                .unwrap_or(0)
    }
}

impl MemoryPlan {
    /// The registry model `info`'s spec as it is, under `profile`.
    pub fn registry(info: &CandleModelInfo, profile: RunProfile) -> Result<Self, ServeError> {
        Ok(MemoryPlan {
            spec: crate::registry::spec(info)?.spec.spec.clone(),
            profile,
        })
    }

    /// The spec of `backend`'s registry model with the facts of the checkpoint in `dir`
    /// (architecture values from its configs, tensor inventories from its safetensors
    /// headers), under `profile`: a fine-tune, a model of other sizes, or a tiny test model.
    pub fn checkpoint(
        backend: Backend,
        dir: &Path,
        profile: RunProfile,
    ) -> Result<Self, ServeError> {
        let (spec, profile) = crate::checkpoint::checkpoint_spec(backend, dir, Some(&profile))?;
        Ok(MemoryPlan { spec, profile })
    }

    /// The spec the figures come from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The run profile (device, dtype, staging, text length, default size).
    pub fn profile(&self) -> &RunProfile {
        &self.profile
    }

    /// Whether components are loaded stage by stage.
    pub fn staged(&self) -> bool {
        !self.profile.co_resident
    }

    /// The estimator's figure at `width × height`.
    pub fn estimate(&self, width: u32, height: u32) -> Result<MemoryEstimate, BackendError> {
        let mut p = self.profile.clone();
        p.width = Some(u64::from(width));
        p.height = Some(u64::from(height));
        model_spec::estimate(&self.spec, &p)
            .map_err(|e| BackendError::config(self.spec.registry_key.get_ref(), e.to_string()))
    }

    /// Resident bytes (independent of the size asked for).
    pub fn resident_bytes(&self) -> Result<u64, BackendError> {
        let (w, h) = self.default_size();
        Ok(self.request(w, h)?.resident_bytes)
    }

    /// The run profile's image size (1024×1024 when it names none).
    pub fn default_size(&self) -> (u32, u32) {
        (
            self.profile.width.unwrap_or(1024) as u32,
            self.profile.height.unwrap_or(1024) as u32,
        )
    }

    /// What a `width × height` request holds: resident bytes and each stage's reservation.
    pub fn request(&self, width: u32, height: u32) -> Result<RequestMemory, BackendError> {
        let estimate = self.estimate(width, height)?;
        let staged = self.staged();
        let weights: u64 = estimate.components.iter().map(|c| c.weights_bytes).sum();
        // The profile's margin on each part (not a share of this size's margin): the resident
        // bytes are then the same whatever size a request asks for.
        let percent = self.profile.margin_percent;
        let m = |b: u64| b + model_spec::estimate::margin_on(b, percent);
        let resident_bytes = m(estimate.overhead_bytes + if staged { 0 } else { weights });
        let stages = STAGES
            .iter()
            .map(|&stage| {
                let parts = estimate.components.iter().filter(|c| c.stage == stage);
                let widest = parts
                    .clone()
                    .map(|c| c.activations_bytes)
                    .max()
                    .unwrap_or(0);
                let (weights_bytes, activations_bytes) = match (staged, stage) {
                    (false, _) => (0, widest),
                    // One encoder loaded at a time: the stage peaks at the largest.
                    (true, Stage::TextEncoder) => parts
                        .map(|c| (c.weights_bytes, c.activations_bytes))
                        .max_by_key(|(w, a)| w + a)
                        .unwrap_or((0, 0)),
                    (true, _) => (parts.map(|c| c.weights_bytes).sum(), widest),
                };
                StageMemory {
                    stage,
                    weights_bytes: m(weights_bytes),
                    activations_bytes: m(activations_bytes),
                }
            })
            .collect();
        Ok(RequestMemory {
            width,
            height,
            resident_bytes,
            stages,
            estimate,
        })
    }

    /// T5 tokens per prompt: the profile's `text_tokens`, at most the model's input limit.
    pub fn text_tokens(&self) -> usize {
        let profile = self.profile.text_tokens.unwrap_or(256);
        let limit = self.spec.serving_u64("max_input_tokens").unwrap_or(profile);
        profile.min(limit) as usize
    }
}
