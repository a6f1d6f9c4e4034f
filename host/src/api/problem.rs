//! Errors on HTTP: `application/problem+json` (RFC 9457) with a stable `type` per kind.
//!
//! Internal causes are logged with the request's trace id and never echoed: a client sees what
//! it can act on, nothing about the host's internals or anyone's secrets.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Base of every problem `type` URI.
pub const TYPE_BASE: &str = "https://adapter-host.dev/problems/";

/// An API error, rendered as problem+json.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, missing field, invalid value).
    #[error("{0}")]
    BadRequest(String),
    /// 401: the webhook signature (or the credentials) did not verify. The detail says which
    /// check failed, never what was expected.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource (or not one the caller may see: never 403, so nothing leaks).
    #[error("{0}")]
    NotFound(String),
    /// 405: the resource exists but does not take this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 405 with the `Allow` header: the webhook of a connection does not take this method.
    #[error("{detail}")]
    WrongMethod {
        /// What the caller reads.
        detail: String,
        /// The `Allow` header's value (`GET, POST`).
        allow: String,
    },
    /// 408: the request (its body) did not arrive in time.
    #[error("{0}")]
    Timeout(String),
    /// 409: conflicts with the resource's current state.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 429: too many requests.
    #[error("{0}")]
    TooManyRequests(String),
    /// 503: the host cannot take this now (shutting down, overloaded); retry later.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a fault of the host. The cause is logged, the client sees a generic message.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) | Self::WrongMethod { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable last segment of the `type` URI.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::MethodNotAllowed(_) | Self::WrongMethod { .. } => "method-not-allowed",
            Self::Timeout(_) => "request-timeout",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::TooManyRequests(_) => "too-many-requests",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The problem+json body of this error (a 500's cause is logged here, never shown).
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let detail = match self {
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "the host failed to handle this request; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        Problem {
            kind: format!("{TYPE_BASE}{}", self.kind()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            request_id: super::request_id::current(),
        }
    }

    /// A 500 whose cause is logged and not shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }
}

/// A problem+json answer of any status, with `detail`: the shape every error of the host has,
/// for answers made elsewhere than in a handler (an extractor's rejection). Its `type` ends in
/// the status's reason in kebab case (`unsupported-media-type`), like [`ApiError::kind`].
pub fn problem_response(status: StatusCode, detail: String) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let problem = Problem {
        kind: format!(
            "{TYPE_BASE}{}",
            title.to_ascii_lowercase().replace([' ', '\''], "-")
        ),
        title,
        status: status.as_u16(),
        detail,
        request_id: super::request_id::current(),
    };
    let mut response = (status, Json(problem)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The problem+json body (RFC 9457).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The request's id (also in the `X-Request-Id` header): quote it when reporting a
    /// problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.problem())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Self::WrongMethod { allow, .. } = &self
            && let Ok(allow) = HeaderValue::from_str(allow)
        {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Self::BadRequest("expected a JSON body (Content-Type: application/json)".into())
            }
            JsonRejection::BytesRejection(rejection) => Self::from_body(&rejection),
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl ApiError {
    /// The problem for a body that could not be read: it arrived too slowly (408), was larger
    /// than the route takes (413), or broke off (400).
    pub fn from_body(rejection: &axum::extract::rejection::BytesRejection) -> Self {
        if let Some(timeout) = crate::server::limits::BodyTimeout::find(rejection) {
            return Self::Timeout(timeout.to_string());
        }
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::PayloadTooLarge(rejection.body_text());
        }
        Self::BadRequest(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_problem_json_without_internal_detail() {
        let response = ApiError::internal("database password is hunter2").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["type"], "https://adapter-host.dev/problems/internal");
        assert_eq!(json["status"], 500);
    }

    #[tokio::test]
    async fn keeps_client_errors_actionable() {
        let response = ApiError::NotFound("no connection `c-1`".into()).into_response();
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["detail"], "no connection `c-1`");
        assert_eq!(json["title"], "Not Found");
    }
}
