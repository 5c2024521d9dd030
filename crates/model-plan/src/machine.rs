//! What the planner knows about a machine: detected ([`crate::detect()`]), described by hand
//! (tests, "plan for a machine I don't have"), or detected and then partly overridden.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A memory domain with its own budget. Printed and parsed as `cpu`, `cuda:N`, `metal:N`,
/// the same spelling as the pool's `DeviceId`, so a plan's device strings parse there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum PlanDevice {
    /// System RAM (CPU inference).
    Cpu,
    /// An NVIDIA GPU by CUDA ordinal.
    Cuda(u32),
    /// An Apple GPU by Metal device index.
    Metal(u32),
}

impl PlanDevice {
    /// Whether this is a GPU.
    pub fn is_gpu(self) -> bool {
        !matches!(self, PlanDevice::Cpu)
    }

    /// The estimator's device for models placed here.
    pub fn estimator_device(self) -> model_spec::Device {
        match self {
            PlanDevice::Cpu => model_spec::Device::Cpu,
            PlanDevice::Cuda(_) => model_spec::Device::Cuda,
            PlanDevice::Metal(_) => model_spec::Device::Metal,
        }
    }

    /// `RAM` or `GPU cuda:0`, for captions.
    pub fn label(self) -> String {
        match self {
            PlanDevice::Cpu => "RAM".to_owned(),
            gpu => format!("GPU {gpu}"),
        }
    }
}

impl fmt::Display for PlanDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanDevice::Cpu => f.pad("cpu"),
            PlanDevice::Cuda(i) => f.pad(&format!("cuda:{i}")),
            PlanDevice::Metal(i) => f.pad(&format!("metal:{i}")),
        }
    }
}

impl From<PlanDevice> for String {
    fn from(d: PlanDevice) -> String {
        d.to_string()
    }
}

impl FromStr for PlanDevice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        let err = || format!("invalid device `{s}`: expected `cpu`, `cuda:N` or `metal:N`");
        if lower == "cpu" || lower == "ram" {
            return Ok(PlanDevice::Cpu);
        }
        let (make, rest): (fn(u32) -> PlanDevice, &str) =
            if let Some(rest) = lower.strip_prefix("cuda") {
                (PlanDevice::Cuda, rest)
            } else if let Some(rest) = lower.strip_prefix("metal") {
                (PlanDevice::Metal, rest)
            } else {
                return Err(err());
            };
        let rest = rest.strip_prefix(':').unwrap_or(rest);
        if rest.is_empty() {
            return Ok(make(0));
        }
        rest.parse().map(make).map_err(|_| err())
    }
}

impl TryFrom<String> for PlanDevice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// GPU vendor API, for `--gpu-kind` and the detection hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GpuKind {
    #[default]
    Cuda,
    Metal,
}

impl FromStr for GpuKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cuda" | "nvidia" => Ok(GpuKind::Cuda),
            "metal" | "apple" => Ok(GpuKind::Metal),
            _ => Err(format!(
                "unknown GPU kind `{s}`: expected `cuda` or `metal`"
            )),
        }
    }
}

/// One GPU and its memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    pub device: PlanDevice,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub memory_bytes: u64,
}

/// SIMD features that decide how fast candle's CPU kernels run.
///
/// `detected` is what the CPU offers; `compiled` is what this binary was built to use. Candle
/// selects its AVX/NEON kernels at compile time (`cfg(target_feature)`), so a CPU with AVX2
/// running a build without `-C target-cpu=native` still takes the slow path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Simd {
    pub detected: Vec<String>,
    pub compiled: Vec<String>,
}

/// The machine a plan is made for. `None` means "not known" (not detected and not given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// Total RAM the process may use (the cgroup limit when lower than physical RAM).
    pub ram_bytes: u64,
    /// RAM free right now (informational: plans are made against the total).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_available_bytes: Option<u64>,
    /// Logical cores this process may run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simd: Option<Simd>,
    /// Where Hugging Face downloads go (`HF_HUB_CACHE`, `HF_HOME/hub`, or the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_cache_dir: Option<String>,
    /// Free space on the file system holding the model cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_cache_free_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<Gpu>,
    /// Where each value came from ("ram: detected by sysinfo", "ram: --ram 24GiB" …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

impl Machine {
    /// A machine described only by its RAM, with nothing else known and no GPU.
    pub fn with_ram(ram_bytes: u64) -> Machine {
        Machine {
            ram_bytes,
            ram_available_bytes: None,
            cores: None,
            physical_cores: None,
            numa_nodes: None,
            simd: None,
            model_cache_dir: None,
            model_cache_free_bytes: None,
            gpus: Vec::new(),
            sources: vec!["ram: described".to_owned()],
        }
    }

    /// Adds a GPU of `kind` with `memory_bytes`, numbered after the GPUs of that kind.
    pub fn gpu(mut self, kind: GpuKind, memory_bytes: u64) -> Machine {
        let index = self
            .gpus
            .iter()
            .filter(|g| match kind {
                GpuKind::Cuda => matches!(g.device, PlanDevice::Cuda(_)),
                GpuKind::Metal => matches!(g.device, PlanDevice::Metal(_)),
            })
            .count() as u32;
        let device = match kind {
            GpuKind::Cuda => PlanDevice::Cuda(index),
            GpuKind::Metal => PlanDevice::Metal(index),
        };
        self.gpus.push(Gpu {
            device,
            name: None,
            memory_bytes,
        });
        self
    }

    /// One line: `RAM 24.0 GiB, no GPU` / `RAM 128.0 GiB, GPU cuda:0 24.0 GiB`.
    pub fn summary(&self) -> String {
        let mut s = format!("RAM {}", crate::size::gib(self.ram_bytes));
        if self.gpus.is_empty() {
            s.push_str(", no GPU");
        }
        for g in &self.gpus {
            s.push_str(&format!(
                ", GPU {} {}",
                g.device,
                crate::size::gib(g.memory_bytes)
            ));
        }
        s
    }
}

/// Values that replace detected ones. Every field left `None` keeps what was detected.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_available_bytes: Option<u64>,
    /// GPU memory sizes; replaces every detected GPU (`--vram 24GiB --vram 24GiB` = two GPUs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vram_bytes: Vec<u64>,
    /// Kind of the GPUs given in `vram_bytes`.
    #[serde(default)]
    pub gpu_kind: GpuKind,
    /// Plan as if there were no GPU at all.
    #[serde(default)]
    pub no_gpu: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_nodes: Option<u32>,
    /// SIMD features the CPU has (replaces `simd.detected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_cache_free_bytes: Option<u64>,
}

impl MachineOverrides {
    /// `machine` with every given value replaced; `sources` records each replacement.
    pub fn apply(&self, mut machine: Machine) -> Machine {
        let set = |what: &str, how: String, sources: &mut Vec<String>| {
            sources.retain(|s| !s.starts_with(&format!("{what}:")));
            sources.push(format!("{what}: {how}"));
        };
        let gib = crate::size::gib;
        if let Some(v) = self.ram_bytes {
            machine.ram_bytes = v;
            // What is free on this machine says nothing about the one described.
            machine.ram_available_bytes = None;
            set("ram", format!("given ({})", gib(v)), &mut machine.sources);
        }
        if let Some(v) = self.ram_available_bytes {
            machine.ram_available_bytes = Some(v);
        }
        if self.no_gpu {
            machine.gpus.clear();
            set("gpus", "none (--no-gpu)".to_owned(), &mut machine.sources);
        } else if !self.vram_bytes.is_empty() {
            machine.gpus.clear();
            for &v in &self.vram_bytes {
                machine = machine.gpu(self.gpu_kind, v);
            }
            let sizes: Vec<String> = self.vram_bytes.iter().map(|&v| gib(v)).collect();
            set(
                "gpus",
                format!("given ({})", sizes.join(", ")),
                &mut machine.sources,
            );
        }
        if let Some(v) = self.cores {
            machine.cores = Some(v);
            machine.physical_cores = None;
            set("cores", format!("given ({v})"), &mut machine.sources);
        }
        if let Some(v) = self.numa_nodes {
            machine.numa_nodes = Some(v);
        }
        if let Some(v) = &self.simd {
            let compiled = machine.simd.map(|s| s.compiled).unwrap_or_default();
            machine.simd = Some(Simd {
                detected: v.clone(),
                compiled,
            });
        }
        if let Some(v) = self.model_cache_free_bytes {
            machine.model_cache_free_bytes = Some(v);
        }
        machine
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::GIB;

    #[test]
    fn device_names_round_trip_like_the_pool() {
        for d in [PlanDevice::Cpu, PlanDevice::Cuda(0), PlanDevice::Metal(2)] {
            assert_eq!(d.to_string().parse::<PlanDevice>(), Ok(d));
        }
        assert_eq!("CUDA1".parse::<PlanDevice>(), Ok(PlanDevice::Cuda(1)));
        assert!("tpu".parse::<PlanDevice>().is_err());
    }

    #[test]
    fn overrides_replace_detected_values() {
        let detected = Machine::with_ram(16 * GIB).gpu(GpuKind::Cuda, 8 * GIB);
        let o = MachineOverrides {
            ram_bytes: Some(64 * GIB),
            vram_bytes: vec![24 * GIB, 24 * GIB],
            cores: Some(32),
            ..Default::default()
        };
        let m = o.apply(detected.clone());
        assert_eq!(m.ram_bytes, 64 * GIB);
        assert_eq!(m.gpus.len(), 2);
        assert_eq!(m.gpus[1].device, PlanDevice::Cuda(1));
        assert_eq!(m.gpus[1].memory_bytes, 24 * GIB);
        assert_eq!(m.cores, Some(32));
        assert!(m.sources.iter().any(|s| s == "ram: given (64.0 GiB)"));

        let none = MachineOverrides {
            no_gpu: true,
            ..Default::default()
        }
        .apply(detected);
        assert!(none.gpus.is_empty());
        assert_eq!(none.ram_bytes, 16 * GIB);
    }
}
