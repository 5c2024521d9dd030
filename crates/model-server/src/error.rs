//! Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the
//! status code each kind of failure gets and a `Retry-After` header where a retry makes sense.
//!
//! | failure | status | `type` / `code` |
//! |---|---|---|
//! | bad JSON, a bad or missing field, a wrong capability | 400 | `invalid_request_error` / `invalid_request`, `wrong_capability` … |
//! | input too long for the context | 400 | `invalid_request_error` / `context_length_exceeded` |
//! | a model (or image size) that can never fit the budget | 400 | `invalid_request_error` / `model_never_fits` |
//! | missing or wrong API key | 401 | `invalid_request_error` / `invalid_api_key` |
//! | unknown model or route | 404 | `invalid_request_error` / `model_not_found`, `not_found` |
//! | body over the limit | 413 | `invalid_request_error` / `request_too_large` |
//! | queue full | 429 + `Retry-After` | `rate_limit_error` / `model_busy` |
//! | load failed or cooling down, not loaded by the deadline | 503 + `Retry-After` | `server_error` / `model_unavailable`, `model_loading` |
//! | shutting down | 503 | `server_error` / `shutting_down` |
//! | deadline passed | 504 | `server_error` / `timeout` |
//! | the model failed, a bug | 500 | `server_error` / `backend_error`, `internal_error` |

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use model_pool::{ModelStateKind, PoolError, TimeoutPhase};
use model_serving::{ModelPool, ServeError};
use serde::Serialize;

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI's `type`.
    pub kind: &'static str,
    /// OpenAI's `code`.
    pub code: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    /// What went wrong and how to fix it.
    pub message: String,
    /// When a retry makes sense.
    pub retry_after: Option<Duration>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

/// The `error` object of an answer (also sent as an event when a stream fails).
#[derive(Serialize)]
pub(crate) struct Detail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            kind,
            code,
            param: None,
            message,
            retry_after: None,
        }
    }

    /// 400 for the field `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.into()),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
                message.into(),
            )
        }
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            message.into(),
        )
    }

    /// 404 for a route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            message.into(),
        )
    }

    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            message.into(),
        )
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!(
                "the request body is larger than the server's limit of {limit} bytes; send less, or start the server with a larger --body-limit"
            ),
        )
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            message.into(),
        )
    }

    /// 503 while the server drains.
    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "shutting_down",
            "the server is shutting down".into(),
        )
    }

    /// The answer to a pool failure. `input` names the request field that carries the inputs
    /// (`input`, `messages`, `prompt`), for input errors; `pool` tells a request that timed out
    /// waiting for its model to load (503, retry later) from one that timed out otherwise (504).
    pub fn from_serve(e: &ServeError, input: &str, pool: &ModelPool) -> Self {
        let message = e.to_string();
        let mut out = match e {
            ServeError::Pool(PoolError::UnknownModel { .. }) | ServeError::NotInRegistry { .. } => {
                ApiError {
                    param: Some("model".into()),
                    ..Self::new(
                        StatusCode::NOT_FOUND,
                        "invalid_request_error",
                        "model_not_found",
                        message,
                    )
                }
            }
            ServeError::Pool(PoolError::NeverFits { .. })
            | ServeError::Pool(PoolError::BlockedByPinned { .. }) => ApiError {
                code: "model_never_fits",
                ..Self::invalid("model", message)
            },
            ServeError::ImageNeverFits { .. } => ApiError {
                code: "model_never_fits",
                ..Self::invalid("size", message)
            },
            ServeError::NoBackend { .. } => ApiError {
                code: "no_backend",
                ..Self::invalid("model", message)
            },
            ServeError::WrongCapability { .. } => ApiError {
                code: "wrong_capability",
                ..Self::invalid("model", message)
            },
            ServeError::Input { .. } => ApiError {
                code: "invalid_input",
                ..Self::invalid(input, message)
            },
            ServeError::ContextTooLong { .. } => ApiError {
                code: "context_length_exceeded",
                ..Self::invalid(input, message)
            },
            ServeError::InvalidRequest { param, .. } => {
                Self::invalid(param.map_or(input, |p| p), message)
            }
            ServeError::Busy { .. } | ServeError::Pool(PoolError::Busy { .. }) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "model_busy",
                message,
            ),
            ServeError::Pool(
                PoolError::LoadFailed { .. }
                | PoolError::LoadPanicked { .. }
                | PoolError::LoadOutOfMemory { .. }
                | PoolError::CoolingDown { .. },
            ) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "model_unavailable",
                message,
            ),
            ServeError::Pool(PoolError::Timeout { model, phase, .. }) => {
                // A request that timed out queued for a model that is not ready waited for
                // its load (which may have been abandoned with it since).
                let loading = *phase == TimeoutPhase::Queued
                    && pool
                        .status()
                        .model(model)
                        .is_some_and(|s| s.state != ModelStateKind::Ready);
                if loading {
                    // The load goes on: a retry once it is done is served. Its last measured
                    // duration is the best guess of when that is.
                    let last = pool
                        .measurements()
                        .get(model.as_str())
                        .map(|m| m.window.1.saturating_sub(m.window.0));
                    ApiError {
                        retry_after: Some(last.unwrap_or(Duration::from_secs(1))),
                        ..Self::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "server_error",
                            "model_loading",
                            format!("{message}; the model was loading, retry later"),
                        )
                    }
                } else {
                    Self::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "server_error",
                        "timeout",
                        message,
                    )
                }
            }
            ServeError::Pool(PoolError::ShuttingDown { .. }) => ApiError {
                message,
                ..Self::shutting_down()
            },
            ServeError::Cancelled { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "cancelled",
                message,
            ),
            ServeError::Backend { .. } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "backend_error",
                message,
            ),
            _ => Self::internal(message),
        };
        if out.retry_after.is_none() {
            out.retry_after = e.retry_after();
        }
        out
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(Body {
            error: self.detail(),
        })
        .unwrap_or_default()
    }

    pub(crate) fn detail(&self) -> Detail<'_> {
        Detail {
            message: &self.message,
            kind: self.kind,
            param: self.param.as_deref(),
            code: self.code,
        }
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(d) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_seconds(d)),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn the_body_is_openais_shape() {
        let e = ApiError::invalid("temperature", "temperature = -1 must be ≥ 0");
        assert_eq!(
            e.body(),
            serde_json::json!({"error": {
                "message": "temperature = -1 must be ≥ 0",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": "invalid_request",
            }})
        );
    }
}
