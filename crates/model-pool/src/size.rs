//! Byte quantities: parsing what people type in configuration ("18GiB", "512 MiB", "1.5G")
//! and printing them back in a form that is both readable and exact.

use std::fmt;
use std::str::FromStr;

/// One mebibyte, the unit of `est_memory_allocation_mb` in the registry (1 MB = 1,048,576 B).
pub const MIB: u64 = 1 << 20;
/// One gibibyte.
pub const GIB: u64 = 1 << 30;

/// A number of bytes.
///
/// `Display` prints a binary-unit figure followed by the exact byte count, e.g.
/// `7.0 GiB (7516192768 B)`, because error messages are read by people but also compared
/// against estimates to the byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `mb` mebibytes, saturating instead of overflowing (an absurd figure must still compare
    /// as "too large", never wrap to a small one).
    pub const fn mib(mb: u64) -> Self {
        ByteSize(mb.saturating_mul(MIB))
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl From<u64> for ByteSize {
    fn from(value: u64) -> Self {
        ByteSize(value)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", GIB),
            ("MiB", MIB),
            ("KiB", 1 << 10),
        ];
        for (name, unit) in UNITS {
            if self.0 >= unit {
                // One decimal is enough for a person; the exact count follows for machines.
                let tenths = (u128::from(self.0) * 10 + u128::from(unit) / 2) / u128::from(unit);
                return write!(f, "{}.{} {name} ({} B)", tenths / 10, tenths % 10, self.0);
            }
        }
        write!(f, "{} B", self.0)
    }
}

/// Why a size string was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid byte size `{input}`: {reason} (examples: `18GiB`, `512 MiB`, `1.5G`, `1073741824`)"
)]
pub struct ParseSizeError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for ByteSize {
    type Err = ParseSizeError;

    /// Accepts an integer or decimal number followed by an optional unit. Binary units
    /// (`KiB`, `MiB`, `GiB`, `TiB`) and their one-letter forms (`K`, `M`, `G`, `T`, as in
    /// Docker and most tools) are powers of 1024; `KB`, `MB`, `GB`, `TB` are powers of 1000;
    /// `B` or no unit means bytes. Case does not matter. Fractions are computed exactly and
    /// rounded up to whole bytes, so "1.5GiB" is 1610612736.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseSizeError {
            input: s.to_owned(),
            reason,
        };
        let trimmed = s.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number: String = number.chars().filter(|&c| c != '_').collect();
        if number.is_empty() {
            return Err(err("no number"));
        }
        let multiplier: u128 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(err("unknown unit")),
        };
        let (whole, fraction) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number.as_str(), ""),
        };
        if fraction.contains('.') {
            return Err(err("more than one decimal point"));
        }
        if whole.is_empty() && fraction.is_empty() {
            return Err(err("no digits"));
        }
        if fraction.len() > 18 {
            return Err(err("too many decimal places"));
        }
        let parse = |digits: &str| -> Result<u128, ParseSizeError> {
            if digits.is_empty() {
                Ok(0)
            } else {
                digits.parse::<u128>().map_err(|_| err("number too large"))
            }
        };
        let whole = parse(whole)?;
        let frac_digits = parse(fraction)?;
        let scale = 10u128.pow(fraction.len() as u32);
        let bytes = whole
            .checked_mul(multiplier)
            .and_then(|w| {
                let frac = frac_digits.checked_mul(multiplier)?;
                // Round the fractional part up: a budget of "1.5 bytes" cannot hold 2 bytes,
                // but a figure someone wrote down is a lower bound of what they meant.
                w.checked_add(frac.div_ceil(scale))
            })
            .ok_or_else(|| err("number too large"))?;
        u64::try_from(bytes)
            .map(ByteSize)
            .map_err(|_| err("number too large"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_decimal_and_plain_figures() {
        let cases = [
            ("18GiB", 18 * GIB),
            ("18 GiB", 18 * GIB),
            ("18g", 18 * GIB),
            ("512MiB", 512 * MIB),
            ("1.5GiB", 3 * GIB / 2),
            ("2GB", 2_000_000_000),
            ("1_024", 1024),
            ("0", 0),
            (" 7 tb ", 7_000_000_000_000),
            (".5K", 512),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<ByteSize>(), Ok(ByteSize(want)), "{input}");
        }
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for input in [
            "",
            "GiB",
            "1.2.3G",
            "12 parsecs",
            "-5G",
            "99999999999999999999999T",
            ".",
        ] {
            let e = input.parse::<ByteSize>().expect_err(input);
            assert!(e.to_string().contains("invalid byte size"), "{e}");
        }
    }

    #[test]
    fn display_is_readable_and_exact() {
        assert_eq!(ByteSize(7 * GIB).to_string(), "7.0 GiB (7516192768 B)");
        assert_eq!(ByteSize(100).to_string(), "100 B");
        assert_eq!(ByteSize::mib(700).to_string(), "700.0 MiB (734003200 B)");
        assert_eq!(ByteSize::mib(u64::MAX), ByteSize(u64::MAX));
    }
}
