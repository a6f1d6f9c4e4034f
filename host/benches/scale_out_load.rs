//! The scale-out backends under load, against the embedded default measured in the same run:
//! webhook deliveries per second and acknowledgment latency through the full pipeline on SQLite
//! (the baseline), on PostgreSQL with one node, and on PostgreSQL with two nodes sharing one
//! schema (two hosts in this process, each with its own listener, the requests split between
//! them); then the relay's publication rate from the PostgreSQL outbox to NATS JetStream
//! against bare JetStream publications of the same messages; then the outbox's lag while one
//! PostgreSQL node takes deliveries with its relay publishing to JetStream.
//!
//! `ADAPTER_HOST_MASTER_KEY=$(head -c 32 /dev/urandom | base64) cargo bench -p adapter-host
//! --bench scale_out_load` (`LOAD_REQUESTS`, `LOAD_CONCURRENCY`;
//! the services at `ADAPTER_HOST_TEST_POSTGRES_URL` and `ADAPTER_HOST_TEST_NATS_URL`, defaults
//! on 127.0.0.1). Every delivery carries the same enrollment (the adapter reads its state and
//! writes none), as in `webhook_load`. The bench makes its own schema and stream and drops them.
//! BENCHMARKS.md records the figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapter_host::bus::{Bus, Message, NatsBus, NatsSettings};
use adapter_host::metrics::Metrics;
use adapter_host::relay::{Relay, RelayConfig};
use adapter_host::serve::{PostgresOptions, ServeOptions, open_host};
use adapter_host::server::{ServerSettings, app};
use axum::body::Bytes;

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/load.rs"]
mod load;
use cpu::Cpu;
use load::{Request, Run, SECRET_B64, drive, env_usize, serve, signed};

fn postgres_url() -> String {
    std::env::var("ADAPTER_HOST_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn nats_url() -> String {
    std::env::var("ADAPTER_HOST_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
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
    path
}

/// A host on `data` (SQLite there, or the PostgreSQL schema), serving on a port of its own.
async fn node(
    data: std::path::PathBuf,
    config: &std::path::Path,
    schema: Option<&str>,
) -> (adapter_host::pipeline::Host, std::net::SocketAddr) {
    let settings = ServerSettings::default();
    let options = ServeOptions {
        data_dir: data,
        listen: "127.0.0.1:0".parse().unwrap(),
        config: Some(config.to_owned()),
        server: settings.clone(),
        postgres: schema.map(|schema| PostgresOptions {
            url: postgres_url(),
            schema: schema.to_owned(),
        }),
        ..ServeOptions::default()
    };
    let host = open_host(&options).await.unwrap();
    let addr = serve(app(host.clone(), settings)).await;
    (host, addr)
}

/// Sends `requests` to each of `addrs` (a share each) with `concurrency` in flight in all.
async fn drive_all(
    addrs: &[std::net::SocketAddr],
    make: &dyn Fn(std::net::SocketAddr, &str, usize) -> Vec<Request>,
    prefix: &str,
    requests: usize,
    concurrency: usize,
) -> Run {
    let cpu = Cpu::now();
    let started = Instant::now();
    let share = requests / addrs.len();
    let runs = futures::future::join_all(addrs.iter().enumerate().map(|(n, addr)| {
        drive(
            *addr,
            make(*addr, &format!("{prefix}-{n}"), share),
            concurrency / addrs.len(),
        )
    }))
    .await;
    let mut latencies: Vec<Duration> = runs.into_iter().flat_map(|r| r.latencies).collect();
    latencies.sort();
    Run {
        requests: share * addrs.len(),
        elapsed: started.elapsed(),
        latencies,
        cpu: Cpu::now().since(cpu),
    }
}

fn row(name: &str, run: &Run) {
    println!(
        "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.0} µs |",
        run.rate(),
        run.percentile(0.50).as_secs_f64() * 1e3,
        run.percentile(0.99).as_secs_f64() * 1e3,
        run.cpu_per_request(),
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and expects no work.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    assert!(
        std::env::var_os("ADAPTER_HOST_MASTER_KEY").is_some(),
        "the PostgreSQL secret store needs ADAPTER_HOST_MASTER_KEY: \
         ADAPTER_HOST_MASTER_KEY=$(head -c 32 /dev/urandom | base64) cargo bench ..."
    );
    let requests = env_usize("LOAD_REQUESTS", 2_000);
    let concurrency = env_usize("LOAD_CONCURRENCY", 32);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let token = format!("{:x}", std::process::id());
        let schema = format!("bench_{token}");
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let body = Bytes::from(
            std::fs::read(test_artifacts::sample_file(
                "champion-health/fixtures/enrollment-1kb.json",
            ))
            .unwrap(),
        );
        let make = |addr, prefix: &str, count: usize| -> Vec<Request> {
            (0..count)
                .map(|i| signed(addr, "/v1/hooks/bench", &format!("{prefix}-{i}"), &body))
                .collect()
        };

        let (_sqlite, sqlite_addr) = node(dir.path().join("sqlite"), &config, None).await;
        let (pg_a, a_addr) = node(dir.path().join("pg-a"), &config, Some(&schema)).await;
        let (_pg_b, b_addr) = node(dir.path().join("pg-b"), &config, Some(&schema)).await;
        for addr in [sqlite_addr, a_addr, b_addr] {
            drive(addr, make(addr, "warm", 300), concurrency).await;
        }
        let sqlite = drive_all(&[sqlite_addr], &make, "s", requests, concurrency).await;
        let one = drive_all(&[a_addr], &make, "p1", requests, concurrency).await;
        let two = drive_all(&[a_addr, b_addr], &make, "p2", requests, concurrency).await;

        println!(
            "requests: {requests} per run; concurrency: {concurrency}; body: {} bytes",
            body.len()
        );
        println!("| store | deliveries/s | p50 | p99 | CPU/delivery |");
        println!("|---|---|---|---|---|");
        row("SQLite, one node (baseline)", &sqlite);
        row("PostgreSQL, one node", &one);
        row("PostgreSQL, two nodes", &two);
        println!(
            "ratios (deliveries/s vs SQLite): one node {:.2}x, two nodes {:.2}x",
            one.rate() / sqlite.rate(),
            two.rate() / sqlite.rate()
        );

        // The relay: the PostgreSQL outbox (every event of the runs above) to JetStream.
        let store = pg_a.store().clone();
        let pending = store.outbox_lag().await.unwrap().pending;
        let nats = |name: &str| NatsSettings {
            url: nats_url(),
            stream: format!("BENCH_{name}_{token}"),
            max_age: Duration::from_secs(3600),
            subject_prefix: Some(format!("b{name}{token}")),
        };
        let relay_bus = Arc::new(NatsBus::connect(nats("relay")).await.unwrap());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let relay = Relay::new(
            store.clone(),
            relay_bus.clone(),
            Metrics::new(),
            RelayConfig::default(),
            pg_a.outbox_appended(),
        );
        let started = Instant::now();
        let relay_task = tokio::spawn(relay.run(stopped.clone()));
        while store.outbox_lag().await.unwrap().pending > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let relay_rate = pending as f64 / started.elapsed().as_secs_f64();

        // Bare JetStream publications of as many messages of the same size, one at a time as
        // the relay publishes, then 32 at once.
        let bare_bus = NatsBus::connect(nats("bare")).await.unwrap();
        let sample = adapter_host::relay::message_of(
            &store
                .list_outbox(adapter_host::store::OutboxFilter {
                    tenant_id: "bench".into(),
                    limit: 1,
                    ..Default::default()
                })
                .await
                .unwrap()
                .items[0],
        )
        .unwrap();
        let message = |i: u64| Message {
            event_id: format!("bare-{i}"),
            ..sample.clone()
        };
        let started = Instant::now();
        for i in 0..pending {
            bare_bus.publish(&message(i)).await.unwrap();
        }
        let bare_rate = pending as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        let bare = Arc::new(bare_bus);
        let mut next = 0;
        while next < pending {
            let batch: Vec<_> = (next..(next + 32).min(pending))
                .map(|i| {
                    let bus = bare.clone();
                    let m = message(pending + i);
                    async move { bus.publish(&m).await }
                })
                .collect();
            for r in futures::future::join_all(batch).await {
                r.unwrap();
            }
            next += 32;
        }
        let bare_concurrent = pending as f64 / started.elapsed().as_secs_f64();
        println!(
            "relay to JetStream: {pending} events at {relay_rate:.0}/s; bare JetStream \
             publishes: {bare_rate:.0}/s one at a time, {bare_concurrent:.0}/s 32 at once; \
             relay / bare (one at a time): {:.2}x",
            relay_rate / bare_rate
        );

        // The outbox's lag while one node takes deliveries and its relay publishes: sampled
        // every 20 ms until the load ends and the outbox is empty again.
        let (done, finished) = tokio::sync::watch::channel(false);
        let sampler = {
            let store = store.clone();
            tokio::spawn(async move {
                let (mut max_pending, mut max_age) = (0, 0);
                while !*finished.borrow() {
                    let lag = store.outbox_lag().await.unwrap();
                    max_pending = max_pending.max(lag.pending);
                    if let Some(oldest) = lag.oldest_pending_created_at {
                        max_age = max_age.max(adapter_host::store::now_millis() - oldest);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (max_pending, max_age)
            })
        };
        let under_load = drive_all(&[a_addr], &make, "lag", requests, concurrency).await;
        let last_ack = Instant::now();
        while store.outbox_lag().await.unwrap().pending > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drained = last_ack.elapsed();
        done.send(true).unwrap();
        let (max_pending, max_age) = sampler.await.unwrap();
        println!(
            "outbox under load ({:.0} deliveries/s, relay running): at most {max_pending} \
             pending, the oldest {max_age} ms old; empty {:.0} ms after the last ack",
            under_load.rate(),
            drained.as_secs_f64() * 1e3
        );
        stop.send(true).unwrap();
        relay_task.await.unwrap();
        for bus in [&relay_bus, &bare] {
            let _ = bus.jetstream().delete_stream(&bus.settings().stream).await;
        }
        let _ = std::process::Command::new("psql")
            .args([postgres_url().as_str(), "-q", "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .output();
    });
}
