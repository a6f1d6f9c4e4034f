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
//! noise. `LOAD_SEALING=compare` also runs a second host that stores payloads in the clear
//! (encryption at rest off), the two interleaved over `LOAD_ROUNDS` rounds (default 4, the
//! order swapped each round), and reports what sealing costs per delivery;
//! `LOAD_REPLAYS=compare` the same against a host that records nothing to replay invocations
//! with. BENCHMARKS.md records the figures.

use adapter_host::serve::{ServeOptions, open_host};
use adapter_host::server::{ServerSettings, app};
use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/load.rs"]
mod load;
use load::{Request, SECRET_B64, drive, env_usize, serve, signed};

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
        let start = |data: &str, seal_at_rest: bool, record_replays: bool| {
            let options = ServeOptions {
                data_dir: dir.path().join(data),
                listen: "127.0.0.1:0".parse().unwrap(),
                config: Some(config.clone()),
                public_base_url: None,
                relay: Default::default(),
                server: settings.clone(),
                seal_at_rest,
                record_replays,
                ..ServeOptions::default()
            };
            let settings = settings.clone();
            async move {
                let host = open_host(&options).await.unwrap();
                let addr = serve(app(host.clone(), settings)).await;
                (host, addr)
            }
        };
        let (host, host_addr) = start("data", true, true).await;
        let compare = |var: &str| std::env::var(var).is_ok_and(|mode| mode == "compare");
        let clear_addr = match compare("LOAD_SEALING") {
            true => Some(start("data-in-the-clear", false, true).await.1),
            false => None,
        };
        let unrecorded_addr = match compare("LOAD_REPLAYS") {
            true => Some(start("data-unrecorded", true, false).await.1),
            false => None,
        };
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
        for other in clear_addr.iter().chain(&unrecorded_addr) {
            drive(*other, make(*other, hook, "warm", 500), concurrency).await;
        }

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

        if let Some(clear) = clear_addr {
            let labels = ["encryption at rest", "in the clear", "sealed", "sealing"];
            compare_hosts(labels, host_addr, clear, &make, hook, requests, concurrency).await;
        }
        if let Some(unrecorded) = unrecorded_addr {
            let labels = ["replay records", "unrecorded", "recorded", "recording"];
            compare_hosts(
                labels,
                host_addr,
                unrecorded,
                &make,
                hook,
                requests,
                concurrency,
            )
            .await;
        }

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

/// The same load on the host as served and on `other` (one without the feature `labels`
/// names: what it is, the other host, the served one, the feature), interleaved round by round
/// (the order swapped each round), and what the feature costs.
async fn compare_hosts(
    [what, without, with, feature]: [&str; 4],
    served: std::net::SocketAddr,
    other: std::net::SocketAddr,
    make: &impl Fn(std::net::SocketAddr, &str, &str, usize) -> Vec<Request>,
    hook: &str,
    requests: usize,
    concurrency: usize,
) {
    let rounds = env_usize("LOAD_ROUNDS", 4);
    println!("{what}: {rounds} rounds of {requests} deliveries per host");
    println!(
        "| round | {without}: CPU/delivery | {with}: CPU/delivery | {with} / {without} | {without}: deliveries/s | {with}: deliveries/s |"
    );
    println!("|---|---|---|---|---|---|");
    let (mut other_cpu, mut served_cpu) = (0.0, 0.0);
    for round in 0..rounds {
        let one = async |addr, prefix: &str| {
            let prefix = format!("{prefix}-{round}");
            drive(addr, make(addr, hook, &prefix, requests), concurrency).await
        };
        let (off, on) = if round % 2 == 0 {
            let off = one(other, "other").await;
            (off, one(served, "served").await)
        } else {
            let on = one(served, "served").await;
            (one(other, "other").await, on)
        };
        other_cpu += off.cpu_per_request();
        served_cpu += on.cpu_per_request();
        println!(
            "| {round} | {:.0} µs | {:.0} µs | {:.3}x | {:.0} | {:.0} |",
            off.cpu_per_request(),
            on.cpu_per_request(),
            on.cpu_per_request() / off.cpu_per_request(),
            off.rate(),
            on.rate(),
        );
    }
    println!(
        "{feature}, all rounds: {:.0} µs vs {:.0} µs of CPU per delivery: {:.3}x ({:+.1}%)",
        served_cpu / rounds as f64,
        other_cpu / rounds as f64,
        served_cpu / other_cpu,
        (served_cpu / other_cpu - 1.0) * 100.0,
    );
}
