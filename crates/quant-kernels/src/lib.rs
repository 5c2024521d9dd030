//! CPU kernels of the GGUF decoders: quantized matrices multiplied straight from the file's
//! block layout, and decoding-step attention over an F16 KV cache.
//!
//! A [`QMatrix`] holds one weight matrix exactly as the GGUF file stores it: the same bytes,
//! once. candle's CPU path (0.11) builds a repacked copy of each Q4_K and multi-row Q6_K
//! matrix on first use and keeps it beside the original, which puts a Phi-4 Q4_K_M at twice
//! its file size; these kernels read the original blocks instead, so a model costs its file.
//!
//! * Activations are quantized once per call to 8-bit blocks of 256 ([`activations::Q8K`]),
//!   and every weight row is dotted against them in integer arithmetic, one superblock at a
//!   time ([`dot`]). The per-block scales and minimums are applied once per sub-block.
//! * Each dot product is picked at run time for the CPU at hand ([`dot::best_isa`]): Q4_K,
//!   Q5_K and Q6_K have hand-written AVX-512 VNNI kernels (64 values per instruction,
//!   `vpdpbusd` and `vpdpwssd` with the scales), Q4_K/Q5_K/Q6_K AVX2 ones, Q8_0 a plain loop
//!   compiled for AVX2; every type has a portable version.
//! * Output rows are split between threads ([`rayon`]). A few activation rows (decoding, or a
//!   batch of decoding steps) take the row kernels (`matvec`): each weight row is read once
//!   and dotted with every input row while it is in L1, four at a time where the type has a
//!   four-row kernel ([`dot::kernel4`]), and each row's result is bit for bit what it gets
//!   alone. Many rows (prefill) take [`expand`], which unpacks each weight once per call and,
//!   with AVX-512 VNNI, multiplies sixteen rows per instruction.
//! * [`QMatrix::dequantize_row`] expands one row, for embedding tables that stay quantized.
//! * [`attention::attend`] runs a decoding step's attention straight over an F16 KV cache.
//!
//! Types other than the four, and rows not a multiple of 256 wide, are not covered: callers
//! keep another path for them ([`QuantType::from_ggml`] says which).
//!
//! The workspace compiles this crate with optimisations in dev builds too, so the tests of the
//! crates above it stay fast.

// Block layouts are read by index (sub-block j, group g, lane l) as llama.cpp's format
// describes them; iterator chains over several parallel arrays would hide that.
#![allow(clippy::needless_range_loop)]

pub mod activations;
pub mod attention;
pub mod blocks;
pub mod dot;
pub mod expand;
mod matvec;

use rayon::prelude::*;

pub use activations::Q8K;
pub use blocks::QuantType;

/// Why a [`QMatrix`] could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QMatrixError {
    /// The row width is not a whole number of 256-element superblocks.
    #[error(
        "rows of {cols} elements are not a multiple of {} (the activation block)",
        blocks::QK_K
    )]
    RowWidth {
        /// The row width.
        cols: usize,
    },
    /// The byte count does not match the shape.
    #[error("{got} bytes for a {rows}×{cols} {dtype:?} matrix, which takes {want}")]
    Size {
        /// The type.
        dtype: QuantType,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Bytes given.
        got: usize,
        /// Bytes the shape takes.
        want: usize,
    },
}

/// A quantized matrix of `rows` × `cols` (one row per output), in GGUF block layout.
#[derive(Clone)]
pub struct QMatrix {
    dtype: QuantType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QMatrix")
            .field("dtype", &self.dtype)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl QMatrix {
    /// The matrix whose rows are `data` (GGUF blocks, row after row).
    pub fn new(
        dtype: QuantType,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> Result<Self, QMatrixError> {
        if !cols.is_multiple_of(blocks::QK_K) {
            return Err(QMatrixError::RowWidth { cols });
        }
        let row_bytes = dtype.row_bytes(cols);
        let want = row_bytes * rows;
        if data.len() != want {
            return Err(QMatrixError::Size {
                dtype,
                rows,
                cols,
                got: data.len(),
                want,
            });
        }
        Ok(QMatrix {
            dtype,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// The block type.
    pub fn dtype(&self) -> QuantType {
        self.dtype
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input width.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The bytes held (the same as in the file).
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The blocks of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Row `r` expanded to f32 into `out` (`cols` long).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.cols, "output row width");
        blocks::dequantize(self.dtype, self.row(r), out);
    }

    /// `out[i][j] = Σ_k x[i][k] · W[j][k]` for the `m` rows of `x` (`m × cols`, row-major);
    /// `out` is `m × rows`.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.cols, "input is not m × cols");
        assert_eq!(out.len(), m * self.rows, "output is not m × rows");
        let acts: Vec<Vec<Q8K>> = x
            .chunks_exact(self.cols)
            .map(activations::quantize)
            .collect();
        self.matmul_quantized(&acts, out);
    }

    /// [`matmul`](Self::matmul) with the activations already quantized (one entry per input
    /// row), for several matrices that share an input.
    pub fn matmul_quantized(&self, acts: &[Vec<Q8K>], out: &mut [f32]) {
        let m = acts.len();
        assert_eq!(out.len(), m * self.rows, "output is not m × rows");
        let threads = rayon::current_num_threads().max(1);
        let out_ptr = SendPtr(out.as_mut_ptr());
        if m >= expand::MIN_ROWS && expand::covers(self.dtype) {
            // Prefill: each weight row widened once, then dotted with every input row.
            let wide = expand::WideActs::new(acts);
            let group = expand::GROUP;
            let chunk = (self.rows / (threads * 4))
                .clamp(1, 64)
                .next_multiple_of(group);
            (0..self.rows.div_ceil(chunk))
                .into_par_iter()
                .for_each_init(
                    || (expand::Scratch::default(), vec![0f32; group * m]),
                    |(scratch, cols), c| {
                        let out_ptr = &out_ptr;
                        let end = ((c + 1) * chunk).min(self.rows);
                        for first in (c * chunk..end).step_by(group) {
                            let n = group.min(end - first);
                            let rows: Vec<&[u8]> =
                                (first..first + n).map(|r| self.row(r)).collect();
                            let cols = &mut cols[..n * m];
                            let call = expand::Rows {
                                dtype: self.dtype,
                                rows: &rows,
                                acts: &wide,
                            };
                            expand::rows_times_acts(&call, scratch, cols);
                            for (k, col) in cols.chunks_exact(m).enumerate() {
                                for (i, &v) in col.iter().enumerate() {
                                    // SAFETY: as below: (i, first + k) is written by this
                                    // chunk only.
                                    unsafe { *out_ptr.0.add(i * self.rows + first + k) = v };
                                }
                            }
                        }
                    },
                );
            return;
        }
        matvec::rows_times_acts(self, acts, threads, &out_ptr);
    }
}

pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: the pointer is only used for disjoint writes (see `matmul_quantized`).
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}
