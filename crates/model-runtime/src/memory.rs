//! Measuring what a load really takes: resident memory of this process on the CPU, device
//! memory this process holds on CUDA (through NVML).
//!
//! On Linux the figures come from `/proc/self/status` (`VmRSS`, split into `RssAnon` and
//! `RssFile`: the anonymous part is memory the process owns; the file part is page cache
//! mapped in, e.g. an mmapped checkpoint, which the kernel can drop). Elsewhere sysinfo gives
//! the RSS only. A [`PeakSampler`] polls in a background thread to catch the high-water mark of
//! an operation, since a load's peak (mapped file + converted copy) is gone by the time it
//! returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Resident memory of this process at one moment, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resident {
    /// Total resident set.
    pub rss: u64,
    /// Anonymous part (heap, tensors); equal to `rss` where the split is unknown.
    pub anon: u64,
    /// File-backed part (mapped files).
    pub file: u64,
}

/// Reads the current resident set.
pub fn resident() -> Resident {
    #[cfg(target_os = "linux")]
    if let Some(r) = linux_status() {
        return r;
    }
    let rss = sysinfo_rss();
    Resident {
        rss,
        anon: rss,
        file: 0,
    }
}

#[cfg(target_os = "linux")]
fn linux_status() -> Option<Resident> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    let rss = field("VmRSS:")?;
    let anon = field("RssAnon:").unwrap_or(rss);
    let file = field("RssFile:").unwrap_or(0);
    Some(Resident { rss, anon, file })
}

fn sysinfo_rss() -> u64 {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let pid = Pid::from_u32(std::process::id());
    let mut system = System::new();
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing().with_memory(),
    );
    system.process(pid).map_or(0, |p| p.memory())
}

/// The most resident memory seen while a [`PeakSampler`] ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Peak {
    /// Highest total RSS.
    pub rss: u64,
    /// Highest anonymous RSS.
    pub anon: u64,
}

/// Polls [`resident`] every millisecond on its own thread until stopped.
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    rss: Arc<AtomicU64>,
    anon: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl PeakSampler {
    /// Starts sampling.
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let first = resident();
        let rss = Arc::new(AtomicU64::new(first.rss));
        let anon = Arc::new(AtomicU64::new(first.anon));
        let (s, r, a) = (Arc::clone(&stop), Arc::clone(&rss), Arc::clone(&anon));
        let thread = std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let now = resident();
                    r.fetch_max(now.rss, Ordering::Relaxed);
                    a.fetch_max(now.anon, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .ok();
        PeakSampler {
            stop,
            rss,
            anon,
            thread,
        }
    }

    /// Stops and returns the peaks (including one last sample).
    pub fn stop(mut self) -> Peak {
        self.finish()
    }

    fn finish(&mut self) -> Peak {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let now = resident();
        Peak {
            rss: self.rss.load(Ordering::Relaxed).max(now.rss),
            anon: self.anon.load(Ordering::Relaxed).max(now.anon),
        }
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Device memory this process holds on the GPU that `device` lives on, if it is a CUDA
/// device and NVML can say (see the `gpu-memory` crate): this process's own use, not the
/// whole device's, so another program's allocations do not count as ours. `None` on the CPU
/// and where NVML is missing; callers then fall back to the resident set.
pub fn device_used_bytes(device: &candle_core::Device) -> Option<gpu_memory::Usage> {
    let candle_core::DeviceLocation::Cuda { gpu_id } = device.location() else {
        return None;
    };
    gpu_memory::used_by_this_process(gpu_id as u32)
        .map_err(|e| gpu_memory::warn_once_unavailable(&e))
        .ok()
}

/// Returns freed heap memory to the operating system.
///
/// glibc serves allocations below its mmap threshold from its arenas, and the threshold
/// rises (to 32 MiB) as large blocks are freed, so most tensors of a network end up there;
/// freed, they stay in the process. After a staged denoiser is dropped that was measured at
/// 2 GiB kept over into the decoder stage, memory the governor had already handed back; and
/// a load that reuses a dropped model's free blocks shows almost no resident increase. The
/// loaders trim before measuring a load, the text-to-image stages after releasing one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_heap() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: `malloc_trim` takes no pointers and only releases memory that is free.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_heap() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_shows_up_in_the_resident_set_and_the_peak() {
        let before = resident();
        assert!(before.rss > 0);
        let sampler = PeakSampler::start();
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        let during = resident();
        // Longer than the sampling period, so the sampler sees the block.
        std::thread::sleep(Duration::from_millis(20));
        drop(block);
        let peak = sampler.stop();
        assert!(
            during.rss >= before.rss + (48 << 20),
            "{before:?} → {during:?}"
        );
        assert!(peak.rss + (4 << 20) >= during.rss, "{peak:?} vs {during:?}");
        assert!(
            peak.anon >= before.anon + (48 << 20),
            "{peak:?} vs {before:?}"
        );
    }
}
