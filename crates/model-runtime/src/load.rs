//! The measured load: every model of every capability is loaded through [`measured_load`], one
//! at a time per device in the whole process, so that the memory a load adds belongs to that
//! model alone.
//!
//! The resident set is process-wide: two loads that overlap would each see the other's bytes
//! in their delta. The lock is a process-wide static (not a field of one loader or one pool),
//! one per device: a CUDA load is measured in device memory, which a concurrent CPU load does
//! not change. On a CPU, loads are bound by memory bandwidth anyway.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use model_pool::DeviceId;

use crate::error::BackendError;
use crate::memory::{self, PeakSampler};

/// Memory and time of one load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadMeasurement {
    /// Resident increase once the load returned, warm-up included: what the model keeps.
    /// RSS delta on the CPU, device-memory delta on a GPU.
    pub resident_bytes: u64,
    /// Resident increase right after the weights were read, before any warm-up pass (equal
    /// to `resident_bytes` for models without one).
    pub loaded_bytes: u64,
    /// Highest RSS increase during the load (includes mapped checkpoint pages).
    pub peak_rss_bytes: u64,
    /// Highest anonymous-memory increase during the load.
    pub peak_anon_bytes: u64,
    /// Time to read the weights.
    pub load_millis: u64,
    /// Time of the warm-up pass after it (0 without one).
    pub warmup_millis: u64,
    /// When the load started and ended, from the first measured load of the process (loads
    /// on one device never overlap).
    pub window: (Duration, Duration),
}

/// Marks the end of reading the weights inside a load, so that a warm-up pass after it is
/// measured on its own.
pub struct LoadClock {
    device: candle_core::Device,
    before_rss: u64,
    device_before: Option<gpu_memory::Usage>,
    started: Instant,
    weights: Option<(u64, u64)>,
}

impl LoadClock {
    /// The weights are read; what follows is warm-up.
    pub fn weights_read(&mut self) {
        self.weights = Some((self.delta(), self.started.elapsed().as_millis() as u64));
    }

    fn delta(&self) -> u64 {
        self.device_before
            .zip(memory::device_used_bytes(&self.device))
            .and_then(|(before, after)| after.since(&before))
            .unwrap_or_else(|| memory::resident().rss.saturating_sub(self.before_rss))
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The process-wide load lock of `device`.
fn device_lock(device: DeviceId) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<parking_lot::Mutex<HashMap<DeviceId, Arc<tokio::sync::Mutex<()>>>>> =
        OnceLock::new();
    let locks = LOCKS.get_or_init(Default::default);
    Arc::clone(locks.lock().entry(device).or_default())
}

/// Loads on `device` with `load` (blocking) and measures it, synchronously: the caller must
/// hold the device's load lock (see [`measured_load`]) or know that nothing else loads.
pub fn measure<M>(
    device: DeviceId,
    load: impl FnOnce(&mut LoadClock) -> Result<M, BackendError>,
) -> Result<(M, LoadMeasurement), BackendError> {
    let candle_device = crate::device::device(device)?;
    let start_of_process = epoch();
    // Free blocks of models dropped earlier would be reused silently and hide this load's
    // resident increase.
    memory::trim_heap();
    let before = memory::resident();
    let mut clock = LoadClock {
        device_before: memory::device_used_bytes(&candle_device),
        device: candle_device,
        before_rss: before.rss,
        started: Instant::now(),
        weights: None,
    };
    let sampler = PeakSampler::start();
    let model = load(&mut clock);
    let peak = sampler.stop();
    let model = model?;
    let total_millis = clock.started.elapsed().as_millis() as u64;
    let resident_bytes = clock.delta();
    let (loaded_bytes, load_millis) = clock.weights.unwrap_or((resident_bytes, total_millis));
    let m = LoadMeasurement {
        resident_bytes,
        loaded_bytes,
        peak_rss_bytes: peak.rss.saturating_sub(before.rss),
        peak_anon_bytes: peak.anon.saturating_sub(before.anon),
        load_millis,
        warmup_millis: total_millis.saturating_sub(load_millis),
        window: (
            clock.started.duration_since(start_of_process),
            start_of_process.elapsed(),
        ),
    };
    Ok((model, m))
}

/// Waits for `device`'s process-wide load lock, then runs [`measure`] on a blocking thread.
pub async fn measured_load<M: Send + 'static>(
    device: DeviceId,
    load: impl FnOnce(&mut LoadClock) -> Result<M, BackendError> + Send + 'static,
) -> Result<(M, LoadMeasurement), BackendError> {
    let _one_at_a_time = device_lock(device).lock_owned().await;
    tokio::task::spawn_blocking(move || measure(device, load))
        .await
        .map_err(|e| BackendError::config("load task", e))?
}

/// [`measured_load`] for synchronous callers (tools and measurement programs): blocks on the
/// device's load lock, then measures on the calling thread. Must not be called from inside an
/// async task.
pub fn measured_load_blocking<M>(
    device: DeviceId,
    load: impl FnOnce(&mut LoadClock) -> Result<M, BackendError>,
) -> Result<(M, LoadMeasurement), BackendError> {
    let lock = device_lock(device);
    let _one_at_a_time = lock.blocking_lock();
    measure(device, load)
}
