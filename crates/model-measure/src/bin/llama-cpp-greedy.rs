//! Greedy tokens of the tiny fixture GGUFs in this workspace's decoders and in llama.cpp, as a
//! second, outside reference: Phi-3 and Qwen3-MoE, each with F32 and with K-quant weights.
//!
//! ```sh
//! cargo run --release -p model-measure --bin llama-cpp-greedy -- "$(tools/llama-cpp.sh)"
//! ```
//!
//! The argument is the directory holding llama.cpp's `llama-simple` (`tools/llama-cpp.sh`
//! builds it from the PyPI source distribution of `llama-cpp-python`). Each file is written by
//! `model-fixtures` (the same writer the tests use), the prompt is tokenized by each side from
//! the file's own vocabulary, and both decode greedily; the program prints the two texts and
//! whether they agree, and exits non-zero if any pair differs.
//!
//! Options after the directory: `--tokens N` (12), `--prompt TEXT` ("hello there, the").

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use model_fixtures::decode::{self, Geometry, Storage};
use model_networks::decode::{Decoder, DecoderParams, GenerativeModel};

fn ours(path: &Path, arch: &str, prompt: &str, n: usize) -> String {
    let params = DecoderParams {
        key: "tiny".into(),
        source: path.to_path_buf(),
        decoder: Decoder::for_architecture(arch).expect("a GGUF decoder"),
        tokenizer: None,
        dtype: None,
        context_tokens: 512,
        // llama.cpp's default KV cache type.
        kv_dtype: DType::F16,
        end_tokens: Vec::new(),
    };
    let model = GenerativeModel::load(&params, &Device::Cpu).expect("load");
    let tokens = model.encode(prompt).expect("tokenize");
    let mut session = model.session(tokens.len() + n).expect("session");
    let mut logits = session.prefill(&tokens, None, 512).expect("prefill");
    let mut out = Vec::new();
    for _ in 0..n {
        let next = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
            .expect("logits");
        if model.end_ids().contains(&next) {
            break;
        }
        out.push(next);
        logits = session.step(next).expect("step");
    }
    model.tokenizer().decode(&out, false).expect("detokenize")
}

fn llama(bin: &Path, path: &Path, prompt: &str, n: usize) -> Result<String, String> {
    let out = Command::new(bin.join("llama-simple"))
        .arg("-m")
        .arg(path)
        .args(["-n", &n.to_string(), prompt])
        .output()
        .map_err(|e| format!("{}: {e}", bin.join("llama-simple").display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
        return Err(format!("{} ({})", out.status, tail.join(" | ")));
    }
    // llama-simple prints the prompt's pieces, the generated pieces, then a newline.
    let text = stdout.strip_suffix('\n').unwrap_or(&stdout);
    Ok(text.strip_prefix(prompt).unwrap_or(text).to_owned())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(bin) = args.first().map(PathBuf::from) else {
        eprintln!("usage: llama-cpp-greedy LLAMA_CPP_BIN_DIR [--tokens N] [--prompt TEXT]\n(build it with tools/llama-cpp.sh)");
        std::process::exit(2);
    };
    let mut n = 12;
    let mut prompt = "hello there, the".to_owned();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tokens" => n = it.next().and_then(|v| v.parse().ok()).expect("--tokens N"),
            "--prompt" => prompt = it.next().expect("--prompt TEXT").clone(),
            other => panic!("unknown option {other}"),
        }
    }
    let dir = std::env::temp_dir().join(format!("llama-cpp-greedy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut differ = 0;
    println!("| file | weights | this workspace | llama.cpp | same |\n|---|---|---|---|---|");
    for arch in ["phi3", "qwen3moe"] {
        for storage in [Storage::F32, Storage::KQuants] {
            let label = if storage == Storage::F32 { "F32" } else { "K-quants" };
            let path = dir.join(format!("{arch}-{label}.gguf"));
            match arch {
                "phi3" => decode::write_phi3_stored(&path, &Geometry::phi3(), 3, storage),
                _ => decode::write_qwen3moe_stored(&path, &Geometry::qwen3moe(), 3, storage),
            }
            let a = ours(&path, arch, &prompt, n);
            let (b, same) = match llama(&bin, &path, &prompt, n) {
                Ok(b) => {
                    let same = a == b;
                    (b, same)
                }
                Err(e) => (format!("failed: {e}"), false),
            };
            if !same {
                differ += 1;
            }
            println!("| {arch} | {label} | {a:?} | {b:?} | {} |", if same { "yes" } else { "NO" });
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    if differ > 0 {
        eprintln!("{differ} of 4 differ");
        std::process::exit(1);
    }
}
