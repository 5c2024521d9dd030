//! Generates `$OUT_DIR/models.rs` from `model-cards/` through build-support. A refused model
//! becomes a `compile_error!` in that file, so `cargo build` fails with the message.

use std::path::PathBuf;

/// Points the registry at another model-cards folder, by absolute path (default: the
/// workspace's). The edited-cards tests use it to build the registry from a hand-edited copy.
const CARDS_ENV: &str = "MODEL_REGISTRY_CARDS_DIR";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed={CARDS_ENV}");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let cards = std::env::var_os(CARDS_ENV)
        .map_or_else(|| manifest_dir.join("../../model-cards"), PathBuf::from);
    let generated = build_support::registry::generate(&cards);
    for input in &generated.inputs {
        println!("cargo::rerun-if-changed={}", input.display());
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    build_support::registry::stage_sources(&cards, &out_dir)
        .unwrap_or_else(|e| panic!("cannot copy the specs into {}: {e}", out_dir.display()));
    let out = out_dir.join("models.rs");
    std::fs::write(&out, generated.source)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
