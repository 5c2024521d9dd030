//! A point-in-time view of the pool, for dashboards, health checks and tests.

use std::fmt;
use std::time::Duration;

use crate::device::DeviceId;
use crate::governor::DeviceUsage;
use crate::spec::Tier;

/// Where a model is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelStateKind {
    /// Not in memory.
    Unloaded,
    /// Being loaded (including a retry after an out-of-memory load).
    Loading,
    /// In memory and serving.
    Ready,
    /// Being unloaded.
    Unloading,
    /// Recent loads failed; cooling down before the next attempt.
    Failed,
}

impl ModelStateKind {
    /// Every state, in a fixed order (for one-hot metrics).
    pub const ALL: [ModelStateKind; 5] = [
        ModelStateKind::Unloaded,
        ModelStateKind::Loading,
        ModelStateKind::Ready,
        ModelStateKind::Unloading,
        ModelStateKind::Failed,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStateKind::Unloaded => "unloaded",
            ModelStateKind::Loading => "loading",
            ModelStateKind::Ready => "ready",
            ModelStateKind::Unloading => "unloading",
            ModelStateKind::Failed => "failed",
        }
    }
}

impl fmt::Display for ModelStateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Monotonic event counts for one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelCounters {
    /// Loads started.
    pub loads_started: u64,
    /// Loads that succeeded.
    pub loads: u64,
    /// Loads that failed (errors, panics, out of memory after the retry).
    pub load_failures: u64,
    /// Loads that panicked (also counted in `load_failures`).
    pub load_panics: u64,
    /// Loads abandoned because every waiter gave up.
    pub load_aborts: u64,
    /// Out-of-memory loads retried after evicting idle models.
    pub oom_retries: u64,
    /// Unloads finished.
    pub unloads: u64,
    /// Unloads that reported an error (the reservation is returned anyway).
    pub unload_failures: u64,
    /// Times this model was unloaded to make room for another.
    pub evictions: u64,
    /// Times this model was unloaded because its idle TTL passed.
    pub idle_unloads: u64,
    /// Leases granted.
    pub leases: u64,
    /// Requests refused because a queue was full.
    pub rejected_busy: u64,
    /// Requests refused because the model can never fit.
    pub rejected_never_fits: u64,
    /// Requests refused because pinned models hold the memory it needs.
    pub rejected_pinned: u64,
    /// Requests refused during a load-failure cooldown.
    pub rejected_cooling_down: u64,
    /// Requests that timed out in the queue.
    pub queue_timeouts: u64,
    /// Requests whose caller gave up (dropped the future) while queued.
    pub cancellations: u64,
    /// Requests that panicked under a lease.
    pub request_panics: u64,
    /// Requests that timed out under a lease.
    pub request_timeouts: u64,
}

impl ModelCounters {
    /// All refusals together.
    pub fn rejections(&self) -> u64 {
        self.rejected_busy
            + self.rejected_never_fits
            + self.rejected_pinned
            + self.rejected_cooling_down
    }

    /// All timeouts together.
    pub fn timeouts(&self) -> u64 {
        self.queue_timeouts + self.request_timeouts
    }

    pub(crate) fn add(&mut self, o: &ModelCounters) {
        self.loads_started += o.loads_started;
        self.loads += o.loads;
        self.load_failures += o.load_failures;
        self.load_panics += o.load_panics;
        self.load_aborts += o.load_aborts;
        self.oom_retries += o.oom_retries;
        self.unloads += o.unloads;
        self.unload_failures += o.unload_failures;
        self.evictions += o.evictions;
        self.idle_unloads += o.idle_unloads;
        self.leases += o.leases;
        self.rejected_busy += o.rejected_busy;
        self.rejected_never_fits += o.rejected_never_fits;
        self.rejected_pinned += o.rejected_pinned;
        self.rejected_cooling_down += o.rejected_cooling_down;
        self.queue_timeouts += o.queue_timeouts;
        self.cancellations += o.cancellations;
        self.request_panics += o.request_panics;
        self.request_timeouts += o.request_timeouts;
    }
}

/// One model's status.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelStatus {
    /// Registry key.
    pub key: String,
    /// Device.
    pub device: DeviceId,
    /// Tier.
    pub tier: Tier,
    /// Priority.
    pub priority: i32,
    /// Life-cycle state.
    pub state: ModelStateKind,
    /// Leases held now.
    pub leases: usize,
    /// Concurrency cap.
    pub max_concurrency: usize,
    /// Requests waiting now.
    pub queue_depth: usize,
    /// Queue bound.
    pub max_queue: usize,
    /// Bytes this model holds in the governor now (resident plus running requests).
    pub reserved_bytes: u64,
    /// Declared resident bytes.
    pub resident_bytes: u64,
    /// Declared bytes per request.
    pub per_request_bytes: u64,
    /// Declared estimate: resident plus one request.
    pub estimate_bytes: u64,
    /// What the backend measured at load, if it measures.
    pub measured_bytes: Option<u64>,
    /// Whether the measurement exceeded the declared resident bytes.
    pub estimate_exceeded: bool,
    /// Consecutive failed loads.
    pub consecutive_failures: u32,
    /// The last load failure.
    pub last_error: Option<String>,
    /// Time left in a failure cooldown.
    pub cooldown_left: Option<Duration>,
    /// Time since the last lease was released, while idle and loaded.
    pub idle_for: Option<Duration>,
    /// Age of the model's oldest running lease (a hung request shows here long before its
    /// timeout; the pool reports it rather than killing the work, cf. LocalAI issue 5221).
    pub oldest_lease_age: Option<Duration>,
    /// Counters.
    pub counters: ModelCounters,
}

/// The whole pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStatus {
    /// Each model, in registration order.
    pub models: Vec<ModelStatus>,
    /// Each device's budget and use (the governor's view, including other pools on it).
    pub devices: Vec<DeviceUsage>,
    /// Requests waiting over all models.
    pub queued: usize,
    /// Pool-wide queue bound.
    pub max_queued: usize,
    /// Whether shutdown has begun.
    pub shutting_down: bool,
    /// Counters summed over all models.
    pub totals: ModelCounters,
}

impl PoolStatus {
    /// The status of `key`.
    pub fn model(&self, key: &str) -> Option<&ModelStatus> {
        self.models.iter().find(|m| m.key == key)
    }

    /// Bytes reserved on `device` (the governor's figure).
    pub fn reserved_on(&self, device: DeviceId) -> Option<u64> {
        self.devices
            .iter()
            .find(|d| d.device == device)
            .map(|d| d.reserved_bytes)
    }
}
