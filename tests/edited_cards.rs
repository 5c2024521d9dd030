//! Editing model-cards by hand without rerunning `cargo xtask gen-memory-specs` must fail the
//! registry's build with a message naming the model, the field and the fix.
//!
//! Every case edits a throwaway copy of model-cards and runs the registry's generation path
//! (`build_support::registry::generate`, what `model-registry`'s build script calls); the
//! acceptance cases also run a real `cargo build -p model-registry` on the copy.

use build_support::registry::{GeneratedRegistry, generate};
use std::process::Command;
use workspace_tests::{CardsCopy, model_cards, workspace_root};

const MINILM: &str = "text_embedding/all-minilm-l6-v2.toml";
const MINILM_KEY: &str = "sentence-transformers/all-MiniLM-L6-v2";
const JINA: &str = "text_embedding/jina-embeddings-v2-base-en.toml";
const JINA_KEY: &str = "jinaai/jina-embeddings-v2-base-en";
const FIX: &str = "run `cargo xtask gen-memory-specs`";

/// The one `compile_error!` of the generated module, as the compiler will print it.
fn single_error(g: &GeneratedRegistry) -> String {
    assert_eq!(
        g.diagnostics.len(),
        1,
        "one mistake, one error: {:#?}",
        g.diagnostics
    );
    assert_eq!(
        g.source.matches("compile_error!").count(),
        1,
        "{}",
        g.source
    );
    let msg = g.diagnostics[0].to_string();
    // The message is in the generated code as a string literal.
    let literal = format!("{msg:?}");
    assert!(g.source.contains(&literal), "{}", g.source);
    msg
}

fn assert_names(msg: &str, key: &str, field: &str) {
    assert!(msg.contains(&format!("model `{key}`")), "{msg}");
    assert!(msg.contains(field), "{msg}");
    assert!(msg.contains(FIX), "{msg}");
}

/// Runs `cargo build -p model-registry` on the edited copy and returns its stderr.
///
/// Built without default features: a separate unit in the same target directory, so this
/// reuses the already built dependencies but never replaces the registry the other tests
/// link against.
fn cargo_build_registry(cards: &CardsCopy) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "model-registry",
            "--no-default-features",
        ])
        .env("MODEL_REGISTRY_CARDS_DIR", cards.root())
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the build must fail:\n{stderr}");
    stderr
}

/// `cargo build` fails, and its first error is the one generation predicted.
fn assert_build_fails_with(cards: &CardsCopy, msg: &str) {
    let stderr = cargo_build_registry(cards);
    let first = stderr
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or_default();
    assert_eq!(first, format!("error: {msg}"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        2,
        "the refusal and cargo's `could not compile`, nothing else:\n{stderr}"
    );
}

#[test]
fn unedited_copy_generates_the_registry() {
    let cards = CardsCopy::new();
    let g = generate(cards.root());
    assert!(g.diagnostics.is_empty(), "{:#?}", g.diagnostics);
    assert!(!g.source.contains("compile_error!"));
    assert_eq!(g.source.matches(": crate::CandleModelInfo = ").count(), 12);
    // Messages and paths do not depend on where the cards live.
    assert_eq!(g.source, generate(&model_cards()).source);
    // Every spec is an input of the build script.
    assert_eq!(g.inputs.len(), 13);
    assert!(g.inputs.iter().all(|p| p.starts_with(cards.root())));
}

#[test]
fn zero() {
    let cards = CardsCopy::new();
    cards.edit(
        MINILM,
        "est_memory_allocation_mb = 200",
        "est_memory_allocation_mb = 0",
    );
    let msg = single_error(&generate(cards.root()));
    assert_names(&msg, MINILM_KEY, "est_memory_allocation_mb = 0");
    assert!(msg.contains(&format!("(model-cards/{MINILM}:55)")), "{msg}");
    assert_build_fails_with(&cards, &msg);
}

#[test]
fn not_a_multiple_of_100() {
    let cards = CardsCopy::new();
    cards.edit(
        MINILM,
        "est_memory_allocation_mb = 200",
        "est_memory_allocation_mb = 150",
    );
    let msg = single_error(&generate(cards.root()));
    assert_names(
        &msg,
        MINILM_KEY,
        "est_memory_allocation_mb = 150 is not a multiple of 100",
    );
    assert_build_fails_with(&cards, &msg);
}

#[test]
fn below_its_weights() {
    let cards = CardsCopy::new();
    cards.edit(
        JINA,
        "est_memory_allocation_mb = 700",
        "est_memory_allocation_mb = 500",
    );
    let msg = single_error(&generate(cards.root()));
    assert_names(
        &msg,
        JINA_KEY,
        "est_memory_allocation_mb = 500 is below its weights (524.0 MB as loaded in F32)",
    );
    assert_build_fails_with(&cards, &msg);
}

#[test]
fn architecture_fact_changed() {
    // jina's inventory is derived from its architecture: twice the layers, more weights than
    // the recorded figure covers.
    let cards = CardsCopy::new();
    cards.edit(
        JINA,
        "num_hidden_layers = { value = 12,",
        "num_hidden_layers = { value = 24,",
    );
    let msg = single_error(&generate(cards.root()));
    assert_names(&msg, JINA_KEY, "est_memory_allocation_mb = 700 is stale");
    assert!(
        msg.contains(
            "the estimate for these facts is 1200 MB, and the weights alone are now 956.3 MB as \
             loaded in F32"
        ),
        "{msg}"
    );
    assert_build_fails_with(&cards, &msg);
}

#[test]
fn architecture_fact_changed_without_changing_the_figure() {
    // all-MiniLM-L6-v2's inventory is recorded from its header, so a layer count edit leaves
    // the figure at 200 MB; the fingerprint still catches it.
    let cards = CardsCopy::new();
    cards.edit(
        MINILM,
        "num_hidden_layers = { value = 6,",
        "num_hidden_layers = { value = 12,",
    );
    let msg = single_error(&generate(cards.root()));
    assert_names(&msg, MINILM_KEY, "est_memory_allocation_mb = 200 is stale");
    assert!(msg.contains("the figure stays 200 MB"), "{msg}");
}

#[test]
fn memory_table_removed() {
    let cards = CardsCopy::new();
    cards.truncate_at(MINILM, "# Written by `cargo xtask gen-memory-specs`");
    let msg = single_error(&generate(cards.root()));
    assert_names(&msg, MINILM_KEY, "est_memory_allocation_mb is missing");
}

#[test]
fn run_profile_changed_in_models_toml() {
    let cards = CardsCopy::new();
    cards.edit(
        "models.toml",
        "profile = { device = \"cpu\", load_dtype = \"F32\", batch = 1, seq_len = 256 }",
        "profile = { device = \"cpu\", load_dtype = \"F32\", batch = 1, seq_len = 128 }",
    );
    let msg = single_error(&generate(cards.root()));
    assert_names(&msg, MINILM_KEY, "est_memory_allocation_mb = 200 is stale");
    assert!(
        msg.contains("models.toml now says `cpu f32 batch 1 × 128 tok`"),
        "{msg}"
    );
}

#[test]
fn duplicate_registry_key() {
    let cards = CardsCopy::new();
    cards.append(
        "models.toml",
        r#"
[[model]]
key = "microsoft/phi-4"
capability = "text_to_text"
spec = "text_to_text/phi-4.toml"
format = "gguf"
quantization = "Q4_K_M"
files = ["phi-4-Q4_K_M.gguf"]
profile = { device = "cpu", batch = 1, context_tokens = 4096, prompt_tokens = 512, kv_dtype = "F32" }
"#,
    );
    let g = generate(cards.root());
    let msg = single_error(&g);
    assert!(msg.starts_with("model-cards/models.toml:"), "{msg}");
    assert!(
        msg.contains("duplicate registry key `microsoft/phi-4`"),
        "{msg}"
    );
    // The rest of the crate still resolves: one mistake, one error.
    assert!(g.source.contains("pub static ALL"));
    assert!(g.source.contains("pub fn by_key"));
}

#[test]
fn invalid_spec_names_file_and_line() {
    let cards = CardsCopy::new();
    cards.edit(
        JINA,
        "capability = \"text_embedding\"",
        "capability = \"text_to_speech\"",
    );
    let msg = single_error(&generate(cards.root()));
    assert!(
        msg.starts_with(&format!(
            "model-cards/{JINA}:10: field `capability`: unknown variant `text_to_speech`"
        )),
        "{msg}"
    );
}
