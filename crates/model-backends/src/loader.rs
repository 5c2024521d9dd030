//! The pool's plug: loads [`EmbeddingModel`]s and measures what each load took.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use model_pool::{LoadError, Loaded, ModelLoader, ModelSpec};
use parking_lot::Mutex;

use crate::config::ModelConfig;
use crate::error::BackendError;
use crate::memory::{self, LoadMeasurement, PeakSampler};
use crate::models::EmbeddingModel;

/// Loads the configured models on demand, one at a time, and records each load's memory.
///
/// Loads are serialized so that every resident-set delta belongs to exactly one model (the
/// RSS is process-wide); on a CPU, loads are bound by memory bandwidth anyway.
#[derive(Clone)]
pub struct CandleLoader {
    configs: Arc<HashMap<String, ModelConfig>>,
    measurements: Arc<Mutex<BTreeMap<String, LoadMeasurement>>>,
    serial: Arc<tokio::sync::Mutex<()>>,
}

impl CandleLoader {
    /// A loader for `configs`.
    pub fn new(configs: impl IntoIterator<Item = ModelConfig>) -> Self {
        CandleLoader {
            configs: Arc::new(configs.into_iter().map(|c| (c.key.clone(), c)).collect()),
            measurements: Arc::new(Mutex::new(BTreeMap::new())),
            serial: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The configuration of `key`.
    pub fn config(&self, key: &str) -> Option<&ModelConfig> {
        self.configs.get(key)
    }

    /// The last load's measurement of every model loaded so far.
    pub fn measurements(&self) -> BTreeMap<String, LoadMeasurement> {
        self.measurements.lock().clone()
    }
}

/// Loads `config` (blocking) and measures it: the resident increase once loaded (RSS on the
/// CPU; device memory on CUDA) and the peaks during the load.
pub fn load_measured(
    config: &ModelConfig,
) -> Result<(EmbeddingModel, LoadMeasurement), BackendError> {
    let device = crate::device::device(config.device)?;
    let before = memory::resident();
    let device_before = memory::device_used_bytes(&device);
    let sampler = PeakSampler::start();
    let started = Instant::now();
    let model = EmbeddingModel::load(config)?;
    let millis = started.elapsed().as_millis() as u64;
    let peak = sampler.stop();
    let after = memory::resident();
    let resident_bytes = match (device_before, memory::device_used_bytes(&device)) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => after.rss.saturating_sub(before.rss),
    };
    let m = LoadMeasurement {
        resident_bytes,
        peak_rss_bytes: peak.rss.saturating_sub(before.rss),
        peak_anon_bytes: peak.anon.saturating_sub(before.anon),
        millis,
    };
    tracing::info!(model = %config.key, resident = m.resident_bytes, peak_rss = m.peak_rss_bytes, ms = m.millis, "loaded");
    Ok((model, m))
}

impl ModelLoader for CandleLoader {
    type Model = EmbeddingModel;

    fn load(
        &self,
        spec: &ModelSpec,
    ) -> impl Future<Output = Result<Loaded<EmbeddingModel>, LoadError>> + Send {
        let config = self.configs.get(&spec.key).cloned();
        let key = spec.key.clone();
        let serial = Arc::clone(&self.serial);
        let measurements = Arc::clone(&self.measurements);
        async move {
            let config = config.ok_or_else(|| {
                LoadError::failed(format!("no backend configuration for `{key}`"))
            })?;
            crate::loader::run_serial_load(
                key,
                serial,
                measurements,
                |m| m.resident_bytes,
                move || load_measured(&config),
            )
            .await
        }
    }
}

/// The load future shared by every backend's [`ModelLoader`]: waits for the loader's
/// one-at-a-time lock (so an RSS delta belongs to one model), runs `job` on a blocking thread,
/// records its measurement under `key`, and maps backend errors to pool load errors, keeping
/// out-of-memory distinct so the pool can evict and retry.
pub(crate) async fn run_serial_load<M, T>(
    key: String,
    serial: Arc<tokio::sync::Mutex<()>>,
    measurements: Arc<Mutex<BTreeMap<String, T>>>,
    resident_bytes: fn(&T) -> u64,
    job: impl FnOnce() -> Result<(M, T), BackendError> + Send + 'static,
) -> Result<Loaded<M>, LoadError>
where
    M: Send + 'static,
    T: Send + 'static,
{
    let _one_at_a_time = serial.lock_owned().await;
    let loaded = tokio::task::spawn_blocking(move || {
        // Free blocks of models dropped earlier would be reused silently and hide this load's
        // resident increase.
        crate::memory::trim_heap();
        job()
    })
    .await
    .map_err(|e| LoadError::failed(format!("load task failed: {e}")))?;
    match loaded {
        Ok((model, m)) => {
            let bytes = resident_bytes(&m);
            measurements.lock().insert(key, m);
            Ok(Loaded::measured(model, bytes))
        }
        Err(e) => {
            let message = e.to_string();
            Err(if message.contains("out of memory") {
                LoadError::out_of_memory(message)
            } else {
                LoadError::failed(message)
            })
        }
    }
}
