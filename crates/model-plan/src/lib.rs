//! Hardware fit planner: which registry models fit this machine, and together with which.
//!
//! 1. **Machine** — [`detect()`] reads RAM (sysinfo, lowered to a cgroup limit), cores, NUMA
//!    nodes, SIMD features, free space in the Hugging Face cache and NVIDIA GPUs (through
//!    NVML, [`NvmlGpus`]; other [`GpuProbe`]s can be passed to [`detect_with`]); [`MachineOverrides`] replaces any
//!    value, and [`Machine::with_ram`] describes a machine you don't have.
//! 2. **Budget** — [`BudgetPolicy`]: per device, an OS/runtime reserve and a safety margin
//!    (defaults and their reasons in [`budget`]).
//! 3. **Plan** — [`plan()`] sizes each model with the registry's own estimator
//!    ([`model_spec::estimate()`], the one `cargo xtask gen-memory-specs` uses) under the
//!    requested profile ([`PlanRequest`]: context length, KV dtype, batch, image size,
//!    staged or co-resident diffusion components), then splits each device's models into
//!    hot (kept resident), warm (loaded on demand beside the hot set) and never (with the
//!    shortfall); rules in [`planner`].
//! 4. **Output** — [`Plan`] is the file format the pool reads (JSON or TOML, see the
//!    [`plan` module](mod@plan) docs), [`table::render`] the terminal table, [`svg::render`] the picture.
//!
//! `cargo xtask plan` and `candle-pool plan` share one implementation:
//! `model_plan_cli::PlanArgs` (clap) and `model_plan_cli::run`.
//!
//! ```
//! use model_plan::{BudgetPolicy, Machine, PlanRequest, Tier, plan, size::GIB};
//! let cards = concat!(env!("CARGO_MANIFEST_DIR"), "/../../model-cards");
//! let registry = model_spec::Registry::load(std::path::Path::new(cards)).unwrap();
//! let laptop = Machine::with_ram(24 * GIB);
//! let p = plan(&registry, &laptop, &BudgetPolicy::default(), &PlanRequest::default()).unwrap();
//! assert_eq!(p.tier("unsloth/Kimi-K2-Instruct-GGUF"), Some(Tier::Never));
//! ```

pub mod budget;
pub mod detect;
pub mod machine;
pub mod plan;
pub mod planner;
pub mod request;
pub mod size;
pub mod svg;
pub mod table;

pub use budget::{BudgetPolicy, DeviceBudget, ReservePolicy};
pub use detect::{GpuProbe, NvmlGpus, detect, detect_with};
pub use machine::{Gpu, GpuKind, Machine, MachineOverrides, PlanDevice, Simd};
pub use plan::{
    DevicePlan, ModelPlan, PLAN_FORMAT_VERSION, Parts, Plan, PlanFileError, StagingPlan, Tier,
};
pub use planner::{PlanError, plan};
pub use request::{PlanRequest, ProfileOverrides, Staging};
pub use size::parse_size;
