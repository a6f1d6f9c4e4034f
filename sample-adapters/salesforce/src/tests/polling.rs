//! Polling through the host (`poll_request` / `handle_poll` with the host's answers) and thin
//! outbound messages read through `http::fetch`.

use crm_adapter_sdk::{HttpRequest, PollPage};

use super::*;

const ACCOUNTS_1: &str = include_str!("../../fixtures/queryall-accounts-page-1.json");
const ACCOUNTS_2: &str = include_str!("../../fixtures/queryall-accounts-page-2.json");
const CONTACTS_EMPTY: &str = include_str!("../../fixtures/queryall-contacts-empty.json");
const OPPORTUNITIES: &str = include_str!("../../fixtures/queryall-opportunities.json");
const INVALID_LOCATOR: &str = include_str!("../../fixtures/error-invalid-query-locator.json");
const NOT_FOUND: &str = include_str!("../../fixtures/error-not-found.json");
const OUTBOUND_THIN: &str = include_str!("../../fixtures/outbound-thin.xml");
const SOBJECT_CONTACT: &str = include_str!("../../fixtures/sobject-contact.json");

const NEXT_URL: &str = "/services/data/v59.0/query/01gRO0000016PIAYA2-2000";

const ACCOUNT_FIELDS: &str = "Id, IsDeleted, SystemModstamp, LastModifiedDate, Name, \
     AccountNumber, Type, Industry, ParentId, OwnerId, Phone, Website, AnnualRevenue, \
     NumberOfEmployees, BillingCity, BillingState, BillingPostalCode, BillingCountry";

fn api_ctx() -> Context {
    ctx().with_api_base_url("https://northwind.my.salesforce.com")
}

/// The request `poll_request` names for `cursor`.
fn request(cursor: Option<&str>, ctx: &Context) -> HttpRequest {
    Salesforce::poll_request(cursor, ctx)
        .unwrap()
        .expect("a request")
}

/// The page the host hands over after making `request` (answered `status`, `body`).
fn answer(request: HttpRequest, cursor: Option<&str>, status: u16, body: &str) -> PollPage {
    let mut page = testing::poll_page(body)
        .with_request(request)
        .with_status(status);
    if let Some(cursor) = cursor {
        page = page.with_cursor(cursor);
    }
    page
}

/// One step of a run as the host drives it: the request for `cursor`, answered with
/// `body` (200), handled.
fn step(cursor: Option<&str>, body: &str, ctx: &Context) -> (HttpRequest, PollOutput) {
    let req = request(cursor, ctx);
    let out =
        testing::run_poll::<Salesforce>(&answer(req.clone(), cursor, 200, body), ctx).unwrap();
    (req, out)
}

fn queryall(q: &str) -> HttpRequest {
    HttpRequest::get("/services/data/v59.0/queryAll").query("q", q)
}

fn keys(events: &[Event]) -> Vec<(&str, &str, &str)> {
    events
        .iter()
        .map(|e| {
            assert_eq!(e.dedupe_key_str(), e.idempotency_key_str());
            (
                e.event_type(),
                e.entity_id(),
                e.idempotency_key_str().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn a_run_walks_each_object_with_query_all_and_follows_next_records_url() {
    let ctx = api_ctx();
    // First page ever: every Account, oldest change first.
    let (req, first) = step(None, ACCOUNTS_1, &ctx);
    assert_eq!(
        req,
        queryall(&format!(
            "SELECT {ACCOUNT_FIELDS} FROM Account ORDER BY SystemModstamp ASC, Id ASC"
        ))
    );
    assert_eq!(
        keys(&first.events),
        [
            (
                "account.created",
                "0015g00000Nw7QpAAJ",
                "Account/0015g00000Nw7QpAAJ@2025-12-01T09:15:00Z/created"
            ),
            (
                "account.created",
                "0015g00000Nw7QrAAJ",
                "Account/0015g00000Nw7QrAAJ@2025-12-01T10:02:31Z/created"
            ),
        ]
    );
    assert_eq!(
        first.events[0].payload_value()["annual_revenue"],
        "48000000.00"
    );
    assert!(first.more, "`done` is false");
    assert_eq!(first.records, Some(2));
    let cursor = first.next_cursor.unwrap();
    assert_eq!(
        cursor,
        format!(
            r#"{{"since":{{"Account":"2025-12-01T10:02:31Z"}},"object":"Account","next":"{NEXT_URL}"}}"#
        )
    );

    // A middle page: the query's next batch, then the next object.
    let (req, second) = step(Some(&cursor), ACCOUNTS_2, &ctx);
    assert_eq!(req, HttpRequest::get(NEXT_URL));
    assert_eq!(
        keys(&second.events),
        [(
            "account.deleted",
            "0015g00000Nw7QsAAJ",
            "Account/0015g00000Nw7QsAAJ@2025-12-01T10:40:12Z/deleted"
        )]
    );
    assert_eq!(
        second.events[0].payload_value(),
        json!({"account_id": "0015g00000Nw7QsAAJ", "external_id": "0015g00000Nw7QsAAJ",
               "external_source": "salesforce", "occurred_at": "2025-12-01T10:40:12Z"})
    );
    assert!(second.more, "Contact and Opportunity are still to walk");
    assert_eq!(second.records, Some(1), "a deleted record is a record seen");
    let cursor = second.next_cursor.unwrap();
    assert_eq!(
        cursor,
        r#"{"since":{"Account":"2025-12-01T10:40:12Z"},"object":"Contact"}"#
    );

    // An object with nothing to report.
    let (req, third) = step(Some(&cursor), CONTACTS_EMPTY, &ctx);
    assert!(req.query[0].1.contains(" FROM Contact ORDER BY"), "{req:?}");
    assert!(third.events.is_empty() && third.more);
    assert_eq!(third.records, Some(0));
    let cursor = third.next_cursor.unwrap();

    // The last object's last page ends the run.
    let (req, last) = step(Some(&cursor), OPPORTUNITIES, &ctx);
    assert!(
        req.query[0].1.contains(" FROM Opportunity ORDER BY"),
        "{req:?}"
    );
    assert_eq!(
        keys(&last.events),
        [
            (
                "opportunity.created",
                "0065g00000Qb2RuAAJ",
                "Opportunity/0065g00000Qb2RuAAJ@2025-12-01T11:30:04Z/created"
            ),
            (
                "opportunity.won",
                "0065g00000Qb2RuAAJ",
                "Opportunity/0065g00000Qb2RuAAJ@2025-12-01T11:30:04Z/won"
            ),
        ]
    );
    assert!(!last.more);
    assert_eq!(last.records, Some(1), "one record, two events");
    assert_eq!(
        last.next_cursor.as_deref(),
        Some(
            r#"{"since":{"Account":"2025-12-01T10:40:12Z","Opportunity":"2025-12-01T11:30:04Z"}}"#
        )
    );
}

#[test]
fn the_next_run_asks_for_changes_only_and_refetched_versions_emit_nothing() {
    let ctx = api_ctx();
    let mut cursor: Option<String> = None;
    for body in [ACCOUNTS_1, ACCOUNTS_2, CONTACTS_EMPTY, OPPORTUNITIES] {
        cursor = step(cursor.as_deref(), body, &ctx).1.next_cursor;
    }
    let cursor = cursor.unwrap();
    let (req, out) = step(Some(&cursor), ACCOUNTS_1, &ctx);
    assert_eq!(
        req,
        queryall(&format!(
            "SELECT {ACCOUNT_FIELDS} FROM Account WHERE SystemModstamp > 2025-12-01T10:40:12Z \
             ORDER BY SystemModstamp ASC, Id ASC"
        ))
    );
    // The same versions again (a CRM that ignores the filter, a retried page): nothing new,
    // and `since` stays where it was.
    assert!(out.events.is_empty(), "{:?}", keys(&out.events));
    assert_eq!(out.records, Some(2), "unchanged records are still seen");
    assert!(
        out.next_cursor
            .unwrap()
            .starts_with(r#"{"since":{"Account":"2025-12-01T10:40:12Z","#)
    );
    let (_, out) = step(Some(&cursor), ACCOUNTS_2, &ctx);
    assert!(out.events.is_empty(), "a deletion is reported once");
    assert_eq!(out.records, Some(1));
    // A contact never seen, after the run: the next Contact query finds it.
    let contact = patched(CONTACTS_EMPTY, |b| {
        b["records"] = json!([{
            "attributes": {"type": "Contact", "url": "/services/data/v59.0/sobjects/Contact/0035g00000Jx4LpAAB"},
            "Id": "0035g00000Jx4LpAAB", "IsDeleted": false, "LastName": "Raman",
            "SystemModstamp": "2025-12-02T08:00:00.000+0000",
            "LastModifiedDate": "2025-12-02T08:00:00.000+0000"
        }]);
    });
    let at_contacts = r#"{"since":{"Account":"2025-12-01T10:40:12Z"},"object":"Contact"}"#;
    let (_, out) = step(Some(at_contacts), &contact, &ctx);
    assert_eq!(
        keys(&out.events),
        [(
            "contact.created",
            "0035g00000Jx4LpAAB",
            "Contact/0035g00000Jx4LpAAB@2025-12-02T08:00:00Z/created"
        )]
    );
}

#[test]
fn settings_choose_the_objects_and_add_fields() {
    let ctx = api_ctx()
        .with_setting(api::POLL_OBJECTS_SETTING, "Opportunity, Account")
        .with_setting(
            "poll_fields.Opportunity",
            "CurrencyIsoCode, Commission_Split__c",
        );
    let req = request(None, &ctx);
    let q = &req.query[0].1;
    assert!(
        q.starts_with("SELECT Id, IsDeleted, SystemModstamp, LastModifiedDate, Name, AccountId,"),
        "{q}"
    );
    assert!(
        q.ends_with(
            "OwnerId, CurrencyIsoCode, Commission_Split__c FROM Opportunity ORDER BY \
             SystemModstamp ASC, Id ASC"
        ),
        "{q}"
    );
    // After the last object of the setting, the run ends.
    let cursor = r#"{"object":"Account"}"#;
    let out = testing::run_poll::<Salesforce>(
        &answer(
            request(Some(cursor), &ctx),
            Some(cursor),
            200,
            CONTACTS_EMPTY,
        ),
        &ctx,
    )
    .unwrap();
    assert!(!out.more);
    for (key, value, expected) in [
        (
            api::POLL_OBJECTS_SETTING,
            "Account,Lead",
            "connection setting `poll_objects`: `Lead` is not one of Account, Contact, Opportunity",
        ),
        (
            api::POLL_OBJECTS_SETTING,
            " , ",
            "connection setting `poll_objects` names no object",
        ),
        (
            "poll_fields.Account",
            "Name FROM User --",
            "connection setting `poll_fields.Account`: `Name FROM User --` is not a field name",
        ),
    ] {
        let ctx = api_ctx().with_setting(key, value);
        assert_eq!(
            Salesforce::poll_request(None, &ctx),
            Err(AdapterError::failed(expected))
        );
    }
}

#[test]
fn an_expired_query_locator_queries_the_object_again_from_since() {
    let ctx = api_ctx();
    let cursor = format!(
        r#"{{"since":{{"Account":"2025-12-01T10:02:31Z"}},"object":"Account","next":"{NEXT_URL}"}}"#
    );
    let page = answer(
        HttpRequest::get(NEXT_URL),
        Some(&cursor),
        400,
        INVALID_LOCATOR,
    );
    let out = testing::run_poll::<Salesforce>(&page, &ctx).unwrap();
    assert!(out.events.is_empty() && out.more);
    assert_eq!(out.records, Some(0), "an error answer holds no record");
    let cursor = out.next_cursor.unwrap();
    assert_eq!(
        cursor,
        r#"{"since":{"Account":"2025-12-01T10:02:31Z"},"object":"Account"}"#
    );
    assert!(
        request(Some(&cursor), &ctx).query[0]
            .1
            .contains("FROM Account WHERE SystemModstamp > 2025-12-01T10:02:31Z ORDER BY")
    );
}

#[test]
fn other_answers_than_2xx_fail_the_page_and_keep_the_state() {
    let ctx = api_ctx();
    for (status, cursor) in [
        (400, None),
        (401, None),
        (
            500,
            Some(format!(r#"{{"object":"Account","next":"{NEXT_URL}"}}"#)),
        ),
    ] {
        let req = request(cursor.as_deref(), &ctx);
        let page = answer(req, cursor.as_deref(), status, INVALID_LOCATOR);
        let err = testing::run_poll::<Salesforce>(&page, &ctx).unwrap_err();
        assert!(
            matches!(&err, AdapterError::Failed(m)
                if m.starts_with(&format!("Salesforce answered {status} to the Account query: ["))),
            "{err}"
        );
        assert!(testing::state().is_empty());
    }
}

#[test]
fn cursors_of_pushed_pages_carry_over_and_foreign_ones_start_over() {
    let ctx = api_ctx();
    // A date-time cursor (what pushed pages end with) is where every object resumes.
    let req = request(Some("2025-12-01T11:45:00Z"), &ctx);
    assert!(
        req.query[0]
            .1
            .contains("FROM Account WHERE SystemModstamp > 2025-12-01T11:45:00Z")
    );
    // A pushed page's next-page link, or anything else, starts over, with a warning.
    for cursor in [
        "/services/data/v62.0/query/01gRO00000BdQ3WYAV-2",
        "{not json",
    ] {
        let req = request(Some(cursor), &ctx);
        assert!(req.query[0].1.contains("FROM Account ORDER BY"), "{cursor}");
    }
    assert!(
        testing::logs()
            .iter()
            .any(|l| l.level == Level::Warn && l.message.contains("starting over"))
    );
    // What would not be a date-time never reaches the query; a link elsewhere is not followed.
    let tampered = r#"{"since":{"Account":"2025-01-01T00:00:00Z OR Name != null"},
        "object":"Account","next":"https://elsewhere.example.com/x"}"#;
    let req = request(Some(tampered), &ctx);
    assert_eq!(req.url, "/services/data/v59.0/queryAll");
    assert!(req.query[0].1.contains("FROM Account ORDER BY"));
    // A cursor naming an object no longer polled starts the run over.
    let ctx = ctx.with_setting(api::POLL_OBJECTS_SETTING, "Contact");
    let req = request(
        Some(r#"{"object":"Account","next":"/services/data/v59.0/query/x"}"#),
        &ctx,
    );
    assert!(req.query[0].1.contains("FROM Contact ORDER BY"));
}

#[test]
fn a_next_page_link_elsewhere_is_a_bad_request() {
    let ctx = api_ctx();
    let page = patched(ACCOUNTS_1, |b| {
        b["nextRecordsUrl"] = json!("https://elsewhere.example.com/query/01g-2000");
    });
    let page = answer(request(None, &ctx), None, 200, &page);
    assert_eq!(
        testing::run_poll::<Salesforce>(&page, &ctx),
        Err(AdapterError::bad_request(
            "`nextRecordsUrl` is `https://elsewhere.example.com/query/01g-2000`, not a path under \
             /services/data/"
        ))
    );
}

#[test]
fn a_connection_without_api_access_names_no_request() {
    assert_eq!(Salesforce::poll_request(None, &ctx()), Ok(None));
}

#[test]
fn a_thin_outbound_message_reads_its_records_through_the_host() {
    let ctx = api_ctx();
    testing::respond_json(200, SOBJECT_CONTACT);
    testing::respond_json(404, NOT_FOUND);
    let events = outbound_with(OUTBOUND_THIN, &ctx).unwrap();
    assert_eq!(
        testing::requests(),
        [
            HttpRequest::get("/services/data/v59.0/sobjects/Contact/0035g00000Jx4LpAAB"),
            HttpRequest::get("/services/data/v59.0/sobjects/Opportunity/0065g00000Qb2RwAAJ"),
        ]
    );
    assert_eq!(
        summary(&events),
        [
            (
                "contact.created".into(),
                "0035g00000Jx4LpAAB".into(),
                "04l5g00000XyZ11AAC".into()
            ),
            // Deleted since the message was sent.
            (
                "opportunity.deleted".into(),
                "0065g00000Qb2RwAAJ".into(),
                "04l5g00000XyZ12AAC".into()
            ),
        ]
    );
    assert_eq!(
        events[0].payload_value(),
        json!({"account_id": "0015g00000Nw7QpAAJ", "contact_id": "0035g00000Jx4LpAAB",
               "department": "People", "email": "priya.raman@northwind-benefits.example.com",
               "external_id": "0035g00000Jx4LpAAB", "external_source": "salesforce",
               "first_name": "Priya", "last_name": "Raman", "mailing_city": "San Francisco",
               "mailing_country": "United States", "mailing_state": "CA",
               "mobile_phone": "+1 (415) 555-0199", "occurred_at": "2025-12-20T09:12:40Z",
               "owner_id": "0055g00000KlMnOAAV", "title": "VP, People & Benefits"})
    );

    // Salesforce resends the message: the same record, the same deletion, nothing new.
    testing::respond_json(200, SOBJECT_CONTACT);
    testing::respond_json(404, NOT_FOUND);
    assert!(matches!(
        outbound_with(OUTBOUND_THIN, &ctx),
        Err(AdapterError::Ignored(reason)) if reason.contains("Contact 0035g00000Jx4LpAAB is unchanged")
            && reason.contains("Opportunity 0065g00000Qb2RwAAJ is deleted")
    ));
}

#[test]
fn a_thin_message_fails_when_the_record_cannot_be_read_and_keeps_the_ids_without_api_access() {
    testing::respond_json(
        503,
        r#"[{"errorCode":"SERVER_UNAVAILABLE","message":"busy"}]"#,
    );
    let err = outbound_with(OUTBOUND_THIN, &api_ctx()).unwrap_err();
    assert!(
        matches!(&err, AdapterError::Failed(m) if m.starts_with("the CRM answered 503")),
        "{err}"
    );
    assert!(testing::state().is_empty());

    testing::reset();
    let events = outbound_with(OUTBOUND_THIN, &ctx()).unwrap();
    assert!(testing::requests().is_empty());
    assert_eq!(
        events[0].payload_value(),
        json!({"contact_id": "0035g00000Jx4LpAAB", "external_id": "0035g00000Jx4LpAAB",
               "external_source": "salesforce"})
    );
    assert!(testing::logs().iter().any(|l| {
        l.level == Level::Warn
            && l.message
                .contains("carries only its Id, and the connection has no API access")
    }));
}

#[test]
fn an_org_connection_without_a_default_org_emits_for_its_own_org() {
    let ctx = testing::context()
        .with_connection_org("org-9")
        .with_api_base_url("https://northwind.my.salesforce.com");
    let (_, out) = step(None, ACCOUNTS_1, &ctx);
    assert!(out.events.iter().all(|e| e.org_id() == Some("org-9")));
    let events =
        testing::run_webhook::<Salesforce>(&testing::webhook(CDC_ACCOUNT_CREATED), &ctx).unwrap();
    assert_eq!(events[0].org_id(), Some("org-9"));
    // The setting still wins.
    let ctx = ctx
        .with_org("org-456")
        .with_setting(DEFAULT_ORG_SETTING, "org-456");
    let events =
        testing::run_webhook::<Salesforce>(&testing::webhook(CDC_ACCOUNT_CREATED), &ctx).unwrap();
    assert_eq!(events[0].org_id(), Some("org-456"));
}

fn outbound_with(body: &str, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
    let req = testing::webhook(body).with_header("Content-Type", "text/xml; charset=utf-8");
    testing::run_webhook::<Salesforce>(&req, ctx)
}

#[test]
fn no_answer_makes_the_adapter_panic() {
    let ctx = api_ctx();
    let cursor = format!(r#"{{"object":"Account","next":"{NEXT_URL}"}}"#);
    for body in [
        ACCOUNTS_1,
        ACCOUNTS_2,
        CONTACTS_EMPTY,
        OPPORTUNITIES,
        INVALID_LOCATOR,
    ] {
        for end in 0..body.len() {
            for (status, cursor) in [(200, None), (400, Some(cursor.as_str()))] {
                let page = answer(request(cursor, &ctx), cursor, status, &body[..end]);
                let _ = Salesforce::handle_poll(&page, &ctx);
            }
        }
    }
    for end in 0..SOBJECT_CONTACT.len() {
        testing::respond_json(200, &SOBJECT_CONTACT[..end]);
        testing::respond_json(200, &SOBJECT_CONTACT[..end]);
        let req = testing::webhook(OUTBOUND_THIN).with_header("content-type", "text/xml");
        let _ = Salesforce::handle_webhook(&req, &ctx);
    }
}
