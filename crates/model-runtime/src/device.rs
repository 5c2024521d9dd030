//! The one place that turns the pool's [`DeviceId`] into a Candle device, and a spec dtype into
//! a Candle dtype.

use candle_core::{DType, Device};
use model_pool::DeviceId;

use crate::error::BackendError;

/// The Candle device for `id`.
///
/// CPU always works. CUDA and Metal need this crate built with the `cuda` or `metal` feature
/// (which forward to candle's); without it the error says which feature to enable rather than
/// silently running on the CPU.
pub fn device(id: DeviceId) -> Result<Device, BackendError> {
    match id {
        DeviceId::Cpu => Ok(Device::Cpu),
        DeviceId::Cuda(ordinal) => cuda(ordinal),
        DeviceId::Metal(ordinal) => metal(ordinal),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: u32) -> Result<Device, BackendError> {
    Device::new_cuda(ordinal as usize).map_err(|e| BackendError::DeviceUnavailable {
        device: DeviceId::Cuda(ordinal),
        fix: e.to_string(),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(ordinal: u32) -> Result<Device, BackendError> {
    Err(BackendError::DeviceUnavailable {
        device: DeviceId::Cuda(ordinal),
        fix: "this build has no CUDA support; rebuild with `--features cuda`, \
              or run the model on `cpu`"
            .to_owned(),
    })
}

#[cfg(feature = "metal")]
fn metal(ordinal: u32) -> Result<Device, BackendError> {
    Device::new_metal(ordinal as usize).map_err(|e| BackendError::DeviceUnavailable {
        device: DeviceId::Metal(ordinal),
        fix: e.to_string(),
    })
}

#[cfg(not(feature = "metal"))]
fn metal(ordinal: u32) -> Result<Device, BackendError> {
    Err(BackendError::DeviceUnavailable {
        device: DeviceId::Metal(ordinal),
        fix: "this build has no Metal support; rebuild with `--features metal`, \
              or run the model on `cpu`"
            .to_owned(),
    })
}

/// The Candle dtype weights are converted to on load, from the spec's `load_dtype`.
pub fn dtype_of(dtype: model_spec::DType) -> Result<DType, BackendError> {
    match dtype {
        model_spec::DType::F32 => Ok(DType::F32),
        model_spec::DType::F16 => Ok(DType::F16),
        model_spec::DType::BF16 => Ok(DType::BF16),
        model_spec::DType::F64 => Ok(DType::F64),
        other => Err(BackendError::UnsupportedDtype(other.to_string())),
    }
}

/// Parses `f32`, `f16` or `bf16` (any case), as the CLI and configs spell it.
pub fn parse_dtype(s: &str) -> Result<DType, BackendError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" | "fp16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err(BackendError::UnsupportedDtype(s.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_always_works_and_gpus_name_their_feature() {
        assert!(matches!(device(DeviceId::Cpu), Ok(Device::Cpu)));
        #[cfg(not(feature = "cuda"))]
        {
            let err = device(DeviceId::Cuda(0)).unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
        #[cfg(not(feature = "metal"))]
        {
            let err = device(DeviceId::Metal(0)).unwrap_err().to_string();
            assert!(err.contains("--features metal"), "{err}");
        }
    }

    #[test]
    fn dtypes() {
        assert_eq!(dtype_of(model_spec::DType::F16).unwrap(), DType::F16);
        assert!(dtype_of(model_spec::DType::Q4K).is_err());
        assert_eq!(parse_dtype("BF16").unwrap(), DType::BF16);
        assert!(parse_dtype("int8").is_err());
    }
}
