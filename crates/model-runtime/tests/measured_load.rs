//! The process-wide load lock, in a test binary of its own: resident-set deltas are
//! process-wide, so nothing else may allocate while this measures.

use std::time::Duration;

use model_pool::DeviceId;
use model_runtime::measured_load;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_on_one_device_never_overlap_and_each_sees_its_own_bytes() {
    let load = |mib: usize| {
        measured_load(DeviceId::Cpu, move |clock| {
            let block = vec![1u8; mib << 20];
            clock.weights_read();
            std::thread::sleep(Duration::from_millis(30));
            Ok(block)
        })
    };
    let (a, b) = tokio::join!(load(64), load(8));
    let ((_, a), (_, b)) = (a.unwrap(), b.unwrap());
    let (first, second) = if a.window.0 < b.window.0 {
        (a, b)
    } else {
        (b, a)
    };
    assert!(
        first.window.1 <= second.window.0,
        "{first:?} overlaps {second:?}"
    );
    // Each load's delta is its own block: overlapping loads would each count the other's.
    assert!(a.resident_bytes >= 48 << 20, "{a:?}");
    assert!(b.resident_bytes < 32 << 20, "{b:?}");
    assert!(
        a.warmup_millis >= 25,
        "the sleep after weights_read is warm-up: {a:?}"
    );
}
