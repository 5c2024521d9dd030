//! CLIP (ViT-B/32): text and image embeddings in one space.
//!
//! Two networks read the same weights, as for BERT ([`Backend`]):
//! - [`Backend::Kernels`] (f32 on the CPU, the default there): the towers of
//!   [`encoder_kernels::clip`], the text rows of a batch end to end without padding.
//! - [`Backend::Candle`]: candle-transformers' `clip` towers, for other dtypes and for GPUs.
//!
//! Either way the projections are applied here, so that the text embedding is taken at each
//! row's end-of-text token by position (candle's own `forward` finds it with an argmax over
//! token ids, which only works for vocabularies whose EOS id is the largest).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{ClipTextConfig, ClipTextTransformer};
use candle_transformers::models::clip::vision_model::{ClipVisionConfig, ClipVisionTransformer};
use encoder_kernels::Activation;
use encoder_kernels::clip::{Layer, Layers, TextTower, VisionTower};
use serde::Deserialize;

use super::bert::{Backend, Network};
use super::text::TextRules;
use super::{Batch, Net, Parts, kernel_weights, last_token};
use crate::image::ClipPreprocess;
use model_runtime::safetensors::var_builder;
use model_runtime::{BackendError, ModelDir};

/// `config.json` of a CLIP checkpoint (defaults are Transformers' `CLIPConfig` defaults, which
/// are ViT-B/32's).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub text_config: TextConfig,
    #[serde(default)]
    pub vision_config: VisionConfig,
    #[serde(default = "projection_dim")]
    pub projection_dim: usize,
}

/// `text_config`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".to_owned(),
        }
    }
}

/// `vision_config` (Transformers' `CLIPVisionConfig`; LLaVA's vision tower reads the same).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Colour channels of the input.
    pub num_channels: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// The tower's own projection width (the tower does not use it: CLIP projects with the
    /// top-level `projection_dim`, LLaVA with its projector).
    pub projection_dim: usize,
    /// Activation; CLIP uses `quick_gelu`.
    pub hidden_act: String,
}

impl Default for VisionConfig {
    fn default() -> Self {
        VisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            projection_dim: 512,
            hidden_act: "quick_gelu".to_owned(),
        }
    }
}

impl VisionConfig {
    /// candle's configuration of the tower.
    pub fn tower(&self) -> ClipVisionConfig {
        ClipVisionConfig {
            embed_dim: self.hidden_size,
            activation: candle_transformers::models::clip::text_model::Activation::QuickGelu,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            projection_dim: self.projection_dim,
            num_channels: self.num_channels,
            image_size: self.image_size,
            patch_size: self.patch_size,
        }
    }

    /// The architecture values the memory estimator reads of the tower, `vision_*`.
    pub fn spec_architecture(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("vision_hidden_size", self.hidden_size as u64),
            ("vision_num_hidden_layers", self.num_hidden_layers as u64),
            (
                "vision_num_attention_heads",
                self.num_attention_heads as u64,
            ),
            ("vision_intermediate_size", self.intermediate_size as u64),
            ("vision_image_size", self.image_size as u64),
            ("vision_patch_size", self.patch_size as u64),
        ]
    }
}

fn projection_dim() -> usize {
    512
}

impl Config {
    /// Reads `config.json`.
    pub fn read(dir: &ModelDir) -> Result<Self, BackendError> {
        let c: Config = dir.json("config.json", "the CLIP configuration")?;
        for act in [&c.text_config.hidden_act, &c.vision_config.hidden_act] {
            if act != "quick_gelu" {
                return Err(BackendError::config(
                    dir.root().join("config.json"),
                    format!(
                        "hidden_act `{act}` is not supported (candle's CLIP towers use quick_gelu)"
                    ),
                ));
            }
        }
        Ok(c)
    }

    /// The architecture values the memory estimator reads.
    pub fn spec_architecture(&self) -> Vec<(&'static str, u64)> {
        let t = &self.text_config;
        let mut values = vec![
            ("projection_dim", self.projection_dim as u64),
            ("text_hidden_size", t.hidden_size as u64),
            ("text_num_hidden_layers", t.num_hidden_layers as u64),
            ("text_num_attention_heads", t.num_attention_heads as u64),
            ("text_intermediate_size", t.intermediate_size as u64),
            ("text_vocab_size", t.vocab_size as u64),
            (
                "text_max_position_embeddings",
                t.max_position_embeddings as u64,
            ),
        ];
        values.extend(self.vision_config.spec_architecture());
        values
    }

    fn text(&self) -> ClipTextConfig {
        let t = &self.text_config;
        ClipTextConfig {
            vocab_size: t.vocab_size,
            embed_dim: t.hidden_size,
            activation: candle_transformers::models::clip::text_model::Activation::QuickGelu,
            intermediate_size: t.intermediate_size,
            max_position_embeddings: t.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            projection_dim: self.projection_dim,
        }
    }
}

/// candle-transformers' towers and the projections.
struct CandleTowers {
    text: ClipTextTransformer,
    vision: ClipVisionTransformer,
    text_projection: Linear,
    visual_projection: Linear,
}

/// The kernels' towers and the projections.
struct KernelTowers {
    text: TextTower,
    vision: VisionTower,
    text_projection: encoder_kernels::Linear,
    visual_projection: encoder_kernels::Linear,
}

/// Both towers and both projections.
pub struct Model {
    network: Network<Box<KernelTowers>, Box<CandleTowers>>,
    config: Config,
    device: Device,
}

impl Model {
    /// Loads `model.safetensors` for the best backend; image preprocessing comes from
    /// `preprocessor_config.json` (CLIP's defaults when absent).
    pub fn load(
        dir: &ModelDir,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, ClipPreprocess), BackendError> {
        Self::load_with(dir, dtype, device, Backend::best(true, dtype, device))
    }

    /// Loads the checkpoint for `backend`.
    pub fn load_with(
        dir: &ModelDir,
        dtype: DType,
        device: &Device,
        backend: Backend,
    ) -> Result<(Self, ClipPreprocess), BackendError> {
        let config = Config::read(dir)?;
        let vb = var_builder(&dir.safetensors("")?, dtype, device)?;
        let (t, v) = (&config.text_config, &config.vision_config);
        let network = match backend {
            Backend::Kernels => {
                kernel_weights::check_f32_cpu(dir, &vb)?;
                let towers = kernel_towers(&vb, &config)
                    .map_err(|e| kernel_weights::weights_error(dir, e))?;
                Network::Kernels(Box::new(towers))
            }
            Backend::Candle => Network::Candle(Box::new(CandleTowers {
                text: ClipTextTransformer::new(vb.pp("text_model"), &config.text())?,
                vision: ClipVisionTransformer::new(vb.pp("vision_model"), &v.tower())?,
                text_projection: candle_nn::linear_no_bias(
                    t.hidden_size,
                    config.projection_dim,
                    vb.pp("text_projection"),
                )?,
                visual_projection: candle_nn::linear_no_bias(
                    v.hidden_size,
                    config.projection_dim,
                    vb.pp("visual_projection"),
                )?,
            })),
        };
        let preprocess = ClipPreprocess::read(dir, v.image_size)?;
        let device = device.clone();
        Ok((
            Model {
                network,
                config,
                device,
            },
            preprocess,
        ))
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.network.backend()
    }

    /// Projected text features at each row's last token (CLIP's end-of-text), `[batch, proj]`.
    /// The text tower is causal, so right padding never reaches a real token.
    pub fn forward_text(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        match &self.network {
            Network::Candle(m) => {
                let hidden = m.text.forward_with_mask(&batch.ids, usize::MAX)?;
                last_token(&hidden, &batch.lens)?.apply(&m.text_projection)
            }
            Network::Kernels(m) => {
                let ids = batch.unpadded_ids()?;
                let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
                let last = m.text.forward_last(&rows);
                self.project(&m.text_projection, &last, rows.len())
            }
        }
    }

    /// Projected image features, `[batch, proj]`, from normalized pixels `[batch, 3, h, w]`.
    pub fn forward_images(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        match &self.network {
            Network::Candle(m) => m.vision.forward(pixels)?.apply(&m.visual_projection),
            Network::Kernels(m) => {
                let images = pixels.dim(0)?;
                let pixels = pixels
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let class = m.vision.forward(&pixels);
                self.project(&m.visual_projection, &class, images)
            }
        }
    }

    /// `rows` rows of `x` through a projection, as a `[rows, projection_dim]` tensor.
    fn project(
        &self,
        projection: &encoder_kernels::Linear,
        x: &[f32],
        rows: usize,
    ) -> candle_core::Result<Tensor> {
        let mut out = vec![0f32; rows * projection.outputs()];
        projection.matmul(x, rows, &mut out);
        Tensor::from_vec(out, (rows, projection.outputs()), &self.device)
    }
}

/// The weights of `vb` laid out for [`encoder_kernels::clip`].
fn kernel_towers(vb: &VarBuilder<'static>, config: &Config) -> candle_core::Result<KernelTowers> {
    let (t, v) = (&config.text_config, &config.vision_config);
    for (tower, hidden, heads) in [
        ("text", t.hidden_size, t.num_attention_heads),
        ("vision", v.hidden_size, v.num_attention_heads),
    ] {
        if heads == 0 || !hidden.is_multiple_of(heads) {
            candle_core::bail!(
                "{tower} hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
            );
        }
    }
    let tv = vb.pp("text_model");
    let vv = vb.pp("vision_model");
    let (p, side, c) = (v.patch_size, v.image_size, v.num_channels);
    let patches = (side / p) * (side / p);
    let patch = kernel_weights::read(
        &vv,
        &[v.hidden_size, c, p, p],
        "embeddings.patch_embedding.weight",
    )?;
    Ok(KernelTowers {
        text: TextTower {
            tokens: kernel_weights::read(
                &tv,
                &[t.vocab_size, t.hidden_size],
                "embeddings.token_embedding.weight",
            )?,
            positions: kernel_weights::read(
                &tv,
                &[t.max_position_embeddings, t.hidden_size],
                "embeddings.position_embedding.weight",
            )?,
            layers: tower_layers(
                &tv.pp("encoder"),
                t.hidden_size,
                t.num_attention_heads,
                t.intermediate_size,
                t.num_hidden_layers,
            )?,
            final_norm: kernel_weights::layer_norm(&tv.pp("final_layer_norm"), t.hidden_size, EPS)?,
        },
        vision: VisionTower {
            patch: encoder_kernels::Linear::new(&patch, None, v.hidden_size, c * p * p),
            patch_size: p,
            image_size: side,
            channels: c,
            class: kernel_weights::read(&vv, &[v.hidden_size], "embeddings.class_embedding")?,
            positions: kernel_weights::read(
                &vv,
                &[1 + patches, v.hidden_size],
                "embeddings.position_embedding.weight",
            )?,
            pre_norm: kernel_weights::layer_norm(&vv.pp("pre_layrnorm"), v.hidden_size, EPS)?,
            layers: tower_layers(
                &vv.pp("encoder"),
                v.hidden_size,
                v.num_attention_heads,
                v.intermediate_size,
                v.num_hidden_layers,
            )?,
            post_norm: kernel_weights::layer_norm(&vv.pp("post_layernorm"), v.hidden_size, EPS)?,
        },
        text_projection: kernel_weights::linear(
            &vb.pp("text_projection"),
            config.projection_dim,
            t.hidden_size,
            false,
        )?,
        visual_projection: kernel_weights::linear(
            &vb.pp("visual_projection"),
            config.projection_dim,
            v.hidden_size,
            false,
        )?,
    })
}

/// CLIP's layer-norm epsilon (Transformers' `layer_norm_eps` default, which candle fixes).
const EPS: f64 = 1e-5;

/// `encoder.layers.*` of a tower.
fn tower_layers(
    vb: &VarBuilder<'static>,
    hidden: usize,
    heads: usize,
    inter: usize,
    count: usize,
) -> candle_core::Result<Layers> {
    let layers = (0..count)
        .map(|i| {
            let l = vb.pp(format!("layers.{i}"));
            let a = l.pp("self_attn");
            Ok(Layer {
                norm1: kernel_weights::layer_norm(&l.pp("layer_norm1"), hidden, EPS)?,
                qkv: kernel_weights::qkv(
                    &a.pp("q_proj"),
                    &a.pp("k_proj"),
                    &a.pp("v_proj"),
                    hidden,
                )?,
                out: kernel_weights::linear(&a.pp("out_proj"), hidden, hidden, true)?,
                norm2: kernel_weights::layer_norm(&l.pp("layer_norm2"), hidden, EPS)?,
                fc1: kernel_weights::linear(&l.pp("mlp").pp("fc1"), inter, hidden, true)?,
                fc2: kernel_weights::linear(&l.pp("mlp").pp("fc2"), hidden, inter, true)?,
            })
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Layers {
        hidden,
        heads,
        activation: Activation::QuickGelu,
        layers,
    })
}

/// Loading result as the family dispatcher wants it.
pub(crate) fn parts(model: Model, preprocess: ClipPreprocess) -> Parts {
    let (limit, dim) = (
        model.config.text_config.max_position_embeddings,
        model.config.projection_dim,
    );
    let mut parts = Parts::new(Net::Clip(model), limit, dim, TextRules::default());
    parts.preprocess = Some(preprocess);
    parts
}
