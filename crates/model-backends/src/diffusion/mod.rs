//! Text-to-image backends: FLUX.1-schnell and Stable Diffusion 3.5 Large Turbo on Candle,
//! served through the memory-aware pool.
//!
//! * [`Pipeline`] — which model code a checkpoint runs on: [`flux`] (candle's FLUX
//!   transformer, T5-XXL, CLIP-L, the 16-channel autoencoder, schnell schedule) or [`sd3`]
//!   (candle's MMDiT blocks, CLIP-L + bigG + T5-XXL, the same autoencoder with SD3's scaling,
//!   the shifted flow-matching sampler).
//! * [`MemoryPlan`] — what a model holds resident and what each stage of a request reserves,
//!   from the registry's estimator at the requested resolution. Requests run in three stages
//!   (encode the prompt, denoise, decode); a co-resident model keeps every component loaded and
//!   reserves only each stage's working set, a staged one loads each stage's components for
//!   that stage alone and reserves their weights too. The peak of the reservations is the
//!   estimate for that size.
//! * [`ImagePool`] — `text_to_image(model, prompt, width, height, steps, seed)` → PNG bytes,
//!   and [`ImagePool::generate`] with a progress callback (one event per denoising step).
//! * [`random`] — random-weight checkpoints in the real layout, of any geometry, derived from
//!   the registry spec's shapes: what the tests and the memory measurements load.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use model_backends::diffusion::{DiffusionConfig, ImagePool, ImageRequest, Progress};
//! let key = "black-forest-labs/FLUX.1-schnell";
//! let pool = ImagePool::builder()
//!     .model(DiffusionConfig::registry(key, "/models/FLUX.1-schnell")?)
//!     .build()?;
//! let png = pool.text_to_image(key, "a lighthouse at dawn", 1024, 768, 4, 42).await?;
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let image = pool
//!     .generate(key, ImageRequest::new("a fox").size(512, 512), move |p| {
//!         let _ = tx.send(p);
//!     })
//!     .await?;
//! while let Ok(Progress::Step { step, steps }) = rx.try_recv() {
//!     println!("{step}/{steps}");
//! }
//! # drop((png, image)); Ok(()) }
//! ```

pub mod cli;
pub mod clip_text;
pub mod config;
pub mod error;
pub mod flux;
pub mod layout;
pub mod loader;
pub mod model;
pub mod plan;
pub mod random;
pub mod request;
mod run;
pub mod sampler;
pub mod sd3;
pub mod service;
pub mod t5;
pub mod tokenizer;
pub mod vae;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
pub use model_spec::spec::Stage;

pub use config::DiffusionConfig;
pub use error::{ImageError, stage_name};
pub use loader::DiffusionLoader;
pub use model::{DiffusionModel, GeneratedImage};
pub use plan::{MemoryPlan, RequestMemory, StageMemory};
pub use request::{ImageRequest, Limits, Progress};
pub use run::ProgressFn;
pub use service::{ImagePool, ImagePoolBuilder};

use crate::error::BackendError;
use crate::model_dir::ModelDir;

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

    /// The registry model whose spec describes this pipeline's components.
    pub fn registry_key(self) -> &'static str {
        match self {
            Pipeline::Flux => "black-forest-labs/FLUX.1-schnell",
            Pipeline::Sd3 => "stabilityai/stable-diffusion-3.5-large-turbo",
        }
    }

    /// The pipeline of a registry key.
    pub fn from_key(key: &str) -> Option<Pipeline> {
        Pipeline::ALL.into_iter().find(|p| p.registry_key() == key)
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
            Pipeline::Sd3 => sd3::MAX_STEPS,
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
fn var_builder(
    component: &layout::Resolved,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, BackendError> {
    let vb = crate::models::var_builder(&component.files, dtype, device)?;
    Ok(match component.part.prefix {
        "" => vb,
        prefix => vb.pp(prefix),
    })
}
