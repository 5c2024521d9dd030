//! Decoding-step attention straight over an F16 key/value cache.
//!
//! A decoding step has one (or a few) query rows per head and hundreds to thousands of cached
//! tokens. Going through general matmuls costs more than the arithmetic: the F16 cache is
//! widened into fresh F32 tensors, and each layer runs two small batched matmuls, a mask and a
//! softmax as separate passes. Here each key/value head is done in one pass by one thread:
//! its keys and values are widened into a per-thread buffer that is reused (F16C through
//! `half` where the CPU has it), then every query row that shares the head (grouped-query
//! attention) gets its scores, softmax and weighted sum of values while that buffer is in
//! cache.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// One layer's cached keys and values, and the query rows to attend with.
///
/// Layout (the cache's own): head `g`'s `tokens` keys start at `g * head_stride` in `keys`,
/// one row of `dim` values per token; the same for `values`. Queries are `heads × rows × dim`
/// (head-major; query head `h` uses key/value head `h / (heads / kv_heads)`), and query row
/// `t` sees the first `tokens - rows + t + 1` tokens (causal: the rows are the newest
/// `rows` tokens).
pub struct CachedHeads<'a> {
    /// Cached keys.
    pub keys: &'a [f16],
    /// Cached values.
    pub values: &'a [f16],
    /// Elements from one key/value head's first token to the next head's.
    pub head_stride: usize,
    /// Tokens in the cache, the new ones included.
    pub tokens: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Values per head and token.
    pub dim: usize,
}

/// Softmax attention of `queries` (`heads × rows × dim`) over `cache`, scaled by `scale`;
/// returns `rows × heads × dim` (token-major, ready for the output projection).
///
/// # Panics
/// When the slices do not hold the shapes described on [`CachedHeads`], or `heads` is not a
/// multiple of `kv_heads`.
pub fn attend(cache: &CachedHeads<'_>, queries: &[f32], heads: usize, scale: f32) -> Vec<f32> {
    let CachedHeads {
        head_stride,
        tokens,
        kv_heads,
        dim,
        ..
    } = *cache;
    assert!(
        kv_heads > 0 && heads.is_multiple_of(kv_heads),
        "{heads} query heads over {kv_heads} key/value heads"
    );
    assert_eq!(
        queries.len() % (heads * dim),
        0,
        "queries are heads × rows × dim"
    );
    let rows = queries.len() / (heads * dim);
    assert!(
        rows <= tokens,
        "{rows} new rows but {tokens} tokens in the cache"
    );
    let last = (kv_heads - 1) * head_stride + tokens * dim;
    assert!(
        cache.keys.len() >= last && cache.values.len() >= last,
        "cache shorter than its heads"
    );
    let group = heads / kv_heads;
    // Head-major (`heads × rows × dim`): each key/value head's query heads are one run.
    let mut by_head = vec![0f32; queries.len()];
    by_head
        .par_chunks_mut(group * rows * dim)
        .zip(queries.par_chunks(group * rows * dim))
        .enumerate()
        .for_each_init(Scratch::default, |scratch, (g, (out, q))| {
            let at = g * head_stride;
            scratch.attend_head(
                &cache.keys[at..at + tokens * dim],
                &cache.values[at..at + tokens * dim],
                q,
                Rows { rows, dim, scale },
                out,
            )
        });
    if rows == 1 {
        return by_head;
    }
    let mut out = vec![0f32; by_head.len()];
    for (i, row) in by_head.chunks_exact(dim).enumerate() {
        let (h, t) = (i / rows, i % rows);
        out[(t * heads + h) * dim..][..dim].copy_from_slice(row);
    }
    out
}

/// The query rows' shape: new rows per head, values per row, and the scores' scale.
#[derive(Clone, Copy)]
struct Rows {
    rows: usize,
    dim: usize,
    scale: f32,
}

/// A thread's widened keys and values and its scores, reused across heads and calls.
#[derive(Default)]
struct Scratch {
    keys: Vec<f32>,
    values: Vec<f32>,
    scores: Vec<f32>,
}

impl Scratch {
    /// The rows of `q` (query heads × `rows` × `dim`) over one key/value head's `keys` and
    /// `values` (`tokens × dim` each), into `out` (shaped as `q`).
    fn attend_head(
        &mut self,
        keys: &[f16],
        values: &[f16],
        q: &[f32],
        Rows { rows, dim, scale }: Rows,
        out: &mut [f32],
    ) {
        let tokens = keys.len() / dim;
        self.keys.resize(keys.len(), 0.0);
        self.values.resize(values.len(), 0.0);
        keys.convert_to_f32_slice(&mut self.keys);
        values.convert_to_f32_slice(&mut self.values);
        self.scores.resize(tokens, 0.0);
        for (i, (q, o)) in q
            .chunks_exact(dim)
            .zip(out.chunks_exact_mut(dim))
            .enumerate()
        {
            let visible = tokens - rows + i % rows + 1;
            let scores = &mut self.scores[..visible];
            for (s, k) in scores.iter_mut().zip(self.keys.chunks_exact(dim)) {
                *s = dot(q, k) * scale;
            }
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for (&p, v) in scores.iter().zip(self.values.chunks_exact(dim)) {
                axpy(p / sum, v, o);
            }
        }
    }
}

/// Lanes of the partial sums: enough independent chains for the vector units.
const LANES: usize = 16;

/// `Σ a·b`, in `LANES` partial sums so the compiler can keep them in vector registers.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out += p · v`.
#[inline]
fn axpy(p: f32, v: &[f32], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += p * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain f64 evaluation of the same formula, grouped heads and several rows.
    #[test]
    fn matches_the_formula() {
        let (heads, kv_heads, dim, tokens, rows, stride) = (6, 2, 20, 9, 3, 12 * 20);
        let mut x = 1u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        };
        let keys: Vec<f16> = (0..kv_heads * stride)
            .map(|_| f16::from_f32(next()))
            .collect();
        let values: Vec<f16> = (0..kv_heads * stride)
            .map(|_| f16::from_f32(next()))
            .collect();
        let q: Vec<f32> = (0..heads * rows * dim).map(|_| next()).collect();
        let cache = CachedHeads {
            keys: &keys,
            values: &values,
            head_stride: stride,
            tokens,
            kv_heads,
            dim,
        };
        let got = attend(&cache, &q, heads, 0.3);
        for h in 0..heads {
            let g = h / (heads / kv_heads);
            for t in 0..rows {
                let qr = &q[(h * rows + t) * dim..][..dim];
                let visible = tokens - rows + t + 1;
                let s: Vec<f64> = (0..visible)
                    .map(|j| {
                        (0..dim)
                            .map(|c| qr[c] as f64 * keys[g * stride + j * dim + c].to_f64())
                            .sum::<f64>()
                            * 0.3
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..dim {
                    let want: f64 = (0..visible)
                        .map(|j| e[j] / z * values[g * stride + j * dim + c].to_f64())
                        .sum();
                    let have = got[(t * heads + h) * dim + c] as f64;
                    assert!(
                        (want - have).abs() < 1e-4,
                        "head {h} row {t} col {c}: {have} vs {want}"
                    );
                }
            }
        }
    }
}
