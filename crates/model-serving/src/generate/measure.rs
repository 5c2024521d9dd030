//! Measuring one request of a run profile directly on a loaded generator: the resident set
//! after the load (and its warm-up pass), the peak while a prompt of `prompt_tokens` is
//! prefilled and `new_tokens` are decoded greedily, the KV cache allocated, and the decode
//! rate. The estimate to compare with is [`estimate_checkpoint`](super::estimate_checkpoint)
//! under a profile with `context_tokens = prompt_tokens + new_tokens`.

use std::time::{Duration, Instant};

use model_networks::GenerativeModel;
use model_runtime::LoadMeasurement;
use model_runtime::memory::{self, PeakSampler};

use super::sampling::argmax;
use crate::config::ServedModel;
use crate::error::ServeError;
use crate::loader::{LoadedModel, load_measured_blocking};

/// What one profile request took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProfileRun {
    /// The load (weights, then the warm-up pass).
    pub load: LoadMeasurement,
    /// Highest resident increase from before the load to the end of the request: what the
    /// estimate bounds.
    pub peak_bytes: u64,
    /// Highest resident increase during the request over the resident set after the load.
    pub request_peak_bytes: u64,
    /// KV-cache bytes the request allocated.
    pub kv_bytes: Option<u64>,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens decoded after the prompt.
    pub new_tokens: usize,
    /// Time of the prefill.
    pub prefill: Duration,
    /// Time of the `new_tokens − 1` decode steps after the first token.
    pub decode: Duration,
}

impl ProfileRun {
    /// Decode steps per second.
    pub fn decode_tokens_per_second(&self) -> f64 {
        let steps = self.new_tokens.saturating_sub(1);
        if steps == 0 || self.decode.is_zero() {
            0.0
        } else {
            steps as f64 / self.decode.as_secs_f64()
        }
    }
}

/// Loads the generator `served` and runs one greedy request of `prompt_tokens` synthetic
/// prompt tokens (prefilled in steps of its `prefill_chunk`) and `new_tokens` new ones, with
/// a KV cache for `context_tokens` (at least that request's own length; the cache is
/// allocated at full size on its first use). With `image` (LLaVA), the second prompt token is
/// `<image>` and the image's features count towards `prompt_tokens`. Returns the model too,
/// so a caller can keep using it.
pub fn measure_profile(
    served: &ServedModel,
    prompt_tokens: usize,
    new_tokens: usize,
    context_tokens: Option<usize>,
    image: Option<&image::DynamicImage>,
) -> Result<(GenerativeModel, ProfileRun), ServeError> {
    let prefill_chunk = served.generate_options("generate text")?.prefill_chunk;
    let before = memory::resident();
    let sampler = PeakSampler::start();
    let (loaded, load) = load_measured_blocking(served, None)?;
    let LoadedModel::Generator(model) = loaded else {
        return Err(served.wrong("generate text"));
    };
    let fail = |e: model_runtime::BackendError| ServeError::backend(&served.key, e);
    let loaded = memory::resident();
    let vocab = model.tokenizer().get_vocab_size(true).clamp(2, 256) as u32;
    // Ordinary tokens (the first 256 ids are bytes in byte-level vocabularies), never an
    // end token, so that the request runs its full length.
    let special = |t: u32| model.end_ids().contains(&t) || Some(t) == model.image_token_id();
    let image_slot = image.and(model.image_token_id());
    let text_tokens = match image_slot {
        Some(_) => prompt_tokens.saturating_sub(model.image_tokens()) + 1,
        None => prompt_tokens,
    };
    let mut prompt: Vec<u32> = (0..text_tokens as u32)
        .map(|i| (i * 31 + 7) % vocab)
        .map(|t| if special(t) { (t + 1) % vocab } else { t })
        .collect();
    if let (Some(id), true) = (image_slot, prompt.len() > 1) {
        prompt[1] = id;
    }
    let request = PeakSampler::start();
    let capacity = context_tokens.unwrap_or(0).max(prompt_tokens + new_tokens);
    let mut session = model.session(capacity).map_err(fail)?;
    let t0 = Instant::now();
    let mut logits = session
        .prefill(&prompt, image, prefill_chunk)
        .map_err(|e| fail(e.into()))?;
    let prefill = t0.elapsed();
    let t1 = Instant::now();
    let mut next = argmax(&logits);
    for _ in 1..new_tokens {
        logits = session.step(next).map_err(|e| fail(e.into()))?;
        next = argmax(&logits);
    }
    let decode = t1.elapsed();
    let kv_bytes = session.kv_bytes();
    drop(session);
    let request_peak = request.stop();
    let peak = sampler.stop();
    Ok((
        model,
        ProfileRun {
            load,
            peak_bytes: peak.rss.saturating_sub(before.rss),
            request_peak_bytes: request_peak.rss.saturating_sub(loaded.rss),
            kv_bytes,
            prompt_tokens,
            new_tokens,
            prefill,
            decode,
        },
    ))
}
