//! `candle-pool generate`: one generation through the pool, streamed to stdout.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::chat::ChatMessage;
use super::config::GeneratorConfig;
use super::service::{GenerateRequest, GeneratorPool};

/// The subcommand's help.
pub const USAGE: &str = "\
candle-pool generate --model KEY --weights PATH [OPTIONS] [PROMPT ...]
    Generates an answer to PROMPT (or to stdin when none is given) through the pool and
    streams it to stdout; the finish reason and token counts go to stderr. PATH is the GGUF
    file (Phi-4, Qwen3-Coder) or the checkpoint directory (LLaVA 1.5). Registry models get
    their chat template, sampling defaults and memory estimate; Kimi K2 is refused with the
    reason (it never fits, or no backend runs deepseek2).

OPTIONS:
  --image FILE               an image to describe (LLaVA)
  --system TEXT              a system message
  --raw                      pass the prompt as is, without the chat template
  --max-tokens N             most new tokens (default: the rest of the context)
  --temperature T            0 is greedy
  --top-p P | --top-k K | --repetition-penalty R | --seed S
  --stop TEXT                end the answer before TEXT (repeatable)
  --context N                tokens one request may hold (its KV cache is reserved for them)
  --arch phi3|qwen3moe|llava the architecture of a model outside the registry
  --device cpu|cuda:N|metal:N
  --timeout SECONDS
";

/// Runs `candle-pool generate` with `args` (after the subcommand).
pub fn generate(args: &[String]) -> Result<(), String> {
    let mut key = None;
    let mut weights = None;
    let mut arch = None;
    let mut image = None;
    let mut system = None;
    let mut raw = false;
    let mut context = None;
    let mut device = None;
    let mut prompt = Vec::new();
    let mut request = GenerateRequest::chat(Vec::new());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |name: &str, v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--model" => key = Some(value("--model")?),
            "--weights" => weights = Some(PathBuf::from(value("--weights")?)),
            "--arch" => arch = Some(value("--arch")?),
            "--image" => image = Some(PathBuf::from(value("--image")?)),
            "--system" => system = Some(value("--system")?),
            "--raw" => raw = true,
            "--max-tokens" => request.max_tokens = Some(num(arg, value(arg)?)? as usize),
            "--temperature" => request.sampling.temperature = Some(num(arg, value(arg)?)?),
            "--top-p" => request.sampling.top_p = Some(num(arg, value(arg)?)?),
            "--top-k" => request.sampling.top_k = Some(num(arg, value(arg)?)? as usize),
            "--repetition-penalty" => {
                request.sampling.repetition_penalty = Some(num(arg, value(arg)?)? as f32)
            }
            "--seed" => request.sampling.seed = Some(num(arg, value(arg)?)? as u64),
            "--stop" => request.stop.push(value("--stop")?),
            "--context" => context = Some(num(arg, value(arg)?)? as usize),
            "--device" => device = Some(value("--device")?.parse().map_err(|e| format!("{e}"))?),
            "--timeout" => request.timeout = Some(Duration::from_secs_f64(num(arg, value(arg)?)?)),
            "--help" | "-h" => {
                print!("{USAGE}");
                return Ok(());
            }
            flag if flag.starts_with("--") => {
                return Err(format!("unknown option {flag}\n\n{USAGE}"));
            }
            _ => prompt.push(arg.clone()),
        }
    }
    let key = key.ok_or_else(|| format!("--model is required\n\n{USAGE}"))?;
    let weights = weights.ok_or_else(|| format!("--weights is required\n\n{USAGE}"))?;
    let mut config = match arch {
        Some(a) => GeneratorConfig::new(&key, a, weights),
        None => GeneratorConfig::registry(&key, weights).map_err(|e| e.to_string())?,
    };
    if let Some(n) = context {
        config = config.context_tokens(n);
    }
    if let Some(d) = device {
        config = config.device(d);
    }
    let text = if prompt.is_empty() {
        std::io::read_to_string(std::io::stdin()).map_err(|e| e.to_string())?
    } else {
        prompt.join(" ")
    };
    let text = text.trim().to_owned();
    request.prompt = if raw {
        super::service::Prompt::Raw(text)
    } else {
        let mut messages: Vec<ChatMessage> = system.into_iter().map(ChatMessage::system).collect();
        messages.push(ChatMessage::user(text));
        super::service::Prompt::Chat(messages)
    };
    let image = image
        .map(|p| image::open(&p).map_err(|e| format!("{}: {e}", p.display())))
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let pool = GeneratorPool::builder()
            .model(config)
            .build()
            .map_err(|e| e.to_string())?;
        let stream = match image {
            Some(img) => pool.describe_image_with(&key, img, request).await,
            None => pool.generate(&key, request).await,
        };
        let mut stream = stream.map_err(|e| e.to_string())?;
        let mut out = std::io::stdout().lock();
        while let Some(token) = stream.next_token().await {
            let token = token.map_err(|e| e.to_string())?;
            out.write_all(token.text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| e.to_string())?;
        }
        writeln!(out).map_err(|e| e.to_string())?;
        if let (Some(finish), Some(u)) = (stream.finish_reason(), stream.usage()) {
            eprintln!(
                "finish: {finish:?}; {} prompt + {} new tokens; prefill {:.2} s, decode {:.2} tok/s",
                u.prompt_tokens,
                u.completion_tokens,
                u.prefill.as_secs_f64(),
                u.decode_tokens_per_second()
            );
        }
        pool.shutdown().await;
        Ok(())
    })
}
