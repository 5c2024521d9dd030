//! Prometheus text exposition of a [`PoolStatus`], without a global registry: the caller
//! serves the string on whatever endpoint it has.

use std::fmt::Write as _;

use crate::status::{ModelStateKind, PoolStatus};

/// Renders `status` in the Prometheus text format (version 0.0.4).
pub fn prometheus_text(status: &PoolStatus) -> String {
    let mut out = String::new();
    let models = &status.models;

    family(
        &mut out,
        "model_pool_model_state",
        "gauge",
        "1 for the state the model is in, 0 for the others.",
    );
    for m in models {
        for state in ModelStateKind::ALL {
            let labels = [
                ("model", m.key.as_str()),
                ("device", &m.device.to_string()),
                ("state", state.as_str()),
            ];
            sample(
                &mut out,
                "model_pool_model_state",
                &labels,
                u64::from(m.state == state),
            );
        }
    }

    type Gauge = fn(&crate::status::ModelStatus) -> Option<u64>;
    let gauges: [(&str, &str, Gauge); 7] = [
        ("model_pool_model_leases", "Leases held now.", |m| {
            Some(m.leases as u64)
        }),
        (
            "model_pool_model_queue_depth",
            "Requests waiting now.",
            |m| Some(m.queue_depth as u64),
        ),
        (
            "model_pool_model_reserved_bytes",
            "Bytes the model holds in the governor now.",
            |m| Some(m.reserved_bytes),
        ),
        (
            "model_pool_model_estimate_bytes",
            "Declared resident plus one request.",
            |m| Some(m.estimate_bytes),
        ),
        (
            "model_pool_model_resident_estimate_bytes",
            "Declared resident bytes.",
            |m| Some(m.resident_bytes),
        ),
        (
            "model_pool_model_measured_bytes",
            "Bytes measured by the backend at load.",
            |m| m.measured_bytes,
        ),
        (
            "model_pool_model_consecutive_load_failures",
            "Consecutive failed loads.",
            |m| Some(u64::from(m.consecutive_failures)),
        ),
    ];
    for (name, help, value) in gauges {
        family(&mut out, name, "gauge", help);
        for m in models {
            if let Some(v) = value(m) {
                sample(&mut out, name, &[("model", m.key.as_str())], v);
            }
        }
    }

    type Counter = fn(&crate::status::ModelCounters) -> u64;
    let counters: [(&str, &str, Counter); 9] = [
        ("model_pool_loads_total", "Loads that succeeded.", |c| {
            c.loads
        }),
        (
            "model_pool_load_failures_total",
            "Loads that failed (errors, panics, out of memory).",
            |c| c.load_failures,
        ),
        (
            "model_pool_load_aborts_total",
            "Loads aborted because every waiter left.",
            |c| c.load_aborts,
        ),
        (
            "model_pool_evictions_total",
            "Unloads to make room for another model.",
            |c| c.evictions,
        ),
        (
            "model_pool_idle_unloads_total",
            "Unloads after the idle TTL.",
            |c| c.idle_unloads,
        ),
        ("model_pool_leases_total", "Leases granted.", |c| c.leases),
        (
            "model_pool_timeouts_total",
            "Requests that timed out, queued or running.",
            |c| c.timeouts(),
        ),
        (
            "model_pool_cancellations_total",
            "Queued requests whose caller gave up.",
            |c| c.cancellations,
        ),
        (
            "model_pool_request_panics_total",
            "Requests that panicked under a lease.",
            |c| c.request_panics,
        ),
    ];
    for (name, help, value) in counters {
        family(&mut out, name, "counter", help);
        for m in models {
            sample(
                &mut out,
                name,
                &[("model", m.key.as_str())],
                value(&m.counters),
            );
        }
    }

    family(
        &mut out,
        "model_pool_rejections_total",
        "counter",
        "Requests refused at once, by reason.",
    );
    for m in models {
        let c = &m.counters;
        for (reason, v) in [
            ("busy", c.rejected_busy),
            ("never_fits", c.rejected_never_fits),
            ("blocked_by_pinned", c.rejected_pinned),
            ("cooling_down", c.rejected_cooling_down),
        ] {
            sample(
                &mut out,
                "model_pool_rejections_total",
                &[("model", m.key.as_str()), ("reason", reason)],
                v,
            );
        }
    }

    family(
        &mut out,
        "model_pool_device_budget_bytes",
        "gauge",
        "Device budget.",
    );
    for d in &status.devices {
        sample(
            &mut out,
            "model_pool_device_budget_bytes",
            &[("device", &d.device.to_string())],
            d.budget_bytes,
        );
    }
    family(
        &mut out,
        "model_pool_device_reserved_bytes",
        "gauge",
        "Bytes reserved on the device by all pools.",
    );
    for d in &status.devices {
        sample(
            &mut out,
            "model_pool_device_reserved_bytes",
            &[("device", &d.device.to_string())],
            d.reserved_bytes,
        );
    }
    family(
        &mut out,
        "model_pool_queued_requests",
        "gauge",
        "Requests waiting over all models.",
    );
    sample(
        &mut out,
        "model_pool_queued_requests",
        &[],
        status.queued as u64,
    );
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and newline, as the format requires.
fn escape(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
