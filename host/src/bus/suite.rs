//! The same behaviour suite runs against every backend (`memory::<case>`, `nats::<case>`); the
//! NATS bus's deduplication and failures have their own tests below. The NATS tests use the
//! server at `ADAPTER_HOST_TEST_NATS_URL` (default `nats://127.0.0.1:4222`), each with a
//! stream and subject prefix of its own, deleted at the end; they fail when it is not there.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::nats::{NatsBus, NatsSettings};
use super::{Bus, MemoryBus, Message};

/// A bus under test and a way to read back what reached it.
#[async_trait]
trait Probe: Send {
    fn bus(&self) -> Arc<dyn Bus>;
    /// The first `n` messages the bus holds or delivered, in order.
    async fn published(&mut self, n: usize) -> Vec<Message>;
    async fn finish(self: Box<Self>) {}
}

struct MemoryProbe {
    bus: Arc<MemoryBus>,
    receiver: broadcast::Receiver<Message>,
}

#[async_trait]
impl Probe for MemoryProbe {
    fn bus(&self) -> Arc<dyn Bus> {
        self.bus.clone()
    }

    async fn published(&mut self, n: usize) -> Vec<Message> {
        let mut got = Vec::new();
        for _ in 0..n {
            let next = tokio::time::timeout(Duration::from_secs(5), self.receiver.recv());
            got.push(next.await.expect("a message within 5 s").unwrap());
        }
        got
    }
}

fn memory() -> Box<dyn Probe> {
    let bus = Arc::new(MemoryBus::new());
    let receiver = bus.subscribe();
    Box::new(MemoryProbe { bus, receiver })
}

pub(crate) fn nats_url() -> String {
    std::env::var("ADAPTER_HOST_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Settings with a stream and prefix no other test run uses.
pub(crate) fn test_settings() -> NatsSettings {
    let token = hex::encode(crate::secrets::random_bytes::<6>().unwrap());
    NatsSettings {
        url: nats_url(),
        stream: format!("TEST_{token}"),
        max_age: Duration::from_secs(3600),
        subject_prefix: Some(format!("t{token}")),
    }
}

struct NatsProbe {
    bus: Arc<NatsBus>,
}

impl NatsProbe {
    async fn open() -> Self {
        let settings = test_settings();
        let bus = NatsBus::connect(settings.clone())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "these tests need NATS with JetStream at {}: {e}",
                    settings.url
                )
            });
        Self { bus: Arc::new(bus) }
    }

    async fn stored(&self) -> u64 {
        let mut stream = self
            .bus
            .jetstream()
            .get_stream(&self.bus.settings().stream)
            .await
            .unwrap();
        stream.info().await.unwrap().state.messages
    }
}

#[async_trait]
impl Probe for NatsProbe {
    fn bus(&self) -> Arc<dyn Bus> {
        self.bus.clone()
    }

    async fn published(&mut self, n: usize) -> Vec<Message> {
        let settings = self.bus.settings();
        let stream = self
            .bus
            .jetstream()
            .get_stream(&settings.stream)
            .await
            .unwrap();
        let prefix = format!("{}.", settings.subject_prefix.as_deref().unwrap());
        let mut got = Vec::new();
        for sequence in 1..=n as u64 {
            let raw = stream.get_raw_message(sequence).await.unwrap();
            got.push(Message {
                event_id: raw.headers.get("Nats-Msg-Id").unwrap().to_string(),
                subject: raw.subject.strip_prefix(&prefix).unwrap().to_owned(),
                body: std::str::from_utf8(&raw.payload).unwrap().into(),
            });
        }
        got
    }

    async fn finish(self: Box<Self>) {
        let _ = self
            .bus
            .jetstream()
            .delete_stream(&self.bus.settings().stream)
            .await;
    }
}

macro_rules! bus_suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    let probe = super::memory();
                    super::$case(probe).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test]
                async fn $case() {
                    let probe: Box<dyn super::Probe> = Box::new(super::NatsProbe::open().await);
                    super::$case(probe).await;
                }
            )*
        }
    };
}

bus_suite!(
    messages_arrive_in_order_byte_for_byte,
    concurrent_publications_all_land,
);

fn message(n: usize) -> Message {
    Message {
        event_id: format!("evt-{n}"),
        subject: format!(
            "events.acme.deal.{}",
            if n.is_multiple_of(2) {
                "won"
            } else {
                "updated"
            }
        ),
        body: format!(r#"{{"event_id":"evt-{n}","payload":{{"amount":"12.50","n":{n}}}}}"#).into(),
    }
}

async fn messages_arrive_in_order_byte_for_byte(mut probe: Box<dyn Probe>) {
    let bus = probe.bus();
    let sent: Vec<Message> = (0..5).map(message).collect();
    for m in &sent {
        bus.publish(m).await.unwrap();
    }
    assert_eq!(probe.published(5).await, sent);
    probe.finish().await;
}

async fn concurrent_publications_all_land(mut probe: Box<dyn Probe>) {
    let bus = probe.bus();
    let sent: Vec<Message> = (0..50).map(message).collect();
    let publications = sent.iter().map(|m| {
        let bus = bus.clone();
        async move { bus.publish(m).await }
    });
    for result in futures::future::join_all(publications).await {
        result.unwrap();
    }
    let mut got: Vec<String> = probe
        .published(50)
        .await
        .into_iter()
        .map(|m| m.event_id)
        .collect();
    got.sort();
    let mut expected: Vec<String> = sent.into_iter().map(|m| m.event_id).collect();
    expected.sort();
    assert_eq!(got, expected);
    probe.finish().await;
}

#[tokio::test]
async fn nats_stores_an_event_published_again_once() {
    let probe = NatsProbe::open().await;
    let bus = probe.bus();
    bus.publish(&message(1)).await.unwrap();
    bus.publish(&message(2)).await.unwrap();
    // The relay retrying after a lost acknowledgement, or another node after a lease ran out.
    bus.publish(&message(1)).await.unwrap();
    assert_eq!(probe.stored().await, 2);
    Box::new(probe).finish().await;
}

#[tokio::test]
async fn nats_that_is_not_there_is_a_clear_error() {
    let mut settings = test_settings();
    settings.url = "nats://127.0.0.1:1".into();
    let error = NatsBus::connect(settings).await.unwrap_err();
    assert!(
        error.0.contains("connecting to NATS at nats://127.0.0.1:1"),
        "{error}"
    );
}

#[tokio::test]
async fn nats_names_that_cannot_work_are_refused() {
    for (stream, prefix, expected) in [
        ("a.b", None, "stream name"),
        ("", None, "stream name"),
        ("OK", Some("a..b"), "subject prefix"),
        ("OK", Some("a.>"), "subject prefix"),
    ] {
        let settings = NatsSettings {
            url: nats_url(),
            stream: stream.into(),
            max_age: Duration::ZERO,
            subject_prefix: prefix.map(Into::into),
        };
        let error = NatsBus::connect(settings).await.unwrap_err();
        assert!(error.0.contains(expected), "{error}");
    }
}
