//! The load client the load benches share: requests serialized before the clock starts, one
//! keep-alive HTTP/1.1 connection per request in flight, answers read by `Content-Length`, the
//! process's CPU time measured around each run.

#![allow(dead_code)] // Each bench uses its own part.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapter_host::signatures::{Secret, sign_standard_webhooks};
use axum::Router;
use axum::body::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::cpu::Cpu;

/// The benches' Standard Webhooks signing secret (base64, after `whsec_`).
pub const SECRET_B64: &str = "bG9hZC10ZXN0LXNpZ25pbmctc2VjcmV0LTAxMjM0NTY3";

/// A request as it goes on the wire (request line, headers, body).
pub type Request = Vec<u8>;

pub struct Run {
    pub requests: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub cpu: Cpu,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Process CPU time per request, in microseconds.
    pub fn cpu_per_request(&self) -> f64 {
        self.cpu.process.as_secs_f64() * 1e6 / self.requests as f64
    }

    /// The store writer thread's CPU time per request, in microseconds.
    pub fn writer_per_request(&self) -> f64 {
        self.cpu.writer.as_secs_f64() * 1e6 / self.requests as f64
    }

    pub fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub async fn serve(router: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// Sends one request on a keep-alive connection and reads the answer; panics unless it is a
/// 2xx with a `Content-Length` body.
pub async fn exchange(stream: &mut TcpStream, request: &[u8], buffer: &mut Vec<u8>) {
    stream.write_all(request).await.expect("sending a request");
    buffer.clear();
    let (head, length) = loop {
        let mut chunk = [0_u8; 4096];
        let read = stream.read(&mut chunk).await.expect("reading an answer");
        assert!(read > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end]).expect("an HTTP head");
            let status = head.split(' ').nth(1).unwrap_or_default();
            assert!(status.starts_with('2'), "answer {head}");
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .expect("a Content-Length");
            break (end + 4, length);
        }
    };
    while buffer.len() < head + length {
        let mut chunk = [0_u8; 4096];
        let read = stream.read(&mut chunk).await.expect("reading a body");
        assert!(read > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// Sends every request with `concurrency` in flight (one connection each); every answer must
/// be a 2xx.
pub async fn drive(addr: std::net::SocketAddr, requests: Vec<Request>, concurrency: usize) -> Run {
    send(addr, requests, concurrency, None).await
}

/// Sends every request, request `i` not before `i / rate` seconds from the start (an open
/// schedule: a slow answer does not slow the ones after it, up to `concurrency` in flight),
/// with `concurrency` keep-alive connections; every answer must be a 2xx. Latency counts from
/// when a request was due: waiting for a free connection is part of it.
pub async fn drive_paced(
    addr: std::net::SocketAddr,
    requests: Vec<Request>,
    concurrency: usize,
    rate: f64,
) -> Run {
    send(addr, requests, concurrency, Some(rate)).await
}

/// [`drive`], or [`drive_paced`] with a `rate`.
async fn send(
    addr: std::net::SocketAddr,
    requests: Vec<Request>,
    concurrency: usize,
    rate: Option<f64>,
) -> Run {
    let count = requests.len();
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let stream = TcpStream::connect(addr).await.expect("connecting");
        stream.set_nodelay(true).unwrap();
        streams.push(stream);
    }
    let cpu = Cpu::now();
    let started = tokio::time::Instant::now();
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let (requests, next) = (requests.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut buffer = Vec::with_capacity(4096);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else {
                        return latencies;
                    };
                    let sent = match rate {
                        Some(rate) => {
                            let due = started + Duration::from_secs_f64(i as f64 / rate);
                            tokio::time::sleep_until(due).await;
                            due
                        }
                        None => tokio::time::Instant::now(),
                    };
                    exchange(&mut stream, request, &mut buffer).await;
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let cpu = Cpu::now().since(cpu);
    latencies.sort();
    Run {
        requests: count,
        elapsed,
        latencies,
        cpu,
    }
}

/// A Standard Webhooks-signed POST of `body` to `path`, serialized.
pub fn signed(addr: std::net::SocketAddr, path: &str, id: &str, body: &Bytes) -> Request {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let secret = Secret::new(format!("whsec_{SECRET_B64}"));
    let signature = sign_standard_webhooks(&secret, id, &timestamp, body).unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         webhook-id: {id}\r\nwebhook-timestamp: {timestamp}\r\n\
         webhook-signature: {signature}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}
