//! Text generation on the pool: how a generator is served ([`GenerateOptions`]), what a
//! request asks for ([`GenerateRequest`]), each model's chat template ([`chat`]), sampling
//! with the model cards' defaults ([`sampling`]), and the [`TokenStream`] a request returns
//! ([`stream`]). A request leases its model for as long as it generates and holds, besides
//! the model's resident weights, one request's working memory: the KV cache of its context and
//! one prefill step.

pub mod chat;
pub mod measure;
pub mod sampling;
pub mod stream;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::DType;
use image::DynamicImage;
use model_networks::Decoder;
use model_networks::decode::{DecoderParams, GenerativeModel};
use model_pool::{ByteSize, DeviceId, PoolError};
use model_registry::CandleModelInfo;
use model_spec::estimate::MemoryEstimate;

pub use chat::{ChatMessage, ChatTemplate, Role, TemplateError};
pub use sampling::{SamplingOverrides, SamplingParams};
pub use stream::{FinishReason, GeneratedToken, Generation, TokenStream, Usage};

use crate::error::ServeError;
use crate::loader::CapabilityLease;
use sampling::Sampler;

/// Default context per request when neither the registry nor the caller gives one.
pub const DEFAULT_CONTEXT_TOKENS: usize = 4096;
/// Default prefill step.
pub const DEFAULT_PREFILL_CHUNK: usize = 512;

/// Memory a generator declares to the pool: the estimate split the way the pool reserves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenMemory {
    /// Weights plus runtime overhead, held while loaded (with their share of the margin, as
    /// every figure here).
    pub resident_bytes: u64,
    /// KV-cache bytes per token of context (the cache is linear in the context).
    pub kv_bytes_per_token: u64,
    /// Working set of one prefill step.
    pub activations_bytes: u64,
    /// Context the estimate was computed for.
    pub profile_context: u64,
    /// `est_memory_allocation_mb` (registry models) or the estimate's MB for other checkpoints.
    pub estimate_mb: Option<u64>,
}

impl GenMemory {
    /// The registry-style split of an estimate made for `context` tokens.
    pub fn from_estimate(m: &MemoryEstimate, context: u64) -> Self {
        GenMemory {
            resident_bytes: m.with_margin(m.weights_bytes + m.overhead_bytes),
            kv_bytes_per_token: m.with_margin(m.kv_cache_bytes) / context.max(1),
            activations_bytes: m.with_margin(m.activations_bytes),
            profile_context: context,
            estimate_mb: Some(m.est_memory_allocation_mb),
        }
    }

    /// The registry's split of `info`'s figure.
    pub fn of(info: &CandleModelInfo) -> Self {
        let m = info.memory;
        let context = info
            .default_profile
            .context_tokens
            .unwrap_or(DEFAULT_CONTEXT_TOKENS) as u64;
        GenMemory {
            resident_bytes: m.resident_bytes(),
            kv_bytes_per_token: m.with_margin(m.kv_cache_bytes) / context.max(1),
            activations_bytes: m.with_margin(m.activations_bytes),
            profile_context: context,
            estimate_mb: Some(info.est_memory_allocation_mb as u64),
        }
    }

    /// Working memory of one request whose KV cache holds `context` tokens.
    pub fn per_request_bytes(&self, context: u64) -> u64 {
        self.kv_bytes_per_token
            .saturating_mul(context)
            .saturating_add(self.activations_bytes)
    }
}

/// How a generator is served.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// The model's architecture (GGUF `general.architecture` or the spec family).
    pub architecture: String,
    /// The network; `None` when no backend serves `architecture` (Kimi K2's `deepseek2`):
    /// such a model is refused with a typed error, never loaded.
    pub decoder: Option<Decoder>,
    /// `tokenizer.json` to use; by default the one beside the weights, else (GGUF) the
    /// vocabulary in the file.
    pub tokenizer: Option<PathBuf>,
    /// Weight dtype of safetensors checkpoints (LLaVA); GGUF tensors stay as stored.
    pub dtype: Option<DType>,
    /// Tokens (prompt + output) one request may hold: its KV cache is reserved for this
    /// many. Capped at the model's own maximum when loaded.
    pub context_tokens: usize,
    /// How each request's keys and values are stored (GGUF decoders): F16 by default, or
    /// the run profile's `kv_dtype`.
    pub kv_dtype: DType,
    /// Prompt tokens run per prefill step (the estimate's `prompt_tokens`), so a long prompt
    /// never needs more working memory than one step of this size.
    pub prefill_chunk: usize,
    /// Prompt format: the spec's for registry models; for a checkpoint outside the registry
    /// (served by [`crate::ServedModel::detect`] or [`crate::ServedModel::with_backend`]) the
    /// template its own files carry, where they carry one ([`ChatTemplate::from_checkpoint`]).
    /// One set explicitly replaces either. `None` joins a conversation's messages with
    /// newlines.
    pub template: Option<ChatTemplate>,
    /// Sampling defaults (the model card's for registry models).
    pub sampling: SamplingParams,
    /// Most new tokens per request.
    pub max_output_tokens: Option<usize>,
    /// Memory declared to the pool; `None` declares nothing.
    pub memory: Option<GenMemory>,
}

impl GenerateOptions {
    /// A generator of `architecture`, greedy, with the default context and prefill step and
    /// nothing declared.
    pub fn new(architecture: impl Into<String>) -> Self {
        let architecture = architecture.into();
        GenerateOptions {
            decoder: Decoder::for_architecture(&architecture),
            architecture,
            tokenizer: None,
            dtype: None,
            context_tokens: DEFAULT_CONTEXT_TOKENS,
            kv_dtype: DType::F16,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
            template: None,
            sampling: SamplingParams::greedy(),
            max_output_tokens: None,
            memory: None,
        }
    }

    /// A registry generator's options: architecture, memory from its compile-time checked
    /// estimate, context and prefill step from its run profile, template and sampling from its
    /// card.
    pub fn registry(info: &CandleModelInfo) -> Result<Self, ServeError> {
        let p = &info.default_profile;
        let mut o = GenerateOptions::new(info.serving.architecture);
        o.context_tokens = p.context_tokens.unwrap_or(DEFAULT_CONTEXT_TOKENS);
        o.prefill_chunk = p.prompt_tokens.unwrap_or(DEFAULT_PREFILL_CHUNK);
        o.dtype = crate::config::profile_dtype(info)?;
        if let Some(kv) = p.kv_dtype {
            o.kv_dtype = model_runtime::parse_dtype(kv)
                .map_err(|e| ServeError::backend(info.registry_key, e))?;
        }
        o.template = info
            .serving
            .chat_template
            .and_then(ChatTemplate::from_spec_name);
        if let Some(s) = &info.serving.sampling {
            o.sampling = SamplingParams::from_registry(s);
        }
        o.max_output_tokens = info.max_output_tokens;
        o.memory = Some(GenMemory::of(info));
        Ok(o)
    }

    /// Sets the weight dtype (LLaVA).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// Sets the context each request may use (and reserves KV memory for).
    pub fn context_tokens(mut self, tokens: usize) -> Self {
        self.context_tokens = tokens.max(1);
        self
    }

    /// Sets how keys and values are stored (F16 or F32 on the CPU; what the device supports
    /// elsewhere). Declared memory follows: the KV bytes per token scale with the dtype's size.
    pub fn kv_dtype(mut self, dtype: DType) -> Self {
        if let Some(m) = &mut self.memory {
            m.kv_bytes_per_token = m.kv_bytes_per_token * dtype.size_in_bytes() as u64
                / self.kv_dtype.size_in_bytes() as u64;
        }
        self.kv_dtype = dtype;
        self
    }

    /// Sets the prefill step.
    pub fn prefill_chunk(mut self, tokens: usize) -> Self {
        self.prefill_chunk = tokens.max(1);
        self
    }

    /// Sets the prompt format.
    pub fn template(mut self, template: ChatTemplate) -> Self {
        self.template = Some(template);
        self
    }

    /// Sets the sampling defaults.
    pub fn sampling(mut self, sampling: SamplingParams) -> Self {
        self.sampling = sampling;
        self
    }

    /// Declares memory.
    pub fn memory(mut self, memory: GenMemory) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Sets the tokenizer file.
    pub fn tokenizer(mut self, path: impl Into<PathBuf>) -> Self {
        self.tokenizer = Some(path.into());
        self
    }

    /// Working memory one request reserves: the KV cache of `context_tokens` plus one
    /// prefill step.
    pub fn per_request_bytes(&self) -> u64 {
        self.memory
            .map_or(0, |m| m.per_request_bytes(self.context_tokens as u64))
    }

    /// Resident plus one request.
    pub fn need_bytes(&self) -> u64 {
        self.memory.map_or(0, |m| m.resident_bytes) + self.per_request_bytes()
    }

    /// What the network's loader needs.
    pub(crate) fn params(&self, key: &str, source: PathBuf) -> Result<DecoderParams, ServeError> {
        let decoder = self.decoder.ok_or_else(|| ServeError::Config {
            model: key.to_owned(),
            reason: format!("no backend for architecture {}", self.architecture),
        })?;
        Ok(DecoderParams {
            key: key.to_owned(),
            source,
            decoder,
            tokenizer: self.tokenizer.clone(),
            dtype: self.dtype,
            context_tokens: self.context_tokens,
            kv_dtype: self.kv_dtype,
            end_tokens: self
                .template
                .as_ref()
                .map(|t| t.end_tokens().to_vec())
                .unwrap_or_default(),
        })
    }
}

/// The refusal of a model no backend can run (Kimi K2 Instruct: GGUF architecture
/// `deepseek2`, ≈ 621 GB of Q4_K_M weights; candle's `deepseek2` reads safetensors only and
/// rejects K2's routing). It is registered so that a request gets a typed answer at once,
/// never a load attempt (which would first evict every idle model to make room for 600 GB):
/// the pool's own `NeverFits` where the estimate exceeds the budget, else
/// [`ServeError::NoBackend`] naming the architecture.
pub(crate) fn refusal(key: &str, o: &GenerateOptions, device: DeviceId, budget: u64) -> ServeError {
    let need = o.need_bytes();
    if need > budget {
        ServeError::Pool(PoolError::NeverFits {
            model: key.to_owned(),
            need: ByteSize(need),
            budget: ByteSize(budget),
            device,
        })
    } else {
        ServeError::NoBackend {
            model: key.to_owned(),
            architecture: o.architecture.clone(),
            need: ByteSize(need),
            budget: ByteSize(budget),
            device,
        }
    }
}

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

/// The checks a request passes before it holds anything: sampling values, `max_tokens`, a
/// conversation that is not empty; the templated prompt text (a conversation the template
/// refuses is an invalid request).
pub(crate) fn prompt_text(
    key: &str,
    o: &GenerateOptions,
    request: &GenerateRequest,
    image: bool,
) -> Result<(String, SamplingParams), ServeError> {
    let mut sampling = o.sampling.clone();
    sampling.apply(&request.sampling);
    sampling
        .validate()
        .map_err(|r| ServeError::invalid(key, r))?;
    if request.max_tokens == Some(0) {
        return Err(ServeError::invalid(key, "max_tokens is 0"));
    }
    let text = match &request.prompt {
        Prompt::Chat(messages) => {
            if messages.is_empty() {
                return Err(ServeError::invalid(key, "the conversation has no messages"));
            }
            match &o.template {
                Some(t) => t.render(messages, image).map_err(|e| e.for_model(key))?,
                None => messages
                    .iter()
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            }
        }
        Prompt::Raw(text) => text.clone(),
    };
    Ok((text, sampling))
}

/// Tokenizes the prompt on the leased model, checks it against the context, and starts the
/// stream.
pub(crate) fn start(
    lease: CapabilityLease<GenerativeModel>,
    o: &GenerateOptions,
    request: GenerateRequest,
    text: &str,
    sampling: SamplingParams,
    image: Option<DynamicImage>,
    deadline: Option<(Instant, Duration)>,
) -> Result<TokenStream, ServeError> {
    let model = lease.key().to_owned();
    let model = model.as_str();
    let tokens = lease
        .encode(text)
        .map_err(|e| ServeError::backend(model, e))?;
    if tokens.is_empty() {
        return Err(ServeError::invalid(model, "the prompt is empty"));
    }
    let image_slots = lease
        .image_token_id()
        .map_or(0, |id| tokens.iter().filter(|&&t| t == id).count());
    if image.is_some() != (image_slots > 0) || image_slots > 1 {
        return Err(ServeError::invalid(
            model,
            format!(
                "the prompt has {image_slots} <image> placeholders for {} image(s); LLaVA 1.5 takes exactly one",
                usize::from(image.is_some())
            ),
        ));
    }
    let prompt_tokens = tokens.len() + image_slots * lease.image_tokens().saturating_sub(1);
    let model_max = lease.model_max();
    let reserved = o.context_tokens;
    let limit = lease.positions();
    let room = limit.saturating_sub(prompt_tokens);
    let max_tokens = match request.max_tokens {
        Some(n) => n,
        None => o.max_output_tokens.map_or(room, |m| m.min(room)),
    };
    if max_tokens == 0 || prompt_tokens + max_tokens > limit {
        return Err(ServeError::ContextTooLong {
            model: model.to_owned(),
            prompt_tokens,
            max_tokens: max_tokens.max(1),
            limit,
            model_max,
            reserved,
        });
    }
    Ok(stream::spawn(stream::Job {
        lease,
        prompt: tokens,
        prompt_tokens,
        image,
        max_tokens,
        sampler: Sampler::new(sampling),
        stop: request.stop,
        prefill_chunk: o.prefill_chunk,
        deadline,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_pool::size::GIB;

    #[test]
    fn kimi_never_fits_a_workstation_and_has_no_backend_on_a_large_host() {
        let kimi = crate::ServedModel::registry("unsloth/Kimi-K2-Instruct-GGUF", "k.gguf").unwrap();
        let o = kimi.generate_options("generate text").unwrap();
        match refusal(&kimi.key, o, DeviceId::Cpu, 24 * GIB) {
            ServeError::Pool(PoolError::NeverFits { need, budget, .. }) => {
                assert!(need.0 > 570 * GIB, "{need}");
                assert_eq!(budget.0, 24 * GIB);
            }
            other => panic!("{other:?}"),
        }
        let err = refusal(&kimi.key, o, DeviceId::Cpu, 2048 * GIB);
        assert!(
            matches!(&err, ServeError::NoBackend { architecture, .. } if architecture == "deepseek2"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("no backend for architecture deepseek2"),
            "{err}"
        );
    }
}
