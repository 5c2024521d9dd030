//! The `plan` command line, shared by `cargo xtask plan` and `candle-pool plan`: both flatten
//! [`PlanArgs`] into their clap parser and call [`run`]. A crate of its own so that the
//! planner library (`model-plan`) does not depend on clap.

use model_plan::budget::BudgetPolicy;
use model_plan::machine::{GpuKind, Machine, MachineOverrides};
use model_plan::plan::{Plan, PlanFileError};
use model_plan::planner::PlanError;
use model_plan::request::{
    PlanRequest, ProfileOverrides, Staging, parse_device, parse_kv_dtype, parse_model_setting,
    parse_resolution, parse_staging, parse_tokens,
};
use model_plan::size::parse_size;
use model_plan::{GpuProbe, detect_with, svg, table};
use model_spec::{DType, Device, Registry};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `plan`. Every machine value is detected unless given; sizes accept `64GiB`,
/// `24G`, `512MiB`, `1.5TiB` (binary) or `64GB` (decimal).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PlanArgs {
    /// Models to plan: registry keys or the part after `/`, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_name = "KEYS")]
    pub models: Vec<String>,

    /// Total RAM, instead of the detected figure.
    #[arg(long, value_parser = parse_size, value_name = "SIZE", help_heading = "Machine")]
    pub ram: Option<u64>,
    /// RAM free now (only used for a warning).
    #[arg(long, value_parser = parse_size, value_name = "SIZE", help_heading = "Machine")]
    pub ram_available: Option<u64>,
    /// Memory of one GPU; repeat for several GPUs. Replaces detected GPUs.
    #[arg(long, value_parser = parse_size, value_name = "SIZE", help_heading = "Machine")]
    pub vram: Vec<u64>,
    /// Kind of the GPUs given with --vram: cuda or metal.
    #[arg(long, value_parser = parse_gpu_kind, default_value = "cuda", help_heading = "Machine")]
    pub gpu_kind: GpuKind,
    /// Plan as if the machine had no GPU.
    #[arg(long, conflicts_with = "vram", help_heading = "Machine")]
    pub no_gpu: bool,
    /// Logical cores.
    #[arg(long, help_heading = "Machine")]
    pub cores: Option<u32>,
    /// NUMA nodes.
    #[arg(long, help_heading = "Machine")]
    pub numa_nodes: Option<u32>,
    /// CPU SIMD features, comma-separated (e.g. avx2,avx512f or neon; `none` for none).
    #[arg(long, value_delimiter = ',', help_heading = "Machine")]
    pub simd: Option<Vec<String>>,
    /// Free disk space in the model cache.
    #[arg(long, value_parser = parse_size, value_name = "SIZE", help_heading = "Machine")]
    pub disk_free: Option<u64>,
    /// Detect nothing: describe the machine only with the flags (--ram is then required).
    #[arg(long, requires = "ram", help_heading = "Machine")]
    pub no_detect: bool,

    /// Fixed part of the RAM reserve for the OS and runtime [default: 4GiB].
    #[arg(long, value_parser = parse_size, value_name = "SIZE", help_heading = "Budget")]
    pub ram_reserve: Option<u64>,
    /// Part of the RAM reserve that grows with RAM, in percent [default: 5].
    #[arg(long, value_name = "PERCENT", help_heading = "Budget")]
    pub ram_reserve_percent: Option<u32>,
    /// Safety margin on RAM after the reserve, in percent [default: 5].
    #[arg(long, value_name = "PERCENT", help_heading = "Budget")]
    pub ram_margin_percent: Option<u32>,
    /// Fixed part of each GPU's reserve [default: 512MiB].
    #[arg(long, value_parser = parse_size, value_name = "SIZE", help_heading = "Budget")]
    pub gpu_reserve: Option<u64>,
    /// Part of each GPU's reserve that grows with its memory, in percent [default: 5].
    #[arg(long, value_name = "PERCENT", help_heading = "Budget")]
    pub gpu_reserve_percent: Option<u32>,
    /// Safety margin on each GPU after the reserve, in percent [default: 5].
    #[arg(long, value_name = "PERCENT", help_heading = "Budget")]
    pub gpu_margin_percent: Option<u32>,

    /// Generators: context length (tokens the KV cache holds), e.g. 4096 or 16k.
    #[arg(long, value_parser = parse_tokens, value_name = "TOKENS", help_heading = "Profile")]
    pub context: Option<u64>,
    /// Generators: tokens per prefill step.
    #[arg(long, value_parser = parse_tokens, value_name = "TOKENS", help_heading = "Profile")]
    pub prompt: Option<u64>,
    /// Generators: KV cache type (f32, f16, bf16 …).
    #[arg(long, value_parser = parse_kv_dtype, value_name = "DTYPE", help_heading = "Profile")]
    pub kv_dtype: Option<DType>,
    /// Sequences or images per request.
    #[arg(long, help_heading = "Profile")]
    pub batch: Option<u64>,
    /// Encoders: tokens per input.
    #[arg(long, value_parser = parse_tokens, value_name = "TOKENS", help_heading = "Profile")]
    pub seq_len: Option<u64>,
    /// Vision / image embedding: input image side in pixels.
    #[arg(long, value_name = "PIXELS", help_heading = "Profile")]
    pub image_size: Option<u64>,
    /// Text-to-image: output size, WIDTHxHEIGHT.
    #[arg(long, value_parser = parse_resolution, value_name = "WxH", help_heading = "Profile")]
    pub resolution: Option<(u64, u64)>,
    /// Text-to-image: text tokens fed to the denoiser.
    #[arg(long, value_parser = parse_tokens, value_name = "TOKENS", help_heading = "Profile")]
    pub text_tokens: Option<u64>,
    /// Diffusion components: auto (co-resident when it fits, else staged), co-resident, staged.
    #[arg(long, value_parser = parse_staging, value_name = "MODE", help_heading = "Profile")]
    pub staging: Option<Staging>,
    /// Run every model on this device kind instead of its profile's: cpu, cuda, metal.
    #[arg(long, value_parser = parse_device, value_name = "DEVICE", help_heading = "Profile")]
    pub device: Option<Device>,
    /// Per-model profile, e.g. `microsoft/phi-4:context=16k,kv=f16` (fields: context,
    /// prompt, kv, batch, seq-len, image-size, resolution, text-tokens, staging, device).
    #[arg(long = "set", value_parser = parse_model_setting, value_name = "KEY:FIELD=VALUE,…", help_heading = "Profile")]
    pub set: Vec<(String, ProfileOverrides)>,
    /// A GPU model that fits no GPU is planned on the CPU against RAM instead of "never".
    #[arg(long, help_heading = "Profile")]
    pub cpu_fallback: bool,

    /// Print the plan as JSON instead of a table.
    #[arg(long, conflicts_with = "toml", help_heading = "Output")]
    pub json: bool,
    /// Print the plan as TOML instead of a table.
    #[arg(long, help_heading = "Output")]
    pub toml: bool,
    /// Also write the plan to this `.json` or `.toml` file (the pool reads it).
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    pub write: Option<PathBuf>,
    /// Also draw the plan as an SVG picture.
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    pub svg: Option<PathBuf>,
    /// Title of the picture [default: the machine's RAM and GPUs].
    #[arg(long, help_heading = "Output")]
    pub title: Option<String>,
    /// Write nothing; fail if the --svg or --write file differs from what would be written.
    #[arg(long, help_heading = "Output")]
    pub check: bool,
}

/// Why `plan` failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    File(#[from] PlanFileError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn parse_gpu_kind(s: &str) -> Result<GpuKind, String> {
    s.parse()
}

impl PlanArgs {
    /// The machine: detected (with `gpu_probes`) unless `--no-detect`, then the flags.
    pub fn machine(&self, gpu_probes: &[&dyn GpuProbe]) -> Machine {
        let base = match (self.no_detect, self.ram) {
            (true, Some(ram)) => Machine::with_ram(ram),
            _ => detect_with(gpu_probes),
        };
        self.machine_overrides().apply(base)
    }

    /// The machine flags.
    pub fn machine_overrides(&self) -> MachineOverrides {
        MachineOverrides {
            ram_bytes: self.ram,
            ram_available_bytes: self.ram_available,
            vram_bytes: self.vram.clone(),
            gpu_kind: self.gpu_kind,
            no_gpu: self.no_gpu,
            cores: self.cores,
            numa_nodes: self.numa_nodes,
            simd: self.simd.as_ref().map(|v| {
                v.iter()
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty() && s != "none")
                    .collect()
            }),
            model_cache_free_bytes: self.disk_free,
        }
    }

    /// The budget policy: defaults with the flags applied.
    pub fn policy(&self) -> BudgetPolicy {
        let mut p = BudgetPolicy::default();
        p.ram.reserve_base_bytes = self.ram_reserve.unwrap_or(p.ram.reserve_base_bytes);
        p.ram.reserve_percent = self.ram_reserve_percent.unwrap_or(p.ram.reserve_percent);
        p.ram.margin_percent = self.ram_margin_percent.unwrap_or(p.ram.margin_percent);
        p.gpu.reserve_base_bytes = self.gpu_reserve.unwrap_or(p.gpu.reserve_base_bytes);
        p.gpu.reserve_percent = self.gpu_reserve_percent.unwrap_or(p.gpu.reserve_percent);
        p.gpu.margin_percent = self.gpu_margin_percent.unwrap_or(p.gpu.margin_percent);
        p
    }

    /// The request: models and profile changes.
    pub fn request(&self) -> PlanRequest {
        let overrides = ProfileOverrides {
            context_tokens: self.context,
            prompt_tokens: self.prompt,
            kv_dtype: self.kv_dtype,
            batch: self.batch,
            seq_len: self.seq_len,
            image_size: self.image_size,
            width: self.resolution.map(|r| r.0),
            height: self.resolution.map(|r| r.1),
            text_tokens: self.text_tokens,
            staging: self.staging,
            device: self.device,
        };
        let mut per_model = std::collections::BTreeMap::new();
        for (k, o) in &self.set {
            let merged = per_model
                .get(k)
                .map_or_else(|| o.clone(), |prev: &ProfileOverrides| prev.then(o));
            per_model.insert(k.clone(), merged);
        }
        PlanRequest {
            models: self.models.clone(),
            overrides,
            per_model,
            cpu_fallback: self.cpu_fallback,
        }
    }
}

/// What [`run`] did.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// False when `--check` found a stale file.
    pub up_to_date: bool,
}

/// Runs `plan`: makes the plan for `args` from `registry`, prints it to `out` (table, JSON or
/// TOML), writes `--write` / `--svg` files (or, with `--check`, compares them).
/// `invocation` is the command as the user would type it (shown in the picture), e.g.
/// `cargo xtask plan --ram 24GiB --no-gpu --svg docs/plan-laptop-24gib.svg`.
pub fn run(
    args: &PlanArgs,
    registry: &Registry,
    gpu_probes: &[&dyn GpuProbe],
    invocation: &str,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let machine = args.machine(gpu_probes);
    let plan = model_plan::plan(registry, &machine, &args.policy(), &args.request())?;
    let io = |path: &str| {
        let path = path.to_owned();
        move |source| CliError::Io { path, source }
    };
    let text = if args.json {
        plan.to_json()
    } else if args.toml {
        plan.to_toml()?
    } else {
        table::render(&plan)
    };
    out.write_all(text.as_bytes()).map_err(io("stdout"))?;

    let mut files: Vec<(&Path, String)> = Vec::new();
    if let Some(path) = &args.write {
        files.push((path, plan.render_for(path)?));
    }
    if let Some(path) = &args.svg {
        let title = args
            .title
            .clone()
            .unwrap_or_else(|| format!("Model plan: {}", plan.machine.summary()));
        files.push((path, svg::render(&plan, &title, Some(invocation))));
    }
    let mut up_to_date = true;
    for (path, contents) in files {
        let shown = path.display().to_string();
        if args.check {
            let current = std::fs::read_to_string(path).ok();
            if current.as_deref() != Some(contents.as_str()) {
                up_to_date = false;
                writeln!(out, "{shown} is stale: run `{invocation}` and commit")
                    .map_err(io("stdout"))?;
            }
        } else {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io(&shown))?;
            }
            std::fs::write(path, contents).map_err(io(&shown))?;
            if !args.json && !args.toml {
                writeln!(out, "wrote {shown}").map_err(io("stdout"))?;
            }
        }
    }
    Ok(Outcome { plan, up_to_date })
}

/// `args` as one shell-ready line (quoted where needed), without `--check`, for the picture's
/// caption: `cargo xtask plan` + [`invocation`]`(["--ram", "24GiB"])`.
pub fn invocation<S: AsRef<str>>(program: &str, args: &[S]) -> String {
    let mut s = program.to_owned();
    for a in args.iter().map(AsRef::as_ref).filter(|a| *a != "--check") {
        s.push(' ');
        if a.is_empty()
            || a.chars()
                .any(|c| !(c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c)))
        {
            s.push('\'');
            s.push_str(&a.replace('\'', r"'\''"));
            s.push('\'');
        } else {
            s.push_str(a);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        plan: PlanArgs,
    }

    fn parse(args: &[&str]) -> Result<PlanArgs, clap::Error> {
        Cmd::try_parse_from(std::iter::once("plan").chain(args.iter().copied())).map(|c| c.plan)
    }

    #[test]
    fn flags_map_to_machine_policy_and_request() {
        let a = parse(&[
            "--ram",
            "128GiB",
            "--vram",
            "24GiB",
            "--cores",
            "32",
            "--ram-margin-percent",
            "10",
            "--context",
            "16k",
            "--kv-dtype",
            "f16",
            "--set",
            "microsoft/phi-4:context=4k",
            "--models",
            "phi-4,all-MiniLM-L6-v2",
        ])
        .unwrap();
        let m = a.machine(&[]);
        assert_eq!(m.ram_bytes, 128 << 30);
        assert_eq!(m.gpus.len(), 1);
        assert_eq!(m.gpus[0].memory_bytes, 24 << 30);
        assert_eq!(m.cores, Some(32));
        assert_eq!(a.policy().ram.margin_percent, 10);
        let r = a.request();
        assert_eq!(r.overrides.context_tokens, Some(16_384));
        assert_eq!(r.overrides.kv_dtype, Some(DType::F16));
        assert_eq!(r.per_model["microsoft/phi-4"].context_tokens, Some(4096));
        assert_eq!(r.models, vec!["phi-4", "all-MiniLM-L6-v2"]);
    }

    #[test]
    fn bad_values_are_rejected_with_the_reason() {
        let e = parse(&["--ram", "64 gigs"]).unwrap_err().to_string();
        assert!(e.contains("unknown unit `gigs`"), "{e}");
        let e = parse(&["--kv-dtype", "f12"]).unwrap_err().to_string();
        assert!(e.contains("unknown dtype"), "{e}");
        let e = parse(&["--kv-dtype", "q4_k"]).unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
        let e = parse(&["--no-detect"]).unwrap_err().to_string();
        assert!(e.contains("--ram"), "{e}");
        assert!(parse(&["--no-gpu", "--vram", "8G"]).is_err());
        assert!(parse(&["--set", "phi-4"]).is_err());
    }

    #[test]
    fn run_writes_the_plan_file_and_checks_it() {
        let cards = concat!(env!("CARGO_MANIFEST_DIR"), "/../../model-cards");
        let registry = Registry::load(Path::new(cards)).unwrap();
        let dir = std::env::temp_dir().join(format!("model-plan-cli-{}", std::process::id()));
        let file = dir.join("plan.toml");
        let file_arg = file.to_str().unwrap();
        let args = parse(&["--no-detect", "--ram", "64GiB", "--write", file_arg]).unwrap();
        let mut out = Vec::new();
        let done = run(&args, &registry, &[], "plan", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("hot") && text.contains("wrote"), "{text}");
        assert_eq!(Plan::load(&file).unwrap(), done.plan);
        assert_eq!(done.plan.machine.cores, None, "--no-detect detects nothing");

        let check = |ram| {
            let args = ["--no-detect", "--ram", ram, "--write", file_arg, "--check"];
            parse(&args).unwrap()
        };
        let ok = run(&check("64GiB"), &registry, &[], "plan", &mut Vec::new()).unwrap();
        assert!(ok.up_to_date);
        let mut out = Vec::new();
        let other = check("48GiB");
        let stale = run(&other, &registry, &[], "cargo xtask plan …", &mut out).unwrap();
        assert!(!stale.up_to_date);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("is stale: run `cargo xtask plan …`")
        );

        let json = parse(&["--no-detect", "--ram", "64GiB", "--json"]).unwrap();
        let mut out = Vec::new();
        run(&json, &registry, &[], "plan", &mut out).unwrap();
        let parsed = Plan::from_json(std::str::from_utf8(&out).unwrap()).unwrap();
        assert_eq!(parsed, done.plan, "--json prints the plan and nothing else");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invocation_quotes_what_a_shell_would_split() {
        assert_eq!(
            invocation(
                "cargo xtask plan",
                &["--ram", "24GiB", "--title", "24 GiB laptop", "--check"]
            ),
            "cargo xtask plan --ram 24GiB --title '24 GiB laptop'"
        );
    }
}
