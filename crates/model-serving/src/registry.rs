//! The registry as serving uses it: the compile-time checked `CandleModelInfo` statics of
//! `model-registry`, and the spec TOMLs compiled into them, parsed once.
//!
//! Nothing here reads `model-cards/` at run time: a binary installed without the source tree
//! has every fact it was built with. Which backend serves a model, its query instruction,
//! chat template, sampling defaults and run profile are fields of its static; the full spec is
//! there for the estimator, which re-runs at other sizes (a text-to-image request's resolution,
//! a checkpoint outside the registry of a registry family).

use std::path::Path;
use std::sync::OnceLock;

use model_registry::{Backend, CandleModelInfo};
use model_spec::{Registry, RegistryModel};

use crate::error::ServeError;

/// How the registry's own files are named in messages.
pub const CARDS_ROOT: &str = "model-cards";

/// The registry entry of `key`.
pub fn lookup(key: &str) -> Result<&'static CandleModelInfo, ServeError> {
    model_registry::by_key(key).ok_or_else(|| ServeError::NotInRegistry {
        model: key.to_owned(),
    })
}

/// The registry's specs, parsed from the texts compiled into it.
pub fn specs() -> Result<&'static Registry, ServeError> {
    static REGISTRY: OnceLock<Result<Registry, String>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            Registry::from_texts(Path::new(CARDS_ROOT), model_registry::MODELS_TOML, |rel| {
                model_registry::ALL
                    .iter()
                    .find(|m| {
                        m.spec_path
                            .strip_prefix(CARDS_ROOT)
                            .and_then(|p| p.strip_prefix('/'))
                            == Some(rel)
                    })
                    .map(|m| m.spec_toml)
            })
            .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ServeError::Registry { message: e.clone() })
}

/// The spec of a registry model.
pub fn spec(info: &CandleModelInfo) -> Result<&'static RegistryModel, ServeError> {
    specs()?
        .get(info.registry_key)
        .ok_or_else(|| ServeError::Registry {
            message: format!(
                "`{}` has no spec in the compiled registry",
                info.registry_key
            ),
        })
}

/// The registry model whose spec describes `backend`'s architecture: the template the
/// estimator fills with the facts of another checkpoint of that architecture.
pub fn template(backend: Backend) -> Result<&'static CandleModelInfo, ServeError> {
    model_registry::ALL
        .iter()
        .copied()
        .find(|m| m.backend == Some(backend))
        .ok_or_else(|| ServeError::Registry {
            message: format!("no registry model is served by the {backend} backend"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_registry::Capability;

    #[test]
    fn every_registry_model_has_its_spec_compiled_in_and_eleven_have_a_backend() {
        let reg = specs().unwrap();
        assert_eq!(reg.models.len(), model_registry::ALL.len());
        for m in model_registry::ALL {
            let s = spec(m).unwrap();
            assert_eq!(s.spec.spec.registry_key.get_ref(), m.registry_key);
        }
        let served = model_registry::ALL
            .iter()
            .filter(|m| m.backend.is_some())
            .count();
        assert_eq!(served, 11);
        let kimi = lookup("unsloth/Kimi-K2-Instruct-GGUF").unwrap();
        assert_eq!(
            (kimi.backend, kimi.serving.architecture),
            (None, "deepseek2")
        );
        assert_eq!(
            template(Backend::Flux).unwrap().capability,
            Capability::TextToImage
        );
        for b in Backend::ALL {
            assert_eq!(template(b).unwrap().backend, Some(b), "{b}");
        }
        assert!(matches!(
            lookup("no/such-model"),
            Err(ServeError::NotInRegistry { .. })
        ));
    }
}
