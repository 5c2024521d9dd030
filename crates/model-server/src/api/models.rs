//! `GET /v1/models` and `GET /v1/models/{id}`: every served model, with OpenAI's fields
//! (`id`, `object`, `created`, `owned_by`) and the pool's: capability, state, device, tier,
//! estimate and measured bytes. A registered model no backend can run (Kimi K2) is listed with
//! state `unservable`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::Timer;
use crate::error::ApiError;
use crate::server::AppState;

#[derive(Serialize)]
struct ModelCard {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    capability: &'static str,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    download: Option<model_serving::DownloadProgress>,
    device: String,
    tier: &'static str,
    estimate_bytes: Option<u64>,
    estimate_mb: Option<u64>,
    measured_bytes: Option<u64>,
    reserved_bytes: u64,
}

fn cards(state: &AppState) -> Vec<ModelCard> {
    let view = crate::status::status(&state.pool, state.draining());
    state
        .pool
        .models()
        .map(|m| {
            let s = view.models.iter().find(|v| v.id == m.key);
            ModelCard {
                id: m.key.clone(),
                object: "model",
                created: state.started_unix,
                owned_by: "candle-pool",
                capability: m.capability().as_str(),
                state: s.map_or("unservable", |s| s.state),
                download: s.and_then(|s| s.download),
                device: m.device.to_string(),
                tier: s.map_or("warm", |s| s.tier),
                estimate_bytes: s.map(|s| s.estimate_bytes),
                estimate_mb: s.and_then(|s| s.estimate_mb),
                measured_bytes: s.and_then(|s| s.measured_bytes),
                reserved_bytes: s.map_or(0, |s| s.reserved_bytes),
            }
        })
        .collect()
}

/// The list.
pub async fn list(State(state): State<AppState>) -> Response {
    let mut timer = Timer::start(&state, "/v1/models", "");
    let body = serde_json::json!({ "object": "list", "data": cards(&state) });
    timer.finish(200);
    axum::Json(body).into_response()
}

/// One model.
pub async fn one(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let mut timer = Timer::start(&state, "/v1/models/{id}", &id);
    let response = match cards(&state).into_iter().find(|c| c.id == id) {
        Some(card) => axum::Json(card).into_response(),
        None => ApiError {
            code: "model_not_found",
            param: Some("model".into()),
            ..ApiError::not_found(format!(
                "model `{id}` is not served here; GET /v1/models lists them"
            ))
        }
        .into_response(),
    };
    timer.finish(response.status().as_u16());
    response
}
