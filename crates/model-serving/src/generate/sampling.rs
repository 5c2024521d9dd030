//! Sampling: repetition penalty, temperature, top-k, top-p, seeded, in the order Transformers'
//! `generate` applies them (penalty processor, then the temperature, top-k and top-p warpers,
//! top-p over the distribution renormalized after top-k). Greedy when the temperature is 0.
//!
//! Each registry model's defaults come from its card, through the registry
//! ([`SamplingParams::from_registry`]).

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
///
/// The rule, for logits `l` over the vocabulary and the tokens seen so far:
/// 1. repetition penalty: each distinct token of the context has its logit divided by the
///    penalty when positive, multiplied by it otherwise;
/// 2. greedy (temperature 0 or `top_k = 1`): the largest logit, the lowest id on ties;
/// 3. candidates: every token whose logit is a number, ranked by descending logit, ties by
///    ascending id; with `top_k > 0`, the first `top_k` of that ranking;
/// 4. probabilities: softmax of `logit / temperature` over the candidates;
/// 5. top-p: the shortest prefix of the ranking whose probability reaches `top_p` (at least
///    one token), the probabilities renormalised over it;
/// 6. draw: `u` uniform in `[0, 1)` from the request's generator, scaled by the kept mass;
///    the first kept candidate, in ranking order, at which the running mass exceeds it. When
///    nothing is cut (`top_k = 0`, `top_p = 1`), the candidates are scanned in id order
///    instead, which draws from the same distribution without sorting the vocabulary.
///
/// Steps 3–5 select instead of sorting the vocabulary: the `top_k` best are found with
/// `select_nth_unstable_by` (linear) and only they are sorted; without `top_k`, the nucleus
/// is found by selecting growing prefixes until their mass reaches `top_p`. The generator is
/// ChaCha8 seeded from the request's seed, and `u` is built from its 64-bit output here, so
/// equal seeds give equal draws whatever version of `rand` is linked.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// Reused between calls: (logit, id) candidates.
    candidates: Vec<(f32, u32)>,
    /// Reused between calls: the logits after the repetition penalty.
    penalised: Vec<f32>,
}

/// Candidates first selected when `top_p` is used without `top_k`; doubled until the
/// nucleus fits.
const NUCLEUS_START: usize = 64;

impl Sampler {
    /// A sampler seeded with `params.seed` (or a fresh seed).
    pub fn new(params: SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(|| rand::rng().random());
        Sampler {
            params,
            rng: ChaCha8Rng::seed_from_u64(seed),
            candidates: Vec::new(),
            penalised: Vec::new(),
        }
    }

    /// The next token given the last position's `logits` and every token so far (`context`,
    /// prompt included, for the repetition penalty).
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> u32 {
        let p = &self.params;
        let logits = if p.repetition_penalty != 1.0 {
            penalise(logits, context, p.repetition_penalty, &mut self.penalised)
        } else {
            logits
        };
        if p.is_greedy() {
            return argmax(logits);
        }
        // Candidates: every logit that is a number; with top-k, only those that can be among
        // the best k (at least the `floor`, see `top_k_floor`).
        let floor = match p.top_k {
            0 => f32::NEG_INFINITY,
            k => top_k_floor(logits, k),
        };
        let cand = &mut self.candidates;
        cand.clear();
        cand.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| **l >= floor)
                .map(|(i, &l)| (l, i as u32)),
        );
        if cand.is_empty() {
            return 0;
        }
        let inv_t = 1.0 / p.temperature;
        let max = cand.iter().map(|c| c.0).fold(f32::NEG_INFINITY, f32::max);
        // Unnormalised softmax weight of a candidate.
        let weight = |c: &(f32, u32)| ((c.0 - max) as f64 * inv_t).exp();
        let (keep, probs) = if p.top_k > 0 {
            let k = select_best(cand, p.top_k);
            let weights: Vec<f64> = cand[..k].iter().map(weight).collect();
            let sum: f64 = weights.iter().sum();
            let probs: Vec<f64> = weights.iter().map(|w| w / sum).collect();
            (nucleus(&probs, p.top_p), probs)
        } else if p.top_p >= 1.0 {
            // Nothing is cut: every candidate, in id order.
            let probs: Vec<f64> = cand.iter().map(weight).collect();
            (probs.len(), probs)
        } else {
            // The nucleus of the softmax over every candidate, among growing sets of the best.
            let sum: f64 = cand.iter().map(weight).sum();
            let mut k = NUCLEUS_START;
            loop {
                let k_now = select_best(cand, k);
                let probs: Vec<f64> = cand[..k_now].iter().map(|c| weight(c) / sum).collect();
                let keep = nucleus(&probs, p.top_p);
                if keep < k_now || k_now == cand.len() {
                    break (keep, probs);
                }
                k *= 4;
            }
        };
        let total: f64 = probs[..keep].iter().sum();
        let mut u = unit_f64(&mut self.rng) * total;
        for (c, x) in cand[..keep].iter().zip(&probs) {
            if u < *x {
                return c.1;
            }
            u -= x;
        }
        cand[keep - 1].1
    }
}

/// Moves the `k` best candidates (descending logit, ascending id on ties) to the front of
/// `cand`, sorted; returns how many there are (`k` or fewer).
fn select_best(cand: &mut [(f32, u32)], k: usize) -> usize {
    let rank = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let k = k.min(cand.len());
    if k < cand.len() {
        cand.select_nth_unstable_by(k, rank);
    }
    cand[..k].sort_unstable_by(rank);
    k
}

/// A value that the `k` largest of `logits` all reach: the smallest of the maxima of `k`
/// slices that cover it (each slice's maximum is a distinct element, so at least `k` elements
/// reach the smallest of them). One pass that vectorises, and usually leaves a few hundred
/// candidates of 151,936 for the selection. NaNs are never above it; negative infinity when
/// fewer than `k` numbers exist.
fn top_k_floor(logits: &[f32], k: usize) -> f32 {
    if k >= logits.len() {
        return f32::NEG_INFINITY;
    }
    logits
        .chunks(logits.len().div_ceil(k))
        .map(|c| c.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l)))
        .fold(f32::INFINITY, f32::min)
}

/// The length of the shortest prefix of `probs` whose mass reaches `top_p` (at least one);
/// all of them when none does.
fn nucleus(probs: &[f64], top_p: f64) -> usize {
    if top_p >= 1.0 {
        return probs.len();
    }
    let mut mass = 0.0;
    for (i, x) in probs.iter().enumerate() {
        mass += x;
        if mass >= top_p {
            return i + 1;
        }
    }
    probs.len()
}

/// `logits` with the repetition penalty applied to each distinct token of `context`, in
/// `buffer`.
fn penalise<'a>(
    logits: &[f32],
    context: &[u32],
    penalty: f32,
    buffer: &'a mut Vec<f32>,
) -> &'a [f32] {
    buffer.clear();
    buffer.extend_from_slice(logits);
    // Each distinct token of the context once (sorted and deduplicated: a few thousand ids,
    // cheaper than marking a vocabulary-sized table).
    let mut done: Vec<u32> = context
        .iter()
        .copied()
        .filter(|&t| (t as usize) < buffer.len())
        .collect();
    done.sort_unstable();
    done.dedup();
    for t in done {
        let l = &mut buffer[t as usize];
        *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
    }
    buffer
}

/// Uniform in `[0, 1)` from the top 53 bits of one 64-bit output (fixed here rather than
/// left to `rand`'s float conversion, so that the stream of draws is this crate's to keep).
fn unit_f64(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
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

    /// The rule of [`Sampler`] written the plain way: penalise a copy, sort every candidate,
    /// cut to `top_k`, softmax, cut to the nucleus, draw with the given `u` (id order when
    /// nothing is cut).
    fn reference(logits: &[f32], context: &[u32], p: &SamplingParams, u: f64) -> u32 {
        let mut l = logits.to_vec();
        let mut seen = std::collections::HashSet::new();
        for &t in context {
            if (t as usize) < l.len() && seen.insert(t) {
                let x = &mut l[t as usize];
                *x = if *x > 0.0 {
                    *x / p.repetition_penalty
                } else {
                    *x * p.repetition_penalty
                };
            }
        }
        let mut cand: Vec<(f32, u32)> = l
            .iter()
            .enumerate()
            .filter(|(_, x)| !x.is_nan())
            .map(|(i, &x)| (x, i as u32))
            .collect();
        let cut = p.top_k > 0 || p.top_p < 1.0;
        if cut {
            cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        if p.top_k > 0 {
            cand.truncate(p.top_k);
        }
        let max = cand.iter().map(|c| c.0).fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f64> = cand
            .iter()
            .map(|c| ((c.0 - max) as f64 / p.temperature).exp())
            .collect();
        let sum: f64 = w.iter().sum();
        let probs: Vec<f64> = w.iter().map(|x| x / sum).collect();
        let mut keep = probs.len();
        let mut mass = 0.0;
        for (i, x) in probs.iter().enumerate() {
            mass += x;
            if mass >= p.top_p {
                keep = i + 1;
                break;
            }
        }
        let mut u = u * probs[..keep].iter().sum::<f64>();
        for (c, x) in cand[..keep].iter().zip(&probs) {
            if u < *x {
                return c.1;
            }
            u -= x;
        }
        cand[keep - 1].1
    }

    /// The selecting sampler against the sorting reference on random logits, over the
    /// combinations of top-k, top-p and penalty, with ties and NaNs: the same token for the
    /// same draw, every time.
    #[test]
    fn selection_matches_the_sorting_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let mut compared = 0;
        for case in 0..400 {
            let vocab = [5, 64, 300, 5000][case % 4];
            let mut logits: Vec<f32> = (0..vocab)
                .map(|_| (rng.next_u32() % 2000) as f32 / 100.0 - 10.0)
                .collect();
            if case % 7 == 0 {
                logits[vocab / 2] = f32::NAN;
            }
            let context: Vec<u32> = (0..case % 30)
                .map(|_| rng.next_u32() % vocab as u32)
                .collect();
            let params = SamplingParams {
                temperature: [0.3, 0.7, 1.0, 2.5][(case / 3) % 4],
                top_k: [0, 1, 3, 20, 100][case % 5],
                top_p: [1.0, 0.5, 0.8, 0.95][(case / 5) % 4],
                repetition_penalty: [1.0, 1.05, 1.3][case % 3],
                seed: Some(case as u64),
            };
            let mut s = Sampler::new(params.clone());
            let mut draws = ChaCha8Rng::seed_from_u64(case as u64);
            for _ in 0..5 {
                let got = s.sample(&logits, &context);
                let want = if params.is_greedy() {
                    reference(
                        &logits,
                        &context,
                        &SamplingParams {
                            top_k: 1,
                            temperature: 1.0,
                            ..params.clone()
                        },
                        0.0,
                    )
                } else {
                    reference(&logits, &context, &params, unit_f64(&mut draws))
                };
                assert_eq!(got, want, "case {case}: {params:?}");
                compared += 1;
            }
        }
        assert_eq!(compared, 2000);
    }

    /// The seeded stream is this crate's: these draws must not change with a dependency
    /// update (ChaCha8, 53-bit `u`).
    #[test]
    fn seeded_draws_are_stable() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            seed: Some(2026),
            ..SamplingParams::greedy()
        });
        let l = vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5];
        let draws: Vec<u32> = (0..16).map(|_| s.sample(&l, &[])).collect();
        assert_eq!(draws, GOLDEN_DRAWS, "{draws:?}");
    }

    const GOLDEN_DRAWS: [u32; 16] = [7, 5, 2, 4, 5, 7, 7, 6, 3, 5, 7, 7, 7, 4, 7, 7];

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
