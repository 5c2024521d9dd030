//! Generated artefacts: insta snapshots of the registry's generated code and of
//! MEMORY_SPECS.md, and freshness of everything checked in that generation derives.
//!
//! Snapshots are reviewed, never hand-edited: `cargo insta review` (or `INSTA_UPDATE=always`)
//! after a deliberate change; CI runs with `INSTA_UPDATE=no`.

use model_spec::specgen::{generate, render_memory_specs};
use std::path::Path;
use workspace_tests::{model_cards, workspace_root};

#[test]
fn registry_code_snapshot() {
    let g = build_support::registry::generate(&model_cards());
    assert!(g.diagnostics.is_empty(), "{:#?}", g.diagnostics);
    insta::assert_snapshot!("registry_models_rs", g.source);
}

#[test]
fn memory_specs_md_snapshot() {
    let (_, models) = generate(&model_cards()).unwrap();
    insta::assert_snapshot!("memory_specs_md", render_memory_specs(&models));
}

#[test]
fn the_registry_was_built_from_the_current_cards() {
    // What model-registry's build script wrote (and the crate compiled) is what build-support
    // generates from model-cards now: the rerun-if-changed wiring works.
    let now = build_support::registry::generate(&model_cards()).source;
    assert_eq!(model_registry::GENERATED_SOURCE, now);
}

#[test]
fn checked_in_model_cards_are_fresh() {
    let (files, _) = generate(&model_cards()).unwrap();
    let root = workspace_root();
    let stale: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(&f.path).ok().as_deref() != Some(&f.contents))
        .map(|f| f.path.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(
        stale.is_empty(),
        "{} stale: run `cargo xtask gen-memory-specs` and commit",
        stale.join(", ")
    );
}

/// How a UI-test fixture is made from a checked-in spec.
enum Edit {
    Copy,
    Replace(&'static str, &'static str),
    TruncateAt(&'static str),
}

const MINILM: &str = "text_embedding/all-minilm-l6-v2.toml";
const JINA: &str = "text_embedding/jina-embeddings-v2-base-en.toml";

/// Every spec fixture of `tests/ui/`: a checked-in spec with one mistake made by hand.
const UI_FIXTURES: &[(&str, &str, Edit)] = &[
    ("ui/fixtures/all-minilm-l6-v2.toml", MINILM, Edit::Copy),
    (
        "ui/memory/zero.toml",
        MINILM,
        Edit::Replace(
            "est_memory_allocation_mb = 200\n",
            "est_memory_allocation_mb = 0\n",
        ),
    ),
    (
        "ui/memory/not-multiple-of-100.toml",
        MINILM,
        Edit::Replace(
            "est_memory_allocation_mb = 200\n",
            "est_memory_allocation_mb = 150\n",
        ),
    ),
    (
        "ui/memory/hand-edited-figure.toml",
        MINILM,
        Edit::Replace(
            "est_memory_allocation_mb = 200\n",
            "est_memory_allocation_mb = 300\n",
        ),
    ),
    (
        "ui/memory/below-weights.toml",
        JINA,
        Edit::Replace(
            "est_memory_allocation_mb = 700\n",
            "est_memory_allocation_mb = 500\n",
        ),
    ),
    (
        "ui/memory/stale-after-architecture-change.toml",
        MINILM,
        Edit::Replace(
            "num_hidden_layers = { value = 6,",
            "num_hidden_layers = { value = 12,",
        ),
    ),
    (
        "ui/memory/missing-memory-table.toml",
        MINILM,
        Edit::TruncateAt("# Written by `cargo xtask gen-memory-specs`"),
    ),
    (
        "ui/spec/unknown-capability.toml",
        MINILM,
        Edit::Replace(
            "capability = \"text_embedding\"",
            "capability = \"text_to_speech\"",
        ),
    ),
    (
        "ui/spec/recorded-fact-without-source.toml",
        MINILM,
        Edit::Replace(
            "embedding_dim = { value = 384, provenance = \"recorded\", source = \"model card; 1_Pooling/config.json word_embedding_dimension\" }",
            "embedding_dim = { value = 384, provenance = \"recorded\" }",
        ),
    ),
];

fn make_fixture(spec: &str, edit: &Edit) -> String {
    let text = std::fs::read_to_string(model_cards().join(spec)).unwrap();
    match edit {
        Edit::Copy => text,
        Edit::Replace(from, to) => {
            assert_eq!(text.matches(from).count(), 1, "`{from}` in {spec}");
            text.replacen(from, to, 1)
        }
        Edit::TruncateAt(marker) => text[..text.find(marker).expect(marker)].to_owned(),
    }
}

#[test]
fn ui_fixtures_follow_the_checked_in_specs() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("UPDATE_UI_FIXTURES").is_some();
    let mut stale = Vec::new();
    for (fixture, spec, edit) in UI_FIXTURES {
        let want = make_fixture(spec, edit);
        let path = here.join(fixture);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(&want) {
            if update {
                std::fs::write(&path, want).unwrap();
            } else {
                stale.push(format!("tests/{fixture}"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{} stale: run `UPDATE_UI_FIXTURES=1 cargo test -p workspace-tests --test generated`, \
         then `TRYBUILD=overwrite cargo test -p workspace-tests --test trybuild` and review the diff",
        stale.join(", ")
    );
}
