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
//! Records are grouped in buckets, one state key each, so that a connection tracks tens of
//! thousands of records within the host's key limit: key `sf/<Object>/<bucket 00-31>`, value
//! a JSON object from record id to `<fingerprint>` (`ecd39353db1fd0ec`), `<fingerprint>:<stage>`
//! (`ecd39353db1fd0ec:won`) or `deleted`. At about 45 bytes a record, the host's default
//! limit of 1 MiB holds some 20,000 records.

use std::collections::BTreeMap;

use crm_adapter_sdk::serde_json::{Map, Value};
use crm_adapter_sdk::{AdapterError, state};

use crate::records::{self, Object, Stage};

/// Buckets per object: 96 keys for the three objects leaves most of the host's 1,024 keys
/// free, and keeps a bucket near 11 KiB when the state is full (a value may be 64 KiB).
const BUCKETS: u64 = 32;

/// An event to emit for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Won,
    Lost,
}

impl Action {
    /// The action part of the event type.
    pub fn name(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Won => "won",
            Action::Lost => "lost",
        }
    }
}

/// What the state remembers about one record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Present { fp: String, stage: Option<Stage> },
    Deleted,
}

impl Seen {
    fn parse(text: &str) -> Option<Self> {
        if text == "deleted" {
            return Some(Seen::Deleted);
        }
        let (fp, stage) = match text.split_once(':') {
            Some((fp, "open")) => (fp, Some(Stage::Open)),
            Some((fp, "won")) => (fp, Some(Stage::Won)),
            Some((fp, "lost")) => (fp, Some(Stage::Lost)),
            Some(_) => return None,
            None => (text, None),
        };
        Some(Seen::Present {
            fp: fp.to_owned(),
            stage,
        })
    }

    fn text(&self) -> String {
        match self {
            Seen::Deleted => "deleted".into(),
            Seen::Present { fp, stage: None } => fp.clone(),
            Seen::Present {
                fp,
                stage: Some(stage),
            } => {
                let stage = match stage {
                    Stage::Open => "open",
                    Stage::Won => "won",
                    Stage::Lost => "lost",
                };
                format!("{fp}:{stage}")
            }
        }
    }
}

/// One bucket: record id -> what is remembered, as stored.
#[derive(Default)]
struct Bucket {
    entries: BTreeMap<String, String>,
    dirty: bool,
}

/// The records an invocation reads and changes. Buckets are read on first use and written back
/// by [`Memory::save`]; the host keeps the writes only if the invocation succeeds.
#[derive(Default)]
pub struct Memory {
    buckets: BTreeMap<String, Bucket>,
}

/// The state key of the bucket holding a record.
pub fn bucket_key(object: Object, id: &str) -> String {
    format!(
        "sf/{}/{:02}",
        object.api_name(),
        fnv1a(id.as_bytes()) % BUCKETS
    )
}

impl Memory {
    fn bucket(&mut self, object: Object, id: &str) -> &mut Bucket {
        let key = bucket_key(object, id);
        self.buckets.entry(key).or_insert_with_key(|key| {
            match state::get_json::<BTreeMap<String, String>>(key) {
                Ok(entries) => Bucket {
                    entries: entries.unwrap_or_default(),
                    dirty: false,
                },
                // Written by something else: start this bucket over rather than fail forever.
                Err(e) => {
                    crm_adapter_sdk::warn!("state `{key}` is unreadable ({e}); starting it over");
                    Bucket::default()
                }
            }
        })
    }

    fn get(&mut self, object: Object, id: &str) -> Option<Seen> {
        self.bucket(object, id)
            .entries
            .get(id)
            .and_then(|text| Seen::parse(text))
    }

    fn set(&mut self, object: Object, id: &str, seen: &Seen) {
        let bucket = self.bucket(object, id);
        let text = seen.text();
        if bucket.entries.get(id) != Some(&text) {
            bucket.entries.insert(id.to_owned(), text);
            bucket.dirty = true;
        }
    }

    /// Compares a whole record's payload (without volatile fields such as `occurred_at`) with
    /// what the state remembers, remembers it, and returns the events to emit (none when
    /// unchanged) and the payload's fingerprint.
    pub fn observe(
        &mut self,
        object: Object,
        id: &str,
        payload: &Map<String, Value>,
    ) -> (Vec<Action>, String) {
        let previous = self.get(object, id);
        let fp = fingerprint(payload);
        let stage = match object {
            Object::Opportunity => records::stage_of(payload),
            _ => None,
        };
        let mut actions = Vec::new();
        let mut known_stage = stage;
        match &previous {
            None | Some(Seen::Deleted) => {
                actions.push(Action::Created);
                match stage {
                    Some(Stage::Won) => actions.push(Action::Won),
                    Some(Stage::Lost) => actions.push(Action::Lost),
                    _ => {}
                }
            }
            Some(Seen::Present {
                fp: previous_fp,
                stage: previous_stage,
            }) => {
                match stage {
                    Some(Stage::Won) if *previous_stage != Some(Stage::Won) => {
                        actions.push(Action::Won)
                    }
                    Some(Stage::Lost) if *previous_stage != Some(Stage::Lost) => {
                        actions.push(Action::Lost)
                    }
                    _ if *previous_fp != fp => actions.push(Action::Updated),
                    _ => {}
                }
                // A message without the stage fields keeps what was known.
                known_stage = stage.or(*previous_stage);
            }
        }
        let seen = Seen::Present {
            fp: fp.clone(),
            stage: known_stage,
        };
        self.set(object, id, &seen);
        (actions, fp)
    }

    /// A record reported deleted by a poll: `true` (emit `deleted`) unless the state already
    /// knows it is.
    pub fn observe_deleted(&mut self, object: Object, id: &str) -> bool {
        if self.get(object, id) == Some(Seen::Deleted) {
            return false;
        }
        self.set(object, id, &Seen::Deleted);
        true
    }

    /// A change event deleted a record: a record the state knows is marked deleted (so that a
    /// later poll does not report it again); nothing is added for one it does not know.
    pub fn forget(&mut self, object: Object, id: &str) {
        if self.bucket(object, id).entries.contains_key(id) {
            self.set(object, id, &Seen::Deleted);
        }
    }

    /// Writes the buckets this invocation changed.
    pub fn save(self) -> Result<(), AdapterError> {
        for (key, bucket) in self.buckets {
            if bucket.dirty {
                state::set_json(&key, &bucket.entries)?;
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_entries_read_back_as_written() {
        for seen in [
            Seen::Deleted,
            Seen::Present {
                fp: "ecd39353db1fd0ec".into(),
                stage: None,
            },
            Seen::Present {
                fp: "ecd39353db1fd0ec".into(),
                stage: Some(Stage::Lost),
            },
        ] {
            assert_eq!(Seen::parse(&seen.text()), Some(seen));
        }
        assert_eq!(Seen::parse("ecd39353db1fd0ec:maybe"), None);
    }

    #[test]
    fn records_spread_over_buckets_and_an_unreadable_bucket_starts_over() {
        let keys: std::collections::BTreeSet<_> = (0..200)
            .map(|i| bucket_key(Object::Account, &format!("0015g00000Nw{i:04}AAJ")))
            .collect();
        assert!(keys.len() > 24, "{}", keys.len());
        let id = "0015g00000Nw7QpAAJ";
        state::set(&bucket_key(Object::Account, id), "not json").unwrap();
        let mut memory = Memory::default();
        assert!(memory.observe_deleted(Object::Account, id));
        memory.save().unwrap();
        assert_eq!(
            state::get_string(&bucket_key(Object::Account, id))
                .unwrap()
                .unwrap(),
            r#"{"0015g00000Nw7QpAAJ":"deleted"}"#
        );
    }
}
