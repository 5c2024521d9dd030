//! Text-to-image networks: the FLUX transformer's configuration ([`flux`], candle's network),
//! SD3.5's MMDiT ([`mmdit`]), the CLIP and T5 text encoders ([`clip_text`], [`t5`]), the
//! 16-channel autoencoder ([`vae`]), the samplers ([`sampler`]), the prompt tokenizers
//! ([`tokenizer`]) and where each component lives in a checkpoint ([`layout`]). The pipelines
//! that run them stage by stage under memory reservations are the serving layer's.

pub mod clip_text;
pub mod flux;
pub mod layout;
pub mod mmdit;
pub mod sampler;
pub mod t5;
pub mod tokenizer;
pub mod vae;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use model_runtime::{BackendError, ModelDir};
pub use model_spec::spec::Stage;

/// The model code a text-to-image checkpoint runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pipeline {
    /// FLUX.1-schnell.
    Flux,
    /// Stable Diffusion 3.5 Large (Turbo).
    Sd3,
}

impl Pipeline {
    /// Both pipelines.
    pub const ALL: [Pipeline; 2] = [Pipeline::Flux, Pipeline::Sd3];

    /// Lower-case name (CLI spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Pipeline::Flux => "flux",
            Pipeline::Sd3 => "sd3",
        }
    }

    /// The pipeline of a checkpoint, from its Diffusers `model_index.json`.
    pub fn detect(dir: &ModelDir) -> Result<Pipeline, BackendError> {
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(rename = "_class_name")]
            class: String,
        }
        let index: Index = dir.json("model_index.json", "the Diffusers pipeline class")?;
        match index.class.as_str() {
            "FluxPipeline" => Ok(Pipeline::Flux),
            "StableDiffusion3Pipeline" => Ok(Pipeline::Sd3),
            other => Err(BackendError::UnknownFamily {
                key: dir.root().display().to_string(),
                why: format!(
                    "model_index.json names `{other}`, not FluxPipeline or StableDiffusion3Pipeline"
                ),
            }),
        }
    }

    /// Steps the model is distilled for.
    pub fn max_steps(self) -> u32 {
        match self {
            Pipeline::Flux => flux::MAX_STEPS,
            Pipeline::Sd3 => mmdit::MAX_STEPS,
        }
    }
}

impl std::fmt::Display for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Pipeline {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "flux" => Ok(Pipeline::Flux),
            "sd3" | "sd3.5" => Ok(Pipeline::Sd3),
            _ => Err(format!("unknown pipeline `{s}`: expected flux or sd3")),
        }
    }
}

/// A `VarBuilder` over a component's files, rooted at its prefix.
pub fn var_builder(
    component: &layout::Resolved,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, BackendError> {
    let vb = model_runtime::safetensors::var_builder(&component.files, dtype, device)?;
    Ok(match component.part.prefix {
        "" => vb,
        prefix => vb.pp(prefix),
    })
}
