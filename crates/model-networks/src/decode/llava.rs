//! LLaVA 1.5 in the llava-hf layout: CLIP ViT-L/14-336 vision tower, a two-layer GELU
//! projector, and a Llama (Vicuna) language model, from `config.json` + safetensors.
//!
//! candle's `llava` module is built for v1.6: its `HFLLaVAConfig` requires 1.6-only fields
//! (`image_grid_pinpoints`, `use_image_newline_parameter`) and its loader reads the 1.6
//! `image_newline` tensor, so a 1.5 checkpoint does not load. This module reads the 1.5
//! config explicitly ([`Config`], with Transformers' defaults for the fields llava-hf omits),
//! builds candle's `ClipVisionTransformer` and `Llama` from it, and does the 1.5 input
//! merging itself: the `<image>` token is replaced by the projected patch features of the
//! image, 576 of them for 336×336.
//!
//! The vision feature layer follows Transformers: `hidden_states[vision_feature_layer]`,
//! where `hidden_states[0]` is the embedding output, so `-2` is the output of the
//! second-to-last encoder layer (candle's `ClipVisionTower` indexes a list without the
//! embeddings and so takes the last layer instead).

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::clip::vision_model::{ClipVisionConfig, ClipVisionTransformer};
use candle_transformers::models::llama::{self, Llama, LlamaEosToks};
use image::DynamicImage;
use serde::Deserialize;

use model_runtime::{BackendError, ModelDir};

use crate::image::ClipPreprocess;

/// `vision_config`: a CLIP vision tower's (Transformers' `CLIPVisionConfig` defaults where
/// omitted).
pub use crate::embed::clip::VisionConfig;

/// `config.json` of a llava-hf 1.5 checkpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    /// Token id of `<image>`.
    #[serde(default = "default_image_token")]
    pub image_token_index: u32,
    /// Projector activation (`gelu`).
    #[serde(default = "default_projector_act")]
    pub projector_hidden_act: String,
    /// Which vision hidden state feeds the projector (`-2`).
    #[serde(default = "default_feature_layer")]
    pub vision_feature_layer: isize,
    /// `default` drops the CLS token; `full` keeps it.
    #[serde(default = "default_select")]
    pub vision_feature_select_strategy: String,
    /// The Llama language model.
    pub text_config: TextConfig,
    /// The CLIP vision tower.
    pub vision_config: VisionConfig,
}

/// `text_config` (Transformers' `LlamaConfig` defaults where llava-hf omits a field).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TextConfig {
    /// Hidden size.
    #[serde(default = "d4096")]
    pub hidden_size: usize,
    /// MLP width.
    #[serde(default = "d11008")]
    pub intermediate_size: usize,
    /// Layers.
    #[serde(default = "d32")]
    pub num_hidden_layers: usize,
    /// Query heads.
    #[serde(default = "d32")]
    pub num_attention_heads: usize,
    /// Key/value heads (= query heads when absent).
    pub num_key_value_heads: Option<usize>,
    /// RMS norm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    /// Positions.
    #[serde(default = "d2048")]
    pub max_position_embeddings: usize,
    /// Vocabulary size (32 064 for llava-hf: the `<image>` and `<pad>` tokens added).
    #[serde(default = "d32000")]
    pub vocab_size: usize,
    /// Beginning-of-sequence token.
    #[serde(default = "one")]
    pub bos_token_id: u32,
    /// End-of-sequence token.
    #[serde(default = "two")]
    pub eos_token_id: u32,
    /// Whether `lm_head` shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_image_token() -> u32 {
    32000
}
fn default_projector_act() -> String {
    "gelu".into()
}
fn default_feature_layer() -> isize {
    -2
}
fn default_select() -> String {
    "default".into()
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f32 {
    10_000.0
}
fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
macro_rules! defaults {
    ($($name:ident = $v:expr),*) => { $(fn $name() -> usize { $v })* };
}
defaults!(
    d32 = 32,
    d2048 = 2048,
    d4096 = 4096,
    d11008 = 11008,
    d32000 = 32000
);

impl Config {
    /// The values the memory estimator reads, under the spec's names.
    pub fn spec_architecture(&self) -> Vec<(&'static str, u64)> {
        let t = &self.text_config;
        let n = |x: usize| x as u64;
        let mut values = vec![
            ("text_hidden_size", n(t.hidden_size)),
            ("text_num_hidden_layers", n(t.num_hidden_layers)),
            ("text_num_attention_heads", n(t.num_attention_heads)),
            (
                "text_num_key_value_heads",
                n(t.num_key_value_heads.unwrap_or(t.num_attention_heads)),
            ),
            ("text_intermediate_size", n(t.intermediate_size)),
            ("text_vocab_size", n(t.vocab_size)),
            ("text_max_position_embeddings", n(t.max_position_embeddings)),
            ("image_token_index", u64::from(self.image_token_index)),
        ];
        values.extend(self.vision_config.spec_architecture());
        values
    }

    /// Reads `config.json`.
    pub fn read(dir: &ModelDir) -> Result<Self, BackendError> {
        let c: Config = dir.json("config.json", "the LLaVA configuration")?;
        let path = dir.root().join("config.json");
        if c.projector_hidden_act != "gelu" {
            return Err(BackendError::config(
                &path,
                format!(
                    "projector_hidden_act `{}` is not supported (LLaVA 1.5 uses gelu)",
                    c.projector_hidden_act
                ),
            ));
        }
        if c.vision_config.hidden_act != "quick_gelu" {
            return Err(BackendError::config(
                &path,
                format!(
                    "vision hidden_act `{}` is not supported (CLIP uses quick_gelu)",
                    c.vision_config.hidden_act
                ),
            ));
        }
        if !matches!(
            c.vision_feature_select_strategy.as_str(),
            "default" | "full"
        ) {
            return Err(BackendError::config(
                &path,
                format!(
                    "vision_feature_select_strategy `{}` is not `default` or `full`",
                    c.vision_feature_select_strategy
                ),
            ));
        }
        Ok(c)
    }

    /// candle's Llama configuration of the language model.
    pub fn llama(&self) -> llama::Config {
        let t = &self.text_config;
        llama::Config {
            hidden_size: t.hidden_size,
            intermediate_size: t.intermediate_size,
            vocab_size: t.vocab_size,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            num_key_value_heads: t.num_key_value_heads.unwrap_or(t.num_attention_heads),
            use_flash_attn: false,
            rms_norm_eps: t.rms_norm_eps,
            rope_theta: t.rope_theta,
            bos_token_id: Some(t.bos_token_id),
            eos_token_id: Some(LlamaEosToks::Single(t.eos_token_id)),
            rope_scaling: None,
            max_position_embeddings: t.max_position_embeddings,
            tie_word_embeddings: t.tie_word_embeddings,
        }
    }

    /// candle's CLIP vision configuration.
    pub fn clip(&self) -> ClipVisionConfig {
        self.vision_config.tower()
    }

    /// Patch features one image contributes to the prompt.
    pub fn image_tokens(&self) -> usize {
        let side = self.vision_config.image_size / self.vision_config.patch_size.max(1);
        side * side + usize::from(self.vision_feature_select_strategy == "full")
    }

    /// KV-cache bytes per token of context in `dtype`.
    pub fn kv_bytes_per_token(&self, dtype: DType) -> u64 {
        let t = &self.text_config;
        let head_dim = t.hidden_size / t.num_attention_heads.max(1);
        let kv_heads = t.num_key_value_heads.unwrap_or(t.num_attention_heads);
        (2 * t.num_hidden_layers * kv_heads * head_dim * dtype.size_in_bytes()) as u64
    }
}

/// A loaded LLaVA 1.5 model. Immutable: share it between requests.
pub struct Model {
    config: Config,
    llama_config: llama::Config,
    vision: ClipVisionTransformer,
    projector: (Linear, Linear),
    llama: Llama,
    preprocess: ClipPreprocess,
    dtype: DType,
    device: Device,
}

impl Model {
    /// Loads the checkpoint in `dir` onto `device` in `dtype`.
    pub fn load(dir: &ModelDir, device: &Device, dtype: DType) -> Result<Self, BackendError> {
        let config = Config::read(dir)?;
        let files = dir.safetensors("")?;
        let vb = model_runtime::safetensors::var_builder(&files, dtype, device)?;
        let vb = hf_15_layout(vb);
        let llama_config = config.llama();
        // candle's Llama loader unwraps missing layers; check them first so a truncated
        // checkpoint is an error, not a panic.
        for i in 0..llama_config.num_hidden_layers {
            for t in [
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "mlp.gate_proj",
                "mlp.up_proj",
                "mlp.down_proj",
            ] {
                let name = format!("language_model.model.layers.{i}.{t}.weight");
                if !vb.contains_tensor(&name) {
                    return Err(BackendError::config(
                        dir.root(),
                        format!("tensor `{name}` is missing from the safetensors files"),
                    ));
                }
            }
        }
        let vision = ClipVisionTransformer::new(
            vb.pp("vision_tower.vision_model"),
            &config.vision_config.tower(),
        )?;
        let (vh, th) = (
            config.vision_config.hidden_size,
            config.text_config.hidden_size,
        );
        let projector = (
            candle_nn::linear(vh, th, vb.pp("multi_modal_projector.linear_1"))?,
            candle_nn::linear(th, th, vb.pp("multi_modal_projector.linear_2"))?,
        );
        let llama = Llama::load(vb.pp("language_model"), &llama_config)?;
        let preprocess = ClipPreprocess::read(dir, config.vision_config.image_size)?;
        Ok(Model {
            config,
            llama_config,
            vision,
            projector,
            llama,
            preprocess,
            dtype,
            device: device.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The image preprocessing (CLIP-L/336: shortest edge, center crop, CLIP mean/std).
    pub fn preprocess(&self) -> &ClipPreprocess {
        &self.preprocess
    }

    /// The projected patch features of `image`: `[image_tokens, hidden]`.
    pub fn image_features(&self, image: &DynamicImage) -> candle_core::Result<Tensor> {
        let pixels =
            self.preprocess
                .tensor(std::slice::from_ref(image), &self.device, self.dtype)?;
        let states = self.vision.output_hidden_states(&pixels)?;
        // `states` holds each encoder layer's output, then the pooled output; Transformers'
        // `hidden_states` holds the embeddings, then each layer's output.
        let layers = self.config.vision_config.num_hidden_layers as isize;
        let layer = self.config.vision_feature_layer;
        let hf_index = if layer < 0 { layers + 1 + layer } else { layer };
        if hf_index < 1 || hf_index > layers {
            candle_core::bail!(
                "vision_feature_layer {layer} selects hidden state {hf_index}, not an encoder layer output"
            );
        }
        let mut features = states[(hf_index - 1) as usize].i(0)?;
        if self.config.vision_feature_select_strategy == "default" {
            features = features.i(1..)?;
        }
        let h = self.projector.0.forward(&features)?.gelu_erf()?;
        self.projector.1.forward(&h)
    }

    /// Input embeddings of `tokens` (`[1, n, hidden]`), with each `<image>` token replaced by
    /// `image` features (`[image_tokens, hidden]`).
    pub fn embed(&self, tokens: &[u32], image: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let image_token = self.config.image_token_index;
        let mut parts = Vec::new();
        let mut text: Vec<u32> = Vec::new();
        let flush = |text: &mut Vec<u32>, parts: &mut Vec<Tensor>| -> candle_core::Result<()> {
            if !text.is_empty() {
                let ids = Tensor::new(text.as_slice(), &self.device)?;
                parts.push(self.llama.embed(&ids)?);
                text.clear();
            }
            Ok(())
        };
        for &t in tokens {
            if t == image_token {
                let Some(features) = image else {
                    candle_core::bail!("the prompt has an <image> token but no image was given");
                };
                flush(&mut text, &mut parts)?;
                parts.push(features.to_dtype(self.dtype)?);
            } else {
                text.push(t);
            }
        }
        flush(&mut text, &mut parts)?;
        Tensor::cat(&parts, 0)?.unsqueeze(0)
    }

    /// An empty cache for one request.
    pub fn new_cache(&self) -> candle_core::Result<llama::Cache> {
        llama::Cache::new(true, self.dtype, &self.llama_config, &self.device)
    }

    /// Runs `embeds` (`[1, n, hidden]`) from position `pos`; the last position's logits.
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        pos: usize,
        cache: &mut llama::Cache,
    ) -> candle_core::Result<Tensor> {
        self.llama
            .forward_input_embed(embeds, pos, cache)?
            .squeeze(0)?
            .to_dtype(DType::F32)
    }

    /// Runs `tokens` from position `pos`; the last position's logits.
    pub fn forward_tokens(
        &self,
        tokens: &[u32],
        pos: usize,
        cache: &mut llama::Cache,
    ) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        self.llama
            .forward(&ids, pos, cache)?
            .squeeze(0)?
            .to_dtype(DType::F32)
    }

    /// The most positions a request can use.
    pub fn positions(&self) -> usize {
        self.llama_config.max_position_embeddings
    }
}

/// Checkpoints saved by Transformers ≥ 4.52 nest everything under `model.` (and move
/// `lm_head` to the top); map those names back to the llava-hf 1.5 layout.
fn hf_15_layout(vb: VarBuilder<'static>) -> VarBuilder<'static> {
    if !vb.contains_tensor("model.language_model.embed_tokens.weight") {
        return vb;
    }
    vb.rename_f(|name| {
        if let Some(rest) = name.strip_prefix("language_model.model.") {
            format!("model.language_model.{rest}")
        } else if let Some(rest) = name.strip_prefix("language_model.lm_head.") {
            format!("lm_head.{rest}")
        } else if name.starts_with("vision_tower.") || name.starts_with("multi_modal_projector.") {
            format!("model.{name}")
        } else {
            name.to_owned()
        }
    })
}
