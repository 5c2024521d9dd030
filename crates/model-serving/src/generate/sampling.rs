//! Sampling: repetition penalty, temperature, top-k, top-p, seeded, in the order Transformers'
//! `generate` applies them (penalty processor, then the temperature, top-k and top-p warpers,
//! top-p over the distribution renormalized after top-k). Greedy when the temperature is 0.
//!
//! Each registry model's defaults come from its card, through the registry
//! ([`SamplingParams::from_registry`]).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `0` picks the most likely token (greedy).
    pub temperature: f64,
    /// Nucleus sampling: the smallest set of tokens whose probability reaches `top_p`;
    /// `1.0` keeps every token.
    pub top_p: f64,
    /// Only the `top_k` most likely tokens; `0` keeps every token.
    pub top_k: usize,
    /// Divides positive (multiplies negative) logits of tokens already in the context, prompt
    /// included; `1.0` is off.
    pub repetition_penalty: f32,
    /// Seed of the sampler; `None` draws one per request. Equal seeds give equal outputs.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    /// Greedy decoding, no penalty.
    fn default() -> Self {
        SamplingParams::greedy()
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0), no penalty.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            seed: None,
        }
    }

    /// The defaults a registry model's card recommends (its `[serving]` facts).
    pub fn from_registry(d: &model_registry::SamplingDefaults) -> Self {
        SamplingParams {
            temperature: d.temperature,
            top_p: d.top_p,
            top_k: d.top_k,
            repetition_penalty: d.repetition_penalty as f32,
            seed: None,
        }
    }

    /// Whether the next token is always the most likely one.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }

    /// Applies the values `o` sets.
    pub fn apply(&mut self, o: &SamplingOverrides) {
        if let Some(t) = o.temperature {
            self.temperature = t;
        }
        if let Some(p) = o.top_p {
            self.top_p = p;
        }
        if let Some(k) = o.top_k {
            self.top_k = k;
        }
        if let Some(r) = o.repetition_penalty {
            self.repetition_penalty = r;
        }
        if let Some(s) = o.seed {
            self.seed = Some(s);
        }
    }

    /// Checks the ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(format!(
                "temperature = {} must be finite and ≥ 0",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p = {} must be in (0, 1]", self.top_p));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return Err(format!(
                "repetition_penalty = {} must be finite and > 0",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// Per-request changes to a model's default [`SamplingParams`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingOverrides {
    /// See [`SamplingParams::temperature`].
    pub temperature: Option<f64>,
    /// See [`SamplingParams::top_p`].
    pub top_p: Option<f64>,
    /// See [`SamplingParams::top_k`].
    pub top_k: Option<usize>,
    /// See [`SamplingParams::repetition_penalty`].
    pub repetition_penalty: Option<f32>,
    /// See [`SamplingParams::seed`].
    pub seed: Option<u64>,
}

/// Picks tokens from logits under one request's parameters.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// A sampler seeded with `params.seed` (or a fresh seed).
    pub fn new(params: SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(|| rand::rng().random());
        Sampler {
            params,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next token given the last position's `logits` and every token so far (`context`,
    /// prompt included, for the repetition penalty).
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut seen = vec![false; logits.len()];
            for &t in context {
                let i = t as usize;
                if i < logits.len() && !seen[i] {
                    seen[i] = true;
                    let l = &mut logits[i];
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.is_greedy() {
            return argmax(&logits);
        }
        // Candidates sorted by descending logit (ties by id, so the order is deterministic).
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .map(|(i, &l)| (i as u32, l / p.temperature as f32))
            .collect();
        if cand.is_empty() {
            return 0;
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.truncate(p.top_k);
        }
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand.iter().map(|c| ((c.1 - max) as f64).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            // Keep the smallest prefix whose mass reaches top_p (at least one token).
            let mut mass = 0.0;
            let mut keep = probs.len();
            for (i, x) in probs.iter().enumerate() {
                mass += x;
                if mass >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            cand.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut u = self.rng.random::<f64>() * total;
        for (c, x) in cand.iter().zip(&probs) {
            if u < *x {
                return c.0;
            }
            u -= x;
        }
        cand[cand.len() - 1].0
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.5, -1.0, 2.9, 0.0]
    }

    #[test]
    fn greedy_is_argmax_and_penalty_can_change_it() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&logits(), &[]), 1);
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 1.2,
            ..SamplingParams::greedy()
        });
        // 3.0 / 1.2 = 2.5 < 2.9: token 4 wins once token 1 was seen.
        assert_eq!(s.sample(&logits(), &[1]), 4);
        // A negative logit is pushed further down, not up.
        let mut l = logits();
        l[1] = -0.5;
        l[4] = -0.55;
        l[0] = -5.0;
        l[2] = -5.0;
        l[5] = -5.0;
        l[3] = -5.0;
        assert_eq!(s.sample(&l, &[1]), 4, "-0.5 × 1.2 = -0.6 < -0.55");
    }

    #[test]
    fn equal_seeds_give_equal_draws_and_top_k_bounds_the_support() {
        let params = SamplingParams {
            temperature: 5.0,
            top_k: 3,
            seed: Some(7),
            ..SamplingParams::greedy()
        };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..200)
                .map(|_| s.sample(&logits(), &[]))
                .collect::<Vec<_>>()
        };
        let a = draw(&params);
        assert_eq!(a, draw(&params));
        assert!(a.iter().all(|t| [1, 2, 4].contains(t)), "{a:?}");
        // A high temperature spreads the draws over all three.
        for t in [1, 2, 4] {
            assert!(a.contains(&t), "{t} never drawn in {a:?}");
        }
        let other = draw(&SamplingParams {
            seed: Some(8),
            ..params
        });
        assert_ne!(a, other);
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        // After softmax at temperature 1, token 1 alone holds > 50 %.
        let l = vec![0.0, 10.0, 8.0, 0.0];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: Some(1),
            ..SamplingParams::greedy()
        });
        assert!((0..100).all(|_| s.sample(&l, &[]) == 1));
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: 0.99,
            seed: Some(1),
            ..SamplingParams::greedy()
        });
        let draws: Vec<_> = (0..400).map(|_| s.sample(&l, &[])).collect();
        assert!(draws.contains(&2) && !draws.contains(&0) && !draws.contains(&3));
    }

    #[test]
    fn card_defaults_and_validation() {
        let card = |key: &str| {
            SamplingParams::from_registry(
                &model_registry::by_key(key)
                    .unwrap()
                    .serving
                    .sampling
                    .unwrap(),
            )
        };
        let q = card("unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF");
        assert_eq!(
            (q.temperature, q.top_p, q.top_k, q.repetition_penalty),
            (0.7, 0.8, 20, 1.05)
        );
        assert!(card("microsoft/phi-4").is_greedy());
        assert_eq!(card("unsloth/Kimi-K2-Instruct-GGUF").temperature, 0.6);
        let mut p = SamplingParams::greedy();
        p.apply(&SamplingOverrides {
            top_p: Some(0.0),
            ..Default::default()
        });
        assert!(p.validate().unwrap_err().contains("top_p"));
    }
}
