//! Flow-matching sampling: the initial noise, the two models' schedules, and the Euler loop.
//!
//! Both models predict a velocity `v(x, σ)` and step `x ← x + v · (σ_next − σ)` from σ = 1
//! (noise) to σ = 0 (image). FLUX.1-schnell uses the unshifted schedule (candle's
//! `flux::sampling::get_schedule` without a shift); SD3 shifts it as its scheduler config says
//! (`shift` = 3.0 for SD3.5: σ' = sσ / (1 + (s − 1)σ)) and feeds the transformer 1000·σ. The
//! SD3 sampler lives in candle's example, so it is written here.

use candle_core::{DType, Device, Tensor};

/// Standard-normal noise of `shape` from `seed`, the same on every device: it is drawn on the
/// CPU with a fixed generator (SplitMix64 + Box–Muller), then moved. (candle's CPU generator
/// cannot be seeded, and CUDA's would give other values.)
pub fn noise(
    seed: u64,
    shape: (usize, usize, usize, usize),
    device: &Device,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let mut rng = SplitMix64(seed);
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        let (a, b) = rng.normal_pair();
        values.push(a as f32);
        values.push(b as f32);
    }
    values.truncate(n);
    Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and well distributed for this use.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Two independent standard normals (Box–Muller).
    pub fn normal_pair(&mut self) -> (f64, f64) {
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        (r * t.cos(), r * t.sin())
    }
}

/// FLUX.1-schnell: `steps + 1` times from 1 to 0, evenly spaced, no shift.
pub fn flux_schnell_schedule(steps: usize) -> Vec<f64> {
    candle_transformers::models::flux::sampling::get_schedule(steps, None)
}

/// SD3: `steps + 1` sigmas from 1 to 0, shifted by `shift`.
pub fn sd3_schedule(steps: usize, shift: f64) -> Vec<f64> {
    (0..=steps)
        .rev()
        .map(|i| i as f64 / steps as f64)
        .map(|t| shift * t / (1.0 + (shift - 1.0) * t))
        .collect()
}

/// Euler steps over `sigmas`: `velocity(x, σ)` is the model, `after_step(n)` runs after step
/// `n` (1-based) and may stop the loop with an error (cancellation).
pub fn euler<E: From<candle_core::Error>>(
    mut x: Tensor,
    sigmas: &[f64],
    mut velocity: impl FnMut(&Tensor, f64) -> candle_core::Result<Tensor>,
    mut after_step: impl FnMut(u32) -> Result<(), E>,
) -> Result<Tensor, E> {
    for (i, w) in sigmas.windows(2).enumerate() {
        let (now, next) = (w[0], w[1]);
        let v = velocity(&x, now)?;
        x = (x + (v * (next - now))?)?;
        after_step(i as u32 + 1)?;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_run_from_noise_to_image() {
        assert_eq!(flux_schnell_schedule(4), vec![1.0, 0.75, 0.5, 0.25, 0.0]);
        let s = sd3_schedule(4, 3.0);
        assert_eq!(s.len(), 5);
        assert_eq!((s[0], s[4]), (1.0, 0.0));
        // σ = 0.5 shifted by 3: 1.5 / 2 = 0.75.
        assert!((s[2] - 0.75).abs() < 1e-12, "{s:?}");
        assert!(s.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn noise_is_seeded_and_standard_normal() {
        let a = noise(7, (1, 4, 16, 16), &Device::Cpu, DType::F32).unwrap();
        let b = noise(7, (1, 4, 16, 16), &Device::Cpu, DType::F32).unwrap();
        let c = noise(8, (1, 4, 16, 16), &Device::Cpu, DType::F32).unwrap();
        let (a, b, c): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            a.flatten_all().unwrap().to_vec1().unwrap(),
            b.flatten_all().unwrap().to_vec1().unwrap(),
            c.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.1 && (var - 1.0).abs() < 0.15, "{mean} {var}");
    }

    #[test]
    fn euler_steps_and_stops_when_told() {
        let x = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
        // v = x: each step of Δσ = −0.5 halves x.
        let mut seen = Vec::new();
        let out: Tensor = euler::<candle_core::Error>(
            x.clone(),
            &[1.0, 0.5, 0.0],
            |x, _| Ok(x.clone()),
            |n| {
                seen.push(n);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, vec![1, 2]);
        assert_eq!(out.to_vec1::<f32>().unwrap(), vec![0.25; 3]);
        let stopped = euler::<candle_core::Error>(
            x,
            &[1.0, 0.5, 0.0],
            |x, _| Ok(x.clone()),
            |_| Err(candle_core::Error::msg("stop")),
        );
        assert!(stopped.is_err());
    }
}
