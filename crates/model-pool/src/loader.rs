//! The plug for backends: how a model is loaded and unloaded. The Candle backends implement
//! [`ModelLoader`]; tests implement it with fakes that fail on purpose.

use std::future::Future;
use std::sync::Arc;

use crate::error::LoadError;
use crate::spec::ModelSpec;

/// A loaded model, with the memory the backend measured while loading it.
#[derive(Debug)]
pub struct Loaded<M> {
    /// The model, shared by every lease while it is loaded.
    pub model: M,
    /// Bytes the load really took (RSS delta on CPU, device-memory delta on a GPU), if the
    /// backend measured it. Shown next to the estimate in status; an estimate that was
    /// exceeded is logged.
    pub measured_bytes: Option<u64>,
}

impl<M> Loaded<M> {
    /// A model without a measurement.
    pub fn new(model: M) -> Self {
        Loaded {
            model,
            measured_bytes: None,
        }
    }

    /// A model with a measurement.
    pub fn measured(model: M, bytes: u64) -> Self {
        Loaded {
            model,
            measured_bytes: Some(bytes),
        }
    }
}

/// Loads and unloads models for one pool.
///
/// The pool decides *when* (single-flight: at most one load per model at a time, never a
/// load that does not fit); the loader only does the work. Loads run on their own Tokio
/// task; one that panics is contained and reported as a failed load. A loader that blocks
/// (reading gigabytes of weights) should do so inside `tokio::task::spawn_blocking` so that
/// it does not stall other requests.
pub trait ModelLoader: Send + Sync + 'static {
    /// The loaded model.
    type Model: Send + Sync + 'static;

    /// Loads `spec.key` onto `spec.device`. The pool has already reserved
    /// `spec.resident_bytes` for it. The future may be dropped before it completes when
    /// every waiter gives up; it must then free what it allocated.
    fn load(
        &self,
        spec: &ModelSpec,
    ) -> impl Future<Output = Result<Loaded<Self::Model>, LoadError>> + Send;

    /// Frees a model. The pool calls it only when no lease holds the model, so `model` is
    /// the last reference; the default drops it. The pool returns the model's reservation
    /// when this completes, so a backend whose allocator frees lazily should wait here until
    /// the memory is really back (Ollama waits for VRAM to recover after an unload).
    fn unload(
        &self,
        spec: &ModelSpec,
        model: Arc<Self::Model>,
    ) -> impl Future<Output = Result<(), LoadError>> + Send {
        let _ = spec;
        async move {
            drop(model);
            Ok(())
        }
    }
}
