// The twelve generated statics: `ALL`, `by_key`, and the contract every figure obeys.
use model_registry::{ALL, MB, by_key};

fn main() {
    assert_eq!(ALL.len(), 12);
    for model in ALL {
        let found = by_key(model.registry_key).expect("every model is found by its key");
        assert!(std::ptr::eq(found, *model));
        let mb = model.est_memory_allocation_mb;
        assert!(mb > 0 && mb % 100 == 0, "{}: {mb}", model.registry_key);
        assert!(model.est_memory_allocation_bytes() >= model.memory.weights_bytes);
        assert!(model.memory.total_bytes <= mb as u64 * MB);
        assert!(model.fingerprint.starts_with("sha256:"));
    }
    assert!(by_key("sentence-transformers/all-minilm-l6-v2").is_none(), "keys are exact");
}
