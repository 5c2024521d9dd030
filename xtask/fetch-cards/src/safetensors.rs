//! safetensors headers by byte range: 8-byte little-endian header length, then that many bytes
//! of JSON (`name -> {dtype, shape, data_offsets}`); the tensor data is never read.

use super::error::FetchError;
use super::hub::{RemoteFile, Transfer};
use model_spec::DType;
use model_spec::shapes::TensorDesc;
use std::collections::BTreeMap;

/// First read: the length prefix plus a guess at the header, so small headers take one request.
/// Longer headers take a second request for exactly the rest.
pub const FIRST_READ: u64 = 8 * 1024;

/// Largest header accepted. Real headers are kilobytes to a few megabytes (a 100k-tensor file
/// has ~10 MB); anything larger is a corrupt length prefix or not a safetensors file.
pub const MAX_HEADER_LEN: u64 = 100 * 1024 * 1024;

/// Reads and parses the header of one safetensors file.
pub fn read_header(f: &mut RemoteFile, t: &mut Transfer) -> Result<Vec<TensorDesc>, FetchError> {
    let bad = |f: &RemoteFile, detail: String| FetchError::BadHeader {
        repo: f.repo.clone(),
        file: f.path.clone(),
        detail,
    };
    if f.size < 8 {
        return Err(bad(
            f,
            format!(
                "the file is {} B, too short for a safetensors header",
                f.size
            ),
        ));
    }
    let first = f.prefix(FIRST_READ, t)?;
    let n = u64::from_le_bytes(first[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_LEN {
        return Err(bad(
            f,
            format!(
                "the header length prefix says {n} B, above the {MAX_HEADER_LEN} B limit: not a safetensors file, or a corrupt one"
            ),
        ));
    }
    if 8 + n > f.size {
        return Err(bad(
            f,
            format!(
                "the header length prefix says {n} B but the file is only {} B: corrupt or not a safetensors file",
                f.size
            ),
        ));
    }
    let size = f.size;
    let bytes = f.prefix(8 + n, t)?;
    parse_header(&bytes[8..], size - 8 - n).map_err(|d| bad(f, d))
}

/// Parses header JSON; `data_len` is the size of the data section that follows it.
pub fn parse_header(json: &[u8], data_len: u64) -> Result<Vec<TensorDesc>, String> {
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_slice(json)
        .map_err(|e| format!("the header is not JSON ({e}): corrupt or not a safetensors file"))?;
    let mut rows: Vec<(u64, TensorDesc)> = Vec::with_capacity(map.len());
    for (name, v) in map {
        if name == "__metadata__" {
            continue;
        }
        let dtype_s = v
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| format!("tensor `{name}` has no dtype"))?;
        let dtype: DType = dtype_s
            .parse()
            .map_err(|e: String| format!("tensor `{name}`: {e}"))?;
        let shape: Vec<u64> = v
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|x| x.as_u64()).collect())
            .ok_or_else(|| format!("tensor `{name}` has no shape of non-negative integers"))?;
        let offs: Vec<u64> = v
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|x| x.as_u64()).collect())
            .filter(|o: &Vec<u64>| o.len() == 2 && o[0] <= o[1])
            .ok_or_else(|| format!("tensor `{name}` has no valid data_offsets [begin, end]"))?;
        let t = TensorDesc {
            name: name.clone(),
            shape,
            dtype,
        };
        if t.bytes() != offs[1] - offs[0] {
            return Err(format!(
                "tensor `{name}`: {dtype} {:?} takes {} B but data_offsets span {} B",
                t.shape,
                t.bytes(),
                offs[1] - offs[0]
            ));
        }
        if offs[1] > data_len {
            return Err(format!(
                "tensor `{name}` ends at data offset {} but the file has only {data_len} B of data",
                offs[1]
            ));
        }
        rows.push((offs[0], t));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    Ok(rows.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_checks_them() {
        let json = br#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2,3],"data_offsets":[8,20]},"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        let t = parse_header(json, 20).unwrap();
        assert_eq!(t[0].name, "a");
        assert_eq!(t[1].bytes(), 12);
        assert!(parse_header(json, 19).unwrap_err().contains("only 19 B"));
        let wrong = br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#;
        assert!(parse_header(wrong, 8).unwrap_err().contains("takes 16 B"));
        assert!(
            parse_header(b"\x00garbage", 0)
                .unwrap_err()
                .contains("not JSON")
        );
        let unknown = br#"{"a":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}}"#;
        assert!(
            parse_header(unknown, 8)
                .unwrap_err()
                .contains("unknown dtype")
        );
    }
}
