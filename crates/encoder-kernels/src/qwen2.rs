//! A Qwen2 or Mistral body as a bidirectional encoder (GTE-Qwen2 and Stella are Qwen2,
//! NV-Embed is Mistral), over unpadded rows, on the same linear layers and attention as
//! [`crate::bert`]. The two bodies differ only in the query/key/value biases (Qwen2 has them,
//! Mistral's are zero here). Per layer:
//!
//! ```text
//! qkv = RMS₁(x)·[Wq Wk Wv]ᵀ + b            grouped-query: fewer key/value heads
//! q, k ← RoPE(position in the row)        rotate-half, per head
//! x  += attention(qkv)·Woᵀ                every token of a row sees the whole row
//! x  += (SiLU(g) ⊙ u)·Wdᵀ,  [g | u] = RMS₂(x)·[Wg Wu]ᵀ
//! ```
//!
//! and a final RMS norm. The caller pools: [`Encoder::forward_last`] gives each row's last
//! token (GTE-Qwen2), [`Encoder::forward_tokens`] every token (mean or latent-attention
//! pooling).

use crate::attention::{ScoreBias, attention, embed_rows, last_tokens};
use crate::bert::{par_rows, with_helper};
use crate::buffer::zeros;
use crate::linear::Linear;
use crate::simd::{self, Activation};

/// One layer.
#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Vec<f32>,
    /// Query, key and value side by side: `heads·d + 2·kv_heads·d` outputs (zero biases for
    /// Mistral).
    pub qkv: Linear,
    /// Output projection (no bias).
    pub out: Linear,
    pub ffn_norm: Vec<f32>,
    /// Gate and up projections side by side (`[gate | up]`, no bias).
    pub gate_up: Linear,
    /// Down projection (no bias).
    pub down: Linear,
}

/// The encoder.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Width of one head (`hidden / heads` in Qwen2; Mistral's config may set it apart).
    pub head_dim: usize,
    pub eps: f32,
    /// `[vocab, hidden]`.
    pub tokens: Vec<f32>,
    pub layers: Vec<Layer>,
    pub final_norm: Vec<f32>,
    /// RoPE cosines and sines, `[positions, head_dim / 2]` each.
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl Encoder {
    /// RoPE tables for `positions` positions of heads `head_dim` wide, base `theta`.
    pub fn rope_tables(positions: usize, head_dim: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
        let half = head_dim / 2;
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for p in 0..positions {
            for i in 0..half {
                let angle = p as f64 * theta.powf(-((2 * i) as f64) / head_dim as f64);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        (cos, sin)
    }

    /// Most tokens per row (the RoPE tables' length).
    pub fn max_positions(&self) -> usize {
        self.cos.len() / (self.head_dim / 2).max(1)
    }

    /// Bytes of weights held.
    pub fn bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.qkv.bytes()
                    + l.out.bytes()
                    + l.gate_up.bytes()
                    + l.down.bytes()
                    + (l.attn_norm.len() + l.ffn_norm.len()) * 4
            })
            .sum();
        layers + (self.tokens.len() + self.final_norm.len() + self.cos.len() + self.sin.len()) * 4
    }

    /// The final-normed hidden state of each row's last token, `[rows, hidden]`.
    ///
    /// # Panics
    /// If a row is empty or longer than [`max_positions`](Self::max_positions), or an id is
    /// outside the vocabulary.
    pub fn forward_last(&self, rows: &[&[u32]]) -> Vec<f32> {
        with_helper(|| {
            let (x, spans) = self.body(rows);
            let last = last_tokens(&x, self.hidden, &spans);
            let mut out = vec![0f32; last.len()];
            simd::rms_norm(&last, &self.final_norm, self.eps, &mut out);
            out
        })
    }

    /// The final-normed hidden state of every token, rows end to end (`[T, hidden]`), and
    /// each row's `(start, len)` in tokens.
    ///
    /// # Panics
    /// As [`forward_last`](Self::forward_last).
    pub fn forward_tokens(&self, rows: &[&[u32]]) -> (Vec<f32>, Vec<(usize, usize)>) {
        with_helper(|| {
            let (x, spans) = self.body(rows);
            let mut out = vec![0f32; x.len()];
            rms_into(&x, &self.final_norm, self.eps, &mut out);
            (out, spans)
        })
    }

    /// The hidden states after the last layer, before the final norm.
    fn body(&self, rows: &[&[u32]]) -> (Vec<f32>, Vec<(usize, usize)>) {
        let h = self.hidden;
        let d = self.head_dim;
        let (mut x, spans) = embed_rows(&self.tokens, h, rows, self.max_positions());
        let t = x.len() / h;
        let width = (self.heads + 2 * self.kv_heads) * d;
        let inter = self.layers.first().map_or(0, |l| l.gate_up.outputs() / 2);
        // The position of each token in its row, for RoPE.
        let positions: Vec<usize> = spans.iter().flat_map(|&(_, len)| 0..len).collect();
        let (mut normed, mut qkv, mut ctx, mut proj, mut wide, mut gated) = (
            zeros(t * h),
            zeros(t * width),
            zeros(t * self.heads * d),
            zeros(t * h),
            zeros(t * 2 * inter),
            zeros(t * inter),
        );
        let half = d / 2;
        for l in &self.layers {
            rms_into(&x, &l.attn_norm, self.eps, &mut normed);
            l.qkv.matmul(&normed, t, &mut qkv);
            let rotated = self.heads + self.kv_heads;
            par_rows(&mut qkv, width, &|b, r0| {
                simd::bias_act(b, l.qkv.bias(), None);
                for (i, token) in b.chunks_exact_mut(width).enumerate() {
                    let p = positions[r0 + i];
                    let (cos, sin) = (
                        &self.cos[p * half..(p + 1) * half],
                        &self.sin[p * half..(p + 1) * half],
                    );
                    for head in token[..rotated * d].chunks_exact_mut(d) {
                        simd::rope(head, cos, sin);
                    }
                }
            });
            attention(
                &qkv,
                &spans,
                (self.heads, self.kv_heads),
                ScoreBias::None,
                &mut ctx,
            );
            l.out.matmul(&ctx, t, &mut proj);
            add_into(&mut x, &proj);

            rms_into(&x, &l.ffn_norm, self.eps, &mut normed);
            l.gate_up.matmul(&normed, t, &mut wide);
            let wide = &wide;
            par_rows(&mut gated, inter, &|b, r0| {
                let up = &wide[r0 * 2 * inter..r0 * 2 * inter + b.len() * 2];
                simd::gated_act(up, l.gate_up.bias(), b, Activation::Silu)
            });
            l.down.matmul(&gated, t, &mut proj);
            add_into(&mut x, &proj);
        }
        (x, spans)
    }
}

/// `out = RMS(x)·weight` row by row.
fn rms_into(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let w = weight.len();
    par_rows(out, w, &|b, r0| {
        simd::rms_norm(&x[r0 * w..r0 * w + b.len()], weight, eps, b)
    });
}

/// `x += y`.
fn add_into(x: &mut [f32], y: &[f32]) {
    let w = 1024.min(x.len().max(1));
    par_rows(x, w, &|b, r0| {
        simd::add_assign(b, &y[r0 * w..r0 * w + b.len()])
    });
}
