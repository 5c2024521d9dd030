//! GTE-Qwen2 1.5B instruct: a Qwen2 encoder with bidirectional attention (candle's `qwen2` with
//! an explicit mask, as candle's gte-qwen example runs it), last-token pooling, and the model
//! card's instruction format for queries (`Instruct: …\nQuery: `; documents take none).

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::qwen2;
use serde::Deserialize;

use super::text::TextRules;
use super::{Batch, Net, Parts, defaults, last_token, with_model_prefix};
use model_runtime::safetensors::var_builder;
use model_runtime::{BackendError, ModelDir};

/// `config.json` (Qwen2).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "defaults::f64_1e_6")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default = "defaults::silu")]
    pub hidden_act: candle_nn::Activation,
}

fn rope_theta() -> f64 {
    1_000_000.0
}

impl Config {
    /// Reads `config.json`.
    pub fn read(dir: &ModelDir) -> Result<Self, BackendError> {
        dir.json("config.json", "the Qwen2 configuration")
    }

    /// The architecture values the memory estimator reads.
    pub fn spec_architecture(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("hidden_size", self.hidden_size as u64),
            ("num_hidden_layers", self.num_hidden_layers as u64),
            ("num_attention_heads", self.num_attention_heads as u64),
            ("num_key_value_heads", self.num_key_value_heads as u64),
            ("intermediate_size", self.intermediate_size as u64),
            ("vocab_size", self.vocab_size as u64),
        ]
    }

    fn to_candle(&self, limit: usize) -> qwen2::Config {
        let positions = limit.min(self.max_position_embeddings);
        qwen2::Config {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            // RoPE tables for the positions an input can reach, not 131072 of them.
            max_position_embeddings: positions,
            sliding_window: self.sliding_window.unwrap_or(self.max_position_embeddings),
            max_window_layers: self.max_window_layers.unwrap_or(self.num_hidden_layers),
            tie_word_embeddings: self.tie_word_embeddings,
            rope_theta: self.rope_theta,
            rms_norm_eps: self.rms_norm_eps,
            use_sliding_window: self.use_sliding_window,
            hidden_act: self.hidden_act,
        }
    }
}

/// GTE-Qwen2: encoder and last-token pooling.
pub struct Model {
    encoder: qwen2::Model,
    dim: usize,
}

impl Model {
    /// Loads the encoder (the `lm_head` a checkpoint may carry is never read).
    pub fn load(
        dir: &ModelDir,
        limit: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, BackendError> {
        let config = Config::read(dir)?;
        let vb = with_model_prefix(
            var_builder(&dir.safetensors("")?, dtype, device)?,
            "embed_tokens.weight",
        );
        let encoder = qwen2::Model::new(&config.to_candle(limit), vb)?;
        Ok(Model {
            encoder,
            dim: config.hidden_size,
        })
    }

    /// The hidden state of each row's last real token, `[batch, hidden]`.
    pub fn forward(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        // A fresh clone per call: `forward` fills a KV cache that an embedder must not keep
        // (the next batch would attend to this one's keys), and clones share the weights.
        let mut encoder = self.encoder.clone();
        let hidden = encoder.forward(&batch.ids, 0, Some(&batch.mask))?;
        last_token(&hidden, &batch.lens)?.to_dtype(DType::F32)
    }

    pub(crate) fn into_parts(self) -> Parts {
        let dim = self.dim;
        Parts::new(Net::GteQwen2(self), usize::MAX, dim, TextRules::default())
    }
}
