//! `POST /v1/embeddings`.
//!
//! OpenAI's request: `model`, `input` (a string or an array of strings; token arrays are
//! refused), `encoding_format` (`float`, default, or `base64`: little-endian `f32` bytes),
//! `dimensions` (must be the model's own if given), `user` (ignored). Extensions:
//!
//! * `images`: an array of `data:image/…;base64,…` URLs, embedded by CLIP in the same space
//!   as its texts; their vectors follow the texts' in `data` (`input` may then be omitted);
//! * `input_type`: `document` (default) or `query` — queries get the model's query
//!   instruction (GTE-Qwen2, Stella, NV-Embed).
//!
//! `usage.prompt_tokens` counts the texts' tokens as embedded (after truncation, special
//! tokens included); images count none.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use model_serving::{Embeddings, ServeError, TextMode};
use serde::{Deserialize, Serialize};

use super::{Timer, data_url_image};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::server::AppState;

const ENDPOINT: &str = "/v1/embeddings";

/// `input`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
    /// Token ids: refused (this server embeds text).
    Tokens(Vec<serde_json::Value>),
}

/// The request.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    /// The model.
    pub model: String,
    /// The texts.
    #[serde(default)]
    pub input: Option<Input>,
    /// `float` or `base64`.
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Must match the model's width if given.
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Extension: images as data URLs (CLIP).
    #[serde(default)]
    pub images: Option<Vec<String>>,
    /// Extension: `document` or `query`.
    #[serde(default)]
    pub input_type: Option<String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Datum {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

#[derive(Serialize)]
struct EmbeddingsResponse {
    object: &'static str,
    data: Vec<Datum>,
    model: String,
    usage: Usage,
}

/// The handler.
pub async fn embeddings(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Response {
    let mut timer = Timer::start(&state, ENDPOINT, &req.model);
    let (status, response) = match answer(&state, req).await {
        Ok(r) => (200, axum::Json(r).into_response()),
        Err(e) => (e.status.as_u16(), e.into_response()),
    };
    timer.finish(status);
    response
}

async fn answer(state: &AppState, req: EmbeddingsRequest) -> Result<EmbeddingsResponse, ApiError> {
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format `{other}` is not one of `float`, `base64`"),
            ));
        }
    };
    let mode = match req.input_type.as_deref() {
        None | Some("document") => TextMode::Document,
        Some("query") => TextMode::Query,
        Some(other) => {
            return Err(ApiError::invalid(
                "input_type",
                format!("input_type `{other}` is not one of `document`, `query`"),
            ));
        }
    };
    let texts = match req.input {
        None => Vec::new(),
        Some(Input::One(t)) => vec![t],
        Some(Input::Many(ts)) => ts,
        Some(Input::Tokens(_)) => {
            return Err(ApiError::invalid(
                "input",
                "token arrays are not accepted; send the text (a string or an array of strings)",
            ));
        }
    };
    let images = req
        .images
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, url)| data_url_image(url, &format!("images[{i}]"), i))
        .collect::<Result<Vec<_>, _>>()?;
    let pool = &state.pool;
    let fail = |e: ServeError| ApiError::from_serve(&e, "input", pool);
    if texts.is_empty() && images.is_empty() {
        // The pool's own refusal names the model first (unknown, wrong capability) and then
        // the empty input.
        let e = pool
            .embed_with(&req.model, Vec::<String>::new(), mode)
            .await;
        return Err(fail(
            e.err()
                .unwrap_or_else(|| ServeError::invalid(&req.model, "no input")),
        ));
    }
    let mut done = Embeddings {
        vectors: Vec::new(),
        tokens: Vec::new(),
        queued: Default::default(),
    };
    if !texts.is_empty() {
        let e = state
            .run(pool.embed_with_usage(&req.model, texts, mode))
            .await?
            .map_err(fail)?;
        state.metrics.queue_wait(&req.model, e.queued);
        done = e;
    }
    if !images.is_empty() {
        let e = state
            .run(pool.embed_images_with_usage(&req.model, images))
            .await?
            .map_err(|e| ApiError::from_serve(&e, "images", pool))?;
        state.metrics.queue_wait(&req.model, e.queued);
        done.vectors.extend(e.vectors);
        done.tokens.extend(e.tokens);
    }
    if let Some(d) = req.dimensions {
        let width = done.vectors.first().map_or(0, Vec::len);
        if d != width {
            return Err(ApiError::invalid(
                "dimensions",
                format!(
                    "model `{}` embeds in {width} dimensions; dimensions = {d} cannot be served",
                    req.model
                ),
            ));
        }
    }
    let prompt_tokens = done.tokens.iter().sum();
    let data = done
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| Datum {
            object: "embedding",
            index,
            embedding: if base64 {
                Vector::Base64(encode_base64(&v))
            } else {
                Vector::Float(v)
            },
        })
        .collect();
    Ok(EmbeddingsResponse {
        object: "list",
        data,
        model: req.model,
        usage: Usage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

/// The vector as OpenAI's `base64` format writes it: little-endian `f32` bytes.
pub fn encode_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let s = encode_base64(&[1.0, -2.5]);
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
    }
}
