//! The pool's one plug: [`ServingLoader`] loads a model of any capability as a
//! [`LoadedModel`], through the process-wide measured load of `model-runtime` (one load at a
//! time per device, so that each measurement belongs to one model), and records what each
//! load took.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use model_networks::Family;
use model_networks::decode::GenerativeModel;
use model_networks::embed::{EmbeddingModel, EncoderParams};
use model_pool::{Lease, LoadError, Loaded, ModelLoader, ModelSpec};
use model_registry::Capability;
use model_runtime::{BackendError, LoadClock, LoadMeasurement, ModelDir, measured_load};
use parking_lot::Mutex;

use crate::config::{ModelOptions, ServedModel};
use crate::download::Downloads;
use crate::error::ServeError;
use crate::text_to_image::{DiffusionModel, MemoryPlan};

/// A loaded model of any capability: what the pool holds while it is loaded.
pub enum LoadedModel {
    /// A text embedder or CLIP.
    Embedder(EmbeddingModel),
    /// A generator.
    Generator(GenerativeModel),
    /// A text-to-image pipeline.
    TextToImage(DiffusionModel),
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadedModel::Embedder(m) => m.fmt(f),
            LoadedModel::Generator(m) => m.fmt(f),
            LoadedModel::TextToImage(m) => f.debug_tuple("DiffusionModel").field(&m.key()).finish(),
        }
    }
}

impl LoadedModel {
    /// The key requests use.
    pub fn key(&self) -> &str {
        match self {
            LoadedModel::Embedder(m) => m.key(),
            LoadedModel::Generator(m) => m.key(),
            LoadedModel::TextToImage(m) => m.key(),
        }
    }

    /// What it does.
    pub fn capability(&self) -> Capability {
        match self {
            LoadedModel::Embedder(m) if m.family().embeds_images() => Capability::ImageEmbedding,
            LoadedModel::Embedder(_) => Capability::TextEmbedding,
            LoadedModel::Generator(m) if m.decoder().takes_images() => Capability::Vision,
            LoadedModel::Generator(_) => Capability::TextToText,
            LoadedModel::TextToImage(_) => Capability::TextToImage,
        }
    }

    /// The embedder, if it is one.
    pub fn as_embedder(&self) -> Option<&EmbeddingModel> {
        match self {
            LoadedModel::Embedder(m) => Some(m),
            _ => None,
        }
    }

    /// The generator, if it is one.
    pub fn as_generator(&self) -> Option<&GenerativeModel> {
        match self {
            LoadedModel::Generator(m) => Some(m),
            _ => None,
        }
    }

    /// The text-to-image pipeline, if it is one.
    pub fn as_text_to_image(&self) -> Option<&DiffusionModel> {
        match self {
            LoadedModel::TextToImage(m) => Some(m),
            _ => None,
        }
    }
}

/// A lease on a loaded model known to be of one capability: it derefs to that model.
pub struct CapabilityLease<T: 'static> {
    lease: Lease<LoadedModel>,
    project: fn(&LoadedModel) -> Option<&T>,
}

impl<T: 'static> CapabilityLease<T> {
    /// `lease` seen through `project`; the lease itself back when the model is another kind.
    pub fn new(
        lease: Lease<LoadedModel>,
        project: fn(&LoadedModel) -> Option<&T>,
    ) -> Result<Self, Lease<LoadedModel>> {
        if project(&lease).is_some() {
            Ok(CapabilityLease { lease, project })
        } else {
            Err(lease)
        }
    }

    /// The model's key.
    pub fn key(&self) -> &str {
        self.lease.key()
    }
}

impl<T: 'static> Deref for CapabilityLease<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // `new` checked the projection, and a lease's model never changes.
        (self.project)(&self.lease).expect("a capability lease holds a model of its capability")
    }
}

/// What the loader needs to load one model.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub model: ServedModel,
    /// The memory plan of a text-to-image model.
    pub plan: Option<Arc<MemoryPlan>>,
}

/// Loads the pool's models on demand (downloading a Hub model's files first where they are
/// missing) and records each load's measurement.
#[derive(Clone)]
pub struct ServingLoader {
    models: Arc<HashMap<String, Prepared>>,
    measurements: Arc<Mutex<BTreeMap<String, LoadMeasurement>>>,
    downloads: Arc<Downloads>,
}

impl ServingLoader {
    pub(crate) fn new(models: impl IntoIterator<Item = Prepared>, downloads: Downloads) -> Self {
        ServingLoader {
            models: Arc::new(
                models
                    .into_iter()
                    .map(|p| (p.model.key.clone(), p))
                    .collect(),
            ),
            measurements: Arc::new(Mutex::new(BTreeMap::new())),
            downloads: Arc::new(downloads),
        }
    }

    /// The Hub downloads of this pool's models.
    pub fn downloads(&self) -> &Downloads {
        &self.downloads
    }

    /// The last load's measurement of every model loaded so far.
    pub fn measurements(&self) -> BTreeMap<String, LoadMeasurement> {
        self.measurements.lock().clone()
    }
}

impl ModelLoader for ServingLoader {
    type Model = LoadedModel;

    fn load(
        &self,
        spec: &ModelSpec,
    ) -> impl Future<Output = Result<Loaded<LoadedModel>, LoadError>> + Send {
        let prepared = self.models.get(&spec.key).cloned();
        let key = spec.key.clone();
        let measurements = Arc::clone(&self.measurements);
        let downloads = Arc::clone(&self.downloads);
        async move {
            let mut prepared = prepared
                .ok_or_else(|| LoadError::failed(format!("no configuration for `{key}`")))?;
            // Outside the device's load lock: a download must not hold up other loads.
            prepared.model.source = downloads
                .local_source(&key, &prepared.model.source)
                .await
                .map_err(|e| match e {
                    ServeError::Download { source, .. } => LoadError::failed(source),
                    e => LoadError::failed(e),
                })?;
            match load_measured(&prepared.model, prepared.plan).await {
                Ok((model, m)) => {
                    measurements.lock().insert(key, m);
                    Ok(Loaded::measured(model, m.resident_bytes))
                }
                // The pool's message names the model already; the loader says what failed.
                Err(ServeError::Backend { source, .. }) if source.is_out_of_memory() => {
                    Err(LoadError::out_of_memory(source))
                }
                Err(ServeError::Backend { source, .. }) => Err(LoadError::failed(source)),
                Err(e) => Err(LoadError::failed(e)),
            }
        }
    }
}

/// Loads `model` under its device's process-wide load lock and measures it.
pub async fn load_measured(
    model: &ServedModel,
    plan: Option<Arc<MemoryPlan>>,
) -> Result<(LoadedModel, LoadMeasurement), ServeError> {
    let model = model.clone();
    let key = model.key.clone();
    let (loaded, m) = measured_load(model.device, move |clock| load(&model, plan, clock))
        .await
        .map_err(|e| ServeError::backend(&key, e))?;
    tracing::info!(
        model = %key,
        loaded = m.loaded_bytes,
        resident = m.resident_bytes,
        peak_rss = m.peak_rss_bytes,
        ms = m.load_millis + m.warmup_millis,
        "loaded"
    );
    Ok((loaded, m))
}

/// [`load_measured`] for synchronous callers (tools, measurement programs); not from inside
/// an async task.
pub fn load_measured_blocking(
    model: &ServedModel,
    plan: Option<Arc<MemoryPlan>>,
) -> Result<(LoadedModel, LoadMeasurement), ServeError> {
    model_runtime::measured_load_blocking(model.device, |clock| load(model, plan, clock))
        .map_err(|e| ServeError::backend(&model.key, e))
}

/// Loads `model` (blocking; the caller measures). A text-to-image model needs its `plan`
/// (computed from its spec when `None`).
pub fn load(
    model: &ServedModel,
    plan: Option<Arc<MemoryPlan>>,
    clock: &mut LoadClock,
) -> Result<LoadedModel, BackendError> {
    let device = model_runtime::device(model.device)?;
    let path = model.source.resolve()?;
    let serve = |e: ServeError| BackendError::config(&path, e);
    match &model.options {
        ModelOptions::Embed(o) => {
            let dir = ModelDir::local(&path)?;
            let family = match o.family {
                Some(f) => f,
                None => Family::detect(&dir)?,
            };
            let params = EncoderParams {
                key: model.key.clone(),
                family,
                dtype: o.dtype.unwrap_or(candle_core::DType::F32),
                max_input_tokens: o.planned_input_tokens(),
                overflow: o.overflow,
                normalize: o.normalize,
                query_instruction: o
                    .query_instruction
                    .clone()
                    .or_else(|| own_query_prompt(&dir)),
                batch: o.batch,
            };
            Ok(LoadedModel::Embedder(EmbeddingModel::load(
                &dir, &params, &device,
            )?))
        }
        ModelOptions::Generate(o) => {
            let source = match o.decoder {
                Some(d) if d.is_gguf() && path.is_dir() => gguf_in(&path, model)?,
                _ => path.clone(),
            };
            let params = o.params(&model.key, source).map_err(serve)?;
            let m = GenerativeModel::load(&params, &device)?;
            clock.weights_read();
            // On the CPU the GGUF decoders multiply Q4_K/Q5_K/Q6_K/Q8_0 matrices straight from
            // the file's blocks (quant-kernels) and keep no copy. A matrix left to candle's
            // quantized matmul (another type, or a row length that is not a multiple of 256)
            // may still be repacked into CPU-friendly tiles on first use on x86-64 and aarch64
            // and kept next to the original blocks. A two-token pass puts any such memory
            // inside the measured load instead of the first request.
            let first = m.end_ids().first().copied().unwrap_or(0);
            m.session(2)?.prefill(&[first, first], None, 2)?;
            Ok(LoadedModel::Generator(m))
        }
        ModelOptions::TextToImage(o) => {
            let plan = match plan {
                Some(p) => p,
                None => Arc::new(o.plan(&model.source, model.device).map_err(serve)?),
            };
            let dir = ModelDir::local(&path)?;
            Ok(LoadedModel::TextToImage(DiffusionModel::load(
                &model.key,
                &dir,
                o,
                model.device,
                plan,
            )?))
        }
    }
}

/// The query prompt a Sentence-Transformers checkpoint ships
/// (`config_sentence_transformers.json` → `prompts.query`), for models outside the registry.
fn own_query_prompt(dir: &ModelDir) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct StConfig {
        #[serde(default)]
        prompts: HashMap<String, String>,
    }
    dir.optional_json::<StConfig>("config_sentence_transformers.json")
        .ok()
        .flatten()
        .and_then(|c| c.prompts.get("query").cloned())
        .filter(|p| !p.is_empty())
}

/// The GGUF file of `model` inside the directory `dir` (a Hub snapshot): the file its
/// registry entry names, else the only `.gguf` file there.
fn gguf_in(dir: &Path, model: &ServedModel) -> Result<PathBuf, BackendError> {
    if let Some(info) = model.registry {
        for c in info.components {
            for f in c.files {
                let p = dir.join(f);
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
    }
    let ggufs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| BackendError::io(dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(BackendError::MissingFile {
            dir: dir.to_path_buf(),
            file: "*.gguf".into(),
            why: "the generator's weights",
        }),
        _ => Err(BackendError::config(
            dir,
            format!(
                "{} GGUF files and no registry entry naming one; give the file itself",
                ggufs.len()
            ),
        )),
    }
}
