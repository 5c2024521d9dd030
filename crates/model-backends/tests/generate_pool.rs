//! Generation through the pool with tiny random-weight GGUFs: determinism, streaming and
//! cancellation (the lease and the KV reservation come back), context limits, stop strings,
//! per-request KV caches under concurrency, the shared governor, and the refusals of Kimi K2.

mod generate_support;

use std::path::Path;
use std::time::Duration;

use generate_support::{self as support, Geometry};
use model_backends::generate::{
    Backend, ChatTemplate, FinishReason, GenMemory, GenerateError, GenerateRequest,
    GeneratorConfig, GeneratorPool, SamplingParams, estimate_checkpoint,
};
use model_pool::size::GIB;
use model_pool::{DeviceId, MemoryGovernor, PoolError};

/// A tiny checkpoint of a registry family, declaring the estimator's figure for it.
fn tiny(key: &str, family: &str, path: &Path) -> GeneratorConfig {
    let backend = Backend::for_architecture(match family {
        "microsoft/phi-4" => "phi3",
        _ => "qwen3moe",
    })
    .unwrap();
    let m = estimate_checkpoint(family, backend, path, None).unwrap();
    let mut c = GeneratorConfig::registry(family, path).unwrap();
    c.key = key.to_owned();
    // The estimate's context is capped at the tiny model's 512 positions.
    c.context_tokens(512)
        .memory(GenMemory::from_estimate(&m, 512))
}

fn phi3(name: &str) -> GeneratorConfig {
    let path = support::scratch(name).join("tiny-phi3.gguf");
    support::write_phi3(&path, &Geometry::phi3(), 11);
    tiny(name, "microsoft/phi-4", &path)
}

fn qwen(name: &str) -> GeneratorConfig {
    let path = support::scratch(name).join("tiny-qwen3moe.gguf");
    support::write_qwen3moe(&path, &Geometry::qwen3moe(), 12);
    tiny(name, "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF", &path)
}

fn pool(budget: u64, models: Vec<GeneratorConfig>) -> GeneratorPool {
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, budget)]).unwrap();
    GeneratorPool::builder()
        .governor(governor)
        .models(models)
        .build()
        .unwrap()
}

async fn text(
    pool: &GeneratorPool,
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
    let qwen_defaults = p.config("qwen").unwrap().sampling.clone();
    assert_eq!(
        qwen_defaults,
        SamplingParams::qwen3_coder(),
        "the registry config carries the card's sampling"
    );
    assert_eq!(p.config("phi").unwrap().template, Some(ChatTemplate::Phi4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_cancels_and_returns_the_lease_and_kv_memory() {
    let config = phi3("cancel");
    let spec = config.pool_spec();
    let p = pool(4 * GIB, vec![config]);
    let g = p.governor().clone();

    let mut stream = p
        .generate(
            "cancel",
            GenerateRequest::user("the answer is")
                .greedy()
                .max_tokens(400),
        )
        .await
        .unwrap();
    stream.next_token().await.unwrap().unwrap();
    assert_eq!(
        g.reserved(DeviceId::Cpu),
        Some(spec.resident_bytes + spec.per_request_bytes),
        "weights + one request's KV cache and prefill are reserved while it streams"
    );
    assert_eq!(p.status().model("cancel").unwrap().leases, 1);
    drop(stream);
    let mut waited = Duration::ZERO;
    while g.reserved(DeviceId::Cpu) != Some(spec.resident_bytes) {
        assert!(
            waited < Duration::from_secs(10),
            "the request's memory never came back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        waited += Duration::from_millis(5);
    }
    assert_eq!(p.status().model("cancel").unwrap().leases, 0);

    // `cancel` returns once everything is released.
    let mut stream = p
        .generate(
            "cancel",
            GenerateRequest::user("the answer is")
                .greedy()
                .max_tokens(400),
        )
        .await
        .unwrap();
    stream.next_token().await.unwrap().unwrap();
    stream.cancel().await;
    assert_eq!(g.reserved(DeviceId::Cpu), Some(spec.resident_bytes));

    // A stream read to its end has released everything by then too.
    let done = p
        .generate(
            "cancel",
            GenerateRequest::user("the answer is")
                .greedy()
                .max_tokens(5),
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(done.usage.completion_tokens, 5);
    assert_eq!(g.reserved(DeviceId::Cpu), Some(spec.resident_bytes));
    assert_eq!(
        done.usage.kv_bytes,
        Some(2 * 2 * 2 * 64 * 4 * (done.usage.prompt_tokens + 5) as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_plus_output_is_checked_against_the_model_and_the_reserved_context() {
    let short = phi3("short").context_tokens(64);
    let long = phi3("long").context_tokens(4096);
    let p = pool(4 * GIB, vec![short, long]);
    let req = || GenerateRequest::user("the answer is in there");
    match p
        .generate("short", req().max_tokens(100))
        .await
        .unwrap_err()
    {
        GenerateError::ContextTooLong {
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
        GenerateError::ContextTooLong {
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
    assert!(
        matches!(err, GenerateError::InvalidRequest { .. }),
        "{err:?}"
    );
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
    let p = GeneratorPool::builder()
        .model(phi3("global"))
        .build()
        .unwrap();
    assert!(p.governor().same_as(MemoryGovernor::global().unwrap()));
    let embedders = model_backends::EmbeddingPool::builder().build().unwrap();
    assert!(embedders.pool().governor().same_as(p.governor()));
    let err = p
        .describe_image(
            "global",
            support::test_image([255, 0, 0], [0, 0, 255]),
            "What is shown?",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GenerateError::Unsupported { .. }), "{err:?}");
    let err = p
        .generate("nope", GenerateRequest::user("hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, GenerateError::Pool(PoolError::UnknownModel { .. })),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kimi_k2_is_refused_by_type_never_loaded() {
    let kimi = "unsloth/Kimi-K2-Instruct-GGUF";
    let config =
        GeneratorConfig::registry(kimi, "Q4_K_M/Kimi-K2-Instruct-Q4_K_M-00001-of-00013.gguf")
            .unwrap();
    let need = config.need_bytes();
    let registry = model_registry::by_key(kimi).unwrap().memory;
    // The KV cache is reserved per token of context: up to a byte per token is rounded off.
    assert!(
        need.abs_diff(registry.total_bytes) <= config.context_tokens as u64 + 2,
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
        GenerateError::Pool(PoolError::NeverFits {
            need: n,
            budget,
            device,
            ..
        }) => {
            assert_eq!((n.0, budget.0, device), (need, 24 * GIB, DeviceId::Cpu));
        }
        other => panic!("{other:?}"),
    }
    // 1 TiB: it would fit, but no backend runs deepseek2.
    let large = pool(2048 * GIB, vec![config]);
    let err = large
        .generate(kimi, GenerateRequest::user("hi"))
        .await
        .unwrap_err();
    match &err {
        GenerateError::NoBackend {
            architecture,
            need: n,
            budget,
            ..
        } => {
            assert_eq!(
                (architecture.as_str(), n.0, budget.0),
                ("deepseek2", need, 2048 * GIB)
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

#[test]
fn the_cli_streams_an_answer_and_explains_a_refusal() {
    let path = support::scratch("cli").join("tiny-phi3.gguf");
    support::write_phi3(&path, &Geometry::phi3(), 13);
    let cli = |budget: &str, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_candle-pool"))
            .arg("generate")
            .args(args)
            .env("MODEL_POOL_BUDGET", budget)
            .output()
            .unwrap()
    };
    let weights = path.to_str().unwrap();
    let args = [
        "--model",
        "tiny",
        "--arch",
        "phi3",
        "--weights",
        weights,
        "--max-tokens",
        "6",
        "--temperature",
        "0",
        "the",
        "answer",
    ];
    let a = cli("4GiB", &args);
    let stderr = String::from_utf8_lossy(&a.stderr);
    assert!(a.status.success(), "{stderr}");
    assert!(stderr.contains("new tokens"), "{stderr}");
    let b = cli("4GiB", &args);
    assert_eq!(a.stdout, b.stdout, "greedy from the command line repeats");

    let kimi = [
        "--model",
        "unsloth/Kimi-K2-Instruct-GGUF",
        "--weights",
        "Kimi-K2-Instruct-Q4_K_M-00001-of-00013.gguf",
        "hi",
    ];
    let small = cli("24GiB", &kimi);
    assert!(!small.status.success());
    assert!(
        String::from_utf8_lossy(&small.stderr).contains("can never fit"),
        "{small:?}"
    );
    let large = cli("2TiB", &kimi);
    assert!(!large.status.success());
    assert!(
        String::from_utf8_lossy(&large.stderr).contains("no backend for architecture deepseek2"),
        "{large:?}"
    );
}
