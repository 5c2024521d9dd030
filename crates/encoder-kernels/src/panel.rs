//! The weight of a linear layer packed in column panels, and the matmul tiles that read it.
//!
//! A panel is [`WIDTH`] output columns of `Wᵀ` for every input, stored input by input:
//! `panel[p][i][j] = W[p·WIDTH + j][i]`. A tile of output rows × one panel then reads its
//! weights strictly in order (192 bytes per input, three whole cache lines), so the hardware
//! prefetcher streams a layer's weight from memory at full speed. The `[in, out]` row-major
//! layout this replaces jumped `4·out` bytes per input, across a page at every step for the
//! wider layers, which no prefetcher follows: a 15-token MiniLM query read its weights at
//! about 10 GB/s that way.
//!
//! On CPUs with AVX-512 a tile of up to [`TILE_ROWS`] rows × one panel keeps its 24 sums in
//! registers (8 rows × 3 vectors of 16) and broadcasts each input value from the activation
//! row straight into the FMA, so neither side is copied first. Elsewhere each panel goes
//! through [`gemm`] as an ordinary strided matrix.

/// Output columns per panel: three AVX-512 vectors.
pub const WIDTH: usize = 48;

/// Rows of a register tile: 8 × 3 accumulators leave room for the panel's three vectors.
pub const TILE_ROWS: usize = 8;

/// Inputs per slice of a panel that the tiles of a block of rows share (24 KB, half of L1).
const DEPTH: usize = 128;

/// Inputs per span over which a block of rows is multiplied by every panel (a multiple of
/// [`DEPTH`]), for layers more than [`WIDE`] inputs wide; narrower ones are one span. Spans
/// made Qwen2's 8960-wide down projection at 1024 rows 18 % faster, and CLIP's 768-wide
/// layers at 1600 rows 7 % slower.
const SPAN: usize = 512;

/// Input width above which a layer is multiplied in spans.
const WIDE: usize = 2048;

/// Activation values of a block of rows over one span (384 KB, a fifth of a 2 MB L2): every
/// panel passes over the block while it stays in L2, so the weight is read once per block.
/// Taller blocks (192 K and 288 K values) made MiniLM's and CLIP's layers 5–25 % slower, and
/// GTE-Qwen2-1.5B at 1024 rows no faster over repeated runs; nor did spans for its 1536-wide
/// layers, whose weights (up to 110 MB) are read from memory once per block.
const BLOCK: usize = 96 * 1024;

/// One cache line of floats; a `Vec` of them is 64-byte aligned, so every panel row of
/// [`WIDTH`] values is exactly three lines.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// `Wᵀ` of a `[out, in]` weight in column panels (zero past the last output).
#[derive(Debug, Clone)]
pub struct Panels {
    lines: Vec<Line>,
    inputs: usize,
    outputs: usize,
}

impl Panels {
    /// Packs `weight` (`[outputs, inputs]`, row-major, as checkpoints store it).
    pub fn pack(weight: &[f32], outputs: usize, inputs: usize) -> Self {
        assert_eq!(
            weight.len(),
            outputs * inputs,
            "weight is not [{outputs}, {inputs}]"
        );
        let count = outputs.div_ceil(WIDTH);
        let mut lines = crate::buffer::filled(count * inputs * WIDTH / 16, Line::default());
        let flat = lines_as_mut_floats(&mut lines);
        for o in 0..outputs {
            let (p, j) = (o / WIDTH, o % WIDTH);
            let panel = &mut flat[p * inputs * WIDTH..(p + 1) * inputs * WIDTH];
            for (i, &w) in weight[o * inputs..(o + 1) * inputs].iter().enumerate() {
                panel[i * WIDTH + j] = w;
            }
        }
        Panels {
            lines,
            inputs,
            outputs,
        }
    }

    /// Number of panels.
    pub fn count(&self) -> usize {
        self.outputs.div_ceil(WIDTH)
    }

    /// Bytes held (with the zero columns of the last panel).
    pub fn bytes(&self) -> usize {
        self.lines.len() * std::mem::size_of::<Line>()
    }

    fn panel(&self, p: usize) -> &[f32] {
        let size = self.inputs * WIDTH;
        &lines_as_floats(&self.lines)[p * size..(p + 1) * size]
    }

    /// `out[r0.., p·WIDTH..] = x[r0..r0+rows] · panel p` for the panels `panels`, `out` being
    /// `rows × outputs` from row `r0` (stride `outputs`). Single-threaded.
    ///
    /// # Safety
    /// `out` must address `rows` rows of stride `self.outputs`, and no other thread may write
    /// the columns of `panels` in them.
    pub(crate) unsafe fn multiply(
        &self,
        x: &[f32],
        rows: usize,
        panels: std::ops::Range<usize>,
        out: *mut f32,
    ) {
        debug_assert_eq!(x.len(), rows * self.inputs);
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            // SAFETY: the CPU has AVX-512F; the caller's contract on `out`.
            unsafe { self.multiply_avx512(x, rows, panels, out) };
            return;
        }
        for p in panels {
            let cols = (self.outputs - p * WIDTH).min(WIDTH);
            // SAFETY: `x` is `rows × inputs`, the panel `inputs × WIDTH` row-major, and `out`
            // at column p·WIDTH addresses `rows` rows of stride `outputs`, `cols` wide.
            unsafe {
                gemm::gemm(
                    rows,
                    cols,
                    self.inputs,
                    out.add(p * WIDTH),
                    1,
                    self.outputs as isize,
                    false,
                    x.as_ptr(),
                    1,
                    self.inputs as isize,
                    self.panel(p).as_ptr(),
                    1,
                    WIDTH as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
    }

    /// The AVX-512 path of [`multiply`](Self::multiply): rows in blocks whose activations
    /// stay in the L2 cache while every panel passes over them, each block in register tiles
    /// of up to [`TILE_ROWS`] rows.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn multiply_avx512(
        &self,
        x: &[f32],
        rows: usize,
        panels: std::ops::Range<usize>,
        out: *mut f32,
    ) {
        let k = self.inputs;
        // Wide inputs in spans of SPAN, so that a block of rows is not 8 rows tall for an
        // 8960-wide input; the rows in blocks of BLOCK values.
        let span = if k > WIDE { SPAN } else { k };
        for s0 in (0..k).step_by(span) {
            let s1 = (s0 + span).min(k);
            let block = (BLOCK / (s1 - s0)).max(1).next_multiple_of(TILE_ROWS);
            for r0 in (0..rows).step_by(block) {
                let r1 = (r0 + block).min(rows);
                // SAFETY: the caller's contract on `out`; AVX-512F as for this function.
                unsafe { self.block_avx512(x, (r0, r1), (s0, s1), panels.clone(), out) };
            }
        }
    }

    /// Rows `r0..r1` × inputs `s0..s1` of the AVX-512 path, panel by panel.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block_avx512(
        &self,
        x: &[f32],
        (r0, r1): (usize, usize),
        (s0, s1): (usize, usize),
        panels: std::ops::Range<usize>,
        out: *mut f32,
    ) {
        let (k, ldc) = (self.inputs, self.outputs);
        for p in panels {
            let cols = (self.outputs - p * WIDTH).min(WIDTH);
            let panel = self.panel(p).as_ptr();
            // A slice of DEPTH inputs of the panel (24 KB) stays in L1 while every tile
            // of the block passes over it; the tiles add up the slices in `out`.
            for k0 in (s0..s1).step_by(DEPTH) {
                let depth = (s1 - k0).min(DEPTH);
                // The weight read after this slice: the rest of this panel, or the next
                // panel's part of the span (past the last panel: a hint that is dropped).
                let next = if k0 + depth < s1 {
                    panel.wrapping_add((k0 + depth) * WIDTH)
                } else {
                    lines_as_floats(&self.lines)
                        .as_ptr()
                        .wrapping_add(((p + 1) * k + s0) * WIDTH)
                };
                for (j, t) in (r0..r1).step_by(TILE_ROWS).enumerate() {
                    // The first tile streams the slice into L1. While the next ones work from
                    // L1, the 2nd, 3rd and 4th bring the next slice (three lines per input)
                    // into L2, one line per input each, so that the first tile of the next
                    // slice does not wait on memory. This made the weights that do not stay in
                    // L3 (GTE-Qwen2's 110 MB gate/up projection) 10–15 % faster on one thread.
                    let prefetch = (1..=3)
                        .contains(&j)
                        .then(|| next.wrapping_add((j - 1) * depth * 16));
                    // SAFETY: rows t..t+n and inputs k0..k0+depth of `x` are in range, as
                    // are the slice's panel rows; `out` at (t, p·WIDTH) addresses `n`
                    // rows of stride `outputs`, `cols` wide (the caller's contract).
                    unsafe {
                        let tile = x86::Tile {
                            depth,
                            a: x.as_ptr().add(t * k + k0),
                            lda: k,
                            w: panel.add(k0 * WIDTH),
                            c: out.add(t * ldc + p * WIDTH),
                            ldc,
                            cols,
                            add: k0 > 0,
                            next: prefetch.unwrap_or(std::ptr::null()),
                        };
                        match prefetch {
                            Some(_) => tile.run_rows::<true>(r1 - t),
                            None => tile.run_rows::<false>(r1 - t),
                        }
                    }
                }
            }
        }
    }
}

/// Whether the AVX-512 tiles can run here (`is_x86_feature_detected!` caches its answer).
#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

fn lines_as_floats(lines: &[Line]) -> &[f32] {
    // SAFETY: `Line` is `repr(C)` around 16 `f32`s with no padding (64 bytes, align 64).
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), lines.len() * 16) }
}

fn lines_as_mut_floats(lines: &mut [Line]) -> &mut [f32] {
    // SAFETY: as in `lines_as_floats`.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 16) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::WIDTH;

    /// Inputs ahead whose panel lines a tile requests while it works on the current one.
    const AHEAD: usize = 16;

    /// One register tile's job: `c[0..M][0..cols] (+)= a[0..M] · w` over `depth` inputs. `a`
    /// is `M` activation rows of stride `lda`, `w` `depth` rows of a panel, `c` rows of
    /// stride `ldc`; with `add` the products are added to what `c` holds.
    pub(super) struct Tile {
        pub depth: usize,
        pub a: *const f32,
        pub lda: usize,
        pub w: *const f32,
        pub c: *mut f32,
        pub ldc: usize,
        pub cols: usize,
        pub add: bool,
        /// With `FAR`: lines to bring into L2, one per input (the next slice of weight), in
        /// place of the lines of this slice ahead.
        pub next: *const f32,
    }

    impl Tile {
        /// [`run`](Self::run) for `rows` rows (at most [`super::TILE_ROWS`]).
        ///
        /// # Safety
        /// As for `run`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn run_rows<const FAR: bool>(&self, rows: usize) {
            // SAFETY: the caller's contract.
            unsafe {
                match rows.min(super::TILE_ROWS) {
                    8 => self.run::<8, FAR>(),
                    7 => self.run::<7, FAR>(),
                    6 => self.run::<6, FAR>(),
                    5 => self.run::<5, FAR>(),
                    4 => self.run::<4, FAR>(),
                    3 => self.run::<3, FAR>(),
                    2 => self.run::<2, FAR>(),
                    _ => self.run::<1, FAR>(),
                }
            }
        }

        /// The sums stay in registers for the whole pass; each activation value is broadcast
        /// from memory into its FMAs. With `FAR` the tile brings `next` into L2 as it goes,
        /// without, the lines of its own slice [`AHEAD`] inputs ahead into L1.
        ///
        /// # Safety
        /// AVX-512F; the pointers address what [`Tile`] describes.
        #[inline]
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn run<const M: usize, const FAR: bool>(&self) {
            let masks: [__mmask16; 3] = std::array::from_fn(|j| {
                let from = j * 16;
                match self.cols.saturating_sub(from) {
                    0 => 0,
                    n if n >= 16 => 0xffff,
                    n => (1 << n) - 1,
                }
            });
            let mut acc = [[_mm512_setzero_ps(); 3]; M];
            if self.add {
                for (r, sums) in acc.iter_mut().enumerate() {
                    for (j, s) in sums.iter_mut().enumerate() {
                        // SAFETY: masked to the columns of row r below `cols`.
                        *s = unsafe {
                            _mm512_maskz_loadu_ps(masks[j], self.c.add(r * self.ldc + j * 16))
                        };
                    }
                }
            }
            for i in 0..self.depth {
                // SAFETY: i < depth: inside row r of `a` and row i of the panel; prefetches
                // past the end are hints and never fault.
                unsafe {
                    let wi = self.w.add(i * WIDTH);
                    if FAR {
                        let line = self.next.wrapping_add(i * 16).cast::<i8>();
                        _mm_prefetch::<_MM_HINT_T1>(line);
                    } else {
                        // The L1 prefetcher alone leaves this loop waiting on the panel's lines.
                        let ahead = wi.wrapping_add(AHEAD * WIDTH).cast::<i8>();
                        _mm_prefetch::<_MM_HINT_T0>(ahead);
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128));
                    }
                    let w0 = _mm512_load_ps(wi);
                    let w1 = _mm512_load_ps(wi.add(16));
                    let w2 = _mm512_load_ps(wi.add(32));
                    for (r, sums) in acc.iter_mut().enumerate() {
                        let v = _mm512_set1_ps(*self.a.add(r * self.lda + i));
                        sums[0] = _mm512_fmadd_ps(v, w0, sums[0]);
                        sums[1] = _mm512_fmadd_ps(v, w1, sums[1]);
                        sums[2] = _mm512_fmadd_ps(v, w2, sums[2]);
                    }
                }
            }
            for (r, sums) in acc.iter().enumerate() {
                for (j, &s) in sums.iter().enumerate() {
                    // SAFETY: masked to the columns of row r below `cols`.
                    unsafe {
                        _mm512_mask_storeu_ps(self.c.add(r * self.ldc + j * 16), masks[j], s)
                    };
                }
            }
        }
    }
}
