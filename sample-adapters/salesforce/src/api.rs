//! Polling through the host, and reading records behind thin outbound messages: the requests
//! this adapter names for the host to make against the org's REST API (the connection's API
//! base URL is the org's instance URL, `https://acme.my.salesforce.com`; the host adds the
//! OAuth token).
//!
//! A poll **run** walks the objects of the `poll_objects` setting in order. For each object
//! it asks `queryAll` (which also returns deleted records, `IsDeleted = true`) for what changed
//! since the last run, oldest first, and follows `nextRecordsUrl` until `done`:
//!
//! ```text
//! GET /services/data/v59.0/queryAll?q=SELECT Id, IsDeleted, SystemModstamp, ... FROM Account
//!     WHERE SystemModstamp > 2025-12-01T11:45:00Z ORDER BY SystemModstamp ASC, Id ASC
//! GET /services/data/v59.0/query/01gRO00000BdQ3WYAV-2000
//! ```
//!
//! The **cursor** is JSON:
//! `{"since": {"Account": "2025-12-01T11:45:00Z"}, "object": "Contact", "next": "/services/..."}`:
//! per object the newest `SystemModstamp` processed (to the second, as a SOQL literal), and
//! while a run is under way the object it is walking and the link to that query's next page.
//! `since` moves with every page: the query is sorted by `SystemModstamp`, so a run that stops
//! half-way resumes from where it was. A query locator expires (15 minutes unused); a `400`
//! answer to a `nextRecordsUrl` restarts that object's query from `since`.

use std::collections::BTreeMap;

use crm_adapter_sdk::fields::parse_timestamp;
use crm_adapter_sdk::http::{self, HttpRequest};
use crm_adapter_sdk::serde_json::{self, Value};
use crm_adapter_sdk::{AdapterError, Context, PollOutput, PollPage, Timestamp};
use serde::{Deserialize, Serialize};

use crate::records::Object;
use crate::soql;

/// The REST API version the adapter speaks.
pub const API: &str = "/services/data/v59.0";
/// Where every `nextRecordsUrl` points: the REST API's own paths, whatever their version.
const DATA_PATH: &str = "/services/data/";
/// The setting listing the objects a poll run walks, in order (comma separated).
pub const POLL_OBJECTS_SETTING: &str = "poll_objects";
/// Prefix of the settings adding fields to an object's query: `poll_fields.Opportunity` =
/// `CurrencyIsoCode,Commission_Split__c`.
pub const POLL_FIELDS_PREFIX: &str = "poll_fields.";

/// Mapped fields that exist only in some orgs (multi-currency ones), so not queried unless a
/// `poll_fields.<Object>` setting asks for them: selecting a field the org lacks fails the
/// whole query.
const OPTIONAL_FIELDS: [&str; 1] = ["CurrencyIsoCode"];

/// Where a poll stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Per object (API name), the newest `SystemModstamp` processed, as a SOQL date-time
    /// literal truncated to the second (`2025-12-01T11:45:00Z`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub since: BTreeMap<String, String>,
    /// The object being walked by the run under way; absent between runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The `nextRecordsUrl` of that object's query, when it has more pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl Cursor {
    /// The cursor saved after the last page. A cursor of the pushed pages' kind (a date-time)
    /// carries over as the `since` of every object; anything else unreadable starts over
    /// (change detection keeps that from re-emitting what was already seen).
    pub fn parse(text: Option<&str>) -> Self {
        let Some(text) = text else {
            return Self::default();
        };
        if let Some(at) = parse_timestamp(text) {
            let literal = soql_literal(at);
            return Self {
                since: Object::ALL
                    .iter()
                    .map(|o| (o.api_name().to_owned(), literal.clone()))
                    .collect(),
                ..Self::default()
            };
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
        // Only what parses as a date-time goes into a query, re-rendered: a cursor is data
        // the adapter wrote, but SOQL is no place to trust it.
        cursor.since = cursor
            .since
            .into_iter()
            .filter_map(|(object, at)| Some((object, soql_literal(parse_timestamp(&at)?))))
            .collect();
        cursor.next = cursor.next.filter(|url| url.starts_with(DATA_PATH));
        cursor
    }

    /// The cursor as saved.
    pub fn to_json(&self) -> String {
        // A struct of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The object the run walks now (the first one when no run is under way, or when the
    /// cursor names one no longer polled) and the link to its query's next page.
    fn position(&self, objects: &[Object]) -> (Object, Option<String>) {
        match self
            .object
            .as_deref()
            .and_then(Object::from_api_name)
            .filter(|o| objects.contains(o))
        {
            Some(object) => (object, self.next.clone()),
            None => (objects[0], None),
        }
    }
}

/// A time as a SOQL date-time literal, truncated to the second: `2025-12-01T11:45:00Z`.
fn soql_literal(at: Timestamp) -> String {
    Timestamp {
        seconds: at.seconds,
        nanoseconds: 0,
    }
    .to_rfc3339()
}

/// The objects a poll run walks: the `poll_objects` setting (default
/// `Account,Contact,Opportunity`).
pub fn poll_objects(ctx: &Context) -> Result<Vec<Object>, AdapterError> {
    let Some(setting) = ctx.setting(POLL_OBJECTS_SETTING) else {
        return Ok(Object::ALL.to_vec());
    };
    let mut objects = Vec::new();
    for name in setting.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let object = Object::from_api_name(name).ok_or_else(|| {
            AdapterError::failed(format!(
                "connection setting `{POLL_OBJECTS_SETTING}`: `{name}` is not one of Account, \
                 Contact, Opportunity"
            ))
        })?;
        if !objects.contains(&object) {
            objects.push(object);
        }
    }
    if objects.is_empty() {
        return Err(AdapterError::failed(format!(
            "connection setting `{POLL_OBJECTS_SETTING}` names no object"
        )));
    }
    Ok(objects)
}

/// The SOQL query of `object`'s changes since `since` (everything without one), oldest first.
pub fn soql(object: Object, since: Option<&str>, ctx: &Context) -> Result<String, AdapterError> {
    let mut fields = vec!["Id", "IsDeleted", "SystemModstamp", "LastModifiedDate"];
    for field in object.fields() {
        if !OPTIONAL_FIELDS.contains(&field.api) && !fields.contains(&field.api) {
            fields.push(field.api);
        }
    }
    let setting = format!("{POLL_FIELDS_PREFIX}{}", object.api_name());
    for extra in ctx
        .setting(&setting)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        // Field names only: the setting goes into a query.
        if !extra
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(AdapterError::failed(format!(
                "connection setting `{setting}`: `{extra}` is not a field name"
            )));
        }
        if !fields.contains(&extra) {
            fields.push(extra);
        }
    }
    let filter = match since {
        Some(since) => format!(" WHERE SystemModstamp > {since}"),
        None => String::new(),
    };
    Ok(format!(
        "SELECT {} FROM {}{filter} ORDER BY SystemModstamp ASC, Id ASC",
        fields.join(", "),
        object.api_name()
    ))
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
    let objects = poll_objects(ctx)?;
    let cursor = Cursor::parse(cursor);
    let (object, next) = cursor.position(&objects);
    Ok(Some(match next {
        Some(url) => HttpRequest::get(url),
        None => {
            let since = cursor.since.get(object.api_name()).map(String::as_str);
            HttpRequest::get(format!("{API}/queryAll")).query("q", soql(object, since, ctx)?)
        }
    }))
}

/// The events of a page the host fetched for [`poll_request`], the cursor after it, and
/// whether the run goes on.
pub fn handle_page(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
    let objects = poll_objects(ctx)?;
    let mut cursor = Cursor::parse(page.cursor.as_deref());
    let (object, next) = cursor.position(&objects);
    match page.status {
        200..=299 => {}
        400 if next.is_some() => {
            // The query locator expired (a run interrupted for too long): query again from
            // what was processed, which the sort makes exact.
            crm_adapter_sdk::warn!(
                "Salesforce refused the next page of the {} query (400: {}); querying again",
                object.api_name(),
                excerpt(&page.body)
            );
            cursor.object = Some(object.api_name().to_owned());
            cursor.next = None;
            // An error answer, not a listing: no record seen.
            return Ok(PollOutput::new(Vec::new())
                .next_cursor(cursor.to_json())
                .more(true)
                .records(0));
        }
        status => {
            return Err(AdapterError::failed(format!(
                "Salesforce answered {status} to the {} query: {}",
                object.api_name(),
                excerpt(&page.body)
            )));
        }
    }
    soql::check_json(page)?;
    let body: Value = page.json()?;
    let read = soql::read_page(&body, ctx)?;
    if let Some(newest) = read.newest.map(soql_literal) {
        // Never back. Literals of this one form sort as the times they name.
        let since = cursor.since.get(object.api_name());
        if since.is_none_or(|since| *since < newest) {
            cursor.since.insert(object.api_name().to_owned(), newest);
        }
    }
    let more = match read.next_url {
        // Followed only under the API's own path (the cursor keeps nothing else, and a link
        // it dropped would restart the query forever).
        Some(url) if !url.starts_with(DATA_PATH) => {
            return Err(AdapterError::bad_request(format!(
                "`nextRecordsUrl` is `{}`, not a path under {DATA_PATH}",
                url.chars().take(80).collect::<String>()
            )));
        }
        Some(url) => {
            cursor.object = Some(object.api_name().to_owned());
            cursor.next = Some(url);
            true
        }
        None => {
            cursor.next = None;
            let after = objects
                .iter()
                .position(|o| *o == object)
                .map_or(0, |i| i + 1);
            cursor.object = objects.get(after).map(|o| o.api_name().to_owned());
            cursor.object.is_some()
        }
    };
    Ok(PollOutput::new(read.events)
        .next_cursor(cursor.to_json())
        .more(more)
        .records(read.records))
}

/// The whole record behind a thin outbound message, read with
/// `GET /services/data/v59.0/sobjects/<Object>/<Id>`; `None` when Salesforce answers 404 (the
/// record was deleted since the message was sent).
pub fn fetch_record(object: Object, id: &str) -> Result<Option<Value>, AdapterError> {
    // Salesforce ids are 15 or 18 letters and digits; anything else must not reach a path.
    if !(id.len() == 15 || id.len() == 18) || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AdapterError::bad_request(format!(
            "`{id}` is not a Salesforce record id"
        )));
    }
    let request = HttpRequest::get(format!("{API}/sobjects/{}/{id}", object.api_name()));
    let response = http::fetch(&request)?;
    if response.status == 404 {
        return Ok(None);
    }
    response.ok()?.json().map(Some)
}

/// The start of an answer's body, for a message.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}
