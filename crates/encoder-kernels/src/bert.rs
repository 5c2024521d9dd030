//! The BERT encoder forward pass over unpadded rows, for BERT itself and for JinaBERT (ALiBi
//! attention bias instead of position embeddings, GEGLU feed-forward).
//!
//! The rows of a batch are laid end to end (`T` tokens in all, no padding): every linear layer
//! is one matmul over `[T, hidden]`, and attention runs per (row, head) on that row's own
//! tokens, so padding costs nothing and needs no mask. Per layer:
//!
//! ```text
//! qkv  = x·[Wq Wk Wv]ᵀ + b                   one matmul, bias in a pass
//! ctx  = softmax(q kᵀ/√d) v  per row, head    two small matmuls + softmax, rayon over pairs
//! x    = LN(ctx·Woᵀ + bo + x)                 matmul, then bias + residual + LN in one pass
//! h    = GELU(x·W1ᵀ + b1)                     matmul, then bias + GELU in one pass
//!        (GEGLU: GELU(gate) ⊙ value, the two halves of x·W1ᵀ, in one pass)
//! x    = LN(h·W2ᵀ + b2 + x)                   matmul, then bias + residual + LN in one pass
//! ```
//!
//! With ALiBi, each head's scores get `slope · |i − j|` (the slope is negative) before the
//! softmax, computed in place rather than read from a `heads × n²` table.

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::attention::{ScoreBias, attention};
use crate::buffer::zeros;
use crate::linear::Linear;
use crate::simd::{self, Activation};

/// A layer norm's parameters.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f32,
}

/// One encoder layer.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Query, key and value as one `[hidden, 3·hidden]` layer.
    pub qkv: Linear,
    /// Attention output projection.
    pub attn_out: Linear,
    pub attn_norm: LayerNorm,
    /// Feed-forward up projection (`intermediate.dense`; JinaBERT's `gated_layers`).
    pub up: Linear,
    /// Whether `up` gives a gate and a value side by side, `GELU(gate) ⊙ value` feeding `down`
    /// (GEGLU), rather than one activation.
    pub gated: bool,
    /// Feed-forward down projection (`output.dense`).
    pub down: Linear,
    pub ffn_norm: LayerNorm,
}

/// Embedding tables.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// `[vocab, hidden]`.
    pub words: Vec<f32>,
    /// How positions enter.
    pub positions: Positions,
    /// Row 0 of the token-type table (every input is segment 0).
    pub token_type: Vec<f32>,
    pub norm: LayerNorm,
}

/// How a token's position enters the encoder.
#[derive(Debug, Clone)]
pub enum Positions {
    /// Learned absolute embeddings, `[max_positions, hidden]`, added to the word embeddings.
    Learned(Vec<f32>),
    /// ALiBi: head `h`'s attention scores get `slopes[h] · |i − j|`; inputs up to `max` tokens.
    Alibi { slopes: Vec<f32>, max: usize },
}

impl Positions {
    /// ALiBi for `heads` heads, inputs up to `max` tokens, with the slopes of JinaBERT and
    /// candle-transformers' `jina_bert`: `−2^(−8k/n)` for `k = 1..=n`, `n` the next power of
    /// two, interleaved when `heads` is not one.
    pub fn alibi(heads: usize, max: usize) -> Self {
        let n = heads.next_power_of_two();
        let all: Vec<f32> = (1..=n)
            .map(|k| -1.0 / 2f32.powf((8 * k) as f32 / n as f32))
            .collect();
        let slopes = if n == heads {
            all
        } else {
            all.iter()
                .skip(1)
                .step_by(2)
                .chain(all.iter().step_by(2))
                .take(heads)
                .copied()
                .collect()
        };
        Positions::Alibi { slopes, max }
    }
}

/// A BERT encoder held as f32 buffers laid out for the kernels.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub hidden: usize,
    pub heads: usize,
    pub activation: Activation,
    pub embeddings: Embeddings,
    pub layers: Vec<Layer>,
}

/// Per-batch working buffers.
struct Scratch {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    proj: Vec<f32>,
    inter: Vec<f32>,
    /// GEGLU's product, `[T, intermediate]` (empty otherwise).
    gated: Vec<f32>,
}

impl Encoder {
    /// Bytes of weights held.
    pub fn bytes(&self) -> usize {
        let e = &self.embeddings;
        let ln = |n: &LayerNorm| (n.gamma.len() + n.beta.len()) * 4;
        let positions = match &e.positions {
            Positions::Learned(table) => table.len(),
            Positions::Alibi { slopes, .. } => slopes.len(),
        };
        let emb = (e.words.len() + positions + e.token_type.len()) * 4 + ln(&e.norm);
        emb + self
            .layers
            .iter()
            .map(|l| {
                l.qkv.bytes()
                    + l.attn_out.bytes()
                    + l.up.bytes()
                    + l.down.bytes()
                    + ln(&l.attn_norm)
                    + ln(&l.ffn_norm)
            })
            .sum::<usize>()
    }

    /// Most tokens per row.
    pub fn max_positions(&self) -> usize {
        match &self.embeddings.positions {
            Positions::Learned(table) => table.len() / self.hidden,
            Positions::Alibi { max, .. } => *max,
        }
    }

    /// Hidden states of every token, rows end to end: `[Σ len, hidden]`.
    ///
    /// # Panics
    /// If a row is longer than [`max_positions`](Self::max_positions) or an id is outside
    /// the vocabulary.
    pub fn forward(&self, rows: &[&[u32]]) -> Vec<f32> {
        with_helper(|| self.forward_here(rows))
    }

    fn forward_here(&self, rows: &[&[u32]]) -> Vec<f32> {
        let h = self.hidden;
        let total: usize = rows.iter().map(|r| r.len()).sum();
        let mut x = self.embed(rows);
        let inter_width = self.layers.first().map_or(0, |l| l.up.outputs());
        let gated = self.layers.first().is_some_and(|l| l.gated);
        let mut s = Scratch {
            qkv: zeros(total * 3 * h),
            ctx: zeros(total * h),
            proj: zeros(total * h),
            inter: zeros(total * inter_width),
            gated: zeros(if gated { total * inter_width / 2 } else { 0 }),
        };
        let mut starts = Vec::with_capacity(rows.len());
        let mut at = 0;
        for r in rows {
            starts.push((at, r.len()));
            at += r.len();
        }
        for layer in &self.layers {
            self.layer(layer, &mut x, &starts, &mut s);
        }
        x
    }

    /// Word + position + token-type embeddings, layer-normed.
    fn embed(&self, rows: &[&[u32]]) -> Vec<f32> {
        let h = self.hidden;
        let e = &self.embeddings;
        let vocab = e.words.len() / h;
        let total: usize = rows.iter().map(|r| r.len()).sum();
        let mut x = Vec::with_capacity(total * h);
        for row in rows {
            assert!(
                row.len() <= self.max_positions(),
                "a row of {} tokens is longer than the {} positions the encoder has",
                row.len(),
                self.max_positions()
            );
            for (p, &id) in row.iter().enumerate() {
                let id = id as usize;
                assert!(
                    id < vocab,
                    "token id {id} is outside the vocabulary of {vocab}"
                );
                x.extend_from_slice(&e.words[id * h..(id + 1) * h]);
                let start = x.len() - h;
                if let Positions::Learned(table) = &e.positions {
                    simd::add_assign(&mut x[start..], &table[p * h..(p + 1) * h]);
                }
                simd::add_assign(&mut x[start..], &e.token_type);
            }
        }
        let n = &e.norm;
        simd::add_layer_norm(&mut x, None, None, &n.gamma, &n.beta, n.eps);
        x
    }

    fn layer(&self, l: &Layer, x: &mut [f32], rows: &[(usize, usize)], s: &mut Scratch) {
        let h = self.hidden;
        let t = x.len() / h;

        l.qkv.matmul(x, t, &mut s.qkv);
        par_rows(&mut s.qkv, 3 * h, &|b, _| {
            simd::bias_act(b, l.qkv.bias(), None)
        });
        let bias = match &self.embeddings.positions {
            Positions::Alibi { slopes, .. } => ScoreBias::Alibi(slopes),
            Positions::Learned(_) => ScoreBias::None,
        };
        attention(&s.qkv, rows, (self.heads, self.heads), bias, &mut s.ctx);

        l.attn_out.matmul(&s.ctx, t, &mut s.proj);
        {
            let n = &l.attn_norm;
            let residual: &[f32] = x;
            par_rows(&mut s.proj, h, &|b, r0| {
                let res = &residual[r0 * h..r0 * h + b.len()];
                simd::add_layer_norm(
                    b,
                    Some(l.attn_out.bias()),
                    Some(res),
                    &n.gamma,
                    &n.beta,
                    n.eps,
                )
            });
        }
        x.copy_from_slice(&s.proj);

        l.up.matmul(x, t, &mut s.inter);
        let act = self.activation;
        let inter = if l.gated {
            let (width, inter) = (l.up.outputs(), &s.inter);
            par_rows(&mut s.gated, width / 2, &|b, r0| {
                let up = &inter[r0 * width..r0 * width + b.len() * 2];
                simd::gated_act(up, l.up.bias(), b, act)
            });
            &s.gated
        } else {
            par_rows(&mut s.inter, l.up.outputs(), &|b, _| {
                simd::bias_act(b, l.up.bias(), Some(act))
            });
            &s.inter
        };
        l.down.matmul(inter, t, &mut s.proj);
        {
            let n = &l.ffn_norm;
            let residual: &[f32] = x;
            par_rows(&mut s.proj, h, &|b, r0| {
                let res = &residual[r0 * h..r0 * h + b.len()];
                simd::add_layer_norm(b, Some(l.down.bias()), Some(res), &n.gamma, &n.beta, n.eps)
            });
        }
        x.copy_from_slice(&s.proj);
    }
}

/// Runs `f` over `buf` (rows of `width`) in blocks of rows, in parallel; `f` gets a block
/// and the index of its first row.
pub(crate) fn par_rows(buf: &mut [f32], width: usize, f: &(dyn Fn(&mut [f32], usize) + Sync)) {
    const BLOCK: usize = 64;
    buf.par_chunks_mut(BLOCK * width)
        .enumerate()
        .for_each(|(i, b)| f(b, i * BLOCK));
}

/// Runs `work` on one of rayon's threads while another stays awake for the whole of it,
/// taking the other half of every parallel step (`rayon::yield_now`) as soon as it appears.
///
/// A pass over a short text is a hundred parallel steps of tens of microseconds. Handed to
/// the pool one by one from a thread outside it, or left to rayon's idle threads, which go to
/// sleep between steps, every step waited for a wake-up: a fifth of the CPU time of a
/// 15-token query was in the scheduler.
pub(crate) fn with_helper<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if rayon::current_num_threads() < 2 {
        return work();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        s.spawn(|_| {
            while !done.load(Ordering::Acquire) {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::hint::spin_loop();
                }
            }
        });
        let out = work();
        done.store(true, Ordering::Release);
        out
    })
}

/// Mean of the rows `from..to` of `hidden` (`[T, width]`), appended to `out`.
pub fn mean_rows(hidden: &[f32], width: usize, from: usize, to: usize, out: &mut Vec<f32>) {
    let start = out.len();
    out.resize(start + width, 0.0);
    let acc = &mut out[start..];
    for r in from..to {
        simd::add_assign(acc, &hidden[r * width..(r + 1) * width]);
    }
    let n = (to - from).max(1) as f32;
    for v in acc.iter_mut() {
        *v /= n;
    }
}
