//! `candle-pool list`: the registry with its memory figures, the backend serving each model,
//! and whether it fits the budget of its run profile's device.

use model_pool::{DeviceId, GovernorConfig};
use model_registry::{CandleModelInfo, Device, RunProfile};

/// Options of `candle-pool list`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Whether a model fits, against the budget of the device kind its profile runs on.
fn fits(m: &CandleModelInfo, budgets: &std::collections::BTreeMap<DeviceId, u64>) -> &'static str {
    let device = match m.default_profile.device {
        Device::Cpu => Some(DeviceId::Cpu),
        Device::Cuda => budgets
            .keys()
            .copied()
            .find(|d| matches!(d, DeviceId::Cuda(_))),
        Device::Metal => budgets
            .keys()
            .copied()
            .find(|d| matches!(d, DeviceId::Metal(_))),
    };
    match device.and_then(|d| budgets.get(&d)) {
        Some(&b) if m.est_memory_allocation_bytes() <= b => "yes",
        Some(_) => "no",
        None => "no device",
    }
}

fn profile_summary(p: &RunProfile) -> String {
    let mut s = p.device.to_string();
    if let Some(d) = p.load_dtype {
        s.push_str(&format!(" {}", d.to_ascii_lowercase()));
    }
    s.push_str(&format!(" batch {}", p.batch));
    if let Some(n) = p.seq_len {
        s.push_str(&format!(" × {n} tok"));
    }
    if let Some(n) = p.context_tokens {
        s.push_str(&format!(", ctx {n}"));
    }
    if let Some(n) = p.image_size {
        s.push_str(&format!(", image {n}px"));
    }
    if let (Some(w), Some(h)) = (p.width, p.height) {
        s.push_str(&format!(", {w}×{h}"));
    }
    s
}

fn backend(m: &CandleModelInfo) -> String {
    match m.backend {
        Some(b) => b.as_str().to_owned(),
        None => format!("none ({})", m.serving.architecture),
    }
}

/// Runs `candle-pool list`.
pub fn run(args: &Args) -> Result<(), String> {
    let budgets = GovernorConfig::from_env()
        .and_then(|c| c.resolve())
        .map_err(|e| e.to_string())?;
    if args.json {
        let rows: Vec<_> = model_registry::ALL
            .iter()
            .map(|m| {
                serde_json::json!({
                    "key": m.registry_key,
                    "capability": m.capability.as_str(),
                    "backend": m.backend.map(|b| b.as_str()),
                    "architecture": m.serving.architecture,
                    "est_memory_allocation_mb": m.est_memory_allocation_mb,
                    "profile": profile_summary(&m.default_profile),
                    "fits": fits(m, &budgets),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    for (device, budget) in &budgets {
        println!("{device} budget: {:.1} GiB", gib(*budget));
    }
    if budgets.is_empty() {
        println!("no budget detected (set MODEL_POOL_BUDGET)");
    }
    println!(
        "{:<46} {:<16} {:<18} {:>9}  {:<40} fits",
        "model", "capability", "backend", "est. MB", "run profile"
    );
    for m in model_registry::ALL {
        println!(
            "{:<46} {:<16} {:<18} {:>9}  {:<40} {}",
            m.registry_key,
            m.capability.as_str(),
            backend(m),
            m.est_memory_allocation_mb,
            profile_summary(&m.default_profile),
            fits(m, &budgets),
        );
    }
    println!(
        "(MB = 1,048,576 bytes; fits: the figure against the budget of the profile's device; \
         backend none: estimated and refused, no Candle loader for the architecture)"
    );
    Ok(())
}
