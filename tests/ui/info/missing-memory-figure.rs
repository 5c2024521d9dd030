// Every field of `CandleModelInfo` is required, `est_memory_allocation_mb` included.
use model_registry::{
    CandleModelInfo, Capability, Device, MemoryBreakdown, RunProfile, ServingFacts, WeightFormat,
};

static MODEL: CandleModelInfo = CandleModelInfo {
    registry_key: "example/no-figure",
    name: "no-figure",
    provider: "example",
    capability: Capability::TextEmbedding,
    license: None,
    revision: "unpinned",
    format: WeightFormat::Safetensors,
    quantization: "F32",
    max_input_tokens: Some(256),
    max_output_tokens: None,
    embedding_dim: Some(384),
    default_profile: RunProfile {
        device: Device::Cpu,
        load_dtype: Some("F32"),
        activation_dtype: None,
        batch: 1,
        seq_len: Some(256),
        context_tokens: None,
        prompt_tokens: None,
        kv_dtype: None,
        image_size: None,
        width: None,
        height: None,
        text_tokens: None,
        co_resident: true,
        dequantize_on_load: &[],
        skip_on_load: &[],
        overhead_mb: None,
        margin_percent: 15,
    },
    memory: MemoryBreakdown {
        weights_bytes: 0,
        kv_cache_bytes: 0,
        activations_bytes: 0,
        overhead_bytes: 0,
        margin_bytes: 0,
        total_bytes: 0,
    },
    fingerprint: "",
    backend: None,
    serving: ServingFacts {
        architecture: "bert",
        pooling: None,
        normalize: None,
        query_instruction: None,
        chat_template: None,
        sampling: None,
        image_size: None,
        default_steps: None,
        max_width: None,
        max_height: None,
    },
    components: &[],
    spec_path: "",
    spec_toml: "",
};

fn main() {
    println!("{}", MODEL.name);
}
