//! Change Data Capture events. Salesforce publishes them on its streaming channels
//! (`/data/ChangeEvents`, `/data/AccountChangeEvent`, ...), which a webhook cannot subscribe
//! to, so a relay (a CometD or Pub/Sub API client) POSTs them here as JSON: one message, or an
//! array of them, each in one of the shapes relays produce:
//!
//! - a CometD message: `{"channel": "/data/ChangeEvents", "data": {"payload": {...},
//!   "event": {"replayId": 17}}}` (CometD `/meta/...` messages are skipped);
//! - its `data` part: `{"schema": "...", "payload": {...}, "event": {...}}`;
//! - the decoded event itself (Pub/Sub API): `{"ChangeEventHeader": {...}, "Name": ...}`.
//!
//! An event names one or more records (`recordIds`); each becomes one platform event, whose
//! dedupe key is `<transactionKey>/<sequenceNumber>/<record id>`: the event's identity at
//! Salesforce, the same on every channel and on every replay.
//!
//! Salesforce *platform events* (custom `…__e` events on `/event/…` channels, and standard
//! ones) travel the same relays but are not record changes: they carry no
//! `ChangeEventHeader`, only `CreatedDate`, `CreatedById` and their own fields. They are
//! skipped with the reason (a delivery of nothing else is *ignored*), unless the connection's
//! `platform_events` setting is `reject`, which refuses such a delivery as a bad request (for a
//! relay that should never forward them).

use crm_adapter_sdk::fields::Obj;
use crm_adapter_sdk::serde_json::{Map, Value};
use crm_adapter_sdk::{AdapterError, Context, Event, Timestamp};

use crate::records::{self, Object, Shape, Stage};
use crate::snapshot::Memory;

/// The events of a delivery of change events.
pub fn events(body: &Value, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
    let messages = match body {
        Value::Array(_) => Obj::root_array(body, "the delivery")?,
        _ => vec![Obj::root(body, "the delivery")?],
    };
    let org = crate::org_for(ctx)?;
    let platform_events = PlatformEvents::of(ctx)?;
    let mut events = Vec::new();
    let mut skipped = Vec::new();
    let mut memory = Memory::default();
    for message in &messages {
        let found = change_event(message)?;
        let payload = match &found {
            Found::Nested(payload) => payload,
            Found::Itself => message,
            Found::Skip(reason) => {
                skipped.push(reason.clone());
                continue;
            }
        };
        if let Some(name) = platform_event(message, payload)? {
            let reason = format!(
                "{name} is a platform event, not a change event: this adapter maps Change \
                 Data Capture events only"
            );
            match platform_events {
                PlatformEvents::Ignore => {
                    skipped.push(reason);
                    continue;
                }
                PlatformEvents::Reject => {
                    return Err(AdapterError::bad_request(format!(
                        "{reason} (the connection's `{PLATFORM_EVENTS_SETTING}` setting is \
                         `reject`)"
                    )));
                }
            }
        }
        if let Err(reason) = convert(payload, org.as_deref(), &mut memory, &mut events)? {
            skipped.push(reason);
        }
    }
    crm_adapter_sdk::debug!(
        "{} change messages: {} events, {} skipped",
        messages.len(),
        events.len(),
        skipped.len()
    );
    if events.is_empty() {
        return Err(AdapterError::ignored(crate::nothing_to_emit(&skipped)));
    }
    memory.save()?;
    Ok(events)
}

/// Where a message holds its change event (the object holding `ChangeEventHeader`).
enum Found<'a> {
    /// In a nested object (`data.payload` or `payload`).
    Nested(Obj<'a>),
    /// The message is the event.
    Itself,
    /// Nowhere: nothing to convert, and why.
    Skip(String),
}

/// The connection setting saying what becomes of platform events: `ignore` (the default) or
/// `reject`.
pub const PLATFORM_EVENTS_SETTING: &str = "platform_events";

/// What becomes of a platform event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlatformEvents {
    /// Skipped with the reason.
    Ignore,
    /// The delivery is refused as a bad request.
    Reject,
}

impl PlatformEvents {
    fn of(ctx: &Context) -> Result<Self, AdapterError> {
        match ctx.setting(PLATFORM_EVENTS_SETTING) {
            None | Some("ignore") => Ok(Self::Ignore),
            Some("reject") => Ok(Self::Reject),
            Some(other) => Err(AdapterError::failed(format!(
                "setting `{PLATFORM_EVENTS_SETTING}` is `{other}`: it takes `ignore` (the \
                 default) or `reject`"
            ))),
        }
    }
}

/// The name of the platform event `payload` is (from `message`), if it is one: a message on
/// an `/event/…` channel, or a payload without `ChangeEventHeader` that has the fields every
/// platform event has (`CreatedDate`, `CreatedById`).
fn platform_event(message: &Obj<'_>, payload: &Obj<'_>) -> Result<Option<String>, AdapterError> {
    if let Some(channel) = message.opt_string("channel")?
        && let Some(name) = channel.strip_prefix("/event/")
    {
        return Ok(Some(format!("`{name}`")));
    }
    if payload.opt_child("ChangeEventHeader")?.is_some() {
        return Ok(None);
    }
    let has = |key: &str| payload.keys().any(|k| k == key);
    if !(has("CreatedDate") && has("CreatedById")) {
        return Ok(None);
    }
    let schema = match message.opt_child("data")? {
        Some(data) => data.opt_string("schema")?,
        None => message.opt_string("schema")?,
    };
    Ok(Some(match schema {
        Some(schema) => format!("the event of schema `{schema}`"),
        None => "the event".to_owned(),
    }))
}

fn change_event<'a>(message: &Obj<'a>) -> Result<Found<'a>, AdapterError> {
    if let Some(channel) = message.opt_string("channel")?
        && channel.starts_with("/meta/")
    {
        return Ok(Found::Skip(format!("CometD `{channel}` message")));
    }
    if let Some(data) = message.opt_child("data")? {
        return Ok(Found::Nested(data.child("payload")?));
    }
    if let Some(payload) = message.opt_child("payload")? {
        return Ok(Found::Nested(payload));
    }
    if message.opt_child("ChangeEventHeader")?.is_some() {
        return Ok(Found::Itself);
    }
    // A decoded platform event (Pub/Sub API) is the message itself too.
    if platform_event(message, message)?.is_some() {
        return Ok(Found::Itself);
    }
    Err(AdapterError::bad_request(format!(
        "not a change event: `{}`, `{}` and `{}` are all missing",
        message.name("data"),
        message.name("payload"),
        message.name("ChangeEventHeader"),
    )))
}

/// Adds the events of one change event to `events`, or says why it has none.
fn convert(
    payload: &Obj<'_>,
    org: Option<&str>,
    memory: &mut Memory,
    events: &mut Vec<Event>,
) -> Result<Result<(), String>, AdapterError> {
    let header = payload.child("ChangeEventHeader")?;
    let entity_name = header.string("entityName")?;
    let Some(object) = Object::from_api_name(&entity_name) else {
        return Ok(Err(format!(
            "change events for `{entity_name}` are not used by this adapter"
        )));
    };
    let change_type = header.string("changeType")?;
    if !matches!(
        change_type.as_str(),
        "CREATE" | "UPDATE" | "DELETE" | "UNDELETE"
    ) {
        // Gap events (GAP_CREATE, GAP_OVERFLOW...) say that changes happened without their
        // values: only reading the records again (the poll path) can catch up.
        let reason = format!("{entity_name} {change_type} event carries no field values");
        crm_adapter_sdk::warn!("{reason}; poll the records to catch up");
        return Ok(Err(reason));
    }
    let record_ids = header.ids("recordIds")?;
    let transaction_key = header.string("transactionKey")?;
    let sequence_number = header.count("sequenceNumber")?;
    let occurred_at = header
        .opt_count("commitTimestamp")?
        .map(|ms| from_millis(ms).to_rfc3339());
    let mut changed: Vec<String> = Vec::new();
    let nulled = header.opt_strings("nulledFields")?;
    for list in ["changedFields", "nulledFields", "diffFields"] {
        for name in header.opt_strings(list)? {
            if name.starts_with("0x") {
                return Err(AdapterError::bad_request(format!(
                    "`{}` holds an undecoded field bitmap (`{name}`); the relay must decode \
                     changedFields, nulledFields and diffFields into field names",
                    header.name(list)
                )));
            }
            if !changed.contains(&name) {
                changed.push(name);
            }
        }
    }

    for id in record_ids {
        let base_key = format!("{transaction_key}/{sequence_number}/{id}");
        let mut emit = |action: &str, body: Map<String, Value>, key: String| {
            let event = crate::event(object, action, &id, body, occurred_at.as_deref(), org, key)?;
            events.push(event);
            Ok::<(), AdapterError>(())
        };
        match change_type.as_str() {
            "CREATE" | "UNDELETE" => {
                let mut body = records::payload(object, &id, payload, Shape::ChangeEvent, &[])?;
                let closed = match object {
                    Object::Opportunity if change_type == "CREATE" => {
                        records::stage_of(&body).filter(|stage| *stage != Stage::Open)
                    }
                    _ => None,
                };
                if change_type == "UNDELETE" {
                    body.insert("undeleted".into(), Value::Bool(true));
                }
                emit("created", body.clone(), base_key.clone())?;
                // An opportunity created already closed is also won or lost.
                if let Some(stage) = closed {
                    let action = stage_action(stage);
                    emit(action, body, format!("{base_key}/{action}"))?;
                }
            }
            "UPDATE" => {
                let mut body = records::payload(object, &id, payload, Shape::ChangeEvent, &nulled)?;
                let action = match object {
                    Object::Opportunity => {
                        let is_changed = |api: &str| {
                            if changed.is_empty() {
                                object.field(api).is_some_and(|f| body.contains_key(f.key))
                            } else {
                                changed.iter().any(|name| name == api)
                            }
                        };
                        match records::stage_change(&body, is_changed) {
                            Some(stage @ (Stage::Won | Stage::Lost)) => stage_action(stage),
                            _ => "updated",
                        }
                    }
                    _ => "updated",
                };
                if !changed.is_empty() {
                    body.insert(
                        "changed_fields".into(),
                        Value::Array(changed.iter().cloned().map(Value::String).collect()),
                    );
                }
                emit(action, body, base_key)?;
            }
            _ => {
                memory.forget(object, &id);
                emit("deleted", records::deleted_payload(object, &id), base_key)?;
            }
        }
    }
    Ok(Ok(()))
}

fn stage_action(stage: Stage) -> &'static str {
    match stage {
        Stage::Won => "won",
        Stage::Lost => "lost",
        Stage::Open => "updated",
    }
}

fn from_millis(ms: u64) -> Timestamp {
    Timestamp {
        seconds: ms / 1000,
        // Below 1,000,000,000: (ms % 1000) < 1000.
        nanoseconds: u32::try_from(ms % 1000).unwrap_or(0) * 1_000_000,
    }
}
