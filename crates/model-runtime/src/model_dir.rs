//! A model checkpoint on disk in the Hugging Face Hub's layout: `config.json`,
//! `tokenizer.json`, `model.safetensors` (or shards named by `model.safetensors.index.json`) and
//! the Sentence-Transformers files (`modules.json`, `sentence_bert_config.json`, `2_Dense_*/`).
//!
//! A directory is either given directly or found in the Hub cache (located by
//! `model_spec::hub_cache`: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`), where a repo lives in
//! `models--<owner>--<name>/snapshots/<commit>/` and `refs/<revision>` names the commit. Nothing
//! is downloaded here: fetching is a separate, explicit step.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::BackendError;

/// A checkpoint directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDir {
    root: PathBuf,
}

/// One entry of a Sentence-Transformers `modules.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StModule {
    /// Folder of the module, relative to the checkpoint (`""` for the transformer itself).
    #[serde(default)]
    pub path: String,
    /// Python class, e.g. `sentence_transformers.models.Normalize`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl ModelDir {
    /// A local directory in the Hub layout.
    pub fn local(root: impl Into<PathBuf>) -> Result<Self, BackendError> {
        let root = root.into();
        if !root.is_dir() {
            return Err(BackendError::io(
                &root,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
            ));
        }
        Ok(ModelDir { root })
    }

    /// The snapshot of `repo` (`owner/name`) at `revision` (a branch, a tag or a commit sha;
    /// `main` when `None`) in the hf-hub cache.
    pub fn hf_cache(repo: &str, revision: Option<&str>) -> Result<Self, BackendError> {
        let cache =
            model_spec::hub_cache::cache_dir().ok_or_else(|| BackendError::MissingFile {
                dir: PathBuf::from("~/.cache/huggingface/hub"),
                file: repo.to_owned(),
                why: "no hf-hub cache directory (set HF_HUB_CACHE or HF_HOME)",
            })?;
        Self::in_cache(&cache, repo, revision)
    }

    /// Like [`hf_cache`](Self::hf_cache) with an explicit cache root.
    pub fn in_cache(
        cache: &Path,
        repo: &str,
        revision: Option<&str>,
    ) -> Result<Self, BackendError> {
        let repo_dir = model_spec::hub_cache::repo_dir(cache, repo);
        let revision = revision.unwrap_or("main");
        let commit = if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
            revision.to_owned()
        } else {
            let refs = repo_dir.join("refs").join(revision);
            std::fs::read_to_string(&refs)
                .map_err(|e| BackendError::io(&refs, e))?
                .trim()
                .to_owned()
        };
        Self::local(repo_dir.join("snapshots").join(commit))
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `name` if it exists.
    pub fn optional(&self, name: &str) -> Option<PathBuf> {
        let path = self.root.join(name);
        path.is_file().then_some(path)
    }

    /// `name`, which the model needs for `why`.
    pub fn file(&self, name: &str, why: &'static str) -> Result<PathBuf, BackendError> {
        self.optional(name)
            .ok_or_else(|| BackendError::MissingFile {
                dir: self.root.clone(),
                file: name.to_owned(),
                why,
            })
    }

    /// Parses the JSON file `name`.
    pub fn json<T: DeserializeOwned>(
        &self,
        name: &str,
        why: &'static str,
    ) -> Result<T, BackendError> {
        read_json(&self.file(name, why)?)
    }

    /// Parses the JSON file `name` if it exists.
    pub fn optional_json<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, BackendError> {
        self.optional(name).map(|p| read_json(&p)).transpose()
    }

    /// The safetensors files of the module in folder `prefix` (`""` for the main model):
    /// `model.safetensors`, or every shard named in `model.safetensors.index.json`.
    pub fn safetensors(&self, prefix: &str) -> Result<Vec<PathBuf>, BackendError> {
        let join = |name: &str| {
            if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            }
        };
        if let Some(single) = self.optional(&join("model.safetensors")) {
            return Ok(vec![single]);
        }
        let index_name = join("model.safetensors.index.json");
        let Some(index) = self.optional(&index_name) else {
            return Err(BackendError::MissingFile {
                dir: self.root.clone(),
                file: join("model.safetensors"),
                why: "the weights (or model.safetensors.index.json naming the shards)",
            });
        };
        #[derive(Deserialize)]
        struct Index {
            weight_map: std::collections::BTreeMap<String, String>,
        }
        let parsed: Index = read_json(&index)?;
        let shards: BTreeSet<&String> = parsed.weight_map.values().collect();
        shards
            .into_iter()
            .map(|s| {
                self.file(
                    &join(s),
                    "a weight shard named in model.safetensors.index.json",
                )
            })
            .collect()
    }

    /// The Sentence-Transformers modules (`modules.json`), if the checkpoint has them.
    pub fn st_modules(&self) -> Result<Option<Vec<StModule>>, BackendError> {
        self.optional_json("modules.json")
    }

    /// The folder of the first Sentence-Transformers module whose class ends with `class`.
    pub fn st_module_path(&self, class: &str) -> Result<Option<String>, BackendError> {
        Ok(self.st_modules()?.and_then(|mods| {
            mods.into_iter()
                .find(|m| m.kind.ends_with(class))
                .map(|m| m.path)
        }))
    }

    /// `max_seq_length` from `sentence_bert_config.json` (the truncation length
    /// Sentence-Transformers applies), if present.
    pub fn st_max_seq_length(&self) -> Result<Option<usize>, BackendError> {
        #[derive(Deserialize)]
        struct SbertConfig {
            max_seq_length: Option<usize>,
        }
        Ok(self
            .optional_json::<SbertConfig>("sentence_bert_config.json")?
            .and_then(|c| c.max_seq_length))
    }
}

/// Reads and parses a JSON file; the error names the file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, BackendError> {
    let text = std::fs::read_to_string(path).map_err(|e| BackendError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| BackendError::config(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("model-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn hf_cache_layout_resolves_refs_and_shas() {
        let cache = scratch("cache");
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let snap = cache.join("models--acme--tiny/snapshots").join(sha);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(cache.join("models--acme--tiny/refs")).unwrap();
        std::fs::write(
            cache.join("models--acme--tiny/refs/main"),
            format!("{sha}\n"),
        )
        .unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        let by_ref = ModelDir::in_cache(&cache, "acme/tiny", None).unwrap();
        assert_eq!(by_ref.root(), snap);
        let by_sha = ModelDir::in_cache(&cache, "acme/tiny", Some(sha)).unwrap();
        assert_eq!(by_sha.root(), snap);
        assert!(ModelDir::in_cache(&cache, "acme/other", None).is_err());
    }

    #[test]
    fn shards_come_from_the_index_and_missing_weights_name_the_file() {
        let dir = scratch("shards");
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            r#"{"metadata":{},"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("model-00001-of-00002.safetensors"), b"").unwrap();
        let md = ModelDir::local(&dir).unwrap();
        let err = md.safetensors("").unwrap_err().to_string();
        assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
        std::fs::write(dir.join("model-00002-of-00002.safetensors"), b"").unwrap();
        let files = md.safetensors("").unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[0].ends_with("model-00001-of-00002.safetensors"));
        let err = md.safetensors("2_Dense_1024").unwrap_err().to_string();
        assert!(err.contains("2_Dense_1024/model.safetensors"), "{err}");
    }
}
