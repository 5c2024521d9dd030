//! The run profile: what one request looks like when the memory figure is computed.

use crate::dtype::DType;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
    Metal,
}

impl Device {
    pub fn as_str(self) -> &'static str {
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

/// Default margin on the sum of the parts, in percent (see [`RunProfile::margin_percent`]).
pub const DEFAULT_MARGIN_PERCENT: u64 = 15;

/// The default run profile of a model (in `models.toml`), copied next to the figure by
/// `cargo xtask gen-memory-specs` so the figure says what it was computed for.
///
/// Unset fields mean "not applicable to this capability"; the estimator says which it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunProfile {
    pub device: Device,
    /// Float tensors are converted to this type on load (candle's `VarBuilder` dtype); unset =
    /// kept as stored (GGUF quantized tensors are always kept as stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_dtype: Option<DType>,
    /// Type activations are computed in; unset = `load_dtype`, or F32 for GGUF models (candle's
    /// quantized matmuls produce F32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_dtype: Option<DType>,
    /// Concurrent sequences / images in one request.
    #[serde(default = "one")]
    pub batch: u64,
    /// Encoders: tokens per input (after truncation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<u64>,
    /// Generators: tokens the KV cache holds (prompt + output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u64>,
    /// Generators: tokens processed in one prefill step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Generators: KV cache element type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_dtype: Option<DType>,
    /// Vision: square input image side in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u64>,
    /// Text-to-image: output size in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// Text-to-image: text tokens fed to the denoiser (T5 sequence length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_tokens: Option<u64>,
    /// Multi-component models: all components resident at once (`true`) or staged
    /// (text encoders released before denoising, denoiser before decoding).
    #[serde(default = "yes")]
    pub co_resident: bool,
    /// Named tensors the loader dequantizes to F32 (candle's GGUF loaders do this for
    /// `token_embd.weight`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dequantize_on_load: Vec<String>,
    /// Named tensors stored in the files but never loaded (e.g. an embedder's `lm_head`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_on_load: Vec<String>,
    /// Override of the runtime overhead part, in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead_mb: Option<u64>,
    /// Margin on the sum of the parts, 10–20 %.
    #[serde(default = "default_margin")]
    pub margin_percent: u64,
}

fn one() -> u64 {
    1
}
fn yes() -> bool {
    true
}
fn default_margin() -> u64 {
    DEFAULT_MARGIN_PERCENT
}

impl RunProfile {
    /// A CPU profile with every optional field unset (handy in tests and the planner).
    pub fn cpu() -> Self {
        RunProfile {
            device: Device::Cpu,
            load_dtype: None,
            activation_dtype: None,
            batch: 1,
            seq_len: None,
            context_tokens: None,
            prompt_tokens: None,
            kv_dtype: None,
            image_size: None,
            width: None,
            height: None,
            text_tokens: None,
            co_resident: true,
            dequantize_on_load: Vec::new(),
            skip_on_load: Vec::new(),
            overhead_mb: None,
            margin_percent: DEFAULT_MARGIN_PERCENT,
        }
    }

    /// One-line summary for tables ("cpu f32 batch 1 × 256 tokens").
    pub fn summary(&self) -> String {
        let mut s = self.device.to_string();
        if let Some(d) = self.load_dtype {
            s.push_str(&format!(" {}", d.as_str().to_ascii_lowercase()));
        }
        s.push_str(&format!(" batch {}", self.batch));
        if let Some(n) = self.seq_len {
            s.push_str(&format!(" × {n} tok"));
        }
        if let Some(n) = self.context_tokens {
            s.push_str(&format!(", ctx {n}"));
        }
        if let Some(n) = self.prompt_tokens {
            s.push_str(&format!(", prefill {n}"));
        }
        if let Some(d) = self.kv_dtype {
            s.push_str(&format!(", kv {}", d.as_str().to_ascii_lowercase()));
        }
        if let Some(n) = self.image_size {
            s.push_str(&format!(", image {n}px"));
        }
        if let (Some(w), Some(h)) = (self.width, self.height) {
            s.push_str(&format!(", {w}×{h}"));
        }
        if !self.co_resident {
            s.push_str(", staged");
        }
        s
    }
}
