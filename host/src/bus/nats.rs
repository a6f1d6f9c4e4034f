//! NATS JetStream: the bus that several host nodes and the platform's consumers share.
//!
//! Every message goes to the subject `events.<tenant>.<event_type>` (under an optional prefix)
//! of one stream, which the host creates if it is missing (file storage). A publication returns
//! once JetStream has acknowledged it, so an outbox row is marked published only after the
//! stream holds it. Each message carries its event id as `Nats-Msg-Id`: a publication retried
//! within the stream's duplicate window (the relay retries after a lost acknowledgement, or a
//! node takes over a row whose lease ran out) is stored once, and its acknowledgement says
//! `duplicate`. Beyond the window, consumers drop repeats by `event_id`, as with any
//! at-least-once bus.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::{Bus, BusError, Message};

/// The stream's name when none is configured.
pub const DEFAULT_STREAM: &str = "ADAPTER_EVENTS";
/// How long JetStream remembers a message id to drop a repeated publication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// The longest a publication waits for the stream's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the bus is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// `nats://host:port` (several, comma-separated, for a cluster).
    pub url: String,
    /// The JetStream stream events are stored in.
    pub stream: String,
    /// How long the stream keeps events (zero: until the stream's other limits drop them). Only
    /// used when the host creates the stream.
    pub max_age: Duration,
    /// A token put before every subject (`acme` → `acme.events.<tenant>.<type>`), so that
    /// several hosts (or test runs) can share one NATS server with streams of their own.
    pub subject_prefix: Option<String>,
}

impl NatsSettings {
    /// The settings for `url`, with the default stream and no prefix.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: DEFAULT_STREAM.to_owned(),
            max_age: Duration::ZERO,
            subject_prefix: None,
        }
    }

    /// The subject a message goes to.
    fn subject(&self, message: &Message) -> String {
        match &self.subject_prefix {
            Some(prefix) => format!("{prefix}.{}", message.subject),
            None => message.subject.clone(),
        }
    }

    /// What the stream captures.
    fn stream_subjects(&self) -> String {
        match &self.subject_prefix {
            Some(prefix) => format!("{prefix}.events.>"),
            None => "events.>".to_owned(),
        }
    }
}

/// A [`Bus`] on NATS JetStream.
#[derive(Debug, Clone)]
pub struct NatsBus {
    settings: NatsSettings,
    client: async_nats::Client,
    jetstream: jetstream::Context,
}

impl NatsBus {
    /// Connects and makes sure the stream exists (created with file storage and
    /// [`DUPLICATE_WINDOW`] when it does not; an existing one is used as it is configured).
    pub async fn connect(settings: NatsSettings) -> Result<Self, BusError> {
        if settings.stream.is_empty()
            || settings
                .stream
                .contains(|c: char| c == '.' || c == '*' || c == '>' || c.is_whitespace())
        {
            return Err(BusError(format!(
                "the NATS stream name {:?} must be non-empty, without '.', '*', '>' or spaces",
                settings.stream
            )));
        }
        if let Some(prefix) = &settings.subject_prefix
            && (prefix.is_empty()
                || !prefix
                    .split('.')
                    .all(|t| !t.is_empty() && !t.contains(['*', '>', ' '])))
        {
            return Err(BusError(format!(
                "the NATS subject prefix {prefix:?} must be dot-separated tokens without '*', '>' or spaces"
            )));
        }
        let client = async_nats::ConnectOptions::new()
            .name("adapter-host")
            .connect(settings.url.as_str())
            .await
            .map_err(|e| BusError(format!("connecting to NATS at {}: {e}", settings.url)))?;
        let jetstream = jetstream::new(client.clone());
        jetstream
            .get_or_create_stream(stream::Config {
                name: settings.stream.clone(),
                subjects: vec![settings.stream_subjects()],
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                max_age: settings.max_age,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                BusError(format!(
                    "opening the JetStream stream {}: {e}",
                    settings.stream
                ))
            })?;
        tracing::info!(url = %settings.url, stream = %settings.stream, "publishing events to NATS JetStream");
        Ok(Self {
            settings,
            client,
            jetstream,
        })
    }

    /// The settings it was connected with.
    pub fn settings(&self) -> &NatsSettings {
        &self.settings
    }

    /// The JetStream context (for tests and tools that read the stream).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    fn backend(&self) -> &'static str {
        "nats"
    }

    async fn check(&self) -> Result<(), BusError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(BusError(format!(
                "NATS at {} is {state}",
                self.settings.url
            ))),
        }
    }

    async fn publish(&self, message: &Message) -> Result<(), BusError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", message.event_id.as_str());
        headers.insert("Content-Type", "application/json");
        let subject = self.settings.subject(message);
        let ack = self
            .jetstream
            .publish_with_headers(
                subject.clone(),
                headers,
                bytes::Bytes::copy_from_slice(message.body.as_bytes()),
            )
            .await
            .map_err(|e| BusError(format!("publishing {} to {subject}: {e}", message.event_id)))?;
        let ack = tokio::time::timeout(ACK_TIMEOUT, ack.into_future())
            .await
            .map_err(|_| {
                BusError(format!(
                    "JetStream did not acknowledge {} within {} s",
                    message.event_id,
                    ACK_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| BusError(format!("JetStream refused {}: {e}", message.event_id)))?;
        if ack.duplicate {
            tracing::debug!(event_id = %message.event_id, "already in the stream");
        }
        Ok(())
    }
}
