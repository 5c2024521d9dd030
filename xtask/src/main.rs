//! `cargo xtask <command>`: the project's automation, one binary with subcommands.
//!
//! Only `fetch-cards` touches the network; everything else works offline on what is checked in.
//! `fetch-cards` and `fixtures` live in crates of their own (the Hub client, candle), which this
//! binary builds and runs only for those subcommands (see [`xtask::dispatch`]).

mod gen_memory_specs;
mod plan;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use xtask::dispatch::{self, Delegate};

/// `cargo xtask fetch-cards …` runs this binary with the same arguments.
const FETCH_CARDS: Delegate = Delegate {
    package: "fetch-cards",
    bin: None,
};

/// `cargo xtask fixtures DIR` runs this binary with the same arguments.
const FIXTURES: Delegate = Delegate {
    package: "model-fixtures",
    bin: Some("write-fixtures"),
};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Automation for the model registry workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Turn the facts in model-cards/**/*.toml into `[memory]` tables, the model cards
    /// (<capability>/<SLUG>.md) and MEMORY_SPECS.md, offline.
    GenMemorySpecs {
        /// Write nothing; exit non-zero if any generated file is stale.
        #[arg(long)]
        check: bool,
        /// The model-cards folder.
        #[arg(long, default_value_os_t = default_cards())]
        cards: PathBuf,
    },
    /// Refresh model-cards/<capability>/<slug>.toml and <SLUG>.md from the Hub: repo info,
    /// configs and weight headers (byte ranges only; weights are never downloaded). Builds and
    /// runs the fetch-cards crate; `cargo xtask fetch-cards --help` lists its options.
    #[command(disable_help_flag = true)]
    FetchCards {
        /// Passed to fetch-cards unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Write the tiny random-weight checkpoints of every family into DIR: builds and runs
    /// `write-fixtures DIR` of the model-fixtures crate.
    #[command(disable_help_flag = true)]
    Fixtures {
        /// Passed to write-fixtures unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Which registry models fit this machine together: hot (kept resident), warm (loaded on
    /// demand), never (and by how much). Detected values can be overridden (`--ram 64GiB`).
    Plan {
        #[command(flatten)]
        args: model_plan_cli::PlanArgs,
        /// The model-cards folder.
        #[arg(long, default_value_os_t = default_cards())]
        cards: PathBuf,
    },
}

/// `model-cards/` at the workspace root, wherever xtask is run from (relative when run from
/// the root, so messages show `model-cards/…`).
fn default_cards() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    match std::env::current_dir() {
        Ok(cwd) if cwd == root => PathBuf::from("model-cards"),
        _ => root.join("model-cards"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::GenMemorySpecs { check, cards } => gen_memory_specs::run(&cards, check),
        Command::Plan { args, cards } => plan::run(&args, &cards),
        Command::FetchCards { args } => return dispatch::run(FETCH_CARDS, &args),
        Command::Fixtures { args } => return dispatch::run(FIXTURES, &args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
