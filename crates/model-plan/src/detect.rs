//! Detection of the machine the planner runs on: RAM (sysinfo, lowered to a cgroup limit),
//! cores, NUMA nodes (`/sys/devices/system/node` on Linux), SIMD features, free space in the
//! Hugging Face cache, and GPUs through [`GpuProbe`]s: NVIDIA ones through NVML by default
//! ([`NvmlGpus`]). Nothing here shells out.

use crate::machine::{Gpu, Machine, PlanDevice, Simd};
use std::path::Path;
use sysinfo::{Disks, MemoryRefreshKind, RefreshKind, System};

/// A source of GPU memory figures: [`NvmlGpus`] for NVIDIA GPUs, or a fake in tests.
/// GPUs no probe finds (Apple's) are described with `--vram`.
pub trait GpuProbe {
    /// Every GPU the probe sees; empty when there is no driver or device (not an error).
    fn gpus(&self) -> Vec<Gpu>;
    /// One line for the machine's `sources` ("gpus: 1 found by the CUDA driver").
    fn describe(&self) -> String;
}

/// NVIDIA GPUs found through NVML, the driver's own library (see the `gpu-memory` crate).
///
/// NVML is loaded at run time and needs neither the CUDA toolkit nor a CUDA build: planning
/// for a GPU does not need the CUDA backend compiled in. Without the driver the probe finds
/// nothing and its [`describe`](GpuProbe::describe) line says why and what to do.
#[derive(Debug, Default, Clone, Copy)]
pub struct NvmlGpus;

impl GpuProbe for NvmlGpus {
    fn gpus(&self) -> Vec<Gpu> {
        gpu_memory::gpus()
            .unwrap_or_default()
            .into_iter()
            .map(|g| Gpu {
                device: PlanDevice::Cuda(g.ordinal),
                name: Some(g.name),
                memory_bytes: g.total_bytes,
            })
            .collect()
    }

    fn describe(&self) -> String {
        let driver = gpu_memory::Driver::system();
        match driver.and_then(|d| Ok((d.gpus()?, d.driver_version()))) {
            Ok((gpus, _)) if gpus.is_empty() => "gpus: the NVIDIA driver sees none visible to \
                 this process (CUDA_VISIBLE_DEVICES); describe a GPU with --vram"
                .to_owned(),
            Ok((gpus, version)) => format!(
                "gpus: {} found by the NVIDIA driver (NVML{})",
                gpus.len(),
                version.map(|v| format!(", driver {v}")).unwrap_or_default()
            ),
            Err(e) => format!("gpus: none detected: {e}"),
        }
    }
}

/// Detects the machine, NVIDIA GPUs through [`NvmlGpus`] (see [`detect_with`]).
pub fn detect() -> Machine {
    detect_with(&[&NvmlGpus])
}

/// Detects the machine; `gpu_probes` report GPUs (none registered = no GPU detected, which the
/// machine's `sources` say, naming the `--vram` override).
pub fn detect_with(gpu_probes: &[&dyn GpuProbe]) -> Machine {
    let mut sources = Vec::new();
    let system = System::new_with_specifics(
        RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let mut ram = system.total_memory();
    let mut available = system.available_memory();
    match system.cgroup_limits() {
        // A container limit is what the OOM killer enforces, whatever the host has.
        Some(limits) if limits.total_memory > 0 && limits.total_memory < ram => {
            ram = limits.total_memory;
            available = available.min(limits.free_memory);
            sources.push(format!(
                "ram: cgroup memory limit ({}), lower than physical RAM",
                crate::size::gib(ram)
            ));
        }
        _ => sources.push("ram: detected by sysinfo".to_owned()),
    }
    let cores = std::thread::available_parallelism()
        .ok()
        .map(|n| n.get() as u32);
    let physical_cores = System::physical_core_count().map(|n| n as u32);
    sources.push("cores: available parallelism of this process".to_owned());

    let cache_dir = hf_hub_cache_dir();
    let cache_free = cache_dir.as_deref().and_then(free_space_at);

    let mut gpus = Vec::new();
    for probe in gpu_probes {
        gpus.extend(probe.gpus());
        sources.push(probe.describe());
    }
    if gpu_probes.is_empty() {
        sources.push("gpus: not probed; describe a GPU with --vram".to_owned());
    }

    Machine {
        ram_bytes: ram,
        ram_available_bytes: Some(available),
        cores,
        physical_cores,
        numa_nodes: numa_nodes(),
        simd: Some(simd()),
        model_cache_dir: cache_dir.map(|p| p.display().to_string()),
        model_cache_free_bytes: cache_free,
        gpus,
        sources,
    }
}

/// NUMA nodes from `/sys/devices/system/node/node<N>` (Linux); `None` elsewhere or when the
/// folder is missing (kernels without NUMA support).
pub fn numa_nodes() -> Option<u32> {
    numa_nodes_in(Path::new("/sys/devices/system/node"))
}

/// [`numa_nodes`] for another sysfs root (tests).
pub fn numa_nodes_in(dir: &Path) -> Option<u32> {
    let entries = std::fs::read_dir(dir).ok()?;
    let n = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name().to_str().is_some_and(|name| {
                name.strip_prefix("node").is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                })
            })
        })
        .count() as u32;
    (n > 0).then_some(n)
}

/// SIMD features the CPU reports at run time and those this build was compiled for.
pub fn simd() -> Simd {
    #[allow(unused_mut)]
    let mut detected: Vec<String> = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        for (name, has) in [
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ] {
            if has {
                detected.push(name.to_owned());
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            detected.push("neon".to_owned());
        }
        if std::arch::is_aarch64_feature_detected!("fp16") {
            detected.push("fp16".to_owned());
        }
    }
    let compiled = [
        ("avx", cfg!(target_feature = "avx")),
        ("avx2", cfg!(target_feature = "avx2")),
        ("fma", cfg!(target_feature = "fma")),
        ("f16c", cfg!(target_feature = "f16c")),
        ("avx512f", cfg!(target_feature = "avx512f")),
        ("neon", cfg!(target_feature = "neon")),
        ("fp16", cfg!(target_feature = "fp16")),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(n, _)| n.to_owned())
    .collect();
    Simd { detected, compiled }
}

pub use model_spec::hub_cache::{
    cache_dir as hf_hub_cache_dir, cache_dir_from as hf_hub_cache_dir_from,
};

/// Free bytes on the file system that holds `path` (or would hold it: the nearest existing
/// ancestor is used, so a cache that was never created still gets a figure).
pub fn free_space_at(path: &Path) -> Option<u64> {
    let mut existing = path;
    while !existing.exists() {
        existing = existing.parent()?;
    }
    let existing = existing.canonicalize().ok()?;
    let disks = Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|d| existing.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| d.available_space())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numa_nodes_are_counted_from_sysfs_entries() {
        let dir = std::env::temp_dir().join(format!("model-plan-numa-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for name in ["node0", "node1", "node3", "possible", "nodeX", "has_cpu"] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
        }
        assert_eq!(numa_nodes_in(&dir), Some(3));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(numa_nodes_in(&dir), None);
    }

    #[test]
    fn this_machine_is_detected() {
        let m = detect();
        assert!(m.ram_bytes > 64 << 20, "{m:?}");
        assert!(m.cores.is_some_and(|c| c >= 1));
        match gpu_memory::gpus() {
            // No driver (CI): no GPU, and the sources say why and name the override.
            Err(_) => {
                assert!(m.gpus.is_empty(), "{m:?}");
                let line = m.sources.iter().find(|s| s.starts_with("gpus:")).unwrap();
                assert!(line.contains("NVIDIA") && line.contains("--vram"), "{line}");
            }
            Ok(gpus) => assert_eq!(m.gpus.len(), gpus.len(), "{m:?}"),
        }
        #[cfg(target_arch = "x86_64")]
        {
            // Every x86_64 build targets SSE2 at least, and the compiled list is a subset of
            // what any CPU running this binary must have.
            let s = m.simd.unwrap();
            for f in &s.compiled {
                assert!(
                    s.detected.contains(f),
                    "{f} compiled but not detected: {s:?}"
                );
            }
        }
    }

    #[test]
    fn free_space_follows_the_nearest_existing_folder() {
        let missing = std::env::temp_dir().join("model-plan-no-such-dir/hub");
        // The temp dir exists on every test machine; its file system has some free space
        // unless sysinfo cannot list mounts (some sandboxes), which is not an error.
        if let Some(free) = free_space_at(&missing) {
            assert!(free > 0);
        }
    }
}
