//! Generation through the pool with tiny random-weight checkpoints written by `model-fixtures`
//! (Phi-3 and Qwen3-MoE GGUFs, a LLaVA 1.5 checkpoint in the llava-hf layout), loaded by the
//! same code as the real files: determinism, streaming and cancellation (the lease and the KV
//! reservation come back), context limits, stop strings, per-request KV caches under
//! concurrency, the shared governor, the refusals of Kimi K2, and LLaVA's image reaching the
//! language model.

use std::path::Path;
use std::time::Duration;

use model_fixtures::decode::{self, Geometry, LLAVA_IMAGE_TOKEN, test_image};
use model_fixtures::reference::rel_dist;
use model_networks::decode::llava::Config;
use model_networks::image::{CLIP_MEAN, ClipPreprocess};
use model_pool::size::GIB;
use model_pool::{DeviceId, MemoryGovernor, PoolError};
use model_registry::Backend;
use model_runtime::ModelDir;
use model_serving::checkpoint::estimate_checkpoint;
use model_serving::generate::{ChatTemplate, FinishReason, SamplingParams};
use model_serving::loader::load_measured_blocking;
use model_serving::{GenMemory, GenerateRequest, ModelPool, ServeError, ServedModel};
use model_spec::RunProfile;

const PHI4: &str = "microsoft/phi-4";
const QWEN3_CODER: &str = "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF";
const LLAVA: &str = "llava-hf/llava-1.5-7b-hf";

/// A tiny checkpoint served under `key` with the registry model `registry`'s template and
/// sampling, declaring the estimator's figure for the tiny file.
fn tiny(key: &str, registry: &str, backend: Backend, path: &Path) -> ServedModel {
    let m = estimate_checkpoint(backend, path, None).unwrap();
    let mut served = ServedModel::registry(registry, path).unwrap();
    served.key = key.to_owned();
    // The estimate's context is capped at the tiny model's 512 positions.
    served
        .map_generate(|o| {
            o.context_tokens(512)
                .memory(GenMemory::from_estimate(&m, 512))
        })
        .unwrap()
}

fn phi3(name: &str) -> ServedModel {
    let path = model_fixtures::scratch(name).join("tiny-phi3.gguf");
    decode::write_phi3(&path, &Geometry::phi3(), 11);
    tiny(name, PHI4, Backend::Phi3Gguf, &path)
}

fn qwen(name: &str) -> ServedModel {
    let path = model_fixtures::scratch(name).join("tiny-qwen3moe.gguf");
    decode::write_qwen3moe(&path, &Geometry::qwen3moe(), 12);
    tiny(name, QWEN3_CODER, Backend::Qwen3MoeGguf, &path)
}

fn context(model: ServedModel, tokens: usize) -> ServedModel {
    model.map_generate(|o| o.context_tokens(tokens)).unwrap()
}

fn pool(budget: u64, models: Vec<ServedModel>) -> ModelPool {
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, budget)]).unwrap();
    ModelPool::builder()
        .governor(governor)
        .models(models)
        .build()
        .unwrap()
}

async fn text(
    pool: &ModelPool,
    model: &str,
    req: GenerateRequest,
) -> (String, Vec<u32>, FinishReason) {
    let g = pool
        .generate(model, req)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    (g.text, g.tokens, g.finish)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_decoding_repeats_and_a_seed_makes_sampling_repeatable() {
    let p = pool(8 * GIB, vec![phi3("phi"), qwen("qwen")]);
    for model in ["phi", "qwen"] {
        let greedy = || {
            GenerateRequest::user("the answer is")
                .greedy()
                .max_tokens(12)
        };
        let (a, ta, fa) = text(&p, model, greedy()).await;
        eprintln!("{model}: {a:?} {ta:?}");
        let (b, tb, _) = text(&p, model, greedy()).await;
        assert_eq!((&a, &ta), (&b, &tb), "{model}: greedy runs differ");
        assert!(
            !ta.is_empty() && (fa == FinishReason::MaxTokens) == (ta.len() == 12),
            "{model}: {fa:?} after {} tokens",
            ta.len()
        );

        // The card's sampling (Qwen3-Coder: 0.7 / 0.8 / 20 / 1.05; Phi-4: greedy) with a
        // high temperature so that seeds matter.
        let sampled = |seed| {
            GenerateRequest::user("the answer is")
                .temperature(1.5)
                .top_k(0)
                .top_p(1.0)
                .seed(seed)
                .max_tokens(24)
        };
        let (_, s1, _) = text(&p, model, sampled(7)).await;
        let (_, s2, _) = text(&p, model, sampled(7)).await;
        let (_, s3, _) = text(&p, model, sampled(8)).await;
        assert_eq!(s1, s2, "{model}: same seed, different tokens");
        assert_ne!(s1, s3, "{model}: different seeds, same 24 tokens");
    }
    let options = |key| p.model(key).unwrap().generate_options("generate").unwrap();
    assert_eq!(
        options("qwen").sampling,
        SamplingParams {
            temperature: 0.7,
            top_p: 0.8,
            top_k: 20,
            repetition_penalty: 1.05,
            seed: None,
        },
        "the registry config carries the card's sampling"
    );
    assert_eq!(options("phi").template, Some(ChatTemplate::phi4()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_cancels_and_returns_the_lease_and_kv_memory() {
    let config = phi3("cancel");
    let spec = config.pool_spec(0);
    let p = pool(4 * GIB, vec![config]);
    let g = p.governor().clone();
    let request = |n| {
        GenerateRequest::user("the answer is")
            .greedy()
            .max_tokens(n)
    };

    let mut stream = p.generate("cancel", request(400)).await.unwrap();
    stream.next_token().await.unwrap().unwrap();
    assert_eq!(
        g.reserved(DeviceId::Cpu),
        Some(spec.resident_bytes + spec.per_request_bytes),
        "weights + one request's KV cache and prefill are reserved while it streams"
    );
    assert_eq!(p.status().model("cancel").unwrap().leases, 1);
    drop(stream);
    // The memory and the lease come back from the generation task as it stops (in that
    // order, but the test may look between the two).
    let mut waited = Duration::ZERO;
    while g.reserved(DeviceId::Cpu) != Some(spec.resident_bytes)
        || p.status().model("cancel").unwrap().leases != 0
    {
        assert!(
            waited < Duration::from_secs(10),
            "the request's memory or lease never came back: {:?} reserved, {} lease(s)",
            g.reserved(DeviceId::Cpu),
            p.status().model("cancel").unwrap().leases
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        waited += Duration::from_millis(5);
    }

    // `cancel` returns once everything is released.
    let mut stream = p.generate("cancel", request(400)).await.unwrap();
    stream.next_token().await.unwrap().unwrap();
    stream.cancel().await;
    assert_eq!(g.reserved(DeviceId::Cpu), Some(spec.resident_bytes));

    // A stream read to its end has released everything by then too.
    let done = p
        .generate("cancel", request(5))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(done.usage.completion_tokens, 5);
    assert_eq!(g.reserved(DeviceId::Cpu), Some(spec.resident_bytes));
    // K and V × 2 layers × 2 KV heads × head_dim 64 × 2 B (the F16 cache) per token.
    assert_eq!(
        done.usage.kv_bytes,
        Some(2 * 2 * 2 * 64 * 2 * (done.usage.prompt_tokens + 5) as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_plus_output_is_checked_against_the_model_and_the_reserved_context() {
    let short = context(phi3("short"), 64);
    let long = context(phi3("long"), 4096);
    let p = pool(4 * GIB, vec![short, long]);
    let req = || GenerateRequest::user("the answer is in there");
    match p
        .generate("short", req().max_tokens(100))
        .await
        .unwrap_err()
    {
        ServeError::ContextTooLong {
            prompt_tokens,
            max_tokens,
            limit,
            model_max,
            reserved,
            ..
        } => {
            assert_eq!((max_tokens, limit, model_max, reserved), (100, 64, 512, 64));
            assert!(prompt_tokens > 10 && prompt_tokens < 64, "{prompt_tokens}");
        }
        other => panic!("{other:?}"),
    }
    // More context than the model has: the model's 512 positions are the limit.
    match p.generate("long", req().max_tokens(600)).await.unwrap_err() {
        ServeError::ContextTooLong {
            limit,
            model_max,
            reserved,
            ..
        } => {
            assert_eq!((limit, model_max, reserved), (512, 512, 4096))
        }
        other => panic!("{other:?}"),
    }
    // Without max_tokens the request may use the rest of its context, and no more.
    let mut s = p.generate("short", req().greedy()).await.unwrap();
    let prompt = s.prompt_tokens();
    let mut n = 0;
    while let Some(t) = s.next_token().await {
        t.unwrap();
        n += 1;
    }
    assert!(prompt + n <= 64, "{prompt} + {n}");
    assert!(matches!(
        s.finish_reason(),
        Some(FinishReason::MaxTokens | FinishReason::EndOfSequence)
    ));
    let err = p.generate("short", req().max_tokens(0)).await.unwrap_err();
    assert!(matches!(err, ServeError::InvalidRequest { .. }), "{err:?}");
    let err = p.generate("short", req().top_p(0.0)).await.unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_string_ends_the_answer_before_it() {
    let p = pool(4 * GIB, vec![qwen("stop")]);
    let req = || {
        GenerateRequest::user("the answer is")
            .greedy()
            .max_tokens(24)
    };
    let (full, _, _) = text(&p, "stop", req()).await;
    let chars: Vec<(usize, char)> = full.char_indices().collect();
    assert!(chars.len() > 8, "{full:?}");
    // A stop string from the middle of the answer: the answer ends where it first occurs.
    let (from, to) = (chars[chars.len() / 2].0, chars[chars.len() / 2 + 2].0);
    let stop = full[from..to].to_owned();
    let first = full.find(&stop).unwrap();
    let (cut, _, finish) = text(&p, "stop", req().stop(stop.clone())).await;
    assert_eq!(cut, full[..first]);
    assert_eq!(finish, FinishReason::Stop(stop));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_keep_their_own_kv_caches() {
    let p = pool(4 * GIB, vec![phi3("shared").max_concurrency(2)]);
    // More tokens than the stream's channel holds (64), so neither worker can finish and
    // release its lease before the other has started.
    let a = || {
        GenerateRequest::user("the answer is in there")
            .greedy()
            .max_tokens(100)
    };
    let b = || {
        GenerateRequest::user("on the other hand")
            .greedy()
            .max_tokens(100)
    };
    let (alone_a, _, _) = text(&p, "shared", a()).await;
    let (alone_b, _, _) = text(&p, "shared", b()).await;
    let mut sa = p.generate("shared", a()).await.unwrap();
    let mut sb = p.generate("shared", b()).await.unwrap();
    assert_eq!(
        p.status().model("shared").unwrap().leases,
        2,
        "both run at once"
    );
    let (mut ta, mut tb) = (String::new(), String::new());
    loop {
        let x = sa.next_token().await;
        let y = sb.next_token().await;
        if let Some(t) = &x {
            ta.push_str(&t.as_ref().unwrap().text);
        }
        if let Some(t) = &y {
            tb.push_str(&t.as_ref().unwrap().text);
        }
        if x.is_none() && y.is_none() {
            break;
        }
    }
    assert_eq!((ta, tb), (alone_a, alone_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generators_draw_on_the_process_wide_governor_by_default() {
    let p = ModelPool::builder().model(phi3("global")).build().unwrap();
    assert!(p.governor().same_as(MemoryGovernor::global().unwrap()));
    let other = ModelPool::builder().build().unwrap();
    assert!(other.governor().same_as(p.governor()));
    let err = p
        .describe_image(
            "global",
            test_image([255, 0, 0], [0, 0, 255]),
            "What is shown?",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::WrongCapability { .. }), "{err:?}");
    let err = p
        .generate("nope", GenerateRequest::user("hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServeError::Pool(PoolError::UnknownModel { .. })),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kimi_k2_is_refused_by_type_never_loaded() {
    let kimi = "unsloth/Kimi-K2-Instruct-GGUF";
    let config =
        ServedModel::registry(kimi, "Q4_K_M/Kimi-K2-Instruct-Q4_K_M-00001-of-00013.gguf").unwrap();
    let options = config.generate_options("generate").unwrap();
    let need = options.need_bytes();
    let registry = model_registry::by_key(kimi).unwrap().memory;
    // The KV cache is reserved per token of context: up to a byte per token is rounded off.
    assert!(
        need.abs_diff(registry.total_bytes) <= options.context_tokens as u64 + 2,
        "the estimate's parts, margin included: {need} vs {}",
        registry.total_bytes
    );

    // A 24 GiB machine: the pool's never-fits error, estimate vs budget.
    let small = pool(24 * GIB, vec![config.clone(), phi3("beside")]);
    match small
        .generate(kimi, GenerateRequest::user("hi"))
        .await
        .unwrap_err()
    {
        ServeError::Pool(PoolError::NeverFits {
            need: n,
            budget,
            device,
            ..
        }) => {
            assert_eq!((n.0, budget.0, device), (need, 24 * GIB, DeviceId::Cpu));
        }
        other => panic!("{other:?}"),
    }
    // 1 TiB: it would fit (681,400 MB held as stored), but no backend runs deepseek2.
    let large = pool(1024 * GIB, vec![config]);
    let err = large
        .generate(kimi, GenerateRequest::user("hi"))
        .await
        .unwrap_err();
    match &err {
        ServeError::NoBackend {
            architecture,
            need: n,
            budget,
            ..
        } => {
            assert_eq!(
                (architecture.as_str(), n.0, budget.0),
                ("deepseek2", need, 1024 * GIB)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .contains("no backend for architecture deepseek2"),
        "{err}"
    );
    for p in [&small, &large] {
        assert_eq!(
            p.governor().total_reserved(),
            0,
            "nothing reserved, nothing evicted"
        );
        assert!(p.status().model(kimi).is_none(), "never handed to the pool");
    }
}

/// `config.json` and `preprocessor_config.json` of llava-hf/llava-1.5-7b-hf.
fn real_llava_config(dir: &Path) {
    std::fs::write(
        dir.join("config.json"),
        r#"{
  "architectures": ["LlavaForConditionalGeneration"],
  "ignore_index": -100,
  "image_token_index": 32000,
  "model_type": "llava",
  "pad_token_id": 32001,
  "projector_hidden_act": "gelu",
  "text_config": {
    "_name_or_path": "lmsys/vicuna-7b-v1.5",
    "architectures": ["LlamaForCausalLM"],
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "rms_norm_eps": 1e-05,
    "torch_dtype": "float16",
    "vocab_size": 32064
  },
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.36.0.dev0",
  "vision_config": {
    "hidden_size": 1024,
    "image_size": 336,
    "intermediate_size": 4096,
    "model_type": "clip_vision_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768,
    "vocab_size": 32000
  },
  "vision_feature_layer": -2,
  "vision_feature_select_strategy": "default",
  "vocab_size": 32064
}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"crop_size": {"height": 336, "width": 336}, "do_center_crop": true, "do_convert_rgb": true,
  "do_normalize": true, "do_rescale": true, "do_resize": true,
  "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "CLIPImageProcessor",
  "image_std": [0.26862954, 0.26130258, 0.27577711], "processor_class": "LlavaProcessor",
  "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 336}}"#,
    )
    .unwrap();
}

#[test]
fn the_llava_hf_15_config_reads_with_transformers_defaults() {
    let dir = model_fixtures::scratch("llava-real-config");
    real_llava_config(&dir);
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    // candle's struct wants v1.6 fields this file does not have.
    let candle =
        serde_json::from_str::<candle_transformers::models::llava::config::HFLLaVAConfig>(&text);
    assert!(
        candle.is_err(),
        "candle's 1.6 config unexpectedly read a 1.5 file"
    );

    let c = Config::read(&ModelDir::local(&dir).unwrap()).unwrap();
    let l = c.llama();
    assert_eq!(
        (
            l.hidden_size,
            l.intermediate_size,
            l.num_hidden_layers,
            l.num_attention_heads
        ),
        (4096, 11008, 32, 32)
    );
    assert_eq!(
        (
            l.num_key_value_heads,
            l.vocab_size,
            l.max_position_embeddings
        ),
        (32, 32064, 4096)
    );
    assert_eq!((l.rms_norm_eps, l.rope_theta), (1e-5, 10_000.0));
    let v = c.clip();
    assert_eq!(
        (v.embed_dim, v.num_hidden_layers, v.image_size, v.patch_size),
        (1024, 24, 336, 14)
    );
    assert_eq!(c.image_tokens(), 576, "(336 / 14)² patches, CLS dropped");
    assert_eq!(c.image_token_index, 32000);
    // CLIP-L/336 preprocessing: shortest edge 336, 336×336 center crop, CLIP mean/std.
    let p = ClipPreprocess::read(&ModelDir::local(&dir).unwrap(), 336).unwrap();
    assert_eq!((p.shortest_edge, p.crop), (336, (336, 336)));
    assert_eq!(p.mean, CLIP_MEAN);
}

/// The tiny LLaVA as the registry model's template serves it, with the estimator's figure for
/// the tiny checkpoint on the CPU.
fn tiny_llava(dir: &Path) -> ServedModel {
    let info = model_serving::registry::lookup(LLAVA).unwrap();
    let spec = &model_serving::registry::spec(info).unwrap().spec.spec;
    let profile = RunProfile {
        device: model_spec::Device::Cpu,
        ..spec.profile().unwrap().clone()
    };
    let m = estimate_checkpoint(Backend::Llava15, dir, Some(&profile)).unwrap();
    let mut served = ServedModel::registry(LLAVA, dir).unwrap();
    served.key = "tiny-llava".into();
    served
        .map_generate(|o| {
            o.context_tokens(256)
                .memory(GenMemory::from_estimate(&m, 256))
        })
        .unwrap()
}

#[test]
fn the_image_reaches_the_language_model() {
    let dir = model_fixtures::scratch("llava-model");
    decode::write_llava(&dir, 21);
    let (loaded, _) = load_measured_blocking(&tiny_llava(&dir), None).unwrap();
    let model = loaded.as_generator().unwrap();
    assert_eq!(model.image_tokens(), 4, "(28 / 14)² patches");
    let tokens = model
        .encode("USER: <image>\nWhat is shown? ASSISTANT:")
        .unwrap();
    assert_eq!(tokens[0], 1, "<s> first");
    assert_eq!(
        tokens.iter().filter(|&&t| t == LLAVA_IMAGE_TOKEN).count(),
        1
    );
    let logits = |img| {
        model
            .session(64)
            .unwrap()
            .prefill(&tokens, Some(&img), 512)
            .unwrap()
    };
    let red = logits(test_image([255, 0, 0], [255, 255, 255]));
    let red_again = logits(test_image([255, 0, 0], [255, 255, 255]));
    let blue = logits(test_image([0, 0, 255], [255, 255, 255]));
    assert_eq!(red, red_again);
    let d = rel_dist(&red, &blue);
    assert!(d > 1e-3, "the image does not change the answer: {d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_image_through_the_pool() {
    let dir = model_fixtures::scratch("llava-pool");
    decode::write_llava(&dir, 22);
    let config = tiny_llava(&dir);
    let spec = config.pool_spec(0);
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, 4 * GIB)]).unwrap();
    let pool = ModelPool::builder()
        .governor(governor.clone())
        .model(config)
        .build()
        .unwrap();
    let img = || test_image([255, 0, 0], [0, 0, 0]);
    let a = pool
        .describe_image("tiny-llava", img(), "What is shown?")
        .await
        .unwrap();
    assert_eq!(
        a.prompt_tokens(),
        // <s> USER : <image>→4 features, What is shown ? ASSISTANT :
        1 + 2 + 4 + 4 + 2,
        "the placeholder counts as the image's patch features"
    );
    let a = a.collect().await.unwrap();
    let b = pool
        .describe_image_with(
            "tiny-llava",
            img(),
            GenerateRequest::user("What is shown?").max_tokens(a.tokens.len()),
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(a.tokens, b.tokens, "greedy (the card's default) repeats");
    assert!(!a.tokens.is_empty());
    assert_eq!(governor.reserved(DeviceId::Cpu), Some(spec.resident_bytes));
    // Text only works too (no <image> in the prompt, no image given).
    let t = pool
        .generate(
            "tiny-llava",
            GenerateRequest::user("Hello there").max_tokens(4),
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(t.usage.completion_tokens <= 4);
    // An image for a prompt without a placeholder is a caller error, not a silent drop.
    let raw = pool
        .generate("tiny-llava", GenerateRequest::raw("USER: Hello ASSISTANT:"))
        .await;
    assert!(raw.is_ok());
    drop(raw);
    let err = pool
        .describe_image_with(
            "tiny-llava",
            img(),
            GenerateRequest::raw("USER: Hello ASSISTANT:"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("<image> placeholders"), "{err}");
}
