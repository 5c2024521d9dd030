//! The serving layer's one error type. Every variant names the model; input errors say which
//! input and what would be accepted, memory errors carry the figures (need, free, budget) so a
//! caller can tell a momentary shortage from a request that can never run, and
//! [`ServeError::retry_after`] says when trying again makes sense.

use std::sync::Arc;
use std::time::Duration;

use model_networks::diffusion::Stage;
use model_pool::{ByteSize, DeviceId, PoolError};
use model_registry::Capability;
use model_runtime::BackendError;
use model_runtime::error::InputError;

/// Why a request (or a model's configuration) was refused or failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The pool refused or failed the request: unknown model, never fits (the estimate is
    /// larger than the device budget), busy, load failure, timeout, shutdown …
    #[error(transparent)]
    Pool(#[from] PoolError),

    /// A registry key was asked for that the registry does not have.
    #[error(
        "`{model}` is not in the registry; give its files and architecture to serve it (`--arch`), \
         or pick a registry model (`candle-pool list`)"
    )]
    NotInRegistry {
        /// The key asked for.
        model: String,
    },

    /// The compiled registry could not be read back (a bug: the build checked every spec).
    #[error("the compiled registry: {message}")]
    Registry {
        /// What failed.
        message: String,
    },

    /// A model's configuration cannot work (no files where they should be, a backend that
    /// does not match the files, a capability option on a model of another capability).
    #[error("model `{model}`: {reason}")]
    Config {
        /// The model.
        model: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The model does not do what was asked (images sent to a text embedder, a generation
    /// request to an embedder …).
    #[error("model `{model}` is a {capability} model; it cannot {asked}")]
    WrongCapability {
        /// The model.
        model: String,
        /// What it does.
        capability: Capability,
        /// What was asked of it.
        asked: &'static str,
    },

    /// An input of the request cannot be taken (empty, longer than the limit).
    #[error("model `{model}`: {source}")]
    Input {
        /// The model.
        model: String,
        /// Which input and why.
        #[source]
        source: InputError,
    },

    /// The model's request queue is full.
    #[error(
        "model `{model}` is busy: {limit} requests are already queued; retry after {retry_after:?}"
    )]
    Busy {
        /// The model.
        model: String,
        /// The queue bound.
        limit: usize,
        /// A retry hint: the time the last batch took.
        retry_after: Duration,
    },

    /// The model would fit in the budget, but no Candle backend can run its architecture
    /// (Kimi K2 is a `deepseek2` GGUF; candle has no loader for it). Refused before anything
    /// is reserved, evicted or read.
    #[error(
        "model `{model}`: no backend for architecture {architecture} (its estimate of {need} would fit the \
         {budget} {device} budget, but candle has no loader for this architecture); serve it with a runtime \
         that has one, e.g. llama.cpp"
    )]
    NoBackend {
        /// The model.
        model: String,
        /// The architecture, as GGUF names it (`general.architecture`).
        architecture: String,
        /// Resident bytes plus one request's working memory, from the estimate.
        need: ByteSize,
        /// The device's whole budget.
        budget: ByteSize,
        /// The device it was configured for.
        device: DeviceId,
    },

    /// The prompt plus the tokens asked for do not fit the request's context: the smaller of
    /// the model's own maximum and the context whose KV cache each request reserves.
    #[error(
        "model `{model}`: {prompt_tokens} prompt tokens + {max_tokens} new tokens exceed the context limit of \
         {limit} tokens (model maximum {model_max}, KV cache reserved per request for {reserved} tokens); \
         shorten the prompt, ask for fewer tokens, or configure a larger `context_tokens`"
    )]
    ContextTooLong {
        /// The model.
        model: String,
        /// Tokens of the templated prompt (image tokens included).
        prompt_tokens: usize,
        /// New tokens asked for.
        max_tokens: usize,
        /// `min(model_max, reserved)`.
        limit: usize,
        /// The model's maximum context (GGUF `context_length` / `max_position_embeddings`).
        model_max: usize,
        /// Tokens the per-request KV reservation covers.
        reserved: usize,
    },

    /// The request is malformed (no messages, zero `max_tokens`, a sampling value out of
    /// range, an empty prompt, a size or step count the model does not take …).
    #[error("model `{model}`: invalid request: {reason}")]
    InvalidRequest {
        /// The model.
        model: String,
        /// The request field at fault (`prompt`, `size`, `steps`, `top_p` …), where one is.
        param: Option<&'static str>,
        /// What is wrong and what would be accepted.
        reason: String,
    },

    /// A text-to-image request's peak (resident weights plus its largest stage) exceeds the
    /// whole device budget: it can never run there.
    #[error(
        "model `{model}`: a {width}×{height} image needs {need} on {device} at its peak, more than the whole {budget} budget; \
         ask for a smaller image, or serve the model staged (text encoders, denoiser and decoder loaded one at a time)"
    )]
    ImageNeverFits {
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

    /// The caller gave up (the request future was dropped or timed out); the work stopped at
    /// its next step.
    #[error("model `{model}`: the request was cancelled")]
    Cancelled {
        /// The model.
        model: String,
    },

    /// Loading the model, reading its files or running the network failed.
    #[error("model `{model}`: {source}")]
    Backend {
        /// The model.
        model: String,
        /// What failed (shared: one failed batch fails each of its requests).
        #[source]
        source: Arc<BackendError>,
    },

    /// Fetching the model's files from the Hub failed (nothing partial is left at a final
    /// path; an interrupted file resumes on the next try).
    #[error("model `{model}`: {source}")]
    Download {
        /// The model.
        model: String,
        /// What failed.
        #[source]
        source: Arc<model_hub::HubError>,
    },
}

impl ServeError {
    /// When retrying makes sense (busy queues, load cooldowns).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ServeError::Busy { retry_after, .. } => Some(*retry_after),
            ServeError::Pool(e) => e.retry_after(),
            _ => None,
        }
    }

    /// The model the error is about, where it names one.
    pub fn model(&self) -> Option<&str> {
        match self {
            ServeError::Pool(e) => Some(e.model()),
            ServeError::NotInRegistry { model } | ServeError::Config { model, .. } => Some(model),
            ServeError::Registry { .. } => None,
            ServeError::WrongCapability { model, .. }
            | ServeError::Input { model, .. }
            | ServeError::Busy { model, .. }
            | ServeError::NoBackend { model, .. }
            | ServeError::ContextTooLong { model, .. }
            | ServeError::InvalidRequest { model, .. }
            | ServeError::ImageNeverFits { model, .. }
            | ServeError::Cancelled { model }
            | ServeError::Backend { model, .. }
            | ServeError::Download { model, .. } => Some(model),
        }
    }

    /// A backend failure of `model`; input errors stay input errors.
    pub fn backend(model: &str, source: impl Into<BackendError>) -> Self {
        match source.into() {
            BackendError::Input(source) => ServeError::Input {
                model: model.to_owned(),
                source,
            },
            source => ServeError::Backend {
                model: model.to_owned(),
                source: Arc::new(source),
            },
        }
    }

    /// The same failure, attributed to `model` (errors found while reading a checkpoint name
    /// its path until the caller knows the model's key).
    pub fn for_model(self, model: &str) -> Self {
        match self {
            ServeError::Backend { source, .. } => ServeError::Backend {
                model: model.to_owned(),
                source,
            },
            ServeError::Input { source, .. } => ServeError::Input {
                model: model.to_owned(),
                source,
            },
            other => other,
        }
    }

    /// A malformed request to `model`.
    pub fn invalid(model: &str, reason: impl Into<String>) -> Self {
        ServeError::InvalidRequest {
            model: model.to_owned(),
            param: None,
            reason: reason.into(),
        }
    }

    /// A request to `model` whose field `param` is wrong.
    pub fn invalid_field(model: &str, param: &'static str, reason: impl Into<String>) -> Self {
        ServeError::InvalidRequest {
            model: model.to_owned(),
            param: Some(param),
            reason: reason.into(),
        }
    }
}

/// Lower-case name of a text-to-image stage, as errors and reports print it.
pub fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Main => "main",
        Stage::TextEncoder => "text-encoder",
        Stage::Denoiser => "denoiser",
        Stage::Decoder => "decoder",
    }
}
