//! Bad input gives an error naming the file, the line and the field — never a panic.

mod common;

use model_spec::{SpecError, parse_list, parse_spec};
use std::path::Path;

fn minilm_text() -> String {
    std::fs::read_to_string(common::cards_dir().join("text_embedding/all-minilm-l6-v2.toml"))
        .unwrap()
}

fn list_text() -> String {
    std::fs::read_to_string(common::cards_dir().join("models.toml")).unwrap()
}

fn spec_err(text: &str) -> SpecError {
    parse_spec(Path::new("model-cards/text_embedding/x.toml"), text).expect_err("must be rejected")
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

#[test]
fn unknown_capability_names_file_line_and_field() {
    let text = minilm_text().replace(
        "capability = \"text_embedding\"",
        "capability = \"text_embeding\"",
    );
    let e = spec_err(&text);
    assert_eq!(e.file, Path::new("model-cards/text_embedding/x.toml"));
    assert_eq!(e.line, Some(line_of(&text, "text_embeding")));
    assert_eq!(e.field, "capability");
    assert!(
        e.message.contains("text_embeding") && e.message.contains("text_to_image"),
        "{e}"
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!(
            "model-cards/text_embedding/x.toml:{}: field `capability`",
            e.line.unwrap()
        )),
        "{shown}"
    );
}

#[test]
fn missing_architecture_value_is_named_with_its_component() {
    let text: String = minilm_text()
        .lines()
        .filter(|l| !l.starts_with("hidden_size ="))
        .map(|l| format!("{l}\n"))
        .collect();
    let e = spec_err(&text);
    assert_eq!(e.field, "component[0].architecture.hidden_size");
    assert!(
        e.message.contains("`hidden_size`") && e.message.contains("bert"),
        "{e}"
    );
    assert_eq!(e.line, Some(line_of(&text, "name = \"model\"")));
    assert!(e.fix.as_deref().unwrap_or("").contains("hidden_size"));
}

#[test]
fn bad_repo_ids_are_rejected() {
    for bad in [
        "../x",
        "a/b/c",
        "noslash",
        "owner/",
        "/name",
        "own er/name",
        "owner/..",
    ] {
        let text = minilm_text().replace(
            "registry_key = \"sentence-transformers/all-MiniLM-L6-v2\"",
            &format!("registry_key = \"{bad}\""),
        );
        let e = spec_err(&text);
        assert_eq!(e.field, "registry_key", "{bad}: {e}");
        assert_eq!(e.line, Some(line_of(&text, "registry_key =")), "{bad}");
        assert!(e.message.contains("owner/name"), "{bad}: {e}");

        let list = list_text().replace(
            "key = \"openai/clip-vit-base-patch32\"",
            &format!("key = \"{bad}\""),
        );
        let e = parse_list(Path::new("model-cards/models.toml"), &list).expect_err(bad);
        assert!(e.field.ends_with(".key"), "{bad}: {e}");
        assert_eq!(e.line, Some(line_of(&list, &format!("key = \"{bad}\""))));
    }
}

#[test]
fn duplicate_registry_key_in_the_list_names_both_lines() {
    let list = list_text().replace(
        "key = \"openai/clip-vit-base-patch32\"",
        "key = \"sentence-transformers/all-MiniLM-L6-v2\"",
    );
    let e = parse_list(Path::new("model-cards/models.toml"), &list).expect_err("duplicate");
    let first = line_of(&list, "key = \"sentence-transformers/all-MiniLM-L6-v2\"");
    assert!(
        e.message.contains("duplicate registry key")
            && e.message.contains(&format!("line {first}")),
        "{e}"
    );
    assert_eq!(e.field, "model[2].key");
    assert!(e.line.unwrap() > first);
}

#[test]
fn inventory_bytes_that_do_not_match_the_dtype_are_rejected() {
    let text = minilm_text().replace("bytes = 90852864", "bytes = 90852865");
    let e = spec_err(&text);
    assert_eq!(e.field, "component[0].weights.inventory[0].bytes");
    assert!(e.message.contains("90852864"), "{e}");
    assert_eq!(e.line, Some(line_of(&text, "bytes = 90852865")));
}

#[test]
fn a_recorded_fact_without_source_is_rejected() {
    let text = minilm_text().replacen(
        "hidden_size = { value = 384, provenance = \"recorded\", source = ",
        "hidden_size = { value = 384, provenance = \"recorded\", formula = ",
        1,
    );
    let e = spec_err(&text);
    assert_eq!(e.field, "component[0].architecture.hidden_size");
    assert!(e.message.contains("source"), "{e}");
    assert_eq!(e.line, Some(line_of(&text, "hidden_size = {")));
}

#[test]
fn unknown_and_misspelt_fields_are_named() {
    let text = minilm_text().replace("provider = ", "provder = ");
    let e = spec_err(&text);
    assert_eq!(e.field, "provder");
    assert!(e.line.is_some());
}

#[test]
fn toml_syntax_errors_are_located() {
    let text = minilm_text().replace(
        "num_hidden_layers = { value = 6,",
        "num_hidden_layers = { value = 6,,",
    );
    let e = spec_err(&text);
    assert_eq!(e.line, Some(line_of(&text, "value = 6,,")));
}

#[test]
fn a_wrong_type_names_the_key_on_its_line() {
    let text = minilm_text().replace("schema_version = 1", "schema_version = \"one\"");
    let e = spec_err(&text);
    assert_eq!(e.field, "schema_version");
    assert_eq!(e.line, Some(line_of(&text, "schema_version")));
}

#[test]
fn no_prefix_or_byte_corruption_of_a_spec_panics() {
    let text = minilm_text();
    let bytes = text.as_bytes();
    // Every prefix, and the text with each of a spread of bytes replaced by a quote/bracket.
    for cut in (0..bytes.len()).step_by(7) {
        if let Ok(prefix) = std::str::from_utf8(&bytes[..cut]) {
            let _ = parse_spec(Path::new("x.toml"), prefix);
        }
    }
    for (i, junk) in (0..bytes.len())
        .step_by(13)
        .zip(["\"", "[", "]", "=", "{", "\n"].iter().cycle())
    {
        let mut b = bytes.to_vec();
        b[i] = junk.as_bytes()[0];
        if let Ok(t) = String::from_utf8(b) {
            let _ = parse_spec(Path::new("x.toml"), &t);
        }
    }
}
