//! Random-weight checkpoints of either pipeline, in the real repositories' layout, at any
//! geometry.
//!
//! Every tensor name and shape comes from the registry spec's shape derivation
//! (`model_spec::shapes::derive`) with the requested architecture values, so a checkpoint
//! written here has exactly the inventory the estimator computes for that geometry. Files are
//! the spec's (single files, T5 shards, SD3's shared file with its two prefixes), configs are
//! the Diffusers/Transformers `config.json`s the loader reads, and the tokenizers are small
//! real ones (CLIP's byte-level BPE as `vocab.json` + `merges.txt`, T5's `tokenizer.json`)
//! built with the tokenizers crate. Weights are streamed to disk tensor by tensor, so a
//! full-size checkpoint needs no more memory than its largest chunk.
//!
//! This is what the tests load (tiny geometries) and what memory measurements load where the
//! real weights cannot be downloaded.

use std::path::{Path, PathBuf};

use model_spec::spec::Component;
use serde_json::json;

use model_networks::Pipeline;
use model_networks::diffusion::layout::{self, Part};
use model_networks::diffusion::tokenizer::{CLIP_BOS, CLIP_EOS};
use model_runtime::BackendError;

use crate::spec_checkpoint::Files;
use crate::tokenizer::WordLevelTokenizer;
use crate::write_json;

pub use crate::spec_checkpoint::{Geometry, Written};

impl Geometry {
    /// A tiny model of `pipeline` (hidden sizes of 32–96, two layers per text encoder, one or
    /// two transformer blocks, a 32-channel autoencoder): a few hundred kilobytes, seconds to
    /// run on a CPU, and every code path of the real one.
    pub fn tiny(pipeline: Pipeline) -> Self {
        let g = Geometry::default()
            .set("clip_l", "hidden_size", 32)
            .set("clip_l", "num_hidden_layers", 2)
            .set("clip_l", "num_attention_heads", 2)
            .set("clip_l", "intermediate_size", 64)
            .set("clip_l", "vocab_size", 128)
            .set("clip_l", "projection_dim", 32)
            .set("t5_xxl", "d_ff", 64)
            .set("t5_xxl", "num_layers", 2)
            .set("t5_xxl", "num_heads", 2)
            .set("t5_xxl", "d_kv", 16)
            .set("t5_xxl", "vocab_size", 64);
        let vae = |g: Geometry, name: &str| {
            g.set(name, "ch", 32)
                .set(name, "ch_mult", toml::Value::Array(vec![1.into(); 4]))
                .set(name, "num_res_blocks", 1)
        };
        match pipeline {
            Pipeline::Flux => vae(g, "ae")
                .set("t5_xxl", "d_model", 48)
                .set("transformer", "vec_in_dim", 32)
                .set("transformer", "context_in_dim", 48)
                .set("transformer", "hidden_size", 32)
                .set("transformer", "num_heads", 2)
                .set("transformer", "depth", 1)
                .set("transformer", "depth_single_blocks", 1),
            Pipeline::Sd3 => vae(g, "vae")
                .set("clip_g", "hidden_size", 32)
                .set("clip_g", "num_hidden_layers", 2)
                .set("clip_g", "num_attention_heads", 2)
                .set("clip_g", "intermediate_size", 64)
                .set("clip_g", "vocab_size", 128)
                .set("clip_g", "projection_dim", 32)
                .set("t5_xxl", "d_model", 96)
                .set("transformer", "num_layers", 2)
                .set("transformer", "attention_head_dim", 16)
                .set("transformer", "num_attention_heads", 2)
                .set("transformer", "joint_attention_dim", 96)
                .set("transformer", "caption_projection_dim", 32)
                .set("transformer", "pooled_projection_dim", 64)
                .set("transformer", "pos_embed_max_size", 16),
        }
    }

    /// The pipeline's components with these values applied.
    pub fn components(&self, pipeline: Pipeline) -> Result<Vec<Component>, BackendError> {
        self.spec_components(pipeline_key(pipeline)?)
    }
}

/// The registry key of `pipeline`'s model.
pub fn pipeline_key(pipeline: Pipeline) -> Result<&'static str, BackendError> {
    let backend = model_serving::text_to_image::backend_of(pipeline);
    model_serving::registry::template(backend)
        .map(|t| t.registry_key)
        .map_err(|e| BackendError::config("registry", e))
}

/// Writes a random checkpoint of `pipeline` with `geometry` into `dir` (created if needed).
pub fn write(
    dir: &Path,
    pipeline: Pipeline,
    geometry: &Geometry,
    seed: u64,
) -> Result<Written, BackendError> {
    let components = geometry.components(pipeline)?;
    let mut files = Files::default();
    for part in layout::parts(pipeline) {
        let c = components
            .iter()
            .find(|c| c.name == part.component)
            .ok_or_else(|| {
                BackendError::config(dir, format!("no component `{}`", part.component))
            })?;
        files.add(c, part.prefix)?;
        write_json(&dir.join(part.config), &config_json(pipeline, part, c)?)?;
        if let Some(tok) = part.tokenizer {
            let tok = dir.join(tok);
            match c.family {
                model_spec::Family::T5Encoder => t5_tokenizer(&tok)?,
                _ => clip_tokenizer(
                    &tok,
                    part.component == "clip_g" && pipeline == Pipeline::Sd3,
                )?,
            }
        }
    }
    let written = files.write(dir, seed)?;
    let (class, scheduler) = match pipeline {
        Pipeline::Flux => (
            "FluxPipeline",
            json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0, "use_dynamic_shifting": false}),
        ),
        Pipeline::Sd3 => (
            "StableDiffusion3Pipeline",
            json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}),
        ),
    };
    write_json(
        &dir.join("model_index.json"),
        &json!({ "_class_name": class }),
    )?;
    write_json(&dir.join("scheduler/scheduler_config.json"), &scheduler)?;
    Ok(written)
}

/// The `config.json` of `c` as its Hub repository ships it.
fn config_json(
    pipeline: Pipeline,
    part: &Part,
    c: &Component,
) -> Result<serde_json::Value, BackendError> {
    let u = |k: &str| {
        c.arch_u64(k).ok_or_else(|| {
            BackendError::config(part.config, format!("component `{}` has no `{k}`", c.name))
        })
    };
    Ok(match c.family {
        model_spec::Family::ClipText => {
            let gelu = part.component == "clip_g";
            json!({
                "architectures": [if c.arch_bool("has_projection").unwrap_or(false) {
                    "CLIPTextModelWithProjection"
                } else {
                    "CLIPTextModel"
                }],
                "model_type": "clip_text_model",
                "vocab_size": u("vocab_size")?,
                "hidden_size": u("hidden_size")?,
                "intermediate_size": u("intermediate_size")?,
                "num_hidden_layers": u("num_hidden_layers")?,
                "num_attention_heads": u("num_attention_heads")?,
                "max_position_embeddings": u("max_position_embeddings")?,
                "projection_dim": u("projection_dim")?,
                "hidden_act": if gelu { "gelu" } else { "quick_gelu" },
                "layer_norm_eps": 1e-5,
            })
        }
        model_spec::Family::T5Encoder => json!({
            "architectures": ["T5EncoderModel"],
            "model_type": "t5",
            "vocab_size": u("vocab_size")?,
            "d_model": u("d_model")?,
            "d_kv": u("d_kv")?,
            "d_ff": u("d_ff")?,
            "num_layers": u("num_layers")?,
            "num_heads": u("num_heads")?,
            "relative_attention_num_buckets": c.arch_u64("relative_attention_num_buckets").unwrap_or(32),
            "relative_attention_max_distance": 128,
            "dropout_rate": 0.1,
            "layer_norm_epsilon": 1e-6,
            "initializer_factor": 1.0,
            "feed_forward_proj": "gated-gelu",
            "is_encoder_decoder": true,
            "tie_word_embeddings": false,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "decoder_start_token_id": 0,
        }),
        model_spec::Family::Flux => {
            let (h, heads) = (u("hidden_size")?, u("num_heads")?);
            let head = h / heads.max(1);
            json!({
                "_class_name": "FluxTransformer2DModel",
                "patch_size": 1,
                "in_channels": u("in_channels")?,
                "num_layers": u("depth")?,
                "num_single_layers": u("depth_single_blocks")?,
                "attention_head_dim": head,
                "num_attention_heads": heads,
                "joint_attention_dim": u("context_in_dim")?,
                "pooled_projection_dim": u("vec_in_dim")?,
                "guidance_embeds": c.arch_bool("guidance_embed").unwrap_or(false),
                "axes_dims_rope": rope_axes(head),
                "mlp_ratio": c.arch_f64("mlp_ratio").unwrap_or(4.0),
            })
        }
        model_spec::Family::Mmdit => json!({
            "_class_name": "SD3Transformer2DModel",
            "sample_size": 128,
            "patch_size": u("patch_size")?,
            "in_channels": u("in_channels")?,
            "out_channels": u("out_channels")?,
            "num_layers": u("num_layers")?,
            "attention_head_dim": u("attention_head_dim")?,
            "num_attention_heads": u("num_attention_heads")?,
            "joint_attention_dim": u("joint_attention_dim")?,
            "caption_projection_dim": u("caption_projection_dim")?,
            "pooled_projection_dim": u("pooled_projection_dim")?,
            "pos_embed_max_size": u("pos_embed_max_size")?,
            "qk_norm": if c.arch_bool("qk_norm").unwrap_or(true) { json!("rms_norm") } else { json!(null) },
            "dual_attention_layers": [],
        }),
        model_spec::Family::Autoencoder16 => {
            let ch = u("ch")?;
            let mult = c.arch_list("ch_mult").unwrap_or_default();
            let (scale, shift) = match pipeline {
                Pipeline::Flux => (0.3611, 0.1159),
                Pipeline::Sd3 => (1.5305, 0.0609),
            };
            json!({
                "_class_name": "AutoencoderKL",
                "in_channels": 3,
                "out_channels": 3,
                "block_out_channels": mult.iter().map(|m| ch * m).collect::<Vec<_>>(),
                "layers_per_block": u("num_res_blocks")?,
                "latent_channels": u("z_channels")?,
                "norm_num_groups": 32,
                "scaling_factor": scale,
                "shift_factor": shift,
                "use_quant_conv": false,
                "use_post_quant_conv": false,
            })
        }
        other => {
            return Err(BackendError::config(
                part.config,
                format!("no config writer for family {other}"),
            ));
        }
    })
}

/// Rotary axes for a head size, shaped like FLUX's [16, 56, 56] for 128: a short first axis,
/// the rest split in two, all even.
fn rope_axes(head: u64) -> Vec<u64> {
    let first = ((head / 8) & !1).max(2).min(head);
    let rest = head - first;
    let a = (rest / 2) & !1;
    vec![first, a, rest - a]
}

/// Letters, digits and a few symbols of the tiny CLIP vocabulary, each also as a word end.
const CLIP_SYMBOLS: &str = "abcdefghijklmnopqrstuvwxyz0123456789!,.";
/// Merges of the tiny CLIP vocabulary (a few common words).
const CLIP_MERGES: &[(&str, &str)] = &[("t", "h"), ("th", "e</w>"), ("o", "n</w>"), ("a", "n")];

/// A tiny CLIP tokenizer as the Hub ships it: `vocab.json`, `merges.txt`,
/// `special_tokens_map.json` (padding with `!` for SD3's bigG, with the end token otherwise).
pub fn clip_tokenizer(dir: &Path, pad_with_bang: bool) -> Result<(), BackendError> {
    std::fs::create_dir_all(dir).map_err(|e| BackendError::io(dir, e))?;
    let mut vocab = serde_json::Map::new();
    let mut add = |t: String| {
        let id = vocab.len();
        vocab.entry(t).or_insert_with(|| json!(id));
    };
    for ch in CLIP_SYMBOLS.chars() {
        add(ch.to_string());
        add(format!("{ch}</w>"));
    }
    for (a, b) in CLIP_MERGES {
        add(format!("{a}{b}"));
    }
    add(CLIP_BOS.to_owned());
    add(CLIP_EOS.to_owned());
    write_json(&dir.join("vocab.json"), &serde_json::Value::Object(vocab))?;
    let merges: String = std::iter::once("#version: 0.2".to_owned())
        .chain(CLIP_MERGES.iter().map(|(a, b)| format!("{a} {b}")))
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("merges.txt");
    std::fs::write(&path, merges + "\n").map_err(|e| BackendError::io(&path, e))?;
    let pad = if pad_with_bang { "!" } else { CLIP_EOS };
    write_json(
        &dir.join("special_tokens_map.json"),
        &json!({"bos_token": CLIP_BOS, "eos_token": CLIP_EOS, "unk_token": CLIP_EOS, "pad_token": pad}),
    )
}

/// Words of the tiny T5 vocabulary.
const T5_WORDS: &[&str] = &[
    "a",
    "the",
    "red",
    "blue",
    "green",
    "fox",
    "cat",
    "dog",
    "on",
    "in",
    "of",
    "lighthouse",
    "at",
    "dawn",
    "robot",
    "small",
    "large",
    "sky",
    "sea",
    "tree",
];

/// A tiny T5 `tokenizer.json` (word level, `</s>` appended like T5's).
pub fn t5_tokenizer(dir: &Path) -> Result<(), BackendError> {
    WordLevelTokenizer {
        tokens: ["<pad>", "</s>", "<unk>"]
            .iter()
            .chain(T5_WORDS)
            .copied()
            .collect(),
        unk: "<unk>",
        lowercase: true,
        added: &[],
        template: Some("$A </s>"),
    }
    .write(dir)?;
    write_json(
        &dir.join("special_tokens_map.json"),
        &json!({"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}),
    )
}

/// Removes a checkpoint directory written here (big ones should not outlive a measurement).
pub fn remove(dir: &Path) -> Result<(), BackendError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BackendError::io(dir, e)),
    }
}

/// The spec's weight file of `component` in `dir` (handy in tests).
pub fn weight_file(
    dir: &Path,
    pipeline: Pipeline,
    component: &str,
) -> Result<PathBuf, BackendError> {
    let components = Geometry::real().components(pipeline)?;
    let c = components
        .iter()
        .find(|c| c.name == component)
        .ok_or_else(|| BackendError::config(dir, format!("no component `{component}`")))?;
    Ok(dir.join(c.files.first().cloned().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_axes_are_even_and_sum_to_the_head() {
        assert_eq!(rope_axes(128), vec![16, 56, 56]);
        for head in [8, 16, 24, 32, 64, 96, 304] {
            let a = rope_axes(head);
            assert_eq!(a.iter().sum::<u64>(), head, "{a:?}");
            assert!(a.iter().all(|x| x % 2 == 0), "{a:?}");
        }
    }
}
