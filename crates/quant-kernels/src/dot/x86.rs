//! The x86 kernels. Each `pub(super) fn` is only handed out by [`super::kernel_for`] or
//! [`super::kernel4_for`] after the CPU was checked for the features its body is compiled
//! with.

use std::arch::x86_64::*;

use super::{Q8K, prefetch_share};
use crate::blocks::f16_at;

macro_rules! dispatch {
    ($name:ident, $features:literal, $body:expr) => {
        pub(super) fn $name(w: &[u8], a: &[Q8K], ahead: &[u8]) -> f32 {
            #[target_feature(enable = $features)]
            #[allow(unused_unsafe)]
            fn inner(w: &[u8], a: &[Q8K], ahead: &[u8]) -> f32 {
                // SAFETY: the helpers only need the features `inner` is compiled with.
                unsafe { $body(w, a, ahead) }
            }
            // SAFETY: handed out only where the CPU has these features (module docs).
            unsafe { inner(w, a, ahead) }
        }
    };
}

macro_rules! dispatch4 {
    ($name:ident, $features:literal, $body:expr) => {
        pub(super) fn $name(w: &[u8], a: [&[Q8K]; 4], ahead: &[u8]) -> [f32; 4] {
            #[target_feature(enable = $features)]
            #[allow(unused_unsafe)]
            fn inner(w: &[u8], a: [&[Q8K]; 4], ahead: &[u8]) -> [f32; 4] {
                // SAFETY: as in `dispatch!`.
                unsafe { $body(w, a, ahead) }
            }
            // SAFETY: handed out only where the CPU has these features (module docs).
            unsafe { inner(w, a, ahead) }
        }
    };
}

dispatch4!(
    q4k_avx512_x4,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    q4k_avx512_rows::<false, 4>
);
dispatch4!(
    q5k_avx512_x4,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    q4k_avx512_rows::<true, 4>
);
dispatch4!(q6k_avx2_x4, "avx2,fma", q6k_avx2_rows::<4>);
dispatch4!(
    q6k_avx512_x4,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    q6k_avx512_rows::<4>
);

// The portable loop, compiled for AVX2 (LLVM vectorises it).
dispatch!(q8_0_v3, "avx2,fma", super::q8_0);
dispatch!(q4k_avx2, "avx2,fma", q4k_avx2_body::<false>);
dispatch!(q5k_avx2, "avx2,fma", q4k_avx2_body::<true>);
dispatch!(q6k_avx2, "avx2,fma", q6k_avx2_body);
dispatch!(
    q6k_avx512,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    q6k_avx512_rows1
);
dispatch!(
    q4k_avx512,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    q4k_avx512_body::<false>
);
dispatch!(
    q5k_avx512,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    q4k_avx512_body::<true>
);

#[inline(always)]
unsafe fn load256(p: &[u8]) -> __m256i {
    assert!(p.len() >= 32);
    // SAFETY: 32 readable bytes (checked); unaligned load.
    unsafe { _mm256_loadu_si256(p.as_ptr() as *const __m256i) }
}

#[inline(always)]
unsafe fn load256_i8(p: &[i8]) -> __m256i {
    assert!(p.len() >= 32);
    // SAFETY: as `load256`.
    unsafe { _mm256_loadu_si256(p.as_ptr() as *const __m256i) }
}

#[inline(always)]
unsafe fn load512_i8(p: &[i8]) -> __m512i {
    assert!(p.len() >= 64);
    // SAFETY: 64 readable bytes (checked); unaligned load.
    unsafe { _mm512_loadu_si512(p.as_ptr() as *const __m512i) }
}

#[inline(always)]
unsafe fn hsum256(x: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// The low and high nibbles of 32 bytes.
#[inline(always)]
unsafe fn nibbles(q: __m256i) -> (__m256i, __m256i) {
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        (
            _mm256_and_si256(q, m4),
            _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4),
        )
    }
}

/// The values of sub-blocks 2j (low nibbles) and 2j + 1 (high nibbles) of a Q4_K block, or
/// of a Q5_K block with each one's fifth bit from `qh` (bits 2j and 2j + 1 of its bytes).
#[inline(always)]
unsafe fn values<const FIVE: bool>(b: &[u8], j: usize) -> (__m256i, __m256i) {
    unsafe {
        if !FIVE {
            return nibbles(load256(&b[16 + 32 * j..]));
        }
        let (lo, hi) = nibbles(load256(&b[48 + 32 * j..]));
        let qh = load256(&b[16..]);
        let one = _mm256_set1_epi8(1);
        let shift = _mm_cvtsi32_si128(2 * j as i32);
        let bits = _mm256_srl_epi16(qh, shift);
        let lo_bit = _mm256_slli_epi16::<4>(_mm256_and_si256(bits, one));
        let hi_bit = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<1>(bits), one));
        (_mm256_or_si256(lo, lo_bit), _mm256_or_si256(hi, hi_bit))
    }
}

/// A Q4_K block's twelve packed bytes as eight 6-bit scales (bytes 0..8 of the result) and
/// eight 6-bit minimums (bytes 8..16), with four word operations instead of a loop.
#[inline(always)]
fn scales_mins_packed(s: &[u8]) -> [u32; 4] {
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (w0, w1, w2) = (word(0), word(1), word(2));
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const TOP2: u32 = 0x0303_0303;
    [
        w0 & LOW6,
        (w2 & LOW4) | (((w0 >> 6) & TOP2) << 4),
        w1 & LOW6,
        ((w2 >> 4) & LOW4) | (((w1 >> 6) & TOP2) << 4),
    ]
}

/// [`scales_mins_packed`] as one vector: scales in bytes 0..8, minimums in 8..16.
#[inline(always)]
unsafe fn scales_mins_vector(s: &[u8]) -> __m128i {
    let [w0, w1, w2, w3] = scales_mins_packed(s);
    let pair = |lo: u32, hi: u32| ((hi as u64) << 32 | lo as u64) as i64;
    unsafe { _mm_set_epi64x(pair(w2, w3), pair(w0, w1)) }
}

/// The block's two leading f16 values (`d`, `dmin`; lanes 0 and 1) as f32, by F16C.
#[inline]
#[target_feature(enable = "f16c")]
unsafe fn f16_pair(b: &[u8]) -> __m128 {
    let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// Bytes per block: Q4_K, or Q5_K with its 32 bytes of fifth bits.
const fn q4k_block<const FIVE: bool>() -> usize {
    if FIVE { 176 } else { 144 }
}

/// A Q4_K/Q5_K block's eight scales as i16; adds the block's minimums' share,
/// `dmin · d_a · Σ_j min_j · Σ a`, to the four lanes of `acc_min`.
#[inline(always)]
unsafe fn q4k_scales(b: &[u8], act: &Q8K, acc_min: &mut __m128) -> __m128i {
    unsafe {
        let [w0, w1, w2, w3] = scales_mins_packed(&b[4..16]);
        let both = _mm256_cvtepu8_epi16(_mm_set_epi32(w3 as i32, w2 as i32, w1 as i32, w0 as i32));
        *acc_min = q4k_min_share(
            _mm256_extracti128_si256::<1>(both),
            act,
            f16_at(b, 2),
            *acc_min,
        );
        _mm256_castsi256_si128(both)
    }
}

/// `acc_min` plus a block's minimums' share, `dmin · d_a · Σ_j min_j · Σ a`, from its
/// eight minimums as i16 (`mins`) and its `dmin`.
#[inline(always)]
unsafe fn q4k_min_share(mins: __m128i, act: &Q8K, dmin: f32, acc_min: __m128) -> __m128 {
    unsafe {
        // Sums of 32 activations (each ≤ 32·127) for the eight sub-blocks.
        let sums32 = _mm_loadu_si128(act.sums32.as_ptr() as *const __m128i);
        let mins = _mm_madd_epi16(mins, sums32);
        let dmin = _mm_set1_ps(act.d * dmin);
        _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(mins), acc_min)
    }
}

/// Bytes that repeat i16 lane `k` of a 128-bit vector across all eight lanes.
#[inline(always)]
unsafe fn lane_broadcast(k: usize) -> __m128i {
    unsafe { _mm_set1_epi16((((2 * k + 1) << 8) | (2 * k)) as i16) }
}

/// Q4_K: for each 64 weights, `vpmaddubsw` of the low and high nibbles with their
/// activations (pairs ≤ 2·15·127, no saturation), `vpmaddwd` with the sub-block scale
/// (picked from the unpacked scales by a byte shuffle); minimums from the activation sums.
#[inline(always)]
unsafe fn q4k_avx2_body<const FIVE: bool>(w: &[u8], a: &[Q8K], ahead: &[u8]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut acc_min = _mm_setzero_ps();
        for (k, (b, act)) in w.chunks_exact(q4k_block::<FIVE>()).zip(a).enumerate() {
            prefetch_share(ahead, k, q4k_block::<FIVE>());
            let scales = q4k_scales(b, act, &mut acc_min);
            let scales = _mm256_broadcastsi128_si256(scales);
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let (lo, hi) = values::<FIVE>(b, j);
                let s0 =
                    _mm256_shuffle_epi8(scales, _mm256_broadcastsi128_si256(lane_broadcast(2 * j)));
                let s1 = _mm256_shuffle_epi8(
                    scales,
                    _mm256_broadcastsi128_si256(lane_broadcast(2 * j + 1)),
                );
                let p0 =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256_i8(&act.qs[64 * j..])), s0);
                let p1 = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(hi, load256_i8(&act.qs[64 * j + 32..])),
                    s1,
                );
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
            }
            let d = _mm256_set1_ps(act.d * f16_at(b, 0));
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum256(acc) - hsum128(acc_min)
    }
}

#[inline(always)]
unsafe fn hsum128(x: __m128) -> f32 {
    unsafe {
        let s = _mm_add_ps(x, _mm_movehl_ps(x, x));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// A VNNI instruction `acc += f(a, b)` on 512-bit registers, written as an instruction
/// because LLVM splits the intrinsics into two (`vpmaddwd` + `vpaddd` for `vpdpwssd`) for CPUs
/// it does not know to have fast ones, the generic x86-64 target included: that doubled the
/// multiply work of these kernels.
macro_rules! vnni {
    ($(#[$doc:meta])* $name:ident, $instruction:literal) => {
        $(#[$doc])*
        #[inline]
        #[target_feature(enable = "avx512f,avx512vnni")]
        unsafe fn $name(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
            let mut acc = acc;
            // SAFETY: callers are compiled with AVX-512 VNNI; registers only, no memory.
            unsafe {
                std::arch::asm!(
                    concat!($instruction, " {acc}, {a}, {b}"),
                    acc = inout(zmm_reg) acc,
                    a = in(zmm_reg) a,
                    b = in(zmm_reg) b,
                    options(pure, nomem, nostack, preserves_flags)
                );
            }
            acc
        }
    };
}

vnni!(
    /// `acc + Σ pairs of a·b` (signed 16-bit lanes) in 32-bit lanes: `vpdpwssd`.
    dpwssd512,
    "vpdpwssd"
);
vnni!(
    /// `acc + Σ fours of a·b` (unsigned bytes `a`, signed bytes `b`) in 32-bit lanes:
    /// `vpdpbusd`.
    dpbusd512,
    "vpdpbusd"
);

/// `sumi` plus the scaled products of two vectors of 64 unsigned values (`w[0]`, `w[1]`, each
/// value < 64) with their 64 activations each (`a[0]`, `a[1]`): `vpdpbusd` sums each four
/// products (|sum| ≤ 4·63·127 < 2^15) into 32-bit lanes, `vpackssdw` packs the two
/// vectors' sums into 16-bit lanes (128-bit lane L: four of `w[0]`'s lane L, then four of
/// `w[1]`'s) and `vpdpwssd` multiplies them by their scales (`sc`, in that packed order).
/// Three multiplies and a pack for 128 values, where `vpmaddubsw` + `vpdpwssd` take four
/// multiplies; on this machine (which issues both on two ports) the two ran at the same
/// speed, and this one leaves the multiply port more room where it is the limit.
#[inline(always)]
unsafe fn scaled_pair(sumi: __m512i, w: [__m512i; 2], a: [&[i8]; 2], sc: __m512i) -> __m512i {
    unsafe {
        let zero = _mm512_setzero_si512();
        let t0 = dpbusd512(zero, w[0], load512_i8(a[0]));
        let t1 = dpbusd512(zero, w[1], load512_i8(a[1]));
        dpwssd512(sumi, _mm512_packs_epi32(t0, t1), sc)
    }
}

/// Lane picks of a block's scales for [`scaled_pair`] on vectors `2n`, `2n + 1` (entry
/// `n`) of 64 consecutive elements each, one scale per `SCALE_ELEMS` elements: 16-bit
/// lane `e` holds the four values of 32-bit lane `4 · (e / 8) + e % 4` of vector
/// `2n + (e % 8) / 4`.
const fn pair_lanes<const SCALE_ELEMS: usize>() -> [[i16; 32]; 2] {
    let mut out = [[0i16; 32]; 2];
    let mut n = 0;
    while n < 2 {
        let mut e = 0;
        while e < 32 {
            let vector = 2 * n + (e % 8) / 4;
            let lane = 4 * (e / 8) + e % 4;
            out[n][e] = ((64 * vector + 4 * lane) / SCALE_ELEMS) as i16;
            e += 1;
        }
        n += 1;
    }
    out
}

/// [`pair_lanes`] as vectors.
#[inline(always)]
unsafe fn pair_picks(lanes: &[[i16; 32]; 2]) -> [__m512i; 2] {
    // SAFETY: 64 readable bytes each.
    unsafe {
        [
            _mm512_loadu_si512(lanes[0].as_ptr() as *const __m512i),
            _mm512_loadu_si512(lanes[1].as_ptr() as *const __m512i),
        ]
    }
}

/// Q4_K/Q5_K sub-blocks: 32 elements per scale.
static Q4K_PICKS: [[i16; 32]; 2] = pair_lanes::<32>();
/// Q6_K: 16 elements per scale.
static Q6K_PICKS: [[i16; 32]; 2] = pair_lanes::<16>();

/// Q4_K with AVX-512: the low and high nibbles of 32 bytes side by side (64 weights, two
/// sub-blocks), two such vectors at a time through [`scaled_pair`].
#[inline(always)]
unsafe fn q4k_avx512_body<const FIVE: bool>(w: &[u8], a: &[Q8K], ahead: &[u8]) -> f32 {
    unsafe { q4k_avx512_rows::<FIVE, 1>(w, [a], ahead)[0] }
}

/// [`q4k_avx512_body`] for `M` activation rows: each block's values and scale lanes are
/// unpacked once, then every row runs the single-row sequence on them with accumulators
/// of its own (so each result is the single-row kernel's, bit for bit).
///
/// Per row and block this is six multiply instructions for the 256 products (two
/// [`scaled_pair`]s) and two packs, three for the
/// scale (convert, multiply by the block's `d`, add times the activations' `d`, which is
/// broadcast straight from memory) and one for the minimums (their `dmin · min_j` times
/// the activations' `scaled_sums32`); everything else is shared.
#[inline(always)]
unsafe fn q4k_avx512_rows<const FIVE: bool, const M: usize>(
    w: &[u8],
    a: [&[Q8K]; M],
    ahead: &[u8],
) -> [f32; M] {
    unsafe {
        let pick = pair_picks(&Q4K_PICKS);
        let m4 = _mm512_set1_epi8(0x0F);
        let blocks = w.len() / q4k_block::<FIVE>();
        assert!(
            a.iter().all(|r| r.len() >= blocks),
            "an activation row is short"
        );
        let mut acc = [_mm512_setzero_ps(); M];
        let mut acc_min = [_mm256_setzero_ps(); M];
        for (k, b) in w.chunks_exact(q4k_block::<FIVE>()).enumerate() {
            prefetch_share(ahead, k, q4k_block::<FIVE>());
            let both = _mm256_cvtepu8_epi16(scales_mins_vector(&b[4..16]));
            let mins = _mm256_extracti128_si256::<1>(both);
            let scales = _mm512_castsi256_si512(both);
            let sc = [
                _mm512_permutexvar_epi16(pick[0], scales),
                _mm512_permutexvar_epi16(pick[1], scales),
            ];
            // 64 bytes hold sub-blocks 4t, 4t + 2 (low nibbles) and 4t + 1, 4t + 3
            // (high): two shuffles put each 32 bytes' low and high nibbles side by side.
            // Plain loops, not closures: a closure is not compiled with the caller's target
            // features, and the vectors would go through memory.
            let mut wv = [_mm512_setzero_si512(); 4];
            for t in 0..2 {
                let at = if FIVE { 48 } else { 16 } + 64 * t;
                let v = _mm512_loadu_si512(b[at..at + 64].as_ptr() as *const __m512i);
                let mut lo = _mm512_and_si512(v, m4);
                let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
                if FIVE {
                    // Fifth bits: bit 2j (low) and 2j + 1 (high) of `qh` for the 32 bytes
                    // of chunk j = 2t (first half) and 2t + 1 (second half).
                    let qh = _mm512_broadcast_i64x4(load256(&b[16..]));
                    let shift = _mm512_mask_blend_epi16(
                        0xFFFF_0000,
                        _mm512_set1_epi16(4 * t as i16),
                        _mm512_set1_epi16(4 * t as i16 + 2),
                    );
                    let bits = _mm512_srlv_epi16(qh, shift);
                    let one = _mm512_set1_epi8(1);
                    lo = _mm512_or_si512(lo, _mm512_slli_epi16::<4>(_mm512_and_si512(bits, one)));
                    hi = _mm512_or_si512(
                        hi,
                        _mm512_slli_epi16::<3>(_mm512_and_si512(bits, _mm512_set1_epi8(2))),
                    );
                }
                wv[2 * t] = _mm512_shuffle_i64x2::<0b01_00_01_00>(lo, hi);
                wv[2 * t + 1] = _mm512_shuffle_i64x2::<0b11_10_11_10>(lo, hi);
            }
            let d = f16_pair(b);
            let d_w = _mm512_broadcastss_ps(d);
            // dmin · min_j as f32, for every row's `scaled_sums32`.
            let dmin_w = _mm256_broadcastss_ps(_mm_permute_ps::<0b01_01_01_01>(d));
            let mins = _mm256_mul_ps(dmin_w, _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(mins)));
            for i in 0..M {
                // SAFETY: every row has a block `k` (checked before the loop).
                let act = a[i].get_unchecked(k);
                // The minimums' share, `Σ_j dmin · min_j · d_a · Σ a`.
                let sums = _mm256_loadu_ps(act.scaled_sums32.as_ptr());
                acc_min[i] = _mm256_fmadd_ps(mins, sums, acc_min[i]);
                let mut sumi = _mm512_setzero_si512();
                for n in 0..2 {
                    let w = [wv[2 * n], wv[2 * n + 1]];
                    let x = [&act.qs[128 * n..], &act.qs[128 * n + 64..]];
                    sumi = scaled_pair(sumi, w, x, sc[n]);
                }
                let x = _mm512_mul_ps(d_w, _mm512_cvtepi32_ps(sumi));
                acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(act.d), x, acc[i]);
            }
        }
        let mut out = [0f32; M];
        for i in 0..M {
            out[i] = _mm512_reduce_add_ps(acc[i]) - hsum256(acc_min[i]);
        }
        out
    }
}

/// The 6-bit values (0..63) of one Q6_K half: four groups of 32, in element order.
#[inline(always)]
unsafe fn q6k_half(b: &[u8], h: usize) -> [__m256i; 4] {
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let m3 = _mm256_set1_epi8(3);
        let qla = load256(&b[64 * h..]);
        let qlb = load256(&b[64 * h + 32..]);
        let qh = load256(&b[128 + 32 * h..]);
        let high = |shifted: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(shifted, m3));
        [
            _mm256_or_si256(_mm256_and_si256(qla, m4), high(qh)),
            _mm256_or_si256(_mm256_and_si256(qlb, m4), high(_mm256_srli_epi16::<2>(qh))),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(qla), m4),
                high(_mm256_srli_epi16::<4>(qh)),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(qlb), m4),
                high(_mm256_srli_epi16::<6>(qh)),
            ),
        ]
    }
}

/// Q6_K: unsigned 6-bit values times activations (pairs ≤ 2·63·127), `vpmaddwd` with the
/// scales of its two sixteens (a byte shuffle of the block's scales), the −32 offset from
/// the activation sums.
#[inline(always)]
unsafe fn q6k_avx2_body(w: &[u8], a: &[Q8K], ahead: &[u8]) -> f32 {
    unsafe { q6k_avx2_rows::<1>(w, [a], ahead)[0] }
}

/// [`q6k_avx2_body`] for `M` activation rows: each block's values and scales are unpacked
/// once; every row runs the single-row sequence with accumulators of its own.
///
/// The −32 offset is subtracted in integers (`32 · Σ sc_i · Σ a`, ≤ 2^24, beside products
/// ≤ 2^25), so each row and block ends in one convert, one multiply by the block's `d` and
/// one add times the activations' `d` (broadcast from memory).
#[inline(always)]
unsafe fn q6k_avx2_rows<const M: usize>(w: &[u8], a: [&[Q8K]; M], ahead: &[u8]) -> [f32; M] {
    unsafe {
        let mut acc = [_mm256_setzero_ps(); M];
        let blocks = w.len() / 210;
        assert!(
            a.iter().all(|r| r.len() >= blocks),
            "an activation row is short"
        );
        for (k, b) in w.chunks_exact(210).enumerate() {
            prefetch_share(ahead, k, 210);
            let d_w = _mm256_set1_ps(f16_at(b, 208));
            let sc8 = _mm_loadu_si128(b[192..208].as_ptr() as *const __m128i);
            // 32 · sc_i as i16, for the offsets.
            let sc32 = _mm256_slli_epi16::<5>(_mm256_cvtepi8_epi16(sc8));
            let halves = [q6k_half(b, 0), q6k_half(b, 1)];
            // [sc_i × 8, sc_{i+1} × 8] as i16 for each group of 32.
            let mut scales = [_mm256_setzero_si256(); 8];
            for (n, s) in scales.iter_mut().enumerate() {
                let i = 2 * n as i64;
                *s = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(
                    sc8,
                    _mm_set_epi64x(0x0101_0101_0101_0101 * (i + 1), 0x0101_0101_0101_0101 * i),
                ));
            }
            for r in 0..M {
                // SAFETY: every row has a block `k` (checked before the loop).
                let act = a[r].get_unchecked(k);
                let sums = _mm256_loadu_si256(act.bsums.as_ptr() as *const __m256i);
                let mut sumi =
                    _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(sc32, sums));
                for h in 0..2 {
                    for g in 0..4 {
                        let p = _mm256_maddubs_epi16(
                            halves[h][g],
                            load256_i8(&act.qs[128 * h + 32 * g..]),
                        );
                        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scales[4 * h + g]));
                    }
                }
                let x = _mm256_mul_ps(d_w, _mm256_cvtepi32_ps(sumi));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(act.d), x, acc[r]);
            }
        }
        let mut out = [0f32; M];
        for r in 0..M {
            out[r] = hsum256(acc[r]);
        }
        out
    }
}

/// [`q6k_avx512_rows`] for one row.
#[inline(always)]
unsafe fn q6k_avx512_rows1(w: &[u8], a: &[Q8K], ahead: &[u8]) -> f32 {
    unsafe { q6k_avx512_rows::<1>(w, [a], ahead)[0] }
}

/// Q6_K with AVX-512, for `M` activation rows: each 64 bytes of low bits of a half give
/// 128 values, in two vectors of 64 consecutive elements, whose high bits come from the
/// half's 32 `qh` bytes shifted per 256-bit lane; pairs of vectors go through
/// [`scaled_pair`] with their sixteens' scales (lanes picked by `vpermw`). The −32
/// offset, `32 · Σ sc_i · Σ a`, starts each row's integer sum. Per row and block: one
/// offset multiply, six product instructions and two packs, three for the scale; the
/// rest is shared by the rows, and each row's result is the one-row result.
#[inline(always)]
unsafe fn q6k_avx512_rows<const M: usize>(w: &[u8], a: [&[Q8K]; M], ahead: &[u8]) -> [f32; M] {
    unsafe {
        let pick = pair_picks(&Q6K_PICKS);
        // Shift of the `qh` bits for each 256-bit lane: groups (0, 1) and (2, 3).
        let shift = [
            _mm512_mask_blend_epi16(0xFFFF_0000, _mm512_set1_epi16(0), _mm512_set1_epi16(2)),
            _mm512_mask_blend_epi16(0xFFFF_0000, _mm512_set1_epi16(4), _mm512_set1_epi16(6)),
        ];
        let m4 = _mm512_set1_epi8(0x0F);
        let top2 = _mm512_set1_epi8(0x30);
        let blocks = w.len() / 210;
        assert!(
            a.iter().all(|r| r.len() >= blocks),
            "an activation row is short"
        );
        let mut acc = [_mm512_setzero_ps(); M];
        for (k, b) in w.chunks_exact(210).enumerate() {
            prefetch_share(ahead, k, 210);
            let sc16 =
                _mm256_cvtepi8_epi16(_mm_loadu_si128(b[192..208].as_ptr() as *const __m128i));
            // −32 · sc_i, so the offset is a plain multiply-add per row.
            let minus32 = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16::<5>(sc16));
            let sc16 = _mm512_castsi256_si512(sc16);
            let sc = [
                _mm512_permutexvar_epi16(pick[0], sc16),
                _mm512_permutexvar_epi16(pick[1], sc16),
            ];
            let mut wv = [_mm512_setzero_si512(); 4];
            for h in 0..2 {
                let ql = _mm512_loadu_si512(b[64 * h..64 * h + 64].as_ptr() as *const __m512i);
                let qh = _mm512_broadcast_i64x4(load256(&b[128 + 32 * h..]));
                let low = [
                    _mm512_and_si512(ql, m4),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                ];
                for p in 0..2 {
                    let high = _mm512_slli_epi16::<4>(_mm512_srlv_epi16(qh, shift[p]));
                    // low | (high & 0x30)
                    wv[2 * h + p] = _mm512_ternarylogic_epi32::<0xF8>(low[p], high, top2);
                }
            }
            let d_w = _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([
                b[208], b[209],
            ]) as i32)));
            for r in 0..M {
                // SAFETY: every row has a block `k` (checked before the loop).
                let act = a[r].get_unchecked(k);
                let sums = _mm256_loadu_si256(act.bsums.as_ptr() as *const __m256i);
                let mut sumi = _mm512_zextsi256_si512(_mm256_madd_epi16(minus32, sums));
                for n in 0..2 {
                    let w = [wv[2 * n], wv[2 * n + 1]];
                    let x = [&act.qs[128 * n..], &act.qs[128 * n + 64..]];
                    sumi = scaled_pair(sumi, w, x, sc[n]);
                }
                let x = _mm512_mul_ps(d_w, _mm512_cvtepi32_ps(sumi));
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(act.d), x, acc[r]);
            }
        }
        let mut out = [0f32; M];
        for r in 0..M {
            out[r] = _mm512_reduce_add_ps(acc[r]);
        }
        out
    }
}
