//! `candle-pool text-to-image`: one prompt to one image file, through the pool.

use std::path::PathBuf;

use model_pool::DeviceId;

use super::{DiffusionConfig, ImagePool, ImageRequest, Pipeline, Progress, stage_name};
use crate::config::ModelSource;

/// Usage of the subcommand (the `candle-pool` help prints it).
pub const USAGE: &str = "\
  candle-pool text-to-image --model KEY --weights DIR --prompt TEXT [IMAGE OPTIONS]
      Generates one image through the pool and writes it as PNG. KEY is
      black-forest-labs/FLUX.1-schnell or stabilityai/stable-diffusion-3.5-large-turbo (any
      other key needs --pipeline flux|sd3); DIR holds the checkpoint in the Hub layout.
      IMAGE OPTIONS: --width N --height N (multiples of 16, default 1024) --steps N (default
      4) --seed N (default 0) --out FILE (default image.png) --staged (load the text
      encoders, denoiser and decoder one stage at a time) --device cpu|cuda:N|metal:N
      --dtype f32|f16|bf16 (default the run profile's) --pipeline flux|sd3 --hf-cache
";

#[derive(Debug)]
struct Options {
    model: Option<String>,
    weights: Option<String>,
    prompt: Option<String>,
    width: u32,
    height: u32,
    steps: u32,
    seed: u64,
    out: PathBuf,
    staged: bool,
    device: Option<DeviceId>,
    dtype: Option<candle_core::DType>,
    pipeline: Option<Pipeline>,
    hf_cache: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        model: None,
        weights: None,
        prompt: None,
        width: 1024,
        height: 1024,
        steps: 4,
        seed: 0,
        out: PathBuf::from("image.png"),
        staged: false,
        device: None,
        dtype: None,
        pipeline: None,
        hf_cache: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |name: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name} needs a non-negative integer, not `{v}`"))
        };
        match arg.as_str() {
            "--model" => o.model = Some(value("--model")?),
            "--weights" => o.weights = Some(value("--weights")?),
            "--prompt" => o.prompt = Some(value("--prompt")?),
            "--width" => {
                o.width = number("--width", value("--width")?)?
                    .try_into()
                    .map_err(|_| "--width is too large")?
            }
            "--height" => {
                o.height = number("--height", value("--height")?)?
                    .try_into()
                    .map_err(|_| "--height is too large")?
            }
            "--steps" => {
                o.steps = number("--steps", value("--steps")?)?
                    .try_into()
                    .map_err(|_| "--steps is too large")?
            }
            "--seed" => o.seed = number("--seed", value("--seed")?)?,
            "--out" => o.out = PathBuf::from(value("--out")?),
            "--staged" => o.staged = true,
            "--hf-cache" => o.hf_cache = true,
            "--device" => o.device = Some(value("--device")?.parse().map_err(|e| format!("{e}"))?),
            "--dtype" => {
                o.dtype = Some(
                    crate::device::parse_dtype(&value("--dtype")?).map_err(|e| e.to_string())?,
                )
            }
            "--pipeline" => o.pipeline = Some(value("--pipeline")?.parse()?),
            other => {
                return Err(format!(
                    "unknown option `{other}` for text-to-image\n\n{USAGE}"
                ));
            }
        }
    }
    Ok(o)
}

/// Runs `candle-pool text-to-image ARGS`.
pub fn text_to_image(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let o = parse(args)?;
    let key = o.model.clone().ok_or("give --model KEY")?;
    let weights = o.weights.clone().ok_or("give --weights DIR")?;
    let prompt = o.prompt.clone().ok_or("give --prompt TEXT")?;
    let source = if o.hf_cache {
        ModelSource::HfCache {
            repo: weights,
            revision: None,
        }
    } else {
        ModelSource::Dir(PathBuf::from(weights))
    };
    let mut config = match (DiffusionConfig::registry(&key, source.clone()), o.pipeline) {
        (Ok(c), _) => c,
        (Err(_), Some(p)) => DiffusionConfig::new(&key, p, source),
        (Err(e), None) => return Err(format!("{e} (or name its --pipeline flux|sd3)")),
    };
    if let Some(p) = o.pipeline {
        config.pipeline = p;
    }
    if let Some(d) = o.device {
        config = config.device(d);
    }
    if let Some(t) = o.dtype {
        config = config.dtype(t);
    }
    if o.staged {
        config = config.staged(true);
    }
    let request = ImageRequest::new(prompt)
        .size(o.width, o.height)
        .steps(o.steps)
        .seed(o.seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let image = runtime.block_on(async {
        let pool = ImagePool::builder()
            .model(config)
            .build()
            .map_err(|e| e.to_string())?;
        let result = pool
            .generate(&key, request, |p| match p {
                Progress::StageStarted {
                    stage,
                    reserved_bytes,
                } => eprintln!(
                    "{}: reserved {}",
                    stage_name(stage),
                    model_pool::ByteSize(reserved_bytes)
                ),
                Progress::Step { step, steps } => eprintln!("step {step}/{steps}"),
                Progress::StageFinished { .. } => {}
            })
            .await;
        pool.shutdown().await;
        result.map_err(|e| e.to_string())
    })?;
    std::fs::write(&o.out, &image.png).map_err(|e| format!("{}: {e}", o.out.display()))?;
    println!(
        "{} ({}×{}, {} steps, seed {}; peak reservation {})",
        o.out.display(),
        image.width,
        image.height,
        image.steps,
        image.seed,
        model_pool::ByteSize(image.memory.peak_bytes())
    );
    Ok(())
}
