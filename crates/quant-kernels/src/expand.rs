//! The multi-row path (prefill): weights unpacked once per call and dotted against every
//! activation row (`m ≥` [`MIN_ROWS`] rows share each weight, so unpacking once pays).
//!
//! Every block is first [`Unpacked`] into unsigned values with an integer sub-scale, the block
//! scale and an offset per 16 values (Q4_K/Q5_K minimums; Q6_K's −32).
//!
//! * With AVX-512 VNNI, sixteen weight rows are interleaved four values at a time (one row per
//!   32-bit lane), so each `vpdpbusd` adds four products to all sixteen rows; scales and
//!   offsets are applied per 16 values in f32, and the columns are walked in L1-sized tiles.
//! * Elsewhere, and for the rows left over, each weight becomes `q · sub-scale` as i16
//!   (≤ 63 · 128) and the inner loop is a plain i16 × i16 → i32 sum over 256 elements, which
//!   LLVM vectorises into `vpmaddwd` from the loop below compiled for each instruction set.
//!   Sums stay exact: 256 · 8064 · 127 < 2³¹.
//!
//! Q8_0 has a scale per 32 weights and keeps the row-at-a-time kernels.

use std::sync::OnceLock;

use crate::activations::Q8K;
use crate::blocks::{QK_K, QuantType, f16_at, scales_mins};

/// Activation rows from which a matmul takes this path. Measured on Phi-4's 5120 × 35840
/// Q4_K and 17920 × 5120 Q6_K matrices (2 threads, AVX-512): at 16 rows the row kernels are
/// still 10 % faster, at 64 this path is 1.6–1.8× faster, at 512 about 2×.
pub const MIN_ROWS: usize = 32;

/// Whether `dtype` has this path.
pub fn covers(dtype: QuantType) -> bool {
    dtype != QuantType::Q8_0
}

/// The activation rows of a call, with what the kernels derive from them once: the sums of
/// each block's sixteen groups of 16 times its scale (for the weights' offsets), and the
/// values widened to i16, made on first use (only the i16 path reads them).
pub struct WideActs<'a> {
    q8: &'a [Vec<Q8K>],
    blocks: usize,
    sums: Vec<[f32; 16]>,
    q: OnceLock<Vec<i16>>,
}

impl<'a> WideActs<'a> {
    /// `acts`: one entry per input row, all of the same width.
    pub fn new(acts: &'a [Vec<Q8K>]) -> Self {
        WideActs {
            q8: acts,
            blocks: acts.first().map_or(0, Vec::len),
            sums: acts
                .iter()
                .flatten()
                .map(|b| std::array::from_fn(|g| b.d * b.bsums[g] as f32))
                .collect(),
            q: OnceLock::new(),
        }
    }

    fn rows(&self) -> usize {
        self.q8.len()
    }

    /// Every row's values as i16, row after row.
    fn widened(&self) -> &[i16] {
        self.q.get_or_init(|| {
            self.q8
                .iter()
                .flatten()
                .flat_map(|b| b.qs.iter().map(|&v| v as i16))
                .collect()
        })
    }
}

/// One weight row widened: `q · sub-scale` per weight (unsigned q, integer sub-scale; at most
/// 63 · 127), the block scale `d`, and the offset of each group of 16.
#[derive(Default)]
pub struct WideRow {
    q: Vec<i16>,
    d: Vec<f32>,
    offsets: Vec<[f32; 16]>,
}

impl WideRow {
    /// Widens `row` (blocks of `dtype`, which [`covers`]) into `self`.
    #[inline(always)]
    pub fn fill(&mut self, dtype: QuantType, row: &[u8]) {
        let blocks = row.len() / dtype.block_bytes();
        self.q.resize(blocks * QK_K, 0);
        self.d.clear();
        self.offsets.clear();
        let mut u = Unpacked::default();
        for (b, q) in row
            .chunks_exact(dtype.block_bytes())
            .zip(self.q.chunks_exact_mut(QK_K))
        {
            u.unpack(dtype, b);
            for g in 0..16 {
                for l in 16 * g..16 * g + 16 {
                    q[l] = u.q[l] as i16 * u.sub_scale[g];
                }
            }
            self.d.push(u.d);
            self.offsets.push(u.offset);
        }
    }
}

/// One block of a type the path [`covers`], as `d · sub_scale[g] · q − offset[g]` for each
/// group `g` of 16 values, `q` unsigned (Q6_K before its −32, which moves into the offset).
struct Unpacked {
    q: [u8; QK_K],
    sub_scale: [i16; 16],
    d: f32,
    offset: [f32; 16],
}

impl Default for Unpacked {
    fn default() -> Self {
        Unpacked {
            q: [0; QK_K],
            sub_scale: [0; 16],
            d: 0.0,
            offset: [0.0; 16],
        }
    }
}

impl Unpacked {
    #[inline(always)]
    fn unpack(&mut self, dtype: QuantType, b: &[u8]) {
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
                        self.q[64 * j + l] = lo;
                        self.q[64 * j + 32 + l] = hi;
                    }
                }
                self.d = f16_at(b, 0);
                let dmin = f16_at(b, 2);
                for g in 0..16 {
                    self.sub_scale[g] = sc[g / 2] as i16;
                    self.offset[g] = dmin * mn[g / 2] as f32;
                }
            }
            QuantType::Q6K => {
                let sc = &b[192..208];
                for h in 0..2 {
                    let ql = &b[64 * h..64 * h + 64];
                    let qh = &b[128 + 32 * h..128 + 32 * h + 32];
                    // Group of 32 `g`: low 4 bits from ql[l + 32·(g & 1)] (low nibble for
                    // g < 2, high for g ≥ 2), high 2 bits from qh[l] >> 2g.
                    for g in 0..4 {
                        let (lo_at, shift) = (32 * (g & 1), 4 * (g >> 1));
                        for l in 0..32 {
                            self.q[128 * h + 32 * g + l] =
                                ((ql[lo_at + l] >> shift) & 0xF) | (((qh[l] >> (2 * g)) & 3) << 4);
                        }
                    }
                }
                self.d = f16_at(b, 208);
                for g in 0..16 {
                    self.sub_scale[g] = (sc[g] as i8) as i16;
                    self.offset[g] = 32.0 * self.d * self.sub_scale[g] as f32;
                }
            }
            QuantType::Q8_0 => unreachable!("Q8_0 keeps the row kernels"),
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

/// One call of [`rows_times_acts`]: up to [`GROUP`] weight rows (blocks of `dtype`, which
/// [`covers`]) and the activations.
pub struct Rows<'a> {
    /// The block type.
    pub dtype: QuantType,
    /// The weight rows' blocks.
    pub rows: &'a [&'a [u8]],
    /// The activation rows.
    pub acts: &'a WideActs<'a>,
}

/// `out[r · m + i] = rows[r] · acts[i]` for every weight row `r` of `call` and activation row
/// `i` of the `m`.
pub fn rows_times_acts(call: &Rows<'_>, scratch: &mut Scratch, out: &mut [f32]) {
    assert!(call.rows.len() <= GROUP, "at most {GROUP} rows at a time");
    assert_eq!(
        out.len(),
        call.rows.len() * call.acts.rows(),
        "output is rows × m"
    );
    kernel()(call, scratch, out)
}

type RowsFn = fn(&Rows<'_>, &mut Scratch, &mut [f32]);

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
    each_row
}

/// Each row widened to i16 and dotted with every activation row.
#[inline(always)]
fn each_row(call: &Rows<'_>, scratch: &mut Scratch, out: &mut [f32]) {
    let m = call.acts.rows();
    for (bytes, out) in call.rows.iter().zip(out.chunks_exact_mut(m)) {
        scratch.row.fill(call.dtype, bytes);
        body(&scratch.row, call.acts, out);
    }
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
        let mut u = Unpacked::default();
        for (r, row) in rows.iter().enumerate() {
            for (b, block) in row.chunks_exact(dtype.block_bytes()).enumerate() {
                u.unpack(dtype, block);
                for g in 0..16 {
                    let group = b * 16 + g;
                    self.scale[group][r] = u.d * u.sub_scale[g] as f32;
                    self.offset[group][r] = u.offset[g];
                    for quad in 0..4 {
                        let at = ((group * 4 + quad) * GROUP + r) * 4;
                        let from = 16 * g + 4 * quad;
                        self.q[at..at + 4].copy_from_slice(&u.q[from..from + 4]);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! [`super::body`] compiled for AVX2, and the interleaved AVX-512 VNNI kernel for whole
    //! groups; handed out by [`super::kernel`] only where the CPU has those features.
    use super::{GROUP, Interleaved, QK_K, Rows, Scratch, each_row};
    use crate::activations::Q8K;
    use std::arch::x86_64::*;

    pub(super) fn v4(call: &Rows<'_>, scratch: &mut Scratch, out: &mut [f32]) {
        // SAFETY: chosen only where the CPU has these features (`kernel`).
        unsafe { v4_rows(call, scratch, out) }
    }

    /// Blocks per column tile: the group's tile (16 rows × 512 values, 8 KiB, plus scales)
    /// stays in L1 while every activation row's tile streams past it.
    const TILE: usize = 2;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    fn v4_rows(call: &Rows<'_>, scratch: &mut Scratch, out: &mut [f32]) {
        if call.rows.len() < GROUP {
            return each_row(call, scratch, out);
        }
        let Scratch { group, partial, .. } = scratch;
        group.fill(call.dtype, call.rows);
        let (q8, blocks) = (call.acts.q8, call.acts.blocks);
        let m = q8.len();
        partial.clear();
        partial.resize(m, [0.0; GROUP]);
        for t in (0..blocks).step_by(TILE) {
            let tile = t..(t + TILE).min(blocks);
            // Eight activation rows at a time, then four, then one.
            let mut i = 0;
            while i < m {
                let n = match m - i {
                    8.. => 8,
                    4..=7 => 4,
                    _ => 1,
                };
                let rows = ActRows {
                    q8: &q8[i..i + n],
                    sums: &call.acts.sums[i * blocks..(i + n) * blocks],
                    blocks,
                };
                let part = &mut partial[i..i + n];
                match n {
                    8 => tile_rows::<8>(group, &rows, part, tile.clone()),
                    4 => tile_rows::<4>(group, &rows, part, tile.clone()),
                    _ => tile_rows::<1>(group, &rows, part, tile.clone()),
                }
                i += n;
            }
        }
        for (i, part) in partial.iter().enumerate() {
            for (r, &v) in part.iter().enumerate() {
                out[r * m + i] = v;
            }
        }
    }

    /// A few activation rows: their quantized blocks, and per block the sums of each 16
    /// values times the block's scale (`WideActs::sums`), `blocks` per row.
    struct ActRows<'a> {
        q8: &'a [Vec<Q8K>],
        sums: &'a [[f32; 16]],
        blocks: usize,
    }

    /// Adds the products of `group` with the `R` activation rows `acts` over the blocks of
    /// `tile` to the rows' partial sums `part` (one lane per weight row).
    ///
    /// Each 64-byte weight load feeds `R` `vpdpbusd`, into `R` independent sums. One row at a
    /// time waited on its single chain of dependent multiply-adds: on Phi-4's 35840 × 5120
    /// Q4_K matrix times 512 rows (`qmatrix-speed`, 2 threads), 5.1 ns per block and row
    /// pair with one row, 3.4 with four, 3.1 with eight; 2.9 with the activations' scale
    /// applied once per block instead of once per 16 values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    fn tile_rows<const R: usize>(
        group: &Interleaved,
        acts: &ActRows<'_>,
        part: &mut [[f32; GROUP]],
        tile: std::ops::Range<usize>,
    ) {
        assert!(acts.q8.len() == R && part.len() == R && acts.sums.len() == R * acts.blocks);
        assert!(group.q.len() >= tile.end * QK_K * GROUP && group.scale.len() >= tile.end * 16);
        assert!(tile.end <= acts.blocks);
        // SAFETY: 16 floats each.
        let mut acc: [__m512; R] =
            std::array::from_fn(|r| unsafe { _mm512_loadu_ps(part[r].as_ptr()) });
        for b in tile {
            let a: [&Q8K; R] = std::array::from_fn(|r| &acts.q8[r][b]);
            let sums: [&[f32; 16]; R] = std::array::from_fn(|r| &acts.sums[r * acts.blocks + b]);
            // Σ_g isum_g · scale_g over the block, times the activations' scale once at its end.
            let mut block = [_mm512_setzero_ps(); R];
            for g in 0..16 {
                let group_at = b * 16 + g;
                let mut isum = [_mm512_setzero_si512(); R];
                for quad in 0..4 {
                    let at = (group_at * 4 + quad) * GROUP * 4;
                    // SAFETY: `at + 64 ≤ q.len()` (asserted above).
                    let w =
                        unsafe { _mm512_loadu_si512(group.q.as_ptr().add(at) as *const __m512i) };
                    for r in 0..R {
                        // SAFETY: the activation bytes 16g + 4·quad.. + 4 are inside the
                        // block's 256.
                        let x = unsafe {
                            _mm512_set1_epi32(
                                (a[r].qs.as_ptr().add(16 * g + 4 * quad) as *const i32)
                                    .read_unaligned(),
                            )
                        };
                        isum[r] = _mm512_dpbusd_epi32(isum[r], w, x);
                    }
                }
                // SAFETY: 16 floats each.
                let (scale, offset) = unsafe {
                    (
                        _mm512_loadu_ps(group.scale[group_at].as_ptr()),
                        _mm512_loadu_ps(group.offset[group_at].as_ptr()),
                    )
                };
                for r in 0..R {
                    block[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r]), scale, block[r]);
                    acc[r] = _mm512_fnmadd_ps(offset, _mm512_set1_ps(sums[r][g]), acc[r]);
                }
            }
            for r in 0..R {
                acc[r] = _mm512_fmadd_ps(block[r], _mm512_set1_ps(a[r].d), acc[r]);
            }
        }
        for r in 0..R {
            // SAFETY: 16 floats.
            unsafe { _mm512_storeu_ps(part[r].as_mut_ptr(), acc[r]) };
        }
    }

    pub(super) fn v3(call: &Rows<'_>, scratch: &mut Scratch, out: &mut [f32]) {
        #[target_feature(enable = "avx2,fma")]
        fn inner(call: &Rows<'_>, scratch: &mut Scratch, out: &mut [f32]) {
            each_row(call, scratch, out)
        }
        // SAFETY: as `v4`.
        unsafe { inner(call, scratch, out) }
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
fn body(row: &WideRow, acts: &WideActs<'_>, out: &mut [f32]) {
    let blocks = acts.blocks;
    let width = blocks * QK_K;
    let widened = acts.widened();
    for (i, y) in out.iter_mut().enumerate().take(acts.rows()) {
        let aq = &widened[i * width..(i + 1) * width];
        let q8 = &acts.q8[i];
        let asums = &acts.sums[i * blocks..(i + 1) * blocks];
        let mut sum = 0f32;
        for b in 0..blocks {
            let isum = dot256(&row.q[b * QK_K..], &aq[b * QK_K..]);
            let offsets: f32 = (0..16).map(|g| row.offsets[b][g] * asums[b][g]).sum();
            sum += q8[b].d * row.d[b] * isum as f32 - offsets;
        }
        *y = sum;
    }
}
