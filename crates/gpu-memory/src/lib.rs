//! NVIDIA GPU memory as the driver reports it, through NVML (the `nvml-wrapper` crate).
//!
//! NVML is the driver's management library (`libnvidia-ml.so.1`, `nvml.dll`): it is loaded
//! when first asked, needs no CUDA toolkit and creates no CUDA context, so asking costs no
//! device memory and works in a CPU-only build. A machine without the driver gets
//! [`ProbeError::Library`]; callers fall back to RAM-only budgets and say so once
//! ([`warn_once_unavailable`]).
//!
//! Three figures per GPU ([`GpuMemory`]): total, free, and used. For measurements the figure
//! that counts is what *this process* holds ([`Driver::used_by_this_process`]), not the
//! device-wide use, which other processes change at any time.
//!
//! GPUs are listed in CUDA device order, as `Device::new_cuda(ordinal)` numbers them, with
//! `CUDA_VISIBLE_DEVICES` applied ([`cuda_order`]).

mod driver;
mod order;

pub use driver::{Driver, GpuMemory, ProbeError, Usage, UsageSampler, UsageScope};
pub use order::{Identity, cuda_order};

/// Environment variable naming the NVML library to load instead of the system's
/// (`libnvidia-ml.so.1` on Linux, `nvml.dll` on Windows).
pub const ENV_NVML_LIBRARY: &str = "NVML_LIBRARY";

/// The GPUs of this machine through the process-wide [`Driver::system`].
pub fn gpus() -> Result<Vec<GpuMemory>, ProbeError> {
    Driver::system()?.gpus()
}

/// Device memory held by this process on CUDA device `ordinal`, through [`Driver::system`].
pub fn used_by_this_process(ordinal: u32) -> Result<Usage, ProbeError> {
    Driver::system()?.used_by_this_process(ordinal)
}

/// Logs once per process, at warn level, that no NVIDIA GPU can be probed and why, so a
/// machine without the driver gets one line instead of one per request.
pub fn warn_once_unavailable(error: &ProbeError) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!("no NVIDIA GPU memory figures: {error}; budgets cover RAM only");
    });
}
