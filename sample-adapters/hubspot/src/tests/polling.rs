//! Polling through the host: `poll_request` names each request, `handle_poll` reads the host's
//! answer.

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

fn contact_search(since: u64, after: Option<&str>) -> Value {
    let mut body = json!({
        "filterGroups": [{"filters": [
            {"propertyName": "lastmodifieddate", "operator": "GT", "value": since.to_string()}
        ]}],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["lastmodifieddate", "createdate", "email", "firstname", "lastname",
                       "phone", "company", "jobtitle", "lifecyclestage", "hubspot_owner_id",
                       "total_revenue", "recent_deal_amount"],
        "limit": 100,
    });
    if let Some(after) = after {
        body["after"] = json!(after);
    }
    body
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
    assert_eq!(body(&req), contact_search(0, None));
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
    let cursor = first.next_cursor.unwrap();
    assert_eq!(
        cursor,
        format!(r#"{{"list":"contacts","after":"2","newest":{CONTACTS_1_NEWEST}}}"#)
    );

    // The next page of the same search: the filter stays, `after` moves.
    let (req, second) = step(Some(&cursor), CONTACTS_2, &ctx);
    assert_eq!(body(&req), contact_search(0, Some("2")));
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
    assert_eq!(body(&req), contact_search(CONTACTS_2_NEWEST, None));
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
fn a_search_past_ten_thousand_results_starts_again_from_the_newest_change() {
    let ctx = api_ctx();
    let page = patched(CONTACTS_1, |b| {
        b["paging"]["next"]["after"] = json!("10000")
    });
    let cursor = r#"{"list":"contacts","after":"9900","newest":1}"#;
    let (req, out) = step(Some(cursor), &page, &ctx);
    assert_eq!(body(&req), contact_search(0, Some("9900")));
    assert!(out.more);
    let cursor = out.next_cursor.unwrap();
    assert_eq!(
        cursor,
        format!(r#"{{"since":{{"contacts":{CONTACTS_1_NEWEST}}},"list":"contacts"}}"#)
    );
    assert_eq!(
        body(&request(Some(&cursor), &ctx)),
        contact_search(CONTACTS_1_NEWEST, None)
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

fn patched(fixture: &str, patch: impl FnOnce(&mut Value)) -> String {
    let mut body: Value = serde_json::from_str(fixture).unwrap();
    patch(&mut body);
    body.to_string()
}
