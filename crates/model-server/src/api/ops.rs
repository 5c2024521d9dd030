//! `GET /health` (no API key needed: 200 while serving, 503 while draining), `GET /status`
//! (the pool's status as JSON, see [`crate::status`]) and `GET /metrics` (Prometheus text,
//! see [`crate::metrics`]).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::server::AppState;

/// Liveness and readiness.
pub async fn health(State(state): State<AppState>) -> Response {
    if state.draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "draining"})),
        )
            .into_response()
    } else {
        axum::Json(serde_json::json!({"status": "ok"})).into_response()
    }
}

/// The pool's status.
pub async fn status(State(state): State<AppState>) -> Response {
    axum::Json(crate::status::status(&state.pool, state.draining())).into_response()
}

/// Prometheus text format 0.0.4.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&state.pool),
    )
        .into_response()
}
