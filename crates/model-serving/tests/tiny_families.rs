//! Each of the six families, as a tiny random-weight checkpoint written by the test, loaded by
//! the same code as a real checkpoint and served through the pool: embeddings have the model's
//! width and unit norm, differ between texts, and do not depend on how requests are batched.

use model_fixtures::embed::WORDS;
use model_fixtures::{cosine, norm};
use model_pool::{DeviceId, MemoryGovernor, ModelStateKind};
use model_runtime::error::InputError;
use model_serving::{Family, ModelPool, Overflow, ServeError, ServedModel, TextMode};

const TEXTS: [&str; 5] = [
    "the quick brown fox jumps over the lazy dog",
    "hello world",
    "a memory aware pool keeps models resident until they are idle",
    "rust",
    "red cat sat on the blue mat",
];

fn config(family: Family) -> (String, ServedModel) {
    let dir = model_fixtures::embed::tiny(family);
    let config = model_fixtures::embed::tiny_served(family, &dir);
    (config.key.clone(), config)
}

fn pool(configs: Vec<ServedModel>) -> ModelPool {
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, 4 << 30)]).unwrap();
    ModelPool::builder()
        .governor(governor)
        .models(configs)
        .build()
        .unwrap()
}

/// Batch-invariance threshold: f32 models agree to rounding; the f16 model (NV-Embed) to f16
/// rounding of differently shaped matmuls.
fn same(family: Family) -> f64 {
    if family == Family::NvEmbed {
        0.9995
    } else {
        0.99999
    }
}

/// The checks every family passes; returns the batched embeddings.
async fn serves(family: Family, dim: usize) -> (ModelPool, String, Vec<Vec<f32>>) {
    let (key, config) = config(family);
    let pool = pool(vec![config]);
    let batched = pool.embed(&key, TEXTS).await.unwrap();
    assert_eq!(batched.len(), TEXTS.len());
    for v in &batched {
        assert_eq!(v.len(), dim, "{family}: embedding width");
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{family}: non-finite values"
        );
        assert!(
            (norm(v) - 1.0).abs() < 1e-3,
            "{family}: not L2-normalized: {}",
            norm(v)
        );
    }
    for i in 0..TEXTS.len() {
        for j in i + 1..TEXTS.len() {
            assert!(
                cosine(&batched[i], &batched[j]) < 0.999,
                "{family}: texts {i} and {j} embed alike"
            );
        }
    }
    // One at a time, and all at once from concurrent callers: the same vectors.
    for (i, text) in TEXTS.iter().enumerate() {
        let single = pool.embed(&key, [*text]).await.unwrap();
        let c = cosine(&single[0], &batched[i]);
        assert!(
            c >= same(family),
            "{family}: text {i} alone vs in a batch: cosine {c}"
        );
    }
    let concurrent = futures::future::join_all(TEXTS.iter().map(|t| pool.embed(&key, [*t]))).await;
    for (i, r) in concurrent.into_iter().enumerate() {
        let c = cosine(&r.unwrap()[0], &batched[i]);
        assert!(
            c >= same(family),
            "{family}: concurrent text {i}: cosine {c}"
        );
    }
    let status = pool.status();
    let model = status.model(&key).unwrap();
    assert_eq!(model.state, ModelStateKind::Ready);
    assert!(
        model.measured_bytes.is_some(),
        "{family}: the load was measured"
    );
    assert!(
        model.counters.loads == 1,
        "{family}: loaded once, served from memory after"
    );
    let report = pool.memory_report();
    assert!(report.rows[0].measured.is_some());
    assert!(report.rows[0].estimate_mb.is_some());
    (pool, key, batched)
}

async fn queries_differ_from_documents(pool: &ModelPool, key: &str, family: Family) {
    let docs = pool.embed(key, TEXTS).await.unwrap();
    let queries = pool.embed_queries(key, TEXTS).await.unwrap();
    for (d, q) in docs.iter().zip(&queries) {
        assert!(
            cosine(d, q) < 0.9999,
            "{family}: the query instruction changed nothing"
        );
    }
    let custom = pool
        .embed_with(key, TEXTS, TextMode::QueryWith("search engine: ".into()))
        .await
        .unwrap();
    assert!(
        cosine(&custom[0], &queries[0]) < 0.9999,
        "{family}: a custom instruction is used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bert_minilm_family() {
    let (pool, key, batched) = serves(Family::Bert, 32).await;
    // Queries without an instruction are documents.
    let q = pool.embed_queries(&key, TEXTS).await.unwrap();
    assert!(cosine(&q[0], &batched[0]) > 0.99999);

    // Truncation at the model's max_seq_length (24 with [CLS] and [SEP]): a 40-word text embeds
    // exactly like its first 22 words.
    let words: Vec<&str> = (0..40).map(|i| WORDS[i % 30]).collect();
    let long = words.join(" ");
    let head = words[..22].join(" ");
    let near = words[..21].join(" ");
    let out = pool
        .embed(&key, [long.as_str(), head.as_str(), near.as_str()])
        .await
        .unwrap();
    assert!(cosine(&out[0], &out[1]) > 0.99999, "truncated at the limit");
    assert!(cosine(&out[0], &out[2]) < 0.99999, "…and not earlier");

    // Empty input is a clear error.
    let err = pool.embed(&key, Vec::<String>::new()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ServeError::Input {
                source: InputError::Empty { index: None },
                ..
            }
        ),
        "{err}"
    );
    let err = pool.embed(&key, ["hello", "  "]).await.unwrap_err();
    assert!(
        matches!(
            err,
            ServeError::Input {
                source: InputError::Empty { index: Some(1) },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("input 1 is empty"), "{err}");
    // Images go to image models only; unknown models are named.
    let img = model_serving::report::noise_image(8, 8, 1);
    let err = pool.embed_images(&key, vec![img]).await.unwrap_err();
    assert!(matches!(err, ServeError::WrongCapability { .. }), "{err}");
    let err = pool.embed("no/such-model", ["x"]).await.unwrap_err();
    assert!(err.to_string().contains("no/such-model"), "{err}");

    // A model configured to refuse long inputs says which one and by how much.
    let (key2, config) = config(Family::Bert);
    let refusing = self::pool(vec![
        config.map_embed(|o| o.overflow(Overflow::Refuse)).unwrap(),
    ]);
    let err = refusing
        .embed(&key2, ["hello", long.as_str()])
        .await
        .unwrap_err();
    match &err {
        ServeError::Input {
            source:
                InputError::TooLong {
                    index,
                    tokens,
                    limit,
                },
            ..
        } => assert_eq!((*index, *tokens, *limit), (1, 42, 24)),
        other => panic!("expected TooLong, got {other}"),
    }
    assert!(
        refusing.embed(&key2, [head.as_str()]).await.is_ok(),
        "at the limit is fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stella_family() {
    let (pool, key, _) = serves(Family::Stella, 24).await;
    queries_differ_from_documents(&pool, &key, Family::Stella).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gte_qwen2_family() {
    let (pool, key, _) = serves(Family::GteQwen2, 32).await;
    queries_differ_from_documents(&pool, &key, Family::GteQwen2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jina_family_padding_never_changes_results() {
    let (_pool, _key, batched) = serves(Family::JinaBert, 32).await;
    // Texts of five different lengths in one request were checked against one-by-one above.
    // Show that the check can fail: candle's jina_bert on a right-padded batch (it takes no
    // mask) gives a different vector for the padded text.
    use candle_core::{DType, Device, IndexOp, Module, Tensor};
    // The writer is deterministic: these are the weights the pool loaded.
    let dir = model_fixtures::embed::tiny(Family::JinaBert);
    let cfg: candle_transformers::models::jina_bert::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let bert = candle_transformers::models::jina_bert::BertModel::new(vb, &cfg).unwrap();
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let short = tok.encode(TEXTS[1], true).unwrap().get_ids().to_vec();
    let long = tok.encode(TEXTS[0], true).unwrap().get_ids().to_vec();
    let mut padded = short.clone();
    padded.resize(long.len(), 0);
    let ids = Tensor::new(vec![long.clone(), padded], &Device::Cpu).unwrap();
    let hidden = bert.forward(&ids).unwrap();
    let naive = hidden.i((1, ..short.len())).unwrap().mean(0).unwrap();
    let naive: Vec<f32> = naive.to_vec1().unwrap();
    let c = cosine(&naive, &batched[1]);
    assert!(
        c < 0.9999,
        "padding should leak into an unmasked JinaBERT (cosine {c})"
    );
    let alone = Tensor::new(vec![short.clone()], &Device::Cpu).unwrap();
    let unpadded: Vec<f32> = bert
        .forward(&alone)
        .unwrap()
        .i(0)
        .unwrap()
        .mean(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(
        cosine(&unpadded, &batched[1]) > 0.99999,
        "the pool's result is the unpadded one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nv_embed_family() {
    let (pool, key, _) = serves(Family::NvEmbed, 32).await;
    queries_differ_from_documents(&pool, &key, Family::NvEmbed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clip_family_texts_and_images() {
    let (pool, key, texts) = serves(Family::Clip, 16).await;
    let images: Vec<_> = (0..3)
        .map(|i| model_serving::report::noise_image(40 + 10 * i, 30, i))
        .collect();
    let batched = pool.embed_images(&key, images.clone()).await.unwrap();
    assert_eq!(batched.len(), 3);
    for (i, v) in batched.iter().enumerate() {
        assert_eq!(v.len(), 16, "same space as the text embeddings");
        assert!((norm(v) - 1.0).abs() < 1e-3);
        let single = pool
            .embed_images(&key, vec![images[i].clone()])
            .await
            .unwrap();
        assert!(
            cosine(&single[0], v) > 0.99999,
            "image {i} alone vs in a batch"
        );
        assert!(cosine(v, &texts[0]) < 0.9999);
    }
    assert!(cosine(&batched[0], &batched[1]) < 0.9999);
    // The text tower holds 16 positions: longer texts are truncated, not failed.
    let long = WORDS[..30].join(" ");
    assert_eq!(pool.embed(&key, [long]).await.unwrap()[0].len(), 16);
    let err = pool.embed_images(&key, vec![]).await.unwrap_err();
    assert!(matches!(err, ServeError::Input { .. }), "{err}");
}
