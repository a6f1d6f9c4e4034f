//! SOQL query pages, the polling path: the JSON of `GET /services/data/vXX.X/query?q=...`
//! (and of each `nextRecordsUrl` after it):
//!
//! ```json
//! {"totalSize": 3, "done": false, "nextRecordsUrl": "/services/data/v62.0/query/01g...-2000",
//!  "records": [{"attributes": {"type": "Account", "url": "..."}, "Id": "001...", ...}]}
//! ```
//!
//! Records go through the change detection of [`crate::snapshot`]; a record with
//! `IsDeleted: true` (a `queryAll` result) becomes `*.deleted`, once.
//!
//! **Cursor.** While a query has more pages, the next cursor is its `nextRecordsUrl`; the
//! page that ends it (`done: true`) returns the newest `SystemModstamp` (else
//! `LastModifiedDate`) seen over all its pages, as a SOQL date-time literal truncated to the
//! second (`2025-12-01T10:05:00Z`), for the next query's `WHERE SystemModstamp > ...`. The
//! running maximum is kept in the state (`poll/high_water`) between pages. So: a cursor
//! starting with `/` is a URL to fetch, any other a date-time to query from, and no cursor
//! means "query everything".

use crm_adapter_sdk::fields::Obj;
use crm_adapter_sdk::serde_json::Value;
use crm_adapter_sdk::{
    AdapterError, Context, PollOutput, PollPage, Timestamp, fields::parse_timestamp, state,
};

use crate::records::{self, Object, Shape};
use crate::snapshot::Memory;

/// The state key of the newest modification time seen by the query being paged through.
pub const HIGH_WATER_KEY: &str = "poll/high_water";

/// The events and next cursor of one query page.
pub fn poll(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
    if let Some(content_type) = &page.content_type
        && !content_type.to_ascii_lowercase().contains("json")
    {
        return Err(AdapterError::bad_request(format!(
            "content type `{content_type}` is not JSON; query results are JSON"
        )));
    }
    let body: Value = page.json()?;
    let root = Obj::root(&body, "the query result")?;
    let records = root.objects("records")?;
    let next_url = root.opt_string("nextRecordsUrl")?;
    let more = match root.opt_bool("done")? {
        Some(done) => !done,
        None => next_url.is_some(),
    };
    let org = crate::org_for(ctx)?;
    // The cursor never moves back: it starts from the one this page was fetched with (when it
    // is a date-time) and from what earlier pages of the same query saw.
    let mut high_water = [
        page.cursor.as_deref().and_then(parse_timestamp),
        state::get_string(HIGH_WATER_KEY)?
            .as_deref()
            .and_then(parse_timestamp),
    ]
    .into_iter()
    .flatten()
    .max();
    let mut events = Vec::new();
    let mut unchanged = 0usize;
    let mut memory = Memory::default();
    for record in &records {
        let type_name = record.child("attributes")?.string("type")?;
        let Some(object) = Object::from_api_name(&type_name) else {
            // Another object in the query must not block the connection's polling.
            crm_adapter_sdk::warn!(
                "{}: `{type_name}` records are not used by this adapter; skipped",
                record.name("attributes.type")
            );
            continue;
        };
        let id = record.id("Id")?;
        let modified = match record.opt_timestamp("SystemModstamp")? {
            Some(at) => at,
            None => record.opt_timestamp("LastModifiedDate")?.ok_or_else(|| {
                AdapterError::bad_request(format!(
                    "`{}` and `LastModifiedDate` are missing: select one of them, so that \
                     polling can resume where it stopped",
                    record.name("SystemModstamp")
                ))
            })?,
        };
        let modified = Timestamp {
            seconds: modified.seconds,
            nanoseconds: 0,
        };
        high_water = Some(high_water.map_or(modified, |hw| hw.max(modified)));
        let occurred_at = crate::modified_at(record)?;

        if record.opt_bool("IsDeleted")? == Some(true) {
            if memory.observe_deleted(object, &id) {
                events.push(crate::event(
                    object,
                    "deleted",
                    &id,
                    records::deleted_payload(object, &id),
                    occurred_at.as_deref(),
                    org.as_deref(),
                    format!("{}/{id}/deleted", object.api_name()),
                )?);
            } else {
                unchanged += 1;
            }
            continue;
        }
        let payload = records::payload(object, &id, record, Shape::Flat, &[])?;
        let (actions, fp) = memory.observe(object, &id, &payload);
        if actions.is_empty() {
            unchanged += 1;
        }
        for action in actions {
            events.push(crate::event(
                object,
                action.name(),
                &id,
                payload.clone(),
                occurred_at.as_deref(),
                org.as_deref(),
                format!("{}/{id}/{fp}/{}", object.api_name(), action.name()),
            )?);
        }
    }
    crm_adapter_sdk::debug!(
        "{} records: {} events, {unchanged} unchanged",
        records.len(),
        events.len()
    );

    memory.save()?;
    let mut output = PollOutput::new(events);
    if more {
        let url = next_url.ok_or_else(|| {
            AdapterError::bad_request("`done` is false but `nextRecordsUrl` is missing")
        })?;
        if let Some(hw) = high_water {
            state::set(HIGH_WATER_KEY, hw.to_rfc3339())?;
        }
        output.next_cursor = Some(url);
    } else {
        state::delete(HIGH_WATER_KEY);
        // No record at all: keep the previous cursor.
        output.next_cursor = high_water.map(|hw| hw.to_rfc3339());
    }
    Ok(output)
}
