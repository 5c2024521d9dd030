//! `model-cards/models.toml`: the registry list.

use crate::error::{SpecError, from_toml, line_of};
use crate::profile::RunProfile;
use crate::spec::{Capability, Format};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use toml::Spanned;

/// One `[[model]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Hub repo id, also the registry key.
    pub key: Spanned<String>,
    pub capability: Capability,
    /// Spec file, relative to the folder of models.toml.
    pub spec: String,
    pub format: Format,
    /// Quantization / storage type used (`F32`, `FP16`, `Q4_K_M` …).
    pub quantization: String,
    /// Weight files (or globs such as `Q4_K_M/*.gguf`) this registry uses from the repo.
    pub files: Vec<String>,
    /// Pin for fetch-cards; default `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub profile: RunProfile,
    /// The figure the original registry shipped, for the comparison in MEMORY_SPECS.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_mb: Option<u64>,
    /// One line on why our figure differs from `original_mb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_note: Option<String>,
}

/// The parsed list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelList {
    pub schema_version: u32,
    #[serde(rename = "model")]
    pub models: Vec<ModelEntry>,
}

/// Checks a Hub repo id: `owner/name`, each part `[A-Za-z0-9][A-Za-z0-9._-]*`, no `..`.
pub fn check_repo_id(id: &str) -> Result<(), String> {
    let parts: Vec<&str> = id.split('/').collect();
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !p.contains("..")
            && !p.ends_with('.')
    };
    if parts.len() != 2 || !parts.iter().all(|p| ok_part(p)) {
        return Err(format!(
            "`{id}` is not a Hub repo id; expected `owner/name` with letters, digits, `.`, `_` or `-` (e.g. `sentence-transformers/all-MiniLM-L6-v2`)"
        ));
    }
    Ok(())
}

/// Parses models.toml text and validates it (repo ids, duplicate keys, spec paths).
pub fn parse_list(path: &Path, text: &str) -> Result<ModelList, SpecError> {
    let list: ModelList = toml::from_str(text).map_err(|e| from_toml(path, text, &e))?;
    if list.schema_version != crate::spec::SCHEMA_VERSION {
        return Err(SpecError::new(
            path,
            "schema_version",
            format!(
                "schema_version {} is not supported (expected {})",
                list.schema_version,
                crate::spec::SCHEMA_VERSION
            ),
        )
        .at(text
            .lines()
            .position(|l| l.starts_with("schema_version"))
            .map(|i| i + 1)));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, m) in list.models.iter().enumerate() {
        let line = line_of(text, m.key.span().start);
        let field = format!("model[{i}].key");
        check_repo_id(m.key.get_ref())
            .map_err(|msg| SpecError::new(path, &field, msg).at(Some(line)))?;
        if let Some(first) = seen.insert(m.key.get_ref(), line) {
            return Err(SpecError::new(
                path,
                &field,
                format!(
                    "duplicate registry key `{}` (first at line {first})",
                    m.key.get_ref()
                ),
            )
            .at(Some(line))
            .fix("each model appears once; remove or rename one entry"));
        }
        let spec_ok = m.spec.ends_with(".toml")
            && !m.spec.starts_with('/')
            && m.spec.split('/').all(|p| !p.is_empty() && p != "..")
            && m.spec.starts_with(&format!("{}/", m.capability));
        if !spec_ok {
            return Err(SpecError::new(
                path,
                format!("model[{i}].spec"),
                format!(
                    "spec path `{}` must be `{}/<slug>.toml`, relative to model-cards/",
                    m.spec, m.capability
                ),
            )
            .at(Some(line)));
        }
        if m.files.is_empty() {
            return Err(
                SpecError::new(path, format!("model[{i}].files"), "lists no weight files")
                    .at(Some(line)),
            );
        }
    }
    Ok(list)
}

/// Reads and parses models.toml.
pub fn load_list(path: &Path) -> Result<ModelList, SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::new(path, "(file)", format!("cannot read the model list: {e}")))?;
    parse_list(path, &text)
}
