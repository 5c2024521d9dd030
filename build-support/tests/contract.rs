//! The compile-time contract on real specs edited by hand, one rule per test.

use build_support::check::{Diagnostic, Origin, check_memory, check_unique_keys};
use model_spec::{LoadedSpec, parse_spec};
use std::path::{Path, PathBuf};

const MINILM: &str = "text_embedding/all-minilm-l6-v2.toml";
const MINILM_KEY: &str = "sentence-transformers/all-MiniLM-L6-v2";
const JINA: &str = "text_embedding/jina-embeddings-v2-base-en.toml";

fn cards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model-cards")
}

fn text(spec: &str) -> String {
    std::fs::read_to_string(cards().join(spec)).unwrap()
}

/// `text` with the one occurrence of `from` replaced by `to`.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "`{from}` must occur once");
    text.replace(from, to)
}

fn parse(spec: &str, text: &str) -> LoadedSpec {
    parse_spec(Path::new(&format!("model-cards/{spec}")), text).unwrap()
}

fn refusal(spec: &str, text: &str) -> Diagnostic {
    let loaded = parse(spec, text);
    let origin = Origin::File(format!("model-cards/{spec}"));
    check_memory(&loaded, &origin, None).expect_err("the edited spec must be refused")
}

/// What every memory refusal must say: the model, the field and the fix.
fn assert_names_model_field_fix(d: &Diagnostic, key: &str) {
    let msg = d.to_string();
    assert_eq!(d.model.as_deref(), Some(key), "{msg}");
    assert!(msg.contains(&format!("model `{key}`")), "{msg}");
    assert!(msg.contains("est_memory_allocation_mb"), "{msg}");
    assert!(msg.contains("run `cargo xtask gen-memory-specs`"), "{msg}");
}

#[test]
fn checked_in_specs_pass() {
    for spec in [MINILM, JINA] {
        let loaded = parse(spec, &text(spec));
        let origin = Origin::File(spec.into());
        let memory = check_memory(&loaded, &origin, None).unwrap();
        assert!(memory.est_memory_allocation_mb >= 100);
    }
}

#[test]
fn missing_memory_table() {
    let t = text(MINILM);
    let cut = t
        .find("# Written by `cargo xtask gen-memory-specs`")
        .unwrap();
    let d = refusal(MINILM, &t[..cut]);
    assert_names_model_field_fix(&d, MINILM_KEY);
    assert!(d.message.contains("no [memory] table"), "{d}");
    assert_eq!(d.location, format!("model-cards/{MINILM}"));
}

#[test]
fn zero() {
    let t = edit(
        &text(MINILM),
        "est_memory_allocation_mb = 200",
        "est_memory_allocation_mb = 0",
    );
    let d = refusal(MINILM, &t);
    assert_names_model_field_fix(&d, MINILM_KEY);
    assert_eq!(d.field, "est_memory_allocation_mb");
    assert!(d.message.contains("= 0"), "{d}");
    assert!(
        d.message.contains("the estimate for these facts is 200 MB"),
        "{d}"
    );
    let line = t
        .lines()
        .position(|l| l.starts_with("est_memory_allocation_mb"))
        .unwrap()
        + 1;
    assert_eq!(d.location, format!("model-cards/{MINILM}:{line}"));
}

#[test]
fn not_a_multiple_of_100() {
    let t = edit(
        &text(MINILM),
        "est_memory_allocation_mb = 200",
        "est_memory_allocation_mb = 150",
    );
    let d = refusal(MINILM, &t);
    assert_names_model_field_fix(&d, MINILM_KEY);
    assert!(d.message.contains("= 150 is not a multiple of 100"), "{d}");
}

#[test]
fn below_the_weights_as_loaded() {
    // jina's F16 file is loaded as F32: 524 MB of weights.
    let t = edit(
        &text(JINA),
        "est_memory_allocation_mb = 700",
        "est_memory_allocation_mb = 500",
    );
    let d = refusal(JINA, &t);
    assert_names_model_field_fix(&d, "jinaai/jina-embeddings-v2-base-en");
    assert!(
        d.message
            .contains("= 500 is below its weights (524.0 MB as loaded in F32)"),
        "{d}"
    );
}

#[test]
fn stale_after_an_architecture_fact_changed() {
    let t = edit(
        &text(MINILM),
        "num_hidden_layers = { value = 6,",
        "num_hidden_layers = { value = 12,",
    );
    let d = refusal(MINILM, &t);
    assert_names_model_field_fix(&d, MINILM_KEY);
    assert_eq!(d.field, "memory.fingerprint");
    assert!(
        d.message
            .contains("est_memory_allocation_mb = 200 is stale"),
        "{d}"
    );
}

#[test]
fn stale_after_a_serving_fact_changed() {
    let t = edit(
        &text(MINILM),
        "tokenizer_json_bytes = { value = 466247,",
        "tokenizer_json_bytes = { value = 46624700,",
    );
    let d = refusal(MINILM, &t);
    assert_names_model_field_fix(&d, MINILM_KEY);
    assert!(d.message.contains("is stale"), "{d}");
    // The expected figure is recomputed from the new facts.
    assert!(!d.message.contains("is 200 MB"), "{d}");
}

#[test]
fn figure_edited_to_another_multiple_of_100() {
    let t = edit(
        &text(MINILM),
        "est_memory_allocation_mb = 200",
        "est_memory_allocation_mb = 300",
    );
    let d = refusal(MINILM, &t);
    assert_names_model_field_fix(&d, MINILM_KEY);
    assert!(
        d.message
            .contains("= 300 does not match the estimate for these facts (200 MB)"),
        "{d}"
    );
}

#[test]
fn part_of_the_breakdown_edited() {
    let t = edit(
        &text(MINILM),
        "weights_bytes = 90856960",
        "weights_bytes = 1",
    );
    let d = refusal(MINILM, &t);
    assert_names_model_field_fix(&d, MINILM_KEY);
    assert_eq!(d.field, "memory.weights_bytes");
}

#[test]
fn duplicate_registry_keys() {
    let found = check_unique_keys(&[
        ("x/one", "a.toml:2".into()),
        ("x/two", "b.toml:3".into()),
        ("x/one", "c.toml:4".into()),
    ]);
    assert_eq!(found.len(), 1);
    let (index, d) = &found[0];
    assert_eq!(*index, 2);
    assert_eq!(
        d.to_string(),
        "c.toml:4: field `registry_key`: duplicate registry key `x/one`, already declared by \
         a.toml:2; each model appears once; remove or rename one"
    );
}

#[test]
fn invalid_spec_names_file_and_line() {
    let t = edit(
        &text(MINILM),
        "capability = \"text_embedding\"",
        "capability = \"text_to_speech\"",
    );
    let path = format!("model-cards/{MINILM}");
    let e = parse_spec(Path::new(&path), &t).unwrap_err();
    let d = Diagnostic::from_spec_error(&e, &Origin::File(path.clone()));
    let line = t.lines().position(|l| l.starts_with("capability")).unwrap() + 1;
    assert!(
        d.to_string().starts_with(&format!(
            "{path}:{line}: field `capability`: unknown variant"
        )),
        "{d}"
    );
}
