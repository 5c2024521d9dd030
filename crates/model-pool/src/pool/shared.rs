//! The executor: the scheduler behind a mutex, and the code that carries out its effects.
//!
//! Every event (an acquire, a lease drop, a finished load, a timer tick) locks the mutex,
//! runs one pure `Scheduler::handle` step and applies its effects. The lock is held only for
//! that step and for bookkeeping (registering a waiter, installing a loaded model, spawning a
//! task); sending replies, aborting tasks and dropping models happen after it is released.
//! A lease on a loaded model with a free slot is therefore granted on the caller's own thread
//! without any task switch, which is what keeps acquire+release in the microseconds.

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::lease::{Lease, LeaseSink};
use super::trampoline;
use crate::error::{LoadError, PoolError};
use crate::governor::MemoryGovernor;
use crate::loader::ModelLoader;
use crate::scheduler::{
    Effect, Event, LeaseId, LoadId, LoadOutcome, ModelId, RequestId, Scheduler,
};
use crate::spec::ModelSpec;

type Reply<M> = oneshot::Sender<Result<Lease<M>, PoolError>>;

pub(crate) struct Shared<L: ModelLoader> {
    pub(crate) core: Mutex<Core<L::Model>>,
    pub(crate) loader: L,
    pub(crate) specs: Vec<Arc<ModelSpec>>,
    pub(crate) keys: HashMap<String, ModelId>,
    pub(crate) names: Vec<Arc<str>>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) governor: MemoryGovernor,
    pub(crate) request_timeout: Duration,
    next_request: AtomicU64,
    /// Wakes the timer task when the next deadline moved earlier. An `Arc` so the timer
    /// task can wait on it without keeping the pool alive.
    pub(crate) timer: Arc<Notify>,
    /// Wakes `shutdown()` callers.
    pub(crate) shutdown_done: Notify,
}

pub(crate) struct Core<M> {
    pub(crate) machine: Scheduler,
    handles: Vec<Option<Arc<M>>>,
    loads: Vec<Option<(LoadId, AbortHandle)>>,
    replies: HashMap<RequestId, Reply<M>>,
    /// What the timer task last saw: its deadline and whether it watches for releases.
    pub(crate) timer_view: (Option<Instant>, bool),
}

/// Work left after the lock is released.
enum Action<M> {
    Deliver(Reply<M>, Result<Lease<M>, PoolError>),
    Abort(AbortHandle),
    Drop(Box<dyn Any + Send>),
    WakeTimer,
    ShutdownDone,
}

pub(crate) enum Start<M> {
    Done(Result<Lease<M>, PoolError>),
    Waiting(RequestId, oneshot::Receiver<Result<Lease<M>, PoolError>>),
}

impl<L: ModelLoader> Shared<L> {
    pub(crate) fn new(
        machine: Scheduler,
        loader: L,
        specs: Vec<ModelSpec>,
        runtime: tokio::runtime::Handle,
        governor: MemoryGovernor,
        request_timeout: Duration,
    ) -> Self {
        let n = specs.len();
        let keys = specs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key.clone(), ModelId(i as u32)))
            .collect();
        let names = specs
            .iter()
            .map(|s| Arc::<str>::from(s.key.as_str()))
            .collect();
        Shared {
            core: Mutex::new(Core {
                machine,
                handles: (0..n).map(|_| None).collect(),
                loads: (0..n).map(|_| None).collect(),
                replies: HashMap::new(),
                timer_view: (None, false),
            }),
            loader,
            specs: specs.into_iter().map(Arc::new).collect(),
            keys,
            names,
            runtime,
            governor,
            request_timeout,
            next_request: AtomicU64::new(1),
            timer: Arc::new(Notify::new()),
            shutdown_done: Notify::new(),
        }
    }

    /// Handles `event`, now or (if a dispatch is already running on this thread) right after.
    pub(crate) fn dispatch(self: &Arc<Self>, event: Event) {
        let this = Arc::clone(self);
        trampoline::run_or_defer(move || {
            this.process(event, None, None);
        });
    }

    /// Reports a finished load together with the model it produced.
    fn dispatch_loaded(
        self: &Arc<Self>,
        model: ModelId,
        load: LoadId,
        outcome: LoadOutcome,
        value: Option<L::Model>,
    ) {
        let this = Arc::clone(self);
        trampoline::run_or_defer(move || {
            this.process(
                Event::LoadFinished {
                    model,
                    load,
                    outcome,
                },
                value,
                None,
            );
        });
    }

    /// Submits an acquire. Answered at once when the model is loaded and has room (or the
    /// request is refused); otherwise the request is queued and a receiver returned.
    pub(crate) fn start_acquire(
        self: &Arc<Self>,
        model: ModelId,
        timeout: Option<Duration>,
        bytes: Option<u64>,
    ) -> Start<L::Model> {
        let request = RequestId(self.next_request.fetch_add(1, Ordering::Relaxed));
        let event = Event::Acquire {
            request,
            model,
            timeout,
            bytes,
        };
        let run = || {
            self.process(event, None, Some(request)).unwrap_or_else(|| {
                Start::Done(Err(PoolError::Internal {
                    model: self.names[model.index()].to_string(),
                    message: "acquire was neither answered nor queued".into(),
                }))
            })
        };
        if trampoline::is_active() {
            // Only reachable from user code run by a dispatch (a model's Drop); the lock is
            // free at that point, so running inline is safe.
            run()
        } else {
            trampoline::enter(run)
        }
    }

    /// One scheduler step. For an acquire (`me`), also returns its immediate answer or, if it
    /// was queued, the receiver its answer will arrive on (registered under the same lock, so
    /// the answer cannot be sent before the receiver exists).
    fn process(
        self: &Arc<Self>,
        event: Event,
        mut loaded: Option<L::Model>,
        me: Option<RequestId>,
    ) -> Option<Start<L::Model>> {
        let mut actions = Vec::new();
        let start = {
            let mut core = self.core.lock();
            let now = Instant::now();
            let effects = core.machine.handle(event, now);
            let mut immediate = None;
            for effect in effects {
                self.apply(
                    &mut core,
                    effect,
                    me,
                    &mut immediate,
                    &mut loaded,
                    &mut actions,
                );
            }
            let view = (
                core.machine.next_deadline(),
                core.machine.waiting_for_memory() && !core.machine.is_shut_down(),
            );
            let (armed, watching) = core.timer_view;
            let earlier = match (view.0, armed) {
                (Some(new), Some(old)) => new < old,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if earlier || (view.1 && !watching) {
                core.timer_view = view;
                actions.push(Action::WakeTimer);
            }
            match (me, immediate) {
                (None, _) => None,
                (Some(_), Some(result)) => Some(Start::Done(result)),
                (Some(request), None) => {
                    let (tx, rx) = oneshot::channel();
                    core.replies.insert(request, tx);
                    Some(Start::Waiting(request, rx))
                }
            }
        };
        if let Some(model) = loaded.take() {
            // A finished load the scheduler did not install (aborted too late, stale): free it.
            actions.push(Action::Drop(Box::new(model)));
        }
        for action in actions {
            match action {
                Action::Deliver(reply, result) => {
                    // A waiter that gave up drops its receiver; the lease then comes back here
                    // and its drop reports the release (deferred by the trampoline).
                    let _ = reply.send(result);
                }
                Action::Abort(handle) => handle.abort(),
                Action::Drop(value) => drop(value),
                Action::WakeTimer => self.timer.notify_one(),
                Action::ShutdownDone => self.shutdown_done.notify_waiters(),
            }
        }
        start
    }

    fn apply(
        self: &Arc<Self>,
        core: &mut Core<L::Model>,
        effect: Effect,
        me: Option<RequestId>,
        immediate: &mut Option<Result<Lease<L::Model>, PoolError>>,
        loaded: &mut Option<L::Model>,
        actions: &mut Vec<Action<L::Model>>,
    ) {
        let mut answer = |core: &mut Core<L::Model>,
                          request: RequestId,
                          result: Result<Lease<L::Model>, PoolError>| {
            if me == Some(request) {
                *immediate = Some(result);
            } else if let Some(reply) = core.replies.remove(&request) {
                actions.push(Action::Deliver(reply, result));
            } else if let Ok(lease) = result {
                // Nobody to give it to (cannot happen: waiters are registered before they
                // can be granted). Return it rather than leak it.
                actions.push(Action::Drop(Box::new(lease)));
            }
        };
        match effect {
            Effect::StartLoad { model, load } => self.spawn_load(core, model, load),
            Effect::AbortLoad { model, load } => {
                if let Some((current, handle)) = core.loads[model.index()].take() {
                    if current == load {
                        actions.push(Action::Abort(handle));
                    } else {
                        core.loads[model.index()] = Some((current, handle));
                    }
                }
            }
            Effect::Install { model, load: _ } => {
                core.loads[model.index()] = None;
                match loaded.take() {
                    Some(value) => core.handles[model.index()] = Some(Arc::new(value)),
                    None => {
                        tracing::error!(model = %self.names[model.index()], "install without a loaded model")
                    }
                }
            }
            Effect::Discard { model, load: _ } => {
                if let Some(value) = loaded.take() {
                    tracing::debug!(model = %self.names[model.index()], "dropping the result of a stale load");
                    actions.push(Action::Drop(Box::new(value)));
                }
            }
            Effect::StartUnload { model, reason: _ } => {
                let handle = core.handles[model.index()].take();
                self.spawn_unload(model, handle);
            }
            Effect::Grant {
                request,
                model,
                lease,
                reservation,
            } => {
                let result = match core.handles[model.index()].clone() {
                    Some(handle) => {
                        let sink: Arc<dyn LeaseSink> = Arc::clone(self) as Arc<dyn LeaseSink>;
                        Ok(Lease::new(
                            handle,
                            reservation,
                            sink,
                            model,
                            lease,
                            Arc::clone(&self.names[model.index()]),
                            Instant::now(),
                        ))
                    }
                    None => {
                        drop(reservation);
                        // Keep the lease count right: report the lease that never existed.
                        self.dispatch(Event::LeaseReleased { model, lease });
                        Err(PoolError::Internal {
                            model: self.names[model.index()].to_string(),
                            message: "granted a lease on a model that is not installed".into(),
                        })
                    }
                };
                answer(core, request, result);
            }
            Effect::Reject { request, error } => answer(core, request, Err(error)),
            Effect::ShutdownComplete => actions.push(Action::ShutdownDone),
        }
    }

    fn spawn_load(self: &Arc<Self>, core: &mut Core<L::Model>, model: ModelId, load: LoadId) {
        let shared = Arc::clone(self);
        let spec = Arc::clone(&self.specs[model.index()]);
        let mut reporter = LoadReporter {
            shared: Some(Arc::clone(self)),
            model,
            load,
        };
        let task = async move {
            let result = AssertUnwindSafe(shared.loader.load(&spec))
                .catch_unwind()
                .await;
            let (outcome, value) = match result {
                Ok(Ok(loaded)) => (
                    LoadOutcome::Loaded {
                        measured_bytes: loaded.measured_bytes,
                    },
                    Some(loaded.model),
                ),
                Ok(Err(LoadError::OutOfMemory { message })) => {
                    (LoadOutcome::OutOfMemory(message), None)
                }
                Ok(Err(LoadError::Failed { message })) => (LoadOutcome::Failed(message), None),
                Err(panic) => (LoadOutcome::Panicked(panic_message(panic.as_ref())), None),
            };
            reporter.report(outcome, value);
        };
        // Spawned with the lock held so that the abort handle is recorded before the task can
        // finish; a task dropped unpolled reports `Aborted` through the trampoline.
        let handle = self.runtime.spawn(task);
        core.loads[model.index()] = Some((load, handle.abort_handle()));
    }

    fn spawn_unload(self: &Arc<Self>, model: ModelId, handle: Option<Arc<L::Model>>) {
        let shared = Arc::clone(self);
        let spec = Arc::clone(&self.specs[model.index()]);
        let mut reporter = UnloadReporter {
            shared: Some(Arc::clone(self)),
            model,
        };
        let task = async move {
            let outcome = match handle {
                Some(handle) => match AssertUnwindSafe(shared.loader.unload(&spec, handle))
                    .catch_unwind()
                    .await
                {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(panic) => Err(format!(
                        "unload panicked: {}",
                        panic_message(panic.as_ref())
                    )),
                },
                None => Err("no loaded model to unload".to_owned()),
            };
            reporter.report(outcome);
        };
        drop(self.runtime.spawn(task));
    }

    /// Whether shutdown has finished.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.core.lock().machine.is_shut_down()
    }
}

impl<L: ModelLoader> LeaseSink for Shared<L> {
    fn release(self: Arc<Self>, model: ModelId, lease: LeaseId) {
        trampoline::run_or_defer(move || {
            self.process(Event::LeaseReleased { model, lease }, None, None);
        });
    }
}

/// Reports a load's end exactly once: normally with its result, or `Aborted` if the task is
/// dropped first (aborted, or its runtime shut down).
struct LoadReporter<L: ModelLoader> {
    shared: Option<Arc<Shared<L>>>,
    model: ModelId,
    load: LoadId,
}

impl<L: ModelLoader> LoadReporter<L> {
    fn report(&mut self, outcome: LoadOutcome, value: Option<L::Model>) {
        if let Some(shared) = self.shared.take() {
            shared.dispatch_loaded(self.model, self.load, outcome, value);
        }
    }
}

impl<L: ModelLoader> Drop for LoadReporter<L> {
    fn drop(&mut self) {
        self.report(LoadOutcome::Aborted, None);
    }
}

/// Reports an unload's end exactly once, also if the task is dropped.
struct UnloadReporter<L: ModelLoader> {
    shared: Option<Arc<Shared<L>>>,
    model: ModelId,
}

impl<L: ModelLoader> UnloadReporter<L> {
    fn report(&mut self, outcome: Result<(), String>) {
        if let Some(shared) = self.shared.take() {
            shared.dispatch(Event::UnloadFinished {
                model: self.model,
                outcome,
            });
        }
    }
}

impl<L: ModelLoader> Drop for UnloadReporter<L> {
    fn drop(&mut self) {
        self.report(Err("unload task was cancelled".to_owned()));
    }
}

/// The text of a panic payload, for error messages.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
