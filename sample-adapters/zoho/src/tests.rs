//! Fixture tests: every fixture under `fixtures/` goes through the adapter as the host would
//! run it (`testing::run_webhook` / `run_poll` also check the host's contracts).

use crm_adapter_sdk::serde_json::{self, Value, json};
use crm_adapter_sdk::testing::{self, check_events, check_info};
use crm_adapter_sdk::{AdapterError, Event, PollOutput, state};

use super::*;

mod polling;

const CONTACTS_INSERTED: &str = include_str!("../fixtures/notification-contacts-inserted.json");
const CONTACT_UPDATED: &str = include_str!("../fixtures/notification-contact-updated.json");
const CONTACT_DELETED: &str = include_str!("../fixtures/notification-contact-deleted.json");
const ACCOUNT_INSERTED: &str = include_str!("../fixtures/notification-account-inserted.json");
const ACCOUNT_UPDATED: &str = include_str!("../fixtures/notification-account-updated.json");
const ACCOUNT_DELETED: &str = include_str!("../fixtures/notification-account-deleted.json");
const DEAL_INSERTED: &str = include_str!("../fixtures/notification-deal-inserted.json");
const DEAL_UPDATED: &str = include_str!("../fixtures/notification-deal-updated.json");
const DEALS_DELETED: &str = include_str!("../fixtures/notification-deals-deleted.json");
const LEADS_UPDATED: &str = include_str!("../fixtures/notification-leads-updated.json");
const BAD_AMOUNT: &str = include_str!("../fixtures/notification-bad-amount.json");
const NO_IDS: &str = include_str!("../fixtures/notification-no-ids.json");
const DEALS_PAGE_1: &str = include_str!("../fixtures/list-deals-page-1.json");
const DEALS_PAGE_2: &str = include_str!("../fixtures/list-deals-page-2.json");
const DEALS_NEXT_POLL: &str = include_str!("../fixtures/list-deals-next-poll.json");
const CONTACTS_LIST: &str = include_str!("../fixtures/list-contacts.json");

const NOTIFICATIONS: [&str; 12] = [
    CONTACTS_INSERTED,
    CONTACT_UPDATED,
    CONTACT_DELETED,
    ACCOUNT_INSERTED,
    ACCOUNT_UPDATED,
    ACCOUNT_DELETED,
    DEAL_INSERTED,
    DEAL_UPDATED,
    DEALS_DELETED,
    LEADS_UPDATED,
    BAD_AMOUNT,
    NO_IDS,
];
const DEAL_PAGES: [&str; 3] = [DEALS_PAGE_1, DEALS_PAGE_2, DEALS_NEXT_POLL];

/// The channel token every notification fixture carries.
const TOKEN: &str = "zc-7f3a91d2-northwind-deals";

fn ctx() -> Context {
    testing::context()
        .with_provider("zoho")
        .with_org("org-456")
        .with_setting(DEFAULT_ORG_SETTING, "org-456")
}

fn notify(body: &str) -> Result<Vec<Event>, AdapterError> {
    let req = testing::webhook(body).with_header("Content-Type", "application/json");
    testing::run_webhook::<Zoho>(&req, &ctx())
}

fn poll_module(module: &str, body: &str, cursor: Option<&str>) -> Result<PollOutput, AdapterError> {
    let mut page = testing::poll_page(body);
    if let Some(cursor) = cursor {
        page = page.with_cursor(cursor);
    }
    testing::run_poll::<Zoho>(&page, &ctx().with_setting(poll::MODULE_SETTING, module))
}

fn poll_deals(body: &str, cursor: Option<&str>) -> Result<PollOutput, AdapterError> {
    poll_module("Deals", body, cursor)
}

fn bad_request(result: Result<Vec<Event>, AdapterError>) -> String {
    match result {
        Err(AdapterError::BadRequest(message)) => message,
        other => panic!("expected a bad request, got {other:?}"),
    }
}

/// (event type, entity id, dedupe key) of each event.
fn summary(events: &[Event]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.event_type().to_owned(),
                e.entity_id().to_owned(),
                e.dedupe_key_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn patched(fixture: &str, patch: impl FnOnce(&mut Value)) -> String {
    let mut body: Value = serde_json::from_str(fixture).unwrap();
    patch(&mut body);
    body.to_string()
}

#[test]
fn describe_declares_every_event_type_with_its_decimals() {
    let info = Zoho::describe();
    check_info(&info).unwrap();
    assert_eq!(info.provider, "zoho");
    let names: Vec<_> = info.event_types.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "contact.created",
            "contact.updated",
            "contact.deleted",
            "account.created",
            "account.updated",
            "account.deleted",
            "deal.created",
            "deal.updated",
            "deal.deleted",
        ]
    );
    assert!(
        info.decl("contact.updated")
            .unwrap()
            .decimal_fields
            .is_empty()
    );
    assert_eq!(
        info.decl("account.created").unwrap().decimal_fields,
        ["/annual_revenue"]
    );
    assert_eq!(
        info.decl("deal.deleted").unwrap().decimal_fields,
        [
            "/amount",
            "/expected_revenue",
            "/probability",
            "/exchange_rate"
        ]
    );
}

#[test]
fn a_notification_gives_one_event_per_record_id() {
    let events = notify(CONTACTS_INSERTED).unwrap();
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
    assert_eq!(events[1].org_id(), Some("org-456"));
    assert_eq!(
        events[1].payload_value(),
        json!({
            "contact_id": "5725767000000653011",
            "external_id": "5725767000000653011",
            "external_source": "zoho",
            "occurred_at": "2025-12-01T10:00:00Z"
        })
    );
}

#[test]
fn affected_values_are_mapped_with_exact_decimals() {
    let events = notify(DEAL_UPDATED).unwrap();
    assert_eq!(
        summary(&events),
        [(
            "deal.updated".into(),
            "5725767000001148082".into(),
            "Deals/update/5725767000001148082/1766397600000".into()
        )]
    );
    assert_eq!(
        events[0].payload_value(),
        json!({
            "deal_id": "5725767000001148082",
            "stage": "Closed Won",
            "amount": "51900.75",
            "expected_revenue": "51900.75",
            "probability": "100",
            "changed_fields": ["Stage", "Amount", "Probability", "Expected_Revenue"],
            "external_id": "5725767000001148082",
            "external_source": "zoho",
            "occurred_at": "2025-12-22T10:00:00Z"
        })
    );
    let contact = notify(CONTACT_UPDATED).unwrap().remove(0);
    assert_eq!(contact.event_type(), "contact.updated");
    assert_eq!(
        contact.payload_value(),
        json!({
            "contact_id": "5725767000000653010",
            "title": "Director of People Operations",
            "mobile": "+1 503 555 0142",
            "account_id": "5725767000000652001",
            "account_name": "Cedar Valley Schools",
            "changed_fields": ["Title", "Mobile", "Account_Name"],
            "external_id": "5725767000000653010",
            "external_source": "zoho",
            "occurred_at": "2025-12-02T10:00:00Z"
        })
    );
    let account = notify(ACCOUNT_INSERTED).unwrap().remove(0);
    assert_eq!(account.event_type(), "account.created");
    let payload = account.payload_value();
    assert_eq!(payload["annual_revenue"], "18500000.00");
    assert_eq!(payload["employees"], 640);
    assert_eq!(payload["owner_email"], "maya.fischer@example.com");
    // Without affected_values, only what changed is known.
    let account = notify(ACCOUNT_UPDATED).unwrap().remove(0);
    assert_eq!(
        account.payload_value(),
        json!({
            "account_id": "5725767000000652001",
            "changed_fields": ["Annual_Revenue", "Website"],
            "external_id": "5725767000000652001",
            "external_source": "zoho",
            "occurred_at": "2025-12-02T12:00:00Z"
        })
    );
    assert_eq!(
        notify(DEAL_INSERTED).unwrap()[0].event_type(),
        "deal.created"
    );
}

#[test]
fn deletions_name_each_record_once_and_forget_it() {
    // Both deals were polled before.
    poll_deals(
        &json!({"data": [
            {"id": "5725767000001148090", "Deal_Name": "A", "Modified_Time": "2025-12-01T10:00:00Z"},
            {"id": "5725767000001148091", "Deal_Name": "B", "Modified_Time": "2025-12-01T10:00:00Z"},
            {"id": "5725767000001148092", "Deal_Name": "C", "Modified_Time": "2025-12-01T10:00:00Z"}
        ]})
        .to_string(),
        None,
    )
    .unwrap();
    let remembered = |id: &str| {
        let key = memory::seen(records::Module::Deals).bucket_key(id);
        state::get_string(&key)
            .unwrap()
            .is_some_and(|bucket| bucket.contains(id))
    };
    assert!(remembered("5725767000001148090") && remembered("5725767000001148091"));
    // The fixture names 5725767000001148090 twice.
    let events = notify(DEALS_DELETED).unwrap();
    assert_eq!(
        summary(&events),
        [
            (
                "deal.deleted".into(),
                "5725767000001148090".into(),
                "Deals/delete/5725767000001148090/1766484000000".into()
            ),
            (
                "deal.deleted".into(),
                "5725767000001148091".into(),
                "Deals/delete/5725767000001148091/1766484000000".into()
            ),
        ]
    );
    assert_eq!(
        events[0].payload_value(),
        json!({
            "deal_id": "5725767000001148090",
            "external_id": "5725767000001148090",
            "external_source": "zoho",
            "occurred_at": "2025-12-23T10:00:00Z"
        })
    );
    assert!(!remembered("5725767000001148090") && !remembered("5725767000001148091"));
    assert!(remembered("5725767000001148092"));
    assert_eq!(
        notify(CONTACT_DELETED).unwrap()[0].event_type(),
        "contact.deleted"
    );
    assert_eq!(
        notify(ACCOUNT_DELETED).unwrap()[0].event_type(),
        "account.deleted"
    );
}

#[test]
fn the_channel_token_and_query_params_never_leave_the_adapter() {
    let mut bodies: Vec<String> = NOTIFICATIONS.iter().map(|b| b.to_string()).collect();
    // Malformed variants too: their error messages must not quote the body either.
    for fixture in [DEAL_UPDATED, CONTACTS_INSERTED] {
        bodies.push(patched(fixture, |b| b["ids"] = json!(TOKEN)));
        bodies.push(patched(fixture, |b| b["ids"] = json!([{ "token": TOKEN }])));
        bodies.push(patched(fixture, |b| b["module"] = json!(7)));
        bodies.push(
            fixture
                .replace("\"operation\"", "\"operation\" ")
                .replace('}', ""),
        );
    }
    for body in &bodies {
        testing::reset();
        let outcome = notify(body);
        let mut texts: Vec<String> = testing::logs().into_iter().map(|l| l.message).collect();
        match outcome {
            Ok(events) => texts.extend(events.iter().map(Event::payload_json)),
            Err(e) => texts.push(e.message().to_owned()),
        }
        for text in texts {
            assert!(!text.contains(TOKEN), "{text}");
            assert!(!text.contains("tenant"), "{text}");
            assert!(!text.contains("query_params"), "{text}");
        }
    }
}

#[test]
fn other_modules_and_operations_are_ignored() {
    assert_eq!(
        notify(LEADS_UPDATED),
        Err(AdapterError::ignored(
            "notifications for module `Leads` are not used by this adapter"
        ))
    );
    let body = patched(DEAL_UPDATED, |b| b["operation"] = json!("restore"));
    assert_eq!(
        notify(&body),
        Err(AdapterError::ignored(
            "`restore` notifications are not used by this adapter"
        ))
    );
}

#[test]
fn malformed_notifications_are_bad_requests_naming_the_field() {
    let deal = |patch: &dyn Fn(&mut Value)| bad_request(notify(&patched(DEAL_UPDATED, patch)));
    let cases: Vec<(String, &str)> = vec![
        (bad_request(notify(NO_IDS)), "`ids` is empty"),
        (
            bad_request(notify(BAD_AMOUNT)),
            "`affected_values[0].values.Amount`: `51.900,75` is not a canonical decimal \
             (expected -?digits(.digits)?, e.g. \"12.50\")",
        ),
        (
            deal(&|b| {
                b.as_object_mut().unwrap().remove("module");
            }),
            "`module` is missing",
        ),
        (
            deal(&|b| b["operation"] = json!(1)),
            "`operation` must be a string, got a number",
        ),
        (
            deal(&|b| b["ids"] = json!("5725767000001148082")),
            "`ids` must be an array, got a string",
        ),
        (
            deal(&|b| b["ids"] = json!(["5725767000001148082", null])),
            "`ids[1]` must be a string or a whole number, got null",
        ),
        (
            deal(&|b| b["server_time"] = json!("yesterday")),
            "`server_time` must be a whole number, got a string",
        ),
        (
            deal(&|b| b["affected_fields"] = json!(["Stage"])),
            "`affected_fields[0]` must be an object, got a string",
        ),
        (
            deal(&|b| b["affected_fields"][0]["5725767000001148082"] = json!("Stage")),
            "`affected_fields[0].5725767000001148082` must be an array, got a string",
        ),
        (
            deal(&|b| {
                b["affected_values"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("values");
            }),
            "`affected_values[0].values` is missing",
        ),
        (
            deal(&|b| b["affected_values"][0]["values"]["Probability"] = json!(101)),
            "`affected_values[0].values.Probability` is 101; a percentage must be between 0 and \
             100",
        ),
        (
            deal(&|b| b["affected_values"][0]["values"]["Account_Name"] = json!("Cedar")),
            "`affected_values[0].values.Account_Name` must be an object, got a string",
        ),
        (
            deal(&|b| b["affected_values"][0]["values"]["Owner"] = json!({"name": "Maya"})),
            "`affected_values[0].values.Owner.id` is missing",
        ),
        (
            bad_request(notify("[]")),
            "the notification must be a JSON object, got an array",
        ),
    ];
    for (got, expected) in cases {
        assert_eq!(got, expected);
    }
    assert!(bad_request(notify("{\"module\": ")).starts_with("request body is not valid JSON: "));
    let req = testing::webhook(DEAL_UPDATED)
        .with_header("Content-Type", "application/x-www-form-urlencoded");
    assert_eq!(
        testing::run_webhook::<Zoho>(&req, &ctx()),
        Err(AdapterError::bad_request(
            "content type `application/x-www-form-urlencoded` is not JSON; Zoho notifications are \
             JSON"
        ))
    );
}

#[test]
fn the_org_is_the_connection_setting_and_must_be_allowed() {
    let req = testing::webhook(DEAL_UPDATED);
    let events = testing::run_webhook::<Zoho>(&req, &testing::context()).unwrap();
    assert_eq!(events[0].org_id(), None);
    let not_allowed = testing::context().with_setting(DEFAULT_ORG_SETTING, "org-9");
    assert_eq!(
        testing::run_webhook::<Zoho>(&req, &not_allowed),
        Err(AdapterError::failed(
            "org `org-9` (setting `default_org_id`) is not one of this connection's allowed \
             orgs; allow it on the connection, then redrive"
        ))
    );
}

#[test]
fn list_pages_follow_the_page_token_then_resume_from_the_newest_change() {
    let first = poll_deals(DEALS_PAGE_1, None).unwrap();
    assert_eq!(
        first
            .events
            .iter()
            .map(|e| (e.event_type(), e.entity_id()))
            .collect::<Vec<_>>(),
        [
            ("deal.created", "5725767000001148082"),
            ("deal.created", "5725767000001148083")
        ]
    );
    assert_eq!(
        first.next_cursor.as_deref(),
        Some("page_token=c8582e7f6a1d3b9c0e4f5a6b7c8d9e0f1a2b3c4d5e6f70819")
    );
    assert_eq!(first.records, Some(2));
    assert_eq!(
        first.events[0].payload_value(),
        json!({
            "deal_id": "5725767000001148082",
            "name": "Cedar Valley Schools - Dental",
            "stage": "Qualification",
            "amount": "48250.50",
            "expected_revenue": "4825.05",
            "probability": "10",
            "closing_date": "2026-01-30",
            "type": "New Business",
            "lead_source": "Partner",
            "currency": "USD",
            "exchange_rate": "1",
            "account_id": "5725767000000652001",
            "account_name": "Cedar Valley Schools",
            "contact_id": "5725767000000653010",
            "contact_name": "Leah Okafor",
            "owner_id": "5725767000000411001",
            "owner_name": "Maya Fischer",
            "owner_email": "maya.fischer@example.com",
            "external_id": "5725767000001148082",
            "external_source": "zoho",
            "occurred_at": "2025-12-01T10:00:00Z"
        })
    );
    assert_eq!(
        state::get_string(poll::HIGH_WATER_KEY).unwrap().as_deref(),
        Some("2025-12-01T10:35:12Z")
    );

    let second = poll_deals(DEALS_PAGE_2, first.next_cursor.as_deref()).unwrap();
    assert_eq!(second.events.len(), 1);
    assert_eq!(second.records, Some(1));
    let payload = second.events[0].payload_value();
    assert_eq!(payload["exchange_rate"], "1.0825");
    assert_eq!(payload["currency"], "EUR");
    assert_eq!(
        second.next_cursor.as_deref(),
        Some("modified_since=2025-12-01T10:50:00+00:00")
    );
    assert_eq!(state::get(poll::HIGH_WATER_KEY), None);

    // The next listing: one deal won (a change like any other here), one only touched, one new.
    let next = poll_deals(DEALS_NEXT_POLL, second.next_cursor.as_deref()).unwrap();
    assert_eq!(
        summary(&next.events),
        [
            (
                "deal.updated".into(),
                "5725767000001148082".into(),
                "Deals/5725767000001148082@2025-12-22T10:00:00Z/updated".into()
            ),
            (
                "deal.created".into(),
                "5725767000001148085".into(),
                "Deals/5725767000001148085@2025-12-22T05:15:00Z/created".into()
            ),
        ]
    );
    assert_eq!(next.records, Some(3), "the touched deal is seen too");
    let won = next.events[0].payload_value();
    assert_eq!(won["stage"], "Closed Won");
    assert_eq!(won["amount"], "51900.75");
    assert_eq!(won["occurred_at"], "2025-12-22T10:00:00Z");
    assert_eq!(
        next.next_cursor.as_deref(),
        Some("modified_since=2025-12-22T10:00:00+00:00")
    );
    let again = poll_deals(DEALS_NEXT_POLL, next.next_cursor.as_deref()).unwrap();
    assert!(again.events.is_empty());
    assert_eq!(again.records, Some(3), "unchanged records are still seen");
    assert_eq!(again.next_cursor, next.next_cursor);
}

#[test]
fn pages_without_a_token_are_numbered() {
    let body = patched(DEALS_PAGE_1, |b| b["info"]["next_page_token"] = Value::Null);
    let out = poll_deals(&body, None).unwrap();
    assert_eq!(out.next_cursor.as_deref(), Some("page=2"));
    let body = patched(DEALS_PAGE_1, |b| {
        b["info"] = json!({"more_records": true});
    });
    assert_eq!(
        poll_deals(&body, None),
        Err(AdapterError::bad_request(
            "`info.more_records` is true but `info.next_page_token` and `info.page` are missing"
        ))
    );
    // No `info`: the last page.
    let body = patched(DEALS_PAGE_2, |b| {
        b.as_object_mut().unwrap().remove("info");
    });
    let out = poll_deals(&body, None).unwrap();
    assert_eq!(
        out.next_cursor.as_deref(),
        Some("modified_since=2025-12-01T10:50:00+00:00")
    );
}

#[test]
fn an_empty_page_ends_the_listing_without_moving_the_cursor_back() {
    // Zoho answers 204 No Content when nothing was modified since the cursor.
    let out = poll_deals("", Some("modified_since=2025-12-22T10:00:00+00:00")).unwrap();
    assert!(out.events.is_empty());
    assert_eq!(out.records, Some(0));
    assert_eq!(
        out.next_cursor.as_deref(),
        Some("modified_since=2025-12-22T10:00:00+00:00")
    );
    assert_eq!(poll_deals("  ", None).unwrap().next_cursor, None);
    // A page older than the cursor does not move it back either.
    let out = poll_deals(
        DEALS_PAGE_2,
        Some("modified_since=2025-12-22T10:00:00+00:00"),
    )
    .unwrap();
    assert_eq!(
        out.next_cursor.as_deref(),
        Some("modified_since=2025-12-22T10:00:00+00:00")
    );
}

#[test]
fn a_contacts_listing_maps_lookups_and_leaves_nulls_out() {
    let out = poll_module("Contacts", CONTACTS_LIST, None).unwrap();
    assert_eq!(out.events.len(), 2);
    assert_eq!(out.events[0].event_type(), "contact.created");
    assert_eq!(
        out.events[1].payload_value(),
        json!({
            "contact_id": "5725767000000653012",
            "last_name": "Banerjee",
            "email": "r.banerjee@harborclinics.example.com",
            "account_id": "5725767000000652003",
            "account_name": "Harbor Street Clinics",
            "owner_id": "5725767000000411002",
            "owner_name": "Jonas Whitfield",
            "owner_email": "jonas.whitfield@example.com",
            "external_id": "5725767000000653012",
            "external_source": "zoho",
            "occurred_at": "2025-11-30T12:30:00Z"
        })
    );
    assert_eq!(
        out.next_cursor.as_deref(),
        Some("modified_since=2025-12-01T03:35:00+00:00")
    );
}

#[test]
fn a_record_deleted_then_listed_again_is_created_again() {
    poll_deals(DEALS_PAGE_1, None).unwrap();
    let body = patched(DEALS_DELETED, |b| b["ids"] = json!(["5725767000001148082"]));
    notify(&body).unwrap();
    let again = poll_deals(DEALS_PAGE_1, None).unwrap();
    assert_eq!(
        again
            .events
            .iter()
            .map(|e| (e.event_type(), e.entity_id()))
            .collect::<Vec<_>>(),
        [("deal.created", "5725767000001148082")]
    );
}

#[test]
fn polling_needs_a_known_module_and_modification_times() {
    let page = testing::poll_page(DEALS_PAGE_1);
    assert_eq!(
        testing::run_poll::<Zoho>(&page, &ctx()),
        Err(AdapterError::failed(
            "connection setting `poll_module` is not configured"
        ))
    );
    assert_eq!(
        poll_module("Leads", DEALS_PAGE_1, None),
        Err(AdapterError::failed(
            "connection setting `poll_module` is `Leads`; expected Contacts, Accounts or Deals"
        ))
    );
    let cases: Vec<(String, &str)> = vec![
        (
            patched(DEALS_PAGE_1, |b| {
                b["data"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("Modified_Time");
            }),
            "`data[1].Modified_Time` is missing: include it in the list request's `fields`, so \
             that polling can resume where it stopped",
        ),
        (
            patched(DEALS_PAGE_1, |b| {
                b["data"][0]["Amount"] = json!("48,250.50")
            }),
            "`data[0].Amount`: `48,250.50` is not a canonical decimal (expected \
             -?digits(.digits)?, e.g. \"12.50\")",
        ),
        (
            patched(DEALS_PAGE_1, |b| {
                b["data"][0].as_object_mut().unwrap().remove("id");
            }),
            "`data[0].id` is missing",
        ),
        (
            patched(DEALS_PAGE_1, |b| b["info"]["more_records"] = json!("yes")),
            "`info.more_records` must be a boolean, got a string",
        ),
        (r#"{"info": {}}"#.into(), "`data` is missing"),
    ];
    for (body, expected) in cases {
        assert_eq!(
            poll_deals(&body, None),
            Err(AdapterError::bad_request(expected)),
            "{body}"
        );
        assert!(testing::state().is_empty(), "the host would roll it back");
    }
    let page = testing::poll_page(DEALS_PAGE_1).with_content_type("text/html");
    assert_eq!(
        testing::run_poll::<Zoho>(&page, &ctx().with_setting(poll::MODULE_SETTING, "Deals")),
        Err(AdapterError::bad_request(
            "content type `text/html` is not JSON; list pages are JSON"
        ))
    );
}

#[test]
fn every_fixture_meets_the_host_contracts() {
    // run_webhook / run_poll already assert this; here every event of every fixture is checked
    // in one place.
    let info = Zoho::describe();
    let ctx = ctx().with_setting(poll::MODULE_SETTING, "Deals");
    let mut checked = 0;
    for body in NOTIFICATIONS {
        if let Ok(events) = Zoho::handle_webhook(&testing::webhook(body), &ctx) {
            check_events(&info, &ctx, &events).unwrap();
            checked += events.len();
        }
    }
    testing::reset();
    for body in DEAL_PAGES {
        let out = Zoho::handle_poll(&testing::poll_page(body), &ctx).unwrap();
        check_events(&info, &ctx, &out.events).unwrap();
        checked += out.events.len();
    }
    assert!(checked >= 15, "{checked}");
}

#[test]
fn no_input_makes_the_adapter_panic() {
    let ctx = ctx().with_setting(poll::MODULE_SETTING, "Deals");
    for body in NOTIFICATIONS {
        let bytes = body.as_bytes();
        for end in 0..bytes.len() {
            let _ = Zoho::handle_webhook(&testing::webhook(&bytes[..end]), &ctx);
        }
        for (i, replacement) in
            (0..bytes.len()).zip([b'0', b'"', b'-', b'x', b'{', b']'].iter().cycle())
        {
            let mut body = bytes.to_vec();
            body[i] = *replacement;
            let _ = Zoho::handle_webhook(&testing::webhook(body), &ctx);
        }
    }
    for body in DEAL_PAGES.iter().chain([&CONTACTS_LIST]) {
        for end in 0..body.len() {
            let _ = Zoho::handle_poll(&testing::poll_page(&body.as_bytes()[..end]), &ctx);
        }
    }
}
