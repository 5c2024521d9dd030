//! Memory-aware runtime pool for Candle models.
//!
//! * [`MemoryGovernor`] — one per process, one budget per device (RAM via sysinfo, GPUs via
//!   backend probes, or configured such as `MODEL_POOL_BUDGET=18GiB`), with an OS reserve.
//!   Memory is held through [`Reservation`] guards that share the governor's counters, so the
//!   sum of live reservations never exceeds a budget and every release is exact.
//! * [`Scheduler`](scheduler::Scheduler) — a pure state machine that owns every decision:
//!   model states (unloaded, loading, ready, unloading, failed with cooldown), single-flight
//!   loads, admission (never-fits refused at once), eviction (tier and priority, then LRU,
//!   size-aware), bounded queues, deadlines, idle TTLs and shutdown. Testable without
//!   sleeping: events in, effects out, time injected.
//! * [`Pool`] — the async executor of those decisions: [`Lease`]s (RAII) for requests, loads
//!   and unloads on Tokio tasks through a [`ModelLoader`], panics contained, cancellation by
//!   dropping a future, a status snapshot and Prometheus metrics.
//!
//! The scheduler is the one owner of every decision; it sits behind a mutex that is held only
//! for one pure `handle` step. Events come from callers (acquire, lease drop, cancellation),
//! from load and unload tasks and from one timer task; effects are carried out after the lock
//! is released. A lease on a loaded model with room is therefore granted on the caller's own
//! thread without a task switch (sub-microsecond), and every state change still goes through
//! the same deterministic machine.
//!
//! ```
//! use model_pool::{DeviceId, LoadError, Loaded, MemoryGovernor, ModelLoader, ModelSpec, Pool};
//! use model_pool::size::MIB;
//!
//! struct Echo;
//! impl ModelLoader for Echo {
//!     type Model = String;
//!     async fn load(&self, spec: &ModelSpec) -> Result<Loaded<String>, LoadError> {
//!         Ok(Loaded::new(format!("weights of {}", spec.key)))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! // Tests use their own governor; applications use `MemoryGovernor::global()`.
//! let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, 1024 * MIB)])?;
//! let pool = Pool::builder(Echo)
//!     .governor(governor)
//!     .model(ModelSpec::new("minilm", DeviceId::Cpu, 85 * MIB, 15 * MIB))
//!     .model(ModelSpec::new("kimi", DeviceId::Cpu, 607_750 * MIB, 107_250 * MIB))
//!     .build()?;
//! let lease = pool.acquire("minilm").await?;
//! assert_eq!(*lease, "weights of minilm");
//! drop(lease);
//! let refused = pool.acquire("kimi").await.unwrap_err();
//! assert!(refused.to_string().contains("can never fit"));
//! pool.shutdown().await;
//! assert_eq!(pool.governor().total_reserved(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! Sizes are in bytes; the registry's `est_memory_allocation_mb` is in MB of 1,048,576 bytes
//! ([`size::MIB`]).

pub mod device;
pub mod error;
pub mod governor;
pub mod loader;
pub mod metrics;
pub mod pool;
pub mod scheduler;
pub mod size;
pub mod spec;
pub mod status;

pub use device::DeviceId;
pub use error::{
    BuildError, GovernorError, LoadError, PoolError, QueueKind, ReserveError, TimeoutPhase,
};
pub use governor::{GovernorConfig, MemoryGovernor, Reservation};
pub use loader::{Loaded, ModelLoader};
pub use pool::{Lease, Pool, PoolBuilder};
pub use scheduler::SchedulerConfig;
pub use size::ByteSize;
pub use spec::{ModelSpec, Tier};
pub use status::{ModelStateKind, ModelStatus, PoolStatus};
