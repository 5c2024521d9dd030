//! [`ImagePool`]: the text-to-image API on top of [`model_pool::Pool`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use model_pool::{ByteSize, MemoryGovernor, Pool, PoolStatus, SchedulerConfig};

use super::config::DiffusionConfig;
use super::error::ImageError;
use super::loader::DiffusionLoader;
use super::model::GeneratedImage;
use super::plan::MemoryPlan;
use super::request::{ImageRequest, Limits, Progress};
use crate::memory::LoadMeasurement;

/// Configures an [`ImagePool`].
#[derive(Default)]
pub struct ImagePoolBuilder {
    models: Vec<DiffusionConfig>,
    governor: Option<MemoryGovernor>,
    scheduler: Option<SchedulerConfig>,
}

impl ImagePoolBuilder {
    /// Adds a model.
    pub fn model(mut self, config: DiffusionConfig) -> Self {
        self.models.push(config);
        self
    }

    /// Draws on `governor` instead of the process-wide one (share it with the other pools of
    /// the process: one governor per device budget).
    pub fn governor(mut self, governor: MemoryGovernor) -> Self {
        self.governor = Some(governor);
        self
    }

    /// Pool-wide limits.
    pub fn scheduler(mut self, config: SchedulerConfig) -> Self {
        self.scheduler = Some(config);
        self
    }

    /// Computes each model's memory plan (reading its configs and safetensors headers when
    /// its files are there) and starts the pool. Must run inside a Tokio runtime.
    pub fn build(self) -> Result<ImagePool, ImageError> {
        let mut entries = HashMap::new();
        let mut specs = Vec::new();
        for c in &self.models {
            let plan = Arc::new(c.plan().map_err(|e| ImageError::backend(&c.key, e))?);
            specs.push(
                c.pool_spec(&plan)
                    .map_err(|e| ImageError::backend(&c.key, e))?,
            );
            let limits = c.limits_for(&plan);
            entries.insert(
                c.key.clone(),
                Entry {
                    config: c.clone(),
                    plan,
                    limits,
                },
            );
        }
        let loader = DiffusionLoader::new(
            entries
                .values()
                .map(|e| (e.config.clone(), Arc::clone(&e.plan))),
        );
        let mut builder = Pool::builder(loader.clone()).models(specs);
        if let Some(g) = self.governor {
            builder = builder.governor(g);
        }
        if let Some(s) = self.scheduler {
            builder = builder.config(s);
        }
        let pool = builder.build().map_err(|e| ImageError::Backend {
            model: self
                .models
                .first()
                .map_or_else(String::new, |c| c.key.clone()),
            source: crate::error::BackendError::config("pool", e),
        })?;
        Ok(ImagePool {
            pool: Arc::new(pool),
            loader,
            entries,
        })
    }
}

struct Entry {
    config: DiffusionConfig,
    plan: Arc<MemoryPlan>,
    limits: Limits,
}

/// Text-to-image models sharing one memory-aware pool.
///
/// A model is loaded on its first request (or at start for hot tiers) with its resident bytes
/// reserved; each request then reserves, stage by stage, what that stage needs at the
/// requested size, and releases it when the stage ends. One request runs per model at a time
/// (the denoiser saturates the device); others queue.
pub struct ImagePool {
    pool: Arc<Pool<DiffusionLoader>>,
    loader: DiffusionLoader,
    entries: HashMap<String, Entry>,
}

/// Sets a flag when dropped: the blocking generation checks it between steps, so a caller
/// that gives up (drops the future, or the pool's deadline passes) stops the work too.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl ImagePool {
    /// Starts configuring a pool.
    pub fn builder() -> ImagePoolBuilder {
        ImagePoolBuilder::default()
    }

    /// Generates a `width × height` image of `prompt` in `steps` steps from `seed`, as PNG
    /// bytes.
    pub async fn text_to_image(
        &self,
        model: &str,
        prompt: &str,
        width: u32,
        height: u32,
        steps: u32,
        seed: u64,
    ) -> Result<Vec<u8>, ImageError> {
        let request = ImageRequest::new(prompt)
            .size(width, height)
            .steps(steps)
            .seed(seed);
        Ok(self.generate(model, request, |_| {}).await?.png)
    }

    /// Generates `request`, calling `progress` as it runs (from a blocking thread: forward
    /// to a channel rather than doing slow work in it).
    ///
    /// Invalid requests and sizes that can never fit the device budget are refused before
    /// the model is even loaded.
    pub async fn generate(
        &self,
        model: &str,
        request: ImageRequest,
        progress: impl Fn(Progress) + Send + Sync + 'static,
    ) -> Result<GeneratedImage, ImageError> {
        let entry = self
            .entries
            .get(model)
            .ok_or_else(|| ImageError::UnknownModel {
                model: model.to_owned(),
            })?;
        entry.limits.check(model, &request)?;
        let memory = entry
            .plan
            .request(request.width, request.height)
            .map_err(|e| ImageError::backend(model, e))?;
        let device = entry.config.device;
        let budget = self.pool.governor().budget(device).unwrap_or(0);
        if memory.peak_bytes() > budget {
            return Err(ImageError::NeverFits {
                model: model.to_owned(),
                width: request.width,
                height: request.height,
                device,
                need: ByteSize(memory.peak_bytes()),
                budget: ByteSize(budget),
            });
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(Arc::clone(&cancel));
        let governor = self.pool.governor().clone();
        let timeout = Some(entry.config.request_timeout);
        let key = model.to_owned();
        self.pool
            .run(model, timeout, move |lease| async move {
                let work = tokio::task::spawn_blocking(move || {
                    lease.generate(&request, &governor, &progress, &cancel)
                });
                match work.await {
                    Ok(result) => result,
                    // A panic in the model code is the pool's to report (RequestPanicked).
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => Err(ImageError::Backend {
                        model: key,
                        source: crate::error::BackendError::config("generation task", e),
                    }),
                }
            })
            .await?
    }

    /// The memory plan of `model`.
    pub fn plan(&self, model: &str) -> Option<&MemoryPlan> {
        self.entries.get(model).map(|e| &*e.plan)
    }

    /// The request limits of `model`.
    pub fn limits(&self, model: &str) -> Option<&Limits> {
        self.entries.get(model).map(|e| &e.limits)
    }

    /// The pool's status.
    pub fn status(&self) -> PoolStatus {
        self.pool.status()
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool<DiffusionLoader> {
        &self.pool
    }

    /// The last load measurement of every model loaded so far.
    pub fn measurements(&self) -> BTreeMap<String, LoadMeasurement> {
        self.loader.measurements()
    }

    /// Stops serving: fails waiting requests and unloads every model once idle.
    pub async fn shutdown(&self) {
        self.pool.shutdown().await;
    }
}
