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
//! The SDK's [`ChangeTracker`] groups records in 32 buckets per object, one state key each, so
//! that a connection tracks tens of thousands of records within the host's key limit: key
//! `sf/<Object>/<bucket 00-31>`, value a JSON object from record id to `<fingerprint>`
//! (`ecd39353db1fd0ec`), `<fingerprint>:<stage>` (`ecd39353db1fd0ec:won`) or `deleted`. At about 45 bytes a record, the host's default
//! limit of 1 MiB holds some 20,000 records.

use std::collections::BTreeMap;

use crm_adapter_sdk::AdapterError;
use crm_adapter_sdk::changes::{ChangeTracker, fingerprint};
use crm_adapter_sdk::serde_json::{Map, Value};

use crate::records::{self, Object, Stage};

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

/// The records an invocation reads and changes, per object. The SDK's [`ChangeTracker`] reads
/// a bucket on first use and [`Memory::save`] writes back the changed ones; the host keeps the
/// writes only if the invocation succeeds.
#[derive(Default)]
pub struct Memory {
    objects: BTreeMap<&'static str, ChangeTracker>,
}

/// The change tracker of an object's records, under `sf/<Object>/<00-31>`.
fn tracker(object: Object) -> ChangeTracker {
    ChangeTracker::new(format!("sf/{}/", object.api_name()))
}

/// The state key of the bucket holding a record.
pub fn bucket_key(object: Object, id: &str) -> String {
    tracker(object).bucket_key(id)
}

impl Memory {
    fn records(&mut self, object: Object) -> &mut ChangeTracker {
        self.objects
            .entry(object.api_name())
            .or_insert_with(|| tracker(object))
    }

    fn get(&mut self, object: Object, id: &str) -> Option<Seen> {
        self.records(object).get(id).and_then(Seen::parse)
    }

    fn set(&mut self, object: Object, id: &str, seen: &Seen) {
        self.records(object).remember(id, &seen.text());
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
        let fp = fingerprint(&Value::Object(payload.clone()));
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
        if self.records(object).get(id).is_some() {
            self.set(object, id, &Seen::Deleted);
        }
    }

    /// Writes the buckets this invocation changed.
    pub fn save(self) -> Result<(), AdapterError> {
        for records in self.objects.into_values() {
            records.save()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_adapter_sdk::state;

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
