//! Safetensors checkpoints read tensor by tensor with positioned reads.
//!
//! candle's `VarBuilder::from_mmaped_safetensors` maps every file for the whole load and
//! copies each tensor out of the mapping: every page it touches stays in the process's
//! resident set until the load ends, so a CPU load peaks at *weights + checkpoint files*
//! (measured: Jina v2 base 825 MiB for 550 MiB of F32 weights from a 275 MiB F16 file;
//! all-MiniLM-L6-v2 twice its 87 MiB). This backend reads each tensor straight into the
//! allocation candle keeps (one `pread`, no intermediate buffer) and converts it when the
//! profile's dtype differs, so the load peaks at the weights plus one tensor in its stored
//! dtype. File pages end up in the page cache, which the kernel can drop, not in the RSS.
//!
//! The header is parsed with the `safetensors` crate; only the data transfer is ours, because
//! candle offers either the mapping above or loading a whole file into one buffer.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;

use candle_core::{DType, Device, Shape, Tensor, WithDType};
use candle_nn::var_builder::SimpleBackend;
use safetensors::Dtype as StDtype;
use safetensors::tensor::Metadata;

use crate::error::BackendError;

/// Headers longer than this are refused as corrupt (the largest real ones are a few MiB).
const MAX_HEADER_BYTES: u64 = 100 << 20;

struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

/// A `SimpleBackend` over one or more safetensors files (shards), read on demand.
pub(crate) struct ReadSafetensors {
    files: Vec<(PathBuf, File)>,
    tensors: HashMap<String, Entry>,
}

fn candle_dtype(d: StDtype) -> Option<DType> {
    Some(match d {
        StDtype::U8 => DType::U8,
        StDtype::U32 => DType::U32,
        StDtype::I64 => DType::I64,
        StDtype::BF16 => DType::BF16,
        StDtype::F16 => DType::F16,
        StDtype::F32 => DType::F32,
        StDtype::F64 => DType::F64,
        _ => return None,
    })
}

impl ReadSafetensors {
    /// Opens `paths` and reads their headers (nothing else).
    pub(crate) fn open(paths: &[PathBuf]) -> Result<Self, BackendError> {
        let mut files = Vec::with_capacity(paths.len());
        let mut tensors = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let file = File::open(path).map_err(|e| BackendError::io(path, e))?;
            let file_len = file.metadata().map_err(|e| BackendError::io(path, e))?.len();
            let mut len = [0u8; 8];
            read_exact_at(&file, &mut len, 0)
                .map_err(|e| BackendError::io(path, e))?;
            let header_len = u64::from_le_bytes(len);
            if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
                return Err(BackendError::config(
                    path,
                    format!(
                        "safetensors header of {header_len} bytes in a {file_len}-byte file: \
                         the file is truncated or not safetensors; download it again"
                    ),
                ));
            }
            let mut head = vec![0u8; header_len as usize];
            read_exact_at(&file, &mut head, 8).map_err(|e| BackendError::io(path, e))?;
            // `SafeTensors::read_metadata` wants the whole file in memory; the header alone
            // deserializes (and is checked for ordered offsets) through `Metadata` itself.
            let metadata: Metadata = serde_json::from_slice(&head).map_err(|e| {
                BackendError::config(path, format!("invalid safetensors header: {e}"))
            })?;
            let data_start = 8 + header_len;
            for (name, info) in metadata.tensors() {
                let dtype = candle_dtype(info.dtype).ok_or_else(|| {
                    BackendError::config(
                        path,
                        format!("tensor `{name}` has dtype {:?}, which candle cannot load", info.dtype),
                    )
                })?;
                let (start, end) = info.data_offsets;
                let (start, end) = (data_start + start as u64, data_start + end as u64);
                if start > end || end > file_len {
                    return Err(BackendError::config(
                        path,
                        format!(
                            "tensor `{name}` ends at byte {end} of a {file_len}-byte file: \
                             the file is truncated; download it again"
                        ),
                    ));
                }
                tensors.insert(
                    name,
                    Entry {
                        file: index,
                        dtype,
                        shape: info.shape.clone(),
                        start,
                        end,
                    },
                );
            }
            files.push((path.clone(), file));
        }
        Ok(Self { files, tensors })
    }

    fn read(&self, name: &str) -> candle_core::Result<Tensor> {
        let entry = self.tensors.get(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_owned(),
            }
            .bt()
        })?;
        let (path, file) = &self.files[entry.file];
        let read = |buf: &mut [u8]| {
            if buf.len() as u64 != entry.end - entry.start {
                candle_core::bail!(
                    "{}: tensor `{name}` holds {} bytes, its shape {:?} of {:?} needs {}",
                    path.display(),
                    entry.end - entry.start,
                    entry.shape,
                    entry.dtype,
                    buf.len()
                );
            }
            read_exact_at(file, buf, entry.start)
                .map_err(|e| candle_core::Error::msg(format!("{}: {e}", path.display())))
        };
        let shape = Shape::from(entry.shape.clone());
        match entry.dtype {
            DType::U8 => read_typed::<u8>(shape, read),
            DType::U32 => read_typed::<u32>(shape, read),
            DType::I64 => read_typed::<i64>(shape, read),
            DType::BF16 => read_typed::<half::bf16>(shape, read),
            DType::F16 => read_typed::<half::f16>(shape, read),
            DType::F32 => read_typed::<f32>(shape, read),
            DType::F64 => read_typed::<f64>(shape, read),
            other => candle_core::bail!("tensor `{name}`: unsupported dtype {other:?}"),
        }
    }
}

#[cfg(not(target_endian = "little"))]
compile_error!("safetensors data is little-endian; this reader copies it as is");

/// Reads `shape`'s elements of `T` straight into the vector the tensor will own.
fn read_typed<T: WithDType>(
    shape: Shape,
    read: impl FnOnce(&mut [u8]) -> candle_core::Result<()>,
) -> candle_core::Result<Tensor> {
    let mut data = vec![T::zero(); shape.elem_count()];
    // SAFETY: `T` is one of candle's plain numeric element types (u8, u32, i64, f16, bf16,
    // f32, f64): every bit pattern is a valid value and there is no padding, so viewing the
    // initialised vector as bytes and overwriting them is sound. The view ends before `data`
    // is used again.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(
            data.as_mut_ptr().cast::<u8>(),
            std::mem::size_of_val(data.as_slice()),
        )
    };
    read(bytes)?;
    Tensor::from_vec(data, shape, &Device::Cpu)
}

impl SimpleBackend for ReadSafetensors {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, dev)?;
        if tensor.shape() != &s {
            Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: tensor.shape().clone(),
            }
            .bt())?
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        // Convert on the CPU first: the stored-dtype copy is dropped before the device copy.
        self.read(name)?.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Fills `buf` from `offset` without moving a shared file cursor.
#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}
