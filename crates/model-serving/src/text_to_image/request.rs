//! One text-to-image request, the limits it is checked against, and the progress events it
//! reports while it runs.

use model_networks::diffusion::Stage;

use crate::error::ServeError;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    /// The text to draw.
    pub prompt: String,
    /// Width in pixels: a positive multiple of 16.
    pub width: u32,
    /// Height in pixels: a positive multiple of 16.
    pub height: u32,
    /// Denoising steps (the distilled models here are made for 1–4).
    pub steps: u32,
    /// Seed of the initial noise: the same seed, prompt, size and steps give the same image
    /// on the same device and dtype.
    pub seed: u64,
}

impl ImageRequest {
    /// A 1024×1024 image in 4 steps with seed 0.
    pub fn new(prompt: impl Into<String>) -> Self {
        ImageRequest {
            prompt: prompt.into(),
            width: 1024,
            height: 1024,
            steps: 4,
            seed: 0,
        }
    }

    /// Sets the size.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.width = width;
        self.height = height;
        self
    }

    /// Sets the step count.
    pub fn steps(mut self, steps: u32) -> Self {
        self.steps = steps;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// What a model accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest width.
    pub max_width: u32,
    /// Largest height.
    pub max_height: u32,
    /// Fewest steps.
    pub min_steps: u32,
    /// Most steps.
    pub max_steps: u32,
    /// Where the size limit comes from (printed when a request is too large).
    pub size_source: String,
}

impl Limits {
    /// Checks `request` for `model`; the first problem found is the error.
    pub fn check(&self, model: &str, request: &ImageRequest) -> Result<(), ServeError> {
        if request.prompt.trim().is_empty() {
            return Err(ServeError::invalid_field(
                model,
                "prompt",
                "the prompt is empty; describe the image to generate",
            ));
        }
        let (width, height) = (request.width, request.height);
        if width == 0 || height == 0 || !width.is_multiple_of(16) || !height.is_multiple_of(16) {
            // The VAE downsamples by 8 and the transformers patchify the latents 2×2.
            return Err(ServeError::invalid_field(
                model,
                "size",
                format!(
                    "{width}×{height} cannot be generated: width and height must be positive multiples of 16"
                ),
            ));
        }
        if width > self.max_width || height > self.max_height {
            return Err(ServeError::invalid_field(
                model,
                "size",
                format!(
                    "{width}×{height} is larger than its limit of {}×{} ({}); ask for a smaller image",
                    self.max_width, self.max_height, self.size_source
                ),
            ));
        }
        if request.steps < self.min_steps || request.steps > self.max_steps {
            return Err(ServeError::invalid_field(
                model,
                "steps",
                format!(
                    "{} steps is outside {}–{}, the range this model is distilled for",
                    request.steps, self.min_steps, self.max_steps
                ),
            ));
        }
        Ok(())
    }
}

/// What a running request reports, in order: for each stage `StageStarted`, then (denoiser
/// only) one `Step` per step, then `StageFinished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A stage starts; `reserved_bytes` is what it reserved from the governor (its weights
    /// when staged, plus its working set at the requested size), held until it finishes.
    StageStarted {
        /// The stage.
        stage: Stage,
        /// Bytes reserved for it.
        reserved_bytes: u64,
    },
    /// A denoising step finished.
    Step {
        /// Steps done so far (1-based).
        step: u32,
        /// Steps in the request.
        steps: u32,
    },
    /// A stage finished; its components (when staged) and its reservation are released.
    StageFinished {
        /// The stage.
        stage: Stage,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_width: 1536,
            max_height: 1024,
            min_steps: 1,
            max_steps: 4,
            size_source: "the spec".into(),
        }
    }

    #[test]
    fn each_invalid_field_gets_its_own_error() {
        let l = limits();
        let ok = ImageRequest::new("a red fox").size(1536, 1024);
        assert!(l.check("m", &ok).is_ok());
        let bad = |r: ImageRequest| l.check("m", &r).unwrap_err();
        let field = |e: &ServeError| match e {
            ServeError::InvalidRequest { param, .. } => *param,
            _ => None,
        };
        let e = bad(ok.clone().size(1000, 1024));
        assert_eq!(field(&e), Some("size"));
        assert!(
            e.to_string().contains("1000×1024") && e.to_string().contains("multiples of 16"),
            "{e}"
        );
        let e = bad(ok.clone().size(0, 0));
        assert!(e.to_string().contains("multiples of 16"), "{e}");
        let e = bad(ok.clone().size(1024, 1040));
        assert_eq!(field(&e), Some("size"));
        assert!(e.to_string().contains("limit of 1536×1024"), "{e}");
        let e = bad(ok.clone().steps(0));
        assert_eq!(field(&e), Some("steps"));
        assert!(e.to_string().contains("0 steps"), "{e}");
        let e = bad(ok.clone().steps(5));
        assert!(e.to_string().contains("1–4"), "{e}");
        let empty = bad(ImageRequest::new(" \n"));
        assert_eq!(field(&empty), Some("prompt"));
        assert!(empty.to_string().contains("prompt is empty"), "{empty}");
        let msg = bad(ok.size(2048, 2048)).to_string();
        assert!(
            msg.contains("1536×1024") && msg.contains("the spec"),
            "{msg}"
        );
    }
}
