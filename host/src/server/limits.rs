//! Request limits that hold whatever the client does: a request head larger than the limit is
//! refused (`431`), a body declared larger than the route takes is refused at once (`413`,
//! before a byte of it is read), and a body must arrive within a total time and without long
//! pauses (`408` otherwise), so a slow client cannot hold a connection, a task and a buffer for
//! as long as it likes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::api::ApiError;

/// Request limits, bodies by route.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// The largest request head (request line and headers), in bytes. The connection layer
    /// refuses far larger ones before parsing them; this makes the limit exact.
    pub head_bytes: usize,
    /// Webhook deliveries (`/v1/hooks/...`), in bytes.
    pub webhook_bytes: usize,
    /// Adapter uploads (`POST /v1/adapters/{id}/versions`), in bytes.
    pub upload_bytes: usize,
    /// Every other route (JSON of the management API), in bytes.
    pub default_bytes: usize,
    /// How long a whole body may take to arrive.
    pub total_timeout: Duration,
    /// The longest pause between two pieces of a body.
    pub idle_timeout: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            head_bytes: 64 * 1024,
            webhook_bytes: 1024 * 1024,
            upload_bytes: 32 * 1024 * 1024,
            // axum's own default for a body it buffers.
            default_bytes: 2 * 1024 * 1024,
            total_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

impl RequestLimits {
    /// The largest body the route of `path` takes.
    pub fn limit_for(&self, path: &str) -> usize {
        if path.starts_with("/v1/hooks/") {
            self.webhook_bytes
        } else if path.starts_with("/v1/adapters/") && path.ends_with("/versions") {
            self.upload_bytes
        } else {
            self.default_bytes
        }
    }
}

/// Middleware: refuses a request head larger than the limit and a body declared larger than
/// its route takes, and bounds the time the rest take to arrive.
pub async fn bound_requests(
    State(limits): State<RequestLimits>,
    request: Request,
    next: Next,
) -> Response {
    let head: usize = request.method().as_str().len()
        + request.uri().to_string().len()
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if head > limits.head_bytes {
        return crate::api::problem::problem_response(
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request's head is {head} bytes; the host takes at most {}",
                limits.head_bytes
            ),
        );
    }
    let limit = limits.limit_for(request.uri().path());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if let Some(declared) = declared
        && declared > limit as u64
    {
        return ApiError::PayloadTooLarge(format!(
            "the body is declared as {declared} bytes; this endpoint takes at most {limit}"
        ))
        .into_response();
    }
    let (parts, body) = request.into_parts();
    let body = Body::new(Deadlined::new(body, &limits));
    next.run(Request::from_parts(parts, body)).await
}

/// Why a body stopped arriving.
#[derive(Debug, thiserror::Error)]
pub enum BodyTimeout {
    /// It took longer in all than the limit.
    #[error("the request body did not arrive within {0:?}")]
    Total(Duration),
    /// It paused for longer than the limit.
    #[error("the request body paused for more than {0:?}")]
    Idle(Duration),
}

impl BodyTimeout {
    /// The timeout behind a body-read error, if it is one.
    pub fn find<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e BodyTimeout> {
        let mut cause = Some(error);
        while let Some(error) = cause {
            if let Some(timeout) = error.downcast_ref::<BodyTimeout>() {
                return Some(timeout);
            }
            cause = error.source();
        }
        None
    }
}

/// A body that fails with [`BodyTimeout`] when it takes too long in all, or pauses too long.
struct Deadlined {
    inner: Body,
    total: Duration,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    pause: Pin<Box<Sleep>>,
}

impl Deadlined {
    fn new(inner: Body, limits: &RequestLimits) -> Self {
        Self {
            inner,
            total: limits.total_timeout,
            idle: limits.idle_timeout,
            deadline: Box::pin(tokio::time::sleep(limits.total_timeout)),
            pause: Box::pin(tokio::time::sleep(limits.idle_timeout)),
        }
    }
}

impl HttpBody for Deadlined {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.pause.as_mut().reset(Instant::now() + this.idle);
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout::Total(this.total)))));
        }
        if this.pause.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout::Idle(this.idle)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
