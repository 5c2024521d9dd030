//! The multi-row path (prefill): weights widened to 16 bits with their sub-block scales
//! folded in, one row at a time, then dotted against every activation row.
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

/// Weight rows widened together by [`rows_times_acts`]: each activation block is loaded once
/// for this many rows.
pub const GROUP: usize = 4;

/// `out[r · m + i] = rows[r] · acts[i]` for up to [`GROUP`] weight rows (blocks of `dtype`,
/// which [`covers`]) and every activation row `i` of the `m`; `scratch` holds them widened.
pub fn rows_times_acts(
    dtype: QuantType,
    rows: &[&[u8]],
    scratch: &mut [WideRow; GROUP],
    acts: &WideActs,
    out: &mut [f32],
) {
    assert!(rows.len() <= GROUP, "at most {GROUP} rows at a time");
    assert_eq!(out.len(), rows.len() * acts.rows(), "output is rows × m");
    kernel()(dtype, rows, scratch, acts, out)
}

type RowsFn = fn(QuantType, &[&[u8]], &mut [WideRow; GROUP], &WideActs, &mut [f32]);

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

#[inline(always)]
fn each_row(
    dtype: QuantType,
    rows: &[&[u8]],
    scratch: &mut [WideRow; GROUP],
    acts: &WideActs,
    out: &mut [f32],
) {
    let m = acts.rows();
    for ((bytes, row), out) in rows
        .iter()
        .zip(scratch.iter_mut())
        .zip(out.chunks_exact_mut(m))
    {
        row.fill(dtype, bytes);
        body(row, acts, out);
    }
}

fn portable(
    dtype: QuantType,
    rows: &[&[u8]],
    scratch: &mut [WideRow; GROUP],
    acts: &WideActs,
    out: &mut [f32],
) {
    each_row(dtype, rows, scratch, acts, out)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! [`super::body`] compiled for AVX2, and an AVX-512 VNNI kernel for whole groups;
    //! handed out by [`super::kernel`] only where the CPU has those features.
    use super::{GROUP, QK_K, QuantType, WideActs, WideRow, each_row};
    use std::arch::x86_64::*;

    pub(super) fn v4(
        dtype: QuantType,
        rows: &[&[u8]],
        scratch: &mut [WideRow; GROUP],
        acts: &WideActs,
        out: &mut [f32],
    ) {
        // SAFETY: chosen only where the CPU has these features (`kernel`).
        unsafe { v4_rows(dtype, rows, scratch, acts, out) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    fn v4_rows(
        dtype: QuantType,
        rows: &[&[u8]],
        scratch: &mut [WideRow; GROUP],
        acts: &WideActs,
        out: &mut [f32],
    ) {
        if rows.len() < GROUP {
            return each_row(dtype, rows, scratch, acts, out);
        }
        for (bytes, row) in rows.iter().zip(scratch.iter_mut()) {
            row.fill(dtype, bytes);
        }
        let blocks = acts.blocks;
        let width = blocks * QK_K;
        for row in scratch.iter() {
            assert!(row.q.len() >= width && row.d.len() >= blocks && row.mins.len() >= blocks);
        }
        let m = acts.rows();
        out.fill(0.0);
        // Columns in tiles of TILE blocks: the four widened rows' tile (16 KiB) stays in L1
        // while every activation row's tile (4 KiB) streams past it.
        const TILE: usize = 8;
        for t in (0..blocks).step_by(TILE) {
            let tile = t..(t + TILE).min(blocks);
            for i in 0..m {
                let aq = &acts.q[i * width..(i + 1) * width];
                let ad = &acts.d[i * blocks..(i + 1) * blocks];
                let asums = &acts.sums[i * blocks..(i + 1) * blocks];
                let mut acc = [_mm512_setzero_ps(); GROUP];
                let mut mins = [_mm256_setzero_ps(); GROUP];
                for b in tile.clone() {
                    let mut isum = [_mm512_setzero_si512(); GROUP];
                    for k in 0..QK_K / 32 {
                        let at = b * QK_K + 32 * k;
                        // SAFETY: `at + 32 ≤ width` (slice length) for the activations and
                        // every widened row (asserted above).
                        let a =
                            unsafe { _mm512_loadu_si512(aq.as_ptr().add(at) as *const __m512i) };
                        for r in 0..GROUP {
                            let w = unsafe {
                                _mm512_loadu_si512(scratch[r].q.as_ptr().add(at) as *const __m512i)
                            };
                            isum[r] = _mm512_dpwssd_epi32(isum[r], w, a);
                        }
                    }
                    // SAFETY: 8 floats each.
                    let s = unsafe { _mm256_loadu_ps(asums[b].as_ptr()) };
                    for r in 0..GROUP {
                        let scale = _mm512_set1_ps(ad[b] * scratch[r].d[b]);
                        acc[r] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum[r]), acc[r]);
                        let mn = unsafe { _mm256_loadu_ps(scratch[r].mins[b].as_ptr()) };
                        mins[r] = _mm256_fmadd_ps(mn, s, mins[r]);
                    }
                }
                for r in 0..GROUP {
                    let mut lanes = [0f32; 8];
                    // SAFETY: 8 floats.
                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), mins[r]) };
                    out[r * m + i] += _mm512_reduce_add_ps(acc[r]) - lanes.iter().sum::<f32>();
                }
            }
        }
    }

    pub(super) fn v3(
        dtype: QuantType,
        rows: &[&[u8]],
        scratch: &mut [WideRow; GROUP],
        acts: &WideActs,
        out: &mut [f32],
    ) {
        #[target_feature(enable = "avx2,fma")]
        fn inner(
            dtype: QuantType,
            rows: &[&[u8]],
            scratch: &mut [WideRow; GROUP],
            acts: &WideActs,
            out: &mut [f32],
        ) {
            each_row(dtype, rows, scratch, acts, out)
        }
        // SAFETY: as `v4`.
        unsafe { inner(dtype, rows, scratch, acts, out) }
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
