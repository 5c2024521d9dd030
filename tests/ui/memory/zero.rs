// The all-MiniLM-L6-v2 spec with `est_memory_allocation_mb = 0`.
model_registry::candle_model! {
    pub static MINILM = spec("zero.toml");
}

fn main() {}
