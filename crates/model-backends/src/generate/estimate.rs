//! The estimator's figure for a generator checkpoint of a registry family at other sizes (the
//! tiny random checkpoints of the tests, a full-size file written for a measurement, a
//! fine-tune): the registry entry's spec, with the architecture values and tensor inventory
//! read from the file itself (GGUF metadata and tensor table; LLaVA `config.json` and
//! safetensors headers), run through the same `model_spec::estimate` as the registry.

use std::path::Path;

use model_spec::estimate::MemoryEstimate;
use model_spec::spec::{Component, Fact, Provenance};
use model_spec::{ModelSpec, RunProfile};

use super::config::Backend;
use super::gguf::GgufFile;
use super::{llava, phi3, qwen3_moe};
use crate::error::BackendError;
use crate::model_dir::ModelDir;

/// Estimates the checkpoint at `source` (a GGUF file, or a LLaVA directory) as a model of
/// registry entry `family_key`'s family, under `profile` (the entry's run profile when
/// `None`). The profile's context is capped at the checkpoint's own maximum.
pub fn estimate_checkpoint(
    family_key: &str,
    backend: Backend,
    source: &Path,
    profile: Option<&RunProfile>,
) -> Result<MemoryEstimate, BackendError> {
    let reg = crate::registry::specs()?;
    let entry = reg
        .get(family_key)
        .ok_or_else(|| BackendError::UnknownFamily {
            key: family_key.to_owned(),
            why: "not in the registry".into(),
        })?;
    let mut spec: ModelSpec = entry.spec.spec.clone();
    let mut profile = match profile {
        Some(p) => p.clone(),
        None => spec
            .profile()
            .cloned()
            .unwrap_or_else(|| entry.entry.profile.clone()),
    };
    let (facts, tensors, max_positions, tokenizer_json) = match backend {
        Backend::Phi3Gguf | Backend::Qwen3MoeGguf => gguf_facts(backend, source)?,
        Backend::Llava15 => llava_facts(source)?,
    };
    if let Some(ctx) = profile.context_tokens {
        let ctx = ctx.min(max_positions as u64);
        profile.context_tokens = Some(ctx);
        profile.prompt_tokens = profile.prompt_tokens.map(|p| p.min(ctx));
    }
    let separate: Vec<String> = profile
        .dequantize_on_load
        .iter()
        .chain(&profile.skip_on_load)
        .cloned()
        .collect();
    let component: &mut Component = spec
        .components
        .first_mut()
        .ok_or_else(|| BackendError::config(&entry.spec.path, "the spec has no component"))?;
    for (k, v) in facts {
        component.architecture.insert(k.to_owned(), fact(v));
    }
    component.weights.inventory = model_spec::shapes::inventory(&tensors, &separate);
    component.weights.provenance = Provenance::Fetched;
    if let Some(bytes) = tokenizer_json {
        spec.serving.insert(
            "tokenizer_json_bytes".into(),
            fact(toml::Value::Integer(bytes as i64)),
        );
    }
    model_spec::estimate(&spec, &profile).map_err(|e| BackendError::config(source, e))
}

type Facts = (
    Vec<(&'static str, toml::Value)>,
    Vec<model_spec::shapes::TensorDesc>,
    usize,
    Option<u64>,
);

fn int(v: usize) -> toml::Value {
    toml::Value::Integer(v as i64)
}

fn gguf_facts(backend: Backend, path: &Path) -> Result<Facts, BackendError> {
    let f = GgufFile::open(path)?;
    let tensors = f.tensor_descs()?;
    let tokenizer = tokenizer_bytes(path.parent());
    let facts = match backend {
        Backend::Phi3Gguf => {
            let c = phi3::Config::from_gguf(&f)?;
            let facts = vec![
                ("hidden_size", int(c.hidden)),
                ("num_hidden_layers", int(c.n_layer)),
                ("num_attention_heads", int(c.n_head)),
                ("num_key_value_heads", int(c.n_kv_head)),
                ("head_dim", int(c.head_dim)),
                ("intermediate_size", int(c.ffn)),
                ("vocab_size", int(c.vocab)),
                ("max_position_embeddings", int(c.context_length)),
            ];
            (facts, tensors, c.context_length, tokenizer)
        }
        Backend::Qwen3MoeGguf => {
            let c = qwen3_moe::Config::from_gguf(&f)?;
            let facts = vec![
                ("hidden_size", int(c.hidden)),
                ("num_hidden_layers", int(c.n_layer)),
                ("num_attention_heads", int(c.n_head)),
                ("num_key_value_heads", int(c.n_kv_head)),
                ("head_dim", int(c.head_dim)),
                ("num_experts", int(c.n_expert)),
                ("num_experts_per_tok", int(c.n_expert_used)),
                ("moe_intermediate_size", int(c.expert_ffn)),
                ("vocab_size", int(c.vocab)),
                ("max_position_embeddings", int(c.context_length)),
            ];
            (facts, tensors, c.context_length, tokenizer)
        }
        Backend::Llava15 => unreachable!("LLaVA is not a GGUF backend"),
    };
    Ok(facts)
}

fn llava_facts(dir: &Path) -> Result<Facts, BackendError> {
    let md = ModelDir::local(dir)?;
    let c = llava::Config::read(&md)?;
    let (t, v) = (&c.text_config, &c.vision_config);
    let mut tensors = Vec::new();
    for f in md.safetensors("")? {
        tensors.extend(crate::registry::safetensors_header(&f)?);
    }
    let facts = vec![
        ("text_hidden_size", int(t.hidden_size)),
        ("text_num_hidden_layers", int(t.num_hidden_layers)),
        ("text_num_attention_heads", int(t.num_attention_heads)),
        (
            "text_num_key_value_heads",
            int(t.num_key_value_heads.unwrap_or(t.num_attention_heads)),
        ),
        ("text_intermediate_size", int(t.intermediate_size)),
        ("text_vocab_size", int(t.vocab_size)),
        (
            "text_max_position_embeddings",
            int(t.max_position_embeddings),
        ),
        ("vision_hidden_size", int(v.hidden_size)),
        ("vision_num_hidden_layers", int(v.num_hidden_layers)),
        ("vision_num_attention_heads", int(v.num_attention_heads)),
        ("vision_intermediate_size", int(v.intermediate_size)),
        ("vision_image_size", int(v.image_size)),
        ("vision_patch_size", int(v.patch_size)),
        ("image_token_index", int(c.image_token_index as usize)),
    ];
    Ok((
        facts,
        tensors,
        t.max_position_embeddings,
        tokenizer_bytes(Some(dir)),
    ))
}

fn tokenizer_bytes(dir: Option<&Path>) -> Option<u64> {
    let path = dir?.join("tokenizer.json");
    std::fs::metadata(path).ok().map(|m| m.len())
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
