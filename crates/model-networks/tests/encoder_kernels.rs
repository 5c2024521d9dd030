//! The encoder CPU kernels against candle on the same weights: tiny random-weight checkpoints
//! of every family (BERT, JinaBERT, CLIP, GTE-Qwen2, Stella, NV-Embed), and the real
//! all-MiniLM-L6-v2 against the reference embeddings kept in the repository (the checkpoint
//! comes from `tools/fetch-minilm.sh`; without it that test fails and says so). Rows of
//! different lengths share a padded batch, so padding handling is compared too. (A process of
//! its own: the loads here would disturb the load-memory measurement in
//! `minilm_reference.rs`.)

use candle_core::{DType, Device, Tensor};
use model_fixtures::cosine;
use model_fixtures::minilm::{checkpoint, reference};
use model_networks::embed::bert::{Backend, Model};
use model_networks::embed::text::{Encoded, Overflow, Padded, TextMode, pad_right};
use model_networks::embed::{BatchLimits, EncoderParams};
use model_networks::embed::{clip, gte_qwen2, jina, nvembed, stella};
use model_networks::{EmbeddingModel, Family};
use model_runtime::ModelDir;

const KEY: &str = "sentence-transformers/all-MiniLM-L6-v2";

fn rows() -> Vec<Encoded> {
    // [CLS] … [SEP] with ids inside the tiny vocabulary; lengths 3 to 24 (the tiny limit).
    [3usize, 24, 7, 11, 1 + 1 + 1, 17]
        .iter()
        .enumerate()
        .map(|(r, &len)| {
            let mut ids = vec![2u32];
            ids.extend((0..len - 2).map(|i| 5 + ((r * 13 + i * 7) % 90) as u32));
            ids.push(3);
            Encoded {
                ids,
                pool_from: 0,
                truncated: false,
            }
        })
        .collect()
}

fn embed(model: &Model, rows: &[Encoded]) -> Vec<Vec<f32>> {
    let refs: Vec<&Encoded> = rows.iter().collect();
    let batch = pad_right(&refs, 0, &Device::Cpu).unwrap();
    model.forward(&batch).unwrap().to_vec2::<f32>().unwrap()
}

#[test]
fn kernels_match_candle_on_a_tiny_bert() {
    let dir = ModelDir::local(model_fixtures::embed::tiny(Family::Bert)).unwrap();
    let kernels = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        kernels.backend(),
        Backend::Kernels,
        "f32 on the CPU runs the kernels"
    );
    let candle = Model::load_with(&dir, DType::F32, &Device::Cpu, Backend::Candle).unwrap();
    let rows = rows();
    let (a, b) = (embed(&kernels, &rows), embed(&candle, &rows));
    assert_close(&a, &b, 1e-4, "bert");
    // Each row alone gives what it gave in the padded batch.
    for (r, row) in rows.iter().enumerate() {
        let alone = embed(&kernels, std::slice::from_ref(row));
        assert!(cosine(&alone[0], &a[r]) > 0.999999, "row {r} alone");
    }
    // And the comparison can fail: a row's embedding is not another's.
    assert!(cosine(&a[0], &b[1]) < 0.999);
}

/// Largest element-wise difference and the cosine of each pair of rows; panics past `tol`.
fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    for (r, (x, y)) in a.iter().zip(b).enumerate() {
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst < tol, "{what}, row {r}: max |Δ| {worst}");
        assert!(cosine(x, y) > 0.99999, "{what}, row {r}");
    }
}

fn embed_jina(model: &jina::Model, rows: &[Encoded]) -> Vec<Vec<f32>> {
    let refs: Vec<&Encoded> = rows.iter().collect();
    model
        .forward_unpadded(&refs, &Device::Cpu)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

#[test]
fn kernels_match_candle_on_a_tiny_jina_bert() {
    // ALiBi in place of position embeddings, GEGLU in place of the plain feed-forward.
    let dir = ModelDir::local(model_fixtures::embed::tiny(Family::JinaBert)).unwrap();
    let kernels = jina::Model::load(&dir, 64, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(kernels.backend(), Backend::Kernels);
    let candle =
        jina::Model::load_with(&dir, 64, DType::F32, &Device::Cpu, Backend::Candle).unwrap();
    // Rows of different lengths: the kernels run them as one batch, candle in equal-length
    // groups.
    let rows = rows();
    let (a, b) = (embed_jina(&kernels, &rows), embed_jina(&candle, &rows));
    assert_close(&a, &b, 1e-4, "jina");
    for (r, row) in rows.iter().enumerate() {
        let alone = embed_jina(&kernels, std::slice::from_ref(row));
        assert!(cosine(&alone[0], &a[r]) > 0.999999, "row {r} alone");
    }
    assert!(cosine(&a[0], &b[1]) < 0.999);
    let f16 = jina::Model::load(&dir, 64, DType::F16, &Device::Cpu).unwrap();
    assert_eq!(f16.backend(), Backend::Candle, "f16 is candle's");
}

#[test]
fn kernels_match_candle_on_a_tiny_clip() {
    // Pre-norm towers: a causal text tower over a padded batch of rows of different lengths,
    // and a vision tower over patches of two images.
    let dir = ModelDir::local(model_fixtures::embed::tiny(Family::Clip)).unwrap();
    let (kernels, _) = clip::Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(kernels.backend(), Backend::Kernels);
    let (candle, _) =
        clip::Model::load_with(&dir, DType::F32, &Device::Cpu, Backend::Candle).unwrap();
    let rows: Vec<Encoded> = rows().into_iter().filter(|e| e.len() <= 16).collect();
    assert!(rows.len() >= 4);
    let text = |m: &clip::Model, rows: &[Encoded]| {
        let refs: Vec<&Encoded> = rows.iter().collect();
        let batch = pad_right(&refs, 0, &Device::Cpu).unwrap();
        m.forward_text(&batch).unwrap().to_vec2::<f32>().unwrap()
    };
    let (a, b) = (text(&kernels, &rows), text(&candle, &rows));
    assert_close(&a, &b, 1e-4, "clip text");
    for (r, row) in rows.iter().enumerate() {
        let alone = text(&kernels, std::slice::from_ref(row));
        assert!(cosine(&alone[0], &a[r]) > 0.999999, "text row {r} alone");
    }
    assert!(cosine(&a[0], &b[1]) < 0.999);

    let pixels: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let pixels = candle_core::Tensor::from_vec(pixels, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let image = |m: &clip::Model| m.forward_images(&pixels).unwrap().to_vec2::<f32>().unwrap();
    let (a, b) = (image(&kernels), image(&candle));
    assert_close(&a, &b, 1e-4, "clip image");
    assert!(cosine(&a[0], &a[1]) < 0.999, "two images, two embeddings");
}

/// Runs padded batches of `rows` (and each row alone) through both backends' `forward` and
/// compares them (the Qwen2 and Mistral families share this check).
fn check_padded(
    kernels: impl Fn(&Padded) -> Tensor,
    candle: impl Fn(&Padded) -> Tensor,
    what: &str,
) {
    let run = |f: &dyn Fn(&Padded) -> Tensor, rows: &[Encoded]| {
        let refs: Vec<&Encoded> = rows.iter().collect();
        let batch = pad_right(&refs, 0, &Device::Cpu).unwrap();
        f(&batch).to_vec2::<f32>().unwrap()
    };
    let rows = rows();
    let (a, b) = (run(&kernels, &rows), run(&candle, &rows));
    assert_close(&a, &b, 1e-4, what);
    for (r, row) in rows.iter().enumerate() {
        let alone = run(&kernels, std::slice::from_ref(row));
        assert!(cosine(&alone[0], &a[r]) > 0.999999, "{what}: row {r} alone");
    }
    assert!(cosine(&a[0], &b[1]) < 0.999);
}

#[test]
fn kernels_match_candle_on_a_tiny_gte_qwen2() {
    // Grouped-query attention (4 heads over 2 key/value heads), RoPE, RMS norms, SwiGLU; every
    // token sees its whole row, and the pooled row is the last token.
    let dir = ModelDir::local(model_fixtures::embed::tiny(Family::GteQwen2)).unwrap();
    let kernels = gte_qwen2::Model::load(&dir, 64, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(kernels.backend(), Backend::Kernels);
    let candle =
        gte_qwen2::Model::load_with(&dir, 64, DType::F32, &Device::Cpu, Backend::Candle).unwrap();
    check_padded(
        |b| kernels.forward(b).unwrap(),
        |b| candle.forward(b).unwrap(),
        "gte-qwen2",
    );
}

#[test]
fn kernels_match_candle_on_a_tiny_stella() {
    // The same Qwen2 body, mean-pooled over each row's real tokens, then the Dense head.
    let dir = ModelDir::local(model_fixtures::embed::tiny(Family::Stella)).unwrap();
    let kernels = stella::Model::load(&dir, 64, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(kernels.backend(), Backend::Kernels);
    let candle =
        stella::Model::load_with(&dir, 64, DType::F32, &Device::Cpu, Backend::Candle).unwrap();
    check_padded(
        |b| kernels.forward(b).unwrap(),
        |b| candle.forward(b).unwrap(),
        "stella",
    );
}

#[test]
fn kernels_match_candle_on_a_tiny_nv_embed() {
    // A Mistral body (no query/key/value biases), then latent-attention pooling. The
    // checkpoint is f16; loaded as f32 it runs on the kernels, as f16 on candle.
    let dir = ModelDir::local(model_fixtures::embed::tiny(Family::NvEmbed)).unwrap();
    let kernels = nvembed::Model::load(&dir, 64, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(kernels.backend(), Backend::Kernels);
    let candle =
        nvembed::Model::load_with(&dir, 64, DType::F32, &Device::Cpu, Backend::Candle).unwrap();
    check_padded(
        |b| kernels.forward(b).unwrap(),
        |b| candle.forward(b).unwrap(),
        "nv-embed",
    );
    let f16 = nvembed::Model::load(&dir, 64, DType::F16, &Device::Cpu).unwrap();
    assert_eq!(f16.backend(), Backend::Candle, "f16 is candle's");
}

#[test]
fn kernels_refuse_what_they_cannot_run() {
    let dir = ModelDir::local(model_fixtures::embed::tiny(Family::Bert)).unwrap();
    let err = Model::load_with(&dir, DType::F16, &Device::Cpu, Backend::Kernels)
        .err()
        .expect("f16 is candle's");
    assert!(err.to_string().contains("f32"), "{err}");
    let f16 = Model::load(&dir, DType::F16, &Device::Cpu).unwrap();
    assert_eq!(f16.backend(), Backend::Candle);
}

#[test]
fn cpu_kernels_and_candle_agree_with_the_reference() {
    let refs = reference();
    let dir = ModelDir::local(checkpoint()).unwrap();
    let params = EncoderParams {
        key: KEY.to_owned(),
        family: Family::Bert,
        dtype: DType::F32,
        max_input_tokens: Some(256),
        overflow: Overflow::Truncate,
        normalize: true,
        query_instruction: None,
        batch: BatchLimits::default(),
    };
    let tokens = EmbeddingModel::load(&dir, &params, &Device::Cpu).unwrap();
    let texts: Vec<String> = refs.iter().map(|r| r.text.clone()).collect();
    let encoded = tokens.tokenize(&texts, &TextMode::Document).unwrap();
    let rows: Vec<_> = encoded.iter().collect();
    let batch = pad_right(&rows, 0, &Device::Cpu).unwrap();
    let mut worst = Vec::new();
    for backend in [Backend::Kernels, Backend::Candle] {
        let model = Model::load_with(&dir, DType::F32, &Device::Cpu, backend).unwrap();
        assert_eq!(model.backend(), backend);
        let pooled = model.forward(&batch).unwrap().to_vec2::<f32>().unwrap();
        let min = refs
            .iter()
            .zip(&pooled)
            .map(|(r, v)| cosine(v, &r.embedding))
            .fold(f64::INFINITY, f64::min);
        assert!(min >= 0.99999, "{backend:?}: worst cosine {min}");
        worst.push((backend, min));
    }
    println!("worst cosine against the reference, padded batch: {worst:?}");
}
