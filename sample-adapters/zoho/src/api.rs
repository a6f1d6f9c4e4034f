//! Polling through the host, and reading the records behind a notification: the requests this
//! adapter names for the host to make against Zoho CRM's REST API (the connection's API base
//! URL is its data centre's API domain, `https://www.zohoapis.com` or `.eu`, `.in`...; the host
//! adds the OAuth token, `Authorization: Zoho-oauthtoken ...`).
//!
//! A poll **run** walks two lists per module of the `poll_modules` setting: the records
//! modified since the last run, then the records deleted since then.
//!
//! ```text
//! GET /crm/v5/Deals?fields=Deal_Name,Stage,...,Modified_Time&per_page=200&sort_by=Modified_Time&sort_order=asc
//!     If-Modified-Since: 2025-12-01T10:49:59+00:00
//! GET /crm/v5/Deals/deleted?type=all&per_page=200
//!     If-Modified-Since: 2025-12-02T07:59:59+00:00
//! ```
//!
//! Records are listed oldest change first, and each listing starts from the newest second the
//! walk has read (keyset pagination): `If-Modified-Since` is that second minus one, so the
//! records of that second are listed again whether Zoho reads the header as "after" or "at or
//! after" (Zoho's times have one-second resolution); change detection and the events' version
//! keys make a record read again harmless. Only a page whose records all fall at or before that
//! second (more records modified in one second than a page holds) is followed by the next page
//! of the same listing, `info.next_page_token` (`page_token=...`) or `info.page` + 1
//! (`page=...`). The deleted list cannot be sorted: it is paged by number, newest deletion
//! first, from a fixed `If-Modified-Since`.
//!
//! A `304 Not Modified` (or `204 No Content`) means the list has nothing new.
//!
//! The **cursor** is JSON: `{"since": {"Deals": "2025-12-01T10:50:00+00:00", "Deals/deleted":
//! "..."}, "list": "Deals"}`: per records list its boundary (every record modified before that
//! second has been read; it moves after every page), per deleted list the newest `deleted_time`
//! of its last complete walk, and while a run is under way the list it walks, how to ask for
//! its next page when that is not a new listing, and (deleted lists) the newest time that walk
//! has seen so far.

use std::collections::BTreeMap;

use crm_adapter_sdk::changes::fingerprint;
use crm_adapter_sdk::fields::{Obj, parse_timestamp};
use crm_adapter_sdk::http::{self, HttpRequest};
use crm_adapter_sdk::serde_json::{self, Value};
use crm_adapter_sdk::{AdapterError, Context, Event, PollOutput, PollPage, Timestamp};
use serde::{Deserialize, Serialize};

use crate::memory;
use crate::poll::{self, DELETED, MODULE_SETTING, NextPage, zoho_time};
use crate::records::{self, Module};

/// The API version the adapter speaks.
pub const API: &str = "/crm/v5";
/// The setting listing the modules a poll run walks, in order (comma separated).
pub const POLL_MODULES_SETTING: &str = "poll_modules";
/// Records per page: Zoho's maximum.
const PER_PAGE: &str = "200";
/// Ids per request for the records behind a notification: Zoho's maximum for `ids`.
const IDS_PER_REQUEST: usize = 100;

/// One list of a poll run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// `GET /crm/v5/<Module>`: the records modified since the last walk.
    Records(Module),
    /// `GET /crm/v5/<Module>/deleted`: the records deleted since the last walk.
    Deleted(Module),
}

impl List {
    /// Its name in cursors, and its path after `/crm/v5/`: `Deals`, `Deals/deleted`.
    pub fn name(self) -> String {
        match self {
            List::Records(module) => module.api_name().to_owned(),
            List::Deleted(module) => format!("{}/deleted", module.api_name()),
        }
    }

    /// The list called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.strip_suffix("/deleted") {
            Some(module) => Module::from_api_name(module).map(List::Deleted),
            None => Module::from_api_name(name).map(List::Records),
        }
    }
}

/// The lists a poll run walks: for each module of `poll_modules` (default: the pushed pages'
/// `poll_module` when set, else `Contacts,Accounts,Deals`), its records then its deletions.
pub fn poll_lists(ctx: &Context) -> Result<Vec<List>, AdapterError> {
    let (setting, names) = match (
        ctx.setting(POLL_MODULES_SETTING),
        ctx.setting(MODULE_SETTING),
    ) {
        (Some(names), _) => (POLL_MODULES_SETTING, names),
        (None, Some(name)) => (MODULE_SETTING, name),
        (None, None) => (POLL_MODULES_SETTING, "Contacts,Accounts,Deals"),
    };
    let mut modules = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let module = Module::from_api_name(name).ok_or_else(|| {
            AdapterError::failed(format!(
                "connection setting `{setting}`: `{name}` is not one of Contacts, Accounts, Deals"
            ))
        })?;
        if !modules.contains(&module) {
            modules.push(module);
        }
    }
    if modules.is_empty() {
        return Err(AdapterError::failed(format!(
            "connection setting `{setting}` names no module"
        )));
    }
    Ok(modules
        .into_iter()
        .flat_map(|m| [List::Records(m), List::Deleted(m)])
        .collect())
}

/// Where a poll stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Per list, in Zoho's form (`2025-12-01T10:50:00+00:00`): for records (`Deals`), the
    /// walk's boundary, every record modified before that second has been read (it moves
    /// after every page); for deletions (`Deals/deleted`), the newest `deleted_time` of the
    /// last complete walk. Each listing asks `If-Modified-Since` one second before it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub since: BTreeMap<String, String>,
    /// The list being walked by the run under way; absent between runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// `info.next_page_token` of that list's last page, when the next page is one of the same
    /// listing (records: only while more than a page of them were modified in one second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
    /// The number of that list's next page, when Zoho gave no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u64>,
    /// Deleted lists: the newest time that walk has seen so far. (On a records list, the mark
    /// of a cursor of this adapter's earlier, unsorted walk.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
}

impl Cursor {
    /// The cursor saved after the last page. A pushed page's `modified_since=<time>` carries
    /// over as the `since` of the `poll_module`'s records; anything else that is not this
    /// adapter's JSON starts over (change detection keeps that from re-emitting records).
    pub fn parse(text: Option<&str>, ctx: &Context) -> Self {
        let Some(text) = text else {
            return Self::default();
        };
        if let Some(at) = text
            .strip_prefix("modified_since=")
            .and_then(parse_timestamp)
        {
            let mut cursor = Self::default();
            if let Some(module) = ctx.setting(MODULE_SETTING) {
                cursor.since.insert(module.to_owned(), zoho_time(at));
            }
            return cursor;
        }
        let mut cursor = match serde_json::from_str::<Self>(text) {
            Ok(cursor) => cursor,
            Err(_) => {
                crm_adapter_sdk::warn!("the cursor `{}` is not this adapter's; starting over", {
                    text.chars().take(80).collect::<String>()
                });
                return Self::default();
            }
        };
        // Times go into a header: only what parses as one, re-rendered.
        cursor.since = cursor
            .since
            .into_iter()
            .filter_map(|(list, at)| Some((list, zoho_time(parse_timestamp(&at)?))))
            .collect();
        cursor.newest = cursor
            .newest
            .as_deref()
            .and_then(parse_timestamp)
            .map(zoho_time);
        cursor
    }

    /// The cursor as saved.
    pub fn to_json(&self) -> String {
        // Strings and numbers always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The list the run walks now: the cursor's, else (no run under way, or a list no longer
    /// polled) the first, from its first page.
    fn position(&mut self, lists: &[List]) -> List {
        match self
            .list
            .as_deref()
            .and_then(List::parse)
            .filter(|l| lists.contains(l))
        {
            Some(list @ List::Records(_)) if self.newest.is_some() => {
                // Written by the adapter's earlier version, whose listings were not sorted by
                // time: its page token cannot go on with a sorted walk. List again from the
                // list's `since`; what is read again emits nothing.
                self.end_walk();
                list
            }
            Some(list) => list,
            None => {
                self.end_walk();
                lists[0]
            }
        }
    }

    fn end_walk(&mut self) {
        self.page_token = None;
        self.page = None;
        self.newest = None;
    }
}

/// The next request of a poll run; `None` for a connection without API access (its pages
/// are pushed by an external poller).
pub fn poll_request(
    cursor: Option<&str>,
    ctx: &Context,
) -> Result<Option<HttpRequest>, AdapterError> {
    if ctx.api_base_url.is_none() {
        return Ok(None);
    }
    let lists = poll_lists(ctx)?;
    let mut cursor = Cursor::parse(cursor, ctx);
    let list = cursor.position(&lists);
    let mut request = match list {
        // Oldest change first: each listing goes on from the newest second read.
        List::Records(module) => HttpRequest::get(format!("{API}/{}", module.api_name()))
            .query("fields", fields(module))
            .query("per_page", PER_PAGE)
            .query("sort_by", "Modified_Time")
            .query("sort_order", "asc"),
        List::Deleted(module) => HttpRequest::get(format!("{API}/{}/deleted", module.api_name()))
            .query("type", "all")
            .query("per_page", PER_PAGE),
    };
    if let (List::Records(_), Some(token)) = (list, &cursor.page_token) {
        request = request.query("page_token", token.clone());
    } else if let Some(page) = cursor.page {
        request = request.query("page", page.to_string());
    }
    if let Some(since) = cursor
        .since
        .get(&list.name())
        .and_then(|s| parse_timestamp(s))
    {
        request = request.header("If-Modified-Since", zoho_time(second_before(since)));
    }
    Ok(Some(request))
}

/// The second before `at`'s: what `If-Modified-Since` asks for a list whose `since` is `at`,
/// so that the records (or deletions) of `at`'s second are listed again whether Zoho reads the
/// header as "modified after" (the records of `at`'s second and later) or "at or after" (from
/// the second before). Either way nothing of `at`'s second is left out, by records saved in it
/// after the page that moved `since` there included.
fn second_before(at: Timestamp) -> Timestamp {
    Timestamp {
        seconds: at.seconds.saturating_sub(1),
        nanoseconds: 0,
    }
}

/// The `fields` of a list request: every mapped field of the module, and `Modified_Time`.
pub fn fields(module: Module) -> String {
    let mut names: Vec<&str> = module.fields().iter().map(|f| f.api).collect();
    names.push("Modified_Time");
    names.join(",")
}

/// The events of a page the host fetched for [`poll_request`], the cursor after it, and
/// whether the run goes on.
pub fn handle_page(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
    let lists = poll_lists(ctx)?;
    let mut cursor = Cursor::parse(page.cursor.as_deref(), ctx);
    let list = cursor.position(&lists);
    // `304 Not Modified` answers an `If-Modified-Since`; `204 No Content` an empty listing.
    let success = (200..300).contains(&page.status);
    let nothing_new =
        page.status == 304 || success && page.body.iter().all(u8::is_ascii_whitespace);
    match page.status {
        _ if nothing_new => {
            // Not a listing: no record seen.
            return Ok(end_walk(Vec::new(), cursor, list, None, &lists).records(0));
        }
        200..=299 => {}
        400 if cursor.page_token.is_some() => {
            // A page token lives a day: a run interrupted for longer lists again.
            crm_adapter_sdk::warn!(
                "Zoho refused the page token of the {} listing (400: {}); listing again",
                list.name(),
                excerpt(&page.body)
            );
            cursor.end_walk();
            cursor.list = Some(list.name());
            return Ok(PollOutput::new(Vec::new())
                .next_cursor(cursor.to_json())
                .more(true)
                .records(0));
        }
        status => {
            return Err(AdapterError::failed(format!(
                "Zoho answered {status} to the {} listing: {}",
                list.name(),
                excerpt(&page.body)
            )));
        }
    }
    poll::check_json(page)?;
    let body: Value = page.json()?;
    let root = Obj::root(&body, "the list page")?;
    let next = poll::next_page(&root)?;
    let (read, next) = match list {
        List::Records(module) => {
            let read = poll::read_records(module, &root, ctx)?;
            let next = next.map(|next| records_walked(&mut cursor, list, next, read.newest));
            (read, next)
        }
        List::Deleted(module) => {
            let read = read_deleted(module, &root, ctx)?;
            let newest = [
                cursor.newest.as_deref().and_then(parse_timestamp),
                read.newest,
            ]
            .into_iter()
            .flatten()
            .max();
            // The deleted list cannot be sorted: its pages are numbered, from the same
            // `If-Modified-Since`, and `since` moves when the walk ends.
            let next = next.map(|next| {
                cursor.page_token = None;
                cursor.page = Some(match next {
                    NextPage::Token(_) => cursor.page.unwrap_or(1) + 1,
                    NextPage::Number(page) => page,
                });
                cursor.newest = newest.map(zoho_time);
            });
            let read = poll::Page { newest, ..read };
            (read, next)
        }
    };
    match next {
        Some(()) => {
            cursor.list = Some(list.name());
            Ok(PollOutput::new(read.events)
                .next_cursor(cursor.to_json())
                .more(true)
                .records(read.records))
        }
        None => Ok(end_walk(read.events, cursor, list, read.newest, &lists).records(read.records)),
    }
}

/// Where a records list goes on after a page (oldest change first) that says there is more.
///
/// A page with a record modified after the list's `since` moves it to the page's newest second,
/// and the next page is a new listing from there: the page held, oldest first, every record of
/// the listing modified before that second, and a record saved since has a later time. (Zoho's
/// page tokens and page numbers go on from a position in a listing that moves while it is read:
/// a record saved mid-walk leaves its place for the end, and the record behind it takes the
/// place, one a position-based next page would skip.) A page of records all modified at or
/// before `since` (more in one second than a page holds) cannot move it: the walk follows the
/// same listing's next page until a page goes past that second.
fn records_walked(cursor: &mut Cursor, list: List, next: NextPage, newest: Option<Timestamp>) {
    let since = cursor
        .since
        .get(&list.name())
        .and_then(|s| parse_timestamp(s));
    match newest {
        Some(newest) if since.is_none_or(|since| newest > since) => {
            cursor.since.insert(list.name(), zoho_time(newest));
            cursor.page_token = None;
            cursor.page = None;
        }
        _ => {
            (cursor.page_token, cursor.page) = match next {
                NextPage::Token(token) => (Some(token), None),
                NextPage::Number(page) => (None, Some(page)),
            };
        }
    }
}

/// The output of a list's last page: `since` moves to the newest time its walk saw (never
/// back), and the run goes on with the next list (or ends after the last).
fn end_walk(
    events: Vec<Event>,
    mut cursor: Cursor,
    list: List,
    newest: Option<Timestamp>,
    lists: &[List],
) -> PollOutput {
    if let Some(newest) = newest {
        let since = cursor
            .since
            .get(&list.name())
            .and_then(|s| parse_timestamp(s));
        if since.is_none_or(|since| since < newest) {
            cursor.since.insert(list.name(), zoho_time(newest));
        }
    }
    cursor.end_walk();
    let after = lists.iter().position(|l| *l == list).map_or(0, |i| i + 1);
    cursor.list = lists.get(after).map(|l| l.name());
    let more = cursor.list.is_some();
    PollOutput::new(events)
        .next_cursor(cursor.to_json())
        .more(more)
}

/// The events of a page of deleted records (`{"data": [{"id", "deleted_time", "type",
/// "display_name", ...}], "info": {...}}`): `*.deleted` for each record the connection knows
/// and has not seen deleted yet, once. One it never saw (deleted before the first poll, or
/// created and deleted between two) is not news to the platform.
fn read_deleted(module: Module, root: &Obj<'_>, ctx: &Context) -> Result<poll::Page, AdapterError> {
    let org = crate::org_for(ctx)?;
    let mut seen = memory::seen(module);
    let mut events = Vec::new();
    let mut newest: Option<Timestamp> = None;
    let deleted = root.objects("data")?;
    let records = deleted.len();
    for record in deleted {
        let id = record.id("id")?;
        let deleted_at = record.opt_timestamp("deleted_time")?;
        if let Some(at) = deleted_at {
            let second = Timestamp {
                seconds: at.seconds,
                nanoseconds: 0,
            };
            newest = Some(newest.map_or(second, |n| n.max(second)));
        }
        match seen.get(&id) {
            Some(mark) if mark != DELETED => seen.remember(&id, DELETED),
            _ => continue,
        }
        let key = match deleted_at {
            Some(at) => crate::version_key(module, &id, at, "deleted"),
            None => format!("{}/{id}/deleted", module.api_name()),
        };
        events.push(
            crate::event(
                module,
                "deleted",
                &id,
                records::ids_payload(module, &id),
                deleted_at.map(|at| at.to_rfc3339()).as_deref(),
                org.as_deref(),
                key.clone(),
            )?
            .idempotency_key(key),
        );
    }
    seen.save()?;
    Ok(poll::Page {
        events,
        records,
        newest,
    })
}

/// The whole records behind a notification's ids, read with
/// `GET /crm/v5/<Module>?fields=...&ids=<id>,<id>,...` (100 ids a request): the answers' JSON
/// bodies, `{"data": [...]}` each. Ids Zoho does not return (deleted since) are left out; a
/// `204 No Content` returns none.
pub fn fetch_records(module: Module, ids: &[String]) -> Result<Vec<Value>, AdapterError> {
    let mut bodies = Vec::new();
    for chunk in ids.chunks(IDS_PER_REQUEST) {
        let request = HttpRequest::get(format!("{API}/{}", module.api_name()))
            .query("fields", fields(module))
            .query("ids", chunk.join(","));
        let response = http::fetch(&request)?.ok()?;
        if response.status == 204 || response.body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        bodies.push(response.json()?);
    }
    Ok(bodies)
}

/// The fingerprint polling keeps for a record's payload, so that the next poll knows what a
/// notification already told.
pub fn record_fingerprint(payload: &serde_json::Map<String, Value>) -> String {
    fingerprint(&Value::Object(payload.clone()))
}

/// The start of an answer's body, for a message.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}
