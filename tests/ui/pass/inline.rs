// A model declared with its spec inline: all-MiniLM-L6-v2's facts under another key, with the
// [memory] table gen-memory-specs computed for them.
use model_registry::{Capability, Device, WeightFormat};

model_registry::candle_model! {
    pub static INLINE_MINILM = toml(r#"
schema_version = 1
registry_key = "example/inline-minilm"
name = "inline-minilm"
provider = "example"
capability = "text_embedding"
revision = { value = "unpinned", provenance = "recorded", source = "example" }

[serving]
max_input_tokens = { value = 256, provenance = "recorded", source = "model card" }
embedding_dim = { value = 384, provenance = "recorded", source = "model card" }
pooling = { value = "mean", provenance = "recorded", source = "1_Pooling/config.json" }
normalize = { value = true, provenance = "recorded", source = "modules.json" }
tokenizer_json_bytes = { value = 466247, provenance = "recorded", source = "file listing" }

[[component]]
name = "model"
family = "bert"
format = "safetensors"
files = ["model.safetensors"]

[component.architecture]
model_type = { value = "bert", provenance = "recorded", source = "config.json" }
hidden_size = { value = 384, provenance = "recorded", source = "config.json" }
num_hidden_layers = { value = 6, provenance = "recorded", source = "config.json" }
num_attention_heads = { value = 12, provenance = "recorded", source = "config.json" }
head_dim = { value = 32, provenance = "derived", formula = "hidden_size / num_attention_heads" }
intermediate_size = { value = 1536, provenance = "recorded", source = "config.json" }
vocab_size = { value = 30522, provenance = "recorded", source = "config.json" }
max_position_embeddings = { value = 512, provenance = "recorded", source = "config.json" }
type_vocab_size = { value = 2, provenance = "recorded", source = "config.json" }
hidden_act = { value = "gelu", provenance = "recorded", source = "config.json" }
layer_norm_eps = { value = 1e-12, provenance = "recorded", source = "config.json" }
storage_dtype = { value = "F32", provenance = "recorded", source = "model.safetensors header" }
stores_position_ids = { value = true, provenance = "recorded", source = "model.safetensors header" }
has_pooler = { value = true, provenance = "recorded", source = "model.safetensors header" }

[component.weights]
provenance = "recorded"
source = "model.safetensors header"
inventory = [
  { dtype = "F32", tensors = 103, params = 22713216, bytes = 90852864 },
  { dtype = "I64", tensors = 1, params = 512, bytes = 4096 },
]

[memory]
activations_bytes = 11010048
est_memory_allocation_mb = 200
fingerprint = "sha256:cef548fcc17aaae3b50b8fe4f0587217"
kv_cache_bytes = 0
margin_bytes = 17097839
overhead_bytes = 12118584
total_bytes = 131083431
weights_bytes = 90856960

[memory.profile]
batch = 1
co_resident = true
device = "cpu"
load_dtype = "F32"
margin_percent = 15
seq_len = 256
"#);
}

fn main() {
    assert_eq!(INLINE_MINILM.registry_key, "example/inline-minilm");
    assert_eq!(INLINE_MINILM.capability, Capability::TextEmbedding);
    assert_eq!(INLINE_MINILM.format, WeightFormat::Safetensors);
    assert_eq!(INLINE_MINILM.quantization, "F32");
    assert_eq!(INLINE_MINILM.est_memory_allocation_mb, 200);
    assert_eq!(INLINE_MINILM.default_profile.device, Device::Cpu);
    assert_eq!(INLINE_MINILM.default_profile.seq_len, Some(256));
    assert_eq!(INLINE_MINILM.embedding_dim, Some(384));
    assert_eq!(INLINE_MINILM.spec_path, "inline spec of `INLINE_MINILM`");
    // Same facts, same figure as the registry's own all-MiniLM-L6-v2.
    assert_eq!(INLINE_MINILM.memory, model_registry::ALL_MINILM_L6_V2.memory);
}
