//! `ModelSpec`: what the pool needs to know about a model to admit, share and evict it.

use std::time::Duration;

use crate::device::DeviceId;
use crate::error::BuildError;

/// How a model is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Loaded when the pool starts and kept loaded. A `pinned` hot model is never evicted,
    /// not even when the last lease drops (LocalAI issue 11101 freed pinned models after each
    /// request); an unpinned one may be evicted, after every warm model.
    Hot {
        /// Never evicted.
        pinned: bool,
    },
    /// Loaded on demand and unloaded `idle_ttl` after its last lease is released (the timer
    /// starts at the release, not at the load, so a model in steady use is never unloaded
    /// between requests). A zero TTL unloads as soon as the last lease drops.
    Warm {
        /// Idle time before unloading.
        idle_ttl: Duration,
    },
}

impl Tier {
    /// Whether the model may never be evicted.
    pub fn is_pinned(self) -> bool {
        matches!(self, Tier::Hot { pinned: true })
    }

    /// Hot models are preloaded at start.
    pub fn is_hot(self) -> bool {
        matches!(self, Tier::Hot { .. })
    }
}

/// A model as the pool sees it: where it lives, how much memory it holds while loaded and per
/// request, and how it is kept.
///
/// The registry's `CandleModelInfo` maps onto this with weights + overhead as
/// `resident_bytes` and KV cache + activations as `per_request_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Registry key, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub key: String,
    /// Where the weights live.
    pub device: DeviceId,
    /// Bytes held from the start of the load until the unload finishes (weights, runtime
    /// overhead), shared by all concurrent requests.
    pub resident_bytes: u64,
    /// Bytes each concurrent request holds while it runs (KV cache, activations). Concurrency
    /// is bounded by how many of these fit.
    pub per_request_bytes: u64,
    /// Hot or warm.
    pub tier: Tier,
    /// Higher is more important: admitted first, evicted last.
    pub priority: i32,
    /// Most requests served at once, whatever memory allows.
    pub max_concurrency: usize,
    /// Most requests waiting for this model at once.
    pub max_queue: usize,
}

impl ModelSpec {
    /// Default idle TTL of warm models.
    pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(300);

    /// A warm model with a five-minute idle TTL, priority 0, up to 4 concurrent requests and
    /// 64 queued ones.
    pub fn new(
        key: impl Into<String>,
        device: DeviceId,
        resident_bytes: u64,
        per_request_bytes: u64,
    ) -> Self {
        ModelSpec {
            key: key.into(),
            device,
            resident_bytes,
            per_request_bytes,
            tier: Tier::Warm {
                idle_ttl: Self::DEFAULT_IDLE_TTL,
            },
            priority: 0,
            max_concurrency: 4,
            max_queue: 64,
        }
    }

    /// Sets the tier.
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    /// Hot and pinned: preloaded, never evicted.
    pub fn pinned(self) -> Self {
        self.tier(Tier::Hot { pinned: true })
    }

    /// Warm with the given idle TTL.
    pub fn idle_ttl(self, idle_ttl: Duration) -> Self {
        self.tier(Tier::Warm { idle_ttl })
    }

    /// Sets the priority (higher is kept longer and admitted first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the concurrency cap.
    pub fn max_concurrency(mut self, max_concurrency: usize) -> Self {
        self.max_concurrency = max_concurrency;
        self
    }

    /// Sets the queue bound.
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = max_queue;
        self
    }

    /// Resident plus one request: the least the model needs to serve anything.
    pub fn need_bytes(&self) -> u64 {
        self.resident_bytes.saturating_add(self.per_request_bytes)
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        let invalid = |reason: &str| BuildError::InvalidSpec {
            model: self.key.clone(),
            reason: reason.to_owned(),
        };
        if self.key.trim().is_empty() {
            return Err(invalid("the key is empty"));
        }
        if self.max_concurrency == 0 {
            return Err(invalid(
                "max_concurrency is 0, so no request could ever run; use at least 1",
            ));
        }
        Ok(())
    }
}
