//! The endpoints: OpenAI's where one exists ([`embeddings`], [`generate`] for chat and text
//! completions, [`images`], [`models`]) and the operational ones ([`ops`]: `/health`,
//! `/status`, `/metrics`).

pub mod embeddings;
pub mod generate;
pub mod images;
pub mod models;
pub mod ops;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use image::DynamicImage;

use crate::error::ApiError;
use crate::server::AppState;

/// Seconds since the Unix epoch (OpenAI's `created`).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A response id: `prefix-` and 24 hex digits, unique within the process.
pub(crate) fn response_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{prefix}-{t:016x}{n:08x}")
}

/// Decodes a `data:image/…;base64,…` URL into an image; `param` names the field. Nothing is
/// ever fetched: other URLs are refused.
pub(crate) fn data_url_image(
    url: &str,
    param: &str,
    index: usize,
) -> Result<DynamicImage, ApiError> {
    let rest = url.strip_prefix("data:").ok_or_else(|| {
        ApiError::invalid(
            param,
            "only data URLs are accepted (`data:image/png;base64,…`); the server fetches nothing",
        )
    })?;
    let (meta, payload) = rest
        .split_once(',')
        .ok_or_else(|| ApiError::invalid(param, "the data URL has no `,` before its payload"))?;
    if !meta.ends_with(";base64") {
        return Err(ApiError::invalid(
            param,
            "the data URL must be base64 (`data:image/png;base64,…`)",
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| {
            ApiError::invalid(
                param,
                format!("the data URL's base64 payload does not decode: {e}"),
            )
        })?;
    model_serving::decode_image(&bytes, index)
        .map_err(|e| ApiError::invalid(param, format!("the image does not decode: {e}")))
}

/// Times one request for `model_pool_request_duration_seconds`: recorded when dropped, with
/// the status it was given, or 499 when it never got one (the client went away first).
pub(crate) struct Timer {
    state: AppState,
    endpoint: &'static str,
    model: String,
    pub(crate) started: Instant,
    status: Option<u16>,
}

impl Timer {
    pub(crate) fn start(state: &AppState, endpoint: &'static str, model: &str) -> Self {
        // Unknown names are not labels: a client must not be able to grow the metrics.
        let model = if state.pool.model(model).is_some() {
            model.to_owned()
        } else {
            "-".to_owned()
        };
        Timer {
            state: state.clone(),
            endpoint,
            model,
            started: Instant::now(),
            status: None,
        }
    }

    /// The request ended with `status`.
    pub(crate) fn finish(&mut self, status: u16) {
        self.status = Some(status);
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let status = self.status.unwrap_or(499);
        let took = self.started.elapsed();
        self.state
            .metrics
            .request(&self.model, self.endpoint, status, took);
        if self.status.is_none() {
            tracing::info!(
                target: "model_server::access",
                endpoint = self.endpoint,
                model = %self.model,
                ms = took.as_secs_f64() * 1e3,
                "client went away before the answer ended"
            );
        }
    }
}
