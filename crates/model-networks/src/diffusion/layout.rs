//! Where each component of a pipeline lives in a checkpoint directory in the Hub layout.
//!
//! The weight files are the ones the registry spec names for the component (so the memory
//! figure and the loader read the same bytes); the configs are the Diffusers `config.json` files
//! the Hub repositories ship next to them, and the tokenizers their `tokenizer*/` folders.
//! SD3.5's single-file checkpoint holds two components under different prefixes.

use std::path::PathBuf;

use model_spec::ModelSpec;

use super::Pipeline;
use model_runtime::{BackendError, ModelDir};

/// One component as the loader finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Component name in the spec (`transformer`, `t5_xxl` …).
    pub component: &'static str,
    /// Its `config.json`, relative to the checkpoint.
    pub config: &'static str,
    /// Tensor-name prefix inside its files (`""`: none).
    pub prefix: &'static str,
    /// Its tokenizer folder, for text encoders.
    pub tokenizer: Option<&'static str>,
}

/// A text encoder: its `config.json` and its tokenizer folder.
const fn text_encoder(
    component: &'static str,
    config: &'static str,
    tokenizer: &'static str,
) -> Part {
    Part {
        component,
        config,
        prefix: "",
        tokenizer: Some(tokenizer),
    }
}

/// A network without a tokenizer: its `config.json` and its tensor-name prefix.
const fn network(component: &'static str, config: &'static str, prefix: &'static str) -> Part {
    Part {
        component,
        config,
        prefix,
        tokenizer: None,
    }
}

const FLUX: &[Part] = &[
    text_encoder("clip_l", "text_encoder/config.json", "tokenizer"),
    text_encoder("t5_xxl", "text_encoder_2/config.json", "tokenizer_2"),
    network("transformer", "transformer/config.json", ""),
    network("ae", "vae/config.json", ""),
];

const SD3: &[Part] = &[
    text_encoder("clip_l", "text_encoder/config.json", "tokenizer"),
    text_encoder("clip_g", "text_encoder_2/config.json", "tokenizer_2"),
    text_encoder("t5_xxl", "text_encoder_3/config.json", "tokenizer_3"),
    network(
        "transformer",
        "transformer/config.json",
        "model.diffusion_model",
    ),
    network("vae", "vae/config.json", "first_stage_model"),
];

/// The components of `pipeline`.
pub fn parts(pipeline: Pipeline) -> &'static [Part] {
    match pipeline {
        Pipeline::Flux => FLUX,
        Pipeline::Sd3 => SD3,
    }
}

/// The part named `component`.
pub fn part(pipeline: Pipeline, component: &str) -> Part {
    match parts(pipeline).iter().find(|p| p.component == component) {
        Some(p) => *p,
        None => unreachable!("{component} is not a component of {pipeline:?}"),
    }
}

/// A component resolved in a directory.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The part.
    pub part: Part,
    /// Its weight files, in the spec's order.
    pub files: Vec<PathBuf>,
    /// Its `config.json`.
    pub config: PathBuf,
}

/// Finds `component`'s files in `dir`, as `spec` names them.
pub fn resolve(
    pipeline: Pipeline,
    spec: &ModelSpec,
    dir: &ModelDir,
    component: &str,
) -> Result<Resolved, BackendError> {
    let part = part(pipeline, component);
    let c = spec
        .components
        .iter()
        .find(|c| c.name == component)
        .ok_or_else(|| {
            BackendError::config(
                dir.root(),
                format!(
                    "the {} spec has no component `{component}`",
                    spec.registry_key.get_ref()
                ),
            )
        })?;
    let files = c
        .files
        .iter()
        .map(|f| dir.file(f, "weights named by the registry spec"))
        .collect::<Result<Vec<_>, _>>()?;
    let config = dir.file(part.config, "the component's Diffusers/Transformers config")?;
    Ok(Resolved {
        part,
        files,
        config,
    })
}
