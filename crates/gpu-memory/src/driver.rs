//! The NVML handle and the figures read through it.

use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;

use crate::order::{Identity, cuda_order};

/// Memory of one GPU at the moment it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuMemory {
    /// CUDA device ordinal in this process (`CUDA_VISIBLE_DEVICES` applied): the `N` of
    /// `cuda:N` and `MODEL_POOL_BUDGET_CUDA<N>`.
    pub ordinal: u32,
    /// Product name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// `GPU-…` UUID, as `nvidia-smi -L` prints it.
    pub uuid: String,
    /// Installed device memory.
    pub total_bytes: u64,
    /// Memory no process holds.
    pub free_bytes: u64,
    /// Memory held by every process together (this one included).
    pub used_bytes: u64,
}

/// Why GPU memory could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The driver's library is missing or not loadable: no NVIDIA driver on this machine.
    #[error(
        "the NVIDIA management library {library} could not be loaded ({reason}); install the \
         NVIDIA driver, set {env} to the library's path, or give GPU budgets by hand \
         (MODEL_POOL_BUDGET_CUDA0=20GiB, --vram)",
        env = crate::ENV_NVML_LIBRARY
    )]
    Library {
        /// The library asked for.
        library: String,
        /// What the loader or NVML said.
        reason: String,
    },
    /// An NVML call failed on a loaded library.
    #[error("NVML {call} failed: {reason}")]
    Call {
        /// The NVML function, e.g. `nvmlDeviceGetMemoryInfo`.
        call: &'static str,
        /// NVML's message.
        reason: String,
    },
    /// `CUDA_VISIBLE_DEVICES` names something this probe cannot map to a GPU.
    #[error("CUDA_VISIBLE_DEVICES={value:?}: {reason}")]
    VisibleDevices {
        /// The variable's value.
        value: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A CUDA ordinal past the visible GPUs.
    #[error("CUDA device {ordinal} does not exist: this process sees {count} NVIDIA GPU(s)")]
    NoSuchDevice {
        /// The ordinal asked for.
        ordinal: u32,
        /// How many GPUs are visible.
        count: usize,
    },
}

/// What a [`Usage`] figure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageScope {
    /// This process's own device memory, from NVML's list of compute processes.
    Process,
    /// Every process's together: this process is not in NVML's list (a container's PID
    /// namespace hides it, or the driver does not report per-process use).
    Device,
}

/// Device memory in use, and whose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes in use.
    pub bytes: u64,
    /// Whose bytes they are.
    pub scope: UsageScope,
}

impl Usage {
    /// Bytes added since `before`, when both count the same thing (`None` when the scope
    /// changed in between, which makes the difference meaningless).
    pub fn since(&self, before: &Usage) -> Option<u64> {
        (self.scope == before.scope).then(|| self.bytes.saturating_sub(before.bytes))
    }
}

/// A loaded NVML library.
pub struct Driver {
    nvml: Nvml,
    library: String,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("library", &self.library)
            .finish_non_exhaustive()
    }
}

fn default_library() -> OsString {
    std::env::var_os(crate::ENV_NVML_LIBRARY).unwrap_or_else(|| {
        if cfg!(windows) {
            "nvml.dll".into()
        } else {
            "libnvidia-ml.so.1".into()
        }
    })
}

fn call_error(call: &'static str) -> impl FnOnce(nvml_wrapper::error::NvmlError) -> ProbeError {
    move |e| ProbeError::Call {
        call,
        reason: e.to_string(),
    }
}

impl Driver {
    /// Loads and initialises NVML from `library` (a file name the dynamic loader searches
    /// for, or a path); `None` is the system's library, or [`ENV_NVML_LIBRARY`] when set.
    ///
    /// [`ENV_NVML_LIBRARY`]: crate::ENV_NVML_LIBRARY
    pub fn open(library: Option<&OsStr>) -> Result<Self, ProbeError> {
        let library = library.map_or_else(default_library, OsStr::to_os_string);
        let shown = library.to_string_lossy().into_owned();
        let nvml = Nvml::builder()
            .lib_path(&library)
            .init()
            .map_err(|e| ProbeError::Library {
                library: shown.clone(),
                reason: e.to_string(),
            })?;
        Ok(Driver {
            nvml,
            library: shown,
        })
    }

    /// The process-wide driver, opened on first use; a failure is kept, so a machine
    /// without the driver pays for one attempt.
    pub fn system() -> Result<&'static Driver, ProbeError> {
        static SYSTEM: OnceLock<Result<Driver, ProbeError>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| Driver::open(None))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The library that was loaded.
    pub fn library(&self) -> &str {
        &self.library
    }

    /// The driver's version (`580.82.07`), when it says.
    pub fn driver_version(&self) -> Option<String> {
        self.nvml.sys_driver_version().ok()
    }

    /// The visible devices in CUDA order.
    fn visible(&self) -> Result<Vec<nvml_wrapper::Device<'_>>, ProbeError> {
        let count = self
            .nvml
            .device_count()
            .map_err(call_error("nvmlDeviceGetCount"))?;
        let mut devices = Vec::with_capacity(count as usize);
        let mut identities = Vec::with_capacity(count as usize);
        for index in 0..count {
            let device = self
                .nvml
                .device_by_index(index)
                .map_err(call_error("nvmlDeviceGetHandleByIndex"))?;
            identities.push(Identity {
                uuid: device.uuid().map_err(call_error("nvmlDeviceGetUUID"))?,
                name: device.name().unwrap_or_default(),
            });
            devices.push(Some(device));
        }
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        let device_order = std::env::var("CUDA_DEVICE_ORDER").ok();
        let (order, exact) = cuda_order(visible.as_deref(), device_order.as_deref(), &identities)?;
        if !exact {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "GPUs of different models: CUDA may number them fastest first while NVML \
                     lists them by PCI bus; set CUDA_DEVICE_ORDER=PCI_BUS_ID so that cuda:N \
                     and its budget name the same GPU"
                );
            });
        }
        Ok(order
            .into_iter()
            .filter_map(|position| devices[position].take())
            .collect())
    }

    /// Every visible GPU with its memory, in CUDA order.
    pub fn gpus(&self) -> Result<Vec<GpuMemory>, ProbeError> {
        self.visible()?
            .into_iter()
            .enumerate()
            .map(|(ordinal, device)| {
                let memory = device
                    .memory_info()
                    .map_err(call_error("nvmlDeviceGetMemoryInfo"))?;
                Ok(GpuMemory {
                    ordinal: ordinal as u32,
                    name: device.name().unwrap_or_default(),
                    uuid: device.uuid().unwrap_or_default(),
                    total_bytes: memory.total,
                    free_bytes: memory.free,
                    used_bytes: memory.used,
                })
            })
            .collect()
    }

    /// Device memory this process holds on CUDA device `ordinal` (its CUDA context, the
    /// allocator's pools and every tensor), or the whole device's use where NVML does not
    /// list this process (see [`UsageScope::Device`]).
    pub fn used_by_this_process(&self, ordinal: u32) -> Result<Usage, ProbeError> {
        let visible = self.visible()?;
        let count = visible.len();
        let device = visible
            .into_iter()
            .nth(ordinal as usize)
            .ok_or(ProbeError::NoSuchDevice { ordinal, count })?;
        let pid = std::process::id();
        let own = device
            .running_compute_processes()
            .map_err(call_error("nvmlDeviceGetComputeRunningProcesses"))?
            .into_iter()
            .find(|p| p.pid == pid)
            .and_then(|p| match p.used_gpu_memory {
                UsedGpuMemory::Used(bytes) => Some(bytes),
                UsedGpuMemory::Unavailable => None,
            });
        if let Some(bytes) = own {
            return Ok(Usage {
                bytes,
                scope: UsageScope::Process,
            });
        }
        let memory = device
            .memory_info()
            .map_err(call_error("nvmlDeviceGetMemoryInfo"))?;
        Ok(Usage {
            bytes: memory.used,
            scope: UsageScope::Device,
        })
    }
}

/// Polls [`Driver::used_by_this_process`] on its own thread to catch the high-water mark of
/// an operation (a load's transient copies, a forward pass's activations), which is gone by
/// the time it returns. Allocations shorter than the polling period (2 ms) can be missed.
pub struct UsageSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Usage>>,
}

impl UsageSampler {
    /// Takes a first sample (so that an error shows here, not at the end) and starts polling.
    pub fn start(driver: &'static Driver, ordinal: u32) -> Result<Self, ProbeError> {
        let first = driver.used_by_this_process(ordinal)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("gpu-usage-sampler".into())
            .spawn(move || {
                let mut peak = first;
                loop {
                    if let Ok(now) = driver.used_by_this_process(ordinal)
                        && now.scope == peak.scope
                        && now.bytes > peak.bytes
                    {
                        peak = now;
                    }
                    if stopping.load(Ordering::Relaxed) {
                        return peak;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
            .map_err(|e| ProbeError::Call {
                call: "sampler thread",
                reason: e.to_string(),
            })?;
        Ok(UsageSampler {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops and returns the highest use seen (a last sample included).
    pub fn stop(mut self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        let unknown = Usage {
            bytes: 0,
            scope: UsageScope::Device,
        };
        // `stop` consumes the sampler, so the thread is still there; a sampler thread that
        // panicked leaves no figure.
        self.thread
            .take()
            .map_or(unknown, |thread| thread.join().unwrap_or(unknown))
    }
}

impl Drop for UsageSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_needs_one_scope() {
        let process = |bytes| Usage {
            bytes,
            scope: UsageScope::Process,
        };
        let device = Usage {
            bytes: 9 << 30,
            scope: UsageScope::Device,
        };
        assert_eq!(process(3 << 30).since(&process(1 << 30)), Some(2 << 30));
        assert_eq!(process(1 << 30).since(&process(3 << 30)), Some(0));
        assert_eq!(process(3 << 30).since(&device), None);
    }
}
