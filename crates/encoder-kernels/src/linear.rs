//! Linear layers on [`gemm`], with the weight transposed once at load.

use rayon::prelude::*;

/// Rows per thread from which a matmul is split by rows rather than by output columns. With
/// fewer rows, splitting the columns lets each thread stream only its share of the weight
/// (half of a 1536 × 384 layer fits in a 2 MB L2 cache, all of it does not).
const ROW_BANDS_FROM: usize = 256;

/// `y = x·Wᵀ + b` with `W` as checkpoints store it (`[out, in]`), kept as `[in, out]`
/// row-major so that the output's rows are contiguous in the weight as in the result.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[in, out]`, row-major.
    w: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Linear {
    /// From a checkpoint's `[out, in]` weight and `[out]` bias (zeros when `None`).
    pub fn new(weight: &[f32], bias: Option<&[f32]>, outputs: usize, inputs: usize) -> Self {
        assert_eq!(
            weight.len(),
            outputs * inputs,
            "weight is not [{outputs}, {inputs}]"
        );
        let mut w = vec![0f32; inputs * outputs];
        // Blocked transpose: both sides stay in cache.
        const B: usize = 32;
        for o0 in (0..outputs).step_by(B) {
            for i0 in (0..inputs).step_by(B) {
                for o in o0..(o0 + B).min(outputs) {
                    for i in i0..(i0 + B).min(inputs) {
                        w[i * outputs + o] = weight[o * inputs + i];
                    }
                }
            }
        }
        let bias = match bias {
            Some(b) => {
                assert_eq!(b.len(), outputs, "bias is not [{outputs}]");
                b.to_vec()
            }
            None => vec![0.0; outputs],
        };
        Linear {
            w,
            bias,
            inputs,
            outputs,
        }
    }

    /// Several layers reading the same input as one (say query, key and value): their outputs
    /// side by side, in the order given.
    pub fn concat(parts: &[Linear]) -> Self {
        let inputs = parts[0].inputs;
        assert!(parts.iter().all(|p| p.inputs == inputs));
        let outputs: usize = parts.iter().map(|p| p.outputs).sum();
        let mut w = Vec::with_capacity(inputs * outputs);
        for i in 0..inputs {
            for p in parts {
                w.extend_from_slice(&p.w[i * p.outputs..(i + 1) * p.outputs]);
            }
        }
        let bias = parts.iter().flat_map(|p| p.bias.iter().copied()).collect();
        Linear {
            w,
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
        (self.w.len() + self.bias.len()) * 4
    }

    /// `out = x·Wᵀ` for the `rows` rows of `x`, WITHOUT the bias: callers fuse it into the pass
    /// that follows (activation, residual + layer norm).
    ///
    /// The work is split across rayon's threads here rather than inside gemm: into bands of
    /// rows when there are many (each thread one single-threaded gemm, no synchronisation
    /// until the end), else into bands of output columns. On a 2-core machine that is shared
    /// with other work this loses far less to waiting threads than gemm's own fine-grained
    /// threading.
    pub fn matmul(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        assert_eq!(x.len(), rows * self.inputs);
        assert_eq!(out.len(), rows * self.outputs);
        if rows == 0 {
            return;
        }
        let threads = rayon::current_num_threads().max(1);
        let (n, k) = (self.outputs, self.inputs);
        if threads == 1 || rows * n * k < 1 << 20 {
            self.band(x, rows, 0, n, out.as_mut_ptr());
        } else if rows >= ROW_BANDS_FROM * threads {
            let per = rows.div_ceil(threads);
            out.par_chunks_mut(per * n)
                .zip(x.par_chunks(per * k))
                .for_each(|(o, xi)| self.band(xi, o.len() / n, 0, n, o.as_mut_ptr()));
        } else {
            // Column bands of a multiple of 16 (one AVX-512 register).
            let per = n.div_ceil(threads).next_multiple_of(16);
            let out_ptr = SendPtr(out.as_mut_ptr());
            (0..n.div_ceil(per)).into_par_iter().for_each(|b| {
                let out_ptr = &out_ptr;
                let c0 = b * per;
                // SAFETY: band `b` writes only columns c0..c0+per of every row.
                self.band(x, rows, c0, (c0 + per).min(n), unsafe { out_ptr.0.add(c0) });
            });
        }
    }

    /// `out[:, c0..c1] = x·W[:, c0..c1]` on this thread; `out` points at column `c0` of row 0
    /// of a buffer of `rows × outputs`.
    fn band(&self, x: &[f32], rows: usize, c0: usize, c1: usize, out: *mut f32) {
        debug_assert_eq!(x.len(), rows * self.inputs);
        // SAFETY: `x` is `rows × inputs`, the weight `inputs × outputs`, and `out` addresses
        // `rows` rows of stride `outputs` from column c0, c1 - c0 wide (callers' contract).
        unsafe {
            gemm::gemm(
                rows,
                c1 - c0,
                self.inputs,
                out,
                1,
                self.outputs as isize,
                false,
                x.as_ptr(),
                1,
                self.inputs as isize,
                self.w.as_ptr().add(c0),
                1,
                self.outputs as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
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
        let both = Linear::concat(&[lin.clone(), lin.clone()]);
        let mut z = vec![0f32; rows * outputs * 2];
        both.matmul(&x, rows, &mut z);
        crate::simd::bias_act(&mut z, both.bias(), None);
        for r in 0..rows {
            assert_eq!(
                &z[r * 6..r * 6 + 3],
                &y[r * 3..r * 3 + 3],
                "first half of row {r}"
            );
            assert_eq!(&z[r * 6 + 3..r * 6 + 6], &y[r * 3..r * 3 + 3]);
        }
    }

    #[test]
    fn row_and_column_bands_match_one_gemm() {
        // Big enough to be split: in row bands (many rows) and column bands (few rows).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for rows in [5usize, 800] {
            let (inputs, outputs) = (384, 400);
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
