//! CLIP (ViT-B/32): text and image embeddings in one space. The towers are
//! candle-transformers' `clip`; the projections are applied here so that the text embedding
//! is taken at each row's end-of-text token by position (candle's own `forward` finds it with an
//! argmax over token ids, which only works for vocabularies whose EOS id is the largest).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;
use candle_transformers::models::clip::text_model::{
    Activation, ClipTextConfig, ClipTextTransformer,
};
use candle_transformers::models::clip::vision_model::{ClipVisionConfig, ClipVisionTransformer};
use serde::Deserialize;

use super::text::TextRules;
use super::{Batch, Net, Parts, last_token};
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
            activation: Activation::QuickGelu,
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
            activation: Activation::QuickGelu,
            intermediate_size: t.intermediate_size,
            max_position_embeddings: t.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            projection_dim: self.projection_dim,
        }
    }
}

/// Both towers and both projections.
pub struct Model {
    text: ClipTextTransformer,
    vision: ClipVisionTransformer,
    text_projection: Linear,
    visual_projection: Linear,
    config: Config,
}

impl Model {
    /// Loads `model.safetensors`; image preprocessing comes from `preprocessor_config.json`
    /// (CLIP's defaults when absent).
    pub fn load(
        dir: &ModelDir,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, ClipPreprocess), BackendError> {
        let config = Config::read(dir)?;
        let vb = var_builder(&dir.safetensors("")?, dtype, device)?;
        let text = ClipTextTransformer::new(vb.pp("text_model"), &config.text())?;
        let vision =
            ClipVisionTransformer::new(vb.pp("vision_model"), &config.vision_config.tower())?;
        let text_projection = candle_nn::linear_no_bias(
            config.text_config.hidden_size,
            config.projection_dim,
            vb.pp("text_projection"),
        )?;
        let visual_projection = candle_nn::linear_no_bias(
            config.vision_config.hidden_size,
            config.projection_dim,
            vb.pp("visual_projection"),
        )?;
        let preprocess = ClipPreprocess::read(dir, config.vision_config.image_size)?;
        Ok((
            Model {
                text,
                vision,
                text_projection,
                visual_projection,
                config,
            },
            preprocess,
        ))
    }

    /// Projected text features at each row's last token (CLIP's end-of-text), `[batch, proj]`.
    /// The text tower is causal, so right padding never reaches a real token.
    pub fn forward_text(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        let hidden = self.text.forward_with_mask(&batch.ids, usize::MAX)?;
        last_token(&hidden, &batch.lens)?.apply(&self.text_projection)
    }

    /// Projected image features, `[batch, proj]`, from normalized pixels `[batch, 3, h, w]`.
    pub fn forward_images(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        self.vision.forward(pixels)?.apply(&self.visual_projection)
    }
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
