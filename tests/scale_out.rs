//! The scale-out backends through the real binary: events published to NATS JetStream (and,
//! with PostgreSQL, several nodes sharing one database). Uses the local services:
//! `ADAPTER_HOST_TEST_NATS_URL` (default `nats://127.0.0.1:4222`); each test has a stream and
//! subject prefix of its own and deletes the stream at the end.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapter_host::signatures::{Secret, sign_standard_webhooks};
use futures::StreamExt as _;
use process::{free_port, spawn_host_logged, wait_ready_logged};
use serde_json::Value;

#[path = "common/jwt.rs"]
mod jwt;
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
    config_with(dir, "")
}

/// The champion connection, and `more` (TOML) after it.
fn config_with(dir: &std::path::Path, more: &str) -> std::path::PathBuf {
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
{more}
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
    let _cleanup = Cleanup {
        schema: None,
        stream: stream_name.clone(),
    };
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
}

/// Drops a test's schema and stream, however the test ends.
struct Cleanup {
    schema: Option<String>,
    stream: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(schema) = &self.schema {
            let _ = std::process::Command::new("psql")
                .args([postgres_url().as_str(), "-q", "-c"])
                .arg(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .output();
        }
        let stream = self.stream.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(nats) = async_nats::connect(nats_url()).await {
                    let _ = async_nats::jetstream::new(nats)
                        .delete_stream(&stream)
                        .await;
                }
            });
        })
        .join();
    }
}

fn postgres_url() -> String {
    std::env::var("ADAPTER_HOST_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// One node of the cluster: a host process on the shared PostgreSQL and NATS.
struct Node {
    child: Option<std::process::Child>,
    port: u16,
    config: std::path::PathBuf,
    data: std::path::PathBuf,
    log: std::path::PathBuf,
    env: Vec<(String, String)>,
}

impl Node {
    async fn start(
        dir: &std::path::Path,
        name: &str,
        config: &std::path::Path,
        env: &[(String, String)],
    ) -> Self {
        let data = dir.join(name);
        let log = dir.join(format!("{name}.log"));
        let port = free_port();
        let mut node = Self {
            child: None,
            port,
            config: config.to_owned(),
            data,
            log,
            env: env.to_vec(),
        };
        node.restart().await;
        node
    }

    /// SIGKILLs the process (if it runs) and starts it again on the same port.
    async fn restart(&mut self) {
        self.kill();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.child = Some(spawn_host_logged(
            &self.config,
            &self.data,
            self.port,
            &env,
            &self.log,
        ));
        wait_ready_logged(&reqwest::Client::new(), self.port, &self.log).await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A champion-health delivery: `enrollment.created` for version 0 of a member, then
/// `enrollment.updated` with another plan name.
fn enrollment(member: usize, version: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event_id": format!("evt-m{member}-v{version}"),
        "event": if version == 0 { "enrollment.created" } else { "enrollment.updated" },
        "occurred_at": "2025-12-01T10:00:00Z",
        "account": "creative-benefit-strategies",
        "agent": {"agent_id": "721995", "first_name": "Robin", "last_name": "Bundy"},
        "member": {"member_id": format!("M-{member}"), "first_name": "Alex", "last_name": "Moreno"},
        "enrollment": {
            "enrollment_id": format!("ENR-{member}"), "status": "active", "plan_code": "DEN-PPO-2",
            "plan_name": format!("Dental PPO v{version}"), "carrier": "Delta Dental",
            "coverage_tier": "employee_spouse", "effective_date": "2026-01-01",
            "pepm_rate": "12.50", "split_pct": "66.666667",
            "splits": [{"agent_id": "721995", "split_pct": "100"}]
        }
    }))
    .unwrap()
}

/// Sends a delivery to `ports[first]`, and to the other node while that one does not answer
/// (as a load balancer would): the acknowledgement, and which node gave it.
async fn deliver_to_any(
    client: &reqwest::Client,
    ports: &[u16; 2],
    first: usize,
    id: &str,
    body: &[u8],
) -> Value {
    for attempt in 0..200 {
        let port = ports[(first + attempt) % 2];
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let signature =
            sign_standard_webhooks(&Secret::new(CRM_SECRET), id, &timestamp, body).unwrap();
        let sent = client
            .post(format!("http://127.0.0.1:{port}/v1/hooks/champion"))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", &timestamp)
            .header("webhook-signature", signature)
            .timeout(Duration::from_secs(10))
            .body(body.to_vec())
            .send()
            .await;
        if let Ok(response) = sent
            && response.status().is_success()
            && let Ok(bytes) = response.bytes().await
        {
            return serde_json::from_slice(&bytes).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no node took delivery {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_and_nats_lose_nothing_and_double_nothing_while_one_is_killed() {
    let token = token();
    let (stream_name, prefix, schema) = (
        format!("NODES_{token}"),
        format!("n{token}"),
        format!("nodes_{token}"),
    );
    let _cleanup = Cleanup {
        schema: Some(schema.clone()),
        stream: stream_name.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    // A CRM that takes requests and never answers: a poll run stays under way.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let config = config_with(
        dir.path(),
        &format!(
            r#"
[[adapters]]
tenant_id = "tenant-nats"
name = "poller"
wasm = "{poller}"

[[connections]]
id = "crm"
tenant_id = "tenant-nats"
provider = "custom"
adapter = "poller"
signature = {{ scheme = "github" }}
secret = "tenant-nats/champion/signing"
polling = {{ max_pages = 10 }}
api = {{ base_url = "http://127.0.0.1:{silent_port}", allow_private = true }}
"#,
            poller = test_artifacts::POLLER,
        ),
    );
    let key = String::from_utf8(jwt::KEY.to_vec()).unwrap();
    let env: Vec<(String, String)> = [
        ("ADAPTER_HOST_STORE", postgres_url()),
        ("ADAPTER_HOST_STORE_SCHEMA", schema.clone()),
        (
            "ADAPTER_HOST_MASTER_KEY",
            "bm9kZXMtdGVzdC1tYXN0ZXIta2V5LTAxMjM0NTY3ODk=".into(),
        ),
        ("ADAPTER_HOST_BUS", nats_url()),
        ("ADAPTER_HOST_NATS_STREAM", stream_name.clone()),
        ("ADAPTER_HOST_NATS_SUBJECT_PREFIX", prefix.clone()),
        ("ADAPTER_HOST_JWT_HS256_KEY", key),
        ("ADAPTER_HOST_JWT_ISSUER", jwt::ISSUER.into()),
        ("ADAPTER_HOST_JWT_AUDIENCE", jwt::AUDIENCE.into()),
        ("ADAPTER_HOST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut a = Node::start(dir.path(), "a", &config, &env).await;
    let b = Node::start(dir.path(), "b", &config, &env).await;
    let ports = [a.port, b.port];
    let client = reqwest::Client::new();

    // Node a is SIGKILLed and restarted over and over while the deliveries go on.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let killer = tokio::spawn(async move {
        let mut kills = 0;
        while !*stopped.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = stopped.changed() => break,
            }
            a.restart().await;
            kills += 1;
        }
        (a, kills)
    });

    // Members updated one version after another; members interleaved, and spread over both
    // nodes.
    const MEMBERS: usize = 8;
    const VERSIONS: usize = 25;
    let mut acked = Vec::new();
    for version in 0..VERSIONS {
        let round: Vec<_> = (0..MEMBERS)
            .map(|member| {
                let client = client.clone();
                async move {
                    let id = format!("msg-m{member}-v{version}");
                    let ack = deliver_to_any(
                        &client,
                        &ports,
                        member % 2,
                        &id,
                        &enrollment(member, version),
                    )
                    .await;
                    (member, version, ack)
                }
            })
            .collect();
        for (member, version, ack) in futures::future::join_all(round).await {
            assert!(
                ack["delivery_id"].is_string(),
                "m{member} v{version}: {ack}"
            );
            acked.push((member, version, ack));
        }
    }
    stop.send(true).unwrap();
    let (a, kills) = killer.await.unwrap();
    assert!(kills >= 2, "node a was killed {kills} times");

    // Every acknowledged delivery is processed, with its event in the outbox, seen from
    // either node.
    let token = jwt::token_with(serde_json::json!({"tenant_id": "tenant-nats"}));
    let api = |port: u16, path: String| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let response = client
                .get(format!("http://127.0.0.1:{port}{path}"))
                .bearer_auth(&token)
                .header("x-org-id", "org-456")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            (status, body)
        }
    };
    for (n, (member, version, ack)) in acked.iter().enumerate() {
        let id = ack["delivery_id"].as_str().unwrap();
        let (status, delivery) = api(ports[n % 2], format!("/v1/deliveries/{id}")).await;
        assert_eq!(status, 200, "m{member} v{version}: {delivery}");
        assert_eq!(
            delivery["delivery"]["status"], "processed",
            "m{member} v{version}: {delivery}"
        );
    }

    // The relays of both nodes drain the outbox; every event reaches the stream exactly once.
    let expected = MEMBERS * VERSIONS;
    let mut events = Vec::new();
    for _ in 0..400 {
        events.clear();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/events?limit=1000&cursor={c}"),
                None => "/v1/events?limit=1000".to_owned(),
            };
            let (status, page) = api(ports[1], path).await;
            assert_eq!(status, 200, "{page}");
            events.extend(page["items"].as_array().unwrap().iter().cloned());
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        if events.len() == expected && events.iter().all(|e| e["status"] == "published") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(events.len(), expected, "one event per delivery");
    assert!(
        events.iter().all(|e| e["status"] == "published"),
        "the outbox drained: {:?}",
        events
            .iter()
            .filter(|e| e["status"] != "published")
            .collect::<Vec<_>>()
    );

    let nats = async_nats::connect(nats_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(nats);
    let mut stream = jetstream.get_stream(&stream_name).await.unwrap();
    let stored = stream.info().await.unwrap().state.messages;
    assert_eq!(stored as usize, expected, "each event once on the stream");
    let mut on_stream: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    let mut ids = std::collections::BTreeSet::new();
    for sequence in 1..=stored {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
        assert!(ids.insert(envelope["event_id"].as_str().unwrap().to_owned()));
        let plan = envelope["payload"]["plan_name"]
            .as_str()
            .unwrap_or_default();
        let version: usize = plan.rsplit('v').next().unwrap().parse().unwrap();
        on_stream
            .entry(envelope["entity_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(version);
    }
    // Per member, the versions in the order they were acknowledged.
    assert_eq!(on_stream.len(), MEMBERS);
    for (member, versions) in &on_stream {
        assert_eq!(versions, &(0..VERSIONS).collect::<Vec<_>>(), "{member}");
    }

    // Rate limits are global: replays asked of both nodes at once start once.
    let replay = |port: u16| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            client
                .post(format!("http://127.0.0.1:{port}/v1/replays"))
                .bearer_auth(&token)
                .header("x-org-id", "org-456")
                .header("content-type", "application/json")
                .body(serde_json::json!({"from": now - 3_600_000, "to": now}).to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (first, second) = tokio::join!(replay(ports[0]), replay(ports[1]));
    let mut statuses = [first, second];
    statuses.sort_unstable();
    assert_eq!(statuses[0], 202, "{statuses:?}");
    assert!(matches!(statuses[1], 409 | 429), "{statuses:?}");

    // Poll runs are leased in the database: asked of both nodes at once, one runs.
    let poll = |port: u16| {
        let client = client.clone();
        let token = token.clone();
        async move {
            client
                .post(format!("http://127.0.0.1:{port}/v1/connections/crm/poll"))
                .bearer_auth(&token)
                .header("x-org-id", "org-456")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (first, second) = tokio::join!(poll(ports[0]), poll(ports[1]));
    let mut statuses = [first, second];
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 409], "one poll run at a time across nodes");
    drop(silent);

    drop(a);
    drop(b);
}
