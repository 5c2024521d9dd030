//! The budget of each device: its memory minus an OS/runtime reserve, minus a safety margin.
//!
//! ```text
//! reserve = min(total, reserve_base + reserve_percent % of total)
//! margin  = margin_percent % of (total − reserve), rounded up
//! budget  = total − reserve − margin
//! ```
//!
//! Defaults, and why (the original sizing guide used a flat 16 GB for the OS and a 15 % buffer):
//! - **RAM: 4 GiB + 5 %, then a 5 % margin.** 4 GiB holds a desktop session or a server's
//!   system services plus the host application outside its models; the 5 % grows with the
//!   machine for what the kernel itself keeps (page tables, page cache the file system needs
//!   to stay usable, reserved huge pages). A flat 16 GB would leave a 24 GiB laptop 8 GiB and
//!   barely register on a 1 TiB server. The margin is 5 %, not 15 %, because every model
//!   figure already carries its own 15 % margin and is rounded up to 100 MB; a second 15 %
//!   would count the same uncertainty twice. What the 5 % covers is heap fragmentation from
//!   warm models being loaded and dropped over and over in one process.
//! - **GPU: 512 MiB + 5 %, then a 5 % margin.** A display or compositor on the same GPU holds
//!   a few hundred MiB and the driver keeps some memory back; each model's GPU figure already
//!   includes a CUDA/Metal context, so the margin is again only for allocator fragmentation.

use crate::machine::{Machine, PlanDevice};
use crate::size::{GIB, MIB};
use serde::{Deserialize, Serialize};

/// How much of one kind of device is kept back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservePolicy {
    /// Fixed part of the OS/runtime reserve.
    pub reserve_base_bytes: u64,
    /// Part of the reserve that grows with the device, in percent of its total.
    pub reserve_percent: u32,
    /// Safety margin, in percent of what is left after the reserve.
    pub margin_percent: u32,
}

/// Reserve and margin per kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetPolicy {
    pub ram: ReservePolicy,
    pub gpu: ReservePolicy,
}

/// Default RAM policy (see the module docs for the reasons).
pub const DEFAULT_RAM: ReservePolicy = ReservePolicy {
    reserve_base_bytes: 4 * GIB,
    reserve_percent: 5,
    margin_percent: 5,
};

/// Default GPU policy (see the module docs for the reasons).
pub const DEFAULT_GPU: ReservePolicy = ReservePolicy {
    reserve_base_bytes: 512 * MIB,
    reserve_percent: 5,
    margin_percent: 5,
};

impl Default for BudgetPolicy {
    fn default() -> Self {
        BudgetPolicy {
            ram: DEFAULT_RAM,
            gpu: DEFAULT_GPU,
        }
    }
}

/// A policy value outside what makes sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value} % is out of range: {expected}")]
pub struct PolicyError {
    pub field: &'static str,
    pub value: u32,
    pub expected: &'static str,
}

impl ReservePolicy {
    fn check(&self, prefix: &'static str) -> Result<(), PolicyError> {
        let (reserve_field, margin_field) = match prefix {
            "ram" => ("ram reserve_percent", "ram margin_percent"),
            _ => ("gpu reserve_percent", "gpu margin_percent"),
        };
        if self.reserve_percent > 90 {
            return Err(PolicyError {
                field: reserve_field,
                value: self.reserve_percent,
                expected: "use 0–90 (a reserve above 90 % leaves nothing to plan with)",
            });
        }
        if self.margin_percent > 50 {
            return Err(PolicyError {
                field: margin_field,
                value: self.margin_percent,
                expected: "use 0–50 (each model figure already has a 10–20 % margin)",
            });
        }
        Ok(())
    }
}

impl BudgetPolicy {
    /// Checks the percentages.
    pub fn check(&self) -> Result<(), PolicyError> {
        self.ram.check("ram")?;
        self.gpu.check("gpu")
    }

    /// The policy for `device`.
    pub fn for_device(&self, device: PlanDevice) -> ReservePolicy {
        if device.is_gpu() { self.gpu } else { self.ram }
    }

    /// One budget per device of `machine`: RAM first, then its GPUs in order.
    pub fn budgets(&self, machine: &Machine) -> Vec<DeviceBudget> {
        let mut v = vec![DeviceBudget::new(
            PlanDevice::Cpu,
            machine.ram_bytes,
            self.ram,
        )];
        v.extend(
            machine
                .gpus
                .iter()
                .map(|g| DeviceBudget::new(g.device, g.memory_bytes, self.gpu)),
        );
        v
    }
}

/// The arithmetic for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceBudget {
    pub device: PlanDevice,
    pub total_bytes: u64,
    pub reserve_bytes: u64,
    pub margin_bytes: u64,
    /// `total − reserve − margin`: what models may reserve together.
    pub budget_bytes: u64,
}

impl DeviceBudget {
    /// Applies `policy` to `total_bytes` (see the module docs for the formula).
    pub fn new(device: PlanDevice, total_bytes: u64, policy: ReservePolicy) -> DeviceBudget {
        let scaled = (u128::from(total_bytes) * u128::from(policy.reserve_percent)).div_ceil(100);
        let reserve = u128::from(policy.reserve_base_bytes)
            .saturating_add(scaled)
            .min(u128::from(total_bytes)) as u64;
        let rest = total_bytes - reserve;
        let margin = (u128::from(rest) * u128::from(policy.margin_percent)).div_ceil(100) as u64;
        DeviceBudget {
            device,
            total_bytes,
            reserve_bytes: reserve,
            margin_bytes: margin,
            budget_bytes: rest - margin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::TIB;

    #[test]
    fn defaults_on_the_example_machines() {
        let ram = |gib: u64| DeviceBudget::new(PlanDevice::Cpu, gib * GIB, DEFAULT_RAM);
        // 24 GiB: reserve 4 + 1.2 GiB, margin 5 % of 18.8 GiB = 0.94 GiB, budget 17.86 GiB.
        let b = ram(24);
        assert_eq!(b.reserve_bytes, 4 * GIB + (24 * GIB * 5).div_ceil(100));
        assert_eq!(
            b.margin_bytes,
            (b.total_bytes - b.reserve_bytes).div_ceil(20)
        );
        assert_eq!(
            b.budget_bytes,
            b.total_bytes - b.reserve_bytes - b.margin_bytes
        );
        assert_eq!(b.budget_bytes / MIB, 18_288); // 17.86 GiB
        // The three parts always add up to the total.
        for gib in [1, 4, 24, 64, 128, 1024] {
            let b = ram(gib);
            assert_eq!(
                b.reserve_bytes + b.margin_bytes + b.budget_bytes,
                b.total_bytes
            );
        }
        // 1 TiB: 55.2 GiB reserve, far less than the original guide's 16 GB + 15 % (167 GB).
        let b = DeviceBudget::new(PlanDevice::Cpu, TIB, DEFAULT_RAM);
        assert_eq!(b.reserve_bytes, 4 * GIB + (TIB * 5).div_ceil(100));
        assert!(
            b.budget_bytes > 920 * GIB && b.budget_bytes < 921 * GIB,
            "{b:?}"
        );
        // A 24 GiB GPU: 512 MiB + 1.2 GiB reserve, 5 % margin.
        let g = DeviceBudget::new(PlanDevice::Cuda(0), 24 * GIB, DEFAULT_GPU);
        assert_eq!(g.reserve_bytes, 512 * MIB + (24 * GIB * 5).div_ceil(100));
        assert_eq!(g.budget_bytes / MIB, 21_693);
    }

    #[test]
    fn a_reserve_larger_than_the_device_leaves_nothing() {
        let b = DeviceBudget::new(PlanDevice::Cpu, 2 * GIB, DEFAULT_RAM);
        assert_eq!(b.reserve_bytes, 2 * GIB);
        assert_eq!(b.budget_bytes, 0);
        assert_eq!(b.margin_bytes, 0);
    }

    #[test]
    fn configured_policies_are_used_and_checked() {
        let p = ReservePolicy {
            reserve_base_bytes: 16 * GIB,
            reserve_percent: 0,
            margin_percent: 15,
        };
        // The original guide on a 128 GiB machine: 16 GiB, then 15 % of 112 GiB.
        let b = DeviceBudget::new(PlanDevice::Cpu, 128 * GIB, p);
        assert_eq!(b.reserve_bytes, 16 * GIB);
        assert_eq!(b.margin_bytes, (112 * GIB * 15).div_ceil(100));
        assert_eq!(b.budget_bytes, 112 * GIB - (112 * GIB * 15).div_ceil(100));

        let bad = BudgetPolicy {
            ram: ReservePolicy {
                margin_percent: 60,
                ..DEFAULT_RAM
            },
            gpu: DEFAULT_GPU,
        };
        let e = bad.check().unwrap_err();
        assert!(e.to_string().contains("ram margin_percent = 60 %"), "{e}");
        assert!(BudgetPolicy::default().check().is_ok());
    }
}
