//! Request ids: every HTTP request gets one, answered in `X-Request-Id`, carried by its log
//! lines and by any problem+json it is answered with, so a client's report and the host's logs
//! meet. A caller's own `X-Request-Id` (a proxy's, say) is kept when it is a sane token.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The header a request id travels in, both ways.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a caller.
const MAX_BYTES: usize = 128;

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request the current task serves, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Whether a caller's id is kept: 1 to 128 of `A-Z a-z 0-9 - _ . : /`.
fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
}

/// Middleware: assigns the request id, serves the request in its scope, answers it.
pub async fn assign(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let span = tracing::info_span!("request", request_id = %id);
    let header = HeaderValue::from_str(&id).ok();
    let mut response = CURRENT.scope(id, next.run(request).instrument(span)).await;
    if let Some(header) = header {
        response.headers_mut().insert(HEADER, header);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_caller_ids_are_kept() {
        for good in [
            "abc",
            "0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b",
            "lb:1/req.9_x",
        ] {
            assert!(acceptable(good), "{good}");
        }
        let long = "a".repeat(MAX_BYTES + 1);
        for bad in ["", "has space", "new\nline", "quote\"", long.as_str(), "é"] {
            assert!(!acceptable(bad), "{bad:?}");
        }
    }
}
