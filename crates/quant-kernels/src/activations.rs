//! Activations quantized to 8 bits in blocks of 256, the integer side of every dot product.

use crate::blocks::QK_K;

/// 256 activations as `d · qs[i]`, with the sums of each 16 (`bsums`) that the kernels use to
/// apply the weights' per-sub-block minimums and offsets without touching the values again.
#[derive(Clone, Debug, PartialEq)]
#[repr(C, align(32))]
pub struct Q8K {
    /// The quantized values.
    pub qs: [i8; QK_K],
    /// Sums of each 16 consecutive values.
    pub bsums: [i16; QK_K / 16],
    /// Sums of each 32 consecutive values (pairs of `bsums`: the Q4_K/Q5_K sub-blocks), kept
    /// so that a dot product does not add the pairs again for every weight row.
    pub sums32: [i16; QK_K / 32],
    /// `d · sums32`: the Q4_K/Q5_K minimums' share of a block is then one multiply-add of
    /// eight lanes per activation row (the weights' `dmin · min_j` times these).
    pub scaled_sums32: [f32; QK_K / 32],
    /// The scale.
    pub d: f32,
}

/// `x` (a multiple of 256 long) as 8-bit blocks: symmetric, `d = max|x| / 127`, rounded to
/// nearest.
pub fn quantize(x: &[f32]) -> Vec<Q8K> {
    assert_eq!(x.len() % QK_K, 0, "activation rows are whole 256-blocks");
    x.chunks_exact(QK_K).map(quantize_block).collect()
}

fn quantize_block(x: &[f32]) -> Q8K {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let finite = x.iter().all(|v| v.is_finite());
    let mut b = Q8K {
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
        sums32: [0; QK_K / 32],
        scaled_sums32: [0.0; QK_K / 32],
        // A NaN or infinite input makes the whole block's products NaN, as in f32 arithmetic.
        d: if finite { amax / 127.0 } else { f32::NAN },
    };
    if amax == 0.0 || !finite {
        return b;
    }
    let inv = 127.0 / amax;
    for (q, v) in b.qs.iter_mut().zip(x) {
        *q = round(v * inv).clamp(-127.0, 127.0) as i8;
    }
    for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
        *s = q.iter().map(|&v| v as i16).sum();
    }
    for (s, pair) in b.sums32.iter_mut().zip(b.bsums.chunks_exact(2)) {
        *s = pair[0] + pair[1];
    }
    for (f, &s) in b.scaled_sums32.iter_mut().zip(&b.sums32) {
        *f = b.d * s as f32;
    }
    b
}

/// `x` rounded to the nearest integer (ties to even) for |x| < 2^22: adding and subtracting
/// 1.5·2^23 drops the fraction in the FPU's rounding. `f32::round` is a library call on the
/// baseline x86-64 target (no SSE4.1), 5× slower here over a 5,120-wide row.
#[inline(always)]
fn round(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}
