//! Admission: who gets memory, in which order, and what is evicted for it.
//!
//! Requests wait in per-model FIFO queues. After every event, [`Scheduler::pump`] walks the
//! models that have demand in precedence order (priority, then the age of their oldest
//! waiter; preloads of hot models last) and gives each what fits. A model that does not fit
//! counts the memory already on its way back, picks victims for the rest and *claims* the
//! free memory it will use: models behind it on that device only get the slack, so a stream
//! of small requests cannot starve a large one, while loaded models that are not in the way
//! keep serving (models on other devices are not affected).
//!
//! Victims: idle, unpinned models are unloaded (warm before hot, low priority first, then
//! least recently used, and the smallest set that covers the shortfall). The first blocked
//! request on a device may also *drain* a busy model: it gets no new leases and is unloaded
//! when its running requests end, never while one holds a lease. A model chosen for eviction
//! that then gets a request keeps that request queued until its unload has finished and loads
//! again through the same admission, so no request waits on an unload that waits on it
//! (Ollama issue 17408). A model that can never fit is refused before it is queued, so it
//! never triggers an eviction (Ollama issue 18282).

use std::cmp::Reverse;
use std::time::Duration;

use tokio::time::Instant;

use super::Held;

use super::{
    Candidate, Effect, Entry, LeaseId, ModelId, RequestId, Scheduler, State, UnloadReason, Waiter,
    after, choose_victims,
};
use crate::device::DeviceId;
use crate::error::{PoolError, QueueKind};
use crate::governor::Reservation;
use crate::size::ByteSize;

/// One device's memory as seen during one pump pass.
struct DeviceView {
    device: DeviceId,
    /// Free bytes already promised to blocked models ahead in the pass.
    claimed: u64,
    /// Bytes on their way back (unloads, aborted loads) not yet promised.
    incoming_left: u64,
    /// Whether a model ahead in the pass is already blocked on this device.
    blocked: bool,
}

/// Per-device views for one pump pass.
#[derive(Default)]
pub(super) struct Claims(Vec<DeviceView>);

impl Claims {
    fn view(&mut self, scheduler: &Scheduler, device: DeviceId) -> &mut DeviceView {
        let index = match self.0.iter().position(|v| v.device == device) {
            Some(i) => i,
            None => {
                let incoming = scheduler
                    .entries
                    .iter()
                    .filter(|e| e.spec.device == device)
                    .filter(|e| {
                        matches!(
                            e.state,
                            State::Unloading | State::Loading { aborting: true, .. }
                        )
                    })
                    .map(Entry::held_bytes)
                    .sum();
                self.0.push(DeviceView {
                    device,
                    claimed: 0,
                    incoming_left: incoming,
                    blocked: false,
                });
                self.0.len() - 1
            }
        };
        &mut self.0[index]
    }
}

impl Scheduler {
    pub(super) fn on_acquire(
        &mut self,
        request: RequestId,
        model: ModelId,
        timeout: Option<Duration>,
        bytes: Option<u64>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.entries.get(model.index()) else {
            fx.push(Effect::Reject {
                request,
                error: PoolError::UnknownModel {
                    model: format!("#{}", model.0),
                },
            });
            return;
        };
        let key = entry.spec.key.clone();
        if self.shutting_down {
            fx.push(Effect::Reject {
                request,
                error: PoolError::ShuttingDown { model: key },
            });
            return;
        }
        let bytes = bytes.unwrap_or(entry.spec.per_request_bytes);
        if let Some(error) = self.refusal(model, bytes, now) {
            fx.push(Effect::Reject { request, error });
            return;
        }
        let entry = &self.entries[model.index()];
        // Fast path: loaded, nobody ahead of us anywhere, a concurrency slot and memory free.
        if matches!(entry.state, State::Ready)
            && self.waiters.is_empty()
            && entry.leases.len() < entry.spec.max_concurrency
            && let Ok(reservation) = self.governor.try_reserve(entry.spec.device, bytes)
        {
            self.grant(model, request, reservation, now, fx);
            return;
        }
        let entry = &self.entries[model.index()];
        if entry.queue.len() >= entry.spec.max_queue {
            let retry_after = self.retry_hint(model);
            let limit = entry.spec.max_queue;
            self.entries[model.index()].counters.rejected_busy += 1;
            fx.push(Effect::Reject {
                request,
                error: PoolError::Busy {
                    model: key,
                    queue: QueueKind::Model,
                    limit,
                    retry_after,
                },
            });
            return;
        }
        if self.waiters.len() >= self.config.max_queued_total {
            let retry_after = self.retry_hint(model);
            self.entries[model.index()].counters.rejected_busy += 1;
            fx.push(Effect::Reject {
                request,
                error: PoolError::Busy {
                    model: key,
                    queue: QueueKind::Global,
                    limit: self.config.max_queued_total,
                    retry_after,
                },
            });
            return;
        }
        let deadline = after(now, timeout.unwrap_or(self.config.request_timeout));
        if self
            .waiters
            .insert(
                request,
                Waiter {
                    model,
                    deadline,
                    enqueued: now,
                    bytes,
                },
            )
            .is_some()
        {
            // A caller reused a request id; answer the new one and keep the old one queued.
            tracing::error!(?request, "request id reused while still queued");
            return;
        }
        self.deadlines.insert((deadline, request));
        let entry = &mut self.entries[model.index()];
        entry.queue.push_back(request);
        entry.idle_deadline = None;
    }

    /// Errors that refuse a request holding `bytes` of working memory at once, before it is
    /// queued.
    fn refusal(&mut self, model: ModelId, bytes: u64, now: Instant) -> Option<PoolError> {
        let entry = &self.entries[model.index()];
        let device = entry.spec.device;
        let need = entry.spec.resident_bytes.saturating_add(bytes);
        let budget = self.governor.budget(device).unwrap_or(0);
        let key = || entry.spec.key.clone();
        let error = if need > budget {
            PoolError::NeverFits {
                model: key(),
                need: ByteSize(need),
                budget: ByteSize(budget),
                device,
            }
        } else if let Some(pinned) = self.pinned_bytes_blocking(model, need, budget) {
            PoolError::BlockedByPinned {
                model: key(),
                need: ByteSize(need),
                budget: ByteSize(budget),
                pinned: ByteSize(pinned),
                device,
            }
        } else if let State::Failed { until } = entry.state
            && until > now
        {
            PoolError::CoolingDown {
                model: key(),
                attempts: entry.consecutive_failures,
                last_error: entry.last_error.clone().unwrap_or_default(),
                retry_after: until - now,
            }
        } else {
            return None;
        };
        let counters = &mut self.entries[model.index()].counters;
        match error {
            PoolError::NeverFits { .. } => counters.rejected_never_fits += 1,
            PoolError::BlockedByPinned { .. } => counters.rejected_pinned += 1,
            _ => counters.rejected_cooling_down += 1,
        }
        Some(error)
    }

    /// If the pinned models on `model`'s device leave too little of the budget for it, the
    /// bytes they hold. Pinned models count whether loaded or not: they are meant to be
    /// resident, and a failed one is retried.
    fn pinned_bytes_blocking(&self, model: ModelId, need: u64, budget: u64) -> Option<u64> {
        let entry = &self.entries[model.index()];
        if entry.spec.tier.is_pinned() {
            return None;
        }
        let pinned: u64 = self
            .entries
            .iter()
            .filter(|e| e.spec.device == entry.spec.device && e.spec.tier.is_pinned())
            .map(|e| e.spec.resident_bytes)
            .fold(0u64, u64::saturating_add);
        (need > budget.saturating_sub(pinned)).then_some(pinned)
    }

    pub(super) fn on_cancel(&mut self, request: RequestId, _now: Instant, fx: &mut Vec<Effect>) {
        if let Some(waiter) = self.remove_waiter(request) {
            self.entries[waiter.model.index()].counters.cancellations += 1;
            self.after_waiter_left(waiter.model, fx);
        }
    }

    /// Removes a queued request wherever it is.
    pub(super) fn remove_waiter(&mut self, request: RequestId) -> Option<Waiter> {
        let waiter = self.waiters.remove(&request)?;
        self.deadlines.remove(&(waiter.deadline, request));
        let queue = &mut self.entries[waiter.model.index()].queue;
        if let Some(pos) = queue.iter().position(|r| *r == request) {
            queue.remove(pos);
        }
        Some(waiter)
    }

    /// A waiter left `model`'s queue (cancelled or timed out). If nobody else wants the model,
    /// a load in progress for it is pointless: abort it and return its memory.
    pub(super) fn after_waiter_left(&mut self, model: ModelId, fx: &mut Vec<Effect>) {
        let entry = &mut self.entries[model.index()];
        // A hot model's load is its preload whoever else waited for it: it is meant to be
        // resident, so a waiter giving up does not abandon it.
        if !entry.queue.is_empty() || entry.preload || entry.spec.tier.is_hot() {
            return;
        }
        match &mut entry.state {
            State::Loading { load, aborting, .. } if !*aborting => {
                *aborting = true;
                entry.counters.load_aborts += 1;
                fx.push(Effect::AbortLoad { model, load: *load });
            }
            State::OomRecovery { .. } => {
                entry.counters.load_aborts += 1;
                entry.resident = None;
                entry.first_request = None;
                entry.state = State::Unloaded;
            }
            _ => {}
        }
    }

    pub(super) fn grant(
        &mut self,
        model: ModelId,
        request: RequestId,
        reservation: Reservation,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let lease = LeaseId(self.next_lease);
        self.next_lease += 1;
        let entry = &mut self.entries[model.index()];
        entry.leases.insert(
            lease,
            Held {
                since: now,
                bytes: reservation.bytes(),
            },
        );
        entry.idle_deadline = None;
        entry.last_used = now;
        entry.counters.leases += 1;
        fx.push(Effect::Grant {
            request,
            model,
            lease,
            reservation,
        });
    }

    /// The working memory of the first request in `model`'s queue (0 when none).
    pub(super) fn front_bytes(&self, model: ModelId) -> u64 {
        self.entries[model.index()]
            .queue
            .front()
            .and_then(|r| self.waiters.get(r))
            .map_or(0, |w| w.bytes)
    }

    fn pop_waiter(&mut self, model: ModelId) -> Option<RequestId> {
        let request = self.entries[model.index()].queue.pop_front()?;
        if let Some(w) = self.waiters.remove(&request) {
            self.deadlines.remove(&(w.deadline, request));
        }
        Some(request)
    }

    /// Gives every model with demand what fits now, in precedence order, and starts the
    /// evictions (and drains) that make room for the first blocked request on each device.
    pub(super) fn pump(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.any_draining {
            // Drains are decided afresh by every pass.
            self.entries.iter_mut().for_each(|e| e.draining = false);
            self.any_draining = false;
        }
        if self.shutting_down || (self.waiters.is_empty() && self.preloads == 0) {
            return;
        }
        // Requests first (by priority, then age); preloads of hot models last, so that a hot
        // model evicted for a request does not come straight back and evict it in turn.
        let mut order: Vec<(bool, Reverse<i32>, Instant, RequestId, ModelId)> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.queue.is_empty() || e.preload)
            .map(|(i, e)| {
                let (arrived, first) = match e.queue.front() {
                    Some(r) => (self.waiters.get(r).map_or(now, |w| w.enqueued), *r),
                    None => (self.started, RequestId(0)),
                };
                (
                    e.queue.is_empty(),
                    Reverse(e.spec.priority),
                    arrived,
                    first,
                    ModelId(i as u32),
                )
            })
            .collect();
        order.sort_unstable();
        let mut claims = Claims::default();
        for (_, _, _, _, model) in order {
            let entry = &self.entries[model.index()];
            match entry.state {
                State::Ready => self.serve_ready(model, now, fx, &mut claims),
                State::Unloaded => self.try_load(model, now, fx, &mut claims),
                State::Failed { until } if until <= now => {
                    self.try_load(model, now, fx, &mut claims)
                }
                _ => {}
            }
        }
    }

    fn serve_ready(
        &mut self,
        model: ModelId,
        now: Instant,
        fx: &mut Vec<Effect>,
        claims: &mut Claims,
    ) {
        if self.entries[model.index()].preload {
            self.entries[model.index()].preload = false;
            self.preloads -= 1;
        }
        loop {
            let entry = &self.entries[model.index()];
            // A draining model finishes its running requests and takes no new ones: a request
            // ahead of its waiters needs its memory.
            if entry.queue.is_empty()
                || entry.leases.len() >= entry.spec.max_concurrency
                || entry.draining
            {
                return;
            }
            let (device, need) = (entry.spec.device, self.front_bytes(model));
            if let Some(reservation) = self.reserve_unclaimed(device, need, claims) {
                if let Some(request) = self.pop_waiter(model) {
                    self.grant(model, request, reservation, now, fx);
                }
                continue;
            }
            self.block(model, need, true, fx, claims);
            return;
        }
    }

    fn try_load(
        &mut self,
        model: ModelId,
        now: Instant,
        fx: &mut Vec<Effect>,
        claims: &mut Claims,
    ) {
        let entry = &self.entries[model.index()];
        let with_request = !entry.queue.is_empty();
        let pinned = entry.spec.tier.is_pinned();
        let device = entry.spec.device;
        let per_request = if with_request {
            self.front_bytes(model)
        } else {
            0
        };
        let need = entry.spec.resident_bytes.saturating_add(per_request);
        let Some(mut reservation) = self.reserve_unclaimed(device, need, claims) else {
            // A preload of an unpinned hot model only takes memory nobody asked for: it
            // neither evicts nor claims. A pinned model must come back (after a failed load)
            // and cannot be evicted in turn, so it may make room.
            if with_request || pinned {
                self.block(model, need, false, fx, claims);
            }
            return;
        };
        let first_request = if with_request {
            reservation.split(per_request)
        } else {
            None
        };
        let load = super::LoadId(self.next_load);
        self.next_load += 1;
        let entry = &mut self.entries[model.index()];
        if entry.preload {
            entry.preload = false;
            self.preloads -= 1;
        }
        entry.resident = Some(reservation);
        entry.first_request = first_request;
        entry.state = State::Loading {
            load,
            since: now,
            aborting: false,
            timed_out: false,
            oom_retried: false,
        };
        entry.counters.loads_started += 1;
        tracing::debug!(model = %entry.spec.key, "loading");
        fx.push(Effect::StartLoad { model, load });
    }

    /// Reserves `need` on `device` if it fits in the free memory not promised to models
    /// ahead in this pass.
    fn reserve_unclaimed(
        &self,
        device: DeviceId,
        need: u64,
        claims: &mut Claims,
    ) -> Option<Reservation> {
        let claimed = claims.view(self, device).claimed;
        let free = self.governor.free(device)?;
        if need > free.saturating_sub(claimed) {
            return None;
        }
        self.governor.try_reserve(device, need).ok()
    }

    /// `model` needs `need` bytes that are not free. Counts the memory already coming back,
    /// picks victims for the rest, and claims the free memory it will use, so that models
    /// behind it only get what is left (the slack) and cannot starve it.
    ///
    /// The first blocked model on a device may pick any unpinned loaded model as a victim:
    /// idle ones are unloaded now; busy ones are *drained* (no new leases; unloaded once
    /// their running requests end, never while one holds a lease). Later models only evict
    /// idle models nobody waits for. If no victim set covers the shortfall nothing is
    /// evicted: unloading models that cannot make enough room only costs reloads.
    fn block(
        &mut self,
        model: ModelId,
        need: u64,
        loaded: bool,
        fx: &mut Vec<Effect>,
        claims: &mut Claims,
    ) {
        let device = self.entries[model.index()].spec.device;
        let free_total = self.governor.free(device).unwrap_or(0);
        let view = claims.view(self, device);
        let first_blocked = !view.blocked;
        view.blocked = true;
        let free = free_total.saturating_sub(view.claimed);
        let from_incoming = need.min(view.incoming_left);
        view.incoming_left -= from_incoming;
        let rest = need - from_incoming;
        if rest <= free {
            view.claimed += rest;
            return;
        }
        let deficit = rest - free;
        let mut candidates: Vec<(bool, bool, u8, i32, Instant, Candidate)> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(i, e)| {
                *i != model.index()
                    && e.spec.device == device
                    && matches!(e.state, State::Ready)
                    && !e.spec.tier.is_pinned()
                    && (first_blocked || (e.leases.is_empty() && e.queue.is_empty()))
            })
            .map(|(i, e)| {
                let bytes = e.held_bytes().saturating_add(e.leased_bytes());
                let candidate = Candidate {
                    model: ModelId(i as u32),
                    bytes,
                };
                // Cheapest to lose first: nobody waiting, idle, warm, low priority, least
                // recently used.
                (
                    !e.queue.is_empty(),
                    !e.leases.is_empty(),
                    u8::from(e.spec.tier.is_hot()),
                    e.spec.priority,
                    e.last_used,
                    candidate,
                )
            })
            .collect();
        candidates.sort_by_key(|c| (c.0, c.1, c.2, c.3, c.4));
        let candidates: Vec<Candidate> = candidates.into_iter().map(|c| c.5).collect();
        let Some(victims) = choose_victims(&candidates, deficit) else {
            // Nothing can make room now: hold all free memory until leases end.
            claims.view(self, device).claimed += free;
            return;
        };
        // The victims return more than the deficit: only the rest of the free memory is
        // needed, the slack stays available to models behind.
        let victim_bytes: u64 = candidates
            .iter()
            .filter(|c| victims.contains(&c.model))
            .map(|c| c.bytes)
            .sum();
        claims.view(self, device).claimed += rest.saturating_sub(victim_bytes).min(free);
        for victim in victims {
            let v = &self.entries[victim.index()];
            tracing::debug!(
                victim = %v.spec.key,
                for_model = %self.entries[model.index()].spec.key,
                deficit = %ByteSize(deficit),
                drain = !v.leases.is_empty(),
                for_request = loaded,
                "evicting"
            );
            if v.leases.is_empty() {
                self.entries[victim.index()].counters.evictions += 1;
                self.start_unload(victim, UnloadReason::Evicted, fx);
            } else {
                self.entries[victim.index()].draining = true;
                self.any_draining = true;
            }
        }
    }
}
