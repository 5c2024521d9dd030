// The all-MiniLM-L6-v2 spec with `num_hidden_layers` changed from 6 to 12 and the [memory]
// table left as it was (gen-memory-specs not rerun).
model_registry::candle_model! {
    pub static MINILM = spec("stale-after-architecture-change.toml");
}

fn main() {}
