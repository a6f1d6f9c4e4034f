//! Polling through the host: the requests this adapter names for the host to make against
//! HubSpot's CRM v3 API (base URL `https://api.hubapi.com`; the host adds the private app's
//! or OAuth token).
//!
//! A poll **run** walks the lists of the `poll_objects` setting in order. A list of live
//! records is walked with searches sorted by modification time, oldest first, each starting
//! from the newest modification time read so far (keyset pagination, never an `after` offset
//! into a result that moves while it is read):
//!
//! ```text
//! POST /crm/v3/objects/deals/search
//! {"filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE",
//!   "value": "1764583933905"}]}], "sorts": [{"propertyName": "hs_lastmodifieddate",
//!   "direction": "ASCENDING"}], "properties": ["dealname", ...], "limit": 100}
//! ```
//!
//! The records of that boundary millisecond that the walk already read (their ids are in the
//! cursor) are skipped when the next search returns them again. A page whose records were all
//! modified in that one millisecond (more than a page of them) cannot move the boundary: those
//! records are then walked by id (`hs_lastmodifieddate` `GTE` and `LTE` it, `hs_object_id`
//! `GT` the last id read, sorted by `hs_object_id`), and the walk goes on after that
//! millisecond.
//!
//! The deleted contacts are HubSpot's list of archived contacts,
//! `GET /crm/v3/objects/contacts?archived=true&limit=100&after=...`, walked whole (it has no
//! filter), paged with `paging.next.after` until a page has none.
//!
//! The **cursor** is JSON: `{"since": {"deals": 1764583933905}, "list": "deals", "seen":
//! ["7305519900"]}`: per list the boundary (epoch milliseconds: every record modified before
//! it has been read), and while a run is under way the list it walks, the ids read at the
//! boundary, `ties` while the boundary's records are walked by id, and `after` for the
//! archived list.

use std::collections::{BTreeMap, BTreeSet};

use crm_adapter_sdk::http::HttpRequest;
use crm_adapter_sdk::serde_json::{self, Value, json};
use crm_adapter_sdk::{AdapterError, Context, PollOutput, PollPage};
use serde::{Deserialize, Serialize};

use crate::objects::Object;
use crate::poll::{self, Stage};
use crate::{Settings, check_json};

/// Records a search page asks for: HubSpot's maximum.
const LIMIT: u32 = 100;
/// The property holding a record's id, for the walk of the records modified in one
/// millisecond.
const ID_PROPERTY: &str = "hs_object_id";
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
    /// Per list (`contacts`, `companies`, `deals`), the walk's boundary in epoch milliseconds:
    /// every record modified before it has been read. The next search starts there (`GTE`);
    /// between runs it is the newest modification time the last walk read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub since: BTreeMap<String, u64>,
    /// The list being walked by the run under way; absent between runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// The ids of the records modified exactly at that list's boundary that this walk has
    /// read: skipped when a search returns them again with that same time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
    /// Present while the records modified exactly at the boundary are walked by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ties: Option<Ties>,
    /// The archived list: `paging.next.after` of its last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// The walk, by id, of the records modified in the boundary's millisecond.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ties {
    /// The greatest id read so far; absent on the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl Cursor {
    /// The cursor saved after the last page. Anything that is not this adapter's JSON (a
    /// pushed page's `deals:<after>`) starts over: change detection keeps that from emitting
    /// again what was already seen. Fields of earlier versions (a search's `after` offset and
    /// `newest`) are ignored: such a walk starts again from its list's `since`.
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

    /// The list the run walks now: the cursor's, else (no run under way, or a list no longer
    /// polled) the first, from its first page.
    fn position(&mut self, settings: &Settings) -> Stage {
        let lists = settings.poll_lists();
        match self
            .list
            .as_deref()
            .and_then(Stage::parse)
            .filter(|s| lists.contains(s))
        {
            Some(stage) => stage,
            None => {
                self.end_walk();
                lists[0]
            }
        }
    }

    /// Forgets where the walk of the current list stands (but its `since`).
    fn end_walk(&mut self) {
        self.seen.clear();
        self.ties = None;
        self.after = None;
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
    let mut cursor = Cursor::parse(cursor);
    let stage = cursor.position(&settings);
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
            let modified = object.modified_property();
            let filter = |property: &str, operator: &str, value: String| json!({"propertyName": property, "operator": operator, "value": value});
            let (filters, sort) = match &cursor.ties {
                // What changed at or after the boundary, oldest first.
                None => (vec![filter(modified, "GTE", since.to_string())], modified),
                // The records modified in the boundary's millisecond, by id.
                Some(ties) => {
                    let mut filters = vec![
                        filter(modified, "GTE", since.to_string()),
                        filter(modified, "LTE", since.to_string()),
                    ];
                    if let Some(after) = &ties.after {
                        filters.push(filter(ID_PROPERTY, "GT", after.clone()));
                    }
                    (filters, ID_PROPERTY)
                }
            };
            let body = json!({
                "filterGroups": [{"filters": filters}],
                "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
                "properties": wanted,
                "limit": LIMIT,
            });
            HttpRequest::post_json(format!("/crm/v3/objects/{}/search", object.plural()), &body)
        }
        Stage::ArchivedContacts => {
            let request = HttpRequest::get("/crm/v3/objects/contacts")
                .query("archived", "true")
                .query("limit", LIMIT.to_string());
            match cursor.after {
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
    let stage = cursor.position(&settings);
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
    cursor.list = Some(stage.name().to_owned());
    let (read, walk_ends) = match stage {
        Stage::Live(object) => {
            let list = object.plural();
            let since = cursor.since.get(list).copied().unwrap_or(0);
            // Searches have no `after` (one in a cursor of an earlier version is dropped).
            cursor.after = None;
            let seen: BTreeSet<String> = std::mem::take(&mut cursor.seen).into_iter().collect();
            // A record read at the boundary and returned again with the same time is the same
            // version: already read.
            let read = poll::read_page(&body, stage, ctx, &settings, |id, at| {
                at == Some(since) && seen.contains(id)
            })?;
            let ends = match cursor.ties.take() {
                None => search_walked(&mut cursor, list, since, seen, &read)?,
                Some(ties) => ties_walked(&mut cursor, list, since, seen, ties, &read)?,
            };
            (read, ends)
        }
        Stage::ArchivedContacts => {
            let read = poll::read_page(&body, stage, ctx, &settings, |_, _| false)?;
            cursor.after.clone_from(&read.after);
            let ends = read.after.is_none();
            (read, ends)
        }
    };
    let more = if walk_ends {
        cursor.end_walk();
        cursor.list = settings.poll_list_after(stage).map(|s| s.name().to_owned());
        cursor.list.is_some()
    } else {
        true
    };
    Ok(PollOutput::new(read.events)
        .next_cursor(cursor.to_json())
        .more(more)
        .records(read.records))
}

/// Moves `list`'s boundary after a page of its search from `since` (`GTE`, sorted by
/// modification time); whether the walk of the list ends with it.
///
/// The page holds, oldest first, every record modified before its newest one: the next search
/// starts at that newest time, and the records of the page modified then are remembered, to be
/// skipped when that search returns them again. A page that holds more but whose records were
/// all modified at `since` cannot move the boundary: the records of that millisecond are then
/// walked by id.
fn search_walked(
    cursor: &mut Cursor,
    list: &str,
    since: u64,
    mut seen: BTreeSet<String>,
    read: &poll::Page,
) -> Result<bool, AdapterError> {
    let newest = read.versions.iter().filter_map(|(_, at)| *at).max();
    let at = |time: u64| {
        read.versions
            .iter()
            .filter(move |(_, at)| *at == Some(time))
            .map(|(id, _)| id.clone())
    };
    match (read.after.is_some(), newest) {
        // The last page: every record modified at or after `since` has been read.
        (false, newest) => {
            if let Some(newest) = newest {
                let boundary = cursor.since.entry(list.to_owned()).or_default();
                *boundary = (*boundary).max(newest);
            }
            Ok(true)
        }
        (true, Some(newest)) if newest > since => {
            cursor.since.insert(list.to_owned(), newest);
            cursor.seen = at(newest).collect::<BTreeSet<_>>().into_iter().collect();
            Ok(false)
        }
        (true, Some(_)) => {
            seen.extend(at(since));
            cursor.seen = seen.into_iter().collect();
            cursor.ties = Some(Ties::default());
            Ok(false)
        }
        (true, None) => Err(AdapterError::bad_request(format!(
            "a {list} search page says there is more but none of its records has a \
             modification time: the walk cannot go on from it"
        ))),
    }
}

/// After a page of the walk, by id, of the records of `list` modified exactly at `since`:
/// the next page goes on after its greatest id; after the last one, the boundary moves past
/// that millisecond. The walk of the list never ends with such a page.
fn ties_walked(
    cursor: &mut Cursor,
    list: &str,
    since: u64,
    seen: BTreeSet<String>,
    ties: Ties,
    read: &poll::Page,
) -> Result<bool, AdapterError> {
    if read.after.is_none() {
        cursor.since.insert(list.to_owned(), since + 1);
        return Ok(false);
    }
    let last = read
        .versions
        .iter()
        .map(|(id, _)| id)
        .max_by(|a, b| id_order(a, b));
    match last {
        Some(last)
            if ties
                .after
                .as_ref()
                .is_none_or(|after| id_order(last, after).is_gt()) =>
        {
            cursor.ties = Some(Ties {
                after: Some(last.clone()),
            });
            cursor.seen = seen.into_iter().collect();
            Ok(false)
        }
        _ => Err(AdapterError::bad_request(format!(
            "a {list} search page by id says there is more but holds no id after the last one \
             read: the walk cannot go on from it"
        ))),
    }
}

/// HubSpot's ids are numbers written as text: ordered by length, then text.
fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    (a.len(), a).cmp(&(b.len(), b))
}
