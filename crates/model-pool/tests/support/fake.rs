//! A loader that loads nothing and fails on request: scripted outcomes per model for
//! scenario tests, random faults for the stress test, and counters that show what happened.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use model_pool::{LoadError, Loaded, ModelLoader, ModelSpec};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// What one load does.
#[derive(Debug, Clone, PartialEq)]
#[allow(dead_code)]
pub enum Script {
    /// Succeeds after one yield.
    Ok,
    /// Succeeds after a delay.
    OkAfter(Duration),
    /// Succeeds and reports a measurement.
    OkMeasured(u64),
    /// Returns an error.
    Fail(&'static str),
    /// Reports out-of-memory.
    Oom,
    /// Panics.
    Panic,
    /// Never finishes (until the pool drops the future).
    Hang,
}

/// Probabilities of each fault for loads without a script.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultRates {
    pub fail: f64,
    pub panic: f64,
    pub oom: f64,
    pub hang: f64,
}

/// A loaded fake model. Counts itself so tests can see that every model was freed.
#[derive(Debug)]
pub struct FakeModel {
    pub key: String,
    live: Arc<AtomicU64>,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    finished: AtomicU64,
    dropped_unfinished: AtomicU64,
    unloads: AtomicU64,
    live: Arc<AtomicU64>,
}

#[derive(Clone)]
pub struct FakeLoader {
    scripts: Arc<Mutex<HashMap<String, VecDeque<Script>>>>,
    starts: Arc<Mutex<HashMap<String, u64>>>,
    rng: Arc<Mutex<Option<(SmallRng, FaultRates)>>>,
    counters: Arc<Counters>,
}

#[allow(dead_code)]
impl FakeLoader {
    pub fn new() -> Self {
        FakeLoader {
            scripts: Arc::default(),
            starts: Arc::default(),
            rng: Arc::new(Mutex::new(None)),
            counters: Arc::default(),
        }
    }

    /// Loads without a script fail at these rates, drawn from a seeded generator.
    pub fn with_faults(seed: u64, rates: FaultRates) -> Self {
        let loader = Self::new();
        *loader.rng.lock() = Some((SmallRng::seed_from_u64(seed), rates));
        loader
    }

    /// The next loads of `key` do these things, in order; then plain successes.
    pub fn script(&self, key: &str, steps: impl IntoIterator<Item = Script>) {
        self.scripts
            .lock()
            .entry(key.to_owned())
            .or_default()
            .extend(steps);
    }

    /// Loads of `key` started so far.
    pub fn loads_of(&self, key: &str) -> u64 {
        self.starts.lock().get(key).copied().unwrap_or(0)
    }

    /// Loads started over all models.
    pub fn loads_started(&self) -> u64 {
        self.counters.started.load(Ordering::SeqCst)
    }

    /// Load futures dropped before they finished (aborted loads).
    pub fn loads_dropped(&self) -> u64 {
        self.counters.dropped_unfinished.load(Ordering::SeqCst)
    }

    /// Unloads called.
    pub fn unloads(&self) -> u64 {
        self.counters.unloads.load(Ordering::SeqCst)
    }

    /// Fake models alive now (loaded and not yet freed).
    pub fn live_models(&self) -> u64 {
        self.counters.live.load(Ordering::SeqCst)
    }

    fn next_step(&self, key: &str) -> Script {
        if let Some(step) = self
            .scripts
            .lock()
            .get_mut(key)
            .and_then(VecDeque::pop_front)
        {
            return step;
        }
        let mut rng = self.rng.lock();
        let Some((rng, rates)) = rng.as_mut() else {
            return Script::Ok;
        };
        let x: f64 = rng.random();
        let mut edge = rates.fail;
        if x < edge {
            return Script::Fail("injected load failure");
        }
        edge += rates.panic;
        if x < edge {
            return Script::Panic;
        }
        edge += rates.oom;
        if x < edge {
            return Script::Oom;
        }
        edge += rates.hang;
        if x < edge {
            return Script::Hang;
        }
        if rng.random_bool(0.2) {
            Script::OkAfter(Duration::from_micros(rng.random_range(50..500)))
        } else {
            Script::Ok
        }
    }
}

/// Counts a load future dropped before it finished.
struct Unfinished(Option<Arc<Counters>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.dropped_unfinished.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl ModelLoader for FakeLoader {
    type Model = FakeModel;

    fn load(
        &self,
        spec: &ModelSpec,
    ) -> impl Future<Output = Result<Loaded<FakeModel>, LoadError>> + Send {
        let step = self.next_step(&spec.key);
        *self.starts.lock().entry(spec.key.clone()).or_default() += 1;
        let counters = Arc::clone(&self.counters);
        let key = spec.key.clone();
        async move {
            counters.started.fetch_add(1, Ordering::SeqCst);
            let mut unfinished = Unfinished(Some(Arc::clone(&counters)));
            tokio::task::yield_now().await;
            let model = || {
                counters.live.fetch_add(1, Ordering::SeqCst);
                FakeModel {
                    key: key.clone(),
                    live: Arc::clone(&counters.live),
                }
            };
            let result = match step {
                Script::Ok => Ok(Loaded::new(model())),
                Script::OkAfter(delay) => {
                    tokio::time::sleep(delay).await;
                    Ok(Loaded::new(model()))
                }
                Script::OkMeasured(bytes) => Ok(Loaded::measured(model(), bytes)),
                Script::Fail(message) => Err(LoadError::failed(message)),
                Script::Oom => Err(LoadError::out_of_memory("injected out-of-memory")),
                Script::Panic => panic!("injected load panic for {key}"),
                Script::Hang => std::future::pending().await,
            };
            unfinished.0 = None;
            counters.finished.fetch_add(1, Ordering::SeqCst);
            result
        }
    }

    fn unload(
        &self,
        _spec: &ModelSpec,
        model: Arc<FakeModel>,
    ) -> impl Future<Output = Result<(), LoadError>> + Send {
        let counters = Arc::clone(&self.counters);
        async move {
            counters.unloads.fetch_add(1, Ordering::SeqCst);
            // The pool hands over the last reference: nothing may still hold the model.
            assert_eq!(
                Arc::strong_count(&model),
                1,
                "unload while a lease still holds the model"
            );
            drop(model);
            tokio::task::yield_now().await;
            Ok(())
        }
    }
}
