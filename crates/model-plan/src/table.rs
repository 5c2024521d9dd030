//! The plan as a table for a terminal.

use crate::plan::{Plan, Tier};
use crate::size::{gib, mb, mb_floor, thousands};
use std::fmt::Write;

/// Renders `plan` as plain text: the machine, one line per device budget, one line per model
/// (grouped by device, then tier, smallest first), then the notes.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let m = &plan.machine;
    let _ = writeln!(out, "Machine: {}", machine_line(plan));
    for s in &m.sources {
        let _ = writeln!(out, "  {s}");
    }
    out.push('\n');

    let mut rows = vec![vec![
        "device".to_owned(),
        "total".to_owned(),
        "reserve".to_owned(),
        "margin".to_owned(),
        "budget".to_owned(),
        "hot".to_owned(),
        "+ largest warm".to_owned(),
        "headroom".to_owned(),
    ]];
    for d in &plan.devices {
        rows.push(vec![
            d.device.to_string(),
            gib(d.total_bytes),
            gib(d.reserve_bytes),
            gib(d.margin_bytes),
            mb_floor(d.budget_bytes),
            mb(d.hot_bytes),
            mb(d.largest_warm_bytes),
            mb_floor(d.headroom_bytes),
        ]);
    }
    let p = &plan.policy;
    let _ = writeln!(
        out,
        "Budget = total − reserve − margin (RAM: reserve {} + {} %, margin {} %; GPU: reserve {} + {} %, margin {} %)",
        gib(p.ram.reserve_base_bytes),
        p.ram.reserve_percent,
        p.ram.margin_percent,
        gib(p.gpu.reserve_base_bytes),
        p.gpu.reserve_percent,
        p.gpu.margin_percent
    );
    table(
        &mut out,
        &rows,
        &[false, true, true, true, true, true, true, true],
    );
    out.push('\n');

    let mut order: Vec<usize> = (0..plan.models.len()).collect();
    let dev_rank = |i: usize| {
        plan.devices
            .iter()
            .position(|d| d.device == plan.models[i].device)
            .unwrap_or(usize::MAX)
    };
    order.sort_by_key(|&i| {
        let m = &plan.models[i];
        (dev_rank(i), m.tier, m.reservation_mb, i)
    });
    let mut rows = vec![vec![
        "tier".to_owned(),
        "device".to_owned(),
        "MB".to_owned(),
        "registry MB".to_owned(),
        "model".to_owned(),
        "profile".to_owned(),
        "".to_owned(),
    ]];
    let mut notes: Vec<(String, String)> = Vec::new();
    for &i in &order {
        let m = &plan.models[i];
        let mut remark = String::new();
        if let Some(s) = &m.staging {
            remark = format!(
                "co-resident {} MB / staged {} MB",
                thousands(s.co_resident_mb),
                thousands(s.staged_mb)
            );
        }
        if let Some(miss) = m.misses_by_bytes {
            if !remark.is_empty() {
                remark.push_str("; ");
            }
            remark.push_str(&format!("misses by {}", mb(miss)));
        }
        rows.push(vec![
            m.tier.as_str().to_owned(),
            m.device.to_string(),
            thousands(m.reservation_mb),
            thousands(m.registry_mb),
            m.key.clone(),
            m.profile.summary(),
            remark,
        ]);
        for n in &m.notes {
            notes.push((m.key.clone(), n.clone()));
        }
    }
    table(
        &mut out,
        &rows,
        &[false, false, true, true, false, false, false],
    );

    let count = |t: Tier| plan.models_in(t).count();
    let _ = writeln!(
        out,
        "\n{} hot, {} warm, {} never. Hot models stay loaded; a warm model loads beside them on demand (the largest warm one still fits); never: larger than the device's budget.",
        count(Tier::Hot),
        count(Tier::Warm),
        count(Tier::Never)
    );
    if !notes.is_empty() {
        out.push_str("\nNotes:\n");
        for (k, n) in notes {
            let _ = writeln!(out, "  {k}: {n}");
        }
    }
    for n in &plan.notes {
        let _ = writeln!(out, "  {n}");
    }
    out
}

/// `RAM 24.0 GiB (17.9 GiB free now), 8 cores (4 physical), 1 NUMA node, SIMD …`.
pub fn machine_line(plan: &Plan) -> String {
    let m = &plan.machine;
    let mut s = format!("RAM {}", gib(m.ram_bytes));
    if let Some(a) = m.ram_available_bytes {
        s.push_str(&format!(" ({} free now)", gib(a)));
    }
    if let Some(c) = m.cores {
        s.push_str(&format!(", {c} cores"));
        if let Some(p) = m.physical_cores {
            s.push_str(&format!(" ({p} physical)"));
        }
    }
    if let Some(n) = m.numa_nodes {
        s.push_str(&format!(", {n} NUMA node{}", if n == 1 { "" } else { "s" }));
    }
    if let Some(simd) = &m.simd {
        if simd.detected.is_empty() {
            s.push_str(", SIMD none");
        } else {
            s.push_str(&format!(", SIMD {}", simd.detected.join(" ")));
        }
    }
    if let Some(free) = m.model_cache_free_bytes {
        s.push_str(&format!(", model cache {} free", gib(free)));
    }
    if m.gpus.is_empty() {
        s.push_str("; no GPU");
    }
    for g in &m.gpus {
        s.push_str(&format!("; GPU {} {}", g.device, gib(g.memory_bytes)));
        if let Some(n) = &g.name {
            s.push_str(&format!(" ({n})"));
        }
    }
    s
}

fn table(out: &mut String, rows: &[Vec<String>], right: &[bool]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = width[c] - cell.chars().count();
            if c > 0 {
                line.push_str("  ");
            }
            if right.get(c).copied().unwrap_or(false) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}
