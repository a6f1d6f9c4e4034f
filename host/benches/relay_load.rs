//! The outbox relay against the webhook path that feeds it, in one run, for the mixes of
//! entities that decide its work: one entity (every event waits for the one before it), many
//! entities, and batches of 100 events (over 100 entities, and all of one entity).
//!
//! For each mix, on a fresh data directory:
//! 1. **ingest**: the deliveries through the full pipeline as fast as the client can send them,
//!    the relay stopped: the most events per second the webhook path appends;
//! 2. **drain**: the relay (as served: `Relay::run` with the default configuration, the
//!    in-process bus, tracing spans per row) publishes that backlog on the bus and POSTs it to
//!    one subscriber (a local endpoint that answers 204): its events per second to each;
//! 3. **together**: the same number of deliveries again, paced at 70% of the ingest rate of (1),
//!    with the relay running beside them; the outbox's pending count is sampled every 10 ms and
//!    its peak, its value at the last delivery, and the time to drain after it are reported.
//!
//! The relay must publish at least 3x what the webhook path appends, and keep the lag bounded
//! at 70% of that rate.
//!
//! `cargo bench -p adapter-host --bench relay_load 2>relay.log` (the host logs at its default
//! level to stderr, as served; `LOAD_REQUESTS` deliveries per mix of
//! single events, a hundredth of that of batches; `LOAD_CONCURRENCY`; `RELAY_MIX` runs only the
//! mixes whose name holds it). Each mix runs twice: the bus alone, then with one subscriber. BENCHMARKS.md records the
//! figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use adapter_host::pipeline::Host;
use adapter_host::relay::{Relay, RelayConfig};
use adapter_host::serve::{ServeOptions, open_host};
use adapter_host::server::{ServerSettings, app};
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/load.rs"]
mod load;
use cpu::Cpu;
use load::{Request, SECRET_B64, drive, drive_paced, env_usize, serve, signed};

/// The body of delivery `i` of a run named `run`.
type Body = Box<dyn Fn(&str, usize) -> Bytes>;

/// One mix of entities: its deliveries and where they go.
struct Mix {
    name: &'static str,
    hook: &'static str,
    /// The body of delivery `i` of run `run` (so that the second run's events are new).
    body: Body,
    deliveries: usize,
    events_per_delivery: usize,
}

fn config(dir: &std::path::Path, sink: Option<std::net::SocketAddr>) -> std::path::PathBuf {
    let subscriber = sink.map_or(String::new(), |sink| {
        format!(
            r#"
[[subscribers]]
tenant_id = "bench"
url = "http://{sink}/hook"
secret = "bench/signing"
"#
        )
    });
    let path = dir.join("config.toml");
    let custom = test_artifacts::component("custom_crm_rust").expect("the custom CRM sample");
    std::fs::write(
        &path,
        format!(
            r#"
[[adapters]]
tenant_id = "bench"
name = "champion-health"
wasm = "{}"
# Every delivery of "many entities" adds a fingerprint to the state.
limits = {{ state_keys = 100000 }}

[[adapters]]
tenant_id = "bench"
name = "custom-crm"
wasm = "{custom}"

[[connections]]
id = "single"
tenant_id = "bench"
provider = "custom"
adapter = "champion-health"
signature = {{ scheme = "standard_webhooks" }}
secret = "bench/signing"

[[connections]]
id = "batch"
tenant_id = "bench"
provider = "custom"
adapter = "custom-crm"
signature = {{ scheme = "standard_webhooks" }}
secret = "bench/signing"

{subscriber}
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

fn mixes(deliveries: usize) -> Vec<Mix> {
    let enrollment = std::fs::read_to_string(test_artifacts::sample_file(
        "champion-health/fixtures/enrollment-1kb.json",
    ))
    .unwrap();
    // A new event id per delivery (the adapter's idempotency key), the member (the event's
    // entity) as the mix wants.
    let champion = move |one_entity: bool| {
        let enrollment = enrollment.clone();
        Box::new(move |run: &str, i: usize| {
            let body = enrollment.replacen(
                "evt_01JDX3K8Q9V2YB6M4T7R5N0C1A",
                &format!("evt-{run}-{i}"),
                1,
            );
            Bytes::from(if one_entity {
                body
            } else {
                body.replacen("M-88412", &format!("M-{run}-{i}"), 1)
                    .replacen("ENR-2025-0042", &format!("ENR-{run}-{i}"), 1)
            })
        }) as Body
    };
    let batch = |one_entity: bool| {
        Box::new(move |run: &str, i: usize| {
            let events: Vec<String> = (0..100)
                .map(|j| {
                    let contact = if one_entity {
                        "C-1".to_owned()
                    } else {
                        format!("C-{run}-{i}-{j}")
                    };
                    format!(
                        r#"{{"event_id": "evt-{run}-{i}-{j}", "type": "contact.created", "data": {{"contact_id": "{contact}", "email": "bo{j}@example.com", "phone": "+44 20 7946 0000"}}}}"#
                    )
                })
                .collect();
            Bytes::from(format!(r#"{{"events": [{}]}}"#, events.join(",")))
        }) as Body
    };
    let batches = (deliveries / 100).max(10);
    vec![
        Mix {
            name: "one entity",
            hook: "/v1/hooks/single",
            body: champion(true),
            deliveries,
            events_per_delivery: 1,
        },
        Mix {
            name: "many entities",
            hook: "/v1/hooks/single",
            body: champion(false),
            deliveries,
            events_per_delivery: 1,
        },
        Mix {
            name: "100-event batches, 100 entities",
            hook: "/v1/hooks/batch",
            body: batch(false),
            deliveries: batches,
            events_per_delivery: 100,
        },
        Mix {
            name: "100-event batches, one entity",
            hook: "/v1/hooks/batch",
            body: batch(true),
            deliveries: batches,
            events_per_delivery: 100,
        },
    ]
}

struct Figures {
    ingest_events: f64,
    ingest_cpu_per_event: f64,
    drain_events: f64,
    /// Events per second to the subscriber (bus and subscriber both done).
    reach_events: f64,
    drain_cpu_per_event: f64,
    paced_events: f64,
    peak_pending: u64,
    pending_at_end: u64,
    drained_after: Duration,
}

async fn pending(host: &Host) -> u64 {
    host.store().outbox_lag().await.unwrap().pending
}

/// Events the relay has published on the bus so far (its own counter: reading it costs the
/// store nothing).
fn published(host: &Host) -> u64 {
    host.metrics()
        .relay_attempts
        .with_label_values(&["bus", "ok"])
        .get()
}

/// Waits until the relay has published `target` events in all; panics after 10 minutes.
async fn wait_published(host: &Host, target: u64) {
    let started = Instant::now();
    while published(host) < target {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the relay did not drain the outbox within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until the subscriber has been sent `target` events in all; panics after 10 minutes.
async fn wait_received(received: &AtomicU64, target: u64) {
    if target == 0 {
        return;
    }
    let started = Instant::now();
    while received.load(Ordering::Relaxed) < target {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the subscriber was not sent every event within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn relay(host: &Host) -> Relay {
    let defaults = RelayConfig::default();
    Relay::new(
        host.store().clone(),
        host.bus().clone(),
        host.metrics().clone(),
        RelayConfig {
            batch: env_usize("RELAY_BATCH", defaults.batch),
            ..defaults
        },
        host.outbox_appended(),
    )
    .with_secrets(host.secrets().clone())
}

/// One mix on a fresh host; `subscriber`: with one subscriber, else the bus alone.
async fn measure(mix: &Mix, concurrency: usize, subscriber: bool) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let settings = ServerSettings::default();
    // The subscriber: counts what it is sent.
    let received = Arc::new(AtomicU64::new(0));
    let sink = {
        let received = received.clone();
        serve(axum::Router::new().route(
            "/hook",
            post(move || {
                received.fetch_add(1, Ordering::Relaxed);
                async { StatusCode::NO_CONTENT }
            }),
        ))
        .await
    };
    let options = ServeOptions {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        config: Some(config(dir.path(), subscriber.then_some(sink))),
        server: settings.clone(),
        ..ServeOptions::default()
    };
    let host = open_host(&options).await.unwrap();
    let addr = serve(app(host.clone(), settings)).await;
    let requests = |run: &str| -> Vec<Request> {
        (0..mix.deliveries)
            .map(|i| signed(addr, mix.hook, &format!("{run}-{i}"), &(mix.body)(run, i)))
            .collect()
    };
    let events = (mix.deliveries * mix.events_per_delivery) as f64;

    // Warm the adapter and the relay's path, then start from an empty backlog.
    let warm: Vec<Request> = (0..20)
        .map(|i| signed(addr, mix.hook, &format!("warm-{i}"), &(mix.body)("warm", i)))
        .collect();
    drive(addr, warm, concurrency).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(relay(&host).run(stopped));
    let warm_events = 20 * mix.events_per_delivery as u64;
    wait_published(&host, warm_events).await;
    // What the subscriber must have been sent in all at each step (nothing without one).
    let sent = |n: u64| if subscriber { n } else { 0 };
    wait_received(&received, sent(warm_events)).await;
    stop.send(true).unwrap();
    running.await.unwrap();
    let base = published(&host);

    // 1. Ingest, the relay stopped.
    let ingest = drive(addr, requests("ingest"), concurrency).await;
    assert_eq!(
        pending(&host).await as f64,
        events,
        "every event is pending"
    );

    // 2. The relay drains the backlog.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let cpu = Cpu::now();
    let started = Instant::now();
    let running = tokio::spawn(relay(&host).run(stopped.clone()));
    wait_published(&host, base + events as u64).await;
    let drain = started.elapsed();
    wait_received(&received, sent(base + events as u64)).await;
    let reach = started.elapsed();
    let drain_cpu = Cpu::now().since(cpu);

    // 3. Both at once, paced at 70% of the ingest rate, the relay still running.
    let rate = 0.7 * ingest.rate();
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (host, sampling) = (host.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(pending(&host).await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        })
    };
    let paced = drive_paced(addr, requests("paced"), concurrency, rate).await;
    let pending_at_end = pending(&host).await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak_pending = sampler.await.unwrap().max(pending_at_end);
    let after = Instant::now();
    wait_published(&host, base + 2 * events as u64).await;
    wait_received(&received, sent(base + 2 * events as u64)).await;
    // The counter moves as the bus takes an event, a moment before the row is marked.
    while pending(&host).await > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let drained_after = after.elapsed();
    stop.send(true).unwrap();
    running.await.unwrap();

    Figures {
        ingest_events: events / ingest.elapsed.as_secs_f64(),
        ingest_cpu_per_event: ingest.cpu.process.as_secs_f64() * 1e6 / events,
        drain_events: events / drain.as_secs_f64(),
        reach_events: events / reach.as_secs_f64(),
        drain_cpu_per_event: drain_cpu.process.as_secs_f64() * 1e6 / events,
        paced_events: events / paced.elapsed.as_secs_f64(),
        peak_pending,
        pending_at_end,
        drained_after,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and expects no work.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // Logging as served: the host's default level, to stderr.
    let _telemetry = adapter_host::telemetry::install("info", None).unwrap();
    let deliveries = env_usize("LOAD_REQUESTS", 3_000);
    let concurrency = env_usize("LOAD_CONCURRENCY", 32);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        println!(
            "{deliveries} deliveries of one event per mix, {} of 100-event batches; \
             concurrency {concurrency}",
            (deliveries / 100).max(10)
        );
        println!(
            "| mix | ingest events/s | CPU/event | relay: bus events/s | to the subscriber | \
             relay CPU/event | bus / ingest | subscriber / ingest | at 70%: events/s | \
             peak pending | pending at end | drained after |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        // `RELAY_MIX=batches` runs the mixes whose name holds it (for a profile of one).
        let only = std::env::var("RELAY_MIX").unwrap_or_default();
        for mix in mixes(deliveries)
            .into_iter()
            .filter(|mix| mix.name.contains(&only))
        {
            for subscriber in [false, true] {
                let f = measure(&mix, concurrency, subscriber).await;
                let to_subscriber = if subscriber {
                    format!("{:.0}", f.reach_events)
                } else {
                    "-".to_owned()
                };
                let ratio = if subscriber {
                    format!("{:.1}x", f.reach_events / f.ingest_events)
                } else {
                    "-".to_owned()
                };
                println!(
                    "| {}{} | {:.0} | {:.0} µs | {:.0} | {to_subscriber} | {:.0} µs | {:.1}x | \
                     {ratio} | {:.0} | {} | {} | {:.0} ms |",
                    mix.name,
                    if subscriber { ", a subscriber" } else { "" },
                    f.ingest_events,
                    f.ingest_cpu_per_event,
                    f.drain_events,
                    f.drain_cpu_per_event,
                    f.drain_events / f.ingest_events,
                    f.paced_events,
                    f.peak_pending,
                    f.pending_at_end,
                    f.drained_after.as_secs_f64() * 1e3,
                );
            }
        }
    });
}
