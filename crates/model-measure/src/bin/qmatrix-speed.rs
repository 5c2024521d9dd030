//! Decode speed of the GGUF-layout kernels on matrices of Phi-4's shapes with random blocks:
//! one activation row against a matrix far larger than the caches (GB/s of weights read), the
//! same kernels on a cache-resident matrix on one thread (ns per 256 weights, the compute
//! side), a plain read of the same bytes on all threads (the memory system's ceiling), and
//! batched decoding (2, 4, 8 activation rows against the same weights: rows per second
//! relative to one row).
//!
//! ```sh
//! cargo run --release -p model-measure --bin qmatrix-speed
//! ```

use std::time::Instant;

use quant_kernels::{QMatrix, QuantType, activations, dot};
use rayon::prelude::*;

/// A `rows × cols` matrix of random blocks (`model_measure::random_blocks`).
fn random_matrix(dtype: QuantType, rows: usize, cols: usize, seed: u64) -> QMatrix {
    let spec_type = match dtype {
        QuantType::Q4K => model_spec::DType::Q4K,
        QuantType::Q5K => model_spec::DType::Q5K,
        QuantType::Q6K => model_spec::DType::Q6K,
        QuantType::Q8_0 => model_spec::DType::Q8_0,
    };
    let mut data = vec![0u8; dtype.row_bytes(cols) * rows];
    model_measure::random_blocks(&mut data, spec_type, &mut (seed | 1));
    QMatrix::new(dtype, rows, cols, data).expect("shape")
}

/// `n` activations in [-0.5, 0.5].
fn input(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
        .collect()
}

/// `m` different quantized activation rows of `cols` (shifted copies of [`input`]).
fn batch_input(m: usize, cols: usize) -> Vec<Vec<activations::Q8K>> {
    (0..m)
        .map(|i| activations::quantize(&input(cols + i)[i..]))
        .collect()
}

fn best_of<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let cols = 5120;
    println!(
        "threads: {}, isa: {:?}",
        rayon::current_num_threads(),
        dot::best_isa()
    );
    // Prefill: 512 activation rows against one matrix (each weight row unpacked once).
    for (dtype, rows) in [(QuantType::Q4K, 35840), (QuantType::Q6K, 17920)] {
        let m = 512;
        let w = random_matrix(dtype, rows, cols, 3);
        let x = input(m * cols);
        let mut out = vec![0f32; m * rows];
        let s = best_of(2, || w.matmul(&x, m, &mut out));
        let pairs = (m * rows * cols / 256) as f64;
        println!(
            "{dtype:?} {rows}x{cols} times {m} rows: {:.0} ms, {:.2} ns per block-row pair per thread",
            s * 1e3,
            s * 1e9 * rayon::current_num_threads() as f64 / pairs
        );
    }
    // Several matrices, together far beyond the last-level cache (260 MiB on some servers),
    // so each decoding step reads its weights from memory as a real model's does: Phi-4's
    // fused gate-up and attention shapes (5,120 wide), and its down projection (17,920 wide,
    // whose activation rows do not all fit in L1 at once).
    for (dtype, rows, cols, count) in [
        (QuantType::Q4K, 35840, 5120, 12),
        (QuantType::Q6K, 20480, 5120, 12),
        (QuantType::Q4K, 5120, 17920, 24),
        (QuantType::Q6K, 5120, 17920, 16),
    ] {
        let acts = vec![activations::quantize(&input(cols))];
        let mats: Vec<QMatrix> = (0..count)
            .map(|i| random_matrix(dtype, rows, cols, 7 + i))
            .collect();
        let gb = mats.iter().map(|m| m.bytes().len()).sum::<usize>() as f64 / 1e9;
        let mut out = vec![0f32; rows];
        let s = best_of(5, || {
            for m in &mats {
                m.matmul_quantized(&acts, &mut out);
            }
        });
        let read = best_of(5, || {
            for m in &mats {
                let sum: u64 = m
                    .bytes()
                    .par_chunks(1 << 16)
                    .map(|c| {
                        c.chunks_exact(8)
                            .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
                            .fold(0u64, u64::wrapping_add)
                    })
                    .reduce(|| 0, u64::wrapping_add);
                std::hint::black_box(sum);
            }
        });
        // Batched decoding: several activation rows against the same weights, each weight
        // row dotted with all of them while it is in L1.
        let mut batch = Vec::new();
        for m in [2, 4, 8] {
            let acts_m = batch_input(m, cols);
            let mut out = vec![0f32; m * rows];
            let t = best_of(3, || {
                for w in &mats {
                    w.matmul_quantized(&acts_m, &mut out);
                }
            });
            batch.push(format!("{m} rows {:.2}x", m as f64 * s / t));
        }
        let small = random_matrix(dtype, 256, cols, 9);
        let dotf = dot::kernel(dtype);
        let blocks = (256 * cols / 256) as f64;
        let one = best_of(50, || {
            for r in 0..256 {
                std::hint::black_box(dotf(small.row(r), &acts[0], &[]));
            }
        });
        // The four-row kernel on the same cache-resident rows: ns per block and activation row.
        let four = dot::kernel4(dtype).map(|dot4| {
            let acts4 = batch_input(4, cols);
            let t = best_of(50, || {
                for r in 0..256 {
                    std::hint::black_box(dot4(
                        small.row(r),
                        [&acts4[0], &acts4[1], &acts4[2], &acts4[3]],
                        &[],
                    ));
                }
            });
            t / blocks / 4.0 * 1e9
        });
        println!(
            "{dtype:?} {count} x {rows}x{cols} ({:.0} MB): matvec {:.2} ms = {:.1} GB/s; plain read {:.1} GB/s; in cache 1 thread {:.2} ns/block ({} with 4 rows); rows per second against one row: {}",
            gb * 1e3,
            s * 1e3,
            gb / s,
            gb / read,
            one / blocks * 1e9,
            four.map_or("no kernel".to_string(), |ns| format!(
                "{ns:.2} ns/block/row"
            )),
            batch.join(", ")
        );
    }
}
