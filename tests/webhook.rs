//! The hosted webhook endpoint, in process (`app().oneshot`) over a real data directory:
//! signatures, inbox, adapter, outbox, idempotent retries, failures kept for redrive, recovery.

use std::time::{SystemTime, UNIX_EPOCH};

use adapter_host::pipeline::Host;
use adapter_host::serve::{ServeOptions, open_host};
use adapter_host::server::{ServerSettings, app};
use adapter_host::signatures::{Secret, sign_standard_webhooks};
use adapter_host::store::{DeliveryFilter, DeliveryStatus, NewDelivery, OutboxFilter, PageRequest};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tower::ServiceExt as _;

/// The demo secret of the Standard Webhooks connection (base64 of "test-signing-secret-0123456789").
const SECRET_B64: &str = "dGVzdC1zaWduaW5nLXNlY3JldC0wMTIzNDU2Nzg5";
#[path = "common/backend.rs"]
mod backend;
#[path = "common/jwt.rs"]
mod jwt;

struct TestHost {
    host: Host,
    settings: ServerSettings,
    _schema: backend::Schema,
    _dir: tempfile::TempDir,
}

async fn start() -> TestHost {
    start_with("", |_| {}).await
}

/// A host with the connections of [`start`], those of `extra` (TOML appended to the file) and
/// its options changed by `tweak`.
async fn start_with(extra: &str, tweak: impl FnOnce(&mut ServeOptions)) -> TestHost {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[[adapters]]
tenant_id = "tenant-a"
name = "champion-health"
wasm = "{champion}"

[[adapters]]
tenant_id = "tenant-a"
name = "hostile"
wasm = "{hostile}"

[[connections]]
id = "champion"
tenant_id = "tenant-a"
provider = "custom"
adapter = "champion-health"
signature = {{ scheme = "standard_webhooks" }}
secret = "tenant-a/champion/signing"
allowed_orgs = ["org-456"]

[[connections]]
id = "hostile"
tenant_id = "tenant-a"
provider = "custom"
adapter = "hostile"
signature = {{ scheme = "github" }}
secret = "tenant-a/hostile/signing"

[[connections]]
id = "switched-off"
tenant_id = "tenant-a"
provider = "custom"
adapter = "hostile"
signature = {{ scheme = "github" }}
secret = "tenant-a/hostile/signing"
enabled = false

[[adapters]]
tenant_id = "tenant-a"
name = "salesforce"
wasm = "{salesforce}"

[[connections]]
id = "salesforce"
tenant_id = "tenant-a"
provider = "salesforce"
adapter = "salesforce"
signature = {{ scheme = "salesforce_outbound", organization_id = "00D5g000004XyZaEAK" }}
allowed_orgs = ["org-456"]
settings = {{ default_org_id = "org-456" }}

[[connections]]
id = "zoho"
tenant_id = "tenant-a"
provider = "zoho"
adapter = "hostile"
signature = {{ scheme = "zoho_token" }}
secret = "tenant-a/zoho/channel-token"

[[secrets]]
name = "tenant-a/zoho/channel-token"
value = "zoho-channel-token-4150868"

[[secrets]]
name = "tenant-a/champion/signing"
value = "whsec_{SECRET_B64}"

[[secrets]]
name = "tenant-a/hostile/signing"
value = "github-secret"
"#,
        champion = test_artifacts::CHAMPION_HEALTH,
        hostile = test_artifacts::HOSTILE,
        salesforce = test_artifacts::component("salesforce").expect("the salesforce sample"),
    ) + extra;
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config).unwrap();
    let settings = ServerSettings {
        max_body_bytes: 64 * 1024,
        auth: std::sync::Arc::new(jwt::auth_config()),
        ..ServerSettings::default()
    };
    let mut options = ServeOptions {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        config: Some(config_path),
        public_base_url: Some("https://hooks.example.test".into()),
        relay: Default::default(),
        server: settings.clone(),
        ..ServeOptions::default()
    };
    tweak(&mut options);
    // The master key comes from a generated key file inside the temporary data directory.
    let host = open_host(&backend::on_backend(options)).await.unwrap();
    TestHost {
        host,
        settings,
        _schema: backend::guard(&dir.path().join("data")),
        _dir: dir,
    }
}

/// A tenant-a admin token: platform-level (the test connections are), or of `org`.
fn admin_token(org: Option<&str>) -> String {
    let mut claims = serde_json::json!({"tenant_id": "tenant-a"});
    if let Some(org) = org {
        claims["org_id"] = org.into();
    }
    jwt::token_with(claims)
}

/// A management API call as a platform-level tenant-a admin acting in org-456.
fn manage(method: &str, path: &str, token: &str, body: Option<Value>) -> Request<Body> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("x-org-id", "org-456");
    match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap()
}

impl TestHost {
    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = app(self.host.clone(), self.settings.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(content_type, "application/problem+json", "{status}");
        }
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        (status, json)
    }

    async fn outbox(&self) -> Vec<adapter_host::store::OutboxRow> {
        self.host
            .store()
            .list_outbox(OutboxFilter {
                tenant_id: "tenant-a".into(),
                limit: 100,
                ..OutboxFilter::default()
            })
            .await
            .unwrap()
            .items
    }

    async fn deliveries(&self) -> Vec<adapter_host::store::DeliveryInfo> {
        self.host
            .store()
            .list_deliveries(DeliveryFilter {
                limit: 100,
                ..DeliveryFilter::default()
            })
            .await
            .unwrap()
            .items
    }
}

fn standard_webhooks(id: &str, body: &[u8], secret_b64: &str) -> Request<Body> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let secret = Secret::new(format!("whsec_{secret_b64}"));
    let signature = sign_standard_webhooks(&secret, id, &timestamp, body).unwrap();
    Request::post("/v1/hooks/champion")
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp)
        .header("webhook-signature", signature)
        .body(Body::from(body.to_vec()))
        .unwrap()
}

fn github(connection: &str, body: &str, secret: &str) -> Request<Body> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    Request::post(format!("/v1/hooks/{connection}"))
        .header("x-hub-signature-256", format!("sha256={signature}"))
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(test_artifacts::sample_file(&format!(
        "champion-health/fixtures/{name}"
    )))
    .unwrap()
}

#[tokio::test]
async fn a_signed_delivery_lands_in_the_outbox_with_exact_decimals() {
    let host = start().await;
    let (status, ack) = host
        .send(standard_webhooks(
            "msg_1",
            &fixture("enrollment-1kb.json"),
            SECRET_B64,
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["status"], "processed");
    assert_eq!(ack["events"], 1);
    assert_eq!(ack["duplicate"], false);

    let outbox = host.outbox().await;
    assert_eq!(outbox.len(), 1);
    let row = &outbox[0];
    assert_eq!(row.tenant_id, "tenant-a");
    assert_eq!(row.event_type, "member.enrolled");
    assert_eq!(row.delivery_id, ack["delivery_id"].as_str().unwrap());
    assert!(
        row.payload_json.contains(r#""pepm_rate":"12.50""#),
        "{}",
        row.payload_json
    );
    assert!(row.payload_json.contains(r#""split_pct":"66.666667""#));
    let metadata: Value = serde_json::from_str(&row.metadata_json).unwrap();
    assert_eq!(metadata["source"], "webhook:custom");
    assert!(metadata["actor"].as_str().unwrap().ends_with("@1"));
    // A W3C trace id (the exported trace's, when traces are on), also with traces off.
    let trace_id = metadata["trace_id"].as_str().unwrap();
    assert!(
        trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{trace_id}"
    );
}

#[tokio::test]
async fn a_retried_delivery_is_acknowledged_once_and_creates_nothing_new() {
    let host = start().await;
    let body = fixture("agent-created.json");
    let (_, first) = host
        .send(standard_webhooks("msg_retry", &body, SECRET_B64))
        .await;
    let (status, second) = host
        .send(standard_webhooks("msg_retry", &body, SECRET_B64))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["delivery_id"], first["delivery_id"]);
    assert_eq!(host.deliveries().await.len(), 1);
    assert_eq!(host.outbox().await.len(), 1);
}

#[tokio::test]
async fn a_bad_signature_is_refused_and_nothing_is_stored_but_a_counter() {
    let host = start().await;
    let wrong = base64::engine::general_purpose::STANDARD.encode("not-the-secret-at-all-0000");
    let (status, problem) = host
        .send(standard_webhooks(
            "msg_bad",
            &fixture("agent-created.json"),
            &wrong,
        ))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        problem["type"],
        "https://adapter-host.dev/problems/unauthorized"
    );
    let detail = problem["detail"].as_str().unwrap();
    assert_eq!(
        detail,
        "the webhook signature did not verify: the signature does not match"
    );
    assert!(!detail.contains(SECRET_B64));
    assert!(host.deliveries().await.is_empty());
    assert!(host.outbox().await.is_empty());

    let (_, metrics) = host
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains(
            r#"adapter_host_signature_failures_total{reason="mismatch",scheme="standard_webhooks"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_token_carried_in_the_body_is_neither_stored_nor_shown_to_the_adapter() {
    let host = start().await;
    let body = r#"{"module":"Deals","operation":"update","ids":["41"],"token":"zoho-channel-token-4150868","channel_id":"1000"}"#;
    let request = || {
        Request::post("/v1/hooks/zoho")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    // The hostile adapter answers a body it does not know as a bad request: the delivery is
    // kept, failed, with what the adapter saw.
    let (status, ack) = host.send(request()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ack}");
    let delivery = host
        .host
        .store()
        .get_delivery(ack["delivery_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8(delivery.body).unwrap(),
        body.replace(r#""zoho-channel-token-4150868""#, r#""[redacted]""#)
    );
    // A retry is still recognised as the same delivery.
    let (_, again) = host.send(request()).await;
    assert_eq!(again["delivery_id"], ack["delivery_id"]);
    assert_eq!(again["duplicate"], true);
}

#[tokio::test]
async fn a_salesforce_outbound_message_is_answered_with_a_soap_ack() {
    let host = start().await;
    let body = std::fs::read(test_artifacts::sample_file(
        "salesforce/fixtures/outbound-opportunity-won.xml",
    ))
    .unwrap();
    let request = |body: Vec<u8>| {
        Request::post("/v1/hooks/salesforce")
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", "\"\"")
            .body(Body::from(body))
            .unwrap()
    };
    let response = app(host.host.clone(), host.settings.clone())
        .oneshot(request(body.clone()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/xml; charset=utf-8"
    );
    let delivery_id = response.headers()["x-delivery-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let ack = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let ack = String::from_utf8(ack.to_vec()).unwrap();
    assert!(ack.contains("<Ack>true</Ack>"), "{ack}");
    assert!(
        ack.contains("http://soap.sforce.com/2005/09/outbound"),
        "{ack}"
    );
    let outbox = host.outbox().await;
    assert!(!outbox.is_empty());
    assert!(outbox.iter().all(|row| row.delivery_id == delivery_id));
    assert!(outbox.iter().any(|row| row.event_type == "opportunity.won"));

    // Another org's message is refused as problem+json, as every bad signature is.
    let forged = String::from_utf8(body)
        .unwrap()
        .replace("00D5g000004XyZaEAK", "00D000000000001AAA");
    let (status, problem) = host.send(request(forged.into_bytes())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
}

#[tokio::test]
async fn unknown_and_disabled_connections_answer_404() {
    let host = start().await;
    for connection in ["nope", "switched-off"] {
        let (status, problem) = host.send(github(connection, "ok", "github-secret")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{connection}");
        assert_eq!(problem["status"], 404);
    }
}

#[tokio::test]
async fn a_body_over_the_limit_answers_413() {
    let host = start().await;
    let body = "x".repeat(65 * 1024);
    let (status, problem) = host.send(github("hostile", &body, "github-secret")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        problem["detail"],
        "the body exceeds the limit of 65536 bytes"
    );
    assert!(host.deliveries().await.is_empty());
}

#[tokio::test]
async fn an_adapter_failure_is_kept_for_redrive_and_answered_202() {
    let host = start().await;
    let (status, ack) = host.send(github("hostile", "panic", "github-secret")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(ack["status"], "failed");
    let delivery_id = ack["delivery_id"].as_str().unwrap().to_owned();
    let stored = host
        .host
        .store()
        .get_delivery(&delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.info.status, DeliveryStatus::Failed);
    assert!(
        stored
            .info
            .reason_json
            .as_deref()
            .unwrap()
            .contains("hostile guest panicked on purpose"),
        "{:?}",
        stored.info.reason_json
    );
    let invocations = host
        .host
        .store()
        .list_invocations(&delivery_id)
        .await
        .unwrap();
    assert_eq!(invocations.len(), 1);

    let path = format!("/v1/deliveries/{delivery_id}/redrive");
    let (status, _) = host.send(manage("POST", &path, "wrong", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The connection is platform-level: an org's admin sees it but cannot change it.
    let org_admin = admin_token(Some("org-456"));
    let (status, problem) = host.send(manage("POST", &path, &org_admin, None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let viewer = jwt::token_with(serde_json::json!({"tenant_id": "tenant-a", "roles": ["viewer"]}));
    let (status, _) = host.send(manage("POST", &path, &viewer, None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let other_tenant = jwt::token_with(serde_json::json!({"tenant_id": "tenant-b"}));
    let (status, _) = host.send(manage("POST", &path, &other_tenant, None)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another tenant's delivery does not exist"
    );
    assert_eq!(
        host.host
            .store()
            .list_invocations(&delivery_id)
            .await
            .unwrap()
            .len(),
        1,
        "nothing ran for a refused call"
    );

    let (status, redriven) = host
        .send(manage("POST", &path, &admin_token(None), None))
        .await;
    assert_eq!(status, StatusCode::OK, "{redriven}");
    assert_eq!(
        redriven["status"], "failed",
        "the hostile adapter panics again"
    );
    assert_eq!(
        host.host
            .store()
            .list_invocations(&delivery_id)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn failed_deliveries_are_redriven_in_batches() {
    let host = start().await;
    let mut failed = Vec::new();
    for n in 0..3 {
        let (_, ack) = host
            .send(github("hostile", &format!("panic\n{n}"), "github-secret"))
            .await;
        failed.push(ack["delivery_id"].as_str().unwrap().to_owned());
    }
    let (_, ok) = host.send(github("hostile", "ok", "github-secret")).await;
    let processed = ok["delivery_id"].as_str().unwrap().to_owned();
    let admin = admin_token(None);

    // By filter: the failed ones, never the processed one.
    let (status, batch) = host
        .send(manage(
            "POST",
            "/v1/deliveries/redrive",
            &admin,
            Some(serde_json::json!({"connection_id": "hostile", "limit": 10})),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["redriven"], 3);
    let mut ran: Vec<String> = batch["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["delivery_id"].as_str().unwrap().to_owned())
        .collect();
    ran.sort();
    failed.sort();
    assert_eq!(ran, failed);

    // By ids: each answered on its own.
    let (status, batch) = host
        .send(manage(
            "POST",
            "/v1/deliveries/redrive",
            &admin,
            Some(serde_json::json!({"delivery_ids": [failed[0], processed, "no-such-delivery"]})),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(
        (batch["redriven"].as_u64(), batch["refused"].as_u64()),
        (Some(1), Some(2))
    );
    let results = batch["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "failed");
    assert_eq!(results[1]["error"]["status"], 409);
    assert_eq!(results[2]["error"]["status"], 404);

    for bad in [
        serde_json::json!({"delivery_ids": []}),
        serde_json::json!({"delivery_ids": [failed[0]], "connection_id": "hostile"}),
        serde_json::json!({"status": "processed"}),
        serde_json::json!({"limit": 101}),
    ] {
        let (status, problem) = host
            .send(manage(
                "POST",
                "/v1/deliveries/redrive",
                &admin,
                Some(bad.clone()),
            ))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
    }
}

#[tokio::test]
async fn only_failed_deliveries_are_redriven() {
    let host = start().await;
    let (_, ack) = host.send(github("hostile", "ok", "github-secret")).await;
    let delivery_id = ack["delivery_id"].as_str().unwrap();
    let path = format!("/v1/deliveries/{delivery_id}/redrive");
    let (status, problem) = host
        .send(manage("POST", &path, &admin_token(None), None))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(host.outbox().await.len(), 1);
}

#[tokio::test]
async fn a_delivery_recorded_before_a_crash_is_processed_at_recovery_once() {
    let host = start().await;
    // What a crash between recording and completing leaves behind.
    let recorded = host
        .host
        .store()
        .record_delivery(
            NewDelivery {
                connection_id: "hostile".into(),
                received_at: adapter_host::store::now_millis(),
                provider_delivery_id: None,
                method: "POST".into(),
                path: "/v1/hooks/hostile".into(),
                query: String::new(),
                headers: Vec::new(),
                body: b"ok".to_vec(),
                trace_id: "trace-crash".into(),
                kind: adapter_host::store::DeliveryKind::Webhook,
                poll_run_id: None,
                cursor: None,
            },
            std::time::Duration::from_secs(300),
            // The crashed process's lease has ended.
            adapter_host::store::now_millis() - 1,
        )
        .await
        .unwrap();
    assert_eq!(host.host.recover_once().await.unwrap(), 1);
    assert_eq!(host.host.recover_once().await.unwrap(), 0);
    let outbox = host.outbox().await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].delivery_id, recorded.id);
}

/// Opens a host on `data` provisioned from `config` (TOML text).
async fn open_with(dir: &std::path::Path, config: &str) -> anyhow::Result<Host> {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    open_host(&backend::on_backend(ServeOptions {
        data_dir: dir.join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        config: Some(path),
        public_base_url: None,
        relay: Default::default(),
        server: ServerSettings::default(),
        ..ServeOptions::default()
    }))
    .await
}

#[tokio::test]
async fn config_subscribers_are_created_once_and_updated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let config = |types: &str, url: &str| {
        format!(
            r#"
[[secrets]]
name = "t/subscriber"
value = "whsec_c3Vic2NyaWJlcg=="

[[subscribers]]
tenant_id = "t"
url = "{url}"
event_types = {types}
secret = "t/subscriber"
"#
        )
    };
    let url = "https://commissions.example/hooks?token=abc";
    let host = open_with(dir.path(), &config(r#"["deal.*"]"#, url))
        .await
        .unwrap();
    let first = host
        .store()
        .list_subscribers("t", None, PageRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].event_types, ["deal.*"]);
    drop(host);

    let host = open_with(dir.path(), &config(r#"["deal.*", "contact.created"]"#, url))
        .await
        .unwrap();
    let second = host
        .store()
        .list_subscribers("t", None, PageRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(second.len(), 1, "the same subscriber, updated");
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(second[0].event_types, ["deal.*", "contact.created"]);
    drop(host);

    let error = open_with(dir.path(), &config("[]", "ftp://commissions.example/"))
        .await
        .unwrap_err();
    assert_eq!(
        format!("{error:#}"),
        "applying ".to_owned()
            + &dir.path().join("config.toml").display().to_string()
            + ": subscribers[0] (tenant t): `url` must be an http or https URL with a host"
    );
    let error = open_with(
        dir.path(),
        &config("[]", url).replace(r#"secret = "t/subscriber""#, r#"secret = "t/missing""#),
    )
    .await
    .unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.ends_with("subscribers[0] (tenant t): no secret named t/missing"),
        "{message}"
    );
    assert!(!message.contains("token=abc"), "the URL may hold a token");
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let host = start().await;
    for (path, expected) in [
        ("/healthz", serde_json::json!("ok")),
        (
            "/readyz",
            serde_json::json!({
                "status": "ready",
                "store": if backend::postgres() { "postgres" } else { "sqlite" },
                "bus": "memory",
            }),
        ),
    ] {
        let (status, body) = host
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, expected);
    }
    host.send(github("hostile", "ok", "github-secret")).await;
    let (_, metrics) = host
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(r#"adapter_host_deliveries_total{outcome="processed",scheme="github"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("adapter_host_outbox_pending 1"),
        "{metrics}"
    );
    assert!(metrics.contains("adapter_host_invocation_duration_seconds_count 1"));
}

mod relay {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use adapter_host::bus::{Bus, BusError, MemoryBus, Message};
    use adapter_host::metrics::Metrics;
    use adapter_host::relay::{Relay, RelayConfig};
    use adapter_host::store::OutboxStatus;
    use tokio::sync::Notify;

    use super::*;

    /// A bus that refuses the first `failures` publications.
    #[derive(Debug, Default)]
    struct FlakyBus {
        failures: usize,
        calls: AtomicUsize,
        inner: MemoryBus,
    }

    #[async_trait::async_trait]
    impl Bus for FlakyBus {
        async fn publish(&self, message: &Message) -> Result<(), BusError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(BusError("the bus is down".into()));
            }
            self.inner.publish(message).await
        }
    }

    fn relay(host: &TestHost, bus: Arc<dyn Bus>, max_attempts: u32) -> Relay {
        Relay::new(
            host.host.store().clone(),
            bus,
            Metrics::new(),
            RelayConfig {
                max_attempts,
                // Retries come due at once: the test drives passes itself, no sleeping.
                backoff_base: Duration::ZERO,
                ..RelayConfig::default()
            },
            Arc::new(Notify::new()),
        )
    }

    #[tokio::test]
    async fn published_events_carry_the_envelope_with_the_payload_byte_for_byte() {
        let host = start().await;
        host.send(standard_webhooks(
            "msg_pub",
            &fixture("enrollment-1kb.json"),
            SECRET_B64,
        ))
        .await;
        let bus = Arc::new(FlakyBus::default());
        let mut received = bus.inner.subscribe();
        assert_eq!(
            relay(&host, bus.clone(), 3).publish_once().await.unwrap(),
            1
        );

        let message = received.recv().await.unwrap();
        let row = &host.outbox().await[0];
        assert_eq!(message.event_id, row.event_id);
        assert_eq!(message.subject, "events.tenant-a.member.enrolled");
        assert!(
            message
                .body
                .contains(&format!(r#""payload":{}"#, row.payload_json))
        );
        let envelope: Value = serde_json::from_str(&message.body).unwrap();
        assert_eq!(envelope["tenant_id"], "tenant-a");
        assert_eq!(envelope["payload"]["pepm_rate"], "12.50");
        assert_eq!(row.status, OutboxStatus::Published);
        assert!(row.published_at.is_some());
        // Nothing left to publish.
        assert_eq!(relay(&host, bus, 3).publish_once().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_failing_bus_is_retried_until_it_takes_the_event() {
        let host = start().await;
        host.send(github("hostile", "ok", "github-secret")).await;
        let bus = Arc::new(FlakyBus {
            failures: 2,
            ..FlakyBus::default()
        });
        let relay = relay(&host, bus.clone(), 5);
        assert_eq!(relay.publish_once().await.unwrap(), 0);
        let row = &host.outbox().await[0];
        assert_eq!(row.status, OutboxStatus::Pending);
        assert_eq!(
            row.last_error.as_deref(),
            Some("publishing to the bus failed: the bus is down")
        );
        assert_eq!(relay.publish_once().await.unwrap(), 0);
        assert_eq!(relay.publish_once().await.unwrap(), 1);
        assert_eq!(host.outbox().await[0].status, OutboxStatus::Published);
        assert_eq!(bus.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_event_the_bus_never_takes_is_parked_as_dead() {
        let host = start().await;
        host.send(github("hostile", "ok", "github-secret")).await;
        let bus = Arc::new(FlakyBus {
            failures: usize::MAX,
            ..FlakyBus::default()
        });
        let relay = relay(&host, bus.clone(), 3);
        for _ in 0..5 {
            relay.publish_once().await.unwrap();
        }
        assert_eq!(host.outbox().await[0].status, OutboxStatus::Dead);
        assert_eq!(
            bus.calls.load(Ordering::SeqCst),
            3,
            "no attempt after the last one"
        );
    }

    /// Starts a replay and waits for its end; answers its final record.
    async fn replayed(host: &TestHost, token: &str, body: Value) -> Value {
        let (status, started) = host
            .send(super::manage("POST", "/v1/replays", token, Some(body)))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{started}");
        let path = format!("/v1/replays/{}", started["id"].as_str().unwrap());
        for _ in 0..500 {
            let (status, replay) = host.send(super::manage("GET", &path, token, None)).await;
            assert_eq!(status, StatusCode::OK, "{replay}");
            if replay["status"] != "running" {
                return replay;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the replay did not end");
    }

    #[tokio::test]
    async fn published_events_can_be_replayed_for_a_bounded_range() {
        let host = start().await;
        host.send(github("hostile", "ok\nreplayed-entity", "github-secret"))
            .await;
        let before_replay = host.outbox().await;
        let created = before_replay[0].created_at;
        // The hostile connection is platform-level: so are its events.
        let range = serde_json::json!({"from": created, "to": created + 1, "platform_level": true});
        let admin = super::admin_token(None);

        // Not yet published: nothing to replay.
        let replay = replayed(&host, &admin, range.clone()).await;
        assert_eq!(
            (replay["status"].as_str(), replay["replayed"].as_u64()),
            (Some("done"), Some(0))
        );

        let host_bus = host.host.bus().clone();
        relay(&host, host_bus, 3).publish_once().await.unwrap();
        let replay = replayed(&host, &admin, range.clone()).await;
        assert_eq!(replay["status"], "done", "{replay}");
        assert_eq!(replay["replayed"], 1);
        assert_eq!(replay["requested_by"], "alice@example.com");
        assert!(replay["requested_at"].as_i64().unwrap() > 0);
        // Replay re-publishes; it appends nothing.
        assert_eq!(host.outbox().await.len(), 1);

        // An org's replay covers the org's events only.
        let org_admin = super::admin_token(Some("org-456"));
        let replay = replayed(
            &host,
            &org_admin,
            serde_json::json!({"from": created, "to": created + 1}),
        )
        .await;
        assert_eq!(replay["replayed"], 0);
        let (status, _) = host
            .send(super::manage(
                "POST",
                "/v1/replays",
                &org_admin,
                Some(range.clone()),
            ))
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "an org cannot replay platform-level events"
        );

        let (status, problem) = host
            .send(super::manage(
                "POST",
                "/v1/replays",
                &admin,
                Some(serde_json::json!({"from": created, "to": created + 8 * 24 * 3600 * 1000})),
            ))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            problem["detail"],
            "a replay covers at most 7 days; split the range"
        );
        let (status, _) = host
            .send(super::manage(
                "POST",
                "/v1/replays",
                "wrong",
                Some(range.clone()),
            ))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // Every replay is on record: who asked, when, what it did. Newest first.
        let (status, list) = host
            .send(super::manage("GET", "/v1/replays", &admin, None))
            .await;
        assert_eq!(status, StatusCode::OK);
        let replays = list["items"].as_array().unwrap();
        assert_eq!(replays.len(), 3);
        assert_eq!(replays[0]["org_id"], "org-456");
        assert_eq!(replays[1]["replayed"], 1);
    }

    #[tokio::test]
    async fn replays_are_rate_limited_per_tenant() {
        let host = start().await;
        let admin = super::admin_token(None);
        let range = serde_json::json!({"from": 0, "to": 1000});
        for _ in 0..adapter_host::api::manage::MAX_REPLAYS_PER_HOUR {
            replayed(&host, &admin, range.clone()).await;
        }
        let (status, problem) = host
            .send(super::manage("POST", "/v1/replays", &admin, Some(range)))
            .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
        assert_eq!(
            problem["type"],
            "https://adapter-host.dev/problems/too-many-requests"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_a_bounded_spread() {
        let relay = Relay::new(
            Arc::new(
                adapter_host::store::SqliteStore::open(tempfile::tempdir().unwrap().path())
                    .unwrap(),
            ),
            Arc::new(MemoryBus::new()),
            Metrics::new(),
            RelayConfig {
                backoff_base: Duration::from_secs(1),
                backoff_max: Duration::from_secs(60),
                ..RelayConfig::default()
            },
            Arc::new(Notify::new()),
        );
        for (attempts, base) in [(1, 1), (2, 2), (3, 4), (7, 60), (40, 60)] {
            let delay = relay.backoff(attempts, 12345);
            let base = Duration::from_secs(base);
            assert!(
                delay >= base && delay <= base + base / 4,
                "{attempts}: {delay:?}"
            );
        }
    }
}

// --- The webhook guard: source allow lists, capability URLs, methods, channels -------------

/// A token of the Zenoti connection's capability URL (config-provisioned).
const ZENOTI_TOKEN: &str = "zt-5f1c0d9e8b7a69584736251403f2e1d0c9b8a7";
/// HubSpot's client secret of the `hubspot` connection.
const HUBSPOT_SECRET: &str = "hubspot-client-secret-0f9e8d";

fn guarded_config() -> String {
    format!(
        r#"
[[adapters]]
tenant_id = "tenant-a"
name = "zenoti"
wasm = "{zenoti}"

[[connections]]
id = "zenoti"
tenant_id = "tenant-a"
provider = "zenoti"
adapter = "zenoti"
signature = {{ scheme = "unsigned" }}
webhook = {{ capability_secret = "tenant-a/zenoti/hook-token", methods = ["PUT", "PATCH"] }}
allowed_orgs = ["org-456"]
settings = {{ default_org_id = "org-456" }}

[[secrets]]
name = "tenant-a/zenoti/hook-token"
value = "{ZENOTI_TOKEN}"

[[connections]]
id = "allow-listed"
tenant_id = "tenant-a"
provider = "salesforce"
adapter = "hostile"
signature = {{ scheme = "github" }}
secret = "tenant-a/hostile/signing"
webhook = {{ allowed_ips = ["13.108.0.0/14", "2001:db8::/32"] }}

[[connections]]
id = "hubspot"
tenant_id = "tenant-a"
provider = "hubspot"
adapter = "hostile"
signature = {{ scheme = "hubspot", version = "v3" }}
secret = "tenant-a/hubspot/client-secret"

[[secrets]]
name = "tenant-a/hubspot/client-secret"
value = "{HUBSPOT_SECRET}"

[[connections]]
id = "zoho-bound"
tenant_id = "tenant-a"
provider = "zoho"
adapter = "hostile"
signature = {{ scheme = "zoho_token", channel_id = "1000000068001" }}
secret = "tenant-a/zoho/channel-token"
"#,
        zenoti = test_artifacts::component("zenoti").expect("the zenoti sample"),
    )
}

/// `request` as if it came over TCP from `peer`.
fn from(peer: &str, mut request: Request<Body>) -> Request<Body> {
    let ip: std::net::IpAddr = peer.parse().unwrap();
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(
            ip, 40_000,
        )));
    request
}

/// The host's load balancer in these tests.
fn behind_balancer(options: &mut ServeOptions) {
    options.trusted_proxies = adapter_host::signatures::TrustedProxies {
        proxies: vec!["10.0.0.0/8".parse().unwrap()],
        header: adapter_host::signatures::ForwardedHeader::XForwardedFor,
    };
}

#[tokio::test]
async fn an_allow_list_takes_its_sources_directly_and_through_a_trusted_proxy_only() {
    let host = start_with(&guarded_config(), behind_balancer).await;
    let signed = || github("allow-listed", "ok", "github-secret");
    let with_xff = |xff: &str| {
        let mut request = signed();
        request
            .headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
        request
    };
    // Salesforce's range, directly (IPv4, and IPv6).
    for peer in ["13.108.4.2", "2001:db8::7"] {
        let (status, ack) = host.send(from(peer, signed())).await;
        assert_ne!(status.as_u16() / 100, 4, "{peer}: {ack}");
    }
    // A stranger is refused with 403, and its address named; a forged X-Forwarded-For from it
    // (it is not a trusted proxy) is not believed.
    let (status, problem) = host
        .send(from("203.0.113.66", with_xff("13.108.0.9")))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(
        problem["detail"],
        "the source address 203.0.113.66 is not one this connection takes deliveries from"
    );
    // Through the balancer: the right-most hop it did not add is the source, whatever the
    // client wrote before it.
    let (status, ack) = host
        .send(from("10.0.0.5", with_xff("203.0.113.66, 13.110.9.9")))
        .await;
    assert_ne!(status.as_u16() / 100, 4, "{ack}");
    let (status, problem) = host
        .send(from("10.0.0.5", with_xff("13.108.0.9, 203.0.113.66")))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("203.0.113.66"),
        "{problem}"
    );
    // The balancer itself is not in the list, and a request with no known source is refused.
    let (status, _) = host.send(from("10.0.0.5", signed())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, problem) = host.send(signed()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        problem["detail"].as_str().unwrap().contains("unknown"),
        "{problem}"
    );
    // The allow list adds to the signature: an allowed source with a bad signature is a 401.
    let (status, _) = host
        .send(from("13.108.4.2", github("allow-listed", "ok", "wrong")))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Refusals are counted, and nothing of them is stored.
    let (_, metrics) = host
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert!(
        metrics.as_str().unwrap().contains(
            r#"adapter_host_signature_failures_total{reason="source_refused",scheme="github"} 3"#
        ),
        "{metrics}"
    );
    assert_eq!(
        host.deliveries().await.len(),
        1,
        "the three taken are one delivery"
    );
}

/// A Zenoti webhook as Zenoti sends it, with the method the user picked.
fn zenoti(method: &str, path: &str) -> Request<Body> {
    let body = std::fs::read(test_artifacts::sample_file(
        "zenoti/fixtures/guest-created.json",
    ))
    .unwrap();
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn a_zenoti_put_at_its_capability_url_is_taken_and_other_methods_get_405() {
    let host = start_with(&guarded_config(), |_| {}).await;
    let url = format!("/v1/hooks/zenoti/{ZENOTI_TOKEN}");
    let (status, ack) = host.send(zenoti("PUT", &url)).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["status"], "processed", "{ack}");
    assert_eq!(ack["events"], 1, "{ack}");
    // The token is not kept: the delivery's path has `[redacted]` in its place.
    let delivery = host
        .host
        .store()
        .get_delivery(ack["delivery_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.info.path, "/v1/hooks/zenoti/[redacted]");
    assert!(!format!("{delivery:?}").contains(ZENOTI_TOKEN));

    // POST is one Zenoti could send, but this connection was set to PUT and PATCH.
    let response = app(host.host.clone(), host.settings.clone())
        .oneshot(zenoti("POST", &url))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "PUT, PATCH");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let (status, problem) = host.send(zenoti("DELETE", &url)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        problem["detail"],
        "this connection takes PUT, PATCH requests, not DELETE"
    );
    // A GitHub-signed connection takes POST only.
    let response = app(host.host.clone(), host.settings.clone())
        .oneshot(
            Request::put("/v1/hooks/hostile")
                .body(Body::from("ok"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");

    // Without the token, or with another, the caller is refused and the token not revealed.
    let (status, problem) = host.send(zenoti("PUT", "/v1/hooks/zenoti")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("carries a capability token"),
        "{problem}"
    );
    let wrong = format!("/v1/hooks/zenoti/{}", ZENOTI_TOKEN.replace('5', "6"));
    let (status, problem) = host.send(zenoti("PUT", &wrong)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!problem.to_string().contains(ZENOTI_TOKEN), "{problem}");
    // A connection without a capability URL has none to guess at.
    let (status, _) = host
        .send(github("hostile/not-a-capability", "ok", "github-secret"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(host.deliveries().await.len(), 1);
}

#[tokio::test]
async fn a_rotated_capability_token_works_within_its_grace_period_and_not_after() {
    let host = start().await;
    let token = admin_token(None);
    let hostile = host
        .host
        .store()
        .find_adapter("tenant-a", "hostile")
        .await
        .unwrap()
        .unwrap();
    let put_token = |value: &str, grace: u64| {
        manage(
            "PUT",
            "/v1/secrets/relay-token",
            &token,
            Some(serde_json::json!({"value": value, "grace_secs": grace, "platform_level": true})),
        )
    };
    // A value that is not a token is refused when a connection names it.
    let (status, _) = host.send(put_token("too-short", 0)).await;
    assert_eq!(status, StatusCode::OK);
    let create = || {
        manage(
            "POST",
            "/v1/connections",
            &token,
            Some(serde_json::json!({
                "provider": "zenoti", "adapter_id": hostile.id, "platform_level": true,
                "signature": {"scheme": "unsigned"},
                "webhook": {"capability_secret": "relay-token"},
            })),
        )
    };
    let (status, problem) = host.send(create()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("32 to 256"),
        "{problem}"
    );
    // Unsigned and unguarded is refused too.
    let (status, problem) = host
        .send(manage(
            "POST",
            "/v1/connections",
            &token,
            Some(serde_json::json!({
                "provider": "zenoti", "adapter_id": hostile.id, "platform_level": true,
                "signature": {"scheme": "unsigned"},
            })),
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("capability_secret or allowed_ips"),
        "{problem}"
    );

    let old = "old0token0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let new = "new1token1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    host.send(put_token(old, 0)).await;
    let (status, connection) = host.send(create()).await;
    assert_eq!(status, StatusCode::CREATED, "{connection}");
    let id = connection["id"].as_str().unwrap();
    assert!(!connection.to_string().contains(old), "{connection}");
    assert!(
        connection["webhook"]["capability_secret"]
            .as_str()
            .unwrap()
            .ends_with("relay-token"),
        "{connection}"
    );
    let call = |token: &str| {
        Request::post(format!("/v1/hooks/{id}/{token}"))
            .body(Body::from("ok"))
            .unwrap()
    };
    let taken = |status: StatusCode| status == StatusCode::OK || status == StatusCode::ACCEPTED;
    let (status, ack) = host.send(call(old)).await;
    assert!(taken(status), "{status}: {ack}");

    // Rotated with a 2 s grace period: both work, then only the new one.
    let (status, _) = host.send(put_token(new, 2)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, ack) = host.send(call(new)).await;
    assert!(taken(status), "{status}: {ack}");
    let (status, ack) = host.send(call(old)).await;
    assert!(
        taken(status),
        "the old token within its grace period: {status}: {ack}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2_300)).await;
    let (status, problem) = host.send(call(old)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert_eq!(
        problem["detail"],
        "the capability token in the URL is not this connection's (or was rotated out)"
    );
    let (status, ack) = host.send(call(new)).await;
    assert!(taken(status), "{status}: {ack}");
}

#[tokio::test]
async fn a_zoho_notification_of_another_channel_is_refused() {
    let host = start_with(&guarded_config(), |_| {}).await;
    let notification = |channel: &str| {
        Request::post("/v1/hooks/zoho-bound")
            .header("content-type", "application/json")
            .body(Body::from(format!(
                r#"{{"module":"Deals","operation":"update","ids":["41"],"channel_id":{channel},"token":"zoho-channel-token-4150868"}}"#
            )))
            .unwrap()
    };
    let (status, problem) = host.send(notification("\"1000000068002\"")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert_eq!(
        problem["detail"],
        "the webhook signature did not verify: the notification is not from the connection's \
         Zoho channel"
    );
    assert!(host.deliveries().await.is_empty());
    // Its own channel, as a string or as a number, passes the check.
    for own in ["\"1000000068001\"", "1000000068001"] {
        let (status, ack) = host.send(notification(own)).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{ack}");
    }
}

/// A HubSpot v3 request signed for `url`, sent with `Host: host`.
fn hubspot_v3(method: &str, url: &str, host: &str, body: &str) -> Request<Body> {
    let timestamp = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis())
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(HUBSPOT_SECRET.as_bytes()).unwrap();
    mac.update(format!("{method}{url}{body}{timestamp}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let path = url.split_once(".test").map_or(url, |(_, path)| path);
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("x-hubspot-signature-v3", signature)
        .header("x-hubspot-request-timestamp", timestamp)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn a_hubspot_v3_refusal_names_a_public_url_that_is_not_the_one_called() {
    let host = start_with(&guarded_config(), |_| {}).await;
    let called = "https://crm-hooks.example.test/v1/hooks/hubspot";
    // HubSpot called another host name than the host's public URL: its signature is over that
    // URL, and the detail says which two differ (and nothing of the expected signature).
    let (status, problem) = host
        .send(hubspot_v3("POST", called, "crm-hooks.example.test", "[]"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("the webhook signature did not verify: the signature does not match"),
        "{detail}"
    );
    assert!(
        detail.contains("`crm-hooks.example.test`")
            && detail.contains("https://hooks.example.test"),
        "{detail}"
    );
    // Signed for the public URL: taken. A workflow GET (method and URL are signed) too.
    let public = "https://hooks.example.test/v1/hooks/hubspot";
    let (status, ack) = host
        .send(hubspot_v3("POST", public, "hooks.example.test", "[]"))
        .await;
    assert_ne!(status, StatusCode::UNAUTHORIZED, "{ack}");
    let workflow = "https://hooks.example.test/v1/hooks/hubspot?objectId=901&dealstage=closedwon";
    let (status, ack) = host
        .send(hubspot_v3("GET", workflow, "hooks.example.test", ""))
        .await;
    assert_ne!(status, StatusCode::UNAUTHORIZED, "{ack}");
    assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{ack}");
    // A bad signature sent to the public URL's own host says nothing about URLs.
    let mut forged = hubspot_v3("POST", public, "hooks.example.test", "[]");
    forged
        .headers_mut()
        .insert("x-hubspot-signature-v3", "AAAA".parse().unwrap());
    let (_, problem) = host.send(forged).await;
    assert_eq!(
        problem["detail"],
        "the webhook signature did not verify: the signature does not match"
    );
}

#[tokio::test]
async fn a_hubspot_v3_refusal_says_when_the_public_url_is_not_set() {
    let host = start_with(&guarded_config(), |options| {
        options.public_base_url = None;
    })
    .await;
    let (status, problem) = host
        .send(hubspot_v3(
            "POST",
            "https://hooks.example.test/v1/hooks/hubspot",
            "hooks.example.test",
            "[]",
        ))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("the host's public URL is not set (--public-url)")
            && detail.contains("http://127.0.0.1:0"),
        "{detail}"
    );
    assert!(!detail.contains(HUBSPOT_SECRET));
}

#[tokio::test]
async fn hubspot_workflow_gets_are_told_apart_by_their_query() {
    let host = start_with(&guarded_config(), |_| {}).await;
    let get = |query: &str| {
        let url = format!("https://hooks.example.test/v1/hooks/hubspot?{query}");
        hubspot_v3("GET", &url, "hooks.example.test", "")
    };
    let (_, first) = host.send(get("objectId=901&dealstage=closedwon")).await;
    let (_, second) = host.send(get("objectId=902&dealstage=closedwon")).await;
    let (_, again) = host.send(get("objectId=901&dealstage=closedwon")).await;
    assert_eq!(first["duplicate"], false, "{first}");
    assert_eq!(second["duplicate"], false, "{second}");
    assert_ne!(first["delivery_id"], second["delivery_id"]);
    // The same call again is HubSpot's retry.
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["delivery_id"], first["delivery_id"]);
    let deliveries = host.deliveries().await;
    assert_eq!(deliveries.len(), 2);
    assert!(deliveries.iter().all(|d| d.method == "GET"));
}

#[tokio::test]
async fn a_hubspot_event_re_sent_in_a_new_delivery_is_a_repeat_not_a_new_event() {
    let config = format!(
        r#"
[[adapters]]
tenant_id = "tenant-a"
name = "hubspot-sample"
wasm = "{hubspot}"

[[connections]]
id = "hubspot"
tenant_id = "tenant-a"
provider = "hubspot"
adapter = "hubspot-sample"
signature = {{ scheme = "hubspot", version = "v3" }}
secret = "tenant-a/hubspot/client-secret"
allowed_orgs = ["org-east"]
settings = {{ default_org_id = "org-east" }}

[[secrets]]
name = "tenant-a/hubspot/client-secret"
value = "{HUBSPOT_SECRET}"
"#,
        hubspot = test_artifacts::component("hubspot").expect("the hubspot sample"),
    );
    let host = start_with(&config, |_| {}).await;
    let url = "https://hooks.example.test/v1/hooks/hubspot";
    let fixture = std::fs::read_to_string(test_artifacts::sample_file(
        "hubspot/fixtures/deal-creation.json",
    ))
    .unwrap();
    let (status, ack) = host
        .send(hubspot_v3("POST", url, "hooks.example.test", &fixture))
        .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(
        (ack["events"].clone(), ack["repeated"].clone()),
        (serde_json::json!(1), serde_json::json!(0)),
        "{ack}"
    );
    // HubSpot retries what it thinks undelivered: a new delivery (new timestamp, the next
    // attempt number, so another body) carrying the same eventId.
    let retried = fixture.replace("\"attemptNumber\": 0", "\"attemptNumber\": 1");
    assert_ne!(retried, fixture);
    let (status, ack) = host
        .send(hubspot_v3("POST", url, "hooks.example.test", &retried))
        .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["duplicate"], false, "a new delivery: {ack}");
    assert_eq!(
        (ack["events"].clone(), ack["repeated"].clone()),
        (serde_json::json!(0), serde_json::json!(1)),
        "{ack}"
    );
    let outbox = host.outbox().await;
    assert_eq!(outbox.len(), 1, "one fact, one event: {outbox:?}");
}
