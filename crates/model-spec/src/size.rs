//! Byte sizes as people type them (`--ram 64GiB`, `MODEL_POOL_BUDGET=18GiB`, `512 MiB`):
//! the one grammar the planner, the pool and every command line parse them with, so that one
//! string means the same number of bytes everywhere.

/// One KiB.
pub const KIB: u64 = 1 << 10;
/// One MiB, the registry's "MB" (`est_memory_allocation_mb`).
pub const MIB: u64 = 1 << 20;
/// One GiB.
pub const GIB: u64 = 1 << 30;
/// One TiB.
pub const TIB: u64 = 1 << 40;

/// Why a size string was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid size `{input}`: {reason} (examples: `64GiB`, `24G`, `512MiB`, `1.5TiB`, `1073741824`)"
)]
pub struct ParseSizeError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses a byte size: a number (integer or decimal, `_` allowed as a separator) followed by
/// an optional unit. `KiB`, `MiB`, `GiB`, `TiB` and their one-letter forms `K`, `M`, `G`, `T`
/// are powers of 1024; `KB`, `MB`, `GB`, `TB` are powers of 1000 (as disk vendors and the
/// pool's settings use them); `B` or no unit means bytes. Case and a space before the unit
/// do not matter. Fractions are rounded up to whole bytes.
pub fn parse_size(input: &str) -> Result<u64, ParseSizeError> {
    let err = |reason: &str| ParseSizeError {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: String = number.chars().filter(|&c| c != '_').collect();
    if number.is_empty() {
        return Err(err("it does not start with a number"));
    }
    let unit = unit.trim().to_ascii_lowercase();
    let scale: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        "t" | "tib" => TIB,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(err(&format!(
                "unknown unit `{}`; use B, KiB, MiB, GiB, TiB (K, M, G, T) or KB, MB, GB, TB",
                unit.trim()
            )));
        }
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number.as_str(), ""),
    };
    if frac.contains('.') {
        return Err(err("the number has more than one `.`"));
    }
    if whole.is_empty() && frac.is_empty() {
        return Err(err("it does not start with a number"));
    }
    let too_large = || err("it is too large");
    let whole_part: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    let mut bytes = whole_part
        .checked_mul(u128::from(scale))
        .ok_or_else(too_large)?;
    if !frac.is_empty() {
        if frac.len() > 18 {
            return Err(err("too many decimals"));
        }
        let digits: u128 = frac.parse().map_err(|_| err("bad decimals"))?;
        let denom = 10u128.pow(frac.len() as u32);
        bytes += (digits * u128::from(scale)).div_ceil(denom);
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_units() {
        assert_eq!(parse_size("64GiB"), Ok(64 * GIB));
        assert_eq!(parse_size("24G"), Ok(24 * GIB));
        assert_eq!(parse_size("24 gib"), Ok(24 * GIB));
        assert_eq!(parse_size("1TiB"), Ok(TIB));
        assert_eq!(parse_size("512MiB"), Ok(512 * MIB));
        assert_eq!(parse_size("1.5GiB"), Ok(3 * GIB / 2));
        assert_eq!(parse_size("64GB"), Ok(64_000_000_000));
        assert_eq!(parse_size("1_073_741_824"), Ok(GIB));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size(".5K"), Ok(512));
        // Fractions of a byte round up rather than vanish.
        assert_eq!(parse_size("0.1B"), Ok(1));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = parse_size("64 gigs").unwrap_err();
        assert!(e.to_string().contains("unknown unit `gigs`"), "{e}");
        assert!(e.to_string().contains("64GiB"), "{e}");
        let e = parse_size("GiB").unwrap_err();
        assert!(e.reason.contains("number"), "{e}");
        let e = parse_size("1.2.3G").unwrap_err();
        assert!(e.reason.contains("more than one"), "{e}");
        let e = parse_size("99999999999TiB").unwrap_err();
        assert!(e.reason.contains("too large"), "{e}");
        assert!(parse_size("").is_err());
        assert!(parse_size("-1G").is_err());
    }
}
