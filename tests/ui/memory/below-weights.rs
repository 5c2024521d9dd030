// The jina-embeddings-v2-base-en spec with `est_memory_allocation_mb = 500`: its F16 weights
// are loaded as F32 (524 MB).
model_registry::candle_model! {
    pub static JINA = spec("below-weights.toml");
}

fn main() {}
