//! The fast path: accepted events are published on a message bus after they are safely in the
//! outbox. Publication is at-least-once; every message carries the event's stable `event_id`,
//! which consumers (and the bus, where it can) use to drop duplicates.
//!
//! Backends sit side by side: [`memory`] is the embedded default (in-process, for subscribers
//! inside the host and for tests); [`nats`] is NATS JetStream, which several host nodes and the
//! platform's consumers share.

pub mod memory;
pub mod nats;
#[cfg(test)]
pub(crate) mod suite;

use std::fmt::Debug;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

pub use memory::MemoryBus;
pub use nats::{NatsBus, NatsSettings};

/// Why a publication failed; the relay retries it with backoff.
#[derive(Debug, Clone, thiserror::Error)]
#[error("publishing to the bus failed: {0}")]
pub struct BusError(pub String);

/// One event as it travels on the bus and to outgoing webhook subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The stable event id (the bus's dedupe key).
    pub event_id: String,
    /// `events.<tenant>.<event_type>`.
    pub subject: String,
    /// The event envelope as JSON text (see [`envelope_json`]).
    pub body: Arc<str>,
}

/// A message bus.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + Debug {
    /// Publishes one message; returns once the bus has it.
    async fn publish(&self, message: &Message) -> Result<(), BusError>;

    /// The backend's name, for readiness and logs.
    fn backend(&self) -> &'static str {
        "memory"
    }

    /// Whether the bus can take publications now (readiness); the in-process one always can.
    async fn check(&self) -> Result<(), BusError> {
        Ok(())
    }
}

/// The fields of a stored event that make up its envelope.
#[derive(Debug, Clone, Copy)]
pub struct EventParts<'a> {
    /// Stable event id.
    pub event_id: &'a str,
    /// `entity.action`.
    pub event_type: &'a str,
    /// Entity type.
    pub entity_type: &'a str,
    /// Entity id.
    pub entity_id: &'a str,
    /// Tenant.
    pub tenant_id: &'a str,
    /// Org, or `None` for platform level.
    pub org_id: Option<&'a str>,
    /// The payload's JSON text, exactly as the adapter emitted it.
    pub payload_json: &'a str,
    /// The metadata's JSON text (trace id, source, actor, timestamp).
    pub metadata_json: &'a str,
}

#[derive(Serialize)]
struct Envelope<'a> {
    event_id: &'a str,
    event_type: &'a str,
    entity_type: &'a str,
    entity_id: &'a str,
    tenant_id: &'a str,
    org_id: Option<&'a str>,
    payload: &'a RawValue,
    metadata: &'a RawValue,
}

/// The platform's event envelope (the seed's payload structure, plus `event_id`). The payload
/// is embedded as raw JSON text, never re-parsed into numbers, so `"12.50"` and every other
/// value reach consumers byte for byte as checked.
pub fn envelope_json(parts: &EventParts<'_>) -> Result<String, serde_json::Error> {
    let payload: &RawValue = serde_json::from_str(parts.payload_json)?;
    let metadata: &RawValue = serde_json::from_str(parts.metadata_json)?;
    serde_json::to_string(&Envelope {
        event_id: parts.event_id,
        event_type: parts.event_type,
        entity_type: parts.entity_type,
        entity_id: parts.entity_id,
        tenant_id: parts.tenant_id,
        org_id: parts.org_id,
        payload,
        metadata,
    })
}

/// The subject of an event: `events.<tenant>.<event_type>`, with every character outside
/// `[A-Za-z0-9_-]` of the tenant replaced by `_` so that it is one subject token.
pub fn subject(tenant_id: &str, event_type: &str) -> String {
    let tenant: String = tenant_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("events.{tenant}.{event_type}")
}

/// Builds the bus message of a stored event.
pub fn message(parts: &EventParts<'_>) -> Result<Message, serde_json::Error> {
    Ok(Message {
        event_id: parts.event_id.to_owned(),
        subject: subject(parts.tenant_id, parts.event_type),
        body: envelope_json(parts)?.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> EventParts<'static> {
        EventParts {
            event_id: "evt-1",
            event_type: "deal.won",
            entity_type: "deal",
            entity_id: "D-1",
            tenant_id: "acme corp",
            org_id: None,
            payload_json: r#"{"amount": "12.50", "n": 12345678901234567}"#,
            metadata_json: r#"{"trace_id":"t","source":"webhook","actor":"a@1","timestamp":"2025-12-01T10:00:00Z"}"#,
        }
    }

    #[test]
    fn the_envelope_keeps_the_payload_byte_for_byte() {
        let json = envelope_json(&parts()).unwrap();
        assert!(
            json.contains(r#""payload":{"amount": "12.50", "n": 12345678901234567}"#),
            "{json}"
        );
        assert!(json.contains(r#""org_id":null"#), "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["metadata"]["actor"], "a@1");
    }

    #[test]
    fn subjects_are_one_token_per_tenant() {
        assert_eq!(
            subject("acme corp.eu", "deal.won"),
            "events.acme_corp_eu.deal.won"
        );
        assert_eq!(
            message(&parts()).unwrap().subject,
            "events.acme_corp.deal.won"
        );
    }
}
