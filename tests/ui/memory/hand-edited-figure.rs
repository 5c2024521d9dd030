// The all-MiniLM-L6-v2 spec with `est_memory_allocation_mb = 300`: a valid-looking figure
// that is not what the estimator computes for these facts.
model_registry::candle_model! {
    pub static MINILM = spec("hand-edited-figure.toml");
}

fn main() {}
