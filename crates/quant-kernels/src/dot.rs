//! Dot products of one quantized weight row with one row of [`Q8K`] activations.
//!
//! Every kernel computes `Σ_blocks d_w · d_a · (Σ sc_j · Σ q·a) − (offsets)` in integers
//! inside a superblock: the weights' 4/5/6/8-bit values are multiplied with the 8-bit
//! activations and summed per sub-block, then scaled once. Offsets (Q4_K/Q5_K minimums, the
//! −32 of Q6_K) come from the activations' 16-element sums, so they cost one multiply per
//! sub-block, not per weight.
//!
//! [`kernel`] picks the version for the CPU at hand once per call: AVX-512 VNNI, AVX2, or the
//! portable loops (which LLVM vectorises for whatever the target allows).

use crate::activations::Q8K;
use crate::blocks::{QuantType, f16_at, scales_mins};

/// A row dot product: weight blocks, activation blocks (same length in elements), and bytes
/// to request from memory meanwhile (`ahead`, see [`prefetch_share`]; empty for none).
pub type DotFn = fn(&[u8], &[Q8K], &[u8]) -> f32;

/// One weight row against four activation rows: `[dot(w, a[0]), …, dot(w, a[3])]`, the
/// weights unpacked once for the four. Each value is computed exactly as the single-row
/// kernel of [`kernel`] computes it (same operations, same order), bit for bit.
pub type Dot4Fn = fn(&[u8], [&[Q8K]; 4], &[u8]) -> [f32; 4];

/// Requests (without waiting) the cache lines of block `k`'s share of `ahead`, `unit` bytes
/// per weight block, if `ahead` reaches that far. The matrix kernels hand each row the bytes
/// a fixed distance further along the weights, so the requests trickle out one block at a
/// time while the row is computed: whole rows requested at once stalled on the full
/// line-fill buffers, and without software prefetch the reads were 30 % slower.
#[inline(always)]
pub fn prefetch_share(ahead: &[u8], k: usize, unit: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(share) = ahead.get(k * unit..(k + 1) * unit) {
        for at in (0..unit).step_by(64) {
            // SAFETY: `at < share.len()`; a prefetch of a valid address has no other effect.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    share.as_ptr().add(at) as *const i8,
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ahead, k, unit);
}

/// The instruction set a kernel uses, from the least to the most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust.
    Portable,
    /// AVX2 with FMA.
    Avx2,
    /// AVX-512 (F, BW, VL, VNNI), with AVX2, FMA and F16C.
    Avx512Vnni,
}

/// The best instruction set this CPU offers the kernels.
pub fn best_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f")
            && has!("avx512bw")
            && has!("avx512vl")
            && has!("avx512vnni")
            && has!("avx2")
            && has!("fma")
            && has!("f16c")
        {
            return Isa::Avx512Vnni;
        }
        if has!("avx2") && has!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// The dot product for `dtype` on the best instruction set of this CPU.
pub fn kernel(dtype: QuantType) -> DotFn {
    kernel_for(dtype, best_isa())
}

/// The four-row kernel matching [`kernel`]`(dtype)` on this CPU, where one exists (Q4_K and
/// Q5_K with AVX-512, Q6_K with AVX2): batched decoding steps share each weight block's
/// unpacking between their rows.
pub fn kernel4(dtype: QuantType) -> Option<Dot4Fn> {
    kernel4_for(dtype, best_isa())
}

/// [`kernel4`] for `isa` (as [`kernel_for`]: tests and benchmarks).
pub fn kernel4_for(dtype: QuantType, isa: Isa) -> Option<Dot4Fn> {
    #[cfg(target_arch = "x86_64")]
    {
        let isa = isa.min(best_isa());
        match (dtype, isa) {
            (QuantType::Q4K, Isa::Avx512Vnni) => return Some(x86::q4k_avx512_x4),
            (QuantType::Q5K, Isa::Avx512Vnni) => return Some(x86::q5k_avx512_x4),
            (QuantType::Q6K, Isa::Avx512Vnni) => return Some(x86::q6k_avx512_x4),
            (QuantType::Q6K, Isa::Avx2) => return Some(x86::q6k_avx2_x4),
            _ => {}
        }
    }
    let _ = (dtype, isa);
    None
}

/// The dot product for `dtype` written for `isa` (for tests and benchmarks: the caller must
/// make sure the CPU has it; [`best_isa`] and anything below it are safe).
pub fn kernel_for(dtype: QuantType, isa: Isa) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    {
        let isa = isa.min(best_isa());
        match (dtype, isa) {
            (QuantType::Q4K, Isa::Avx512Vnni) => return x86::q4k_avx512,
            (QuantType::Q4K, Isa::Avx2) => return x86::q4k_avx2,
            (QuantType::Q6K, Isa::Avx512Vnni) => return x86::q6k_avx512,
            (QuantType::Q6K, Isa::Avx2) => return x86::q6k_avx2,
            (QuantType::Q5K, Isa::Avx512Vnni) => return x86::q5k_avx512,
            (QuantType::Q5K, Isa::Avx2) => return x86::q5k_avx2,
            (QuantType::Q8_0, Isa::Avx512Vnni | Isa::Avx2) => return x86::q8_0_v3,
            _ => {}
        }
    }
    let _ = isa;
    match dtype {
        QuantType::Q4K => q4k_portable,
        QuantType::Q5K => q5k_portable,
        QuantType::Q6K => q6k_portable,
        QuantType::Q8_0 => q8_0_portable,
    }
}

fn q4k_portable(w: &[u8], a: &[Q8K], ahead: &[u8]) -> f32 {
    q4k5k::<false>(w, a, ahead)
}

fn q5k_portable(w: &[u8], a: &[Q8K], ahead: &[u8]) -> f32 {
    q4k5k::<true>(w, a, ahead)
}

fn q6k_portable(w: &[u8], a: &[Q8K], ahead: &[u8]) -> f32 {
    q6k(w, a, ahead)
}

fn q8_0_portable(w: &[u8], a: &[Q8K], ahead: &[u8]) -> f32 {
    q8_0(w, a, ahead)
}

/// Σ over a block's eight sub-blocks of `min_j · Σ a` (the Q4_K/Q5_K minimums' share).
#[inline(always)]
fn min_sum(mn: &[u8; 8], act: &Q8K) -> i32 {
    (0..8).map(|j| mn[j] as i32 * act.sums32[j] as i32).sum()
}

/// Σ over a Q6_K block's sixteen sub-blocks of `scale_i · Σ a` (for its −32 offset).
#[inline(always)]
fn q6k_offset_sum(sc: &[u8], act: &Q8K) -> i32 {
    (0..16)
        .map(|i| (sc[i] as i8) as i32 * act.bsums[i] as i32)
        .sum()
}

#[inline(always)]
fn q4k5k<const FIVE: bool>(w: &[u8], a: &[Q8K], ahead: &[u8]) -> f32 {
    let block = if FIVE { 176 } else { 144 };
    let mut sum = 0f32;
    for (k, (b, act)) in w.chunks_exact(block).zip(a).enumerate() {
        prefetch_share(ahead, k, block);
        let (sc, mn) = scales_mins(&b[4..16]);
        let (qh, qs) = (&b[16..48], if FIVE { &b[48..176] } else { &b[16..144] });
        let mut isum = 0i32;
        for j in 0..4 {
            let q = &qs[32 * j..32 * j + 32];
            let (a0, a1) = (
                &act.qs[64 * j..64 * j + 32],
                &act.qs[64 * j + 32..64 * j + 64],
            );
            let (mut s0, mut s1) = (0i32, 0i32);
            for l in 0..32 {
                let (mut lo, mut hi) = (q[l] & 0xF, q[l] >> 4);
                if FIVE {
                    lo |= ((qh[l] >> (2 * j)) & 1) << 4;
                    hi |= ((qh[l] >> (2 * j + 1)) & 1) << 4;
                }
                s0 += lo as i32 * a0[l] as i32;
                s1 += hi as i32 * a1[l] as i32;
            }
            isum += s0 * sc[2 * j] as i32 + s1 * sc[2 * j + 1] as i32;
        }
        let msum = min_sum(&mn, act);
        sum += act.d * (f16_at(b, 0) * isum as f32 - f16_at(b, 2) * msum as f32);
    }
    sum
}

#[inline(always)]
fn q6k(w: &[u8], a: &[Q8K], ahead: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (k, (b, act)) in w.chunks_exact(210).zip(a).enumerate() {
        prefetch_share(ahead, k, 210);
        let sc = &b[192..208];
        let mut isum = 0i32;
        for h in 0..2 {
            let ql = &b[64 * h..64 * h + 64];
            let qh = &b[128 + 32 * h..128 + 32 * h + 32];
            let aq = &act.qs[128 * h..128 * h + 128];
            for g in 0..4 {
                let mut s = [0i32; 2];
                for l in 0..32 {
                    let q = match g {
                        0 => (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                        1 => (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                        2 => (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                        _ => (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                    };
                    s[l / 16] += q as i32 * aq[32 * g + l] as i32;
                }
                let i = 8 * h + 2 * g;
                isum += (sc[i] as i8) as i32 * s[0] + (sc[i + 1] as i8) as i32 * s[1];
            }
        }
        let offset = 32 * q6k_offset_sum(sc, act);
        sum += act.d * f16_at(b, 208) * (isum - offset) as f32;
    }
    sum
}

#[inline(always)]
fn q8_0(w: &[u8], a: &[Q8K], ahead: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (k, (blocks, act)) in w.chunks_exact(34 * 8).zip(a).enumerate() {
        prefetch_share(ahead, k, 34 * 8);
        for (k, b) in blocks.chunks_exact(34).enumerate() {
            let s: i32 = b[2..34]
                .iter()
                .zip(&act.qs[32 * k..32 * k + 32])
                .map(|(&q, &x)| (q as i8) as i32 * x as i32)
                .sum();
            sum += act.d * f16_at(b, 0) * s as f32;
        }
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod x86;
