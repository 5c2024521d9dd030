// The all-MiniLM-L6-v2 spec with `capability = "text_to_speech"`.
model_registry::candle_model! {
    pub static MINILM = spec("unknown-capability.toml");
}

fn main() {}
