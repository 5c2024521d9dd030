//! The registry's facts as the backends use them: which family serves a key, the dtype of its
//! run profile, and its memory estimate split the way the pool reserves it (weights + overhead
//! resident; KV cache + activations per request).
//!
//! The facts are the spec TOMLs under `model-cards/` (read with `model_spec`): the directory
//! named by `MODEL_CARDS_DIR`, else the workspace's own. [`estimate_checkpoint`] re-runs the
//! same estimator on a checkpoint of a registry family with other sizes (a fine-tune, or the
//! tiny random checkpoints of the tests), reading its `config.json` and safetensors headers.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use model_spec::estimate::MemoryEstimate;
use model_spec::shapes::TensorDesc;
use model_spec::spec::{Fact, Provenance};
use model_spec::{Capability, Registry, RegistryModel, RunProfile};

use crate::config::DeclaredMemory;
use crate::error::BackendError;
use crate::model_dir::ModelDir;
use crate::models::{self, Family};

/// Environment variable naming the `model-cards` directory.
pub const ENV_CARDS_DIR: &str = "MODEL_CARDS_DIR";

/// The `model-cards` directory in use.
pub fn cards_dir() -> PathBuf {
    std::env::var_os(ENV_CARDS_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../model-cards"))
}

/// The parsed registry (loaded once).
pub fn registry() -> Result<&'static Registry, BackendError> {
    static REGISTRY: OnceLock<Result<Registry, String>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| Registry::load(&cards_dir()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| {
            BackendError::config(
                cards_dir(),
                format!("{e} (set {ENV_CARDS_DIR} to the model-cards directory)"),
            )
        })
}

/// What the backends take from a registry entry.
#[derive(Debug, Clone)]
pub struct RegistryInfo {
    /// The registry key.
    pub key: String,
    /// The backend family, if this crate serves the model.
    pub family: Option<Family>,
    /// The capability.
    pub capability: Capability,
    /// Load dtype of the run profile.
    pub dtype: Option<candle_core::DType>,
    /// Declared memory (from the `[memory]` table).
    pub memory: DeclaredMemory,
    /// The run profile the figure is for.
    pub profile: RunProfile,
    /// Query instruction recorded in the spec's serving facts.
    pub query_instruction: Option<String>,
}

/// Registry facts for `key`.
pub fn lookup(key: &str) -> Result<RegistryInfo, BackendError> {
    let reg = registry()?;
    let model = reg.get(key).ok_or_else(|| BackendError::UnknownFamily {
        key: key.to_owned(),
        why: format!("not in the registry at {}", reg.root.display()),
    })?;
    info(model)
}

/// Registry facts for every model, in registry order.
pub fn all() -> Result<Vec<RegistryInfo>, BackendError> {
    registry()?.models.iter().map(info).collect()
}

fn info(model: &RegistryModel) -> Result<RegistryInfo, BackendError> {
    let spec = &model.spec.spec;
    let key = spec.registry_key.get_ref().clone();
    let section = spec.memory.as_ref().ok_or_else(|| {
        BackendError::config(
            &model.spec.path,
            "no [memory] table; run `cargo xtask gen-memory-specs`",
        )
    })?;
    let profile = section.profile.clone();
    let images = spec.capability == Capability::ImageEmbedding;
    let memory = DeclaredMemory {
        resident_bytes: section.weights_bytes + section.overhead_bytes,
        per_request_bytes: section.kv_cache_bytes + section.activations_bytes,
        profile_batch: profile.batch.max(1),
        profile_seq_len: if images { None } else { profile.seq_len },
        estimate_mb: Some(section.est_memory_allocation_mb),
    };
    let query_instruction = spec
        .serving
        .get("query_instruction")
        .and_then(|f| f.get_ref().value.as_str().map(str::to_owned));
    Ok(RegistryInfo {
        family: Family::from_key(&key),
        capability: spec.capability,
        dtype: profile
            .load_dtype
            .map(crate::device::dtype_of)
            .transpose()?,
        key,
        memory,
        profile,
        query_instruction,
    })
}

/// The estimator's figure for the checkpoint in `dir`, a model of registry entry `key`'s
/// family at other sizes: the entry's spec with the architecture values of `dir/config.json`,
/// the tensor inventory of its safetensors headers and its tokenizer size, under `profile`
/// (the entry's run profile when `None`).
pub fn estimate_checkpoint(
    key: &str,
    dir: &ModelDir,
    profile: Option<&RunProfile>,
) -> Result<MemoryEstimate, BackendError> {
    let reg = registry()?;
    let entry = reg.get(key).ok_or_else(|| BackendError::UnknownFamily {
        key: key.to_owned(),
        why: "not in the registry".into(),
    })?;
    let family = Family::from_key(key).ok_or_else(|| BackendError::UnknownFamily {
        key: key.to_owned(),
        why: "no backend family".into(),
    })?;
    let mut spec = entry.spec.spec.clone();
    let profile = match profile {
        Some(p) => p.clone(),
        None => spec
            .profile()
            .cloned()
            .unwrap_or_else(|| entry.entry.profile.clone()),
    };
    let architecture = match family {
        Family::Bert => models::bert::Config::read(dir)?.spec_architecture(),
        Family::Stella => models::stella::Config::read(dir)?.spec_architecture(),
        Family::GteQwen2 => models::gte_qwen2::Config::read(dir)?.spec_architecture(),
        Family::JinaBert => models::jina::Config::read(dir)?.spec_architecture(),
        Family::NvEmbed => models::nvembed::Config::read(dir)?.spec_architecture(),
        Family::Clip => models::clip::Config::read(dir)?.spec_architecture(),
    };
    let separate: Vec<String> = profile
        .skip_on_load
        .iter()
        .chain(&profile.dequantize_on_load)
        .cloned()
        .collect();
    for component in &mut spec.components {
        let files = match component.name.as_str() {
            "model" => {
                set_architecture(component, &architecture);
                dir.safetensors("")?
            }
            "dense_1024" => {
                let (path, dense) = models::stella::read_dense(dir)?;
                set_architecture(
                    component,
                    &[
                        ("in_features", dense.in_features as u64),
                        ("out_features", dense.out_features as u64),
                    ],
                );
                dir.safetensors(&path)?
            }
            other => {
                return Err(BackendError::config(
                    &entry.spec.path,
                    format!("component `{other}` has no checkpoint mapping"),
                ));
            }
        };
        let mut tensors = Vec::new();
        for f in &files {
            tensors.extend(safetensors_header(f)?);
        }
        component.weights.inventory = model_spec::shapes::inventory(&tensors, &separate);
        component.weights.provenance = Provenance::Fetched;
    }
    if let Some(tok) = dir.optional("tokenizer.json") {
        let bytes = std::fs::metadata(&tok)
            .map_err(|e| BackendError::io(&tok, e))?
            .len();
        spec.serving.insert(
            "tokenizer_json_bytes".into(),
            spanned(toml::Value::Integer(bytes as i64)),
        );
    }
    model_spec::estimate(&spec, &profile).map_err(|e| BackendError::config(dir.root(), e))
}

fn spanned(value: toml::Value) -> toml::Spanned<Fact> {
    toml::Spanned::new(
        0..0,
        Fact {
            value,
            provenance: Provenance::Fetched,
            source: Some("checkpoint".into()),
            formula: None,
        },
    )
}

fn set_architecture(component: &mut model_spec::Component, values: &[(&str, u64)]) {
    for (k, v) in values {
        component
            .architecture
            .insert((*k).to_owned(), spanned(toml::Value::Integer(*v as i64)));
    }
}

/// The tensors named in a safetensors header (8-byte little-endian length, then JSON).
pub fn safetensors_header(path: &Path) -> Result<Vec<TensorDesc>, BackendError> {
    let mut file = std::fs::File::open(path).map_err(|e| BackendError::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| BackendError::io(path, e))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(BackendError::config(
            path,
            format!("safetensors header of {len} bytes is implausible"),
        ));
    }
    let mut json = vec![0u8; len as usize];
    file.read_exact(&mut json)
        .map_err(|e| BackendError::io(path, e))?;
    #[derive(serde::Deserialize)]
    struct Entry {
        dtype: String,
        shape: Vec<u64>,
    }
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|e| BackendError::config(path, e))?;
    let mut out = Vec::new();
    for (name, value) in header {
        if name == "__metadata__" {
            continue;
        }
        let entry: Entry = serde_json::from_value(value)
            .map_err(|e| BackendError::config(path, format!("{name}: {e}")))?;
        let dtype = entry
            .dtype
            .parse()
            .map_err(|e: String| BackendError::config(path, format!("{name}: {e}")))?;
        out.push(TensorDesc {
            name,
            shape: entry.shape,
            dtype,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_six_embedders_map_to_families_and_split_their_estimate() {
        let all = all().unwrap();
        let served: Vec<_> = all.iter().filter(|m| m.family.is_some()).collect();
        assert_eq!(
            served.len(),
            6,
            "{:?}",
            all.iter().map(|m| &m.key).collect::<Vec<_>>()
        );
        let minilm = lookup("sentence-transformers/all-MiniLM-L6-v2").unwrap();
        assert_eq!(minilm.family, Some(Family::Bert));
        assert_eq!(minilm.dtype, Some(candle_core::DType::F32));
        assert_eq!(minilm.memory.profile_seq_len, Some(256));
        let section = registry()
            .unwrap()
            .get(&minilm.key)
            .unwrap()
            .spec
            .spec
            .memory
            .clone()
            .unwrap();
        assert_eq!(
            minilm.memory.resident_bytes + minilm.memory.per_request_bytes + section.margin_bytes,
            section.total_bytes,
            "resident + per-request + margin is the estimate's total"
        );
        let gte = lookup("Alibaba-NLP/gte-Qwen2-1.5B-instruct").unwrap();
        assert!(gte.query_instruction.unwrap().starts_with("Instruct: "));
        let clip = lookup("openai/clip-vit-base-patch32").unwrap();
        assert_eq!(
            clip.memory.profile_seq_len, None,
            "CLIP batches count images"
        );
    }
}
