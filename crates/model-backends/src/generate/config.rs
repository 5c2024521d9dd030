//! How one generator is served: its files, backend, device, the context each request may use
//! (which sizes the KV cache it reserves), sampling defaults, and the memory it declares.

use std::path::PathBuf;
use std::time::Duration;

use candle_core::DType;
use model_pool::{DeviceId, ModelSpec, Tier};
use model_spec::estimate::MemoryEstimate;

use super::chat::ChatTemplate;
use super::sampling::SamplingParams;
use crate::error::BackendError;

/// The backend code a generator runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// [`phi3`](super::phi3) from GGUF (Phi-4).
    Phi3Gguf,
    /// [`qwen3_moe`](super::qwen3_moe) from GGUF (Qwen3-Coder-30B-A3B).
    Qwen3MoeGguf,
    /// [`llava`](super::llava) 1.5 from safetensors (llava-hf layout).
    Llava15,
}

impl Backend {
    /// The backend of an architecture name (GGUF `general.architecture`, or the spec family).
    pub fn for_architecture(architecture: &str) -> Option<Backend> {
        match architecture {
            "phi3" => Some(Backend::Phi3Gguf),
            "qwen3moe" | "qwen3_moe" => Some(Backend::Qwen3MoeGguf),
            "llava" => Some(Backend::Llava15),
            _ => None,
        }
    }

    /// The architecture name.
    pub fn architecture(self) -> &'static str {
        match self {
            Backend::Phi3Gguf => super::phi3::ARCHITECTURE,
            Backend::Qwen3MoeGguf => super::qwen3_moe::ARCHITECTURE,
            Backend::Llava15 => "llava",
        }
    }

    /// Whether requests may carry an image.
    pub fn takes_images(self) -> bool {
        self == Backend::Llava15
    }

    /// Whether the weights are one GGUF file (else a checkpoint directory).
    pub fn is_gguf(self) -> bool {
        self != Backend::Llava15
    }
}

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

    /// Working memory of one request whose KV cache holds `context` tokens.
    pub fn per_request_bytes(&self, context: u64) -> u64 {
        self.kv_bytes_per_token
            .saturating_mul(context)
            .saturating_add(self.activations_bytes)
    }
}

/// How to serve one generator.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Key requests use (the registry key for registry models).
    pub key: String,
    /// The GGUF file (Phi-4, Qwen3-Coder) or checkpoint directory (LLaVA).
    pub source: PathBuf,
    /// The model's architecture (GGUF `general.architecture` or the spec family).
    pub architecture: String,
    /// The backend; `None` when no backend serves `architecture` (Kimi K2's `deepseek2`):
    /// such a model is refused with a typed error, never loaded.
    pub backend: Option<Backend>,
    /// `tokenizer.json` to use; by default the one beside the weights, else (GGUF) the
    /// vocabulary in the file.
    pub tokenizer: Option<PathBuf>,
    /// Where it runs.
    pub device: DeviceId,
    /// Weight dtype of safetensors checkpoints (LLaVA); GGUF tensors stay as stored.
    pub dtype: Option<DType>,
    /// Tokens (prompt + output) one request may hold: its KV cache is reserved for this
    /// many. Capped at the model's own maximum when loaded.
    pub context_tokens: usize,
    /// Prompt tokens run per prefill step (the estimate's `prompt_tokens`), so a long prompt
    /// never needs more working memory than one step of this size.
    pub prefill_chunk: usize,
    /// Prompt format; the model's own for registry models.
    pub template: Option<ChatTemplate>,
    /// Sampling defaults (the model card's for registry models).
    pub sampling: SamplingParams,
    /// Most new tokens per request.
    pub max_output_tokens: Option<usize>,
    /// Memory declared to the pool; `None` declares nothing.
    pub memory: Option<GenMemory>,
    /// Pool tier.
    pub tier: Tier,
    /// Pool priority.
    pub priority: i32,
    /// Requests served at once (memory permitting: each holds a KV reservation).
    pub max_concurrency: usize,
    /// Requests waiting at once.
    pub max_queue: usize,
    /// Deadline of one request: waiting, loading and generating.
    pub request_timeout: Option<Duration>,
}

/// Default context per request when neither the registry nor the caller gives one.
pub const DEFAULT_CONTEXT_TOKENS: usize = 4096;
/// Default prefill step.
pub const DEFAULT_PREFILL_CHUNK: usize = 512;

impl GeneratorConfig {
    /// A generator of `architecture` served from `source`, on the CPU, without declared
    /// memory, greedy.
    pub fn new(
        key: impl Into<String>,
        architecture: impl Into<String>,
        source: impl Into<PathBuf>,
    ) -> Self {
        let architecture = architecture.into();
        GeneratorConfig {
            key: key.into(),
            source: source.into(),
            backend: Backend::for_architecture(&architecture),
            architecture,
            tokenizer: None,
            device: DeviceId::Cpu,
            dtype: None,
            context_tokens: DEFAULT_CONTEXT_TOKENS,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
            template: None,
            sampling: SamplingParams::greedy(),
            max_output_tokens: None,
            memory: None,
            tier: Tier::Warm {
                idle_ttl: ModelSpec::DEFAULT_IDLE_TTL,
            },
            priority: 0,
            max_concurrency: 4,
            max_queue: 64,
            request_timeout: None,
        }
    }

    /// A registry generator (`microsoft/phi-4`, `unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF`,
    /// `llava-hf/llava-1.5-7b-hf`, `unsloth/Kimi-K2-Instruct-GGUF`): architecture from its
    /// spec, memory from its compile-time checked estimate, context and prefill step from its
    /// run profile, template and sampling from its card. The device stays the CPU.
    pub fn registry(key: &str, source: impl Into<PathBuf>) -> Result<Self, BackendError> {
        let info = model_registry::by_key(key).ok_or_else(|| BackendError::UnknownFamily {
            key: key.to_owned(),
            why: "not in the registry (model-registry's ALL)".to_owned(),
        })?;
        use model_registry::Capability;
        if !matches!(info.capability, Capability::TextToText | Capability::Vision) {
            return Err(BackendError::UnknownFamily {
                key: key.to_owned(),
                why: format!("it is a {} model, not a generator", info.capability),
            });
        }
        let architecture = registry_architecture(key)?;
        let p = &info.default_profile;
        let context = p.context_tokens.unwrap_or(DEFAULT_CONTEXT_TOKENS);
        let m = info.memory;
        let mut c = GeneratorConfig::new(key, architecture, source);
        c.context_tokens = context;
        c.prefill_chunk = p.prompt_tokens.unwrap_or(DEFAULT_PREFILL_CHUNK);
        c.dtype = p.load_dtype.map(crate::device::parse_dtype).transpose()?;
        c.template = ChatTemplate::for_model(key);
        c.sampling = SamplingParams::for_model(key);
        c.max_output_tokens = info.max_output_tokens;
        c.memory = Some(GenMemory {
            resident_bytes: m.resident_bytes(),
            kv_bytes_per_token: m.with_margin(m.kv_cache_bytes) / context.max(1) as u64,
            activations_bytes: m.with_margin(m.activations_bytes),
            profile_context: context as u64,
            estimate_mb: Some(info.est_memory_allocation_mb as u64),
        });
        Ok(c)
    }

    /// Sets the device.
    pub fn device(mut self, device: DeviceId) -> Self {
        self.device = device;
        self
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

    /// Sets the pool tier.
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    /// Sets the concurrency cap.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n.max(1);
        self
    }

    /// Sets the request deadline.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
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

    /// The pool's view: resident weights, one request's KV cache and prefill per lease.
    pub fn pool_spec(&self) -> ModelSpec {
        ModelSpec::new(
            self.key.clone(),
            self.device,
            self.memory.map_or(0, |m| m.resident_bytes),
            self.per_request_bytes(),
        )
        .tier(self.tier)
        .priority(self.priority)
        .max_concurrency(self.max_concurrency)
        .max_queue(self.max_queue)
    }
}

/// The architecture of a registry model, from its spec: the GGUF architecture name when the
/// spec records one (`gguf_architecture`), else the component's family. Where the spec TOMLs
/// are not at hand (an installed binary), the registry's four generators are known by key.
pub fn registry_architecture(key: &str) -> Result<String, BackendError> {
    let reg = match crate::registry::specs() {
        Ok(reg) => reg,
        Err(e) => {
            let known = match key {
                "microsoft/phi-4" => "phi3",
                "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF" => "qwen3moe",
                "llava-hf/llava-1.5-7b-hf" => "llava",
                "unsloth/Kimi-K2-Instruct-GGUF" => "deepseek2",
                _ => return Err(e),
            };
            return Ok(known.to_owned());
        }
    };
    let entry = reg.get(key).ok_or_else(|| BackendError::UnknownFamily {
        key: key.to_owned(),
        why: "no spec TOML under model-cards/".to_owned(),
    })?;
    let c = entry
        .spec
        .spec
        .components
        .first()
        .ok_or_else(|| BackendError::config(&entry.spec.path, "the spec has no component"))?;
    Ok(c.architecture
        .get("gguf_architecture")
        .and_then(|f| f.get_ref().value.as_str().map(str::to_owned))
        .unwrap_or_else(|| c.family.as_str().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_generators_map_to_backends_or_to_none() {
        let phi = GeneratorConfig::registry("microsoft/phi-4", "phi-4-Q4_K_M.gguf").unwrap();
        assert_eq!(phi.backend, Some(Backend::Phi3Gguf));
        assert_eq!((phi.context_tokens, phi.prefill_chunk), (4096, 512));
        let m = model_registry::by_key("microsoft/phi-4").unwrap().memory;
        assert!(
            phi.pool_spec().need_bytes().abs_diff(m.total_bytes) <= 4096 + 2,
            "resident + one request is the registry's total (margin included)"
        );
        let qwen = GeneratorConfig::registry("unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF", "q.gguf")
            .unwrap();
        assert_eq!(qwen.backend, Some(Backend::Qwen3MoeGguf));
        assert_eq!(qwen.sampling.top_k, 20);
        let llava = GeneratorConfig::registry("llava-hf/llava-1.5-7b-hf", "dir").unwrap();
        assert_eq!(llava.backend, Some(Backend::Llava15));
        assert_eq!(llava.dtype, Some(DType::F16));
        let kimi = GeneratorConfig::registry("unsloth/Kimi-K2-Instruct-GGUF", "k.gguf").unwrap();
        assert_eq!(kimi.architecture, "deepseek2");
        assert_eq!(kimi.backend, None);
        assert!(GeneratorConfig::registry("sentence-transformers/all-MiniLM-L6-v2", "d").is_err());
        // A longer context reserves proportionally more KV memory.
        let long = phi.clone().context_tokens(8192);
        assert_eq!(
            long.per_request_bytes() - phi.per_request_bytes(),
            phi.memory.unwrap().kv_bytes_per_token * 4096
        );
    }
}
