use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::AdapterError;

/// Largest entity id the host accepts, in bytes.
pub(crate) const MAX_ENTITY_ID_BYTES: usize = 256;

/// Largest integer a JSON number may hold without losing precision in a double: 2^53 - 1.
pub(crate) const MAX_SAFE_INTEGER: i128 = (1 << 53) - 1;

/// An integration event, as the adapter emits it. The host adds the tenant id, the event id and
/// the metadata.
///
/// Build one with [`Event::new`]: it refuses an event type that is not `entity.action` in lower
/// snake case, derives the entity type from it, and [`Event::payload`] refuses a payload that is
/// not a JSON object or that holds a number a double cannot carry exactly.
///
/// ```
/// use crm_adapter_sdk::{Decimal, Event};
/// use serde_json::json;
///
/// let amount = Decimal::parse("1234.56").unwrap();
/// let event = Event::new("commission.calculated", "C-991")?
///     .org("org-456")
///     .dedupe_key("evt_123")
///     .payload(json!({ "commission_amount": amount, "member_count": 3 }))?;
/// assert_eq!(event.entity_type(), "commission");
/// assert_eq!(event.payload_json(), r#"{"commission_amount":"1234.56","member_count":3}"#);
///
/// assert!(Event::new("CommissionCalculated", "C-991").is_err());
/// # Ok::<(), crm_adapter_sdk::EventError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    event_type: String,
    entity_type: String,
    entity_id: String,
    org_id: Option<String>,
    payload: Payload,
    dedupe_key: Option<String>,
    idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Payload {
    Object(Map<String, Value>),
    /// Text given as is to [`Event::unchecked`]; may be anything, even not JSON.
    Raw(String),
}

/// Why [`Event::new`] or [`Event::payload`] refused an event.
///
/// With `?` in an adapter, it becomes [`AdapterError::BadRequest`] for an entity id taken from
/// the input (empty or too long), and [`AdapterError::Failed`] otherwise (a bug in the adapter:
/// fix it, then redrive).
///
/// ```
/// use crm_adapter_sdk::{AdapterError, Event, EventError};
///
/// let err = Event::new("deal", "1").unwrap_err();
/// assert!(matches!(err, EventError::InvalidEventType(_)));
/// assert!(matches!(AdapterError::from(err), AdapterError::Failed(_)));
///
/// let err = Event::new("deal.won", "").unwrap_err();
/// assert!(matches!(AdapterError::from(err), AdapterError::BadRequest(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    /// The event type is not `entity.action` in lower snake case.
    InvalidEventType(String),
    /// The entity id is empty or longer than 256 bytes.
    InvalidEntityId(String),
    /// The payload is not a JSON object, or holds a number with a fraction, an exponent, or an
    /// integer beyond ±(2^53 - 1). The message names the JSON pointer.
    InvalidPayload(String),
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidEventType(m) | Self::InvalidEntityId(m) | Self::InvalidPayload(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for EventError {}

impl From<EventError> for AdapterError {
    fn from(err: EventError) -> Self {
        match err {
            EventError::InvalidEntityId(m) => AdapterError::BadRequest(m),
            EventError::InvalidEventType(m) | EventError::InvalidPayload(m) => {
                AdapterError::Failed(m)
            }
        }
    }
}

/// Whether `name` is `entity.action`, each part lower snake case (`[a-z][a-z0-9]*(_[a-z0-9]+)*`).
pub(crate) fn is_valid_event_type(name: &str) -> bool {
    fn snake(part: &str) -> bool {
        part.starts_with(|c: char| c.is_ascii_lowercase())
            && part.split('_').all(|w| {
                !w.is_empty()
                    && w.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
    }
    match name.split_once('.') {
        Some((entity, action)) => snake(entity) && snake(action),
        None => false,
    }
}

pub(crate) fn check_event_type(name: &str) -> Result<(), EventError> {
    if is_valid_event_type(name) {
        Ok(())
    } else {
        Err(EventError::InvalidEventType(format!(
            "event type `{name}` is not `entity.action` in lower snake case (e.g. \"deal.won\")"
        )))
    }
}

pub(crate) fn check_entity_id(id: &str) -> Result<(), EventError> {
    if id.is_empty() {
        Err(EventError::InvalidEntityId("entity id is empty".into()))
    } else if id.len() > MAX_ENTITY_ID_BYTES {
        Err(EventError::InvalidEntityId(format!(
            "entity id is {} bytes long; the limit is {MAX_ENTITY_ID_BYTES}",
            id.len()
        )))
    } else {
        Ok(())
    }
}

/// Appends `key` to a JSON pointer, escaping `~` and `/`.
pub(crate) fn pointer_push(pointer: &str, key: &str) -> String {
    format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// Every number that a double cannot carry exactly, as "pointer: rule" messages.
pub(crate) fn number_violations(value: &Value, pointer: &str, out: &mut Vec<String>) {
    match value {
        Value::Number(n) => {
            let text = n.as_str();
            if text.contains(['.', 'e', 'E']) {
                out.push(format!(
                    "{pointer}: the number {text} has a fraction or an exponent; send decimals \
                     as strings (crm_adapter_sdk::Decimal)"
                ));
            } else if !text
                .parse::<i128>()
                .is_ok_and(|i| (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i))
            {
                out.push(format!(
                    "{pointer}: the integer {text} is beyond ±(2^53 - 1); send it as a string"
                ));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                number_violations(item, &format!("{pointer}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                number_violations(item, &pointer_push(pointer, key), out);
            }
        }
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

impl Event {
    /// Starts an event of type `event_type` (`entity.action`, lower snake case) about entity
    /// `entity_id` (non-empty, at most 256 bytes). The entity type is the part before the dot.
    /// The payload starts as `{}`, the org as none (platform level).
    ///
    /// ```
    /// use crm_adapter_sdk::Event;
    ///
    /// let event = Event::new("agent_profile.created", "profile-123").unwrap();
    /// assert_eq!(event.entity_type(), "agent_profile");
    /// assert_eq!(event.payload_json(), "{}");
    ///
    /// for bad in ["nodot", "Deal.won", "deal.Won", "deal.won.twice", "deal-x.won", "deal._won", ".won"] {
    ///     assert!(Event::new(bad, "1").is_err(), "{bad}");
    /// }
    /// ```
    pub fn new(event_type: &str, entity_id: impl Into<String>) -> Result<Self, EventError> {
        check_event_type(event_type)?;
        let entity_id = entity_id.into();
        check_entity_id(&entity_id)?;
        let entity_type = event_type
            .split_once('.')
            .map(|(entity, _)| entity)
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            event_type: event_type.to_owned(),
            entity_type,
            entity_id,
            org_id: None,
            payload: Payload::Object(Map::new()),
            dedupe_key: None,
            idempotency_key: None,
        })
    }

    /// An event exactly as given, with no check at all: for test guests that must emit what the
    /// host refuses. Adapters use [`Event::new`].
    #[doc(hidden)]
    pub fn unchecked(
        event_type: impl Into<String>,
        entity_type: impl Into<String>,
        entity_id: impl Into<String>,
        payload_json: impl Into<String>,
    ) -> Self {
        Self {
            event_type: event_type.into(),
            entity_type: entity_type.into(),
            entity_id: entity_id.into(),
            org_id: None,
            payload: Payload::Raw(payload_json.into()),
            dedupe_key: None,
            idempotency_key: None,
        }
    }

    /// Scopes the event to an organisation; it must be one of the connection's
    /// [`allowed_org_ids`](crate::Context::allowed_org_ids), which the host checks.
    ///
    /// ```
    /// let event = crm_adapter_sdk::Event::new("deal.won", "1").unwrap().org("org-456");
    /// assert_eq!(event.org_id(), Some("org-456"));
    /// ```
    pub fn org(mut self, org_id: impl Into<String>) -> Self {
        self.org_id = Some(org_id.into());
        self
    }

    /// Scopes the event to an organisation, or to the platform level with `None`.
    ///
    /// ```
    /// let org: Option<&str> = None;
    /// let event = crm_adapter_sdk::Event::new("deal.won", "1").unwrap().org_opt(org);
    /// assert_eq!(event.org_id(), None);
    /// ```
    pub fn org_opt(mut self, org_id: Option<impl Into<String>>) -> Self {
        self.org_id = org_id.map(Into::into);
        self
    }

    /// Sets the key that makes the event unique within its delivery or page, typically the
    /// provider's event id (without one, the host uses the event's position).
    ///
    /// ```
    /// let event = crm_adapter_sdk::Event::new("deal.won", "1").unwrap().dedupe_key("evt_1");
    /// assert_eq!(event.dedupe_key_str(), Some("evt_1"));
    /// ```
    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    /// Sets the payload: a [`serde_json::Value`] or anything [`Serialize`] that serializes to a
    /// JSON object. Refuses anything else, and numbers a double cannot carry exactly (a
    /// fraction, an exponent, an integer beyond ±(2^53 - 1)): put decimals in a
    /// [`Decimal`](crate::Decimal), which serializes as a string.
    ///
    /// ```
    /// use crm_adapter_sdk::{Decimal, Event, EventError};
    /// use serde::Serialize;
    /// use serde_json::json;
    ///
    /// #[derive(Serialize)]
    /// struct Won { amount: Decimal, currency: &'static str }
    ///
    /// let won = Won { amount: Decimal::parse("99.90").unwrap(), currency: "USD" };
    /// let event = Event::new("deal.won", "D-1")?.payload(&won)?;
    /// assert_eq!(event.payload_json(), r#"{"amount":"99.90","currency":"USD"}"#);
    ///
    /// let err = Event::new("deal.won", "D-1")?.payload(json!({ "amount": 99.9 })).unwrap_err();
    /// assert!(err.to_string().starts_with("/payload/amount: the number 99.9 has a fraction"));
    /// assert!(Event::new("deal.won", "D-1")?.payload(json!([1, 2])).is_err());
    /// # Ok::<(), EventError>(())
    /// ```
    pub fn payload<T: Serialize>(mut self, payload: T) -> Result<Self, EventError> {
        let value = serde_json::to_value(payload).map_err(|e| {
            EventError::InvalidPayload(format!("the payload does not serialize to JSON: {e}"))
        })?;
        let Value::Object(map) = value else {
            return Err(EventError::InvalidPayload(format!(
                "the payload must be a JSON object, not {}",
                crate::decimal::describe_json(&value)
            )));
        };
        let mut violations = Vec::new();
        for (key, item) in &map {
            number_violations(item, &pointer_push("/payload", key), &mut violations);
        }
        if !violations.is_empty() {
            return Err(EventError::InvalidPayload(violations.join("; ")));
        }
        self.payload = Payload::Object(map);
        Ok(self)
    }

    /// The event type, e.g. `deal.won`.
    ///
    /// ```
    /// assert_eq!(crm_adapter_sdk::Event::new("deal.won", "1").unwrap().event_type(), "deal.won");
    /// ```
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The entity type: the part of the event type before the dot.
    ///
    /// ```
    /// assert_eq!(crm_adapter_sdk::Event::new("deal.won", "1").unwrap().entity_type(), "deal");
    /// ```
    pub fn entity_type(&self) -> &str {
        &self.entity_type
    }

    /// The entity's id.
    ///
    /// ```
    /// assert_eq!(crm_adapter_sdk::Event::new("deal.won", "D-7").unwrap().entity_id(), "D-7");
    /// ```
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// The organisation, or `None` for platform level.
    ///
    /// ```
    /// assert_eq!(crm_adapter_sdk::Event::new("deal.won", "1").unwrap().org_id(), None);
    /// ```
    pub fn org_id(&self) -> Option<&str> {
        self.org_id.as_deref()
    }

    /// The dedupe key, if set (the getter of [`Event::dedupe_key`]).
    ///
    /// ```
    /// let event = crm_adapter_sdk::Event::new("deal.won", "1").unwrap();
    /// assert_eq!(event.dedupe_key_str(), None);
    /// assert_eq!(event.dedupe_key("evt_1").dedupe_key_str(), Some("evt_1"));
    /// ```
    pub fn dedupe_key_str(&self) -> Option<&str> {
        self.dedupe_key.as_deref()
    }

    /// Names the fact this event records, stable across deliveries and polls: the provider's
    /// own event id, or an identity such as `"bookmark:company:42"`. The host derives the event
    /// id from the connection and this key alone, so the same fact is one event forever,
    /// whatever delivery or page carries it again (a repeat is counted, never published again).
    ///
    /// ```
    /// let event = crm_adapter_sdk::Event::new("company.bookmarked", "42")
    ///     .unwrap()
    ///     .idempotency_key("bookmark:company:42");
    /// assert_eq!(event.idempotency_key_str(), Some("bookmark:company:42"));
    /// ```
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The idempotency key, if set.
    pub fn idempotency_key_str(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// The payload as the JSON text the host receives. Numbers keep their exact text.
    ///
    /// ```
    /// use serde_json::json;
    /// let event = crm_adapter_sdk::Event::new("deal.won", "1").unwrap().payload(json!({"n": 1})).unwrap();
    /// assert_eq!(event.payload_json(), r#"{"n":1}"#);
    /// ```
    pub fn payload_json(&self) -> String {
        match &self.payload {
            Payload::Object(map) => Value::Object(map.clone()).to_string(),
            Payload::Raw(text) => text.clone(),
        }
    }

    /// The payload as a JSON value, handy in tests (`event.payload_value()["amount"]`).
    /// An event built with [`Event::new`] always has an object.
    ///
    /// ```
    /// use serde_json::json;
    /// let event = crm_adapter_sdk::Event::new("deal.won", "1").unwrap()
    ///     .payload(json!({"amount": "12.50"})).unwrap();
    /// assert_eq!(event.payload_value()["amount"], "12.50");
    /// ```
    pub fn payload_value(&self) -> Value {
        match &self.payload {
            Payload::Object(map) => Value::Object(map.clone()),
            Payload::Raw(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        }
    }

    /// Takes the event apart for the bindings: (type, entity type, entity id, org, payload
    /// text, dedupe key).
    pub(crate) fn into_parts(self) -> EventParts {
        let payload = match self.payload {
            Payload::Object(map) => Value::Object(map).to_string(),
            Payload::Raw(text) => text,
        };
        EventParts {
            event_type: self.event_type,
            entity_type: self.entity_type,
            entity_id: self.entity_id,
            org_id: self.org_id,
            payload,
            dedupe_key: self.dedupe_key,
            idempotency_key: self.idempotency_key,
        }
    }
}

/// An event's fields, owned, in the shape of the WIT record.
pub(crate) struct EventParts {
    pub event_type: String,
    pub entity_type: String,
    pub entity_id: String,
    pub org_id: Option<String>,
    pub payload: String,
    pub dedupe_key: Option<String>,
    pub idempotency_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_types_must_be_entity_dot_action_in_lower_snake_case() {
        for good in [
            "deal.won",
            "agent_profile.created",
            "member.enrollment_updated",
            "a1.b2",
        ] {
            assert!(is_valid_event_type(good), "{good}");
        }
        for bad in [
            "",
            "nodot",
            ".",
            "deal.",
            ".won",
            "Deal.won",
            "deal.WON",
            "deal.won.x",
            "deal won",
            "deal.won ",
            "1deal.won",
            "deal._won",
            "deal.won_",
            "deal__x.won",
            "deal-x.won",
            "déal.won",
        ] {
            assert!(!is_valid_event_type(bad), "{bad:?}");
            let err = Event::new(bad, "1").unwrap_err();
            assert!(matches!(err, EventError::InvalidEventType(_)));
        }
    }

    #[test]
    fn entity_ids_are_bounded() {
        assert!(Event::new("deal.won", "x".repeat(256)).is_ok());
        let err = Event::new("deal.won", "x".repeat(257)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entity id is 257 bytes long; the limit is 256"
        );
    }

    #[test]
    fn payload_refuses_unsafe_numbers_naming_every_pointer() {
        let err = Event::new("deal.won", "1")
            .unwrap()
            .payload(json!({
                "ok": 9007199254740991_i64,
                "lines": [{"price": 1.5}],
                "big": 9007199254740992_i64,
                "a/b": -9007199254740992_i64,
            }))
            .unwrap_err();
        let EventError::InvalidPayload(message) = err else {
            panic!("wrong error {err:?}");
        };
        assert!(
            message.contains("/payload/lines/0/price: the number 1.5"),
            "{message}"
        );
        assert!(
            message.contains("/payload/big: the integer 9007199254740992"),
            "{message}"
        );
        assert!(
            message.contains("/payload/a~1b: the integer -9007199254740992"),
            "{message}"
        );
        assert!(!message.contains("/payload/ok"), "{message}");
    }

    #[test]
    fn payload_keeps_exact_number_text_and_key_order_is_stable() {
        let value: Value = serde_json::from_str(r#"{"b": 1, "a": {"n": -42}}"#).unwrap();
        let event = Event::new("deal.won", "1").unwrap().payload(value).unwrap();
        assert_eq!(event.payload_json(), r#"{"a":{"n":-42},"b":1}"#);
    }

    #[test]
    fn unchecked_events_pass_anything_through() {
        let event = Event::unchecked("nodot", "nodot", "", "not json").org("x");
        let parts = event.clone().into_parts();
        assert_eq!(parts.event_type, "nodot");
        assert_eq!(parts.payload, "not json");
        assert_eq!(parts.org_id.as_deref(), Some("x"));
        assert_eq!(event.payload_value(), Value::Null);
    }
}
