//! The one error type handlers return. It renders as
//! `{"detail": <what to do>, "error": <STABLE_CODE>, "request_id": <id>}`; 5xx bodies carry
//! a generic message (the cause goes to the log with the request id, never to the client).

use axum::{
    http::{header, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use cloudact_core::{kms::KmsError, meta::MetaError, warehouse::WarehouseError};
use serde_json::json;

use crate::layers::current_request_id;

/// An HTTP error with a stable code and an actionable message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            headers: Vec::new(),
            extra: None,
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// Extra machine-readable fields merged into the body.
    pub fn with_extra(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    pub fn too_many_requests(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", detail)
            .with_header(header::RETRY_AFTER, &retry_after_secs.max(1).to_string())
    }
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
    }

    /// A 500 whose cause is logged (with the request id) but not returned.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "The server failed to process the request; quote the request_id when reporting it.",
        )
    }

    /// The stable code for a bare status (used for responses axum produced itself).
    pub fn code_for_status(status: StatusCode) -> &'static str {
        match status.as_u16() {
            400 => "BAD_REQUEST",
            401 => "UNAUTHORIZED",
            403 => "FORBIDDEN",
            404 => "NOT_FOUND",
            405 => "METHOD_NOT_ALLOWED",
            408 => "REQUEST_TIMEOUT",
            409 => "CONFLICT",
            413 => "PAYLOAD_TOO_LARGE",
            415 => "UNSUPPORTED_MEDIA_TYPE",
            422 => "VALIDATION_ERROR",
            429 => "RATE_LIMITED",
            503 => "SERVICE_UNAVAILABLE",
            s if s >= 500 => "INTERNAL_ERROR",
            _ => "REQUEST_ERROR",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The audit trail records what a person saw (5xx details are already generic).
        let detail = self.detail.clone();
        crate::layers::note(|n| n.error_detail = Some(detail));
        let mut body = json!({
            "detail": self.detail,
            "error": self.code,
            "request_id": current_request_id(),
        });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) = (self.extra, body.as_object_mut()) {
            for (k, v) in extra {
                obj.entry(k).or_insert(v);
            }
        }
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// The answer while the central dataset or one of its tables is missing (never bootstrapped,
/// or being re-created by a forced bootstrap): 503, not a 500.
fn not_bootstrapped(e: &WarehouseError) -> Option<ApiError> {
    let central = cloudact_core::meta::CENTRAL_DATASET;
    let missing = match e {
        WarehouseError::DatasetNotFound(d) => d == central,
        WarehouseError::TableNotFound { dataset, .. } => dataset == central,
        _ => false,
    };
    missing.then(|| {
        tracing::warn!(error = %e, "central dataset not ready");
        ApiError::unavailable(
            "NOT_BOOTSTRAPPED",
            "The platform is not bootstrapped (or is being re-bootstrapped); run POST /api/v1/admin/bootstrap and retry.",
        )
        .with_header(header::RETRY_AFTER, "5")
    })
}

impl From<WarehouseError> for ApiError {
    fn from(e: WarehouseError) -> Self {
        if let Some(answer) = not_bootstrapped(&e) {
            return answer;
        }
        match e {
            WarehouseError::Unavailable(_) => {
                tracing::warn!(error = %e, "warehouse unavailable");
                ApiError::unavailable(
                    "WAREHOUSE_UNAVAILABLE",
                    "The warehouse is temporarily unavailable; retry shortly.",
                )
                .with_header(header::RETRY_AFTER, "5")
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::Warehouse(w) => w.into(),
            MetaError::Conflict(m) => ApiError::conflict("CONFLICT", m),
            MetaError::NotFound(m) => ApiError::not_found("NOT_FOUND", m),
            other => ApiError::internal(other),
        }
    }
}

impl From<KmsError> for ApiError {
    fn from(e: KmsError) -> Self {
        match e {
            KmsError::Unavailable(_) => {
                tracing::warn!(error = %e, "key service unavailable");
                ApiError::unavailable(
                    "KMS_UNAVAILABLE",
                    "The key service is temporarily unavailable; retry shortly.",
                )
            }
            other => ApiError::internal(other),
        }
    }
}
