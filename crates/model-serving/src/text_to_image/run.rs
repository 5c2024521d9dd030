//! What every pipeline does around its networks: run its stages one after another inside the
//! request's lease (which the pool sized for the largest stage of this request, evicting
//! idle models of any capability to make room), report progress, stop when cancelled, and
//! hold components either for the model's lifetime (co-resident) or for one stage (staged).

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};

use model_networks::diffusion::Stage;
use model_runtime::BackendError;

use super::plan::RequestMemory;
use super::request::Progress;
use crate::error::ServeError;

/// A progress callback.
pub type ProgressFn = dyn Fn(Progress) + Send + Sync;

/// Why a stage failed, before the model's name is attached.
#[derive(Debug)]
pub(crate) enum Failure {
    Backend(BackendError),
    Image(ServeError),
}

impl From<candle_core::Error> for Failure {
    fn from(e: candle_core::Error) -> Self {
        Failure::Backend(e.into())
    }
}

impl From<BackendError> for Failure {
    fn from(e: BackendError) -> Self {
        Failure::Backend(e)
    }
}

impl From<ServeError> for Failure {
    fn from(e: ServeError) -> Self {
        Failure::Image(e)
    }
}

/// A component used by one stage: the model's own copy, or one loaded for this stage and
/// dropped when the stage ends.
pub(crate) enum Held<'a, T> {
    Resident(&'a T),
    Loaded(T),
}

impl<T> Held<'_, T> {
    /// The resident copy if there is one, else what `load` returns.
    pub(crate) fn get<'a, E>(
        resident: Option<&'a T>,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<Held<'a, T>, E> {
        Ok(match resident {
            Some(r) => Held::Resident(r),
            None => Held::Loaded(load()?),
        })
    }
}

impl<T> Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Held::Resident(r) => r,
            Held::Loaded(t) => t,
        }
    }
}

/// One request in flight.
pub(crate) struct Run<'a> {
    pub model: &'a str,
    pub memory: &'a RequestMemory,
    pub progress: &'a ProgressFn,
    pub cancel: &'a AtomicBool,
}

impl Run<'_> {
    /// Runs `stage`: reports what the plan says it needs (within the lease's reservation),
    /// runs `f` (whose stage-loaded components are dropped when it returns), and gives the
    /// freed heap back so that the next stage really has it.
    pub(crate) fn stage<T>(
        &self,
        stage: Stage,
        f: impl FnOnce() -> Result<T, Failure>,
    ) -> Result<T, ServeError> {
        self.check_cancel()?;
        let need = self.memory.stage(stage).map_or(0, |s| s.bytes());
        (self.progress)(Progress::StageStarted {
            stage,
            reserved_bytes: need,
        });
        let out = f();
        model_runtime::memory::trim_heap();
        let out = out.map_err(|f| match f {
            Failure::Backend(e) => ServeError::backend(self.model, e),
            Failure::Image(e) => e,
        })?;
        (self.progress)(Progress::StageFinished { stage });
        Ok(out)
    }

    /// Reports step `step` of `steps`, or stops if the caller gave up.
    pub(crate) fn step(&self, step: u32, steps: u32) -> Result<(), Failure> {
        self.check_cancel()?;
        (self.progress)(Progress::Step { step, steps });
        Ok(())
    }

    fn check_cancel(&self) -> Result<(), ServeError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(ServeError::Cancelled {
                model: self.model.to_owned(),
            });
        }
        Ok(())
    }
}
