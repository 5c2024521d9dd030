// A refused declaration still declares its static, so code that uses it reports nothing
// more than the one mistake.
model_registry::candle_model! {
    pub static MINILM = spec("../memory/zero.toml");
}

fn main() {
    let info: &model_registry::CandleModelInfo = &MINILM;
    println!("{}", info.est_memory_allocation_mb);
}
