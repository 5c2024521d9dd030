// The all-MiniLM-L6-v2 spec with `est_memory_allocation_mb = 150`.
model_registry::candle_model! {
    pub static MINILM = spec("not-multiple-of-100.toml");
}

fn main() {}
