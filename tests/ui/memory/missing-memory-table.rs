// The all-MiniLM-L6-v2 spec without the [memory] table gen-memory-specs writes.
model_registry::candle_model! {
    pub static MINILM = spec("missing-memory-table.toml");
}

fn main() {}
