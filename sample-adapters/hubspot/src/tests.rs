//! Fixture tests: every fixture under `fixtures/` goes through the adapter as the host would run
//! it (`testing::run_webhook` / `run_poll` also check the host's contracts).

use crm_adapter_sdk::serde_json::{self, Value, json};
use crm_adapter_sdk::testing::{self, check_events, check_info};
use crm_adapter_sdk::{AdapterError, Event, PollOutput, log::Level};

use super::*;

mod polling;

const CONTACT_CREATION: &str = include_str!("../fixtures/contact-creation.json");
const CONTACT_PROPERTY_CHANGE: &str = include_str!("../fixtures/contact-property-change.json");
const CONTACT_DELETION: &str = include_str!("../fixtures/contact-deletion.json");
const COMPANY_CREATION: &str = include_str!("../fixtures/company-creation.json");
const COMPANY_PROPERTY_CHANGE: &str = include_str!("../fixtures/company-property-change.json");
const DEAL_CREATION: &str = include_str!("../fixtures/deal-creation.json");
const DEAL_PROPERTY_CHANGE: &str = include_str!("../fixtures/deal-property-change.json");
const DEAL_WON: &str = include_str!("../fixtures/deal-won.json");
const BATCH_MIXED: &str = include_str!("../fixtures/batch-mixed.json");
const BATCH_UNMAPPED: &str = include_str!("../fixtures/batch-unmapped.json");
const BATCH_EVENT_TYPE: &str = include_str!("../fixtures/batch-event-type.json");
const BAD_AMOUNT: &str = include_str!("../fixtures/bad-amount.json");
const NOT_A_BATCH: &str = include_str!("../fixtures/not-a-batch.json");
const POLL_DEALS_1: &str = include_str!("../fixtures/poll-deals-1.json");
const POLL_DEALS_2: &str = include_str!("../fixtures/poll-deals-2.json");
const POLL_CONTACTS_1: &str = include_str!("../fixtures/poll-contacts-1.json");
const POLL_CONTACTS_ARCHIVED: &str = include_str!("../fixtures/poll-contacts-archived.json");

const WEBHOOK_FIXTURES: [&str; 13] = [
    CONTACT_CREATION,
    CONTACT_PROPERTY_CHANGE,
    CONTACT_DELETION,
    COMPANY_CREATION,
    COMPANY_PROPERTY_CHANGE,
    DEAL_CREATION,
    DEAL_PROPERTY_CHANGE,
    DEAL_WON,
    BATCH_MIXED,
    BATCH_UNMAPPED,
    BATCH_EVENT_TYPE,
    BAD_AMOUNT,
    NOT_A_BATCH,
];
const POLL_FIXTURES: [&str; 4] = [
    POLL_DEALS_1,
    POLL_DEALS_2,
    POLL_CONTACTS_1,
    POLL_CONTACTS_ARCHIVED,
];

/// The connection of most tests: one portal, its events in `org-east`.
fn ctx() -> Context {
    testing::context()
        .with_provider("hubspot")
        .with_org("org-east")
        .with_setting(DEFAULT_ORG_SETTING, "org-east")
}

fn webhook_with(body: &str, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
    let req = testing::webhook(body).with_header("Content-Type", "application/json");
    testing::run_webhook::<HubSpot>(&req, ctx)
}

fn webhook(body: &str) -> Result<Vec<Event>, AdapterError> {
    webhook_with(body, &ctx())
}

fn one(body: &str) -> Event {
    let mut events = webhook(body).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    events.pop().unwrap()
}

fn poll(body: &str, cursor: Option<&str>) -> Result<PollOutput, AdapterError> {
    let mut page = testing::poll_page(body);
    if let Some(cursor) = cursor {
        page = page.with_cursor(cursor);
    }
    testing::run_poll::<HubSpot>(&page, &ctx())
}

fn bad_request(body: &str) -> String {
    match webhook(body) {
        Err(AdapterError::BadRequest(message)) => message,
        other => panic!("expected a bad request, got {other:?}"),
    }
}

/// (event type, entity id) of each event.
fn summary(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.event_type().to_owned(), e.entity_id().to_owned()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(t, id)| ((*t).to_owned(), (*id).to_owned()))
        .collect()
}

#[test]
fn describe_declares_every_event_type_with_its_money_properties() {
    let info = HubSpot::describe();
    check_info(&info).unwrap();
    assert_eq!(info.provider, "hubspot");
    let names: Vec<_> = info.event_types.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "contact.created",
            "contact.updated",
            "contact.deleted",
            "company.created",
            "company.updated",
            "deal.created",
            "deal.updated",
            "deal.won"
        ]
    );
    let deal = &info.decl("deal.won").unwrap().decimal_fields;
    assert_eq!(deal.len(), 10);
    assert!(deal.contains(&"/properties/amount".to_owned()));
    assert!(deal.contains(&"/properties/hs_arr".to_owned()));
    assert_eq!(
        info.decl("company.updated").unwrap().decimal_fields,
        [
            "/properties/annualrevenue",
            "/properties/total_revenue",
            "/properties/recent_deal_amount"
        ]
    );
    assert_eq!(
        info.decl("contact.deleted").unwrap().decimal_fields,
        [
            "/properties/total_revenue",
            "/properties/recent_deal_amount"
        ]
    );
}

#[test]
fn contact_creation_becomes_contact_created_keyed_by_the_event_id() {
    let event = one(CONTACT_CREATION);
    assert_eq!(event.event_type(), "contact.created");
    assert_eq!(event.entity_type(), "contact");
    assert_eq!(event.entity_id(), "90211");
    assert_eq!(event.org_id(), Some("org-east"));
    assert_eq!(event.dedupe_key_str(), Some("2718093311"));
    assert_eq!(
        event.payload_json(),
        concat!(
            r#"{"change_source":"CRM_UI","contact_id":"90211","external_id":"90211","#,
            r#""external_source":"hubspot","occurred_at":"2025-12-01T09:48:41.12Z","#,
            r#""portal_id":"4471902","source_event_id":"2718093311"}"#
        )
    );
}

#[test]
fn a_property_change_carries_the_property_that_changed() {
    let event = one(CONTACT_PROPERTY_CHANGE);
    assert_eq!(event.event_type(), "contact.updated");
    assert_eq!(event.entity_id(), "90211");
    assert_eq!(
        event.payload_value(),
        json!({
            "contact_id": "90211",
            "external_id": "90211",
            "external_source": "hubspot",
            "portal_id": "4471902",
            "source_event_id": "2718093402",
            "occurred_at": "2025-12-01T09:52:13.905Z",
            "change_source": "WORKFLOWS",
            "changed_properties": ["lifecyclestage"],
            "properties": {"lifecyclestage": "customer"}
        })
    );
}

#[test]
fn deletions_and_privacy_deletions_become_contact_deleted() {
    let events = webhook(CONTACT_DELETION).unwrap();
    assert_eq!(
        summary(&events),
        pairs(&[("contact.deleted", "90180"), ("contact.deleted", "90177")])
    );
    assert!(events[0].payload_value().get("privacy_deletion").is_none());
    assert_eq!(events[1].payload_value()["privacy_deletion"], true);
    assert_eq!(events[1].dedupe_key_str(), Some("2718094011"));
}

#[test]
fn companies_are_created_and_updated_with_exact_revenue() {
    let created = one(COMPANY_CREATION);
    assert_eq!(created.event_type(), "company.created");
    assert_eq!(created.entity_id(), "1800441");
    assert_eq!(created.payload_value()["company_id"], "1800441");

    let updated = one(COMPANY_PROPERTY_CHANGE);
    assert_eq!(updated.event_type(), "company.updated");
    assert!(
        updated
            .payload_json()
            .contains(r#""properties":{"annualrevenue":"2500000.00"}"#),
        "{}",
        updated.payload_json()
    );
}

#[test]
fn deals_are_created_updated_and_won() {
    let created = one(DEAL_CREATION);
    assert_eq!(created.event_type(), "deal.created");
    assert_eq!(created.entity_id(), "7305519822");

    let updated = one(DEAL_PROPERTY_CHANGE);
    assert_eq!(updated.event_type(), "deal.updated");
    assert_eq!(updated.payload_value()["properties"]["amount"], "18450.50");

    let won = one(DEAL_WON);
    assert_eq!(won.event_type(), "deal.won");
    assert_eq!(won.entity_id(), "7305519822");
    assert_eq!(won.dedupe_key_str(), Some("2718097730"));
    assert_eq!(
        won.payload_value()["properties"],
        json!({"dealstage": "closedwon"})
    );
}

#[test]
fn won_stages_are_a_connection_setting() {
    // A custom pipeline whose won stage has a numeric id.
    let ctx = ctx().with_setting(WON_STAGES_SETTING, "closedwon, 19224211");
    let body = DEAL_WON.replace("\"closedwon\"", "\"19224211\"");
    let events = webhook_with(&body, &ctx).unwrap();
    assert_eq!(events[0].event_type(), "deal.won");
    // Another stage of that pipeline is only an update.
    let body = DEAL_WON.replace("\"closedwon\"", "\"19224210\"");
    let events = webhook_with(&body, &ctx).unwrap();
    assert_eq!(events[0].event_type(), "deal.updated");
    // Once the setting names the stages, `closedwon` is no longer implied.
    let ctx = super::tests::ctx().with_setting(WON_STAGES_SETTING, "19224211");
    let events = webhook_with(DEAL_WON, &ctx).unwrap();
    assert_eq!(events[0].event_type(), "deal.updated");
    // A stage change on a contact property named dealstage is not a won deal.
    let body = DEAL_WON.replace("deal.propertyChange", "contact.propertyChange");
    assert_eq!(webhook(&body).unwrap()[0].event_type(), "contact.updated");
}

#[test]
fn a_mixed_batch_maps_what_it_can_and_skips_the_rest() {
    let events = webhook(BATCH_MIXED).unwrap();
    assert_eq!(
        summary(&events),
        pairs(&[
            ("contact.created", "90305"),
            ("contact.updated", "90305"),
            ("deal.updated", "7305519900"),
            ("deal.won", "7305519900"),
            ("company.updated", "1800441"),
            ("deal.created", "7305519911"),
        ])
    );
    let keys: Vec<_> = events.iter().map(|e| e.dedupe_key_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "2718100001",
            "2718100002",
            "2718100004",
            "2718100005",
            "2718100006",
            "2718100008"
        ]
    );
    // "1.25E4" is exact text for 12500; an emptied property is null.
    assert_eq!(events[2].payload_value()["properties"]["amount"], "12500");
    assert_eq!(
        events[4].payload_value()["properties"],
        json!({"annualrevenue": null})
    );
    // The generic `object.creation` of type 0-3 is a deal.
    assert_eq!(events[5].payload_value()["deal_id"], "7305519911");
    let logs = testing::logs();
    assert!(
        logs.iter().any(|l| l.level == Level::Info
            && l.message
                == "2 of 8 items skipped: not mapped by this adapter (contact.merge, \
                    ticket.creation)"),
        "{logs:?}"
    );
}

#[test]
fn a_batch_with_nothing_mapped_is_ignored() {
    assert_eq!(
        webhook(BATCH_UNMAPPED),
        Err(AdapterError::ignored(
            "no event of this batch is mapped by this adapter (deal.deletion, ticket.creation ×2)"
        ))
    );
    assert_eq!(webhook("[]"), Err(AdapterError::ignored("empty batch")));
}

#[test]
fn a_malformed_amount_refuses_the_whole_batch() {
    assert_eq!(
        bad_request(BAD_AMOUNT),
        "`[1].propertyValue` (deal property `amount`): `18,450.50` is not a canonical decimal \
         (expected -?digits(.digits)?, e.g. \"12.50\")"
    );
    assert!(
        testing::state().is_empty(),
        "nothing is kept from a refused batch"
    );
}

#[test]
fn malformed_batches_are_bad_requests_naming_the_field() {
    let patched = |patch: &dyn Fn(&mut Value)| {
        let mut body: Value = serde_json::from_str(BATCH_MIXED).unwrap();
        patch(&mut body);
        bad_request(&body.to_string())
    };
    let cases: Vec<(String, &str)> = vec![
        (
            bad_request(NOT_A_BATCH),
            "a HubSpot webhook batch must be a JSON array, got an object",
        ),
        (bad_request(""), "request body is empty; expected JSON"),
        (bad_request("[1]"), "`[0]` must be an object, got a number"),
        (
            patched(&|b| b[1]["objectId"] = Value::Null),
            "`[1].objectId` is missing",
        ),
        (
            patched(&|b| b[0]["eventId"] = json!(true)),
            "`[0].eventId` must be a string or a whole number, got a boolean",
        ),
        (
            patched(&|b| b[0]["occurredAt"] = json!("2025-12-01T10:00:00Z")),
            "`[0].occurredAt` must be a whole number, got a string",
        ),
        (
            patched(&|b| b[3]["portalId"] = json!(-4)),
            "`[3].portalId` must be a string or a whole number, got a number",
        ),
        (
            patched(&|b| {
                b[2].as_object_mut()
                    .unwrap()
                    .remove("subscriptionType")
                    .map(drop)
                    .unwrap()
            }),
            "`[2].subscriptionType` is missing (HubSpot names the event's kind there, or in \
             `eventType`)",
        ),
        (
            patched(&|b| b[0]["eventType"] = json!("contact.deletion")),
            "`[0].subscriptionType` is `contact.creation` but `[0].eventType` is \
             `contact.deletion`: an event has one kind",
        ),
        (
            patched(&|b| {
                b[1].as_object_mut()
                    .unwrap()
                    .remove("propertyName")
                    .map(drop)
                    .unwrap()
            }),
            "`[1].propertyName` is missing",
        ),
        (
            patched(&|b| b[1]["propertyValue"] = json!(42)),
            "`[1].propertyValue` must be a string, got a number",
        ),
        (
            patched(&|b| {
                b[7].as_object_mut()
                    .unwrap()
                    .remove("objectTypeId")
                    .map(drop)
                    .unwrap()
            }),
            "`[7].objectTypeId` is missing",
        ),
    ];
    for (actual, expected) in cases {
        assert_eq!(actual, expected);
    }
}

#[test]
fn the_content_type_must_be_json_when_sent() {
    let req = testing::webhook(CONTACT_CREATION).with_header("Content-Type", "text/plain");
    assert_eq!(
        HubSpot::handle_webhook(&req, &ctx()),
        Err(AdapterError::bad_request(
            "content type `text/plain` is not JSON"
        ))
    );
    let req = testing::webhook(CONTACT_CREATION);
    assert!(HubSpot::handle_webhook(&req, &ctx()).is_ok());
}

#[test]
fn orgs_come_from_the_portal_mapping_or_the_default() {
    // No org settings at all: platform level.
    let events = webhook_with(CONTACT_CREATION, &testing::context()).unwrap();
    assert_eq!(events[0].org_id(), None);

    // A mapped portal wins over the default.
    let ctx = ctx()
        .with_org("org-west")
        .with_setting("portal_org.4471902", "org-west");
    assert_eq!(
        webhook_with(CONTACT_CREATION, &ctx).unwrap()[0].org_id(),
        Some("org-west")
    );

    // With portals mapped and no default, an unmapped portal fails (kept for redrive) rather
    // than publish at platform level.
    let ctx = testing::context()
        .with_org("org-west")
        .with_setting("portal_org.5550001", "org-west");
    assert_eq!(
        webhook_with(CONTACT_CREATION, &ctx),
        Err(AdapterError::failed(
            "portal 4471902 is not mapped to an org: set `portal_org.4471902` (or \
             `default_org_id`) on the connection, then redrive"
        ))
    );

    // An org the connection does not allow fails too.
    let ctx = testing::context().with_setting(DEFAULT_ORG_SETTING, "org-east");
    assert_eq!(
        webhook_with(CONTACT_CREATION, &ctx),
        Err(AdapterError::failed(
            "org `org-east` is not one of this connection's allowed orgs; allow it on the \
             connection, then redrive"
        ))
    );
}

#[test]
fn malformed_settings_fail_the_invocation() {
    let ctx = ctx().with_setting(POLL_OBJECTS_SETTING, "contacts, tickets");
    assert_eq!(
        testing::run_poll::<HubSpot>(&testing::poll_page(POLL_CONTACTS_1), &ctx),
        Err(AdapterError::failed(
            "connection setting `poll_objects`: `tickets` is not one of contacts, companies, deals, \
             archived-contacts"
        ))
    );
    let ctx = super::tests::ctx().with_setting(WON_STAGES_SETTING, " , ");
    assert_eq!(
        webhook_with(DEAL_WON, &ctx),
        Err(AdapterError::failed(
            "connection setting `won_deal_stages` names no deal stage"
        ))
    );
}

#[test]
fn polling_deals_emits_only_what_changed_and_walks_the_types() {
    let first = poll(POLL_DEALS_1, Some("deals")).unwrap();
    assert_eq!(
        summary(&first.events),
        pairs(&[
            ("deal.created", "7305519822"),
            ("deal.created", "7305519900"),
            ("deal.won", "7305519900"),
            ("deal.created", "7305519911"),
        ])
    );
    assert_eq!(first.next_cursor.as_deref(), Some("deals:7305519912"));
    assert_eq!(first.records, Some(3), "three deals, four events");
    let payload = first.events[0].payload_value();
    assert_eq!(payload["properties"]["amount"], "18450.50");
    assert_eq!(payload["created_at"], "2025-12-01T10:10:00Z");
    assert_eq!(payload["occurred_at"], "2025-12-01T12:00:00.482Z");
    assert_eq!(payload["external_source"], "hubspot");
    assert!(payload.get("archived").is_none());
    // Money in exponent form leaves exact; an unset amount is null.
    let payload = first.events[3].payload_value();
    assert_eq!(payload["properties"]["hs_arr"], "15000");
    assert_eq!(payload["properties"]["amount"], Value::Null);
    assert!(first.events.iter().all(|e| e.org_id() == Some("org-east")));

    // The same page again: nothing.
    let again = poll(POLL_DEALS_1, Some("deals:7305519912")).unwrap();
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(again.records, Some(3), "unchanged records are still seen");

    // The next cycle: 822 entered closedwon (won); 900 was only touched (nothing); 911 got an
    // amount (updated; its hs_arr now reads "15000" instead of "1.5E4", which is no change);
    // 050 is new. The last page of deals hands over to contacts.
    let second = poll(POLL_DEALS_2, Some("deals")).unwrap();
    assert_eq!(
        summary(&second.events),
        pairs(&[
            ("deal.won", "7305519822"),
            ("deal.updated", "7305519911"),
            ("deal.created", "7305520050"),
        ])
    );
    assert_eq!(second.next_cursor.as_deref(), Some("archived-contacts"));
    assert_eq!(second.records, Some(4), "the touched deal is seen too");
    assert_eq!(
        second.events[0].payload_value()["properties"]["dealstage"],
        "closedwon"
    );
    assert_eq!(
        second.events[2].payload_value()["properties"]["amount"],
        "4200.75"
    );

    // Dedupe keys are unique within and across pages, and name the record.
    let keys: Vec<_> = first
        .events
        .iter()
        .chain(&second.events)
        .map(|e| e.dedupe_key_str().unwrap().to_owned())
        .collect();
    assert!(keys[1].starts_with("deals/7305519900@"), "{keys:?}");
    assert!(keys[2].ends_with("/won"), "{keys:?}");
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len());

    // A won deal that stays won is only updated.
    let changed = POLL_DEALS_2.replace("\"18450.50\"", "\"19000.00\"");
    let third = poll(&changed, Some("deals")).unwrap();
    assert_eq!(
        summary(&third.events),
        pairs(&[("deal.updated", "7305519822")])
    );
}

#[test]
fn the_cursor_names_the_type_and_the_page() {
    let contacts = poll(POLL_CONTACTS_1, None).unwrap();
    assert_eq!(
        summary(&contacts.events),
        pairs(&[("contact.created", "90211"), ("contact.created", "90305")])
    );
    assert_eq!(
        contacts.events[0].payload_value()["properties"]["total_revenue"],
        "18450.50"
    );
    assert_eq!(contacts.next_cursor.as_deref(), Some("contacts:2"));

    // A page without `paging.next` ends its type: contacts -> companies -> deals -> contacts.
    let empty = r#"{"results": []}"#;
    let next = |cursor: &str| poll(empty, Some(cursor)).unwrap().next_cursor.unwrap();
    assert_eq!(next("contacts:2"), "companies");
    assert_eq!(next("companies"), "deals");
    assert_eq!(next("deals:99"), "archived-contacts");
    assert_eq!(next("archived-contacts:5"), "contacts");

    // The order and the types are a setting.
    let ctx = ctx().with_setting(POLL_OBJECTS_SETTING, "deals,companies");
    let run = |cursor: Option<&str>| {
        let mut page = testing::poll_page(empty);
        if let Some(cursor) = cursor {
            page = page.with_cursor(cursor);
        }
        testing::run_poll::<HubSpot>(&page, &ctx)
            .unwrap()
            .next_cursor
            .unwrap()
    };
    assert_eq!(run(None), "companies", "no cursor: the first page of deals");
    assert_eq!(run(Some("companies")), "deals");
    assert_eq!(run(Some("contacts:7")), "deals", "a type no longer polled");

    assert_eq!(
        poll(empty, Some("tickets:5")),
        Err(AdapterError::bad_request(
            "cursor `tickets:5` does not start with contacts, companies, deals or \
             archived-contacts"
        ))
    );
}

#[test]
fn an_archived_contact_becomes_contact_deleted_once() {
    poll(POLL_CONTACTS_1, None).unwrap();
    let archived = poll(POLL_CONTACTS_ARCHIVED, Some("archived-contacts")).unwrap();
    // 90211 was known: deleted. 90177 never was: nothing to tell.
    assert_eq!(
        summary(&archived.events),
        pairs(&[("contact.deleted", "90211")])
    );
    assert_eq!(archived.events[0].payload_value()["archived"], true);
    assert_eq!(
        archived.records,
        Some(2),
        "an unknown archived contact is seen too"
    );
    let again = poll(POLL_CONTACTS_ARCHIVED, Some("archived-contacts")).unwrap();
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(again.records, Some(2));
    assert_eq!(
        again.next_cursor.as_deref(),
        Some("contacts"),
        "a new cycle"
    );
    // Restored: updated.
    let restored = poll(POLL_CONTACTS_1, Some("contacts")).unwrap();
    assert_eq!(
        summary(&restored.events),
        pairs(&[("contact.updated", "90211")])
    );
}

#[test]
fn records_of_the_archived_list_are_archived_unless_they_say_otherwise() {
    poll(POLL_CONTACTS_1, None).unwrap();
    let page = json!({"results": [
        {"id": "90211", "properties": {"email": "robin.bundy@example.com"}},
        {"id": "90305", "properties": {"email": "dana.whitfield@example.com"}, "archived": false}
    ]});
    let out = poll(&page.to_string(), Some("archived-contacts")).unwrap();
    // 90211 is deleted; 90305 changed (fewer properties) but says it is live: updated.
    assert_eq!(
        summary(&out.events),
        pairs(&[("contact.deleted", "90211"), ("contact.updated", "90305")])
    );
}

#[test]
fn a_bad_record_fails_the_page_and_leaves_the_state_alone() {
    let page = json!({
        "results": [
            {"id": "1", "properties": {"amount": "10.00"}},
            {"id": "2", "properties": {"amount": "ten"}}
        ]
    });
    assert_eq!(
        poll(&page.to_string(), Some("deals")),
        Err(AdapterError::bad_request(
            "`results[1].properties.amount` (deal property `amount`): `ten` is not a canonical \
             decimal (expected -?digits(.digits)?, e.g. \"12.50\")"
        ))
    );
    assert!(testing::state().is_empty(), "the host rolls the state back");
    assert_eq!(
        poll(r#"{"paging": {}}"#, None),
        Err(AdapterError::bad_request("`results` is missing"))
    );
    assert_eq!(
        poll(r#"{"results": [{"id": "1", "archived": "no"}]}"#, None),
        Err(AdapterError::bad_request(
            "`results[0].archived` must be a boolean, got a string"
        ))
    );
}

#[test]
fn the_state_stays_within_the_host_limits_for_thousands_of_records() {
    // 3,000 contacts over 30 pages: fingerprints share 32 keys instead of one key each.
    for page in 0..30 {
        let results: Vec<Value> = (0..100)
            .map(|i| {
                let id = page * 100 + i;
                json!({
                    "id": id.to_string(),
                    "properties": {"email": format!("c{id}@example.com"), "firstname": "Sam"},
                    "updatedAt": "2025-12-01T10:00:00Z",
                    "archived": false
                })
            })
            .collect();
        let body = json!({ "results": results }).to_string();
        let out = poll(&body, Some("contacts")).unwrap();
        assert_eq!(out.events.len(), 100);
    }
    let state = testing::state();
    assert_eq!(state.len(), 32);
    let total: usize = state.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(total < 200 * 1024, "{total} bytes of state");
    // And they are still recognised.
    let body = json!({"results": [{"id": "2999", "properties": {"email": "c2999@example.com", "firstname": "Sam"}}]});
    assert!(
        poll(&body.to_string(), Some("contacts"))
            .unwrap()
            .events
            .is_empty()
    );
}

#[test]
fn every_event_of_every_fixture_keeps_the_host_contracts() {
    // run_webhook / run_poll already assert this; check explicitly across all fixtures, with
    // a connection that allows the org, that no event is left out of the check.
    let info = HubSpot::describe();
    let ctx = ctx();
    let mut all = Vec::new();
    for fixture in WEBHOOK_FIXTURES {
        all.extend(webhook(fixture).unwrap_or_default());
    }
    for (fixture, cursor) in
        POLL_FIXTURES
            .iter()
            .zip(["deals", "deals", "contacts", "archived-contacts"])
    {
        all.extend(poll(fixture, Some(cursor)).unwrap().events);
    }
    assert_eq!(all.len(), 27);
    check_events(&info, &ctx, &all).unwrap();
    // The same events on a connection that does not allow the org break the org contract.
    let violations = check_events(&info, &testing::context(), &all).unwrap_err();
    assert_eq!(violations.len(), all.len());
}

#[test]
fn no_input_makes_the_adapter_panic() {
    // Every prefix of every fixture, and every fixture with one byte replaced: each must give
    // an answer (usually a bad request), never a panic.
    let ctx = ctx();
    for fixture in WEBHOOK_FIXTURES.iter().chain(&POLL_FIXTURES) {
        let bytes = fixture.as_bytes();
        for end in 0..bytes.len() {
            let _ = HubSpot::handle_webhook(&testing::webhook(&bytes[..end]), &ctx);
            let _ = HubSpot::handle_poll(&testing::poll_page(&bytes[..end]), &ctx);
        }
        for (i, replacement) in
            (0..bytes.len()).zip([b'0', b'"', b'-', b'x', b'{', b']', b'E'].iter().cycle())
        {
            let mut body = bytes.to_vec();
            body[i] = *replacement;
            let _ = HubSpot::handle_webhook(&testing::webhook(body.clone()), &ctx);
            let page = testing::poll_page(body).with_cursor("deals");
            let _ = HubSpot::handle_poll(&page, &ctx);
        }
    }
}

#[test]
fn a_batch_naming_kinds_in_event_type_is_read_like_one_naming_them_in_subscription_type() {
    // HubSpot's own webhooks overview shows its batch with `eventType`.
    let events = webhook_with(BATCH_EVENT_TYPE, &ctx()).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type()).collect();
    assert_eq!(kinds, ["contact.updated", "contact.created"]);
    // The same items with `subscriptionType` give the same events.
    let renamed = BATCH_EVENT_TYPE.replace("\"eventType\"", "\"subscriptionType\"");
    assert_eq!(
        format!("{:?}", webhook_with(&renamed, &ctx()).unwrap()),
        format!("{events:?}")
    );
    // Both, agreeing, are fine too.
    let mut both: Value = serde_json::from_str(BATCH_EVENT_TYPE).unwrap();
    for item in both.as_array_mut().unwrap() {
        item["subscriptionType"] = item["eventType"].clone();
    }
    assert_eq!(
        format!("{:?}", webhook_with(&both.to_string(), &ctx()).unwrap()),
        format!("{events:?}")
    );
}
