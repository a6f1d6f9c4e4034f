//! Records per second turned into events through the whole poll path, and the CPU each record
//! costs, against the webhook path's CPU per event, measured in the same run.
//!
//! The poll path: the salesforce sample adapter polls `Opportunity` from the fake CRM on
//! loopback (`tests/common/fake_crm.rs`, 1,000-record pages of `queryAll` behind a query
//! locator): per page, `poll-request`, the host's fetch (egress rules, credential, recorded
//! exchange), `handle-poll` in the sandbox, the contracts, and one commit of the page's events,
//! state and cursor. Measured twice: the first run (every record new: a `created` event each)
//! and, after every record changed in the CRM, the next one (an `updated` event each, each
//! record compared with the fingerprint its state holds). The webhook baseline: the same adapter taking Change Data Capture deliveries,
//! one new opportunity each, signed (Standard Webhooks) and taken in-process one after the
//! other (`Host::receive_webhook`; no HTTP in either path).
//!
//! The fake CRM runs on a runtime of its own, on a thread of its own, whose CPU is left out.
//!
//! `cargo bench -p adapter-host --bench poll_load` (`LOAD_RECORDS`, default 10,000;
//! `LOAD_WEBHOOKS`, default 2,000). BENCHMARKS.md records the figures.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adapter_host::pipeline::{Host, Inbound};
use adapter_host::serve::{ServeOptions, open_host};
use adapter_host::signatures::{Secret, sign_standard_webhooks};
use adapter_host::store::{DeliveryStatus, PollRunStatus};

#[path = "common/cpu.rs"]
mod cpu;
#[path = "../../tests/common/fake_crm.rs"]
mod fake_crm;

use cpu::{Cpu, thread_cpu};

const SECRET_B64: &str = "bG9hZC10ZXN0LXNpZ25pbmctc2VjcmV0LTAxMjM0NTY3";
const PAGE: usize = 1_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's CPU time less the fake CRM's.
fn host_cpu() -> Duration {
    Cpu::now()
        .process
        .saturating_sub(thread_cpu("fake-crm").unwrap_or_default())
}

/// Starts the fake CRM on a thread (and runtime) of its own.
fn fake_crm() -> fake_crm::FakeCrm {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("fake-crm".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                sender.send(fake_crm::FakeCrm::start().await).unwrap();
                std::future::pending::<()>().await;
            });
        })
        .unwrap();
    receiver.recv().unwrap()
}

struct Measured {
    what: &'static str,
    items: usize,
    events: u64,
    elapsed: Duration,
    cpu: Duration,
}

impl Measured {
    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.0} | {:.1} µs |",
            self.what,
            self.items,
            self.events,
            self.items as f64 / self.elapsed.as_secs_f64(),
            self.cpu.as_secs_f64() * 1e6 / self.items as f64,
        )
    }

    fn cpu_per_item(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.items as f64
    }
}

/// Polls `connection` to the end of its run.
async fn poll(host: &Host, connection: &str, what: &'static str, records: usize) -> Measured {
    let cpu = host_cpu();
    let started = Instant::now();
    let run = host.poll_now(connection).await.unwrap();
    let run = loop {
        let runs = host
            .store()
            .list_poll_runs(connection, Default::default())
            .await
            .unwrap()
            .items;
        let current = runs.into_iter().find(|r| r.id == run.id).unwrap();
        if current.status != PollRunStatus::Running {
            break current;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let elapsed = started.elapsed();
    if run.status != PollRunStatus::Done {
        let failed = host
            .store()
            .list_deliveries(adapter_host::store::DeliveryFilter {
                tenant_id: Some("bench".into()),
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .items;
        panic!("{run:?}: {:?}", failed.first().map(|d| &d.reason_json));
    }
    assert_eq!(run.records, records as u64, "{run:?}");
    Measured {
        what,
        items: records,
        events: run.events,
        elapsed,
        cpu: host_cpu().saturating_sub(cpu),
    }
}

/// A CDC delivery creating opportunity number `n`.
fn cdc(template: &str, n: usize) -> Inbound {
    let id = format!("006BENCH{n:010}");
    let body = template
        .replace("0065g00000Qb2RsAAJ", &id)
        .replace("48240", &(100_000 + n).to_string())
        .into_bytes();
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let delivery_id = format!("msg-{n}");
    let secret = Secret::new(format!("whsec_{SECRET_B64}"));
    let signature = sign_standard_webhooks(&secret, &delivery_id, &timestamp, &body).unwrap();
    Inbound {
        connection_id: "webhooks".into(),
        method: "POST".into(),
        path: "/v1/hooks/webhooks".into(),
        query: String::new(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("webhook-id".into(), delivery_id),
            ("webhook-timestamp".into(), timestamp),
            ("webhook-signature".into(), signature),
        ],
        body,
        peer: None,
        capability: None,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and expects no work.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let records = env_usize("LOAD_RECORDS", 10_000);
    let webhooks = env_usize("LOAD_WEBHOOKS", 2_000);
    let crm = fake_crm();
    crm.set_page_size("salesforce", PAGE);
    let ids = crm.seed_opportunities(records);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let connection = |id: &str, signature: &str| {
            format!(
                r#"
[[connections]]
id = "{id}"
tenant_id = "bench"
provider = "salesforce"
adapter = "salesforce"
signature = {signature}
secret = "bench/signing"
allowed_orgs = ["org-1"]
settings = {{ default_org_id = "org-1", poll_objects = "Opportunity" }}
polling = {{ max_pages = 1000 }}
api = {{ base_url = "{base}", allow_private = true, rate_limit = {{ per_minute = 60000, burst = 1000 }}, credential = {{ kind = "bearer", secret = "bench/crm" }} }}
"#,
                base = crm.base_url(),
            )
        };
        let salesforce = test_artifacts::ALL
            .iter()
            .find(|(stem, _)| *stem == "salesforce")
            .unwrap()
            .1;
        let text = format!(
            r#"
[[adapters]]
tenant_id = "bench"
name = "salesforce"
wasm = "{salesforce}"
{warm}{polled}{hooks}
[[secrets]]
name = "bench/signing"
value = "whsec_{SECRET_B64}"

[[secrets]]
name = "bench/crm"
value = "bench-token"
"#,
            warm = connection("warm", r#"{ scheme = "standard_webhooks" }"#),
            polled = connection("polled", r#"{ scheme = "standard_webhooks" }"#),
            hooks = connection("webhooks", r#"{ scheme = "standard_webhooks" }"#),
        );
        std::fs::write(&config, text).unwrap();
        let host = open_host(&ServeOptions {
            data_dir: dir.path().join("data"),
            config: Some(config),
            ..ServeOptions::default()
        })
        .await
        .unwrap();
        let template = std::fs::read_to_string(test_artifacts::sample_file(
            "salesforce/fixtures/cdc-opportunity-created.json",
        ))
        .unwrap();

        // Warm both paths (compiled adapter, allocator, page cache) before measuring.
        poll(&host, "warm", "warm-up", records).await;
        for n in 0..200 {
            host.receive_webhook(cdc(&template, 1_000_000 + n))
                .await
                .unwrap();
        }

        let first = poll(&host, "polled", "poll, every record new", records).await;
        for id in &ids {
            crm.upsert(
                "salesforce",
                "Opportunity",
                id,
                serde_json::json!({"StageName": "Needs Analysis", "Probability": 30.0}),
            );
        }
        let again = poll(&host, "polled", "poll, every record changed", records).await;
        let cpu = host_cpu();
        let started = Instant::now();
        for n in 0..webhooks {
            let ack = host.receive_webhook(cdc(&template, n)).await.unwrap();
            assert_eq!(ack.status, DeliveryStatus::Processed, "{ack:?}");
        }
        let hooks = Measured {
            what: "webhook, one new record each",
            items: webhooks,
            events: webhooks as u64,
            elapsed: started.elapsed(),
            cpu: host_cpu().saturating_sub(cpu),
        };
        assert_eq!(first.events, records as u64);
        assert!(again.events >= records as u64);

        println!("records: {records} in pages of {PAGE}; webhooks: {webhooks}, one at a time");
        println!("| path | records | events | records/s | host CPU per record |");
        println!("|---|---|---|---|---|");
        for measured in [&first, &again, &hooks] {
            println!("{}", measured.row());
        }
        println!(
            "ratio (CPU per record, poll / webhook): new {:.3}x, changed {:.3}x",
            first.cpu_per_item() / hooks.cpu_per_item(),
            again.cpu_per_item() / hooks.cpu_per_item()
        );
    });
}
