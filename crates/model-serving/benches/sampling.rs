//! Time to pick one token from a 151,936-entry vocabulary (Qwen's) after a 512-token
//! context, under the sampling settings the registry's cards use:
//!
//! ```text
//! cargo bench -p model-serving --bench sampling
//! ```
//!
//! The goal is under 0.5 ms per token with Qwen3-Coder's card defaults (temperature 0.7,
//! top-p 0.8, top-k 20, repetition penalty 1.05).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use model_serving::generate::SamplingParams;
use model_serving::generate::sampling::Sampler;

const VOCAB: usize = 151_936;

/// Logits spread like a language model's: most far below the few best. A fixed
/// linear-congruential sequence, so every run samples the same values.
fn logits() -> Vec<f32> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..VOCAB)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let u = (x >> 40) as f32 / (1u64 << 24) as f32;
            -12.0 + 24.0 * u * u * u * u
        })
        .collect()
}

fn sampling(c: &mut Criterion) {
    let logits = logits();
    let context: Vec<u32> = (0..512u32).map(|i| i * 293 % VOCAB as u32).collect();
    let settings = [
        (
            "qwen3-coder card (t 0.7, top-p 0.8, top-k 20, penalty 1.05)",
            SamplingParams {
                temperature: 0.7,
                top_p: 0.8,
                top_k: 20,
                repetition_penalty: 1.05,
                seed: Some(1),
            },
        ),
        ("greedy", SamplingParams::greedy()),
        (
            "top-p 0.95 without top-k (t 1.0)",
            SamplingParams {
                temperature: 1.0,
                top_p: 0.95,
                seed: Some(1),
                ..SamplingParams::greedy()
            },
        ),
        (
            "temperature 1.0 only",
            SamplingParams {
                temperature: 1.0,
                seed: Some(1),
                ..SamplingParams::greedy()
            },
        ),
    ];
    let mut group = c.benchmark_group("sample one token, vocabulary 151936");
    for (name, params) in settings {
        let mut sampler = Sampler::new(params);
        group.bench_function(name, |b| {
            b.iter(|| sampler.sample(black_box(&logits), black_box(&context)))
        });
    }
    group.finish();
}

criterion_group!(benches, sampling);
criterion_main!(benches);
