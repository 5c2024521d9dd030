//! CLIP's text and vision towers: pre-norm transformer layers over unpadded rows, on the same
//! linear layers, attention and fused passes as [`crate::bert`]. Per layer:
//!
//! ```text
//! qkv = LN₁(x)·[Wq Wk Wv]ᵀ + b          layer norm into a scratch row, one matmul
//! x  += attention(qkv)·Woᵀ + bo         causal in the text tower
//! x  += act(LN₂(x)·W1ᵀ + b1)·W2ᵀ + b2   quick_gelu
//! ```
//!
//! The text tower adds learned positions to the token embeddings and ends in a layer norm; the
//! vision tower turns each image into patch rows (the patch convolution is a matmul over
//! flattened patches), puts the class embedding first, adds positions and normalises before
//! the layers (`pre_layrnorm`), and after them normalises the class row (`post_layernorm`).

use crate::attention::{ScoreBias, attention, embed_rows, last_tokens};
use crate::bert::{LayerNorm, par_rows, with_helper};
use crate::buffer::zeros;
use crate::linear::Linear;
use crate::simd::{self, Activation};

/// One pre-norm layer.
#[derive(Debug, Clone)]
pub struct Layer {
    pub norm1: LayerNorm,
    /// Query, key and value as one `[hidden, 3·hidden]` layer.
    pub qkv: Linear,
    pub out: Linear,
    pub norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
}

/// The layers of a tower.
#[derive(Debug, Clone)]
pub struct Layers {
    pub hidden: usize,
    pub heads: usize,
    pub activation: Activation,
    pub layers: Vec<Layer>,
}

impl Layers {
    /// Runs every layer over `x` (`[T, hidden]`, the rows `(start, len)` end to end).
    fn forward(&self, x: &mut [f32], rows: &[(usize, usize)], bias: ScoreBias<'_>) {
        let h = self.hidden;
        let t = x.len() / h;
        let inter = self.layers.first().map_or(0, |l| l.fc1.outputs());
        let (mut normed, mut qkv, mut ctx, mut proj, mut wide) = (
            zeros(t * h),
            zeros(t * 3 * h),
            zeros(t * h),
            zeros(t * h),
            zeros(t * inter),
        );
        for l in &self.layers {
            norm_into(x, &l.norm1, &mut normed);
            l.qkv.matmul(&normed, t, &mut qkv);
            par_rows(&mut qkv, 3 * h, &|b, _| {
                simd::bias_act(b, l.qkv.bias(), None)
            });
            attention(&qkv, rows, (self.heads, self.heads), bias, &mut ctx);
            l.out.matmul(&ctx, t, &mut proj);
            add_residual(x, &mut proj, l.out.bias());

            norm_into(x, &l.norm2, &mut normed);
            l.fc1.matmul(&normed, t, &mut wide);
            let act = self.activation;
            par_rows(&mut wide, inter, &|b, _| {
                simd::bias_act(b, l.fc1.bias(), Some(act))
            });
            l.fc2.matmul(&wide, t, &mut proj);
            add_residual(x, &mut proj, l.fc2.bias());
        }
    }

    /// Bytes of weights held.
    fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                l.qkv.bytes()
                    + l.out.bytes()
                    + l.fc1.bytes()
                    + l.fc2.bytes()
                    + norm_bytes(&l.norm1)
                    + norm_bytes(&l.norm2)
            })
            .sum()
    }
}

/// `out = LN(x)` row by row.
fn norm_into(x: &[f32], n: &LayerNorm, out: &mut [f32]) {
    let w = n.gamma.len();
    par_rows(out, w, &|b, r0| {
        b.copy_from_slice(&x[r0 * w..r0 * w + b.len()]);
        simd::add_layer_norm(b, None, None, &n.gamma, &n.beta, n.eps);
    });
}

/// `x += proj + bias` row by row (`proj` is overwritten).
fn add_residual(x: &mut [f32], proj: &mut [f32], bias: &[f32]) {
    let w = bias.len();
    let x_ptr = crate::linear::SendPtr(x.as_mut_ptr());
    par_rows(proj, w, &|b, r0| {
        let x_ptr = &x_ptr;
        simd::bias_act(b, bias, None);
        // SAFETY: each block of `proj` is a distinct block of rows, and so of `x`.
        let xs = unsafe { std::slice::from_raw_parts_mut(x_ptr.0.add(r0 * w), b.len()) };
        simd::add_assign(xs, b);
    });
}

fn norm_bytes(n: &LayerNorm) -> usize {
    (n.gamma.len() + n.beta.len()) * 4
}

/// The text tower.
#[derive(Debug, Clone)]
pub struct TextTower {
    /// `[vocab, hidden]`.
    pub tokens: Vec<f32>,
    /// `[max_positions, hidden]`.
    pub positions: Vec<f32>,
    pub layers: Layers,
    pub final_norm: LayerNorm,
}

impl TextTower {
    /// Most tokens per row.
    pub fn max_positions(&self) -> usize {
        self.positions.len() / self.layers.hidden
    }

    /// Bytes of weights held.
    pub fn bytes(&self) -> usize {
        (self.tokens.len() + self.positions.len()) * 4
            + self.layers.bytes()
            + norm_bytes(&self.final_norm)
    }

    /// The final-normed hidden state of each row's last token, `[rows, hidden]`.
    ///
    /// # Panics
    /// If a row is empty or longer than [`max_positions`](Self::max_positions), or an id is
    /// outside the vocabulary.
    pub fn forward_last(&self, rows: &[&[u32]]) -> Vec<f32> {
        with_helper(|| {
            let h = self.layers.hidden;
            let (mut x, spans) = embed_rows(&self.tokens, h, rows, self.max_positions());
            for &(start, len) in &spans {
                for p in 0..len {
                    let at = (start + p) * h;
                    simd::add_assign(&mut x[at..at + h], &self.positions[p * h..(p + 1) * h]);
                }
            }
            self.layers.forward(&mut x, &spans, ScoreBias::Causal);
            let n = &self.final_norm;
            let mut last = last_tokens(&x, h, &spans);
            simd::add_layer_norm(&mut last, None, None, &n.gamma, &n.beta, n.eps);
            last
        })
    }
}

/// The vision tower.
#[derive(Debug, Clone)]
pub struct VisionTower {
    /// The patch convolution as a linear layer over flattened `(channel, y, x)` patches.
    pub patch: Linear,
    pub patch_size: usize,
    pub image_size: usize,
    pub channels: usize,
    pub class: Vec<f32>,
    /// `[1 + patches, hidden]`.
    pub positions: Vec<f32>,
    pub pre_norm: LayerNorm,
    pub layers: Layers,
    pub post_norm: LayerNorm,
}

impl VisionTower {
    /// Bytes of weights held.
    pub fn bytes(&self) -> usize {
        self.patch.bytes()
            + (self.class.len() + self.positions.len()) * 4
            + norm_bytes(&self.pre_norm)
            + self.layers.bytes()
            + norm_bytes(&self.post_norm)
    }

    /// The post-normed class row of each image, `[images, hidden]`, from normalised pixels
    /// `[images, channels, image_size, image_size]`.
    ///
    /// # Panics
    /// If `pixels` is not a whole number of images of that shape.
    pub fn forward(&self, pixels: &[f32]) -> Vec<f32> {
        let (c, side, p) = (self.channels, self.image_size, self.patch_size);
        let per_image = c * side * side;
        assert!(
            per_image > 0 && pixels.len().is_multiple_of(per_image),
            "pixels are not whole {c}×{side}×{side} images"
        );
        let images = pixels.len() / per_image;
        let grid = side / p;
        let rows_per_image = 1 + grid * grid;
        let h = self.layers.hidden;
        with_helper(|| {
            // Flattened patches, `(channel, y, x)` like the convolution's weight.
            let mut patches = vec![0f32; images * grid * grid * c * p * p];
            let width = c * p * p;
            for (i, image) in pixels.chunks_exact(per_image).enumerate() {
                for (gy, gx) in (0..grid).flat_map(|gy| (0..grid).map(move |gx| (gy, gx))) {
                    let row = (i * grid + gy) * grid + gx;
                    let out = &mut patches[row * width..(row + 1) * width];
                    for ch in 0..c {
                        for y in 0..p {
                            let from = ch * side * side + (gy * p + y) * side + gx * p;
                            let to = (ch * p + y) * p;
                            out[to..to + p].copy_from_slice(&image[from..from + p]);
                        }
                    }
                }
            }
            let mut embedded = vec![0f32; images * grid * grid * h];
            self.patch
                .matmul(&patches, images * grid * grid, &mut embedded);
            let mut x = Vec::with_capacity(images * rows_per_image * h);
            for i in 0..images {
                x.extend_from_slice(&self.class);
                x.extend_from_slice(&embedded[i * grid * grid * h..(i + 1) * grid * grid * h]);
                let start = x.len() - rows_per_image * h;
                simd::add_assign(&mut x[start..], &self.positions);
            }
            let n = &self.pre_norm;
            par_rows(&mut x, h, &|b, _| {
                simd::add_layer_norm(b, None, None, &n.gamma, &n.beta, n.eps)
            });
            let spans: Vec<(usize, usize)> = (0..images)
                .map(|i| (i * rows_per_image, rows_per_image))
                .collect();
            self.layers.forward(&mut x, &spans, ScoreBias::None);
            let mut class = Vec::with_capacity(images * h);
            for &(start, _) in &spans {
                class.extend_from_slice(&x[start * h..(start + 1) * h]);
            }
            let n = &self.post_norm;
            simd::add_layer_norm(&mut class, None, None, &n.gamma, &n.beta, n.eps);
            class
        })
    }
}
