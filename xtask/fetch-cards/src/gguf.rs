//! GGUF headers (metadata + tensor infos) by growing byte-range reads, parsed with candle's
//! `gguf_file::Content::read`, the same reader the quantized backends load with.
//!
//! The reader sees the file through [`PrefixReader`]: the bytes fetched so far, and the real
//! file size for candle's bounds checks. When candle reads past the fetched bytes the prefix is
//! doubled and parsing starts again; any other parse failure is a real error.

use super::error::FetchError;
use super::hub::{RemoteFile, Transfer};
use candle_core::quantized::gguf_file::{Content, Value};
use model_spec::DType;
use model_spec::shapes::TensorDesc;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};

/// First read; most of a GGUF header is the tokenizer (hundreds of KB to a few MB).
pub const FIRST_READ: u64 = 64 * 1024;

/// Largest header accepted (a 256k-token vocabulary with merges is ~20 MB).
pub const MAX_HEADER_LEN: u64 = 256 * 1024 * 1024;

/// One parsed GGUF header.
#[derive(Debug)]
pub struct GgufHeader {
    pub metadata: HashMap<String, Value>,
    /// In file order of their data; shapes in ggml `ne` order.
    pub tensors: Vec<TensorDesc>,
    /// Bytes up to the tensor data.
    pub header_len: u64,
}

/// Reads one GGUF file's header.
pub fn read_header(f: &mut RemoteFile, t: &mut Transfer) -> Result<GgufHeader, FetchError> {
    let mut len = FIRST_READ.min(f.size);
    loop {
        let size = f.size;
        let bytes = f.prefix(len, t)?;
        let mut r = PrefixReader {
            data: bytes,
            total: size,
            pos: 0,
            overran: false,
        };
        match Content::read(&mut r) {
            Ok(c) => {
                return convert(c).map_err(|detail| FetchError::BadHeader {
                    repo: f.repo.clone(),
                    file: f.path.clone(),
                    detail,
                });
            }
            Err(_) if r.overran && len < size && len < MAX_HEADER_LEN => {
                len = (len * 2).min(size).min(MAX_HEADER_LEN);
            }
            Err(e) => {
                let detail = if r.overran && len >= MAX_HEADER_LEN {
                    format!("the GGUF header is larger than the {MAX_HEADER_LEN} B limit")
                } else {
                    format!("not a GGUF header candle can read: {e}")
                };
                return Err(FetchError::BadHeader {
                    repo: f.repo.clone(),
                    file: f.path.clone(),
                    detail,
                });
            }
        }
    }
}

fn convert(c: Content) -> Result<GgufHeader, String> {
    let mut rows: Vec<(u64, TensorDesc)> = Vec::with_capacity(c.tensor_infos.len());
    for (name, info) in c.tensor_infos {
        let dtype: DType = format!("{:?}", info.ggml_dtype)
            .parse()
            .map_err(|e: String| format!("tensor `{name}`: ggml type: {e}"))?;
        // candle reverses ggml's `ne` into row-major; the inventory keeps ggml order.
        let shape: Vec<u64> = info.shape.dims().iter().rev().map(|&d| d as u64).collect();
        let t = TensorDesc { name, shape, dtype };
        if dtype.bytes_for(t.numel()).is_none() {
            return Err(format!(
                "tensor `{}` has {} elements, not a whole number of {dtype} blocks",
                t.name,
                t.numel()
            ));
        }
        rows.push((info.offset, t));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    Ok(GgufHeader {
        metadata: c.metadata,
        tensors: rows.into_iter().map(|(_, t)| t).collect(),
        header_len: c.tensor_data_offset,
    })
}

/// Metadata value as u64 (any integer type).
pub fn meta_u64(m: &HashMap<String, Value>, key: &str) -> Option<u64> {
    match m.get(key)? {
        Value::U8(v) => Some(u64::from(*v)),
        Value::U16(v) => Some(u64::from(*v)),
        Value::U32(v) => Some(u64::from(*v)),
        Value::U64(v) => Some(*v),
        Value::I8(v) => u64::try_from(*v).ok(),
        Value::I16(v) => u64::try_from(*v).ok(),
        Value::I32(v) => u64::try_from(*v).ok(),
        Value::I64(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

pub fn meta_f64(m: &HashMap<String, Value>, key: &str) -> Option<f64> {
    match m.get(key)? {
        Value::F32(v) => Some(f64::from(*v)),
        Value::F64(v) => Some(*v),
        _ => meta_u64(m, key).map(|v| v as f64),
    }
}

pub fn meta_str<'a>(m: &'a HashMap<String, Value>, key: &str) -> Option<&'a str> {
    match m.get(key)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

pub fn meta_array_len(m: &HashMap<String, Value>, key: &str) -> Option<u64> {
    match m.get(key)? {
        Value::Array(a) => Some(a.len() as u64),
        _ => None,
    }
}

/// The fetched bytes of a file, seen as the whole file by candle's reader.
struct PrefixReader<'a> {
    data: &'a [u8],
    total: u64,
    pos: u64,
    /// Set when a read went past the fetched bytes (but not past the file).
    overran: bool,
}

impl Read for PrefixReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let have = self.data.len() as u64;
        if self.pos >= have {
            if self.pos < self.total && !buf.is_empty() {
                self.overran = true;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "past the fetched prefix",
                ));
            }
            return Ok(0);
        }
        let n = ((have - self.pos) as usize).min(buf.len());
        let start = self.pos as usize;
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PrefixReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let p = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.total.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = p.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before start")
        })?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_reader_reports_overrun_only_inside_the_file() {
        let data = [1u8, 2, 3];
        let mut r = PrefixReader {
            data: &data,
            total: 10,
            pos: 0,
            overran: false,
        };
        let mut b = [0u8; 5];
        assert!(r.read_exact(&mut b).is_err());
        assert!(r.overran);
        assert_eq!(r.seek(SeekFrom::End(0)).unwrap(), 10);
        let mut r = PrefixReader {
            data: &data,
            total: 3,
            pos: 0,
            overran: false,
        };
        assert!(r.read_exact(&mut b).is_err());
        assert!(!r.overran, "reading past the real end is a real EOF");
    }
}
