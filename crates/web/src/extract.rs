//! Extractors whose rejections come back in our JSON error format: a JSON body with unknown
//! fields denied (422), malformed JSON (400), wrong content type (415), oversized (413).

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{header, StatusCode},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON request body (required).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// A JSON request body that may be absent (then `T::default()`).
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<(bool, Bytes), ApiError> {
    let json_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::bad_request("BAD_BODY", format!("could not read the request body: {rejection}"))
        }
    })?;
    if !bytes.is_empty() && json_type != Some(true) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    Ok((json_type == Some(true), bytes))
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::unprocessable("VALIDATION_ERROR", format!("invalid request body: {e}"))
        }
        _ => ApiError::bad_request("MALFORMED_JSON", format!("request body is not valid JSON: {e}")),
    })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (_, bytes) = read_body(req, state).await?;
        if bytes.is_empty() {
            return Err(ApiError::unprocessable(
                "VALIDATION_ERROR",
                "a JSON request body is required",
            ));
        }
        parse(&bytes).map(ApiJson)
    }
}

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (_, bytes) = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse(&bytes).map(OptionalJson)
    }
}

/// Validates an org slug taken from a URL path (400 with the rule on failure).
pub fn path_org(slug: &str) -> Result<&str, ApiError> {
    cloudact_core::validate::validate_org_slug(slug)
        .map(|_| slug)
        .map_err(|e| ApiError::bad_request("INVALID_ORG_SLUG", e.to_string()))
}
