//! `cargo xtask <command>`: the project's automation, one binary with subcommands.
//!
//! Only `fetch-cards` touches the network; everything else works offline on what is checked in.

mod gen_memory_specs;
mod plan;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
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
    /// Turn the facts in model-cards/**/*.toml into `[memory]` tables and MEMORY_SPECS.md.
    GenMemorySpecs {
        /// Write nothing; exit non-zero if any generated file is stale.
        #[arg(long)]
        check: bool,
        /// The model-cards folder.
        #[arg(long, default_value_os_t = default_cards())]
        cards: PathBuf,
    },
    /// Refresh model-cards/<capability>/<slug>.toml and <SLUG>.md from the Hub: repo info,
    /// configs and weight headers (byte ranges only; weights are never downloaded).
    FetchCards {
        /// Registry keys to fetch (default: every model in models.toml).
        #[arg(long, num_args = 1..)]
        models: Vec<String>,
        /// Folder to write into (default: the model-cards folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Branch, tag or commit to fetch instead of each entry's `revision` (default `main`).
        #[arg(long)]
        revision: Option<String>,
        /// Write nothing; exit non-zero if a card or spec differs from a fresh fetch.
        #[arg(long)]
        check: bool,
        /// The model-cards folder holding models.toml.
        #[arg(long, default_value_os_t = default_cards())]
        cards: PathBuf,
    },
    /// Which registry models fit this machine together: hot (kept resident), warm (loaded on
    /// demand), never (and by how much). Detected values can be overridden (`--ram 64GiB`).
    Plan {
        #[command(flatten)]
        args: model_plan::cli::PlanArgs,
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
        Command::FetchCards {
            models,
            out,
            revision,
            check,
            cards,
        } => {
            return xtask::fetch_cards::cli(&xtask::fetch_cards::FetchOptions {
                cards,
                out,
                models,
                revision,
                check,
                hub: Default::default(),
            });
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
