// Two statics declared from specs with the same registry key.
model_registry::candle_model! {
    pub static FIRST = spec("../fixtures/all-minilm-l6-v2.toml");
    pub static SECOND = spec("../fixtures/all-minilm-l6-v2.toml");
}

fn main() {}
