//! The estimator's figure for a checkpoint other than the registry's own file — a fine-tune,
//! a model of other sizes, a tiny random test checkpoint, a full-size file written for a
//! measurement: the spec of the registry model its backend serves, with the architecture
//! values and tensor inventories read from the checkpoint itself (its `config.json` files,
//! safetensors headers, GGUF metadata and tensor table), run through the same
//! `model_spec::estimate` as the registry. Nothing but headers is read.

use std::path::Path;

use model_networks::decode::{llava, phi3, qwen3_moe};
use model_networks::diffusion::{self as net_diffusion, layout};
use model_networks::embed::{self, bert, clip, gte_qwen2, jina, nvembed, stella};
use model_networks::{Family, Pipeline};
use model_registry::Backend;
use model_runtime::safetensors::tensor_descs;
use model_runtime::{BackendError, GgufFile, ModelDir};
use model_spec::estimate::MemoryEstimate;
use model_spec::shapes::TensorDesc;
use model_spec::spec::{Fact, Provenance};
use model_spec::{ModelSpec, RunProfile};

use crate::config::{embed_family, pipeline_of};
use crate::error::ServeError;

/// One component's facts as the checkpoint states them.
struct ComponentFacts {
    name: String,
    architecture: Vec<(&'static str, toml::Value)>,
    tensors: Vec<TensorDesc>,
}

/// What a checkpoint says about itself.
struct Facts {
    components: Vec<ComponentFacts>,
    /// The longest context (generators) or input (encoders) the checkpoint takes.
    max_positions: Option<u64>,
    /// Vision: the side its images are resized to.
    image_size: Option<u64>,
    /// Bytes of its `tokenizer.json`.
    tokenizer_json: Option<u64>,
}

/// The spec and run profile the estimator reads for the checkpoint at `path` (a directory in
/// the Hub layout, or a GGUF file) of `backend`'s architecture: the registry template's spec
/// with the checkpoint's facts, under `profile` (the template's run profile when `None`),
/// whose lengths are capped at what the checkpoint accepts.
pub fn checkpoint_spec(
    backend: Backend,
    path: &Path,
    profile: Option<&RunProfile>,
) -> Result<(ModelSpec, RunProfile), ServeError> {
    let template = crate::registry::template(backend)?;
    let entry = crate::registry::spec(template)?;
    let mut spec = entry.spec.spec.clone();
    let mut profile = match profile {
        Some(p) => p.clone(),
        None => spec
            .profile()
            .cloned()
            .unwrap_or_else(|| entry.entry.profile.clone()),
    };
    let key = path.display().to_string();
    let facts = read_facts(backend, path, &spec).map_err(|e| ServeError::backend(&key, e))?;
    if let Some(max) = facts.max_positions {
        if let Some(s) = profile.seq_len {
            profile.seq_len = Some(s.min(max));
        }
        if let Some(ctx) = profile.context_tokens {
            let ctx = ctx.min(max);
            profile.context_tokens = Some(ctx);
            profile.prompt_tokens = profile.prompt_tokens.map(|p| p.min(ctx));
        }
    }
    if let Some(side) = facts.image_size {
        profile.image_size = Some(side);
    }
    let separate: Vec<String> = profile
        .skip_on_load
        .iter()
        .chain(&profile.dequantize_on_load)
        .cloned()
        .collect();
    for c in facts.components {
        let component = spec
            .components
            .iter_mut()
            .find(|s| s.name == c.name)
            .ok_or_else(|| ServeError::Registry {
                message: format!("the {backend} template has no component `{}`", c.name),
            })?;
        for (k, v) in c.architecture {
            component.architecture.insert(k.to_owned(), fact(v));
        }
        component.weights.inventory = model_spec::shapes::inventory(&c.tensors, &separate);
        component.weights.provenance = Provenance::Fetched;
        component.weights.published_bytes = None;
    }
    if let Some(bytes) = facts.tokenizer_json {
        spec.serving.insert(
            "tokenizer_json_bytes".into(),
            fact(toml::Value::Integer(bytes as i64)),
        );
    }
    Ok((spec, profile))
}

/// The estimator's figure for the checkpoint at `path` (see [`checkpoint_spec`]).
pub fn estimate_checkpoint(
    backend: Backend,
    path: &Path,
    profile: Option<&RunProfile>,
) -> Result<MemoryEstimate, ServeError> {
    let (spec, profile) = checkpoint_spec(backend, path, profile)?;
    model_spec::estimate(&spec, &profile).map_err(|e| {
        ServeError::backend(&path.display().to_string(), BackendError::config(path, e))
    })
}

fn ints(values: Vec<(&'static str, u64)>) -> Vec<(&'static str, toml::Value)> {
    values
        .into_iter()
        .map(|(k, v)| (k, toml::Value::Integer(v as i64)))
        .collect()
}

fn tensors_of(files: &[std::path::PathBuf]) -> Result<Vec<TensorDesc>, BackendError> {
    let mut out = Vec::new();
    for f in files {
        out.extend(tensor_descs(f)?);
    }
    Ok(out)
}

fn tokenizer_bytes(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir.join("tokenizer.json"))
        .ok()
        .map(|m| m.len())
}

fn one(
    name: &str,
    architecture: Vec<(&'static str, u64)>,
    tensors: Vec<TensorDesc>,
) -> ComponentFacts {
    ComponentFacts {
        name: name.to_owned(),
        architecture: ints(architecture),
        tensors,
    }
}

fn read_facts(backend: Backend, path: &Path, template: &ModelSpec) -> Result<Facts, BackendError> {
    if let Some(family) = embed_family(backend) {
        return embedder_facts(family, &ModelDir::local(path)?);
    }
    if let Some(pipeline) = pipeline_of(backend) {
        return diffusion_facts(pipeline, &ModelDir::local(path)?, template);
    }
    let (architecture, tensors, max, tokenizer) = match backend {
        Backend::Phi3Gguf | Backend::Qwen3MoeGguf => {
            let f = GgufFile::open(path)?;
            let architecture = if backend == Backend::Phi3Gguf {
                let c = phi3::Config::from_gguf(&f)?;
                (c.spec_architecture(), c.context_length)
            } else {
                let c = qwen3_moe::Config::from_gguf(&f)?;
                (c.spec_architecture(), c.context_length)
            };
            let dir = path.parent().unwrap_or(Path::new("."));
            (
                architecture.0,
                f.tensor_descs()?,
                architecture.1,
                tokenizer_bytes(dir),
            )
        }
        Backend::Llava15 => {
            let dir = ModelDir::local(path)?;
            let c = llava::Config::read(&dir)?;
            let max = c.text_config.max_position_embeddings;
            (
                c.spec_architecture(),
                tensors_of(&dir.safetensors("")?)?,
                max,
                tokenizer_bytes(path),
            )
        }
        other => unreachable!("{other} is an embedder or a pipeline, handled above"),
    };
    Ok(Facts {
        components: vec![one("model", architecture, tensors)],
        max_positions: Some(max as u64),
        image_size: None,
        tokenizer_json: tokenizer,
    })
}

fn embedder_facts(family: Family, dir: &ModelDir) -> Result<Facts, BackendError> {
    let architecture = match family {
        Family::Bert => bert::Config::read(dir)?.spec_architecture(),
        Family::Stella => stella::Config::read(dir)?.spec_architecture(),
        Family::GteQwen2 => gte_qwen2::Config::read(dir)?.spec_architecture(),
        Family::JinaBert => jina::Config::read(dir)?.spec_architecture(),
        Family::NvEmbed => nvembed::Config::read(dir)?.spec_architecture(),
        Family::Clip => clip::Config::read(dir)?.spec_architecture(),
    };
    let mut components = vec![one(
        "model",
        architecture,
        tensors_of(&dir.safetensors("")?)?,
    )];
    if family == Family::Stella {
        let (path, dense) = stella::read_dense(dir)?;
        components.push(one(
            "dense_1024",
            vec![
                ("in_features", dense.in_features as u64),
                ("out_features", dense.out_features as u64),
            ],
            tensors_of(&dir.safetensors(&path)?)?,
        ));
    }
    let image_size = match family {
        Family::Clip => Some(clip::Config::read(dir)?.vision_config.image_size as u64),
        _ => None,
    };
    Ok(Facts {
        components,
        max_positions: Some(embed::own_limit(dir, family)? as u64),
        image_size,
        tokenizer_json: dir
            .optional("tokenizer.json")
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len()),
    })
}

fn diffusion_facts(
    pipeline: Pipeline,
    dir: &ModelDir,
    template: &ModelSpec,
) -> Result<Facts, BackendError> {
    let mut components = Vec::new();
    for c in &template.components {
        let resolved = layout::resolve(pipeline, template, dir, &c.name)?;
        let path = &resolved.config;
        let architecture = match (pipeline, c.name.as_str()) {
            (_, "clip_l" | "clip_g") => {
                net_diffusion::clip_text::Config::read(path)?.spec_architecture()
            }
            (_, "t5_xxl") => {
                net_diffusion::t5::spec_architecture(&net_diffusion::t5::read_config(path)?)
            }
            (Pipeline::Flux, "transformer") => {
                net_diffusion::flux::TransformerConfig::read(path)?.spec_architecture()
            }
            (Pipeline::Sd3, "transformer") => {
                net_diffusion::mmdit::TransformerConfig::read(path)?.spec_architecture()
            }
            (_, "ae" | "vae") => net_diffusion::vae::VaeConfig::read(path)?.spec_architecture(),
            (_, other) => {
                return Err(BackendError::config(
                    path,
                    format!("component `{other}` has no config mapping"),
                ));
            }
        };
        // A single-file checkpoint holds several components under their prefixes.
        let prefix = resolved.part.prefix;
        let mut tensors = Vec::new();
        for mut t in tensors_of(&resolved.files)? {
            if prefix.is_empty() {
                tensors.push(t);
            } else if let Some(rest) = t
                .name
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('.'))
            {
                t.name = rest.to_owned();
                tensors.push(t);
            }
        }
        components.push(ComponentFacts {
            name: c.name.clone(),
            architecture,
            tensors,
        });
    }
    Ok(Facts {
        components,
        max_positions: None,
        image_size: None,
        tokenizer_json: None,
    })
}

fn fact(value: toml::Value) -> toml::Spanned<Fact> {
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
