//! Element-wise f32 kernels (layer norm, GELU, softmax) written as plain loops that LLVM
//! vectorises, compiled three times (AVX-512, AVX2+FMA, baseline) and picked at run time.
//!
//! The workspace builds for the baseline x86-64 target, where LLVM may only use SSE2; the
//! [`multiversion!`] wrappers give the same loops the wider instruction sets of the CPU they
//! actually run on. Reductions keep 16 partial sums so that they vectorise without reordering
//! permission (no fast-math in Rust).

/// Defines `fn $name` whose body is compiled for AVX-512, for AVX2+FMA and for the baseline,
/// and dispatched on what the CPU supports (`is_x86_feature_detected!` caches its answer).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
                fn v4($($arg: $ty),*) { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                {
                    // SAFETY: the CPU has the features `v4` is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `v3` is compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

const LANES: usize = 16;

/// Sum of `x`, in 16 lanes.
#[inline(always)]
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// Largest element of `x` (−∞ for an empty slice).
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `e^x` for f32, within 2 ulp over the range where the result is normal, and exactly 0 below
/// −87 (where it would be subnormal, or is −∞ from a mask); branch-free so that it vectorises
/// (Cephes' `expf` polynomial after reduction by ln 2).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to an integer that then sits in the low bits of the mantissa:
    // n = round(x·log2 e) both as a float and, from the bits, as an integer. A float-to-int
    // conversion (`as i32`) would not vectorise: Rust's saturating cast is done lane by lane.
    const ROUND: f32 = 12_582_912.0;
    let below = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x.mul_add(LOG2E, ROUND);
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = p.mul_add(r * r, r) + 1.0;
    // 2^n by building the exponent field; n is in [-126, 127] after the clamp.
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if below { 0.0 } else { y * scale }
}

/// `erf(x)` for f32, within a few ulp: the rational approximation Eigen and PyTorch's
/// vectorised CPU kernels use, on `x` clamped to [−4, 4] (where erf is ±1 in f32).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p.mul_add(x2, 2.770_681_4e-8);
    p = p.mul_add(x2, -2.101_024e-6);
    p = p.mul_add(x2, -5.692_506_4e-5);
    p = p.mul_add(x2, -7.349_906_3e-4);
    p = p.mul_add(x2, -2.954_6e-3);
    p = p.mul_add(x2, -1.609_603_3e-2);
    let p = p * x;
    let mut q = -1.456_607_2e-5_f32;
    q = q.mul_add(x2, -2.133_740_6e-4);
    q = q.mul_add(x2, -1.682_827e-3);
    q = q.mul_add(x2, -7.373_329_3e-3);
    q = q.mul_add(x2, -1.426_474e-2);
    p / q
}

/// GELU as BERT's `gelu`: `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // √(2/π)
    let y = C * (x + 0.044_715 * x * x * x);
    // tanh(y) = 1 − 2 / (e^{2y} + 1), exact enough for f32 and branch-free.
    let t = 1.0 - 2.0 / (exp(2.0 * y) + 1.0);
    0.5 * x * (1.0 + t)
}

/// CLIP's `quick_gelu`: `x · σ(1.702 x)`.
#[inline(always)]
pub(crate) fn quick_gelu(x: f32) -> f32 {
    x / (1.0 + exp(-1.702 * x))
}

/// SiLU: `x · σ(x)` (Qwen2's gated feed-forward).
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// The activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (erf), BERT's `gelu`.
    GeluErf,
    /// GELU with the tanh approximation.
    GeluTanh,
    /// `max(0, x)`.
    Relu,
    /// `x · σ(1.702 x)` (CLIP).
    QuickGelu,
    /// `x · σ(x)` (Qwen2).
    Silu,
}

multiversion! {
    /// `x[r, :] = act(x[r, :] + bias)` for every row of width `bias.len()`.
    pub fn bias_act(x: &mut [f32], bias: &[f32], act: Option<Activation>) {
        let w = bias.len();
        for row in x.chunks_exact_mut(w) {
            match act {
                None => for (v, b) in row.iter_mut().zip(bias) { *v += b },
                Some(Activation::GeluErf) => {
                    for (v, b) in row.iter_mut().zip(bias) { *v = gelu_erf(*v + b) }
                }
                Some(Activation::GeluTanh) => {
                    for (v, b) in row.iter_mut().zip(bias) { *v = gelu_tanh(*v + b) }
                }
                Some(Activation::Relu) => {
                    for (v, b) in row.iter_mut().zip(bias) { *v = (*v + b).max(0.0) }
                }
                Some(Activation::QuickGelu) => {
                    for (v, b) in row.iter_mut().zip(bias) { *v = quick_gelu(*v + b) }
                }
                Some(Activation::Silu) => {
                    for (v, b) in row.iter_mut().zip(bias) { *v = silu(*v + b) }
                }
            }
        }
    }
}

multiversion! {
    /// Layer norm of each row of `x` (width `gamma.len()`) in place, after adding `bias` and,
    /// when given, the matching row of `residual`: `x = LN(x + bias + residual)`.
    pub fn add_layer_norm(
        x: &mut [f32],
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) {
        let w = gamma.len();
        for (r, row) in x.chunks_exact_mut(w).enumerate() {
            if let Some(b) = bias {
                for (v, b) in row.iter_mut().zip(b) { *v += b }
            }
            if let Some(res) = residual {
                for (v, s) in row.iter_mut().zip(&res[r * w..(r + 1) * w]) { *v += s }
            }
            let mean = sum(row) / w as f32;
            let mut acc = [0f32; LANES];
            let chunks = row.chunks_exact(LANES);
            let tail: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
            for c in chunks {
                for i in 0..LANES {
                    let d = c[i] - mean;
                    acc[i] += d * d;
                }
            }
            let var = (acc.iter().sum::<f32>() + tail) / w as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

multiversion! {
    /// Softmax of each row of `x` (width `w`) in place.
    pub fn softmax_rows(x: &mut [f32], w: usize) {
        for row in x.chunks_exact_mut(w) {
            let m = max(row);
            // e^(x - max) and its sum in one pass.
            let mut acc = [0f32; LANES];
            let mut chunks = row.chunks_exact_mut(LANES);
            for c in &mut chunks {
                for i in 0..LANES {
                    c[i] = exp(c[i] - m);
                    acc[i] += c[i];
                }
            }
            let mut total: f32 = acc.iter().sum();
            for v in chunks.into_remainder() {
                *v = exp(*v - m);
                total += *v;
            }
            let inv = 1.0 / total;
            // Weights that would be subnormal become 0: they carry nothing, and subnormal
            // operands make the matmul that follows take microcode assists, tens of times
            // slower (a causal or ALiBi row is full of them).
            for v in row.iter_mut() {
                let p = *v * inv;
                *v = if p < f32::MIN_POSITIVE { 0.0 } else { p };
            }
        }
    }
}

multiversion! {
    /// GEGLU: for each row of `up` (`[gate | value]`, each half `out`'s width, `bias` across
    /// both), `out = act(gate + bias₁) ⊙ (value + bias₂)`.
    pub fn gated_act(up: &[f32], bias: &[f32], out: &mut [f32], act: Activation) {
        let w = bias.len() / 2;
        for (row, o) in up.chunks_exact(2 * w).zip(out.chunks_exact_mut(w)) {
            let (gate, value) = row.split_at(w);
            let (bg, bv) = bias.split_at(w);
            let lanes = o.iter_mut().zip(gate.iter().zip(bg)).zip(value.iter().zip(bv));
            // One loop per activation, so that each vectorises.
            match act {
                Activation::GeluErf => {
                    for ((o, (g, a)), (v, b)) in lanes { *o = gelu_erf(g + a) * (v + b) }
                }
                Activation::GeluTanh => {
                    for ((o, (g, a)), (v, b)) in lanes { *o = gelu_tanh(g + a) * (v + b) }
                }
                Activation::Relu => {
                    for ((o, (g, a)), (v, b)) in lanes { *o = (g + a).max(0.0) * (v + b) }
                }
                Activation::QuickGelu => {
                    for ((o, (g, a)), (v, b)) in lanes { *o = quick_gelu(g + a) * (v + b) }
                }
                Activation::Silu => {
                    for ((o, (g, a)), (v, b)) in lanes { *o = silu(g + a) * (v + b) }
                }
            }
        }
    }
}

multiversion! {
    /// ALiBi on a `len × len` block of attention scores: `x[i][j] += slope · |i − j|`.
    pub fn add_alibi(x: &mut [f32], len: usize, slope: f32) {
        for (i, row) in x.chunks_exact_mut(len).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v += slope * (i as f32 - j as f32).abs();
            }
        }
    }
}

multiversion! {
    /// RMS norm of each row of `x` (width `weight.len()`) into `out`:
    /// `out = x / √(mean(x²) + eps) · weight`.
    pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let w = weight.len();
        for (row, o) in x.chunks_exact(w).zip(out.chunks_exact_mut(w)) {
            let mut acc = [0f32; LANES];
            let chunks = row.chunks_exact(LANES);
            let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
            for c in chunks {
                for i in 0..LANES {
                    acc[i] += c[i] * c[i];
                }
            }
            let inv = 1.0 / ((acc.iter().sum::<f32>() + tail) / w as f32 + eps).sqrt();
            for ((o, v), g) in o.iter_mut().zip(row).zip(weight) {
                *o = v * inv * g;
            }
        }
    }
}

multiversion! {
    /// Rotary position embedding, rotate-half form, of one `d`-wide head in place: value `i`
    /// and `i + d/2` turn by the angle whose cosine and sine are `cos[i]`, `sin[i]`.
    pub fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = cos.len();
        let (a, b) = x.split_at_mut(half);
        for i in 0..half {
            let (u, v) = (a[i], b[i]);
            a[i] = u * cos[i] - v * sin[i];
            b[i] = v * cos[i] + u * sin[i];
        }
    }
}

/// Causal mask on a `len × len` block of attention scores: `x[i][j] = −∞` for `j > i`, so the
/// softmax gives the future no weight.
pub fn mask_future(x: &mut [f32], len: usize) {
    for (i, row) in x.chunks_exact_mut(len).enumerate() {
        row[i + 1..].fill(f32::NEG_INFINITY);
    }
}

multiversion! {
    /// `dst += src`, element-wise.
    pub fn add_assign(dst: &mut [f32], src: &[f32]) {
        for (d, s) in dst.iter_mut().zip(src) { *d += s }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_ref(x: f64) -> f64 {
        // Abramowitz–Stegun 7.1.26 is not precise enough to check against; integrate instead.
        let n = 20_000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let got = exp(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(exp(-87.0) > 0.0);
        assert_eq!(exp(-87.01), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn erf_matches_the_integral() {
        for i in -60..=60 {
            let x = i as f32 * 0.1;
            let want = erf_ref(x as f64);
            let got = erf(x) as f64;
            assert!((got - want).abs() < 5e-7, "erf({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn layer_norm_and_softmax_rows() {
        let mut x: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let orig = x.clone();
        let gamma: Vec<f32> = (0..20).map(|i| 1.0 + i as f32 * 0.01).collect();
        let beta: Vec<f32> = (0..20).map(|i| i as f32 * 0.001).collect();
        add_layer_norm(&mut x, None, None, &gamma, &beta, 1e-12);
        for (r, row) in orig.chunks(20).enumerate() {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / 20.0;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 20.0;
            for i in 0..20 {
                let want = (row[i] as f64 - mean) / (var + 1e-12).sqrt() * gamma[i] as f64
                    + beta[i] as f64;
                assert!((x[r * 20 + i] as f64 - want).abs() < 1e-5);
            }
        }
        let mut s = orig.clone();
        softmax_rows(&mut s, 20);
        for (r, row) in orig.chunks(20).enumerate() {
            let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            for i in 0..20 {
                let want = (row[i] as f64 - m).exp() / z;
                assert!((s[r * 20 + i] as f64 - want).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn activations() {
        let mut x = vec![-3.0f32, -1.0, 0.0, 0.5, 2.0];
        bias_act(&mut x, &[0.0; 5], Some(Activation::GeluErf));
        let want = [-0.004_049_7, -0.158_655_3, 0.0, 0.345_731_1, 1.954_499_7];
        for (g, w) in x.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        let mut q = vec![-3.0f32, -1.0, 0.0, 0.5, 2.0];
        bias_act(&mut q, &[0.0; 5], Some(Activation::QuickGelu));
        for (g, x) in q.iter().zip([-3.0f64, -1.0, 0.0, 0.5, 2.0]) {
            let w = x / (1.0 + (-1.702 * x).exp());
            assert!(
                (*g as f64 - w).abs() < 1e-6,
                "quick_gelu({x}) = {g}, want {w}"
            );
        }
        let mut y = vec![-3.0f32, -1.0, 0.0, 0.5, 2.0];
        bias_act(&mut y, &[0.0; 5], Some(Activation::GeluTanh));
        let want = [-0.003_637_4, -0.158_808, 0.0, 0.345_714, 1.954_597_7];
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }
}
