//! The GPU measurement program, run at its tiny geometry on the CPU so that it cannot rot
//! between borrowed GPU slots: every model of the GPU table is written, served through the
//! pool, measured and deleted, one JSON line each.

use std::process::Command;

#[test]
fn the_device_memory_program_measures_all_nine_models_at_a_tiny_geometry() {
    let scratch = std::env::temp_dir().join(format!("device-memory-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_device-memory"))
        .args(["--device", "cpu", "--geometry", "tiny", "--scratch"])
        .arg(&scratch)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let models: Vec<&str> = lines.iter().map(|l| l["model"].as_str().unwrap()).collect();
    assert_eq!(models.len(), 9, "{models:?}");
    for key in [
        "nvidia/NV-Embed-v2",
        "llava-hf/llava-1.5-7b-hf",
        "black-forest-labs/FLUX.1-schnell",
    ] {
        assert!(models.contains(&key), "{key} missing from {models:?}");
    }
    for l in &lines {
        for field in [
            "estimate_bytes",
            "measured_peak_bytes",
            "checkpoint_bytes",
            "registry_mb",
        ] {
            assert!(l[field].as_u64().is_some_and(|v| v > 0), "{field} in {l}");
        }
        assert_eq!(l["device"], "cpu", "{l}");
        assert_eq!(l["measure"], "anonymous resident memory", "{l}");
        assert!(l["within"].is_boolean(), "{l}");
        // The tiny checkpoints are estimated as themselves, not as the registry model.
        assert!(l["estimate_mb"].as_u64() < l["registry_mb"].as_u64(), "{l}");
    }
    // Each checkpoint is deleted once measured.
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn an_unknown_model_fails_and_names_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_device-memory"))
        .args([
            "--device",
            "cpu",
            "--geometry",
            "tiny",
            "--models",
            "no/such-model",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no/such-model"), "{stderr}");
}
