//! The planner's GPU detection through a probe: a fake one stands for the NVIDIA driver, so
//! these run on machines without a GPU.

use model_plan::size::GIB;
use model_plan::{
    BudgetPolicy, Gpu, GpuProbe, NvmlGpus, PlanDevice, PlanRequest, Tier, detect_with, plan,
};
use model_spec::Registry;
use std::path::Path;

/// One GPU of the given size, as the driver would report it.
struct FakeDriver(u64);

impl GpuProbe for FakeDriver {
    fn gpus(&self) -> Vec<Gpu> {
        vec![Gpu {
            device: PlanDevice::Cuda(0),
            name: Some("Fake GPU".to_owned()),
            memory_bytes: self.0,
        }]
    }
    fn describe(&self) -> String {
        "gpus: 1 found by the fake driver".to_owned()
    }
}

fn registry() -> Registry {
    let cards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../model-cards");
    Registry::load(&cards).expect("the checked-in model cards load")
}

#[test]
fn a_probed_gpu_gets_the_cuda_models_without_any_flag() {
    let machine = detect_with(&[&FakeDriver(48 * GIB)]);
    assert_eq!(machine.gpus.len(), 1, "{machine:?}");
    assert!(
        machine
            .sources
            .iter()
            .any(|s| s == "gpus: 1 found by the fake driver"),
        "{:?}",
        machine.sources
    );
    let p = plan(
        &registry(),
        &machine,
        &BudgetPolicy::default(),
        &PlanRequest::default(),
    )
    .unwrap();
    let gpu = p
        .device(PlanDevice::Cuda(0))
        .expect("the probed GPU is a device of the plan");
    assert!(
        gpu.budget_bytes > 40 * GIB && gpu.budget_bytes < 48 * GIB,
        "{gpu:?}"
    );
    // NV-Embed-v2's figure is for a CUDA profile: on a 48 GiB GPU it is served there.
    let nv = p.model("nvidia/NV-Embed-v2").unwrap();
    assert_eq!(nv.device, PlanDevice::Cuda(0));
    assert_ne!(nv.tier, Tier::Never, "{nv:?}");
}

#[test]
fn without_a_probe_the_sources_name_the_override() {
    let machine = detect_with(&[]);
    assert!(machine.gpus.is_empty());
    assert!(
        machine
            .sources
            .iter()
            .any(|s| s.starts_with("gpus:") && s.contains("--vram")),
        "{:?}",
        machine.sources
    );
}

/// The NVML probe on this machine: without the driver it finds nothing and says why; with
/// one its GPUs are CUDA devices in order.
#[test]
fn the_nvml_probe_agrees_with_the_driver() {
    let gpus = NvmlGpus.gpus();
    let line = NvmlGpus.describe();
    match gpu_memory::gpus() {
        Err(_) => {
            assert!(gpus.is_empty());
            assert!(
                line.contains("libnvidia-ml") || line.contains("nvml"),
                "{line}"
            );
            assert!(line.contains("--vram"), "{line}");
        }
        Ok(found) => {
            assert_eq!(gpus.len(), found.len());
            for (i, gpu) in gpus.iter().enumerate() {
                assert_eq!(gpu.device, PlanDevice::Cuda(i as u32));
            }
        }
    }
}
