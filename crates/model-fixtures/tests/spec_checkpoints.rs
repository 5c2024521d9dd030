//! Checkpoints written from a registry spec read back as that spec: the loaders' config
//! readers recover every architecture value, and the weight files hold the derived inventory.

use model_fixtures::spec_checkpoint::{self, Geometry};
use model_serving::checkpoint::checkpoint_spec;

/// Every served registry model stored as safetensors.
fn safetensors_models() -> Vec<&'static model_registry::CandleModelInfo> {
    model_registry::ALL
        .iter()
        .copied()
        .filter(|m| m.backend.is_some() && m.format == model_registry::WeightFormat::Safetensors)
        .collect()
}

#[test]
fn a_tiny_checkpoint_of_every_safetensors_model_reads_back_as_its_geometry() {
    let models = safetensors_models();
    assert_eq!(
        models.len(),
        9,
        "{:?}",
        models.iter().map(|m| m.registry_key).collect::<Vec<_>>()
    );
    for info in models {
        let key = info.registry_key;
        let dir = model_fixtures::scratch("spec-checkpoint");
        let geometry = Geometry::tiny_of(key).unwrap();
        let written = spec_checkpoint::write(&dir, key, &geometry, 3)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(
            written.tensors > 0 && written.bytes < 50 << 20,
            "{key}: {written:?}"
        );

        let (read, _) = checkpoint_spec(info.backend.unwrap(), &dir, None)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let wanted = geometry.spec_components(key).unwrap();
        for c in &read.components {
            let w = wanted.iter().find(|w| w.name == c.name).unwrap();
            for (k, fact) in &c.architecture {
                let Some(got) = fact.get_ref().value.as_integer() else {
                    continue;
                };
                if spec_checkpoint::TOKENIZER_VALUES.contains(&k.as_str()) {
                    continue;
                }
                if let Some(want) = w.arch_u64(k) {
                    assert_eq!(got as u64, want, "{key} component {} `{k}`", c.name);
                }
            }
            let derived: u64 = model_spec::shapes::derive(w)
                .unwrap()
                .iter()
                .map(|t| t.bytes())
                .sum();
            let read_bytes: u64 = c.weights.inventory.iter().map(|r| r.bytes).sum();
            assert_eq!(read_bytes, derived, "{key} component {}", c.name);
        }
    }
}

#[test]
fn geometries_name_their_model_and_refuse_gguf_generators() {
    let err = Geometry::tiny_of("microsoft/phi-4")
        .unwrap_err()
        .to_string();
    assert!(err.contains("GGUF"), "{err}");
    let err = Geometry::tiny_of("no/such-model").unwrap_err().to_string();
    assert!(err.contains("no/such-model"), "{err}");
}
