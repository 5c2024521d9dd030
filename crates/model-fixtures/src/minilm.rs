//! The real all-MiniLM-L6-v2 (from `tools/fetch-minilm.sh`) and the independent reference
//! embeddings in `tests/data/minilm-reference.json` (sentence-transformers on PyTorch, written
//! by `tools/minilm-reference.sh`; versions and date in `minilm-reference.provenance.json`).

use std::path::PathBuf;

/// The workspace root.
pub fn workspace() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// One reference text, its token count after truncation at 256 and its embedding (the text
/// encoded alone; the file also holds `embedding_batched`, from one call over every text).
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

/// The reference texts and embeddings, `tests/data/minilm-reference.json`.
pub fn reference() -> Vec<Reference> {
    let path = workspace().join("tests/data/minilm-reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reference embeddings missing: cannot read {} ({e}); regenerate them with \
             `tools/fetch-minilm.sh && tools/minilm-reference.sh`",
            path.display()
        )
    });
    let refs: Vec<Reference> = serde_json::from_str(&text)
        .expect("minilm-reference.json: [{text, n_tokens, embedding, …}]");
    assert!(
        refs.len() >= 8,
        "{} holds {} texts",
        path.display(),
        refs.len()
    );
    refs
}
