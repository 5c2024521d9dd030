//! `candle-pool`: the registry's models on Candle through one memory-aware pool, from the
//! command line.

mod commands;
mod download_progress;
mod model_args;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Candle models in one memory-aware pool: every model carries a checked memory figure, and
/// the pool only admits what fits the RAM/VRAM budget.
///
/// The budget is detected (RAM minus an OS reserve) or set with MODEL_POOL_BUDGET (e.g.
/// `18GiB`) and MODEL_POOL_OS_RESERVE. Logs go to stderr; RUST_LOG sets their level
/// (default `warn`, e.g. `RUST_LOG=info` to see loads and their measured memory).
#[derive(Parser)]
#[command(name = "candle-pool", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The registry's models: capability, backend, memory figure, run profile and whether
    /// each fits this machine's budget.
    List(commands::list::Args),
    /// Embed texts (each TEXT, or each non-empty stdin line) and print
    /// `[{"text": …, "embedding": […]}]` as JSON.
    Embed(commands::embed::TextArgs),
    /// Embed image files with CLIP and print `[{"image": …, "embedding": […]}]`.
    EmbedImages(commands::embed::ImageArgs),
    /// Stream an answer from a generator (Phi-4 / Qwen3-Coder GGUF, LLaVA 1.5 with --image);
    /// the finish reason and token counts go to stderr.
    Generate(commands::generate::Args),
    /// Generate one image (FLUX.1-schnell, SD3.5 Large Turbo) and write it as PNG.
    TextToImage(commands::text_to_image::Args),
    /// Load embedders, serve one request of their run profile each, and print the registry
    /// estimate next to the measured memory.
    Report(commands::report::Args),
    /// Which registry models fit this machine together: hot (resident), warm (on demand) or
    /// never (and by how much). `--write plan.json` writes the plan a pool reads.
    Plan(commands::plan::Args),
    /// Download a model's files from the Hub (HF_ENDPOINT) into the Hugging Face cache
    /// without loading it, after checking that it fits; prints the folder.
    Pull(commands::pull::Args),
    /// Serve the models over an OpenAI-compatible HTTP API (embeddings, chat and text
    /// completions with streaming, image generation, models) with /health, /status and
    /// Prometheus /metrics, until SIGTERM or Ctrl-C.
    Serve(commands::serve::Args),
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // hf-hub logs its own retries at error level; the command's error says it once.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,hf_hub=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List(a) => commands::list::run(&a),
        Command::Embed(a) => commands::embed::run_texts(a),
        Command::EmbedImages(a) => commands::embed::run_images(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::TextToImage(a) => commands::text_to_image::run(a),
        Command::Report(a) => commands::report::run(&a),
        Command::Plan(a) => commands::plan::run(&a),
        Command::Pull(a) => commands::pull::run(a),
        Command::Serve(a) => commands::serve::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
