//! The registry's facts as the backends use them: which family serves a key, the dtype of its
//! run profile, and its memory estimate split the way the pool reserves it (weights + overhead
//! resident; KV cache + activations per request).
//!
//! The facts are the compile-time checked `CandleModelInfo` statics of `model-registry`.
//! [`estimate_checkpoint`] re-runs the same estimator on a checkpoint of a registry family with
//! other sizes (a fine-tune, or the tiny random checkpoints of the tests), reading its
//! `config.json` and safetensors headers; it needs the spec TOMLs under `model-cards/` (the
//! directory named by `MODEL_CARDS_DIR`, else the workspace's own).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use model_pool::DeviceId;
use model_registry::CandleModelInfo;
use model_spec::estimate::MemoryEstimate;
use model_spec::shapes::TensorDesc;
use model_spec::spec::{Fact, Provenance};
use model_spec::{Registry, RunProfile};

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

/// The parsed spec TOMLs (loaded once), for [`estimate_checkpoint`].
pub fn specs() -> Result<&'static Registry, BackendError> {
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
#[derive(Debug, Clone, Copy)]
pub struct RegistryInfo {
    /// The registry entry.
    pub model: &'static CandleModelInfo,
    /// The backend family, if this crate serves the model.
    pub family: Option<Family>,
    /// Load dtype of the run profile (`None`: kept as stored).
    pub dtype: Option<candle_core::DType>,
    /// Declared memory, split for the pool.
    pub memory: DeclaredMemory,
}

impl RegistryInfo {
    /// The registry key.
    pub fn key(&self) -> &'static str {
        self.model.registry_key
    }

    /// The query instruction of the family (GTE-Qwen2, Stella, NV-Embed).
    pub fn query_instruction(&self) -> Option<&'static str> {
        match self.family? {
            Family::GteQwen2 => Some(models::gte_qwen2::QUERY_INSTRUCTION),
            Family::Stella => Some(models::stella::QUERY_INSTRUCTION),
            Family::NvEmbed => Some(models::nvembed::QUERY_INSTRUCTION),
            Family::Bert | Family::JinaBert | Family::Clip => None,
        }
    }
}

/// Registry facts for `key`.
pub fn lookup(key: &str) -> Result<RegistryInfo, BackendError> {
    let model = model_registry::by_key(key).ok_or_else(|| BackendError::UnknownFamily {
        key: key.to_owned(),
        why: "not in the registry (model-registry's ALL)".to_owned(),
    })?;
    info(model)
}

/// Registry facts for every model, in registry order.
pub fn all() -> Result<Vec<RegistryInfo>, BackendError> {
    model_registry::ALL.iter().map(|m| info(m)).collect()
}

fn info(model: &'static CandleModelInfo) -> Result<RegistryInfo, BackendError> {
    let profile = &model.default_profile;
    let images = model.capability == model_registry::Capability::ImageEmbedding;
    let memory = DeclaredMemory {
        resident_bytes: model.memory.resident_bytes(),
        per_request_bytes: model.memory.per_request_bytes(),
        profile_batch: profile.batch.max(1) as u64,
        profile_seq_len: if images {
            None
        } else {
            profile.seq_len.map(|s| s as u64)
        },
        estimate_mb: Some(model.est_memory_allocation_mb as u64),
    };
    let dtype = profile
        .load_dtype
        .map(crate::device::parse_dtype)
        .transpose()?;
    Ok(RegistryInfo {
        model,
        family: Family::from_key(model.registry_key),
        dtype,
        memory,
    })
}

/// The pool's view of a registry model on `device`, with the registry's own split: weights +
/// overhead resident, KV cache + activations per request. (The backends' pool declares one
/// *batch* per request instead; see [`ModelConfig::pool_spec`](crate::ModelConfig::pool_spec).)
pub fn pool_spec(model: &CandleModelInfo, device: DeviceId) -> model_pool::ModelSpec {
    model_pool::ModelSpec::new(
        model.registry_key,
        device,
        model.memory.resident_bytes(),
        model.memory.per_request_bytes(),
    )
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
    let reg = specs()?;
    let entry = reg.get(key).ok_or_else(|| BackendError::UnknownFamily {
        key: key.to_owned(),
        why: "not in the registry".into(),
    })?;
    let family = Family::from_key(key).ok_or_else(|| BackendError::UnknownFamily {
        key: key.to_owned(),
        why: "no backend family".into(),
    })?;
    let mut spec = entry.spec.spec.clone();
    let mut profile = match profile {
        Some(p) => p.clone(),
        None => spec
            .profile()
            .cloned()
            .unwrap_or_else(|| entry.entry.profile.clone()),
    };
    // A request of the profile, as this checkpoint can see it: no longer than its own input
    // limit, and images at the size the model resizes every image to.
    if let Some(s) = profile.seq_len {
        profile.seq_len = Some(s.min(models::own_limit(dir, family)? as u64));
    }
    if family == Family::Clip {
        profile.image_size = Some(models::clip::Config::read(dir)?.vision_config.image_size as u64);
    }
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

/// The tensors named in a safetensors header (read without the data).
pub fn safetensors_header(path: &Path) -> Result<Vec<TensorDesc>, BackendError> {
    let header = crate::models::reader::Header::read(path)?;
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
            all.iter().map(|m| m.key()).collect::<Vec<_>>()
        );
        let minilm = lookup("sentence-transformers/all-MiniLM-L6-v2").unwrap();
        assert_eq!(minilm.family, Some(Family::Bert));
        assert_eq!(minilm.dtype, Some(candle_core::DType::F32));
        assert_eq!(minilm.memory.profile_seq_len, Some(256));
        let m = minilm.model.memory;
        // Each part carries its share of the margin, rounded up: at most a byte per part off.
        let reserved = minilm.memory.resident_bytes + minilm.memory.per_request_bytes;
        assert!(
            reserved.abs_diff(m.total_bytes) <= 2,
            "resident + per-request is the estimate's total: {reserved} vs {}",
            m.total_bytes
        );
        let spec = pool_spec(minilm.model, DeviceId::Cpu);
        assert_eq!(spec.need_bytes(), reserved);
        let gte = lookup("Alibaba-NLP/gte-Qwen2-1.5B-instruct").unwrap();
        assert!(gte.query_instruction().unwrap().starts_with("Instruct: "));
        let clip = lookup("openai/clip-vit-base-patch32").unwrap();
        assert_eq!(
            clip.memory.profile_seq_len, None,
            "CLIP batches count images"
        );
        assert!(lookup("microsoft/phi-4").unwrap().family.is_none());
    }
}
