//! `Reservation`: the RAII guard over a share of one device budget.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::ledger::DeviceLedger;
use crate::device::DeviceId;
use crate::error::ReserveError;

/// Bytes held against one device budget until this guard is dropped.
///
/// The guard holds an `Arc` to the device's shared ledger, so releasing always decrements the
/// one counter every other guard and the governor see. It is deliberately not `Clone`: a copied
/// guard would release twice, and a guard that copied its counters would release into a copy —
/// the bug that made the original project's memory accounting only ever grow.
#[must_use = "dropping a reservation releases its bytes at once"]
pub struct Reservation {
    ledger: Arc<DeviceLedger>,
    bytes: u64,
}

impl Reservation {
    /// Builds a guard for bytes that the ledger has already added to its counter.
    pub(crate) fn new(ledger: Arc<DeviceLedger>, bytes: u64) -> Self {
        Reservation { ledger, bytes }
    }

    /// The number of bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The device whose budget this draws on.
    pub fn device(&self) -> DeviceId {
        self.ledger.device
    }

    /// Moves `bytes` out of this reservation into a new one, without touching the ledger:
    /// the total held stays the same, so nobody can take the memory in between. Returns
    /// `None` (and changes nothing) if this reservation holds fewer than `bytes`.
    pub fn split(&mut self, bytes: u64) -> Option<Reservation> {
        let rest = self.bytes.checked_sub(bytes)?;
        self.bytes = rest;
        self.ledger.live.fetch_add(1, Ordering::Relaxed);
        Some(Reservation {
            ledger: Arc::clone(&self.ledger),
            bytes,
        })
    }

    /// Folds `other` into this reservation (same device only; otherwise `other` is returned
    /// untouched). The ledger total does not change.
    pub fn merge(&mut self, mut other: Reservation) -> Result<(), Reservation> {
        if !Arc::ptr_eq(&self.ledger, &other.ledger) {
            return Err(other);
        }
        self.bytes += std::mem::take(&mut other.bytes);
        // `other` now holds nothing; dropping it only retires its live count.
        drop(other);
        Ok(())
    }

    /// Asks the ledger for `extra` more bytes on top of what this guard holds.
    pub fn try_grow(&mut self, extra: u64) -> Result<(), ReserveError> {
        self.ledger.try_add(extra)?;
        self.bytes += extra;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.ledger.release(self.bytes);
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("device", &self.ledger.device)
            .field("bytes", &self.bytes)
            .finish()
    }
}
