//! Admission of generators no backend can run — Kimi K2 Instruct, a DeepSeek-V3-style MLA +
//! MoE model stored as GGUF architecture `deepseek2` (13 parts, ≈ 621 GB of Q4_K_M weights).
//! candle has no loader for it: its `deepseek2` module reads safetensors only and rejects
//! K2's sigmoid / `noaux_tc` routing.
//!
//! Such a model is still registered, so a request for it gets a typed answer at once, never a
//! load attempt (which would first evict every idle model to make room for 600 GB) and never
//! a panic: the pool's own `NeverFits` (estimate vs budget, the same test the scheduler makes)
//! where it cannot fit, else [`GenerateError::NoBackend`] naming the architecture.

use model_pool::{ByteSize, MemoryGovernor, PoolError};

use super::config::GeneratorConfig;
use super::error::GenerateError;

/// The refusal for a model of `config` whose architecture has no backend, against the
/// budgets of `governor`.
pub fn refusal(config: &GeneratorConfig, governor: &MemoryGovernor) -> GenerateError {
    let need = config.need_bytes();
    let budget = governor.budget(config.device).unwrap_or(0);
    if need > budget {
        GenerateError::Pool(PoolError::NeverFits {
            model: config.key.clone(),
            need: ByteSize(need),
            budget: ByteSize(budget),
            device: config.device,
        })
    } else {
        GenerateError::NoBackend {
            model: config.key.clone(),
            architecture: config.architecture.clone(),
            need: ByteSize(need),
            budget: ByteSize(budget),
            device: config.device,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_pool::DeviceId;
    use model_pool::size::GIB;

    #[test]
    fn kimi_never_fits_a_workstation_and_has_no_backend_on_a_large_host() {
        let kimi = GeneratorConfig::registry("unsloth/Kimi-K2-Instruct-GGUF", "k.gguf").unwrap();
        let small = MemoryGovernor::with_budgets([(DeviceId::Cpu, 24 * GIB)]).unwrap();
        match refusal(&kimi, &small) {
            GenerateError::Pool(PoolError::NeverFits { need, budget, .. }) => {
                assert!(need.0 > 570 * GIB, "{need}");
                assert_eq!(budget.0, 24 * GIB);
            }
            other => panic!("{other:?}"),
        }
        let large = MemoryGovernor::with_budgets([(DeviceId::Cpu, 2048 * GIB)]).unwrap();
        let err = refusal(&kimi, &large);
        assert!(
            matches!(&err, GenerateError::NoBackend { architecture, .. } if architecture == "deepseek2"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("no backend for architecture deepseek2"),
            "{err}"
        );
    }
}
