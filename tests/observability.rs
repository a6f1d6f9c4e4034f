//! Traces and per-connection metrics, through the real binary: `adapter-host serve
//! --otlp-endpoint … --metrics-per-connection` takes signed deliveries; an OTLP collector
//! stand-in (a server in this test taking `POST /v1/traces`) receives the spans of each
//! delivery, from the signature check to the relay's publication, in one trace whose id is the
//! `metadata.trace_id` of the event the delivery produced.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapter_host::signatures::{Secret, sign_standard_webhooks};
use adapter_host::store::{OutboxFilter, SqliteStore, Store};
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use process::{free_port, wait_ready};
use prost::Message as _;
use serde_json::Value;

#[path = "common/process.rs"]
mod process;

const CRM_SECRET: &str = "whsec_b2JzZXJ2YWJpbGl0eS1zaWduaW5nLXNlY3JldA==";

/// A caller's trace: the second delivery comes in it.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// One exported span, as the collector decoded it.
#[derive(Debug, Clone)]
struct Exported {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    service_name: Option<String>,
}

/// The collector stand-in: decodes every OTLP/HTTP protobuf export it is sent.
async fn collector() -> (Arc<Mutex<Vec<Exported>>>, u16) {
    let spans = Arc::new(Mutex::new(Vec::<Exported>::new()));
    let log = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let log = Arc::clone(&log);
            async move {
                assert_eq!(
                    headers.get("content-type").unwrap(),
                    "application/x-protobuf"
                );
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP export");
                let mut log = log.lock().unwrap();
                for resource in request.resource_spans {
                    let service_name = resource.resource.as_ref().and_then(|r| {
                        r.attributes
                            .iter()
                            .find(|kv| kv.key == "service.name")
                            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                any_value::Value::StringValue(s) => Some(s.clone()),
                                _ => None,
                            })
                    });
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            log.push(Exported {
                                name: span.name,
                                trace_id: hex::encode(span.trace_id),
                                span_id: hex::encode(span.span_id),
                                parent_span_id: hex::encode(span.parent_span_id),
                                service_name: service_name.clone(),
                            });
                        }
                    }
                }
                // An empty ExportTraceServiceResponse.
                (
                    StatusCode::OK,
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (spans, port)
}

fn write_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[adapters]]
tenant_id = "tenant-obs"
name = "champion-health"
wasm = "{champion}"

[[connections]]
id = "champion"
tenant_id = "tenant-obs"
provider = "custom"
adapter = "champion-health"
signature = {{ scheme = "standard_webhooks" }}
secret = "tenant-obs/champion/signing"
allowed_orgs = ["org-456"]

[[secrets]]
name = "tenant-obs/champion/signing"
value = "{CRM_SECRET}"
"#,
            champion = test_artifacts::CHAMPION_HEALTH,
        ),
    )
    .unwrap();
    config
}

fn spawn(config: &std::path::Path, data: &std::path::Path, port: u16, collector: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_adapter-host"))
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--otlp-endpoint", &format!("http://127.0.0.1:{collector}")])
        .arg("--metrics-per-connection")
        .env("ADAPTER_HOST_LOG", "error")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting adapter-host serve")
}

/// Sends one signed delivery of the sample enrollment, with a `traceparent` if given.
async fn deliver(client: &reqwest::Client, port: u16, id: &str, traceparent: Option<&str>) {
    let body = std::fs::read(test_artifacts::sample_file(
        "champion-health/fixtures/enrollment-1kb.json",
    ))
    .unwrap();
    // The same enrollment twice would be one event: make this one another.
    let body = String::from_utf8(body)
        .unwrap()
        .replacen("\"event_id\": \"", &format!("\"event_id\": \"{id}-"), 1)
        .replacen("\"member_id\": \"", &format!("\"member_id\": \"{id}-"), 1);
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let signature =
        sign_standard_webhooks(&Secret::new(CRM_SECRET), id, &timestamp, body.as_bytes()).unwrap();
    let mut request = client
        .post(format!("http://127.0.0.1:{port}/v1/hooks/champion"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", &timestamp)
        .header("webhook-signature", signature);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.body(body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ack: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (ack["status"].as_str(), ack["events"].as_u64()),
        (Some("processed"), Some(1)),
        "{ack}"
    );
}

async fn metrics(client: &reqwest::Client, port: u16) -> String {
    client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_one_trace_whose_id_its_event_carries() {
    let (spans, collector_port) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let data = dir.path().join("data");
    let port = free_port();
    let mut host = spawn(&config, &data, port, collector_port);
    let client = reqwest::Client::new();
    wait_ready(&client, port).await;

    deliver(&client, port, "msg_obs_1", None).await;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    deliver(&client, port, "msg_obs_2", Some(&traceparent)).await;

    // Both events published by the relay (asynchronously), before the host is stopped.
    let published = r#"adapter_host_relay_attempts_total{result="ok",target="bus"} 2"#;
    let mut text = String::new();
    for _ in 0..200 {
        text = metrics(&client, port).await;
        if text.contains(published) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(text.contains(published), "{text}");
    // The per-connection counters, enabled by --metrics-per-connection.
    for line in [
        r#"adapter_host_connection_deliveries_total{connection="champion",outcome="processed",tenant="tenant-obs"} 2"#,
        r#"adapter_host_connection_events_total{connection="champion",tenant="tenant-obs"} 2"#,
        "adapter_host_events_appended_total 2",
        "adapter_host_relay_publish_lag_seconds_count 2",
        "adapter_host_relay_publish_duration_seconds_count 2",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }

    // A graceful stop flushes the spans still buffered.
    let stopped = Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(host.wait().unwrap().success(), "a graceful stop exits 0");

    let store = SqliteStore::open(&data).unwrap();
    let outbox = store
        .list_outbox(OutboxFilter {
            tenant_id: "tenant-obs".into(),
            ..OutboxFilter::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(outbox.len(), 2);
    let trace_ids: Vec<String> = outbox
        .iter()
        .map(|row| {
            let metadata: Value = serde_json::from_str(&row.metadata_json).unwrap();
            metadata["trace_id"].as_str().unwrap().to_owned()
        })
        .collect();

    let spans = spans.lock().unwrap().clone();
    assert!(
        spans
            .iter()
            .all(|s| s.service_name.as_deref() == Some("adapter-host")),
        "{spans:#?}"
    );
    let mut traces: BTreeMap<&str, Vec<&Exported>> = BTreeMap::new();
    for span in &spans {
        traces.entry(&span.trace_id).or_default().push(span);
    }
    // The first delivery started a trace of its own; the second joined its caller's.
    let own: Vec<&String> = trace_ids.iter().filter(|id| *id != CALLER_TRACE).collect();
    assert_eq!(own.len(), 1, "{trace_ids:?}");
    assert_eq!(own[0].len(), 32, "{trace_ids:?}");
    for trace_id in &trace_ids {
        let trace = traces
            .get(trace_id.as_str())
            .unwrap_or_else(|| panic!("no span of the trace {trace_id}: {spans:#?}"));
        let named = |name: &str| -> Vec<&Exported> {
            trace.iter().copied().filter(|s| s.name == name).collect()
        };
        let root = named("webhook.delivery");
        assert_eq!(root.len(), 1, "{trace:#?}");
        let root = root[0];
        let expected_parent = if trace_id == CALLER_TRACE {
            CALLER_SPAN
        } else {
            ""
        };
        assert_eq!(root.parent_span_id, expected_parent, "{root:?}");
        for name in [
            "signature.verify",
            "sandbox.invoke",
            "store.commit",
            "relay.publish",
        ] {
            let found = named(name);
            assert_eq!(found.len(), 1, "one {name} in {trace:#?}");
            // The relay's span too, though it was started later from the stored trace id alone.
            assert_eq!(
                found[0].parent_span_id, root.span_id,
                "{name} is a child of the delivery's root span: {trace:#?}"
            );
        }
    }
}

/// The person the hostile guest emits (and writes to its own log at every level).
const PERSON_EMAIL: &str = "grace.hopper.pii@example.test";
const PERSON_PHONE: &str = "+1 202 555 0147";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_reaches_neither_the_hosts_own_log_at_trace_level_nor_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[adapters]]
tenant_id = "tenant-obs"
name = "hostile"
wasm = "{hostile}"

[[connections]]
id = "people"
tenant_id = "tenant-obs"
provider = "custom"
adapter = "hostile"
signature = {{ scheme = "standard_webhooks" }}
secret = "tenant-obs/people/signing"
allowed_orgs = ["org-456"]

[[secrets]]
name = "tenant-obs/people/signing"
value = "{CRM_SECRET}"
"#,
            hostile = test_artifacts::HOSTILE,
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let (stdout, stderr) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
    let mut host = Command::new(env!("CARGO_BIN_EXE_adapter-host"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // Every level of the host's and its HTTP stack's own logging; the compiler's trace (a
        // flood about machine code, with no data in it) would only slow the start down.
        .env(
            "ADAPTER_HOST_LOG",
            "trace,cranelift_codegen=info,cranelift_frontend=info,regalloc2=info,\
             wasmtime_cranelift=info,wasmtime=info",
        )
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("starting adapter-host serve");
    let client = reqwest::Client::new();
    wait_ready(&client, port).await;

    let body = format!("person\n{PERSON_EMAIL}\n{PERSON_PHONE}\norg-456");
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let signature = sign_standard_webhooks(
        &Secret::new(CRM_SECRET),
        "msg_pii_1",
        &timestamp,
        body.as_bytes(),
    )
    .unwrap();
    let response = client
        .post(format!("http://127.0.0.1:{port}/v1/hooks/people"))
        .header("webhook-id", "msg_pii_1")
        .header("webhook-timestamp", &timestamp)
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ack: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(ack["events"], 1, "{ack}");
    // Published too (the relay's own logging included), before the host is stopped.
    let published = r#"adapter_host_relay_attempts_total{result="ok",target="bus"} 1"#;
    for _ in 0..200 {
        if metrics(&client, port).await.contains(published) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(host.wait().unwrap().success(), "a graceful stop exits 0");

    let log =
        std::fs::read_to_string(&stdout).unwrap() + &std::fs::read_to_string(&stderr).unwrap();
    assert!(log.contains("delivery processed"), "the host logged: {log}");
    for value in [PERSON_EMAIL, PERSON_PHONE] {
        assert!(!log.contains(value), "the host's log shows {value}");
    }
    // Nor is it readable on disk: the payload, the body and the guest's log are sealed.
    for entry in walk(&data) {
        let bytes = std::fs::read(&entry).unwrap();
        for value in [PERSON_EMAIL, PERSON_PHONE] {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "{} holds {value}",
                entry.display()
            );
        }
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
