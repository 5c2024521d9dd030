//! `candle-pool` as a user runs it: from a directory outside the workspace, with nothing but
//! the binary (no `model-cards/` to read), one-line errors, integers parsed as integers.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn scratch(name: &str) -> PathBuf {
    // Unique within the process: the tests run in parallel.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "candle-pool-cli-{name}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary in an empty directory, without the variables that could point it at the
/// source tree.
fn candle_pool(args: &[&str]) -> Output {
    let cwd = scratch("cwd");
    let out = Command::new(env!("CARGO_BIN_EXE_candle-pool"))
        .args(args)
        .current_dir(&cwd)
        .env_remove("MODEL_CARDS_DIR")
        .env_remove("MODEL_REGISTRY_CARDS_DIR")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run candle-pool");
    std::fs::remove_dir_all(&cwd).ok();
    out
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn list_names_the_backend_of_the_eleven_served_models_without_the_source_tree() {
    let out = candle_pool(&["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for m in model_registry::ALL {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(m.registry_key))
            .unwrap_or_else(|| panic!("{} missing:\n{stdout}", m.registry_key));
        match m.backend {
            Some(b) => assert!(line.contains(b.as_str()), "{line}"),
            None => assert!(line.contains("none (deepseek2)"), "{line}"),
        }
    }
    let json = candle_pool(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let served = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["backend"].is_null())
        .count();
    assert_eq!(served, 11);
}

#[test]
fn plan_prints_the_same_plan_as_the_library_and_writes_a_file_the_pool_reads() {
    let dir = scratch("plan");
    let file = dir.join("plan.json");
    let out = candle_pool(&[
        "plan",
        "--ram",
        "24GiB",
        "--no-gpu",
        "--write",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("unsloth/Kimi-K2-Instruct-GGUF") && stdout.contains("never"),
        "{stdout}"
    );
    let plan = model_serving::plan_file::load(&file).unwrap();
    let kimi = model_serving::plan_file::tier_of(&plan, "unsloth/Kimi-K2-Instruct-GGUF");
    assert!(kimi.unwrap_err().to_string().contains("never fits"));
    let (tier, _) =
        model_serving::plan_file::tier_of(&plan, "sentence-transformers/all-MiniLM-L6-v2")
            .unwrap();
    assert!(
        matches!(tier, model_pool::Tier::Warm { .. }),
        "24 GiB keeps nothing hot: {tier:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn plan_rejects_a_bad_size_with_a_clear_error() {
    let out = candle_pool(&["plan", "--ram", "lots"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--ram") && err.contains("lots"), "{err}");
}

#[test]
fn a_corrupt_gguf_is_one_line_naming_the_file_even_with_backtraces_on() {
    let dir = scratch("bad-gguf");
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGUF but not really").unwrap();
    let out = candle_pool(&[
        "generate",
        "--model",
        "tiny/phi3",
        "--arch",
        "phi3",
        "--weights",
        bad.to_str().unwrap(),
        "hello",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("bad.gguf") && lines[0].contains("tiny/phi3"), "{err}");
    assert!(!err.contains("stack backtrace") && !err.contains("retry after"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn integers_are_parsed_as_integers() {
    // A seed above 2^53 is taken as it is (it would lose bits through f64); -1 is refused.
    let big = "18446744073709551615";
    for (flag, value, ok) in [
        ("--seed", big, true),
        ("--seed", "-1", false),
        ("--top-k", "1.5", false),
        ("--max-tokens", "-3", false),
    ] {
        let arg = format!("{flag}={value}");
        let out = candle_pool(&["generate", "--model", "no/such-model", &arg, "hi"]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        if ok {
            // Parsed; the refusal is about the model, not the value.
            assert!(err.contains("no/such-model"), "{flag} {value}: {err}");
        } else {
            assert!(err.contains(flag) && err.contains(value), "{flag} {value}: {err}");
        }
    }
}

#[test]
fn every_subcommand_has_help() {
    for cmd in [
        "list",
        "embed",
        "embed-images",
        "generate",
        "text-to-image",
        "report",
        "plan",
    ] {
        let out = candle_pool(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("Usage: candle-pool"), "{cmd}");
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_candle-pool"));
    c.env_remove("MODEL_CARDS_DIR");
    c
}

#[test]
fn cli_lists_the_registry_with_estimates_and_fit() {
    let out = bin()
        .arg("list")
        .env("MODEL_POOL_BUDGET", "4GiB")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("cpu budget: 4.0 GiB"), "{text}");
    let minilm = text
        .lines()
        .find(|l| l.starts_with("sentence-transformers/all-MiniLM-L6-v2"))
        .unwrap();
    assert!(
        minilm.contains(" bert ") && minilm.contains(" 200 ") && minilm.trim_end().ends_with("yes"),
        "{minilm}"
    );
    let stella = text
        .lines()
        .find(|l| l.starts_with("dunzhang/stella_en_1.5B_v5"))
        .unwrap();
    assert!(
        stella.trim_end().ends_with("no"),
        "6900 MB does not fit 4 GiB: {stella}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains('/')).count(),
        12,
        "{text}"
    );
}

#[test]
fn cli_embeds_arguments_and_stdin_as_json() {
    let dir = model_fixtures::embed::tiny(model_serving::Family::Bert);
    let out = bin()
        .args(["embed", "--model", "my/tiny-bert", "--weights"])
        .arg(&dir)
        .args(["hello world", "rust"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = json.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["text"], "hello world");
    assert_eq!(items[1]["embedding"].as_array().unwrap().len(), 32);

    let mut child = bin()
        .args(["embed", "--model", "my/tiny-bert", "--weights"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello world\n\nrust\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let from_stdin: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_stdin, json, "stdin lines embed like arguments");

    let out = bin()
        .args([
            "embed",
            "--model",
            "x",
            "--weights",
            "/nonexistent/dir",
            "hi",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/dir"), "{err}");
}
