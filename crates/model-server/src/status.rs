//! `/status` and `/v1/models` as JSON: the pool's status (per model state, leases, queue,
//! reserved, declared and measured bytes, counters; per device budget, reserved and high
//! water) with each model's capability and registry estimate.

use model_pool::governor::DeviceUsage;
use model_pool::status::ModelCounters;
use model_pool::{PoolStatus, Tier};
use model_serving::{DownloadProgress, ModelPool};
use serde::Serialize;

/// The whole pool.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// Whether the server is draining (no new work is taken).
    pub draining: bool,
    /// Whether the pool's shutdown has begun.
    pub shutting_down: bool,
    /// Requests waiting over all models, and the bound.
    pub queued: usize,
    /// The pool-wide queue bound.
    pub max_queued: usize,
    /// Each device's budget and use.
    pub devices: Vec<DeviceUsage>,
    /// Each model, in the order served.
    pub models: Vec<ModelView>,
    /// Counters summed over every model.
    pub totals: CountersView,
}

/// One model: `model_pool::ModelStatus` with its capability and registry estimate, durations
/// in seconds.
#[derive(Debug, Serialize)]
#[allow(missing_docs)]
pub struct ModelView {
    /// The key requests use.
    pub id: String,
    /// `text_embedding`, `image_embedding`, `text_to_text`, `vision`, `text_to_image`.
    pub capability: &'static str,
    pub device: String,
    /// `hot` or `warm`.
    pub tier: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_ttl_seconds: Option<f64>,
    pub priority: i32,
    /// `unloaded`, `downloading` (its files from the Hub, see `download`), `loading`,
    /// `ready`, `unloading`, `failed`.
    pub state: &'static str,
    /// Bytes of the model's files in the cache and in all, while they download.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download: Option<DownloadProgress>,
    pub leases: usize,
    pub max_concurrency: usize,
    pub queue_depth: usize,
    pub max_queue: usize,
    pub reserved_bytes: u64,
    pub resident_bytes: u64,
    pub per_request_bytes: u64,
    pub estimate_bytes: u64,
    /// The registry's (or the checkpoint's) `est_memory_allocation_mb`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate_mb: Option<u64>,
    pub measured_bytes: Option<u64>,
    pub estimate_exceeded: bool,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub cooldown_left_seconds: Option<f64>,
    pub idle_for_seconds: Option<f64>,
    pub oldest_lease_age_seconds: Option<f64>,
    pub counters: CountersView,
}

/// Event counts of a model (or of all): `model_pool::status::ModelCounters`, timeouts summed.
#[derive(Debug, Serialize)]
#[allow(missing_docs)]
pub struct CountersView {
    pub loads: u64,
    pub load_failures: u64,
    pub evictions: u64,
    pub idle_unloads: u64,
    pub leases: u64,
    pub rejected_busy: u64,
    pub rejected_never_fits: u64,
    pub rejected_pinned: u64,
    pub rejected_cooling_down: u64,
    pub timeouts: u64,
    pub cancellations: u64,
    pub request_panics: u64,
}

impl From<&ModelCounters> for CountersView {
    fn from(c: &ModelCounters) -> Self {
        CountersView {
            loads: c.loads,
            load_failures: c.load_failures,
            evictions: c.evictions,
            idle_unloads: c.idle_unloads,
            leases: c.leases,
            rejected_busy: c.rejected_busy,
            rejected_never_fits: c.rejected_never_fits,
            rejected_pinned: c.rejected_pinned,
            rejected_cooling_down: c.rejected_cooling_down,
            timeouts: c.timeouts(),
            cancellations: c.cancellations,
            request_panics: c.request_panics,
        }
    }
}

/// The view of `pool` now.
pub fn status(pool: &ModelPool, draining: bool) -> StatusView {
    let s: PoolStatus = pool.status();
    let report = pool.memory_report();
    let models = pool
        .models()
        .filter_map(|m| {
            let st = s.model(&m.key)?;
            let download = pool.download_progress(&m.key);
            let (tier, pinned, ttl) = match st.tier {
                Tier::Hot { pinned } => ("hot", Some(pinned), None),
                Tier::Warm { idle_ttl } => ("warm", None, Some(idle_ttl.as_secs_f64())),
            };
            Some(ModelView {
                id: m.key.clone(),
                capability: m.capability().as_str(),
                device: st.device.to_string(),
                tier,
                pinned,
                idle_ttl_seconds: ttl,
                priority: st.priority,
                state: match download {
                    Some(_) => "downloading",
                    None => st.state.as_str(),
                },
                download,
                leases: st.leases,
                max_concurrency: st.max_concurrency,
                queue_depth: st.queue_depth,
                max_queue: st.max_queue,
                reserved_bytes: st.reserved_bytes,
                resident_bytes: st.resident_bytes,
                per_request_bytes: st.per_request_bytes,
                estimate_bytes: st.estimate_bytes,
                estimate_mb: report
                    .rows
                    .iter()
                    .find(|r| r.key == m.key)
                    .and_then(|r| r.estimate_mb),
                measured_bytes: st.measured_bytes,
                estimate_exceeded: st.estimate_exceeded,
                consecutive_failures: st.consecutive_failures,
                last_error: st.last_error.clone(),
                cooldown_left_seconds: st.cooldown_left.map(|d| d.as_secs_f64()),
                idle_for_seconds: st.idle_for.map(|d| d.as_secs_f64()),
                oldest_lease_age_seconds: st.oldest_lease_age.map(|d| d.as_secs_f64()),
                counters: (&st.counters).into(),
            })
        })
        .collect();
    StatusView {
        draining,
        shutting_down: s.shutting_down,
        queued: s.queued,
        max_queued: s.max_queued,
        devices: s.devices,
        models,
        totals: (&s.totals).into(),
    }
}
