//! `candle-pool serve`: the one pool behind an OpenAI-compatible HTTP API (`model-server`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use model_server::{ModelArg, PoolSetup, Server, ServerOptions, SetupArgs, parse_duration};

use crate::model_args::runtime;

/// Options of `candle-pool serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on. Loopback by default; any other address exposes the models to
    /// the network and is only used when given.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// A model to serve, as KEY=PATH: a registry key (`candle-pool list`), or any name with
    /// --arch (or an `arch` in the --config file) for a checkpoint outside the registry.
    /// PATH is a folder in the Hugging Face Hub layout or a GGUF file. A registry KEY alone
    /// is fetched from the Hub (HF_ENDPOINT) into the Hugging Face cache by its first load.
    /// Repeatable.
    #[arg(long = "model", value_name = "KEY[=PATH]", value_parser = parse_model)]
    models: Vec<ModelArg>,
    /// Backend of the --model checkpoints outside the registry: bert, jina-bert, stella,
    /// gte-qwen2, nv-embed, clip, phi3, qwen3moe, llava, flux or sd3 (detected from their
    /// files when omitted).
    #[arg(long, value_name = "NAME", value_parser = parse_backend)]
    arch: Option<model_registry::Backend>,
    /// Pool file (TOML): per model path, arch, device, tier (hot/warm), idle_ttl, priority,
    /// max_concurrency, max_queue and request_timeout; `[pool]` request_timeout and
    /// max_queued. See the model-server README.
    #[arg(long, value_name = "pool.toml")]
    config: Option<PathBuf>,
    /// The planner's plan (`candle-pool plan --write plan.json`): device budgets, and each
    /// model's tier and device. Without it the budget is detected (or MODEL_POOL_BUDGET).
    #[arg(long, value_name = "plan.json")]
    plan: Option<PathBuf>,
    /// Require `Authorization: Bearer KEY` on every endpoint except /health.
    #[arg(
        long,
        env = "CANDLE_POOL_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,
    /// Largest request body (images travel inside it as data URLs).
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    body_limit: u64,
    /// Default deadline of a request: waiting, loading and running (e.g. 120s, 5m).
    #[arg(long, value_parser = parse_duration)]
    request_timeout: Option<Duration>,
    /// On SIGTERM / Ctrl-C, how long in-flight requests may take to finish before they are
    /// cancelled.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
}

fn parse_model(s: &str) -> Result<ModelArg, String> {
    s.parse()
        .map_err(|e: model_server::SetupError| e.to_string())
}

fn parse_backend(s: &str) -> Result<model_registry::Backend, String> {
    model_serving::config::parse_backend(s)
}

fn parse_size(s: &str) -> Result<u64, String> {
    model_server::setup::parse_size(s).map_err(|e| e.to_string())
}

/// Runs `candle-pool serve` until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> Result<(), String> {
    let setup = PoolSetup::from_args(&SetupArgs {
        models: args.models,
        arch: args.arch,
        config: args.config,
        plan: args.plan,
        request_timeout: args.request_timeout,
    })
    .map_err(|e| e.to_string())?;
    let options = ServerOptions {
        api_key: args.api_key.filter(|k| !k.is_empty()),
        body_limit: usize::try_from(args.body_limit).unwrap_or(usize::MAX),
        drain_timeout: args.drain_timeout,
        ..ServerOptions::default()
    };
    runtime()?.block_on(async move {
        let pool = Arc::new(setup.build().map_err(|e| e.to_string())?);
        let addr = SocketAddr::new(args.host, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let keys: Vec<&str> = pool.models().map(|m| m.key.as_str()).collect();
        eprintln!(
            "candle-pool serve: listening on http://{local} ({} model(s): {}){}",
            keys.len(),
            keys.join(", "),
            if options.api_key.is_some() {
                ", API key required"
            } else {
                ""
            }
        );
        let server = Server::new(Arc::clone(&pool), options);
        let done = server
            .serve(listener, model_server::shutdown_signal())
            .await
            .map_err(|e| format!("serving on {local}: {e}"))?;
        eprintln!(
            "candle-pool serve: stopped ({}, {})",
            if done.drained {
                "drained"
            } else {
                "drain deadline passed, requests cancelled"
            },
            if done.unloaded {
                "every model unloaded"
            } else {
                "some models still busy at the unload deadline"
            }
        );
        Ok(())
    })
}
