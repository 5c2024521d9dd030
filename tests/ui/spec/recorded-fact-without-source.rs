// The all-MiniLM-L6-v2 spec with a `recorded` serving fact that does not name its source:
// validation fails, and the error names the file and the line.
model_registry::candle_model! {
    pub static MINILM = spec("recorded-fact-without-source.toml");
}

fn main() {}
