//! The JSON body of a request, read under the body limit: a body over it is a 413, a body that
//! is not the request type a 400 naming the field (`messages[0].role`), both in OpenAI's shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::server::AppState;

/// A request body of type `T`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let Body(bytes) = Body::from_request(req, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// The raw request body, read under the limit (for bodies parsed into more than one type).
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large(state.options.body_limit)
                } else {
                    ApiError::invalid("body", format!("cannot read the request body: {e}"))
                }
            })
    }
}

/// Parses `bytes` as `T`; the error names the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let param = if path == "." { "body".to_owned() } else { path };
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("the request body is not valid JSON: {inner}")
        } else {
            format!("`{param}`: {inner}")
        };
        ApiError::invalid(param, message)
    })?;
    de.end().map_err(|e| {
        ApiError::invalid("body", format!("the request body is not valid JSON: {e}"))
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct R {
        model: String,
        messages: Vec<M>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct M {
        role: String,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<R>(br#"{"model": "m", "messages": [{"role": 3}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        assert!(e.message.contains("invalid type"), "{}", e.message);
        let e = parse::<R>(br#"{"messages": []}"#).unwrap_err();
        assert!(e.message.contains("missing field `model`"), "{}", e.message);
        let e = parse::<R>(b"{not json").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }
}
