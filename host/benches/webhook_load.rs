//! Webhook deliveries per second and acknowledgment latency through the full pipeline
//! (signature check, durable inbox, champion-health in the sandbox, contracts, durable outbox
//! with group commit), against a bare axum echo endpoint measured in the same run with the same
//! client, all on loopback.
//!
//! `cargo bench -p adapter-host --bench webhook_load` (`LOAD_REQUESTS`, `LOAD_CONCURRENCY`
//! override the defaults). BENCHMARKS.md records the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adapter_host::serve::{ServeOptions, open_host};
use adapter_host::server::{ServerSettings, app};
use adapter_host::signatures::{Secret, sign_standard_webhooks};
use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

const SECRET_B64: &str = "bG9hZC10ZXN0LXNpZ25pbmctc2VjcmV0LTAxMjM0NTY3";

struct Request {
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

struct Run {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
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

/// Sends every request with `concurrency` in flight; every answer must be a 2xx.
async fn drive(client: &reqwest::Client, requests: Vec<Request>, concurrency: usize) -> Run {
    let count = requests.len();
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, requests, next) = (client.clone(), requests.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else {
                        return latencies;
                    };
                    let mut builder = client.post(&request.url).body(request.body.clone());
                    for (name, value) in &request.headers {
                        builder = builder.header(*name, value);
                    }
                    let sent = Instant::now();
                    let response = builder.send().await.expect("an answer");
                    assert!(response.status().is_success(), "{}", response.status());
                    response.bytes().await.expect("a body");
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
    latencies.sort();
    Run {
        requests: count,
        elapsed,
        latencies,
    }
}

fn signed(url: &str, id: &str, body: &Bytes) -> Request {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let secret = Secret::new(format!("whsec_{SECRET_B64}"));
    let signature = sign_standard_webhooks(&secret, id, &timestamp, body).unwrap();
    Request {
        url: url.to_owned(),
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signature),
        ],
        body: body.clone(),
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and expects no work.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let requests = env_usize("LOAD_REQUESTS", 5_000);
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
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()
            .unwrap();
        let make = |url: &str, prefix: &str| -> Vec<Request> {
            (0..requests)
                .map(|i| signed(url, &format!("{prefix}-{i}"), &body))
                .collect()
        };
        // Warm both paths (connections, compiled adapter, page cache) before measuring.
        drive(
            &client,
            make(&format!("http://{echo_addr}/echo"), "warm"),
            concurrency,
        )
        .await;
        let host_url = format!("http://{host_addr}/v1/hooks/bench");
        drive(
            &client,
            make(&host_url, "warm").into_iter().take(500).collect(),
            concurrency,
        )
        .await;

        let echo = drive(
            &client,
            make(&format!("http://{echo_addr}/echo"), "echo"),
            concurrency,
        )
        .await;
        let pipeline = drive(&client, make(&host_url, "load"), concurrency).await;

        let stats = host.store().write_stats();
        println!(
            "requests per run: {requests}, concurrency: {concurrency}, body: {} bytes",
            body.len()
        );
        println!("| endpoint | deliveries/s | p50 | p99 |");
        println!("|---|---|---|---|");
        for (name, run) in [("bare axum echo", &echo), ("full pipeline", &pipeline)] {
            println!(
                "| {name} | {:.0} | {:.2} ms | {:.2} ms |",
                run.rate(),
                run.percentile(0.50).as_secs_f64() * 1e3,
                run.percentile(0.99).as_secs_f64() * 1e3,
            );
        }
        println!(
            "ratio (pipeline / echo, deliveries/s): {:.2}x",
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
