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
}

/// A source of device memory figures.
///
/// RAM comes from [`SystemRamProbe`]. GPU memory is reported by the backend that talks to the
/// driver (CUDA's `cuMemGetInfo`, Metal's `recommendedMaxWorkingSetSize`); backends register
/// their probe with [`GovernorConfig::probe`](super::GovernorConfig::probe), so this crate
/// needs no GPU dependency of its own.
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
        }]
    }
}

/// CUDA device memory.
///
/// The query itself needs the CUDA driver API, which only the Candle `cuda` backend links;
/// that backend provides the real probe. Until it is registered this probe finds nothing and
/// says so once, so CUDA devices need a configured budget (`MODEL_POOL_BUDGET_CUDA0=20GiB`).
#[cfg(feature = "cuda")]
#[derive(Debug, Default, Clone, Copy)]
pub struct CudaProbe;

#[cfg(feature = "cuda")]
impl MemoryProbe for CudaProbe {
    fn detect(&self) -> Vec<DetectedMemory> {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "CUDA memory detection is provided by the Candle cuda backend; \
                 configure MODEL_POOL_BUDGET_CUDA<N> until it is registered"
            );
        });
        Vec::new()
    }
}

/// Metal device memory; like [`CudaProbe`], the query lives in the Candle `metal` backend.
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
}
