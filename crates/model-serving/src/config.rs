//! How one model is served: [`ServedModel`] holds what every model has (key, files, device,
//! tier, priority, limits) once, and what its capability needs as [`ModelOptions`].
//!
//! Registry models take everything from their compile-time checked static
//! ([`ServedModel::registry`]); any other checkpoint is served from its own files
//! ([`ServedModel::detect`], or [`ServedModel::with_backend`] where the files are ambiguous),
//! with the estimator run on its headers so the pool still reserves what it will take.

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::DType;
use model_networks::{Decoder, Family, Pipeline};
use model_pool::{DeviceId, ModelSpec, Tier};
use model_registry::{Backend, CandleModelInfo, Capability};
use model_runtime::{BackendError, GgufFile, ModelDir};

use crate::embed::{DeclaredMemory, EmbedOptions};
use crate::error::ServeError;
use crate::generate::{ChatTemplate, GenMemory, GenerateOptions};
use crate::text_to_image::ImageOptions;

/// Where a model's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory in the Hub layout, or a GGUF file.
    Path(PathBuf),
    /// A snapshot in the Hugging Face Hub cache (nothing is downloaded).
    HfCache {
        /// `owner/name`.
        repo: String,
        /// Branch, tag or commit; `main` when `None`.
        revision: Option<String>,
    },
    /// A Hub repository, downloaded into the Hugging Face cache by the model's first load
    /// where files are missing ([`crate::download`]); read from the cache alone with
    /// `HF_HUB_OFFLINE=1`.
    Hub {
        /// `owner/name`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
        /// The weight files, as globs over repository paths (configuration and tokenizer
        /// files come along).
        weights: Vec<String>,
    },
}

impl ModelSource {
    /// A registry model's repository at its pinned revision (`main` while unpinned), with the
    /// weight files its entry names.
    pub fn hub_of(info: &CandleModelInfo) -> ModelSource {
        // Phi-4's registry key names Microsoft's safetensors repository; the Q4_K_M GGUF the
        // registry serves is published by another (the spec's `file_type` source names it).
        // Such a mapping belongs in the spec; until it is there, it is kept here.
        const WEIGHTS_REPO: &[(&str, &str)] = &[("microsoft/phi-4", "bartowski/phi-4-GGUF")];
        let repo = WEIGHTS_REPO
            .iter()
            .find(|(key, _)| *key == info.registry_key)
            .map_or(info.registry_key, |(_, repo)| repo);
        ModelSource::Hub {
            repo: repo.to_owned(),
            revision: match info.revision {
                "unpinned" | "" => "main".to_owned(),
                r => r.to_owned(),
            },
            weights: info
                .components
                .iter()
                .flat_map(|c| c.files.iter().map(|f| (*f).to_owned()))
                .collect(),
        }
    }

    /// The path (checked at load time, so a pool can be built before the files are there).
    /// A [`ModelSource::Hub`] resolves to its snapshot once an earlier load downloaded it.
    pub fn resolve(&self) -> Result<PathBuf, BackendError> {
        match self {
            ModelSource::Path(path) => Ok(path.clone()),
            ModelSource::HfCache { repo, revision } => {
                Ok(ModelDir::hf_cache(repo, revision.as_deref())?
                    .root()
                    .to_path_buf())
            }
            ModelSource::Hub { repo, revision, .. } => {
                Ok(ModelDir::hf_cache(repo, Some(revision))?
                    .root()
                    .to_path_buf())
            }
        }
    }
}

impl From<PathBuf> for ModelSource {
    fn from(p: PathBuf) -> Self {
        ModelSource::Path(p)
    }
}

impl From<&Path> for ModelSource {
    fn from(p: &Path) -> Self {
        ModelSource::Path(p.to_path_buf())
    }
}

impl From<&PathBuf> for ModelSource {
    fn from(p: &PathBuf) -> Self {
        ModelSource::Path(p.clone())
    }
}

impl From<&str> for ModelSource {
    fn from(p: &str) -> Self {
        ModelSource::Path(PathBuf::from(p))
    }
}

impl From<String> for ModelSource {
    fn from(p: String) -> Self {
        ModelSource::Path(PathBuf::from(p))
    }
}

/// What a model's capability needs.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelOptions {
    /// Text embedders and CLIP.
    Embed(EmbedOptions),
    /// Generators (text, and LLaVA's image + prompt).
    Generate(GenerateOptions),
    /// Text-to-image pipelines.
    TextToImage(ImageOptions),
}

impl From<EmbedOptions> for ModelOptions {
    fn from(o: EmbedOptions) -> Self {
        ModelOptions::Embed(o)
    }
}

impl From<GenerateOptions> for ModelOptions {
    fn from(o: GenerateOptions) -> Self {
        ModelOptions::Generate(o)
    }
}

impl From<ImageOptions> for ModelOptions {
    fn from(o: ImageOptions) -> Self {
        ModelOptions::TextToImage(o)
    }
}

/// How one model is served.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedModel {
    /// Key requests use (the registry key for registry models).
    pub key: String,
    /// Where the files are.
    pub source: ModelSource,
    /// Where it runs.
    pub device: DeviceId,
    /// Hot (preloaded, kept) or warm (loaded on demand, unloaded when idle).
    pub tier: Tier,
    /// Higher is admitted first and evicted last.
    pub priority: i32,
    /// Requests served at once (generators; memory permitting, each holds its KV
    /// reservation); `None`: the capability's default. Embedders run one batch at a time and
    /// text-to-image models one image at a time, whatever this says.
    pub max_concurrency: Option<usize>,
    /// Requests waiting at once; `None`: the capability's default.
    pub max_queue: Option<usize>,
    /// Deadline of one request (waiting, loading and running); `None`: the capability's
    /// default (text-to-image: 30 minutes; others: the pool's).
    pub request_timeout: Option<Duration>,
    /// The registry entry of a registry model.
    pub registry: Option<&'static CandleModelInfo>,
    /// The capability's options.
    pub options: ModelOptions,
}

/// Default deadline of one text-to-image request: image generation on a CPU takes minutes,
/// far beyond the pool's default for embeddings.
pub const DEFAULT_IMAGE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl ServedModel {
    /// A model served from `source` with `options`, on the CPU, warm.
    pub fn new(
        key: impl Into<String>,
        source: impl Into<ModelSource>,
        options: impl Into<ModelOptions>,
    ) -> Self {
        ServedModel {
            key: key.into(),
            source: source.into(),
            device: DeviceId::Cpu,
            tier: Tier::Warm {
                idle_ttl: ModelSpec::DEFAULT_IDLE_TTL,
            },
            priority: 0,
            max_concurrency: None,
            max_queue: None,
            request_timeout: None,
            registry: None,
            options: options.into(),
        }
    }

    /// A registry model: backend, dtype, limits, template, sampling and declared memory from
    /// its static. The device stays the CPU (set [`device`](Self::device) for a GPU build).
    pub fn registry(key: &str, source: impl Into<ModelSource>) -> Result<Self, ServeError> {
        let info = crate::registry::lookup(key)?;
        let options = match info.capability {
            Capability::TextEmbedding | Capability::ImageEmbedding => {
                ModelOptions::Embed(EmbedOptions::registry(info)?)
            }
            Capability::TextToText | Capability::Vision => {
                ModelOptions::Generate(GenerateOptions::registry(info)?)
            }
            Capability::TextToImage => ModelOptions::TextToImage(ImageOptions::registry(info)?),
        };
        let mut model = ServedModel::new(key, source, options);
        model.registry = Some(info);
        Ok(model)
    }

    /// A checkpoint outside the registry, served by what its files say it is: a GGUF file's
    /// `general.architecture`, a Diffusers `model_index.json`, or a `config.json`'s
    /// `model_type`. Its memory is the estimator's figure for its headers, with the run
    /// profile of the registry model of the same backend.
    pub fn detect(key: &str, source: impl Into<ModelSource>) -> Result<Self, ServeError> {
        let source = source.into();
        let path = source.resolve().map_err(|e| ServeError::backend(key, e))?;
        let backend = detect_backend(&path).map_err(|e| ServeError::backend(key, e))?;
        Self::with_backend(key, source, backend)
    }

    /// A checkpoint outside the registry served by `backend` (`--arch`). A generator gets the
    /// chat template its files carry ([`ChatTemplate::from_checkpoint`]), greedy sampling
    /// and no output cap.
    pub fn with_backend(
        key: &str,
        source: impl Into<ModelSource>,
        backend: Backend,
    ) -> Result<Self, ServeError> {
        let source = source.into();
        let path = source.resolve().map_err(|e| ServeError::backend(key, e))?;
        let template = crate::registry::template(backend)?;
        let options = match template.capability {
            Capability::TextToImage => ModelOptions::TextToImage(ImageOptions::registry(template)?),
            capability => {
                let (spec, profile) = crate::checkpoint::checkpoint_spec(backend, &path, None)
                    .map_err(|e| e.for_model(key))?;
                let estimate = model_spec::estimate(&spec, &profile)
                    .map_err(|e| ServeError::backend(key, BackendError::config(&path, e)))?;
                if matches!(capability, Capability::TextToText | Capability::Vision) {
                    let mut o = GenerateOptions::registry(template)?;
                    let context = profile.context_tokens.unwrap_or(o.context_tokens as u64);
                    o.context_tokens = context as usize;
                    o.memory = Some(GenMemory::from_estimate(&estimate, context));
                    o.template = own_template(key, &path);
                    o.sampling = crate::generate::SamplingParams::greedy();
                    o.max_output_tokens = None;
                    ModelOptions::Generate(o)
                } else {
                    let mut o = EmbedOptions::registry(template)?;
                    o.query_instruction = None;
                    o.memory = Some(DeclaredMemory::from_estimate(&estimate, &profile));
                    ModelOptions::Embed(o)
                }
            }
        };
        Ok(ServedModel::new(key, source, options))
    }

    /// Sets the device.
    pub fn device(mut self, device: DeviceId) -> Self {
        self.device = device;
        self
    }

    /// Sets the tier.
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the concurrency cap (generators).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = Some(n.max(1));
        self
    }

    /// Sets the queue bound.
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = Some(n);
        self
    }

    /// Sets the request deadline.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// What the model does.
    pub fn capability(&self) -> Capability {
        if let Some(info) = self.registry {
            return info.capability;
        }
        match &self.options {
            ModelOptions::Embed(o) if o.family == Some(Family::Clip) => Capability::ImageEmbedding,
            ModelOptions::Embed(_) => Capability::TextEmbedding,
            ModelOptions::Generate(o) if o.decoder == Some(Decoder::Llava15) => Capability::Vision,
            ModelOptions::Generate(_) => Capability::TextToText,
            ModelOptions::TextToImage(_) => Capability::TextToImage,
        }
    }

    /// The embedder options, or the error a request of another capability gets.
    pub fn embed_options(&self, asked: &'static str) -> Result<&EmbedOptions, ServeError> {
        match &self.options {
            ModelOptions::Embed(o) => Ok(o),
            _ => Err(self.wrong(asked)),
        }
    }

    /// The generator options, or the error a request of another capability gets.
    pub fn generate_options(&self, asked: &'static str) -> Result<&GenerateOptions, ServeError> {
        match &self.options {
            ModelOptions::Generate(o) => Ok(o),
            _ => Err(self.wrong(asked)),
        }
    }

    /// The text-to-image options, or the error a request of another capability gets.
    pub fn image_options(&self, asked: &'static str) -> Result<&ImageOptions, ServeError> {
        match &self.options {
            ModelOptions::TextToImage(o) => Ok(o),
            _ => Err(self.wrong(asked)),
        }
    }

    /// Changes the embedder options; an error naming the model's capability otherwise.
    pub fn map_embed(
        mut self,
        f: impl FnOnce(EmbedOptions) -> EmbedOptions,
    ) -> Result<Self, ServeError> {
        match self.options {
            ModelOptions::Embed(o) => {
                self.options = ModelOptions::Embed(f(o));
                Ok(self)
            }
            _ => Err(self.wrong("take embedding options")),
        }
    }

    /// Changes the generator options; an error naming the model's capability otherwise.
    pub fn map_generate(
        mut self,
        f: impl FnOnce(GenerateOptions) -> GenerateOptions,
    ) -> Result<Self, ServeError> {
        match self.options {
            ModelOptions::Generate(o) => {
                self.options = ModelOptions::Generate(f(o));
                Ok(self)
            }
            _ => Err(self.wrong("take generation options")),
        }
    }

    /// Changes the text-to-image options; an error naming the model's capability otherwise.
    pub fn map_image(
        mut self,
        f: impl FnOnce(ImageOptions) -> ImageOptions,
    ) -> Result<Self, ServeError> {
        match self.options {
            ModelOptions::TextToImage(o) => {
                self.options = ModelOptions::TextToImage(f(o));
                Ok(self)
            }
            _ => Err(self.wrong("take text-to-image options")),
        }
    }

    pub(crate) fn wrong(&self, asked: &'static str) -> ServeError {
        ServeError::WrongCapability {
            model: self.key.clone(),
            capability: self.capability(),
            asked,
        }
    }

    /// Whether a backend can run the model (Kimi K2 has none: it is refused, never loaded).
    pub fn is_servable(&self) -> bool {
        !matches!(&self.options, ModelOptions::Generate(o) if o.decoder.is_none())
    }

    /// The deadline of one request, the capability's default when none is set.
    pub fn timeout(&self) -> Option<Duration> {
        self.request_timeout.or(match self.options {
            ModelOptions::TextToImage(_) => Some(DEFAULT_IMAGE_TIMEOUT),
            _ => None,
        })
    }

    /// The pool's view, given the resident bytes of a text-to-image model's memory plan.
    ///
    /// Embedders take one lease per batch (the batcher in front of the pool queues the
    /// requests); generators one per request, holding the KV cache of its context;
    /// text-to-image models one per image, each stage reserving its own memory on top.
    pub fn pool_spec(&self, image_resident_bytes: u64) -> ModelSpec {
        let (resident, per_request, concurrency, queue) = match &self.options {
            ModelOptions::Embed(o) => (
                o.memory.map_or(0, |m| m.resident_bytes),
                o.per_batch_bytes(),
                1,
                1,
            ),
            ModelOptions::Generate(o) => (
                o.memory.map_or(0, |m| m.resident_bytes),
                o.per_request_bytes(),
                self.max_concurrency.unwrap_or(4),
                self.max_queue.unwrap_or(64),
            ),
            ModelOptions::TextToImage(_) => {
                (image_resident_bytes, 0, 1, self.max_queue.unwrap_or(8))
            }
        };
        ModelSpec::new(self.key.clone(), self.device, resident, per_request)
            .tier(self.tier)
            .priority(self.priority)
            .max_concurrency(concurrency)
            .max_queue(queue)
    }
}

/// The embedding family of a backend.
pub fn embed_family(backend: Backend) -> Option<Family> {
    Some(match backend {
        Backend::Bert => Family::Bert,
        Backend::JinaBert => Family::JinaBert,
        Backend::Stella => Family::Stella,
        Backend::GteQwen2 => Family::GteQwen2,
        Backend::NvEmbed => Family::NvEmbed,
        Backend::Clip => Family::Clip,
        _ => return None,
    })
}

/// The decoder of a backend.
pub fn decoder_of(backend: Backend) -> Option<Decoder> {
    Some(match backend {
        Backend::Phi3Gguf => Decoder::Phi3Gguf,
        Backend::Qwen3MoeGguf => Decoder::Qwen3MoeGguf,
        Backend::Llava15 => Decoder::Llava15,
        _ => return None,
    })
}

/// The text-to-image pipeline of a backend.
pub fn pipeline_of(backend: Backend) -> Option<Pipeline> {
    Some(match backend {
        Backend::Flux => Pipeline::Flux,
        Backend::Sd3 => Pipeline::Sd3,
        _ => return None,
    })
}

/// The backend of an embedding family.
pub fn backend_of_family(family: Family) -> Backend {
    match family {
        Family::Bert => Backend::Bert,
        Family::JinaBert => Backend::JinaBert,
        Family::Stella => Backend::Stella,
        Family::GteQwen2 => Backend::GteQwen2,
        Family::NvEmbed => Backend::NvEmbed,
        Family::Clip => Backend::Clip,
    }
}

/// The backend named `name` (`bert`, `stella`, `phi3`, `llava`, `flux`, `sd3` …), as
/// `--arch` spells it.
pub fn parse_backend(name: &str) -> Result<Backend, String> {
    Backend::ALL
        .into_iter()
        .find(|b| b.as_str() == name.trim().to_ascii_lowercase())
        .ok_or_else(|| {
            let names: Vec<_> = Backend::ALL.iter().map(|b| b.as_str()).collect();
            format!(
                "unknown architecture `{name}`; expected one of {}",
                names.join(", ")
            )
        })
}

/// What the files at `path` say they are.
pub fn detect_backend(path: &Path) -> Result<Backend, BackendError> {
    if path.is_file() {
        let f = GgufFile::open(path)?;
        let arch = f.architecture()?;
        return match Decoder::for_architecture(&arch) {
            Some(Decoder::Phi3Gguf) => Ok(Backend::Phi3Gguf),
            Some(Decoder::Qwen3MoeGguf) => Ok(Backend::Qwen3MoeGguf),
            _ => Err(BackendError::UnknownFamily {
                key: path.display().to_string(),
                why: format!("GGUF architecture `{arch}` has no Candle backend here"),
            }),
        };
    }
    let dir = ModelDir::local(path)?;
    if dir.optional("model_index.json").is_some() {
        return Ok(match Pipeline::detect(&dir)? {
            Pipeline::Flux => Backend::Flux,
            Pipeline::Sd3 => Backend::Sd3,
        });
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        model_type: Option<String>,
    }
    let probe: Probe = dir.json("config.json", "the model configuration")?;
    if probe.model_type.as_deref() == Some("llava") {
        return Ok(Backend::Llava15);
    }
    Ok(backend_of_family(Family::detect(&dir)?))
}

/// The chat template a checkpoint outside the registry carries in its own files (a GGUF
/// file's `tokenizer.chat_template`, or the `tokenizer_config.json` beside the weights);
/// `None` when they carry none or are not there yet. One that cannot be read or compiled is
/// reported and left out: the model is served as one without a template (its messages
/// joined with newlines) unless a template is configured explicitly.
fn own_template(key: &str, path: &Path) -> Option<ChatTemplate> {
    ChatTemplate::from_checkpoint(path).unwrap_or_else(|e| {
        tracing::warn!(
            model = key,
            "{e}; the model's messages are joined with newlines unless a chat template is configured"
        );
        None
    })
}

/// The load dtype of a registry model's run profile (`None`: kept as stored).
pub(crate) fn profile_dtype(info: &CandleModelInfo) -> Result<Option<DType>, ServeError> {
    info.default_profile
        .load_dtype
        .map(model_runtime::parse_dtype)
        .transpose()
        .map_err(|e| ServeError::backend(info.registry_key, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_models_get_their_capability_options_and_split_their_estimate() {
        let minilm =
            ServedModel::registry("sentence-transformers/all-MiniLM-L6-v2", "dir").unwrap();
        let o = minilm.embed_options("embed").unwrap();
        assert_eq!(o.family, Some(Family::Bert));
        assert_eq!(o.dtype, Some(DType::F32));
        let m = o.memory.unwrap();
        assert_eq!(m.profile_seq_len, Some(256));
        let total = model_registry::ALL_MINILM_L6_V2.memory.total_bytes;
        // Each part carries its share of the margin, rounded up: at most a byte per part off.
        assert!((m.resident_bytes + m.per_request_bytes).abs_diff(total) <= 2);
        let gte = ServedModel::registry("Alibaba-NLP/gte-Qwen2-1.5B-instruct", "d").unwrap();
        let q = gte
            .embed_options("embed")
            .unwrap()
            .query_instruction
            .clone();
        assert!(q.unwrap().starts_with("Instruct: "));
        let clip = ServedModel::registry("openai/clip-vit-base-patch32", "d").unwrap();
        assert_eq!(clip.capability(), Capability::ImageEmbedding);
        let images = clip.embed_options("embed").unwrap().memory.unwrap();
        assert_eq!(images.profile_seq_len, None, "CLIP batches count images");

        let phi = ServedModel::registry("microsoft/phi-4", "phi-4-Q4_K_M.gguf").unwrap();
        let g = phi.generate_options("generate").unwrap();
        assert_eq!(g.decoder, Some(Decoder::Phi3Gguf));
        assert_eq!((g.context_tokens, g.prefill_chunk), (4096, 512));
        let m = model_registry::by_key("microsoft/phi-4").unwrap().memory;
        assert!(
            phi.pool_spec(0).need_bytes().abs_diff(m.total_bytes) <= 4096 + 2,
            "resident + one request is the registry's total (margin included)"
        );
        let qwen = ServedModel::registry("unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF", "q").unwrap();
        let q = qwen.generate_options("generate").unwrap();
        assert_eq!(
            (q.decoder, q.sampling.top_k),
            (Some(Decoder::Qwen3MoeGguf), 20)
        );
        let llava = ServedModel::registry("llava-hf/llava-1.5-7b-hf", "dir").unwrap();
        let l = llava.generate_options("generate").unwrap();
        assert_eq!(
            (l.decoder, l.dtype),
            (Some(Decoder::Llava15), Some(DType::F16))
        );
        let kimi = ServedModel::registry("unsloth/Kimi-K2-Instruct-GGUF", "k.gguf").unwrap();
        let k = kimi.generate_options("generate").unwrap();
        assert_eq!((k.architecture.as_str(), k.decoder), ("deepseek2", None));
        assert!(!kimi.is_servable());
        // A longer context reserves proportionally more KV memory.
        let long = phi
            .clone()
            .map_generate(|o| o.context_tokens(8192))
            .unwrap();
        assert_eq!(
            long.pool_spec(0).per_request_bytes - phi.pool_spec(0).per_request_bytes,
            g.memory.unwrap().kv_bytes_per_token * 4096
        );
        // The registry's KV cache is F16; F32 keys and values reserve twice its bytes.
        assert_eq!(g.kv_dtype, DType::F16);
        let f32_kv = phi
            .clone()
            .map_generate(|o| o.kv_dtype(DType::F32))
            .unwrap();
        let f32_opts = f32_kv.generate_options("generate").unwrap();
        assert_eq!(f32_opts.kv_dtype, DType::F32);
        assert_eq!(
            f32_opts.memory.unwrap().kv_bytes_per_token,
            2 * g.memory.unwrap().kv_bytes_per_token
        );

        let flux = ServedModel::registry("black-forest-labs/FLUX.1-schnell", "d").unwrap();
        assert_eq!(
            flux.image_options("paint").unwrap().pipeline,
            Pipeline::Flux
        );
        assert_eq!(flux.timeout(), Some(DEFAULT_IMAGE_TIMEOUT));
    }

    #[test]
    fn asking_a_model_for_another_capability_names_both() {
        let minilm = ServedModel::registry("sentence-transformers/all-MiniLM-L6-v2", "d").unwrap();
        let e = minilm.generate_options("generate text").unwrap_err();
        assert!(
            matches!(
                &e,
                ServeError::WrongCapability {
                    capability: Capability::TextEmbedding,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "model `sentence-transformers/all-MiniLM-L6-v2` is a text_embedding model; it cannot generate text"
        );
        assert!(minilm.map_image(|o| o).is_err());
        assert!(matches!(
            ServedModel::registry("no/such", "d"),
            Err(ServeError::NotInRegistry { .. })
        ));
        assert_eq!(parse_backend("Stella"), Ok(Backend::Stella));
        assert!(
            parse_backend("gpt2")
                .unwrap_err()
                .contains("bert, jina-bert")
        );
    }

    #[test]
    fn image_batches_reserve_per_image() {
        let m = ServedModel::new("clip", "dir", crate::embed::tests::image_embedder());
        assert_eq!(m.pool_spec(0).need_bytes(), 25);
    }
}
