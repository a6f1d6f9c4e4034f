//! The relay's outgoing webhooks against a real subscriber on loopback: signatures the
//! Standard Webhooks verifier accepts, retries on the relay's clock, dead and manual retry,
//! redirects, timeouts, rotation, and what a failure may record.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use tokio::sync::Notify;

use super::{Clock, Relay, RelayConfig};
use crate::bus::{MemoryBus, NatsBus, NatsSettings};
use crate::metrics::Metrics;
use crate::secrets::{InMemorySecretStore, SecretStore, SecretValue};
use crate::signatures::{self, RawRequest, SchemeConfig, Secret};
use crate::store::tests::{Backend, SECOND, T0, emit, event, tenant};
use crate::store::{
    Millis, NewSubscriber, OutboxStatus, Store, Subscriber, SubscriberDelivery,
    SubscriberDeliveryFilter, SubscriberDeliveryStatus,
};

const SIGNING: &str = "whsec_c3Vic2NyaWJlci1zaWduaW5nLXNlY3JldC0wMDAx";
const ROTATED: &str = "whsec_cm90YXRlZC1zdWJzY3JpYmVyLXNlY3JldC0wMDAy";

/// One request the subscriber received.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// A subscriber endpoint on loopback: answers from a script (then 204), records everything.
#[derive(Clone, Default)]
struct Endpoint {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
}

#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    Redirect,
    Slow(Duration),
}

impl Endpoint {
    async fn start(script: impl IntoIterator<Item = Answer>) -> (Self, SocketAddr) {
        let endpoint = Self {
            script: Arc::new(Mutex::new(script.into_iter().collect())),
            ..Self::default()
        };
        let state = endpoint.clone();
        let app =
            axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    state.received.lock().unwrap().push(Received {
                        headers: headers
                            .iter()
                            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                            .collect(),
                        body: body.to_vec(),
                    });
                    let answer = state.script.lock().unwrap().pop_front();
                    match answer {
                        None => StatusCode::NO_CONTENT.into_response(),
                        Some(Answer::Status(code)) => {
                            let status = StatusCode::from_u16(code).unwrap();
                            (status, "subscriber says no\nretry later").into_response()
                        }
                        Some(Answer::Redirect) => (
                            StatusCode::TEMPORARY_REDIRECT,
                            [("location", "http://127.0.0.1:9/elsewhere")],
                        )
                            .into_response(),
                        Some(Answer::Slow(delay)) => {
                            tokio::time::sleep(delay).await;
                            StatusCode::NO_CONTENT.into_response()
                        }
                    }
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (endpoint, address)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// The backends a relay test runs on.
struct On {
    store: Box<dyn Backend>,
    /// The bus: a JetStream stream of its own (deleted when the test ends), or in-process.
    nats: Option<NatsSettings>,
}

impl On {
    fn sqlite() -> Self {
        Self {
            store: Box::new(crate::store::tests::SqliteBackend::new()),
            nats: None,
        }
    }

    fn postgres_and_nats() -> Self {
        Self {
            store: Box::new(crate::store::postgres::tests::PostgresBackend::new()),
            nats: Some(crate::bus::suite::test_settings()),
        }
    }
}

impl Drop for On {
    fn drop(&mut self) {
        let Some(nats) = self.nats.take() else {
            return;
        };
        // Drop runs inside the test's runtime: the stream is deleted from a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let client = async_nats::connect(nats.url.as_str()).await.ok()?;
                async_nats::jetstream::new(client)
                    .delete_stream(&nats.stream)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// Every relay test runs on SQLite with the in-process bus (`sqlite::<test>`) and on
/// PostgreSQL with NATS JetStream (`postgres_nats::<test>`).
macro_rules! relay_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(&super::On::sqlite()).await;
                }
            )*
        }
        mod postgres_nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&super::On::postgres_and_nats()).await;
                }
            )*
        }
    };
}

relay_suite!(
    an_event_reaches_its_subscriber_signed_as_standard_webhooks,
    a_failed_delivery_is_retried_on_schedule_then_parked_and_manually_retried,
    a_later_event_of_the_same_entity_waits_for_the_earlier_one,
    a_redirect_is_a_failed_answer_not_a_hop,
    a_subscriber_that_does_not_answer_in_time_is_a_failed_attempt,
    during_a_rotation_both_secrets_sign,
    failures_record_no_secret_and_no_url,
    without_a_secret_store_nothing_is_sent,
    one_entity_s_backlog_is_published_in_batches_in_order,
    a_failed_event_holds_back_the_rest_of_its_entity_only,
    one_entity_s_backlog_reaches_its_subscriber_in_runs_in_order,
    a_run_sends_nothing_its_lease_leaves_no_time_to_answer,
    once_stopping_a_pass_starts_no_request_and_gives_its_claims_back,
    an_erased_event_is_never_sent_and_a_replay_passes_over_it,
);

/// A store with one tenant, a secret store with the subscriber's secret, and a relay whose
/// clock the test moves.
struct Fixture {
    store: Arc<dyn Store>,
    secrets: Arc<InMemorySecretStore>,
    relay: Relay,
    now: Arc<AtomicI64>,
    tenant: crate::store::tests::Tenant,
}

impl Fixture {
    async fn new(on: &On, config: RelayConfig) -> Self {
        let store = on.store.open().await;
        let tenant = tenant(&*store, "t1", "c1").await;
        let secrets = Arc::new(InMemorySecretStore::new());
        secrets
            .put(
                "subscriber/signing",
                SecretValue::new(SIGNING),
                Duration::ZERO,
                at(T0),
            )
            .unwrap();
        let now = Arc::new(AtomicI64::new(T0));
        let clock_now = Arc::clone(&now);
        let bus: Arc<dyn crate::bus::Bus> = match &on.nats {
            Some(nats) => Arc::new(
                NatsBus::connect(nats.clone())
                    .await
                    .unwrap_or_else(|e| panic!("these tests need NATS at {}: {e}", nats.url)),
            ),
            None => Arc::new(MemoryBus::new()),
        };
        let mut relay = Relay::new(
            Arc::clone(&store),
            bus,
            Metrics::new(),
            config,
            Arc::new(Notify::new()),
        )
        .with_secrets(secrets.clone());
        relay.clock = Clock(Arc::new(move || clock_now.load(Ordering::SeqCst)));
        Self {
            store,
            secrets,
            relay,
            now,
            tenant,
        }
    }

    fn advance(&self, by: Millis) {
        self.now.fetch_add(by, Ordering::SeqCst);
    }

    fn now(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }

    async fn subscribe(&self, url: String) -> Subscriber {
        self.store
            .create_subscriber(new_subscriber(&url))
            .await
            .unwrap()
    }

    /// Appends events for `entities` (one each, in order) and publishes them, which queues
    /// them for every subscriber.
    async fn publish(&self, entities: &[&str]) {
        let events = entities
            .iter()
            .enumerate()
            .map(|(i, entity)| event(&format!("evt-{entity}-{i}"), "deal.won", entity, None))
            .collect();
        emit(&*self.store, &self.tenant, events, self.now()).await;
        // A claim holds back a later row of an entity until the earlier one is published.
        let mut published = 0;
        while published < entities.len() {
            let now = self.relay.publish_once().await.unwrap();
            assert!(now > 0, "published {published} of {}", entities.len());
            published += now;
        }
    }

    async fn deliveries(&self, subscriber: &Subscriber) -> Vec<SubscriberDelivery> {
        self.store
            .list_subscriber_deliveries(SubscriberDeliveryFilter {
                subscriber_id: subscriber.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .items
    }
}

fn at(millis: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap())
}

fn quick() -> RelayConfig {
    RelayConfig {
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        subscriber_max_attempts: 3,
        http_timeout: Duration::from_secs(5),
        ..RelayConfig::default()
    }
}

/// Verifies a received request with the host's own Standard Webhooks verifier, at `now`.
fn verify(received: &Received, secret: &str, now: Millis) -> Result<(), String> {
    signatures::verify(
        &SchemeConfig::StandardWebhooks {
            tolerance_secs: 300,
        },
        &[Secret::new(secret)],
        &RawRequest {
            method: "POST",
            url: "http://subscriber.test/",
            headers: &received.headers,
            body: &received.body,
        },
        at(now),
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

async fn an_event_reaches_its_subscriber_signed_as_standard_webhooks(on: &On) {
    let fixture = Fixture::new(on, quick()).await;
    let (endpoint, address) = Endpoint::start([]).await;
    let subscriber = fixture.subscribe(format!("http://{address}/hook")).await;
    fixture.publish(&["D1"]).await;

    assert_eq!(fixture.relay.deliver_once().await.unwrap(), 1);
    let received = endpoint.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    verify(request, SIGNING, fixture.now()).unwrap();
    assert!(
        verify(request, ROTATED, fixture.now()).is_err(),
        "another secret fails"
    );
    assert_eq!(request.header("webhook-id"), "evt-D1-0");
    assert_eq!(request.header("webhook-timestamp"), (T0 / 1000).to_string());
    assert_eq!(request.header("content-type"), "application/json");
    let envelope: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(envelope["event_id"], "evt-D1-0");
    assert_eq!(envelope["tenant_id"], "t1");
    assert_eq!(envelope["payload"]["amount"], "12.50");
    // The payload travels byte for byte, odd spacing included.
    assert!(
        String::from_utf8_lossy(&request.body)
            .contains(r#""payload":{ "id" : "D1", "amount": "12.50" }"#)
    );

    let deliveries = fixture.deliveries(&subscriber).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, SubscriberDeliveryStatus::Delivered);
    assert_eq!(deliveries[0].last_status, Some(204));
    assert_eq!(fixture.relay.deliver_once().await.unwrap(), 0, "sent once");
}

async fn a_failed_delivery_is_retried_on_schedule_then_parked_and_manually_retried(on: &On) {
    let fixture = Fixture::new(on, quick()).await;
    let (endpoint, address) = Endpoint::start([
        Answer::Status(503),
        Answer::Status(500),
        Answer::Status(429),
    ])
    .await;
    let subscriber = fixture.subscribe(format!("http://{address}/hook")).await;
    fixture.publish(&["D1"]).await;

    assert_eq!(fixture.relay.deliver_once().await.unwrap(), 0);
    let first = fixture.deliveries(&subscriber).await.remove(0);
    assert_eq!(first.status, SubscriberDeliveryStatus::Pending);
    assert_eq!((first.attempts, first.last_status), (1, Some(503)));
    assert_eq!(
        first.last_error.as_deref(),
        Some("HTTP 503 Service Unavailable: subscriber says no retry later")
    );
    // Backoff: 1 s (+ up to a quarter) after the first failure; not due before.
    assert!((T0 + SECOND..=T0 + SECOND + SECOND / 4).contains(&first.next_attempt_at));
    assert_eq!(fixture.relay.deliver_once().await.unwrap(), 0);
    assert_eq!(endpoint.received().len(), 1, "not due yet");

    fixture.advance(2 * SECOND);
    fixture.relay.deliver_once().await.unwrap();
    let second = fixture.deliveries(&subscriber).await.remove(0);
    assert_eq!((second.attempts, second.last_status), (2, Some(500)));
    assert!(
        second.next_attempt_at >= fixture.now() + 2 * SECOND,
        "doubled"
    );

    fixture.advance(3 * SECOND);
    fixture.relay.deliver_once().await.unwrap();
    let dead = fixture.deliveries(&subscriber).await.remove(0);
    assert_eq!(dead.status, SubscriberDeliveryStatus::Dead);
    assert_eq!((dead.attempts, dead.last_status), (3, Some(429)));
    fixture.advance(3600 * SECOND);
    assert_eq!(fixture.relay.deliver_once().await.unwrap(), 0);
    assert_eq!(
        endpoint.received().len(),
        3,
        "no attempt after the last one"
    );

    // Every attempt carried the same webhook-id, so the subscriber can drop duplicates.
    let ids: Vec<String> = endpoint
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(ids, ["evt-D1-0"; 3]);

    fixture
        .store
        .retry_subscriber_delivery(&subscriber.id, dead.outbox_seq, fixture.now())
        .await
        .unwrap();
    assert_eq!(fixture.relay.deliver_once().await.unwrap(), 1);
    let delivered = fixture.deliveries(&subscriber).await.remove(0);
    assert_eq!(delivered.status, SubscriberDeliveryStatus::Delivered);
    verify(&endpoint.received()[3], SIGNING, fixture.now()).unwrap();
}

async fn a_later_event_of_the_same_entity_waits_for_the_earlier_one(on: &On) {
    // One delivery at a time, in claim order, so that D1's first is the request answered 502.
    let fixture = Fixture::new(
        on,
        RelayConfig {
            delivery_concurrency: 1,
            ..quick()
        },
    )
    .await;
    let (endpoint, address) = Endpoint::start([Answer::Status(502)]).await;
    fixture.subscribe(format!("http://{address}/hook")).await;
    fixture.publish(&["D1", "D1", "D2"]).await;

    // D1's first event fails; its second stays back, D2 goes.
    assert_eq!(fixture.relay.deliver_once().await.unwrap(), 1);
    let sent: Vec<String> = endpoint
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(sent.contains(&"evt-D1-0".to_owned()) && sent.contains(&"evt-D2-2".to_owned()));

    // D1's first event goes again, then its second: in the same pass or the next (SQLite
    // keeps the second leased from the first pass; PostgreSQL may claim it with the retry).
    let mut delivered = 0;
    for _ in 0..4 {
        fixture.advance(10 * SECOND);
        delivered += fixture.relay.deliver_once().await.unwrap();
    }
    assert_eq!(delivered, 2);
    let order: Vec<String> = endpoint
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .filter(|id| id.starts_with("evt-D1"))
        .collect();
    assert_eq!(order, ["evt-D1-0", "evt-D1-0", "evt-D1-1"]);
}

async fn a_redirect_is_a_failed_answer_not_a_hop(on: &On) {
    let fixture = Fixture::new(on, quick()).await;
    let (endpoint, address) = Endpoint::start([Answer::Redirect]).await;
    let subscriber = fixture.subscribe(format!("http://{address}/hook")).await;
    fixture.publish(&["D1"]).await;

    assert_eq!(fixture.relay.deliver_once().await.unwrap(), 0);
    let delivery = fixture.deliveries(&subscriber).await.remove(0);
    assert_eq!(delivery.last_status, Some(307));
    assert_eq!(delivery.status, SubscriberDeliveryStatus::Pending);
    assert_eq!(endpoint.received().len(), 1);
}

async fn a_subscriber_that_does_not_answer_in_time_is_a_failed_attempt(on: &On) {
    let fixture = Fixture::new(
        on,
        RelayConfig {
            http_timeout: Duration::from_millis(200),
            ..quick()
        },
    )
    .await;
    let (_endpoint, address) = Endpoint::start([Answer::Slow(Duration::from_secs(5))]).await;
    let subscriber = fixture.subscribe(format!("http://{address}/hook")).await;
    fixture.publish(&["D1"]).await;

    assert_eq!(fixture.relay.deliver_once().await.unwrap(), 0);
    let delivery = fixture.deliveries(&subscriber).await.remove(0);
    assert_eq!(delivery.last_status, None);
    assert_eq!(
        delivery.last_error.as_deref(),
        Some("no answer within 200ms")
    );
}

async fn during_a_rotation_both_secrets_sign(on: &On) {
    let fixture = Fixture::new(on, quick()).await;
    fixture
        .secrets
        .put(
            "subscriber/signing",
            SecretValue::new(ROTATED),
            Duration::from_secs(3600),
            at(T0),
        )
        .unwrap();
    let (endpoint, address) = Endpoint::start([]).await;
    fixture.subscribe(format!("http://{address}/hook")).await;
    fixture.publish(&["D1"]).await;

    assert_eq!(fixture.relay.deliver_once().await.unwrap(), 1);
    let request = &endpoint.received()[0];
    assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
    verify(request, ROTATED, fixture.now()).unwrap();
    verify(request, SIGNING, fixture.now()).unwrap();
}

async fn failures_record_no_secret_and_no_url(on: &On) {
    let fixture = Fixture::new(on, quick()).await;
    // Nothing listens on port 9 of loopback (discard): the connection is refused.
    let refused = fixture
        .subscribe("http://127.0.0.1:9/hook?token=url-token-do-not-log".into())
        .await;
    let unsigned = fixture
        .store
        .create_subscriber(NewSubscriber {
            secret_ref: "subscriber/missing".into(),
            ..new_subscriber("http://127.0.0.1:9/other")
        })
        .await
        .unwrap();
    fixture.publish(&["D1"]).await;

    assert_eq!(fixture.relay.deliver_once().await.unwrap(), 0);
    let refused = fixture.deliveries(&refused).await.remove(0);
    let error = refused.last_error.unwrap();
    assert!(!error.contains("url-token-do-not-log"), "{error}");
    assert!(!error.contains("127.0.0.1"), "{error}");
    assert_eq!(refused.last_status, None);
    let unsigned = fixture.deliveries(&unsigned).await.remove(0);
    assert_eq!(
        unsigned.last_error.as_deref(),
        Some("no signing secret named subscriber/missing")
    );
    assert_eq!(unsigned.status, SubscriberDeliveryStatus::Pending);
}

async fn without_a_secret_store_nothing_is_sent(on: &On) {
    let fixture = Fixture::new(on, quick()).await;
    let (endpoint, address) = Endpoint::start([]).await;
    let subscriber = fixture.subscribe(format!("http://{address}/hook")).await;
    fixture.publish(&["D1"]).await;
    let mut relay = fixture.relay.clone();
    relay.secrets = None;

    assert_eq!(relay.deliver_once().await.unwrap(), 0);
    assert!(endpoint.received().is_empty());
    let queued = fixture.deliveries(&subscriber).await.remove(0);
    assert_eq!(
        (queued.status, queued.attempts),
        (SubscriberDeliveryStatus::Pending, 0)
    );
}

fn new_subscriber(url: &str) -> NewSubscriber {
    NewSubscriber {
        tenant_id: "t1".into(),
        org_id: None,
        url: url.into(),
        event_types: vec![],
        secret_ref: "subscriber/signing".into(),
        enabled: true,
        created_at: T0,
    }
}

/// A bus that records what it got and fails each event named in `fail_once` the first time.
#[derive(Debug, Default)]
struct RecordingBus {
    published: Mutex<Vec<String>>,
    fail_once: Mutex<std::collections::HashSet<String>>,
}

#[async_trait::async_trait]
impl crate::bus::Bus for RecordingBus {
    async fn publish(&self, message: &crate::bus::Message) -> Result<(), crate::bus::BusError> {
        if self.fail_once.lock().unwrap().remove(&message.event_id) {
            return Err(crate::bus::BusError("down for a moment".into()));
        }
        self.published
            .lock()
            .unwrap()
            .push(message.event_id.clone());
        Ok(())
    }
}

async fn one_entity_s_backlog_is_published_in_batches_in_order(on: &On) {
    let fixture = Fixture::new(
        on,
        RelayConfig {
            batch: 100,
            ..quick()
        },
    )
    .await;
    let bus = Arc::new(RecordingBus::default());
    let relay = Relay {
        bus: bus.clone(),
        ..fixture.relay.clone()
    };
    // 1,000 events of one entity: a pass publishes a whole batch of them (100), in order, not
    // one event per pass.
    let events: Vec<_> = (0..1_000)
        .map(|i| event(&format!("x-{i:04}"), "deal.updated", "X", None))
        .collect();
    emit(&*fixture.store, &fixture.tenant, events, fixture.now()).await;
    let mut passes = 0;
    loop {
        let published = relay.publish_once().await.unwrap();
        if published == 0 {
            break;
        }
        passes += 1;
    }
    assert_eq!(passes, 10);
    let published = bus.published.lock().unwrap().clone();
    let expected: Vec<String> = (0..1_000).map(|i| format!("x-{i:04}")).collect();
    assert_eq!(published, expected);
}

async fn a_failed_event_holds_back_the_rest_of_its_entity_only(on: &On) {
    let fixture = Fixture::new(on, quick()).await;
    let bus = Arc::new(RecordingBus::default());
    bus.fail_once.lock().unwrap().insert("a-1".to_owned());
    let relay = Relay {
        bus: bus.clone(),
        ..fixture.relay.clone()
    };
    let e = |id: &str, entity: &str| event(id, "deal.updated", entity, None);
    emit(
        &*fixture.store,
        &fixture.tenant,
        vec![
            e("a-0", "A"),
            e("a-1", "A"),
            e("b-0", "B"),
            e("a-2", "A"),
            e("b-1", "B"),
        ],
        fixture.now(),
    )
    .await;
    // a-1 fails: a-2 is not attempted behind it; B goes on.
    assert_eq!(relay.publish_once().await.unwrap(), 3);
    assert_eq!(
        *bus.published.lock().unwrap(),
        ["a-0", "b-0", "b-1"].map(String::from)
    );
    let held = fixture.store.get_event("a-2").await.unwrap().unwrap();
    assert_eq!(held.attempts, 0, "given back unattempted");
    // Nothing more until a-1's retry is due; then a-1 and a-2, in that order.
    assert_eq!(relay.publish_once().await.unwrap(), 0);
    fixture.advance(2 * SECOND);
    assert_eq!(relay.publish_once().await.unwrap(), 2);
    assert_eq!(
        *bus.published.lock().unwrap(),
        ["a-0", "b-0", "b-1", "a-1", "a-2"].map(String::from)
    );
}

async fn one_entity_s_backlog_reaches_its_subscriber_in_runs_in_order(on: &On) {
    let fixture = Fixture::new(
        on,
        RelayConfig {
            batch: 100,
            ..quick()
        },
    )
    .await;
    let (endpoint, address) = Endpoint::start([]).await;
    fixture.subscribe(format!("http://{address}/hook")).await;
    // 250 events of one entity and 10 of others: a pass delivers a whole claim (100), the
    // entity's in order, not one of its events per pass.
    let mut entities = vec!["X"; 250];
    entities.extend(["Y"; 10]);
    fixture.publish(&entities).await;
    let mut passes = Vec::new();
    loop {
        let delivered = fixture.relay.deliver_once().await.unwrap();
        if delivered == 0 {
            break;
        }
        passes.push(delivered);
    }
    assert_eq!(passes, [100, 100, 60]);
    let sent: Vec<String> = endpoint
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    let x: Vec<&String> = sent.iter().filter(|id| id.starts_with("evt-X")).collect();
    let expected: Vec<String> = (0..250).map(|i| format!("evt-X-{i}")).collect();
    assert_eq!(x, expected.iter().collect::<Vec<_>>());
    assert_eq!(sent.len(), 260, "each once");
}

async fn a_run_sends_nothing_its_lease_leaves_no_time_to_answer(on: &On) {
    // A lease of zero: the claim is over before the first request could start.
    let fixture = Fixture::new(
        on,
        RelayConfig {
            lease: Duration::ZERO,
            ..quick()
        },
    )
    .await;
    let (endpoint, address) = Endpoint::start([]).await;
    let subscriber = fixture.subscribe(format!("http://{address}/hook")).await;
    fixture.publish(&["D1", "D1"]).await;
    assert_eq!(fixture.relay.deliver_once().await.unwrap(), 0);
    assert!(endpoint.received().is_empty());
    let deliveries = fixture.deliveries(&subscriber).await;
    assert_eq!(deliveries.len(), 2);
    for delivery in deliveries {
        assert_eq!(delivery.status, SubscriberDeliveryStatus::Pending);
        assert_eq!(delivery.attempts, 0, "given back unattempted");
    }
}

async fn once_stopping_a_pass_starts_no_request_and_gives_its_claims_back(on: &On) {
    let fixture = Fixture::new(on, quick()).await;
    let (endpoint, address) = Endpoint::start([]).await;
    let subscriber = fixture.subscribe(format!("http://{address}/hook")).await;
    fixture.publish(&["D1", "D1", "D2"]).await;
    let (_stop, stopping) = tokio::sync::watch::channel(true);
    assert_eq!(
        fixture.relay.deliver_pass(Some(&stopping)).await.unwrap(),
        0
    );
    assert!(endpoint.received().is_empty());
    for delivery in fixture.deliveries(&subscriber).await {
        assert_eq!(delivery.status, SubscriberDeliveryStatus::Pending);
        assert_eq!(delivery.attempts, 0, "given back unattempted");
    }
    // Not stopping: they go.
    assert_eq!(fixture.relay.deliver_once().await.unwrap(), 3);
}

async fn an_erased_event_is_never_sent_and_a_replay_passes_over_it(on: &On) {
    let fixture = Fixture::new(on, quick()).await;
    let bus = Arc::new(RecordingBus::default());
    let relay = Relay {
        bus: bus.clone(),
        ..fixture.relay.clone()
    };
    let (store, tenant) = (&*fixture.store, &fixture.tenant);
    let e = |id: &str| vec![event(id, "deal.updated", "A", None)];
    emit(store, tenant, e("a-0"), fixture.now()).await;
    assert_eq!(relay.publish_once().await.unwrap(), 1);
    // a-1 waits when the tenant's key is destroyed (as a node that still had the key wrote it
    // after the erasure); a-2 comes after, under a new key.
    emit(store, tenant, e("a-1"), fixture.now()).await;
    assert!(on.store.vault().shred("t1").unwrap());
    emit(store, tenant, e("a-2"), fixture.now()).await;
    // a-1 is dead at once, never attempted, and holds nothing back.
    assert_eq!(relay.publish_once().await.unwrap(), 1);
    assert_eq!(
        *bus.published.lock().unwrap(),
        ["a-0", "a-2"].map(String::from)
    );
    let dead = store.get_event("a-1").await.unwrap().unwrap();
    assert_eq!(
        (dead.status, dead.payload_erased, dead.last_error.as_deref()),
        (OutboxStatus::Dead, true, Some(super::ERASED))
    );
    fixture.advance(3600 * SECOND);
    assert_eq!(relay.publish_once().await.unwrap(), 0, "not retried");

    // A replay of everything sends only what can still be read: a-2.
    let replay = store
        .start_replay(
            crate::store::NewReplay {
                tenant_id: "t1".into(),
                org_id: None,
                from: 0,
                to: fixture.now() + SECOND,
                event_type: None,
                target: crate::store::ReplayTarget::Bus,
                subscriber_id: None,
                requested_by: "test".into(),
                requested_at: fixture.now(),
            },
            10,
        )
        .await
        .unwrap();
    let done = super::run_replay(store, relay.bus.as_ref(), &replay)
        .await
        .unwrap();
    assert_eq!((done.replayed, done.error.as_deref()), (1, None));
    assert_eq!(
        *bus.published.lock().unwrap(),
        ["a-0", "a-2", "a-2"].map(String::from)
    );
}
