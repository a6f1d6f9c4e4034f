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
    // Rows a killed relay had claimed come back when their lease ends: keep it short here.
    process::spawn_host(
        config,
        data,
        port,
        &[("ADAPTER_HOST_RELAY_LEASE_SECS", "1")],
    )
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
    // The relay publishes everything, including what earlier runs appended but never published.
    let mut pending = u64::MAX;
    for _ in 0..600 {
        let metrics = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        pending = metrics
            .lines()
            .find_map(|line| line.strip_prefix("adapter_host_outbox_pending "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(u64::MAX);
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending, 0, "events still unpublished");
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
