//! Pool-wide scheduling limits.

use std::time::Duration;

/// Limits and timings that apply to the whole pool (per-model ones live in `ModelSpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most requests waiting over all models. Bounded, because an unbounded queue turns an
    /// overload into an out-of-memory crash of the caller instead of a `Busy` error.
    pub max_queued_total: usize,
    /// Default deadline of a request (waiting plus running). Minutes, not hours: the original
    /// project waited six hours.
    pub request_timeout: Duration,
    /// Longest a load may take before it is aborted and counted as a failure. Without it a
    /// hung loader would hold its memory, and every request for its model, indefinitely.
    pub load_timeout: Duration,
    /// Cooldown after the first failed load; doubled for every further consecutive failure.
    pub failure_backoff_base: Duration,
    /// Longest cooldown.
    pub failure_backoff_max: Duration,
    /// Retry hint used for `Busy` before any lease or load has been timed.
    pub default_retry_after: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_queued_total: 1024,
            request_timeout: Duration::from_secs(120),
            load_timeout: Duration::from_secs(600),
            failure_backoff_base: Duration::from_secs(1),
            failure_backoff_max: Duration::from_secs(300),
            default_retry_after: Duration::from_secs(1),
        }
    }
}

impl SchedulerConfig {
    /// Cooldown after `attempts` consecutive failures: base × 2^(attempts−1), capped.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.failure_backoff_base
            .saturating_mul(1u32 << doublings)
            .min(self.failure_backoff_max)
    }
}
