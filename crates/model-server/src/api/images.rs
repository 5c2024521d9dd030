//! `POST /v1/images/generations`.
//!
//! OpenAI's request: `model`, `prompt`, `n` (1 only), `size` (`WIDTHxHEIGHT`, default
//! `1024x1024`; multiples of 16 within the model's limit), `response_format` (`b64_json`, the
//! default here; `url` is refused: the server keeps no files). `quality`, `style` and `user`
//! are ignored. Extensions: `steps` (default: the most the distilled model is made for, 4) and
//! `seed` (default: a fresh one, returned in each `data` item as `seed`).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use model_serving::ImageRequest;
use serde::{Deserialize, Serialize};

use super::{Timer, unix_now};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::server::AppState;

const ENDPOINT: &str = "/v1/images/generations";

/// The request.
#[derive(Debug, Deserialize)]
pub struct ImagesRequest {
    /// The model.
    pub model: String,
    /// What to draw.
    pub prompt: String,
    /// Images: 1 only.
    #[serde(default)]
    pub n: Option<u32>,
    /// `WIDTHxHEIGHT`.
    #[serde(default)]
    pub size: Option<String>,
    /// `b64_json`.
    #[serde(default)]
    pub response_format: Option<String>,
    /// Extension: denoising steps.
    #[serde(default)]
    pub steps: Option<u32>,
    /// Extension: the seed of the initial noise.
    #[serde(default)]
    pub seed: Option<u64>,
}

#[derive(Serialize)]
struct Datum {
    b64_json: String,
    revised_prompt: Option<String>,
    seed: u64,
}

#[derive(Serialize)]
struct ImagesResponse {
    created: u64,
    data: Vec<Datum>,
}

/// `WIDTHxHEIGHT`.
pub fn parse_size(s: &str) -> Result<(u32, u32), ApiError> {
    let bad = || {
        ApiError::invalid(
            "size",
            format!("size `{s}` is not WIDTHxHEIGHT in pixels, e.g. `1024x1024`"),
        )
    };
    let (w, h) = s.split_once(['x', 'X', '×']).ok_or_else(bad)?;
    Ok((
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    ))
}

/// The handler.
pub async fn images(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ImagesRequest>,
) -> Response {
    let mut timer = Timer::start(&state, ENDPOINT, &req.model);
    let (status, response) = match answer(&state, req, timer.started).await {
        Ok(r) => (200, axum::Json(r).into_response()),
        Err(e) => (e.status.as_u16(), e.into_response()),
    };
    timer.finish(status);
    response
}

async fn answer(
    state: &AppState,
    req: ImagesRequest,
    started: Instant,
) -> Result<ImagesResponse, ApiError> {
    if let Some(n) = req.n
        && n != 1
    {
        return Err(ApiError::invalid(
            "n",
            format!("n = {n}: one image per request only"),
        ));
    }
    match req.response_format.as_deref() {
        None | Some("b64_json") => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "response_format",
                format!(
                    "response_format `{other}` is not served; use `b64_json` (the server keeps no files to link to)"
                ),
            ));
        }
    }
    let (width, height) = parse_size(req.size.as_deref().unwrap_or("1024x1024"))?;
    let steps = req
        .steps
        .unwrap_or_else(|| state.pool.limits(&req.model).map_or(4, |l| l.max_steps));
    let seed = req.seed.unwrap_or_else(fresh_seed);
    let request = ImageRequest::new(req.prompt)
        .size(width, height)
        .steps(steps)
        .seed(seed);
    // The first progress event comes from under the lease: the wait ends there.
    let leased = Arc::new(OnceLock::new());
    let mark = Arc::clone(&leased);
    let progress = move |_| {
        let _ = mark.set(Instant::now());
    };
    let image = state
        .run(state.pool.generate_image(&req.model, request, progress))
        .await?
        .map_err(|e| ApiError::from_serve(&e, "prompt", &state.pool))?;
    if let Some(at) = leased.get() {
        state
            .metrics
            .queue_wait(&req.model, at.saturating_duration_since(started));
    }
    Ok(ImagesResponse {
        created: unix_now(),
        data: vec![Datum {
            b64_json: base64::engine::general_purpose::STANDARD.encode(&image.png),
            revised_prompt: None,
            seed: image.seed,
        }],
    })
}

fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_width_by_height() {
        assert_eq!(parse_size("256x128").unwrap(), (256, 128));
        assert_eq!(parse_size("64X64").unwrap(), (64, 64));
        let e = parse_size("big").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("size"));
    }
}
