//! Notification callbacks: what Zoho CRM POSTs to a channel's `notify_url` when records of a
//! watched module are created, edited or deleted
//! (<https://www.zoho.com/crm/developer/docs/api/v8/notifications/overview.html>):
//!
//! ```json
//! {"server_time": 1764583200000, "query_params": {}, "module": "Deals",
//!  "resource_uri": "https://www.zohoapis.com/crm/v8/Deals", "ids": ["5725767000001148082"],
//!  "affected_fields": [{"5725767000001148082": ["Stage", "Amount"]}],
//!  "affected_values": [{"record_id": "5725767000001148082",
//!                       "values": {"Stage": "Negotiation/Review", "Amount": 48250.5}}],
//!  "operation": "update", "channel_id": "1000000068001", "token": "..."}
//! ```
//!
//! A notification names records, not their data: each id becomes one event whose payload holds
//! the ids, `changed_fields` (from `affected_fields`), and `occurred_at` (`server_time`). On a
//! connection with API access the adapter reads the records ([`api::fetch_records`]) and the
//! payload holds every mapped field of each; without, it holds the mapped `affected_values`
//! when the channel returns them (`return_affected_field_values`).
//!
//! `token` is the channel's shared secret (the host checks it with the `zoho_token` scheme and
//! blanks it out before the adapter runs); `query_params` echoes the `notify_url`'s query,
//! which may hold credentials too. Neither is ever read, copied into a payload, or logged.

use std::collections::BTreeMap;

use crm_adapter_sdk::fields::Obj;
use crm_adapter_sdk::serde_json::Value;
use crm_adapter_sdk::{AdapterError, Context, Event, Timestamp};

use crate::records::{self, Module};
use crate::{api, memory};

/// The events of a notification.
pub fn events(body: &Value, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
    let root = Obj::root(body, "the notification")?;
    let module_name = root.string("module")?;
    let Some(module) = Module::from_api_name(&module_name) else {
        return Err(AdapterError::ignored(format!(
            "notifications for module `{module_name}` are not used by this adapter"
        )));
    };
    let operation = root.string("operation")?;
    let action = match operation.as_str() {
        "insert" => "created",
        "update" => "updated",
        "delete" => "deleted",
        other => {
            return Err(AdapterError::ignored(format!(
                "`{other}` notifications are not used by this adapter"
            )));
        }
    };
    let mut ids = root.ids("ids")?;
    // The same record twice in one notification is one change.
    let mut seen = std::collections::BTreeSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    let server_time = root.opt_count("server_time")?;
    let occurred_at = server_time.map(|ms| from_millis(ms).to_rfc3339());
    let affected_fields = root.opt_objects("affected_fields")?;
    let mut affected_values = BTreeMap::new();
    for entry in root.opt_objects("affected_values")? {
        let record_id = entry.id("record_id")?;
        affected_values.insert(record_id, entry.child("values")?);
    }
    let org = crate::org_for(ctx)?;
    // A notification names records, not their data: with API access, read them.
    let fetched = match (action, &ctx.api_base_url) {
        ("deleted", _) | (_, None) => Vec::new(),
        (_, Some(_)) => api::fetch_records(module, &ids)?,
    };
    let mut full = BTreeMap::new();
    for body in &fetched {
        for record in Obj::root(body, "the records")?.objects("data")? {
            full.insert(record.id("id")?, record);
        }
    }

    let mut seen = memory::seen(module);
    let mut events = Vec::with_capacity(ids.len());
    for id in &ids {
        let mut payload = records::ids_payload(module, id);
        if action == "deleted" {
            seen.forget(id);
        } else {
            let mut changed: Vec<String> = Vec::new();
            for fields in &affected_fields {
                for name in fields.opt_strings(id)? {
                    if !changed.contains(&name) {
                        changed.push(name);
                    }
                }
            }
            if let Some(record) = full.get(id) {
                let whole = records::payload(module, id, record)?;
                // What the next poll compares with: it will not report this version again.
                seen.observe(id, &api::record_fingerprint(&whole));
                payload.extend(whole);
            } else {
                if ctx.api_base_url.is_some() {
                    crm_adapter_sdk::warn!(
                        "{} {id} was not returned by Zoho (deleted since?): emitted from the \
                         notification alone",
                        module.api_name()
                    );
                }
                if let Some(values) = affected_values.get(id) {
                    payload.extend(records::payload(module, id, values)?);
                }
            }
            if !changed.is_empty() {
                payload.insert(
                    "changed_fields".into(),
                    Value::Array(changed.into_iter().map(Value::String).collect()),
                );
            }
        }
        let mut key = format!("{}/{operation}/{id}", module.api_name());
        if let Some(ms) = server_time {
            key.push_str(&format!("/{ms}"));
        }
        events.push(crate::event(
            module,
            action,
            id,
            payload,
            occurred_at.as_deref(),
            org.as_deref(),
            key,
        )?);
    }
    seen.save()?;
    crm_adapter_sdk::debug!(
        "{} {operation} notification: {} events",
        module.api_name(),
        events.len()
    );
    Ok(events)
}

fn from_millis(ms: u64) -> Timestamp {
    Timestamp {
        seconds: ms / 1000,
        // (ms % 1000) < 1000, so the nanoseconds stay below one second.
        nanoseconds: u32::try_from(ms % 1000).unwrap_or(0) * 1_000_000,
    }
}
