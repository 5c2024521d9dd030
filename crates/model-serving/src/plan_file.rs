//! A pool configured from a plan file: the device budgets and each model's tier, as written
//! by `cargo xtask plan --write plan.json` or `candle-pool plan --write plan.json`. The planner
//! and the pool read the same format (`model_plan::Plan`), so what the plan promised is what
//! the pool enforces.

use crate::config::ServedModel;
use model_plan::{Plan, PlanDevice};
use model_pool::{DeviceId, GovernorConfig, Tier};
use std::path::Path;

/// Why a plan could not configure the pool.
#[derive(Debug, thiserror::Error)]
pub enum PlanConfigError {
    #[error("model `{0}` is not in the plan; re-run `cargo xtask plan --write …` including it")]
    NotPlanned(String),
    #[error(
        "model `{key}` never fits {device} in this plan (it misses by {misses_mb} MB); drop it or plan for a bigger machine"
    )]
    NeverFits {
        key: String,
        device: String,
        misses_mb: u64,
    },
    #[error("plan device `{0}` is not a pool device: {1}")]
    Device(String, String),
    #[error(transparent)]
    File(#[from] model_plan::PlanFileError),
}

/// The pool device of a plan device.
pub fn device_of(d: PlanDevice) -> Result<DeviceId, PlanConfigError> {
    let name = d.to_string();
    name.parse()
        .map_err(|e| PlanConfigError::Device(name.clone(), format!("{e}")))
}

/// Governor budgets for every device the plan budgets (the reserve and margin are already
/// taken off `budget_bytes`, so the pool's own reserve is set to zero).
pub fn governor_config(plan: &Plan) -> Result<GovernorConfig, PlanConfigError> {
    let mut config = GovernorConfig::empty();
    for d in &plan.devices {
        let device = device_of(d.device)?;
        config = config.budget(device, d.budget_bytes).reserve(device, 0);
    }
    Ok(config)
}

/// The pool tier the plan gives `key`: hot models are pinned and preloaded, warm ones load
/// on demand with the default idle TTL; a model the plan says never fits is refused here,
/// before anything is loaded.
pub fn tier_of(plan: &Plan, key: &str) -> Result<(Tier, DeviceId), PlanConfigError> {
    let m = plan
        .model(key)
        .ok_or_else(|| PlanConfigError::NotPlanned(key.to_owned()))?;
    let device = device_of(m.device)?;
    let tier = match m.tier {
        model_plan::Tier::Hot => Tier::Hot { pinned: true },
        model_plan::Tier::Warm => Tier::Warm {
            idle_ttl: model_pool::ModelSpec::DEFAULT_IDLE_TTL,
        },
        model_plan::Tier::Never => {
            return Err(PlanConfigError::NeverFits {
                key: key.to_owned(),
                device: m.device.to_string(),
                misses_mb: m.misses_by_bytes.unwrap_or(0).div_ceil(model_spec::MB),
            });
        }
    };
    Ok((tier, device))
}

/// `config` with the tier and device the plan gives its model.
pub fn apply(plan: &Plan, config: ServedModel) -> Result<ServedModel, PlanConfigError> {
    let (tier, device) = tier_of(plan, &config.key)?;
    Ok(config.tier(tier).device(device))
}

/// Reads a plan file (`.json` or `.toml`).
pub fn load(path: &Path) -> Result<Plan, PlanConfigError> {
    Ok(Plan::load(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_plan::{BudgetPolicy, GpuKind, Machine, PlanRequest};

    fn plan_for(ram_gib: u64, vram_gib: Option<u64>) -> Plan {
        let registry = crate::registry::specs().unwrap();
        let mut machine = Machine::with_ram(ram_gib << 30);
        if let Some(v) = vram_gib {
            machine = machine.gpu(GpuKind::Cuda, v << 30);
        }
        model_plan::plan(
            registry,
            &machine,
            &BudgetPolicy::default(),
            &PlanRequest::default(),
        )
        .unwrap()
    }

    #[test]
    fn the_pool_reads_budgets_and_tiers_from_the_plan() {
        let plan = plan_for(128, Some(24));
        let budgets = governor_config(&plan).unwrap().resolve().unwrap();
        for d in &plan.devices {
            assert_eq!(budgets[&device_of(d.device).unwrap()], d.budget_bytes);
        }
        // Hot models are pinned, warm ones load on demand, never-fits is refused up front.
        let (tier, device) = tier_of(&plan, "sentence-transformers/all-MiniLM-L6-v2").unwrap();
        assert_eq!((tier, device), (Tier::Hot { pinned: true }, DeviceId::Cpu));
        let (tier, device) = tier_of(&plan, "llava-hf/llava-1.5-7b-hf").unwrap();
        assert!(matches!(tier, Tier::Warm { .. }));
        assert_eq!(device, DeviceId::Cuda(0));
        let err = tier_of(&plan, "unsloth/Kimi-K2-Instruct-GGUF").unwrap_err();
        assert!(err.to_string().contains("never fits cpu"), "{err}");
        assert!(matches!(
            tier_of(&plan, "nope/nope"),
            Err(PlanConfigError::NotPlanned(_))
        ));
        let config = apply(
            &plan,
            ServedModel::registry("sentence-transformers/all-MiniLM-L6-v2", "unused").unwrap(),
        )
        .unwrap();
        assert_eq!(config.tier, Tier::Hot { pinned: true });
    }

    #[test]
    fn a_plan_file_round_trips_into_the_same_pool_configuration() {
        let plan = plan_for(24, None);
        let dir = std::env::temp_dir().join(format!("pool-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plan.json");
        std::fs::write(&path, plan.to_json()).unwrap();
        let read = load(&path).unwrap();
        assert_eq!(read, plan);
        for m in &plan.models {
            assert_eq!(tier_of(&read, &m.key).ok(), tier_of(&plan, &m.key).ok());
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
