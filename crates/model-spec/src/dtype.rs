//! Storage types of weight tensors: safetensors dtypes and ggml (GGUF) types.
//!
//! GGUF sizes come from ggml's block layout (elements per block, bytes per block), not from an
//! average bits-per-weight: a Q4_K tensor of `n` elements takes exactly `n / 256 * 144` bytes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A tensor storage type as written in a spec TOML (`"F32"`, `"BF16"`, `"Q4_K"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    F8E4M3,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

const ALL: [(DType, &str); 22] = [
    (DType::F64, "F64"),
    (DType::F32, "F32"),
    (DType::F16, "F16"),
    (DType::BF16, "BF16"),
    (DType::F8E4M3, "F8_E4M3"),
    (DType::I64, "I64"),
    (DType::I32, "I32"),
    (DType::I16, "I16"),
    (DType::I8, "I8"),
    (DType::U8, "U8"),
    (DType::Bool, "BOOL"),
    (DType::Q4_0, "Q4_0"),
    (DType::Q4_1, "Q4_1"),
    (DType::Q5_0, "Q5_0"),
    (DType::Q5_1, "Q5_1"),
    (DType::Q8_0, "Q8_0"),
    (DType::Q2K, "Q2_K"),
    (DType::Q3K, "Q3_K"),
    (DType::Q4K, "Q4_K"),
    (DType::Q5K, "Q5_K"),
    (DType::Q6K, "Q6_K"),
    (DType::Q8K, "Q8_K"),
];

impl DType {
    /// `(elements per block, bytes per block)`; plain types have blocks of one element.
    pub const fn block(self) -> (u64, u64) {
        match self {
            DType::F64 | DType::I64 => (1, 8),
            DType::F32 | DType::I32 => (1, 4),
            DType::F16 | DType::BF16 | DType::I16 => (1, 2),
            DType::F8E4M3 | DType::I8 | DType::U8 | DType::Bool => (1, 1),
            // ggml-common.h block structs.
            DType::Q4_0 => (32, 18),
            DType::Q4_1 => (32, 20),
            DType::Q5_0 => (32, 22),
            DType::Q5_1 => (32, 24),
            DType::Q8_0 => (32, 34),
            DType::Q2K => (256, 84),
            DType::Q3K => (256, 110),
            DType::Q4K => (256, 144),
            DType::Q5K => (256, 176),
            DType::Q6K => (256, 210),
            DType::Q8K => (256, 292),
        }
    }

    /// Exact bytes of a tensor of `numel` elements. `None` when `numel` is not a whole number
    /// of blocks (ggml cannot store such a tensor in this type).
    pub fn bytes_for(self, numel: u64) -> Option<u64> {
        let (per, bytes) = self.block();
        numel.is_multiple_of(per).then(|| numel / per * bytes)
    }

    /// Floating-point types a loader may convert to another float type.
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3
        )
    }

    /// Block-quantized ggml types.
    pub const fn is_quantized(self) -> bool {
        self.block().0 > 1
    }

    pub fn as_str(self) -> &'static str {
        ALL.iter()
            .find(|(d, _)| *d == self)
            .map(|(_, s)| *s)
            .unwrap_or("?")
    }

    /// Every type, in a fixed order (used in error messages).
    pub fn names() -> impl Iterator<Item = &'static str> {
        ALL.iter().map(|(_, s)| *s)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let norm = s.trim().to_ascii_uppercase();
        let norm = match norm.as_str() {
            "FLOAT32" => "F32",
            "FLOAT16" => "F16",
            "BFLOAT16" => "BF16",
            "Q4K" => "Q4_K",
            "Q5K" => "Q5_K",
            "Q6K" => "Q6_K",
            "Q8K" => "Q8_K",
            "Q2K" => "Q2_K",
            "Q3K" => "Q3_K",
            other => other,
        };
        ALL.iter()
            .find(|(_, n)| *n == norm)
            .map(|(d, _)| *d)
            .ok_or_else(|| {
                format!(
                    "unknown dtype `{s}`; expected one of {}",
                    DType::names().collect::<Vec<_>>().join(", ")
                )
            })
    }
}

impl TryFrom<String> for DType {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DType> for String {
    fn from(d: DType) -> String {
        d.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_quant_block_sizes_follow_ggml() {
        assert_eq!(DType::Q4K.bytes_for(256 * 10), Some(1440));
        assert_eq!(DType::Q6K.bytes_for(256), Some(210));
        assert_eq!(DType::Q8_0.bytes_for(64), Some(68));
        assert_eq!(DType::Q4K.bytes_for(100), None);
    }

    #[test]
    fn names_round_trip() {
        for name in DType::names() {
            let d: DType = name.parse().unwrap();
            assert_eq!(d.as_str(), name);
        }
        assert!("Q7_K".parse::<DType>().unwrap_err().contains("Q4_K"));
    }
}
