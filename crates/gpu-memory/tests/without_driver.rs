//! The probe on a machine without the NVIDIA driver (CI's): a clear error, never a panic.

use std::ffi::OsStr;

use gpu_memory::{Driver, ProbeError};

#[test]
fn a_missing_library_is_an_error_that_names_it_and_the_fix() {
    let err = Driver::open(Some(OsStr::new("libno-such-nvml.so.1"))).unwrap_err();
    assert!(matches!(err, ProbeError::Library { .. }), "{err:?}");
    let text = err.to_string();
    for part in [
        "libno-such-nvml.so.1",
        "NVIDIA driver",
        "MODEL_POOL_BUDGET_CUDA0",
        "--vram",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

#[test]
fn a_file_that_is_not_a_library_is_refused() {
    let dir = std::env::temp_dir().join(format!("gpu-memory-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("libnvidia-ml.so.1");
    std::fs::write(&fake, b"not a shared object").unwrap();
    let err = Driver::open(Some(fake.as_os_str())).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(err, ProbeError::Library { .. }), "{err:?}");
    assert!(err.to_string().contains("libnvidia-ml.so.1"), "{err}");
}

/// What this machine says, whichever it is: no driver is the library error; a driver gives
/// consistent figures in CUDA order.
#[test]
fn the_system_probe_is_consistent() {
    match gpu_memory::gpus() {
        Err(err) => assert!(matches!(err, ProbeError::Library { .. }), "{err:?}"),
        Ok(gpus) => {
            for (i, gpu) in gpus.iter().enumerate() {
                assert_eq!(gpu.ordinal as usize, i);
                assert!(
                    gpu.total_bytes > 0 && gpu.free_bytes <= gpu.total_bytes,
                    "{gpu:?}"
                );
                assert!(gpu.uuid.starts_with("GPU-"), "{gpu:?}");
            }
        }
    }
}
