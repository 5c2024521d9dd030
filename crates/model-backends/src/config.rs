//! How one model is served: where its files are, which family and dtype, its input limit,
//! its batching limits and the memory it declares to the pool.

use std::path::PathBuf;
use std::time::Duration;

use candle_core::DType;
use model_pool::{DeviceId, ModelSpec, Tier};

use crate::error::BackendError;
use crate::model_dir::ModelDir;
use crate::models::Family;

/// What happens to an input longer than the model's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Cut it at the limit (what Sentence-Transformers does).
    #[default]
    Truncate,
    /// Refuse the request with [`EmbedError::TooLong`](crate::EmbedError::TooLong).
    Refuse,
}

/// Limits of one batch (one forward pass under one lease) and of the queue in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most padded tokens (rows × longest row) in one forward pass, like TEI's
    /// `max_batch_tokens`. Raised to the input limit if lower, so every input fits.
    pub max_batch_tokens: usize,
    /// Most inputs (texts or images) in one forward pass.
    pub max_batch_size: usize,
    /// Most requests waiting for the model; more are refused with `Busy`.
    pub max_queued: usize,
}

impl Default for BatchLimits {
    /// 8192 tokens and 64 inputs per batch, 256 queued requests.
    fn default() -> Self {
        BatchLimits {
            max_batch_tokens: 8192,
            max_batch_size: 64,
            max_queued: 256,
        }
    }
}

/// Memory a model declares: the registry's estimate split the way the pool reserves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeclaredMemory {
    /// Weights plus runtime overhead, held while loaded.
    pub resident_bytes: u64,
    /// KV cache plus activations of one request of the run profile.
    pub per_request_bytes: u64,
    /// Inputs in one request of the run profile.
    pub profile_batch: u64,
    /// Tokens per input in the run profile (text encoders); `None` for image models.
    pub profile_seq_len: Option<u64>,
    /// The registry figure (`est_memory_allocation_mb`), for reports.
    pub estimate_mb: Option<u64>,
}

/// Where a model's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory in the Hub layout.
    Dir(PathBuf),
    /// A snapshot in the hf-hub cache.
    HfCache {
        /// `owner/name`.
        repo: String,
        /// Branch, tag or commit; `main` when `None`.
        revision: Option<String>,
    },
}

impl ModelSource {
    /// Resolves the directory (checked at load time, so a pool can be built before the files
    /// are fetched).
    pub fn resolve(&self) -> Result<ModelDir, BackendError> {
        match self {
            ModelSource::Dir(path) => ModelDir::local(path),
            ModelSource::HfCache { repo, revision } => {
                ModelDir::hf_cache(repo, revision.as_deref())
            }
        }
    }
}

impl From<PathBuf> for ModelSource {
    fn from(p: PathBuf) -> Self {
        ModelSource::Dir(p)
    }
}

impl From<&std::path::Path> for ModelSource {
    fn from(p: &std::path::Path) -> Self {
        ModelSource::Dir(p.to_path_buf())
    }
}

impl From<&str> for ModelSource {
    fn from(p: &str) -> Self {
        ModelSource::Dir(PathBuf::from(p))
    }
}

/// How to serve one model.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Key requests use (the registry key for registry models).
    pub key: String,
    /// Where the files are.
    pub source: ModelSource,
    /// Which backend; detected from the key, else from `config.json`, when `None`.
    pub family: Option<Family>,
    /// Where it runs.
    pub device: DeviceId,
    /// Weight and activation dtype; the family's default (F32) when `None`.
    pub dtype: Option<DType>,
    /// Most tokens per input, special tokens included. `None`: the model's own limit
    /// (`sentence_bert_config.json`, else its config), capped at the run profile's `seq_len`
    /// when it declares memory, because the declared working set was computed for that length.
    pub max_input_tokens: Option<usize>,
    /// Long inputs are truncated or refused.
    pub overflow: Overflow,
    /// L2-normalize embeddings (TEI and the Sentence-Transformers `Normalize` module do).
    pub normalize: bool,
    /// Instruction for [`TextMode::Query`](crate::TextMode::Query); the family's when `None`.
    pub query_instruction: Option<String>,
    /// Batching limits.
    pub batch: BatchLimits,
    /// Memory declared to the pool; `None` declares nothing (the pool then relies on the
    /// measurement it records after the load).
    pub memory: Option<DeclaredMemory>,
    /// Pool tier.
    pub tier: Tier,
    /// Pool priority.
    pub priority: i32,
    /// Deadline of one request (queueing, loading and running).
    pub request_timeout: Option<Duration>,
}

impl ModelConfig {
    /// A model served from `source`, family detected, on the CPU, without declared memory.
    pub fn new(key: impl Into<String>, source: impl Into<ModelSource>) -> Self {
        ModelConfig {
            key: key.into(),
            source: source.into(),
            family: None,
            device: DeviceId::Cpu,
            dtype: None,
            max_input_tokens: None,
            overflow: Overflow::Truncate,
            normalize: true,
            query_instruction: None,
            batch: BatchLimits::default(),
            memory: None,
            tier: Tier::Warm {
                idle_ttl: ModelSpec::DEFAULT_IDLE_TTL,
            },
            priority: 0,
            request_timeout: None,
        }
    }

    /// A registry model: family, dtype and declared memory from its spec and run profile.
    /// The device stays the CPU (set [`device`](Self::device) for a GPU build).
    pub fn registry(key: &str, source: impl Into<ModelSource>) -> Result<Self, BackendError> {
        let info = crate::registry::lookup(key)?;
        let family = info.family.ok_or_else(|| BackendError::UnknownFamily {
            key: key.to_owned(),
            why: format!(
                "it is a {} model; these backends serve the six embedders",
                info.model.capability
            ),
        })?;
        let mut config = ModelConfig::new(key, source);
        config.family = Some(family);
        config.dtype = info.dtype;
        config.memory = Some(info.memory);
        config.query_instruction = info.query_instruction().map(str::to_owned);
        Ok(config)
    }

    /// Sets the family.
    pub fn family(mut self, family: Family) -> Self {
        self.family = Some(family);
        self
    }

    /// Sets the device.
    pub fn device(mut self, device: DeviceId) -> Self {
        self.device = device;
        self
    }

    /// Sets the dtype.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// Sets the input limit.
    pub fn max_input_tokens(mut self, limit: usize) -> Self {
        self.max_input_tokens = Some(limit);
        self
    }

    /// Sets what happens to long inputs.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Sets the batching limits.
    pub fn batch(mut self, batch: BatchLimits) -> Self {
        self.batch = batch;
        self
    }

    /// Declares memory.
    pub fn memory(mut self, memory: DeclaredMemory) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Sets the pool tier.
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    /// Sets normalization.
    pub fn normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
        self
    }

    /// Sets the query instruction.
    pub fn query_instruction(mut self, instruction: impl Into<String>) -> Self {
        self.query_instruction = Some(instruction.into());
        self
    }

    /// The input limit the pool plans with before the model's files are read: the configured
    /// one, else the run profile's `seq_len`.
    pub fn planned_input_tokens(&self) -> Option<usize> {
        self.max_input_tokens.or_else(|| {
            self.memory
                .and_then(|m| m.profile_seq_len)
                .map(|s| s as usize)
        })
    }

    /// Bytes one batch may use: the profile request's working set scaled to the batch limits.
    ///
    /// A text batch holds at most `max_batch_tokens` padded tokens of at most `L` tokens each.
    /// The encoder working set is linear in tokens plus quadratic in length per row, so such a
    /// batch needs at most `max_batch_tokens / (batch·seq_len)` profile requests' worth, times
    /// `L / seq_len` when inputs may be longer than the profile's. Image batches scale with the
    /// number of images.
    pub fn per_batch_bytes(&self) -> u64 {
        let Some(m) = self.memory else { return 0 };
        let b0 = m.profile_batch.max(1);
        let factor = match m.profile_seq_len {
            Some(s0) => {
                let s0 = s0.max(1);
                let tokens = self.effective_batch_tokens() as u64;
                let length = self.planned_input_tokens().map_or(s0, |l| l as u64);
                tokens.div_ceil(b0 * s0) * length.div_ceil(s0).max(1)
            }
            None => (self.batch.max_batch_size as u64).div_ceil(b0),
        };
        m.per_request_bytes.saturating_mul(factor.max(1))
    }

    /// `max_batch_tokens`, raised to the input limit so that every input fits in a batch.
    pub fn effective_batch_tokens(&self) -> usize {
        self.batch
            .max_batch_tokens
            .max(self.planned_input_tokens().unwrap_or(0))
            .max(1)
    }

    /// The pool's view of this model: one lease per batch.
    pub fn pool_spec(&self) -> ModelSpec {
        let resident = self.memory.map_or(0, |m| m.resident_bytes);
        ModelSpec::new(
            self.key.clone(),
            self.device,
            resident,
            self.per_batch_bytes(),
        )
        .tier(self.tier)
        .priority(self.priority)
        .max_concurrency(1)
        .max_queue(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm_like() -> ModelConfig {
        ModelConfig::new("m", "dir").memory(DeclaredMemory {
            resident_bytes: 100,
            per_request_bytes: 10,
            profile_batch: 1,
            profile_seq_len: Some(256),
            estimate_mb: None,
        })
    }

    #[test]
    fn per_batch_bytes_scale_with_tokens_and_length() {
        let c = minilm_like();
        // 8192 tokens = 32 profile requests of 256 tokens.
        assert_eq!(c.per_batch_bytes(), 320);
        let c = minilm_like().batch(BatchLimits {
            max_batch_tokens: 256,
            ..Default::default()
        });
        assert_eq!(c.per_batch_bytes(), 10);
        // Inputs up to 1024 tokens: attention grows with length, so ×4 on top of the tokens.
        let c = minilm_like().max_input_tokens(1024).batch(BatchLimits {
            max_batch_tokens: 1024,
            ..Default::default()
        });
        assert_eq!(c.per_batch_bytes(), 4 * 4 * 10);
        // A token budget below the limit is raised to it.
        let c = minilm_like().max_input_tokens(512).batch(BatchLimits {
            max_batch_tokens: 100,
            ..Default::default()
        });
        assert_eq!(c.effective_batch_tokens(), 512);
    }

    #[test]
    fn image_batches_scale_with_images() {
        let c = ModelConfig::new("clip", "dir")
            .memory(DeclaredMemory {
                resident_bytes: 1,
                per_request_bytes: 3,
                profile_batch: 1,
                profile_seq_len: None,
                estimate_mb: None,
            })
            .batch(BatchLimits {
                max_batch_size: 8,
                ..Default::default()
            });
        assert_eq!(c.per_batch_bytes(), 24);
        assert_eq!(c.pool_spec().need_bytes(), 25);
    }
}
