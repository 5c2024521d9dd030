//! The pool: the public, async face of the scheduler.

mod driver;
mod lease;
mod shared;
mod trampoline;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;

pub use lease::Lease;

use crate::error::{BuildError, PoolError, TimeoutPhase};
use crate::governor::MemoryGovernor;
use crate::loader::ModelLoader;
use crate::scheduler::{Event, ModelId, RequestFault, RequestId, Scheduler, SchedulerConfig};
use crate::size::ByteSize;
use crate::spec::ModelSpec;
use crate::status::PoolStatus;
use shared::{Shared, Start};

/// Configures and starts a [`Pool`].
pub struct PoolBuilder<L: ModelLoader> {
    loader: L,
    governor: Option<MemoryGovernor>,
    config: SchedulerConfig,
    specs: Vec<ModelSpec>,
}

impl<L: ModelLoader> PoolBuilder<L> {
    /// A pool that loads with `loader`, on the process-wide governor, with default limits.
    pub fn new(loader: L) -> Self {
        PoolBuilder {
            loader,
            governor: None,
            config: SchedulerConfig::default(),
            specs: Vec::new(),
        }
    }

    /// Draws on `governor` instead of [`MemoryGovernor::global`].
    pub fn governor(mut self, governor: MemoryGovernor) -> Self {
        self.governor = Some(governor);
        self
    }

    /// Pool-wide limits.
    pub fn config(mut self, config: SchedulerConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers a model.
    pub fn model(mut self, spec: ModelSpec) -> Self {
        self.specs.push(spec);
        self
    }

    /// Registers models.
    pub fn models(mut self, specs: impl IntoIterator<Item = ModelSpec>) -> Self {
        self.specs.extend(specs);
        self
    }

    /// Checks the models against the governor, starts the timer task and the preloading of
    /// hot models. Must run inside a Tokio runtime, which then runs loads and unloads.
    ///
    /// A model larger than its device budget is accepted here (it is refused per request with
    /// `NeverFits`, so a registry can list it), but pinned models that do not fit together
    /// are an error: that configuration can never work.
    pub fn build(self) -> Result<Pool<L>, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let governor = match self.governor {
            Some(g) => g,
            None => MemoryGovernor::global()?.clone(),
        };
        let mut seen = HashSet::new();
        let mut pinned: BTreeMap<_, u64> = BTreeMap::new();
        for spec in &self.specs {
            spec.validate()?;
            if !seen.insert(spec.key.as_str()) {
                return Err(BuildError::DuplicateModel(spec.key.clone()));
            }
            if governor.budget(spec.device).is_none() {
                return Err(BuildError::UnknownDevice {
                    model: spec.key.clone(),
                    device: spec.device,
                });
            }
            if spec.tier.is_pinned() {
                let sum = pinned.entry(spec.device).or_default();
                *sum = sum.saturating_add(spec.resident_bytes);
            }
        }
        for (device, bytes) in pinned {
            let budget = governor.budget(device).unwrap_or(0);
            if bytes > budget {
                return Err(BuildError::PinnedExceedBudget {
                    device,
                    pinned: ByteSize(bytes),
                    budget: ByteSize(budget),
                });
            }
        }
        let request_timeout = self.config.request_timeout;
        let machine = Scheduler::new(
            governor.clone(),
            self.config,
            self.specs.clone(),
            Instant::now(),
        );
        let shared = Arc::new(Shared::new(
            machine,
            self.loader,
            self.specs,
            runtime.clone(),
            governor,
            request_timeout,
        ));
        runtime.spawn(driver::run(Arc::downgrade(&shared)));
        // Starts the preloads of hot models.
        shared.dispatch(Event::Tick);
        Ok(Pool { shared })
    }
}

/// A set of models sharing device budgets: admission, eviction, queues and leases.
///
/// Share it between tasks with an `Arc`. Dropping it starts a shutdown (see
/// [`shutdown`](Self::shutdown)) without waiting for it.
pub struct Pool<L: ModelLoader> {
    shared: Arc<Shared<L>>,
}

impl<L: ModelLoader> Pool<L> {
    /// Starts configuring a pool.
    pub fn builder(loader: L) -> PoolBuilder<L> {
        PoolBuilder::new(loader)
    }

    /// A lease on `key`, waiting (within the pool's default request timeout) for a load,
    /// memory or a concurrency slot as needed. Dropping the returned future gives up: the
    /// request leaves its queue, and a load nobody else waits for is aborted.
    pub async fn acquire(&self, key: &str) -> Result<Lease<L::Model>, PoolError> {
        self.acquire_inner(key, None, None).await
    }

    /// Like [`acquire`](Self::acquire) with its own deadline.
    pub async fn acquire_timeout(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<Lease<L::Model>, PoolError> {
        self.acquire_inner(key, Some(timeout), None).await
    }

    /// Like [`acquire`](Self::acquire) for a request whose working memory is `bytes` instead
    /// of the model's `per_request_bytes` (a larger image, a shorter context): admission,
    /// eviction and the never-fits refusal all use this figure, and the lease holds it.
    pub async fn acquire_sized(
        &self,
        key: &str,
        bytes: u64,
        timeout: Option<Duration>,
    ) -> Result<Lease<L::Model>, PoolError> {
        self.acquire_inner(key, timeout, Some(bytes)).await
    }

    async fn acquire_inner(
        &self,
        key: &str,
        timeout: Option<Duration>,
        bytes: Option<u64>,
    ) -> Result<Lease<L::Model>, PoolError> {
        let model = self.model_id(key)?;
        match self.shared.start_acquire(model, timeout, bytes) {
            Start::Done(result) => result,
            Start::Waiting(request, receiver) => {
                let mut guard = CancelOnDrop {
                    shared: &self.shared,
                    request: Some(request),
                };
                let result = receiver.await;
                guard.request = None;
                // The sender only disappears without an answer if the pool itself is gone.
                result.unwrap_or_else(|_| {
                    Err(PoolError::ShuttingDown {
                        model: key.to_owned(),
                    })
                })
            }
        }
    }

    /// Runs `work` under a lease on `key`, with one deadline (`timeout`, or the pool default)
    /// for waiting and running together. A panic in `work` is caught and returned as
    /// `RequestPanicked`; running past the deadline drops `work` and returns
    /// `Timeout { phase: Running }`. Either way the lease and its memory are returned and the
    /// pool keeps serving.
    pub async fn run<T, F, Fut>(
        &self,
        key: &str,
        timeout: Option<Duration>,
        work: F,
    ) -> Result<T, PoolError>
    where
        F: FnOnce(Lease<L::Model>) -> Fut,
        Fut: Future<Output = T>,
    {
        self.run_sized(key, None, timeout, work).await
    }

    /// Like [`run`](Self::run) for a request whose working memory is `bytes` (the model's
    /// `per_request_bytes` when `None`; see [`acquire_sized`](Self::acquire_sized)).
    pub async fn run_sized<T, F, Fut>(
        &self,
        key: &str,
        bytes: Option<u64>,
        timeout: Option<Duration>,
        work: F,
    ) -> Result<T, PoolError>
    where
        F: FnOnce(Lease<L::Model>) -> Fut,
        Fut: Future<Output = T>,
    {
        let timeout = timeout.unwrap_or(self.shared.request_timeout);
        let started = Instant::now();
        let deadline = crate::scheduler::after(started, timeout);
        let lease = self.acquire_inner(key, Some(timeout), bytes).await?;
        let model = lease.model_id();
        let fault = |fault| self.shared.dispatch(Event::RequestFault { model, fault });
        let running = async move {
            let future = std::panic::catch_unwind(AssertUnwindSafe(|| work(lease)))?;
            AssertUnwindSafe(future).catch_unwind().await
        };
        match tokio::time::timeout_at(deadline, running).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => {
                fault(RequestFault::Panicked);
                Err(PoolError::RequestPanicked {
                    model: key.to_owned(),
                    message: shared::panic_message(panic.as_ref()),
                })
            }
            Err(_) => {
                fault(RequestFault::TimedOut);
                Err(PoolError::Timeout {
                    model: key.to_owned(),
                    phase: TimeoutPhase::Running,
                    waited: started.elapsed(),
                })
            }
        }
    }

    /// A snapshot of every model, device and counter.
    pub fn status(&self) -> PoolStatus {
        self.shared.core.lock().machine.status(Instant::now())
    }

    /// The status in the Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        crate::metrics::prometheus_text(&self.status())
    }

    /// The governor this pool draws on.
    pub fn governor(&self) -> &MemoryGovernor {
        &self.shared.governor
    }

    /// Records memory a backend measured for `key` after loading (shown in status; an
    /// estimate that was exceeded is logged).
    pub fn record_measured(&self, key: &str, bytes: u64) -> Result<(), PoolError> {
        let model = self.model_id(key)?;
        self.shared.dispatch(Event::Measured { model, bytes });
        Ok(())
    }

    /// Fails every waiter, aborts loads, unloads every model as soon as its last lease is
    /// dropped, and returns when nothing is loaded any more (all of this pool's reservations
    /// are then released). Requests after this are refused with `ShuttingDown`. Waits for
    /// leases still held: wrap it in a timeout to bound that.
    pub async fn shutdown(&self) {
        loop {
            let mut done = std::pin::pin!(self.shared.shutdown_done.notified());
            done.as_mut().enable();
            if self.shared.is_shut_down() {
                return;
            }
            self.shared.dispatch(Event::Shutdown);
            if self.shared.is_shut_down() {
                return;
            }
            done.await;
        }
    }

    fn model_id(&self, key: &str) -> Result<ModelId, PoolError> {
        self.shared
            .keys
            .get(key)
            .copied()
            .ok_or_else(|| PoolError::UnknownModel {
                model: key.to_owned(),
            })
    }
}

impl<L: ModelLoader> Drop for Pool<L> {
    fn drop(&mut self) {
        self.shared.dispatch(Event::Shutdown);
    }
}

impl<L: ModelLoader> std::fmt::Debug for Pool<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("models", &self.shared.specs.len())
            .finish()
    }
}

/// Withdraws a queued request when the acquiring future is dropped before its answer.
struct CancelOnDrop<'a, L: ModelLoader> {
    shared: &'a Arc<Shared<L>>,
    request: Option<RequestId>,
}

impl<L: ModelLoader> Drop for CancelOnDrop<'_, L> {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            self.shared.dispatch(Event::Cancel { request });
        }
    }
}
