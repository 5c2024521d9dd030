//! Measurement programs and benchmarks of the workspace (unpublished). The programs are the
//! binaries of this crate (`cargo run --release -p model-measure --bin …`), each described in
//! its own header; the benches run with `cargo bench -p model-measure`.

/// Random quantized blocks whose f16 scales are small and finite (2⁻¹⁴), so every weight is
/// a modest finite number; F32 tensors (the norms) are near 1.
pub fn random_blocks(buf: &mut [u8], dtype: model_spec::DType, state: &mut u64) {
    use model_spec::DType as D;
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let b = state.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    let scale = 0x0400u16.to_le_bytes();
    match dtype {
        D::Q4K | D::Q5K => {
            let block = if dtype == D::Q4K { 144 } else { 176 };
            for blk in buf.chunks_mut(block) {
                blk[0..2].copy_from_slice(&scale);
                blk[2..4].copy_from_slice(&scale);
            }
        }
        D::Q6K => {
            for blk in buf.chunks_mut(210) {
                blk[208..210].copy_from_slice(&scale);
            }
        }
        D::Q8_0 => {
            for blk in buf.chunks_mut(34) {
                blk[0..2].copy_from_slice(&scale);
            }
        }
        D::F32 => {
            for (i, x) in buf.chunks_mut(4).enumerate() {
                let v = 1.0f32 + ((i * 7919) % 200) as f32 / 1000.0 - 0.1;
                x.copy_from_slice(&v.to_le_bytes());
            }
        }
        other => panic!("no random blocks for {other}"),
    }
}

/// Peak resident set of this process in MiB, from `/proc/self/status` (`VmHWM`; 0 where
/// unknown).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
