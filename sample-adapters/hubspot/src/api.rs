//! Polling through the host: the requests this adapter names for the host to make against
//! HubSpot's CRM v3 API (base URL `https://api.hubapi.com`; the host adds the private app's
//! or OAuth token).
//!
//! A poll **run** walks the lists of the `poll_objects` setting in order. A list of live
//! records is a search for what changed since the last run, oldest first:
//!
//! ```text
//! POST /crm/v3/objects/deals/search
//! {"filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GT",
//!   "value": "1764583933905"}]}], "sorts": [{"propertyName": "hs_lastmodifieddate",
//!   "direction": "ASCENDING"}], "properties": ["dealname", ...], "limit": 100, "after": "100"}
//! ```
//!
//! and the deleted contacts are HubSpot's list of archived contacts,
//! `GET /crm/v3/objects/contacts?archived=true&limit=100&after=...`, walked whole (it has no
//! filter). Each list is paged with `paging.next.after` until a page has none.
//!
//! The **cursor** is JSON: `{"since": {"deals": 1764583933905}, "list": "deals", "after":
//! "100", "newest": 1764590000000}`: per list the newest modification time (epoch
//! milliseconds) of its last complete walk, and while a run is under way the list it walks,
//! the `after` of its next page and the newest time that walk has seen so far (which becomes
//! `since` when the walk ends: the filter must stay the same from page to page).

use std::collections::BTreeMap;

use crm_adapter_sdk::http::HttpRequest;
use crm_adapter_sdk::serde_json::{self, Value, json};
use crm_adapter_sdk::{AdapterError, Context, PollOutput, PollPage};
use serde::{Deserialize, Serialize};

use crate::objects::Object;
use crate::poll::{self, Stage};
use crate::{Settings, check_json};

/// Records a search page asks for: HubSpot's maximum.
const LIMIT: u32 = 100;
/// The search endpoints answer no more than this many results per query: past it, the walk
/// starts a new search from the newest change it has seen.
const SEARCH_WINDOW: u64 = 10_000;
/// Prefix of the settings adding properties to a list's search: `poll_properties.deals` =
/// `commission_rate,hs_forecast_amount`.
pub const POLL_PROPERTIES_PREFIX: &str = "poll_properties.";

/// The properties every search asks for, per object: those a payload needs, and every money
/// property (the modification time first, for the walk).
pub fn properties(object: Object) -> &'static [&'static str] {
    match object {
        Object::Contact => &[
            "lastmodifieddate",
            "createdate",
            "email",
            "firstname",
            "lastname",
            "phone",
            "company",
            "jobtitle",
            "lifecyclestage",
            "hubspot_owner_id",
            "total_revenue",
            "recent_deal_amount",
        ],
        Object::Company => &[
            "hs_lastmodifieddate",
            "createdate",
            "name",
            "domain",
            "industry",
            "phone",
            "city",
            "state",
            "country",
            "numberofemployees",
            "lifecyclestage",
            "hubspot_owner_id",
            "annualrevenue",
            "total_revenue",
            "recent_deal_amount",
        ],
        Object::Deal => &[
            "hs_lastmodifieddate",
            "createdate",
            "dealname",
            "dealstage",
            "pipeline",
            "closedate",
            "hubspot_owner_id",
            "amount",
            "amount_in_home_currency",
            "hs_acv",
            "hs_arr",
            "hs_mrr",
            "hs_tcv",
            "hs_closed_amount",
            "hs_closed_amount_in_home_currency",
            "hs_projected_amount",
            "hs_projected_amount_in_home_currency",
        ],
    }
}

/// Where a poll stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Per list (`contacts`, `companies`, `deals`), the newest modification time of its last
    /// complete walk, in epoch milliseconds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub since: BTreeMap<String, u64>,
    /// The list being walked by the run under way; absent between runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// `paging.next.after` of that list's last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The newest modification time that walk has seen so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<u64>,
}

impl Cursor {
    /// The cursor saved after the last page. Anything that is not this adapter's JSON (a
    /// pushed page's `deals:<after>`) starts over: change detection keeps that from emitting
    /// again what was already seen.
    pub fn parse(text: Option<&str>) -> Self {
        let Some(text) = text else {
            return Self::default();
        };
        serde_json::from_str(text).unwrap_or_else(|_| {
            crm_adapter_sdk::warn!("the cursor `{}` is not this adapter's; starting over", {
                text.chars().take(80).collect::<String>()
            });
            Self::default()
        })
    }

    /// The cursor as saved.
    pub fn to_json(&self) -> String {
        // Strings and numbers always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The list the run walks now (the first one when no run is under way, or when the
    /// cursor names one no longer polled), and the `after` of its next page.
    fn position(&self, settings: &Settings) -> (Stage, Option<String>) {
        let lists = settings.poll_lists();
        match self
            .list
            .as_deref()
            .and_then(Stage::parse)
            .filter(|s| lists.contains(s))
        {
            Some(stage) => (stage, self.after.clone()),
            None => (lists[0], None),
        }
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
    let settings = Settings::new(ctx)?;
    let cursor = Cursor::parse(cursor);
    let (stage, after) = cursor.position(&settings);
    Ok(Some(match stage {
        Stage::Live(object) => {
            let since = cursor.since.get(object.plural()).copied().unwrap_or(0);
            let mut wanted: Vec<String> = properties(object).iter().map(|p| (*p).into()).collect();
            let setting = format!("{POLL_PROPERTIES_PREFIX}{}", object.plural());
            for extra in crate::list(ctx.setting(&setting).unwrap_or_default()) {
                if !wanted.contains(&extra) {
                    wanted.push(extra);
                }
            }
            let mut body = json!({
                "filterGroups": [{"filters": [{
                    "propertyName": object.modified_property(),
                    "operator": "GT",
                    "value": since.to_string(),
                }]}],
                "sorts": [{"propertyName": object.modified_property(), "direction": "ASCENDING"}],
                "properties": wanted,
                "limit": LIMIT,
            });
            if let Some(after) = after {
                body["after"] = Value::String(after);
            }
            HttpRequest::post_json(format!("/crm/v3/objects/{}/search", object.plural()), &body)
        }
        Stage::ArchivedContacts => {
            let request = HttpRequest::get("/crm/v3/objects/contacts")
                .query("archived", "true")
                .query("limit", LIMIT.to_string());
            match after {
                Some(after) => request.query("after", after),
                None => request,
            }
        }
    }))
}

/// The events of a page the host fetched for [`poll_request`], the cursor after it, and
/// whether the run goes on.
pub fn handle_page(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
    let settings = Settings::new(ctx)?;
    let mut cursor = Cursor::parse(page.cursor.as_deref());
    let (stage, _) = cursor.position(&settings);
    if !(200..300).contains(&page.status) {
        return Err(AdapterError::failed(format!(
            "HubSpot answered {} to the {} request: {}",
            page.status,
            stage.name(),
            String::from_utf8_lossy(&page.body[..page.body.len().min(200)])
        )));
    }
    check_json(page.content_type.as_deref())?;
    let body: Value = page.json()?;
    let read = poll::read_page(&body, stage, ctx, &settings)?;
    // Only searches are filtered by time; the archived list is walked whole.
    let newest = match stage {
        Stage::Live(_) => cursor.newest.max(read.newest),
        Stage::ArchivedContacts => None,
    };
    cursor.list = Some(stage.name().to_owned());
    let more = match (stage, read.after) {
        (Stage::Live(object), Some(after))
            if after.parse::<u64>().is_ok_and(|n| n >= SEARCH_WINDOW) =>
        {
            // HubSpot refuses to page a search past 10,000 results: search again from the
            // newest change seen (the walk is sorted by it).
            advance(&mut cursor, object.plural(), newest);
            true
        }
        (_, Some(after)) => {
            cursor.after = Some(after);
            cursor.newest = newest;
            true
        }
        (stage, None) => {
            if let Stage::Live(object) = stage {
                advance(&mut cursor, object.plural(), newest);
            }
            cursor.after = None;
            cursor.newest = None;
            cursor.list = settings.poll_list_after(stage).map(|s| s.name().to_owned());
            cursor.list.is_some()
        }
    };
    Ok(PollOutput::new(read.events)
        .next_cursor(cursor.to_json())
        .more(more)
        .records(read.records))
}

/// Ends a walk of `list`: the next search starts after the newest change it saw.
fn advance(cursor: &mut Cursor, list: &str, newest: Option<u64>) {
    if let Some(newest) = newest {
        let since = cursor.since.entry(list.to_owned()).or_default();
        *since = (*since).max(newest);
    }
    cursor.after = None;
    cursor.newest = None;
}
