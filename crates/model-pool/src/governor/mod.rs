//! The process-wide memory governor: one budget per device, reservations as RAII guards.
//!
//! Every pool in the process draws on the same governor, so two pools can never each believe
//! they own 80% of RAM (the original project built five governors that did exactly that).

mod config;
mod detect;
mod ledger;
mod reservation;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

pub use config::{ENV_DEVICE_BUDGET_PREFIX, ENV_OS_RESERVE, ENV_RAM_BUDGET, GovernorConfig};
#[cfg(feature = "metal")]
pub use detect::MetalProbe;
pub use detect::{DetectedMemory, MemoryProbe, NvmlProbe, SystemRamProbe};
pub use reservation::Reservation;

use crate::device::DeviceId;
use crate::error::{GovernorError, ReserveError};
use crate::size::ByteSize;
use ledger::{DeviceLedger, ReleaseSignal};

/// Budgets per device and the reservations held against them.
///
/// Cloning a `MemoryGovernor` clones a handle to the same shared ledgers (an `Arc`): every
/// clone sees and changes the same counters. There is no way to copy the counters themselves.
#[derive(Clone)]
pub struct MemoryGovernor {
    inner: Arc<Inner>,
}

struct Inner {
    /// Fixed at construction, so lookups need no lock.
    ledgers: BTreeMap<DeviceId, Arc<DeviceLedger>>,
    signal: Arc<ReleaseSignal>,
}

/// Budget and use of one device at one moment (serialized with the device by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeviceUsage {
    /// The device.
    pub device: DeviceId,
    /// Its budget.
    pub budget_bytes: u64,
    /// Bytes held by live reservations.
    pub reserved_bytes: u64,
    /// Number of live reservation guards.
    pub live_reservations: u64,
    /// The most ever reserved at once.
    pub high_water_bytes: u64,
}

static GLOBAL: OnceLock<MemoryGovernor> = OnceLock::new();

impl MemoryGovernor {
    /// A governor with the budgets `config` resolves to. Prefer [`global`](Self::global) in
    /// applications; separate governors are for tests and for budgets that are truly separate.
    pub fn new(config: GovernorConfig) -> Result<Self, GovernorError> {
        Self::with_budgets(config.resolve()?)
    }

    /// A governor with exactly these budgets in bytes.
    pub fn with_budgets(
        budgets: impl IntoIterator<Item = (DeviceId, u64)>,
    ) -> Result<Self, GovernorError> {
        let signal = Arc::new(ReleaseSignal::new());
        let mut ledgers = BTreeMap::new();
        for (device, budget) in budgets {
            let ledger = Arc::new(DeviceLedger::new(device, budget, Arc::clone(&signal)));
            if ledgers.insert(device, ledger).is_some() {
                return Err(GovernorError::DuplicateDevice(device));
            }
        }
        if ledgers.is_empty() {
            return Err(GovernorError::NoDevices);
        }
        Ok(MemoryGovernor {
            inner: Arc::new(Inner { ledgers, signal }),
        })
    }

    /// The process-wide governor, built on first use from [`GovernorConfig::from_env`]
    /// (detected RAM minus the OS reserve, overridable by `MODEL_POOL_BUDGET` and friends)
    /// unless [`install_global`](Self::install_global) ran first.
    pub fn global() -> Result<&'static MemoryGovernor, GovernorError> {
        if let Some(governor) = GLOBAL.get() {
            return Ok(governor);
        }
        let built = Self::new(GovernorConfig::from_env()?)?;
        // Two threads may both build one; only the first is kept, and the other never held
        // a reservation, so dropping it loses nothing.
        Ok(GLOBAL.get_or_init(|| built))
    }

    /// Makes `self` the process-wide governor. Fails if one is already in use, because
    /// swapping budgets under live reservations would break the accounting.
    pub fn install_global(self) -> Result<&'static MemoryGovernor, GovernorError> {
        let mut installed = false;
        let global = GLOBAL.get_or_init(|| {
            installed = true;
            self
        });
        if installed {
            Ok(global)
        } else {
            Err(GovernorError::AlreadyInstalled)
        }
    }

    /// Reserves `bytes` on `device` if they fit in what is left of its budget. Never blocks
    /// and never over-commits; waiting for memory is the pool's job, not the governor's.
    pub fn try_reserve(&self, device: DeviceId, bytes: u64) -> Result<Reservation, ReserveError> {
        self.ledger(device)?.reserve(bytes)
    }

    /// The devices this governor has budgets for.
    pub fn devices(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.inner.ledgers.keys().copied()
    }

    /// The budget of `device`.
    pub fn budget(&self, device: DeviceId) -> Option<u64> {
        self.inner.ledgers.get(&device).map(|l| l.budget)
    }

    /// Bytes reserved on `device` now.
    pub fn reserved(&self, device: DeviceId) -> Option<u64> {
        self.inner.ledgers.get(&device).map(|l| l.reserved())
    }

    /// Bytes of `device`'s budget not reserved now.
    pub fn free(&self, device: DeviceId) -> Option<u64> {
        self.inner
            .ledgers
            .get(&device)
            .map(|l| l.budget.saturating_sub(l.reserved()))
    }

    /// Bytes reserved over all devices.
    pub fn total_reserved(&self) -> u64 {
        self.inner.ledgers.values().map(|l| l.reserved()).sum()
    }

    /// Live reservation guards over all devices (0 once everything is released).
    pub fn live_reservations(&self) -> u64 {
        self.inner
            .ledgers
            .values()
            .map(|l| l.live.load(Ordering::Relaxed))
            .sum()
    }

    /// Budget and use of every device.
    pub fn usage(&self) -> Vec<DeviceUsage> {
        self.inner
            .ledgers
            .values()
            .map(|l| DeviceUsage {
                device: l.device,
                budget_bytes: l.budget,
                reserved_bytes: l.reserved(),
                live_reservations: l.live.load(Ordering::Relaxed),
                high_water_bytes: l.high_water.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Whether two handles share one set of ledgers.
    pub fn same_as(&self, other: &MemoryGovernor) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn ledger(&self, device: DeviceId) -> Result<&Arc<DeviceLedger>, ReserveError> {
        self.inner
            .ledgers
            .get(&device)
            .ok_or(ReserveError::UnknownDevice(device))
    }

    /// Registers interest in releases; releases only pay for a wake-up while someone
    /// watches. Pair with [`unwatch_releases`](Self::unwatch_releases). Enable the
    /// `Notified` future *before* calling this, then re-check the state, then await.
    pub(crate) fn watch_releases(&self) {
        self.inner.signal.watch();
    }

    pub(crate) fn unwatch_releases(&self) {
        self.inner.signal.unwatch();
    }

    pub(crate) fn release_notify(&self) -> &Notify {
        self.inner.signal.notify_handle()
    }
}

impl fmt::Debug for MemoryGovernor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for usage in self.usage() {
            map.entry(
                &usage.device,
                &format_args!(
                    "{} of {}",
                    ByteSize(usage.reserved_bytes),
                    ByteSize(usage.budget_bytes)
                ),
            );
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::GIB;

    fn governor(budget: u64) -> MemoryGovernor {
        MemoryGovernor::with_budgets([(DeviceId::Cpu, budget), (DeviceId::Cuda(0), budget)])
            .unwrap()
    }

    #[test]
    fn release_is_exact_and_returns_to_zero() {
        let g = governor(10 * GIB);
        let a = g.try_reserve(DeviceId::Cpu, 3 * GIB).unwrap();
        let b = g.try_reserve(DeviceId::Cpu, 5 * GIB).unwrap();
        assert_eq!(g.reserved(DeviceId::Cpu), Some(8 * GIB));
        assert_eq!(g.reserved(DeviceId::Cuda(0)), Some(0));
        drop(a);
        assert_eq!(g.reserved(DeviceId::Cpu), Some(5 * GIB));
        drop(b);
        assert_eq!(g.total_reserved(), 0);
        assert_eq!(g.live_reservations(), 0);
    }

    #[test]
    fn reservation_beyond_budget_is_refused_with_figures() {
        let g = governor(10 * GIB);
        let _a = g.try_reserve(DeviceId::Cpu, 8 * GIB).unwrap();
        let err = g.try_reserve(DeviceId::Cpu, 3 * GIB).unwrap_err();
        match err {
            ReserveError::Insufficient {
                device,
                need,
                free,
                budget,
            } => {
                assert_eq!(
                    (device, need.0, free.0, budget.0),
                    (DeviceId::Cpu, 3 * GIB, 2 * GIB, 10 * GIB)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            g.reserved(DeviceId::Cpu),
            Some(8 * GIB),
            "a refused reservation holds nothing"
        );
        assert!(matches!(
            g.try_reserve(DeviceId::Metal(0), 1),
            Err(ReserveError::UnknownDevice(_))
        ));
        assert!(
            g.try_reserve(DeviceId::Cpu, u64::MAX).is_err(),
            "overflow is refused, not wrapped"
        );
    }

    #[test]
    fn clones_share_counters_never_copy_them() {
        let g = governor(10 * GIB);
        let clone = g.clone();
        let r = clone.try_reserve(DeviceId::Cpu, GIB).unwrap();
        assert_eq!(
            g.reserved(DeviceId::Cpu),
            Some(GIB),
            "the original sees the clone's reservation"
        );
        drop(clone);
        drop(r);
        assert_eq!(
            g.reserved(DeviceId::Cpu),
            Some(0),
            "releasing after the clone is gone still decrements the shared counter"
        );
        assert!(g.same_as(&g.clone()));
    }

    #[test]
    fn split_and_merge_keep_the_total() {
        let g = governor(10 * GIB);
        let mut r = g.try_reserve(DeviceId::Cpu, 4 * GIB).unwrap();
        let part = r.split(GIB).unwrap();
        assert_eq!((r.bytes(), part.bytes()), (3 * GIB, GIB));
        assert!(r.split(5 * GIB).is_none());
        assert_eq!(g.reserved(DeviceId::Cpu), Some(4 * GIB));
        assert_eq!(g.live_reservations(), 2);
        drop(part);
        assert_eq!(g.reserved(DeviceId::Cpu), Some(3 * GIB));
        let other = g.try_reserve(DeviceId::Cpu, GIB).unwrap();
        r.merge(other).unwrap();
        assert_eq!(g.live_reservations(), 1);
        let gpu = g.try_reserve(DeviceId::Cuda(0), GIB).unwrap();
        let gpu = r.merge(gpu).unwrap_err();
        assert_eq!(gpu.device(), DeviceId::Cuda(0));
        r.try_grow(GIB).unwrap();
        assert!(r.try_grow(10 * GIB).is_err());
        assert_eq!(r.bytes(), 5 * GIB);
        drop((r, gpu));
        assert_eq!((g.total_reserved(), g.live_reservations()), (0, 0));
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_budget() {
        let budget = 100 * GIB / 1024;
        let g = governor(budget);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let g = g.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..20_000u64 {
                        let size = (i * 7919 + t * 104_729) % (budget / 8) + 1;
                        if let Ok(r) = g.try_reserve(DeviceId::Cpu, size) {
                            held.push(r);
                        }
                        assert!(g.reserved(DeviceId::Cpu).unwrap() <= budget);
                        if held.len() > 6 || i % 3 == 0 {
                            held.pop();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(g.total_reserved(), 0);
        assert_eq!(g.live_reservations(), 0);
        assert!(g.usage()[0].high_water_bytes <= budget);
    }

    #[test]
    fn duplicate_or_missing_devices_are_refused() {
        assert!(matches!(
            MemoryGovernor::with_budgets([(DeviceId::Cpu, 1), (DeviceId::Cpu, 2)]),
            Err(GovernorError::DuplicateDevice(DeviceId::Cpu))
        ));
        assert!(matches!(
            MemoryGovernor::with_budgets([]),
            Err(GovernorError::NoDevices)
        ));
    }

    #[test]
    fn global_is_one_instance() {
        let a = MemoryGovernor::global().unwrap();
        let b = MemoryGovernor::global().unwrap();
        assert!(a.same_as(b));
        assert!(a.budget(DeviceId::Cpu).unwrap_or(0) > 0);
        let other = governor(GIB);
        assert!(matches!(
            other.install_global(),
            Err(GovernorError::AlreadyInstalled)
        ));
    }
}
