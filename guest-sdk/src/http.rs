//! Requests to the CRM's API, made by the host.
//!
//! An adapter never opens a socket. It describes a request ([`HttpRequest`]) and the host
//! performs it: only to the connection's API base URL (and the origins it allows), with the
//! connection's credential added by the host (the adapter never sees it), under the
//! connection's rate limit, timeouts and size caps, and recorded with the invocation.
//!
//! Two ways to use it:
//! - **Polling**: [`crate::Adapter::poll_request`] returns the next request from the saved
//!   cursor; the host performs it and hands the answer to [`crate::Adapter::handle_poll`].
//! - **Follow-up requests** inside any invocation: [`fetch`], for example to read the full
//!   records behind a webhook that carries only ids.
//!
//! ```
//! use crm_adapter_sdk::http::{self, HttpRequest};
//! use crm_adapter_sdk::testing;
//!
//! // Natively, answers come from the test's script.
//! testing::respond_json(200, r#"{"id": "D-1", "amount": "12.50"}"#);
//! let deal: serde_json::Value = http::fetch(&HttpRequest::get("/crm/v3/objects/deals/D-1"))?
//!     .ok()?
//!     .json()?;
//! assert_eq!(deal["amount"], "12.50");
//! assert_eq!(testing::requests()[0].url, "/crm/v3/objects/deals/D-1");
//! # Ok::<(), crm_adapter_sdk::AdapterError>(())
//! ```

use std::fmt;

use serde::de::DeserializeOwned;

use crate::{AdapterError, Header};

/// A request to the CRM's API.
///
/// ```
/// use crm_adapter_sdk::http::HttpRequest;
///
/// let req = HttpRequest::get("/services/data/v59.0/query")
///     .query("q", "SELECT Id FROM Account")
///     .header("accept", "application/json");
/// assert_eq!(req.method, "GET");
/// assert_eq!(req.query, [("q".to_owned(), "SELECT Id FROM Account".to_owned())]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequest {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// A path relative to the connection's API base URL (`/crm/v3/objects/deals`), or an
    /// absolute URL on one of its allowed origins (a next-page link as the CRM returns it).
    pub url: String,
    /// Query parameters, in order; the host encodes them.
    pub query: Vec<(String, String)>,
    /// Non-secret headers (the host adds the credential, and refuses `authorization`,
    /// `cookie`, `host` and `proxy-*`).
    pub headers: Vec<Header>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
}

impl HttpRequest {
    /// A request with `method` to `url`.
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.into(),
            ..Self::default()
        }
    }

    /// A `GET` of `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` of `body` as JSON to `url` (with `content-type: application/json`).
    ///
    /// ```
    /// let req = crm_adapter_sdk::http::HttpRequest::post_json(
    ///     "/crm/v3/objects/deals/search",
    ///     &serde_json::json!({"limit": 100}),
    /// );
    /// assert_eq!(req.body.as_deref(), Some(&br#"{"limit":100}"#[..]));
    /// ```
    pub fn post_json<T: serde::Serialize + ?Sized>(url: impl Into<String>, body: &T) -> Self {
        let mut request = Self::new("POST", url).header("content-type", "application/json");
        // Serializing a `Serialize` value to a string only fails for maps with non-string keys.
        request.body = Some(serde_json::to_vec(body).unwrap_or_default());
        request
    }

    /// Adds a query parameter.
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    /// Adds a header (the name is lower-cased).
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push(Header {
            name: name.to_ascii_lowercase(),
            value: value.into(),
        });
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }
}

/// The CRM's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// The HTTP status.
    pub status: u16,
    /// The headers, names lower-cased.
    pub headers: Vec<Header>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header (the name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer itself when its status is 2xx, else [`AdapterError::Failed`] naming the
    /// status (the invocation fails and can be redriven or retried at the next poll).
    pub fn ok(self) -> Result<Self, AdapterError> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(AdapterError::Failed(format!(
                "the CRM answered {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )))
        }
    }

    /// The body parsed as JSON into `T`, or [`AdapterError::Failed`] saying why.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, AdapterError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            AdapterError::Failed(format!("the CRM's answer is not the expected JSON: {e}"))
        })
    }
}

/// Why a request was not answered.
///
/// Converts into [`AdapterError::Failed`] with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Refused before anything was sent (a URL outside the connection's origins, a
    /// forbidden header, no API access).
    NotAllowed(String),
    /// The invocation's request budget is spent.
    LimitExceeded(String),
    /// The CRM did not answer in time.
    Timeout(String),
    /// The answer is larger than the cap.
    TooLarge(String),
    /// The CRM could not be reached, or kept failing.
    Unavailable(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAllowed(m) => write!(f, "request not allowed: {m}"),
            Self::LimitExceeded(m) => write!(f, "request budget spent: {m}"),
            Self::Timeout(m) => write!(f, "request timed out: {m}"),
            Self::TooLarge(m) => write!(f, "answer too large: {m}"),
            Self::Unavailable(m) => write!(f, "CRM unavailable: {m}"),
        }
    }
}

impl std::error::Error for FetchError {}

impl From<FetchError> for AdapterError {
    fn from(err: FetchError) -> Self {
        AdapterError::Failed(err.to_string())
    }
}

/// Asks the host to perform `request` and returns the CRM's answer (whatever its status).
pub fn fetch(request: &HttpRequest) -> Result<HttpResponse, FetchError> {
    backend::fetch(request)
}

#[cfg(target_arch = "wasm32")]
mod backend {
    use super::{FetchError, HttpRequest, HttpResponse};
    use crate::Header;
    use crate::bindings::crm::adapter::http as wit;

    pub(super) fn fetch(request: &HttpRequest) -> Result<HttpResponse, FetchError> {
        wit::fetch(&crate::glue::http_request(request.clone()))
            .map(|r| HttpResponse {
                status: r.status,
                headers: r
                    .headers
                    .into_iter()
                    .map(|h| Header {
                        name: h.name,
                        value: h.value,
                    })
                    .collect(),
                body: r.body,
            })
            .map_err(|e| match e {
                wit::FetchError::NotAllowed(m) => FetchError::NotAllowed(m),
                wit::FetchError::LimitExceeded(m) => FetchError::LimitExceeded(m),
                wit::FetchError::Timeout(m) => FetchError::Timeout(m),
                wit::FetchError::TooLarge(m) => FetchError::TooLarge(m),
                wit::FetchError::Unavailable(m) => FetchError::Unavailable(m),
            })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod backend {
    pub(super) use crate::testing::memory::fetch;
}
