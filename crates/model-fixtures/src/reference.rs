//! An independent reference for the GGUF decoders: the forward pass written out with plain
//! `f32` loops over the dequantized weights (no candle ops), with the RoPE base as a
//! parameter — what the backends must reproduce.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file;

use crate::decode::Geometry;

/// Dequantized weights of a GGUF, by name: (values, candle dims).
pub struct Dequantized(HashMap<String, (Vec<f32>, Vec<usize>)>);

impl Dequantized {
    pub fn read(path: &Path) -> Self {
        let mut f = std::fs::File::open(path).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        let mut map = HashMap::new();
        for name in ct.tensor_infos.keys() {
            let t = ct.tensor(&mut f, name, &Device::Cpu).unwrap();
            let d = t.dequantize(&Device::Cpu).unwrap();
            let dims = d.dims().to_vec();
            map.insert(
                name.clone(),
                (d.flatten_all().unwrap().to_vec1().unwrap(), dims),
            );
        }
        Dequantized(map)
    }

    fn get(&self, name: &str) -> &[f32] {
        &self.0[name].0
    }

    /// Row `r` of matrix `name` ([rows, cols]); for 3-D tensors, of expert `e`.
    fn rows(&self, name: &str) -> usize {
        self.0[name].1[self.0[name].1.len() - 2]
    }
}

/// `W x` for `W` `[out, in]` stored row-major from `offset`.
fn matvec(w: &[f32], offset: usize, out: usize, x: &[f32]) -> Vec<f32> {
    let n = x.len();
    (0..out)
        .map(|o| {
            let row = &w[offset + o * n..offset + (o + 1) * n];
            row.iter()
                .zip(x)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum::<f64>() as f32
        })
        .collect()
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / x.len() as f64;
    let scale = 1.0 / (ms + eps as f64).sqrt();
    x.iter()
        .zip(w)
        .map(|(v, g)| (*v as f64 * scale) as f32 * g)
        .collect()
}

/// NeoX-style rotation of one head (first half against second half).
fn rope(x: &mut [f32], pos: usize, base: f32) {
    let d = x.len();
    let half = d / 2;
    for i in 0..half {
        let theta = pos as f64 * (base as f64).powf(-(2.0 * i as f64) / d as f64);
        let (c, s) = (theta.cos(), theta.sin());
        let (a, b) = (x[i] as f64, x[i + half] as f64);
        x[i] = (a * c - b * s) as f32;
        x[i + half] = (a * s + b * c) as f32;
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn softmax(x: &mut [f32]) {
    let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    x.iter_mut().for_each(|v| *v /= sum);
}

/// Which decoder [`reference_logits`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Phi3,
    Qwen3Moe,
}

/// Logits after the last of `tokens`, computed from the dequantized weights with plain loops
/// and the given RoPE base.
pub fn reference_logits(
    w: &Dequantized,
    arch: Arch,
    g: &Geometry,
    tokens: &[u32],
    rope_base: f32,
) -> Vec<f32> {
    let h = g.hidden;
    let (hd, nh, nkv) = (g.head_dim, g.heads, g.kv_heads);
    let eps = if arch == Arch::Phi3 { 1e-5 } else { 1e-6 };
    let embed = w.get("token_embd.weight");
    let mut xs: Vec<Vec<f32>> = tokens
        .iter()
        .map(|&t| embed[t as usize * h..(t as usize + 1) * h].to_vec())
        .collect();
    for l in 0..g.layers {
        let p = |s: &str| format!("blk.{l}.{s}");
        // Attention inputs for every position.
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (pos, x) in xs.iter().enumerate() {
            let hn = rms_norm(x, w.get(&p("attn_norm.weight")), eps);
            let (mut q, mut k, v) = match arch {
                Arch::Phi3 => {
                    let qkv = matvec(w.get(&p("attn_qkv.weight")), 0, nh * hd + 2 * nkv * hd, &hn);
                    (
                        qkv[..nh * hd].to_vec(),
                        qkv[nh * hd..nh * hd + nkv * hd].to_vec(),
                        qkv[nh * hd + nkv * hd..].to_vec(),
                    )
                }
                Arch::Qwen3Moe => (
                    matvec(w.get(&p("attn_q.weight")), 0, nh * hd, &hn),
                    matvec(w.get(&p("attn_k.weight")), 0, nkv * hd, &hn),
                    matvec(w.get(&p("attn_v.weight")), 0, nkv * hd, &hn),
                ),
            };
            if arch == Arch::Qwen3Moe {
                for head in q.chunks_mut(hd) {
                    let n = rms_norm(head, w.get(&p("attn_q_norm.weight")), eps);
                    head.copy_from_slice(&n);
                }
                for head in k.chunks_mut(hd) {
                    let n = rms_norm(head, w.get(&p("attn_k_norm.weight")), eps);
                    head.copy_from_slice(&n);
                }
            }
            q.chunks_mut(hd).for_each(|head| rope(head, pos, rope_base));
            k.chunks_mut(hd).for_each(|head| rope(head, pos, rope_base));
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let mut next = Vec::with_capacity(xs.len());
        for (pos, x) in xs.iter().enumerate() {
            let mut attn = vec![0f32; nh * hd];
            for head in 0..nh {
                let kvh = head / (nh / nkv);
                let q = &qs[pos][head * hd..(head + 1) * hd];
                let mut scores: Vec<f32> = (0..=pos)
                    .map(|j| {
                        let k = &ks[j][kvh * hd..(kvh + 1) * hd];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()
                    })
                    .collect();
                softmax(&mut scores);
                for (j, s) in scores.iter().enumerate() {
                    let v = &vs[j][kvh * hd..(kvh + 1) * hd];
                    for (o, vv) in attn[head * hd..(head + 1) * hd].iter_mut().zip(v) {
                        *o += s * vv;
                    }
                }
            }
            let o = matvec(w.get(&p("attn_output.weight")), 0, h, &attn);
            let x1: Vec<f32> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
            let hn = rms_norm(&x1, w.get(&p("ffn_norm.weight")), eps);
            let ffn_out = match arch {
                Arch::Phi3 => {
                    let up = matvec(w.get(&p("ffn_up.weight")), 0, 2 * g.ffn, &hn);
                    let act: Vec<f32> = (0..g.ffn).map(|i| silu(up[i]) * up[g.ffn + i]).collect();
                    matvec(w.get(&p("ffn_down.weight")), 0, h, &act)
                }
                Arch::Qwen3Moe => {
                    let mut probs = matvec(w.get(&p("ffn_gate_inp.weight")), 0, g.experts, &hn);
                    softmax(&mut probs);
                    let mut order: Vec<usize> = (0..g.experts).collect();
                    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
                    let top = &order[..g.experts_used];
                    let sum: f32 = top.iter().map(|&e| probs[e]).sum();
                    let mut out = vec![0f32; h];
                    for &e in top {
                        let (gate, up, down) = (
                            w.get(&p("ffn_gate_exps.weight")),
                            w.get(&p("ffn_up_exps.weight")),
                            w.get(&p("ffn_down_exps.weight")),
                        );
                        let a = matvec(gate, e * g.ffn * h, g.ffn, &hn);
                        let b = matvec(up, e * g.ffn * h, g.ffn, &hn);
                        let act: Vec<f32> = a.iter().zip(&b).map(|(x, y)| silu(*x) * y).collect();
                        let y = matvec(down, e * h * g.ffn, h, &act);
                        for (o, v) in out.iter_mut().zip(y) {
                            *o += probs[e] / sum * v;
                        }
                    }
                    out
                }
            };
            next.push(x1.iter().zip(&ffn_out).map(|(a, b)| a + b).collect());
        }
        xs = next;
    }
    let last = rms_norm(xs.last().unwrap(), w.get("output_norm.weight"), eps);
    matvec(w.get("output.weight"), 0, w.rows("output.weight"), &last)
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_dist(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}
