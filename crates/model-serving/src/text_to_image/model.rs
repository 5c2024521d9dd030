//! [`DiffusionModel`]: what the pool holds while a text-to-image model is loaded, and the
//! blocking `generate` that turns a request into PNG bytes.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, IndexOp, Tensor};
use model_pool::DeviceId;

use model_networks::Pipeline;
use model_runtime::{BackendError, ModelDir};

use super::ImageOptions;
use super::flux::Flux;
use super::plan::{MemoryPlan, RequestMemory};
use super::request::{ImageRequest, Limits};
use super::run::{ProgressFn, Run};
use super::sd3::Sd3;
use super::stages;
use crate::error::ServeError;

/// A generated image.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    /// PNG bytes (8-bit RGB).
    pub png: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Steps run.
    pub steps: u32,
    /// Seed used.
    pub seed: u64,
    /// What the request reserved: resident bytes and each stage's reservation.
    pub memory: RequestMemory,
}

enum Inner {
    Flux(Box<Flux>),
    Sd3(Box<Sd3>),
}

/// A loaded text-to-image model.
pub struct DiffusionModel {
    key: String,
    pipeline: Pipeline,
    plan: Arc<MemoryPlan>,
    limits: Limits,
    inner: Inner,
}

impl DiffusionModel {
    /// Loads the pipeline in `dir` (configs and tokenizers; the networks too unless staged)
    /// with the figures of `plan`.
    pub fn load(
        key: &str,
        dir: &ModelDir,
        options: &ImageOptions,
        device: DeviceId,
        plan: Arc<MemoryPlan>,
    ) -> Result<Self, BackendError> {
        let candle_device = model_runtime::device(device)?;
        let dtype = options.dtype_on(device);
        let inner = match options.pipeline {
            Pipeline::Flux => Inner::Flux(Box::new(Flux::load(&plan, dir, &candle_device, dtype)?)),
            Pipeline::Sd3 => Inner::Sd3(Box::new(Sd3::load(&plan, dir, &candle_device, dtype)?)),
        };
        Ok(DiffusionModel {
            key: key.to_owned(),
            pipeline: options.pipeline,
            limits: options.limits_for(&plan),
            plan,
            inner,
        })
    }

    /// The model's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its pipeline.
    pub fn pipeline(&self) -> Pipeline {
        self.pipeline
    }

    /// What it accepts.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Its memory plan.
    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// Generates `request` (blocking: run it on a blocking thread) within the memory its lease
    /// holds ([`RequestMemory::lease_bytes`]), reporting to `progress`, and stopping at the
    /// next step once `cancel` is set.
    pub fn generate(
        &self,
        request: &ImageRequest,
        progress: &ProgressFn,
        cancel: &AtomicBool,
    ) -> Result<GeneratedImage, ServeError> {
        self.limits.check(&self.key, request)?;
        let memory = self
            .plan
            .request(request.width, request.height)
            .map_err(|e| ServeError::backend(&self.key, e))?;
        let run = Run {
            model: &self.key,
            memory: &memory,
            progress,
            cancel,
        };
        let image = match &self.inner {
            Inner::Flux(f) => stages::generate(&**f, request, &run)?,
            Inner::Sd3(s) => stages::generate(&**s, request, &run)?,
        };
        let png = to_png(&image).map_err(|e| ServeError::backend(&self.key, e))?;
        Ok(GeneratedImage {
            png,
            width: request.width,
            height: request.height,
            steps: request.steps,
            seed: request.seed,
            memory,
        })
    }
}

/// A `(1, 3, h, w)` image in [-1, 1] as PNG bytes.
pub fn to_png(image: &Tensor) -> Result<Vec<u8>, BackendError> {
    let pixels = ((image.i(0)?.to_dtype(DType::F32)?.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?
        .round()?
        .to_dtype(DType::U8)?
        .permute((1, 2, 0))?
        .to_device(&Device::Cpu)?;
    let (h, w, _) = pixels.dims3()?;
    let data = pixels.flatten_all()?.to_vec1::<u8>()?;
    let mut png = Vec::new();
    ::image::ImageEncoder::write_image(
        ::image::codecs::png::PngEncoder::new(&mut png),
        &data,
        w as u32,
        h as u32,
        ::image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| BackendError::Image {
        index: 0,
        message: e.to_string(),
    })?;
    Ok(png)
}
