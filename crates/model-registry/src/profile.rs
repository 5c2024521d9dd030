//! The default run profile: what one request looks like when the memory figure is computed.

use std::fmt;

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda,
    Metal,
}

impl Device {
    pub const fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Metal => "metal",
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The run profile recorded beside a memory figure (`[memory.profile]` in the spec).
///
/// `None` means "not applicable to this capability". Type names are the spec's (`F32`, `BF16`,
/// `Q4_K` …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunProfile {
    pub device: Device,
    /// Float tensors are converted to this type on load; `None` = kept as stored.
    pub load_dtype: Option<&'static str>,
    /// Type activations are computed in; `None` = `load_dtype` (F32 for GGUF models).
    pub activation_dtype: Option<&'static str>,
    /// Concurrent sequences / images in one request.
    pub batch: usize,
    /// Encoders: tokens per input.
    pub seq_len: Option<usize>,
    /// Generators: tokens the KV cache holds (prompt + output).
    pub context_tokens: Option<usize>,
    /// Generators: tokens processed in one prefill step.
    pub prompt_tokens: Option<usize>,
    /// Generators: KV cache element type.
    pub kv_dtype: Option<&'static str>,
    /// Vision: square input image side in pixels.
    pub image_size: Option<usize>,
    /// Text-to-image: output width in pixels.
    pub width: Option<usize>,
    /// Text-to-image: output height in pixels.
    pub height: Option<usize>,
    /// Text-to-image: text tokens fed to the denoiser.
    pub text_tokens: Option<usize>,
    /// Multi-component models: all components resident at once (`false` = staged).
    pub co_resident: bool,
    /// Named tensors the loader dequantizes to F32.
    pub dequantize_on_load: &'static [&'static str],
    /// Named tensors stored in the files but never loaded.
    pub skip_on_load: &'static [&'static str],
    /// Override of the runtime overhead part, in MB.
    pub overhead_mb: Option<usize>,
    /// Margin on the sum of the parts, in percent.
    pub margin_percent: u32,
}
