//! Scaled dot-product attention over unpadded rows, shared by the encoders.

use rayon::prelude::*;

use crate::linear::SendPtr;
use crate::simd;

/// What is added to the scores before the softmax.
#[derive(Debug, Clone, Copy)]
pub enum ScoreBias<'a> {
    /// Nothing: every token sees every token of its row.
    None,
    /// ALiBi: head `h` adds `slopes[h] · |i − j|` (JinaBERT).
    Alibi(&'a [f32]),
    /// Causal: token `i` sees tokens `0..=i` only (CLIP's text tower).
    Causal,
}

/// Scaled dot-product attention of every row with itself, head by head, in parallel over
/// (row, head) pairs. `qkv` is `[T, 3·hidden]` (biases added), the rows being `(start, len)`
/// ranges of it; `ctx` receives `[T, hidden]`.
pub fn attention(
    qkv: &[f32],
    rows: &[(usize, usize)],
    heads: usize,
    bias: ScoreBias<'_>,
    ctx: &mut [f32],
) {
    let total: usize = rows.iter().map(|r| r.1).sum();
    if total == 0 {
        return;
    }
    let h = ctx.len() / total;
    assert_eq!(qkv.len(), 3 * ctx.len(), "qkv is not [T, 3·hidden]");
    let d = h / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let tasks: Vec<(usize, usize, usize)> = rows
        .iter()
        .flat_map(|&(start, len)| (0..heads).map(move |head| (start, len, head)))
        .collect();
    let ctx_ptr = SendPtr(ctx.as_mut_ptr());
    tasks
        .par_iter()
        .for_each_init(Vec::new, |scores, &(start, len, head)| {
            let ctx_ptr = &ctx_ptr;
            scores.resize(len * len, 0.0);
            let q = qkv[start * 3 * h + head * d..].as_ptr();
            let k = qkv[start * 3 * h + h + head * d..].as_ptr();
            let v = qkv[start * 3 * h + 2 * h + head * d..].as_ptr();
            let stride = (3 * h) as isize;
            // SAFETY: q, k and v address `len` rows of `d` values with row stride 3·hidden
            // inside `qkv` (the row's tokens); `scores` is `len × len`. Each task writes only
            // its own row range × head columns of `ctx`, so writes never overlap.
            unsafe {
                // scores = scale · q kᵀ
                gemm::gemm(
                    len,
                    len,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    len as isize,
                    false,
                    q,
                    1,
                    stride,
                    k,
                    stride,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                match bias {
                    ScoreBias::None => {}
                    ScoreBias::Alibi(slopes) => simd::add_alibi(scores, len, slopes[head]),
                    ScoreBias::Causal => simd::mask_future(scores, len),
                }
                simd::softmax_rows(scores, len);
                // ctx[rows, head] = scores · v
                gemm::gemm(
                    len,
                    d,
                    len,
                    ctx_ptr.0.add(start * h + head * d),
                    1,
                    h as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    len as isize,
                    v,
                    1,
                    stride,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
}
