//! Typed errors. Each names the model, and where memory is the reason, the bytes needed, the
//! budget and the device, so that the message alone tells an operator what to change.

use std::fmt;
use std::time::Duration;

use crate::device::DeviceId;
use crate::size::ByteSize;

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The key is not registered in this pool.
    #[error("model `{model}` is not registered in this pool")]
    UnknownModel {
        /// The key asked for.
        model: String,
    },

    /// The model needs more than the device's whole budget. Refused at once: evicting
    /// everything would not help, and trying anyway is the endless eviction loop of Ollama
    /// issue 18282.
    #[error(
        "model `{model}` needs {need} on {device} but the whole {device} budget is {budget}: it can never fit; \
         place it on a larger device or raise the budget"
    )]
    NeverFits {
        /// The model.
        model: String,
        /// Resident bytes plus one request's working memory.
        need: ByteSize,
        /// The device's whole budget.
        budget: ByteSize,
        /// The device.
        device: DeviceId,
    },

    /// The model would fit in the budget, but only by evicting pinned models, which are never
    /// evicted.
    #[error(
        "model `{model}` needs {need} on {device}, but pinned models hold {pinned} of the {budget} budget and are \
         never evicted; unpin one of them or raise the budget"
    )]
    BlockedByPinned {
        /// The model.
        model: String,
        /// Resident bytes plus one request's working memory.
        need: ByteSize,
        /// The device's whole budget.
        budget: ByteSize,
        /// Bytes held by pinned models on the device.
        pinned: ByteSize,
        /// The device.
        device: DeviceId,
    },

    /// A bounded queue is full.
    #[error(
        "model `{model}` is busy: the {queue} queue is full ({limit} waiting); retry after {retry_after:?}"
    )]
    Busy {
        /// The model.
        model: String,
        /// Which queue was full.
        queue: QueueKind,
        /// Its limit.
        limit: usize,
        /// When a retry is likely to be admitted, from recent lease and load times.
        retry_after: Duration,
    },

    /// The request's deadline passed.
    #[error("model `{model}`: request timed out after {waited:?} while {phase}")]
    Timeout {
        /// The model.
        model: String,
        /// What the request was doing when time ran out.
        phase: TimeoutPhase,
        /// How long it had been going.
        waited: Duration,
    },

    /// The loader returned an error.
    #[error("model `{model}` failed to load (attempt {attempts}): {message}")]
    LoadFailed {
        /// The model.
        model: String,
        /// Consecutive failed attempts so far.
        attempts: u32,
        /// The loader's message.
        message: String,
        /// The cooldown before the next attempt.
        retry_after: Duration,
    },

    /// The loader panicked. The panic was contained; the model is cooling down.
    #[error("model `{model}` panicked while loading (attempt {attempts}): {message}")]
    LoadPanicked {
        /// The model.
        model: String,
        /// Consecutive failed attempts so far.
        attempts: u32,
        /// The panic payload, if it was a string.
        message: String,
        /// The cooldown before the next attempt.
        retry_after: Duration,
    },

    /// The loader ran out of memory twice: once, then again after the pool evicted every idle
    /// model on the device.
    #[error(
        "model `{model}` ran out of memory loading on {device} (reserved {need} of the {budget} budget) even after \
         evicting idle models: {message}; the estimate is probably too low"
    )]
    LoadOutOfMemory {
        /// The model.
        model: String,
        /// What the pool had reserved for it.
        need: ByteSize,
        /// The device's whole budget.
        budget: ByteSize,
        /// The device.
        device: DeviceId,
        /// The loader's message.
        message: String,
        /// The cooldown before the next attempt.
        retry_after: Duration,
    },

    /// Recent loads failed and the model is in its cooldown.
    #[error(
        "model `{model}` is cooling down after {attempts} failed load(s) (last: {last_error}); retry after {retry_after:?}"
    )]
    CoolingDown {
        /// The model.
        model: String,
        /// Consecutive failed attempts.
        attempts: u32,
        /// The last failure.
        last_error: String,
        /// Time left in the cooldown.
        retry_after: Duration,
    },

    /// The work run under a lease panicked; the lease and its memory were returned.
    #[error("request on model `{model}` panicked: {message}")]
    RequestPanicked {
        /// The model.
        model: String,
        /// The panic payload, if it was a string.
        message: String,
    },

    /// The pool is shutting down or shut down.
    #[error("the pool is shutting down; model `{model}` is no longer served")]
    ShuttingDown {
        /// The model.
        model: String,
    },

    /// An invariant of the pool did not hold. Never expected; the request is refused rather
    /// than the process aborted.
    #[error("internal error serving model `{model}`: {message}; this is a bug in model-pool")]
    Internal {
        /// The model.
        model: String,
        /// What did not hold.
        message: String,
    },
}

impl PoolError {
    /// The model the error is about.
    pub fn model(&self) -> &str {
        match self {
            PoolError::UnknownModel { model }
            | PoolError::NeverFits { model, .. }
            | PoolError::BlockedByPinned { model, .. }
            | PoolError::Busy { model, .. }
            | PoolError::Timeout { model, .. }
            | PoolError::LoadFailed { model, .. }
            | PoolError::LoadPanicked { model, .. }
            | PoolError::LoadOutOfMemory { model, .. }
            | PoolError::CoolingDown { model, .. }
            | PoolError::RequestPanicked { model, .. }
            | PoolError::ShuttingDown { model }
            | PoolError::Internal { model, .. } => model,
        }
    }

    /// When retrying makes sense, as the `Retry-After` an HTTP front end should send; `None`
    /// for errors a retry will not fix.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PoolError::Busy { retry_after, .. }
            | PoolError::LoadFailed { retry_after, .. }
            | PoolError::LoadPanicked { retry_after, .. }
            | PoolError::LoadOutOfMemory { retry_after, .. }
            | PoolError::CoolingDown { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Which bounded queue refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// The model's own queue.
    Model,
    /// The pool-wide queue over all models.
    Global,
}

impl fmt::Display for QueueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueueKind::Model => "per-model",
            QueueKind::Global => "pool-wide",
        })
    }
}

/// What a timed-out request was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutPhase {
    /// Waiting in the queue for a load, memory or a concurrency slot.
    Queued,
    /// Running under its lease.
    Running,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Queued => "queued",
            TimeoutPhase::Running => "running",
        })
    }
}

/// Why a reservation was refused by the governor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// The governor has no budget for the device.
    #[error("no memory budget is configured for device {0}")]
    UnknownDevice(DeviceId),
    /// Not enough of the budget is left.
    #[error("cannot reserve {need} on {device}: {free} free of the {budget} budget")]
    Insufficient {
        /// The device.
        device: DeviceId,
        /// Bytes asked for.
        need: ByteSize,
        /// Bytes free at the time.
        free: ByteSize,
        /// The device's budget.
        budget: ByteSize,
    },
}

/// Why a governor could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GovernorError {
    /// Neither detection nor configuration gave any device.
    #[error("no device budget was detected or configured; set MODEL_POOL_BUDGET (e.g. `18GiB`)")]
    NoDevices,
    /// The same device was given two budgets.
    #[error("device {0} was given two budgets")]
    DuplicateDevice(DeviceId),
    /// A setting did not parse.
    #[error("setting `{name}` is invalid: {reason}")]
    InvalidSetting {
        /// The setting (environment variable) name.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// The reserve leaves no budget.
    #[error(
        "the reserve of {reserve} on {device} leaves nothing of its {total} total; lower MODEL_POOL_OS_RESERVE"
    )]
    ReserveExceedsTotal {
        /// The device.
        device: DeviceId,
        /// Its detected total.
        total: ByteSize,
        /// The reserve asked for.
        reserve: ByteSize,
    },
    /// Other processes hold so much of a GPU that its reserve leaves nothing.
    #[error(
        "{device} has {total}, of which other processes hold {held_by_others}; with the reserve \
         of {reserve} nothing is left for models: free the GPU or set the budget with \
         MODEL_POOL_BUDGET_{env_device}",
        env_device = device.to_string().replace(':', "").to_ascii_uppercase()
    )]
    DeviceTaken {
        /// The device.
        device: DeviceId,
        /// Its detected total.
        total: ByteSize,
        /// What other processes held when it was probed.
        held_by_others: ByteSize,
        /// The reserve.
        reserve: ByteSize,
    },
    /// `install_global` was called after the global governor was already in use.
    #[error(
        "a process-wide memory governor is already installed; install yours before the first use"
    )]
    AlreadyInstalled,
}

/// What a loader reports when a load does not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The device ran out of memory. The pool evicts every idle model on the device and
    /// retries once before giving up.
    #[error("out of memory: {message}")]
    OutOfMemory {
        /// The backend's message.
        message: String,
    },
    /// Any other failure (missing file, bad checkpoint, driver error).
    #[error("{message}")]
    Failed {
        /// The backend's message.
        message: String,
    },
}

impl LoadError {
    /// A non-memory failure with `message`.
    pub fn failed(message: impl fmt::Display) -> Self {
        LoadError::Failed {
            message: message.to_string(),
        }
    }

    /// An out-of-memory failure with `message`.
    pub fn out_of_memory(message: impl fmt::Display) -> Self {
        LoadError::OutOfMemory {
            message: message.to_string(),
        }
    }
}

/// Why a pool could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Two specs share a key.
    #[error("model `{0}` is registered twice")]
    DuplicateModel(String),
    /// A spec names a device the governor has no budget for.
    #[error(
        "model `{model}` is placed on {device}, which has no memory budget; configure one (MODEL_POOL_BUDGET_…)"
    )]
    UnknownDevice {
        /// The model.
        model: String,
        /// Its device.
        device: DeviceId,
    },
    /// A spec is inconsistent.
    #[error("model `{model}`: {reason}")]
    InvalidSpec {
        /// The model.
        model: String,
        /// What is wrong.
        reason: String,
    },
    /// The pinned models alone do not fit in the device budget.
    #[error(
        "pinned models need {pinned} on {device} but its budget is {budget}; pin fewer models or raise the budget"
    )]
    PinnedExceedBudget {
        /// The device.
        device: DeviceId,
        /// Resident bytes of all pinned models there.
        pinned: ByteSize,
        /// The device budget.
        budget: ByteSize,
    },
    /// No governor was given and the process-wide one could not be built.
    #[error(transparent)]
    Governor(#[from] GovernorError),
    /// `build` ran outside a Tokio runtime.
    #[error("the pool needs a Tokio runtime: call `build` from within one")]
    NoRuntime,
}
