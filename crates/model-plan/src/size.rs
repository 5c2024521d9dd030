//! Byte quantities: parsing what people type (`--ram 64GiB`, `--vram 24G`) and printing
//! figures the way the registry does (1 MB = 1,048,576 B).
//!
//! The parsing rules are `model_spec::size`'s, the pool's too (`MODEL_POOL_BUDGET=18GiB`), so
//! one string means the same number of bytes to the planner and to the pool that runs it.

use std::fmt;

pub use model_spec::size::{GIB, KIB, MIB, ParseSizeError, TIB, parse_size};

/// `bytes` in GiB with one decimal: `24.0 GiB`.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

/// `bytes` in the registry's MB (MiB), rounded up, with thousands separators: `18,100 MB`.
pub fn mb(bytes: u64) -> String {
    format!("{} MB", thousands(bytes.div_ceil(MIB)))
}

/// `bytes` in MB rounded down: for budgets and room left, which must not look larger than
/// they are.
pub fn mb_floor(bytes: u64) -> String {
    format!("{} MB", thousands(bytes / MIB))
}

/// `12345678` → `12,345,678`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count that prints as GiB (for tables and messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gib(pub u64);

impl fmt::Display for Gib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&gib(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printing() {
        assert_eq!(thousands(681_400), "681,400");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(mb(18_100 * MIB), "18,100 MB");
        assert_eq!(mb(MIB + 1), "2 MB");
        assert_eq!(mb_floor(2 * MIB - 1), "1 MB");
        assert_eq!(gib(24 * GIB), "24.0 GiB");
    }
}
