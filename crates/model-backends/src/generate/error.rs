//! Why a generation request was refused or stopped. Every variant names the model; memory
//! refusals carry the bytes and the budget, context refusals the token counts and the limit
//! that was hit, so the message alone says what to change.

use model_pool::{ByteSize, DeviceId, PoolError};

/// Why a `generate` or `describe_image` request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// The pool refused or failed the request: unknown model, never fits (the estimate is
    /// larger than the device budget), busy, load failure, timeout, shutdown …
    #[error(transparent)]
    Pool(#[from] PoolError),

    /// The model would fit in the budget, but no Candle backend can run its architecture
    /// (Kimi K2 is a `deepseek2` GGUF; candle has no loader for it). Refused before anything
    /// is reserved or evicted.
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

    /// The request is malformed (no messages, zero `max_tokens`, a sampling value out of range).
    #[error("model `{model}`: invalid request: {reason}")]
    InvalidRequest {
        /// The model.
        model: String,
        /// What is wrong.
        reason: String,
    },

    /// The model cannot do what was asked (an image sent to a text-only model).
    #[error("model `{model}` cannot {what}")]
    Unsupported {
        /// The model.
        model: String,
        /// What was asked for.
        what: &'static str,
    },

    /// Tokenizing, decoding an image or running the model failed.
    #[error("model `{model}`: {message}")]
    Backend {
        /// The model.
        model: String,
        /// The backend's message.
        message: String,
    },
}

impl GenerateError {
    pub(crate) fn backend(model: &str, message: impl std::fmt::Display) -> Self {
        GenerateError::Backend {
            model: model.to_owned(),
            message: message.to_string(),
        }
    }

    pub(crate) fn invalid(model: &str, reason: impl Into<String>) -> Self {
        GenerateError::InvalidRequest {
            model: model.to_owned(),
            reason: reason.into(),
        }
    }

    /// When retrying makes sense (busy queues, load cooldowns).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            GenerateError::Pool(e) => e.retry_after(),
            _ => None,
        }
    }
}
