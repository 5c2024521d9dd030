//! What a server serves: the models named on the command line (`KEY=PATH`), a pool file
//! (`pool.toml`: per model path, architecture, device, tier, idle TTL, priority, concurrency,
//! queue and timeout) and the planner's plan (budgets, tiers, devices), put together into the
//! one pool's configuration.
//!
//! ```toml
//! [pool]
//! request_timeout = "120s"     # default deadline of a request (waiting, loading, running)
//! max_queued = 1024            # requests waiting over all models
//!
//! [[model]]
//! key = "sentence-transformers/all-MiniLM-L6-v2"
//! path = ".cache/all-MiniLM-L6-v2"   # relative to this file
//! tier = "hot"                       # preloaded and kept (pinned unless `pinned = false`)
//! priority = 10
//!
//! [[model]]
//! key = "my/phi3"
//! path = "models/phi3.gguf"
//! arch = "phi3"                      # a model outside the registry
//! chat_template = "chatml"           # chatml, chatml-phi, llava or kimi; default: the file's own
//! tier = "warm"
//! idle_ttl = "5m"
//! max_concurrency = 2
//! max_queue = 16
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use model_plan::Plan;
use model_pool::{DeviceId, GovernorConfig, MemoryGovernor, ModelSpec, SchedulerConfig, Tier};
use model_registry::Backend;
use model_serving::generate::ChatTemplate;
use model_serving::{ModelPool, ModelSource, ServeError, ServedModel, plan_file};
use serde::Deserialize;

pub use model_spec::size::parse_size;

/// Why the server's configuration cannot be used; each names the setting and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A `--model` value is not `KEY` or `KEY=PATH`.
    #[error(
        "--model `{0}`: expected KEY (a registry model, fetched from the Hub) or KEY=PATH, e.g. sentence-transformers/all-MiniLM-L6-v2=.cache/all-MiniLM-L6-v2"
    )]
    ModelArg(String),
    /// The pool file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the line for syntax errors).
        message: String,
    },
    /// A model's settings are wrong.
    #[error("model `{model}`: {reason}")]
    Model {
        /// The model.
        model: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Nothing to serve.
    #[error(
        "no model to serve: pass --model KEY=PATH (repeatable) or a --config file with [[model]] entries"
    )]
    NoModels,
    /// The plan does not fit the models.
    #[error("{0}")]
    Plan(#[from] plan_file::PlanConfigError),
    /// A model could not be configured.
    #[error("{0}")]
    Serve(#[from] ServeError),
    /// The budgets could not be resolved.
    #[error("{0}")]
    Governor(#[from] model_pool::GovernorError),
}

/// One `--model KEY=PATH` (or `--model KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelArg {
    /// The key requests use (a registry key, or any name for a model outside the registry).
    pub key: String,
    /// A checkpoint folder in the Hub layout, or a GGUF file; `None`: the pool file's path,
    /// else (registry models) the Hub repository, fetched into the Hugging Face cache.
    pub path: Option<PathBuf>,
}

impl FromStr for ModelArg {
    type Err = SetupError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Keys contain `/` but never `=`; paths may contain `=`, so split at the first one.
        match s.split_once('=') {
            Some((key, path)) if !key.trim().is_empty() && !path.trim().is_empty() => {
                Ok(ModelArg {
                    key: key.trim().to_owned(),
                    path: Some(PathBuf::from(path.trim())),
                })
            }
            None if !s.trim().is_empty() => Ok(ModelArg {
                key: s.trim().to_owned(),
                path: None,
            }),
            _ => Err(SetupError::ModelArg(s.to_owned())),
        }
    }
}

/// A duration as the pool file and the command line write it: `250ms`, `30s`, `5m`, `1h`, or
/// a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration `{s}` (examples: `250ms`, `30s`, `5m`, `1h`)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "invalid duration `{s}`: unknown unit `{other}` (use ms, s, m or h)"
            ));
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("invalid duration `{s}`"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    #[serde(default)]
    pool: PoolSection,
    #[serde(default, rename = "model")]
    models: Vec<ModelEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolSection {
    request_timeout: Option<String>,
    load_timeout: Option<String>,
    max_queued: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum TierName {
    Hot,
    Warm,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    key: String,
    path: Option<PathBuf>,
    arch: Option<String>,
    device: Option<String>,
    tier: Option<TierName>,
    pinned: Option<bool>,
    idle_ttl: Option<String>,
    priority: Option<i32>,
    max_concurrency: Option<usize>,
    max_queue: Option<usize>,
    request_timeout: Option<String>,
    chat_template: Option<String>,
}

/// What the command line says.
#[derive(Debug, Clone, Default)]
pub struct SetupArgs {
    /// `--model KEY=PATH`, in order.
    pub models: Vec<ModelArg>,
    /// `--arch`: the backend of the `--model` entries outside the registry (detected from
    /// their files when `None`; per model in the pool file).
    pub arch: Option<Backend>,
    /// `--config pool.toml`.
    pub config: Option<PathBuf>,
    /// `--plan plan.json`.
    pub plan: Option<PathBuf>,
    /// `--request-timeout`: the pool's default request deadline.
    pub request_timeout: Option<Duration>,
}

/// The pool a server runs: its models, budgets (from the plan; detection or
/// `MODEL_POOL_BUDGET` otherwise) and scheduler limits.
#[derive(Debug)]
pub struct PoolSetup {
    /// Every model, in the order given.
    pub models: Vec<ServedModel>,
    /// Budgets from the plan; `None`: the process-wide governor.
    pub governor: Option<GovernorConfig>,
    /// Pool-wide limits.
    pub scheduler: SchedulerConfig,
}

impl PoolSetup {
    /// Reads the pool file and the plan and configures every model.
    pub fn from_args(args: &SetupArgs) -> Result<Self, SetupError> {
        let (file, base) = match &args.config {
            Some(path) => (read_pool_file(path)?, path.parent().map(Path::to_path_buf)),
            None => (PoolFile::default(), None),
        };
        let plan = args.plan.as_deref().map(plan_file::load).transpose()?;
        let mut scheduler = SchedulerConfig::default();
        let file_err = |message: String| SetupError::File {
            path: args.config.clone().unwrap_or_default(),
            message,
        };
        if let Some(t) = &file.pool.request_timeout {
            scheduler.request_timeout =
                parse_duration(t).map_err(|e| file_err(format!("[pool] request_timeout: {e}")))?;
        }
        if let Some(t) = &file.pool.load_timeout {
            scheduler.load_timeout =
                parse_duration(t).map_err(|e| file_err(format!("[pool] load_timeout: {e}")))?;
        }
        if let Some(n) = file.pool.max_queued {
            scheduler.max_queued_total = n;
        }
        if let Some(t) = args.request_timeout {
            scheduler.request_timeout = t;
        }

        // Command-line models first, in order; pool-file models that the command line did not
        // name after them. A key on both takes its path from the command line (else the
        // file's) and the rest from the file. Relative paths in the file are relative to it.
        let file_path = |e: &ModelEntry| {
            e.path.as_ref().map(|p| match &base {
                Some(b) if p.is_relative() => b.join(p),
                _ => p.clone(),
            })
        };
        let mut entries: Vec<(ModelEntry, Option<PathBuf>, bool)> = Vec::new();
        let mut seen = HashSet::new();
        for m in &args.models {
            if !seen.insert(m.key.clone()) {
                return Err(SetupError::Model {
                    model: m.key.clone(),
                    reason: "given twice with --model".into(),
                });
            }
            let entry = file
                .models
                .iter()
                .find(|e| e.key == m.key)
                .cloned()
                .unwrap_or_else(|| ModelEntry {
                    key: m.key.clone(),
                    ..Default::default()
                });
            let path = m.path.clone().or_else(|| file_path(&entry));
            entries.push((entry, path, true));
        }
        for e in &file.models {
            if seen.insert(e.key.clone()) {
                entries.push((e.clone(), file_path(e), false));
            } else if !args.models.iter().any(|m| m.key == e.key) {
                return Err(file_err(format!("model `{}` is listed twice", e.key)));
            }
        }
        if entries.is_empty() {
            return Err(SetupError::NoModels);
        }
        let models = entries
            .into_iter()
            .map(|(entry, path, from_cli)| {
                served(
                    &entry,
                    path,
                    from_cli.then_some(args.arch).flatten(),
                    plan.as_ref(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let governor = plan.as_ref().map(plan_file::governor_config).transpose()?;
        Ok(PoolSetup {
            models,
            governor,
            scheduler,
        })
    }

    /// Builds the pool (inside a Tokio runtime).
    pub fn build(self) -> Result<ModelPool, SetupError> {
        let mut builder = ModelPool::builder()
            .models(self.models)
            .scheduler(self.scheduler);
        if let Some(config) = self.governor {
            builder = builder.governor(MemoryGovernor::new(config)?);
        }
        Ok(builder.build()?)
    }
}

fn read_pool_file(path: &Path) -> Result<PoolFile, SetupError> {
    let text = std::fs::read_to_string(path).map_err(|e| SetupError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| SetupError::File {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// One model's configuration: registry facts (or its files'), then the plan, then the pool
/// file's explicit settings.
fn served(
    e: &ModelEntry,
    path: Option<PathBuf>,
    cli_arch: Option<Backend>,
    plan: Option<&Plan>,
) -> Result<ServedModel, SetupError> {
    let bad = |reason: String| SetupError::Model {
        model: e.key.clone(),
        reason,
    };
    let arch = match (&e.arch, cli_arch) {
        (Some(a), _) => {
            Some(model_serving::config::parse_backend(a).map_err(|r| bad(format!("arch: {r}")))?)
        }
        (None, a) => a,
    };
    let in_registry = model_registry::by_key(&e.key).is_some();
    let source = match (&path, in_registry) {
        (Some(p), _) => ModelSource::Path(p.clone()),
        // Fetched from the Hub into its cache by the first load where files are missing.
        (None, true) => model_registry::by_key(&e.key)
            .map(ModelSource::hub_of)
            .ok_or_else(|| bad("not in the registry".into()))?,
        (None, false) => {
            return Err(bad(format!(
                "not in the registry and no path: pass --model {}=PATH or set `path` in the pool file",
                e.key
            )));
        }
    };
    let mut model = match arch {
        Some(backend) if !in_registry => ServedModel::with_backend(&e.key, source, backend)?,
        None if !in_registry => ServedModel::detect(&e.key, source)?,
        _ => ServedModel::registry(&e.key, source)?,
    };
    if let Some(plan) = plan {
        model = plan_file::apply(plan, model)?;
    }
    if let Some(d) = &e.device {
        let device: DeviceId = d
            .parse()
            .map_err(|err| bad(format!("device `{d}`: {err}")))?;
        model = model.device(device);
    }
    let ttl = e
        .idle_ttl
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|r| bad(format!("idle_ttl: {r}")))?;
    match (e.tier, ttl) {
        (Some(TierName::Hot), Some(_)) => {
            return Err(bad(
                "idle_ttl is for warm models; a hot model stays loaded".into()
            ));
        }
        (Some(TierName::Hot), None) => {
            model = model.tier(Tier::Hot {
                pinned: e.pinned.unwrap_or(true),
            })
        }
        (Some(TierName::Warm), ttl) | (None, ttl @ Some(_)) => {
            model = model.tier(Tier::Warm {
                idle_ttl: ttl.unwrap_or(ModelSpec::DEFAULT_IDLE_TTL),
            })
        }
        (None, None) => {}
    }
    if e.pinned.is_some() && e.tier != Some(TierName::Hot) {
        return Err(bad("`pinned` needs tier = \"hot\"".into()));
    }
    if let Some(p) = e.priority {
        model = model.priority(p);
    }
    if let Some(n) = e.max_concurrency {
        model = model.max_concurrency(n);
    }
    if let Some(n) = e.max_queue {
        model = model.max_queue(n);
    }
    if let Some(name) = &e.chat_template {
        let template = match name.as_str() {
            "llava" => Some(ChatTemplate::llava15()),
            other => ChatTemplate::from_spec_name(other),
        }
        .ok_or_else(|| {
            bad(format!(
                "chat_template `{name}` is not one of `chatml`, `chatml-phi`, `llava`, `kimi`"
            ))
        })?;
        model = model
            .map_generate(|o| o.template(template))
            .map_err(|err| bad(err.to_string()))?;
    }
    if let Some(t) = &e.request_timeout {
        model = model
            .request_timeout(parse_duration(t).map_err(|r| bad(format!("request_timeout: {r}")))?);
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").unwrap_err().contains("examples"));
        assert!(
            parse_duration("3d")
                .unwrap_err()
                .contains("unknown unit `d`")
        );
    }

    #[test]
    fn model_args_split_at_the_first_equals_sign() {
        let m: ModelArg = "sentence-transformers/all-MiniLM-L6-v2=/m/a=b"
            .parse()
            .unwrap();
        assert_eq!(m.key, "sentence-transformers/all-MiniLM-L6-v2");
        assert_eq!(m.path, Some(PathBuf::from("/m/a=b")));
        let registry_key: ModelArg = "sentence-transformers/all-MiniLM-L6-v2".parse().unwrap();
        assert_eq!(registry_key.path, None, "a key alone: fetched from the Hub");
        assert!(matches!(
            "key=".parse::<ModelArg>(),
            Err(SetupError::ModelArg(_))
        ));
        assert!(matches!(
            "=path".parse::<ModelArg>(),
            Err(SetupError::ModelArg(_))
        ));
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn the_pool_file_sets_each_model_and_the_command_line_its_path() {
        let dir = std::env::temp_dir().join(format!("model-server-setup-{}", std::process::id()));
        let config = write(
            &dir,
            "pool.toml",
            r#"
[pool]
request_timeout = "45s"
max_queued = 10

[[model]]
key = "sentence-transformers/all-MiniLM-L6-v2"
path = "minilm"
tier = "hot"
priority = 7

[[model]]
key = "microsoft/phi-4"
path = "/models/phi-4.gguf"
idle_ttl = "2m"
max_concurrency = 2
max_queue = 3
request_timeout = "10s"
chat_template = "chatml"
"#,
        );
        let setup = PoolSetup::from_args(&SetupArgs {
            models: vec!["microsoft/phi-4=/elsewhere/phi.gguf".parse().unwrap()],
            config: Some(config.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(setup.scheduler.request_timeout, Duration::from_secs(45));
        assert_eq!(setup.scheduler.max_queued_total, 10);
        let keys: Vec<_> = setup.models.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(
            keys,
            ["microsoft/phi-4", "sentence-transformers/all-MiniLM-L6-v2"]
        );
        let phi = &setup.models[0];
        assert_eq!(phi.source, ModelSource::Path("/elsewhere/phi.gguf".into()));
        assert_eq!(
            phi.tier,
            Tier::Warm {
                idle_ttl: Duration::from_secs(120)
            }
        );
        assert_eq!((phi.max_concurrency, phi.max_queue), (Some(2), Some(3)));
        assert_eq!(phi.request_timeout, Some(Duration::from_secs(10)));
        let template = phi.generate_options("generate").unwrap().template.clone();
        assert_eq!(template, Some(ChatTemplate::chatml()));
        let minilm = &setup.models[1];
        assert_eq!(minilm.source, ModelSource::Path(dir.join("minilm")));
        assert_eq!(
            (minilm.tier, minilm.priority),
            (Tier::Hot { pinned: true }, 7)
        );

        let bad = write(
            &dir,
            "bad.toml",
            "[[model]]\nkey = \"x\"\ntier = \"lukewarm\"\n",
        );
        let err = PoolSetup::from_args(&SetupArgs {
            config: Some(bad),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("bad.toml") && err.contains("lukewarm"),
            "{err}"
        );
        let err = PoolSetup::from_args(&SetupArgs {
            models: vec!["my/own=/nowhere".parse().unwrap()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nowhere"), "{err}");
        assert!(matches!(
            PoolSetup::from_args(&SetupArgs::default()),
            Err(SetupError::NoModels)
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
