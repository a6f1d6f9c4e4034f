//! Polling through the host: the requests this adapter names for the host to make against
//! Zenoti's API (base URL `https://api.zenoti.com`; the host adds the API key,
//! `Authorization: apikey ...`).
//!
//! Zenoti has no change feed, so a poll **run** reads each center's appointments by date
//! range, a week at a time (Zenoti's limit), from the day after the last one fully fetched up
//! to the week that holds today:
//!
//! ```text
//! GET /v1/appointments?center_id=b2e9d7c4-...&start_date=2025-12-05&end_date=2025-12-11
//!     &include_no_show_cancel=true
//! ```
//!
//! Change detection turns what is new or changed into events. The **cursor** is JSON:
//! `{"through": {"b2e9d7c4-...": "2025-12-04"}, "center": "b2e9d7c4-..."}`: per center the last
//! date fully fetched, and while a run is under way the center it walks.
//!
//! "Fully fetched" means fetched after the day ended everywhere: a day ends last at UTC-12,
//! twelve hours after midnight UTC. So a page fetched at `T` completes the days up to the date
//! of `T - 12h`, minus one; and the walk of a center goes on while its window ends before the
//! date of `T + 14h` (today, even at UTC+14). Adapters never read a clock: `T` is the page's
//! `fetched_at`, as the host recorded it.

use std::collections::BTreeMap;

use crm_adapter_sdk::fields::{Obj, parse_timestamp};
use crm_adapter_sdk::http::HttpRequest;
use crm_adapter_sdk::serde_json::{self, Value};
use crm_adapter_sdk::{AdapterError, Context, PollOutput, PollPage, Timestamp};
use serde::{Deserialize, Serialize};

use crate::records::Inherited;
use crate::{CENTER_ORG_PREFIX, Kind, check_json, poll_events};

/// The setting listing the centers a poll run walks, in order (comma separated).
pub const POLL_CENTERS_SETTING: &str = "poll_centers";
/// The setting naming the first date a center never polled is read from (`2025-12-01`).
pub const POLL_START_SETTING: &str = "poll_start_date";
/// Days one request covers: Zenoti answers ranges of at most seven days.
const WINDOW_DAYS: u64 = 7;
const DAY: u64 = 86_400;

/// Where a poll stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Per center, the last date fully fetched (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub through: BTreeMap<String, String>,
    /// The center being walked by the run under way; absent between runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center: Option<String>,
}

impl Cursor {
    /// The cursor saved after the last page; anything that is not this adapter's JSON starts
    /// over from `poll_start_date` (change detection keeps that from emitting again what was
    /// already seen).
    pub fn parse(text: Option<&str>) -> Self {
        let Some(text) = text else {
            return Self::default();
        };
        let mut cursor = serde_json::from_str::<Self>(text).unwrap_or_else(|_| {
            crm_adapter_sdk::warn!("the cursor `{}` is not this adapter's; starting over", {
                text.chars().take(80).collect::<String>()
            });
            Self::default()
        });
        cursor.through.retain(|_, date| day_of(date).is_some());
        cursor
    }

    /// The cursor as saved.
    pub fn to_json(&self) -> String {
        // Strings always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The center the run walks now (the first when no run is under way, or when the cursor
    /// names one no longer polled) and the first day of its next window.
    fn position<'a>(
        &self,
        centers: &'a [String],
        ctx: &Context,
    ) -> Result<(&'a str, u64), AdapterError> {
        let center = centers
            .iter()
            .find(|c| self.center.as_deref() == Some(c.as_str()))
            .unwrap_or(&centers[0]);
        let start = match self.through.get(center).and_then(|d| day_of(d)) {
            Some(day) => day + 1,
            None => {
                let date = ctx.require_setting(POLL_START_SETTING)?;
                day_of(date).ok_or_else(|| {
                    AdapterError::failed(format!(
                        "connection setting `{POLL_START_SETTING}` is `{date}`, not a date such \
                         as 2025-12-01"
                    ))
                })?
            }
        };
        Ok((center, start))
    }
}

/// The centers a poll run walks: the `poll_centers` setting, else every center a
/// `center_org.<center id>` setting maps, in the settings' order.
pub fn poll_centers(ctx: &Context) -> Result<Vec<String>, AdapterError> {
    let mut centers: Vec<String> = match ctx.setting(POLL_CENTERS_SETTING) {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect(),
        None => ctx
            .settings
            .iter()
            .filter_map(|(key, _)| key.strip_prefix(CENTER_ORG_PREFIX))
            .map(str::to_owned)
            .collect(),
    };
    let mut unique = std::collections::BTreeSet::new();
    centers.retain(|c| unique.insert(c.clone()));
    if centers.is_empty() {
        return Err(AdapterError::failed(format!(
            "no center to poll: set `{POLL_CENTERS_SETTING}` (or `{CENTER_ORG_PREFIX}<center id>`) \
             on the connection"
        )));
    }
    Ok(centers)
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
    let centers = poll_centers(ctx)?;
    let cursor = Cursor::parse(cursor);
    let (center, start) = cursor.position(&centers, ctx)?;
    Ok(Some(
        HttpRequest::get("/v1/appointments")
            .query("center_id", center)
            .query("start_date", date_of(start))
            .query("end_date", date_of(start + WINDOW_DAYS - 1))
            // Without it Zenoti leaves cancelled and no-show appointments out: their last
            // change would never be seen.
            .query("include_no_show_cancel", "true"),
    ))
}

/// The events of a page the host fetched for [`poll_request`], the cursor after it, and
/// whether the run goes on.
pub fn handle_page(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
    let centers = poll_centers(ctx)?;
    let mut cursor = Cursor::parse(page.cursor.as_deref());
    let (center, start) = cursor.position(&centers, ctx)?;
    let end = start + WINDOW_DAYS - 1;
    if !(200..300).contains(&page.status) {
        return Err(AdapterError::failed(format!(
            "Zenoti answered {} to the appointments of center {center} from {} to {}: {}",
            page.status,
            date_of(start),
            date_of(end),
            String::from_utf8_lossy(&page.body[..page.body.len().min(200)])
        )));
    }
    check_json(page.content_type.as_deref())?;
    let body: Value = page.json()?;
    let root = Obj::root(&body, "a Zenoti appointments page")?;
    // The list is the center's: its records do not always repeat it.
    let inherited = Inherited {
        center_id: Some(center.to_owned()),
        ..Inherited::default()
    };
    let appointments = root.opt_objects("appointments")?;
    let events = poll_events(Kind::Appointments, &appointments, &inherited, ctx)?;

    let fetched = page.fetched_at.seconds;
    let complete = (fetched.saturating_sub(12 * 3600) / DAY).saturating_sub(1);
    let today = (fetched + 14 * 3600) / DAY;
    // Never back, and never past what this window covered.
    let through = complete.min(end).max(start.saturating_sub(1));
    cursor.through.insert(center.to_owned(), date_of(through));
    let more = if end < today {
        cursor.center = Some(center.to_owned());
        true
    } else {
        let at = centers
            .iter()
            .position(|c| c == center)
            .map_or(0, |i| i + 1);
        cursor.center = centers.get(at).cloned();
        cursor.center.is_some()
    };
    Ok(PollOutput::new(events)
        .next_cursor(cursor.to_json())
        .more(more)
        .records(appointments.len()))
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
fn day_of(date: &str) -> Option<u64> {
    if date.len() != 10 {
        return None;
    }
    parse_timestamp(&format!("{date}T00:00:00Z")).map(|at| at.seconds / DAY)
}

/// The `YYYY-MM-DD` date of a day since 1970-01-01.
fn date_of(day: u64) -> String {
    let at = Timestamp {
        seconds: day * DAY,
        nanoseconds: 0,
    };
    at.to_rfc3339()[..10].to_owned()
}
