//! The backend layer's one error type: loading a checkpoint or running a network. Every
//! variant names the file, model or device at fault and, where there is one, the fix.
//!
//! Candle's errors arrive here through [`From`], which drops the backtrace candle attaches
//! when `RUST_BACKTRACE` is set (a one-line error stays one line) and recognises a device
//! out of memory as [`BackendError::OutOfMemory`], so that the pool can evict and retry
//! without searching messages.

use std::path::PathBuf;

/// Why one request's inputs cannot be embedded. The index is the input's position in its
/// request, so a caller can tell which text to fix; the serving layer adds the model's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The request had no inputs, or an input was empty.
    #[error("{}", match index {
        Some(i) => format!("input {i} is empty; every text must contain something to embed"),
        None => "the request has no inputs; pass at least one text or image".to_owned(),
    })]
    Empty {
        /// The empty input, or `None` when the list itself was empty.
        index: Option<usize>,
    },
    /// An input is longer than the limit and the model refuses long inputs.
    #[error(
        "input {index} has {tokens} tokens, more than the limit of {limit}; shorten it or \
         serve the model with `Overflow::Truncate`"
    )]
    TooLong {
        /// The input's index.
        index: usize,
        /// Its length in tokens (special tokens included).
        tokens: usize,
        /// The limit.
        limit: usize,
    },
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

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
    Candle(candle_core::Error),

    /// The device ran out of memory (CUDA reports it; on the CPU an allocation that fails
    /// aborts the process, which is what the pool's admission prevents).
    #[error("out of memory: {message}")]
    OutOfMemory {
        /// What the driver said.
        message: String,
    },

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

    /// An input of the request cannot be taken as it is.
    #[error(transparent)]
    Input(#[from] InputError),

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
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BackendError::Io {
            path: path.into(),
            source,
        }
    }

    /// A file at `path` (or a value read from it) that is not what the model needs.
    pub fn config(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        BackendError::Config {
            path: path.into(),
            message: message.to_string(),
        }
    }

    /// Whether the device ran out of memory.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, BackendError::OutOfMemory { .. })
    }
}

impl From<candle_core::Error> for BackendError {
    fn from(e: candle_core::Error) -> Self {
        let e = without_backtrace(e);
        if is_device_oom(&e) {
            return BackendError::OutOfMemory {
                message: e.to_string(),
            };
        }
        BackendError::Candle(e)
    }
}

/// The text a panic was raised with (`panic!` with a literal or a formatted message), or
/// "non-string panic".
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".to_owned())
}

/// Runs `f`, turning a panic into [`BackendError::Config`] on `path`. The tokenizers crate
/// panics on some malformed vocabularies (a slice index in its BPE merge table) instead of
/// returning an error; a corrupt file must give an error naming it, not take the process down.
pub fn without_panics<T>(
    path: &std::path::Path,
    f: impl FnOnce() -> Result<T, BackendError>,
) -> Result<T, BackendError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic_message(panic.as_ref());
        Err(BackendError::config(
            path,
            format!("cannot be read ({message}); the file is corrupt"),
        ))
    })
}

/// `e` without the backtraces candle wraps around errors when `RUST_BACKTRACE` is set.
pub fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        candle_core::Error::Context { inner, context } => candle_core::Error::Context {
            inner: Box::new(without_backtrace(*inner)),
            context,
        },
        candle_core::Error::WithPath { inner, path } => candle_core::Error::WithPath {
            inner: Box::new(without_backtrace(*inner)),
            path,
        },
        other => other,
    }
}

/// Whether `e` is the CUDA driver's out-of-memory result (the only backend that reports one;
/// Metal builds report a failed buffer allocation as a message, which stays `Candle`).
fn is_device_oom(e: &candle_core::Error) -> bool {
    match e {
        candle_core::Error::Context { inner, .. } | candle_core::Error::WithPath { inner, .. } => {
            is_device_oom(inner)
        }
        #[cfg(feature = "cuda")]
        candle_core::Error::Cuda(inner) => {
            use candle_core::cuda_backend::CudaError;
            use candle_core::cuda_backend::cudarc::driver::sys::CUresult;
            matches!(
                inner.downcast_ref::<CudaError>(),
                Some(CudaError::Cuda(d)) if d.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY
            )
        }
        _ => false,
    }
}
