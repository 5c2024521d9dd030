//! `candle-pool embed` and `candle-pool embed-images`: one request through the pool, printed
//! as JSON with each input before its embedding.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use model_serving::{Overflow, TextMode};

use crate::model_args::{ModelArgs, pool_of, runtime};

/// Options of `candle-pool embed`.
#[derive(clap::Args, Debug)]
pub struct TextArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Most tokens per input, special tokens included (default: the model's own limit,
    /// capped at its run profile's).
    #[arg(long, value_name = "N")]
    max_input_tokens: Option<usize>,
    /// Refuse inputs longer than the limit instead of truncating them.
    #[arg(long)]
    refuse_long: bool,
    /// Embed the texts as search queries (with the model's query instruction).
    #[arg(long)]
    query: bool,
    /// Texts to embed; each non-empty stdin line when none is given.
    texts: Vec<String>,
}

/// Options of `candle-pool embed-images`.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image files (PNG or JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Runs `candle-pool embed`.
pub fn run_texts(args: TextArgs) -> Result<(), String> {
    let mut served = args.model.served()?;
    let (limit, refuse) = (args.max_input_tokens, args.refuse_long);
    if limit.is_some() || refuse {
        served = served
            .map_embed(|mut o| {
                o.max_input_tokens = limit.or(o.max_input_tokens);
                if refuse {
                    o.overflow = Overflow::Refuse;
                }
                o
            })
            .map_err(|e| e.to_string())?;
    }
    let texts: Vec<String> = if args.texts.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .collect()
    } else {
        args.texts
    };
    let mode = if args.query {
        TextMode::Query
    } else {
        TextMode::Document
    };
    let key = served.key.clone();
    let vectors = runtime()?.block_on(async {
        let pool = pool_of(served)?;
        let result = pool.embed_with(&key, texts.clone(), mode).await;
        pool.shutdown().await;
        result.map_err(|e| e.to_string())
    })?;
    print_embeddings("text", &texts, vectors)
}

/// Runs `candle-pool embed-images`.
pub fn run_images(args: ImageArgs) -> Result<(), String> {
    let served = args.model.served()?;
    let images = args
        .images
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            model_serving::decode_image(&bytes, i).map_err(|e| format!("{}: {e}", path.display()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let key = served.key.clone();
    let vectors = runtime()?.block_on(async {
        let pool = pool_of(served)?;
        let result = pool.embed_images(&key, images).await;
        pool.shutdown().await;
        result.map_err(|e| e.to_string())
    })?;
    let names: Vec<String> = args
        .images
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    print_embeddings("image", &names, vectors)
}

/// Writes `[{"<field>": input, "embedding": […]}, …]`, field by field so that each input
/// comes before its embedding.
fn print_embeddings(field: &str, inputs: &[String], vectors: Vec<Vec<f32>>) -> Result<(), String> {
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
    writeln!(std::io::stdout().lock(), "{out}").map_err(|e| e.to_string())
}
