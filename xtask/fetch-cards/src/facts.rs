//! Architecture and serving facts read from what the Hub serves: `config.json` (and the
//! per-folder configs of Diffusers and Sentence-Transformers repos), GGUF metadata, and the
//! tensor names of weight headers. Every fact is `fetched` and names the file it came from.

use super::gguf::{meta_array_len, meta_f64, meta_str, meta_u64};
use candle_core::quantized::gguf_file::Value as GgufValue;
use model_spec::shapes::TensorDesc;
use model_spec::{DType, Fact, Family, Provenance};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};

pub type Facts = BTreeMap<String, Fact>;

pub fn fetched(value: toml::Value, source: impl Into<String>) -> Fact {
    Fact {
        value,
        provenance: Provenance::Fetched,
        source: Some(source.into()),
        formula: None,
    }
}

pub fn derived(value: toml::Value, formula: impl Into<String>) -> Fact {
    Fact {
        value,
        provenance: Provenance::Derived,
        source: None,
        formula: Some(formula.into()),
    }
}

/// A JSON scalar (or list of scalars) as a TOML value; objects and nulls have none.
pub fn to_toml(v: &Json) -> Option<toml::Value> {
    Some(match v {
        Json::Bool(b) => toml::Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Json::String(s) => toml::Value::String(s.clone()),
        Json::Array(a) => toml::Value::Array(a.iter().map(to_toml).collect::<Option<_>>()?),
        _ => return None,
    })
}

/// Decides a component's family from its config (`model_type`, `architectures`, or a Diffusers
/// `_class_name`), or from the class named for its folder in `model_index.json`.
pub fn family_from_config(cfg: Option<&Json>, class: Option<&str>) -> Option<Family> {
    let class = class.or_else(|| cfg?.get("_class_name")?.as_str());
    if let Some(c) = class {
        let latent = cfg
            .and_then(|c| c.get("latent_channels"))
            .and_then(Json::as_u64);
        let f = match c {
            "FluxTransformer2DModel" => Some(Family::Flux),
            "SD3Transformer2DModel" => Some(Family::Mmdit),
            "AutoencoderKL" if latent == Some(16) => Some(Family::Autoencoder16),
            "CLIPTextModel" | "CLIPTextModelWithProjection" => Some(Family::ClipText),
            "T5EncoderModel" => Some(Family::T5Encoder),
            _ => None,
        };
        if f.is_some() {
            return f;
        }
    }
    let cfg = cfg?;
    let archs: Vec<&str> = cfg
        .get("architectures")
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    if archs.iter().any(|a| a.starts_with("JinaBert")) {
        return Some(Family::JinaBert);
    }
    match cfg.get("model_type").and_then(Json::as_str)? {
        "bert" => Some(Family::Bert),
        "qwen2" => Some(Family::Qwen2),
        "clip" => Some(Family::Clip),
        "llava" => Some(Family::Llava),
        "nvembed" => Some(Family::NvEmbed),
        "t5" => Some(Family::T5Encoder),
        "clip_text_model" => Some(Family::ClipText),
        _ => None,
    }
}

pub fn family_from_gguf(arch: &str) -> Option<Family> {
    match arch {
        "phi3" => Some(Family::Phi3),
        "qwen3moe" => Some(Family::Qwen3Moe),
        "deepseek2" => Some(Family::Deepseek2),
        _ => None,
    }
}

const DECODER_KEYS: &[&str] = &[
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
    "hidden_act",
    "layer_norm_eps",
    "rms_norm_eps",
    "rope_theta",
    "tie_word_embeddings",
    "sliding_window",
];

/// The keys `family` requires under `prefix` (`text_`, `vision_`), without it: what the spec
/// needs from the config's sub-config stored under that prefix.
fn keys_under(family: Family, prefix: &str) -> Vec<&'static str> {
    let keys = family.required_keys().iter();
    keys.filter_map(|k| k.strip_prefix(prefix)).collect()
}

struct Reader<'a> {
    cfg: &'a Json,
    file: &'a str,
    out: Facts,
}

impl Reader<'_> {
    /// Copies `obj_path.key` (dotted) as `as_key`.
    fn copy(&mut self, path: &str, as_key: &str) {
        let mut v = self.cfg;
        for part in path.split('.') {
            match v.get(part) {
                Some(x) => v = x,
                None => return,
            }
        }
        if let Some(t) = to_toml(v) {
            self.out.insert(
                as_key.to_owned(),
                fetched(t, format!("{} {path}", self.file)),
            );
        }
    }
    fn copy_all(&mut self, keys: &[&str], from: &str, prefix: &str) {
        for k in keys {
            let path = if from.is_empty() {
                (*k).to_owned()
            } else {
                format!("{from}.{k}")
            };
            self.copy(&path, &format!("{prefix}{k}"));
        }
    }
    fn u(&self, key: &str) -> Option<u64> {
        match &self.out.get(key)?.value {
            toml::Value::Integer(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }
}

/// Facts from a component's config.json (`file` names it in sources).
pub fn config_facts(family: Family, cfg: &Json, file: &str) -> Facts {
    let mut r = Reader {
        cfg,
        file,
        out: Facts::new(),
    };
    match family {
        Family::Bert | Family::JinaBert | Family::Qwen2 => r.copy_all(DECODER_KEYS, "", ""),
        Family::NvEmbed => {
            r.copy("model_type", "model_type");
            r.copy_all(&DECODER_KEYS[1..], "text_config", "");
            r.copy("latent_attention_config.num_latents_value", "num_latents");
            r.copy("latent_attention_config.num_cross_heads", "latent_heads");
            r.copy("latent_attention_config.cross_dim_head", "latent_dim_head");
        }
        Family::Clip => {
            r.copy("model_type", "model_type");
            r.copy("projection_dim", "projection_dim");
            r.copy_all(&keys_under(family, "text_"), "text_config", "text_");
            r.copy_all(&keys_under(family, "vision_"), "vision_config", "vision_");
        }
        Family::Llava => {
            r.copy("model_type", "model_type");
            r.copy_all(&DECODER_KEYS[1..], "text_config", "text_");
            r.copy_all(&keys_under(family, "vision_"), "vision_config", "vision_");
            r.copy("projector_hidden_act", "projector_hidden_act");
            r.copy("vision_feature_layer", "vision_feature_layer");
        }
        Family::T5Encoder => {
            r.copy_all(family.required_keys(), "", "");
            r.copy_all(&["model_type", "relative_attention_num_buckets"], "", "");
        }
        Family::ClipText | Family::Mmdit => r.copy_all(family.required_keys(), "", ""),
        Family::Dense => r.copy_all(
            &["in_features", "out_features", "bias", "activation_function"],
            "",
            "",
        ),
        Family::Flux => {
            r.copy("in_channels", "in_channels");
            r.copy("num_layers", "depth");
            r.copy("num_single_layers", "depth_single_blocks");
            r.copy("num_attention_heads", "num_heads");
            r.copy("joint_attention_dim", "context_in_dim");
            r.copy("pooled_projection_dim", "vec_in_dim");
            r.copy("guidance_embeds", "guidance_embed");
            r.copy("attention_head_dim", "attention_head_dim");
            if let (Some(h), Some(d)) = (r.u("num_heads"), r.u("attention_head_dim")) {
                r.out.insert(
                    "hidden_size".into(),
                    derived(
                        toml::Value::Integer((h * d) as i64),
                        "num_attention_heads × attention_head_dim (config.json)",
                    ),
                );
            }
        }
        Family::Autoencoder16 => {
            r.copy("layers_per_block", "num_res_blocks");
            r.copy("latent_channels", "z_channels");
            let chans: Option<Vec<u64>> = cfg
                .get("block_out_channels")
                .and_then(Json::as_array)
                .and_then(|a| a.iter().map(Json::as_u64).collect());
            if let Some(ch) = chans.filter(|c| !c.is_empty() && c[0] > 0) {
                r.out.insert(
                    "ch".into(),
                    fetched(
                        toml::Value::Integer(ch[0] as i64),
                        format!("{file} block_out_channels[0]"),
                    ),
                );
                r.out.insert(
                    "ch_mult".into(),
                    derived(
                        toml::Value::Array(
                            ch.iter()
                                .map(|c| toml::Value::Integer((c / ch[0]) as i64))
                                .collect(),
                        ),
                        "block_out_channels / block_out_channels[0] (config.json)",
                    ),
                );
            }
        }
        Family::Phi3 | Family::Qwen3Moe | Family::Deepseek2 => {}
    }
    r.out
}

/// `general.file_type` (llama.cpp `llama_ftype`) as its recipe name.
fn file_type_name(t: u64) -> Option<&'static str> {
    Some(match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

/// Facts from GGUF metadata (`file` names the part it was read from).
pub fn gguf_facts(family: Family, m: &HashMap<String, GgufValue>, file: &str) -> Facts {
    let mut out = Facts::new();
    let Some(a) = meta_str(m, "general.architecture") else {
        return out;
    };
    let src = |k: &str| format!("{file} GGUF metadata {k}");
    out.insert(
        "gguf_architecture".into(),
        fetched(toml::Value::String(a.into()), src("general.architecture")),
    );
    let int = |out: &mut Facts, key: &str, meta: &str| {
        if let Some(v) = meta_u64(m, meta) {
            out.insert(
                key.into(),
                fetched(toml::Value::Integer(v as i64), src(meta)),
            );
        }
    };
    let k = |s: &str| format!("{a}.{s}");
    int(&mut out, "hidden_size", &k("embedding_length"));
    int(&mut out, "num_hidden_layers", &k("block_count"));
    int(&mut out, "num_attention_heads", &k("attention.head_count"));
    int(
        &mut out,
        "num_key_value_heads",
        &k("attention.head_count_kv"),
    );
    int(&mut out, "intermediate_size", &k("feed_forward_length"));
    int(&mut out, "max_position_embeddings", &k("context_length"));
    if let Some(v) = meta_f64(m, &k("rope.freq_base")) {
        out.insert(
            "rope_theta".into(),
            fetched(toml::Value::Float(v), src(&k("rope.freq_base"))),
        );
    }
    if meta_u64(m, &k("vocab_size")).is_some() {
        int(&mut out, "vocab_size", &k("vocab_size"));
    } else if let Some(n) = meta_array_len(m, "tokenizer.ggml.tokens") {
        out.insert(
            "vocab_size".into(),
            fetched(
                toml::Value::Integer(n as i64),
                format!("{file} GGUF metadata tokenizer.ggml.tokens (length)"),
            ),
        );
    }
    if let Some(name) = meta_u64(m, "general.file_type").and_then(file_type_name) {
        out.insert(
            "file_type".into(),
            fetched(toml::Value::String(name.into()), src("general.file_type")),
        );
    }
    match family {
        Family::Phi3 | Family::Qwen3Moe => {
            int(&mut out, "head_dim", &k("attention.key_length"));
            int(
                &mut out,
                "moe_intermediate_size",
                &k("expert_feed_forward_length"),
            );
            int(&mut out, "num_experts", &k("expert_count"));
            int(&mut out, "num_experts_per_tok", &k("expert_used_count"));
        }
        Family::Deepseek2 => {
            int(
                &mut out,
                "first_k_dense_replace",
                &k("leading_dense_block_count"),
            );
            int(
                &mut out,
                "moe_intermediate_size",
                &k("expert_feed_forward_length"),
            );
            int(&mut out, "n_routed_experts", &k("expert_count"));
            int(&mut out, "n_shared_experts", &k("expert_shared_count"));
            int(&mut out, "num_experts_per_tok", &k("expert_used_count"));
            int(&mut out, "kv_lora_rank", &k("attention.kv_lora_rank"));
            int(&mut out, "q_lora_rank", &k("attention.q_lora_rank"));
            int(&mut out, "qk_rope_head_dim", &k("rope.dimension_count"));
            // Newer conversions store the MLA head sizes under `*_mla`.
            let v_key = [k("attention.value_length_mla"), k("attention.value_length")]
                .into_iter()
                .find(|key| meta_u64(m, key).is_some());
            if let Some(vk) = v_key {
                int(&mut out, "v_head_dim", &vk);
            }
            let key_len = [k("attention.key_length_mla"), k("attention.key_length")]
                .into_iter()
                .find_map(|key| meta_u64(m, &key).map(|v| (key, v)));
            if let (Some((key, kl)), Some(rope)) =
                (key_len, meta_u64(m, &k("rope.dimension_count")))
                && kl >= rope
            {
                out.insert(
                    "qk_nope_head_dim".into(),
                    derived(
                        toml::Value::Integer((kl - rope) as i64),
                        format!("{key} − {a}.rope.dimension_count (GGUF metadata)"),
                    ),
                );
            }
        }
        _ => {}
    }
    out
}

/// Facts read off tensor names and types (`file` names the header).
pub fn header_facts(family: Family, tensors: &[TensorDesc], file: &str, gguf: bool) -> Facts {
    let mut out = Facts::new();
    let has = |suffix: &str| tensors.iter().any(|t| t.name.ends_with(suffix));
    let flag = |out: &mut Facts, key: &str, v: bool, what: &str| {
        out.insert(
            key.into(),
            fetched(toml::Value::Boolean(v), format!("{file} header: {what}")),
        );
    };
    if !gguf {
        let mut by_type: BTreeMap<DType, u64> = BTreeMap::new();
        for t in tensors.iter().filter(|t| t.dtype.is_float()) {
            *by_type.entry(t.dtype).or_default() += t.bytes();
        }
        if let Some((d, _)) = by_type.iter().max_by_key(|(_, b)| **b) {
            out.insert(
                "storage_dtype".into(),
                fetched(
                    toml::Value::String(d.as_str().into()),
                    format!("{file} header: float type holding the most bytes"),
                ),
            );
        }
    }
    match family {
        Family::Bert => {
            flag(
                &mut out,
                "stores_position_ids",
                has("embeddings.position_ids"),
                "embeddings.position_ids present",
            );
            flag(
                &mut out,
                "has_pooler",
                has("pooler.dense.weight"),
                "pooler.dense.weight present",
            );
        }
        Family::JinaBert => {
            flag(
                &mut out,
                "has_pooler",
                has("pooler.dense.weight"),
                "pooler.dense.weight present",
            );
        }
        Family::Qwen2 => flag(
            &mut out,
            "stores_lm_head",
            has("lm_head.weight"),
            "lm_head.weight present",
        ),
        Family::ClipText => flag(
            &mut out,
            "has_projection",
            has("text_projection.weight"),
            "text_projection.weight present",
        ),
        Family::Dense => {
            flag(&mut out, "bias", has("linear.bias"), "linear.bias present");
            if let Some(w) = tensors.iter().find(|t| t.name.ends_with("linear.weight"))
                && w.shape.len() == 2
            {
                let src = format!("{file} header: linear.weight shape {:?}", w.shape);
                out.insert(
                    "out_features".into(),
                    fetched(toml::Value::Integer(w.shape[0] as i64), src.clone()),
                );
                out.insert(
                    "in_features".into(),
                    fetched(toml::Value::Integer(w.shape[1] as i64), src),
                );
            }
        }
        _ => {}
    }
    out
}

/// `head_dim` where a family uses one and the config does not state it.
pub fn derived_head_dim(family: Family, arch: &Facts) -> Option<Fact> {
    let keyed = matches!(
        family,
        Family::Bert | Family::JinaBert | Family::Qwen2 | Family::NvEmbed | Family::Phi3
    );
    if !keyed || arch.contains_key("head_dim") {
        return None;
    }
    let g = |k: &str| match &arch.get(k)?.value {
        toml::Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    };
    let (h, n) = (g("hidden_size")?, g("num_attention_heads")?);
    (n > 0).then(|| {
        derived(
            toml::Value::Integer((h / n) as i64),
            "hidden_size / num_attention_heads",
        )
    })
}

/// Serving facts of a Sentence-Transformers repo (sequence length, pooling, output size).
pub fn sentence_transformers_serving(
    st_config: Option<&Json>,
    pooling: Option<(&str, &Json)>,
    modules: Option<&Json>,
    dense_out: Option<(&str, u64)>,
) -> Facts {
    let mut out = Facts::new();
    if let Some(n) = st_config
        .and_then(|c| c.get("max_seq_length"))
        .and_then(Json::as_u64)
    {
        out.insert(
            "max_input_tokens".into(),
            fetched(
                toml::Value::Integer(n as i64),
                "sentence_bert_config.json max_seq_length",
            ),
        );
    }
    if let Some((path, p)) = pooling {
        if let Some(d) = p.get("word_embedding_dimension").and_then(Json::as_u64) {
            out.insert(
                "embedding_dim".into(),
                fetched(
                    toml::Value::Integer(d as i64),
                    format!("{path} word_embedding_dimension"),
                ),
            );
        }
        let mode = [
            ("pooling_mode_mean_tokens", "mean"),
            ("pooling_mode_cls_token", "cls"),
            ("pooling_mode_lasttoken", "last_token"),
            ("pooling_mode_max_tokens", "max"),
        ]
        .into_iter()
        .find(|(k, _)| p.get(*k).and_then(Json::as_bool) == Some(true));
        if let Some((k, m)) = mode {
            out.insert(
                "pooling".into(),
                fetched(toml::Value::String(m.into()), format!("{path} {k}")),
            );
        }
    }
    if let Some((path, d)) = dense_out {
        out.insert(
            "embedding_dim".into(),
            fetched(
                toml::Value::Integer(d as i64),
                format!("{path} out_features (last Dense module)"),
            ),
        );
    }
    if let Some(m) = modules.and_then(Json::as_array) {
        let norm = m.iter().any(|x| {
            x.get("type")
                .and_then(Json::as_str)
                .is_some_and(|t| t.ends_with(".Normalize"))
        });
        out.insert(
            "normalize".into(),
            fetched(
                toml::Value::Boolean(norm),
                "modules.json (a sentence_transformers.models.Normalize module)",
            ),
        );
    }
    out
}
