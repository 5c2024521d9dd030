//! The scheduler: one state machine that decides every state change of every model.
//!
//! [`Scheduler::handle`] takes an [`Event`] and the current instant and returns the
//! [`Effect`]s to carry out (start a load, unload, hand a lease to a waiter, reply with an
//! error). It never awaits, sleeps, spawns or reads the clock, so every policy and fault can
//! be replayed step by step in tests, and the async code around it (`pool`) only executes
//! decisions. The one shared thing it touches is the [`MemoryGovernor`], through non-blocking
//! reservations: memory accounting is exact because the machine holds the `Reservation`
//! guards itself and hands them over in effects.

mod admission;
mod config;
mod eviction;
mod lifecycle;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

pub use config::SchedulerConfig;
pub use eviction::{Candidate, choose_victims};

use crate::error::PoolError;
use crate::governor::{MemoryGovernor, Reservation};
use crate::spec::ModelSpec;
use crate::status::{ModelCounters, ModelStateKind, ModelStatus, PoolStatus};

/// `now + duration`, capped far in the future instead of panicking on overflow: timeouts and
/// TTLs are configuration, and `Duration::MAX` ("never") must not crash the pool.
pub fn after(now: Instant, duration: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(duration.min(FAR))
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

/// A model's index in its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(pub(crate) u32);

impl ModelId {
    /// Position in the pool's model list.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One request, from acquire until it gets a lease or an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// One load attempt; completions of an older attempt are recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LoadId(pub u64);

/// One granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

/// Something that happened.
#[derive(Debug)]
pub enum Event {
    /// A request for a lease on `model`, to be answered by `timeout` (the pool default if
    /// `None`).
    Acquire {
        /// Request identity, chosen by the caller.
        request: RequestId,
        /// The model.
        model: ModelId,
        /// Deadline, counted from now.
        timeout: Option<Duration>,
        /// Working memory this request holds while it runs; the model's `per_request_bytes`
        /// when `None` (a text-to-image request at another size, say, holds its own).
        bytes: Option<u64>,
    },
    /// The caller of `request` gave up (its future was dropped).
    Cancel {
        /// The request.
        request: RequestId,
    },
    /// A lease was dropped; its per-request reservation is already released.
    LeaseReleased {
        /// The model.
        model: ModelId,
        /// The lease.
        lease: LeaseId,
    },
    /// A load task ended.
    LoadFinished {
        /// The model.
        model: ModelId,
        /// The attempt.
        load: LoadId,
        /// How it ended.
        outcome: LoadOutcome,
    },
    /// An unload task ended.
    UnloadFinished {
        /// The model.
        model: ModelId,
        /// `Err` with the backend's message if the unload failed or panicked; the memory is
        /// released either way because the model object is gone.
        outcome: Result<(), String>,
    },
    /// A backend measured the model's real memory after loading.
    Measured {
        /// The model.
        model: ModelId,
        /// Bytes.
        bytes: u64,
    },
    /// Work under a lease failed (for the counters; the lease itself reports its release).
    RequestFault {
        /// The model.
        model: ModelId,
        /// What happened.
        fault: RequestFault,
    },
    /// Time passed: deadlines, idle TTLs and cooldowns may have expired.
    Tick,
    /// Memory was released outside this pool (another pool on the same governor).
    MemoryFreed,
    /// Fail all waiters, stop loading, unload everything.
    Shutdown,
}

/// How a load ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Loaded.
    Loaded {
        /// Bytes the backend measured, if it measures.
        measured_bytes: Option<u64>,
    },
    /// The loader returned an error.
    Failed(String),
    /// The loader reported out-of-memory.
    OutOfMemory(String),
    /// The loader panicked.
    Panicked(String),
    /// The load was aborted on the pool's request before it finished.
    Aborted,
}

/// Why a model is unloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnloadReason {
    /// Its idle TTL passed (or was zero).
    IdleTimeout,
    /// Another model needed the memory.
    Evicted,
    /// A load ran out of memory and every idle model was unloaded before its retry.
    OutOfMemoryRecovery,
    /// The pool is shutting down.
    Shutdown,
}

/// A failure of work done under a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFault {
    /// The work panicked.
    Panicked,
    /// The work ran past its deadline.
    TimedOut,
}

/// Something to carry out, in order.
#[derive(Debug)]
pub enum Effect {
    /// Start loading `model`; report with [`Event::LoadFinished`] and this `load`.
    StartLoad {
        /// The model.
        model: ModelId,
        /// The attempt.
        load: LoadId,
    },
    /// Abort the running load; it still reports `LoadFinished` (usually `Aborted`).
    AbortLoad {
        /// The model.
        model: ModelId,
        /// The attempt.
        load: LoadId,
    },
    /// The loaded model of attempt `load` is accepted: keep it for leases.
    Install {
        /// The model.
        model: ModelId,
        /// The attempt.
        load: LoadId,
    },
    /// The loaded model of attempt `load` is not wanted (stale attempt): free it.
    Discard {
        /// The model.
        model: ModelId,
        /// The attempt.
        load: LoadId,
    },
    /// Unload `model`; report with [`Event::UnloadFinished`].
    StartUnload {
        /// The model.
        model: ModelId,
        /// Why.
        reason: UnloadReason,
    },
    /// Give `request` a lease holding `reservation`.
    Grant {
        /// The request.
        request: RequestId,
        /// The model.
        model: ModelId,
        /// The lease identity, reported back in [`Event::LeaseReleased`].
        lease: LeaseId,
        /// The request's working memory.
        reservation: Reservation,
    },
    /// Answer `request` with an error.
    Reject {
        /// The request.
        request: RequestId,
        /// Why.
        error: PoolError,
    },
    /// Shutdown finished: nothing is loaded, loading or waiting.
    ShutdownComplete,
}

/// Where a model is. Unlike [`ModelStateKind`] it carries what each state needs.
#[derive(Debug)]
enum State {
    Unloaded,
    Loading {
        load: LoadId,
        since: Instant,
        /// Every waiter left (or the load timed out); the load was asked to stop.
        aborting: bool,
        /// The load ran past `SchedulerConfig::load_timeout`: its abort is a failure.
        timed_out: bool,
        /// This is the retry after an out-of-memory load.
        oom_retried: bool,
    },
    /// An out-of-memory load is waiting for idle models to unload before its one retry.
    /// The model keeps its reservation meanwhile.
    OomRecovery {
        waiting_for: Vec<ModelId>,
    },
    Ready,
    Unloading,
    /// Cooling down after a failed load; the failure is in `Entry::last_error`.
    Failed {
        until: Instant,
    },
}

#[derive(Debug)]
struct Waiter {
    model: ModelId,
    deadline: Instant,
    enqueued: Instant,
    /// Working memory the request holds once granted.
    bytes: u64,
}

/// A granted lease: since when, and the working memory it holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    since: Instant,
    bytes: u64,
}

struct Entry {
    spec: ModelSpec,
    state: State,
    /// Held from the start of a load until its unload (or failure) finishes.
    resident: Option<Reservation>,
    /// One request's memory, reserved with the load so that the first waiter can run as
    /// soon as the model is ready.
    first_request: Option<Reservation>,
    leases: BTreeMap<LeaseId, Held>,
    queue: VecDeque<RequestId>,
    /// A hot model that should be loaded without a waiter.
    preload: bool,
    /// Chosen to make room for a blocked request while it still serves others: it takes no
    /// new leases and is unloaded when the last one ends. Recomputed by every pump pass.
    draining: bool,
    last_used: Instant,
    idle_deadline: Option<Instant>,
    consecutive_failures: u32,
    last_error: Option<String>,
    measured: Option<u64>,
    /// Smoothed lease and load durations, for retry hints.
    hold_ewma: Option<Duration>,
    load_ewma: Option<Duration>,
    counters: ModelCounters,
}

impl Entry {
    /// Working memory held by the model's leases.
    fn leased_bytes(&self) -> u64 {
        self.leases
            .values()
            .map(|h| h.bytes)
            .fold(0u64, u64::saturating_add)
    }

    fn held_bytes(&self) -> u64 {
        self.resident.as_ref().map_or(0, Reservation::bytes)
            + self.first_request.as_ref().map_or(0, Reservation::bytes)
    }

    fn kind(&self) -> ModelStateKind {
        match self.state {
            State::Unloaded => ModelStateKind::Unloaded,
            State::Loading { .. } | State::OomRecovery { .. } => ModelStateKind::Loading,
            State::Ready => ModelStateKind::Ready,
            State::Unloading => ModelStateKind::Unloading,
            State::Failed { .. } => ModelStateKind::Failed,
        }
    }

    fn is_idle_ready(&self) -> bool {
        matches!(self.state, State::Ready) && self.leases.is_empty()
    }
}

/// The state machine. See the module docs.
pub struct Scheduler {
    governor: MemoryGovernor,
    config: SchedulerConfig,
    entries: Vec<Entry>,
    waiters: HashMap<RequestId, Waiter>,
    deadlines: BTreeSet<(Instant, RequestId)>,
    preloads: usize,
    any_draining: bool,
    next_load: u64,
    next_lease: u64,
    started: Instant,
    shutting_down: bool,
    shutdown_reported: bool,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("models", &self.entries.len())
            .field("waiting", &self.waiters.len())
            .field("shutting_down", &self.shutting_down)
            .finish()
    }
}

impl Scheduler {
    /// A machine for `specs` (validated by the pool builder: unique keys, known devices).
    /// Hot models are marked for preloading, which starts on the first event (the pool sends
    /// a `Tick` right after building).
    pub fn new(
        governor: MemoryGovernor,
        config: SchedulerConfig,
        specs: Vec<ModelSpec>,
        now: Instant,
    ) -> Self {
        let entries: Vec<Entry> = specs
            .into_iter()
            .map(|spec| Entry {
                preload: spec.tier.is_hot(),
                draining: false,
                spec,
                state: State::Unloaded,
                resident: None,
                first_request: None,
                leases: BTreeMap::new(),
                queue: VecDeque::new(),
                last_used: now,
                idle_deadline: None,
                consecutive_failures: 0,
                last_error: None,
                measured: None,
                hold_ewma: None,
                load_ewma: None,
                counters: ModelCounters::default(),
            })
            .collect();
        let preloads = entries.iter().filter(|e| e.preload).count();
        Scheduler {
            governor,
            config,
            entries,
            waiters: HashMap::new(),
            deadlines: BTreeSet::new(),
            preloads,
            any_draining: false,
            next_load: 0,
            next_lease: 0,
            started: now,
            shutting_down: false,
            shutdown_reported: false,
        }
    }

    /// Applies `event` at `now` and returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        match event {
            Event::Acquire {
                request,
                model,
                timeout,
                bytes,
            } => self.on_acquire(request, model, timeout, bytes, now, &mut fx),
            Event::Cancel { request } => self.on_cancel(request, now, &mut fx),
            Event::LeaseReleased { model, lease } => {
                self.on_lease_released(model, lease, now, &mut fx)
            }
            Event::LoadFinished {
                model,
                load,
                outcome,
            } => self.on_load_finished(model, load, outcome, now, &mut fx),
            Event::UnloadFinished { model, outcome } => {
                self.on_unload_finished(model, outcome, now, &mut fx)
            }
            Event::Measured { model, bytes } => self.on_measured(model, bytes),
            Event::RequestFault { model, fault } => {
                if let Some(e) = self.entries.get_mut(model.index()) {
                    match fault {
                        RequestFault::Panicked => e.counters.request_panics += 1,
                        RequestFault::TimedOut => e.counters.request_timeouts += 1,
                    }
                }
            }
            Event::Tick => self.on_tick(now, &mut fx),
            Event::MemoryFreed => {}
            Event::Shutdown => self.on_shutdown(now, &mut fx),
        }
        self.pump(now, &mut fx);
        self.check_shutdown_complete(&mut fx);
        fx
    }

    /// The earliest instant at which a `Tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.deadlines.first().map(|(t, _)| *t);
        for e in &self.entries {
            let candidate = match &e.state {
                State::Ready if e.leases.is_empty() && e.queue.is_empty() => e.idle_deadline,
                State::Failed { until, .. } if e.spec.tier.is_pinned() && !self.shutting_down => {
                    Some(*until)
                }
                State::Loading {
                    since,
                    aborting: false,
                    ..
                } => Some(after(*since, self.config.load_timeout)),
                _ => None,
            };
            if let Some(t) = candidate {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    /// Whether some request waits for memory that may be freed outside this pool.
    pub fn waiting_for_memory(&self) -> bool {
        !self.waiters.is_empty() || self.preloads > 0
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Whether shutdown has finished.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown_reported
    }

    /// Requests waiting over all models.
    pub fn queued(&self) -> usize {
        self.waiters.len()
    }

    /// Leases held over all models.
    pub fn leases(&self) -> usize {
        self.entries.iter().map(|e| e.leases.len()).sum()
    }

    /// The spec of `model`.
    pub fn spec(&self, model: ModelId) -> Option<&ModelSpec> {
        self.entries.get(model.index()).map(|e| &e.spec)
    }

    /// The life-cycle state of `model`.
    pub fn state(&self, model: ModelId) -> Option<ModelStateKind> {
        self.entries.get(model.index()).map(Entry::kind)
    }

    /// The governor this machine reserves from.
    pub fn governor(&self) -> &MemoryGovernor {
        &self.governor
    }

    /// A snapshot of every model and device.
    pub fn status(&self, now: Instant) -> PoolStatus {
        let mut totals = ModelCounters::default();
        let models = self
            .entries
            .iter()
            .map(|e| {
                totals.add(&e.counters);
                let lease_bytes = e.leased_bytes();
                ModelStatus {
                    key: e.spec.key.clone(),
                    device: e.spec.device,
                    tier: e.spec.tier,
                    priority: e.spec.priority,
                    state: e.kind(),
                    leases: e.leases.len(),
                    max_concurrency: e.spec.max_concurrency,
                    queue_depth: e.queue.len(),
                    max_queue: e.spec.max_queue,
                    reserved_bytes: e.held_bytes().saturating_add(lease_bytes),
                    resident_bytes: e.spec.resident_bytes,
                    per_request_bytes: e.spec.per_request_bytes,
                    estimate_bytes: e.spec.need_bytes(),
                    measured_bytes: e.measured,
                    estimate_exceeded: e.measured.is_some_and(|m| m > e.spec.resident_bytes),
                    consecutive_failures: e.consecutive_failures,
                    last_error: e.last_error.clone(),
                    cooldown_left: match &e.state {
                        State::Failed { until, .. } if *until > now => Some(*until - now),
                        _ => None,
                    },
                    idle_for: (e.is_idle_ready())
                        .then(|| now.saturating_duration_since(e.last_used)),
                    oldest_lease_age: e
                        .leases
                        .values()
                        .next()
                        .map(|h| now.saturating_duration_since(h.since)),
                    counters: e.counters,
                }
            })
            .collect();
        PoolStatus {
            models,
            devices: self.governor.usage(),
            queued: self.waiters.len(),
            max_queued: self.config.max_queued_total,
            shutting_down: self.shutting_down,
            totals,
        }
    }

    fn check_shutdown_complete(&mut self, fx: &mut Vec<Effect>) {
        if !self.shutting_down || self.shutdown_reported {
            return;
        }
        let quiet = self.waiters.is_empty()
            && self.entries.iter().all(|e| {
                e.leases.is_empty()
                    && e.resident.is_none()
                    && e.first_request.is_none()
                    && matches!(e.state, State::Unloaded | State::Failed { .. })
            });
        if quiet {
            self.shutdown_reported = true;
            fx.push(Effect::ShutdownComplete);
        }
    }

    /// Exponentially smoothed duration (weight 1/8 for the new sample): quick to follow a
    /// change, not thrown by one outlier.
    fn ewma(previous: Option<Duration>, sample: Duration) -> Duration {
        match previous {
            None => sample,
            Some(p) => p.saturating_mul(7).saturating_add(sample) / 8,
        }
    }

    /// When a request refused as busy should come back: the time for the queue ahead of it
    /// to drain at the model's concurrency, plus a load if it is not loaded.
    fn retry_hint(&self, model: ModelId) -> Duration {
        let e = &self.entries[model.index()];
        let rounds = (e.queue.len() / e.spec.max_concurrency.max(1)) as u32 + 1;
        let hint = match (e.hold_ewma, e.load_ewma, &e.state) {
            (Some(hold), _, State::Ready) => hold.saturating_mul(rounds),
            (hold, Some(load), _) => load + hold.unwrap_or_default().saturating_mul(rounds),
            (Some(hold), None, _) => hold.saturating_mul(rounds),
            (None, None, _) => self.config.default_retry_after,
        };
        hint.clamp(Duration::from_millis(1), self.config.request_timeout)
    }
}
