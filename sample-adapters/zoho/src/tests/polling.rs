//! Polling through the host (`poll_request` / `handle_poll` with the host's answers) and
//! notifications whose records are read through `http::fetch`.

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

fn deals_list() -> HttpRequest {
    HttpRequest::get("/crm/v5/Deals")
        .query("fields", DEAL_FIELDS)
        .query("per_page", "200")
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
    let cursor = first.next_cursor.unwrap();
    assert_eq!(
        cursor,
        format!(
            r#"{{"list":"Deals","page_token":"{PAGE_TOKEN}","newest":"2025-12-01T10:35:12+00:00"}}"#
        )
    );

    // The next page of the listing.
    let (req, second) = step(Some(&cursor), 200, DEALS_2, &ctx);
    assert_eq!(req, deals_list().query("page_token", PAGE_TOKEN));
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
    assert_eq!(
        req,
        deals_list().header("If-Modified-Since", "2025-12-01T10:50:00+00:00")
    );
    assert_eq!(req.headers[0].name, "if-modified-since");
    assert!(out.events.is_empty() && out.more);
    assert_eq!(out.records, Some(0), "304 Not Modified holds no record");
    let cursor = out.next_cursor.unwrap();
    let (req, out) = step(Some(&cursor), 304, "", &ctx);
    assert_eq!(
        req,
        deleted_deals().header("If-Modified-Since", "2025-12-02T08:00:00+00:00")
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
    let cursor = format!(
        r#"{{"list":"Deals","page_token":"{PAGE_TOKEN}","newest":"2025-12-01T10:35:12+00:00"}}"#
    );
    let (_, out) = step(Some(&cursor), 400, TOKEN_EXPIRED, &ctx);
    assert!(out.events.is_empty() && out.more);
    assert_eq!(out.records, Some(0), "an error answer holds no record");
    let cursor = out.next_cursor.unwrap();
    assert_eq!(cursor, r#"{"list":"Deals"}"#);
    assert_eq!(request(Some(&cursor), &ctx), deals_list());
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
        deals_list().header("If-Modified-Since", "2025-12-01T10:50:00+00:00")
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
