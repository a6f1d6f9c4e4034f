//! Polling through the host: `poll_request` names each request, `handle_poll` reads the host's
//! answer.

use std::collections::BTreeMap;

use crm_adapter_sdk::{HttpRequest, PollPage};

use super::*;

const CONTACTS_1: &str = include_str!("../../fixtures/search-contacts-page-1.json");
const CONTACTS_2: &str = include_str!("../../fixtures/search-contacts-page-2.json");
const COMPANIES_EMPTY: &str = include_str!("../../fixtures/search-companies-empty.json");
const DEALS: &str = include_str!("../../fixtures/search-deals.json");
const UNAUTHORIZED: &str = include_str!("../../fixtures/error-unauthorized.json");

/// 2025-12-01T13:00:40Z, 14:06:12.250Z and 14:20:45.120Z in epoch milliseconds: the newest
/// changes of the fixtures' pages.
const CONTACTS_1_NEWEST: u64 = 1_764_594_040_000;
const CONTACTS_2_NEWEST: u64 = 1_764_597_972_250;
const DEALS_NEWEST: u64 = 1_764_598_845_120;

fn api_ctx() -> Context {
    ctx().with_api_base_url("https://api.hubapi.com")
}

fn request(cursor: Option<&str>, ctx: &Context) -> HttpRequest {
    HubSpot::poll_request(cursor, ctx)
        .unwrap()
        .expect("a request")
}

fn answer(request: HttpRequest, cursor: Option<&str>, status: u16, body: &str) -> PollPage {
    let mut page = testing::poll_page(body)
        .with_request(request)
        .with_status(status);
    if let Some(cursor) = cursor {
        page = page.with_cursor(cursor);
    }
    page
}

/// One step of a run as the host drives it, answered 200 with `body`.
fn step(cursor: Option<&str>, body: &str, ctx: &Context) -> (HttpRequest, PollOutput) {
    let req = request(cursor, ctx);
    let out = testing::run_poll::<HubSpot>(&answer(req.clone(), cursor, 200, body), ctx).unwrap();
    (req, out)
}

fn body(req: &HttpRequest) -> Value {
    serde_json::from_slice(req.body.as_deref().expect("a body")).unwrap()
}

fn keys(events: &[Event]) -> Vec<(&str, &str)> {
    events
        .iter()
        .map(|e| {
            assert_eq!(e.dedupe_key_str(), e.idempotency_key_str());
            (e.event_type(), e.idempotency_key_str().unwrap_or_default())
        })
        .collect()
}

/// The contacts search from `since` (`GTE`), as the adapter makes every one: never an `after`.
fn contact_search(since: u64) -> Value {
    json!({
        "filterGroups": [{"filters": [
            {"propertyName": "lastmodifieddate", "operator": "GTE", "value": since.to_string()}
        ]}],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["lastmodifieddate", "createdate", "email", "firstname", "lastname",
                       "phone", "company", "jobtitle", "lifecyclestage", "hubspot_owner_id",
                       "total_revenue", "recent_deal_amount"],
        "limit": 100,
    })
}

#[test]
fn a_run_searches_each_type_for_changes_then_walks_the_archived_contacts() {
    let ctx = api_ctx();
    // First page ever: every contact, oldest change first.
    let (req, first) = step(None, CONTACTS_1, &ctx);
    assert_eq!(req.method, "POST");
    assert_eq!(req.url, "/crm/v3/objects/contacts/search");
    assert!(req.query.is_empty());
    assert_eq!(req.headers[0].name, "content-type");
    assert_eq!(req.headers[0].value, "application/json");
    assert_eq!(body(&req), contact_search(0));
    assert_eq!(
        keys(&first.events),
        [
            (
                "contact.created",
                "contacts/90211@2025-12-01T09:52:13.905Z/created"
            ),
            (
                "contact.created",
                "contacts/90305@2025-12-01T13:00:40Z/created"
            ),
        ]
    );
    assert!(first.more);
    assert_eq!(first.records, Some(2));
    // The boundary moves to the newest change read; the record read at it is remembered.
    let cursor = first.next_cursor.unwrap();
    assert_eq!(
        cursor,
        format!(
            r#"{{"since":{{"contacts":{CONTACTS_1_NEWEST}}},"list":"contacts","seen":["90305"]}}"#
        )
    );

    // The next page is a new search from that boundary, not an offset into the first one.
    let (req, second) = step(Some(&cursor), CONTACTS_2, &ctx);
    assert_eq!(body(&req), contact_search(CONTACTS_1_NEWEST));
    assert_eq!(
        keys(&second.events),
        [(
            "contact.created",
            "contacts/90412@2025-12-01T14:06:12.25Z/created"
        )]
    );
    // An empty property is a cleared one.
    assert_eq!(
        second.events[0].payload_value()["properties"]["phone"],
        Value::Null
    );
    let cursor = second.next_cursor.unwrap();
    assert_eq!(
        cursor,
        format!(r#"{{"since":{{"contacts":{CONTACTS_2_NEWEST}}},"list":"companies"}}"#)
    );
    assert!(second.more);

    let (req, third) = step(Some(&cursor), COMPANIES_EMPTY, &ctx);
    assert_eq!(req.url, "/crm/v3/objects/companies/search");
    let search = body(&req);
    assert_eq!(
        search["filterGroups"][0]["filters"][0]["propertyName"],
        "hs_lastmodifieddate"
    );
    assert_eq!(search["sorts"][0]["propertyName"], "hs_lastmodifieddate");
    assert!(third.events.is_empty() && third.more);
    assert_eq!(third.records, Some(0));
    let cursor = third.next_cursor.unwrap();
    assert_eq!(
        cursor,
        format!(r#"{{"since":{{"contacts":{CONTACTS_2_NEWEST}}},"list":"deals"}}"#),
        "an empty walk leaves its list's `since` unset"
    );

    let (req, fourth) = step(Some(&cursor), DEALS, &ctx);
    assert_eq!(req.url, "/crm/v3/objects/deals/search");
    assert_eq!(
        keys(&fourth.events),
        [
            (
                "deal.created",
                "deals/7305519822@2025-12-01T12:00:00.482Z/created"
            ),
            (
                "deal.created",
                "deals/7305519900@2025-12-01T14:20:45.12Z/created"
            ),
            ("deal.won", "deals/7305519900@2025-12-01T14:20:45.12Z/won"),
        ]
    );
    assert_eq!(
        fourth.events[2].payload_value()["properties"]["hs_arr"],
        "12500"
    );
    let cursor = fourth.next_cursor.unwrap();

    // Deleted contacts: the archived list, whole.
    let (req, last) = step(Some(&cursor), POLL_CONTACTS_ARCHIVED, &ctx);
    assert_eq!(
        req,
        HttpRequest::get("/crm/v3/objects/contacts")
            .query("archived", "true")
            .query("limit", "100")
    );
    // 90211 was known: deleted. 90177 never was: nothing to tell.
    assert_eq!(
        keys(&last.events),
        [(
            "contact.deleted",
            "contacts/90211@2025-12-03T16:20:00Z/deleted"
        )]
    );
    assert!(!last.more, "the run ends after the last list");
    assert_eq!(last.records, Some(2), "two archived contacts, one event");
    assert_eq!(
        last.next_cursor.as_deref(),
        Some(
            format!(r#"{{"since":{{"contacts":{CONTACTS_2_NEWEST},"deals":{DEALS_NEWEST}}}}}"#)
                .as_str()
        )
    );
}

#[test]
fn the_next_run_searches_from_the_newest_change_and_unchanged_records_emit_nothing() {
    let ctx = api_ctx();
    let mut cursor = None;
    for page in [
        CONTACTS_1,
        CONTACTS_2,
        COMPANIES_EMPTY,
        DEALS,
        POLL_CONTACTS_ARCHIVED,
    ] {
        cursor = step(cursor.as_deref(), page, &ctx).1.next_cursor;
    }
    let cursor = cursor.unwrap();
    // The same records again (a retried page, a search index behind): nothing new.
    let (req, out) = step(Some(&cursor), CONTACTS_2, &ctx);
    // From the newest change of the last walk, that millisecond included: a record saved in
    // it after the walk's last page is not lost; the ones read again emit nothing.
    assert_eq!(body(&req), contact_search(CONTACTS_2_NEWEST));
    assert!(out.events.is_empty(), "{:?}", keys(&out.events));
    assert_eq!(out.records, Some(1), "unchanged records are still seen");
    assert!(
        out.next_cursor
            .unwrap()
            .contains(&format!(r#""contacts":{CONTACTS_2_NEWEST}"#))
    );
    // An archived list seen again: a deletion is told once.
    let at_archived = r#"{"list":"archived-contacts"}"#;
    let (_, out) = step(Some(at_archived), POLL_CONTACTS_ARCHIVED, &ctx);
    assert!(out.events.is_empty());
    assert_eq!(out.records, Some(2));
}

#[test]
fn the_archived_list_is_paged_with_after() {
    let ctx = api_ctx();
    let page = patched(POLL_CONTACTS_ARCHIVED, |b| {
        b["paging"] = json!({"next": {"after": "90177",
            "link": "https://api.hubapi.com/crm/v3/objects/contacts?archived=true&after=90177"}});
    });
    let (_, out) = step(Some(r#"{"list":"archived-contacts"}"#), &page, &ctx);
    assert!(out.more);
    let cursor = out.next_cursor.unwrap();
    assert_eq!(cursor, r#"{"list":"archived-contacts","after":"90177"}"#);
    assert_eq!(
        request(Some(&cursor), &ctx),
        HttpRequest::get("/crm/v3/objects/contacts")
            .query("archived", "true")
            .query("limit", "100")
            .query("after", "90177")
    );
}

#[test]
fn searches_never_page_with_after_so_the_ten_thousand_result_window_never_applies() {
    let ctx = api_ctx();
    // HubSpot refuses `after` past 10,000; the walk never sends one: the page after any page
    // is a new search from the newest change read.
    let page = patched(CONTACTS_1, |b| {
        b["paging"]["next"]["after"] = json!("10000")
    });
    let cursor = r#"{"since":{"contacts":1},"list":"contacts"}"#;
    let (req, out) = step(Some(cursor), &page, &ctx);
    assert_eq!(body(&req), contact_search(1));
    assert!(out.more);
    let cursor = out.next_cursor.unwrap();
    assert_eq!(
        body(&request(Some(&cursor), &ctx)),
        contact_search(CONTACTS_1_NEWEST)
    );
}

#[test]
fn a_cursor_of_the_offset_walk_starts_its_list_again_from_since() {
    let ctx = api_ctx();
    // Written by the adapter's earlier version: an offset into a search from `since`. The
    // offset is dropped; the list is searched again from its `since` (what was read again
    // emits nothing).
    let old = r#"{"since":{"contacts":5,"deals":7},"list":"contacts","after":"200","newest":9}"#;
    let (req, out) = step(Some(old), CONTACTS_2, &ctx);
    assert_eq!(body(&req), contact_search(5));
    assert_eq!(
        out.next_cursor.as_deref(),
        Some(
            format!(
                r#"{{"since":{{"contacts":{CONTACTS_2_NEWEST},"deals":7}},"list":"companies"}}"#
            )
            .as_str()
        )
    );
}

#[test]
fn an_answer_other_than_2xx_fails_the_page_and_keeps_the_state() {
    let ctx = api_ctx();
    for status in [400, 401, 404, 500] {
        let page = answer(request(None, &ctx), None, status, UNAUTHORIZED);
        let err = testing::run_poll::<HubSpot>(&page, &ctx).unwrap_err();
        assert!(
            matches!(&err, AdapterError::Failed(m)
                if m.starts_with(&format!("HubSpot answered {status} to the contacts request: {{"))),
            "{err}"
        );
        assert!(testing::state().is_empty());
    }
}

#[test]
fn settings_choose_the_lists_and_add_properties() {
    let ctx = api_ctx()
        .with_setting(POLL_OBJECTS_SETTING, "deals,archived-contacts")
        .with_setting("poll_properties.deals", "commission_rate, dealname");
    let req = request(None, &ctx);
    assert_eq!(req.url, "/crm/v3/objects/deals/search");
    let properties = body(&req)["properties"].clone();
    let properties = properties.as_array().unwrap();
    assert_eq!(properties[0], "hs_lastmodifieddate");
    assert_eq!(properties.last().unwrap(), "commission_rate");
    assert_eq!(properties.iter().filter(|p| *p == "dealname").count(), 1);
    // A cursor naming a list no longer polled starts the run over.
    let req = request(Some(r#"{"list":"companies","after":"7"}"#), &ctx);
    assert_eq!(req.url, "/crm/v3/objects/deals/search");
    assert!(body(&req).get("after").is_none());
    // A pushed page's cursor (or anything not this adapter's) starts over too, with a warning.
    let req = request(Some("deals:7305519912"), &ctx);
    assert!(body(&req).get("after").is_none());
    assert!(
        testing::logs()
            .iter()
            .any(|l| l.level == Level::Warn && l.message.contains("starting over"))
    );
    let bad = api_ctx().with_setting(POLL_OBJECTS_SETTING, "tickets");
    assert!(matches!(
        HubSpot::poll_request(None, &bad),
        Err(AdapterError::Failed(_))
    ));
}

#[test]
fn a_connection_without_api_access_names_no_request() {
    assert_eq!(HubSpot::poll_request(None, &ctx()), Ok(None));
}

#[test]
fn an_org_connection_without_a_default_org_emits_for_its_own_org() {
    let ctx = testing::context()
        .with_connection_org("org-west")
        .with_setting("portal_org.5550001", "org-east")
        .with_org("org-east")
        .with_api_base_url("https://api.hubapi.com");
    let (_, out) = step(None, CONTACTS_1, &ctx);
    assert!(out.events.iter().all(|e| e.org_id() == Some("org-west")));
    // Webhooks too, from a portal the settings do not map; a mapped one keeps its org.
    let events = webhook_with(CONTACT_CREATION, &ctx).unwrap();
    assert_eq!(events[0].org_id(), Some("org-west"));
    let mapped = CONTACT_CREATION.replace("4471902", "5550001");
    assert_eq!(
        webhook_with(&mapped, &ctx).unwrap()[0].org_id(),
        Some("org-east")
    );
}

#[test]
fn no_answer_makes_the_adapter_panic() {
    let ctx = api_ctx();
    let cursors = [None, Some(r#"{"list":"archived-contacts"}"#)];
    for body in [CONTACTS_1, CONTACTS_2, COMPANIES_EMPTY, DEALS, UNAUTHORIZED] {
        for end in 0..body.len() {
            for cursor in cursors {
                let page = answer(request(cursor, &ctx), cursor, 200, &body[..end]);
                let _ = HubSpot::handle_poll(&page, &ctx);
            }
        }
    }
}

// --- Walks against a search stand-in ----------------------------------------------------

/// 2025-12-01T10:00:00Z in epoch milliseconds: the stand-in's records are saved after it.
const BASE: u64 = 1_764_583_200_000;

/// `BASE` plus `secs` seconds.
fn at(secs: u64) -> u64 {
    BASE + secs * 1000
}

/// A stand-in for HubSpot's deal search: deals with a modification time each, answered as
/// HubSpot answers a search (the filters of one group AND'ed, one sort, ties in id order,
/// `after` an offset into the result as it is now), at most `page` records a page.
struct Search {
    /// Id to modification time (epoch milliseconds) and deal name.
    deals: BTreeMap<String, (u64, String)>,
    page: usize,
}

impl Search {
    fn new(page: usize, deals: &[(&str, u64)]) -> Self {
        let deals = deals
            .iter()
            .map(|(id, at)| ((*id).to_owned(), (*at, format!("Deal {id}"))))
            .collect();
        Self { deals, page }
    }

    /// A change to the deal, saved at `at`.
    fn save(&mut self, id: &str, at: u64) {
        let deal = self.deals.get_mut(id).expect("a known deal");
        *deal = (at, format!("Deal {id}, saved at {at}"));
    }

    fn answer(&self, req: &HttpRequest) -> String {
        assert_eq!(
            (req.method.as_str(), req.url.as_str()),
            ("POST", "/crm/v3/objects/deals/search")
        );
        let body = body(req);
        let groups = body["filterGroups"].as_array().unwrap();
        assert_eq!(groups.len(), 1, "{body}");
        let value = |id: &str, at: u64, property: &str| -> u64 {
            match property {
                "hs_lastmodifieddate" => at,
                "hs_object_id" => id.parse().unwrap(),
                other => panic!("the stand-in does not filter or sort on {other}"),
            }
        };
        let filters = groups[0]["filters"].as_array().unwrap();
        let mut matches: Vec<(&str, u64, &str)> = self
            .deals
            .iter()
            .map(|(id, (at, name))| (id.as_str(), *at, name.as_str()))
            .filter(|(id, at, _)| {
                filters.iter().all(|f| {
                    let have = value(id, *at, f["propertyName"].as_str().unwrap());
                    let want: u64 = f["value"].as_str().unwrap().parse().unwrap();
                    match f["operator"].as_str().unwrap() {
                        "GT" => have > want,
                        "GTE" => have >= want,
                        "LTE" => have <= want,
                        other => panic!("the stand-in does not know {other}"),
                    }
                })
            })
            .collect();
        let sorts = body["sorts"].as_array().unwrap();
        assert_eq!(sorts.len(), 1, "HubSpot sorts a search by one property");
        assert_eq!(sorts[0]["direction"], "ASCENDING");
        let sort = sorts[0]["propertyName"].as_str().unwrap();
        matches.sort_by_key(|(id, at, _)| (value(id, *at, sort), id.parse::<u64>().unwrap()));
        let limit = usize::try_from(body["limit"].as_u64().unwrap())
            .unwrap()
            .min(self.page);
        let offset: usize = body
            .get("after")
            .map_or(0, |after| after.as_str().unwrap().parse().unwrap());
        let end = (offset + limit).min(matches.len());
        let results: Vec<Value> = matches[offset.min(end)..end]
            .iter()
            .map(|(id, at, name)| {
                json!({"id": id, "properties": {"hs_object_id": id, "dealname": name,
                        "dealstage": "appointmentscheduled", "hs_lastmodifieddate": iso(*at)},
                       "createdAt": "2025-12-01T09:00:00Z", "updatedAt": iso(*at),
                       "archived": false})
            })
            .collect();
        let mut answer = json!({"total": matches.len(), "results": results});
        if end < matches.len() {
            answer["paging"] = json!({"next": {"after": end.to_string()}});
        }
        answer.to_string()
    }

    /// The ids of the page at `after` of a deal search from `since` (`GT`), paged by offset
    /// as the adapter's earlier version paged it.
    fn offset_page(&self, since: u64, after: &str) -> Vec<String> {
        let body = json!({
            "filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate",
                                           "operator": "GT", "value": since.to_string()}]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "limit": 100, "after": after,
        });
        let req = HttpRequest::post_json("/crm/v3/objects/deals/search", &body);
        let answer: Value = serde_json::from_str(&self.answer(&req)).unwrap();
        answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn iso(ms: u64) -> String {
    crm_adapter_sdk::Timestamp {
        seconds: ms / 1000,
        nanoseconds: u32::try_from(ms % 1000).unwrap() * 1_000_000,
    }
    .to_rfc3339()
}

/// What a run saw.
struct Walk {
    /// The body of every search, in order.
    searches: Vec<Value>,
    /// The dedupe key of every event, in order.
    keys: Vec<String>,
    /// The records each page read.
    records: Vec<Option<u32>>,
    /// The cursor after the run.
    cursor: String,
}

/// A run over the deals (`poll_objects` = `deals`) from `cursor`, as the host drives it, with
/// the stand-in answering; `between(n, search)` runs after the `n`th page (from 1).
fn walk(
    search: &mut Search,
    cursor: Option<&str>,
    mut between: impl FnMut(usize, &mut Search),
) -> Walk {
    let ctx = api_ctx().with_setting(POLL_OBJECTS_SETTING, "deals");
    let mut cursor = cursor.map(str::to_owned);
    let mut walk = Walk {
        searches: Vec::new(),
        keys: Vec::new(),
        records: Vec::new(),
        cursor: String::new(),
    };
    for n in 1..=50 {
        let (req, out) = step(
            cursor.as_deref(),
            &search.answer(&request(cursor.as_deref(), &ctx)),
            &ctx,
        );
        walk.searches.push(body(&req));
        walk.keys
            .extend(keys(&out.events).into_iter().map(|(_, key)| key.to_owned()));
        walk.records.push(out.records);
        cursor = out.next_cursor;
        between(n, search);
        if !out.more {
            walk.cursor = cursor.unwrap();
            return walk;
        }
    }
    panic!("the run did not end within 50 pages");
}

/// `deals/<id>@<at>/<action>`.
fn key(id: &str, at: u64, action: &str) -> String {
    format!("deals/{id}@{}/{action}", iso(at))
}

/// Every key once, none other.
fn assert_once(keys: &[String], expected: &[String]) {
    let mut sorted = keys.to_vec();
    sorted.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(sorted, want, "in order: {keys:?}");
}

/// A deal search from `since` (`GTE`), as every search of a walk but those by id.
fn deal_search(since: u64) -> Value {
    json!([{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE",
                         "value": since.to_string()}]}])
}

#[test]
fn a_record_saved_mid_walk_moves_behind_the_others_and_none_is_skipped() {
    let ids = [
        "7305510001",
        "7305510002",
        "7305510003",
        "7305510004",
        "7305510005",
    ];
    let mut search = Search::new(
        2,
        &[
            (ids[0], at(1)),
            (ids[1], at(2)),
            (ids[2], at(3)),
            (ids[3], at(4)),
            (ids[4], at(5)),
        ],
    );
    let walk = walk(&mut search, None, |page, search| {
        if page == 1 {
            // Saved after the first page: it moves to the end of the sorted result, and every
            // record behind it one place forward. The offset the first page named now holds
            // 0004 and 0005: an offset walk would skip 0003, and then search from 0001's new
            // time, past 0003's, for good.
            search.save(ids[0], at(9));
            assert_eq!(search.offset_page(0, "2"), [ids[3], ids[4]]);
        }
    });
    let mut expected: Vec<String> = ids
        .iter()
        .zip(1..)
        .map(|(id, secs)| key(id, at(secs), "created"))
        .collect();
    expected.push(key(ids[0], at(9), "updated"));
    assert_once(&walk.keys, &expected);
    // Each search starts from the newest change the walk has read.
    let filters: Vec<Value> = walk
        .searches
        .iter()
        .map(|b| b["filterGroups"].clone())
        .collect();
    assert_eq!(
        filters,
        [
            deal_search(0),
            deal_search(at(2)),
            deal_search(at(3)),
            deal_search(at(4)),
            deal_search(at(5))
        ]
    );
    assert!(walk.searches.iter().all(|b| b.get("after").is_none()));
    // The record read at the boundary and returned again is not read twice.
    assert_eq!(walk.records, [Some(2), Some(1), Some(1), Some(1), Some(1)]);
    assert_eq!(walk.cursor, format!(r#"{{"since":{{"deals":{}}}}}"#, at(9)));
}

#[test]
fn records_saved_in_one_millisecond_across_a_page_boundary_are_read_once() {
    let ids = [
        "7305510001",
        "7305510002",
        "7305510003",
        "7305510004",
        "7305510005",
        "7305510006",
        "7305510007",
    ];
    let times = [at(1), at(2), at(3), at(3), at(3), at(4), at(5)];
    let deals: Vec<(&str, u64)> = ids.iter().copied().zip(times).collect();
    let mut search = Search::new(4, &deals);
    let walk = walk(&mut search, None, |_, _| {});
    let expected: Vec<String> = deals
        .iter()
        .map(|(id, at)| key(id, *at, "created"))
        .collect();
    assert_once(&walk.keys, &expected);
    // The first page ends in the middle of the records saved at 3 s: the next search starts
    // there, skips the two the walk has read, and reads the third.
    assert_eq!(walk.searches[1]["filterGroups"], deal_search(at(3)));
    assert_eq!(walk.records, [Some(4), Some(2), Some(1)]);
    assert_eq!(walk.searches.len(), 3);
}

#[test]
fn more_records_in_one_millisecond_than_a_page_holds_are_walked_by_id() {
    let ids = [
        "7305510001",
        "7305510002",
        "7305510003",
        "7305510004",
        "7305510005",
        "7305510006",
        "7305510007",
    ];
    // A bulk update: five deals saved in the same millisecond, pages of two.
    let times = [at(1), at(2), at(2), at(2), at(2), at(2), at(3)];
    let deals: Vec<(&str, u64)> = ids.iter().copied().zip(times).collect();
    let mut search = Search::new(2, &deals);
    let walk = walk(&mut search, None, |page, search| {
        if page == 4 {
            // One of them saved again while they are walked: read again after them.
            search.save(ids[3], at(7));
        }
    });
    let mut expected: Vec<String> = deals
        .iter()
        .map(|(id, at)| key(id, *at, "created"))
        .collect();
    expected.push(key(ids[3], at(7), "updated"));
    assert_once(&walk.keys, &expected);
    let id_search = |after: Option<&str>| {
        let mut filters = vec![
            json!({"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": at(2).to_string()}),
            json!({"propertyName": "hs_lastmodifieddate", "operator": "LTE", "value": at(2).to_string()}),
        ];
        if let Some(after) = after {
            filters.push(json!({"propertyName": "hs_object_id", "operator": "GT", "value": after}));
        }
        json!([{"filters": filters}])
    };
    let filters: Vec<Value> = walk
        .searches
        .iter()
        .map(|b| b["filterGroups"].clone())
        .collect();
    assert_eq!(
        filters,
        [
            deal_search(0),
            // Only records of 2 s, 0002 already read: the boundary cannot move.
            deal_search(at(2)),
            // So the records of 2 s are walked by id...
            id_search(None),
            id_search(Some(ids[2])),
            id_search(Some(ids[4])),
            // ...then the walk goes on after that millisecond.
            deal_search(at(2) + 1),
        ]
    );
    for search in &walk.searches[2..5] {
        assert_eq!(
            search["sorts"],
            json!([{"propertyName": "hs_object_id", "direction": "ASCENDING"}])
        );
    }
    assert_eq!(
        walk.records,
        [Some(2), Some(1), Some(0), Some(2), Some(1), Some(2)]
    );
}

#[test]
fn the_next_run_reads_the_boundary_millisecond_again_and_emits_only_news() {
    let ids = ["7305510001", "7305510002", "7305510003"];
    let mut search = Search::new(2, &[(ids[0], at(1)), (ids[1], at(2))]);
    let first = walk(&mut search, None, |_, _| {});
    assert_eq!(
        first.cursor,
        format!(r#"{{"since":{{"deals":{}}}}}"#, at(2))
    );
    // Saved in the millisecond the last walk ended with, after its last page.
    search
        .deals
        .insert(ids[2].into(), (at(2), "Deal late".into()));
    let second = walk(&mut search, Some(&first.cursor), |_, _| {});
    assert_eq!(second.searches[0]["filterGroups"], deal_search(at(2)));
    assert_once(&second.keys, &[key(ids[2], at(2), "created")]);
    let third = walk(&mut search, Some(&second.cursor), |_, _| {});
    assert!(third.keys.is_empty());
}

#[test]
fn a_search_page_the_walk_cannot_go_on_from_is_a_bad_request() {
    let ctx = api_ctx().with_setting(POLL_OBJECTS_SETTING, "deals");
    let more = |results: Value| {
        json!({"results": results, "paging": {"next": {"after": "2"}}}).to_string()
    };
    let untimed = json!([{"id": "7305510001", "properties": {"dealname": "x"}}]);
    let by_id = r#"{"since":{"deals":5},"list":"deals","ties":{"after":"7305510009"}}"#;
    for (cursor, body) in [
        (None, more(untimed.clone())),
        (Some(by_id), more(json!([]))),
        (Some(by_id), more(untimed)),
    ] {
        let page = answer(request(cursor, &ctx), cursor, 200, &body);
        let err = testing::run_poll::<HubSpot>(&page, &ctx).unwrap_err();
        assert!(
            matches!(&err, AdapterError::BadRequest(m) if m.contains("the walk cannot go on")),
            "{err}"
        );
        assert!(testing::state().is_empty());
    }
}

fn patched(fixture: &str, patch: impl FnOnce(&mut Value)) -> String {
    let mut body: Value = serde_json::from_str(fixture).unwrap();
    patch(&mut body);
    body.to_string()
}
