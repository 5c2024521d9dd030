//! Embedding on the pool: how an embedder is served ([`EmbedOptions`]), the memory one batch
//! reserves, and the dynamic batching in front of its lease ([`batch`]).

pub mod batch;

use candle_core::DType;
use model_networks::Family;
use model_networks::embed::BatchLimits;
use model_networks::embed::text::Overflow;
use model_registry::CandleModelInfo;

use crate::error::ServeError;

/// Memory an embedder declares: the registry's estimate split the way the pool reserves it.
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

impl DeclaredMemory {
    /// The split of an estimate made under `profile` (a checkpoint outside the registry).
    pub fn from_estimate(m: &model_spec::MemoryEstimate, profile: &model_spec::RunProfile) -> Self {
        DeclaredMemory {
            resident_bytes: m.with_margin(m.weights_bytes + m.overhead_bytes),
            per_request_bytes: m.with_margin(m.kv_cache_bytes + m.activations_bytes),
            profile_batch: profile.batch.max(1),
            profile_seq_len: profile.seq_len.filter(|_| profile.image_size.is_none()),
            estimate_mb: Some(m.est_memory_allocation_mb),
        }
    }

    /// The registry's split of `info`'s figure.
    pub fn of(info: &CandleModelInfo) -> Self {
        let profile = &info.default_profile;
        let images = info.capability == model_registry::Capability::ImageEmbedding;
        DeclaredMemory {
            resident_bytes: info.memory.resident_bytes(),
            per_request_bytes: info.memory.per_request_bytes(),
            profile_batch: profile.batch.max(1) as u64,
            profile_seq_len: if images {
                None
            } else {
                profile.seq_len.map(|s| s as u64)
            },
            estimate_mb: Some(info.est_memory_allocation_mb as u64),
        }
    }
}

/// How an embedder is served.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOptions {
    /// The network; detected from `config.json` when `None`.
    pub family: Option<Family>,
    /// Weight and activation dtype; F32 when `None`.
    pub dtype: Option<DType>,
    /// Most tokens per input, special tokens included. `None`: the model's own limit
    /// (`sentence_bert_config.json`, else its config), capped at the run profile's `seq_len`
    /// when it declares memory, because the declared working set was computed for that length.
    pub max_input_tokens: Option<usize>,
    /// Long inputs are truncated or refused.
    pub overflow: Overflow,
    /// L2-normalize embeddings (TEI and the Sentence-Transformers `Normalize` module do).
    pub normalize: bool,
    /// Instruction for query embeddings: the registry's for its models; else the checkpoint's
    /// own (`config_sentence_transformers.json` prompts) when `None`.
    pub query_instruction: Option<String>,
    /// Batching limits.
    pub batch: BatchLimits,
    /// Memory declared to the pool; `None` declares nothing (the pool then relies on the
    /// measurement it records after the load).
    pub memory: Option<DeclaredMemory>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions::new()
    }
}

impl EmbedOptions {
    /// Family detected, F32, the model's own limit, truncating, normalized, default batches,
    /// nothing declared.
    pub fn new() -> Self {
        EmbedOptions {
            family: None,
            dtype: None,
            max_input_tokens: None,
            overflow: Overflow::Truncate,
            normalize: true,
            query_instruction: None,
            batch: BatchLimits::default(),
            memory: None,
        }
    }

    /// A registry embedder's options: family, dtype, query instruction and declared memory
    /// from its static.
    pub fn registry(info: &CandleModelInfo) -> Result<Self, ServeError> {
        let family = info
            .backend
            .and_then(crate::config::embed_family)
            .ok_or_else(|| ServeError::WrongCapability {
                model: info.registry_key.to_owned(),
                capability: info.capability,
                asked: "embed",
            })?;
        Ok(EmbedOptions {
            family: Some(family),
            dtype: crate::config::profile_dtype(info)?,
            normalize: info.serving.normalize.unwrap_or(true),
            query_instruction: info.serving.query_instruction.map(str::to_owned),
            memory: Some(DeclaredMemory::of(info)),
            ..EmbedOptions::new()
        })
    }

    /// Sets the family.
    pub fn family(mut self, family: Family) -> Self {
        self.family = Some(family);
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn minilm_like() -> EmbedOptions {
        EmbedOptions::new().memory(DeclaredMemory {
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

    /// An image embedder: 1 byte resident, 3 per image, batches of up to 8 images.
    pub(crate) fn image_embedder() -> EmbedOptions {
        EmbedOptions::new()
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
            })
    }

    #[test]
    fn image_batches_scale_with_images() {
        assert_eq!(image_embedder().per_batch_bytes(), 24);
    }
}
