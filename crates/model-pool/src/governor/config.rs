//! How the governor's budgets are decided: detected totals minus a reserve, or fixed figures.

use std::collections::BTreeMap;
use std::fmt;

use super::detect::{MemoryProbe, SystemRamProbe};
use crate::device::DeviceId;
use crate::error::GovernorError;
use crate::size::{ByteSize, GIB, MIB};

/// Environment variable with the RAM budget, e.g. `18GiB`. Overrides detection.
pub const ENV_RAM_BUDGET: &str = "MODEL_POOL_BUDGET";
/// Prefix of per-GPU budget variables: `MODEL_POOL_BUDGET_CUDA0`, `MODEL_POOL_BUDGET_METAL0`.
pub const ENV_DEVICE_BUDGET_PREFIX: &str = "MODEL_POOL_BUDGET_";
/// Environment variable with the RAM kept back for the OS and the rest of the process.
pub const ENV_OS_RESERVE: &str = "MODEL_POOL_OS_RESERVE";

/// Inputs of a [`MemoryGovernor`](super::MemoryGovernor): which devices exist and how big each
/// budget is.
///
/// A configured budget is taken as is. A detected total has a reserve taken off: for RAM the
/// OS, page cache and the application's own heap; for a GPU the driver context and allocator
/// slack, and what other processes hold on it when it is probed. Without a reserve a pool that "fits" would still push the machine into swap or the
/// OOM killer.
pub struct GovernorConfig {
    fixed: BTreeMap<DeviceId, u64>,
    reserves: BTreeMap<DeviceId, u64>,
    probes: Vec<Box<dyn MemoryProbe>>,
}

impl fmt::Debug for GovernorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GovernorConfig")
            .field("fixed", &self.fixed)
            .field("reserves", &self.reserves)
            .field("probes", &self.probes.len())
            .finish()
    }
}

impl GovernorConfig {
    /// No devices at all; add them with [`budget`](Self::budget) or [`probe`](Self::probe).
    pub fn empty() -> Self {
        GovernorConfig {
            fixed: BTreeMap::new(),
            reserves: BTreeMap::new(),
            probes: Vec::new(),
        }
    }

    /// System RAM from sysinfo, plus the GPU probes compiled in (features `cuda`, `metal`).
    pub fn detect() -> Self {
        #[allow(unused_mut)]
        let mut config = Self::empty().probe(SystemRamProbe);
        #[cfg(feature = "cuda")]
        {
            config = config.probe(super::detect::NvmlProbe);
        }
        #[cfg(feature = "metal")]
        {
            config = config.probe(super::detect::MetalProbe);
        }
        config
    }

    /// [`detect`](Self::detect), then the overrides from the environment:
    /// `MODEL_POOL_BUDGET` (RAM), `MODEL_POOL_BUDGET_CUDA<N>` / `MODEL_POOL_BUDGET_METAL<N>`,
    /// and `MODEL_POOL_OS_RESERVE`. A malformed value is an error naming the variable, never
    /// silently ignored: a typo in a memory cap must not turn into "use all RAM".
    pub fn from_env() -> Result<Self, GovernorError> {
        Self::detect().with_env_vars(std::env::vars())
    }

    /// Applies overrides from `(name, value)` pairs, as [`from_env`](Self::from_env) does.
    pub fn with_env_vars(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, GovernorError> {
        for (name, value) in vars {
            let parse_size = |value: &str| {
                value
                    .parse::<ByteSize>()
                    .map_err(|source| GovernorError::InvalidSetting {
                        name: name.clone(),
                        reason: source.to_string(),
                    })
            };
            if name == ENV_RAM_BUDGET {
                self = self.budget(DeviceId::Cpu, parse_size(&value)?.bytes());
            } else if name == ENV_OS_RESERVE {
                self = self.reserve(DeviceId::Cpu, parse_size(&value)?.bytes());
            } else if let Some(device) = name.strip_prefix(ENV_DEVICE_BUDGET_PREFIX) {
                let device =
                    device
                        .parse::<DeviceId>()
                        .map_err(|source| GovernorError::InvalidSetting {
                            name: name.clone(),
                            reason: source.to_string(),
                        })?;
                self = self.budget(device, parse_size(&value)?.bytes());
            }
        }
        Ok(self)
    }

    /// Uses exactly `bytes` on `device`, whatever detection says.
    pub fn budget(mut self, device: DeviceId, bytes: u64) -> Self {
        self.fixed.insert(device, bytes);
        self
    }

    /// Keeps `bytes` of a detected total out of the budget (ignored for configured budgets,
    /// which already are the figure to use).
    pub fn reserve(mut self, device: DeviceId, bytes: u64) -> Self {
        self.reserves.insert(device, bytes);
        self
    }

    /// Adds a detection source (the Candle backends register their GPU probes here).
    pub fn probe(mut self, probe: impl MemoryProbe + 'static) -> Self {
        self.probes.push(Box::new(probe));
        self
    }

    /// The default reserve for a detected total: RAM keeps 10% (at least 1 GiB) for the OS
    /// and the application; a GPU keeps 5% (at least 512 MiB) for the driver context and
    /// allocator fragmentation.
    pub fn default_reserve(device: DeviceId, total: u64) -> u64 {
        match device {
            DeviceId::Cpu => (total / 10).max(GIB),
            DeviceId::Cuda(_) | DeviceId::Metal(_) => (total / 20).max(512 * MIB),
        }
    }

    /// The final budget per device.
    pub fn resolve(&self) -> Result<BTreeMap<DeviceId, u64>, GovernorError> {
        let mut budgets = BTreeMap::new();
        for probe in &self.probes {
            for found in probe.detect() {
                if self.fixed.contains_key(&found.device) {
                    continue;
                }
                let reserve = self
                    .reserves
                    .get(&found.device)
                    .copied()
                    .unwrap_or_else(|| Self::default_reserve(found.device, found.total_bytes));
                let budget = found
                    .total_bytes
                    .saturating_sub(found.held_by_others_bytes)
                    .checked_sub(reserve)
                    .filter(|b| *b > 0);
                let budget = match budget {
                    Some(b) => b,
                    None if found.held_by_others_bytes > 0 => {
                        return Err(GovernorError::DeviceTaken {
                            device: found.device,
                            total: ByteSize(found.total_bytes),
                            held_by_others: ByteSize(found.held_by_others_bytes),
                            reserve: ByteSize(reserve),
                        });
                    }
                    None => {
                        return Err(GovernorError::ReserveExceedsTotal {
                            device: found.device,
                            total: ByteSize(found.total_bytes),
                            reserve: ByteSize(reserve),
                        });
                    }
                };
                budgets.insert(found.device, budget);
            }
        }
        budgets.extend(self.fixed.iter().map(|(d, b)| (*d, *b)));
        if budgets.is_empty() {
            return Err(GovernorError::NoDevices);
        }
        Ok(budgets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governor::detect::DetectedMemory;

    struct FixedProbe(Vec<DetectedMemory>);
    impl MemoryProbe for FixedProbe {
        fn detect(&self) -> Vec<DetectedMemory> {
            self.0.clone()
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn configured_budget_overrides_detection_and_ignores_reserve() {
        let config = GovernorConfig::empty()
            .probe(FixedProbe(vec![DetectedMemory {
                device: DeviceId::Cpu,
                total_bytes: 64 * GIB,
                held_by_others_bytes: 0,
            }]))
            .with_env_vars(vars(&[
                ("MODEL_POOL_BUDGET", "18GiB"),
                ("MODEL_POOL_OS_RESERVE", "4GiB"),
            ]))
            .unwrap();
        assert_eq!(config.resolve().unwrap()[&DeviceId::Cpu], 18 * GIB);
    }

    #[test]
    fn detected_total_loses_the_reserve() {
        let probe = FixedProbe(vec![
            DetectedMemory {
                device: DeviceId::Cpu,
                total_bytes: 64 * GIB,
                held_by_others_bytes: 0,
            },
            DetectedMemory {
                device: DeviceId::Cuda(0),
                total_bytes: 24 * GIB,
                held_by_others_bytes: 0,
            },
        ]);
        let config = GovernorConfig::empty()
            .probe(probe)
            .with_env_vars(vars(&[
                ("MODEL_POOL_OS_RESERVE", "4GiB"),
                ("UNRELATED", "x"),
            ]))
            .unwrap();
        let budgets = config.resolve().unwrap();
        assert_eq!(budgets[&DeviceId::Cpu], 60 * GIB);
        assert_eq!(budgets[&DeviceId::Cuda(0)], 24 * GIB - (24 * GIB / 20));
    }

    #[test]
    fn memory_other_processes_hold_on_a_gpu_is_not_budgeted() {
        let shared_gpu = FixedProbe(vec![DetectedMemory {
            device: DeviceId::Cuda(0),
            total_bytes: 24 * GIB,
            held_by_others_bytes: 10 * GIB,
        }]);
        let budgets = GovernorConfig::empty().probe(shared_gpu).resolve().unwrap();
        assert_eq!(budgets[&DeviceId::Cuda(0)], 14 * GIB - (24 * GIB / 20));
        let full_gpu = FixedProbe(vec![DetectedMemory {
            device: DeviceId::Cuda(0),
            total_bytes: 24 * GIB,
            held_by_others_bytes: 24 * GIB,
        }]);
        let err = GovernorConfig::empty()
            .probe(full_gpu)
            .resolve()
            .unwrap_err();
        assert!(matches!(err, GovernorError::DeviceTaken { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("MODEL_POOL_BUDGET_CUDA0") && text.contains("other processes"),
            "{text}"
        );
    }

    #[test]
    fn gpu_budget_from_environment() {
        let config = GovernorConfig::empty()
            .with_env_vars(vars(&[("MODEL_POOL_BUDGET_CUDA1", "20GiB")]))
            .unwrap();
        assert_eq!(config.resolve().unwrap()[&DeviceId::Cuda(1)], 20 * GIB);
    }

    #[test]
    fn malformed_setting_is_an_error_naming_the_variable() {
        let err = GovernorConfig::empty()
            .with_env_vars(vars(&[("MODEL_POOL_BUDGET", "eighteen gigs")]))
            .unwrap_err();
        assert!(err.to_string().contains("MODEL_POOL_BUDGET"), "{err}");
        let err = GovernorConfig::empty()
            .with_env_vars(vars(&[("MODEL_POOL_BUDGET_TPU0", "1GiB")]))
            .unwrap_err();
        assert!(err.to_string().contains("MODEL_POOL_BUDGET_TPU0"), "{err}");
    }

    #[test]
    fn reserve_larger_than_total_is_refused() {
        let err = GovernorConfig::empty()
            .probe(FixedProbe(vec![DetectedMemory {
                device: DeviceId::Cpu,
                total_bytes: 2 * GIB,
                held_by_others_bytes: 0,
            }]))
            .reserve(DeviceId::Cpu, 3 * GIB)
            .resolve()
            .unwrap_err();
        assert!(
            matches!(err, GovernorError::ReserveExceedsTotal { .. }),
            "{err}"
        );
        assert!(matches!(
            GovernorConfig::empty().resolve(),
            Err(GovernorError::NoDevices)
        ));
    }
}
