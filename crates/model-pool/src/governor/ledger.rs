//! The shared per-device counter that every `Reservation` of that device points at.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::Reservation;
use crate::device::DeviceId;
use crate::error::ReserveError;
use crate::size::ByteSize;

/// One device budget and what is reserved against it.
///
/// Lock-free: reserving is a compare-and-swap that only succeeds if the new total stays within
/// the budget, so the sum of live reservations can never exceed it, even for a moment.
pub(crate) struct DeviceLedger {
    pub(crate) device: DeviceId,
    pub(crate) budget: u64,
    pub(crate) reserved: AtomicU64,
    /// Live `Reservation` guards, for leak checks.
    pub(crate) live: AtomicU64,
    /// Highest `reserved` ever seen, for status.
    pub(crate) high_water: AtomicU64,
    /// Shared with the other devices of the same governor.
    signal: Arc<ReleaseSignal>,
}

impl DeviceLedger {
    pub(crate) fn new(device: DeviceId, budget: u64, signal: Arc<ReleaseSignal>) -> Self {
        DeviceLedger {
            device,
            budget,
            reserved: AtomicU64::new(0),
            live: AtomicU64::new(0),
            high_water: AtomicU64::new(0),
            signal,
        }
    }

    /// Reserves `bytes` and wraps them in a guard.
    pub(crate) fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, ReserveError> {
        self.try_add(bytes)?;
        self.live.fetch_add(1, Ordering::Relaxed);
        Ok(Reservation::new(Arc::clone(self), bytes))
    }

    /// Adds `bytes` to the counter if it stays within the budget. Does not create a guard:
    /// the caller wraps the bytes in a `Reservation` (or grows an existing one).
    pub(crate) fn try_add(&self, bytes: u64) -> Result<(), ReserveError> {
        let mut current = self.reserved.load(Ordering::SeqCst);
        loop {
            let next = match current.checked_add(bytes) {
                Some(next) if next <= self.budget => next,
                _ => {
                    return Err(ReserveError::Insufficient {
                        device: self.device,
                        need: ByteSize(bytes),
                        free: ByteSize(self.budget.saturating_sub(current)),
                        budget: ByteSize(self.budget),
                    });
                }
            };
            match self.reserved.compare_exchange_weak(
                current,
                next,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    debug_assert!(
                        next <= self.budget,
                        "reserved {next} > budget {}",
                        self.budget
                    );
                    self.high_water.fetch_max(next, Ordering::Relaxed);
                    return Ok(());
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Returns `bytes` to the budget and retires one guard.
    pub(crate) fn release(&self, bytes: u64) {
        let before = self.reserved.fetch_sub(bytes, Ordering::SeqCst);
        debug_assert!(
            before >= bytes,
            "released {bytes} B but only {before} B were reserved on {}",
            self.device
        );
        self.live.fetch_sub(1, Ordering::Relaxed);
        if bytes > 0 {
            self.signal.notify();
        }
    }

    pub(crate) fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::SeqCst)
    }
}

/// Wakes tasks that wait for memory to come back, but only pays for the wake-up when someone
/// is waiting: releases sit on the lease hot path.
pub(crate) struct ReleaseSignal {
    notify: Notify,
    watchers: AtomicUsize,
}

impl ReleaseSignal {
    pub(crate) fn new() -> Self {
        ReleaseSignal {
            notify: Notify::new(),
            watchers: AtomicUsize::new(0),
        }
    }

    pub(crate) fn notify(&self) {
        if self.watchers.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    pub(crate) fn notify_handle(&self) -> &Notify {
        &self.notify
    }

    pub(crate) fn watch(&self) {
        self.watchers.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn unwatch(&self) {
        self.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}
