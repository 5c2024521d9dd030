//! `candle-pool plan`: the planner shared with `cargo xtask plan`, on the registry compiled
//! into this binary.

/// Options of `candle-pool plan` (the planner's own).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    plan: model_plan_cli::PlanArgs,
}

/// Runs `candle-pool plan`.
pub fn run(args: &Args) -> Result<(), String> {
    let registry = model_serving::registry::specs().map_err(|e| e.to_string())?;
    let words: Vec<String> = std::env::args().skip(2).collect();
    let invocation = model_plan_cli::invocation("candle-pool plan", &words);
    let mut out = std::io::stdout().lock();
    let outcome = model_plan_cli::run(
        &args.plan,
        registry,
        &[&model_plan::NvmlGpus],
        &invocation,
        &mut out,
    )
    .map_err(|e| e.to_string())?;
    if outcome.up_to_date {
        Ok(())
    } else {
        Err("the plan files are stale (see above)".to_owned())
    }
}
