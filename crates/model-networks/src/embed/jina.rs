//! Jina embeddings v2 (JinaBERT: ALiBi attention, GEGLU feed-forward) with mean pooling. The
//! network is candle-transformers' `jina_bert`, whose forward pass takes no attention mask:
//! a padded row would attend to its padding. Batches are therefore split into groups of equal
//! length and run without padding, so a text's embedding never depends on its batch-mates.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_transformers::models::jina_bert::{self, BertModel, PositionEmbeddingType};
use serde::Deserialize;

use super::bert::Sizes;
use super::text::{Encoded, TextRules};
use super::{Net, Parts, rooted};
use model_runtime::safetensors::var_builder;
use model_runtime::{BackendError, ModelDir};

/// `config.json` of a JinaBERT checkpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    /// The sizes, as BERT's.
    #[serde(flatten)]
    pub sizes: Sizes,
    #[serde(default = "gelu")]
    pub hidden_act: candle_nn::Activation,
    pub position_embedding_type: String,
    #[serde(default)]
    pub feed_forward_type: Option<String>,
}

fn gelu() -> candle_nn::Activation {
    candle_nn::Activation::Gelu
}

impl Config {
    /// Reads `config.json`.
    pub fn read(dir: &ModelDir) -> Result<Self, BackendError> {
        let c: Config = dir.json("config.json", "the JinaBERT configuration")?;
        let path = dir.root().join("config.json");
        if c.position_embedding_type != "alibi" {
            return Err(BackendError::config(
                path,
                "JinaBERT needs position_embedding_type `alibi`",
            ));
        }
        if let Some(ff) = c.feed_forward_type.as_deref().filter(|f| *f != "geglu") {
            return Err(BackendError::config(
                path,
                format!("feed_forward_type `{ff}` is not supported (candle's jina_bert is GEGLU)"),
            ));
        }
        Ok(c)
    }

    /// The architecture values the memory estimator reads.
    pub fn spec_architecture(&self) -> Vec<(&'static str, u64)> {
        self.sizes.spec_architecture()
    }
}

/// JinaBERT with mean pooling over unpadded rows.
pub struct Model {
    bert: BertModel,
    dim: usize,
}

impl Model {
    /// Loads `model.safetensors` (converted to `dtype`). candle materialises the ALiBi bias for
    /// every position up front (`heads × n² × 4` bytes: 3 GiB at Jina's 8192), so it is built
    /// for `limit` positions only.
    pub fn load(
        dir: &ModelDir,
        limit: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, BackendError> {
        let Config {
            sizes: c,
            hidden_act,
            ..
        } = Config::read(dir)?;
        let config = jina_bert::Config::new(
            c.vocab_size,
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.intermediate_size,
            hidden_act,
            limit.min(c.max_position_embeddings),
            c.type_vocab_size,
            0.02,
            c.layer_norm_eps,
            c.pad_token_id,
            PositionEmbeddingType::Alibi,
        );
        let vb = var_builder(&dir.safetensors("")?, dtype, device)?;
        let vb = rooted(vb, "embeddings.word_embeddings.weight", &["bert"]);
        let bert = BertModel::new(vb, &config)?;
        Ok(Model {
            bert,
            dim: c.hidden_size,
        })
    }

    /// Mean-pooled embeddings of `batch`, in its order: rows are grouped by length and each
    /// group runs as one unpadded forward pass.
    pub fn forward_unpadded(
        &self,
        batch: &[&Encoded],
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, e) in batch.iter().enumerate() {
            by_len.entry(e.len()).or_default().push(i);
        }
        let mut rows: Vec<Option<Tensor>> = vec![None; batch.len()];
        for (len, members) in by_len {
            let ids: Vec<u32> = members
                .iter()
                .flat_map(|&i| batch[i].ids.iter().copied())
                .collect();
            let ids = Tensor::from_vec(ids, (members.len(), len), device)?;
            let hidden = self.bert.forward(&ids)?.to_dtype(DType::F32)?;
            let pooled = hidden.mean(1)?;
            for (k, &i) in members.iter().enumerate() {
                rows[i] = Some(pooled.get(k)?);
            }
        }
        let rows: Vec<Tensor> = rows
            .into_iter()
            .map(|r| r.expect("every row belongs to one length group"))
            .collect();
        Tensor::stack(&rows, 0)
    }

    pub(crate) fn into_parts(self) -> Parts {
        let dim = self.dim;
        Parts::new(Net::JinaBert(self), usize::MAX, dim, TextRules::default())
    }
}
