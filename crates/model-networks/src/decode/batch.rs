//! Continuous batching of decoding steps: the requests decoding on one loaded GGUF model
//! share each forward pass.
//!
//! Decoding on a CPU (and on a GPU at small batch) is bound by reading the weights: a step
//! of one token reads every matrix once. When several requests decode at once, each one's
//! [`Session::step`](super::Session::step) hands its token and KV cache to the model's
//! [`StepBatcher`]; one of the waiting threads (the leader) runs a single forward pass for
//! all of them ([`DecoderTrunk::decode_batch`](super::trunk::DecoderTrunk::decode_batch)),
//! which reads the weights once, and hands each cache back with its logits. Nothing else
//! changes for a request: it still runs on its own thread, under its own lease and KV
//! reservation, samples with its own generator, and stops (or is cancelled) on its own —
//! the step after, the batch simply does not include it.
//!
//! A leader first waits, briefly, for every request that is decoding to hand in its next
//! token (they arrive within microseconds of each other, once each has sampled and sent its
//! last token), so that the requests stay in step instead of alternating in smaller
//! batches. The wait ends at the last arrival, or after a quarter of the previous step's
//! time (at most [`MAX_GATHER`]) when a request is late — a client that stopped reading,
//! say — so nobody waits on a straggler for long.
//!
//! Each row of a batch is computed exactly as it is alone (see
//! [`Step`](super::trunk::Step)), so batching never changes a request's tokens.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::attention::KvCaches;

/// Most sequences in one batched step. Below the quantized kernels' row count for their
/// prefill path ([`quant_kernels::expand::MIN_ROWS`]), so that a batch's rows take the same
/// per-row kernel as a request alone.
pub const MAX_BATCH: usize = 16;
const _: () = assert!(MAX_BATCH < quant_kernels::expand::MIN_ROWS);

/// The longest a leader waits for late requests before running the step without them.
pub const MAX_GATHER: Duration = Duration::from_millis(20);

/// How many batched steps ran and how many sequence-steps they carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Forward passes run.
    pub steps: u64,
    /// Sequence-steps in them (the tokens decoded).
    pub rows: u64,
    /// Sequences in the largest batch.
    pub largest: usize,
}

/// The decoding steps waiting for, and coming back from, one model's forward passes.
#[derive(Default)]
pub struct StepBatcher {
    queue: Mutex<Queue>,
    changed: Condvar,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Ticket>,
    done: HashMap<u64, Outcome>,
    /// A leader is gathering or running a step.
    running: bool,
    next_id: u64,
    /// Sessions past their prompt and not yet dropped.
    decoding: usize,
    last_step: Duration,
    stats: BatchStats,
}

struct Ticket {
    id: u64,
    token: u32,
    cache: KvCaches,
}

type Outcome = (KvCaches, Result<Vec<f32>, String>);

/// Runs one decoding step for every `(token, cache)`; the logits of each.
pub type RunBatch<'a> =
    dyn Fn(&mut [(u32, &mut KvCaches)]) -> candle_core::Result<Vec<Vec<f32>>> + 'a;

impl StepBatcher {
    /// A session starts decoding: leaders wait for its steps from now on.
    pub fn join(&self) {
        self.queue.lock().decoding += 1;
    }

    /// A session that joined is gone.
    pub fn leave(&self) {
        let mut q = self.queue.lock();
        q.decoding = q.decoding.saturating_sub(1);
        drop(q);
        self.changed.notify_all();
    }

    /// Counts so far.
    pub fn stats(&self) -> BatchStats {
        self.queue.lock().stats
    }

    /// Runs `token` after `cache` in the next batched step (leading it if no one is); the
    /// logits after it. `cache` is lent to the step and is back in place on return, error or
    /// not.
    pub fn step(
        &self,
        run: &RunBatch<'_>,
        cache: &mut KvCaches,
        token: u32,
    ) -> candle_core::Result<Vec<f32>> {
        let placeholder = KvCaches::new(0, 0, cache.dtype());
        let mut q = self.queue.lock();
        let id = q.next_id;
        q.next_id += 1;
        q.pending.push(Ticket {
            id,
            token,
            cache: std::mem::replace(cache, placeholder),
        });
        self.changed.notify_all();
        loop {
            if let Some((back, logits)) = q.done.remove(&id) {
                *cache = back;
                return logits.map_err(candle_core::Error::Msg);
            }
            if q.running {
                self.changed.wait(&mut q);
                continue;
            }
            q.running = true;
            let gather_until = Instant::now() + (q.last_step / 4).min(MAX_GATHER);
            while q.pending.len() < q.decoding.min(MAX_BATCH)
                && !self.changed.wait_until(&mut q, gather_until).timed_out()
            {}
            let take = q.pending.len().min(MAX_BATCH);
            let batch: Vec<Ticket> = q.pending.drain(..take).collect();
            drop(q);
            let started = Instant::now();
            let outcomes = run_batch(run, batch);
            q = self.queue.lock();
            q.last_step = started.elapsed();
            q.stats.steps += 1;
            q.stats.rows += outcomes.len() as u64;
            q.stats.largest = q.stats.largest.max(outcomes.len());
            q.done.extend(outcomes);
            q.running = false;
            self.changed.notify_all();
        }
    }
}

/// Runs `batch`, turning an error or a panic into each ticket's error; every cache comes
/// back.
fn run_batch(run: &RunBatch<'_>, mut batch: Vec<Ticket>) -> Vec<(u64, Outcome)> {
    let result = {
        let mut steps: Vec<(u32, &mut KvCaches)> =
            batch.iter_mut().map(|t| (t.token, &mut t.cache)).collect();
        std::panic::catch_unwind(AssertUnwindSafe(|| run(&mut steps)))
    };
    let logits: Result<Vec<Vec<f32>>, String> = match result {
        Ok(Ok(l)) if l.len() == batch.len() => Ok(l),
        Ok(Ok(l)) => Err(format!("{} logits for {} sequences", l.len(), batch.len())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!(
            "the batched decoding step panicked: {}",
            model_runtime::error::panic_message(panic.as_ref())
        )),
    };
    match logits {
        Ok(l) => batch
            .into_iter()
            .zip(l)
            .map(|(t, l)| (t.id, (t.cache, Ok(l))))
            .collect(),
        Err(e) => batch
            .into_iter()
            .map(|t| (t.id, (t.cache, Err(e.clone()))))
            .collect(),
    }
}
