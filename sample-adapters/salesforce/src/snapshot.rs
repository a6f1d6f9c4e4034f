//! Change detection for whole records: outbound messages and SOQL pages carry a record's
//! current values without saying what changed, and Salesforce resends an outbound message
//! until it is acknowledged. The connection state remembers, per record, a fingerprint of the
//! payload last emitted and, for opportunities, whether it was open, won or lost:
//!
//! - a record never seen (or seen deleted) is `created`, and an opportunity already closed is
//!   also `won` or `lost`;
//! - an opportunity whose stage became won or lost is `won` or `lost`;
//! - any other record whose payload changed is `updated`;
//! - an unchanged record emits nothing.
//!
//! State key: `sf/<Object>/<Id>`; value: `{"fp": "<16 hex digits>", "stage": "won"}` or
//! `{"deleted": true}`.

use crm_adapter_sdk::serde_json::{Map, Value};
use crm_adapter_sdk::{AdapterError, state};
use serde::{Deserialize, Serialize};

use crate::records::{self, Object, Stage};

/// What the state remembers about one record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    /// Fingerprint of the last payload emitted (empty when it was deleted).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    fp: String,
    /// An opportunity's last known stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stage: Option<Stage>,
    /// The record was deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

/// An event action for a record, with the fingerprint of the payload it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Won,
    Lost,
    Deleted,
}

impl Action {
    /// The action part of the event type.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Won => "won",
            Action::Lost => "lost",
            Action::Deleted => "deleted",
        }
    }
}

/// The state key of a record (its id hashed when long, to stay within the key limit).
pub fn key(object: Object, id: &str) -> String {
    let key = format!("sf/{}/{id}", object.api_name());
    if key.len() > 128 {
        format!("sf/{}/#{:016x}", object.api_name(), fnv1a(id.as_bytes()))
    } else {
        key
    }
}

fn load(key: &str) -> Option<Seen> {
    match state::get_json::<Seen>(key) {
        Ok(seen) => seen,
        // Written by something else: start over for this record rather than fail forever.
        Err(e) => {
            crm_adapter_sdk::warn!("state `{key}` is unreadable ({e}); treating the record as new");
            None
        }
    }
}

fn store(key: &str, previous: Option<&Seen>, seen: &Seen) -> Result<(), AdapterError> {
    if previous != Some(seen) {
        state::set_json(key, seen)?;
    }
    Ok(())
}

/// Compares a whole record's payload (without volatile fields such as `occurred_at`) with
/// what the state remembers, records it, and returns the actions to emit (none when unchanged)
/// with the payload's fingerprint.
pub fn observe(
    object: Object,
    id: &str,
    payload: &Map<String, Value>,
) -> Result<(Vec<Action>, String), AdapterError> {
    let key = key(object, id);
    let previous = load(&key);
    let fp = fingerprint(payload);
    let stage = match object {
        Object::Opportunity => records::stage_of(payload),
        _ => None,
    };
    let mut actions = Vec::new();
    match &previous {
        None | Some(Seen { deleted: true, .. }) => {
            actions.push(Action::Created);
            match stage {
                Some(Stage::Won) => actions.push(Action::Won),
                Some(Stage::Lost) => actions.push(Action::Lost),
                _ => {}
            }
        }
        Some(seen) => match stage {
            Some(Stage::Won) if seen.stage != Some(Stage::Won) => actions.push(Action::Won),
            Some(Stage::Lost) if seen.stage != Some(Stage::Lost) => actions.push(Action::Lost),
            _ if seen.fp != fp => actions.push(Action::Updated),
            _ => {}
        },
    }
    let known_stage = stage.or(previous
        .as_ref()
        .filter(|seen| !seen.deleted)
        .and_then(|seen| seen.stage));
    let seen = Seen {
        fp: fp.clone(),
        stage: known_stage,
        deleted: false,
    };
    store(&key, previous.as_ref(), &seen)?;
    Ok((actions, fp))
}

/// A record reported deleted: `true` (emit `deleted`) unless the state already knows it is.
pub fn observe_deleted(object: Object, id: &str) -> Result<bool, AdapterError> {
    let key = key(object, id);
    let previous = load(&key);
    if previous.as_ref().is_some_and(|seen| seen.deleted) {
        return Ok(false);
    }
    let seen = Seen {
        deleted: true,
        ..Seen::default()
    };
    store(&key, previous.as_ref(), &seen)?;
    Ok(true)
}

/// A change event deleted a record: a record the state knows is marked deleted (so that a
/// later poll does not report it again); nothing is added for one it does not know.
pub fn forget(object: Object, id: &str) -> Result<(), AdapterError> {
    let key = key(object, id);
    if let Some(previous) = load(&key) {
        let seen = Seen {
            deleted: true,
            ..Seen::default()
        };
        store(&key, Some(&previous), &seen)?;
    }
    Ok(())
}

/// 16 hex digits identifying a payload (keys are sorted, so equal payloads print equally).
fn fingerprint(payload: &Map<String, Value>) -> String {
    let text = Value::Object(payload.clone()).to_string();
    format!("{:016x}", fnv1a(text.as_bytes()))
}

/// 64-bit FNV-1a: small, deterministic, enough to notice that a record changed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
