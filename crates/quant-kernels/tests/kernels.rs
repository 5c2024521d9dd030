//! The kernels against two references on random blocks of every type and several shapes:
//! the same quantized activations multiplied in f64 after scalar dequantization (exact up to
//! float rounding: checks the integer arithmetic of every instruction-set version), and
//! candle's dequantize-then-matmul on the unquantized activations (checks the whole path,
//! within the activations' 8-bit rounding).

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use quant_kernels::dot::{Isa, best_isa, kernel_for};
use quant_kernels::{QMatrix, QMatrixError, QuantType, activations, blocks};

const TYPES: [QuantType; 4] = [
    QuantType::Q8_0,
    QuantType::Q4K,
    QuantType::Q5K,
    QuantType::Q6K,
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Random blocks with valid, small f16 scales (random bytes elsewhere: every bit pattern of the
/// quantized values and packed scales is exercised).
fn random_matrix(dtype: QuantType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let mut data = rng.bytes(dtype.row_bytes(cols) * rows);
    let scale_at: &[usize] = match dtype {
        QuantType::Q8_0 => &[0],
        QuantType::Q4K | QuantType::Q5K => &[0, 2],
        QuantType::Q6K => &[208],
    };
    for block in data.chunks_exact_mut(dtype.block_bytes()) {
        for &at in scale_at {
            let d = half::f16::from_f32(0.001 + 0.01 * rng.uniform()).to_le_bytes();
            block[at..at + 2].copy_from_slice(&d);
        }
    }
    data
}

fn random_qmatrix(dtype: QuantType, rows: usize, cols: usize, rng: &mut Rng) -> QMatrix {
    QMatrix::new(dtype, rows, cols, random_matrix(dtype, rows, cols, rng)).unwrap()
}

fn random_input(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.uniform() * 4.0 - 2.0).collect()
}

fn ggml(dtype: QuantType) -> GgmlDType {
    match dtype {
        QuantType::Q8_0 => GgmlDType::Q8_0,
        QuantType::Q4K => GgmlDType::Q4K,
        QuantType::Q5K => GgmlDType::Q5K,
        QuantType::Q6K => GgmlDType::Q6K,
    }
}

/// candle's dequantization of the same bytes, `rows × cols`.
fn candle_dequantized(dtype: QuantType, rows: usize, cols: usize, data: &[u8]) -> Vec<f32> {
    let storage =
        QStorage::from_data(std::borrow::Cow::Borrowed(data), &Device::Cpu, ggml(dtype)).unwrap();
    let t = QTensor::new(storage, (rows, cols)).unwrap();
    t.dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// (input rows, output rows, width): one and a few input rows take the row kernels, 45 the
/// multi-row path (`expand::MIN_ROWS` is 32; its AVX-512 kernel takes 8 + 8 + 8 + 8 + 8 + 4 + 1
/// rows), with a group of 16 output rows and a remainder.
const SHAPES: [(usize, usize, usize); 6] = [
    (1, 1, 256),
    (1, 7, 512),
    (3, 33, 768),
    (5, 64, 256),
    (45, 21, 512),
    (2, 257, 1280),
];

#[test]
fn own_dequantization_matches_candle() {
    let mut rng = Rng(0x5eed);
    for dtype in TYPES {
        let (rows, cols) = (9, 512);
        let data = random_matrix(dtype, rows, cols, &mut rng);
        let m = QMatrix::new(dtype, rows, cols, data.clone()).unwrap();
        let want = candle_dequantized(dtype, rows, cols, &data);
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            m.dequantize_row(r, &mut row);
            assert_eq!(row, want[r * cols..(r + 1) * cols], "{dtype:?} row {r}");
        }
    }
}

/// Row `r` of `m` times the quantized activations, in f64 from the dequantized values, and
/// the sum of the products' magnitudes (what rounding errors scale with).
fn exact_product(m: &QMatrix, r: usize, acts: &[activations::Q8K]) -> (f64, f64) {
    let xq = acts
        .iter()
        .flat_map(|b| b.qs.iter().map(move |&q| b.d as f64 * q as f64));
    let mut w = vec![0f32; m.cols()];
    m.dequantize_row(r, &mut w);
    let products: Vec<f64> = w.iter().zip(xq).map(|(&a, b)| a as f64 * b).collect();
    (
        products.iter().sum(),
        products.iter().map(|p| p.abs()).sum(),
    )
}

#[test]
fn every_isa_matches_the_exact_product_of_the_quantized_values() {
    let mut rng = Rng(0xC0FFEE);
    let mut isas = vec![Isa::Portable];
    for isa in [Isa::Avx2, Isa::Avx512Vnni] {
        if best_isa() >= isa {
            isas.push(isa);
        }
    }
    eprintln!("instruction sets checked: {isas:?}");
    for dtype in TYPES {
        for &(_, rows, cols) in &SHAPES {
            let data = random_matrix(dtype, rows, cols, &mut rng);
            let m = QMatrix::new(dtype, rows, cols, data).unwrap();
            let x = random_input(cols, &mut rng);
            let acts = activations::quantize(&x);
            for r in 0..rows {
                let (exact, magnitude) = exact_product(&m, r, &acts);
                for &isa in &isas {
                    let got = kernel_for(dtype, isa)(m.row(r), &acts, &[]) as f64;
                    assert!(
                        (got - exact).abs() <= 1e-5 * magnitude + 1e-6,
                        "{dtype:?} {isa:?} {rows}x{cols} row {r}: {got} vs {exact} (Σ|w·x| {magnitude})"
                    );
                }
            }
        }
    }
}

#[test]
fn matmul_matches_candle_dequantize_then_matmul() {
    let mut rng = Rng(0xBEEF);
    for dtype in TYPES {
        for &(m_rows, rows, cols) in &SHAPES {
            let data = random_matrix(dtype, rows, cols, &mut rng);
            let w = candle_dequantized(dtype, rows, cols, &data);
            let q = QMatrix::new(dtype, rows, cols, data).unwrap();
            let x = random_input(m_rows * cols, &mut rng);
            let mut got = vec![0f32; m_rows * rows];
            q.matmul(&x, m_rows, &mut got);
            let xt = Tensor::from_vec(x.clone(), (m_rows, cols), &Device::Cpu).unwrap();
            let wt = Tensor::from_vec(w.clone(), (rows, cols), &Device::Cpu).unwrap();
            let want: Vec<f32> = xt
                .matmul(&wt.t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for i in 0..m_rows {
                for r in 0..rows {
                    let magnitude: f32 = (0..cols)
                        .map(|k| (x[i * cols + k] * w[r * cols + k]).abs())
                        .sum();
                    let (g, e) = (got[i * rows + r], want[i * rows + r]);
                    // 8-bit activations: each within half a step of 1/127 of its block's max.
                    assert!(
                        (g - e).abs() <= 0.01 * magnitude,
                        "{dtype:?} {m_rows}x{rows}x{cols} [{i},{r}]: {g} vs {e} (Σ|w·x| {magnitude})"
                    );
                }
            }
        }
    }
}

#[test]
fn bad_shapes_are_refused_with_the_figures() {
    assert_eq!(
        QMatrix::new(QuantType::Q4K, 2, 300, vec![]).unwrap_err(),
        QMatrixError::RowWidth { cols: 300 }
    );
    let err = QMatrix::new(QuantType::Q6K, 2, 256, vec![0; 419]).unwrap_err();
    assert_eq!(
        err,
        QMatrixError::Size {
            dtype: QuantType::Q6K,
            rows: 2,
            cols: 256,
            got: 419,
            want: 420
        }
    );
    assert!(err.to_string().contains("419 bytes"), "{err}");
}

#[test]
fn zero_and_non_finite_activations() {
    let mut rng = Rng(7);
    let data = random_matrix(QuantType::Q4K, 4, 256, &mut rng);
    let m = QMatrix::new(QuantType::Q4K, 4, 256, data).unwrap();
    let mut out = vec![1f32; 4];
    m.matmul(&[0.0; 256], 1, &mut out);
    assert_eq!(out, [0.0; 4]);
    let mut x = vec![0.5f32; 256];
    x[3] = f32::NAN;
    m.matmul(&x, 1, &mut out);
    assert!(out.iter().all(|v| !v.is_finite()), "{out:?}");
    let _ = blocks::QK_K;
}

#[test]
fn f16_conversion_matches_half_on_every_value() {
    for bits in 0..=u16::MAX {
        let want = half::f16::from_bits(bits).to_f32();
        let got = blocks::f16_to_f32(bits);
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "{bits:#06x}: {got} vs {want}"
        );
    }
}

#[test]
fn the_multi_row_path_matches_the_row_kernels() {
    let mut rng = Rng(0xFEED);
    for dtype in [QuantType::Q4K, QuantType::Q5K, QuantType::Q6K] {
        let (m, rows, cols) = (quant_kernels::expand::MIN_ROWS + 3, 19, 768);
        let q = random_qmatrix(dtype, rows, cols, &mut rng);
        let x = random_input(m * cols, &mut rng);
        let mut got = vec![0f32; m * rows];
        q.matmul(&x, m, &mut got);
        for i in 0..m {
            let acts = activations::quantize(&x[i * cols..(i + 1) * cols]);
            for r in 0..rows {
                let want = kernel_for(dtype, Isa::Portable)(q.row(r), &acts, &[]);
                let g = got[i * rows + r];
                assert!(
                    (g - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "{dtype:?} [{i},{r}]: {g} vs {want}"
                );
            }
        }
    }
}

/// Below the multi-row path, a matmul of several input rows gives each row exactly (bit for
/// bit) what a matmul of that row alone gives: batched decoding steps depend on it. Rows of
/// 4 blocks, and of 26 (taken in tiles, visited tile by tile in a batch and row by row
/// alone); each row alone also matches the exact product.
#[test]
fn a_batch_of_rows_gives_each_row_what_it_gets_alone() {
    let mut rng = Rng(0xBA7C);
    for dtype in [
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
        QuantType::Q8_0,
    ] {
        for (rows, cols) in [(300, 1024), (70, 26 * 256)] {
            let q = random_qmatrix(dtype, rows, cols, &mut rng);
            for m in [2, 5, quant_kernels::expand::MIN_ROWS - 1] {
                let x = random_input(m * cols, &mut rng);
                let mut together = vec![0f32; m * rows];
                q.matmul(&x, m, &mut together);
                for i in 0..m {
                    let row_x = &x[i * cols..(i + 1) * cols];
                    let mut alone = vec![0f32; rows];
                    q.matmul(row_x, 1, &mut alone);
                    let same = together[i * rows..(i + 1) * rows]
                        .iter()
                        .zip(&alone)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{dtype:?} {cols} wide, row {i} of {m} differs from the row alone"
                    );
                    let acts = activations::quantize(row_x);
                    for (r, &got) in alone.iter().enumerate() {
                        let (exact, magnitude) = exact_product(&q, r, &acts);
                        assert!(
                            (got as f64 - exact).abs() <= 1e-5 * magnitude + 1e-6,
                            "{dtype:?} {cols} wide, row {r}: {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }
}

/// The four-row kernels give each row the single-row kernel's value, bit for bit, for every
/// instruction set that has one.
#[test]
fn four_row_kernels_equal_the_single_row_kernel_bit_for_bit() {
    use quant_kernels::dot::kernel4_for;
    let mut rng = Rng(0x4444);
    let mut checked = 0;
    for dtype in [
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
        QuantType::Q8_0,
    ] {
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512Vnni] {
            let Some(four) = kernel4_for(dtype, isa) else {
                continue;
            };
            let one = kernel_for(dtype, isa.min(quant_kernels::dot::best_isa()));
            let cols = 1024;
            let w = random_matrix(dtype, 1, cols, &mut rng);
            let acts: Vec<_> = (0..4)
                .map(|_| activations::quantize(&random_input(cols, &mut rng)))
                .collect();
            // Requests for bytes ahead (here the row itself) change nothing.
            let got = four(&w, std::array::from_fn(|i| &acts[i][..]), &w);
            for (i, g) in got.iter().enumerate() {
                let want = one(&w, &acts[i], &[]);
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "{dtype:?} {isa:?} row {i}: {g} vs {want}"
                );
            }
            checked += 1;
        }
    }
    // Q4_K, Q5_K (AVX-512) and Q6_K (AVX2, AVX-512) where the CPU has them.
    if quant_kernels::dot::best_isa() == Isa::Avx512Vnni {
        assert_eq!(checked, 4);
    }
}
