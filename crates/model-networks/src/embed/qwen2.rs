//! The Qwen2 `config.json` fields both Qwen2 encoders read, [`super::stella`] and
//! [`super::gte_qwen2`]: the sizes, RoPE, norm and activation of the network.

use serde::Deserialize;

use super::defaults;
use model_runtime::{BackendError, ModelDir};

/// A Qwen2 `config.json` (the fields both encoders read; GTE-Qwen2 adds its sliding-window
/// ones).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Qwen2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Positions the model was trained for.
    pub max_position_embeddings: usize,
    /// RoPE base (1 000 000 when absent).
    #[serde(default = "rope_theta")]
    pub rope_theta: f64,
    /// RMS norm epsilon.
    #[serde(default = "defaults::f64_1e_6")]
    pub rms_norm_eps: f64,
    /// Feed-forward activation.
    #[serde(default = "defaults::silu")]
    pub hidden_act: candle_nn::Activation,
}

fn rope_theta() -> f64 {
    1_000_000.0
}

impl Qwen2Config {
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
            // candle's Qwen2 has no separate head size: it is hidden / heads.
            (
                "head_dim",
                (self.hidden_size / self.num_attention_heads.max(1)) as u64,
            ),
            ("intermediate_size", self.intermediate_size as u64),
            ("vocab_size", self.vocab_size as u64),
        ]
    }
}
