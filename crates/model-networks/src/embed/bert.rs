//! BERT encoders with mean pooling: all-MiniLM-L6-v2 (Sentence-Transformers: Transformer →
//! Pooling(mean) → Normalize).
//!
//! Two networks read the same weights through the same [`var_builder`]:
//! - [`Backend::Kernels`] (f32 on the CPU, the default there): the forward pass of
//!   [`encoder_kernels::bert::Encoder`], which lays the rows of a batch end to end without
//!   padding, runs each linear layer as one gemm over weights transposed (and Q/K/V fused) at
//!   load, and fuses bias, activation, residual and layer norm into single vectorised passes.
//!   Several times faster than candle's generic path on a CPU; the reasons are measured in
//!   `docs/encoder-speed.md`.
//! - [`Backend::Candle`]: candle-transformers' `bert`, for other dtypes and for GPUs.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{self, BertModel, HiddenAct, PositionEmbeddingType};
use encoder_kernels::Activation;
use encoder_kernels::bert::{Embeddings, Encoder, Layer, Positions};
use serde::Deserialize;

use super::text::TextRules;
use super::{Batch, Net, Parts, defaults, kernel_weights, mean_pool, mean_pool_rows, rooted};
use model_runtime::safetensors::var_builder;
use model_runtime::{BackendError, ModelDir};

/// `config.json` of a BERT checkpoint (the fields the encoder reads).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    /// The sizes.
    #[serde(flatten)]
    pub sizes: Sizes,
    #[serde(default = "gelu")]
    pub hidden_act: HiddenAct,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

/// The sizes a BERT `config.json` gives (JinaBERT's config shares them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Sizes {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Positions (the longest input).
    pub max_position_embeddings: usize,
    /// Token types (2 when absent).
    #[serde(default = "defaults::two")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "defaults::f64_1e_12")]
    pub layer_norm_eps: f64,
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: usize,
}

impl Sizes {
    /// The architecture values the memory estimator reads.
    pub fn spec_architecture(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("hidden_size", self.hidden_size as u64),
            ("num_hidden_layers", self.num_hidden_layers as u64),
            ("num_attention_heads", self.num_attention_heads as u64),
            (
                "head_dim",
                (self.hidden_size / self.num_attention_heads.max(1)) as u64,
            ),
            ("intermediate_size", self.intermediate_size as u64),
            ("vocab_size", self.vocab_size as u64),
            (
                "max_position_embeddings",
                self.max_position_embeddings as u64,
            ),
            ("type_vocab_size", self.type_vocab_size as u64),
        ]
    }
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
        self.sizes.spec_architecture()
    }

    fn to_candle(&self) -> bert::Config {
        let s = &self.sizes;
        bert::Config {
            vocab_size: s.vocab_size,
            hidden_size: s.hidden_size,
            num_hidden_layers: s.num_hidden_layers,
            num_attention_heads: s.num_attention_heads,
            intermediate_size: s.intermediate_size,
            hidden_act: self.hidden_act,
            hidden_dropout_prob: 0.0,
            max_position_embeddings: s.max_position_embeddings,
            type_vocab_size: s.type_vocab_size,
            initializer_range: 0.02,
            layer_norm_eps: s.layer_norm_eps,
            pad_token_id: s.pad_token_id,
            position_embedding_type: PositionEmbeddingType::Absolute,
            use_cache: false,
            classifier_dropout: None,
            model_type: Some("bert".to_owned()),
        }
    }
}

/// Which network runs a BERT checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The workspace's CPU kernels ([`encoder_kernels`]): f32 on the CPU only.
    Kernels,
    /// candle-transformers' `bert`: any dtype, any device.
    Candle,
}

impl Backend {
    /// The faster backend that can run `dtype` on `device`, for a network whose layers the
    /// kernels have (`kernels_can`: say, its activation is one of theirs).
    pub fn best(kernels_can: bool, dtype: DType, device: &Device) -> Backend {
        if kernels_can && device.is_cpu() && dtype == DType::F32 {
            Backend::Kernels
        } else {
            Backend::Candle
        }
    }
}

fn activation(act: HiddenAct) -> Activation {
    match act {
        HiddenAct::Gelu => Activation::GeluErf,
        HiddenAct::GeluApproximate => Activation::GeluTanh,
        HiddenAct::Relu => Activation::Relu,
    }
}

/// The network of a model on one [`Backend`]: the kernels' `K` or candle's `C`.
pub(crate) enum Network<K, C> {
    Kernels(K),
    Candle(C),
}

impl<K, C> Network<K, C> {
    /// The backend this network runs on.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Network::Kernels(_) => Backend::Kernels,
            Network::Candle(_) => Backend::Candle,
        }
    }
}

/// A BERT encoder with masked mean pooling.
pub struct Model {
    network: Network<Encoder, BertModel>,
    config: Config,
    device: Device,
}

impl Model {
    /// Loads `model.safetensors` (encoder at the root or under `bert.`) for the best backend.
    pub fn load(dir: &ModelDir, dtype: DType, device: &Device) -> Result<Self, BackendError> {
        Self::load_with(dir, dtype, device, Backend::best(true, dtype, device))
    }

    /// Loads the checkpoint for `backend`.
    pub fn load_with(
        dir: &ModelDir,
        dtype: DType,
        device: &Device,
        backend: Backend,
    ) -> Result<Self, BackendError> {
        let config = Config::read(dir)?;
        let vb = var_builder(&dir.safetensors("")?, dtype, device)?;
        let vb = rooted(vb, "embeddings.word_embeddings.weight", &["bert"]);
        let network = match backend {
            Backend::Kernels => Network::Kernels(load_kernels(
                dir,
                &vb,
                &config.sizes,
                activation(config.hidden_act),
                Variant::Bert,
            )?),
            Backend::Candle => Network::Candle(BertModel::load(vb, &config.to_candle())?),
        };
        Ok(Model {
            network,
            config,
            device: device.clone(),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.network.backend()
    }

    /// Mean-pooled hidden states, `[batch, hidden]`.
    pub fn forward(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        match &self.network {
            Network::Candle(bert) => {
                let token_types = batch.ids.zeros_like()?;
                let hidden = bert.forward(&batch.ids, &token_types, Some(&batch.mask))?;
                mean_pool(&hidden, &batch.pool_mask)
            }
            Network::Kernels(encoder) => {
                let ids = batch.unpadded_ids()?;
                let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
                let hidden = encoder.forward(&rows);
                mean_pool_rows(&hidden, encoder.hidden, batch, &self.device)
            }
        }
    }

    pub(crate) fn into_parts(self) -> Parts {
        let sizes = &self.config.sizes;
        let (limit, dim) = (sizes.max_position_embeddings, sizes.hidden_size);
        Parts::new(Net::Bert(self), limit, dim, TextRules::default())
    }
}

/// Which of the two encoders [`kernel_encoder`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// BERT: learned positions, `intermediate`/`output` feed-forward.
    Bert,
    /// JinaBERT: ALiBi, GEGLU `mlp.gated_layers`/`mlp.wo`/`mlp.layernorm`.
    Jina,
}

/// [`kernel_encoder`] for a checkpoint loaded as `vb`, which must hold f32 on the CPU.
pub(crate) fn load_kernels(
    dir: &ModelDir,
    vb: &VarBuilder<'static>,
    sizes: &Sizes,
    act: Activation,
    variant: Variant,
) -> Result<Encoder, BackendError> {
    kernel_weights::check_f32_cpu(dir, vb)?;
    kernel_encoder(vb, sizes, act, variant).map_err(|e| kernel_weights::weights_error(dir, e))
}

/// The weights of `vb` laid out for [`Encoder`]: each tensor is read, rearranged and dropped
/// in turn, so the load holds the weights once plus one tensor.
fn kernel_encoder(
    vb: &VarBuilder<'static>,
    c: &Sizes,
    act: Activation,
    variant: Variant,
) -> candle_core::Result<Encoder> {
    let h = c.hidden_size;
    if c.num_attention_heads == 0 || !h.is_multiple_of(c.num_attention_heads) {
        candle_core::bail!(
            "hidden_size {h} is not a multiple of num_attention_heads {}",
            c.num_attention_heads
        );
    }
    let linear = |vb: VarBuilder<'static>, outputs, inputs, bias| {
        kernel_weights::linear(&vb, outputs, inputs, bias)
    };
    let norm = |vb: VarBuilder<'static>| kernel_weights::layer_norm(&vb, h, c.layer_norm_eps);
    let e = vb.pp("embeddings");
    let mut token_type =
        kernel_weights::read(&e, &[c.type_vocab_size, h], "token_type_embeddings.weight")?;
    token_type.truncate(h);
    let positions = match variant {
        Variant::Bert => Positions::Learned(kernel_weights::read(
            &e,
            &[c.max_position_embeddings, h],
            "position_embeddings.weight",
        )?),
        Variant::Jina => Positions::alibi(c.num_attention_heads, c.max_position_embeddings),
    };
    let embeddings = Embeddings {
        words: kernel_weights::read(&e, &[c.vocab_size, h], "word_embeddings.weight")?,
        positions,
        token_type,
        norm: norm(e.pp("LayerNorm"))?,
    };
    let inter = c.intermediate_size;
    let layers = (0..c.num_hidden_layers)
        .map(|i| {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            let s = a.pp("self");
            let (up, gated, down, ffn_norm) = match variant {
                Variant::Bert => (
                    linear(l.pp("intermediate").pp("dense"), inter, h, true)?,
                    false,
                    linear(l.pp("output").pp("dense"), h, inter, true)?,
                    norm(l.pp("output").pp("LayerNorm"))?,
                ),
                Variant::Jina => (
                    linear(l.pp("mlp").pp("gated_layers"), 2 * inter, h, false)?,
                    true,
                    linear(l.pp("mlp").pp("wo"), h, inter, true)?,
                    norm(l.pp("mlp").pp("layernorm"))?,
                ),
            };
            Ok(Layer {
                qkv: kernel_weights::qkv(&s.pp("query"), &s.pp("key"), &s.pp("value"), h)?,
                attn_out: linear(a.pp("output").pp("dense"), h, h, true)?,
                attn_norm: norm(a.pp("output").pp("LayerNorm"))?,
                up,
                gated,
                down,
                ffn_norm,
            })
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Encoder {
        hidden: h,
        heads: c.num_attention_heads,
        activation: act,
        embeddings,
        layers,
    })
}
