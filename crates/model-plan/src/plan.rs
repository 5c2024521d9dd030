//! The plan format: what `cargo xtask plan --write plan.json` (or `.toml`) writes and what
//! the pool reads to configure its tiers.
//!
//! A plan is self-contained: the machine it was made for, the budget policy, the request, one
//! [`DevicePlan`] per memory domain and one [`ModelPlan`] per model. Sizes are bytes except
//! `reservation_mb` / `registry_mb`, which are in the registry's MB (1 MB = 1,048,576 B,
//! rounded up to a multiple of 100 like `est_memory_allocation_mb`). Device names are `cpu`,
//! `cuda:N`, `metal:N` (the pool's `DeviceId` spelling).
//!
//! For the pool:
//! ```
//! # let cards = concat!(env!("CARGO_MANIFEST_DIR"), "/../../model-cards");
//! # let registry = model_spec::Registry::load(std::path::Path::new(cards)).unwrap();
//! # let machine = model_plan::Machine::with_ram(64 << 30);
//! # let plan = model_plan::plan(&registry, &machine, &Default::default(), &Default::default()).unwrap();
//! # let text = plan.to_json();
//! use model_plan::{Plan, Tier};
//! let plan = Plan::from_json(&text)?; // or Plan::from_toml, or Plan::load(path)
//! for device in &plan.devices {
//!     // device.device.to_string() parses as the pool's DeviceId; budget_bytes is its budget.
//!     let _ = (device.device.to_string(), device.budget_bytes);
//! }
//! for m in plan.models_in(Tier::Hot) {
//!     // pin and preload m.key on m.device, reserving m.reservation_bytes()
//!     let _ = (&m.key, m.device, m.reservation_bytes());
//! }
//! assert_eq!(plan.tier("unsloth/Kimi-K2-Instruct-GGUF"), Some(Tier::Never));
//! # Ok::<(), model_plan::PlanFileError>(())
//! ```

use crate::budget::BudgetPolicy;
use crate::machine::{Machine, PlanDevice};
use crate::request::{PlanRequest, Staging};
use model_spec::{Capability, MB, RunProfile};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Version of this format; bumped on any incompatible change.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// Where a model stands on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Preloaded and pinned: always resident.
    Hot,
    /// Loaded on demand next to the hot set, evicted when idle.
    Warm,
    /// Does not fit this device even alone.
    Never,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Warm => "warm",
            Tier::Never => "never",
        }
    }
}

/// A plan for one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// [`PLAN_FORMAT_VERSION`].
    pub format_version: u32,
    /// `model_spec::ESTIMATOR_VERSION` of the figures.
    pub estimator_version: u32,
    pub machine: Machine,
    pub policy: BudgetPolicy,
    pub request: PlanRequest,
    /// RAM first, then each GPU.
    pub devices: Vec<DevicePlan>,
    /// In registry order.
    pub models: Vec<ModelPlan>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One device: its budget arithmetic and what the plan puts there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePlan {
    pub device: PlanDevice,
    pub total_bytes: u64,
    /// OS/runtime reserve.
    pub reserve_bytes: u64,
    /// Safety margin.
    pub margin_bytes: u64,
    /// `total − reserve − margin`: what models may reserve together.
    pub budget_bytes: u64,
    /// Σ reservations of the hot models.
    pub hot_bytes: u64,
    /// The warm model with the largest reservation (the one that must still load beside
    /// the hot set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub largest_warm: Option<String>,
    pub largest_warm_bytes: u64,
    /// `budget − hot − largest warm`.
    pub headroom_bytes: u64,
}

/// One model's place in the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPlan {
    /// Registry key.
    pub key: String,
    /// Display name.
    pub name: String,
    pub capability: Capability,
    pub tier: Tier,
    /// Where it runs (and whose budget it counts against).
    pub device: PlanDevice,
    /// What the pool reserves for it, in MB, under `profile` (rounded up to 100 MB).
    pub reservation_mb: u64,
    /// The registry's figure for its default profile, for comparison.
    pub registry_mb: u64,
    /// The run profile the reservation is for (the default with the request applied).
    pub profile: RunProfile,
    /// The estimate's parts under `profile`.
    pub parts: Parts,
    /// Multi-component models: both ways of holding the components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<StagingPlan>,
    /// `never` only: how much more the device would need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misses_by_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ModelPlan {
    /// `reservation_mb` in bytes.
    pub fn reservation_bytes(&self) -> u64 {
        self.reservation_mb * MB
    }
}

/// The estimator's parts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parts {
    pub weights_bytes: u64,
    pub kv_cache_bytes: u64,
    pub activations_bytes: u64,
    pub overhead_bytes: u64,
    pub margin_bytes: u64,
    pub total_bytes: u64,
}

impl From<&model_spec::MemoryEstimate> for Parts {
    fn from(e: &model_spec::MemoryEstimate) -> Self {
        Parts {
            weights_bytes: e.weights_bytes,
            kv_cache_bytes: e.kv_cache_bytes,
            activations_bytes: e.activations_bytes,
            overhead_bytes: e.overhead_bytes,
            margin_bytes: e.margin_bytes,
            total_bytes: e.total_bytes,
        }
    }
}

/// Co-resident vs staged components of a diffusion model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagingPlan {
    /// Every component resident at once.
    pub co_resident_mb: u64,
    /// Peak of the staged pipeline (the largest stage plus its working set).
    pub staged_mb: u64,
    /// What the reservation uses: `co-resident` or `staged`.
    pub used: Staging,
}

/// A plan file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("plan JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("plan TOML: {0}")]
    TomlRead(#[from] toml::de::Error),
    #[error("plan TOML: {0}")]
    TomlWrite(#[from] toml::ser::Error),
    #[error("{path}: unknown plan file type; use a `.json` or `.toml` name")]
    Extension { path: String },
    #[error(
        "plan format_version {found} is not supported (expected {PLAN_FORMAT_VERSION}); make the plan again with `cargo xtask plan --write …`"
    )]
    Version { found: u32 },
}

impl Plan {
    /// Parses a JSON plan.
    pub fn from_json(text: &str) -> Result<Plan, PlanFileError> {
        let plan: Plan = serde_json::from_str(text)?;
        plan.check_version()
    }

    /// Parses a TOML plan.
    pub fn from_toml(text: &str) -> Result<Plan, PlanFileError> {
        let plan: Plan = toml::from_str(text)?;
        plan.check_version()
    }

    fn check_version(self) -> Result<Plan, PlanFileError> {
        if self.format_version != PLAN_FORMAT_VERSION {
            return Err(PlanFileError::Version {
                found: self.format_version,
            });
        }
        Ok(self)
    }

    /// Pretty JSON, ending with a newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a plan always serializes");
        s.push('\n');
        s
    }

    /// TOML.
    pub fn to_toml(&self) -> Result<String, PlanFileError> {
        Ok(toml::to_string(self)?)
    }

    /// Reads a `.json` or `.toml` plan.
    pub fn load(path: &Path) -> Result<Plan, PlanFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        match file_kind(path)? {
            FileKind::Json => Plan::from_json(&text),
            FileKind::Toml => Plan::from_toml(&text),
        }
    }

    /// The text [`save`](Self::save) writes for `path`'s extension.
    pub fn render_for(&self, path: &Path) -> Result<String, PlanFileError> {
        match file_kind(path)? {
            FileKind::Json => Ok(self.to_json()),
            FileKind::Toml => self.to_toml(),
        }
    }

    /// Writes a `.json` or `.toml` plan.
    pub fn save(&self, path: &Path) -> Result<(), PlanFileError> {
        let text = self.render_for(path)?;
        std::fs::write(path, text).map_err(|source| PlanFileError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// The plan for `key`.
    pub fn model(&self, key: &str) -> Option<&ModelPlan> {
        self.models.iter().find(|m| m.key == key)
    }

    /// The tier of `key`.
    pub fn tier(&self, key: &str) -> Option<Tier> {
        self.model(key).map(|m| m.tier)
    }

    /// The models in `tier`, in registry order.
    pub fn models_in(&self, tier: Tier) -> impl Iterator<Item = &ModelPlan> {
        self.models.iter().filter(move |m| m.tier == tier)
    }

    /// The plan of `device`.
    pub fn device(&self, device: PlanDevice) -> Option<&DevicePlan> {
        self.devices.iter().find(|d| d.device == device)
    }
}

enum FileKind {
    Json,
    Toml,
}

fn file_kind(path: &Path) -> Result<FileKind, PlanFileError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("json") => Ok(FileKind::Json),
        Some(e) if e.eq_ignore_ascii_case("toml") => Ok(FileKind::Toml),
        _ => Err(PlanFileError::Extension {
            path: path.display().to_string(),
        }),
    }
}
