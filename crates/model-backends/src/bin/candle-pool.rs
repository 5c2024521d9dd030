//! `candle-pool`: list the registry with its memory figures, embed texts or images through the
//! pool, and report estimated vs measured memory.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use model_backends::report::{MemoryReport, ProfileRequest, ReportRow, measure_profile};
use model_backends::{EmbeddingPool, ModelConfig, Overflow, TextMode, registry};
use model_pool::{DeviceId, GovernorConfig};

const USAGE: &str = "\
candle-pool — Candle embedding models in a memory-aware pool

USAGE:
  candle-pool list
      The registry's models with their memory estimates, and whether each fits the detected
      RAM budget (MODEL_POOL_BUDGET / MODEL_POOL_OS_RESERVE override detection).
  candle-pool embed --model KEY --weights DIR [OPTIONS] [TEXT ...]
      Embeds each TEXT (or each non-empty stdin line when none is given) and prints
      [{\"text\": …, \"embedding\": […]}] as JSON.
  candle-pool embed-images --model KEY --weights DIR [OPTIONS] IMAGE ...
      Embeds image files (CLIP) and prints [{\"image\": …, \"embedding\": […]}].
  candle-pool report --model KEY --weights DIR [--model KEY --weights DIR ...] [OPTIONS]
      Loads each model, serves one request of its run profile, and prints the registry
      estimate next to the measured memory.
  candle-pool text-to-image --model KEY --weights DIR --prompt TEXT [--out FILE] ...
      Generates one image (FLUX.1-schnell, SD3.5 Large Turbo) through the pool and writes
      it as PNG; `candle-pool text-to-image --help` lists its options.
  candle-pool plan [--ram 64GiB] [--vram 24GiB] [--context 16k] [--json] [--write plan.json] ...
      Which registry models fit this machine together: hot (resident), warm (on demand),
      never (and by how much); the same planner as `cargo xtask plan`. `--write plan.json`
      writes the plan the pool reads (model_backends::pool_plan). `candle-pool plan --help`.
  candle-pool generate --model KEY --weights PATH [OPTIONS] [PROMPT ...]
      Streams an answer from a generator (Phi-4, Qwen3-Coder GGUF; LLaVA 1.5 with --image)
      through the pool; `candle-pool generate --help` lists its options.

OPTIONS:
  --device cpu|cuda:N|metal:N   where the model runs (default cpu)
  --dtype f32|f16|bf16          weight dtype (default: the run profile's)
  --max-tokens N                input limit in tokens (default: the model's, capped at the profile's)
  --refuse-long                 refuse inputs over the limit instead of truncating them
  --query                       embed texts as search queries (adds the model's instruction)
  --hf-cache                    --weights is a repo id in the hf-hub cache, not a directory
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Default)]
struct Options {
    models: Vec<(String, String)>,
    device: Option<DeviceId>,
    dtype: Option<candle_core::DType>,
    max_tokens: Option<usize>,
    refuse_long: bool,
    query: bool,
    hf_cache: bool,
    rest: Vec<String>,
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut o = Options::default();
    let mut pending_model: Option<String> = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--model" => {
                if let Some(m) = pending_model.replace(value("--model")?) {
                    return Err(format!("--model {m} has no --weights"));
                }
            }
            "--weights" => {
                let w = value("--weights")?;
                let m = pending_model
                    .take()
                    .ok_or("--weights must follow a --model")?;
                o.models.push((m, w));
            }
            "--device" => o.device = Some(value("--device")?.parse().map_err(|e| format!("{e}"))?),
            "--dtype" => {
                o.dtype = Some(
                    model_backends::device::parse_dtype(&value("--dtype")?)
                        .map_err(|e| e.to_string())?,
                )
            }
            "--max-tokens" => {
                o.max_tokens = Some(
                    value("--max-tokens")?
                        .parse()
                        .map_err(|_| "--max-tokens needs a number".to_owned())?,
                )
            }
            "--refuse-long" => o.refuse_long = true,
            "--query" => o.query = true,
            "--hf-cache" => o.hf_cache = true,
            "--" => o.rest.extend(it.by_ref()),
            flag if flag.starts_with("--") => {
                return Err(format!("unknown option {flag}\n\n{USAGE}"));
            }
            _ => o.rest.push(arg),
        }
    }
    if let Some(m) = pending_model {
        return Err(format!("--model {m} has no --weights"));
    }
    Ok(o)
}

fn run(args: Vec<String>) -> Result<(), String> {
    let Some((command, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    match command.as_str() {
        "list" => list(),
        "embed" => embed(parse(rest.to_vec())?, false),
        "embed-images" => embed(parse(rest.to_vec())?, true),
        "report" => report(parse(rest.to_vec())?),
        "text-to-image" => model_backends::diffusion::cli::text_to_image(rest),
        "generate" => model_backends::generate::cli::generate(rest),
        "plan" => plan(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    }
}

fn list() -> Result<(), String> {
    let budgets = GovernorConfig::from_env()
        .and_then(|c| c.resolve())
        .map_err(|e| e.to_string())?;
    let ram = budgets.get(&DeviceId::Cpu).copied();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    match ram {
        Some(b) => println!(
            "RAM budget: {:.1} GiB (detected total minus the OS reserve, or MODEL_POOL_BUDGET)",
            gib(b)
        ),
        None => println!("RAM budget: none detected"),
    }
    println!(
        "{:<46} {:<16} {:<10} {:>9}  {:<40} fits RAM",
        "model", "capability", "backend", "est. MB", "run profile"
    );
    for m in registry::all().map_err(|e| e.to_string())? {
        let need = m.model.est_memory_allocation_bytes();
        let fits = match ram {
            Some(b) if need <= b => "yes",
            Some(_) => "no",
            None => "?",
        };
        println!(
            "{:<46} {:<16} {:<10} {:>9}  {:<40} {fits}",
            m.key(),
            m.model.capability.as_str(),
            m.family.map_or("-", |f| f.as_str()),
            m.model.est_memory_allocation_mb,
            profile_summary(&m.model.default_profile),
        );
    }
    println!(
        "(MB = 1,048,576 bytes; backend `-`: estimated only, not served by these Candle backends)"
    );
    Ok(())
}

fn profile_summary(p: &model_registry::RunProfile) -> String {
    let mut s = p.device.to_string();
    if let Some(d) = p.load_dtype {
        s.push_str(&format!(" {}", d.to_ascii_lowercase()));
    }
    s.push_str(&format!(" batch {}", p.batch));
    if let Some(n) = p.seq_len {
        s.push_str(&format!(" × {n} tok"));
    }
    if let Some(n) = p.context_tokens {
        s.push_str(&format!(", ctx {n}"));
    }
    if let Some(n) = p.image_size {
        s.push_str(&format!(", image {n}px"));
    }
    if let (Some(w), Some(h)) = (p.width, p.height) {
        s.push_str(&format!(", {w}×{h}"));
    }
    s
}

fn config_for(o: &Options, key: &str, weights: &str) -> Result<ModelConfig, String> {
    let source = if o.hf_cache {
        model_backends::config::ModelSource::HfCache {
            repo: weights.to_owned(),
            revision: None,
        }
    } else {
        model_backends::config::ModelSource::Dir(PathBuf::from(weights))
    };
    // Registry models get their family, dtype and declared memory; any other key is served
    // from its directory with the family detected from config.json.
    let mut config = match ModelConfig::registry(key, source.clone()) {
        Ok(c) => c,
        Err(_) => ModelConfig::new(key, source),
    };
    if let Some(d) = o.device {
        config = config.device(d);
    }
    if let Some(t) = o.dtype {
        config = config.dtype(t);
    }
    if let Some(n) = o.max_tokens {
        config = config.max_input_tokens(n);
    }
    if o.refuse_long {
        config = config.overflow(Overflow::Refuse);
    }
    Ok(config)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn embed(o: Options, images: bool) -> Result<(), String> {
    let [(key, weights)] = o.models.as_slice() else {
        return Err("give exactly one --model KEY --weights DIR".into());
    };
    let config = config_for(&o, key, weights)?;
    let inputs: Vec<String> = if o.rest.is_empty() && !images {
        std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .collect()
    } else {
        o.rest.clone()
    };
    let rt = runtime()?;
    let vectors = rt.block_on(async {
        let pool = EmbeddingPool::builder()
            .model(config)
            .build()
            .map_err(|e| e.to_string())?;
        let result = if images {
            let decoded = inputs
                .iter()
                .enumerate()
                .map(|(i, path)| {
                    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
                    model_backends::image::decode(&bytes, i).map_err(|e| format!("{path}: {e}"))
                })
                .collect::<Result<Vec<_>, String>>()?;
            pool.embed_images(key, decoded).await
        } else {
            let mode = if o.query {
                TextMode::Query
            } else {
                TextMode::Document
            };
            pool.embed_with(key, inputs.clone(), mode).await
        };
        pool.shutdown().await;
        result.map_err(|e| e.to_string())
    })?;
    let field = if images { "image" } else { "text" };
    // Written field by field so that the input comes before its embedding.
    let json = |e: serde_json::Error| e.to_string();
    let mut out = String::from("[");
    for (i, (input, embedding)) in inputs.iter().zip(vectors).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let input = serde_json::to_string(input).map_err(json)?;
        let embedding = serde_json::to_string(&embedding).map_err(json)?;
        out.push_str(&format!(
            "{{\"{field}\":{input},\"embedding\":{embedding}}}"
        ));
    }
    out.push(']');
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{out}").map_err(|e| e.to_string())
}

fn report(o: Options) -> Result<(), String> {
    if o.models.is_empty() {
        return Err("give at least one --model KEY --weights DIR".into());
    }
    let mut rows = Vec::new();
    for (key, weights) in &o.models {
        let config = config_for(&o, key, weights)?;
        let info = registry::lookup(key).ok();
        let request = ProfileRequest {
            batch: info.as_ref().map_or(1, |i| i.model.default_profile.batch),
            seq_len: info
                .as_ref()
                .and_then(|i| i.memory.profile_seq_len)
                .map(|s| s as usize),
        };
        let (model, measured) =
            measure_profile(&config, request).map_err(|e| format!("{key}: {e}"))?;
        drop(model);
        rows.push(ReportRow {
            key: key.clone(),
            estimate_mb: config.memory.and_then(|m| m.estimate_mb),
            declared_resident_bytes: config.memory.map(|m| m.resident_bytes),
            declared_per_batch_bytes: config.memory.map(|_| config.per_batch_bytes()),
            measured: Some(measured.load),
            peak_request_bytes: Some(measured.peak_rss_bytes),
            estimate_exceeded: config
                .memory
                .is_some_and(|m| measured.load.resident_bytes > m.resident_bytes),
        });
    }
    println!("{}", MemoryReport { rows });
    Ok(())
}

/// `candle-pool plan …`: the planner shared with `cargo xtask plan` (model_plan::cli).
fn plan(rest: &[String]) -> Result<(), String> {
    use clap::Parser;
    #[derive(Parser)]
    #[command(
        name = "candle-pool plan",
        about = "Which registry models fit this machine together"
    )]
    struct PlanCli {
        #[command(flatten)]
        args: model_plan::cli::PlanArgs,
        /// The model-cards folder (default: $MODEL_CARDS_DIR, else the one this was built from).
        #[arg(long)]
        cards: Option<PathBuf>,
    }
    let cli = match PlanCli::try_parse_from(
        std::iter::once("candle-pool plan".to_owned()).chain(rest.iter().cloned()),
    ) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            print!("{e}");
            return Ok(());
        }
        Err(e) => {
            return Err(e
                .to_string()
                .trim_start_matches("error: ")
                .trim_end()
                .to_owned());
        }
    };
    let cards = cli
        .cards
        .unwrap_or_else(model_backends::pool_plan::default_cards_dir);
    let registry = model_spec::Registry::load(&cards).map_err(|e| e.to_string())?;
    let invocation = model_plan::cli::invocation("candle-pool plan", rest);
    let mut out = std::io::stdout().lock();
    let outcome = model_plan::cli::run(&cli.args, &registry, &[], &invocation, &mut out)
        .map_err(|e| e.to_string())?;
    if outcome.up_to_date {
        Ok(())
    } else {
        Err("the plan files are stale (see above)".to_owned())
    }
}
