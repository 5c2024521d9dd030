//! Scaled dot-product attention over unpadded rows, shared by the encoders, and the rows
//! themselves: laid end to end, and read back one token per row.

use rayon::prelude::*;

use crate::linear::SendPtr;
use crate::simd;

/// The embeddings of `rows`' tokens from `table` (`[vocab, hidden]`), rows end to end, and
/// each row's `(start, len)` in tokens.
///
/// # Panics
/// If a row is empty or longer than `max` tokens, or an id is outside the table.
pub fn embed_rows(
    table: &[f32],
    hidden: usize,
    rows: &[&[u32]],
    max: usize,
) -> (Vec<f32>, Vec<(usize, usize)>) {
    let vocab = table.len() / hidden;
    let total: usize = rows.iter().map(|r| r.len()).sum();
    let mut x = Vec::with_capacity(total * hidden);
    let mut spans = Vec::with_capacity(rows.len());
    for row in rows {
        assert!(
            !row.is_empty() && row.len() <= max,
            "a row of {} tokens; the encoder takes 1 to {max}",
            row.len()
        );
        spans.push((x.len() / hidden, row.len()));
        for &id in row.iter() {
            let id = id as usize;
            assert!(
                id < vocab,
                "token id {id} is outside the vocabulary of {vocab}"
            );
            x.extend_from_slice(&table[id * hidden..(id + 1) * hidden]);
        }
    }
    (x, spans)
}

/// The hidden state (`[T, hidden]`) of each row's last token, `[rows, hidden]`.
pub fn last_tokens(x: &[f32], hidden: usize, spans: &[(usize, usize)]) -> Vec<f32> {
    let mut last = Vec::with_capacity(spans.len() * hidden);
    for &(start, len) in spans {
        let r = start + len - 1;
        last.extend_from_slice(&x[r * hidden..(r + 1) * hidden]);
    }
    last
}

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
/// (row, head) pairs. Each token's row of `qkv` holds `heads` queries, then `kv_heads` keys
/// and `kv_heads` values, `d` wide each (biases added); query head `h` reads key/value head
/// `h / (heads / kv_heads)` (grouped-query attention; `kv_heads == heads` is plain multi-head).
/// The rows are `(start, len)` ranges of tokens; `ctx` receives `[T, heads · d]`.
pub fn attention(
    qkv: &[f32],
    rows: &[(usize, usize)],
    (heads, kv_heads): (usize, usize),
    bias: ScoreBias<'_>,
    ctx: &mut [f32],
) {
    let total: usize = rows.iter().map(|r| r.1).sum();
    if total == 0 {
        return;
    }
    assert!(
        kv_heads > 0 && heads.is_multiple_of(kv_heads),
        "{heads} heads over {kv_heads} key/value heads"
    );
    let h = ctx.len() / total;
    let d = h / heads;
    let width = (heads + 2 * kv_heads) * d;
    assert_eq!(
        qkv.len(),
        total * width,
        "qkv is not [T, (heads + 2·kv_heads)·d]"
    );
    let group = heads / kv_heads;
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
            let row0 = start * width;
            let kv = head / group;
            let q = qkv[row0 + head * d..].as_ptr();
            let k = qkv[row0 + (heads + kv) * d..].as_ptr();
            let v = qkv[row0 + (heads + kv_heads + kv) * d..].as_ptr();
            let stride = width as isize;
            // SAFETY: q, k and v address `len` rows of `d` values with row stride `width`
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
