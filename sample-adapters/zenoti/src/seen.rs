//! Change detection: what the connection saw of each record last time.
//!
//! For every record the adapter keeps a fingerprint of the payload it would emit (a 64-bit
//! FNV-1a hash, in hex) followed by flag letters (`c`: the appointment was completed). A record
//! whose fingerprint is unchanged emits nothing when polled. Webhooks record what they carried
//! too, so that the next poll does not report it again.
//!
//! Fingerprints are grouped in buckets (one state key holds a JSON object of `id ->
//! fingerprint+flags` for the ids that hash to it), not one key per record: the host allows 1,024
//! keys per connection, far fewer than a busy center books appointments, while 1 MiB of state
//! holds about 18,000 entries (Zenoti ids are 36-character GUIDs). Buckets are read on first use
//! and written back once, by [`Seen::save`].

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use crm_adapter_sdk::serde_json::Value;
use crm_adapter_sdk::{AdapterError, state};

/// Buckets per object type. 32 keys per type leaves room in the host's key limit, and keeps
/// each bucket around 30 KiB when the whole state is full (a value may be 64 KiB).
const BUCKETS: u64 = 32;

/// What the state knew about a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Never seen.
    New,
    /// Seen with another fingerprint; `flags` are the flags it had then.
    Changed { flags: String },
    /// Seen with this fingerprint.
    Unchanged,
}

/// The fingerprints of one object type, as far as this invocation has loaded them.
pub struct Seen {
    prefix: String,
    buckets: BTreeMap<u64, Bucket>,
}

struct Bucket {
    entries: BTreeMap<String, String>,
    dirty: bool,
}

impl Seen {
    /// The fingerprints of the records of `kind` (e.g. `appointments`), under
    /// `seen/<kind>/<bucket>`.
    pub fn new(kind: &str) -> Self {
        Self {
            prefix: format!("seen/{kind}/"),
            buckets: BTreeMap::new(),
        }
    }

    /// Compares the record `id`'s fingerprint and flags with what the state holds, and records
    /// the new ones.
    pub fn observe(
        &mut self,
        id: &str,
        fingerprint: &str,
        flags: &str,
    ) -> Result<Change, AdapterError> {
        let entry = format!("{fingerprint}{flags}");
        let bucket = self.bucket(fnv1a(id.as_bytes()) % BUCKETS)?;
        let change = match bucket.entries.get(id) {
            Some(previous) if *previous == entry => return Ok(Change::Unchanged),
            Some(previous) => Change::Changed {
                flags: previous.get(fingerprint.len()..).unwrap_or("").to_owned(),
            },
            None => Change::New,
        };
        bucket.entries.insert(id.to_owned(), entry);
        bucket.dirty = true;
        Ok(change)
    }

    /// Writes the buckets this invocation changed. The host keeps the writes only if the
    /// invocation succeeds.
    pub fn save(self) -> Result<(), AdapterError> {
        for (index, bucket) in self.buckets {
            if bucket.dirty {
                state::set_json(&format!("{}{index:02}", self.prefix), &bucket.entries)?;
            }
        }
        Ok(())
    }

    fn bucket(&mut self, index: u64) -> Result<&mut Bucket, AdapterError> {
        Ok(match self.buckets.entry(index) {
            Entry::Occupied(bucket) => bucket.into_mut(),
            Entry::Vacant(slot) => {
                let entries = state::get_json(&format!("{}{index:02}", self.prefix))?;
                slot.insert(Bucket {
                    entries: entries.unwrap_or_default(),
                    dirty: false,
                })
            }
        })
    }
}

/// The fingerprint of a payload: 16 hex digits.
pub fn fingerprint(payload: &Value) -> String {
    format!("{:016x}", fnv1a(payload.to_string().as_bytes()))
}

/// 64-bit FNV-1a: small, deterministic across builds and targets, and plenty to notice that a
/// record changed (it is no defence against a CRM forging collisions, which nothing here needs).
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}
