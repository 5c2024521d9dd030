//! The multi-row path (prefill): weights unpacked once per call and dotted against every
//! activation row.
//!
//! With AVX-512 VNNI, sixteen weight rows are unpacked together into unsigned bytes
//! interleaved four values at a time (one row per 32-bit lane), and each `vpdpbusd` adds four
//! products to all sixteen rows; scales and offsets are applied per 16 values in f32, and
//! the columns are walked in L1-sized tiles. Elsewhere, and for the rows left over:
//!
//! A row of `m ≥` [`MIN_ROWS`] activations shares each weight row, so unpacking it once and
//! multiplying it `m` times pays: each weight becomes `q · scale` as i16 (Q4_K/Q5_K: ≤ 31·63;
//! Q6_K: (q − 32)·scale, ≤ 32·128), leaving one f32 scale per 256 and, for Q4_K/Q5_K, the
//! sub-block minimums. The inner loop is then a plain i16 × i16 → i32 sum over 256 elements
//! (`vpmaddwd`, or `vpdpwssd` with AVX-512 VNNI), which LLVM vectorises from the loop below
//! compiled for each instruction set. Sums stay exact: 256 · 4096 · 127 < 2³¹.
//!
//! Q8_0 has a scale per 32 weights and keeps the row-at-a-time kernels.

use crate::activations::Q8K;
use crate::blocks::{QK_K, QuantType, f16_at, scales_mins};

/// Activation rows from which a matmul takes this path.
pub const MIN_ROWS: usize = 4;

/// Whether `dtype` has this path.
pub fn covers(dtype: QuantType) -> bool {
    dtype != QuantType::Q8_0
}

/// Activations widened to i16, with each block's scale and the sums of its eight sub-blocks
/// of 32 times that scale (for the Q4_K/Q5_K minimums).
pub struct WideActs {
    blocks: usize,
    q: Vec<i16>,
    d: Vec<f32>,
    sums: Vec<[f32; 8]>,
}

impl WideActs {
    /// `acts`: one entry per input row, all of the same width.
    pub fn new(acts: &[Vec<Q8K>]) -> Self {
        let blocks = acts.first().map_or(0, Vec::len);
        let mut w = WideActs {
            blocks,
            q: Vec::with_capacity(acts.len() * blocks * QK_K),
            d: Vec::with_capacity(acts.len() * blocks),
            sums: Vec::with_capacity(acts.len() * blocks),
        };
        for b in acts.iter().flatten() {
            w.q.extend(b.qs.iter().map(|&v| v as i16));
            w.d.push(b.d);
            // Already times the block's scale, as the minimums' share needs them.
            w.sums.push(std::array::from_fn(|j| {
                b.d * (b.bsums[2 * j] as f32 + b.bsums[2 * j + 1] as f32)
            }));
        }
        w
    }

    fn rows(&self) -> usize {
        self.d.len() / self.blocks.max(1)
    }
}

/// One weight row widened: `q · sub-block scale` per weight, the block scale `d`, and
/// `dmin · min_j` per sub-block of 32 (zero for Q6_K).
#[derive(Default)]
pub struct WideRow {
    q: Vec<i16>,
    d: Vec<f32>,
    mins: Vec<[f32; 8]>,
}

impl WideRow {
    /// Widens `row` (blocks of `dtype`, which [`covers`]) into `self`.
    #[inline(always)]
    pub fn fill(&mut self, dtype: QuantType, row: &[u8]) {
        let blocks = row.len() / dtype.block_bytes();
        self.q.resize(blocks * QK_K, 0);
        self.d.clear();
        self.mins.clear();
        for (b, q) in row
            .chunks_exact(dtype.block_bytes())
            .zip(self.q.chunks_exact_mut(QK_K))
        {
            match dtype {
                QuantType::Q4K | QuantType::Q5K => {
                    let (sc, mn) = scales_mins(&b[4..16]);
                    let five = dtype == QuantType::Q5K;
                    let (qh, qs) = (&b[16..48], if five { &b[48..176] } else { &b[16..144] });
                    for j in 0..4 {
                        let (s0, s1) = (sc[2 * j] as i16, sc[2 * j + 1] as i16);
                        for l in 0..32 {
                            let (mut lo, mut hi) = (qs[32 * j + l] & 0xF, qs[32 * j + l] >> 4);
                            if five {
                                lo |= ((qh[l] >> (2 * j)) & 1) << 4;
                                hi |= ((qh[l] >> (2 * j + 1)) & 1) << 4;
                            }
                            q[64 * j + l] = lo as i16 * s0;
                            q[64 * j + 32 + l] = hi as i16 * s1;
                        }
                    }
                    let dmin = f16_at(b, 2);
                    self.d.push(f16_at(b, 0));
                    self.mins.push(std::array::from_fn(|j| dmin * mn[j] as f32));
                }
                QuantType::Q6K => {
                    let sc = &b[192..208];
                    for h in 0..2 {
                        let ql = &b[64 * h..64 * h + 64];
                        let qh = &b[128 + 32 * h..128 + 32 * h + 32];
                        // Group g of 32: low 4 bits from ql[l + 32·(g & 1)] (low or high
                        // nibble for g < 2 or ≥ 2), high 2 bits from qh[l] >> 2g; one scale
                        // per 16.
                        for g in 0..4 {
                            let (lo_at, shift) = (32 * (g & 1), 4 * (g >> 1));
                            for half in 0..2 {
                                let scale = (sc[8 * h + 2 * g + half] as i8) as i16;
                                for l in 16 * half..16 * half + 16 {
                                    let v = ((ql[lo_at + l] >> shift) & 0xF)
                                        | (((qh[l] >> (2 * g)) & 3) << 4);
                                    q[128 * h + 32 * g + l] = (v as i16 - 32) * scale;
                                }
                            }
                        }
                    }
                    self.d.push(f16_at(b, 208));
                    self.mins.push([0.0; 8]);
                }
                QuantType::Q8_0 => unreachable!("Q8_0 keeps the row kernels"),
            }
        }
    }
}

/// Weight rows the AVX-512 kernel takes at a time (one per 32-bit lane).
pub const GROUP: usize = 16;

/// What one thread reuses between calls.
#[derive(Default)]
pub struct Scratch {
    row: WideRow,
    group: Interleaved,
    partial: Vec<[f32; GROUP]>,
}

/// `out[r · m + i] = rows[r] · acts[i]` for up to [`GROUP`] weight rows (blocks of `dtype`,
/// which [`covers`]) and every activation row `i` of the `m` (`q8` the same activations as
/// `wide`, unwidened).
pub fn rows_times_acts(
    dtype: QuantType,
    rows: &[&[u8]],
    scratch: &mut Scratch,
    q8: &[Vec<Q8K>],
    wide: &WideActs,
    out: &mut [f32],
) {
    assert!(rows.len() <= GROUP, "at most {GROUP} rows at a time");
    assert_eq!(out.len(), rows.len() * wide.rows(), "output is rows × m");
    kernel()(dtype, rows, scratch, q8, wide, out)
}

type RowsFn = fn(QuantType, &[&[u8]], &mut Scratch, &[Vec<Q8K>], &WideActs, &mut [f32]);

fn kernel() -> RowsFn {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::dot::{Isa, best_isa};
        match best_isa() {
            Isa::Avx512Vnni => return x86::v4,
            Isa::Avx2 => return x86::v3,
            Isa::Portable => {}
        }
    }
    portable
}

/// Each row widened to i16 and dotted with every activation row.
#[inline(always)]
fn each_row(
    dtype: QuantType,
    rows: &[&[u8]],
    scratch: &mut Scratch,
    acts: &WideActs,
    out: &mut [f32],
) {
    let m = acts.rows();
    for (bytes, out) in rows.iter().zip(out.chunks_exact_mut(m)) {
        scratch.row.fill(dtype, bytes);
        body(&scratch.row, acts, out);
    }
}

fn portable(
    dtype: QuantType,
    rows: &[&[u8]],
    scratch: &mut Scratch,
    _q8: &[Vec<Q8K>],
    wide: &WideActs,
    out: &mut [f32],
) {
    each_row(dtype, rows, scratch, wide, out)
}

/// [`GROUP`] weight rows with their values unsigned (Q4_K/Q5_K as stored, Q6_K before its
/// −32) in groups of 16 elements, interleaved four elements at a time: the 64 bytes of
/// `(group, quad)` are four values of each of the 16 rows, so one `vpdpbusd` against four
/// broadcast activations adds four products to every row's lane. Each (group, row) has a
/// scale and an offset: the row's value is `scale · q − offset`.
#[derive(Default)]
struct Interleaved {
    q: Vec<u8>,
    scale: Vec<[f32; GROUP]>,
    offset: Vec<[f32; GROUP]>,
}

impl Interleaved {
    #[inline(always)]
    fn fill(&mut self, dtype: QuantType, rows: &[&[u8]]) {
        debug_assert_eq!(rows.len(), GROUP);
        let blocks = rows[0].len() / dtype.block_bytes();
        let groups = blocks * QK_K / 16;
        self.q.resize(groups * 16 * GROUP, 0);
        self.scale.resize(groups, [0.0; GROUP]);
        self.offset.resize(groups, [0.0; GROUP]);
        let mut values = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let mut offsets = [0f32; 16];
        for (r, row) in rows.iter().enumerate() {
            for (b, block) in row.chunks_exact(dtype.block_bytes()).enumerate() {
                unsigned_block(dtype, block, &mut values, &mut scales, &mut offsets);
                for g in 0..16 {
                    let group = b * 16 + g;
                    self.scale[group][r] = scales[g];
                    self.offset[group][r] = offsets[g];
                    for quad in 0..4 {
                        let at = ((group * 4 + quad) * GROUP + r) * 4;
                        let from = 16 * g + 4 * quad;
                        self.q[at..at + 4].copy_from_slice(&values[from..from + 4]);
                    }
                }
            }
        }
    }
}

/// One block as unsigned values with a scale and an offset per 16 elements.
#[inline(always)]
fn unsigned_block(
    dtype: QuantType,
    b: &[u8],
    values: &mut [u8; QK_K],
    scales: &mut [f32; 16],
    offsets: &mut [f32; 16],
) {
    match dtype {
        QuantType::Q4K | QuantType::Q5K => {
            let (sc, mn) = scales_mins(&b[4..16]);
            let five = dtype == QuantType::Q5K;
            let (qh, qs) = (&b[16..48], if five { &b[48..176] } else { &b[16..144] });
            for j in 0..4 {
                for l in 0..32 {
                    let (mut lo, mut hi) = (qs[32 * j + l] & 0xF, qs[32 * j + l] >> 4);
                    if five {
                        lo |= ((qh[l] >> (2 * j)) & 1) << 4;
                        hi |= ((qh[l] >> (2 * j + 1)) & 1) << 4;
                    }
                    values[64 * j + l] = lo;
                    values[64 * j + 32 + l] = hi;
                }
            }
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            for g in 0..16 {
                scales[g] = d * sc[g / 2] as f32;
                offsets[g] = dmin * mn[g / 2] as f32;
            }
        }
        QuantType::Q6K => {
            let sc = &b[192..208];
            for h in 0..2 {
                let ql = &b[64 * h..64 * h + 64];
                let qh = &b[128 + 32 * h..128 + 32 * h + 32];
                for g in 0..4 {
                    let (lo_at, shift) = (32 * (g & 1), 4 * (g >> 1));
                    for l in 0..32 {
                        values[128 * h + 32 * g + l] =
                            ((ql[lo_at + l] >> shift) & 0xF) | (((qh[l] >> (2 * g)) & 3) << 4);
                    }
                }
            }
            let d = f16_at(b, 208);
            for g in 0..16 {
                scales[g] = d * (sc[g] as i8) as f32;
                offsets[g] = 32.0 * scales[g];
            }
        }
        QuantType::Q8_0 => unreachable!("Q8_0 keeps the row kernels"),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! [`super::body`] compiled for AVX2, and the interleaved AVX-512 VNNI kernel for whole
    //! groups; handed out by [`super::kernel`] only where the CPU has those features.
    use super::{GROUP, Q8K, QK_K, QuantType, Scratch, WideActs, each_row};
    use std::arch::x86_64::*;

    pub(super) fn v4(
        dtype: QuantType,
        rows: &[&[u8]],
        scratch: &mut Scratch,
        q8: &[Vec<Q8K>],
        wide: &WideActs,
        out: &mut [f32],
    ) {
        // SAFETY: chosen only where the CPU has these features (`kernel`).
        unsafe { v4_rows(dtype, rows, scratch, q8, wide, out) }
    }

    /// Blocks per column tile: the group's tile (16 rows × 512 values, 8 KiB, plus scales)
    /// stays in L1 while every activation row's tile streams past it.
    const TILE: usize = 2;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    fn v4_rows(
        dtype: QuantType,
        rows: &[&[u8]],
        scratch: &mut Scratch,
        q8: &[Vec<Q8K>],
        wide: &WideActs,
        out: &mut [f32],
    ) {
        if rows.len() < GROUP {
            return each_row(dtype, rows, scratch, wide, out);
        }
        let Scratch { group, partial, .. } = scratch;
        group.fill(dtype, rows);
        let m = q8.len();
        let blocks = q8.first().map_or(0, Vec::len);
        assert!(group.q.len() >= blocks * QK_K * GROUP && group.scale.len() >= blocks * 16);
        partial.clear();
        partial.resize(m, [0.0; GROUP]);
        for t in (0..blocks).step_by(TILE) {
            for (acts, part) in q8.iter().zip(partial.iter_mut()) {
                // SAFETY: 16 floats.
                let mut acc = unsafe { _mm512_loadu_ps(part.as_ptr()) };
                for b in t..(t + TILE).min(blocks) {
                    let a = &acts[b];
                    let da = _mm512_set1_ps(a.d);
                    for g in 0..16 {
                        let group_at = b * 16 + g;
                        let mut isum = _mm512_setzero_si512();
                        for quad in 0..4 {
                            let at = (group_at * 4 + quad) * GROUP * 4;
                            // SAFETY: `at + 64 ≤ q.len()` (asserted above); the activation
                            // bytes 16g + 4·quad.. + 4 are inside the block's 256.
                            let (w, x) = unsafe {
                                (
                                    _mm512_loadu_si512(group.q.as_ptr().add(at) as *const __m512i),
                                    _mm512_set1_epi32(
                                        (a.qs.as_ptr().add(16 * g + 4 * quad) as *const i32)
                                            .read_unaligned(),
                                    ),
                                )
                            };
                            isum = _mm512_dpbusd_epi32(isum, w, x);
                        }
                        // SAFETY: 16 floats each.
                        let (scale, offset) = unsafe {
                            (
                                _mm512_loadu_ps(group.scale[group_at].as_ptr()),
                                _mm512_loadu_ps(group.offset[group_at].as_ptr()),
                            )
                        };
                        let products = _mm512_mul_ps(_mm512_cvtepi32_ps(isum), da);
                        acc = _mm512_fmadd_ps(products, scale, acc);
                        let sum = _mm512_set1_ps(a.d * a.bsums[g] as f32);
                        acc = _mm512_fnmadd_ps(offset, sum, acc);
                    }
                }
                // SAFETY: 16 floats.
                unsafe { _mm512_storeu_ps(part.as_mut_ptr(), acc) };
            }
        }
        for (i, part) in partial.iter().enumerate() {
            for (r, &v) in part.iter().enumerate() {
                out[r * m + i] = v;
            }
        }
    }

    pub(super) fn v3(
        dtype: QuantType,
        rows: &[&[u8]],
        scratch: &mut Scratch,
        _q8: &[Vec<Q8K>],
        wide: &WideActs,
        out: &mut [f32],
    ) {
        #[target_feature(enable = "avx2,fma")]
        fn inner(
            dtype: QuantType,
            rows: &[&[u8]],
            scratch: &mut Scratch,
            wide: &WideActs,
            out: &mut [f32],
        ) {
            each_row(dtype, rows, scratch, wide, out)
        }
        // SAFETY: as `v4`.
        unsafe { inner(dtype, rows, scratch, wide, out) }
    }
}

/// Σ of 256 products. Integer sums may be reordered, so LLVM turns this reduction into
/// `vpmaddwd` (or `vpdpwssd`) over whole registers.
#[inline(always)]
fn dot256(w: &[i16], a: &[i16]) -> i32 {
    w[..QK_K]
        .iter()
        .zip(&a[..QK_K])
        .map(|(&x, &y)| x as i32 * y as i32)
        .sum()
}

#[inline(always)]
fn body(row: &WideRow, acts: &WideActs, out: &mut [f32]) {
    let blocks = acts.blocks;
    let width = blocks * QK_K;
    for (i, y) in out.iter_mut().enumerate().take(acts.rows()) {
        let aq = &acts.q[i * width..(i + 1) * width];
        let ad = &acts.d[i * blocks..(i + 1) * blocks];
        let asums = &acts.sums[i * blocks..(i + 1) * blocks];
        let mut sum = 0f32;
        for b in 0..blocks {
            let isum = dot256(&row.q[b * QK_K..], &aq[b * QK_K..]);
            let mins: f32 = (0..8).map(|j| row.mins[b][j] * asums[b][j]).sum();
            sum += ad[b] * row.d[b] * isum as f32 - mins;
        }
        *y = sum;
    }
}
