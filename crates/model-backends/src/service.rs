//! [`EmbeddingPool`]: the embedding API on top of [`model_pool::Pool`].

use std::collections::HashMap;
use std::sync::Arc;

use ::image::DynamicImage;
use model_pool::{BuildError, MemoryGovernor, Pool, PoolStatus, SchedulerConfig};

use crate::batch::{Batcher, Inputs};
use crate::config::ModelConfig;
use crate::error::EmbedError;
use crate::loader::CandleLoader;
use crate::memory::LoadMeasurement;
use crate::report::{MemoryReport, ReportRow};
use crate::text::TextMode;

/// Configures an [`EmbeddingPool`].
#[derive(Default)]
pub struct EmbeddingPoolBuilder {
    models: Vec<ModelConfig>,
    governor: Option<MemoryGovernor>,
    scheduler: Option<SchedulerConfig>,
}

impl EmbeddingPoolBuilder {
    /// Adds a model.
    pub fn model(mut self, config: ModelConfig) -> Self {
        self.models.push(config);
        self
    }

    /// Adds models.
    pub fn models(mut self, configs: impl IntoIterator<Item = ModelConfig>) -> Self {
        self.models.extend(configs);
        self
    }

    /// Uses `governor` instead of the process-wide one.
    pub fn governor(mut self, governor: MemoryGovernor) -> Self {
        self.governor = Some(governor);
        self
    }

    /// Pool-wide limits.
    pub fn scheduler(mut self, config: SchedulerConfig) -> Self {
        self.scheduler = Some(config);
        self
    }

    /// Starts the pool and one batching worker per model. Must run inside a Tokio runtime.
    pub fn build(self) -> Result<EmbeddingPool, BuildError> {
        let loader = CandleLoader::new(self.models.clone());
        let mut builder =
            Pool::builder(loader.clone()).models(self.models.iter().map(ModelConfig::pool_spec));
        if let Some(g) = self.governor {
            builder = builder.governor(g);
        }
        if let Some(c) = self.scheduler {
            builder = builder.config(c);
        }
        let pool = Arc::new(builder.build()?);
        let batchers = self
            .models
            .iter()
            .map(|c| {
                (
                    c.key.clone(),
                    Batcher::spawn(c.key.clone(), Arc::clone(&pool), c.batch, c.request_timeout),
                )
            })
            .collect();
        Ok(EmbeddingPool {
            pool,
            loader,
            batchers,
            configs: self.models,
        })
    }
}

/// Embedding models sharing one memory-aware pool.
///
/// Requests for a model are batched (see [`crate::batch`]); the model is loaded on the first
/// request (or at start for hot tiers), kept while in use, and evicted by the pool when memory
/// is needed elsewhere and it is idle.
pub struct EmbeddingPool {
    pool: Arc<Pool<CandleLoader>>,
    loader: CandleLoader,
    batchers: HashMap<String, Batcher>,
    configs: Vec<ModelConfig>,
}

impl EmbeddingPool {
    /// Starts configuring a pool.
    pub fn builder() -> EmbeddingPoolBuilder {
        EmbeddingPoolBuilder::default()
    }

    /// Embeds documents: one vector per text, in order.
    pub async fn embed<I, S>(&self, model: &str, texts: I) -> Result<Vec<Vec<f32>>, EmbedError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.embed_with(model, texts, TextMode::Document).await
    }

    /// Embeds search queries with the model's query instruction (GTE-Qwen2, Stella, NV-Embed;
    /// other models embed them as documents).
    pub async fn embed_queries<I, S>(
        &self,
        model: &str,
        texts: I,
    ) -> Result<Vec<Vec<f32>>, EmbedError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.embed_with(model, texts, TextMode::Query).await
    }

    /// Embeds texts in `mode`.
    pub async fn embed_with<I, S>(
        &self,
        model: &str,
        texts: I,
        mode: TextMode,
    ) -> Result<Vec<Vec<f32>>, EmbedError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let texts: Vec<String> = texts.into_iter().map(Into::into).collect();
        self.batcher(model)?
            .submit(Inputs::Texts { texts, mode })
            .await
    }

    /// Embeds images (CLIP): one vector per image, in the same space as its text embeddings.
    pub async fn embed_images(
        &self,
        model: &str,
        images: Vec<DynamicImage>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let batcher = self.batcher(model)?;
        if let Some(c) = self.configs.iter().find(|c| c.key == model)
            && let Some(family) = c.family.or_else(|| crate::models::Family::from_key(model))
            && !family.embeds_images()
        {
            return Err(EmbedError::Unsupported {
                model: model.to_owned(),
                what: "images",
            });
        }
        batcher.submit(Inputs::Images(images)).await
    }

    /// The pool's status: states, leases, queues, reserved and measured bytes per model.
    pub fn status(&self) -> PoolStatus {
        self.pool.status()
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool<CandleLoader> {
        &self.pool
    }

    /// The last load measurement of every model loaded so far.
    pub fn measurements(&self) -> std::collections::BTreeMap<String, LoadMeasurement> {
        self.loader.measurements()
    }

    /// Estimate vs measured memory for every model (measured ones have been loaded).
    pub fn memory_report(&self) -> MemoryReport {
        let measured = self.loader.measurements();
        let status = self.pool.status();
        let rows = self
            .configs
            .iter()
            .map(|c| {
                let s = status.model(&c.key);
                ReportRow {
                    key: c.key.clone(),
                    estimate_mb: c.memory.and_then(|m| m.estimate_mb),
                    declared_resident_bytes: c.memory.map(|m| m.resident_bytes),
                    declared_per_batch_bytes: c.memory.map(|_| c.per_batch_bytes()),
                    measured: measured.get(&c.key).copied(),
                    peak_request_bytes: None,
                    estimate_exceeded: s.is_some_and(|s| s.estimate_exceeded),
                }
            })
            .collect();
        MemoryReport { rows }
    }

    /// Stops serving: fails waiting requests and unloads every model once idle.
    pub async fn shutdown(&self) {
        self.pool.shutdown().await;
    }

    fn batcher(&self, model: &str) -> Result<&Batcher, EmbedError> {
        self.batchers.get(model).ok_or_else(|| {
            model_pool::PoolError::UnknownModel {
                model: model.to_owned(),
            }
            .into()
        })
    }
}
