//! Where device budgets come from when nobody configured them.

use sysinfo::{MemoryRefreshKind, RefreshKind, System};

use crate::device::DeviceId;

/// Total memory found on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectedMemory {
    /// The device.
    pub device: DeviceId,
    /// Its total memory in bytes, before any reserve is taken off.
    pub total_bytes: u64,
    /// Memory other processes held on it when it was probed (a GPU shared with another
    /// program), kept out of the budget; 0 for RAM, whose budget is the total.
    pub held_by_others_bytes: u64,
}

/// A source of device memory figures.
///
/// RAM comes from [`SystemRamProbe`], NVIDIA GPUs from [`NvmlProbe`]; other sources are
/// registered with [`GovernorConfig::probe`](super::GovernorConfig::probe).
pub trait MemoryProbe: Send + Sync {
    /// The devices this probe can see and their total memory. An empty list means the probe
    /// found nothing (no driver, no device), which is not an error: that device then needs a
    /// configured budget.
    fn detect(&self) -> Vec<DetectedMemory>;
}

/// System RAM as sysinfo reports it, lowered to the cgroup limit when the process runs in a
/// container with a memory limit (otherwise the pool would budget for RAM it can never get and
/// be killed by the OOM killer instead of refusing a load).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRamProbe;

impl MemoryProbe for SystemRamProbe {
    fn detect(&self) -> Vec<DetectedMemory> {
        let system = System::new_with_specifics(
            RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        let mut total = system.total_memory();
        if let Some(limits) = system.cgroup_limits()
            && limits.total_memory > 0
        {
            total = total.min(limits.total_memory);
        }
        if total == 0 {
            return Vec::new();
        }
        vec![DetectedMemory {
            device: DeviceId::Cpu,
            total_bytes: total,
            held_by_others_bytes: 0,
        }]
    }
}

/// NVIDIA GPUs through NVML (the `gpu-memory` crate), registered by
/// [`GovernorConfig::detect`](super::GovernorConfig::detect) in `cuda` builds.
///
/// Each GPU's total is reported with what other processes hold on it at that moment, so a
/// GPU shared with another program is budgeted for what is left. Without the NVIDIA driver
/// this finds nothing and says so once; budgets then cover RAM only, unless
/// `MODEL_POOL_BUDGET_CUDA<N>` gives one.
#[derive(Debug, Default, Clone, Copy)]
pub struct NvmlProbe;

impl MemoryProbe for NvmlProbe {
    fn detect(&self) -> Vec<DetectedMemory> {
        let found = gpu_memory::Driver::system().and_then(|driver| {
            let gpus = driver.gpus()?;
            Ok(gpus
                .into_iter()
                .map(|gpu| {
                    let own = driver
                        .used_by_this_process(gpu.ordinal)
                        .ok()
                        .filter(|u| u.scope == gpu_memory::UsageScope::Process)
                        .map_or(0, |u| u.bytes);
                    DetectedMemory {
                        device: DeviceId::Cuda(gpu.ordinal),
                        total_bytes: gpu.total_bytes,
                        held_by_others_bytes: gpu.used_bytes.saturating_sub(own),
                    }
                })
                .collect())
        });
        found.unwrap_or_else(|e| {
            gpu_memory::warn_once_unavailable(&e);
            Vec::new()
        })
    }
}

/// Metal device memory: not probed yet (the query lives in the Candle `metal` backend).
#[cfg(feature = "metal")]
#[derive(Debug, Default, Clone, Copy)]
pub struct MetalProbe;

#[cfg(feature = "metal")]
impl MemoryProbe for MetalProbe {
    fn detect(&self) -> Vec<DetectedMemory> {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "Metal memory detection is provided by the Candle metal backend; \
                 configure MODEL_POOL_BUDGET_METAL<N> until it is registered"
            );
        });
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_ram_is_detected() {
        let found = SystemRamProbe.detect();
        assert_eq!(
            found.len(),
            1,
            "sysinfo should see system RAM on every supported OS"
        );
        assert_eq!(found[0].device, DeviceId::Cpu);
        assert!(found[0].total_bytes > 64 << 20, "{found:?}");
    }

    #[test]
    fn nvml_finds_exactly_what_the_driver_reports() {
        let found = NvmlProbe.detect();
        match gpu_memory::gpus() {
            // No driver: RAM only, nothing invented.
            Err(_) => assert!(found.is_empty(), "{found:?}"),
            Ok(gpus) => {
                assert_eq!(found.len(), gpus.len());
                for (f, g) in found.iter().zip(&gpus) {
                    assert_eq!(f.device, DeviceId::Cuda(g.ordinal));
                    assert!(f.held_by_others_bytes <= f.total_bytes, "{f:?}");
                }
            }
        }
    }
}
