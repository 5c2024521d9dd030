//! Tiny random-weight checkpoints of the six families, written in the Hub layout the real
//! ones use: `config.json` in each model's own format, safetensors with the checkpoints' tensor
//! names (written by candle), a `tokenizer.json` built with the tokenizers crate, and the
//! Sentence-Transformers files where the real model has them. They are loaded by the same code
//! as real checkpoints.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use model_serving::{DeclaredMemory, EmbedOptions, Family, ServedModel};
use serde_json::json;

use model_runtime::BackendError;

use crate::tokenizer::WordLevelTokenizer;
use crate::weights::Weights;

/// Writes a JSON file of the checkpoint (fixtures write into fresh scratch folders, so a
/// failure is a broken test machine).
fn write_json(path: &Path, value: serde_json::Value) {
    crate::write_json(path, &value).unwrap();
}

/// Words the tiny tokenizers know (others become the unknown token).
pub const WORDS: &[&str] = &[
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "hello",
    "world",
    "a",
    "memory",
    "aware",
    "pool",
    "keeps",
    "models",
    "resident",
    "until",
    "they",
    "are",
    "idle",
    "rust",
    "makes",
    "systems",
    "programming",
    "safer",
    "cat",
    "sat",
    "on",
    "mat",
    "red",
    "blue",
    "green",
    "search",
    "engine",
    "cooks",
    "pasta",
    "with",
    "tomato",
    "sauce",
    "instruct",
    "given",
    "web",
    "query",
    "retrieve",
    "relevant",
    "passages",
    "that",
    "answer",
    "question",
    "photo",
    "of",
    "is",
    "and",
    "to",
    "in",
    ":",
    ".",
    ",",
];

/// Vocabulary size in every tiny config (specials + words, rounded up).
pub const VOCAB: usize = 96;

/// Writes the tiny checkpoint of `family` into a fresh directory and returns it.
pub fn tiny(family: Family) -> PathBuf {
    let dir = crate::scratch(family.as_str());
    write_tiny(&dir, family);
    dir
}

/// Writes the tiny checkpoint of `family` into `dir`.
pub fn write_tiny(dir: &Path, family: Family) {
    let dir = dir.to_path_buf();
    match family {
        Family::Bert => bert(&dir),
        Family::Stella => write_stella(&dir, &Qwen2Geometry::TINY, 24),
        Family::GteQwen2 => write_gte_qwen2(&dir, &Qwen2Geometry::TINY),
        Family::JinaBert => write_jina(&dir, &JinaGeometry::TINY),
        Family::NvEmbed => write_nvembed(&dir, &NvEmbedGeometry::TINY),
        Family::Clip => write_clip(&dir, &ClipGeometry::TINY),
    }
}

/// The estimator's figure for a tiny checkpoint, split the way the pool declares it (without
/// the margin: the tiny figures are exact inventories).
pub fn tiny_memory(family: Family, dir: &Path) -> DeclaredMemory {
    let backend = model_serving::config::backend_of_family(family);
    let e = model_serving::checkpoint::estimate_checkpoint(backend, dir, None).unwrap();
    let base = DeclaredMemory::of(model_serving::registry::template(backend).unwrap());
    DeclaredMemory {
        resident_bytes: e.weights_bytes + e.overhead_bytes,
        per_request_bytes: e.kv_cache_bytes + e.activations_bytes,
        profile_batch: base.profile_batch,
        profile_seq_len: base.profile_seq_len,
        estimate_mb: Some(e.est_memory_allocation_mb),
    }
}

/// A tiny embedder served as `tiny/<family>` the way the registry model of its family is:
/// the template's dtype and query instruction, and the estimator's figure for its headers.
pub fn tiny_served(family: Family, dir: &Path) -> ServedModel {
    let backend = model_serving::config::backend_of_family(family);
    let template = model_serving::registry::template(backend).unwrap();
    let mut options = EmbedOptions::new()
        .family(family)
        .memory(tiny_memory(family, dir));
    if let Some(d) = template.default_profile.load_dtype {
        options = options.dtype(model_runtime::parse_dtype(d).unwrap());
    }
    if let Some(q) = template.serving.query_instruction {
        options = options.query_instruction(q);
    }
    ServedModel::new(format!("tiny/{family}"), dir, options)
}

/// A word-level tokenizer: `specials` first (ids 0…), then [`WORDS`]; `template` wraps a
/// single input (e.g. `"[CLS] $A [SEP]"`).
pub(crate) fn tokenizer(dir: &Path, specials: &[&str], template: Option<&str>) {
    let tokens: Vec<&str> = specials.iter().chain(WORDS).copied().collect();
    assert!(tokens.len() <= VOCAB);
    let unk = specials
        .iter()
        .find(|s| s.contains("unk") || s.contains("UNK"))
        .unwrap_or(&specials[0]);
    WordLevelTokenizer {
        tokens,
        unk,
        lowercase: true,
        added: &[],
        template,
    }
    .write(dir)
    .unwrap();
}

const H: usize = 32;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const INTER: usize = 64;
const LAYERS: usize = 2;

fn bert(dir: &Path) {
    let max_pos = 64;
    write_json(
        &dir.join("config.json"),
        json!({
            "architectures": ["BertModel"], "model_type": "bert", "vocab_size": VOCAB, "hidden_size": H,
            "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": INTER,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": max_pos, "type_vocab_size": 2, "initializer_range": 0.02,
            "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "absolute"
        }),
    );
    // Sentence-Transformers truncates at max_seq_length: 24 here, so tests can exceed it.
    write_json(
        &dir.join("sentence_bert_config.json"),
        json!({ "max_seq_length": 24, "do_lower_case": false }),
    );
    modules_json(dir, "2_Normalize", "Normalize");
    tokenizer(
        dir,
        &["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        Some("[CLS] $A [SEP]"),
    );
    let mut w = Weights::new(DType::F32, 1);
    w.map.insert(
        "embeddings.position_ids".into(),
        Tensor::arange(0i64, max_pos as i64, &Device::Cpu)
            .unwrap()
            .reshape((1, max_pos))
            .unwrap(),
    );
    w.rand("embeddings.word_embeddings.weight", &[VOCAB, H]);
    w.rand("embeddings.position_embeddings.weight", &[max_pos, H]);
    w.rand("embeddings.token_type_embeddings.weight", &[2, H]);
    w.layer_norm("embeddings.LayerNorm", H);
    for n in 0..LAYERS {
        let p = format!("encoder.layer.{n}");
        for m in ["query", "key", "value"] {
            w.linear(&format!("{p}.attention.self.{m}"), H, H, true);
        }
        w.linear(&format!("{p}.attention.output.dense"), H, H, true);
        w.layer_norm(&format!("{p}.attention.output.LayerNorm"), H);
        w.linear(&format!("{p}.intermediate.dense"), H, INTER, true);
        w.linear(&format!("{p}.output.dense"), INTER, H, true);
        w.layer_norm(&format!("{p}.output.LayerNorm"), H);
    }
    w.linear("pooler.dense", H, H, true);
    w.save(&dir.join("model.safetensors"));
}

/// `modules.json` of a Sentence-Transformers checkpoint: Transformer, Pooling, then the
/// module `last` (`Normalize`, `Dense` …) in the folder `last_path`.
pub(crate) fn modules_json(dir: &Path, last_path: &str, last: &str) {
    write_json(
        &dir.join("modules.json"),
        json!([
            { "idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer" },
            { "idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling" },
            { "idx": 2, "name": "2", "path": last_path, "type": format!("sentence_transformers.models.{last}") }
        ]),
    );
}

fn qwen2_config(dir: &Path, g: &Qwen2Geometry) {
    write_json(
        &dir.join("config.json"),
        json!({
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": g.vocab, "hidden_size": g.hidden,
            "intermediate_size": g.intermediate, "num_hidden_layers": g.layers, "num_attention_heads": g.heads,
            "num_key_value_heads": g.kv_heads, "max_position_embeddings": 4096, "sliding_window": 4096,
            "max_window_layers": g.layers, "use_sliding_window": false, "tie_word_embeddings": false,
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "hidden_act": "silu", "torch_dtype": "float32"
        }),
    );
}

/// Sizes of a Qwen2 (or Mistral) decoder stack.
pub struct Qwen2Geometry {
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub layers: usize,
    /// Weights are uniform in ± this.
    pub weight_spread: f32,
}

impl Qwen2Geometry {
    /// The tiny test geometry.
    pub const TINY: Qwen2Geometry = Qwen2Geometry {
        vocab: VOCAB,
        hidden: H,
        heads: HEADS,
        kv_heads: KV_HEADS,
        intermediate: INTER,
        layers: LAYERS,
        weight_spread: 0.2,
    };
    /// gte-Qwen2-1.5B-instruct's geometry (its config.json).
    pub const GTE_1_5B: Qwen2Geometry = Qwen2Geometry {
        vocab: 151_646,
        hidden: 1536,
        heads: 12,
        kv_heads: 2,
        intermediate: 8960,
        layers: 28,
        // Standard deviation 0.02, the checkpoint's initializer_range.
        weight_spread: 0.035,
    };
}

/// A Qwen2 / Mistral decoder stack under `prefix` (Qwen2 has biases on q, k and v; Mistral
/// none).
fn decoder_weights(w: &mut Weights, prefix: &str, qkv_bias: bool, g: &Qwen2Geometry) {
    let (h, hd) = (g.hidden, g.hidden / g.heads);
    w.rand(format!("{prefix}embed_tokens.weight"), &[g.vocab, h]);
    for n in 0..g.layers {
        let p = format!("{prefix}layers.{n}");
        w.linear(&format!("{p}.self_attn.q_proj"), h, g.heads * hd, qkv_bias);
        w.linear(
            &format!("{p}.self_attn.k_proj"),
            h,
            g.kv_heads * hd,
            qkv_bias,
        );
        w.linear(
            &format!("{p}.self_attn.v_proj"),
            h,
            g.kv_heads * hd,
            qkv_bias,
        );
        w.linear(&format!("{p}.self_attn.o_proj"), g.heads * hd, h, false);
        w.linear(&format!("{p}.mlp.gate_proj"), h, g.intermediate, false);
        w.linear(&format!("{p}.mlp.up_proj"), h, g.intermediate, false);
        w.linear(&format!("{p}.mlp.down_proj"), g.intermediate, h, false);
        w.rms(&format!("{p}.input_layernorm"), h);
        w.rms(&format!("{p}.post_attention_layernorm"), h);
    }
    w.rms(&format!("{prefix}norm"), h);
}

/// Stella: a Qwen2 body without the `model.` prefix, F32, and a Dense head of `dense`
/// outputs in `2_Dense_{dense}`, the folder modules.json names.
pub fn write_stella(dir: &Path, g: &Qwen2Geometry, dense: usize) {
    qwen2_config(dir, g);
    write_json(
        &dir.join("sentence_bert_config.json"),
        json!({ "max_seq_length": 32 }),
    );
    let head = format!("2_Dense_{dense}");
    modules_json(dir, &head, "Dense");
    write_json(
        &dir.join(&head).join("config.json"),
        json!({ "in_features": g.hidden, "out_features": dense, "bias": true, "activation_function": "torch.nn.modules.linear.Identity" }),
    );
    tokenizer(
        dir,
        &["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"],
        None,
    );
    let mut w = Weights::new(DType::F32, 2).with_spread(g.weight_spread);
    decoder_weights(&mut w, "", true, g);
    w.save(&dir.join("model.safetensors"));
    let mut weights = Weights::new(DType::F32, 3).with_spread(g.weight_spread);
    weights.linear("linear", g.hidden, dense, true);
    weights.save(&dir.join(&head).join("model.safetensors"));
}

/// GTE-Qwen2: a Qwen2 body under `model.` (and an `lm_head` it never reads), F32 in two
/// shards.
pub fn write_gte_qwen2(dir: &Path, g: &Qwen2Geometry) {
    qwen2_config(dir, g);
    tokenizer(
        dir,
        &["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"],
        Some("$A <|endoftext|>"),
    );
    let mut w = Weights::new(DType::F32, 4).with_spread(g.weight_spread);
    decoder_weights(&mut w, "model.", true, g);
    w.rand("lm_head.weight", &[g.vocab, g.hidden]);
    w.save_sharded(dir, 2);
}

/// Sizes of a JinaBERT checkpoint.
pub struct JinaGeometry {
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub max_positions: usize,
    /// Weights are uniform in ± this.
    pub weight_spread: f32,
}

impl JinaGeometry {
    /// The tiny test geometry.
    pub const TINY: JinaGeometry = JinaGeometry {
        vocab: VOCAB,
        hidden: H,
        heads: HEADS,
        intermediate: INTER,
        layers: LAYERS,
        max_positions: 512,
        weight_spread: 0.2,
    };
    /// jina-embeddings-v2-base-en's geometry (its config.json).
    pub const BASE: JinaGeometry = JinaGeometry {
        vocab: 30528,
        hidden: 768,
        heads: 12,
        intermediate: 3072,
        layers: 12,
        max_positions: 8192,
        // Standard deviation 0.02, the checkpoint's initializer_range.
        weight_spread: 0.035,
    };
}

/// JinaBERT, stored in F16 like the real checkpoint (loaded as F32).
pub fn write_jina(dir: &Path, g: &JinaGeometry) {
    let h = g.hidden;
    write_json(
        &dir.join("config.json"),
        json!({
            "architectures": ["JinaBertForMaskedLM"], "model_type": "bert", "vocab_size": g.vocab, "hidden_size": h,
            "num_hidden_layers": g.layers, "num_attention_heads": g.heads, "intermediate_size": g.intermediate,
            "hidden_act": "gelu", "max_position_embeddings": g.max_positions, "type_vocab_size": 2,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "position_embedding_type": "alibi", "feed_forward_type": "geglu", "emb_pooler": "mean"
        }),
    );
    tokenizer(
        dir,
        &["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        Some("[CLS] $A [SEP]"),
    );
    let mut w = Weights::new(DType::F16, 5).with_spread(g.weight_spread);
    w.rand("embeddings.word_embeddings.weight", &[g.vocab, h]);
    w.rand("embeddings.token_type_embeddings.weight", &[2, h]);
    w.layer_norm("embeddings.LayerNorm", h);
    for n in 0..g.layers {
        let p = format!("encoder.layer.{n}");
        for m in ["query", "key", "value"] {
            w.linear(&format!("{p}.attention.self.{m}"), h, h, true);
        }
        w.linear(&format!("{p}.attention.output.dense"), h, h, true);
        w.layer_norm(&format!("{p}.attention.output.LayerNorm"), h);
        w.linear(
            &format!("{p}.mlp.gated_layers"),
            h,
            2 * g.intermediate,
            false,
        );
        w.linear(&format!("{p}.mlp.wo"), g.intermediate, h, true);
        w.layer_norm(&format!("{p}.mlp.layernorm"), h);
    }
    w.linear("pooler.dense", h, h, true);
    w.save(&dir.join("model.safetensors"));
}

/// Sizes of an NV-Embed checkpoint: its Mistral body and latent-attention pooling.
pub struct NvEmbedGeometry {
    pub body: Qwen2Geometry,
    /// Learned latents the tokens attend to.
    pub latents: usize,
    /// Cross-attention heads, each as wide as the body.
    pub cross_heads: usize,
}

impl NvEmbedGeometry {
    /// The tiny test geometry.
    pub const TINY: NvEmbedGeometry = NvEmbedGeometry {
        body: Qwen2Geometry::TINY,
        latents: 8,
        cross_heads: 2,
    };
    /// NV-Embed-v2's geometry (its config.json: Mistral-7B's body, 512 latents, 8 heads).
    pub const V2: NvEmbedGeometry = NvEmbedGeometry {
        body: Qwen2Geometry {
            vocab: 32_000,
            hidden: 4096,
            heads: 32,
            kv_heads: 8,
            intermediate: 14_336,
            layers: 32,
            // Standard deviation 0.02, Mistral's initializer_range.
            weight_spread: 0.035,
        },
        latents: 512,
        cross_heads: 8,
    };
}

/// NV-Embed: a Mistral body under `embedding_model.` and the pooling block under
/// `latent_attention_model.`, F16 in two shards, as the real checkpoint ships.
pub fn write_nvembed(dir: &Path, g: &NvEmbedGeometry) {
    let (h, b) = (g.body.hidden, &g.body);
    write_json(
        &dir.join("config.json"),
        json!({
            "architectures": ["NVEmbedModel"], "model_type": "nvembed", "add_eos": true, "add_pad_token": true,
            "is_mask_instruction": true, "padding_side": "right",
            "latent_attention_config": {
                "model_type": "latent_attention", "num_latents_value": g.latents, "num_cross_heads": g.cross_heads,
                "latent_dim": h, "cross_dim_head": h, "hidden_dim": h, "output_normalize": true
            },
            "text_config": {
                "model_type": "bidir_mistral", "vocab_size": b.vocab, "hidden_size": h, "intermediate_size": b.intermediate,
                "num_hidden_layers": b.layers, "num_attention_heads": b.heads, "num_key_value_heads": b.kv_heads,
                "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
                "sliding_window": 4096, "bos_token_id": 1, "eos_token_id": 2
            },
            "torch_dtype": "float16"
        }),
    );
    tokenizer(dir, &["<unk>", "<s>", "</s>"], Some("<s> $A"));
    let mut w = Weights::new(DType::F16, 6).with_spread(b.weight_spread);
    decoder_weights(&mut w, "embedding_model.", false, b);
    let inner = g.cross_heads * h;
    let l = "latent_attention_model.cross_attend_blocks";
    w.rand("latent_attention_model.latents", &[g.latents, h]);
    w.layer_norm(&format!("{l}.0.norm"), h);
    w.layer_norm(&format!("{l}.0.norm_context"), h);
    w.linear(&format!("{l}.0.fn.to_q"), h, inner, false);
    w.linear(&format!("{l}.0.fn.to_kv"), h, 2 * inner, false);
    w.linear(&format!("{l}.0.fn.to_out"), inner, h, false);
    w.layer_norm(&format!("{l}.1.norm"), h);
    w.linear(&format!("{l}.1.fn.net.0"), h, 2 * 4 * h, true);
    w.linear(&format!("{l}.1.fn.net.2"), 4 * h, h, true);
    w.save_sharded(dir, 2);
}

/// Sizes of a CLIP checkpoint.
pub struct ClipGeometry {
    pub projection: usize,
    pub text_vocab: usize,
    pub text_hidden: usize,
    pub text_heads: usize,
    pub text_intermediate: usize,
    pub text_layers: usize,
    pub text_positions: usize,
    pub vision_hidden: usize,
    pub vision_heads: usize,
    pub vision_intermediate: usize,
    pub vision_layers: usize,
    pub image: usize,
    pub patch: usize,
    /// Weights are uniform in ± this.
    pub weight_spread: f32,
}

impl ClipGeometry {
    /// The tiny test geometry: a 16-token text limit, 32-pixel images in 8-pixel patches.
    pub const TINY: ClipGeometry = ClipGeometry {
        projection: 16,
        text_vocab: VOCAB,
        text_hidden: H,
        text_heads: HEADS,
        text_intermediate: INTER,
        text_layers: LAYERS,
        text_positions: 16,
        vision_hidden: H,
        vision_heads: HEADS,
        vision_intermediate: INTER,
        vision_layers: LAYERS,
        image: 32,
        patch: 8,
        weight_spread: 0.2,
    };
    /// clip-vit-base-patch32's geometry.
    pub const VIT_B_32: ClipGeometry = ClipGeometry {
        projection: 512,
        text_vocab: 49408,
        text_hidden: 512,
        text_heads: 8,
        text_intermediate: 2048,
        text_layers: 12,
        text_positions: 77,
        vision_hidden: 768,
        vision_heads: 12,
        vision_intermediate: 3072,
        vision_layers: 12,
        image: 224,
        patch: 32,
        // Standard deviation 0.02, the initializer scale of Transformers' CLIP.
        weight_spread: 0.035,
    };
}

/// CLIP in F32, like the real checkpoint.
pub fn write_clip(dir: &Path, g: &ClipGeometry) {
    write_json(
        &dir.join("config.json"),
        json!({
            "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": g.projection,
            "logit_scale_init_value": 2.6592,
            "text_config": {
                "vocab_size": g.text_vocab, "hidden_size": g.text_hidden, "intermediate_size": g.text_intermediate,
                "num_hidden_layers": g.text_layers, "num_attention_heads": g.text_heads,
                "max_position_embeddings": g.text_positions, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
                "projection_dim": g.projection
            },
            "vision_config": {
                "hidden_size": g.vision_hidden, "intermediate_size": g.vision_intermediate,
                "num_hidden_layers": g.vision_layers, "num_attention_heads": g.vision_heads, "image_size": g.image,
                "patch_size": g.patch, "num_channels": 3, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
                "projection_dim": g.projection
            }
        }),
    );
    clip_preprocessor(dir, g.image as u64).unwrap();
    tokenizer(
        dir,
        &["<|startoftext|>", "<|endoftext|>", "<unk>"],
        Some("<|startoftext|> $A <|endoftext|>"),
    );
    let mut w = Weights::new(DType::F32, 7).with_spread(g.weight_spread);
    let (th, vh) = (g.text_hidden, g.vision_hidden);
    w.rand(
        "text_model.embeddings.token_embedding.weight",
        &[g.text_vocab, th],
    );
    w.rand(
        "text_model.embeddings.position_embedding.weight",
        &[g.text_positions, th],
    );
    encoder(
        &mut w,
        "text_model.encoder",
        th,
        g.text_intermediate,
        g.text_layers,
    );
    w.layer_norm("text_model.final_layer_norm", th);
    let positions = (g.image / g.patch) * (g.image / g.patch) + 1;
    w.rand("vision_model.embeddings.class_embedding", &[vh]);
    w.rand(
        "vision_model.embeddings.patch_embedding.weight",
        &[vh, 3, g.patch, g.patch],
    );
    w.rand(
        "vision_model.embeddings.position_embedding.weight",
        &[positions, vh],
    );
    w.layer_norm("vision_model.pre_layrnorm", vh);
    encoder(
        &mut w,
        "vision_model.encoder",
        vh,
        g.vision_intermediate,
        g.vision_layers,
    );
    w.layer_norm("vision_model.post_layernorm", vh);
    w.linear("visual_projection", vh, g.projection, false);
    w.linear("text_projection", th, g.projection, false);
    w.map.insert(
        "logit_scale".into(),
        Tensor::new(2.6592f32, &Device::Cpu).unwrap(),
    );
    w.save(&dir.join("model.safetensors"));
}

/// `preprocessor_config.json` of a CLIP image processor for `image`-pixel squares (CLIP's and
/// LLaVA's vision towers).
pub(crate) fn clip_preprocessor(dir: &Path, image: u64) -> Result<(), BackendError> {
    crate::write_json(
        &dir.join("preprocessor_config.json"),
        &json!({
            "crop_size": { "height": image, "width": image }, "do_center_crop": true, "do_normalize": true,
            "do_resize": true, "image_processor_type": "CLIPImageProcessor", "resample": 3,
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
            "size": { "shortest_edge": image }
        }),
    )
}

fn encoder(w: &mut Weights, p: &str, h: usize, inter: usize, layers: usize) {
    for n in 0..layers {
        let q = format!("{p}.layers.{n}");
        for m in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            w.linear(&format!("{q}.self_attn.{m}"), h, h, true);
        }
        w.layer_norm(&format!("{q}.layer_norm1"), h);
        w.linear(&format!("{q}.mlp.fc1"), h, inter, true);
        w.linear(&format!("{q}.mlp.fc2"), inter, h, true);
        w.layer_norm(&format!("{q}.layer_norm2"), h);
    }
}
