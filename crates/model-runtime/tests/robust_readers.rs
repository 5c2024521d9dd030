//! The checkpoint readers against random and mutated files: a safetensors reader and a GGUF
//! reader must answer every input with a typed error naming the file — never a panic, an
//! abort, or an allocation out of proportion with the file.
//!
//! Each property runs 10,000 cases by default; `PROPTEST_CASES=1000000 cargo test -p
//! model-runtime --test robust_readers --release` is the longer run. The inputs are a few
//! kilobytes, so the largest single allocation the process makes is checked against a fixed
//! cap far above what reading them needs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use model_fixtures::robustness::{TrackingAllocator, cases};
use model_runtime::safetensors::{ReadSafetensors, tensor_descs};
use model_runtime::{BackendError, GgufFile};
use proptest::prelude::*;

/// Records the largest single allocation of the process.
#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator::new();

/// Far above anything reading a few-kilobyte file needs, far below what a length field taken
/// on trust would ask for.
const ALLOCATION_CAP: usize = 64 << 20;

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("robust-readers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file for one case, unique per thread and case.
fn case_file(bytes: &[u8], ext: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = scratch().join(format!("case-{n}.{ext}"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The error names the file (or is about what was read from it).
fn names_the_file(e: &BackendError, path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    e.to_string().contains(name.as_ref())
}

fn valid_safetensors() -> Vec<u8> {
    let dir = scratch();
    let path = dir.join("seed.safetensors");
    let dev = Device::Cpu;
    let tensors: HashMap<String, Tensor> = [
        (
            "a",
            Tensor::arange(0f32, 24., &dev)
                .unwrap()
                .reshape((2, 3, 4))
                .unwrap(),
        ),
        ("b", Tensor::ones(5, DType::F16, &dev).unwrap()),
        ("ids", Tensor::new(&[1i64, 2, 3], &dev).unwrap()),
    ]
    .into_iter()
    .map(|(k, t)| (k.to_owned(), t))
    .collect();
    candle_core::safetensors::save(&tensors, &path).unwrap();
    std::fs::read(&path).unwrap()
}

fn valid_gguf() -> Vec<u8> {
    let path = scratch().join("seed.gguf");
    let dev = Device::Cpu;
    let w = Tensor::arange(0f32, 512., &dev)
        .unwrap()
        .reshape((2, 256))
        .unwrap();
    let q = QTensor::quantize(&w, GgmlDType::Q4K).unwrap();
    let n = QTensor::quantize(&Tensor::ones(8, DType::F32, &dev).unwrap(), GgmlDType::F32).unwrap();
    let tokens = Value::Array(
        ["a", "b", "<s>"]
            .iter()
            .map(|t| Value::String((*t).into()))
            .collect(),
    );
    let metadata = [
        ("general.architecture", Value::String("phi3".into())),
        ("phi3.context_length", Value::U32(64)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", tokens),
        (
            "tokenizer.ggml.merges",
            Value::Array(vec![Value::String("a b".into())]),
        ),
    ];
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let mut file = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut file, &md, &[("w", &q), ("norm", &n)]).unwrap();
    drop(file);
    std::fs::read(&path).unwrap()
}

/// One change to a file.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the byte at a fraction of the length.
    Set(f64, u8),
    /// Overwrite eight bytes with a little-endian integer (length and count fields).
    Word(f64, u64),
    /// Cut the file at a fraction of its length.
    Truncate(f64),
    /// Insert bytes at a fraction of the length.
    Insert(f64, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0.0..1.0f64;
    let word = prop_oneof![
        any::<u64>(),
        Just(u64::MAX),
        Just(1 << 40),
        (0u64..4096),
        Just(0)
    ];
    prop_oneof![
        (at.clone(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        (at.clone(), word).prop_map(|(a, w)| Mutation::Word(a, w)),
        at.clone().prop_map(Mutation::Truncate),
        (at, prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(a, b)| Mutation::Insert(a, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |f: f64, len: usize| ((f * len as f64) as usize).min(len);
        match m {
            Mutation::Set(f, b) => {
                if !bytes.is_empty() {
                    let i = at(*f, bytes.len() - 1);
                    bytes[i] = *b;
                }
            }
            Mutation::Word(f, w) => {
                if bytes.len() >= 8 {
                    let i = at(*f, bytes.len() - 8);
                    bytes[i..i + 8].copy_from_slice(&w.to_le_bytes());
                }
            }
            Mutation::Truncate(f) => {
                let i = at(*f, bytes.len());
                bytes.truncate(i);
            }
            Mutation::Insert(f, extra) => {
                let i = at(*f, bytes.len());
                bytes.splice(i..i, extra.iter().copied());
            }
        }
    }
    bytes
}

/// A mutated valid file, or plain random bytes.
fn input(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(mutation(), 1..6).prop_map(move |ms| apply(seed.clone(), &ms)),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

fn read_safetensors(path: &Path) -> Result<(), BackendError> {
    tensor_descs(path)?;
    let reader = ReadSafetensors::open(&[path.to_path_buf()])?;
    for name in ["a", "b", "ids"] {
        use candle_nn::var_builder::SimpleBackend;
        if reader.contains_tensor(name) {
            reader.get_unchecked(name, DType::F32, &Device::Cpu)?;
        }
    }
    Ok(())
}

fn read_gguf(path: &Path) -> Result<(), BackendError> {
    let mut f = GgufFile::open(path)?;
    let _ = f.architecture();
    f.tensor_descs()?;
    let names: Vec<String> = f.content.tensor_infos.keys().cloned().collect();
    for name in names {
        f.tensor(&name, &Device::Cpu)?;
    }
    let _ = f.tokenizer(None);
    Ok(())
}

/// One case: `read` of `bytes` as a `.{ext}` file succeeds or fails naming the file, and no
/// allocation so far passed the cap.
fn read_case(
    bytes: &[u8],
    ext: &str,
    read: fn(&Path) -> Result<(), BackendError>,
) -> Result<(), TestCaseError> {
    let path = case_file(bytes, ext);
    if let Err(e) = read(&path) {
        prop_assert!(names_the_file(&e, &path), "{e}");
    }
    std::fs::remove_file(&path).ok();
    prop_assert!(ALLOCATOR.largest() <= ALLOCATION_CAP);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn safetensors_files_give_typed_errors(bytes in input(valid_safetensors())) {
        read_case(&bytes, "safetensors", read_safetensors)?;
    }

    #[test]
    fn gguf_files_give_typed_errors(bytes in input(valid_gguf())) {
        read_case(&bytes, "gguf", read_gguf)?;
    }
}

#[test]
fn the_unmutated_seeds_read_cleanly() {
    let st = case_file(&valid_safetensors(), "safetensors");
    read_safetensors(&st).unwrap();
    let gguf = case_file(&valid_gguf(), "gguf");
    read_gguf(&gguf).unwrap();
}
