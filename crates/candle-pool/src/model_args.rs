//! The options every command that serves one model shares: which model, where its files are,
//! and where and how it runs; and the one-shot pool they are served from.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use candle_core::DType;
use clap::Args;
use model_pool::DeviceId;
use model_serving::{ModelPool, ModelSource, ServedModel};

use crate::download_progress::TerminalProgress;

/// Which model, from which files, on which device.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Registry key (e.g. `sentence-transformers/all-MiniLM-L6-v2`), or a Hub repository id
    /// (`org/name`) or any name for a model outside the registry (with --weights for local
    /// files; --arch where its files are ambiguous).
    #[arg(long, value_name = "KEY")]
    pub model: String,
    /// The checkpoint: a directory in the Hugging Face Hub layout, or a GGUF file. Default:
    /// the model's repository on the Hub (HF_ENDPOINT), downloaded into the Hugging Face
    /// cache (HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub) where files are
    /// missing, after checking that the model fits; HF_HUB_OFFLINE=1 uses the cache alone.
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,
    /// --weights is a repository id in the Hugging Face cache, not a path (nothing is
    /// downloaded).
    #[arg(long)]
    pub hf_cache: bool,
    /// Branch, tag or commit of the model's Hub repository (default: the registry's pinned
    /// revision, else `main`).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// For a model outside the registry fetched from the Hub: its weight files, as globs over
    /// the repository's paths (repeat for several; default: the top-level `*.safetensors` and
    /// the Sentence-Transformers modules' `[0-9]_*/*.safetensors`). Configuration and
    /// tokenizer files always come along.
    #[arg(long = "hub-file", value_name = "GLOB")]
    pub hub_files: Vec<String>,
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
            None => {
                // A registry model's repository and weight files, else the repository the
                // key names with its safetensors weights; --revision and --hub-file override.
                let (repo, revision, weights) =
                    match model_registry::by_key(&self.model).map(ModelSource::hub_of) {
                        Some(ModelSource::Hub {
                            repo,
                            revision,
                            weights,
                        }) => (repo, revision, weights),
                        _ => (
                            self.model.clone(),
                            "main".to_owned(),
                            vec!["{*.safetensors,[0-9]_*/*.safetensors}".to_owned()],
                        ),
                    };
                ModelSource::Hub {
                    repo,
                    revision: self.revision.clone().unwrap_or(revision),
                    weights: if self.hub_files.is_empty() {
                        weights
                    } else {
                        self.hub_files.clone()
                    },
                }
            }
        }
    }

    /// How the model is served: a registry model from its static (unless --arch names
    /// another backend), any other from its own files.
    ///
    /// A registry model fetched from the Hub is downloaded by the pool's first load of it,
    /// after the pool has checked that it fits; any other model's files are fetched here,
    /// since what it is and what it needs are read from them.
    pub fn served(&self) -> Result<ServedModel, String> {
        let in_registry = model_registry::by_key(&self.model).is_some();
        let mut source = self.source();
        if !in_registry && matches!(source, ModelSource::Hub { .. }) {
            let fetch = model_serving::download::Downloads::with_observer(Some(Arc::new(
                TerminalProgress::new(),
            )));
            source = runtime()?
                .block_on(fetch.local_source(&self.model, &source))
                .map_err(|e| e.to_string())?;
        }
        // The one-shot commands wait for a download however long it takes (Ctrl-C stops it;
        // a rerun resumes).
        let downloading = source.resolve().is_err();
        let model = match self.arch {
            None if in_registry => ServedModel::registry(&self.model, source),
            Some(backend) => ServedModel::with_backend(&self.model, source, backend),
            None => ServedModel::detect(&self.model, source),
        }
        .map_err(|e| e.to_string())?;
        let model = if downloading {
            model.request_timeout(DOWNLOAD_WAIT)
        } else {
            model
        };
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

/// How long a one-shot command waits for a model whose files are still to be downloaded.
const DOWNLOAD_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A pool holding `model` alone, on the process-wide governor (detected budget or
/// MODEL_POOL_BUDGET), showing download progress on stderr. Must run inside the runtime.
pub fn pool_of(model: ServedModel) -> Result<ModelPool, String> {
    ModelPool::builder()
        .model(model)
        .download_observer(Arc::new(TerminalProgress::new()))
        .build()
        .map_err(|e| e.to_string())
}
