//! BERT encoders with mean pooling: all-MiniLM-L6-v2 (Sentence-Transformers: Transformer →
//! Pooling(mean) → Normalize). The network is candle-transformers' `bert`.

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{self, BertModel, HiddenAct, PositionEmbeddingType};
use serde::Deserialize;

use super::{Batch, Net, Parts, defaults, mean_pool, rooted, var_builder};
use crate::error::BackendError;
use crate::model_dir::ModelDir;
use crate::text::TextRules;

/// `config.json` of a BERT checkpoint (the fields the encoder reads).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "gelu")]
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    #[serde(default = "defaults::two")]
    pub type_vocab_size: usize,
    #[serde(default = "defaults::f64_1e_12")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn gelu() -> HiddenAct {
    HiddenAct::Gelu
}

impl Config {
    /// Reads `config.json`.
    pub fn read(dir: &ModelDir) -> Result<Self, BackendError> {
        let c: Config = dir.json("config.json", "the BERT configuration")?;
        if let Some(kind) = c
            .position_embedding_type
            .as_deref()
            .filter(|k| *k != "absolute")
        {
            return Err(BackendError::config(
                dir.root().join("config.json"),
                format!(
                    "position_embedding_type `{kind}` is not supported by the BERT backend (ALiBi models are JinaBERT)"
                ),
            ));
        }
        Ok(c)
    }

    /// The architecture values the memory estimator reads.
    pub fn spec_architecture(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("hidden_size", self.hidden_size as u64),
            ("num_hidden_layers", self.num_hidden_layers as u64),
            ("num_attention_heads", self.num_attention_heads as u64),
            ("intermediate_size", self.intermediate_size as u64),
            ("vocab_size", self.vocab_size as u64),
            (
                "max_position_embeddings",
                self.max_position_embeddings as u64,
            ),
            ("type_vocab_size", self.type_vocab_size as u64),
        ]
    }

    fn to_candle(&self) -> bert::Config {
        bert::Config {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            hidden_act: self.hidden_act,
            hidden_dropout_prob: 0.0,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
            initializer_range: 0.02,
            layer_norm_eps: self.layer_norm_eps,
            pad_token_id: self.pad_token_id,
            position_embedding_type: PositionEmbeddingType::Absolute,
            use_cache: false,
            classifier_dropout: None,
            model_type: Some("bert".to_owned()),
        }
    }
}

/// A BERT encoder with masked mean pooling.
pub struct Model {
    bert: BertModel,
    config: Config,
}

impl Model {
    /// Loads `model.safetensors` (encoder at the root or under `bert.`).
    pub fn load(dir: &ModelDir, dtype: DType, device: &Device) -> Result<Self, BackendError> {
        let config = Config::read(dir)?;
        let vb = var_builder(&dir.safetensors("")?, dtype, device)?;
        let vb = rooted(vb, "embeddings.word_embeddings.weight", &["bert"]);
        let bert = BertModel::load(vb, &config.to_candle())?;
        Ok(Model { bert, config })
    }

    /// Mean-pooled hidden states, `[batch, hidden]`.
    pub fn forward(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        let token_types = batch.ids.zeros_like()?;
        let hidden = self
            .bert
            .forward(&batch.ids, &token_types, Some(&batch.mask))?;
        mean_pool(&hidden, &batch.pool_mask)
    }

    pub(crate) fn into_parts(self) -> Parts {
        let (limit, dim) = (self.config.max_position_embeddings, self.config.hidden_size);
        Parts::new(Net::Bert(self), limit, dim, TextRules::default())
    }
}
