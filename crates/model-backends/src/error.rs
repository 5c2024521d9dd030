//! Errors. Loading errors name the model directory and the file; request errors name the model
//! and, where one input is at fault, its index, so a caller can tell which text to fix.

use std::path::PathBuf;
use std::time::Duration;

use model_pool::PoolError;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// A file the model needs is not in its directory.
    #[error(
        "{dir}: missing `{file}` ({why}); point the model at a directory in the Hugging Face Hub layout"
    )]
    MissingFile {
        /// The model directory.
        dir: PathBuf,
        /// The file, relative to `dir`.
        file: String,
        /// What it is needed for.
        why: &'static str,
    },

    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A JSON file (config.json, modules.json …) does not have the expected shape.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, from serde or from a check.
        message: String,
    },

    /// The tokenizer failed to load or to encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// Candle failed (loading a tensor, a shape mismatch in the forward pass …).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),

    /// The device is not compiled in or not present.
    #[error("device `{device}` is not available: {fix}")]
    DeviceUnavailable {
        /// The device asked for.
        device: model_pool::DeviceId,
        /// How to get it (which cargo feature to enable, or why the driver refused).
        fix: String,
    },

    /// The dtype cannot hold weights (an integer or quantized type was asked for).
    #[error("dtype `{0}` cannot be used to load a safetensors model; use F32, F16 or BF16")]
    UnsupportedDtype(String),

    /// No backend serves this model.
    #[error("no Candle backend serves `{key}`: {why}")]
    UnknownFamily {
        /// The model key or directory.
        key: String,
        /// What was looked at.
        why: String,
    },

    /// An image could not be decoded.
    #[error("image {index}: {message}")]
    Image {
        /// Index of the image in its request.
        index: usize,
        /// The decoder's message.
        message: String,
    },
}

impl BackendError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BackendError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        BackendError::Config {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// Why an embedding request was not answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The request had no inputs, or an input was empty.
    #[error("model `{model}`: {}", match index {
        Some(i) => format!("input {i} is empty; every text must contain something to embed"),
        None => "the request has no inputs; pass at least one text or image".to_owned(),
    })]
    EmptyInput {
        /// The model.
        model: String,
        /// The empty input, or `None` when the list itself was empty.
        index: Option<usize>,
    },

    /// An input is longer than the model's limit and the model refuses long inputs.
    #[error(
        "model `{model}`: input {index} has {tokens} tokens, more than the limit of {limit}; shorten it \
         or configure the model with `Overflow::Truncate`"
    )]
    TooLong {
        /// The model.
        model: String,
        /// The input's index in its request.
        index: usize,
        /// Its length in tokens (special tokens included).
        tokens: usize,
        /// The limit.
        limit: usize,
    },

    /// The model cannot embed this kind of input (images sent to a text-only model).
    #[error("model `{model}` cannot embed {what}")]
    Unsupported {
        /// The model.
        model: String,
        /// What was asked for.
        what: &'static str,
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
        /// A retry hint.
        retry_after: Duration,
    },

    /// The pool refused or failed the request (unknown model, never fits, load failure,
    /// timeout, shutdown …).
    #[error(transparent)]
    Pool(#[from] PoolError),

    /// Tokenizing or running the model failed.
    #[error("model `{model}`: {message}")]
    Backend {
        /// The model.
        model: String,
        /// The backend's message.
        message: String,
    },
}

impl EmbedError {
    /// When retrying makes sense (busy queues, load cooldowns).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EmbedError::Busy { retry_after, .. } => Some(*retry_after),
            EmbedError::Pool(e) => e.retry_after(),
            _ => None,
        }
    }
}
