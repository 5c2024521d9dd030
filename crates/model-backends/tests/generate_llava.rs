//! LLaVA 1.5 in the llava-hf layout: the real config reads with the 1.5 fields only (where
//! candle's 1.6-shaped struct fails), and a tiny random-weight checkpoint — F16 shards, the
//! llava-hf tensor names, a `tokenizer.json` with `<image>` — describes images through the
//! pool, loaded by the same code as the real model.

mod generate_support;

use generate_support as support;
use model_backends::generate::llava::Config;
use model_backends::generate::{
    Backend, GenMemory, GenerateRequest, GenerativeModel, GeneratorConfig, GeneratorPool,
    estimate_checkpoint,
};
use model_backends::image::ClipPreprocess;
use model_backends::model_dir::ModelDir;
use model_pool::size::GIB;
use model_pool::{DeviceId, MemoryGovernor};

/// `config.json` and `preprocessor_config.json` of llava-hf/llava-1.5-7b-hf.
fn real_config(dir: &std::path::Path) {
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
    let dir = support::scratch("llava-real-config");
    real_config(&dir);
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
    assert_eq!(p.mean, model_backends::image::CLIP_MEAN);
}

fn tiny(dir: &std::path::Path) -> GeneratorConfig {
    let family = "llava-hf/llava-1.5-7b-hf";
    let mut profile = model_backends::registry::specs()
        .unwrap()
        .get(family)
        .unwrap()
        .spec
        .spec
        .profile()
        .unwrap()
        .clone();
    profile.device = model_spec::Device::Cpu;
    let m = estimate_checkpoint(family, Backend::Llava15, dir, Some(&profile)).unwrap();
    let mut c = GeneratorConfig::registry(family, dir).unwrap();
    c.key = "tiny-llava".into();
    c.context_tokens(256)
        .memory(GenMemory::from_estimate(&m, 256))
}

#[test]
fn the_image_reaches_the_language_model() {
    let dir = support::scratch("llava-model");
    support::write_llava(&dir, 21);
    let model = GenerativeModel::load(&tiny(&dir)).unwrap();
    assert_eq!(model.image_tokens(), 4, "(28 / 14)² patches");
    let tokens = model
        .encode("USER: <image>\nWhat is shown? ASSISTANT:")
        .unwrap();
    assert_eq!(tokens[0], 1, "<s> first");
    assert_eq!(
        tokens
            .iter()
            .filter(|&&t| t == support::LLAVA_IMAGE_TOKEN)
            .count(),
        1
    );
    let logits = |img| {
        model
            .session(64)
            .unwrap()
            .prefill(&tokens, Some(&img), 512)
            .unwrap()
    };
    let red = logits(support::test_image([255, 0, 0], [255, 255, 255]));
    let red_again = logits(support::test_image([255, 0, 0], [255, 255, 255]));
    let blue = logits(support::test_image([0, 0, 255], [255, 255, 255]));
    assert_eq!(red, red_again);
    let d = support::rel_dist(&red, &blue);
    assert!(d > 1e-3, "the image does not change the answer: {d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_image_through_the_pool() {
    let dir = support::scratch("llava-pool");
    support::write_llava(&dir, 22);
    let config = tiny(&dir);
    let spec = config.pool_spec();
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, 4 * GIB)]).unwrap();
    let pool = GeneratorPool::builder()
        .governor(governor.clone())
        .model(config)
        .build()
        .unwrap();
    let img = || support::test_image([255, 0, 0], [0, 0, 0]);
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
