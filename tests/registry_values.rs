//! The twelve generated statics carry exactly the values of the spec TOMLs (read here through
//! `model-spec`, independently of the code generator).

use model_registry::{ALL, CandleModelInfo, Device, WeightFormat, by_key};
use model_spec::{Format, Registry};
use workspace_tests::model_cards;

fn device(d: model_spec::Device) -> Device {
    match d {
        model_spec::Device::Cpu => Device::Cpu,
        model_spec::Device::Cuda => Device::Cuda,
        model_spec::Device::Metal => Device::Metal,
    }
}

fn u(v: Option<u64>) -> Option<usize> {
    v.map(|v| usize::try_from(v).unwrap())
}

fn assert_matches_spec(info: &CandleModelInfo, m: &model_spec::RegistryModel) {
    let spec = &m.spec.spec;
    let mem = spec
        .memory
        .as_ref()
        .expect("checked-in specs have [memory]");
    assert_eq!(info.registry_key, m.entry.key.get_ref());
    assert_eq!(info.name, spec.name);
    assert_eq!(info.provider, spec.provider);
    assert_eq!(info.capability.as_str(), spec.capability.as_str());
    assert_eq!(info.license, spec.license.as_deref());
    assert_eq!(Some(info.revision), spec.revision.value.as_str());
    let format = match spec.components[0].format {
        Format::Safetensors => WeightFormat::Safetensors,
        Format::Gguf => WeightFormat::Gguf,
    };
    assert_eq!(info.format, format);
    assert_eq!(info.quantization, m.entry.quantization);
    assert_eq!(
        info.max_input_tokens,
        u(spec.serving_u64("max_input_tokens"))
    );
    assert_eq!(
        info.max_output_tokens,
        u(spec.serving_u64("max_output_tokens"))
    );
    assert_eq!(info.embedding_dim, u(spec.serving_u64("embedding_dim")));

    assert_eq!(
        info.est_memory_allocation_mb,
        usize::try_from(mem.est_memory_allocation_mb).unwrap()
    );
    assert_eq!(info.memory.weights_bytes, mem.weights_bytes);
    assert_eq!(info.memory.kv_cache_bytes, mem.kv_cache_bytes);
    assert_eq!(info.memory.activations_bytes, mem.activations_bytes);
    assert_eq!(info.memory.overhead_bytes, mem.overhead_bytes);
    assert_eq!(info.memory.margin_bytes, mem.margin_bytes);
    assert_eq!(info.memory.total_bytes, mem.total_bytes);
    assert_eq!(info.fingerprint, mem.fingerprint);
    assert_eq!(info.spec_path, format!("model-cards/{}", m.entry.spec));

    let (p, q) = (&info.default_profile, &m.entry.profile);
    assert_eq!(*q, mem.profile, "models.toml and [memory.profile] agree");
    assert_eq!(p.device, device(q.device));
    assert_eq!(p.load_dtype, q.load_dtype.map(|d| d.as_str()));
    assert_eq!(p.activation_dtype, q.activation_dtype.map(|d| d.as_str()));
    assert_eq!(p.kv_dtype, q.kv_dtype.map(|d| d.as_str()));
    assert_eq!(p.batch as u64, q.batch);
    assert_eq!(p.seq_len, u(q.seq_len));
    assert_eq!(p.context_tokens, u(q.context_tokens));
    assert_eq!(p.prompt_tokens, u(q.prompt_tokens));
    assert_eq!(p.image_size, u(q.image_size));
    assert_eq!(p.width, u(q.width));
    assert_eq!(p.height, u(q.height));
    assert_eq!(p.text_tokens, u(q.text_tokens));
    assert_eq!(p.co_resident, q.co_resident);
    assert_eq!(p.dequantize_on_load, q.dequantize_on_load);
    assert_eq!(p.skip_on_load, q.skip_on_load);
    assert_eq!(p.overhead_mb, u(q.overhead_mb));
    assert_eq!(u64::from(p.margin_percent), q.margin_percent);
}

#[test]
fn twelve_statics_equal_the_spec_tomls_in_list_order() {
    let registry = Registry::load(&model_cards()).unwrap();
    assert_eq!(ALL.len(), 12);
    assert_eq!(ALL.len(), registry.models.len());
    for (info, m) in ALL.iter().zip(&registry.models) {
        assert_matches_spec(info, m);
        assert!(std::ptr::eq(by_key(info.registry_key).unwrap(), *info));
    }
}

#[test]
fn named_statics_are_the_ones_in_all() {
    use model_registry as r;
    let named = [
        &r::ALL_MINILM_L6_V2,
        &r::JINA_EMBEDDINGS_V2_BASE_EN,
        &r::CLIP_VIT_BASE_PATCH32,
        &r::STELLA_EN_1_5B_V5,
        &r::GTE_QWEN2_1_5B_INSTRUCT,
        &r::PHI_4,
        &r::LLAVA_1_5_7B_HF,
        &r::NV_EMBED_V2,
        &r::QWEN3_CODER_30B_A3B_INSTRUCT_GGUF,
        &r::STABLE_DIFFUSION_3_5_LARGE_TURBO,
        &r::FLUX_1_SCHNELL,
        &r::KIMI_K2_INSTRUCT_GGUF,
    ];
    for (a, b) in named.iter().zip(ALL) {
        assert!(std::ptr::eq(*a, *b), "{}", a.registry_key);
    }
}
