//! What the robustness property tests share (random and mutated files against the readers and
//! loaders): an allocator that records the largest single allocation of the process, so a
//! test can check that no input made a reader allocate out of proportion with it, and the
//! number of cases each property runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, recording the largest single allocation (or reallocation) asked of
/// it. A test binary installs it with
/// `#[global_allocator] static ALLOCATOR: TrackingAllocator = TrackingAllocator::new();`
/// and checks [`TrackingAllocator::largest`] after each case.
pub struct TrackingAllocator {
    largest: AtomicUsize,
}

impl TrackingAllocator {
    /// An allocator that has recorded nothing yet.
    pub const fn new() -> Self {
        TrackingAllocator {
            largest: AtomicUsize::new(0),
        }
    }

    /// The largest single allocation so far, in bytes.
    pub fn largest(&self) -> usize {
        self.largest.load(Ordering::Relaxed)
    }
}

impl Default for TrackingAllocator {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.largest.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.largest.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as `dealloc`, and the new size is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Cases per property: `PROPTEST_CASES` if set to a number, else 10,000.
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}
