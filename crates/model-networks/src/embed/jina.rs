//! Jina embeddings v2 (JinaBERT: ALiBi attention, GEGLU feed-forward) with mean pooling.
//!
//! Two networks read the same weights, as for BERT ([`Backend`]):
//! - [`Backend::Kernels`] (f32 on the CPU, the default there): the forward pass of
//!   [`encoder_kernels::bert::Encoder`] with ALiBi computed in place and GEGLU fused into one
//!   pass, over the rows of a batch laid end to end without padding.
//! - [`Backend::Candle`]: candle-transformers' `jina_bert`, for other dtypes and for GPUs. Its
//!   forward pass takes no attention mask, so a padded row would attend to its padding: batches
//!   are split into groups of equal length and run without padding.
//!
//! Either way a text's embedding never depends on its batch-mates.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_transformers::models::jina_bert::{self, BertModel, PositionEmbeddingType};
use encoder_kernels::Activation;
use encoder_kernels::bert::{Encoder, mean_rows};
use serde::Deserialize;

use super::bert::{Backend, Network, Sizes, Variant, load_kernels};
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

/// The kernels' activation for a JinaBERT `hidden_act`: exact GELU only, the one candle's
/// `jina_bert` applies whatever the configuration says.
fn kernel_activation(act: candle_nn::Activation) -> Option<Activation> {
    (act == candle_nn::Activation::Gelu).then_some(Activation::GeluErf)
}

/// JinaBERT with mean pooling over unpadded rows.
pub struct Model {
    network: Network<Encoder, BertModel>,
    dim: usize,
}

impl Model {
    /// Loads `model.safetensors` (converted to `dtype`) for the best backend, for inputs of up
    /// to `limit` tokens.
    pub fn load(
        dir: &ModelDir,
        limit: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, BackendError> {
        let kernels_can = kernel_activation(Config::read(dir)?.hidden_act).is_some();
        let backend = Backend::best(kernels_can, dtype, device);
        Self::load_with(dir, limit, dtype, device, backend)
    }

    /// Loads the checkpoint for `backend`. candle materialises the ALiBi bias for every
    /// position up front (`heads × n² × 4` bytes: 3 GiB at Jina's 8192), so it is built for
    /// `limit` positions only; the kernels compute it as they go.
    pub fn load_with(
        dir: &ModelDir,
        limit: usize,
        dtype: DType,
        device: &Device,
        backend: Backend,
    ) -> Result<Self, BackendError> {
        let Config {
            sizes: c,
            hidden_act,
            ..
        } = Config::read(dir)?;
        let vb = var_builder(&dir.safetensors("")?, dtype, device)?;
        let vb = rooted(vb, "embeddings.word_embeddings.weight", &["bert"]);
        if backend == Backend::Kernels {
            let act = kernel_activation(hidden_act).ok_or_else(|| {
                BackendError::config(
                    dir.root().join("config.json"),
                    format!(
                        "hidden_act {hidden_act:?}: the JinaBERT CPU kernels run exact GELU (`gelu`) only; load with the candle backend"
                    ),
                )
            })?;
            let mut sizes = c.clone();
            sizes.max_position_embeddings = limit.min(c.max_position_embeddings);
            let encoder = load_kernels(dir, &vb, &sizes, act, Variant::Jina)?;
            return Ok(Model {
                network: Network::Kernels(encoder),
                dim: c.hidden_size,
            });
        }
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
        let bert = BertModel::new(vb, &config)?;
        Ok(Model {
            network: Network::Candle(bert),
            dim: c.hidden_size,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.network.backend()
    }

    /// Mean-pooled embeddings of `batch`, in its order.
    pub fn forward_unpadded(
        &self,
        batch: &[&Encoded],
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let bert = match &self.network {
            Network::Candle(bert) => bert,
            Network::Kernels(encoder) => {
                let rows: Vec<&[u32]> = batch.iter().map(|e| e.ids.as_slice()).collect();
                let hidden = encoder.forward(&rows);
                let (h, mut start) = (encoder.hidden, 0);
                let mut pooled = Vec::with_capacity(rows.len() * h);
                for row in &rows {
                    mean_rows(&hidden, h, start, start + row.len(), &mut pooled);
                    start += row.len();
                }
                return Tensor::from_vec(pooled, (rows.len(), h), device);
            }
        };
        // candle: rows grouped by length, each group one unpadded forward pass.
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
            let hidden = bert.forward(&ids)?.to_dtype(DType::F32)?;
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
