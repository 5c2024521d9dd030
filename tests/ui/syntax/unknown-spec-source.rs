// Specs come from `spec("file.toml")` or `toml("…")`, nothing else.
model_registry::candle_model! {
    pub static MINILM = yaml("minilm.yaml");
}

fn main() {}
