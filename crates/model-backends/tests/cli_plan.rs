//! `candle-pool plan`: the planner shared with `cargo xtask plan`, and a plan file the pool reads.

use std::process::Command;

fn candle_pool(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_candle-pool"))
        .args(args)
        .output()
        .expect("run candle-pool")
}

#[test]
fn plan_prints_the_same_plan_as_the_library_and_writes_a_file_the_pool_reads() {
    let dir = std::env::temp_dir().join(format!("candle-pool-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("plan.json");
    let out = candle_pool(&[
        "plan",
        "--ram",
        "24GiB",
        "--no-gpu",
        "--write",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("unsloth/Kimi-K2-Instruct-GGUF") && text.contains("never"),
        "{text}"
    );

    let plan = model_backends::pool_plan::load(&file).unwrap();
    let kimi = model_backends::pool_plan::tier_of(&plan, "unsloth/Kimi-K2-Instruct-GGUF");
    assert!(kimi.unwrap_err().to_string().contains("never fits"));
    let (tier, _) =
        model_backends::pool_plan::tier_of(&plan, "sentence-transformers/all-MiniLM-L6-v2")
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ram") && err.contains("lots"), "{err}");
}
