//! `candle-pool text-to-image`: one prompt to one PNG file, through the pool.

use std::path::PathBuf;

use model_pool::ByteSize;
use model_serving::error::stage_name;
use model_serving::{ImageRequest, Progress};

use crate::model_args::{ModelArgs, pool_of, runtime};

/// Options of `candle-pool text-to-image`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// What to paint.
    #[arg(long)]
    prompt: String,
    /// Width in pixels, a multiple of 16.
    #[arg(long, default_value_t = 1024)]
    width: u32,
    /// Height in pixels, a multiple of 16.
    #[arg(long, default_value_t = 1024)]
    height: u32,
    /// Denoising steps (both models are distilled for 1–4).
    #[arg(long, default_value_t = 4)]
    steps: u32,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the PNG.
    #[arg(long, default_value = "image.png")]
    out: PathBuf,
    /// Load the text encoders, denoiser and decoder one stage at a time (less memory, slower).
    #[arg(long)]
    staged: bool,
}

/// Runs `candle-pool text-to-image`.
pub fn run(args: Args) -> Result<(), String> {
    let mut served = args.model.served()?;
    if args.staged {
        served = served
            .map_image(|o| o.staged(true))
            .map_err(|e| e.to_string())?;
    }
    let request = ImageRequest::new(args.prompt)
        .size(args.width, args.height)
        .steps(args.steps)
        .seed(args.seed);
    let key = served.key.clone();
    let image = runtime()?.block_on(async {
        let pool = pool_of(served)?;
        let result = pool
            .generate_image(&key, request, |p| match p {
                Progress::StageStarted {
                    stage,
                    reserved_bytes,
                } => eprintln!(
                    "{}: {} of the request's reservation",
                    stage_name(stage),
                    ByteSize(reserved_bytes)
                ),
                Progress::Step { step, steps } => eprintln!("step {step}/{steps}"),
                Progress::StageFinished { .. } => {}
            })
            .await;
        pool.shutdown().await;
        result.map_err(|e| e.to_string())
    })?;
    write_atomically(&args.out, &image.png)?;
    println!(
        "{} ({}×{}, {} steps, seed {}; peak reservation {})",
        args.out.display(),
        image.width,
        image.height,
        image.steps,
        image.seed,
        ByteSize(image.memory.peak_bytes())
    );
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it: never a half-written
/// image.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("png.tmp");
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    std::fs::write(&tmp, bytes).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}
