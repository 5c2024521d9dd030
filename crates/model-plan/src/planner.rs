//! The plan: size every requested model with the registry's estimator under the requested
//! profile, place it on a device, and split each device's models into hot, warm and never.
//!
//! **Placement.** A CPU-profile model counts against RAM. A GPU-profile model counts against
//! the GPU with the largest budget (one of its own kind when there is one); on a machine
//! without a GPU it is planned on the CPU against RAM, re-estimated for the CPU, and the plan
//! says so. With `cpu_fallback`, a GPU model that fits no GPU is planned on the CPU likewise.
//!
//! **Staging.** A diffusion model (components in several stages) is estimated both with all
//! components co-resident and staged; `auto` uses co-resident when that fits the device
//! alone, else the staged peak.
//!
//! **Tiers.** A model whose reservation exceeds its device's budget is *never*, with the
//! shortfall. The others are split so that the hot set plus the largest warm model fit the
//! budget together: if everything fits at once, everything is hot; otherwise, for each choice
//! of "largest warm model" (every larger model must then be hot), the smaller models are made
//! hot smallest first while they fit, and the choice with the most hot models wins. Small
//! models are the ones worth pinning first: they are cheap to keep and usually the ones called
//! on every request (embedders), while pinning one large model can crowd out several small
//! ones. Between choices with as many hot models, the one with the most hot bytes wins: the
//! larger a model, the longer the load that pinning it saves.

use crate::budget::{BudgetPolicy, DeviceBudget, PolicyError};
use crate::machine::{GpuKind, Machine, PlanDevice};
use crate::plan::{DevicePlan, ModelPlan, PLAN_FORMAT_VERSION, Parts, Plan, StagingPlan, Tier};
use crate::request::{PlanRequest, Staging};
use crate::size::{gib, mb, mb_floor};
use model_spec::estimate::EstimateError;
use model_spec::{
    Device, ESTIMATOR_VERSION, MB, MemoryEstimate, Registry, RegistryModel, RunProfile, estimate,
};
use std::collections::BTreeSet;

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("unknown model `{given}`; registry keys: {known}")]
    UnknownModel { given: String, known: String },
    #[error(transparent)]
    Estimate(#[from] EstimateError),
    #[error("budget policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("request: {0}")]
    Request(String),
}

/// Makes the plan for `request` on `machine` (see the module docs for the rules).
pub fn plan(
    registry: &Registry,
    machine: &Machine,
    policy: &BudgetPolicy,
    request: &PlanRequest,
) -> Result<Plan, PlanError> {
    policy.check()?;
    for o in std::iter::once(&request.overrides).chain(request.per_model.values()) {
        if let Some(d) = o.kv_dtype {
            crate::request::check_kv_dtype(d).map_err(PlanError::Request)?;
        }
    }
    let selected = select(registry, &request.models)?;
    for key in request.per_model.keys() {
        resolve(registry, key)?;
    }
    let budgets = policy.budgets(machine);
    let budget_of = |d: PlanDevice| {
        budgets
            .iter()
            .find(|b| b.device == d)
            .map(|b| b.budget_bytes)
            .unwrap_or(0)
    };

    let mut models = Vec::with_capacity(selected.len());
    for m in selected {
        let key = m.entry.key.get_ref();
        let per_model = request
            .per_model
            .iter()
            .find(|(k, _)| resolve(registry, k).is_ok_and(|r| r.entry.key.get_ref() == key))
            .map(|(_, o)| o.clone())
            .unwrap_or_default();
        let overrides = request.overrides.then(&per_model);
        let profile = overrides.apply(&m.entry.profile);
        let staging = overrides.staging.unwrap_or_default();

        let mut notes = Vec::new();
        let target = place(&budgets, profile.device);
        if target.is_gpu() && target.estimator_device() != profile.device {
            notes.push(format!(
                "profile runs on {}; this machine has no such GPU, so it is planned on {target}",
                profile.device
            ));
        }
        if profile.device != Device::Cpu && target == PlanDevice::Cpu {
            notes.push(format!(
                "profile runs on {}; this machine has no GPU, so it is planned on the CPU against RAM",
                profile.device
            ));
        }
        let mut sized = size(m, &profile, target, staging, budget_of(target))?;
        if cpu_fallback_applies(request, target, &sized, budget_of(target)) {
            let on_cpu = size(
                m,
                &profile,
                PlanDevice::Cpu,
                staging,
                budget_of(PlanDevice::Cpu),
            )?;
            if on_cpu.reservation_bytes() <= budget_of(PlanDevice::Cpu) {
                notes.push(format!(
                    "does not fit {} ({} needed); planned on the CPU against RAM (--cpu-fallback)",
                    target,
                    mb(sized.reservation_bytes())
                ));
                sized = on_cpu;
            }
        }
        notes.extend(sized.notes.iter().cloned());
        let registry_mb = estimate(&m.spec.spec, &m.entry.profile)?.est_memory_allocation_mb;
        models.push(ModelPlan {
            key: key.clone(),
            name: m.spec.spec.name.clone(),
            capability: m.entry.capability,
            tier: Tier::Warm,
            device: sized.device,
            reservation_mb: sized.estimate.est_memory_allocation_mb,
            registry_mb,
            profile: sized.profile,
            parts: Parts::from(&sized.estimate),
            staging: sized.staging,
            misses_by_bytes: None,
            notes,
        });
    }

    let devices: Vec<DevicePlan> = budgets
        .iter()
        .map(|b| assign_tiers(b, &mut models, request.cpu_fallback))
        .collect();

    let mut notes = machine_notes(machine, registry, &models);
    notes.extend(devices.iter().filter_map(|d| crowded_note(d, &models)));
    Ok(Plan {
        format_version: PLAN_FORMAT_VERSION,
        estimator_version: ESTIMATOR_VERSION,
        machine: machine.clone(),
        policy: *policy,
        request: request.clone(),
        devices,
        models,
        notes,
    })
}

/// The registry models named in `keys` (all when empty), in registry order.
pub fn select<'r>(
    registry: &'r Registry,
    keys: &[String],
) -> Result<Vec<&'r RegistryModel>, PlanError> {
    if keys.is_empty() {
        return Ok(registry.models.iter().collect());
    }
    let mut wanted = BTreeSet::new();
    for k in keys {
        wanted.insert(resolve(registry, k)?.entry.key.get_ref().clone());
    }
    Ok(registry
        .models
        .iter()
        .filter(|m| wanted.contains(m.entry.key.get_ref()))
        .collect())
}

/// A model by registry key, or by the part after `/`, ignoring case.
pub fn resolve<'r>(registry: &'r Registry, given: &str) -> Result<&'r RegistryModel, PlanError> {
    let g = given.trim();
    let by_key = registry
        .models
        .iter()
        .find(|m| m.entry.key.get_ref().eq_ignore_ascii_case(g));
    let by_name = || {
        let mut hits = registry.models.iter().filter(|m| {
            m.entry
                .key
                .get_ref()
                .rsplit('/')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(g))
        });
        match (hits.next(), hits.next()) {
            (Some(m), None) => Some(m),
            _ => None,
        }
    };
    by_key
        .or_else(by_name)
        .ok_or_else(|| PlanError::UnknownModel {
            given: given.to_owned(),
            known: registry
                .models
                .iter()
                .map(|m| m.entry.key.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The device a model with `wanted` profile device is planned on.
fn place(budgets: &[DeviceBudget], wanted: Device) -> PlanDevice {
    let kind = match wanted {
        Device::Cpu => return PlanDevice::Cpu,
        Device::Cuda => GpuKind::Cuda,
        Device::Metal => GpuKind::Metal,
    };
    let of_kind = |d: PlanDevice| match kind {
        GpuKind::Cuda => matches!(d, PlanDevice::Cuda(_)),
        GpuKind::Metal => matches!(d, PlanDevice::Metal(_)),
    };
    let gpus = || budgets.iter().filter(|b| b.device.is_gpu());
    let best = |it: &mut dyn Iterator<Item = &DeviceBudget>| {
        // Largest budget; on a tie the lowest index (max_by_key keeps the last maximum).
        it.fold(None::<&DeviceBudget>, |best, b| match best {
            Some(x) if x.budget_bytes >= b.budget_bytes => Some(x),
            _ => Some(b),
        })
        .map(|b| b.device)
    };
    best(&mut gpus().filter(|b| of_kind(b.device)))
        .or_else(|| best(&mut gpus()))
        .unwrap_or(PlanDevice::Cpu)
}

/// A model sized for one device.
struct Sized {
    device: PlanDevice,
    profile: RunProfile,
    estimate: MemoryEstimate,
    staging: Option<StagingPlan>,
    notes: Vec<String>,
}

impl Sized {
    fn reservation_bytes(&self) -> u64 {
        self.estimate.est_memory_allocation_mb * MB
    }
}

fn cpu_fallback_applies(req: &PlanRequest, target: PlanDevice, s: &Sized, budget: u64) -> bool {
    req.cpu_fallback && target.is_gpu() && s.reservation_bytes() > budget
}

/// Estimates `m` under `profile` on `device`, choosing co-resident or staged components.
fn size(
    m: &RegistryModel,
    profile: &RunProfile,
    device: PlanDevice,
    staging: Staging,
    budget: u64,
) -> Result<Sized, EstimateError> {
    let spec = &m.spec.spec;
    let mut p = profile.clone();
    p.device = device.estimator_device();
    let stages: BTreeSet<_> = spec.components.iter().map(|c| c.stage as u8).collect();
    if stages.len() < 2 {
        let e = estimate(spec, &p)?;
        return Ok(Sized {
            device,
            profile: p,
            estimate: e,
            staging: None,
            notes: Vec::new(),
        });
    }
    let together = RunProfile {
        co_resident: true,
        ..p.clone()
    };
    let staged = RunProfile {
        co_resident: false,
        ..p
    };
    let (e_co, e_st) = (estimate(spec, &together)?, estimate(spec, &staged)?);
    let fits = |e: &MemoryEstimate| e.est_memory_allocation_mb * MB <= budget;
    let use_staged = match staging {
        Staging::CoResident => false,
        Staging::Staged => true,
        Staging::Auto => !fits(&e_co),
    };
    let mut notes = Vec::new();
    let plan = StagingPlan {
        co_resident_mb: e_co.est_memory_allocation_mb,
        staged_mb: e_st.est_memory_allocation_mb,
        used: if use_staged {
            Staging::Staged
        } else {
            Staging::CoResident
        },
    };
    let (profile, e) = if use_staged {
        if staging == Staging::Auto {
            notes.push(format!(
                "co-resident components need {}, more than the {} budget; staged components peak at {}",
                mb(plan.co_resident_mb * MB),
                device,
                mb(plan.staged_mb * MB)
            ));
        }
        if let Some(n) = e_st.notes.iter().find(|n| n.contains("peak stage")) {
            notes.push(n.clone());
        }
        (staged, e_st)
    } else {
        (together, e_co)
    };
    Ok(Sized {
        device,
        profile,
        estimate: e,
        staging: Some(plan),
        notes,
    })
}

/// Sets the tier of every model on `b.device` and returns the device's summary.
fn assign_tiers(b: &DeviceBudget, models: &mut [ModelPlan], cpu_fallback: bool) -> DevicePlan {
    let budget = b.budget_bytes;
    let mut fitting: Vec<usize> = Vec::new();
    for (i, m) in models.iter_mut().enumerate() {
        if m.device != b.device {
            continue;
        }
        let need = m.reservation_bytes();
        if need > budget {
            m.tier = Tier::Never;
            m.misses_by_bytes = Some(need - budget);
            if b.device.is_gpu() && !cpu_fallback {
                m.notes.push(
                    "run it on the CPU instead with --cpu-fallback (or --set KEY:device=cpu)"
                        .to_owned(),
                );
            }
        } else {
            fitting.push(i);
        }
    }
    // Ascending by size; ties keep registry order.
    fitting.sort_by_key(|&i| (models[i].reservation_bytes(), i));
    let sizes: Vec<u64> = fitting
        .iter()
        .map(|&i| models[i].reservation_bytes())
        .collect();
    let hot = choose_hot(&sizes, budget);
    let mut hot_bytes = 0;
    let mut largest_warm: Option<usize> = None;
    for (j, &i) in fitting.iter().enumerate() {
        if hot[j] {
            models[i].tier = Tier::Hot;
            hot_bytes += sizes[j];
        } else {
            models[i].tier = Tier::Warm;
            if largest_warm.is_none_or(|w| models[w].reservation_bytes() < sizes[j]) {
                largest_warm = Some(i);
            }
        }
    }
    let largest_warm_bytes = largest_warm.map_or(0, |i| models[i].reservation_bytes());
    DevicePlan {
        device: b.device,
        total_bytes: b.total_bytes,
        reserve_bytes: b.reserve_bytes,
        margin_bytes: b.margin_bytes,
        budget_bytes: budget,
        hot_bytes,
        largest_warm: largest_warm.map(|i| models[i].key.clone()),
        largest_warm_bytes,
        headroom_bytes: budget.saturating_sub(hot_bytes + largest_warm_bytes),
    }
}

/// Says so when the largest warm model leaves no room to pin anything.
fn crowded_note(d: &DevicePlan, models: &[ModelPlan]) -> Option<String> {
    let warm = d.largest_warm.as_ref()?;
    let smallest_warm = models
        .iter()
        .filter(|m| m.device == d.device && m.tier == Tier::Warm)
        .map(ModelPlan::reservation_bytes)
        .min()?;
    (d.hot_bytes == 0 && smallest_warm > d.headroom_bytes).then(|| {
        format!(
            "{}: nothing can stay resident: the largest warm model, {warm} ({}), leaves {} of the {} budget; plan without it (--models) to keep smaller models hot",
            d.device,
            mb(d.largest_warm_bytes),
            mb_floor(d.headroom_bytes),
            mb_floor(d.budget_bytes)
        )
    })
}

/// Which of `sizes` (ascending, each ≤ `budget`) are hot, so that the hot ones plus the
/// largest of the rest fit `budget`. See the module docs for the rule.
pub fn choose_hot(sizes: &[u64], budget: u64) -> Vec<bool> {
    let n = sizes.len();
    if sizes.iter().sum::<u64>() <= budget {
        return vec![true; n];
    }
    let mut best: Option<(usize, u64, Vec<bool>)> = None;
    for k in 0..n {
        // Model k is the largest warm one, so every model after it is hot.
        let forced: u64 = sizes[k + 1..].iter().sum();
        let Some(mut room) = budget.checked_sub(forced + sizes[k]) else {
            continue;
        };
        let mut hot = vec![false; n];
        hot[k + 1..].iter_mut().for_each(|h| *h = true);
        for j in 0..k {
            if sizes[j] <= room {
                room -= sizes[j];
                hot[j] = true;
            } else {
                break;
            }
        }
        let count = hot.iter().filter(|h| **h).count();
        let bytes: u64 = (0..n).filter(|&j| hot[j]).map(|j| sizes[j]).sum();
        if best
            .as_ref()
            .is_none_or(|(c, b, _)| (count, bytes) > (*c, *b))
        {
            best = Some((count, bytes, hot));
        }
    }
    best.map_or_else(|| vec![false; n], |(_, _, hot)| hot)
}

/// Plan-wide remarks about the machine (RAM free right now, disk, SIMD build flags, NUMA).
fn machine_notes(machine: &Machine, registry: &Registry, models: &[ModelPlan]) -> Vec<String> {
    let mut notes =
        vec!["sizes in MB are 1,048,576 bytes, rounded up to 100 MB like the registry".to_owned()];
    let hot_ram: u64 = models
        .iter()
        .filter(|m| m.tier == Tier::Hot && m.device == PlanDevice::Cpu)
        .map(ModelPlan::reservation_bytes)
        .sum();
    if let Some(avail) = machine.ram_available_bytes
        && avail < hot_ram
    {
        notes.push(format!(
            "only {} of RAM is free right now; the hot set needs {}",
            gib(avail),
            gib(hot_ram)
        ));
    }
    if let Some(free) = machine.model_cache_free_bytes {
        let on_disk: u64 = models
            .iter()
            .filter(|m| m.tier != Tier::Never)
            .filter_map(|m| registry.get(&m.key))
            .flat_map(|r| r.spec.spec.components.iter())
            .map(|c| c.weights.total_bytes())
            .sum();
        if on_disk > free {
            notes.push(format!(
                "the models that fit take {} on disk, but the model cache has {} free (models already downloaded need no more)",
                gib(on_disk),
                gib(free)
            ));
        }
    }
    if let Some(simd) = &machine.simd {
        let missing: Vec<&str> = ["avx2", "fma", "f16c", "avx512f", "neon"]
            .into_iter()
            .filter(|f| simd.detected.iter().any(|d| d == f))
            .filter(|f| !simd.compiled.iter().any(|c| c == f))
            .collect();
        if !missing.is_empty() && !simd.compiled.is_empty() {
            notes.push(format!(
                "the CPU has {} but this build does not use them; build with RUSTFLAGS=\"-C target-cpu=native\" for faster CPU inference",
                missing.join(", ")
            ));
        } else if !missing.is_empty() {
            notes.push(format!(
                "the CPU has {}; build with RUSTFLAGS=\"-C target-cpu=native\" so candle's CPU kernels use them",
                missing.join(", ")
            ));
        }
    }
    if let Some(n) = machine.numa_nodes
        && n > 1
    {
        notes.push(format!(
            "{n} NUMA nodes: a large model's weights span nodes; interleave memory (numactl --interleave=all) or pin the process to one node for models that fit in it"
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::choose_hot;

    #[test]
    fn everything_hot_when_everything_fits() {
        assert_eq!(choose_hot(&[1, 2, 3], 6), vec![true; 3]);
    }

    #[test]
    fn hot_set_leaves_room_for_the_largest_warm_model() {
        // Budget 10: largest (8) warm leaves 2 → only the 1 is hot, the 2 no longer fits.
        assert_eq!(
            choose_hot(&[1, 2, 3, 8], 10),
            vec![true, false, false, false]
        );
        // Budget 12: 8 warm leaves 4 → {1, 2} hot; 3 warm with 8 hot leaves 1 → {1, 8} hot.
        // Two hot models either way; {1, 8} keeps more bytes resident.
        assert_eq!(
            choose_hot(&[1, 2, 3, 8], 12),
            vec![true, false, false, true]
        );
        // Budget 11: only {1, 2} (8 hot + 3 warm = 11 leaves nothing for the 1).
        assert_eq!(
            choose_hot(&[1, 2, 3, 8], 11),
            vec![true, true, false, false]
        );
        // Budget 13: two hot models at most, three ways: {1, 2} with 8 warm (3 bytes hot),
        // {1, 8} with 3 warm (9), {3, 8} with 2 warm (11). The most hot bytes wins.
        assert_eq!(
            choose_hot(&[1, 2, 3, 8], 13),
            vec![false, false, true, true]
        );
        // Nothing can be hot when the largest model alone nearly fills the budget.
        assert_eq!(choose_hot(&[2, 9], 10), vec![false, false]);
    }
}
