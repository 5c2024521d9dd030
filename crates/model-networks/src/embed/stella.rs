//! Stella v5 1.5B: a bidirectional Qwen2 encoder, masked mean pooling and the
//! Sentence-Transformers Dense head (`2_Dense_1024`: 1536 → 1024).
//!
//! Two networks read the same weights, as for BERT ([`Backend`]):
//! - [`Backend::Kernels`] (f32 on the CPU, the default there): [`encoder_kernels::qwen2`], the
//!   rows of a batch end to end without padding, mean-pooled as they are.
//! - [`Backend::Candle`]: candle-transformers' `stella_en_v5` (its 1.5B variant), configured
//!   from the checkpoint's own Qwen2 `config.json` rather than from the constants candle
//!   ships, for other dtypes and for GPUs.
//!
//! The Dense head runs in candle, in f32, on the pooled vectors.

use candle_core::{DType, Device, Tensor};
use candle_nn::Linear;
use candle_transformers::models::stella_en_v5::{self, EmbedHead, ModelVariant};
use serde::Deserialize;

use super::bert::{Backend, Network};
use super::text::TextRules;
use super::{Batch, Net, Parts, defaults, mean_pool, mean_pool_rows, with_model_prefix};
use model_runtime::safetensors::var_builder;
use model_runtime::{BackendError, ModelDir};

/// `config.json` (Qwen2).
pub use super::qwen2::Qwen2Config as Config;

/// `config.json` of a Sentence-Transformers Dense module.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DenseConfig {
    pub in_features: usize,
    pub out_features: usize,
    #[serde(default = "defaults::yes")]
    pub bias: bool,
    #[serde(default)]
    pub activation_function: Option<String>,
}

/// Folder of the Dense head: the one `modules.json` names, else `2_Dense_1024`.
pub fn dense_dir(dir: &ModelDir) -> Result<String, BackendError> {
    Ok(dir
        .st_module_path("Dense")?
        .unwrap_or_else(|| "2_Dense_1024".to_owned()))
}

/// Reads the Dense head's `config.json`.
pub fn read_dense(dir: &ModelDir) -> Result<(String, DenseConfig), BackendError> {
    let path = dense_dir(dir)?;
    let config: DenseConfig = dir.json(
        &format!("{path}/config.json"),
        "the Dense head configuration",
    )?;
    match config.activation_function.as_deref() {
        None | Some("torch.nn.modules.linear.Identity") => Ok((path, config)),
        Some(other) => Err(BackendError::config(
            dir.root().join(&path).join("config.json"),
            format!("Dense activation `{other}` is not supported (Stella's heads use Identity)"),
        )),
    }
}

/// Stella: encoder, mean pooling, Dense head.
pub struct Model {
    network: Network<Box<encoder_kernels::qwen2::Encoder>, stella_en_v5::Model>,
    head: Linear,
    dim: usize,
}

impl Model {
    /// Loads the encoder for the best backend, for inputs of up to `limit` tokens.
    pub fn load(
        dir: &ModelDir,
        limit: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, BackendError> {
        let kernels_can = Config::read(dir)?.kernels_can();
        Self::load_with(
            dir,
            limit,
            dtype,
            device,
            Backend::best(kernels_can, dtype, device),
        )
    }

    /// Loads the encoder from `model.safetensors` for `backend`, and the head from its Dense
    /// folder. RoPE tables are built for `limit` positions only (inputs are cut there), not
    /// the config's 131072, which would take 64 MiB for nothing.
    pub fn load_with(
        dir: &ModelDir,
        limit: usize,
        dtype: DType,
        device: &Device,
        backend: Backend,
    ) -> Result<Self, BackendError> {
        let config = Config::read(dir)?;
        let (dense_path, dense) = read_dense(dir)?;
        if dense.in_features != config.hidden_size {
            return Err(BackendError::config(
                dir.root().join(&dense_path).join("config.json"),
                format!(
                    "in_features {} differs from the encoder's hidden_size {}",
                    dense.in_features, config.hidden_size
                ),
            ));
        }
        let vb = with_model_prefix(
            var_builder(&dir.safetensors("")?, dtype, device)?,
            "embed_tokens.weight",
        );
        let positions = limit.min(config.max_position_embeddings);
        let network = match backend {
            Backend::Kernels => Network::Kernels(Box::new(super::qwen2::kernel_body(
                dir,
                config.body(),
                &vb,
                positions,
            )?)),
            Backend::Candle => {
                let candle_config = stella_en_v5::Config {
                    variant: ModelVariant::Large,
                    vocab_size: config.vocab_size,
                    hidden_size: config.hidden_size,
                    intermediate_size: config.intermediate_size,
                    num_hidden_layers: config.num_hidden_layers,
                    num_attention_heads: config.num_attention_heads,
                    max_position_embeddings: positions,
                    rope_theta: config.rope_theta,
                    embed_head: EmbedHead {
                        in_features: dense.in_features,
                        out_features: dense.out_features,
                    },
                    norm_eps: config.rms_norm_eps,
                    activation_fn: config.hidden_act,
                    num_key_value_heads: config.num_key_value_heads,
                    ..Default::default()
                };
                Network::Candle(stella_en_v5::Model::new(&candle_config, vb)?)
            }
        };
        // The head runs in f32 on the pooled vector, as candle's stella does.
        let head_vb = var_builder(&dir.safetensors(&dense_path)?, DType::F32, device)?;
        let head = if dense.bias {
            candle_nn::linear(dense.in_features, dense.out_features, head_vb.pp("linear"))?
        } else {
            candle_nn::linear_no_bias(dense.in_features, dense.out_features, head_vb.pp("linear"))?
        };
        Ok(Model {
            network,
            head,
            dim: dense.out_features,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.network.backend()
    }

    /// Dense projection of the mean-pooled hidden states, `[batch, out_features]`.
    pub fn forward(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        let pooled = match &self.network {
            Network::Kernels(encoder) => {
                let (tokens, _) = super::qwen2::kernel_tokens(encoder, batch)?;
                mean_pool_rows(&tokens, encoder.hidden, batch, batch.ids.device())?
            }
            Network::Candle(encoder) => {
                // `forward` takes `&mut self` but keeps no state between calls (no KV cache);
                // a clone shares the weights and lets concurrent batches run without a lock.
                let mut encoder = encoder.clone();
                mean_pool(&encoder.forward(&batch.ids, &batch.mask)?, &batch.pool_mask)?
            }
        };
        pooled.apply(&self.head)
    }

    pub(crate) fn into_parts(self) -> Parts {
        let dim = self.dim;
        Parts::new(Net::Stella(self), usize::MAX, dim, TextRules::default())
    }
}
