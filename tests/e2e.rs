//! End to end over real HTTP on loopback, through the real binary: a CRM's signed delivery to
//! `adapter-host serve` -> the adapter -> the outbox -> the relay -> an outgoing webhook
//! subscriber (a server in this test) that receives the event signed the Standard Webhooks
//! way, after a failed first attempt that the relay retries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapter_host::signatures::{self, RawRequest, SchemeConfig, Secret, sign_standard_webhooks};
use adapter_host::store::{
    OutboxFilter, OutboxStatus, PageRequest, SqliteStore, Store, SubscriberDeliveryFilter,
    SubscriberDeliveryStatus,
};
use axum::http::{HeaderMap, StatusCode};
use process::{free_port, spawn_host, wait_ready};
use serde_json::Value;

#[path = "common/process.rs"]
mod process;

/// The CRM's signing secret (Standard Webhooks) and the subscriber's.
const CRM_SECRET: &str = "whsec_ZTJlLWNybS1zaWduaW5nLXNlY3JldC0wMDAx";
const SUBSCRIBER_SECRET: &str = "whsec_ZTJlLXN1YnNjcmliZXItc2VjcmV0LTAwMDI=";

#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: SystemTime,
}

/// The subscriber: answers 500 to the first request, 204 after; records every request.
async fn subscriber() -> (Arc<Mutex<Vec<Received>>>, u16) {
    let received = Arc::new(Mutex::new(Vec::<Received>::new()));
    let log = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hooks/commissions",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let log = Arc::clone(&log);
            async move {
                let mut log = log.lock().unwrap();
                log.push(Received {
                    headers: headers
                        .iter()
                        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                        .collect(),
                    body: body.to_vec(),
                    at: SystemTime::now(),
                });
                if log.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (received, port)
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_delivery_reaches_a_subscriber_signed_after_a_retry() {
    let (received, subscriber_port) = subscriber().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[adapters]]
tenant_id = "tenant-e2e"
name = "champion-health"
wasm = "{champion}"

[[connections]]
id = "champion"
tenant_id = "tenant-e2e"
provider = "custom"
adapter = "champion-health"
signature = {{ scheme = "standard_webhooks" }}
secret = "tenant-e2e/champion/signing"
allowed_orgs = ["org-456"]

[[subscribers]]
tenant_id = "tenant-e2e"
url = "http://127.0.0.1:{subscriber_port}/hooks/commissions"
event_types = ["member.*"]
secret = "tenant-e2e/subscriber/signing"

[[secrets]]
name = "tenant-e2e/champion/signing"
value = "{CRM_SECRET}"

[[secrets]]
name = "tenant-e2e/subscriber/signing"
value = "{SUBSCRIBER_SECRET}"
"#,
            champion = test_artifacts::CHAMPION_HEALTH,
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut host = spawn_host(&config, &data, port, &[]);
    let client = reqwest::Client::new();
    wait_ready(&client, port).await;

    // The CRM's delivery, signed over the raw bytes.
    let body = std::fs::read(test_artifacts::sample_file(
        "champion-health/fixtures/enrollment-1kb.json",
    ))
    .unwrap();
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let signature =
        sign_standard_webhooks(&Secret::new(CRM_SECRET), "msg_e2e_1", &timestamp, &body).unwrap();
    let response = client
        .post(format!("http://127.0.0.1:{port}/v1/hooks/champion"))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_e2e_1")
        .header("webhook-timestamp", &timestamp)
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ack: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (ack["status"].as_str(), ack["events"].as_u64()),
        (Some("processed"), Some(1))
    );

    // The relay publishes, the subscriber refuses once, the retry (about a second later) lands.
    for _ in 0..300 {
        if received.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let requests = received.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "one refused attempt, one delivered");
    for request in &requests {
        signatures::verify(
            &SchemeConfig::StandardWebhooks {
                tolerance_secs: 300,
            },
            &[Secret::new(SUBSCRIBER_SECRET)],
            &RawRequest {
                method: "POST",
                url: "http://127.0.0.1/hooks/commissions",
                headers: &request.headers,
                body: &request.body,
            },
            request.at,
        )
        .expect("the subscriber verifies the signature");
    }
    assert_eq!(
        header(&requests[0], "webhook-id"),
        header(&requests[1], "webhook-id"),
        "a retry is the same message"
    );
    let envelope: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(envelope["tenant_id"], "tenant-e2e");
    assert_eq!(envelope["event_type"], "member.enrolled");
    assert_eq!(
        envelope["payload"]["pepm_rate"], "12.50",
        "decimals stay strings"
    );
    assert_eq!(envelope["event_id"], header(&requests[1], "webhook-id"));

    // What the host recorded, read after a graceful stop.
    let pid = host.id().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(host.wait().unwrap().success(), "a graceful stop exits 0");
    let store = SqliteStore::open(&data).unwrap();
    let outbox = store
        .list_outbox(OutboxFilter {
            tenant_id: "tenant-e2e".into(),
            ..OutboxFilter::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].status, OutboxStatus::Published);
    assert_eq!(outbox[0].event_id, envelope["event_id"]);
    let subscribers = store
        .list_subscribers("tenant-e2e", None, PageRequest::default())
        .await
        .unwrap()
        .items;
    let deliveries = store
        .list_subscriber_deliveries(SubscriberDeliveryFilter {
            subscriber_id: subscribers[0].id.clone(),
            ..SubscriberDeliveryFilter::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        (
            deliveries[0].status,
            deliveries[0].attempts,
            deliveries[0].last_status
        ),
        (SubscriberDeliveryStatus::Delivered, 2, Some(204))
    );
}
