//! GTE-Qwen2 1.5B instruct: a Qwen2 encoder with bidirectional attention, last-token pooling,
//! and the model card's instruction format for queries (`Instruct: …\nQuery: `; documents take
//! none).
//!
//! Two networks read the same weights, as for BERT ([`Backend`]):
//! - [`Backend::Kernels`] (f32 on the CPU, the default there): [`encoder_kernels::qwen2`], the
//!   rows of a batch end to end without padding.
//! - [`Backend::Candle`]: candle's `qwen2` with an explicit mask, as candle's gte-qwen example
//!   runs it, for other dtypes and for GPUs.

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::qwen2;
use serde::Deserialize;

use super::bert::{Backend, Network};
use super::qwen2::Qwen2Config;
use super::text::TextRules;
use super::{Batch, Net, Parts, last_token, with_model_prefix};
use model_runtime::safetensors::var_builder;
use model_runtime::{BackendError, ModelDir};

/// `config.json` (Qwen2, with the sliding-window fields candle's `qwen2` takes).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    /// The fields every Qwen2 encoder reads.
    #[serde(flatten)]
    pub qwen2: Qwen2Config,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub use_sliding_window: bool,
}

impl Config {
    /// Reads `config.json`.
    pub fn read(dir: &ModelDir) -> Result<Self, BackendError> {
        dir.json("config.json", "the Qwen2 configuration")
    }

    /// The architecture values the memory estimator reads.
    pub fn spec_architecture(&self) -> Vec<(&'static str, u64)> {
        self.qwen2.spec_architecture()
    }

    fn to_candle(&self, limit: usize) -> qwen2::Config {
        let q = &self.qwen2;
        let positions = limit.min(q.max_position_embeddings);
        qwen2::Config {
            vocab_size: q.vocab_size,
            hidden_size: q.hidden_size,
            intermediate_size: q.intermediate_size,
            num_hidden_layers: q.num_hidden_layers,
            num_attention_heads: q.num_attention_heads,
            num_key_value_heads: q.num_key_value_heads,
            // RoPE tables for the positions an input can reach, not 131072 of them.
            max_position_embeddings: positions,
            sliding_window: self.sliding_window.unwrap_or(q.max_position_embeddings),
            max_window_layers: self.max_window_layers.unwrap_or(q.num_hidden_layers),
            tie_word_embeddings: self.tie_word_embeddings,
            rope_theta: q.rope_theta,
            rms_norm_eps: q.rms_norm_eps,
            use_sliding_window: self.use_sliding_window,
            hidden_act: q.hidden_act,
        }
    }
}

/// GTE-Qwen2: encoder and last-token pooling.
pub struct Model {
    network: Network<Box<encoder_kernels::qwen2::Encoder>, qwen2::Model>,
    dim: usize,
    device: Device,
}

impl Model {
    /// Loads the encoder for the best backend (the `lm_head` a checkpoint may carry is never
    /// read), for inputs of up to `limit` tokens.
    pub fn load(
        dir: &ModelDir,
        limit: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, BackendError> {
        let kernels_can = Config::read(dir)?.qwen2.kernels_can();
        let backend = Backend::best(kernels_can, dtype, device);
        Self::load_with(dir, limit, dtype, device, backend)
    }

    /// Loads the encoder for `backend`.
    pub fn load_with(
        dir: &ModelDir,
        limit: usize,
        dtype: DType,
        device: &Device,
        backend: Backend,
    ) -> Result<Self, BackendError> {
        let config = Config::read(dir)?;
        let vb = with_model_prefix(
            var_builder(&dir.safetensors("")?, dtype, device)?,
            "embed_tokens.weight",
        );
        let network = match backend {
            Backend::Kernels => {
                let q = &config.qwen2;
                let positions = limit.min(q.max_position_embeddings);
                Network::Kernels(Box::new(super::qwen2::kernel_body(
                    dir,
                    q.body(),
                    &vb.pp("model"),
                    positions,
                )?))
            }
            Backend::Candle => Network::Candle(qwen2::Model::new(&config.to_candle(limit), vb)?),
        };
        Ok(Model {
            network,
            dim: config.qwen2.hidden_size,
            device: device.clone(),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.network.backend()
    }

    /// The hidden state of each row's last real token, `[batch, hidden]`.
    pub fn forward(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        let encoder = match &self.network {
            Network::Candle(encoder) => encoder,
            Network::Kernels(encoder) => {
                let ids = batch.unpadded_ids()?;
                let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
                let last = encoder.forward_last(&rows);
                return Tensor::from_vec(last, (rows.len(), self.dim), &self.device);
            }
        };
        // A fresh clone per call: `forward` fills a KV cache that an embedder must not keep
        // (the next batch would attend to this one's keys), and clones share the weights.
        let mut encoder = encoder.clone();
        let hidden = encoder.forward(&batch.ids, 0, Some(&batch.mask))?;
        last_token(&hidden, &batch.lens)?.to_dtype(DType::F32)
    }

    pub(crate) fn into_parts(self) -> Parts {
        let dim = self.dim;
        Parts::new(Net::GteQwen2(self), usize::MAX, dim, TextRules::default())
    }
}
