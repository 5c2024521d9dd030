//! The `[memory]` table gen-memory-specs writes into each spec, and the fingerprint of the
//! estimator inputs that makes a stale figure detectable at build time.

use crate::estimate::{ESTIMATOR_VERSION, MemoryEstimate};
use crate::profile::RunProfile;
use crate::spec::ModelSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `[memory]` in a spec TOML. Written by `cargo xtask gen-memory-specs`; do not edit by hand
/// (the build checks it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySection {
    pub est_memory_allocation_mb: u64,
    pub weights_bytes: u64,
    pub kv_cache_bytes: u64,
    pub activations_bytes: u64,
    pub overhead_bytes: u64,
    pub margin_bytes: u64,
    pub total_bytes: u64,
    /// `sha256:` of the estimator inputs (facts, profile, estimator version).
    pub fingerprint: String,
    pub profile: RunProfile,
}

impl MemorySection {
    pub fn from_estimate(m: &MemoryEstimate, fingerprint: String, profile: RunProfile) -> Self {
        MemorySection {
            est_memory_allocation_mb: m.est_memory_allocation_mb,
            weights_bytes: m.weights_bytes,
            kv_cache_bytes: m.kv_cache_bytes,
            activations_bytes: m.activations_bytes,
            overhead_bytes: m.overhead_bytes,
            margin_bytes: m.margin_bytes,
            total_bytes: m.total_bytes,
            fingerprint,
            profile,
        }
    }
}

/// Fingerprint of everything the estimator reads: fact values (not their sources), tensor
/// inventories, serving values, the run profile and [`ESTIMATOR_VERSION`].
pub fn fingerprint(spec: &ModelSpec, profile: &RunProfile) -> String {
    let components: Vec<_> = spec
        .components
        .iter()
        .map(|c| {
            let arch: std::collections::BTreeMap<_, _> = c
                .architecture
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().value.clone()))
                .collect();
            serde_json::json!({
                "name": c.name,
                "family": c.family,
                "format": c.format,
                "stage": c.stage,
                "architecture": arch,
                "inventory": c.weights.inventory,
            })
        })
        .collect();
    let serving: std::collections::BTreeMap<_, _> = spec
        .serving
        .iter()
        .map(|(k, v)| (k.clone(), v.get_ref().value.clone()))
        .collect();
    let doc = serde_json::json!({
        "estimator_version": ESTIMATOR_VERSION,
        "capability": spec.capability,
        "components": components,
        "serving": serving,
        "profile": profile,
    });
    // serde_json's map is ordered (BTreeMap) without the preserve_order feature, so the text
    // is canonical.
    let digest = Sha256::digest(doc.to_string().as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
