//! One tiny checkpoint of every backend the pool serves, and `fixtures.json` listing them:
//! what `cargo xtask fixtures DIR` writes, so that anyone can smoke-test a build — the CLI and
//! the server serve each entry as it is, given its key and path — without downloading weights.

use std::path::{Path, PathBuf};

use model_networks::{Family, Pipeline};
use model_registry::{Backend, Capability};
use model_runtime::BackendError;
use serde::{Deserialize, Serialize};

use crate::{decode, diffusion, embed};

/// One entry of `fixtures.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fixture {
    /// The key to serve it under, e.g. `tiny/bert`.
    pub key: String,
    /// The backend (`--arch`), as `model_registry::Backend::as_str` names it.
    pub family: String,
    /// What it does, as `model_registry::Capability::as_str` names it.
    pub capability: String,
    /// The checkpoint (a folder, or a GGUF file), relative to the manifest's folder.
    pub path: PathBuf,
}

/// The manifest's file name.
pub const MANIFEST: &str = "fixtures.json";

fn capability_of(backend: Backend) -> Capability {
    match backend {
        Backend::Clip => Capability::ImageEmbedding,
        Backend::Phi3Gguf | Backend::Qwen3MoeGguf => Capability::TextToText,
        Backend::Llava15 => Capability::Vision,
        Backend::Flux | Backend::Sd3 => Capability::TextToImage,
        _ => Capability::TextEmbedding,
    }
}

/// Writes one checkpoint of `backend` under `dir`; its path relative to `dir`.
fn write_one(dir: &Path, backend: Backend) -> Result<PathBuf, BackendError> {
    let name = backend.as_str();
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).map_err(|e| BackendError::io(&folder, e))?;
    let rel = match backend {
        Backend::Phi3Gguf => {
            decode::write_phi3(&folder.join("model.gguf"), &decode::Geometry::phi3(), 1);
            PathBuf::from(name).join("model.gguf")
        }
        Backend::Qwen3MoeGguf => {
            decode::write_qwen3moe(&folder.join("model.gguf"), &decode::Geometry::qwen3moe(), 2);
            PathBuf::from(name).join("model.gguf")
        }
        Backend::Llava15 => {
            decode::write_llava(&folder, 3);
            PathBuf::from(name)
        }
        Backend::Flux | Backend::Sd3 => {
            let pipeline = if backend == Backend::Flux {
                Pipeline::Flux
            } else {
                Pipeline::Sd3
            };
            diffusion::write(&folder, pipeline, &diffusion::Geometry::tiny(pipeline), 4)?;
            PathBuf::from(name)
        }
        embedder => {
            let family = model_serving::config::embed_family(embedder)
                .expect("every other backend is an embedder");
            embed::write_tiny(&folder, family);
            PathBuf::from(name)
        }
    };
    Ok(rel)
}

/// Writes a tiny checkpoint of every backend under `dir` and `dir/fixtures.json` (to a
/// temporary file first, then renamed, so the manifest never names a half-written set).
pub fn write_all(dir: &Path) -> Result<Vec<Fixture>, BackendError> {
    std::fs::create_dir_all(dir).map_err(|e| BackendError::io(dir, e))?;
    let mut fixtures = Vec::new();
    for backend in Backend::ALL {
        let path = write_one(dir, backend)?;
        fixtures.push(Fixture {
            key: format!("tiny/{}", backend.as_str()),
            family: backend.as_str().to_owned(),
            capability: capability_of(backend).as_str().to_owned(),
            path,
        });
    }
    let manifest = dir.join(MANIFEST);
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    let text =
        serde_json::to_string_pretty(&fixtures).map_err(|e| BackendError::config(&manifest, e))?;
    std::fs::write(&tmp, text + "\n").map_err(|e| BackendError::io(&tmp, e))?;
    std::fs::rename(&tmp, &manifest).map_err(|e| BackendError::io(&manifest, e))?;
    Ok(fixtures)
}

/// Reads `dir/fixtures.json`.
pub fn read(dir: &Path) -> Result<Vec<Fixture>, BackendError> {
    model_runtime::model_dir::read_json(&dir.join(MANIFEST))
}

/// The embedding family of a fixture, if it is an embedder.
pub fn family_of(f: &Fixture) -> Option<Family> {
    model_serving::config::parse_backend(&f.family)
        .ok()
        .and_then(model_serving::config::embed_family)
}
