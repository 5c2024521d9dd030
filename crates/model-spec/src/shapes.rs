//! Tensor shapes derived from architecture facts, per family.
//!
//! Used where a weight header could not be read (the Hub is offline here) and as a cross-check
//! where it was: the derived inventory must match the published file sizes. Names follow the
//! checkpoints' own conventions (Hugging Face for safetensors, llama.cpp for GGUF) so a derived
//! list can be compared tensor-by-tensor with a fetched header.
//!
//! GGUF quantization types follow llama.cpp's `Q4_K_M` recipe (`llama_tensor_get_type`):
//! 1-D tensors and MoE routers stay F32, `output.weight` is Q6_K, fused `attn_qkv` is Q5_K,
//! `attn_v` and `ffn_down*` are Q6_K on the layers `use_more_bits` selects, everything else
//! Q4_K; a tensor whose rows are not a multiple of 256 falls back (Q4_K → Q5_0, Q6_K → Q8_0).

use crate::dtype::DType;
use crate::spec::{Component, Family, Format, InventoryRow};
use std::collections::BTreeMap;

/// One tensor: name, shape (row-major for safetensors; ggml `ne` order for GGUF) and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDesc {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: DType,
}

impl TensorDesc {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> u64 {
        self.dtype
            .bytes_for(self.numel())
            .unwrap_or(self.numel() * self.dtype.block().1)
    }
}

/// Why shapes could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("component `{component}` ({family}): {message}")]
pub struct DeriveError {
    pub component: String,
    pub family: Family,
    pub field: String,
    pub message: String,
}

struct Ctx<'a> {
    c: &'a Component,
    out: Vec<TensorDesc>,
    /// Float storage type (safetensors) or the ggml file type recipe (GGUF).
    float: DType,
}

impl Ctx<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> DeriveError {
        DeriveError {
            component: self.c.name.clone(),
            family: self.c.family,
            field: field.to_owned(),
            message: message.into(),
        }
    }
    fn u(&self, key: &str) -> Result<u64, DeriveError> {
        self.c.arch_u64(key).ok_or_else(|| {
            self.err(
                key,
                format!("architecture value `{key}` is missing or not a non-negative integer"),
            )
        })
    }
    fn u_or(&self, key: &str, default: u64) -> u64 {
        self.c.arch_u64(key).unwrap_or(default)
    }
    fn b_or(&self, key: &str, default: bool) -> bool {
        self.c.arch_bool(key).unwrap_or(default)
    }
    fn push(&mut self, name: impl Into<String>, shape: &[u64]) {
        let dtype = self.float;
        self.out.push(TensorDesc {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
        });
    }
    fn typed(&mut self, name: impl Into<String>, shape: &[u64], dtype: DType) {
        self.out.push(TensorDesc {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
        });
    }
    /// `Linear(i -> o)`: weight `[o, i]` (+ bias `[o]`).
    fn linear(&mut self, p: &str, i: u64, o: u64, bias: bool) {
        self.push(format!("{p}.weight"), &[o, i]);
        if bias {
            self.push(format!("{p}.bias"), &[o]);
        }
    }
    fn layer_norm(&mut self, p: &str, n: u64) {
        self.push(format!("{p}.weight"), &[n]);
        self.push(format!("{p}.bias"), &[n]);
    }
    fn rms_norm(&mut self, p: &str, n: u64) {
        self.push(format!("{p}.weight"), &[n]);
    }
}

/// Derives every tensor of `c` from its architecture facts.
pub fn derive(c: &Component) -> Result<Vec<TensorDesc>, DeriveError> {
    let float = match c.format {
        Format::Safetensors => {
            let s = c
                .architecture
                .get("storage_dtype")
                .and_then(|f| f.get_ref().value.as_str());
            let s = s.ok_or_else(|| DeriveError {
                component: c.name.clone(),
                family: c.family,
                field: "storage_dtype".into(),
                message:
                    "architecture value `storage_dtype` (e.g. \"F32\") is needed to derive weights"
                        .into(),
            })?;
            s.parse().map_err(|m: String| DeriveError {
                component: c.name.clone(),
                family: c.family,
                field: "storage_dtype".into(),
                message: m,
            })?
        }
        Format::Gguf => DType::F32,
    };
    let mut x = Ctx {
        c,
        out: Vec::new(),
        float,
    };
    match c.family {
        Family::Bert => bert(&mut x)?,
        Family::JinaBert => jina_bert(&mut x)?,
        Family::Qwen2 => qwen2(&mut x)?,
        Family::Dense => {
            let (i, o) = (x.u("in_features")?, x.u("out_features")?);
            let bias = x.b_or("bias", true);
            x.linear("linear", i, o, bias);
        }
        Family::NvEmbed => nv_embed(&mut x)?,
        Family::Clip => clip(&mut x)?,
        Family::Llava => llava(&mut x)?,
        Family::Phi3 | Family::Qwen3Moe | Family::Deepseek2 => gguf(&mut x)?,
        Family::Flux => flux(&mut x)?,
        Family::Autoencoder16 => autoencoder16(&mut x)?,
        Family::T5Encoder => t5_encoder(&mut x)?,
        Family::ClipText => {
            clip_text_tower(&mut x, "text_model", "")?;
            if x.b_or("has_projection", true) {
                let (h, proj) = (x.u("hidden_size")?, x.u("projection_dim")?);
                x.linear("text_projection", h, proj, false);
            }
        }
        Family::Mmdit => mmdit(&mut x)?,
    }
    Ok(x.out)
}

/// The GGUF output projection. It gets an inventory row of its own, so that the cards show
/// the output head apart from the layers (it is often of another type, Q6_K in Q4_K_M).
pub const LOGITS_TENSOR: &str = "output.weight";

/// Aggregates tensors into inventory rows by type; tensors named in `separate` (loaders
/// treat them specially, e.g. dequantize or skip them) and [`LOGITS_TENSOR`] get their own
/// row.
pub fn inventory(tensors: &[TensorDesc], separate: &[String]) -> Vec<InventoryRow> {
    let mut by_type: BTreeMap<(Option<String>, DType), (u64, u64, u64)> = BTreeMap::new();
    for t in tensors {
        let own_row = separate.contains(&t.name) || t.name == LOGITS_TENSOR;
        let key = (own_row.then(|| t.name.clone()), t.dtype);
        let e = by_type.entry(key).or_default();
        e.0 += 1;
        e.1 += t.numel();
        e.2 += t.bytes();
    }
    let mut rows: Vec<InventoryRow> = by_type
        .into_iter()
        .map(|((name, dtype), (tensors, params, bytes))| InventoryRow {
            dtype,
            tensors,
            params,
            bytes,
            name,
        })
        .collect();
    // Named rows last, the rest by descending bytes: the order a reader wants.
    rows.sort_by(|a, b| {
        a.name
            .is_some()
            .cmp(&b.name.is_some())
            .then(b.bytes.cmp(&a.bytes))
    });
    rows
}

fn bert(x: &mut Ctx) -> Result<(), DeriveError> {
    let (h, l, i) = (
        x.u("hidden_size")?,
        x.u("num_hidden_layers")?,
        x.u("intermediate_size")?,
    );
    let (v, p, t) = (
        x.u("vocab_size")?,
        x.u("max_position_embeddings")?,
        x.u("type_vocab_size")?,
    );
    if x.b_or("stores_position_ids", false) {
        x.typed("embeddings.position_ids", &[1, p], DType::I64);
    }
    x.push("embeddings.word_embeddings.weight", &[v, h]);
    x.push("embeddings.position_embeddings.weight", &[p, h]);
    x.push("embeddings.token_type_embeddings.weight", &[t, h]);
    x.layer_norm("embeddings.LayerNorm", h);
    for n in 0..l {
        let p = format!("encoder.layer.{n}");
        for m in ["query", "key", "value"] {
            x.linear(&format!("{p}.attention.self.{m}"), h, h, true);
        }
        x.linear(&format!("{p}.attention.output.dense"), h, h, true);
        x.layer_norm(&format!("{p}.attention.output.LayerNorm"), h);
        x.linear(&format!("{p}.intermediate.dense"), h, i, true);
        x.linear(&format!("{p}.output.dense"), i, h, true);
        x.layer_norm(&format!("{p}.output.LayerNorm"), h);
    }
    if x.b_or("has_pooler", true) {
        x.linear("pooler.dense", h, h, true);
    }
    Ok(())
}

fn jina_bert(x: &mut Ctx) -> Result<(), DeriveError> {
    let (h, l, i) = (
        x.u("hidden_size")?,
        x.u("num_hidden_layers")?,
        x.u("intermediate_size")?,
    );
    let (v, t) = (x.u("vocab_size")?, x.u("type_vocab_size")?);
    // ALiBi: no position embeddings.
    x.push("embeddings.word_embeddings.weight", &[v, h]);
    x.push("embeddings.token_type_embeddings.weight", &[t, h]);
    x.layer_norm("embeddings.LayerNorm", h);
    for n in 0..l {
        let p = format!("encoder.layer.{n}");
        for m in ["query", "key", "value"] {
            x.linear(&format!("{p}.attention.self.{m}"), h, h, true);
        }
        x.linear(&format!("{p}.attention.output.dense"), h, h, true);
        x.layer_norm(&format!("{p}.attention.output.LayerNorm"), h);
        // GEGLU: gate and up fused in one matrix without bias (jina-embeddings-v2-base-en's
        // names; the code variant's `up_gated_layer` / `down_layer` are another layout).
        x.linear(&format!("{p}.mlp.gated_layers"), h, 2 * i, false);
        x.linear(&format!("{p}.mlp.wo"), i, h, true);
        x.layer_norm(&format!("{p}.mlp.layernorm"), h);
    }
    if x.b_or("has_pooler", true) {
        x.linear("pooler.dense", h, h, true);
    }
    Ok(())
}

/// A Llama/Mistral/Qwen2 decoder stack with HF names under `prefix`.
fn llama_like(
    x: &mut Ctx,
    prefix: &str,
    keys: [&str; 6],
    qkv_bias: bool,
) -> Result<(), DeriveError> {
    let [kh, kl, kheads, kkv, ki, kv] = keys;
    let (h, l, heads, kvh, i, v) = (
        x.u(kh)?,
        x.u(kl)?,
        x.u(kheads)?,
        x.u(kkv)?,
        x.u(ki)?,
        x.u(kv)?,
    );
    let hd = x.c.arch_u64("head_dim").unwrap_or(h / heads.max(1));
    x.push(format!("{prefix}embed_tokens.weight"), &[v, h]);
    for n in 0..l {
        let p = format!("{prefix}layers.{n}");
        x.linear(&format!("{p}.self_attn.q_proj"), h, heads * hd, qkv_bias);
        x.linear(&format!("{p}.self_attn.k_proj"), h, kvh * hd, qkv_bias);
        x.linear(&format!("{p}.self_attn.v_proj"), h, kvh * hd, qkv_bias);
        x.linear(&format!("{p}.self_attn.o_proj"), heads * hd, h, false);
        x.linear(&format!("{p}.mlp.gate_proj"), h, i, false);
        x.linear(&format!("{p}.mlp.up_proj"), h, i, false);
        x.linear(&format!("{p}.mlp.down_proj"), i, h, false);
        x.rms_norm(&format!("{p}.input_layernorm"), h);
        x.rms_norm(&format!("{p}.post_attention_layernorm"), h);
    }
    x.rms_norm(&format!("{prefix}norm"), h);
    Ok(())
}

fn qwen2(x: &mut Ctx) -> Result<(), DeriveError> {
    let keys = [
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
    ];
    llama_like(x, "", keys, true)?;
    if x.b_or("stores_lm_head", false) {
        let (h, v) = (x.u("hidden_size")?, x.u("vocab_size")?);
        x.push("lm_head.weight", &[v, h]);
    }
    Ok(())
}

fn nv_embed(x: &mut Ctx) -> Result<(), DeriveError> {
    let keys = [
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
    ];
    llama_like(x, "embedding_model.", keys, false)?;
    let h = x.u("hidden_size")?;
    let latents = x.u("num_latents")?;
    let heads = x.u("latent_heads")?;
    // NV-Embed's latent attention: dim_head equals the hidden size, so inner = heads × hidden.
    let dim_head = x.u_or("latent_dim_head", h);
    let mult = x.u_or("latent_ff_mult", 4);
    let inner = heads * dim_head;
    let p = "latent_attention_model";
    x.push(format!("{p}.latents"), &[latents, h]);
    let a = format!("{p}.cross_attend_blocks.0");
    x.layer_norm(&format!("{a}.norm"), h);
    x.layer_norm(&format!("{a}.norm_context"), h);
    x.linear(&format!("{a}.fn.to_q"), h, inner, false);
    x.linear(&format!("{a}.fn.to_kv"), h, 2 * inner, false);
    x.linear(&format!("{a}.fn.to_out"), inner, h, false);
    let f = format!("{p}.cross_attend_blocks.1");
    x.layer_norm(&format!("{f}.norm"), h);
    x.linear(&format!("{f}.fn.net.0"), h, h * mult * 2, true);
    x.linear(&format!("{f}.fn.net.2"), h * mult, h, true);
    Ok(())
}

/// A CLIP text tower (`text_model.*`), keys read with `kp` prefix (`"text_"` or `""`).
fn clip_text_tower(x: &mut Ctx, p: &str, kp: &str) -> Result<(), DeriveError> {
    let k = |s: &str| format!("{kp}{s}");
    let (h, l, i) = (
        x.u(&k("hidden_size"))?,
        x.u(&k("num_hidden_layers"))?,
        x.u(&k("intermediate_size"))?,
    );
    let (v, pos) = (x.u(&k("vocab_size"))?, x.u(&k("max_position_embeddings"))?);
    x.push(format!("{p}.embeddings.token_embedding.weight"), &[v, h]);
    x.push(
        format!("{p}.embeddings.position_embedding.weight"),
        &[pos, h],
    );
    clip_encoder(x, &format!("{p}.encoder"), h, i, l);
    x.layer_norm(&format!("{p}.final_layer_norm"), h);
    Ok(())
}

fn clip_encoder(x: &mut Ctx, p: &str, h: u64, i: u64, l: u64) {
    for n in 0..l {
        let q = format!("{p}.layers.{n}");
        for m in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            x.linear(&format!("{q}.self_attn.{m}"), h, h, true);
        }
        x.layer_norm(&format!("{q}.layer_norm1"), h);
        x.linear(&format!("{q}.mlp.fc1"), h, i, true);
        x.linear(&format!("{q}.mlp.fc2"), i, h, true);
        x.layer_norm(&format!("{q}.layer_norm2"), h);
    }
}

fn clip_vision_tower(x: &mut Ctx, p: &str) -> Result<(), DeriveError> {
    let (h, l, i) = (
        x.u("vision_hidden_size")?,
        x.u("vision_num_hidden_layers")?,
        x.u("vision_intermediate_size")?,
    );
    let (img, patch) = (x.u("vision_image_size")?, x.u("vision_patch_size")?);
    if patch == 0 {
        return Err(x.err("vision_patch_size", "must be > 0"));
    }
    let positions = (img / patch) * (img / patch) + 1;
    x.push(format!("{p}.embeddings.class_embedding"), &[h]);
    x.push(
        format!("{p}.embeddings.patch_embedding.weight"),
        &[h, 3, patch, patch],
    );
    x.push(
        format!("{p}.embeddings.position_embedding.weight"),
        &[positions, h],
    );
    x.layer_norm(&format!("{p}.pre_layrnorm"), h);
    clip_encoder(x, &format!("{p}.encoder"), h, i, l);
    x.layer_norm(&format!("{p}.post_layernorm"), h);
    Ok(())
}

fn clip(x: &mut Ctx) -> Result<(), DeriveError> {
    clip_text_tower(x, "text_model", "text_")?;
    clip_vision_tower(x, "vision_model")?;
    let proj = x.u("projection_dim")?;
    let (th, vh) = (x.u("text_hidden_size")?, x.u("vision_hidden_size")?);
    x.linear("visual_projection", vh, proj, false);
    x.linear("text_projection", th, proj, false);
    x.push("logit_scale", &[]);
    Ok(())
}

fn llava(x: &mut Ctx) -> Result<(), DeriveError> {
    clip_vision_tower(x, "vision_tower.vision_model")?;
    let (vh, th) = (x.u("vision_hidden_size")?, x.u("text_hidden_size")?);
    x.linear("multi_modal_projector.linear_1", vh, th, true);
    x.linear("multi_modal_projector.linear_2", th, th, true);
    let keys = [
        "text_hidden_size",
        "text_num_hidden_layers",
        "text_num_attention_heads",
        "text_num_key_value_heads",
        "text_intermediate_size",
        "text_vocab_size",
    ];
    llama_like(x, "language_model.model.", keys, false)?;
    let v = x.u("text_vocab_size")?;
    x.push("language_model.lm_head.weight", &[v, th]);
    Ok(())
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third one
/// in between get the larger type.
fn use_more_bits(i: u64, n: u64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Applies ggml's fallback for rows that are not a whole number of 256-element super-blocks.
fn fallback(t: DType, ne0: u64) -> DType {
    if !t.is_quantized() || ne0.is_multiple_of(t.block().0) {
        return t;
    }
    match t {
        DType::Q2K | DType::Q3K | DType::Q4K => DType::Q5_0,
        DType::Q5K => DType::Q5_1,
        DType::Q6K => DType::Q8_0,
        other => other,
    }
}

/// Type llama.cpp's Q4_K_M recipe gives a tensor. `layer` is the block index (read from the
/// tensor name, as llama.cpp does for MoE models) and `n_layer` what `use_more_bits` is
/// evaluated against for both `attn_v` and `ffn_down*`.
fn q4_k_m(name: &str, shape: &[u64], layer: Option<u64>, n_layer: u64) -> DType {
    if shape.len() <= 1 || name.contains("ffn_gate_inp") || name.ends_with("_norm.weight") {
        return DType::F32;
    }
    let ne0 = shape[0];
    let t = if name == "output.weight" {
        DType::Q6K
    } else if name.contains("attn_qkv") {
        DType::Q5K
    } else if name.contains("attn_v.weight") {
        if layer.is_some_and(|i| use_more_bits(i, n_layer)) {
            DType::Q6K
        } else {
            DType::Q4K
        }
    } else if name.contains("ffn_down") {
        if layer.is_some_and(|i| use_more_bits(i, n_layer)) {
            DType::Q6K
        } else {
            DType::Q4K
        }
    } else {
        DType::Q4K
    };
    fallback(t, ne0)
}

fn gguf(x: &mut Ctx) -> Result<(), DeriveError> {
    let recipe =
        x.c.architecture
            .get("file_type")
            .and_then(|f| f.get_ref().value.as_str());
    if recipe != Some("Q4_K_M") {
        return Err(x.err(
            "file_type",
            format!("only the llama.cpp `Q4_K_M` recipe can be derived; got {recipe:?}"),
        ));
    }
    // (name, ggml ne shape, layer)
    let mut t: Vec<(String, Vec<u64>, Option<u64>)> = Vec::new();
    let h = x.u("hidden_size")?;
    let l = x.u("num_hidden_layers")?;
    let v = x.u("vocab_size")?;
    let heads = x.u("num_attention_heads")?;
    t.push(("token_embd.weight".into(), vec![h, v], None));
    t.push(("output_norm.weight".into(), vec![h], None));
    t.push(("output.weight".into(), vec![h, v], None));
    match x.c.family {
        Family::Phi3 => {
            let (kv, hd, i) = (
                x.u("num_key_value_heads")?,
                x.u("head_dim")?,
                x.u("intermediate_size")?,
            );
            for n in 0..l {
                let b = |s: &str| format!("blk.{n}.{s}");
                t.push((b("attn_norm.weight"), vec![h], Some(n)));
                t.push((
                    b("attn_qkv.weight"),
                    vec![h, heads * hd + 2 * kv * hd],
                    Some(n),
                ));
                t.push((b("attn_output.weight"), vec![heads * hd, h], Some(n)));
                t.push((b("ffn_norm.weight"), vec![h], Some(n)));
                t.push((b("ffn_up.weight"), vec![h, 2 * i], Some(n)));
                t.push((b("ffn_down.weight"), vec![i, h], Some(n)));
            }
        }
        Family::Qwen3Moe => {
            let (kv, hd) = (x.u("num_key_value_heads")?, x.u("head_dim")?);
            let (e, mi) = (x.u("num_experts")?, x.u("moe_intermediate_size")?);
            for n in 0..l {
                let b = |s: &str| format!("blk.{n}.{s}");
                t.push((b("attn_norm.weight"), vec![h], Some(n)));
                t.push((b("attn_q.weight"), vec![h, heads * hd], Some(n)));
                t.push((b("attn_k.weight"), vec![h, kv * hd], Some(n)));
                t.push((b("attn_v.weight"), vec![h, kv * hd], Some(n)));
                t.push((b("attn_output.weight"), vec![heads * hd, h], Some(n)));
                t.push((b("attn_q_norm.weight"), vec![hd], Some(n)));
                t.push((b("attn_k_norm.weight"), vec![hd], Some(n)));
                t.push((b("ffn_norm.weight"), vec![h], Some(n)));
                t.push((b("ffn_gate_inp.weight"), vec![h, e], Some(n)));
                t.push((b("ffn_gate_exps.weight"), vec![h, mi, e], Some(n)));
                t.push((b("ffn_up_exps.weight"), vec![h, mi, e], Some(n)));
                t.push((b("ffn_down_exps.weight"), vec![mi, h, e], Some(n)));
            }
        }
        Family::Deepseek2 => {
            let dense = x.u("first_k_dense_replace")?;
            let (i, mi) = (x.u("intermediate_size")?, x.u("moe_intermediate_size")?);
            let (e, shared) = (x.u("n_routed_experts")?, x.u("n_shared_experts")?);
            let (kvr, qr) = (x.u("kv_lora_rank")?, x.u("q_lora_rank")?);
            let (nope, rope, vd) = (
                x.u("qk_nope_head_dim")?,
                x.u("qk_rope_head_dim")?,
                x.u("v_head_dim")?,
            );
            for n in 0..l {
                let b = |s: &str| format!("blk.{n}.{s}");
                t.push((b("attn_norm.weight"), vec![h], Some(n)));
                t.push((b("attn_q_a.weight"), vec![h, qr], Some(n)));
                t.push((b("attn_q_a_norm.weight"), vec![qr], Some(n)));
                t.push((
                    b("attn_q_b.weight"),
                    vec![qr, heads * (nope + rope)],
                    Some(n),
                ));
                t.push((b("attn_kv_a_mqa.weight"), vec![h, kvr + rope], Some(n)));
                t.push((b("attn_kv_a_norm.weight"), vec![kvr], Some(n)));
                // MLA split of kv_b used by llama.cpp's absorbed attention.
                t.push((b("attn_k_b.weight"), vec![nope, kvr, heads], Some(n)));
                t.push((b("attn_v_b.weight"), vec![kvr, vd, heads], Some(n)));
                t.push((b("attn_output.weight"), vec![heads * vd, h], Some(n)));
                t.push((b("ffn_norm.weight"), vec![h], Some(n)));
                if n < dense {
                    t.push((b("ffn_gate.weight"), vec![h, i], Some(n)));
                    t.push((b("ffn_up.weight"), vec![h, i], Some(n)));
                    t.push((b("ffn_down.weight"), vec![i, h], Some(n)));
                } else {
                    t.push((b("ffn_gate_inp.weight"), vec![h, e], Some(n)));
                    t.push((b("exp_probs_b.bias"), vec![e], Some(n)));
                    t.push((b("ffn_gate_exps.weight"), vec![h, mi, e], Some(n)));
                    t.push((b("ffn_up_exps.weight"), vec![h, mi, e], Some(n)));
                    t.push((b("ffn_down_exps.weight"), vec![mi, h, e], Some(n)));
                    if shared > 0 {
                        t.push((b("ffn_gate_shexp.weight"), vec![h, mi * shared], Some(n)));
                        t.push((b("ffn_up_shexp.weight"), vec![h, mi * shared], Some(n)));
                        t.push((b("ffn_down_shexp.weight"), vec![mi * shared, h], Some(n)));
                    }
                }
            }
        }
        _ => unreachable!("gguf() is only called for GGUF families"),
    }
    for (name, shape, layer) in t {
        let dtype = q4_k_m(&name, &shape, layer, l);
        x.typed(name, &shape, dtype);
    }
    Ok(())
}

fn flux(x: &mut Ctx) -> Result<(), DeriveError> {
    let (inc, vec_in, ctx_in) = (
        x.u("in_channels")?,
        x.u("vec_in_dim")?,
        x.u("context_in_dim")?,
    );
    let h = x.u("hidden_size")?;
    let ratio =
        x.c.arch_f64("mlp_ratio")
            .ok_or_else(|| x.err("mlp_ratio", "missing or not a number"))?;
    let heads = x.u("num_heads")?;
    let (depth, single) = (x.u("depth")?, x.u("depth_single_blocks")?);
    let mlp = (h as f64 * ratio) as u64;
    let hd = h / heads.max(1);
    let mlp_embedder = |x: &mut Ctx, p: &str, i: u64| {
        x.linear(&format!("{p}.in_layer"), i, h, true);
        x.linear(&format!("{p}.out_layer"), h, h, true);
    };
    x.linear("img_in", inc, h, true);
    mlp_embedder(x, "time_in", 256);
    mlp_embedder(x, "vector_in", vec_in);
    if x.b_or("guidance_embed", false) {
        mlp_embedder(x, "guidance_in", 256);
    }
    x.linear("txt_in", ctx_in, h, true);
    for n in 0..depth {
        let p = format!("double_blocks.{n}");
        for s in ["img", "txt"] {
            x.linear(&format!("{p}.{s}_mod.lin"), h, 6 * h, true);
            x.linear(&format!("{p}.{s}_attn.qkv"), h, 3 * h, true);
            x.push(format!("{p}.{s}_attn.norm.query_norm.scale"), &[hd]);
            x.push(format!("{p}.{s}_attn.norm.key_norm.scale"), &[hd]);
            x.linear(&format!("{p}.{s}_attn.proj"), h, h, true);
            x.linear(&format!("{p}.{s}_mlp.0"), h, mlp, true);
            x.linear(&format!("{p}.{s}_mlp.2"), mlp, h, true);
        }
    }
    for n in 0..single {
        let p = format!("single_blocks.{n}");
        x.linear(&format!("{p}.linear1"), h, 3 * h + mlp, true);
        x.linear(&format!("{p}.linear2"), h + mlp, h, true);
        x.push(format!("{p}.norm.query_norm.scale"), &[hd]);
        x.push(format!("{p}.norm.key_norm.scale"), &[hd]);
        x.linear(&format!("{p}.modulation.lin"), h, 3 * h, true);
    }
    x.linear("final_layer.linear", h, inc, true);
    x.linear("final_layer.adaLN_modulation.1", h, 2 * h, true);
    Ok(())
}

fn conv(x: &mut Ctx, p: &str, i: u64, o: u64, k: u64) {
    x.push(format!("{p}.weight"), &[o, i, k, k]);
    x.push(format!("{p}.bias"), &[o]);
}

fn resnet(x: &mut Ctx, p: &str, i: u64, o: u64) {
    x.layer_norm(&format!("{p}.norm1"), i);
    conv(x, &format!("{p}.conv1"), i, o, 3);
    x.layer_norm(&format!("{p}.norm2"), o);
    conv(x, &format!("{p}.conv2"), o, o, 3);
    if i != o {
        conv(x, &format!("{p}.nin_shortcut"), i, o, 1);
    }
}

fn attn_block(x: &mut Ctx, p: &str, c: u64) {
    x.layer_norm(&format!("{p}.norm"), c);
    for m in ["q", "k", "v", "proj_out"] {
        conv(x, &format!("{p}.{m}"), c, c, 1);
    }
}

/// The 16-channel KL autoencoder of FLUX and SD3 (BFL naming).
fn autoencoder16(x: &mut Ctx) -> Result<(), DeriveError> {
    let ch = x.u("ch")?;
    let mult =
        x.c.arch_list("ch_mult")
            .ok_or_else(|| x.err("ch_mult", "missing or not a list of integers"))?;
    let nres = x.u("num_res_blocks")?;
    let z = x.u("z_channels")?;
    let io = x.u_or("in_channels", 3);
    // Encoder.
    conv(x, "encoder.conv_in", io, ch, 3);
    let mut cur = ch;
    for (lvl, m) in mult.iter().enumerate() {
        let out = ch * m;
        for b in 0..nres {
            resnet(x, &format!("encoder.down.{lvl}.block.{b}"), cur, out);
            cur = out;
        }
        if lvl + 1 < mult.len() {
            conv(
                x,
                &format!("encoder.down.{lvl}.downsample.conv"),
                cur,
                cur,
                3,
            );
        }
    }
    resnet(x, "encoder.mid.block_1", cur, cur);
    attn_block(x, "encoder.mid.attn_1", cur);
    resnet(x, "encoder.mid.block_2", cur, cur);
    x.layer_norm("encoder.norm_out", cur);
    conv(x, "encoder.conv_out", cur, 2 * z, 3);
    // Decoder.
    let top = ch * mult.last().copied().unwrap_or(1);
    conv(x, "decoder.conv_in", z, top, 3);
    resnet(x, "decoder.mid.block_1", top, top);
    attn_block(x, "decoder.mid.attn_1", top);
    resnet(x, "decoder.mid.block_2", top, top);
    let mut cur = top;
    for (lvl, m) in mult.iter().enumerate().rev() {
        let out = ch * m;
        for b in 0..=nres {
            resnet(x, &format!("decoder.up.{lvl}.block.{b}"), cur, out);
            cur = out;
        }
        if lvl > 0 {
            conv(x, &format!("decoder.up.{lvl}.upsample.conv"), cur, cur, 3);
        }
    }
    x.layer_norm("decoder.norm_out", cur);
    conv(x, "decoder.conv_out", cur, io, 3);
    Ok(())
}

fn t5_encoder(x: &mut Ctx) -> Result<(), DeriveError> {
    let (d, ff, l) = (x.u("d_model")?, x.u("d_ff")?, x.u("num_layers")?);
    let (heads, dkv, v) = (x.u("num_heads")?, x.u("d_kv")?, x.u("vocab_size")?);
    let buckets = x.u_or("relative_attention_num_buckets", 32);
    let inner = heads * dkv;
    x.push("shared.weight", &[v, d]);
    if x.b_or("stores_encoder_embed_tokens", false) {
        x.push("encoder.embed_tokens.weight", &[v, d]);
    }
    for n in 0..l {
        let p = format!("encoder.block.{n}.layer");
        for m in ["q", "k", "v"] {
            x.linear(&format!("{p}.0.SelfAttention.{m}"), d, inner, false);
        }
        x.linear(&format!("{p}.0.SelfAttention.o"), inner, d, false);
        if n == 0 {
            x.push(
                format!("{p}.0.SelfAttention.relative_attention_bias.weight"),
                &[buckets, heads],
            );
        }
        x.rms_norm(&format!("{p}.0.layer_norm"), d);
        // Gated-GELU feed-forward (T5 v1.1).
        x.linear(&format!("{p}.1.DenseReluDense.wi_0"), d, ff, false);
        x.linear(&format!("{p}.1.DenseReluDense.wi_1"), d, ff, false);
        x.linear(&format!("{p}.1.DenseReluDense.wo"), ff, d, false);
        x.rms_norm(&format!("{p}.1.layer_norm"), d);
    }
    x.rms_norm("encoder.final_layer_norm", d);
    Ok(())
}

/// SD3.x MMDiT in the single-file (Stability) naming.
fn mmdit(x: &mut Ctx) -> Result<(), DeriveError> {
    let (patch, inc, outc) = (
        x.u("patch_size")?,
        x.u("in_channels")?,
        x.u("out_channels")?,
    );
    let (l, hd, heads) = (
        x.u("num_layers")?,
        x.u("attention_head_dim")?,
        x.u("num_attention_heads")?,
    );
    let (ctx, cap, pooled) = (
        x.u("joint_attention_dim")?,
        x.u("caption_projection_dim")?,
        x.u("pooled_projection_dim")?,
    );
    let pos = x.u("pos_embed_max_size")?;
    let h = hd * heads;
    let _ = cap;
    let qk_norm = x.b_or("qk_norm", true);
    x.push("pos_embed", &[1, pos * pos, h]);
    conv(x, "x_embedder.proj", inc, h, patch);
    x.linear("t_embedder.mlp.0", 256, h, true);
    x.linear("t_embedder.mlp.2", h, h, true);
    x.linear("y_embedder.mlp.0", pooled, h, true);
    x.linear("y_embedder.mlp.2", h, h, true);
    x.linear("context_embedder", ctx, h, true);
    for n in 0..l {
        let p = format!("joint_blocks.{n}");
        // The last block's context branch only pre-normalises (no attention output / MLP).
        let last = n + 1 == l;
        for s in ["x_block", "context_block"] {
            let pre_only = last && s == "context_block";
            let mods = if pre_only { 2 } else { 6 };
            x.linear(&format!("{p}.{s}.adaLN_modulation.1"), h, mods * h, true);
            x.linear(&format!("{p}.{s}.attn.qkv"), h, 3 * h, true);
            if qk_norm {
                x.push(format!("{p}.{s}.attn.ln_q.weight"), &[hd]);
                x.push(format!("{p}.{s}.attn.ln_k.weight"), &[hd]);
            }
            if !pre_only {
                x.linear(&format!("{p}.{s}.attn.proj"), h, h, true);
                x.linear(&format!("{p}.{s}.mlp.fc1"), h, 4 * h, true);
                x.linear(&format!("{p}.{s}.mlp.fc2"), 4 * h, h, true);
            }
        }
    }
    x.linear("final_layer.adaLN_modulation.1", h, 2 * h, true);
    x.linear("final_layer.linear", h, patch * patch * outc, true);
    Ok(())
}
