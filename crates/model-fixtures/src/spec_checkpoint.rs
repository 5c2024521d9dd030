//! Random-weight checkpoints of any served registry model, at the geometry its spec states
//! (or with some architecture values changed), in the layout its Hub repository has.
//!
//! The tensors are the spec's own shape derivation (`model_spec::shapes::derive`), so a
//! checkpoint written here holds exactly the inventory the estimator counts, and loading it
//! checks that the derived names are the ones the loaders read. `config.json` is built from
//! the same architecture values (in the nesting each family's Transformers config uses), and
//! the tokenizers are small word-level ones: a full-size NV-Embed written here differs from
//! the real one only in its values and its vocabulary file.
//!
//! This is what the GPU measurements load (the GPU machine cannot download weights) and what
//! the test of that program loads at a tiny geometry.

use std::collections::BTreeMap;
use std::path::Path;

use model_networks::Pipeline;
use model_registry::{Backend, CandleModelInfo};
use model_runtime::BackendError;
use model_spec::shapes::TensorDesc;
use model_spec::spec::{Component, Fact, Provenance};
use serde_json::{Map, Value, json};

use crate::stream::write_safetensors;
use crate::write_json;

/// Architecture values the written tokenizer decides rather than the geometry: its small
/// vocabulary puts LLaVA's `<image>` at [`crate::decode::LLAVA_IMAGE_TOKEN`].
pub const TOKENIZER_VALUES: &[&str] = &["image_token_index"];

/// Architecture values that differ from the registry spec's, per component.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Geometry {
    overrides: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

impl Geometry {
    /// The registry model's own geometry.
    pub fn real() -> Self {
        Geometry::default()
    }

    /// A tiny geometry of `key`'s model: every code path of the real one, kilobytes of weights.
    pub fn tiny_of(key: &str) -> Result<Self, BackendError> {
        let g = Geometry::default();
        let decoder = |g: Geometry, c: &str, p: &str| {
            let g = if p.is_empty() {
                g.set(c, "head_dim", 8)
            } else {
                g
            };
            g.set(c, &format!("{p}hidden_size"), 32)
                .set(c, &format!("{p}num_hidden_layers"), 2)
                .set(c, &format!("{p}num_attention_heads"), 4)
                .set(c, &format!("{p}intermediate_size"), 64)
                .set(c, &format!("{p}vocab_size"), 96)
        };
        let vision = |g: Geometry, c: &str, image: i64, patch: i64| {
            g.set(c, "vision_hidden_size", 32)
                .set(c, "vision_num_hidden_layers", 2)
                .set(c, "vision_num_attention_heads", 4)
                .set(c, "vision_intermediate_size", 64)
                .set(c, "vision_image_size", image)
                .set(c, "vision_patch_size", patch)
        };
        Ok(match backend_of_key(key)? {
            Backend::Bert => decoder(g, "model", "").set("model", "max_position_embeddings", 64),
            Backend::JinaBert => decoder(g, "model", ""),
            Backend::Stella | Backend::GteQwen2 => decoder(g, "model", "")
                .set("model", "num_key_value_heads", 2)
                .set("dense_1024", "in_features", 32)
                .set("dense_1024", "out_features", 24),
            Backend::NvEmbed => decoder(g, "model", "")
                .set("model", "num_key_value_heads", 2)
                .set("model", "num_latents", 8)
                .set("model", "latent_heads", 2)
                .set("model", "latent_dim_head", 32),
            Backend::Clip => vision(decoder(g, "model", "text_"), "model", 32, 8)
                .set("model", "text_max_position_embeddings", 16)
                .set("model", "projection_dim", 16),
            Backend::Llava15 => vision(decoder(g, "model", "text_"), "model", 28, 14)
                .set("model", "text_num_key_value_heads", 4)
                .set("model", "text_max_position_embeddings", 256),
            Backend::Flux => Geometry::tiny(Pipeline::Flux),
            Backend::Sd3 => Geometry::tiny(Pipeline::Sd3),
            b @ (Backend::Phi3Gguf | Backend::Qwen3MoeGguf) => {
                return Err(not_written(key, b));
            }
        })
    }

    /// Sets architecture value `key` of `component`.
    pub fn set(mut self, component: &str, key: &str, value: impl Into<toml::Value>) -> Self {
        self.overrides
            .entry(component.to_owned())
            .or_default()
            .insert(key.to_owned(), value.into());
        self
    }

    /// The components of registry model `key` with these values applied.
    pub fn spec_components(&self, key: &str) -> Result<Vec<Component>, BackendError> {
        let info = lookup(key)?;
        let entry = model_serving::registry::spec(info).map_err(registry_error)?;
        let mut components = entry.spec.spec.components.clone();
        for (name, values) in &self.overrides {
            let Some(c) = components.iter_mut().find(|c| &c.name == name) else {
                // Tiny geometries name the optional components of a family (Stella's head).
                continue;
            };
            for (k, v) in values {
                c.architecture.insert(
                    k.clone(),
                    toml::Spanned::new(
                        0..0,
                        Fact {
                            value: v.clone(),
                            provenance: Provenance::Derived,
                            source: None,
                            formula: Some("random checkpoint geometry".into()),
                        },
                    ),
                );
            }
        }
        Ok(components)
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    /// Tensors.
    pub tensors: usize,
    /// Bytes of tensor data.
    pub bytes: u64,
}

/// The tensors of a checkpoint being written, per weight file.
#[derive(Debug, Default)]
pub(crate) struct Files(BTreeMap<String, Vec<TensorDesc>>);

impl Files {
    /// Adds `c`'s derived tensors, named under `prefix`, spread over its files in consecutive
    /// runs as the Hub's shards are.
    pub fn add(&mut self, c: &Component, prefix: &str) -> Result<(), BackendError> {
        let tensors = model_spec::shapes::derive(c)
            .map_err(|e| BackendError::config(&c.name, e.to_string()))?;
        let per_file = tensors.len().div_ceil(c.files.len().max(1)).max(1);
        for (i, chunk) in tensors.chunks(per_file).enumerate() {
            let file = c.files.get(i).cloned().unwrap_or_default();
            self.0
                .entry(file)
                .or_default()
                .extend(chunk.iter().map(|t| TensorDesc {
                    name: match prefix {
                        "" => t.name.clone(),
                        p => format!("{p}.{}", t.name),
                    },
                    ..t.clone()
                }));
        }
        Ok(())
    }

    /// Writes every file into `dir`, and `model.safetensors.index.json` beside sharded ones.
    pub fn write(self, dir: &Path, seed: u64) -> Result<Written, BackendError> {
        let mut written = Written::default();
        let mut indexes: BTreeMap<&Path, Map<String, Value>> = BTreeMap::new();
        for (file, tensors) in &self.0 {
            written.bytes += write_safetensors(&dir.join(file), tensors, seed)?;
            written.tensors += tensors.len();
            let path = Path::new(file);
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("model-") {
                let map = indexes
                    .entry(path.parent().unwrap_or(Path::new("")))
                    .or_default();
                for t in tensors {
                    map.insert(t.name.clone(), json!(name));
                }
            }
        }
        for (folder, weight_map) in indexes {
            write_json(
                &dir.join(folder).join("model.safetensors.index.json"),
                &json!({"metadata": {"total_size": written.bytes}, "weight_map": weight_map}),
            )?;
        }
        Ok(written)
    }
}

/// Writes a random checkpoint of registry model `key` with `geometry` into `dir`.
pub fn write(
    dir: &Path,
    key: &str,
    geometry: &Geometry,
    seed: u64,
) -> Result<Written, BackendError> {
    let info = lookup(key)?;
    let backend = backend_of_key(key)?;
    let pipeline = match backend {
        Backend::Flux => Some(Pipeline::Flux),
        Backend::Sd3 => Some(Pipeline::Sd3),
        _ => None,
    };
    if let Some(p) = pipeline {
        return crate::diffusion::write(dir, p, geometry, seed);
    }
    let components = geometry.spec_components(key)?;
    let model = components
        .iter()
        .find(|c| c.name == "model")
        .ok_or_else(|| BackendError::config(dir, format!("{key} has no `model` component")))?;
    let mut files = Files::default();
    for c in &components {
        files.add(c, "")?;
    }
    write_json(&dir.join("config.json"), &config_json(backend, model)?)?;
    write_tokenizer(dir, key, backend)?;
    let max_tokens = info.max_input_tokens.unwrap_or(512);
    match backend {
        Backend::Bert => {
            write_json(
                &dir.join("sentence_bert_config.json"),
                &json!({ "max_seq_length": max_tokens, "do_lower_case": false }),
            )?;
            crate::embed::modules_json(dir, "2_Normalize", "Normalize");
        }
        Backend::Stella => {
            let head = components
                .iter()
                .find(|c| c.family == model_spec::Family::Dense)
                .ok_or_else(|| BackendError::config(dir, format!("{key} has no Dense head")))?;
            let folder = head
                .files
                .first()
                .and_then(|f| Path::new(f).parent())
                .and_then(|p| p.to_str())
                .unwrap_or("2_Dense")
                .to_owned();
            write_json(
                &dir.join(&folder).join("config.json"),
                &json!({
                    "in_features": head.arch_u64("in_features"),
                    "out_features": head.arch_u64("out_features"),
                    "bias": head.arch_bool("bias").unwrap_or(true),
                    "activation_function": "torch.nn.modules.linear.Identity",
                }),
            )?;
            write_json(
                &dir.join("sentence_bert_config.json"),
                &json!({ "max_seq_length": max_tokens }),
            )?;
            crate::embed::modules_json(dir, &folder, "Dense");
        }
        Backend::Clip | Backend::Llava15 => {
            crate::embed::clip_preprocessor(dir, image_size(model, dir)?)?
        }
        _ => {}
    }
    files.write(dir, seed)
}

fn image_size(c: &Component, dir: &Path) -> Result<u64, BackendError> {
    c.arch_u64("vision_image_size")
        .ok_or_else(|| BackendError::config(dir, "the spec has no `vision_image_size`"))
}

/// `config.json` of `c` in the family's Transformers layout.
fn config_json(backend: Backend, c: &Component) -> Result<Value, BackendError> {
    let flat = Value::Object(config_values(c, ""));
    let mut config = match backend {
        Backend::Bert => merge(flat, json!({"architectures": ["BertModel"]})),
        Backend::JinaBert => merge(
            flat,
            json!({"architectures": ["JinaBertForMaskedLM"], "emb_pooler": "mean"}),
        ),
        Backend::Stella | Backend::GteQwen2 => merge(
            flat,
            json!({"architectures": ["Qwen2ForCausalLM"], "tie_word_embeddings": false, "use_sliding_window": false}),
        ),
        Backend::NvEmbed => {
            let h = c.arch_u64("hidden_size");
            json!({
                "architectures": ["NVEmbedModel"],
                "model_type": "nvembed",
                "add_eos": true,
                "text_config": merge(flat, json!({"model_type": "bidir_mistral"})),
                "latent_attention_config": {
                    "model_type": "latent_attention",
                    "num_latents_value": c.arch_u64("num_latents"),
                    "num_cross_heads": c.arch_u64("latent_heads"),
                    "cross_dim_head": c.arch_u64("latent_dim_head"),
                    "latent_dim": h,
                    "hidden_dim": h,
                },
            })
        }
        Backend::Clip => merge(
            json!({
                "architectures": ["CLIPModel"],
                "model_type": "clip",
                "projection_dim": c.arch_u64("projection_dim"),
            }),
            towers(c),
        ),
        Backend::Llava15 => merge(
            json!({
                "architectures": ["LlavaForConditionalGeneration"],
                "model_type": "llava",
                "image_token_index": crate::decode::LLAVA_IMAGE_TOKEN,
                "projector_hidden_act": "gelu",
                "vision_feature_layer": -2,
                "vision_feature_select_strategy": "default",
            }),
            towers(c),
        ),
        other => return Err(not_written(&c.name, other)),
    };
    if let Some(dtype) = torch_dtype(c) {
        config["torch_dtype"] = json!(dtype);
    }
    Ok(config)
}

/// `text_config` and `vision_config` from the `text_*` and `vision_*` values.
fn towers(c: &Component) -> Value {
    json!({
        "text_config": config_values(c, "text_"),
        "vision_config": config_values(c, "vision_"),
    })
}

/// The architecture values of `c` whose key starts with `prefix`, without it; the spec's
/// bookkeeping values (storage type, which optional tensors the file holds) are not config
/// keys. With an empty prefix, the values of the `text_` and `vision_` towers are left out.
fn config_values(c: &Component, prefix: &str) -> Map<String, Value> {
    c.architecture
        .iter()
        .filter_map(|(k, fact)| {
            let key = k.strip_prefix(prefix)?;
            let bookkeeping = key == "storage_dtype"
                || key.starts_with("stores_")
                || key.starts_with("has_")
                || (prefix.is_empty() && (key.starts_with("text_") || key.starts_with("vision_")));
            let value = serde_json::to_value(&fact.get_ref().value).ok()?;
            (!bookkeeping).then(|| (key.to_owned(), value))
        })
        .collect()
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

fn torch_dtype(c: &Component) -> Option<&'static str> {
    let s = c
        .architecture
        .get("storage_dtype")?
        .get_ref()
        .value
        .as_str()?;
    Some(match s {
        "F32" => "float32",
        "F16" => "float16",
        "BF16" => "bfloat16",
        _ => return None,
    })
}

/// The tokenizer files: word-level, with the special tokens and input template the family's
/// loader expects (BERT's `[CLS] … [SEP]`, GTE's appended `<|endoftext|>` for last-token
/// pooling, NV-Embed's `<s>`, CLIP's start and end tokens, LLaVA's `<image>`).
fn write_tokenizer(dir: &Path, key: &str, backend: Backend) -> Result<(), BackendError> {
    let qwen = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"];
    let bert = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    match backend {
        Backend::Bert | Backend::JinaBert => {
            crate::embed::tokenizer(dir, &bert, Some("[CLS] $A [SEP]"))
        }
        Backend::GteQwen2 => crate::embed::tokenizer(dir, &qwen, Some("$A <|endoftext|>")),
        Backend::Stella => crate::embed::tokenizer(dir, &qwen, None),
        Backend::NvEmbed => crate::embed::tokenizer(dir, &["<unk>", "<s>", "</s>"], Some("<s> $A")),
        Backend::Clip => crate::embed::tokenizer(
            dir,
            &["<|startoftext|>", "<|endoftext|>", "<unk>"],
            Some("<|startoftext|> $A <|endoftext|>"),
        ),
        Backend::Llava15 => crate::decode::llava_tokenizer(dir)?,
        other => return Err(not_written(key, other)),
    }
    Ok(())
}

fn lookup(key: &str) -> Result<&'static CandleModelInfo, BackendError> {
    model_serving::registry::lookup(key).map_err(registry_error)
}

fn backend_of_key(key: &str) -> Result<Backend, BackendError> {
    lookup(key)?.backend.ok_or_else(|| {
        BackendError::config(
            "registry",
            format!("{key} has no backend in this workspace"),
        )
    })
}

fn registry_error(e: model_serving::ServeError) -> BackendError {
    BackendError::config("registry", e)
}

fn not_written(what: &str, backend: Backend) -> BackendError {
    BackendError::config(
        what,
        format!(
            "no safetensors checkpoint writer for the {backend} backend (GGUF generators are written by model_fixtures::decode)"
        ),
    )
}
