//! Change detection for polled records: a list API page carries records' current values
//! without saying what changed, so the connection state remembers a fingerprint of each
//! record's last payload. A record never seen is new, one whose payload differs is changed,
//! one with the same payload (even with a new `Modified_Time`) is unchanged.
//!
//! Records are grouped in buckets, one state key each, so that a connection tracks tens of
//! thousands of records within the host's key limit: key `zoho/<Module>/<bucket 00-31>`,
//! value a JSON object from record id to fingerprint (`{"5725767000001148082":
//! "0e8845339623b865"}`). At about 45 bytes a record, the host's default limit of 1 MiB holds
//! some 20,000 records.

use std::collections::BTreeMap;

use crm_adapter_sdk::serde_json::{Map, Value};
use crm_adapter_sdk::{AdapterError, state};

use crate::records::Module;

/// Buckets per module: 96 keys for the three modules leaves most of the host's 1,024 keys
/// free, and keeps a bucket near 11 KiB when the state is full (a value may be 64 KiB).
const BUCKETS: u64 = 32;

/// What the state knew about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    New,
    Changed,
    Unchanged,
}

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
pub fn bucket_key(module: Module, id: &str) -> String {
    format!(
        "zoho/{}/{:02}",
        module.api_name(),
        fnv1a(id.as_bytes()) % BUCKETS
    )
}

impl Memory {
    fn bucket(&mut self, module: Module, id: &str) -> &mut Bucket {
        let key = bucket_key(module, id);
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

    /// Compares a record's payload (without volatile fields such as `occurred_at`) with the
    /// fingerprint the state holds for it, remembers the new one, and returns what changed and
    /// the fingerprint.
    pub fn observe(
        &mut self,
        module: Module,
        id: &str,
        payload: &Map<String, Value>,
    ) -> (Change, String) {
        let fp = fingerprint(payload);
        let bucket = self.bucket(module, id);
        let change = match bucket.entries.get(id) {
            None => Change::New,
            Some(previous) if *previous == fp => Change::Unchanged,
            Some(_) => Change::Changed,
        };
        if change != Change::Unchanged {
            bucket.entries.insert(id.to_owned(), fp.clone());
            bucket.dirty = true;
        }
        (change, fp)
    }

    /// Forgets a deleted record (a restored one is then new again).
    pub fn forget(&mut self, module: Module, id: &str) {
        let bucket = self.bucket(module, id);
        if bucket.entries.remove(id).is_some() {
            bucket.dirty = true;
        }
    }

    /// Writes the buckets this invocation changed (an emptied bucket is deleted).
    pub fn save(self) -> Result<(), AdapterError> {
        for (key, bucket) in self.buckets {
            match (bucket.dirty, bucket.entries.is_empty()) {
                (false, _) => {}
                (true, true) => state::delete(&key),
                (true, false) => state::set_json(&key, &bucket.entries)?,
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
