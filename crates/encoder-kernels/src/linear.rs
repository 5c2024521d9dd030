//! Linear layers with the weight packed once at load into column panels ([`Panels`]).

use rayon::prelude::*;

use crate::panel::Panels;

/// Rows per thread from which a matmul is split by rows rather than by output columns. With
/// fewer rows, splitting the columns lets each thread stream only its share of the weight
/// (half of a 1536 × 384 layer fits in a 2 MB L2 cache, all of it does not).
const ROW_BANDS_FROM: usize = 256;

/// `y = x·Wᵀ + b`, `W` held as column panels of `Wᵀ` (see [`crate::panel`]).
#[derive(Debug, Clone)]
pub struct Linear {
    w: Panels,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Linear {
    /// From a checkpoint's `[out, in]` weight and `[out]` bias (zeros when `None`).
    pub fn new(weight: &[f32], bias: Option<&[f32]>, outputs: usize, inputs: usize) -> Self {
        let bias = match bias {
            Some(b) => {
                assert_eq!(b.len(), outputs, "bias is not [{outputs}]");
                b.to_vec()
            }
            None => vec![0.0; outputs],
        };
        Linear {
            w: Panels::pack(weight, outputs, inputs),
            bias,
            inputs,
            outputs,
        }
    }

    /// Input width.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Output width.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The bias.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.w.bytes() + self.bias.len() * 4
    }

    /// `out = x·Wᵀ` for the `rows` rows of `x`, WITHOUT the bias: callers fuse it into the pass
    /// that follows (activation, residual + layer norm).
    ///
    /// The work is split across rayon's threads here: into bands of rows when there are many
    /// (each thread streams the whole weight once per block of its rows), else into bands of
    /// panels (each thread streams only its share of the weight). On a 2-core machine that
    /// is shared with other work this loses far less to waiting threads than fine-grained
    /// threading inside the matmul.
    pub fn matmul(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        assert_eq!(x.len(), rows * self.inputs);
        assert_eq!(out.len(), rows * self.outputs);
        if rows == 0 {
            return;
        }
        let threads = rayon::current_num_threads().max(1);
        let (n, k) = (self.outputs, self.inputs);
        let panels = self.w.count();
        // SAFETY (all three): each call writes only its own rows (row bands) or its own
        // panels' columns (panel bands) of `out`, which is `rows × outputs`.
        if threads == 1 || rows * n * k < 1 << 20 {
            unsafe { self.w.multiply(x, rows, 0..panels, out.as_mut_ptr()) };
        } else if rows >= ROW_BANDS_FROM * threads {
            let per = rows.div_ceil(threads);
            out.par_chunks_mut(per * n)
                .zip(x.par_chunks(per * k))
                .for_each(|(o, xi)| unsafe {
                    self.w.multiply(xi, o.len() / n, 0..panels, o.as_mut_ptr())
                });
        } else {
            let per = panels.div_ceil(threads);
            let out_ptr = SendPtr(out.as_mut_ptr());
            (0..panels.div_ceil(per)).into_par_iter().for_each(|b| {
                let out_ptr = &out_ptr;
                let range = b * per..((b + 1) * per).min(panels);
                unsafe { self.w.multiply(x, rows, range, out_ptr.0) };
            });
        }
    }
}

/// A raw output pointer shared with rayon tasks that each write a disjoint region of it.
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: hands disjoint regions of one buffer to rayon tasks (column bands in
// `Linear::matmul`, rows and heads in `bert::attention`); no two tasks touch the same element.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_plus_bias_is_x_times_w_transposed() {
        let (rows, inputs, outputs) = (5, 7, 3);
        let w: Vec<f32> = (0..outputs * inputs)
            .map(|i| (i as f32 * 0.3).sin())
            .collect();
        let b: Vec<f32> = (0..outputs).map(|i| i as f32).collect();
        let x: Vec<f32> = (0..rows * inputs).map(|i| (i as f32 * 0.7).cos()).collect();
        let lin = Linear::new(&w, Some(&b), outputs, inputs);
        let mut y = vec![0f32; rows * outputs];
        lin.matmul(&x, rows, &mut y);
        crate::simd::bias_act(&mut y, lin.bias(), None);
        for r in 0..rows {
            for o in 0..outputs {
                let want: f32 = (0..inputs)
                    .map(|i| x[r * inputs + i] * w[o * inputs + i])
                    .sum::<f32>()
                    + b[o];
                assert!((y[r * outputs + o] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn row_and_panel_bands_give_the_exact_product() {
        // Big enough to be split: in row bands (many rows) and panel bands (few rows); 400 and
        // 437 outputs end in a partial panel (16 and 5 columns); 384 inputs are three slices
        // of a panel, 2100 five spans (the last partial); 5, 800 / 3 rows end in partial
        // register tiles.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for (rows, outputs, inputs) in [
            (5usize, 400, 384),
            (800, 400, 384),
            (5, 437, 384),
            (800, 437, 384),
            (5, 100, 2100),
            (800, 100, 2100),
        ] {
            let w: Vec<f32> = (0..outputs * inputs)
                .map(|i| ((i * 7) % 11) as f32 - 5.0)
                .collect();
            let x: Vec<f32> = (0..rows * inputs)
                .map(|i| ((i * 3) % 5) as f32 - 2.0)
                .collect();
            let lin = Linear::new(&w, None, outputs, inputs);
            let mut y = vec![f32::NAN; rows * outputs];
            pool.install(|| lin.matmul(&x, rows, &mut y));
            for r in 0..rows {
                for o in 0..outputs {
                    // Small integers: every partial sum is exact in f32.
                    let want: f32 = (0..inputs)
                        .map(|i| x[r * inputs + i] * w[o * inputs + i])
                        .sum();
                    assert_eq!(y[r * outputs + o], want, "rows {rows}: ({r}, {o})");
                }
            }
        }
    }
}
