//! The memory estimator: `est_memory_allocation_mb` as a sum of named parts.
//!
//! Peak resident bytes to load a model and serve one request of its run profile:
//! 1. **weights** — Σ tensor bytes as the loader holds them (float tensors converted to the
//!    profile's `load_dtype`, `dequantize_on_load` tensors as F32, `skip_on_load` tensors
//!    not at all, ggml block sizes for quantized tensors: GGUF matrices are held once, as
//!    stored, on every device — `quant-kernels` multiplies them on the CPU, candle's
//!    `QMatMul` on GPUs);
//! 2. **kv_cache** — generators only: `2 × layers × kv_heads × head_dim × context × batch ×
//!    kv bytes`, with `head_dim` from config when the config states it; for MLA (deepseek2)
//!    the compressed latent llama.cpp caches: `layers × (kv_lora_rank + qk_rope_head_dim) ×
//!    context × batch × kv bytes`;
//! 3. **activations** — the largest working set of one forward pass (see each `*_activations`
//!    function for its formula);
//! 4. **overhead** — runtime base (allocator slack on CPU; CUDA/Metal context on GPUs) plus
//!    the tokenizer;
//! 5. **margin** — `margin_percent` (default 15 %) of the sum, then the total is rounded UP to
//!    the next 100 MB. 1 MB = 1,048,576 B throughout.

use crate::dtype::DType;
use crate::profile::{Device, RunProfile};
use crate::spec::{Capability, Component, Family, Format, ModelSpec, Stage};
use serde::{Deserialize, Serialize};

/// Bumped whenever a formula below changes, so every stored figure becomes stale.
pub const ESTIMATOR_VERSION: u32 = 3;

/// 1 MB as used by `est_memory_allocation_mb`.
pub const MB: u64 = 1_048_576;

/// CPU runtime base per model: allocator slack and candle's CPU scratch. Measured 2–9 MiB
/// above the loaded weights (tokenizer included) for every embedder in
/// `model-measure`'s `measure-memory`; the process's own base (thread pools, code)
/// is the planner's reserve, not a per-model figure.
pub const CPU_RUNTIME_OVERHEAD: u64 = 8 * MB;
/// CUDA context + cuBLAS workspace on the device.
pub const CUDA_RUNTIME_OVERHEAD: u64 = 512 * MB;
/// Metal device, command queues and library cache.
pub const METAL_RUNTIME_OVERHEAD: u64 = 256 * MB;
/// In-memory size of a `tokenizers` tokenizer relative to its tokenizer.json.
pub const TOKENIZER_EXPANSION: u64 = 8;
/// Tokenizer bytes per vocabulary entry when only the vocabulary size is known (GGUF).
pub const TOKENIZER_BYTES_PER_TOKEN: u64 = 64;

/// Weights of one component as loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentBytes {
    pub name: String,
    pub stage: Stage,
    pub weights_bytes: u64,
    pub activations_bytes: u64,
}

/// The estimate with every part named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEstimate {
    pub weights_bytes: u64,
    pub kv_cache_bytes: u64,
    pub activations_bytes: u64,
    pub overhead_bytes: u64,
    pub margin_bytes: u64,
    /// weights + kv_cache + activations + overhead + margin.
    pub total_bytes: u64,
    /// `total_bytes` in MB, rounded up to a multiple of 100.
    pub est_memory_allocation_mb: u64,
    pub components: Vec<ComponentBytes>,
    /// One line per part saying how it was computed.
    pub notes: Vec<String>,
}

/// `percent` % of `bytes`, rounded up: the margin the estimate adds to its parts' sum.
pub fn margin_on(bytes: u64, percent: u64) -> u64 {
    (u128::from(bytes) * u128::from(percent)).div_ceil(100) as u64
}

impl MemoryEstimate {
    /// `part` plus its proportional share of the margin (rounded up): what a pool reserves for
    /// that part, so that resident + one request reserves `total_bytes`.
    pub fn with_margin(&self, part: u64) -> u64 {
        let bare = self.total_bytes - self.margin_bytes;
        if bare == 0 {
            return part;
        }
        part + (u128::from(part) * u128::from(self.margin_bytes)).div_ceil(u128::from(bare)) as u64
    }
}

/// Why an estimate could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model `{model}`: {message}")]
pub struct EstimateError {
    pub model: String,
    pub field: String,
    pub message: String,
}

struct E<'a> {
    spec: &'a ModelSpec,
    p: &'a RunProfile,
}

impl E<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> EstimateError {
        EstimateError {
            model: self.spec.registry_key.get_ref().clone(),
            field: field.to_owned(),
            message: message.into(),
        }
    }
    fn u(&self, c: &Component, key: &str) -> Result<u64, EstimateError> {
        c.arch_u64(key).ok_or_else(|| {
            self.err(
                key,
                format!(
                    "component `{}`: architecture value `{key}` is missing",
                    c.name
                ),
            )
        })
    }
    fn need(&self, v: Option<u64>, field: &str) -> Result<u64, EstimateError> {
        v.ok_or_else(|| {
            self.err(
                field,
                format!(
                    "the run profile needs `{field}` for a {} model; set it in model-cards/models.toml",
                    self.spec.capability
                ),
            )
        })
    }
    fn act_dtype(&self, c: &Component) -> DType {
        self.p
            .activation_dtype
            .unwrap_or(match (c.format, self.p.load_dtype) {
                (Format::Gguf, _) => DType::F32,
                (_, Some(d)) => d,
                (_, None) => c
                    .weights
                    .inventory
                    .iter()
                    .map(|r| r.dtype)
                    .find(|d| d.is_float())
                    .unwrap_or(DType::F32),
            })
    }
}

fn bytes_of(d: DType) -> u64 {
    d.block().1
}

/// Weights of `c` as the loader holds them.
pub fn loaded_weight_bytes(c: &Component, p: &RunProfile) -> u64 {
    c.weights
        .inventory
        .iter()
        .map(|r| {
            let named = |list: &[String]| r.name.as_ref().is_some_and(|n| list.contains(n));
            if named(&p.skip_on_load) {
                0
            } else if named(&p.dequantize_on_load) {
                r.params * 4
            } else if let (true, Some(to)) = (r.dtype.is_float(), p.load_dtype) {
                r.params * bytes_of(to)
            } else {
                r.bytes
            }
        })
        .sum()
}

/// Encoder working set: `batch × seq × (4·hidden + ffn·intermediate) × a` for hidden states,
/// q/k/v and the feed-forward, plus `2 × batch × heads × seq² × a` for the attention scores:
/// each step (scale, mask, softmax) makes a new tensor from the previous one, which is freed
/// once the next exists, so two are live at a time (measured: Jina v2 base at 512 tokens
/// serves a request in 38 MiB above its resident set; this formula gives 50).
fn encoder_activations(b: u64, s: u64, h: u64, heads: u64, i: u64, ffn: u64, a: u64) -> u64 {
    b * s * (4 * h + ffn * i) * a + 2 * b * heads * s * s * a
}

/// Decoder prefill working set: hidden states and q/k/v for `p` tokens, the feed-forward
/// width actually computed per token, the `heads × p × p` scores (3 copies as above) and the
/// last token's logits.
fn prefill_activations(p: u64, h: u64, heads: u64, ffn_width: u64, vocab: u64, a: u64) -> u64 {
    p * (4 * h + 3 * ffn_width) * a + 3 * heads * p * p * a + vocab * 4
}

/// Computes the estimate for `spec` under `profile`.
pub fn estimate(spec: &ModelSpec, profile: &RunProfile) -> Result<MemoryEstimate, EstimateError> {
    let e = E { spec, p: profile };
    let b = profile.batch.max(1);
    let mut notes = Vec::new();
    let mut kv_cache = 0u64;
    let mut comps = Vec::new();

    for c in &spec.components {
        let w = loaded_weight_bytes(c, profile);
        let a = bytes_of(e.act_dtype(c));
        let act = match c.family {
            Family::Bert | Family::JinaBert | Family::Qwen2 | Family::NvEmbed => {
                let s = e.need(profile.seq_len, "seq_len")?;
                let (h, heads, i) = (
                    e.u(c, "hidden_size")?,
                    e.u(c, "num_attention_heads")?,
                    e.u(c, "intermediate_size")?,
                );
                // Gated FFNs (GEGLU, SwiGLU) hold gate, up and product; GELU holds two.
                let ffn = if matches!(c.family, Family::Bert) {
                    2
                } else {
                    3
                };
                let mut act = encoder_activations(b, s, h, heads, i, ffn, a);
                if c.family == Family::JinaBert {
                    // candle's JinaBERT builds its ALiBi bias for every position up to the
                    // served limit at load time and keeps it: heads × s² in f32.
                    act += heads * s * s * 4;
                    notes.push(format!(
                        "activations[{}]: + ALiBi bias heads·s²·4 = {heads}·{s}²·4",
                        c.name
                    ));
                }
                if c.family == Family::NvEmbed {
                    let lat = e.u(c, "num_latents")?;
                    let lh = e.u(c, "latent_heads")?;
                    let inner = lh * c.arch_u64("latent_dim_head").unwrap_or(h);
                    // Latent cross-attention: q/k/v projections of width `inner` and
                    // `latent_heads × seq × latents` scores.
                    act += b * s * 3 * inner * a + 3 * b * lh * s * lat * a;
                }
                notes.push(format!(
                    "activations[{}]: encoder, batch {b} × {s} tokens: b·s·(4h+{ffn}·I)·{a} + 2·b·heads·s²·{a}",
                    c.name
                ));
                act
            }
            Family::Dense => {
                let o = e.u(c, "out_features")?;
                b * o * a
            }
            Family::Clip => {
                let ts = e.u(c, "text_max_position_embeddings")?;
                let img = profile.image_size.unwrap_or(e.u(c, "vision_image_size")?);
                let patch = e.u(c, "vision_patch_size")?.max(1);
                let vs = (img / patch) * (img / patch) + 1;
                let text = encoder_activations(
                    b,
                    ts,
                    e.u(c, "text_hidden_size")?,
                    e.u(c, "text_num_attention_heads")?,
                    e.u(c, "text_intermediate_size")?,
                    2,
                    a,
                );
                let vision = encoder_activations(
                    b,
                    vs,
                    e.u(c, "vision_hidden_size")?,
                    e.u(c, "vision_num_attention_heads")?,
                    e.u(c, "vision_intermediate_size")?,
                    2,
                    a,
                );
                // Images: the decoded RGB image and its normalised f32 tensor.
                let pixels = b * img * img * 3 * (1 + 4);
                notes.push(format!(
                    "activations[{}]: max(text {ts} tokens, vision {vs} tokens) encoder working set + input pixels",
                    c.name
                ));
                text.max(vision) + pixels
            }
            Family::Phi3 | Family::Qwen3Moe | Family::Deepseek2 => {
                let ctx = e.need(profile.context_tokens, "context_tokens")?;
                let p = e.need(profile.prompt_tokens, "prompt_tokens")?.min(ctx);
                let kvd = bytes_of(profile.kv_dtype.unwrap_or(DType::F32));
                let (h, heads, l, v) = (
                    e.u(c, "hidden_size")?,
                    e.u(c, "num_attention_heads")?,
                    e.u(c, "num_hidden_layers")?,
                    e.u(c, "vocab_size")?,
                );
                let (kv, ffn_width) = match c.family {
                    Family::Deepseek2 => {
                        let latent = e.u(c, "kv_lora_rank")? + e.u(c, "qk_rope_head_dim")?;
                        notes.push(format!(
                            "kv_cache[{}]: MLA latent cache L·(kv_lora_rank+qk_rope_head_dim)·ctx·batch·bytes = {l}·{latent}·{ctx}·{b}·{kvd}",
                            c.name
                        ));
                        let routed =
                            e.u(c, "num_experts_per_tok")? * e.u(c, "moe_intermediate_size")?;
                        let shared =
                            e.u(c, "n_shared_experts")? * e.u(c, "moe_intermediate_size")?;
                        let ffn = (routed + shared).max(e.u(c, "intermediate_size")?);
                        (l * latent * ctx * b * kvd, ffn)
                    }
                    _ => {
                        let kvh = e.u(c, "num_key_value_heads")?;
                        let hd = e.u(c, "head_dim")?;
                        notes.push(format!(
                            "kv_cache[{}]: 2·L·kv_heads·head_dim·ctx·batch·bytes = 2·{l}·{kvh}·{hd}·{ctx}·{b}·{kvd}",
                            c.name
                        ));
                        let ffn = if c.family == Family::Qwen3Moe {
                            e.u(c, "num_experts_per_tok")? * e.u(c, "moe_intermediate_size")?
                        } else {
                            e.u(c, "intermediate_size")?
                        };
                        (2 * l * kvh * hd * ctx * b * kvd, ffn)
                    }
                };
                kv_cache += kv;
                notes.push(format!(
                    "activations[{}]: prefill of {p} tokens in f32: p·(4h+3·ffn)·4 + 3·heads·p²·4 + vocab·4",
                    c.name
                ));
                b * prefill_activations(p, h, heads, ffn_width, v, a)
            }
            Family::Llava => {
                let ctx = e.need(profile.context_tokens, "context_tokens")?;
                let prompt = e.need(profile.prompt_tokens, "prompt_tokens")?;
                let kvd = bytes_of(profile.kv_dtype.unwrap_or(e.act_dtype(c)));
                let (l, kvh, heads, h) = (
                    e.u(c, "text_num_hidden_layers")?,
                    e.u(c, "text_num_key_value_heads")?,
                    e.u(c, "text_num_attention_heads")?,
                    e.u(c, "text_hidden_size")?,
                );
                let hd = c.arch_u64("text_head_dim").unwrap_or(h / heads.max(1));
                kv_cache += 2 * l * kvh * hd * ctx * b * kvd;
                notes.push(format!(
                    "kv_cache[{}]: 2·L·kv_heads·head_dim·ctx·batch·bytes = 2·{l}·{kvh}·{hd}·{ctx}·{b}·{kvd}",
                    c.name
                ));
                let img = profile.image_size.unwrap_or(e.u(c, "vision_image_size")?);
                let patch = e.u(c, "vision_patch_size")?.max(1);
                let image_tokens = (img / patch) * (img / patch);
                let vision = encoder_activations(
                    b,
                    image_tokens + 1,
                    e.u(c, "vision_hidden_size")?,
                    e.u(c, "vision_num_attention_heads")?,
                    e.u(c, "vision_intermediate_size")?,
                    2,
                    a,
                );
                let p = (image_tokens + prompt).min(ctx);
                let text = b * prefill_activations(
                    p,
                    h,
                    heads,
                    e.u(c, "text_intermediate_size")?,
                    e.u(c, "text_vocab_size")?,
                    a,
                );
                notes.push(format!(
                    "activations[{}]: max(vision tower {} tokens, prefill {image_tokens} image + {prompt} prompt tokens)",
                    c.name,
                    image_tokens + 1
                ));
                vision.max(text) + b * img * img * 3 * (1 + 4)
            }
            Family::T5Encoder => {
                let s = e.need(profile.text_tokens, "text_tokens")?;
                let (d, ff, heads) = (e.u(c, "d_model")?, e.u(c, "d_ff")?, e.u(c, "num_heads")?);
                encoder_activations(b, s, d, heads, ff, 3, a)
            }
            Family::ClipText => {
                let s = e.u(c, "max_position_embeddings")?;
                let (h, heads, i) = (
                    e.u(c, "hidden_size")?,
                    e.u(c, "num_attention_heads")?,
                    e.u(c, "intermediate_size")?,
                );
                encoder_activations(b, s, h, heads, i, 2, a)
            }
            Family::Flux | Family::Mmdit => {
                let (w, hgt) = (
                    e.need(profile.width, "width")?,
                    e.need(profile.height, "height")?,
                );
                let t = e.need(profile.text_tokens, "text_tokens")?;
                // Latents are 1/8 of the image, patchified 2×2: one token per 16×16 pixels.
                let img_tokens = (w / 16) * (hgt / 16);
                let (hidden, heads, mlp) = if c.family == Family::Flux {
                    let h = e.u(c, "hidden_size")?;
                    let r = c.arch_f64("mlp_ratio").unwrap_or(4.0);
                    (h, e.u(c, "num_heads")?, (h as f64 * r) as u64)
                } else {
                    let h = e.u(c, "attention_head_dim")? * e.u(c, "num_attention_heads")?;
                    // SD3 joins CLIP (77) and T5 tokens.
                    (h, e.u(c, "num_attention_heads")?, 4 * h)
                };
                let n = img_tokens + t + if c.family == Family::Mmdit { 77 } else { 0 };
                notes.push(format!(
                    "activations[{}]: {w}×{hgt} → {img_tokens} image + text tokens = {n}; n·(6h+2·mlp)·a + 2·heads·n²·a",
                    c.name
                ));
                // Two live copies of the joint attention scores, as for the encoders.
                b * (n * (6 * hidden + 2 * mlp) * a + 2 * heads * n * n * a)
            }
            Family::Autoencoder16 => {
                let (w, hgt) = (
                    e.need(profile.width, "width")?,
                    e.need(profile.height, "height")?,
                );
                let ch = e.u(c, "ch")?;
                let lat = (w / 8) * (hgt / 8);
                notes.push(format!(
                    "activations[{}]: VAE decode at {w}×{hgt}: 8 live {ch}-channel full-resolution maps + mid-block attention over {lat} latent pixels (2 copies)",
                    c.name
                ));
                b * (8 * w * hgt * ch * a + 2 * lat * lat * a)
            }
        };
        comps.push(ComponentBytes {
            name: c.name.clone(),
            stage: c.stage,
            weights_bytes: w,
            activations_bytes: act,
        });
    }

    // Combine components: co-resident = all weights + the largest working set; staged = the
    // stage whose weights + working set peak.
    let (weights, activations) = if profile.co_resident || comps.len() == 1 {
        let w: u64 = comps.iter().map(|c| c.weights_bytes).sum();
        let a = if spec.capability == Capability::TextToImage {
            comps.iter().map(|c| c.activations_bytes).max().unwrap_or(0)
        } else {
            comps.iter().map(|c| c.activations_bytes).sum()
        };
        if comps.len() > 1 {
            notes.push(format!(
                "weights: all {} components co-resident",
                comps.len()
            ));
        }
        (w, a)
    } else {
        let stages = [
            Stage::Main,
            Stage::TextEncoder,
            Stage::Denoiser,
            Stage::Decoder,
        ];
        let main: u64 = comps
            .iter()
            .filter(|c| c.stage == Stage::Main)
            .map(|c| c.weights_bytes)
            .sum();
        let mut best = (0u64, 0u64, Stage::Main);
        for s in stages {
            let in_stage: Vec<_> = comps.iter().filter(|c| c.stage == s).collect();
            if in_stage.is_empty() {
                continue;
            }
            let base = if s == Stage::Main { 0 } else { main };
            let (w, a) = if s == Stage::TextEncoder {
                // Text encoders run one after another, each loaded, run and released before
                // the next: the stage peaks at its largest encoder.
                in_stage
                    .iter()
                    .map(|c| (c.weights_bytes, c.activations_bytes))
                    .max_by_key(|(w, a)| w + a)
                    .map(|(w, a)| (w + base, a))
                    .unwrap_or((base, 0))
            } else {
                (
                    in_stage.iter().map(|c| c.weights_bytes).sum::<u64>() + base,
                    in_stage
                        .iter()
                        .map(|c| c.activations_bytes)
                        .max()
                        .unwrap_or(0),
                )
            };
            if w + a > best.0 + best.1 {
                best = (w, a, s);
            }
        }
        notes.push(format!(
            "weights: staged components; the peak stage is `{:?}`",
            best.2
        ));
        (best.0, best.1)
    };

    let tokenizer = match spec.serving_u64("tokenizer_json_bytes") {
        Some(t) => t * TOKENIZER_EXPANSION,
        None => {
            let vocab = spec
                .components
                .iter()
                .filter_map(|c| c.arch_u64("vocab_size"))
                .max()
                .unwrap_or(0);
            vocab * TOKENIZER_BYTES_PER_TOKEN
        }
    };
    let overhead = match profile.overhead_mb {
        Some(mb) => mb * MB,
        None => {
            let base = match profile.device {
                Device::Cpu => CPU_RUNTIME_OVERHEAD,
                Device::Cuda => CUDA_RUNTIME_OVERHEAD,
                Device::Metal => METAL_RUNTIME_OVERHEAD,
            };
            notes.push(format!(
                "overhead: {} runtime base {} MiB + tokenizer {:.1} MiB",
                profile.device,
                base / MB,
                tokenizer as f64 / MB as f64
            ));
            base + tokenizer
        }
    };
    if !(10..=20).contains(&profile.margin_percent) {
        return Err(e.err(
            "margin_percent",
            format!(
                "margin_percent = {} is outside 10–20",
                profile.margin_percent
            ),
        ));
    }
    let subtotal = weights + kv_cache + activations + overhead;
    let margin = margin_on(subtotal, profile.margin_percent);
    let total = subtotal + margin;
    let est_mb = total.div_ceil(MB).div_ceil(100) * 100;
    notes.push(format!(
        "margin: {} % of the sum; total rounded up to the next 100 MB",
        profile.margin_percent
    ));
    Ok(MemoryEstimate {
        weights_bytes: weights,
        kv_cache_bytes: kv_cache,
        activations_bytes: activations,
        overhead_bytes: overhead,
        margin_bytes: margin,
        total_bytes: total,
        est_memory_allocation_mb: est_mb,
        components: comps,
        notes,
    })
}

/// KV-cache bytes of a generator for `context` tokens (the planner uses this directly).
pub fn kv_cache_bytes(spec: &ModelSpec, profile: &RunProfile) -> Result<u64, EstimateError> {
    estimate(spec, profile).map(|m| m.kv_cache_bytes)
}
