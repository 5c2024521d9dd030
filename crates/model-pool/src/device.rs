//! Which memory a model lives in. Each device has exactly one budget in the governor.

use std::fmt;
use std::str::FromStr;

/// A memory domain with its own budget: system RAM, or one GPU's memory.
///
/// CPU inference and unified-memory Apple GPUs both draw on system RAM, but Metal devices get
/// their own entry so that a deployment can cap GPU-resident models separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceId {
    /// System RAM.
    Cpu,
    /// An NVIDIA GPU, by CUDA ordinal.
    Cuda(u32),
    /// An Apple GPU, by Metal device index.
    Metal(u32),
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceId::Cpu => f.write_str("cpu"),
            DeviceId::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceId::Metal(i) => write!(f, "metal:{i}"),
        }
    }
}

/// Serialized as its `Display` form (`cpu`, `cuda:0`).
impl serde::Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why a device name was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device `{0}`: expected `cpu`, `cuda:N` or `metal:N`")]
pub struct ParseDeviceError(pub String);

impl FromStr for DeviceId {
    type Err = ParseDeviceError;

    /// Parses the `Display` form; `cuda` and `metal` alone mean device 0, and `cuda0` is
    /// accepted because that is how environment variable names spell it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let err = || ParseDeviceError(s.to_owned());
        if lower == "cpu" || lower == "ram" {
            return Ok(DeviceId::Cpu);
        }
        let (kind, index) = if let Some(rest) = lower.strip_prefix("cuda") {
            (DeviceId::Cuda as fn(u32) -> DeviceId, rest)
        } else if let Some(rest) = lower.strip_prefix("metal") {
            (DeviceId::Metal as fn(u32) -> DeviceId, rest)
        } else {
            return Err(err());
        };
        let index = index.strip_prefix(':').unwrap_or(index);
        if index.is_empty() {
            return Ok(kind(0));
        }
        index.parse::<u32>().map(kind).map_err(|_| err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_round_trip() {
        for d in [
            DeviceId::Cpu,
            DeviceId::Cuda(0),
            DeviceId::Cuda(3),
            DeviceId::Metal(1),
        ] {
            assert_eq!(d.to_string().parse::<DeviceId>(), Ok(d));
        }
        assert_eq!("CUDA1".parse::<DeviceId>(), Ok(DeviceId::Cuda(1)));
        assert_eq!("metal".parse::<DeviceId>(), Ok(DeviceId::Metal(0)));
        assert!("tpu:0".parse::<DeviceId>().is_err());
        assert!("cuda:x".parse::<DeviceId>().is_err());
    }
}
