//! Tiny random-weight checkpoints of every family the pool serves, written the way the real
//! ones are stored (Hub-layout folders, safetensors and GGUF files, real tokenizer files), so
//! that they go through the same loading code as real checkpoints; and the real
//! all-MiniLM-L6-v2 with its reference embeddings.
//!
//! * [`embed`] — the six embedding families; [`decode`] — Phi-3 and Qwen3-MoE GGUFs and a
//!   LLaVA 1.5 checkpoint; [`reference`] — an independent plain-`f32` decoder forward pass
//!   over a GGUF's dequantized weights; [`diffusion`] — FLUX and SD3.5 checkpoints of any
//!   geometry (tiny for tests, full size for memory measurements); [`minilm`] — the real
//!   MiniLM; [`manifest`] — one of each, with the `fixtures.json` the CLI serves;
//!   [`spec_checkpoint`] — any served registry model at its spec's geometry (or a tiny one),
//!   streamed to disk, for the GPU measurements;
//!   [`robustness`] — the allocation tracking of the property tests.
//!
//! Unpublished: used by the tests, the measurement programs and `cargo xtask fixtures`.

pub mod decode;
pub mod diffusion;
pub mod embed;
pub mod manifest;
pub mod minilm;
pub mod reference;
pub mod robustness;
pub mod spec_checkpoint;
mod stream;
mod tokenizer;
mod weights;

use std::path::{Path, PathBuf};

use model_runtime::BackendError;

/// A fresh scratch directory for this process.
pub fn scratch(name: &str) -> PathBuf {
    // Unique within the process: tests run in parallel and each writes its own checkpoint.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir()
        .join(format!("model-fixtures-{}", std::process::id()))
        .join(format!("{name}-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Deterministic uniform numbers in [-1, 1).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, center: f32, spread: f32) -> Vec<f32> {
        (0..n).map(|_| center + spread * self.uniform()).collect()
    }
}

/// Writes `value` as pretty JSON at `path`, creating its folder.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), BackendError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| BackendError::io(parent, e))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| BackendError::config(path, e))?;
    std::fs::write(path, text).map_err(|e| BackendError::io(path, e))
}

/// Cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    dot / (norm(a) * norm(b))
}

/// L2 norm.
pub fn norm(a: &[f32]) -> f64 {
    a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}
