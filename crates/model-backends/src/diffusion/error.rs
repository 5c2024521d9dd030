//! Why an image was not generated. Request errors name the model and the value at fault, and
//! say what would be accepted; memory errors carry the figures (need, free, budget) so that a
//! caller can tell a momentary shortage from a request that can never run.

use std::time::Duration;

use model_pool::{ByteSize, DeviceId, PoolError};

use super::Stage;
use crate::error::BackendError;

/// Why a text-to-image request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The prompt is empty or only whitespace.
    #[error("model `{model}`: the prompt is empty; describe the image to generate")]
    EmptyPrompt {
        /// The model.
        model: String,
    },

    /// Width or height is zero or not a multiple of 16 (the VAE downsamples by 8 and the
    /// transformers patchify the latents 2×2).
    #[error(
        "model `{model}`: {width}×{height} cannot be generated: width and height must be positive multiples of 16"
    )]
    SizeNotMultipleOf16 {
        /// The model.
        model: String,
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },

    /// Width or height exceeds the model's limit.
    #[error(
        "model `{model}`: {width}×{height} is larger than its limit of {max_width}×{max_height} ({why}); ask for a smaller image"
    )]
    TooLarge {
        /// The model.
        model: String,
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// Largest width accepted.
        max_width: u32,
        /// Largest height accepted.
        max_height: u32,
        /// Where the limit comes from.
        why: String,
    },

    /// The step count is outside what the model supports.
    #[error(
        "model `{model}`: {steps} steps is outside {min}–{max}, the range this model is distilled for"
    )]
    Steps {
        /// The model.
        model: String,
        /// Requested steps.
        steps: u32,
        /// Fewest steps accepted.
        min: u32,
        /// Most steps accepted.
        max: u32,
    },

    /// A stage's memory is not free now (other requests or models hold it). Retrying later
    /// may succeed.
    #[error(
        "model `{model}`: the {} stage needs {need} on {device}, but only {free} of the {budget} budget is free; \
         retry when other requests finish, or ask for a smaller image",
        stage_name(*stage)
    )]
    InsufficientMemory {
        /// The model.
        model: String,
        /// The stage that could not reserve its memory.
        stage: Stage,
        /// The device.
        device: DeviceId,
        /// Bytes the stage needs.
        need: ByteSize,
        /// Bytes free when it asked.
        free: ByteSize,
        /// The device budget.
        budget: ByteSize,
    },

    /// The request's peak (resident weights plus its largest stage) exceeds the whole
    /// device budget: it can never run there.
    #[error(
        "model `{model}`: a {width}×{height} image needs {need} on {device} at its peak, more than the whole {budget} budget; \
         ask for a smaller image, or serve the model staged (text encoders, denoiser and decoder loaded one at a time)"
    )]
    NeverFits {
        /// The model.
        model: String,
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// The device.
        device: DeviceId,
        /// Peak bytes of the request.
        need: ByteSize,
        /// The device budget.
        budget: ByteSize,
    },

    /// The caller gave up (the request future was dropped or timed out); generation stopped
    /// at the next step.
    #[error("model `{model}`: the request was cancelled")]
    Cancelled {
        /// The model.
        model: String,
    },

    /// The model is not a text-to-image model this pool serves.
    #[error("model `{model}` is not a text-to-image model of this pool")]
    UnknownModel {
        /// The key asked for.
        model: String,
    },

    /// The pool refused or failed the request (never fits, load failure, timeout, shutdown …).
    #[error(transparent)]
    Pool(#[from] PoolError),

    /// Loading a stage's weights or running the network failed.
    #[error("model `{model}`: {source}")]
    Backend {
        /// The model.
        model: String,
        /// What failed.
        #[source]
        source: BackendError,
    },
}

impl ImageError {
    /// When retrying makes sense: memory that other requests hold, busy queues, load
    /// cooldowns.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ImageError::InsufficientMemory { .. } => Some(Duration::from_secs(1)),
            ImageError::Pool(e) => e.retry_after(),
            _ => None,
        }
    }

    pub(crate) fn backend(model: &str, source: impl Into<BackendError>) -> Self {
        ImageError::Backend {
            model: model.to_owned(),
            source: source.into(),
        }
    }
}

/// Lower-case name of a stage, as errors and reports print it.
pub fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Main => "main",
        Stage::TextEncoder => "text-encoder",
        Stage::Denoiser => "denoiser",
        Stage::Decoder => "decoder",
    }
}
