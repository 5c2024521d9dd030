//! Tiny random-weight generator checkpoints, written the way the real ones are stored.
//!
//! * Phi-3 and Qwen3-MoE GGUFs written with candle's `gguf_file::write`: llama.cpp's tensor
//!   names and metadata keys, K-quant tensors (Q4_K / Q5_K / Q6_K as in a Q4_K_M file, so rows
//!   are multiples of 256), F32 norms, and a GPT-2-style byte-level BPE vocabulary in the
//!   `tokenizer.ggml.*` metadata (the backend rebuilds the tokenizer from it).
//! * A LLaVA 1.5 checkpoint in the llava-hf layout: `config.json` with only the fields
//!   llava-hf sets, F16 safetensors, `preprocessor_config.json`, a `tokenizer.json`.
//!
//! The independent reference forward pass over these files is [`crate::reference`].

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use model_runtime::BackendError;
use serde_json::json;

use crate::Rng;
use crate::tokenizer::WordLevelTokenizer;
use crate::weights::Weights;

/// Special tokens of the tiny vocabulary (ChatML and Phi-4's `<|im_sep|>`).
pub const SPECIALS: [&str; 4] = ["<|endoftext|>", "<|im_start|>", "<|im_sep|>", "<|im_end|>"];

/// GPT-2's byte → printable character map.
pub fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = ('!' as u32..='~' as u32)
        .chain('¡' as u32..='¬' as u32)
        .chain('®' as u32..='ÿ' as u32)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        out[*b as usize] = char::from_u32(c).unwrap();
    }
    out
}

/// The tiny byte-level BPE vocabulary: 256 byte tokens, a few merges, the specials.
pub struct Vocab {
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    pub types: Vec<i32>,
}

impl Default for Vocab {
    fn default() -> Self {
        Self::new()
    }
}

impl Vocab {
    pub fn new() -> Self {
        let chars = byte_chars();
        let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        let sp = chars[b' ' as usize];
        let merges: Vec<String> = [
            (format!("{sp}"), "t".to_owned()),
            ("h".into(), "e".into()),
            (format!("{sp}t"), "he".into()),
            (format!("{sp}"), "a".into()),
            ("i".into(), "n".into()),
            ("e".into(), "r".into()),
            ("o".into(), "n".into()),
            (format!("{sp}"), "s".into()),
        ]
        .into_iter()
        .map(|(a, b)| {
            tokens.push(format!("{a}{b}"));
            format!("{a} {b}")
        })
        .collect();
        let mut types = vec![1; tokens.len()];
        for s in SPECIALS {
            tokens.push(s.to_owned());
            types.push(3);
        }
        Vocab {
            tokens,
            merges,
            types,
        }
    }

    pub fn id(&self, token: &str) -> u32 {
        self.tokens.iter().position(|t| t == token).unwrap() as u32
    }

    fn metadata(&self, pre: &str) -> Vec<(&'static str, Value)> {
        let strings =
            |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
        vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String(pre.into())),
            ("tokenizer.ggml.tokens", strings(&self.tokens)),
            ("tokenizer.ggml.merges", strings(&self.merges)),
            (
                "tokenizer.ggml.token_type",
                Value::Array(self.types.iter().map(|t| Value::I32(*t)).collect()),
            ),
            (
                "tokenizer.ggml.bos_token_id",
                Value::U32(self.id("<|endoftext|>")),
            ),
            (
                "tokenizer.ggml.eos_token_id",
                Value::U32(self.id("<|im_end|>")),
            ),
            ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ]
    }
}

/// Tensors of a GGUF being written.
struct GgufTensors {
    rng: Rng,
    out: Vec<(String, QTensor)>,
    storage: Storage,
}

/// How the matrices of a tiny GGUF are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// K-quants as in a Q4_K_M file.
    KQuants,
    /// Everything F32 (candle then runs plain float matmuls: an exact check of the math).
    F32,
}

impl GgufTensors {
    fn new(seed: u64, storage: Storage) -> Self {
        GgufTensors {
            rng: Rng::new(seed),
            out: Vec::new(),
            storage,
        }
    }

    /// A tiny decoder over the tiny vocabulary (which the caller writes into the metadata):
    /// token embeddings, final norm and output head, then per block its attention norm and
    /// what `block(tensors, name)` puts, `name` giving block `i`'s tensor names.
    fn decoder(
        g: &Geometry,
        seed: u64,
        storage: Storage,
        block: impl Fn(&mut GgufTensors, &dyn Fn(&str) -> String),
    ) -> (Vocab, Self) {
        let vocab = Vocab::new();
        let v = vocab.tokens.len();
        let mut t = GgufTensors::new(seed, storage);
        t.put(
            "token_embd.weight",
            &[v, g.hidden],
            0.0,
            1.0,
            GgmlDType::Q4K,
        );
        t.norm("output_norm.weight", g.hidden);
        t.matrix("output.weight", &[v, g.hidden], GgmlDType::Q6K);
        for i in 0..g.layers {
            let name = |s: &str| format!("blk.{i}.{s}");
            t.norm(&name("attn_norm.weight"), g.hidden);
            block(&mut t, &name);
        }
        (vocab, t)
    }

    /// A tensor of candle shape `dims` (rows last-dim-contiguous), uniform around `center`.
    fn put(&mut self, name: &str, dims: &[usize], center: f32, spread: f32, dtype: GgmlDType) {
        let n = dims.iter().product();
        let t = Tensor::from_vec(self.rng.vec(n, center, spread), dims, &Device::Cpu).unwrap();
        let dtype = match self.storage {
            Storage::KQuants => dtype,
            Storage::F32 => GgmlDType::F32,
        };
        self.out
            .push((name.to_owned(), QTensor::quantize(&t, dtype).unwrap()));
    }

    /// A weight matrix `[out, in]` with variance 1/in.
    fn matrix(&mut self, name: &str, dims: &[usize], dtype: GgmlDType) {
        let fan_in = *dims.last().unwrap() as f32;
        self.put(name, dims, 0.0, 3f32.sqrt() / fan_in.sqrt(), dtype);
    }

    fn norm(&mut self, name: &str, n: usize) {
        self.put(name, &[n], 1.0, 0.2, GgmlDType::F32);
    }

    /// Writes the GGUF of `arch` with its metadata: what every decoder states about `g`,
    /// the architecture's own `keys` (under the `{arch}.` prefix) and the vocabulary (`pre`
    /// names its pre-tokenizer).
    fn write(
        self,
        path: &Path,
        arch: &str,
        g: &Geometry,
        keys: Vec<(&str, Value)>,
        vocab: &Vocab,
        pre: &str,
    ) {
        let u = |x: usize| Value::U32(x as u32);
        let common = [
            ("context_length", u(g.context)),
            ("embedding_length", u(g.hidden)),
            ("block_count", u(g.layers)),
            ("attention.head_count", u(g.heads)),
            ("attention.head_count_kv", u(g.kv_heads)),
        ];
        let mut metadata: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(arch.into())),
            // Not "tiny-phi3": llama.cpp gives a model whose name contains "phi3" Phi-3's
            // vocabulary quirks and fails to load one without `</s>`, `<unk>` and `<s>`.
            (
                "general.name".into(),
                Value::String(format!("tiny random {}", arch.replace("phi3", "phi"))),
            ),
        ];
        metadata.extend(
            common
                .into_iter()
                .chain(keys)
                .map(|(k, v)| (format!("{arch}.{k}"), v)),
        );
        metadata.extend(
            vocab
                .metadata(pre)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v)),
        );
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut file = std::fs::File::create(path).unwrap();
        let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = self.out.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut file, &md, &ts).unwrap();
    }
}

/// Sizes of a tiny decoder (multiples of 256 where K-quant rows need it).
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub context: usize,
    pub rope_base: f32,
    pub experts: usize,
    pub experts_used: usize,
}

impl Geometry {
    /// A 2-layer Phi-3 with Phi-4's RoPE base.
    pub fn phi3() -> Self {
        Geometry {
            hidden: 256,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            ffn: 256,
            context: 512,
            rope_base: 250_000.0,
            experts: 0,
            experts_used: 0,
        }
    }

    /// A 2-layer Qwen3-MoE with 4 experts, 2 per token, Qwen3-Coder's RoPE base.
    pub fn qwen3moe() -> Self {
        Geometry {
            rope_base: 10_000_000.0,
            experts: 4,
            experts_used: 2,
            ..Geometry::phi3()
        }
    }
}

/// Writes a tiny Phi-3 GGUF (Q4_K_M-like types).
pub fn write_phi3(path: &Path, g: &Geometry, seed: u64) {
    write_phi3_stored(path, g, seed, Storage::KQuants)
}

/// Writes a tiny Phi-3 GGUF with the given storage.
pub fn write_phi3_stored(path: &Path, g: &Geometry, seed: u64, storage: Storage) {
    let (q, kv) = (g.heads * g.head_dim, g.kv_heads * g.head_dim);
    let (vocab, t) = GgufTensors::decoder(g, seed, storage, |t, p| {
        t.matrix(
            &p("attn_qkv.weight"),
            &[q + 2 * kv, g.hidden],
            GgmlDType::Q5K,
        );
        t.matrix(&p("attn_output.weight"), &[g.hidden, q], GgmlDType::Q4K);
        t.norm(&p("ffn_norm.weight"), g.hidden);
        t.matrix(&p("ffn_up.weight"), &[2 * g.ffn, g.hidden], GgmlDType::Q4K);
        t.matrix(&p("ffn_down.weight"), &[g.hidden, g.ffn], GgmlDType::Q6K);
    });
    let u = |x: usize| Value::U32(x as u32);
    let keys = vec![
        ("feed_forward_length", u(g.ffn)),
        ("attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("rope.dimension_count", u(g.head_dim)),
        ("rope.freq_base", Value::F32(g.rope_base)),
    ];
    t.write(path, "phi3", g, keys, &vocab, "dbrx");
}

/// Writes a tiny Qwen3-MoE GGUF (Q4_K_M-like types).
pub fn write_qwen3moe(path: &Path, g: &Geometry, seed: u64) {
    write_qwen3moe_stored(path, g, seed, Storage::KQuants)
}

/// Writes a tiny Qwen3-MoE GGUF with the given storage.
pub fn write_qwen3moe_stored(path: &Path, g: &Geometry, seed: u64, storage: Storage) {
    let (q, kv) = (g.heads * g.head_dim, g.kv_heads * g.head_dim);
    let (vocab, t) = GgufTensors::decoder(g, seed, storage, |t, p| {
        t.matrix(&p("attn_q.weight"), &[q, g.hidden], GgmlDType::Q4K);
        t.matrix(&p("attn_k.weight"), &[kv, g.hidden], GgmlDType::Q4K);
        t.matrix(&p("attn_v.weight"), &[kv, g.hidden], GgmlDType::Q6K);
        t.matrix(&p("attn_output.weight"), &[g.hidden, q], GgmlDType::Q4K);
        t.norm(&p("attn_q_norm.weight"), g.head_dim);
        t.norm(&p("attn_k_norm.weight"), g.head_dim);
        t.norm(&p("ffn_norm.weight"), g.hidden);
        // A router with a wide spread, so the experts' choice differs between tokens.
        t.put(
            &p("ffn_gate_inp.weight"),
            &[g.experts, g.hidden],
            0.0,
            0.5,
            GgmlDType::F32,
        );
        t.matrix(
            &p("ffn_gate_exps.weight"),
            &[g.experts, g.ffn, g.hidden],
            GgmlDType::Q4K,
        );
        t.matrix(
            &p("ffn_up_exps.weight"),
            &[g.experts, g.ffn, g.hidden],
            GgmlDType::Q4K,
        );
        t.matrix(
            &p("ffn_down_exps.weight"),
            &[g.experts, g.hidden, g.ffn],
            GgmlDType::Q6K,
        );
    });
    let u = |x: usize| Value::U32(x as u32);
    let keys = vec![
        ("attention.key_length", u(g.head_dim)),
        ("attention.value_length", u(g.head_dim)),
        ("attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
        ("rope.freq_base", Value::F32(g.rope_base)),
        ("expert_count", u(g.experts)),
        ("expert_used_count", u(g.experts_used)),
        ("expert_feed_forward_length", u(g.ffn)),
    ];
    t.write(path, "qwen3moe", g, keys, &vocab, "qwen2");
}

/// Words of the tiny LLaVA tokenizer (after the specials).
pub const LLAVA_WORDS: &[&str] = &[
    "USER",
    ":",
    "ASSISTANT",
    "What",
    "is",
    "shown",
    "?",
    "Describe",
    "the",
    "image",
    ".",
    "a",
    "red",
    "blue",
    "square",
    "cat",
    "on",
    "mat",
    "picture",
    "of",
    "Hello",
    "there",
];

/// Token id of `<image>` in the tiny LLaVA.
pub const LLAVA_IMAGE_TOKEN: u32 = 3;

/// LLaVA's special tokens, `<image>` at [`LLAVA_IMAGE_TOKEN`].
const LLAVA_SPECIALS: [&str; 4] = ["<unk>", "<s>", "</s>", "<image>"];

/// LLaVA's word-level `tokenizer.json`: the specials, then [`LLAVA_WORDS`]; `<s>` starts
/// every input and `<image>` is matched whole.
pub(crate) fn llava_tokenizer(dir: &Path) -> Result<(), BackendError> {
    WordLevelTokenizer {
        tokens: LLAVA_SPECIALS.iter().chain(LLAVA_WORDS).copied().collect(),
        unk: "<unk>",
        lowercase: false,
        added: &LLAVA_SPECIALS,
        template: Some("<s> $A"),
    }
    .write(dir)
}

/// Writes a tiny LLaVA 1.5 checkpoint (llava-hf layout, F16) into `dir`.
pub fn write_llava(dir: &Path, seed: u64) {
    let vocab_size = 32;
    assert!(LLAVA_SPECIALS.len() + LLAVA_WORDS.len() <= vocab_size);
    let (th, ti, tl, heads) = (64, 128, 2, 4);
    let (vh, vi, vl, vheads, image, patch) = (32, 64, 3, 4, 28, 14);
    std::fs::create_dir_all(dir).unwrap();
    let config = json!({
        "architectures": ["LlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_token_index": LLAVA_IMAGE_TOKEN,
        "model_type": "llava",
        "pad_token_id": 0,
        "projector_hidden_act": "gelu",
        "text_config": {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": th, "intermediate_size": ti, "num_hidden_layers": tl,
            "num_attention_heads": heads, "max_position_embeddings": 256,
            "rms_norm_eps": 1e-5, "torch_dtype": "float16", "vocab_size": vocab_size
        },
        "tie_word_embeddings": false,
        "torch_dtype": "float16",
        "vision_config": {
            "hidden_size": vh, "image_size": image, "intermediate_size": vi,
            "model_type": "clip_vision_model", "num_attention_heads": vheads,
            "num_hidden_layers": vl, "patch_size": patch, "projection_dim": 16, "vocab_size": 32000
        },
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vocab_size": vocab_size
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    crate::embed::clip_preprocessor(dir, image as u64).unwrap();

    let mut w = Weights::new(DType::F16, seed);
    let mut put =
        |name: String, dims: &[usize], center: f32, spread: f32| w.put(name, dims, center, spread);
    let v = "vision_tower.vision_model";
    put(format!("{v}.embeddings.class_embedding"), &[vh], 0.0, 0.5);
    put(
        format!("{v}.embeddings.patch_embedding.weight"),
        &[vh, 3, patch, patch],
        0.0,
        0.05,
    );
    let n_pos = (image / patch) * (image / patch) + 1;
    put(
        format!("{v}.embeddings.position_embedding.weight"),
        &[n_pos, vh],
        0.0,
        0.5,
    );
    for ln in ["pre_layrnorm", "post_layernorm"] {
        put(format!("{v}.{ln}.weight"), &[vh], 1.0, 0.1);
        put(format!("{v}.{ln}.bias"), &[vh], 0.0, 0.05);
    }
    for i in 0..vl {
        let p = format!("{v}.encoder.layers.{i}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            put(format!("{p}.self_attn.{proj}.weight"), &[vh, vh], 0.0, 0.3);
            put(format!("{p}.self_attn.{proj}.bias"), &[vh], 0.0, 0.05);
        }
        for ln in ["layer_norm1", "layer_norm2"] {
            put(format!("{p}.{ln}.weight"), &[vh], 1.0, 0.1);
            put(format!("{p}.{ln}.bias"), &[vh], 0.0, 0.05);
        }
        put(format!("{p}.mlp.fc1.weight"), &[vi, vh], 0.0, 0.3);
        put(format!("{p}.mlp.fc1.bias"), &[vi], 0.0, 0.05);
        put(format!("{p}.mlp.fc2.weight"), &[vh, vi], 0.0, 0.2);
        put(format!("{p}.mlp.fc2.bias"), &[vh], 0.0, 0.05);
    }
    put(
        "multi_modal_projector.linear_1.weight".into(),
        &[th, vh],
        0.0,
        0.3,
    );
    put(
        "multi_modal_projector.linear_1.bias".into(),
        &[th],
        0.0,
        0.05,
    );
    put(
        "multi_modal_projector.linear_2.weight".into(),
        &[th, th],
        0.0,
        0.2,
    );
    put(
        "multi_modal_projector.linear_2.bias".into(),
        &[th],
        0.0,
        0.05,
    );
    let m = "language_model.model";
    put(
        format!("{m}.embed_tokens.weight"),
        &[vocab_size, th],
        0.0,
        1.0,
    );
    for i in 0..tl {
        let p = format!("{m}.layers.{i}");
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            put(format!("{p}.self_attn.{proj}.weight"), &[th, th], 0.0, 0.2);
        }
        put(format!("{p}.mlp.gate_proj.weight"), &[ti, th], 0.0, 0.2);
        put(format!("{p}.mlp.up_proj.weight"), &[ti, th], 0.0, 0.2);
        put(format!("{p}.mlp.down_proj.weight"), &[th, ti], 0.0, 0.15);
        put(format!("{p}.input_layernorm.weight"), &[th], 1.0, 0.1);
        put(
            format!("{p}.post_attention_layernorm.weight"),
            &[th],
            1.0,
            0.1,
        );
    }
    put(format!("{m}.norm.weight"), &[th], 1.0, 0.1);
    put(
        "language_model.lm_head.weight".into(),
        &[vocab_size, th],
        0.0,
        0.3,
    );
    // Two shards plus the index, as the real checkpoint (three shards) is stored.
    w.save_sharded(dir, 2);
    llava_tokenizer(dir).unwrap();
}

/// A small RGB test image: a colored square on a plain background.
pub fn test_image(square: [u8; 3], background: [u8; 3]) -> image::DynamicImage {
    let mut img = image::RgbImage::from_pixel(40, 30, image::Rgb(background));
    for y in 8..22 {
        for x in 12..28 {
            img.put_pixel(x, y, image::Rgb(square));
        }
    }
    image::DynamicImage::ImageRgb8(img)
}
