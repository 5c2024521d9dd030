//! Random-valued safetensors files of any size, streamed to disk.
//!
//! A full-size checkpoint (FLUX's transformer alone is 23 GB) is never held in memory: each
//! tensor's values are generated in 1 MiB chunks and written at the tensor's offset in the
//! file, on as many threads as the machine has, so writing costs what the disk does. The
//! values depend only on the seed and the tensor's name, so the file is the same whatever the
//! thread count.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use model_networks::diffusion::sampler::SplitMix64;
use model_runtime::BackendError;
use model_spec::DType;
use model_spec::shapes::TensorDesc;
use serde_json::json;

/// Values generated per chunk.
const CHUNK: u64 = 1 << 18;

/// Writes `tensors` with random values to a safetensors file (through a temporary name, so a
/// failed or interrupted write leaves no file at `path`); returns the data bytes.
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorDesc],
    seed: u64,
) -> Result<u64, BackendError> {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    let mut order: Vec<(&TensorDesc, u64)> = Vec::with_capacity(tensors.len());
    let mut sorted: Vec<&TensorDesc> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for t in sorted {
        let bytes = t.numel() * element_bytes(t.dtype, path)?;
        header.insert(
            t.name.clone(),
            json!({"dtype": t.dtype.as_str(), "shape": t.shape, "data_offsets": [offset, offset + bytes]}),
        );
        order.push((t, offset));
        offset += bytes;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| BackendError::config(path, e))?;
    json.resize(json.len().div_ceil(8) * 8, b' ');
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| BackendError::io(parent, e))?;
    }
    let partial = path.with_extension("safetensors.partial");
    let io = |e| BackendError::io(&partial, e);
    let mut file = File::create(&partial).map_err(io)?;
    file.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(io)?;
    file.write_all(&json).map_err(io)?;
    let data_start = 8 + json.len() as u64;
    file.set_len(data_start + offset).map_err(io)?;

    // Threads take the next unwritten tensor, largest first so none is left for the end.
    order.sort_by_key(|(t, _)| std::cmp::Reverse(t.numel()));
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(order.len().max(1));
    let written: Result<(), std::io::Error> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut chunk = Vec::with_capacity(CHUNK as usize * 8);
                    while let Some((t, at)) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                        write_tensor(&file, t, data_start + at, seed, &mut chunk)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("a tensor writer panicked"))
    });
    drop(file);
    if let Err(e) = written.and_then(|()| std::fs::rename(&partial, path)) {
        let _ = std::fs::remove_file(&partial);
        return Err(BackendError::io(path, e));
    }
    Ok(offset)
}

/// Generates `t`'s values chunk by chunk and writes them at byte `at` of `file`.
fn write_tensor(
    file: &File,
    t: &TensorDesc,
    mut at: u64,
    seed: u64,
    chunk: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut values = Values::new(t, seed);
    let row = t.shape.last().copied().unwrap_or(1).max(1);
    let mut done = 0u64;
    while done < t.numel() {
        let n = (t.numel() - done).min(CHUNK);
        chunk.clear();
        for i in done..done + n {
            match t.dtype {
                // Integer tensors in checkpoints are position ids: 0, 1, … along the row.
                DType::I64 => chunk.extend_from_slice(&((i % row) as i64).to_le_bytes()),
                DType::F32 => chunk.extend_from_slice(&values.next().to_le_bytes()),
                DType::BF16 => {
                    chunk.extend_from_slice(&half::bf16::from_f32(values.next()).to_le_bytes())
                }
                _ => chunk.extend_from_slice(&half::f16::from_f32(values.next()).to_le_bytes()),
            }
        }
        write_at(file, chunk, at)?;
        at += chunk.len() as u64;
        done += n;
    }
    Ok(())
}

#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, at)
}

#[cfg(windows)]
fn write_at(file: &File, mut bytes: &[u8], mut at: u64) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, bytes, at)?;
        bytes = &bytes[n..];
        at += n as u64;
    }
    Ok(())
}

fn element_bytes(dtype: DType, path: &Path) -> Result<u64, BackendError> {
    match dtype {
        DType::F32 => Ok(4),
        DType::I64 => Ok(8),
        DType::F16 | DType::BF16 => Ok(2),
        other => Err(BackendError::config(
            path,
            format!("random checkpoints are written in F32, F16, BF16 or I64, not {other}"),
        )),
    }
}

/// Values for one tensor: norm scales near 1, biases near 0, other tensors uniform with
/// variance 1/fan-in (so activations stay of order one through random layers). The stream
/// depends only on the seed and the tensor's name.
struct Values {
    rng: SplitMix64,
    center: f32,
    spread: f32,
}

impl Values {
    fn new(t: &TensorDesc, seed: u64) -> Self {
        let name_hash = t.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let rng = SplitMix64(seed ^ name_hash);
        let is_norm = ["norm", "ln_", "scale"].iter().any(|k| t.name.contains(k));
        let (center, spread) = if t.shape.len() <= 1 {
            if is_norm && !t.name.ends_with("bias") {
                (1.0, 0.1)
            } else {
                (0.0, 0.02)
            }
        } else {
            let embedding = ["embed", "shared", "relative_attention_bias", "latents"]
                .iter()
                .any(|k| t.name.contains(k));
            let fan_in = if embedding {
                t.shape.last().copied().unwrap_or(1)
            } else {
                t.shape[1..].iter().product()
            };
            (0.0, (3.0 / fan_in.max(1) as f64).sqrt() as f32)
        };
        Values {
            rng,
            center,
            spread,
        }
    }

    fn next(&mut self) -> f32 {
        let u = (self.rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        self.center + self.spread * (2.0 * u - 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(name: &str, shape: &[u64], dtype: DType) -> TensorDesc {
        TensorDesc {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
        }
    }

    #[test]
    fn files_read_back_with_the_declared_shapes_and_values_rounded_to_nearest() {
        let dir = crate::scratch("stream");
        let path = dir.join("w.safetensors");
        let tensors = [
            desc("a.weight", &[300, 1000], DType::BF16),
            desc("b.norm.weight", &[7], DType::F16),
            desc("c.weight", &[3, 5], DType::F32),
            desc("embeddings.position_ids", &[1, 9], DType::I64),
        ];
        let bytes = write_safetensors(&path, &tensors, 3).unwrap();
        assert_eq!(bytes, 300 * 1000 * 2 + 7 * 2 + 15 * 4 + 9 * 8);
        assert!(!dir.join("w.safetensors.partial").exists());
        let data = std::fs::read(&path).unwrap();
        let read = safetensors::SafeTensors::deserialize(&data).unwrap();
        assert_eq!(read.tensor("a.weight").unwrap().shape(), [300, 1000]);
        let norm = read.tensor("b.norm.weight").unwrap();
        for v in norm.data().chunks(2) {
            let v = half::f16::from_le_bytes([v[0], v[1]]).to_f32();
            assert!((0.89..=1.11).contains(&v), "{v}");
        }
        let ids: Vec<i64> = read
            .tensor("embeddings.position_ids")
            .unwrap()
            .data()
            .chunks(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(ids, (0..9).collect::<Vec<_>>());
        // The same seed writes the same file.
        let again = dir.join("again.safetensors");
        write_safetensors(&again, &tensors, 3).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), data);
    }

    #[test]
    fn an_unsupported_dtype_names_the_file_and_leaves_nothing() {
        let dir = crate::scratch("stream-bad");
        let path = dir.join("q.safetensors");
        let err = write_safetensors(&path, &[desc("x", &[256], DType::Q4K)], 1).unwrap_err();
        assert!(err.to_string().contains("q.safetensors"), "{err}");
        assert!(
            err.to_string().contains("Q4_K") || err.to_string().contains("Q4K"),
            "{err}"
        );
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
    }
}
