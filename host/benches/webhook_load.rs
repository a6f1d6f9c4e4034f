//! Webhook deliveries per second and acknowledgment latency through the full pipeline
//! (signature check, durable inbox, champion-health in the sandbox, contracts, durable outbox
//! with group commit), against a bare axum echo endpoint measured in the same run with the same
//! client, all on loopback.
//!
//! The client shares the process (and the machine's cores) with the host, so it is kept lean:
//! one keep-alive HTTP/1.1 connection per request in flight, every request serialized before
//! the clock starts, answers read by `Content-Length`. The CPU time each run costs the process
//! is reported too (per request, and the store writer's share), since on a shared machine it
//! moves less than the rates do.
//!
//! `cargo bench -p adapter-host --bench webhook_load` (`LOAD_REQUESTS`, `LOAD_ECHO_REQUESTS`,
//! `LOAD_CONCURRENCY` override the defaults). Every delivery carries the same enrollment by
//! default, so after the first the adapter only reads its state; `LOAD_STATE=hot` changes the
//! member's name in each one, so that every delivery rewrites the same state key: the worst
//! case of state contention, where invocations of the connection must commit one at a time. The echo endpoint gets ten times the requests by
//! default: it answers in a fraction of the time, and a run of a few milliseconds is mostly
//! noise. BENCHMARKS.md records the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adapter_host::serve::{ServeOptions, open_host};
use adapter_host::server::{ServerSettings, app};
use adapter_host::signatures::{Secret, sign_standard_webhooks};
use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "common/cpu.rs"]
mod cpu;
use cpu::Cpu;

const SECRET_B64: &str = "bG9hZC10ZXN0LXNpZ25pbmctc2VjcmV0LTAxMjM0NTY3";

/// A request as it goes on the wire (request line, headers, body).
type Request = Vec<u8>;

struct Run {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    cpu: Cpu,
}

impl Run {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Process CPU time per request, in microseconds.
    fn cpu_per_request(&self) -> f64 {
        self.cpu.process.as_secs_f64() * 1e6 / self.requests as f64
    }

    /// The store writer thread's CPU time per request, in microseconds.
    fn writer_per_request(&self) -> f64 {
        self.cpu.writer.as_secs_f64() * 1e6 / self.requests as f64
    }

    fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn serve(router: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// Sends one request on a keep-alive connection and reads the answer; panics unless it is a
/// 2xx with a `Content-Length` body.
async fn exchange(stream: &mut TcpStream, request: &[u8], buffer: &mut Vec<u8>) {
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
async fn drive(addr: std::net::SocketAddr, requests: Vec<Request>, concurrency: usize) -> Run {
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
    let started = Instant::now();
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
                    let sent = Instant::now();
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
fn signed(addr: std::net::SocketAddr, path: &str, id: &str, body: &Bytes) -> Request {
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

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and expects no work.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let requests = env_usize("LOAD_REQUESTS", 5_000);
    let echo_requests = env_usize("LOAD_ECHO_REQUESTS", 10 * requests);
    let concurrency = env_usize("LOAD_CONCURRENCY", 32);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[[adapters]]
tenant_id = "bench"
name = "champion-health"
wasm = "{}"

[[connections]]
id = "bench"
tenant_id = "bench"
provider = "custom"
adapter = "champion-health"
signature = {{ scheme = "standard_webhooks" }}
secret = "bench/signing"

[[secrets]]
name = "bench/signing"
value = "whsec_{SECRET_B64}"
"#,
                test_artifacts::CHAMPION_HEALTH
            ),
        )
        .unwrap();
        let settings = ServerSettings::default();
        let options = ServeOptions {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().unwrap(),
            config: Some(config),
            public_base_url: None,
            relay: Default::default(),
            server: settings.clone(),
            ..ServeOptions::default()
        };
        let host = open_host(&options).await.unwrap();
        let host_addr = serve(app(host.clone(), settings)).await;
        let echo_addr = serve(Router::new().route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        ))
        .await;

        let body = Bytes::from(
            std::fs::read(test_artifacts::sample_file(
                "champion-health/fixtures/enrollment-1kb.json",
            ))
            .unwrap(),
        );
        let hot = std::env::var("LOAD_STATE").is_ok_and(|mode| mode == "hot");
        let text = String::from_utf8(body.to_vec()).unwrap();
        let make = |addr, path: &str, prefix: &str, count: usize| -> Vec<Request> {
            (0..count)
                .map(|i| {
                    let body = if hot {
                        let name = format!("\"first_name\": \"Alex {prefix} {i}\"");
                        Bytes::from(text.replacen("\"first_name\": \"Alex\"", &name, 1))
                    } else {
                        body.clone()
                    };
                    signed(addr, path, &format!("{prefix}-{i}"), &body)
                })
                .collect()
        };
        let hook = "/v1/hooks/bench";
        // Warm both paths (compiled adapter, allocator, page cache) before measuring.
        drive(
            echo_addr,
            make(echo_addr, "/echo", "warm", echo_requests),
            concurrency,
        )
        .await;
        drive(host_addr, make(host_addr, hook, "warm", 500), concurrency).await;

        let echo = drive(
            echo_addr,
            make(echo_addr, "/echo", "echo", echo_requests),
            concurrency,
        )
        .await;
        let pipeline = drive(
            host_addr,
            make(host_addr, hook, "load", requests),
            concurrency,
        )
        .await;

        let stats = host.store().write_stats();
        println!(
            "requests: {echo_requests} echo, {requests} pipeline; concurrency: {concurrency}; \
             body: {} bytes; state: {}",
            body.len(),
            if hot {
                "one key rewritten by every delivery"
            } else {
                "read only"
            }
        );
        println!("| endpoint | deliveries/s | p50 | p99 | CPU/request | store writer |");
        println!("|---|---|---|---|---|---|");
        for (name, run) in [("bare axum echo", &echo), ("full pipeline", &pipeline)] {
            println!(
                "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.0} µs | {:.0} µs |",
                run.rate(),
                run.percentile(0.50).as_secs_f64() * 1e3,
                run.percentile(0.99).as_secs_f64() * 1e3,
                run.cpu_per_request(),
                run.writer_per_request(),
            );
        }
        println!(
            "ratio (pipeline / echo, deliveries/s): {:.3}x",
            pipeline.rate() / echo.rate()
        );
        println!(
            "store: {} write commands in {} commits ({:.1} per fsync)",
            stats.commands,
            stats.commits,
            stats.commands as f64 / stats.commits.max(1) as f64
        );
    });
}
