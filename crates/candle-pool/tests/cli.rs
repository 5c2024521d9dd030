//! `candle-pool` as a user runs it: from a directory outside the workspace, with nothing but
//! the binary (no `model-cards/` to read), one-line errors, integers parsed as integers.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn scratch(name: &str) -> PathBuf {
    // Unique within the process: the tests run in parallel.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("candle-pool-cli-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The binary, without `MODEL_CARDS_DIR`.
/// The binary, without `MODEL_CARDS_DIR`.
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_candle-pool"));
    c.env_remove("MODEL_CARDS_DIR");
    c
}

/// Runs the binary in an empty directory, without the variables that could point it at the
/// source tree.
fn candle_pool(args: &[&str]) -> Output {
    let cwd = scratch("cwd");
    let out = bin()
        .args(args)
        .current_dir(&cwd)
        .env_remove("MODEL_REGISTRY_CARDS_DIR")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run candle-pool");
    std::fs::remove_dir_all(&cwd).ok();
    out
}

/// `out`, once it is checked to be a success (else the test fails showing its stderr).
fn succeeded(out: Output) -> Output {
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn list_names_the_backend_of_the_eleven_served_models_without_the_source_tree() {
    let out = succeeded(candle_pool(&["list"]));
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
    let out = succeeded(candle_pool(&[
        "plan",
        "--ram",
        "24GiB",
        "--no-gpu",
        "--write",
        file.to_str().unwrap(),
    ]));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("unsloth/Kimi-K2-Instruct-GGUF") && stdout.contains("never"),
        "{stdout}"
    );
    let plan = model_serving::plan_file::load(&file).unwrap();
    let kimi = model_serving::plan_file::tier_of(&plan, "unsloth/Kimi-K2-Instruct-GGUF");
    assert!(kimi.unwrap_err().to_string().contains("never fits"));
    let (tier, _) =
        model_serving::plan_file::tier_of(&plan, "sentence-transformers/all-MiniLM-L6-v2").unwrap();
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
    assert!(
        lines[0].contains("bad.gguf") && lines[0].contains("tiny/phi3"),
        "{err}"
    );
    assert!(
        !err.contains("stack backtrace") && !err.contains("retry after"),
        "{err}"
    );
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
            assert!(
                err.contains(flag) && err.contains(value),
                "{flag} {value}: {err}"
            );
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

#[test]
fn cli_lists_the_registry_with_estimates_and_fit() {
    let out = succeeded(
        bin()
            .arg("list")
            .env("MODEL_POOL_BUDGET", "4GiB")
            .output()
            .unwrap(),
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
    let out = succeeded(
        bin()
            .args(["embed", "--model", "my/tiny-bert", "--weights"])
            .arg(&dir)
            .args(["hello world", "rust"])
            .output()
            .unwrap(),
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
    let err = text(&out.stderr);
    assert!(err.contains("/nonexistent/dir"), "{err}");
}

#[test]
fn the_cli_streams_an_answer_and_explains_a_refusal() {
    use model_fixtures::decode::{Geometry, write_phi3};
    let path = model_fixtures::scratch("cli").join("tiny-phi3.gguf");
    write_phi3(&path, &Geometry::phi3(), 13);
    let cli = |budget: &str, args: &[&str]| {
        bin()
            .arg("generate")
            .args(args)
            .env("MODEL_POOL_BUDGET", budget)
            .output()
            .unwrap()
    };
    let weights = path.to_str().unwrap();
    let args = [
        "--model",
        "tiny",
        "--arch",
        "phi3",
        "--weights",
        weights,
        "--max-tokens",
        "6",
        "--temperature",
        "0",
        "the",
        "answer",
    ];
    let a = cli("4GiB", &args);
    let stderr = text(&a.stderr);
    assert!(a.status.success(), "{stderr}");
    assert!(stderr.contains("new tokens"), "{stderr}");
    let b = cli("4GiB", &args);
    assert_eq!(a.stdout, b.stdout, "greedy from the command line repeats");

    let kimi = [
        "--model",
        "unsloth/Kimi-K2-Instruct-GGUF",
        "--weights",
        "Kimi-K2-Instruct-Q4_K_M-00001-of-00013.gguf",
        "hi",
    ];
    let small = cli("24GiB", &kimi);
    assert!(!small.status.success());
    assert!(text(&small.stderr).contains("can never fit"), "{small:?}");
    let large = cli("2TiB", &kimi);
    assert!(!large.status.success());
    assert!(
        text(&large.stderr).contains("no backend for architecture deepseek2"),
        "{large:?}"
    );
}

#[test]
fn the_cli_writes_an_image_file_for_a_prompt() {
    use model_fixtures::diffusion::{self, Geometry};
    use model_serving::Pipeline;
    const SD3: &str = "stabilityai/stable-diffusion-3.5-large-turbo";
    let dir = model_fixtures::scratch("cli-sd3");
    diffusion::write(&dir, Pipeline::Sd3, &Geometry::tiny(Pipeline::Sd3), 7).unwrap();
    let out = dir.join("fox.png");
    let weights = dir.to_str().unwrap();
    let prompt = [
        "text-to-image",
        "--model",
        SD3,
        "--weights",
        weights,
        "--prompt",
        "a red fox",
    ];
    let run = |args: &[&str]| bin().args(prompt).args(args).output().unwrap();
    let ok = run(&[
        "--width",
        "48",
        "--height",
        "32",
        "--steps",
        "2",
        "--seed",
        "5",
        "--dtype",
        "f32",
        "--staged",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = text(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert!(stderr.contains("step 2/2"), "{stderr}");
    let png = std::fs::read(&out).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    let image = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap();
    assert_eq!((image.width(), image.height()), (48, 32));
    let bad = run(&["--width", "50"]);
    assert!(!bad.status.success());
    let stderr = text(&bad.stderr);
    assert!(stderr.contains("multiples of 16"), "{stderr}");
    diffusion::remove(&dir).unwrap();
}

#[test]
fn cli_reports_estimate_against_measured_memory() {
    const KEY: &str = "sentence-transformers/all-MiniLM-L6-v2";
    let out = succeeded(
        bin()
            .args(["report", "--model", KEY, "--weights"])
            .arg(model_fixtures::minilm::checkpoint())
            .output()
            .unwrap(),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with(KEY))
        .unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], "200", "the registry estimate: {row}");
    let measured: f64 = cols[3].parse().unwrap();
    let peak: f64 = cols[5].parse().unwrap();
    // 86.6 MiB of F32 weights must show up in what the load leaves resident and in the peak.
    assert!(measured > 60.0 && peak >= measured, "{row}");
}
