//! Decoding steps: each weight row dotted with a few activation rows (one per sequence of a
//! batch) by the row kernels of [`dot`].
//!
//! * Rows are split into chunks between threads; each row is read from memory once and dotted
//!   with every input row while it is in L1, four at a time by the four-row kernel where the
//!   type has one (which unpacks each block once for the four).
//! * Rows wider than [`WIDE_ROW_BLOCKS`] are taken in tiles of [`TILE_BLOCKS`] blocks, and a
//!   batch visits a chunk tile by tile (every row's first tile, then every row's second…),
//!   so the input rows' tile stays in L1 instead of being read from L2 for every weight row.
//!   One input row visits each row's tiles in turn, as a stream.
//! * Each (input row, weight row) result is the same sum of the same tile results in the same
//!   order, whatever the number of input rows or the visiting order: batching never changes
//!   a sequence's numbers.
//! * Each kernel call requests the weights a fixed distance further along the visiting order
//!   (`ahead`, see [`dot::prefetch_share`]).

use rayon::prelude::*;

use crate::{Q8K, QMatrix, SendPtr, blocks, dot};

/// Rows of more blocks than this are dotted in tiles ([`TILE_BLOCKS`]). Four input rows of
/// 24 blocks take 34 KB of L1.
const WIDE_ROW_BLOCKS: usize = 24;

/// Blocks per tile of a wide row: four input rows' tiles take 22.5 KB of L1. On Phi-4's
/// 17,920-wide down projection, a batch of four ran at 2.3–2.5× the rate of one row
/// untiled (`qmatrix-speed`), against 2.9–3.1× on its 5,120-wide matrices.
const TILE_BLOCKS: usize = 16;

/// Bytes between the weights being dotted and the bytes its kernel requests, along the
/// visiting order. Measured on 1.2 GB of Phi-4-shaped Q4_K and Q6_K matrices
/// (`qmatrix-speed`, 2 threads): whole rows requested two rows ahead read 17.4 GB/s;
/// requests trickled out one or two 2,880-byte rows ahead, 20–23 GB/s, as fast as a plain
/// read of the same bytes. Without software prefetch, 14.2 GB/s.
const PREFETCH_DISTANCE: usize = 4096;

/// [`PREFETCH_DISTANCE`] when several input rows share each weight row (batched decoding):
/// each row then takes several times longer to compute, and requests further ahead keep
/// the memory system busy. `qmatrix-speed` puts 4 rows at 2.3–2.9× the rate of one with 4,
/// 8 or 16 KiB, within the noise of this shared machine; 8 KiB was best in a run under load.
const PREFETCH_DISTANCE_BATCH: usize = 8192;

/// `out[i * rows + r] = Σ_k acts[i][k] · W[r][k]` for every input row `i` and weight row `r`.
pub(crate) fn rows_times_acts(w: &QMatrix, acts: &[Vec<Q8K>], threads: usize, out: &SendPtr) {
    let m = acts.len();
    let dot = dot::kernel(w.dtype);
    let dot4 = dot::kernel4(w.dtype);
    let unit = w.dtype.row_bytes(blocks::QK_K);
    let row_blocks = w.cols / blocks::QK_K;
    let tile = if row_blocks > WIDE_ROW_BLOCKS {
        TILE_BLOCKS
    } else {
        row_blocks
    };
    let tiles = row_blocks.div_ceil(tile);
    let distance = if m == 1 {
        PREFETCH_DISTANCE
    } else {
        PREFETCH_DISTANCE_BATCH
    };
    // Visits between a piece of weights and the piece requested while it is computed.
    let lead = distance.div_ceil(tile * unit);
    // Enough chunks to balance the threads (a thread that takes the last one leaves the
    // others idle for up to a chunk; 64 rows of 5,120 are ~0.2 MB), each long enough to
    // amortise the hand-off.
    let chunk = (w.rows / (threads * 8)).clamp(1, 64);
    (0..w.rows.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let start = c * chunk;
        let n = chunk.min(w.rows - start);
        let stream = &w.data[start * w.row_bytes..(start + n) * w.row_bytes];
        // Weight row `r` (of the chunk), tile `t`: its bytes in `stream` and its blocks.
        let piece = |r: usize, t: usize| {
            let blocks = t * tile..((t + 1) * tile).min(row_blocks);
            let at = r * w.row_bytes;
            (
                &stream[at + blocks.start * unit..at + blocks.end * unit],
                blocks,
            )
        };
        // The visit `v` of the chunk: tile-major for a batch, row-major for one row.
        let visit = |v: usize| {
            if m == 1 {
                (v / tiles, v % tiles)
            } else {
                (v % n, v / n)
            }
        };
        let mut sums = vec![0f32; m * n];
        for v in 0..n * tiles {
            let (r, t) = visit(v);
            let (row, blocks) = piece(r, t);
            let ahead = if v + lead < n * tiles {
                let (r, t) = visit(v + lead);
                piece(r, t).0
            } else {
                &[][..]
            };
            // Only the first call for a piece requests its share.
            let ahead_for = |i: usize| if i == 0 { ahead } else { &[][..] };
            let sums = &mut sums[r * m..(r + 1) * m];
            let mut i = 0;
            if let Some(dot4) = dot4 {
                while i + 4 <= m {
                    let x: [&[Q8K]; 4] = std::array::from_fn(|k| &acts[i + k][blocks.clone()]);
                    for (s, v) in sums[i..i + 4].iter_mut().zip(dot4(row, x, ahead_for(i))) {
                        *s += v;
                    }
                    i += 4;
                }
            }
            for (k, (s, a)) in sums[i..].iter_mut().zip(&acts[i..]).enumerate() {
                *s += dot(row, &a[blocks.clone()], ahead_for(i + k));
            }
        }
        for (r, row_sums) in sums.chunks_exact(m).enumerate() {
            for (i, &v) in row_sums.iter().enumerate() {
                // SAFETY: `i * rows + start + r` is inside `out` (checked by the caller),
                // and each (i, r) is written by exactly one chunk, so no two threads touch
                // one element.
                unsafe { *out.0.add(i * w.rows + start + r) = v };
            }
        }
    });
}
