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

pub use model_spec::size::ParseSizeError;

impl FromStr for ByteSize {
    type Err = ParseSizeError;

    /// The workspace's one size grammar (`model_spec::size::parse_size`): a number, `_`
    /// allowed, then an optional unit; `KiB`…`TiB` (and `K`…`T`) are powers of 1024, `KB`…`TB`
    /// powers of 1000; fractions round up to whole bytes, so "1.5GiB" is 1610612736.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        model_spec::size::parse_size(s).map(ByteSize)
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
            assert!(e.to_string().contains("invalid size"), "{e}");
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
