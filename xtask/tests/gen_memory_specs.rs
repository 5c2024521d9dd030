//! `cargo xtask gen-memory-specs` end to end: `--check` on the checked-in cards, stale
//! detection, regeneration, idempotence and all-or-nothing writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model-cards")
}

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("run xtask")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn temp_cards(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gen-memory-specs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&cards(), &dir);
    dir
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_passes_on_the_checked_in_cards() {
    let out = xtask(&[
        "gen-memory-specs",
        "--check",
        "--cards",
        cards().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "stderr: {}", s(&out.stderr));
    assert!(s(&out.stdout).contains("12 models"), "{}", s(&out.stdout));
}

#[test]
fn a_changed_fact_is_stale_until_regenerated_and_regeneration_is_idempotent() {
    let dir = temp_cards("stale");
    let phi = dir.join("text_to_text/phi-4.toml");
    let text = std::fs::read_to_string(&phi).unwrap();
    let edited = text.replacen(
        "num_key_value_heads = { value = 10,",
        "num_key_value_heads = { value = 8,",
        1,
    );
    assert_ne!(text, edited);
    std::fs::write(&phi, &edited).unwrap();
    let d = dir.to_str().unwrap();

    let out = xtask(&["gen-memory-specs", "--check", "--cards", d]);
    assert_eq!(out.status.code(), Some(1));
    let err = s(&out.stderr);
    assert!(err.contains("text_to_text/phi-4.toml is stale"), "{err}");
    assert!(err.contains("MEMORY_SPECS.md is stale"), "{err}");
    assert!(err.contains("run `cargo xtask gen-memory-specs`"), "{err}");
    // --check wrote nothing.
    assert_eq!(std::fs::read_to_string(&phi).unwrap(), edited);

    let out = xtask(&["gen-memory-specs", "--cards", d]);
    assert!(out.status.success(), "{}", s(&out.stderr));
    let regenerated = std::fs::read_to_string(&phi).unwrap();
    // Fewer KV heads: a smaller KV cache and a new fingerprint.
    assert!(
        regenerated.contains(&format!("kv_cache_bytes = {}", 2 * 40 * 8 * 128 * 4096 * 4)),
        "{regenerated}"
    );
    let before = snapshot(&dir);
    let out = xtask(&["gen-memory-specs", "--cards", d]);
    assert!(out.status.success());
    assert!(s(&out.stdout).contains("already up to date"));
    assert_eq!(snapshot(&dir), before, "a second run must change nothing");
    let out = xtask(&["gen-memory-specs", "--check", "--cards", d]);
    assert!(out.status.success());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_spec_fails_with_a_located_error_and_writes_nothing() {
    let dir = temp_cards("bad");
    // Make one model stale (so a write would happen) and another invalid.
    let phi = dir.join("text_to_text/phi-4.toml");
    let t = std::fs::read_to_string(&phi)
        .unwrap()
        .replacen("value = 17920,", "value = 17664,", 1);
    std::fs::write(&phi, t).unwrap();
    let clip = dir.join("image_embedding/clip-vit-base-patch32.toml");
    let t = std::fs::read_to_string(&clip).unwrap().replace(
        "capability = \"image_embedding\"",
        "capability = \"images\"",
    );
    std::fs::write(&clip, t).unwrap();
    let before = snapshot(&dir);
    let out = xtask(&["gen-memory-specs", "--cards", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = s(&out.stderr);
    assert!(
        err.contains("clip-vit-base-patch32.toml:") && err.contains("field `capability`"),
        "{err}"
    );
    assert_eq!(
        snapshot(&dir),
        before,
        "nothing is written when any spec is bad"
    );
    std::fs::remove_dir_all(&dir).ok();
}
