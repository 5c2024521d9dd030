//! The pool's plug for generators: loads [`GenerativeModel`]s and measures what each takes.
//!
//! A load ends with one warm-up forward pass of two tokens. On x86-64 and aarch64, candle's
//! quantized matmuls repack Q4_K weights (and Q6_K / Q8_0 ones when a product has more than
//! one row, as in every prefill) into CPU-friendly tiles on first use and keep the tiles next
//! to the original blocks: for a Q4_K_M model that is ~4/3 of its Q4_K bytes again. Without
//! the warm-up that memory would appear during the first request, outside what the load
//! measured and reported to the pool.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use model_pool::{LoadError, Loaded, ModelLoader, ModelSpec};
use parking_lot::Mutex;

use super::config::GeneratorConfig;
use super::model::GenerativeModel;
use crate::error::BackendError;
use crate::memory::{self, PeakSampler};

/// Memory and time of one generator load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GenLoadMeasurement {
    /// Resident increase right after reading the weights (RSS on the CPU, device memory on
    /// CUDA).
    pub loaded_bytes: u64,
    /// Resident increase after the warm-up pass: what the model keeps (reported to the pool).
    pub resident_bytes: u64,
    /// Highest RSS increase during load and warm-up.
    pub peak_rss_bytes: u64,
    /// Highest anonymous-memory increase during load and warm-up.
    pub peak_anon_bytes: u64,
    /// Time to read the weights.
    pub load_millis: u64,
    /// Time of the warm-up pass.
    pub warmup_millis: u64,
}

/// Loads `config` (blocking), runs the warm-up pass, and measures both.
pub fn load_measured(
    config: &GeneratorConfig,
) -> Result<(GenerativeModel, GenLoadMeasurement), BackendError> {
    let device = crate::device::device(config.device)?;
    let before = memory::resident();
    let device_before = memory::device_used_bytes(&device);
    let sampler = PeakSampler::start();
    let started = Instant::now();
    let model = GenerativeModel::load(config)?;
    let load_millis = started.elapsed().as_millis() as u64;
    let delta = |before_rss: u64| match (device_before, memory::device_used_bytes(&device)) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => memory::resident().rss.saturating_sub(before_rss),
    };
    let loaded_bytes = delta(before.rss);
    let warm = Instant::now();
    {
        // Two tokens: the matmuls see more than one row, as in every prefill, so the tiles
        // kept only for multi-row products are built now too.
        let first = model.end_ids().first().copied().unwrap_or(0);
        let mut session = model.session(2)?;
        session.prefill(&[first, first], None, 2)?;
    }
    let warmup_millis = warm.elapsed().as_millis() as u64;
    let resident_bytes = delta(before.rss);
    let peak = sampler.stop();
    let m = GenLoadMeasurement {
        loaded_bytes,
        resident_bytes,
        peak_rss_bytes: peak.rss.saturating_sub(before.rss),
        peak_anon_bytes: peak.anon.saturating_sub(before.anon),
        load_millis,
        warmup_millis,
    };
    tracing::info!(model = %config.key, loaded = m.loaded_bytes, resident = m.resident_bytes, ms = m.load_millis, "generator loaded");
    Ok((model, m))
}

/// Loads the configured generators on demand, one at a time (the RSS is process-wide, so a
/// delta belongs to one model only if loads do not overlap).
#[derive(Clone)]
pub struct GenerativeLoader {
    configs: Arc<HashMap<String, GeneratorConfig>>,
    measurements: Arc<Mutex<BTreeMap<String, GenLoadMeasurement>>>,
    serial: Arc<tokio::sync::Mutex<()>>,
}

impl GenerativeLoader {
    /// A loader for `configs`.
    pub fn new(configs: impl IntoIterator<Item = GeneratorConfig>) -> Self {
        GenerativeLoader {
            configs: Arc::new(configs.into_iter().map(|c| (c.key.clone(), c)).collect()),
            measurements: Arc::new(Mutex::new(BTreeMap::new())),
            serial: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The last load's measurement of every model loaded so far.
    pub fn measurements(&self) -> BTreeMap<String, GenLoadMeasurement> {
        self.measurements.lock().clone()
    }
}

impl ModelLoader for GenerativeLoader {
    type Model = GenerativeModel;

    fn load(
        &self,
        spec: &ModelSpec,
    ) -> impl Future<Output = Result<Loaded<GenerativeModel>, LoadError>> + Send {
        let config = self.configs.get(&spec.key).cloned();
        let key = spec.key.clone();
        let serial = Arc::clone(&self.serial);
        let measurements = Arc::clone(&self.measurements);
        async move {
            let config = config.ok_or_else(|| {
                LoadError::failed(format!("no generator configuration for `{key}`"))
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
