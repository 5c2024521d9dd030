//! The loaders against random and mutated `config.json` and `tokenizer.json` files of a tiny
//! checkpoint: every input gets a typed error naming the file, or loads — never a panic, an
//! abort, or an allocation out of proportion with the checkpoint.
//!
//! 10,000 cases per file by default; `PROPTEST_CASES=100000 cargo test -p model-networks
//! --test robust_configs --release` is the longer run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device};
use model_fixtures::robustness::{TrackingAllocator, cases};
use model_networks::embed::text::{Overflow, TextEncoder, TextMode, TextRules};
use model_networks::embed::{self, BatchLimits, EncoderParams};
use model_networks::{EmbeddingModel, Family};
use model_runtime::{BackendError, ModelDir};
use proptest::prelude::*;
use serde_json::Value;

/// Records the largest single allocation of the process.
#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator::new();

/// Far above what a tiny checkpoint (a few hundred kilobytes) needs to load.
const ALLOCATION_CAP: usize = 64 << 20;

/// A tiny BERT written once; each case copies it and replaces one file.
fn seed() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| model_fixtures::embed::tiny(Family::Bert))
}

fn case_dir(file: &str, bytes: &[u8]) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("robust-configs-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(seed()).unwrap().flatten() {
        let to = dir.join(entry.file_name());
        if entry.path().is_file() {
            // Hard links keep ten thousand copies of the weights cheap.
            std::fs::hard_link(entry.path(), &to)
                .or_else(|_| std::fs::copy(entry.path(), &to).map(|_| ()))
                .unwrap();
        }
    }
    let path = dir.join(file);
    let _ = std::fs::remove_file(&path);
    std::fs::write(path, bytes).unwrap();
    dir
}

/// Loads the checkpoint the way the pool does, detecting its family first.
fn load(dir: &Path) -> Result<(), BackendError> {
    let md = ModelDir::local(dir)?;
    let family = Family::detect(&md)?;
    embed::own_limit(&md, family)?;
    let params = EncoderParams {
        key: "fuzzed".into(),
        family,
        dtype: DType::F32,
        max_input_tokens: None,
        overflow: Overflow::Truncate,
        normalize: true,
        query_instruction: None,
        batch: BatchLimits::default(),
    };
    let model = EmbeddingModel::load(&md, &params, &Device::Cpu)?;
    model.embed_texts(&["hello world".to_owned()], &TextMode::Document)?;
    Ok(())
}

/// Errors name the file at fault (or the checkpoint folder holding it).
fn names(e: &BackendError, dir: &Path, file: &str) -> bool {
    let text = e.to_string();
    text.contains(file) || text.contains(&dir.display().to_string())
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            any::<i64>(),
            Just(0i64),
            Just(-1),
            Just(1 << 40),
            Just(i64::MAX),
            0i64..1024
        ]
        .prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z_]{0,12}".prop_map(Value::from),
        Just(Value::Array(vec![])),
    ]
}

/// A JSON object with some fields replaced by other values or removed.
fn mutated_json(seed: Value) -> impl Strategy<Value = Vec<u8>> {
    let keys: Vec<String> = seed
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let n = keys.len().max(1);
    let edit = (0..n, prop::option::of(json_value()));
    prop_oneof![
        4 => prop::collection::vec(edit, 1..4).prop_map(move |edits| {
            let mut v = seed.clone();
            if let Some(o) = v.as_object_mut() {
                for (i, value) in edits {
                    let key = &keys[i % keys.len().max(1)];
                    match value {
                        Some(x) => {
                            o.insert(key.clone(), x);
                        }
                        None => {
                            o.remove(key);
                        }
                    }
                }
            }
            serde_json::to_vec(&v).unwrap()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..128),
    ]
}

fn file_json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(seed().join(name)).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn config_json_gives_typed_errors(bytes in mutated_json(file_json("config.json"))) {
        let dir = case_dir("config.json", &bytes);
        if let Err(e) = load(&dir) {
            prop_assert!(names(&e, &dir, "config.json") || names(&e, &dir, "model.safetensors"), "{e}");
        }
        std::fs::remove_dir_all(&dir).ok();
        prop_assert!(ALLOCATOR.largest() <= ALLOCATION_CAP);
    }

    #[test]
    fn tokenizer_json_gives_typed_errors(bytes in mutated_json(file_json("tokenizer.json"))) {
        let dir = case_dir("tokenizer.json", &bytes);
        let path = dir.join("tokenizer.json");
        let encoded = TextEncoder::from_file(&path, 24, Overflow::Truncate, TextRules::default())
            .and_then(|t| t.encode(&["hello world".to_owned()], &TextMode::Document).map_err(BackendError::from));
        if let Err(e) = encoded {
            prop_assert!(names(&e, &dir, "tokenizer.json") || matches!(e, BackendError::Input(_)), "{e}");
        }
        std::fs::remove_dir_all(&dir).ok();
        prop_assert!(ALLOCATOR.largest() <= ALLOCATION_CAP);
    }
}

#[test]
fn the_unmutated_checkpoint_loads() {
    load(seed()).unwrap();
}
