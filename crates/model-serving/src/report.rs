//! Estimate vs measured memory, per model.
//!
//! Two figures are measured: what a load leaves resident (the pool records it as the model's
//! measured bytes, next to the declared resident bytes), and — by [`measure_profile`] — the
//! peak while loading and serving one request of the run profile, which is what
//! `est_memory_allocation_mb` estimates.

use std::fmt;

use image::{DynamicImage, RgbImage};
use model_networks::EmbeddingModel;
use model_networks::embed::text::TextMode;
use model_runtime::LoadMeasurement;
use model_runtime::memory::{self, PeakSampler};

use crate::config::ServedModel;
use crate::error::ServeError;
use crate::loader::{LoadedModel, load_measured_blocking};

/// 1 MB as the registry counts it.
pub const MB: f64 = 1_048_576.0;

/// One model's line.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    /// The model.
    pub key: String,
    /// `est_memory_allocation_mb`.
    pub estimate_mb: Option<u64>,
    /// Declared resident bytes (weights + overhead).
    pub declared_resident_bytes: Option<u64>,
    /// Declared working memory of one batch.
    pub declared_per_batch_bytes: Option<u64>,
    /// The last load's measurement.
    pub measured: Option<LoadMeasurement>,
    /// Peak increase while loading and serving one profile request, if measured.
    pub peak_request_bytes: Option<u64>,
    /// Whether the pool saw the measurement exceed the declared resident bytes.
    pub estimate_exceeded: bool,
}

/// Every model's line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MemoryReport {
    /// Rows in registration order.
    pub rows: Vec<ReportRow>,
}

fn mb(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "-".to_owned(), |b| format!("{:.1}", b as f64 / MB))
}

impl fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<44} {:>9} {:>12} {:>12} {:>12} {:>12} {:>12}  note",
            "model", "est. MB", "decl. res.", "meas. res.", "peak load", "peak req.", "est/peak"
        )?;
        for r in &self.rows {
            let peak = r
                .peak_request_bytes
                .or(r.measured.map(|m| m.peak_rss_bytes));
            let ratio = match (r.estimate_mb, peak) {
                (Some(e), Some(p)) if p > 0 => format!("{:.2}", e as f64 * MB / p as f64),
                _ => "-".into(),
            };
            let note = match (r.measured, r.estimate_exceeded) {
                (None, _) => "not loaded",
                (Some(_), true) => "measured > declared resident",
                (Some(_), false) => "",
            };
            writeln!(
                f,
                "{:<44} {:>9} {:>12} {:>12} {:>12} {:>12} {:>12}  {note}",
                r.key,
                r.estimate_mb.map_or_else(|| "-".into(), |e| e.to_string()),
                mb(r.declared_resident_bytes),
                mb(r.measured.map(|m| m.resident_bytes)),
                mb(r.measured.map(|m| m.peak_rss_bytes)),
                mb(r.peak_request_bytes),
                ratio
            )?;
        }
        write!(
            f,
            "(MB = 1,048,576 bytes; resident = RSS delta on CPU, device-memory delta on CUDA)"
        )
    }
}

/// A load plus one request of the run profile, measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProfileMeasurement {
    /// The load alone.
    pub load: LoadMeasurement,
    /// Highest RSS increase over the pre-load baseline, load and request together.
    pub peak_rss_bytes: u64,
    /// Highest anonymous-memory increase over the baseline (without mapped file pages).
    pub peak_anon_bytes: u64,
    /// RSS increase after the request returned.
    pub after_request_bytes: u64,
}

/// What one profile request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileRequest {
    /// Inputs per request.
    pub batch: usize,
    /// Tokens per text input (special tokens included); `None` for image models.
    pub seq_len: Option<usize>,
}

/// Loads the embedder `model` and serves one request shaped like `request`, measuring the
/// peaks. Unless the configuration sets its own limit, the model is loaded for inputs of
/// `seq_len` tokens; the request's texts are exactly `seq_len` tokens long either way.
pub fn measure_profile(
    model: &ServedModel,
    request: ProfileRequest,
) -> Result<(EmbeddingModel, ProfileMeasurement), ServeError> {
    let key = model.key.clone();
    let model = model.clone().map_embed(|mut o| {
        if o.max_input_tokens.is_none() {
            o.max_input_tokens = request.seq_len;
        }
        o
    })?;
    let baseline = memory::resident();
    let sampler = PeakSampler::start();
    let (loaded, load) = load_measured_blocking(&model, None)?;
    let LoadedModel::Embedder(model) = loaded else {
        return Err(model.wrong("embed"));
    };
    let fail = |e: model_runtime::BackendError| ServeError::backend(&key, e);
    let batch = request.batch.max(1);
    let tokens = request
        .seq_len
        .unwrap_or(usize::MAX)
        .min(model.max_input_tokens());
    if model.family().embeds_images() {
        let images: Vec<DynamicImage> = (0..batch)
            .map(|i| noise_image(640, 480, i as u32))
            .collect();
        model.forward_images(&images).map_err(fail)?;
    }
    let texts = vec![synthetic_text(tokens * 2); batch];
    let mut encoded = model
        .tokenize(&texts, &TextMode::Document)
        .map_err(|e| fail(e.into()))?;
    for e in &mut encoded {
        e.ids.truncate(tokens);
    }
    let rows: Vec<_> = encoded.iter().collect();
    model.forward_tokens(&rows).map_err(fail)?;
    let peak = sampler.stop();
    let after = memory::resident();
    Ok((
        model,
        ProfileMeasurement {
            load,
            peak_rss_bytes: peak.rss.saturating_sub(baseline.rss),
            peak_anon_bytes: peak.anon.saturating_sub(baseline.anon),
            after_request_bytes: after.rss.saturating_sub(baseline.rss),
        },
    ))
}

/// A text of about `words` common English words (enough tokens for any tokenizer to reach
/// a limit of `words` tokens).
pub fn synthetic_text(words: usize) -> String {
    const WORDS: [&str; 9] = [
        "the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog",
    ];
    (0..words)
        .map(|i| WORDS[i % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// A deterministic noise image.
pub fn noise_image(w: u32, h: u32, seed: u32) -> DynamicImage {
    let mut state = 0x9e37_79b9u32 ^ seed;
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
    }))
}
