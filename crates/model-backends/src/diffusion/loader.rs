//! The pool's plug for text-to-image models: loads a [`DiffusionModel`] and measures what the
//! load took (RSS delta on the CPU, device-memory delta on CUDA), like the embedders' loader.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use model_pool::{LoadError, Loaded, ModelLoader, ModelSpec};
use parking_lot::Mutex;

use super::config::DiffusionConfig;
use super::model::DiffusionModel;
use super::plan::MemoryPlan;
use crate::memory::{self, LoadMeasurement, PeakSampler};

/// Loads the configured text-to-image models, one at a time.
#[derive(Clone)]
pub struct DiffusionLoader {
    models: Arc<HashMap<String, (DiffusionConfig, Arc<MemoryPlan>)>>,
    measurements: Arc<Mutex<BTreeMap<String, LoadMeasurement>>>,
    serial: Arc<tokio::sync::Mutex<()>>,
}

impl DiffusionLoader {
    /// A loader for `models`, each with the plan the pool reserves by.
    pub fn new(models: impl IntoIterator<Item = (DiffusionConfig, Arc<MemoryPlan>)>) -> Self {
        DiffusionLoader {
            models: Arc::new(
                models
                    .into_iter()
                    .map(|(c, p)| (c.key.clone(), (c, p)))
                    .collect(),
            ),
            measurements: Arc::new(Mutex::new(BTreeMap::new())),
            serial: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The last load's measurement of every model loaded so far.
    pub fn measurements(&self) -> BTreeMap<String, LoadMeasurement> {
        self.measurements.lock().clone()
    }
}

/// Loads `config` (blocking) and measures it.
pub fn load_measured(
    config: &DiffusionConfig,
    plan: Arc<MemoryPlan>,
) -> Result<(DiffusionModel, LoadMeasurement), crate::error::BackendError> {
    let device = crate::device::device(config.device)?;
    let before = memory::resident();
    let device_before = memory::device_used_bytes(&device);
    let sampler = PeakSampler::start();
    let started = Instant::now();
    let model = DiffusionModel::load(config, plan)?;
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

impl ModelLoader for DiffusionLoader {
    type Model = DiffusionModel;

    fn load(
        &self,
        spec: &ModelSpec,
    ) -> impl Future<Output = Result<Loaded<DiffusionModel>, LoadError>> + Send {
        let entry = self.models.get(&spec.key).cloned();
        let key = spec.key.clone();
        let serial = Arc::clone(&self.serial);
        let measurements = Arc::clone(&self.measurements);
        async move {
            let (config, plan) = entry.ok_or_else(|| {
                LoadError::failed(format!("no text-to-image configuration for `{key}`"))
            })?;
            crate::loader::run_serial_load(
                key,
                serial,
                measurements,
                |m| m.resident_bytes,
                move || load_measured(&config, plan),
            )
            .await
        }
    }
}
