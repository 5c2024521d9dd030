// A model declared from a spec file is checked and written exactly like the registry's own:
// declared from a copy of the all-MiniLM-L6-v2 spec, it equals the generated static.
use model_registry::CandleModelInfo;

model_registry::candle_model! {
    /// all-MiniLM-L6-v2, from a copy of its spec.
    pub static MINILM = spec("../fixtures/all-minilm-l6-v2.toml");
}

fn main() {
    let generated = &model_registry::ALL_MINILM_L6_V2;
    assert_eq!(MINILM.spec_path, "../fixtures/all-minilm-l6-v2.toml");
    assert_eq!(
        MINILM,
        CandleModelInfo {
            spec_path: MINILM.spec_path,
            ..*generated
        }
    );
    assert_eq!(MINILM.est_memory_allocation_mb, 200);
}
