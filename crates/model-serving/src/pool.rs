//! [`ModelPool`]: every served model of every capability in ONE `model_pool::Pool` (one
//! scheduler, one governor), with the capability APIs as views over it. Eviction, admission,
//! queues, tiers and the never-fits refusal see all models together, so an idle embedder
//! makes room for a generator the moment one is asked for.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use image::DynamicImage;
use model_networks::embed::text::TextMode;
use model_pool::{
    BuildError, ByteSize, MemoryGovernor, Pool, PoolError, PoolStatus, SchedulerConfig,
};
use model_runtime::LoadMeasurement;

use crate::config::{ModelOptions, ServedModel};
use crate::download::{DownloadProgress, Downloads};
use crate::embed::batch::{Batcher, Embeddings, Inputs};
use crate::error::ServeError;
use crate::generate::{self, GenerateRequest, TokenStream};
use crate::loader::{CapabilityLease, LoadedModel, Prepared, ServingLoader};
use crate::report::{MemoryReport, ReportRow};
use crate::text_to_image::{GeneratedImage, ImageRequest, Limits, MemoryPlan, Progress};
use model_hub::{FetchObserver, HubClient};

/// Configures a [`ModelPool`].
#[derive(Default)]
pub struct ModelPoolBuilder {
    models: Vec<ServedModel>,
    governor: Option<MemoryGovernor>,
    scheduler: Option<SchedulerConfig>,
    hub: Option<HubClient>,
    download_observer: Option<Arc<dyn FetchObserver>>,
}

impl ModelPoolBuilder {
    /// Adds a model.
    pub fn model(mut self, model: ServedModel) -> Self {
        self.models.push(model);
        self
    }

    /// Adds models.
    pub fn models(mut self, models: impl IntoIterator<Item = ServedModel>) -> Self {
        self.models.extend(models);
        self
    }

    /// Draws on `governor` instead of the process-wide one.
    pub fn governor(mut self, governor: MemoryGovernor) -> Self {
        self.governor = Some(governor);
        self
    }

    /// Pool-wide limits.
    pub fn scheduler(mut self, config: SchedulerConfig) -> Self {
        self.scheduler = Some(config);
        self
    }

    /// Downloads Hub models through `client` instead of one made from the `HF_*` variables
    /// on first use.
    pub fn hub_client(mut self, client: HubClient) -> Self {
        self.hub = Some(client);
        self
    }

    /// Tells `observer` how each Hub download goes (a progress bar), besides
    /// [`ModelPool::download_progress`].
    pub fn download_observer(mut self, observer: Arc<dyn FetchObserver>) -> Self {
        self.download_observer = Some(observer);
        self
    }

    /// Computes each text-to-image model's memory plan (reading its configs and safetensors
    /// headers when its files are there), starts the pool and one batching worker per
    /// embedder. Must run inside a Tokio runtime. Models no backend can run (Kimi K2) are kept
    /// aside: requests for them are refused with a typed error, never loaded.
    pub fn build(self) -> Result<ModelPool, ServeError> {
        let governor = match self.governor {
            Some(g) => g,
            None => MemoryGovernor::global()
                .map_err(|e| build_error(e.into()))?
                .clone(),
        };
        let mut entries: HashMap<String, Entry> = HashMap::new();
        let mut prepared = Vec::new();
        let mut specs = Vec::new();
        let mut order = Vec::new();
        for model in self.models {
            if entries.contains_key(&model.key) {
                return Err(build_error(BuildError::DuplicateModel(model.key.clone())));
            }
            let mut plan = None;
            let mut limits = None;
            if let ModelOptions::TextToImage(o) = &model.options {
                let p = Arc::new(o.plan(&model.source, model.device)?);
                limits = Some(o.limits_for(&p));
                plan = Some(p);
            }
            if model.is_servable() {
                let resident = match &plan {
                    Some(p) => p
                        .resident_bytes()
                        .map_err(|e| ServeError::backend(&model.key, e))?,
                    None => 0,
                };
                specs.push(model.pool_spec(resident));
                prepared.push(Prepared {
                    model: model.clone(),
                    plan: plan.clone(),
                });
            }
            order.push(model.key.clone());
            entries.insert(
                model.key.clone(),
                Entry {
                    model,
                    plan,
                    limits,
                    batcher: None,
                },
            );
        }
        let mut downloads = Downloads::with_observer(self.download_observer);
        if let Some(client) = self.hub {
            downloads = downloads.with_client(client);
        }
        let loader = ServingLoader::new(prepared, downloads);
        let mut builder = Pool::builder(loader.clone())
            .governor(governor.clone())
            .models(specs);
        if let Some(c) = self.scheduler {
            builder = builder.config(c);
        }
        let pool = Arc::new(builder.build().map_err(build_error)?);
        for entry in entries.values_mut() {
            if let ModelOptions::Embed(o) = &entry.model.options {
                entry.batcher = Some(Batcher::spawn(
                    entry.model.key.clone(),
                    Arc::clone(&pool),
                    o.batch,
                    entry.model.timeout(),
                ));
            }
        }
        Ok(ModelPool {
            pool,
            loader,
            governor,
            entries,
            order,
        })
    }
}

fn build_error(e: BuildError) -> ServeError {
    ServeError::Pool(PoolError::Internal {
        model: String::new(),
        message: e.to_string(),
    })
}

struct Entry {
    model: ServedModel,
    plan: Option<Arc<MemoryPlan>>,
    limits: Option<Limits>,
    batcher: Option<Batcher>,
}

/// Every served model in one memory-aware pool.
///
/// A model is loaded on its first request (or at start when hot), kept while in use, and
/// evicted when memory is needed by any other model and it is idle. Embedding requests are
/// batched; a generation request holds its KV reservation for as long as it streams; a
/// text-to-image request reserves each stage's memory as the stage runs.
pub struct ModelPool {
    pool: Arc<Pool<ServingLoader>>,
    loader: ServingLoader,
    governor: MemoryGovernor,
    entries: HashMap<String, Entry>,
    order: Vec<String>,
}

/// Sets a flag when dropped: blocking work checks it between steps, so a caller that gives up
/// (drops the future, or the pool's deadline passes) stops the work too.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl ModelPool {
    /// Starts configuring a pool.
    pub fn builder() -> ModelPoolBuilder {
        ModelPoolBuilder::default()
    }

    fn entry(&self, model: &str) -> Result<&Entry, ServeError> {
        self.entries.get(model).ok_or_else(|| {
            ServeError::Pool(PoolError::UnknownModel {
                model: model.to_owned(),
            })
        })
    }

    /// The configuration of `model`.
    pub fn model(&self, model: &str) -> Option<&ServedModel> {
        self.entries.get(model).map(|e| &e.model)
    }

    /// Every model, in the order they were added.
    pub fn models(&self) -> impl Iterator<Item = &ServedModel> {
        self.order.iter().filter_map(|k| self.model(k))
    }

    /// Embeds documents: one vector per text, in order.
    pub async fn embed<I, S>(&self, model: &str, texts: I) -> Result<Vec<Vec<f32>>, ServeError>
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
    ) -> Result<Vec<Vec<f32>>, ServeError>
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
    ) -> Result<Vec<Vec<f32>>, ServeError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Ok(self.embed_with_usage(model, texts, mode).await?.vectors)
    }

    /// Like [`embed_with`](Self::embed_with), with each text's token count and the time the
    /// request waited for its batch (what a server reports as usage and queue wait).
    pub async fn embed_with_usage<I, S>(
        &self,
        model: &str,
        texts: I,
        mode: TextMode,
    ) -> Result<Embeddings, ServeError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let texts: Vec<String> = texts.into_iter().map(Into::into).collect();
        self.batcher(model, "embed text")?
            .submit(Inputs::Texts { texts, mode })
            .await
    }

    /// Embeds images (CLIP): one vector per image, in the same space as its text embeddings.
    pub async fn embed_images(
        &self,
        model: &str,
        images: Vec<DynamicImage>,
    ) -> Result<Vec<Vec<f32>>, ServeError> {
        Ok(self.embed_images_with_usage(model, images).await?.vectors)
    }

    /// Like [`embed_images`](Self::embed_images), with the time the request waited for its
    /// batch (token counts are 0 for images).
    pub async fn embed_images_with_usage(
        &self,
        model: &str,
        images: Vec<DynamicImage>,
    ) -> Result<Embeddings, ServeError> {
        let entry = self.entry(model)?;
        let o = entry.model.embed_options("embed images")?;
        if o.family.is_some_and(|f| !f.embeds_images()) {
            return Err(entry.model.wrong("embed images"));
        }
        self.batcher(model, "embed images")?
            .submit(Inputs::Images(images))
            .await
    }

    fn batcher(&self, model: &str, asked: &'static str) -> Result<&Batcher, ServeError> {
        let entry = self.entry(model)?;
        entry
            .batcher
            .as_ref()
            .ok_or_else(|| entry.model.wrong(asked))
    }

    /// Generates an answer to `request`, token by token.
    ///
    /// Errors before the first token (unknown model, never fits, no backend, context too
    /// long, busy, load failure) are returned here; the stream then yields the tokens.
    pub async fn generate(
        &self,
        model: &str,
        request: GenerateRequest,
    ) -> Result<TokenStream, ServeError> {
        self.start_generation(model, request, None).await
    }

    /// Answers `prompt` about `image` (LLaVA), token by token.
    pub async fn describe_image(
        &self,
        model: &str,
        image: DynamicImage,
        prompt: &str,
    ) -> Result<TokenStream, ServeError> {
        self.start_generation(model, GenerateRequest::user(prompt), Some(image))
            .await
    }

    /// Like [`describe_image`](Self::describe_image) with a full request.
    pub async fn describe_image_with(
        &self,
        model: &str,
        image: DynamicImage,
        request: GenerateRequest,
    ) -> Result<TokenStream, ServeError> {
        self.start_generation(model, request, Some(image)).await
    }

    async fn start_generation(
        &self,
        model: &str,
        request: GenerateRequest,
        image: Option<DynamicImage>,
    ) -> Result<TokenStream, ServeError> {
        let entry = self.entry(model)?;
        let asked = if image.is_some() {
            "describe images"
        } else {
            "generate text"
        };
        let o = entry.model.generate_options(asked)?;
        let Some(decoder) = o.decoder else {
            let device = entry.model.device;
            let budget = self.governor.budget(device).unwrap_or(0);
            return Err(generate::refusal(model, o, device, budget));
        };
        if image.is_some() && !decoder.takes_images() {
            return Err(entry
                .model
                .wrong("describe images (it is a text-only model)"));
        }
        let (text, sampling) = generate::prompt_text(model, o, &request, image.is_some())?;
        let timeout = request.timeout.or(entry.model.timeout());
        let started = Instant::now();
        let lease = match timeout {
            Some(t) => self.pool.acquire_timeout(model, t).await?,
            None => self.pool.acquire(model).await?,
        };
        let lease = CapabilityLease::new(lease, LoadedModel::as_generator)
            .map_err(|_| entry.model.wrong(asked))?;
        let deadline = timeout.map(|t| (started + t, t));
        generate::start(lease, o, request, &text, sampling, image, deadline)
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
    ) -> Result<Vec<u8>, ServeError> {
        let request = ImageRequest::new(prompt)
            .size(width, height)
            .steps(steps)
            .seed(seed);
        Ok(self.generate_image(model, request, |_| {}).await?.png)
    }

    /// Generates `request`'s image, calling `progress` as it runs (from a blocking thread:
    /// forward to a channel rather than doing slow work in it).
    ///
    /// Invalid requests and sizes that can never fit the device budget are refused before
    /// the model is even loaded.
    pub async fn generate_image(
        &self,
        model: &str,
        request: ImageRequest,
        progress: impl Fn(Progress) + Send + Sync + 'static,
    ) -> Result<GeneratedImage, ServeError> {
        let entry = self.entry(model)?;
        entry.model.image_options("generate images")?;
        let (Some(plan), Some(limits)) = (&entry.plan, &entry.limits) else {
            return Err(entry.model.wrong("generate images"));
        };
        limits.check(model, &request)?;
        let memory = plan
            .request(request.width, request.height)
            .map_err(|e| ServeError::backend(model, e))?;
        let device = entry.model.device;
        let budget = self.governor.budget(device).unwrap_or(0);
        if memory.peak_bytes() > budget {
            return Err(ServeError::ImageNeverFits {
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
        let key = model.to_owned();
        // The lease holds this request's largest stage: the scheduler admits it by that size,
        // evicting idle models of any capability to make room, like any other request.
        let bytes = Some(memory.lease_bytes());
        self.pool
            .run_sized(
                model,
                bytes,
                entry.model.timeout(),
                move |lease| async move {
                    let work =
                        tokio::task::spawn_blocking(move || match lease.as_text_to_image() {
                            Some(m) => m.generate(&request, &progress, &cancel),
                            None => Err(ServeError::WrongCapability {
                                model: lease.key().to_owned(),
                                capability: lease.capability(),
                                asked: "generate images",
                            }),
                        });
                    match work.await {
                        Ok(result) => result,
                        // A panic in the model code is the pool's to report (RequestPanicked).
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(e) => Err(ServeError::backend(
                            &key,
                            model_runtime::BackendError::config("generation task", e),
                        )),
                    }
                },
            )
            .await?
    }

    /// The memory plan of a text-to-image model.
    pub fn plan(&self, model: &str) -> Option<&MemoryPlan> {
        self.entries.get(model).and_then(|e| e.plan.as_deref())
    }

    /// The request limits of a text-to-image model.
    pub fn limits(&self, model: &str) -> Option<&Limits> {
        self.entries.get(model).and_then(|e| e.limits.as_ref())
    }

    /// Downloads `model`'s files from the Hub into the cache now, without loading it (a
    /// [`crate::ModelSource::Hub`] model; any other source resolves as it is): the folder
    /// they are in. A model that can never fit its device's budget, or that no backend can
    /// run, is refused before a byte is fetched.
    pub async fn fetch_files(&self, model: &str) -> Result<std::path::PathBuf, ServeError> {
        let entry = self.entry(model)?;
        if let ModelOptions::Generate(o) = &entry.model.options
            && o.decoder.is_none()
        {
            let device = entry.model.device;
            let budget = self.governor.budget(device).unwrap_or(0);
            return Err(generate::refusal(model, o, device, budget));
        }
        let resident = entry
            .plan
            .as_ref()
            .and_then(|p| p.resident_bytes().ok())
            .unwrap_or(0);
        let spec = entry.model.pool_spec(resident);
        let need = spec.resident_bytes.saturating_add(spec.per_request_bytes);
        let budget = self.governor.budget(spec.device).unwrap_or(0);
        if need > budget {
            return Err(ServeError::Pool(PoolError::NeverFits {
                model: model.to_owned(),
                need: ByteSize(need),
                budget: ByteSize(budget),
                device: spec.device,
            }));
        }
        let source = self
            .loader
            .downloads()
            .local_source(model, &entry.model.source)
            .await?;
        source.resolve().map_err(|e| ServeError::backend(model, e))
    }

    /// How far `model`'s download from the Hub is, while one is under way (its pool state is
    /// `loading` meanwhile).
    pub fn download_progress(&self, model: &str) -> Option<DownloadProgress> {
        self.loader.downloads().progress(model)
    }

    /// The pool's status: states, leases, queues, reserved and measured bytes per model.
    pub fn status(&self) -> PoolStatus {
        self.pool.status()
    }

    /// The status in the Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        self.pool.prometheus()
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool<ServingLoader> {
        &self.pool
    }

    /// The governor the pool draws on.
    pub fn governor(&self) -> &MemoryGovernor {
        &self.governor
    }

    /// The last load measurement of every model loaded so far.
    pub fn measurements(&self) -> BTreeMap<String, LoadMeasurement> {
        self.loader.measurements()
    }

    /// Estimate vs measured memory for every model (measured ones have been loaded).
    pub fn memory_report(&self) -> MemoryReport {
        let measured = self.loader.measurements();
        let status = self.pool.status();
        let rows = self
            .models()
            .map(|m| {
                let s = status.model(&m.key);
                let spec = m.pool_spec(
                    self.plan(&m.key)
                        .and_then(|p| p.resident_bytes().ok())
                        .unwrap_or(0),
                );
                let estimate_mb = match &m.options {
                    ModelOptions::Embed(o) => o.memory.and_then(|d| d.estimate_mb),
                    ModelOptions::Generate(o) => o.memory.and_then(|d| d.estimate_mb),
                    ModelOptions::TextToImage(_) => {
                        m.registry.map(|i| i.est_memory_allocation_mb as u64)
                    }
                };
                ReportRow {
                    key: m.key.clone(),
                    estimate_mb,
                    declared_resident_bytes: Some(spec.resident_bytes),
                    declared_per_batch_bytes: Some(spec.per_request_bytes),
                    measured: measured.get(&m.key).copied(),
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

    /// Like [`shutdown`](Self::shutdown), giving up after `deadline` (leases still held then
    /// keep their models).
    pub async fn shutdown_within(&self, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, self.pool.shutdown())
            .await
            .is_ok()
    }
}
