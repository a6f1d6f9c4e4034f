//! SOQL query pages, the polling path: the JSON of `GET /services/data/vXX.X/query?q=...`
//! (and of each `nextRecordsUrl` after it):
//!
//! ```json
//! {"totalSize": 3, "done": false, "nextRecordsUrl": "/services/data/v62.0/query/01g...-2000",
//!  "records": [{"attributes": {"type": "Account", "url": "..."}, "Id": "001...", ...}]}
//! ```
//!
//! Records go through the change detection of [`crate::snapshot`]; a record with
//! `IsDeleted: true` (a `queryAll` result) becomes `*.deleted`, once. [`read_page`] reads a
//! page whoever fetched it: the host, for [`crate::api`]'s requests, or an external poller.
//!
//! **Cursor of pushed pages** ([`poll`]). While a query has more pages, the next cursor is its `nextRecordsUrl`; the
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

/// What one query page holds, read and turned into events.
pub struct Page {
    /// The events of its new and changed records.
    pub events: Vec<crm_adapter_sdk::Event>,
    /// How many records it held, changed or not (deleted and skipped ones included).
    pub records: usize,
    /// The newest modification time of its records (`SystemModstamp`, else
    /// `LastModifiedDate`), truncated to the second; `None` for a page without records.
    pub newest: Option<Timestamp>,
    /// Whether the query has more pages, and the link to the next one.
    pub next_url: Option<String>,
}

/// Reads one query result (`{"totalSize", "done", "records", "nextRecordsUrl"}`): every record
/// goes through the change detection of [`crate::snapshot`]; `IsDeleted: true` (a `queryAll`
/// result) is `*.deleted`, once. Events are keyed by the record's identity and version,
/// `<Object>/<Id>@<modstamp>/<action>`, as dedupe and idempotency keys: the same version of
/// a record is one event, whatever page carries it again.
pub fn read_page(body: &Value, ctx: &Context) -> Result<Page, AdapterError> {
    let root = Obj::root(body, "the query result")?;
    let records = root.objects("records")?;
    let next_url = root.opt_string("nextRecordsUrl")?;
    let more = match root.opt_bool("done")? {
        Some(done) => !done,
        None => next_url.is_some(),
    };
    let next_url = match (more, next_url) {
        (false, _) => None,
        (true, Some(url)) => Some(url),
        (true, None) => {
            return Err(AdapterError::bad_request(
                "`done` is false but `nextRecordsUrl` is missing",
            ));
        }
    };
    let org = crate::org_for(ctx)?;
    let mut newest: Option<Timestamp> = None;
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
        let version = modified.to_rfc3339();
        let second = Timestamp {
            seconds: modified.seconds,
            nanoseconds: 0,
        };
        newest = Some(newest.map_or(second, |n| n.max(second)));
        let occurred_at = crate::modified_at(record)?;

        if record.opt_bool("IsDeleted")? == Some(true) {
            if memory.observe_deleted(object, &id) {
                let key = crate::version_key(object, &id, &version, "deleted");
                events.push(
                    crate::event(
                        object,
                        "deleted",
                        &id,
                        records::deleted_payload(object, &id),
                        occurred_at.as_deref(),
                        org.as_deref(),
                        key.clone(),
                    )?
                    .idempotency_key(key),
                );
            } else {
                unchanged += 1;
            }
            continue;
        }
        let payload = records::payload(object, &id, record, Shape::Flat, &[])?;
        let (actions, _) = memory.observe(object, &id, &payload);
        if actions.is_empty() {
            unchanged += 1;
        }
        for action in actions {
            let key = crate::version_key(object, &id, &version, action.name());
            events.push(
                crate::event(
                    object,
                    action.name(),
                    &id,
                    payload.clone(),
                    occurred_at.as_deref(),
                    org.as_deref(),
                    key.clone(),
                )?
                .idempotency_key(key),
            );
        }
    }
    crm_adapter_sdk::debug!(
        "{} records: {} events, {unchanged} unchanged",
        records.len(),
        events.len()
    );
    memory.save()?;
    Ok(Page {
        events,
        records: records.len(),
        newest,
        next_url,
    })
}

/// The events and next cursor of one query page pushed by an external poller.
pub fn poll(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
    check_json(page)?;
    let body: Value = page.json()?;
    // Read first: a malformed page leaves the state alone.
    let read = read_page(&body, ctx)?;
    // The cursor never moves back: it starts from the one this page was fetched with (when it
    // is a date-time) and from what earlier pages of the same query saw.
    let high_water = [
        page.cursor.as_deref().and_then(parse_timestamp),
        state::get_string(HIGH_WATER_KEY)?
            .as_deref()
            .and_then(parse_timestamp),
        read.newest,
    ]
    .into_iter()
    .flatten()
    .max();
    let mut output = PollOutput::new(read.events).records(read.records);
    match read.next_url {
        Some(url) => {
            if let Some(hw) = high_water {
                state::set(HIGH_WATER_KEY, hw.to_rfc3339())?;
            }
            output.next_cursor = Some(url);
        }
        None => {
            state::delete(HIGH_WATER_KEY);
            // No record at all: keep the previous cursor.
            output.next_cursor = high_water.map(|hw| hw.to_rfc3339());
        }
    }
    Ok(output)
}

/// Query results are JSON; a page declared as anything else is refused.
pub fn check_json(page: &PollPage) -> Result<(), AdapterError> {
    match &page.content_type {
        Some(content_type) if !content_type.to_ascii_lowercase().contains("json") => {
            Err(AdapterError::bad_request(format!(
                "content type `{content_type}` is not JSON; query results are JSON"
            )))
        }
        _ => Ok(()),
    }
}
