//! The GGUF decoders against an independent reference: tiny random-weight Phi-3 and Qwen3-MoE
//! files written with candle's `gguf_file::write` (`model-fixtures`), loaded by the same code
//! as real files, and compared logit for logit with a plain-loop forward pass over the
//! dequantized weights (`model_fixtures::reference`).

use std::path::Path;

use candle_core::{DType, Device};
use model_fixtures::decode::{self, Geometry, Storage};
use model_fixtures::reference::{self, Arch, Dequantized};
use model_networks::decode::{Decoder, DecoderParams, GenerativeModel};
use model_runtime::BackendError;

fn params(arch: &str, path: &Path, context_tokens: usize) -> DecoderParams {
    params_with_kv(arch, path, context_tokens, DType::F16)
}

fn params_with_kv(
    arch: &str,
    path: &Path,
    context_tokens: usize,
    kv_dtype: DType,
) -> DecoderParams {
    DecoderParams {
        key: "tiny".into(),
        source: path.to_path_buf(),
        decoder: Decoder::for_architecture(arch).unwrap(),
        tokenizer: None,
        dtype: None,
        context_tokens,
        kv_dtype,
        end_tokens: Vec::new(),
    }
}

fn try_load(
    arch: &str,
    path: &Path,
    context_tokens: usize,
) -> Result<GenerativeModel, BackendError> {
    GenerativeModel::load(&params(arch, path, context_tokens), &Device::Cpu)
}

fn load(arch: &str, path: &Path) -> GenerativeModel {
    try_load(arch, path, 512).unwrap()
}

/// The logits after `tokens`, prefilled `chunk` at a time into a fresh cache of `capacity`.
fn prefill(model: &GenerativeModel, tokens: &[u32], capacity: usize, chunk: usize) -> Vec<f32> {
    model
        .session(capacity)
        .unwrap()
        .prefill(tokens, None, chunk)
        .unwrap()
}

/// A prompt of `n` ids from the tiny vocabulary (bytes and merges, no specials).
fn prompt(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 264).collect()
}

#[test]
fn phi3_uses_the_rope_base_from_the_file_not_candles_10000() {
    let g = Geometry::phi3();
    let path = model_fixtures::scratch("phi3-rope").join("tiny-phi3.gguf");
    decode::write_phi3(&path, &g, 1);
    let model = load("phi3", &path);
    assert_eq!(model.decoder(), Decoder::Phi3Gguf);
    let tokens = prompt(48);
    let got = prefill(&model, &tokens, 64, 512);

    let w = Dequantized::read(&path);
    let with_file_base = reference::reference_logits(&w, Arch::Phi3, &g, &tokens, 250_000.0);
    let with_candle_base = reference::reference_logits(&w, Arch::Phi3, &g, &tokens, 10_000.0);
    let to_file = reference::rel_dist(&got, &with_file_base);
    let to_candle = reference::rel_dist(&got, &with_candle_base);
    let bases_apart = reference::rel_dist(&with_candle_base, &with_file_base);
    eprintln!(
        "phi3: |got-ref(250k)| {to_file:.4}  |got-ref(10k)| {to_candle:.4}  |ref(10k)-ref(250k)| {bases_apart:.4}"
    );
    // The backend quantizes activations to Q8_K inside its matmuls; the reference does not.
    assert!(
        to_file < 0.03,
        "backend drifts from the reference: {to_file}"
    );
    assert!(
        bases_apart > 0.1 && to_candle > 5.0 * to_file,
        "the two bases must be told apart: to 250k {to_file}, to 10k {to_candle}, apart {bases_apart}"
    );
}

#[test]
fn with_f32_weights_both_decoders_match_the_reference_exactly() {
    // Float weights take candle's plain matmuls (no Q8_K activation rounding), so what is
    // left between the backend and the reference is float summation order.
    for arch in [Arch::Phi3, Arch::Qwen3Moe] {
        let dir = model_fixtures::scratch("f32");
        let (g, path, name) = match arch {
            Arch::Phi3 => {
                let p = dir.join("phi3-f32.gguf");
                decode::write_phi3_stored(&p, &Geometry::phi3(), 6, Storage::F32);
                (Geometry::phi3(), p, "phi3")
            }
            Arch::Qwen3Moe => {
                let p = dir.join("qwen3moe-f32.gguf");
                decode::write_qwen3moe_stored(&p, &Geometry::qwen3moe(), 6, Storage::F32);
                (Geometry::qwen3moe(), p, "qwen3moe")
            }
        };
        // Keys and values kept in F32 too: nothing but summation order between the two.
        let model =
            GenerativeModel::load(&params_with_kv(name, &path, 512, DType::F32), &Device::Cpu)
                .unwrap();
        let tokens = prompt(32);
        let got = prefill(&model, &tokens, 40, 512);
        let w = Dequantized::read(&path);
        let d = reference::rel_dist(
            &got,
            &reference::reference_logits(&w, arch, &g, &tokens, g.rope_base),
        );
        eprintln!("{name} f32: |got-ref| {d:.2e}");
        assert!(d < 1e-4, "{name}: {d}");
    }
}

#[test]
fn phi3_kv_cache_and_chunked_prefill_give_the_same_logits() {
    let g = Geometry::phi3();
    let path = model_fixtures::scratch("phi3-kv").join("tiny-phi3.gguf");
    decode::write_phi3(&path, &g, 2);
    let model = load("phi3", &path);
    let tokens = prompt(20);
    let whole = prefill(&model, &tokens, 32, 512);
    let chunked = prefill(&model, &tokens, 32, 6);
    let mut s = model.session(32).unwrap();
    s.prefill(&tokens[..19], None, 512).unwrap();
    let stepped = s.step(tokens[19]).unwrap();
    assert!(reference::rel_dist(&chunked, &whole) < 0.01);
    assert!(reference::rel_dist(&stepped, &whole) < 0.01);
    // The cache is preallocated to the session's capacity: 2 × layers × kv_heads × head_dim
    // × 32 positions × 2 bytes (F16 by default).
    assert_eq!(s.kv_bytes(), Some((2 * 2 * 2 * 64 * 32 * 2) as u64));
    let err = model
        .session(4)
        .unwrap()
        .prefill(&tokens, None, 512)
        .unwrap_err();
    assert!(err.to_string().contains("KV cache full"), "{err}");
}

#[test]
fn qwen3_moe_runs_its_experts_on_the_cpu_and_matches_the_reference() {
    let g = Geometry::qwen3moe();
    let path = model_fixtures::scratch("qwen3moe").join("tiny-qwen3moe.gguf");
    decode::write_qwen3moe(&path, &g, 3);
    let model = load("qwen3moe", &path);
    assert_eq!(model.decoder(), Decoder::Qwen3MoeGguf);
    let tokens = prompt(24);
    let got = prefill(&model, &tokens, 32, 512);
    let w = Dequantized::read(&path);
    let reference = reference::reference_logits(&w, Arch::Qwen3Moe, &g, &tokens, g.rope_base);
    let d = reference::rel_dist(&got, &reference);
    eprintln!("qwen3moe: |got-ref| {d:.4}");
    assert!(d < 0.03, "backend drifts from the reference: {d}");
    // Decoding one token at a time through the cache agrees with the prompt pass.
    let mut s = model.session(32).unwrap();
    s.prefill(&tokens[..23], None, 512).unwrap();
    let stepped = s.step(tokens[23]).unwrap();
    assert!(reference::rel_dist(&stepped, &got) < 0.01);
}

#[test]
fn the_tokenizer_comes_from_tokenizer_json_when_present_else_from_the_gguf_vocabulary() {
    let dir = model_fixtures::scratch("tokenizer");
    let path = dir.join("tiny-phi3.gguf");
    decode::write_phi3(&path, &Geometry::phi3(), 4);
    let vocab = decode::Vocab::new();
    let model = load("phi3", &path);
    let text = "<|im_start|>user<|im_sep|>the answer is in there<|im_end|>";
    let ids = model.encode(text).unwrap();
    assert_eq!(
        ids[0],
        vocab.id("<|im_start|>"),
        "special tokens are single tokens"
    );
    assert_eq!(*ids.last().unwrap(), vocab.id("<|im_end|>"));
    assert!(ids.contains(&vocab.id("in")), "BPE merges apply: {ids:?}");
    assert_eq!(model.tokenizer().decode(&ids, false).unwrap(), text);
    assert!(
        model.end_ids().contains(&vocab.id("<|im_end|>")),
        "the GGUF's eos token ends generation"
    );

    // A tokenizer.json beside the file wins.
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    let words = [("<unk>", 0), ("hello", 7), ("world", 9)];
    let wl = WordLevel::builder()
        .vocab(words.iter().map(|(w, i)| (w.to_string(), *i)).collect())
        .unk_token("<unk>".into())
        .build()
        .unwrap();
    let mut json = tokenizers::Tokenizer::new(wl);
    json.with_pre_tokenizer(Some(Whitespace {}));
    json.save(dir.join("tokenizer.json"), false).unwrap();
    let model = load("phi3", &path);
    assert_eq!(model.encode("hello world").unwrap(), vec![7, 9]);
}

#[test]
fn a_file_of_another_architecture_is_refused_by_name() {
    let path = model_fixtures::scratch("wrong-arch").join("tiny-qwen3moe.gguf");
    decode::write_qwen3moe(&path, &Geometry::qwen3moe(), 5);
    // The default context of a generator that names none.
    let err = try_load("phi3", &path, 4096).unwrap_err();
    assert!(
        err.to_string()
            .contains("general.architecture is `qwen3moe`"),
        "{err}"
    );
}

#[test]
fn an_f16_kv_cache_follows_the_f32_one_in_half_the_bytes() {
    for (arch, name) in [(Arch::Phi3, "phi3"), (Arch::Qwen3Moe, "qwen3moe")] {
        let path = model_fixtures::scratch("kv-dtype").join(format!("{name}.gguf"));
        match arch {
            Arch::Phi3 => decode::write_phi3(&path, &Geometry::phi3(), 4),
            Arch::Qwen3Moe => decode::write_qwen3moe(&path, &Geometry::qwen3moe(), 4),
        }
        // Both caches are fed the same tokens (teacher forcing), so a near-tie in the tiny
        // random network's greedy choice cannot send them down different paths.
        let followed: Vec<u32> = prompt(40)[24..].to_vec();
        let run = |kv: DType| {
            let model =
                GenerativeModel::load(&params_with_kv(name, &path, 512, kv), &Device::Cpu).unwrap();
            let mut s = model.session(64).unwrap();
            let mut steps = vec![s.prefill(&prompt(24), None, 8).unwrap()];
            for &t in &followed {
                steps.push(s.step(t).unwrap());
            }
            (steps, s.kv_bytes().unwrap())
        };
        let (l32, b32) = run(DType::F32);
        let (l16, b16) = run(DType::F16);
        assert_eq!(b16 * 2, b32, "{name}: F16 cache is half the F32 one");
        let per_step: Vec<f64> = l16
            .iter()
            .zip(&l32)
            .map(|(a, b)| reference::rel_dist(a, b))
            .collect();
        eprintln!("{name}: F16 vs F32 KV, logits |Δ| per step {per_step:.3?}");
        // The tiny random networks amplify any rounding: the kernels' 8-bit activations move
        // them as much (tolerance 0.03 against the reference); the attention itself is checked
        // tightly in `attention`'s unit tests. A router choosing between near-tied experts
        // may pick another one for a token (0.2 on one step of 17 here), so the MoE may have
        // one step further off; the dense network none.
        let off = per_step.iter().filter(|&&d| d >= 0.03).count();
        let allowed = if arch == Arch::Qwen3Moe { 1 } else { 0 };
        assert!(
            off <= allowed,
            "{name}: F16 keys and values moved the logits: {per_step:?}"
        );
    }
}
