//! Change detection for polled records: "has this record changed since the connection last saw
//! it?"
//!
//! A list API returns records' current values without saying what changed, and a CRM may resend
//! a notification until it is acknowledged. A [`ChangeTracker`] remembers a short *mark* per
//! record id in the connection's [`state`](crate::state), usually the record's
//! [`fingerprint`] (a hash of the payload the adapter would emit), optionally followed by a few
//! letters of its own (`"…:won"`, `"deleted"`). [`ChangeTracker::observe`] compares a record's
//! new mark with the remembered one and remembers the new one:
//!
//! ```
//! use crm_adapter_sdk::changes::{Change, ChangeTracker, fingerprint};
//! use serde_json::json;
//!
//! let payload = json!({"contact_id": "C-1", "email": "ada@example.com"});
//! let mut seen = ChangeTracker::new("seen/contacts/");
//! assert_eq!(seen.observe("C-1", &fingerprint(&payload)), Change::New);
//! assert_eq!(seen.observe("C-1", &fingerprint(&payload)), Change::Unchanged);
//! seen.save()?; // once, at the end of the invocation
//!
//! // The next invocation sees what this one saved.
//! let mut seen = ChangeTracker::new("seen/contacts/");
//! let edited = json!({"contact_id": "C-1", "email": "ada@example.org"});
//! assert!(matches!(seen.observe("C-1", &fingerprint(&edited)), Change::Changed { .. }));
//! assert!(seen.forget("C-1")); // deleted: a restored record is new again
//! seen.save()?;
//! # Ok::<(), crm_adapter_sdk::StateError>(())
//! ```
//!
//! # State layout
//!
//! Marks are grouped in [`BUCKETS`] buckets per tracker, not one state key per record: the host
//! allows 1,024 keys per connection, far fewer than a CRM has records, while 1 MiB of state
//! holds some 20,000 marks of 16 hex digits (about 45 bytes each with a short id). A record
//! `id` lives in the bucket `fnv1a(id) % 32`, under the key `<prefix><bucket>` (`seen/contacts/07`),
//! whose value is a JSON object from id to mark (`{"C-1": "0e8845339623b865"}`). Choose one
//! prefix per record type, and keep it: a changed prefix starts the tracking over.
//!
//! Buckets are read on first use and written back once, by [`ChangeTracker::save`]; the host
//! keeps the writes only if the invocation succeeds. A bucket that does not decode (written by
//! something else) is started over with a warning rather than failing every invocation: its
//! records are reported once more as new.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use serde_json::Value;

use crate::{StateError, state};

/// Buckets per tracker. 32 keys per record type leaves most of the host's 1,024 keys free, and
/// keeps a bucket near 30 KiB when the whole state is full (a value may be 64 KiB).
pub const BUCKETS: u64 = 32;

/// The length of a [`fingerprint`]: a mark that appends flags to it keeps them from here on.
pub const FINGERPRINT_LEN: usize = 16;

/// The fingerprint of a payload: 16 hex digits of the 64-bit FNV-1a hash of its JSON text.
///
/// `serde_json` keeps object keys sorted, so equal payloads have equal fingerprints. Leave out
/// what changes on every save without news (`occurred_at`, a `modified_at`), so that a record
/// touched without changes stays unchanged. FNV-1a is deterministic across builds and targets
/// and plenty to notice that a record changed; it is no defence against forged collisions,
/// which change detection does not need.
///
/// ```
/// use crm_adapter_sdk::changes::fingerprint;
/// use serde_json::json;
///
/// let a = fingerprint(&json!({"id": "1", "name": "Ada"}));
/// assert_eq!(a.len(), crm_adapter_sdk::changes::FINGERPRINT_LEN);
/// assert_eq!(a, fingerprint(&json!({"name": "Ada", "id": "1"})));
/// assert_ne!(a, fingerprint(&json!({"id": "1", "name": "Grace"})));
/// ```
pub fn fingerprint(payload: &Value) -> String {
    format!("{:016x}", fnv1a(payload.to_string().as_bytes()))
}

/// What the state knew about a record, as [`ChangeTracker::observe`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Never seen (or forgotten since).
    New,
    /// Seen with another mark: `previous` is that mark, for adapters that keep flags in it.
    Changed {
        /// The mark remembered before this one.
        previous: String,
    },
    /// Seen with this very mark.
    Unchanged,
}

/// The marks of one record type, as far as this invocation has loaded them.
///
/// Create one per record type and invocation, call [`observe`](Self::observe) (or
/// [`get`](Self::get) and [`remember`](Self::remember)) per record, and [`save`](Self::save) at
/// the end. See the [module documentation](self) for the state layout.
#[derive(Debug)]
pub struct ChangeTracker {
    prefix: String,
    buckets: BTreeMap<u64, Bucket>,
}

#[derive(Debug, Default)]
struct Bucket {
    marks: BTreeMap<String, String>,
    dirty: bool,
}

impl ChangeTracker {
    /// The tracker whose buckets are the state keys `<prefix>00` to `<prefix>31` (end the prefix
    /// with a separator: `seen/deals/`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            buckets: BTreeMap::new(),
        }
    }

    /// The state key of the bucket holding `id`'s mark.
    ///
    /// ```
    /// use crm_adapter_sdk::changes::ChangeTracker;
    ///
    /// let key = ChangeTracker::new("seen/deals/").bucket_key("D-1");
    /// assert!(key.starts_with("seen/deals/") && key.len() == "seen/deals/".len() + 2);
    /// ```
    pub fn bucket_key(&self, id: &str) -> String {
        format!("{}{:02}", self.prefix, bucket_of(id))
    }

    /// Compares `id`'s mark with the one remembered, and remembers `mark`.
    ///
    /// ```
    /// use crm_adapter_sdk::changes::{Change, ChangeTracker};
    ///
    /// let mut seen = ChangeTracker::new("seen/deals/");
    /// assert_eq!(seen.observe("D-1", "0123456789abcdef"), Change::New);
    /// // Flags after the fingerprint come back in `previous`.
    /// assert_eq!(
    ///     seen.observe("D-1", "fedcba9876543210w"),
    ///     Change::Changed { previous: "0123456789abcdef".into() }
    /// );
    /// assert_eq!(seen.observe("D-1", "fedcba9876543210w"), Change::Unchanged);
    /// ```
    pub fn observe(&mut self, id: &str, mark: &str) -> Change {
        let change = match self.get(id) {
            None => Change::New,
            Some(previous) if previous == mark => return Change::Unchanged,
            Some(previous) => Change::Changed {
                previous: previous.to_owned(),
            },
        };
        self.remember(id, mark);
        change
    }

    /// The mark remembered for `id`, if any.
    pub fn get(&mut self, id: &str) -> Option<&str> {
        self.bucket(id).marks.get(id).map(String::as_str)
    }

    /// Remembers `mark` for `id` (nothing is written if it is the mark already remembered).
    ///
    /// ```
    /// use crm_adapter_sdk::changes::ChangeTracker;
    ///
    /// let mut seen = ChangeTracker::new("sf/Account/");
    /// seen.remember("001A", "deleted");
    /// assert_eq!(seen.get("001A"), Some("deleted"));
    /// ```
    pub fn remember(&mut self, id: &str, mark: &str) {
        let bucket = self.bucket(id);
        if bucket.marks.get(id).map(String::as_str) != Some(mark) {
            bucket.marks.insert(id.to_owned(), mark.to_owned());
            bucket.dirty = true;
        }
    }

    /// Forgets `id` (a deleted record): it is [`Change::New`] if it comes back. Returns whether
    /// it was remembered.
    pub fn forget(&mut self, id: &str) -> bool {
        let bucket = self.bucket(id);
        let known = bucket.marks.remove(id).is_some();
        bucket.dirty |= known;
        known
    }

    /// Writes the buckets this invocation changed (deleting those left empty).
    ///
    /// # Errors
    ///
    /// When the state is full ([`StateError::TooLarge`], [`StateError::TooManyKeys`]); with `?`
    /// it fails the invocation, which the host then rolls back whole.
    pub fn save(self) -> Result<(), StateError> {
        for (index, bucket) in self.buckets {
            let key = format!("{}{index:02}", self.prefix);
            match (bucket.dirty, bucket.marks.is_empty()) {
                (false, _) => {}
                (true, true) => state::delete(&key),
                (true, false) => state::set_json(&key, &bucket.marks)?,
            }
        }
        Ok(())
    }

    fn bucket(&mut self, id: &str) -> &mut Bucket {
        let index = bucket_of(id);
        match self.buckets.entry(index) {
            Entry::Occupied(bucket) => bucket.into_mut(),
            Entry::Vacant(slot) => {
                let key = format!("{}{index:02}", self.prefix);
                let marks = match state::get_json::<BTreeMap<String, String>>(&key) {
                    Ok(marks) => marks.unwrap_or_default(),
                    Err(e) => {
                        crate::warn!("state `{key}` is unreadable ({e}); starting it over");
                        BTreeMap::new()
                    }
                };
                slot.insert(Bucket {
                    marks,
                    dirty: false,
                })
            }
        }
    }
}

fn bucket_of(id: &str) -> u64 {
    fnv1a(id.as_bytes()) % BUCKETS
}

/// 64-bit FNV-1a: small, and deterministic across builds and targets.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use serde_json::json;

    #[test]
    fn marks_persist_in_buckets_across_invocations() {
        let mut seen = ChangeTracker::new("seen/deals/");
        for i in 0..200 {
            assert_eq!(seen.observe(&format!("D-{i}"), "a"), Change::New);
        }
        seen.save().unwrap();
        let keys = state::keys("seen/deals/");
        assert!(keys.len() > 24 && keys.len() <= 32, "{keys:?}");

        let mut seen = ChangeTracker::new("seen/deals/");
        assert_eq!(seen.observe("D-7", "a"), Change::Unchanged);
        assert_eq!(
            seen.observe("D-8", "b"),
            Change::Changed {
                previous: "a".into()
            }
        );
        // Another prefix is another tracker.
        assert_eq!(ChangeTracker::new("seen/contacts/").get("D-7"), None);
        seen.save().unwrap();
        let bucket: BTreeMap<String, String> = state::get_json(&seen_key("D-8")).unwrap().unwrap();
        assert_eq!(bucket["D-8"], "b");
    }

    #[test]
    fn the_layout_is_stable() {
        // Adapters' stored state depends on it (FNV-1a, checked with an independent
        // implementation): a change here re-reports every record.
        assert_eq!(fingerprint(&json!({"a": 1})), "9c3e82dd6fcae8b1");
        let mut seen = ChangeTracker::new("sf/Opportunity/");
        seen.remember("0065g00000Qb2RuAAJ", "ecd39353db1fd0ec:won");
        seen.save().unwrap();
        assert_eq!(state::keys(""), ["sf/Opportunity/09"]);
        assert_eq!(
            state::get_string("sf/Opportunity/09").unwrap().unwrap(),
            r#"{"0065g00000Qb2RuAAJ":"ecd39353db1fd0ec:won"}"#
        );
    }

    #[test]
    fn unchanged_marks_write_nothing_and_emptied_buckets_are_deleted() {
        let mut seen = ChangeTracker::new("z/");
        seen.observe("1", "a");
        seen.save().unwrap();
        let key = seen_key_in("z/", "1");

        state::set(&key, r#"{"1":"a"}"#).unwrap(); // same text, written by hand
        let mut seen = ChangeTracker::new("z/");
        assert_eq!(seen.observe("1", "a"), Change::Unchanged);
        seen.remember("1", "a");
        assert!(!seen.forget("2"));
        state::delete(&key); // a write would bring it back
        seen.save().unwrap();
        assert_eq!(state::get(&key), None);

        state::set(&key, r#"{"1":"a"}"#).unwrap();
        let mut seen = ChangeTracker::new("z/");
        assert!(seen.forget("1"));
        seen.save().unwrap();
        assert_eq!(state::get(&key), None);
        assert_eq!(ChangeTracker::new("z/").observe("1", "a"), Change::New);
    }

    #[test]
    fn an_unreadable_bucket_starts_over_with_a_warning() {
        let key = seen_key("D-1");
        state::set(&key, "not json").unwrap();
        let mut seen = ChangeTracker::new("seen/deals/");
        assert_eq!(seen.observe("D-1", "a"), Change::New);
        seen.save().unwrap();
        assert_eq!(state::get_string(&key).unwrap().unwrap(), r#"{"D-1":"a"}"#);
        assert!(
            testing::logs()
                .iter()
                .any(|log| log.message.contains("unreadable"))
        );
    }

    #[test]
    fn a_full_state_fails_the_save() {
        testing::set_state_limits(testing::StateLimits {
            max_total_bytes: 64,
            ..testing::StateLimits::default()
        });
        let mut seen = ChangeTracker::new("seen/deals/");
        seen.observe("D-1", &"f".repeat(100));
        assert!(matches!(seen.save(), Err(StateError::TooLarge(_))));
    }

    fn seen_key(id: &str) -> String {
        seen_key_in("seen/deals/", id)
    }

    fn seen_key_in(prefix: &str, id: &str) -> String {
        ChangeTracker::new(prefix).bucket_key(id)
    }
}
