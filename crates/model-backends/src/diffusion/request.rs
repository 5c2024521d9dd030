//! One text-to-image request, the limits it is checked against, and the progress events it
//! reports while it runs.

use super::Stage;
use super::error::ImageError;

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
    /// Where the size limit comes from (printed in [`ImageError::TooLarge`]).
    pub size_source: String,
}

impl Limits {
    /// Checks `request` for `model`; the first problem found is the error.
    pub fn check(&self, model: &str, request: &ImageRequest) -> Result<(), ImageError> {
        let model = model.to_owned();
        if request.prompt.trim().is_empty() {
            return Err(ImageError::EmptyPrompt { model });
        }
        let (width, height) = (request.width, request.height);
        if width == 0 || height == 0 || !width.is_multiple_of(16) || !height.is_multiple_of(16) {
            return Err(ImageError::SizeNotMultipleOf16 {
                model,
                width,
                height,
            });
        }
        if width > self.max_width || height > self.max_height {
            return Err(ImageError::TooLarge {
                model,
                width,
                height,
                max_width: self.max_width,
                max_height: self.max_height,
                why: self.size_source.clone(),
            });
        }
        if request.steps < self.min_steps || request.steps > self.max_steps {
            return Err(ImageError::Steps {
                model,
                steps: request.steps,
                min: self.min_steps,
                max: self.max_steps,
            });
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
        assert!(matches!(
            bad(ok.clone().size(1000, 1024)),
            ImageError::SizeNotMultipleOf16 { width: 1000, .. }
        ));
        assert!(matches!(
            bad(ok.clone().size(0, 0)),
            ImageError::SizeNotMultipleOf16 { .. }
        ));
        assert!(matches!(
            bad(ok.clone().size(1024, 1040)),
            ImageError::TooLarge {
                max_height: 1024,
                ..
            }
        ));
        assert!(matches!(
            bad(ok.clone().steps(0)),
            ImageError::Steps { steps: 0, .. }
        ));
        assert!(matches!(
            bad(ok.clone().steps(5)),
            ImageError::Steps { max: 4, .. }
        ));
        let empty = bad(ImageRequest::new(" \n"));
        assert!(matches!(empty, ImageError::EmptyPrompt { .. }));
        assert!(empty.to_string().contains("prompt is empty"), "{empty}");
        let msg = bad(ok.size(2048, 2048)).to_string();
        assert!(
            msg.contains("1536×1024") && msg.contains("the spec"),
            "{msg}"
        );
    }
}
