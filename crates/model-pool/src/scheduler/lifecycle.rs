//! Model life cycle: load results (success, failure, panic, out-of-memory), unloads, idle
//! TTLs, cooldowns and shutdown.

use tokio::time::Instant;

use super::{Effect, LeaseId, LoadId, LoadOutcome, ModelId, Scheduler, State, UnloadReason, after};
use crate::error::{PoolError, TimeoutPhase};
use crate::size::ByteSize;
use crate::spec::Tier;

impl Scheduler {
    pub(super) fn on_lease_released(
        &mut self,
        model: ModelId,
        lease: LeaseId,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.entries.get_mut(model.index()) else {
            return;
        };
        let Some(granted) = entry.leases.remove(&lease) else {
            tracing::error!(model = %entry.spec.key, ?lease, "release of an unknown lease");
            return;
        };
        entry.last_used = now;
        entry.hold_ewma = Some(Self::ewma(
            entry.hold_ewma,
            now.saturating_duration_since(granted.since),
        ));
        self.after_last_use(model, now, fx);
    }

    /// Applies the idle rules to a loaded model that nobody uses or waits for.
    fn after_last_use(&mut self, model: ModelId, now: Instant, fx: &mut Vec<Effect>) {
        let entry = &mut self.entries[model.index()];
        if !entry.is_idle_ready() || !entry.queue.is_empty() {
            return;
        }
        if self.shutting_down {
            self.start_unload(model, UnloadReason::Shutdown, fx);
            return;
        }
        match entry.spec.tier {
            // The TTL starts now, at the last release, not at the load.
            Tier::Warm { idle_ttl } if idle_ttl.is_zero() => {
                entry.counters.idle_unloads += 1;
                self.start_unload(model, UnloadReason::IdleTimeout, fx);
            }
            Tier::Warm { idle_ttl } => entry.idle_deadline = Some(after(now, idle_ttl)),
            Tier::Hot { .. } => {}
        }
    }

    pub(super) fn on_load_finished(
        &mut self,
        model: ModelId,
        load: LoadId,
        outcome: LoadOutcome,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.entries.get_mut(model.index()) else {
            return;
        };
        let (since, aborting, timed_out, oom_retried) = match entry.state {
            State::Loading {
                load: current,
                since,
                aborting,
                timed_out,
                oom_retried,
            } if current == load => (since, aborting, timed_out, oom_retried),
            _ => {
                // An attempt we no longer track: never keep what it produced.
                tracing::warn!(model = %entry.spec.key, ?load, "result of a stale load ignored");
                if matches!(outcome, LoadOutcome::Loaded { .. }) {
                    fx.push(Effect::Discard { model, load });
                }
                return;
            }
        };
        match outcome {
            LoadOutcome::Loaded { measured_bytes } => {
                entry.state = State::Ready;
                entry.consecutive_failures = 0;
                entry.last_used = now;
                entry.counters.loads += 1;
                entry.load_ewma = Some(Self::ewma(
                    entry.load_ewma,
                    now.saturating_duration_since(since),
                ));
                fx.push(Effect::Install { model, load });
                tracing::info!(model = %entry.spec.key, "loaded");
                if let Some(bytes) = measured_bytes {
                    self.on_measured(model, bytes);
                }
                // The memory reserved with the load goes to the first waiter when it covers
                // that request (the waiter it was reserved for may have left); otherwise it
                // goes back and the pump serves the queue.
                let need = self.front_bytes(model);
                let entry = &mut self.entries[model.index()];
                if let Some(mut reservation) = entry.first_request.take()
                    && !entry.queue.is_empty()
                    && reservation.bytes() >= need
                    && let Some(request) = entry.queue.pop_front()
                {
                    if let Some(w) = self.waiters.remove(&request) {
                        self.deadlines.remove(&(w.deadline, request));
                    }
                    if let Some(exact) = reservation.split(need) {
                        reservation = exact;
                    }
                    self.grant(model, request, reservation, now, fx);
                }
                // Anyone else is served by the pump; an unwanted (aborted too late) load
                // is simply an idle model now.
                self.after_last_use(model, now, fx);
            }
            LoadOutcome::Aborted if timed_out => {
                let message = format!(
                    "the load did not finish within {:?}",
                    self.config.load_timeout
                );
                self.fail_load(model, LoadOutcome::Failed(message), now, fx);
            }
            LoadOutcome::Aborted => {
                entry.resident = None;
                entry.first_request = None;
                entry.state = State::Unloaded;
                tracing::debug!(model = %entry.spec.key, "load aborted");
            }
            LoadOutcome::OutOfMemory(message)
                if !oom_retried && !aborting && !self.shutting_down =>
            {
                entry.counters.oom_retries += 1;
                tracing::warn!(model = %entry.spec.key, %message, "load ran out of memory; evicting idle models and retrying once");
                let device = entry.spec.device;
                let victims: Vec<ModelId> = self
                    .entries
                    .iter()
                    .enumerate()
                    .filter(|(i, e)| {
                        *i != model.index()
                            && e.spec.device == device
                            && e.is_idle_ready()
                            && !e.spec.tier.is_pinned()
                    })
                    .map(|(i, _)| ModelId(i as u32))
                    .collect();
                for &victim in &victims {
                    self.entries[victim.index()].counters.evictions += 1;
                    self.start_unload(victim, UnloadReason::OutOfMemoryRecovery, fx);
                }
                // Models already unloading also give memory back before the retry.
                let mut waiting_for = victims;
                waiting_for.extend(
                    self.entries
                        .iter()
                        .enumerate()
                        .filter(|(i, e)| {
                            e.spec.device == device
                                && matches!(e.state, State::Unloading)
                                && !waiting_for.contains(&ModelId(*i as u32))
                        })
                        .map(|(i, _)| ModelId(i as u32))
                        .collect::<Vec<_>>(),
                );
                let entry = &mut self.entries[model.index()];
                entry.last_error = Some(format!(
                    "out of memory (retrying once after evicting idle models): {message}"
                ));
                entry.state = State::OomRecovery { waiting_for };
                self.retry_after_oom_if_ready(model, now, fx);
            }
            LoadOutcome::OutOfMemory(_) if aborting || self.shutting_down => {
                entry.resident = None;
                entry.first_request = None;
                entry.state = State::Unloaded;
            }
            failure => self.fail_load(model, failure, now, fx),
        }
    }

    /// Starts the one retry of an out-of-memory load once every unload it waits for is done.
    fn retry_after_oom_if_ready(&mut self, model: ModelId, now: Instant, fx: &mut Vec<Effect>) {
        let entry = &mut self.entries[model.index()];
        let State::OomRecovery { waiting_for, .. } = &entry.state else {
            return;
        };
        if !waiting_for.is_empty() {
            return;
        }
        let load = LoadId(self.next_load);
        self.next_load += 1;
        entry.state = State::Loading {
            load,
            since: now,
            aborting: false,
            timed_out: false,
            oom_retried: true,
        };
        entry.counters.loads_started += 1;
        fx.push(Effect::StartLoad { model, load });
    }

    /// A load failed for good: return its memory, tell every waiter why, and cool down with
    /// exponential backoff so a broken model is not reloaded in a tight loop.
    fn fail_load(
        &mut self,
        model: ModelId,
        outcome: LoadOutcome,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let backoff = {
            let entry = &mut self.entries[model.index()];
            entry.consecutive_failures = entry.consecutive_failures.saturating_add(1);
            self.config.backoff(entry.consecutive_failures)
        };
        let budget = self
            .governor
            .budget(self.entries[model.index()].spec.device)
            .unwrap_or(0);
        let entry = &mut self.entries[model.index()];
        let need = entry.held_bytes();
        entry.resident = None;
        entry.first_request = None;
        entry.counters.load_failures += 1;
        entry.state = State::Failed {
            until: after(now, backoff),
        };
        let (key, attempts, device) = (
            entry.spec.key.clone(),
            entry.consecutive_failures,
            entry.spec.device,
        );
        let error = match outcome {
            LoadOutcome::Panicked(message) => {
                entry.counters.load_panics += 1;
                PoolError::LoadPanicked {
                    model: key,
                    attempts,
                    message,
                    retry_after: backoff,
                }
            }
            LoadOutcome::OutOfMemory(message) => PoolError::LoadOutOfMemory {
                model: key,
                need: ByteSize(need),
                budget: ByteSize(budget),
                device,
                message,
                retry_after: backoff,
            },
            LoadOutcome::Failed(message) => PoolError::LoadFailed {
                model: key,
                attempts,
                message,
                retry_after: backoff,
            },
            LoadOutcome::Loaded { .. } | LoadOutcome::Aborted => {
                // Not failures; callers never pass them here.
                PoolError::LoadFailed {
                    model: key,
                    attempts,
                    message: "unexpected load result".into(),
                    retry_after: backoff,
                }
            }
        };
        tracing::warn!(%error, "load failed");
        entry.last_error = Some(error.to_string());
        let queued: Vec<_> = entry.queue.drain(..).collect();
        for request in queued {
            if let Some(w) = self.waiters.remove(&request) {
                self.deadlines.remove(&(w.deadline, request));
            }
            fx.push(Effect::Reject {
                request,
                error: error.clone(),
            });
        }
    }

    pub(super) fn on_unload_finished(
        &mut self,
        model: ModelId,
        outcome: Result<(), String>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.entries.get_mut(model.index()) else {
            return;
        };
        if !matches!(entry.state, State::Unloading) {
            tracing::error!(model = %entry.spec.key, "unload finished for a model that was not unloading");
            return;
        }
        if let Err(message) = outcome {
            entry.counters.unload_failures += 1;
            tracing::warn!(model = %entry.spec.key, %message, "unload failed; the model object is gone, releasing its reservation");
        }
        entry.counters.unloads += 1;
        entry.resident = None;
        entry.first_request = None;
        entry.state = State::Unloaded;
        entry.idle_deadline = None;
        if entry.spec.tier.is_hot() && !self.shutting_down && !entry.preload {
            // Hot models are kept loaded: an evicted unpinned hot model comes back when it can.
            entry.preload = true;
            self.preloads += 1;
        }
        tracing::debug!(model = %entry.spec.key, "unloaded");
        let waiting: Vec<ModelId> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(&e.state, State::OomRecovery { waiting_for, .. } if waiting_for.contains(&model)))
            .map(|(i, _)| ModelId(i as u32))
            .collect();
        for m in waiting {
            if let State::OomRecovery { waiting_for, .. } = &mut self.entries[m.index()].state {
                waiting_for.retain(|v| *v != model);
            }
            self.retry_after_oom_if_ready(m, now, fx);
        }
    }

    pub(super) fn on_measured(&mut self, model: ModelId, bytes: u64) {
        let Some(entry) = self.entries.get_mut(model.index()) else {
            return;
        };
        entry.measured = Some(bytes);
        if bytes > entry.spec.resident_bytes {
            tracing::warn!(
                model = %entry.spec.key,
                measured = %ByteSize(bytes),
                estimate = %ByteSize(entry.spec.resident_bytes),
                "measured memory exceeds the resident estimate; the estimate should be raised"
            );
        }
    }

    pub(super) fn on_tick(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        while let Some(&(deadline, request)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let Some(waiter) = self.remove_waiter(request) else {
                self.deadlines.pop_first();
                continue;
            };
            let entry = &mut self.entries[waiter.model.index()];
            entry.counters.queue_timeouts += 1;
            fx.push(Effect::Reject {
                request,
                error: PoolError::Timeout {
                    model: entry.spec.key.clone(),
                    phase: TimeoutPhase::Queued,
                    waited: now.saturating_duration_since(waiter.enqueued),
                },
            });
            self.after_waiter_left(waiter.model, fx);
        }
        let load_timeout = self.config.load_timeout;
        for i in 0..self.entries.len() {
            let model = ModelId(i as u32);
            let entry = &mut self.entries[i];
            match &mut entry.state {
                State::Loading {
                    load,
                    since,
                    aborting,
                    timed_out,
                    ..
                } if !*aborting && after(*since, load_timeout) <= now => {
                    // A hung load would keep its memory and every request for the model
                    // waiting forever; stop it and fail like any other load.
                    tracing::warn!(model = %entry.spec.key, ?load_timeout, "load timed out; aborting it");
                    *aborting = true;
                    *timed_out = true;
                    fx.push(Effect::AbortLoad { model, load: *load });
                    continue;
                }
                _ => {}
            }
            match entry.state {
                State::Ready
                    if entry.leases.is_empty()
                        && entry.queue.is_empty()
                        && entry.idle_deadline.is_some_and(|t| t <= now) =>
                {
                    entry.counters.idle_unloads += 1;
                    self.start_unload(model, UnloadReason::IdleTimeout, fx);
                }
                State::Failed { until }
                    if until <= now
                        && entry.spec.tier.is_pinned()
                        && !entry.preload
                        && !self.shutting_down =>
                {
                    // Pinned models are meant to be resident: retry after the cooldown.
                    entry.preload = true;
                    self.preloads += 1;
                }
                _ => {}
            }
        }
    }

    pub(super) fn on_shutdown(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        tracing::info!("shutting down the pool");
        let requests: Vec<_> = self.waiters.keys().copied().collect();
        for request in requests {
            if let Some(waiter) = self.remove_waiter(request) {
                let model = self.entries[waiter.model.index()].spec.key.clone();
                fx.push(Effect::Reject {
                    request,
                    error: PoolError::ShuttingDown { model },
                });
            }
        }
        self.preloads = 0;
        for i in 0..self.entries.len() {
            let model = ModelId(i as u32);
            let entry = &mut self.entries[i];
            entry.preload = false;
            match &mut entry.state {
                State::Loading { load, aborting, .. } => {
                    if !*aborting {
                        *aborting = true;
                        fx.push(Effect::AbortLoad { model, load: *load });
                    }
                }
                State::OomRecovery { .. } | State::Failed { .. } => {
                    entry.resident = None;
                    entry.first_request = None;
                    entry.state = State::Unloaded;
                }
                State::Ready => {
                    // Models with leases are unloaded when their last lease drops.
                    self.after_last_use(model, now, fx);
                }
                State::Unloaded | State::Unloading => {}
            }
        }
    }

    /// Starts unloading an idle loaded model.
    pub(super) fn start_unload(
        &mut self,
        model: ModelId,
        reason: UnloadReason,
        fx: &mut Vec<Effect>,
    ) {
        let entry = &mut self.entries[model.index()];
        debug_assert!(
            entry.is_idle_ready(),
            "unloading {} while it is not idle",
            entry.spec.key
        );
        entry.state = State::Unloading;
        entry.idle_deadline = None;
        tracing::debug!(model = %entry.spec.key, ?reason, "unloading");
        fx.push(Effect::StartUnload { model, reason });
    }
}
