//! Nothing acknowledged is ever lost: deliveries under concurrent load while the host process is
//! killed with SIGKILL and restarted, several times. A client that got no answer retries with the
//! same delivery id, as a CRM does. Afterwards every delivery that was answered 2xx is in the
//! inbox, processed, with exactly its events in the outbox, none duplicated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapter_host::store::{
    DeliveryFilter, DeliveryStatus, OutboxFilter, OutboxRow, OutboxStatus, SqliteStore, Store,
};
use hmac::{Hmac, Mac};
use process::{free_port, wait_ready};
use sha2::Sha256;

#[path = "common/process.rs"]
mod process;

const SECRET: &str = "crash-test-secret";
const WORKERS: usize = 12;
/// How long each run takes load before it is killed: varied, so kills land at different points
/// of the pipeline (recording, invoking, completing, answering).
const RUN_BEFORE_KILL: [Duration; 4] = [
    Duration::from_millis(700),
    Duration::from_millis(450),
    Duration::from_millis(900),
    Duration::from_millis(350),
];

fn write_config(dir: &Path) -> std::path::PathBuf {
    let config = format!(
        r#"
[[adapters]]
tenant_id = "tenant-crash"
name = "hostile"
wasm = "{hostile}"

[[connections]]
id = "crash"
tenant_id = "tenant-crash"
provider = "custom"
adapter = "hostile"
signature = {{ scheme = "github" }}
secret = "crash/signing"

[[adapters]]
tenant_id = "tenant-crash"
name = "hostile-big"
wasm = "{hostile}"
limits = {{ memory_bytes = 268435456, deadline_ms = 10000 }}

[[connections]]
id = "oom"
tenant_id = "tenant-crash"
provider = "custom"
adapter = "hostile-big"
signature = {{ scheme = "github" }}
secret = "crash/signing"

[[secrets]]
name = "crash/signing"
value = "{SECRET}"
"#,
        hostile = test_artifacts::HOSTILE
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn start(config: &Path, data: &Path, port: u16) -> Child {
    // Rows a killed relay had claimed, and deliveries a killed host was running, come back when
    // their leases end: keep them short here.
    process::spawn_host(
        config,
        data,
        port,
        &[
            ("ADAPTER_HOST_RELAY_LEASE_SECS", "1"),
            ("ADAPTER_HOST_RECOVERY_LEASE_SECS", "1"),
        ],
    )
}

/// A gauge of the host's `/metrics`.
async fn gauge(client: &reqwest::Client, port: u16, name: &str) -> Option<u64> {
    let metrics = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Waits (up to 30 s) until the gauge `name` reads 0.
async fn wait_for_zero(client: &reqwest::Client, port: u16, name: &str) {
    let mut value = None;
    for _ in 0..600 {
        value = gauge(client, port, name).await;
        if value == Some(0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} is still {value:?}");
}

/// The resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What the client saw: provider delivery id -> the host's delivery id, for every 2xx.
type Acked = Arc<Mutex<BTreeMap<String, String>>>;

/// Sends deliveries until the host stops answering. Unanswered ids go back to `pending`.
async fn load(client: reqwest::Client, port: u16, pending: Arc<Mutex<Vec<u32>>>, acked: Acked) {
    let mut next = {
        let mut pending = pending.lock().unwrap();
        pending.pop()
    };
    while let Some(n) = next {
        let provider_id = format!("gh-{n:06}");
        // One entity per delivery, as real traffic has: per-entity order then lets the relay
        // publish in batches.
        let body = format!("ok\nentity-{n}").into_bytes();
        let result = client
            .post(format!("http://127.0.0.1:{port}/v1/hooks/crash"))
            .header("x-hub-signature-256", sign(&body))
            .header("x-github-delivery", &provider_id)
            .body(body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => {
                let ack: serde_json::Value = match response.bytes().await {
                    Ok(body) => serde_json::from_slice(&body).expect("a JSON acknowledgment"),
                    // The process died while the answer was on the wire: not acknowledged.
                    Err(_) => {
                        pending.lock().unwrap().push(n);
                        return;
                    }
                };
                let delivery_id = ack["delivery_id"].as_str().unwrap().to_owned();
                let previous = acked
                    .lock()
                    .unwrap()
                    .insert(provider_id, delivery_id.clone());
                if let Some(previous) = previous {
                    assert_eq!(previous, delivery_id, "a retry got a different delivery id");
                }
            }
            Ok(response) => panic!("unexpected answer {}", response.status()),
            Err(_) => {
                // No answer: the CRM will retry this delivery with the same id.
                pending.lock().unwrap().push(n);
                return;
            }
        }
        next = pending.lock().unwrap().pop();
    }
}

async fn all_deliveries(store: &SqliteStore) -> Vec<adapter_host::store::DeliveryInfo> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_deliveries(DeliveryFilter {
                limit: 500,
                cursor,
                ..DeliveryFilter::default()
            })
            .await
            .unwrap();
        all.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

async fn all_outbox_rows(store: &SqliteStore) -> Vec<OutboxRow> {
    let mut rows = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_outbox(OutboxFilter {
                tenant_id: "tenant-crash".into(),
                limit: 500,
                cursor,
                ..OutboxFilter::default()
            })
            .await
            .unwrap();
        rows.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return rows,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deliveries_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let data = dir.path().join("data");
    let client = reqwest::Client::new();
    let total: u32 = 4_000;
    let pending = Arc::new(Mutex::new((0..total).rev().collect::<Vec<_>>()));
    let acked: Acked = Arc::default();

    for (round, delay) in RUN_BEFORE_KILL.iter().enumerate() {
        let port = free_port();
        let mut child = start(&config, &data, port);
        wait_ready(&client, port).await;
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| tokio::spawn(load(client.clone(), port, pending.clone(), acked.clone())))
            .collect();
        tokio::time::sleep(*delay).await;
        child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        child.wait().unwrap();
        for worker in workers {
            worker.await.unwrap();
        }
        // Before any restart or recovery: everything acknowledged is already durable.
        let acked_now = acked.lock().unwrap().clone();
        assert!(
            !acked_now.is_empty(),
            "round {round}: nothing was acknowledged"
        );
        let store = SqliteStore::open(&data).unwrap();
        let recorded = all_deliveries(&store).await;
        let by_provider: BTreeMap<String, DeliveryStatus> = recorded
            .iter()
            .map(|d| (d.provider_delivery_id.clone().unwrap(), d.status))
            .collect();
        for provider_id in acked_now.keys() {
            assert_eq!(
                by_provider.get(provider_id),
                Some(&DeliveryStatus::Processed),
                "round {round}: {provider_id} was acknowledged but is not durable as processed"
            );
        }
        let interrupted = by_provider
            .values()
            .filter(|s| **s == DeliveryStatus::Received)
            .count();
        eprintln!(
            "round {round}: {} acknowledged, {} recorded, {interrupted} interrupted mid-pipeline",
            acked_now.len(),
            recorded.len()
        );
        drop(store);
    }

    // A last run: recovery completes what the kills interrupted; the rest of the load finishes.
    let port = free_port();
    let mut child = start(&config, &data, port);
    wait_ready(&client, port).await;
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(load(client.clone(), port, pending.clone(), acked.clone())))
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    // Recovery (in the background, once the host listens) completes what the kills cut off,
    // and the relay publishes everything, including what earlier runs never published.
    wait_for_zero(&client, port, "adapter_host_deliveries_unfinished").await;
    wait_for_zero(&client, port, "adapter_host_outbox_pending").await;
    child.kill().unwrap();
    child.wait().unwrap();

    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        total as usize,
        "every delivery is eventually acknowledged"
    );

    let store = SqliteStore::open(&data).unwrap();
    let deliveries = all_deliveries(&store).await;
    // One inbox row per provider delivery id: retries after a kill never recorded a second one.
    let by_provider: BTreeMap<&str, &str> = deliveries
        .iter()
        .map(|d| (d.provider_delivery_id.as_deref().unwrap(), d.id.as_str()))
        .collect();
    assert_eq!(by_provider.len(), deliveries.len(), "duplicate inbox rows");
    for (provider_id, delivery_id) in &acked {
        assert_eq!(
            by_provider.get(provider_id.as_str()),
            Some(&delivery_id.as_str()),
            "acknowledged delivery {provider_id} is not in the inbox"
        );
    }
    // Every delivery is processed (recovery ran what the kills interrupted) ...
    let unprocessed: Vec<_> = deliveries
        .iter()
        .filter(|d| d.status != DeliveryStatus::Processed)
        .map(|d| (&d.id, d.status))
        .collect();
    assert!(unprocessed.is_empty(), "{unprocessed:?}");
    // ... with exactly its one event in the outbox.
    let rows = all_outbox_rows(&store).await;
    let events: BTreeSet<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(events.len(), rows.len(), "duplicate event ids");
    let per_delivery: BTreeSet<&str> = rows.iter().map(|r| r.delivery_id.as_str()).collect();
    assert_eq!(rows.len(), deliveries.len(), "one event per delivery");
    assert!(
        rows.iter().all(|r| r.status == OutboxStatus::Published),
        "every event is eventually published"
    );
    assert_eq!(per_delivery.len(), deliveries.len());
}

/// Sends the memory hog's delivery until the host answers it with a final status: each attempt
/// that finds the host down (killed by the watchdog below) is a CRM retry with the same
/// delivery id, and one answered `received` (taken, still under way) is asked again.
async fn send_hog(client: reqwest::Client, port: u16) -> serde_json::Value {
    // 800 ms of computing first (the delivery is recorded on its own after 500 ms), then 200 MiB.
    let body = b"hog\n200\n800".to_vec();
    loop {
        let answer = client
            .post(format!("http://127.0.0.1:{port}/v1/hooks/oom"))
            .header("x-hub-signature-256", sign(&body))
            .header("x-github-delivery", "gh-hog")
            .body(body.clone())
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        if let Ok(answer) = answer
            && answer.status().is_success()
            && let Ok(body) = answer.bytes().await
            && let Ok(ack) = serde_json::from_slice::<serde_json::Value>(&body)
            && ack["status"] != "received"
        {
            return ack;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_exhausts_memory_is_parked_and_the_rest_is_processed() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let data = dir.path().join("data");
    let client = reqwest::Client::new();
    let total: u32 = 1_000;
    let pending = Arc::new(Mutex::new((0..total).rev().collect::<Vec<_>>()));
    let acked: Acked = Arc::default();
    // One port for every run: the CRM keeps calling the same URL.
    let port = free_port();
    // The host's resident set before the hog was ever sent. A restarted host may be running
    // the hog (recovery) by the time it answers: its own reading then holds part of the hog.
    let idle = {
        let mut child = start(&config, &data, port);
        wait_ready(&client, port).await;
        let idle = resident_bytes(child.id()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        idle
    };
    let hog = tokio::spawn(send_hog(client.clone(), port));
    let mut kills = 0;
    let started = std::time::Instant::now();
    while !hog.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the hog was never parked ({kills} kills)"
        );
        // Waited for on both ways out of the loop below: killed for memory, or once the hog
        // is parked (clippy cannot follow the second).
        #[allow(clippy::zombie_processes)]
        let mut child = start(&config, &data, port);
        wait_ready(&client, port).await;
        let baseline = resident_bytes(child.id()).unwrap().min(idle);
        let workers: Vec<_> = (0..4)
            .map(|_| tokio::spawn(load(client.clone(), port, pending.clone(), acked.clone())))
            .collect();
        // The kernel's OOM killer, played by the test: the host is killed when the hog's memory
        // shows in its resident set, the way a memory-limited container would be.
        loop {
            let now = resident_bytes(child.id()).unwrap_or(0);
            if now > baseline + 150 * 1024 * 1024 {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                break;
            }
            if hog.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if hog.is_finished() {
            // The hog is parked: the host serves the rest of the load and recovers the rest.
            for worker in workers {
                worker.await.unwrap();
            }
            wait_for_zero(&client, port, "adapter_host_deliveries_unfinished").await;
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        for worker in workers {
            worker.await.unwrap();
        }
    }
    let ack = hog.await.unwrap();
    // The CRM's last retry finds it taken, and failed: parked, never run again.
    assert_eq!(ack["duplicate"], true, "{ack}");
    assert_eq!(ack["status"], "failed", "{ack}");
    assert_eq!(kills, 3, "one kill per attempt before it was parked");

    // The rest of the load, run meanwhile and after: every delivery acknowledged and processed.
    let port = free_port();
    let mut child = start(&config, &data, port);
    wait_ready(&client, port).await;
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(load(client.clone(), port, pending.clone(), acked.clone())))
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    wait_for_zero(&client, port, "adapter_host_deliveries_unfinished").await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acked.lock().unwrap().len(), total as usize);

    let store = SqliteStore::open(&data).unwrap();
    let deliveries = all_deliveries(&store).await;
    let hog = deliveries
        .iter()
        .find(|d| d.provider_delivery_id.as_deref() == Some("gh-hog"))
        .unwrap();
    assert_eq!(hog.status, DeliveryStatus::Failed);
    assert_eq!(
        hog.attempts, 4,
        "three runs cut off, then parked at the fourth claim"
    );
    let reason = hog.reason_json.as_deref().unwrap();
    assert!(reason.contains(r#""kind":"interrupted""#), "{reason}");
    let others: Vec<_> = deliveries
        .iter()
        .filter(|d| d.id != hog.id && d.status != DeliveryStatus::Processed)
        .map(|d| (&d.id, d.status))
        .collect();
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(deliveries.len(), total as usize + 1);
}
