//! The scale-out backends through the real binary: events published to NATS JetStream (and,
//! with PostgreSQL, several nodes sharing one database). Uses the local services:
//! `ADAPTER_HOST_TEST_NATS_URL` (default `nats://127.0.0.1:4222`); each test has a stream and
//! subject prefix of its own and deletes the stream at the end.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapter_host::signatures::{Secret, sign_standard_webhooks};
use futures::StreamExt as _;
use process::{free_port, spawn_host_logged, wait_ready_logged};
use serde_json::Value;

#[path = "common/process.rs"]
mod process;

const CRM_SECRET: &str = "whsec_ZTJlLWNybS1zaWduaW5nLXNlY3JldC0wMDAx";

fn nats_url() -> String {
    std::env::var("ADAPTER_HOST_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[adapters]]
tenant_id = "tenant-nats"
name = "champion-health"
wasm = "{champion}"

[[connections]]
id = "champion"
tenant_id = "tenant-nats"
provider = "custom"
adapter = "champion-health"
signature = {{ scheme = "standard_webhooks" }}
secret = "tenant-nats/champion/signing"
allowed_orgs = ["org-456"]

[[secrets]]
name = "tenant-nats/champion/signing"
value = "{CRM_SECRET}"
"#,
            champion = test_artifacts::CHAMPION_HEALTH,
        ),
    )
    .unwrap();
    path
}

async fn deliver(client: &reqwest::Client, port: u16, id: &str) -> Value {
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
        sign_standard_webhooks(&Secret::new(CRM_SECRET), id, &timestamp, &body).unwrap();
    let response = client
        .post(format!("http://127.0.0.1:{port}/v1/hooks/champion"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", &timestamp)
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_events_are_published_to_nats_jetstream_once_each() {
    let token = token();
    let (stream_name, prefix) = (format!("E2E_{token}"), format!("e{token}"));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let log = dir.path().join("host.log");
    let port = free_port();
    let mut host = spawn_host_logged(
        &config,
        &dir.path().join("data"),
        port,
        &[
            ("ADAPTER_HOST_BUS", &nats_url()),
            ("ADAPTER_HOST_NATS_STREAM", &stream_name),
            ("ADAPTER_HOST_NATS_SUBJECT_PREFIX", &prefix),
            ("ADAPTER_HOST_LOG", "info"),
        ],
        &log,
    );
    let client = reqwest::Client::new();
    wait_ready_logged(&client, port, &log).await;

    let ready = client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    let ready: Value = serde_json::from_slice(&ready.bytes().await.unwrap()).unwrap();
    assert_eq!(ready["bus"], "nats", "{ready}");
    let ack = deliver(&client, port, "msg_nats_1").await;
    assert_eq!(ack["status"], "processed", "{ack}");
    assert_eq!(ack["events"], 1, "{ack}");
    // The CRM retries: the same delivery, answered as a duplicate, nothing published again.
    let again = deliver(&client, port, "msg_nats_1").await;
    assert_eq!(again["duplicate"], true, "{again}");

    // A consumer, as the commission calculator would read the stream (README, "Scale-out"):
    // a durable pull consumer, acknowledging what it processed.
    let nats = async_nats::connect(nats_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(nats);
    let stream = jetstream.get_stream(&stream_name).await.unwrap();
    let consumer = stream
        .get_or_create_consumer(
            "calculator",
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("calculator".into()),
                filter_subject: format!("{prefix}.events.tenant-nats.>"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("the event reached the stream within 10 s")
        .unwrap()
        .unwrap();
    let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
    let event_id = envelope["event_id"].as_str().unwrap().to_owned();
    assert_eq!(
        message.subject.as_str(),
        format!("{prefix}.events.tenant-nats.member.enrolled")
    );
    assert_eq!(
        message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string()),
        Some(event_id.clone())
    );
    assert_eq!(envelope["tenant_id"], "tenant-nats");
    assert!(envelope["payload"].is_object(), "{envelope}");
    message.ack().await.unwrap();
    // Nothing else comes: the CRM's retry published nothing again.
    let next = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
    assert!(next.is_err(), "one event, once: {next:?}");

    let _ = host.kill();
    let _ = host.wait();
    let _ = jetstream.delete_stream(&stream_name).await;
}
