// `CandleModelInfo` has no `Default`: a model cannot be made without its memory figure.
fn main() {
    let _ = model_registry::CandleModelInfo::default();
}
