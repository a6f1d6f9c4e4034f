//! List API pages, the polling path: the JSON of `GET /crm/v8/{module}?fields=...`
//! (<https://www.zoho.com/crm/developer/docs/api/v8/get-records.html>):
//!
//! ```json
//! {"data": [{"id": "5725767000001148082", "Deal_Name": "...", "Amount": 48250.5,
//!            "Modified_Time": "2025-12-01T15:30:00+05:30", ...}],
//!  "info": {"per_page": 200, "count": 1, "page": 1, "more_records": true,
//!           "next_page_token": "c8582e7f...", "sort_by": "id", "sort_order": "desc"}}
//! ```
//!
//! Records carry no module name, so the module a connection polls is a setting
//! (`poll_module`). Every record goes through the change detection of [`crate::memory`]: new
//! ones are `*.created`, changed ones `*.updated`, unchanged ones emit nothing.
//!
//! **Cursor.** While `more_records` is true, the next cursor is `page_token=<next_page_token>`
//! (or `page=<page + 1>` without a token); the last page returns
//! `modified_since=<newest Modified_Time of all the listing's pages>` (kept in the state key
//! `poll/modified_since` between pages), for the next listing's `If-Modified-Since` header.
//! No cursor means "list everything". An empty body (Zoho answers `204 No Content` when
//! nothing was modified) ends the listing with no events.

use crm_adapter_sdk::changes::{Change, fingerprint};
use crm_adapter_sdk::fields::{Obj, parse_timestamp};
use crm_adapter_sdk::serde_json::Value;
use crm_adapter_sdk::{AdapterError, Context, PollOutput, PollPage, Timestamp, state};

use crate::memory;
use crate::records::{self, Module};

/// The connection setting naming the module a polling connection lists.
pub const MODULE_SETTING: &str = "poll_module";
/// The state key of the newest `Modified_Time` seen by the listing being paged through.
pub const HIGH_WATER_KEY: &str = "poll/modified_since";
/// The prefix of a cursor that starts a new listing from a time.
const MODIFIED_SINCE: &str = "modified_since=";

/// The events and next cursor of one list page.
pub fn poll(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
    if let Some(content_type) = &page.content_type
        && !content_type.to_ascii_lowercase().contains("json")
    {
        return Err(AdapterError::bad_request(format!(
            "content type `{content_type}` is not JSON; list pages are JSON"
        )));
    }
    let module_name = ctx.require_setting(MODULE_SETTING)?;
    let module = Module::from_api_name(module_name).ok_or_else(|| {
        AdapterError::failed(format!(
            "connection setting `{MODULE_SETTING}` is `{module_name}`; expected Contacts, \
             Accounts or Deals"
        ))
    })?;
    let org = crate::org_for(ctx)?;
    // The cursor never moves back: it starts from the one this page was fetched with (when it
    // is a time) and from what earlier pages of the same listing saw.
    let mut high_water = [
        page.cursor
            .as_deref()
            .and_then(|c| c.strip_prefix(MODIFIED_SINCE))
            .and_then(parse_timestamp),
        state::get_string(HIGH_WATER_KEY)?
            .as_deref()
            .and_then(parse_timestamp),
    ]
    .into_iter()
    .flatten()
    .max();

    if page.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(finish(Vec::new(), high_water));
    }
    let body: Value = page.json()?;
    let root = Obj::root(&body, "the list page")?;
    let records = root.objects("data")?;
    let mut seen = memory::seen(module);
    let mut events = Vec::new();
    for record in &records {
        let id = record.id("id")?;
        let modified = record.opt_timestamp("Modified_Time")?.ok_or_else(|| {
            AdapterError::bad_request(format!(
                "`{}` is missing: include it in the list request's `fields`, so that polling \
                 can resume where it stopped",
                record.name("Modified_Time")
            ))
        })?;
        let modified = Timestamp {
            seconds: modified.seconds,
            nanoseconds: 0,
        };
        high_water = Some(high_water.map_or(modified, |hw| hw.max(modified)));
        let payload = records::payload(module, &id, record)?;
        // Without volatile fields such as `occurred_at`, added by `crate::event`.
        let fp = fingerprint(&Value::Object(payload.clone()));
        let change = seen.observe(&id, &fp);
        let action = match change {
            Change::New => "created",
            Change::Changed { .. } => "updated",
            Change::Unchanged => continue,
        };
        events.push(crate::event(
            module,
            action,
            &id,
            payload,
            Some(&modified.to_rfc3339()),
            org.as_deref(),
            format!("{}/{id}/{fp}", module.api_name()),
        )?);
    }
    seen.save()?;
    crm_adapter_sdk::debug!(
        "{} {} records: {} changed",
        records.len(),
        module.api_name(),
        events.len()
    );

    let info = root.opt_child("info")?;
    let more = match &info {
        Some(info) => info.opt_bool("more_records")?.unwrap_or(false),
        None => false,
    };
    match info {
        Some(info) if more => {
            let cursor = match (info.opt_string("next_page_token")?, info.opt_count("page")?) {
                (Some(token), _) => format!("page_token={token}"),
                (None, Some(page)) => format!("page={}", page + 1),
                (None, None) => {
                    return Err(AdapterError::bad_request(
                        "`info.more_records` is true but `info.next_page_token` and \
                         `info.page` are missing",
                    ));
                }
            };
            if let Some(hw) = high_water {
                state::set(HIGH_WATER_KEY, hw.to_rfc3339())?;
            }
            Ok(PollOutput::new(events).next_cursor(cursor))
        }
        _ => Ok(finish(events, high_water)),
    }
}

/// The output of a listing's last page: its cursor starts the next listing from the newest
/// modification seen (or keeps the previous cursor when nothing was ever seen).
fn finish(events: Vec<crm_adapter_sdk::Event>, high_water: Option<Timestamp>) -> PollOutput {
    state::delete(HIGH_WATER_KEY);
    let mut output = PollOutput::new(events);
    output.next_cursor = high_water.map(|hw| format!("{MODIFIED_SINCE}{}", zoho_time(hw)));
    output
}

/// A time as Zoho's `If-Modified-Since` takes it: ISO 8601 with an offset,
/// `2025-12-01T10:00:00+00:00`.
fn zoho_time(at: Timestamp) -> String {
    let utc = Timestamp {
        seconds: at.seconds,
        nanoseconds: 0,
    }
    .to_rfc3339();
    match utc.strip_suffix('Z') {
        Some(local) => format!("{local}+00:00"),
        None => utc,
    }
}
