//! `cargo xtask plan …`: which registry models fit a machine (hot, warm, never). The
//! implementation lives in the model-plan crate and is shared with the user CLI's `plan`.

use std::path::Path;
use std::process::ExitCode;

pub fn run(
    args: &model_plan_cli::PlanArgs,
    cards: &Path,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let registry = model_spec::Registry::load(cards)?;
    // The command as typed after `plan`, for the picture's caption and staleness messages.
    let typed: Vec<String> = std::env::args()
        .skip(1)
        .skip_while(|a| a != "plan")
        .skip(1)
        .collect();
    let invocation = model_plan_cli::invocation("cargo xtask plan", &typed);
    let mut out = std::io::stdout().lock();
    let outcome = model_plan_cli::run(
        args,
        &registry,
        &[&model_plan::NvmlGpus],
        &invocation,
        &mut out,
    )?;
    Ok(if outcome.up_to_date {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
