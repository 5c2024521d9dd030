//! Shared helpers for model-spec's integration tests.
#![allow(dead_code)]

use model_spec::Registry;
use std::path::{Path, PathBuf};

pub fn cards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../model-cards")
}

pub fn registry() -> Registry {
    Registry::load(&cards_dir()).unwrap_or_else(|e| panic!("checked-in model-cards must load: {e}"))
}

/// The real all-MiniLM-L6-v2 checkout (`$MINILM_DIR` or `.cache/all-MiniLM-L6-v2`).
/// Fails, saying how to get it, when missing: this test is never skipped.
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/all-MiniLM-L6-v2")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "the real all-MiniLM-L6-v2 is missing from {}: run `tools/fetch-minilm.sh` (or set MINILM_DIR)",
        dir.display()
    );
    dir
}
