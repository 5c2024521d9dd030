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
