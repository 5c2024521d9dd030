//! Spec types for the model cards, TOML parsing with located errors, validation and the
//! memory estimator. No network, no candle: everything here is pure and deterministic, so the
//! registry's build script, the proc-macro, xtask and the pool all agree.
//!
//! ```
//! use model_spec::Registry;
//! let cards = concat!(env!("CARGO_MANIFEST_DIR"), "/../../model-cards");
//! let reg = Registry::load(std::path::Path::new(cards)).unwrap();
//! assert_eq!(reg.models.len(), 12);
//! ```

pub mod card;
pub mod dtype;
pub mod error;
pub mod estimate;
pub mod hub_cache;
pub mod list;
pub mod memory;
pub mod profile;
pub mod shapes;
pub mod size;
pub mod spec;
pub mod specgen;
pub mod validate;

pub use dtype::DType;
pub use error::SpecError;
pub use estimate::{ESTIMATOR_VERSION, MB, MemoryEstimate, estimate};
pub use list::{ModelEntry, ModelList, check_repo_id, load_list, parse_list};
pub use memory::{MemorySection, fingerprint};
pub use profile::{Device, RunProfile};
pub use spec::{
    Capability, Component, Fact, Family, Format, LoadedSpec, ModelSpec, Provenance, load_spec,
    parse_spec,
};

use std::path::{Path, PathBuf};

/// One registry model: its list entry and its parsed spec.
#[derive(Debug, Clone)]
pub struct RegistryModel {
    pub entry: ModelEntry,
    pub spec: LoadedSpec,
}

/// `model-cards/`: the list plus every spec, cross-checked.
#[derive(Debug, Clone)]
pub struct Registry {
    pub root: PathBuf,
    pub models: Vec<RegistryModel>,
}

/// Name of the list file inside the model-cards folder.
pub const LIST_FILE: &str = "models.toml";

impl Registry {
    /// Loads `root/models.toml` and every spec it names.
    pub fn load(root: &Path) -> Result<Registry, SpecError> {
        let list = load_list(&root.join(LIST_FILE))?;
        let mut models = Vec::with_capacity(list.models.len());
        for entry in list.models {
            let spec = load_spec(&root.join(&entry.spec))?;
            validate::check_against_entry(&spec, &entry)?;
            models.push(RegistryModel { entry, spec });
        }
        Ok(Registry {
            root: root.to_path_buf(),
            models,
        })
    }

    /// The registry from texts instead of files: `list` is models.toml, `spec` gives the text
    /// of each spec path it names (relative to `root`, which only names files in errors).
    /// This is how a binary rebuilds the registry it was compiled with, without the files.
    pub fn from_texts<'a>(
        root: &Path,
        list: &str,
        spec: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Registry, SpecError> {
        let list = parse_list(&root.join(LIST_FILE), list)?;
        let mut models = Vec::with_capacity(list.models.len());
        for entry in list.models {
            let path = root.join(&entry.spec);
            let text = spec(&entry.spec).ok_or_else(|| {
                SpecError::new(
                    &path,
                    "(file)",
                    "the spec text is missing from the registry",
                )
            })?;
            let spec = parse_spec(&path, text)?;
            validate::check_against_entry(&spec, &entry)?;
            models.push(RegistryModel { entry, spec });
        }
        Ok(Registry {
            root: root.to_path_buf(),
            models,
        })
    }

    /// Every spec file path (for `cargo::rerun-if-changed`).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v = vec![self.root.join(LIST_FILE)];
        v.extend(self.models.iter().map(|m| m.spec.path.clone()));
        v
    }

    pub fn get(&self, key: &str) -> Option<&RegistryModel> {
        self.models.iter().find(|m| m.entry.key.get_ref() == key)
    }
}
