//! The options every command that serves one model shares: which model, where its files are,
//! and where and how it runs; and the one-shot pool they are served from.

use std::path::PathBuf;

use candle_core::DType;
use clap::Args;
use model_pool::DeviceId;
use model_serving::{ModelPool, ModelSource, ServedModel};

/// Which model, from which files, on which device.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Registry key (e.g. `sentence-transformers/all-MiniLM-L6-v2`), or any name for a model
    /// outside the registry (then give --weights; --arch where its files are ambiguous).
    #[arg(long, value_name = "KEY")]
    pub model: String,
    /// The checkpoint: a directory in the Hugging Face Hub layout, or a GGUF file. Default:
    /// the model's snapshot in the Hugging Face cache (HF_HUB_CACHE, HF_HOME/hub or
    /// ~/.cache/huggingface/hub); nothing is downloaded.
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,
    /// --weights is a repository id in the Hugging Face cache, not a path.
    #[arg(long)]
    pub hf_cache: bool,
    /// The backend of a model outside the registry: bert, jina-bert, stella, gte-qwen2,
    /// nv-embed, clip, phi3, qwen3moe, llava, flux or sd3 (detected from its files when
    /// omitted).
    #[arg(long, value_name = "NAME", value_parser = parse_backend)]
    pub arch: Option<model_registry::Backend>,
    /// Where the model runs: cpu, cuda:N or metal:N (GPUs need a build with `--features
    /// cuda` or `metal`).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceId,
    /// Weight dtype: f32, f16 or bf16 (default: the run profile's).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<DType>,
}

fn parse_backend(s: &str) -> Result<model_registry::Backend, String> {
    model_serving::config::parse_backend(s)
}

fn parse_device(s: &str) -> Result<DeviceId, String> {
    s.parse::<DeviceId>().map_err(|e| e.to_string())
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    model_runtime::parse_dtype(s).map_err(|e| e.to_string())
}

impl ModelArgs {
    /// Where the files are.
    pub fn source(&self) -> ModelSource {
        match &self.weights {
            Some(w) if self.hf_cache => ModelSource::HfCache {
                repo: w.display().to_string(),
                revision: None,
            },
            Some(w) => ModelSource::Path(w.clone()),
            None => ModelSource::HfCache {
                repo: self.model.clone(),
                revision: model_registry::by_key(&self.model)
                    .map(|m| m.revision)
                    .filter(|r| *r != "unpinned")
                    .map(str::to_owned),
            },
        }
    }

    /// How the model is served: a registry model from its static (unless --arch names
    /// another backend), any other from its own files.
    pub fn served(&self) -> Result<ServedModel, String> {
        let in_registry = model_registry::by_key(&self.model).is_some();
        let model = match self.arch {
            None if in_registry => ServedModel::registry(&self.model, self.source()),
            Some(backend) => ServedModel::with_backend(&self.model, self.source(), backend),
            None if self.weights.is_none() => {
                return Err(format!(
                    "`{}` is not in the registry; give its files with --weights (and --arch if \
                     they are ambiguous), or pick a registry model (`candle-pool list`)",
                    self.model
                ));
            }
            None => ServedModel::detect(&self.model, self.source()),
        }
        .map_err(|e| e.to_string())?;
        let mut model = model.device(self.device);
        if let Some(dtype) = self.dtype {
            model = match &model.options {
                model_serving::ModelOptions::Embed(_) => model.map_embed(|o| o.dtype(dtype)),
                model_serving::ModelOptions::Generate(_) => model.map_generate(|o| o.dtype(dtype)),
                model_serving::ModelOptions::TextToImage(_) => model.map_image(|o| o.dtype(dtype)),
            }
            .map_err(|e| e.to_string())?;
        }
        Ok(model)
    }
}

/// A multi-threaded Tokio runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// A pool holding `model` alone, on the process-wide governor (detected budget or
/// MODEL_POOL_BUDGET). Must run inside the runtime.
pub fn pool_of(model: ServedModel) -> Result<ModelPool, String> {
    ModelPool::builder()
        .model(model)
        .build()
        .map_err(|e| e.to_string())
}
