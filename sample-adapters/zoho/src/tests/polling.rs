//! Polling through the host (`poll_request` / `handle_poll` with the host's answers) and
//! notifications whose records are read through `http::fetch`.

use std::collections::BTreeMap;

use crm_adapter_sdk::fields::parse_timestamp;
use crm_adapter_sdk::log::Level;
use crm_adapter_sdk::{HttpRequest, PollPage};

use super::*;

const DEALS_1: &str = include_str!("../../fixtures/v5-deals-page-1.json");
const DEALS_2: &str = include_str!("../../fixtures/v5-deals-page-2.json");
const DEALS_DELETED: &str = include_str!("../../fixtures/v5-deals-deleted.json");
const CONTACTS_BY_IDS: &str = include_str!("../../fixtures/v5-contacts-by-ids.json");
const INVALID_TOKEN: &str = include_str!("../../fixtures/error-invalid-token.json");
const TOKEN_EXPIRED: &str = include_str!("../../fixtures/error-page-token-expired.json");

const PAGE_TOKEN: &str = "c8582e7f6a1d3b9c0e4f5a6b7c8d9e0f1a2b3c4d5e6f70819";
const DEAL_FIELDS: &str = "Deal_Name,Stage,Amount,Expected_Revenue,Probability,Closing_Date,\
    Type,Lead_Source,Currency,Exchange_Rate,Account_Name,Contact_Name,Owner,Modified_Time";
const CONTACT_FIELDS: &str = "First_Name,Last_Name,Email,Phone,Mobile,Title,Department,\
    Lead_Source,Mailing_City,Mailing_State,Mailing_Country,Account_Name,Owner,Modified_Time";

fn api_ctx() -> Context {
    ctx().with_api_base_url("https://www.zohoapis.com")
}

fn deals_ctx() -> Context {
    api_ctx().with_setting(api::POLL_MODULES_SETTING, "Deals")
}

fn request(cursor: Option<&str>, ctx: &Context) -> HttpRequest {
    Zoho::poll_request(cursor, ctx).unwrap().expect("a request")
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

/// One step of a run as the host drives it, answered `status` with `body`.
fn step(cursor: Option<&str>, status: u16, body: &str, ctx: &Context) -> (HttpRequest, PollOutput) {
    let req = request(cursor, ctx);
    let out = testing::run_poll::<Zoho>(&answer(req.clone(), cursor, status, body), ctx).unwrap();
    (req, out)
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

/// A listing of the deals, oldest change first, as every one the adapter makes.
fn deals_list() -> HttpRequest {
    HttpRequest::get("/crm/v5/Deals")
        .query("fields", DEAL_FIELDS)
        .query("per_page", "200")
        .query("sort_by", "Modified_Time")
        .query("sort_order", "asc")
}

fn deleted_deals() -> HttpRequest {
    HttpRequest::get("/crm/v5/Deals/deleted")
        .query("type", "all")
        .query("per_page", "200")
}

#[test]
fn a_run_lists_the_modified_records_then_the_deleted_ones() {
    let ctx = deals_ctx();
    // First page ever: everything, no If-Modified-Since.
    let (req, first) = step(None, 200, DEALS_1, &ctx);
    assert_eq!(req, deals_list());
    assert_eq!(
        keys(&first.events),
        [
            (
                "deal.created",
                "Deals/5725767000001148082@2025-12-01T10:00:00Z/created"
            ),
            (
                "deal.created",
                "Deals/5725767000001148083@2025-12-01T10:35:12Z/created"
            ),
        ]
    );
    assert_eq!(first.events[0].payload_value()["amount"], "48250.50");
    assert!(first.more);
    assert_eq!(first.records, Some(2));
    // The boundary moves to the newest second read; the page token is not used.
    let cursor = first.next_cursor.unwrap();
    assert_eq!(
        cursor,
        r#"{"since":{"Deals":"2025-12-01T10:35:12+00:00"},"list":"Deals"}"#
    );

    // The next page is a new listing from that second (asked one second before it, so that
    // its records are listed again however Zoho reads the header).
    let (req, second) = step(Some(&cursor), 200, DEALS_2, &ctx);
    assert_eq!(
        req,
        deals_list().header("If-Modified-Since", "2025-12-01T10:35:11+00:00")
    );
    assert_eq!(
        keys(&second.events),
        [(
            "deal.created",
            "Deals/5725767000001148084@2025-12-01T10:50:00Z/created"
        )]
    );
    assert_eq!(second.events[0].payload_value()["exchange_rate"], "1.0825");
    assert!(second.more, "the deletions are still to list");
    assert_eq!(second.records, Some(1));
    let cursor = second.next_cursor.unwrap();
    assert_eq!(
        cursor,
        r#"{"since":{"Deals":"2025-12-01T10:50:00+00:00"},"list":"Deals/deleted"}"#
    );

    // Deletions: a known deal is deleted; one never seen is not news.
    let (req, last) = step(Some(&cursor), 200, DEALS_DELETED, &ctx);
    assert_eq!(req, deleted_deals());
    assert_eq!(
        keys(&last.events),
        [(
            "deal.deleted",
            "Deals/5725767000001148083@2025-12-02T08:00:00Z/deleted"
        )]
    );
    assert_eq!(
        last.events[0].payload_value(),
        json!({"deal_id": "5725767000001148083", "external_id": "5725767000001148083",
               "external_source": "zoho", "occurred_at": "2025-12-02T08:00:00Z"})
    );
    assert!(!last.more);
    assert_eq!(last.records, Some(2), "two deleted records, one event");
    assert_eq!(
        last.next_cursor.as_deref(),
        Some(
            r#"{"since":{"Deals":"2025-12-01T10:50:00+00:00","Deals/deleted":"2025-12-02T08:00:00+00:00"}}"#
        )
    );
}

#[test]
fn the_next_run_asks_if_modified_since_and_304_means_nothing_new() {
    let ctx = deals_ctx();
    let mut cursor = None;
    for body in [DEALS_1, DEALS_2, DEALS_DELETED] {
        cursor = step(cursor.as_deref(), 200, body, &ctx).1.next_cursor;
    }
    let cursor = cursor.unwrap();
    let (req, out) = step(Some(&cursor), 304, "", &ctx);
    // One second before the newest change of the last walk: that second is listed again.
    assert_eq!(
        req,
        deals_list().header("If-Modified-Since", "2025-12-01T10:49:59+00:00")
    );
    assert_eq!(req.headers[0].name, "if-modified-since");
    assert!(out.events.is_empty() && out.more);
    assert_eq!(out.records, Some(0), "304 Not Modified holds no record");
    let cursor = out.next_cursor.unwrap();
    let (req, out) = step(Some(&cursor), 304, "", &ctx);
    assert_eq!(
        req,
        deleted_deals().header("If-Modified-Since", "2025-12-02T07:59:59+00:00")
    );
    assert!(out.events.is_empty() && !out.more);
    assert_eq!(out.records, Some(0));
    assert!(
        out.next_cursor
            .unwrap()
            .contains(r#""Deals":"2025-12-01T10:50:00+00:00""#)
    );
}

#[test]
fn refetched_versions_emit_nothing_and_a_restored_record_is_created_again() {
    let ctx = deals_ctx();
    let mut cursor = None;
    for body in [DEALS_1, DEALS_2, DEALS_DELETED] {
        cursor = step(cursor.as_deref(), 200, body, &ctx).1.next_cursor;
    }
    // The same deletions again: told once.
    let at_deleted = r#"{"list":"Deals/deleted"}"#;
    let (_, again) = step(Some(at_deleted), 200, DEALS_DELETED, &ctx);
    assert!(again.events.is_empty());
    assert_eq!(
        again.records,
        Some(2),
        "deletions told before are still seen"
    );
    // The first page again: 148082 is unchanged; 148083 comes back from the recycle bin.
    let (_, out) = step(cursor.as_deref(), 200, DEALS_1, &ctx);
    assert_eq!(
        keys(&out.events),
        [(
            "deal.created",
            "Deals/5725767000001148083@2025-12-01T10:35:12Z/created"
        )]
    );
    assert_eq!(out.records, Some(2), "the unchanged record is seen too");
}

#[test]
fn an_expired_page_token_lists_again_and_other_errors_fail() {
    let ctx = deals_ctx();
    // A walk through more records of one second than a page holds follows the page token.
    let cursor = format!(
        r#"{{"since":{{"Deals":"2025-12-01T10:35:12+00:00"}},"list":"Deals","page_token":"{PAGE_TOKEN}"}}"#
    );
    let (req, out) = step(Some(&cursor), 400, TOKEN_EXPIRED, &ctx);
    assert_eq!(
        req,
        deals_list()
            .query("page_token", PAGE_TOKEN)
            .header("If-Modified-Since", "2025-12-01T10:35:11+00:00")
    );
    assert!(out.events.is_empty() && out.more);
    assert_eq!(out.records, Some(0), "an error answer holds no record");
    let cursor = out.next_cursor.unwrap();
    assert_eq!(
        cursor,
        r#"{"since":{"Deals":"2025-12-01T10:35:12+00:00"},"list":"Deals"}"#
    );
    assert_eq!(
        request(Some(&cursor), &ctx),
        deals_list().header("If-Modified-Since", "2025-12-01T10:35:11+00:00")
    );
    assert!(testing::logs().iter().any(|l| l.level == Level::Warn));

    for (status, body, cursor) in [
        (400, TOKEN_EXPIRED, None),
        (401, INVALID_TOKEN, None),
        (500, "", Some(r#"{"list":"Deals/deleted","page":2}"#)),
    ] {
        let req = request(cursor, &ctx);
        let err = testing::run_poll::<Zoho>(&answer(req, cursor, status, body), &ctx).unwrap_err();
        assert!(
            matches!(&err, AdapterError::Failed(m) if m.starts_with(&format!("Zoho answered {status} to the Deals"))),
            "{err}"
        );
        assert!(testing::state().is_empty());
    }
}

#[test]
fn deleted_records_are_paged_by_number() {
    let ctx = deals_ctx();
    let more = patched(DEALS_DELETED, |b| b["info"]["more_records"] = json!(true));
    let (_, out) = step(Some(r#"{"list":"Deals/deleted"}"#), 200, &more, &ctx);
    let cursor = out.next_cursor.unwrap();
    assert_eq!(
        cursor,
        r#"{"list":"Deals/deleted","page":2,"newest":"2025-12-02T08:00:00+00:00"}"#
    );
    assert_eq!(
        request(Some(&cursor), &ctx),
        deleted_deals().query("page", "2")
    );
}

#[test]
fn the_modules_are_a_setting() {
    // Default: every module, records then deletions.
    let req = request(None, &api_ctx());
    assert_eq!(
        req,
        HttpRequest::get("/crm/v5/Contacts")
            .query("fields", CONTACT_FIELDS)
            .query("per_page", "200")
            .query("sort_by", "Modified_Time")
            .query("sort_order", "asc")
    );
    let after_contacts = r#"{"list":"Contacts/deleted"}"#;
    let out = testing::run_poll::<Zoho>(
        &answer(
            request(Some(after_contacts), &api_ctx()),
            Some(after_contacts),
            304,
            "",
        ),
        &api_ctx(),
    )
    .unwrap();
    assert_eq!(out.next_cursor.as_deref(), Some(r#"{"list":"Accounts"}"#));
    // A pushed-pages connection's `poll_module` is polled alone.
    let ctx = api_ctx().with_setting(poll::MODULE_SETTING, "Deals");
    assert_eq!(request(None, &ctx), deals_list());
    // A pushed page's cursor carries over.
    assert_eq!(
        request(Some("modified_since=2025-12-01T10:50:00+00:00"), &ctx),
        deals_list().header("If-Modified-Since", "2025-12-01T10:49:59+00:00")
    );
    for (value, expected) in [
        (
            "Deals,Leads",
            "connection setting `poll_modules`: `Leads` is not one of Contacts, Accounts, Deals",
        ),
        (",", "connection setting `poll_modules` names no module"),
    ] {
        let ctx = api_ctx().with_setting(api::POLL_MODULES_SETTING, value);
        assert_eq!(
            Zoho::poll_request(None, &ctx),
            Err(AdapterError::failed(expected))
        );
    }
    // Without API access, pages are pushed: nothing to request.
    assert_eq!(Zoho::poll_request(None, &super::ctx()), Ok(None));
}

#[test]
fn foreign_or_tampered_cursors_start_over() {
    let ctx = deals_ctx();
    assert_eq!(request(Some("page_token=abc"), &ctx), deals_list());
    let tampered = r#"{"since":{"Deals":"2025-12-01T10:50:00+00:00\r\nX-Evil: 1"},"list":"Deals"}"#;
    assert_eq!(request(Some(tampered), &ctx), deals_list());
}

// --- Walks against a listing stand-in ---------------------------------------------------

/// 2025-12-01T10:00:00Z in epoch seconds: the stand-in's records are saved after it.
const BASE: u64 = 1_764_583_200;

fn at(secs: u64) -> u64 {
    BASE + secs
}

fn utc(secs: u64) -> String {
    poll::zoho_time(crm_adapter_sdk::Timestamp {
        seconds: secs,
        nanoseconds: 0,
    })
}

/// How the stand-in reads `If-Modified-Since` (Zoho documents "modified after", which its
/// one-second times leave open): both must list everything.
#[derive(Debug, Clone, Copy)]
enum Since {
    /// Records modified after the header's second.
    After,
    /// Records modified in the header's second too.
    AtOrAfter,
}

/// A stand-in for Zoho's Deals listing: deals with a modification second each, answered as
/// Zoho answers `GET /crm/v5/Deals` (sorted by `sort_by`/`sort_order`, by id descending
/// without; `If-Modified-Since`; `304` when nothing matches it), at most `page` records a
/// page. Its page tokens (and page numbers) are positions into the listing as it is when they
/// are used: a listing that moves while it is read moves under them.
struct Listing {
    /// Id to modification second and deal name.
    deals: BTreeMap<String, (u64, String)>,
    page: usize,
    since: Since,
}

impl Listing {
    fn new(page: usize, since: Since, deals: &[(&str, u64)]) -> Self {
        let deals = deals
            .iter()
            .map(|(id, at)| ((*id).to_owned(), (*at, format!("Deal {id}"))))
            .collect();
        Self { deals, page, since }
    }

    /// A change to the deal, saved at `at`.
    fn save(&mut self, id: &str, at: u64) {
        let deal = self.deals.get_mut(id).expect("a known deal");
        *deal = (at, format!("Deal {id}, saved at {at}"));
    }

    fn answer(&self, req: &HttpRequest) -> (u16, String) {
        assert_eq!(
            (req.method.as_str(), req.url.as_str()),
            ("GET", "/crm/v5/Deals")
        );
        let param = |name: &str| {
            req.query
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let since = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("if-modified-since"))
            .map(|h| parse_timestamp(&h.value).expect("a time").seconds);
        let mut matches: Vec<(&str, u64, &str)> = self
            .deals
            .iter()
            .map(|(id, (at, name))| (id.as_str(), *at, name.as_str()))
            .filter(|(_, at, _)| match (since, self.since) {
                (None, _) => true,
                (Some(since), Since::After) => *at > since,
                (Some(since), Since::AtOrAfter) => *at >= since,
            })
            .collect();
        match (param("sort_by"), param("sort_order")) {
            (Some("Modified_Time"), Some("asc")) => matches.sort_by_key(|(id, at, _)| (*at, *id)),
            (None, None) => matches.sort_by(|a, b| b.0.cmp(a.0)),
            other => panic!("the stand-in does not sort by {other:?}"),
        }
        let per_page = param("per_page")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            .min(self.page);
        let offset = match (param("page_token"), param("page")) {
            (Some(token), _) => token.strip_prefix("at-").unwrap().parse().unwrap(),
            (None, Some(page)) => (page.parse::<usize>().unwrap() - 1) * per_page,
            (None, None) => 0,
        };
        if offset >= matches.len() {
            return (if since.is_some() { 304 } else { 204 }, String::new());
        }
        let end = (offset + per_page).min(matches.len());
        let data: Vec<Value> = matches[offset..end]
            .iter()
            .map(|(id, at, name)| {
                json!({"id": id, "Deal_Name": name, "Stage": "Qualification",
                       "Modified_Time": utc(*at)})
            })
            .collect();
        let more = end < matches.len();
        let body = json!({"data": data, "info": {
            "per_page": per_page, "count": end - offset, "page": offset / per_page + 1,
            "more_records": more, "next_page_token": more.then(|| format!("at-{end}")),
        }});
        (200, body.to_string())
    }
}

/// What a run over the deals' records saw.
struct Walk {
    /// Every request, in order.
    requests: Vec<HttpRequest>,
    /// The dedupe key of every event, in order.
    keys: Vec<String>,
    /// The cursor after the walk of the records (the deletions are next).
    cursor: String,
}

/// A walk of the deals' records from `cursor` as the host drives it, the stand-in answering;
/// `between(n, listing)` runs after the `n`th page (from 1).
fn walk(
    listing: &mut Listing,
    cursor: Option<&str>,
    mut between: impl FnMut(usize, &mut Listing),
) -> Walk {
    let ctx = deals_ctx();
    let mut cursor = cursor.map(str::to_owned);
    let mut walk = Walk {
        requests: Vec::new(),
        keys: Vec::new(),
        cursor: String::new(),
    };
    for n in 1..=50 {
        let req = request(cursor.as_deref(), &ctx);
        let (status, body) = listing.answer(&req);
        let (req, out) = step(cursor.as_deref(), status, &body, &ctx);
        walk.requests.push(req);
        walk.keys
            .extend(keys(&out.events).into_iter().map(|(_, key)| key.to_owned()));
        cursor = out.next_cursor;
        between(n, listing);
        let next = cursor.clone().unwrap();
        if next.contains(r#""list":"Deals/deleted""#) {
            walk.cursor = next;
            return walk;
        }
    }
    panic!("the walk did not end within 50 pages");
}

/// `Deals/<id>@<at>/<action>`.
fn key(id: &str, at: u64, action: &str) -> String {
    format!(
        "Deals/{id}@{}/{action}",
        crm_adapter_sdk::Timestamp {
            seconds: at,
            nanoseconds: 0
        }
        .to_rfc3339()
    )
}

/// Every key once, none other.
fn assert_once(keys: &[String], expected: &[String]) {
    let mut sorted = keys.to_vec();
    sorted.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(sorted, want, "in order: {keys:?}");
}

fn since_header(req: &HttpRequest) -> Option<&str> {
    req.headers
        .iter()
        .find(|h| h.name == "if-modified-since")
        .map(|h| h.value.as_str())
}

const IDS: [&str; 9] = [
    "5725767000001148001",
    "5725767000001148002",
    "5725767000001148003",
    "5725767000001148004",
    "5725767000001148005",
    "5725767000001148006",
    "5725767000001148007",
    "5725767000001148008",
    "5725767000001148009",
];

#[test]
fn a_record_saved_mid_walk_is_listed_again_and_none_is_missed() {
    for since in [Since::After, Since::AtOrAfter] {
        testing::reset();
        let deals: Vec<(&str, u64)> = IDS[..5]
            .iter()
            .copied()
            .zip([1, 2, 3, 4, 5].map(at))
            .collect();
        let mut listing = Listing::new(3, since, &deals);
        let walk = walk(&mut listing, None, |page, listing| {
            if page == 1 {
                // Saved after the first page (0001 to 0003), then 0005 after it:
                // listed by id, unsorted, a walk that keeps its `If-Modified-Since` and takes
                // the newest time it saw would read 0005's new time and never list 0002's.
                // Sorted, 0002 moves to the end and the records behind it one place forward:
                // the next page of the same listing would start at 0005, skipping 0004.
                listing.save(IDS[1], at(10));
                listing.save(IDS[4], at(11));
            }
        });
        // 0005 was saved again before the walk read it: its first version read is at 11 s.
        let mut expected: Vec<String> = deals[..4]
            .iter()
            .map(|(id, at)| key(id, *at, "created"))
            .collect();
        expected.push(key(IDS[1], at(10), "updated"));
        expected.push(key(IDS[4], at(11), "created"));
        assert_once(&walk.keys, &expected);
        // Oldest change first, each listing from the newest second read, never a page token.
        assert!(walk.requests.iter().all(|r| {
            r.query
                .iter()
                .all(|(n, _)| n != "page_token" && n != "page")
        }));
        assert_eq!(since_header(&walk.requests[0]), None);
        assert_eq!(
            since_header(&walk.requests[1]),
            Some(utc(at(3) - 1).as_str())
        );
        assert_eq!(
            walk.cursor,
            format!(
                r#"{{"since":{{"Deals":"{}"}},"list":"Deals/deleted"}}"#,
                utc(at(11))
            )
        );
    }
}

#[test]
fn records_of_one_second_across_a_page_boundary_are_all_listed() {
    for since in [Since::After, Since::AtOrAfter] {
        testing::reset();
        // Four a page; the first page ends between the records of 2 s.
        let times = [1, 1, 1, 2, 2, 3, 4, 5].map(at);
        let deals: Vec<(&str, u64)> = IDS.iter().copied().zip(times).collect();
        let mut listing = Listing::new(4, since, &deals);
        let walk = walk(&mut listing, None, |_, _| {});
        let expected: Vec<String> = deals
            .iter()
            .map(|(id, at)| key(id, *at, "created"))
            .collect();
        // Read again, a record emits nothing: each version is one event.
        assert_once(&walk.keys, &expected);
        assert_eq!(
            since_header(&walk.requests[1]),
            Some(utc(at(2) - 1).as_str())
        );
        assert!(walk.cursor.contains(&utc(at(5))), "{}", walk.cursor);
    }
}

#[test]
fn more_records_in_one_second_than_a_page_holds_are_paged_through() {
    for since in [Since::After, Since::AtOrAfter] {
        testing::reset();
        // A mass update: six deals saved in the same second, pages of two.
        let times = [1, 2, 2, 2, 2, 2, 2, 3].map(at);
        let deals: Vec<(&str, u64)> = IDS.iter().copied().zip(times).collect();
        let mut listing = Listing::new(2, since, &deals);
        let walk = walk(&mut listing, None, |page, listing| {
            if page == 3 {
                // Saved while that second is paged through: listed after it. (One the pages
                // have passed would move every record behind it one place forward, and a
                // page token that is a position in the listing would then skip one: see
                // "What stays open" in the README's "Polling".)
                listing.save(IDS[7], at(9));
            }
        });
        // 0008 was saved again before the walk read it: its first version read is at 9 s.
        let mut expected: Vec<String> = deals[..7]
            .iter()
            .map(|(id, at)| key(id, *at, "created"))
            .collect();
        expected.push(key(IDS[7], at(9), "created"));
        assert_once(&walk.keys, &expected);
        // A page of records of 2 s only cannot move the boundary: the walk follows that
        // listing's page token until a page goes past 2 s, then lists from there again.
        let tokens = walk
            .requests
            .iter()
            .filter(|r| r.query.iter().any(|(n, _)| n == "page_token"))
            .count();
        assert!(tokens >= 2, "{:?}", walk.requests);
        assert!(walk.cursor.contains(&utc(at(9))), "{}", walk.cursor);
    }
}

#[test]
fn the_next_walk_lists_the_boundary_second_again_and_emits_only_news() {
    for since in [Since::After, Since::AtOrAfter] {
        testing::reset();
        let mut listing = Listing::new(2, since, &[(IDS[0], at(1)), (IDS[1], at(2))]);
        let first = walk(&mut listing, None, |_, _| {});
        // Saved in the second the walk ended with, after its last page.
        listing
            .deals
            .insert(IDS[2].into(), (at(2), "Deal late".into()));
        let next = first.cursor.replace(r#","list":"Deals/deleted""#, "");
        let second = walk(&mut listing, Some(&next), |_, _| {});
        assert_eq!(
            since_header(&second.requests[0]),
            Some(utc(at(2) - 1).as_str())
        );
        assert_once(&second.keys, &[key(IDS[2], at(2), "created")]);
        let next = second.cursor.replace(r#","list":"Deals/deleted""#, "");
        assert!(walk(&mut listing, Some(&next), |_, _| {}).keys.is_empty());
    }
}

#[test]
fn a_page_past_the_second_paged_through_lists_from_its_newest_second_again() {
    let ctx = deals_ctx();
    let paging = format!(
        r#"{{"since":{{"Deals":"2025-12-01T10:35:12+00:00"}},"list":"Deals","page_token":"{PAGE_TOKEN}"}}"#
    );
    // Still more, but past 10:35:12: a new listing from 10:50:00, without the token.
    let more = patched(DEALS_2, |b| {
        b["info"]["more_records"] = json!(true);
        b["info"]["next_page_token"] = json!("f00d");
    });
    let (req, out) = step(Some(&paging), 200, &more, &ctx);
    assert_eq!(
        req,
        deals_list()
            .query("page_token", PAGE_TOKEN)
            .header("If-Modified-Since", "2025-12-01T10:35:11+00:00")
    );
    assert_eq!(
        out.next_cursor.as_deref(),
        Some(r#"{"since":{"Deals":"2025-12-01T10:50:00+00:00"},"list":"Deals"}"#)
    );
    // Only records of 10:50:00 or before, and more: the same listing's next page.
    let at_boundary = r#"{"since":{"Deals":"2025-12-01T10:50:00+00:00"},"list":"Deals"}"#;
    let (req, out) = step(Some(at_boundary), 200, &more, &ctx);
    assert_eq!(
        req,
        deals_list().header("If-Modified-Since", "2025-12-01T10:49:59+00:00")
    );
    assert_eq!(
        out.next_cursor.as_deref(),
        Some(
            r#"{"since":{"Deals":"2025-12-01T10:50:00+00:00"},"list":"Deals","page_token":"f00d"}"#
        )
    );
    // Without a token, by number.
    let numbered = patched(&more, |b| b["info"]["next_page_token"] = Value::Null);
    let (_, out) = step(Some(at_boundary), 200, &numbered, &ctx);
    let cursor = out.next_cursor.unwrap();
    assert_eq!(
        cursor,
        r#"{"since":{"Deals":"2025-12-01T10:50:00+00:00"},"list":"Deals","page":3}"#
    );
    assert_eq!(
        request(Some(&cursor), &ctx),
        deals_list()
            .query("page", "3")
            .header("If-Modified-Since", "2025-12-01T10:49:59+00:00")
    );
}

#[test]
fn a_cursor_of_the_unsorted_walk_lists_again_from_since() {
    let ctx = deals_ctx();
    // Written by the adapter's earlier version: a page token of an unsorted listing, and the
    // newest time seen. The token cannot go on with a sorted walk; the list starts over from
    // its `since`.
    let old = format!(
        r#"{{"since":{{"Deals":"2025-12-01T10:00:00+00:00"}},"list":"Deals","page_token":"{PAGE_TOKEN}","newest":"2025-12-01T10:35:12+00:00"}}"#
    );
    assert_eq!(
        request(Some(&old), &ctx),
        deals_list().header("If-Modified-Since", "2025-12-01T09:59:59+00:00")
    );
    let (_, out) = step(Some(&old), 200, DEALS_2, &ctx);
    assert_eq!(
        out.next_cursor.as_deref(),
        Some(r#"{"since":{"Deals":"2025-12-01T10:50:00+00:00"},"list":"Deals/deleted"}"#)
    );
}

#[test]
fn a_notification_reads_its_records_through_the_host() {
    let ctx = api_ctx();
    testing::respond_json(200, CONTACTS_BY_IDS);
    let req = testing::webhook(CONTACTS_INSERTED).with_header("Content-Type", "application/json");
    let events = testing::run_webhook::<Zoho>(&req, &ctx).unwrap();
    assert_eq!(
        testing::requests(),
        [HttpRequest::get("/crm/v5/Contacts")
            .query("fields", CONTACT_FIELDS)
            .query("ids", "5725767000000653010,5725767000000653011")]
    );
    assert_eq!(
        summary(&events),
        [
            (
                "contact.created".into(),
                "5725767000000653010".into(),
                "Contacts/insert/5725767000000653010/1764583200000".into()
            ),
            (
                "contact.created".into(),
                "5725767000000653011".into(),
                "Contacts/insert/5725767000000653011/1764583200000".into()
            ),
        ]
    );
    assert_eq!(
        events[0].payload_value(),
        json!({"account_id": "5725767000000652001", "account_name": "Cedar Valley Schools",
               "contact_id": "5725767000000653010", "department": "Human Resources",
               "email": "leah.okafor@cedarvalley.example.org", "external_id": "5725767000000653010",
               "external_source": "zoho", "first_name": "Leah", "last_name": "Okafor",
               "lead_source": "Trade Show", "mailing_city": "Salem",
               "mailing_country": "United States", "mailing_state": "OR",
               "occurred_at": "2025-12-01T10:00:00Z", "owner_email": "maya.fischer@example.com",
               "owner_id": "5725767000000411001", "owner_name": "Maya Fischer",
               "phone": "+1 503 555 0110", "title": "Benefits Manager"})
    );
    // Not returned (deleted since): what the notification says, and a warning.
    assert_eq!(
        events[1].payload_value(),
        json!({"contact_id": "5725767000000653011", "external_id": "5725767000000653011",
               "external_source": "zoho", "occurred_at": "2025-12-01T10:00:00Z"})
    );
    assert!(testing::logs().iter().any(|l| {
        l.level == Level::Warn
            && l.message
                .contains("5725767000000653011 was not returned by Zoho")
    }));

    // The next poll does not report again what the notification told.
    let listing = patched(CONTACTS_BY_IDS, |b| b["info"]["count"] = json!(1));
    let at_contacts = r#"{"list":"Contacts"}"#;
    let (_, out) = step(Some(at_contacts), 200, &listing, &ctx);
    assert!(out.events.is_empty(), "{:?}", keys(&out.events));
}

#[test]
fn a_notification_fails_when_its_records_cannot_be_read_and_deletions_read_nothing() {
    let ctx = api_ctx();
    testing::respond_json(500, r#"{"code":"INTERNAL_ERROR","status":"error"}"#);
    let req = testing::webhook(CONTACTS_INSERTED).with_header("Content-Type", "application/json");
    let err = testing::run_webhook::<Zoho>(&req, &ctx).unwrap_err();
    assert!(
        matches!(&err, AdapterError::Failed(m) if m.starts_with("the CRM answered 500")),
        "{err}"
    );
    testing::reset();
    let req = testing::webhook(CONTACT_DELETED).with_header("Content-Type", "application/json");
    testing::run_webhook::<Zoho>(&req, &ctx).unwrap();
    assert!(testing::requests().is_empty());
    // 204: none of the records is left.
    testing::respond(204, "");
    let req = testing::webhook(CONTACTS_INSERTED).with_header("Content-Type", "application/json");
    assert_eq!(testing::run_webhook::<Zoho>(&req, &ctx).unwrap().len(), 2);
}

#[test]
fn an_org_connection_without_a_default_org_emits_for_its_own_org() {
    let ctx = testing::context()
        .with_connection_org("org-9")
        .with_setting(api::POLL_MODULES_SETTING, "Deals")
        .with_api_base_url("https://www.zohoapis.com");
    let (_, out) = step(None, 200, DEALS_1, &ctx);
    assert!(out.events.iter().all(|e| e.org_id() == Some("org-9")));
    let req = testing::webhook(DEAL_UPDATED).with_header("Content-Type", "application/json");
    testing::respond(204, "");
    let events = testing::run_webhook::<Zoho>(&req, &ctx).unwrap();
    assert_eq!(events[0].org_id(), Some("org-9"));
}

#[test]
fn no_answer_makes_the_adapter_panic() {
    let ctx = deals_ctx();
    let cursors = [None, Some(r#"{"list":"Deals/deleted"}"#)];
    for body in [DEALS_1, DEALS_2, DEALS_DELETED, TOKEN_EXPIRED] {
        for end in 0..body.len() {
            for cursor in cursors {
                let page = answer(request(cursor, &ctx), cursor, 200, &body[..end]);
                let _ = Zoho::handle_poll(&page, &ctx);
            }
        }
    }
    let api = api_ctx();
    for end in 0..CONTACTS_BY_IDS.len() {
        testing::respond_json(200, &CONTACTS_BY_IDS[..end]);
        let req = testing::webhook(CONTACTS_INSERTED);
        let _ = Zoho::handle_webhook(&req, &api);
    }
}
