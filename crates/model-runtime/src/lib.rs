//! What every Candle backend of the pool stands on.
//!
//! * [`device`] — the one place a pool [`DeviceId`](model_pool::DeviceId) becomes a Candle
//!   device (with the cargo feature to enable when it is not compiled in), and a spec dtype a
//!   Candle dtype.
//! * [`model_dir`] — a checkpoint directory in the Hugging Face Hub layout, given directly or
//!   found in the Hub cache; [`safetensors`] — tensors read one at a time straight into the
//!   memory Candle keeps; [`gguf`] — GGUF headers, tensors and tokenizers.
//! * [`memory`] — resident memory of the process (RSS, anonymous and file-backed), a peak
//!   sampler, heap trimming, GPU memory probes; [`load`] — the measured load, serialized per
//!   device across the whole process so that each measurement belongs to one model.
//! * [`BackendError`] — the backend layer's one error type; device out-of-memory is its own
//!   variant.

pub mod device;
pub mod error;
pub mod gguf;
pub mod load;
pub mod memory;
pub mod model_dir;
pub mod safetensors;
pub mod tokenizer;

pub use device::{device, dtype_of, parse_dtype};
pub use error::BackendError;
pub use gguf::GgufFile;
pub use load::{LoadClock, LoadMeasurement, measure, measured_load, measured_load_blocking};
pub use model_dir::ModelDir;
