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
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor, WithDType};
use candle_nn::var_builder::SimpleBackend;
use model_spec::shapes::TensorDesc;
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
pub struct ReadSafetensors {
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

/// A safetensors file's header, read without touching its data.
pub struct Header {
    pub file: File,
    pub file_len: u64,
    /// Offset of the data section (tensor offsets are relative to it).
    pub data_start: u64,
    pub metadata: Metadata,
}

impl Header {
    /// Reads the 8-byte length and the JSON header of `path`.
    pub fn read(path: &Path) -> Result<Self, BackendError> {
        let file = File::open(path).map_err(|e| BackendError::io(path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| BackendError::io(path, e))?
            .len();
        let mut len = [0u8; 8];
        read_exact_at(&file, &mut len, 0).map_err(|e| BackendError::io(path, e))?;
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
        let metadata: Metadata = serde_json::from_slice(&head)
            .map_err(|e| BackendError::config(path, format!("invalid safetensors header: {e}")))?;
        Ok(Header {
            file,
            file_len,
            data_start: 8 + header_len,
            metadata,
        })
    }
}

impl ReadSafetensors {
    /// Opens `paths` and reads their headers (nothing else).
    pub fn open(paths: &[PathBuf]) -> Result<Self, BackendError> {
        let mut files = Vec::with_capacity(paths.len());
        let mut tensors = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let Header {
                file,
                file_len,
                data_start,
                metadata,
            } = Header::read(path)?;
            for (name, info) in metadata.tensors() {
                let dtype = candle_dtype(info.dtype).ok_or_else(|| {
                    BackendError::config(
                        path,
                        format!(
                            "tensor `{name}` has dtype {:?}, which candle cannot load",
                            info.dtype
                        ),
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
                // Checked here, against the header's own byte range, so that a corrupt shape
                // is refused before anything is allocated for it.
                let needed = info
                    .shape
                    .iter()
                    .try_fold(dtype.size_in_bytes() as u64, |n, &d| {
                        n.checked_mul(d as u64)
                    });
                if needed != Some(end - start) {
                    return Err(BackendError::config(
                        path,
                        format!(
                            "tensor `{name}`: shape {:?} of {:?} does not match its {} stored bytes; \
                             the file is corrupt",
                            info.shape,
                            info.dtype,
                            end - start
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

/// The tensors named in the safetensors header of `path`, in the estimator's terms (read
/// without the data), sorted by name.
pub fn tensor_descs(path: &Path) -> Result<Vec<TensorDesc>, BackendError> {
    let header = Header::read(path)?;
    let mut out = Vec::new();
    for (name, info) in header.metadata.tensors() {
        // The header's dtype names (`F32`, `BF16`, `F8_E4M3`, …) are the spec's.
        let dtype = format!("{:?}", info.dtype)
            .parse()
            .map_err(|e: String| BackendError::config(path, format!("{name}: {e}")))?;
        out.push(TensorDesc {
            name,
            shape: info.shape.iter().map(|&d| d as u64).collect(),
            dtype,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A `VarBuilder` over the safetensors `files`, converting to `dtype` on `device`: tensors
/// are read one at a time, so a load peaks at the weights plus one tensor.
pub fn var_builder(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<candle_nn::VarBuilder<'static>, BackendError> {
    let backend = ReadSafetensors::open(files)?;
    Ok(candle_nn::VarBuilder::from_backend(
        Box::new(backend),
        dtype,
        device.clone(),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn write(dir: &std::path::Path, name: &str, tensors: &[(&str, Tensor)]) -> PathBuf {
        let path = dir.join(name);
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, t)| ((*n).to_owned(), t.clone()))
            .collect();
        candle_core::safetensors::save(&map, &path).unwrap();
        path
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("reader-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_every_tensor_of_every_shard_exactly_and_converts_dtypes() {
        let dir = scratch("shards");
        let a = Tensor::arange(0f32, 24., &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        let b = Tensor::new(&[1.5f32, -2.25, 3.0], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let ids = Tensor::new(&[7i64, 8, 9], &Device::Cpu).unwrap();
        let files = [
            write(
                &dir,
                "one.safetensors",
                &[("a", a.clone()), ("ids", ids.clone())],
            ),
            write(&dir, "two.safetensors", &[("b", b.clone())]),
        ];
        let r = ReadSafetensors::open(&files).unwrap();
        assert!(r.contains_tensor("a") && r.contains_tensor("b") && !r.contains_tensor("c"));
        let got = r
            .get(
                (2, 3, 4).into(),
                "a",
                candle_nn::Init::Const(0.),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        // F16 on disk, F32 asked for: converted, values kept.
        let got = r.get_unchecked("b", DType::F32, &Device::Cpu).unwrap();
        assert_eq!(got.dtype(), DType::F32);
        assert_eq!(got.to_vec1::<f32>().unwrap(), vec![1.5, -2.25, 3.0]);
        let got = r.get_unchecked("ids", DType::I64, &Device::Cpu).unwrap();
        assert_eq!(got.to_vec1::<i64>().unwrap(), vec![7, 8, 9]);
        // A wrong shape and a missing tensor are errors, not panics.
        let e = r
            .get(
                (4, 6).into(),
                "a",
                candle_nn::Init::Const(0.),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap_err();
        assert!(e.to_string().contains("shape mismatch for a"), "{e}");
        assert!(r.get_unchecked("c", DType::F32, &Device::Cpu).is_err());
        // Through a VarBuilder, as the models use it.
        let vb = candle_nn::VarBuilder::from_backend(Box::new(r), DType::F32, Device::Cpu);
        assert_eq!(vb.get((2, 3, 4), "a").unwrap().dims(), &[2, 3, 4]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn truncated_or_foreign_files_are_refused_with_the_file_named() {
        let dir = scratch("bad");
        let t = Tensor::arange(0f32, 1024., &Device::Cpu).unwrap();
        let good = write(&dir, "good.safetensors", &[("t", t)]);
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
        let e = ReadSafetensors::open(std::slice::from_ref(&cut))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("cut.safetensors") && e.contains("truncated"),
            "{e}"
        );
        let foreign = dir.join("foreign.safetensors");
        std::fs::write(&foreign, b"PK\x03\x04 this is a zip, not safetensors").unwrap();
        let e = ReadSafetensors::open(std::slice::from_ref(&foreign))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("foreign.safetensors"), "{e}");
        let missing = dir.join("missing.safetensors");
        assert!(ReadSafetensors::open(&[missing]).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
