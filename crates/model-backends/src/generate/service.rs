//! [`GeneratorPool`]: `generate` and `describe_image` on top of [`model_pool::Pool`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::DynamicImage;
use model_pool::{BuildError, MemoryGovernor, Pool, PoolError, PoolStatus, SchedulerConfig};

use super::chat::ChatMessage;
use super::config::GeneratorConfig;
use super::error::GenerateError;
use super::loader::{GenLoadMeasurement, GenerativeLoader};
use super::sampling::{Sampler, SamplingOverrides};
use super::stream::{self, Job, TokenStream};
use crate::memory::LoadMeasurement;
use crate::report::{MemoryReport, ReportRow};

/// What to generate from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Text passed to the model as is (no template).
    Raw(String),
}

/// One generation request. Unset values take the model's defaults (its card's sampling, the
/// rest of its context for `max_tokens`).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Most new tokens; the remaining context (capped at the model's `max_output_tokens`)
    /// when `None`.
    pub max_tokens: Option<usize>,
    /// Strings that end the answer (not included in it).
    pub stop: Vec<String>,
    /// Changes to the model's sampling defaults.
    pub sampling: SamplingOverrides,
    /// Deadline for waiting, loading and generating; the model's `request_timeout` (else the
    /// pool's) when `None`.
    pub timeout: Option<Duration>,
}

impl GenerateRequest {
    /// A conversation.
    pub fn chat(messages: Vec<ChatMessage>) -> Self {
        GenerateRequest {
            prompt: Prompt::Chat(messages),
            max_tokens: None,
            stop: Vec::new(),
            sampling: SamplingOverrides::default(),
            timeout: None,
        }
    }

    /// One user message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::chat(vec![ChatMessage::user(text)])
    }

    /// Untemplated text.
    pub fn raw(text: impl Into<String>) -> Self {
        GenerateRequest {
            prompt: Prompt::Raw(text.into()),
            ..Self::chat(Vec::new())
        }
    }

    /// Sets `max_tokens`.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Adds a stop string.
    pub fn stop(mut self, s: impl Into<String>) -> Self {
        self.stop.push(s.into());
        self
    }

    /// Sets the temperature (`0` is greedy).
    pub fn temperature(mut self, t: f64) -> Self {
        self.sampling.temperature = Some(t);
        self
    }

    /// Sets top-p.
    pub fn top_p(mut self, p: f64) -> Self {
        self.sampling.top_p = Some(p);
        self
    }

    /// Sets top-k.
    pub fn top_k(mut self, k: usize) -> Self {
        self.sampling.top_k = Some(k);
        self
    }

    /// Sets the repetition penalty.
    pub fn repetition_penalty(mut self, r: f32) -> Self {
        self.sampling.repetition_penalty = Some(r);
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.sampling.seed = Some(seed);
        self
    }

    /// Greedy decoding whatever the model's defaults.
    pub fn greedy(self) -> Self {
        self.temperature(0.0)
    }

    /// Sets the deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Configures a [`GeneratorPool`].
#[derive(Default)]
pub struct GeneratorPoolBuilder {
    models: Vec<GeneratorConfig>,
    governor: Option<MemoryGovernor>,
    scheduler: Option<SchedulerConfig>,
}

impl GeneratorPoolBuilder {
    /// Adds a generator.
    pub fn model(mut self, config: GeneratorConfig) -> Self {
        self.models.push(config);
        self
    }

    /// Adds generators.
    pub fn models(mut self, configs: impl IntoIterator<Item = GeneratorConfig>) -> Self {
        self.models.extend(configs);
        self
    }

    /// Draws on `governor` instead of the process-wide one (pass the embedding pool's
    /// governor, or none at all, so that every pool shares one budget).
    pub fn governor(mut self, governor: MemoryGovernor) -> Self {
        self.governor = Some(governor);
        self
    }

    /// Pool-wide limits.
    pub fn scheduler(mut self, config: SchedulerConfig) -> Self {
        self.scheduler = Some(config);
        self
    }

    /// Starts the pool. Must run inside a Tokio runtime. Models without a backend are kept
    /// aside: requests for them are refused (see [`kimi`](super::kimi)), never loaded.
    pub fn build(self) -> Result<GeneratorPool, BuildError> {
        let (servable, refused): (Vec<_>, Vec<_>) =
            self.models.into_iter().partition(|c| c.backend.is_some());
        let loader = GenerativeLoader::new(servable.clone());
        let mut builder =
            Pool::builder(loader.clone()).models(servable.iter().map(GeneratorConfig::pool_spec));
        let governor = match self.governor {
            Some(g) => g,
            None => MemoryGovernor::global()?.clone(),
        };
        builder = builder.governor(governor.clone());
        if let Some(c) = self.scheduler {
            builder = builder.config(c);
        }
        for c in &refused {
            if servable.iter().any(|s| s.key == c.key) {
                return Err(BuildError::DuplicateModel(c.key.clone()));
            }
        }
        let pool = builder.build()?;
        Ok(GeneratorPool {
            pool: Arc::new(pool),
            loader,
            governor,
            configs: servable.into_iter().map(|c| (c.key.clone(), c)).collect(),
            refused: refused.into_iter().map(|c| (c.key.clone(), c)).collect(),
        })
    }
}

/// Generators sharing one memory-aware pool (and, through the governor, one budget with every
/// other pool of the process).
///
/// A request leases its model for as long as it generates and holds, besides the model's
/// resident weights, one request's working memory: the KV cache of the configured context and
/// one prefill step. Concurrency is bounded by how many such reservations fit.
pub struct GeneratorPool {
    pool: Arc<Pool<GenerativeLoader>>,
    loader: GenerativeLoader,
    governor: MemoryGovernor,
    configs: HashMap<String, GeneratorConfig>,
    refused: HashMap<String, GeneratorConfig>,
}

impl GeneratorPool {
    /// Starts configuring a pool.
    pub fn builder() -> GeneratorPoolBuilder {
        GeneratorPoolBuilder::default()
    }

    /// Generates an answer to `request`, token by token.
    ///
    /// Errors before the first token (unknown model, never fits, no backend, context too
    /// long, busy, load failure) are returned here; the stream then yields the tokens.
    pub async fn generate(
        &self,
        model: &str,
        request: GenerateRequest,
    ) -> Result<TokenStream, GenerateError> {
        self.start(model, request, None).await
    }

    /// Answers `prompt` about `image` (LLaVA), token by token.
    pub async fn describe_image(
        &self,
        model: &str,
        image: DynamicImage,
        prompt: &str,
    ) -> Result<TokenStream, GenerateError> {
        self.start(model, GenerateRequest::user(prompt), Some(image))
            .await
    }

    /// Like [`describe_image`](Self::describe_image) with a full request.
    pub async fn describe_image_with(
        &self,
        model: &str,
        image: DynamicImage,
        request: GenerateRequest,
    ) -> Result<TokenStream, GenerateError> {
        self.start(model, request, Some(image)).await
    }

    async fn start(
        &self,
        model: &str,
        request: GenerateRequest,
        image: Option<DynamicImage>,
    ) -> Result<TokenStream, GenerateError> {
        if let Some(c) = self.refused.get(model) {
            return Err(super::kimi::refusal(c, &self.governor));
        }
        let config = self
            .configs
            .get(model)
            .ok_or_else(|| PoolError::UnknownModel {
                model: model.to_owned(),
            })?;
        let Some(backend) = config.backend else {
            return Err(PoolError::Internal {
                model: model.to_owned(),
                message: "a model without a backend was registered as servable".into(),
            }
            .into());
        };
        if image.is_some() && !backend.takes_images() {
            return Err(GenerateError::Unsupported {
                model: model.to_owned(),
                what: "describe images (it is a text-only model)",
            });
        }
        let mut sampling = config.sampling.clone();
        sampling.apply(&request.sampling);
        sampling
            .validate()
            .map_err(|r| GenerateError::invalid(model, r))?;
        if request.max_tokens == Some(0) {
            return Err(GenerateError::invalid(model, "max_tokens is 0"));
        }
        let text = match &request.prompt {
            Prompt::Chat(messages) => {
                if messages.is_empty() {
                    return Err(GenerateError::invalid(
                        model,
                        "the conversation has no messages",
                    ));
                }
                match config.template {
                    Some(t) => t.render(messages, image.is_some()),
                    None => messages
                        .iter()
                        .map(|m| m.content.as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                }
            }
            Prompt::Raw(text) => text.clone(),
        };
        let timeout = request.timeout.or(config.request_timeout);
        let started = Instant::now();
        let lease = match timeout {
            Some(t) => self.pool.acquire_timeout(model, t).await?,
            None => self.pool.acquire(model).await?,
        };
        let tokens = lease
            .encode(&text)
            .map_err(|e| GenerateError::backend(model, e))?;
        if tokens.is_empty() {
            return Err(GenerateError::invalid(model, "the prompt is empty"));
        }
        let image_slots = lease
            .image_token_id()
            .map_or(0, |id| tokens.iter().filter(|&&t| t == id).count());
        if image.is_some() != (image_slots > 0) || image_slots > 1 {
            return Err(GenerateError::invalid(
                model,
                format!(
                    "the prompt has {image_slots} <image> placeholders for {} image(s); LLaVA 1.5 takes exactly one",
                    usize::from(image.is_some())
                ),
            ));
        }
        let prompt_tokens = tokens.len() + image_slots * lease.image_tokens().saturating_sub(1);
        let model_max = lease.model_max();
        let reserved = config.context_tokens;
        let limit = lease.positions();
        let room = limit.saturating_sub(prompt_tokens);
        let max_tokens = match request.max_tokens {
            Some(n) => n,
            None => config.max_output_tokens.map_or(room, |m| m.min(room)),
        };
        if max_tokens == 0 || prompt_tokens + max_tokens > limit {
            return Err(GenerateError::ContextTooLong {
                model: model.to_owned(),
                prompt_tokens,
                max_tokens: max_tokens.max(1),
                limit,
                model_max,
                reserved,
            });
        }
        let deadline = timeout.map(|t| (started + t, t));
        Ok(stream::spawn(Job {
            lease,
            prompt: tokens,
            prompt_tokens,
            image,
            max_tokens,
            sampler: Sampler::new(sampling),
            stop: request.stop,
            prefill_chunk: config.prefill_chunk,
            deadline,
        }))
    }

    /// The pool's status: states, leases, queues, reserved and measured bytes per model.
    pub fn status(&self) -> PoolStatus {
        self.pool.status()
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool<GenerativeLoader> {
        &self.pool
    }

    /// The governor the pool draws on.
    pub fn governor(&self) -> &MemoryGovernor {
        &self.governor
    }

    /// The configuration of `model`.
    pub fn config(&self, model: &str) -> Option<&GeneratorConfig> {
        self.configs.get(model).or_else(|| self.refused.get(model))
    }

    /// The last load measurement of every model loaded so far.
    pub fn measurements(&self) -> std::collections::BTreeMap<String, GenLoadMeasurement> {
        self.loader.measurements()
    }

    /// Estimate vs measured memory of every servable model (measured ones have been loaded).
    pub fn memory_report(&self) -> MemoryReport {
        let measured = self.loader.measurements();
        let status = self.pool.status();
        let mut keys: Vec<_> = self.configs.keys().collect();
        keys.sort();
        let rows = keys
            .into_iter()
            .map(|key| {
                let c = &self.configs[key];
                let s = status.model(key);
                ReportRow {
                    key: key.clone(),
                    estimate_mb: c.memory.and_then(|m| m.estimate_mb),
                    declared_resident_bytes: c.memory.map(|m| m.resident_bytes),
                    declared_per_batch_bytes: c.memory.map(|_| c.per_request_bytes()),
                    measured: measured.get(key).map(|m| LoadMeasurement {
                        resident_bytes: m.resident_bytes,
                        peak_rss_bytes: m.peak_rss_bytes,
                        peak_anon_bytes: m.peak_anon_bytes,
                        millis: m.load_millis + m.warmup_millis,
                    }),
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
}
