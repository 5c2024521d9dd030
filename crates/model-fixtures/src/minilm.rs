//! The real all-MiniLM-L6-v2 (from `tools/fetch-minilm.sh`) and its reference embeddings.

use std::path::PathBuf;

/// The workspace root.
pub fn workspace() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// One reference text and its embedding.
#[derive(serde::Deserialize)]
pub struct Reference {
    pub text: String,
    pub n_tokens: usize,
    pub embedding: Vec<f32>,
}

/// The checkpoint directory (`$MINILM_DIR`, else `.cache/all-MiniLM-L6-v2`); fails saying how
/// to get it when it is missing.
pub fn checkpoint() -> PathBuf {
    let dir = std::env::var_os("MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").is_file() && dir.join("tokenizer.json").is_file(),
        "the real all-MiniLM-L6-v2 is not in {}: run `tools/fetch-minilm.sh` (or set MINILM_DIR)",
        dir.display()
    );
    dir
}

/// `../shared/minilm-reference.json`.
pub fn reference() -> Vec<Reference> {
    let path = workspace().join("../shared/minilm-reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reference embeddings missing: cannot read {} ({e}); it ships in `shared/` beside the checkout",
            path.display()
        )
    });
    let refs: Vec<Reference> =
        serde_json::from_str(&text).expect("minilm-reference.json: [{text, n_tokens, embedding}]");
    assert!(!refs.is_empty());
    refs
}
