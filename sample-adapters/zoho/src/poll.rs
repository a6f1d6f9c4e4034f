//! List API pages, the polling path: the JSON of `GET /crm/v5/{module}?fields=...`
//! (<https://www.zoho.com/crm/developer/docs/api/v5/get-records.html>), fetched by the host
//! for [`crate::api`] or pushed by an external poller:
//!
//! ```json
//! {"data": [{"id": "5725767000001148082", "Deal_Name": "...", "Amount": 48250.5,
//!            "Modified_Time": "2025-12-01T15:30:00+05:30", ...}],
//!  "info": {"per_page": 200, "count": 1, "page": 1, "more_records": true,
//!           "next_page_token": "c8582e7f...", "sort_by": "id", "sort_order": "desc"}}
//! ```
//!
//! Every record goes through the change detection of [`crate::memory`]: new ones are
//! `*.created`, changed ones `*.updated`, unchanged ones emit nothing ([`read_records`]).
//!
//! **Pushed pages** ([`poll`]). Records carry no module name, so the module a pushing
//! connection lists is a setting (`poll_module`). While `more_records` is true, the next
//! cursor is `page_token=<next_page_token>` (or `page=<page + 1>` without a token); the last
//! page returns
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

/// The mark the state keeps for a record the deleted-records list reported (not a
/// fingerprint, which is 16 hex digits): a record listed again after it is restored.
pub const DELETED: &str = "deleted";

/// What one list page holds, read and turned into events.
pub struct Page {
    /// The events of its new and changed records.
    pub events: Vec<crm_adapter_sdk::Event>,
    /// How many records it held, changed or not.
    pub records: usize,
    /// The newest `Modified_Time` of its records, truncated to the second.
    pub newest: Option<Timestamp>,
}

/// Reads the records of one list page of `module` (`{"data": [...], "info": {...}}`),
/// whoever fetched it. Events are keyed by the record's identity and version,
/// `<Module>/<id>@<Modified_Time>/<action>`, as dedupe and idempotency keys: Zoho moves
/// `Modified_Time` on every edit, so one version of a record is one event whatever page
/// carries it again.
pub fn read_records(module: Module, root: &Obj<'_>, ctx: &Context) -> Result<Page, AdapterError> {
    let org = crate::org_for(ctx)?;
    let records = root.objects("data")?;
    let mut seen = memory::seen(module);
    let mut events = Vec::new();
    let mut newest: Option<Timestamp> = None;
    for record in &records {
        let id = record.id("id")?;
        let modified = record.opt_timestamp("Modified_Time")?.ok_or_else(|| {
            AdapterError::bad_request(format!(
                "`{}` is missing: include it in the list request's `fields`, so that polling \
                 can resume where it stopped",
                record.name("Modified_Time")
            ))
        })?;
        let second = Timestamp {
            seconds: modified.seconds,
            nanoseconds: 0,
        };
        newest = Some(newest.map_or(second, |n| n.max(second)));
        let payload = records::payload(module, &id, record)?;
        // Without volatile fields such as `occurred_at`, added by `crate::event`.
        let fp = fingerprint(&Value::Object(payload.clone()));
        let action = match seen.observe(&id, &fp) {
            Change::New => "created",
            // Restored from the recycle bin.
            Change::Changed { previous } if previous == DELETED => "created",
            Change::Changed { .. } => "updated",
            Change::Unchanged => continue,
        };
        let key = crate::version_key(module, &id, modified, action);
        events.push(
            crate::event(
                module,
                action,
                &id,
                payload,
                Some(&second.to_rfc3339()),
                org.as_deref(),
                key.clone(),
            )?
            .idempotency_key(key),
        );
    }
    seen.save()?;
    crm_adapter_sdk::debug!(
        "{} {} records: {} changed",
        records.len(),
        module.api_name(),
        events.len()
    );
    Ok(Page {
        events,
        records: records.len(),
        newest,
    })
}

/// The events and next cursor of one list page pushed by an external poller.
pub fn poll(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
    check_json(page)?;
    let module_name = ctx.require_setting(MODULE_SETTING)?;
    let module = Module::from_api_name(module_name).ok_or_else(|| {
        AdapterError::failed(format!(
            "connection setting `{MODULE_SETTING}` is `{module_name}`; expected Contacts, \
             Accounts or Deals"
        ))
    })?;
    crate::org_for(ctx)?;
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
        // Nothing modified: no record on the page.
        return Ok(finish(Vec::new(), high_water).records(0));
    }
    let body: Value = page.json()?;
    let root = Obj::root(&body, "the list page")?;
    let read = read_records(module, &root, ctx)?;
    high_water = high_water.max(read.newest);
    let (events, records) = (read.events, read.records);

    match next_page(&root)? {
        Some(next) => {
            let cursor = match next {
                NextPage::Token(token) => format!("page_token={token}"),
                NextPage::Number(page) => format!("page={page}"),
            };
            if let Some(hw) = high_water {
                state::set(HIGH_WATER_KEY, hw.to_rfc3339())?;
            }
            Ok(PollOutput::new(events).next_cursor(cursor).records(records))
        }
        None => Ok(finish(events, high_water).records(records)),
    }
}

/// How to ask for the page after this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextPage {
    /// `page_token=<info.next_page_token>`.
    Token(String),
    /// `page=<info.page + 1>`, when Zoho gives no token (the first 2,000 records).
    Number(u64),
}

/// The page after this one, from its `info`; `None` on the last page.
pub fn next_page(root: &Obj<'_>) -> Result<Option<NextPage>, AdapterError> {
    let Some(info) = root.opt_child("info")? else {
        return Ok(None);
    };
    if !info.opt_bool("more_records")?.unwrap_or(false) {
        return Ok(None);
    }
    match (info.opt_string("next_page_token")?, info.opt_count("page")?) {
        (Some(token), _) => Ok(Some(NextPage::Token(token))),
        (None, Some(page)) => Ok(Some(NextPage::Number(page + 1))),
        (None, None) => Err(AdapterError::bad_request(
            "`info.more_records` is true but `info.next_page_token` and `info.page` are missing",
        )),
    }
}

/// List pages are JSON; a page declared as anything else is refused.
pub fn check_json(page: &PollPage) -> Result<(), AdapterError> {
    match &page.content_type {
        Some(content_type) if !content_type.to_ascii_lowercase().contains("json") => {
            Err(AdapterError::bad_request(format!(
                "content type `{content_type}` is not JSON; list pages are JSON"
            )))
        }
        _ => Ok(()),
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
pub fn zoho_time(at: Timestamp) -> String {
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
