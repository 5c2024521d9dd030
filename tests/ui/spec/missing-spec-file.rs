// A spec path that does not exist (paths are relative to this file's directory).
model_registry::candle_model! {
    pub static MISSING = spec("no-such-spec.toml");
}

fn main() {}
