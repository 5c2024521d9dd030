//! Randomized stress run of the pool with fake backends, printing a one-line JSON summary:
//!
//! ```text
//! cargo run --release -p model-pool --example stress -- --ops 1000000 [--tasks 64] [--seed 7]
//! ```
//!
//! Exits non-zero if any invariant was violated or anything leaked.

#[path = "../tests/support/mod.rs"]
mod support;

use support::stress::{self, StressConfig};

fn main() {
    let mut config = StressConfig {
        ops: 100_000,
        tasks: 64,
        seed: 7,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--ops", Some(v)) => config.ops = v,
            ("--tasks", Some(v)) if v > 0 => config.tasks = v as usize,
            ("--seed", Some(v)) => config.seed = v,
            _ => {
                eprintln!("usage: stress [--ops N] [--tasks N] [--seed N]");
                std::process::exit(2);
            }
        }
    }
    stress::silence_injected_panics();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let report = runtime.block_on(stress::run(config));
    println!("{}", report.json());
    let clean = report.violations == 0
        && report.leaked_bytes == 0
        && report.live_reservations == 0
        && report.stuck_leases == 0
        && report.stuck_waiters == 0
        && report.live_models == 0
        && !report.shutdown_timed_out;
    if !clean {
        eprintln!("{report:#?}");
        std::process::exit(1);
    }
}
