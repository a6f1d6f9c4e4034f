//! Change detection for polled records: a list API page carries records' current values
//! without saying what changed, so the connection state remembers a fingerprint of each
//! record's last payload. A record never seen is new, one whose payload differs is changed,
//! one with the same payload (even with a new `Modified_Time`) is unchanged.
//!
//! The SDK's [`ChangeTracker`] keeps them in 32 buckets per module, one state key each, so that
//! a connection tracks tens of thousands of records within the host's key limit: key
//! `zoho/<Module>/<bucket 00-31>`, value a JSON object from record id to fingerprint
//! (`{"5725767000001148082": "0e8845339623b865"}`). At about 45 bytes a record, the host's
//! default limit of 1 MiB holds some 20,000 records.

use crm_adapter_sdk::changes::ChangeTracker;

use crate::records::Module;

/// What the connection has seen of the records of `module`.
pub fn seen(module: Module) -> ChangeTracker {
    ChangeTracker::new(format!("zoho/{}/", module.api_name()))
}
