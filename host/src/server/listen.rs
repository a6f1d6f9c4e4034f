//! The accept loop: HTTP/1.1 connections with the limits a public endpoint needs.
//!
//! - **A connection limit** below the process's file-descriptor limit, so that the host always
//!   has descriptors left for its database, its artifacts and `/healthz`. A connection past the
//!   limit is answered `503` problem+json at once and closed.
//! - **A header read timeout**: a client that opens a connection and sends no request (or
//!   trickles its headers) is dropped, whether it is the first request or the next one on a
//!   kept-alive connection. Bodies have their own timeouts ([`super::limits`]).
//! - **problem+json for hyper's own answers**: a request hyper cannot parse (a malformed request
//!   line, headers larger than [`ConnectionSettings::max_header_bytes`], a URI too long) is
//!   answered by hyper itself with an empty `400`/`431`/`414` before any handler runs;
//!   [`ProblemIo`] rewrites those answers on their way out into problem+json with the same
//!   status, so that every error of the host looks the same to its clients.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::api::problem::TYPE_BASE;

/// Limits of the connection layer.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Connections served at once; past it, new ones get a `503` and are closed. `None`: derived
    /// from the file-descriptor limit ([`default_max_connections`]).
    pub max_connections: Option<usize>,
    /// How long a client may take to send a request's head (request line and headers), counted
    /// from when the host starts waiting for it.
    pub header_read_timeout: Duration,
    /// The largest request head (request line and headers) accepted, in bytes; a larger one is
    /// answered `431`.
    pub max_header_bytes: usize,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_connections: None,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Descriptors kept back from the connection limit for everything else the host opens.
const RESERVED_DESCRIPTORS: u64 = 128;
/// The connection limit when the descriptor limit is large or unknown.
const MAX_CONNECTIONS: usize = 10_000;

/// The connection limit for this process: its soft file-descriptor limit less
/// [`RESERVED_DESCRIPTORS`], at most [`MAX_CONNECTIONS`], at least 16.
pub fn default_max_connections() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match soft {
        Some(limit) => usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS))
            .unwrap_or(MAX_CONNECTIONS)
            .clamp(16, MAX_CONNECTIONS),
        None => MAX_CONNECTIONS,
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the connections under way
/// finish their requests (for at most `drain`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ConnectionSettings,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> io::Result<()> {
    let max = settings
        .max_connections
        .unwrap_or_else(default_max_connections);
    tracing::info!(max_connections = max, "accepting connections");
    let slots = Arc::new(Semaphore::new(max));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8 * 1024))
        // One contiguous buffer per write: `ProblemIo` then sees an answer hyper makes on its
        // own in one piece.
        .writev(false);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors (or a connection reset before accept): the loop must not
                // spin or die; the connection limit normally keeps this from happening.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tokio::spawn(refuse(stream, max));
            continue;
        };
        // The peer's address goes with each request: a connection's source allow list reads
        // it (as `ConnectInfo`, the way axum's own `serve` hands it over).
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let connection = http.serve_connection(TokioIo::new(ProblemIo::new(stream)), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(drain) => {
            tracing::warn!("connections still open after the shutdown grace period");
        }
    }
    Ok(())
}

/// Answers a connection past the limit with a `503` and closes it, without reading its request.
async fn refuse(mut stream: TcpStream, max: usize) {
    let answer = problem_response(
        503,
        "Service Unavailable",
        &format!("the host serves at most {max} connections at once; retry shortly"),
        &[("retry-after", "1")],
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
}

/// A complete HTTP/1.1 problem+json answer that closes the connection.
fn problem_response(status: u16, title: &str, detail: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let kind = match status {
        400 => "bad-request",
        414 => "uri-too-long",
        431 => "request-header-fields-too-large",
        503 => "unavailable",
        _ => "error",
    };
    let body = serde_json::json!({
        "type": format!("{TYPE_BASE}{kind}"),
        "title": title,
        "status": status,
        "detail": detail,
    })
    .to_string();
    let mut out = format!(
        "HTTP/1.1 {status} {title}\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// The problem+json answer that replaces the empty one hyper writes for a request it could not
/// parse, when `written` is such an answer.
///
/// hyper answers a parse error, before any service runs, with exactly
/// `HTTP/1.1 <status> <reason>\r\nconnection: close\r\ncontent-length: 0\r\n` and a `date`
/// header; every answer of this host's own routes carries a `content-type`, so nothing else
/// matches.
fn replacement_for(written: &[u8]) -> Option<Vec<u8>> {
    let head = written.strip_suffix(b"\r\n\r\n")?;
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let mut headers: Vec<&str> = lines.collect();
    headers.sort_unstable();
    let canned = headers.len() == 3
        && headers[0] == "connection: close"
        && headers[1] == "content-length: 0"
        && headers[2].starts_with("date: ");
    if !canned {
        return None;
    }
    let (title, detail) = match status {
        400 => (
            "Bad Request",
            "the request is not valid HTTP/1.1 (request line, a header, or the URI)",
        ),
        414 => ("URI Too Long", "the request URI is too long"),
        431 => (
            "Request Header Fields Too Large",
            "the request's headers are too large",
        ),
        _ => return None,
    };
    Some(problem_response(status, title, detail, &[]))
}

/// A connection whose outgoing bytes are checked for hyper's own empty error answers, which are
/// replaced by problem+json ones (see [`replacement_for`]).
#[derive(Debug)]
pub struct ProblemIo<T> {
    inner: T,
    /// A replacement being written: the bytes and how many are out.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> ProblemIo<T> {
    /// Wraps a connection.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> ProblemIo<T> {
    /// Writes out a pending replacement.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
            if *done == bytes.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(replacement) = replacement_for(buf) {
            // Taken whole from hyper's point of view (it must not offer these bytes again);
            // ours goes out instead, now or on the next write, flush or shutdown.
            self.pending = Some((replacement, 0));
            if let Poll::Ready(Err(error)) = self.poll_pending(cx) {
                return Poll::Ready(Err(error));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_answers_to_unparsable_requests_become_problems() {
        for (status, canned) in [
            (
                400,
                "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 22:26:27 GMT\r\n\r\n",
            ),
            (
                414,
                "HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\nconnection: close\r\ndate: x\r\n\r\n",
            ),
            (
                431,
                "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n",
            ),
        ] {
            let replaced = replacement_for(canned.as_bytes()).expect(canned);
            let text = String::from_utf8(replaced).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            assert!(
                text.contains("content-type: application/problem+json\r\n"),
                "{text}"
            );
            let body = text.split("\r\n\r\n").nth(1).unwrap();
            let problem: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(problem["status"], status);
            let length = format!("content-length: {}\r\n", body.len());
            assert!(text.contains(&length), "{text}");
        }
    }

    #[test]
    fn every_other_answer_passes_untouched() {
        for written in [
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 2\r\ndate: x\r\n\r\n{}",
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\nconnection: close\r\ndate: x\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            "some body bytes",
            "",
        ] {
            assert_eq!(replacement_for(written.as_bytes()), None, "{written:?}");
        }
    }

    #[tokio::test]
    async fn a_replacement_goes_out_whole_through_short_writes() {
        use tokio::io::AsyncReadExt;
        // A pipe that takes three bytes at a time.
        let (client, server) = tokio::io::duplex(3);
        let mut io = ProblemIo::new(server);
        let canned = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            out
        });
        assert_eq!(io.write(canned).await.unwrap(), canned.len());
        io.shutdown().await.unwrap();
        drop(io);
        let out = String::from_utf8(reader.await.unwrap()).unwrap();
        assert!(out.ends_with('}'), "{out}");
        assert!(out.contains("application/problem+json"), "{out}");
    }
}
