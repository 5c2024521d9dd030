//! `candle-pool generate`: one generation through the pool, streamed to stdout.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use model_serving::{ChatMessage, GenerateRequest, Prompt};

use crate::model_args::{ModelArgs, pool_of, runtime};

/// Options of `candle-pool generate`.
///
/// Registry models get their chat template, sampling defaults and memory estimate; Kimi K2 is
/// refused with the reason (it never fits, or no backend runs deepseek2).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// An image to describe (LLaVA).
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// A system message before the prompt.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Pass the prompt as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Most new tokens (default: the rest of the context, capped at the model's output limit).
    #[arg(long, value_name = "N")]
    max_tokens: Option<usize>,
    /// Softmax temperature; 0 is greedy (default: the model card's).
    #[arg(long, value_name = "T")]
    temperature: Option<f64>,
    /// Nucleus sampling mass, in (0, 1].
    #[arg(long, value_name = "P")]
    top_p: Option<f64>,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Penalty on tokens already in the context (1: off).
    #[arg(long, value_name = "R")]
    repetition_penalty: Option<f32>,
    /// Seed of the sampler: equal seeds give equal answers.
    #[arg(long, value_name = "SEED")]
    seed: Option<u64>,
    /// End the answer before this text (repeatable).
    #[arg(long, value_name = "TEXT")]
    stop: Vec<String>,
    /// Tokens one request may hold; its KV cache is reserved for them (default: the run
    /// profile's context).
    #[arg(long, value_name = "N")]
    context: Option<usize>,
    /// How the KV cache stores keys and values: f16 (the default, half the memory) or f32;
    /// the memory reserved per request follows.
    #[arg(long, value_name = "DTYPE", value_parser = parse_kv_dtype)]
    kv_dtype: Option<candle_core::DType>,
    /// Give up after this many seconds (waiting, loading and generating).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// The prompt; stdin when none is given.
    prompt: Vec<String>,
}

/// Runs `candle-pool generate`.
pub fn run(args: Args) -> Result<(), String> {
    let mut served = args.model.served()?;
    if let Some(n) = args.context {
        served = served
            .map_generate(|o| o.context_tokens(n))
            .map_err(|e| e.to_string())?;
    }
    if let Some(d) = args.kv_dtype {
        served = served
            .map_generate(|o| o.kv_dtype(d))
            .map_err(|e| e.to_string())?;
    }
    let text = if args.prompt.is_empty() {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
    } else {
        args.prompt.join(" ")
    };
    let text = text.trim().to_owned();
    let mut request = GenerateRequest::chat(Vec::new());
    request.prompt = if args.raw {
        Prompt::Raw(text)
    } else {
        let mut messages: Vec<ChatMessage> =
            args.system.into_iter().map(ChatMessage::system).collect();
        messages.push(ChatMessage::user(text));
        Prompt::Chat(messages)
    };
    request.max_tokens = args.max_tokens;
    request.sampling.temperature = args.temperature;
    request.sampling.top_p = args.top_p;
    request.sampling.top_k = args.top_k;
    request.sampling.repetition_penalty = args.repetition_penalty;
    request.sampling.seed = args.seed;
    request.stop = args.stop;
    if let Some(s) = args.timeout {
        let t = Duration::try_from_secs_f64(s)
            .map_err(|_| format!("--timeout {s}: give a positive number of seconds"))?;
        request.timeout = Some(t);
    }
    let image = args
        .image
        .map(|p| image::open(&p).map_err(|e| format!("{}: {e}", p.display())))
        .transpose()?;
    let key = served.key.clone();
    runtime()?.block_on(async move {
        let pool = pool_of(served)?;
        let result = stream(&pool, &key, request, image).await;
        pool.shutdown().await;
        result
    })
}

async fn stream(
    pool: &model_serving::ModelPool,
    key: &str,
    request: GenerateRequest,
    image: Option<image::DynamicImage>,
) -> Result<(), String> {
    let stream = match image {
        Some(img) => pool.describe_image_with(key, img, request).await,
        None => pool.generate(key, request).await,
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
    Ok(())
}

/// `f16` or `f32` (any case).
fn parse_kv_dtype(s: &str) -> Result<candle_core::DType, String> {
    match s.to_ascii_lowercase().as_str() {
        "f16" => Ok(candle_core::DType::F16),
        "f32" => Ok(candle_core::DType::F32),
        other => Err(format!("`{other}` is not a KV cache dtype: use f16 or f32")),
    }
}
