//! `cargo xtask fetch-cards`: xtask runs this binary with its arguments, so the Hub client is
//! built only when the command is used.

use clap::Parser;
use fetch_cards::{FetchOptions, cli};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Refresh model-cards/<capability>/<slug>.toml and <SLUG>.md from the Hub: repo info, configs
/// and weight headers (byte ranges only; weights are never downloaded).
#[derive(Parser)]
#[command(name = "cargo xtask fetch-cards", bin_name = "cargo xtask fetch-cards")]
struct Args {
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
}

/// `model-cards/` at the workspace root, wherever the command is run from (relative when run
/// from the root, so messages show `model-cards/…`).
fn default_cards() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap_or(Path::new("."));
    match std::env::current_dir() {
        Ok(cwd) if cwd == root => PathBuf::from("model-cards"),
        _ => root.join("model-cards"),
    }
}

fn main() -> ExitCode {
    let a = Args::parse();
    cli(&FetchOptions {
        cards: a.cards,
        out: a.out,
        models: a.models,
        revision: a.revision,
        check: a.check,
        hub: Default::default(),
    })
}
