//! The sandbox's side of `crm:adapter/http` (0.2.0): what an adapter may ask the host to fetch,
//! and the interface of whatever performs it.
//!
//! The sandbox never touches the network. A [`Fetch`] implementation (the host's egress client,
//! bound to one connection and one invocation) checks the request against the connection's
//! allow list, adds the credential, applies the rate limit, timeouts and size caps, and records
//! the exchange. While a request is out, the invocation's compute deadline is paused: network
//! time is bounded by the limits of the [`Fetch`], not by the adapter's CPU deadline.

use serde::{Deserialize, Serialize};

/// A request an adapter asks the host to make to the CRM's API (the WIT `http-request`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// A path relative to the connection's API base URL, or an absolute URL on one of its
    /// allowed origins.
    pub url: String,
    /// Query parameters, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, String)>,
    /// Non-secret headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "body_text")]
    pub body: Option<Vec<u8>>,
}

/// The CRM's answer (the WIT `http-response`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpResponse {
    /// The HTTP status.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Why a request was not answered (the WIT `fetch-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Refused before anything was sent.
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// The invocation's request budget is spent.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// No answer in time.
    #[error("timeout: {0}")]
    Timeout(String),
    /// The answer is larger than the cap.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The CRM could not be reached, or kept failing.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Performs an adapter's requests for one invocation.
#[async_trait::async_trait]
pub trait Fetch: Send + Sync + std::fmt::Debug {
    /// Performs `request` (or refuses it) and answers.
    async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse, FetchError>;
}

/// A request body shown as text when it is UTF-8 (JSON, form data), else as base64.
mod body_text {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match body {
            None => s.serialize_none(),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => s.serialize_str(text),
                Err(_) => s.serialize_str(&format!(
                    "base64:{}",
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                )),
            },
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        Ok(text.map(|text| match text.strip_prefix("base64:") {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap_or_else(|_| text.clone().into_bytes()),
            None => text.into_bytes(),
        }))
    }
}
