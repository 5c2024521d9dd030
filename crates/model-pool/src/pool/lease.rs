//! `Lease`: the right to use a loaded model for one request.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::governor::Reservation;
use crate::scheduler::{LeaseId, ModelId};

/// Where a lease reports that it was dropped. Implemented by the pool; a trait object so that
/// `Lease` depends on the model type only, not on the loader.
pub(crate) trait LeaseSink: Send + Sync {
    /// Takes the `Arc` by value: the lease gives up its reference as it reports.
    fn release(self: Arc<Self>, model: ModelId, lease: LeaseId);
}

/// A loaded model, held for one request.
///
/// While any lease on a model is alive the model cannot be evicted or unloaded, and the
/// lease's working memory (`per_request_bytes`) stays reserved. Dropping the lease (including
/// by a panic unwinding through it, or by a timed-out future being dropped) returns that
/// memory at once and tells the pool, which may then serve a waiter, start the idle TTL or
/// unload.
pub struct Lease<M> {
    model: Option<Arc<M>>,
    reservation: Option<Reservation>,
    sink: Option<Arc<dyn LeaseSink>>,
    model_id: ModelId,
    lease: LeaseId,
    key: Arc<str>,
    granted: Instant,
}

impl<M> Lease<M> {
    pub(crate) fn new(
        model: Arc<M>,
        reservation: Reservation,
        sink: Arc<dyn LeaseSink>,
        model_id: ModelId,
        lease: LeaseId,
        key: Arc<str>,
        granted: Instant,
    ) -> Self {
        Lease {
            model: Some(model),
            reservation: Some(reservation),
            sink: Some(sink),
            model_id,
            lease,
            key,
            granted,
        }
    }

    /// The model's registry key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes of working memory this lease holds.
    pub fn reserved_bytes(&self) -> u64 {
        self.reservation.as_ref().map_or(0, Reservation::bytes)
    }

    /// How long the lease has been held.
    pub fn held_for(&self) -> Duration {
        self.granted.elapsed()
    }

    pub(crate) fn model_id(&self) -> ModelId {
        self.model_id
    }
}

impl<M> Deref for Lease<M> {
    type Target = M;

    fn deref(&self) -> &M {
        match &self.model {
            Some(model) => model,
            // `model` is only taken in `drop`, after which nobody can deref.
            None => unreachable!("lease used after drop"),
        }
    }
}

impl<M> Drop for Lease<M> {
    fn drop(&mut self) {
        // Order matters: the model reference goes first so that an unload started by this
        // release owns the last one; the memory goes next so that the pool sees it free.
        drop(self.model.take());
        drop(self.reservation.take());
        if let Some(sink) = self.sink.take() {
            sink.release(self.model_id, self.lease);
        }
    }
}

impl<M> fmt::Debug for Lease<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("model", &self.key)
            .field("reserved_bytes", &self.reserved_bytes())
            .field("held_for", &self.held_for())
            .finish()
    }
}
