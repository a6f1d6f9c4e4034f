//! Fixture tests: every fixture under `fixtures/` goes through the adapter as the host would
//! run it (`testing::run_webhook` / `run_poll` also check the host's contracts).

use crm_adapter_sdk::serde_json::{self, Value, json};
use crm_adapter_sdk::testing::{self, check_events, check_info};
use crm_adapter_sdk::{AdapterError, Event, PollOutput, log::Level, state};

use super::*;
use crate::records::Object;

mod polling;

const CDC_ACCOUNT_CREATED: &str = include_str!("../fixtures/cdc-account-created.json");
const CDC_ACCOUNT_UPDATED: &str = include_str!("../fixtures/cdc-account-updated.json");
const CDC_ACCOUNT_DELETED: &str = include_str!("../fixtures/cdc-account-deleted.json");
const CDC_CONTACTS_MASS_UPDATE: &str = include_str!("../fixtures/cdc-contacts-mass-update.json");
const CDC_OPPORTUNITY_CREATED: &str = include_str!("../fixtures/cdc-opportunity-created.json");
const CDC_OPPORTUNITY_WON: &str = include_str!("../fixtures/cdc-opportunity-won.json");
const CDC_OPPORTUNITY_LOST: &str = include_str!("../fixtures/cdc-opportunity-lost.json");
const CDC_BATCH: &str = include_str!("../fixtures/cdc-batch.json");
const CDC_LEAD_CREATED: &str = include_str!("../fixtures/cdc-lead-created.json");
const CDC_UNDECODED_BITMAP: &str = include_str!("../fixtures/cdc-undecoded-bitmap.json");
const PLATFORM_EVENT: &str = include_str!("../fixtures/platform-event.json");
const OUTBOUND_OPPORTUNITY_WON: &str = include_str!("../fixtures/outbound-opportunity-won.xml");
const OUTBOUND_CONTACT: &str = include_str!("../fixtures/outbound-contact.xml");
const OUTBOUND_LEAD: &str = include_str!("../fixtures/outbound-lead.xml");
const OUTBOUND_MALFORMED: &str = include_str!("../fixtures/outbound-malformed.xml");
const SOQL_PAGE_1: &str = include_str!("../fixtures/soql-opportunities-page-1.json");
const SOQL_PAGE_2: &str = include_str!("../fixtures/soql-opportunities-page-2.json");
const SOQL_NEXT_POLL: &str = include_str!("../fixtures/soql-opportunities-next-poll.json");

const JSON_FIXTURES: [&str; 11] = [
    CDC_ACCOUNT_CREATED,
    CDC_ACCOUNT_UPDATED,
    CDC_ACCOUNT_DELETED,
    CDC_CONTACTS_MASS_UPDATE,
    CDC_OPPORTUNITY_CREATED,
    CDC_OPPORTUNITY_WON,
    CDC_OPPORTUNITY_LOST,
    CDC_BATCH,
    CDC_LEAD_CREATED,
    CDC_UNDECODED_BITMAP,
    PLATFORM_EVENT,
];
const XML_FIXTURES: [&str; 4] = [
    OUTBOUND_OPPORTUNITY_WON,
    OUTBOUND_CONTACT,
    OUTBOUND_LEAD,
    OUTBOUND_MALFORMED,
];
const POLL_FIXTURES: [&str; 3] = [SOQL_PAGE_1, SOQL_PAGE_2, SOQL_NEXT_POLL];

fn ctx() -> Context {
    testing::context()
        .with_provider("salesforce")
        .with_org("org-456")
        .with_setting(DEFAULT_ORG_SETTING, "org-456")
}

fn cdc(body: &str) -> Result<Vec<Event>, AdapterError> {
    let req = testing::webhook(body).with_header("Content-Type", "application/json");
    testing::run_webhook::<Salesforce>(&req, &ctx())
}

fn outbound(body: &str) -> Result<Vec<Event>, AdapterError> {
    let req = testing::webhook(body).with_header("Content-Type", "text/xml; charset=utf-8");
    testing::run_webhook::<Salesforce>(&req, &ctx())
}

fn poll(body: &str, cursor: Option<&str>) -> Result<PollOutput, AdapterError> {
    let mut page = testing::poll_page(body);
    if let Some(cursor) = cursor {
        page = page.with_cursor(cursor);
    }
    testing::run_poll::<Salesforce>(&page, &ctx())
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
    let info = Salesforce::describe();
    check_info(&info).unwrap();
    assert_eq!(info.provider, "salesforce");
    let names: Vec<_> = info.event_types.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "account.created",
            "account.updated",
            "account.deleted",
            "contact.created",
            "contact.updated",
            "contact.deleted",
            "opportunity.created",
            "opportunity.updated",
            "opportunity.won",
            "opportunity.lost",
            "opportunity.deleted",
        ]
    );
    assert_eq!(
        info.decl("account.updated").unwrap().decimal_fields,
        ["/annual_revenue"]
    );
    assert!(
        info.decl("contact.created")
            .unwrap()
            .decimal_fields
            .is_empty()
    );
    for action in ["created", "updated", "won", "lost"] {
        assert_eq!(
            info.decl(&format!("opportunity.{action}"))
                .unwrap()
                .decimal_fields,
            ["/amount", "/expected_revenue", "/probability"]
        );
    }
}

#[test]
fn a_created_account_maps_its_fields_and_its_compound_address() {
    let events = cdc(CDC_ACCOUNT_CREATED).unwrap();
    assert_eq!(
        summary(&events),
        [(
            "account.created".into(),
            "0015g00000Nw7QpAAJ".into(),
            "00041c5e-7a2d-6b1f-8d0e-3f1c2a9b7e44/1/0015g00000Nw7QpAAJ".into()
        )]
    );
    assert_eq!(events[0].org_id(), Some("org-456"));
    assert_eq!(
        events[0].payload_value(),
        json!({
            "account_id": "0015g00000Nw7QpAAJ",
            "name": "Northwind Benefits Group",
            "account_number": "NW-20931",
            "type": "Customer - Direct",
            "industry": "Insurance",
            "owner_id": "0055g00000AbCdEAAV",
            "phone": "+1 (415) 555-0134",
            "website": "https://northwind-benefits.example.com",
            "annual_revenue": "2500000.00",
            "number_of_employees": 240,
            "billing_city": "San Francisco",
            "billing_state": "CA",
            "billing_postal_code": "94111",
            "billing_country": "United States",
            "external_id": "0015g00000Nw7QpAAJ",
            "external_source": "salesforce",
            "occurred_at": "2025-12-01T09:55:00Z"
        })
    );
    // Change events are not remembered: only whole records are (outbound messages, polls).
    assert!(testing::state().is_empty());
}

#[test]
fn an_update_carries_what_changed_and_nulls_what_was_cleared() {
    let events = cdc(CDC_ACCOUNT_UPDATED).unwrap();
    assert_eq!(events[0].event_type(), "account.updated");
    assert_eq!(
        events[0].payload_value(),
        json!({
            "account_id": "0015g00000Nw7QpAAJ",
            "industry": "Financial Services",
            "annual_revenue": "3100000.00",
            "website": null,
            "changed_fields": ["Industry", "AnnualRevenue", "Website", "LastModifiedDate"],
            "external_id": "0015g00000Nw7QpAAJ",
            "external_source": "salesforce",
            "occurred_at": "2025-12-02T10:00:00.25Z"
        })
    );
}

#[test]
fn a_change_event_naming_several_records_gives_one_event_each() {
    let events = cdc(CDC_CONTACTS_MASS_UPDATE).unwrap();
    let ids = [
        "0035g00000Jx4LmAAB",
        "0035g00000Jx4LnAAB",
        "0035g00000Jx4LoAAB",
    ];
    assert_eq!(events.len(), ids.len());
    for (event, id) in events.iter().zip(ids) {
        assert_eq!(event.event_type(), "contact.updated");
        assert_eq!(event.entity_id(), id);
        assert_eq!(
            event.dedupe_key_str(),
            Some(format!("0006f3e1-5b8a-4c27-9d44-e0b7a2c61f95/3/{id}").as_str())
        );
        assert_eq!(
            event.payload_value(),
            json!({
                "contact_id": id,
                "account_id": "0015g00000Nw7QpAAJ",
                "mailing_city": "Oakland",
                "changed_fields": ["AccountId", "MailingAddress.City", "LastModifiedDate"],
                "external_id": id,
                "external_source": "salesforce",
                "occurred_at": "2025-12-02T11:00:00Z"
            })
        );
    }
}

#[test]
fn a_delete_carries_the_ids_and_marks_a_known_record_deleted() {
    let key = snapshot::bucket_key(Object::Account, "0015g00000Nw7QpAAJ");
    state::set(&key, r#"{"0015g00000Nw7QpAAJ":"0123456789abcdef"}"#).unwrap();
    let events = cdc(CDC_ACCOUNT_DELETED).unwrap();
    assert_eq!(events[0].event_type(), "account.deleted");
    assert_eq!(
        events[0].payload_value(),
        json!({
            "account_id": "0015g00000Nw7QpAAJ",
            "external_id": "0015g00000Nw7QpAAJ",
            "external_source": "salesforce",
            "occurred_at": "2025-12-03T11:00:00Z"
        })
    );
    assert_eq!(
        state::get_string(&key).unwrap().unwrap(),
        r#"{"0015g00000Nw7QpAAJ":"deleted"}"#
    );
    // Unknown records are not added to the state.
    testing::reset();
    cdc(CDC_ACCOUNT_DELETED).unwrap();
    assert!(testing::state().is_empty());
}

#[test]
fn contacts_and_opportunities_can_be_deleted_too() {
    for (entity, id) in [
        ("Contact", "0035g00000Jx4LmAAB"),
        ("Opportunity", "0065g00000Qb2RsAAJ"),
    ] {
        let body = patched(CDC_ACCOUNT_DELETED, |b| {
            let header = &mut b["data"]["payload"]["ChangeEventHeader"];
            header["entityName"] = json!(entity);
            header["recordIds"] = json!([id]);
        });
        let events = cdc(&body).unwrap();
        let expected = format!("{}.deleted", entity.to_ascii_lowercase());
        assert_eq!(events[0].event_type(), expected);
        assert_eq!(events[0].entity_id(), id);
    }
}

#[test]
fn an_open_opportunity_is_created_with_exact_amounts() {
    let events = cdc(CDC_OPPORTUNITY_CREATED).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type(), "opportunity.created");
    let payload = events[0].payload_value();
    // 48250.5 and 9650.1 arrived as JSON numbers; 20.0 is a percentage.
    assert_eq!(payload["amount"], "48250.50");
    assert_eq!(payload["expected_revenue"], "9650.10");
    assert_eq!(payload["probability"], "20");
    assert_eq!(payload["stage_name"], "Qualification");
    assert_eq!(payload["is_closed"], false);
    assert_eq!(payload["close_date"], "2026-02-27");
}

#[test]
fn an_opportunity_created_already_closed_is_also_won_or_lost() {
    for (is_won, stage, action) in [(true, "Closed Won", "won"), (false, "Closed Lost", "lost")] {
        let body = patched(CDC_OPPORTUNITY_CREATED, |b| {
            let p = &mut b["data"]["payload"];
            p["IsClosed"] = json!(true);
            p["IsWon"] = json!(is_won);
            p["StageName"] = json!(stage);
        });
        let events = cdc(&body).unwrap();
        let key = "00052b8f-9c1d-4e70-b3a6-5d8e1f2c0a47/1/0065g00000Qb2RsAAJ";
        assert_eq!(
            summary(&events),
            [
                (
                    "opportunity.created".into(),
                    "0065g00000Qb2RsAAJ".into(),
                    key.into()
                ),
                (
                    format!("opportunity.{action}"),
                    "0065g00000Qb2RsAAJ".into(),
                    format!("{key}/{action}")
                ),
            ]
        );
        assert_eq!(events[0].payload_json(), events[1].payload_json());
    }
}

#[test]
fn closing_an_opportunity_is_won_or_lost() {
    let won = cdc(CDC_OPPORTUNITY_WON).unwrap();
    assert_eq!(won.len(), 1);
    assert_eq!(won[0].event_type(), "opportunity.won");
    let payload = won[0].payload_value();
    assert_eq!(payload["amount"], "51900.75");
    assert_eq!(payload["probability"], "100");
    assert_eq!(payload["is_won"], true);
    assert_eq!(payload["occurred_at"], "2025-12-22T10:00:00Z");

    let lost = cdc(CDC_OPPORTUNITY_LOST).unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].event_type(), "opportunity.lost");
    let payload = lost[0].payload_value();
    assert_eq!(payload["expected_revenue"], "0.00");
    assert_eq!(payload["probability"], "0");
    // IsWon did not change (it stays false), so it is not in the payload.
    assert!(payload.get("is_won").is_none(), "{payload}");
}

/// The event type of an opportunity UPDATE with these changed fields and values.
fn opportunity_update(changed: &[&str], values: Value) -> String {
    let body = patched(CDC_OPPORTUNITY_LOST, |b| {
        let header = b["ChangeEventHeader"].take();
        let mut event = values;
        event["ChangeEventHeader"] = header;
        event["ChangeEventHeader"]["changedFields"] = json!(changed);
        *b = event;
    });
    let events = cdc(&body).unwrap();
    assert_eq!(events.len(), 1);
    events[0].event_type().to_owned()
}

#[test]
fn only_a_change_that_closes_an_opportunity_is_won_or_lost() {
    let cases = [
        // Amount changes on an open opportunity.
        (
            vec!["Amount"],
            json!({"Amount": 60000}),
            "opportunity.updated",
        ),
        // Reopened.
        (
            vec!["StageName", "IsClosed"],
            json!({"StageName": "Negotiation/Review", "IsClosed": false}),
            "opportunity.updated",
        ),
        // A won deal marked lost: IsWon turns false, IsClosed stays true (so is not sent).
        (
            vec!["StageName", "IsWon"],
            json!({"StageName": "Closed Lost", "IsWon": false}),
            "opportunity.lost",
        ),
        // A lost deal won after all: only IsWon changes.
        (
            vec!["StageName", "IsWon"],
            json!({"StageName": "Closed Won", "IsWon": true}),
            "opportunity.won",
        ),
        // A relay that drops the flags: the default stage names decide.
        (
            vec!["StageName"],
            json!({"StageName": "Closed Won"}),
            "opportunity.won",
        ),
        (
            vec!["StageName"],
            json!({"StageName": "Closed Lost"}),
            "opportunity.lost",
        ),
        (
            vec!["StageName"],
            json!({"StageName": "Signed (custom)"}),
            "opportunity.updated",
        ),
        // Enriched fields (sent although unchanged) do not count as changes.
        (
            vec!["Amount"],
            json!({"Amount": 60000, "IsClosed": true, "IsWon": true}),
            "opportunity.updated",
        ),
        // Without changedFields, the fields present are the changes.
        (
            vec![],
            json!({"IsClosed": true, "IsWon": true}),
            "opportunity.won",
        ),
    ];
    for (changed, values, expected) in cases {
        let got = opportunity_update(&changed, values.clone());
        assert_eq!(got, expected, "{changed:?} {values}");
    }
}

#[test]
fn a_batch_skips_what_it_does_not_map_and_undeletes_as_created() {
    let events = cdc(CDC_BATCH).unwrap();
    assert_eq!(
        summary(&events),
        [
            (
                "contact.created".into(),
                "0035g00000Jx4LpAAB".into(),
                "000a1c3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e/1/0035g00000Jx4LpAAB".into()
            ),
            (
                "account.created".into(),
                "0015g00000Nw7QrAAJ".into(),
                "000d4f6b-7c8d-4e9f-0a1b-2c3d4e5f6a7b/1/0015g00000Nw7QrAAJ".into()
            ),
        ]
    );
    // The contact's name comes from the compound `Name` field of change events.
    let contact = events[0].payload_value();
    assert_eq!(contact["first_name"], "Priya");
    assert_eq!(contact["last_name"], "Raman");
    assert_eq!(contact["mailing_state"], "CA");
    let account = events[1].payload_value();
    assert_eq!(account["undeleted"], true);
    // 1.39E8 (a double in exponent form) becomes an exact decimal string.
    assert_eq!(account["annual_revenue"], "139000000.00");
    let logs = testing::logs();
    assert!(
        logs.iter().any(|l| l.level == Level::Warn
            && l.message
                == "Account GAP_UPDATE event carries no field values; poll the records to catch up"),
        "{logs:?}"
    );
}

#[test]
fn deliveries_with_nothing_mapped_are_ignored_with_the_reason() {
    assert_eq!(
        cdc(CDC_LEAD_CREATED),
        Err(AdapterError::ignored(
            "change events for `Lead` are not used by this adapter"
        ))
    );
    let body = patched(CDC_BATCH, |b| {
        let items = b.as_array_mut().unwrap();
        items.remove(4);
        items.remove(1);
    });
    assert_eq!(
        cdc(&body),
        Err(AdapterError::ignored(
            "nothing to emit: CometD `/meta/connect` message; change events for `Lead` are not \
             used by this adapter; Account GAP_UPDATE event carries no field values"
        ))
    );
    assert_eq!(
        cdc("[]"),
        Err(AdapterError::ignored("the delivery holds no messages"))
    );
    let many = format!("[{}]", [CDC_LEAD_CREATED; 5].join(","));
    assert_eq!(
        cdc(&many),
        Err(AdapterError::ignored(
            "nothing to emit: change events for `Lead` are not used by this adapter; change \
             events for `Lead` are not used by this adapter; change events for `Lead` are not \
             used by this adapter; and 2 more"
        ))
    );
}

#[test]
fn malformed_change_events_are_bad_requests_naming_the_field() {
    assert_eq!(
        bad_request(cdc(CDC_UNDECODED_BITMAP)),
        "`ChangeEventHeader.changedFields` holds an undecoded field bitmap (`0x400C02`); the \
         relay must decode changedFields, nulledFields and diffFields into field names"
    );
    let header = |patch: &dyn Fn(&mut Value)| {
        bad_request(cdc(&patched(CDC_ACCOUNT_UPDATED, |b| {
            patch(&mut b["ChangeEventHeader"])
        })))
    };
    let cases: Vec<(String, &str)> = vec![
        (
            bad_request(cdc(r#"{"channel": "/data/ChangeEvents"}"#)),
            "not a change event: `data`, `payload` and `ChangeEventHeader` are all missing",
        ),
        (
            bad_request(cdc(r#"[{"data": {"payload": 3}}]"#)),
            "`[0].data.payload` must be an object, got a number",
        ),
        (
            bad_request(cdc(r#"{"data": {}}"#)),
            "`data.payload` is missing",
        ),
        (
            bad_request(cdc("7")),
            "the delivery must be a JSON object, got a number",
        ),
        (
            header(&|h| h["recordIds"] = json!([])),
            "`ChangeEventHeader.recordIds` is empty",
        ),
        (
            header(&|h| h["recordIds"] = json!(["001", 1.5])),
            "`ChangeEventHeader.recordIds[1]` must be a string or a whole number, got a number",
        ),
        (
            header(&|h| h["changeType"] = Value::Null),
            "`ChangeEventHeader.changeType` is missing",
        ),
        (
            header(&|h| {
                h.as_object_mut().unwrap().remove("transactionKey");
            }),
            "`ChangeEventHeader.transactionKey` is missing",
        ),
        (
            header(&|h| h["sequenceNumber"] = json!("1")),
            "`ChangeEventHeader.sequenceNumber` must be a whole number, got a string",
        ),
        (
            header(&|h| h["nulledFields"] = json!("Website")),
            "`ChangeEventHeader.nulledFields` must be an array, got a string",
        ),
        (
            bad_request(cdc(&patched(CDC_ACCOUNT_UPDATED, |b| {
                b["AnnualRevenue"] = json!("3,100,000")
            }))),
            "`AnnualRevenue`: `3,100,000` is not a canonical decimal (expected \
             -?digits(.digits)?, e.g. \"12.50\")",
        ),
        (
            bad_request(cdc(&patched(CDC_OPPORTUNITY_WON, |b| {
                b["data"]["payload"]["Probability"] = json!(140)
            }))),
            "`data.payload.Probability` is 140; a percentage must be between 0 and 100",
        ),
        (
            bad_request(cdc(&patched(CDC_OPPORTUNITY_WON, |b| {
                b["data"]["payload"]["IsWon"] = json!("true")
            }))),
            "`data.payload.IsWon` must be a boolean, got a string",
        ),
        (
            bad_request(cdc(&patched(CDC_BATCH, |b| {
                b[1]["data"]["payload"]["Name"] = json!("Priya Raman")
            }))),
            "`[1].data.payload.Name` must be an object, got a string",
        ),
    ];
    for (got, expected) in cases {
        assert_eq!(got, expected);
    }
    assert!(
        bad_request(cdc("{\"ChangeEventHeader\": "))
            .starts_with("request body is not valid JSON: ")
    );
}

#[test]
fn an_outbound_message_creates_and_then_ignores_its_resend() {
    let events = outbound(OUTBOUND_OPPORTUNITY_WON).unwrap();
    assert_eq!(
        summary(&events),
        [
            (
                "opportunity.created".into(),
                "0065g00000Qb2RuAAJ".into(),
                "04l5g00000XyZ01AAC".into()
            ),
            (
                "opportunity.won".into(),
                "0065g00000Qb2RuAAJ".into(),
                "04l5g00000XyZ01AAC/won".into()
            ),
            (
                "account.created".into(),
                "0015g00000Nw7QrAAJ".into(),
                "04l5g00000XyZ02AAC".into()
            ),
        ]
    );
    assert_eq!(
        events[1].payload_value(),
        json!({
            "opportunity_id": "0065g00000Qb2RuAAJ",
            "account_id": "0015g00000Nw7QrAAJ",
            "name": "Harbor Street Clinics & Labs - Vision Plan",
            "stage_name": "Closed Won",
            "amount": "212500.00",
            "expected_revenue": "212500.00",
            "probability": "100",
            "close_date": "2025-12-19",
            "is_closed": true,
            "is_won": true,
            "owner_id": "0055g00000KlMnOAAV",
            "external_id": "0065g00000Qb2RuAAJ",
            "external_source": "salesforce",
            "occurred_at": "2025-12-19T16:45:12Z"
        })
    );
    let account = events[2].payload_value();
    assert_eq!(account["annual_revenue"], "139000000.00");
    assert_eq!(account["number_of_employees"], 1200);
    assert_eq!(account["name"], "Harbor Street Clinics & Labs");
    let key = snapshot::bucket_key(Object::Opportunity, "0065g00000Qb2RuAAJ");
    assert_eq!(
        state::get_string(&key).unwrap().unwrap(),
        r#"{"0065g00000Qb2RuAAJ":"ecd39353db1fd0ec:won"}"#
    );

    // Salesforce resends a message until it is acknowledged: nothing new, nothing emitted.
    assert_eq!(
        outbound(OUTBOUND_OPPORTUNITY_WON),
        Err(AdapterError::ignored(
            "nothing to emit: Opportunity 0065g00000Qb2RuAAJ is unchanged since it was last seen; \
             Account 0015g00000Nw7QrAAJ is unchanged since it was last seen"
        ))
    );
}

#[test]
fn an_outbound_message_for_a_known_record_is_an_update_or_a_stage_change() {
    let events = outbound(OUTBOUND_CONTACT).unwrap();
    assert_eq!(events[0].event_type(), "contact.created");
    assert_eq!(events[0].payload_value()["title"], "VP, People & Benefits");
    let changed = OUTBOUND_CONTACT.replace("+1 (415) 555-0199", "+1 (415) 555-0100");
    let events = outbound(&changed).unwrap();
    assert_eq!(events[0].event_type(), "contact.updated");
    assert_eq!(
        events[0].payload_value()["mobile_phone"],
        "+1 (415) 555-0100"
    );
    // Only the modification time changed: nothing to tell.
    let touched = changed.replace("2025-12-20T09:12:40", "2025-12-21T08:00:00");
    assert!(matches!(outbound(&touched), Err(AdapterError::Ignored(_))));

    // An open opportunity seen before, now lost.
    let open = OUTBOUND_OPPORTUNITY_WON
        .replace("<sf:IsClosed>true", "<sf:IsClosed>false")
        .replace("<sf:IsWon>true", "<sf:IsWon>false")
        .replace("Closed Won", "Proposal/Price Quote");
    let events = outbound(&open).unwrap();
    assert_eq!(events[0].event_type(), "opportunity.created");
    assert_eq!(events.len(), 2, "open: created only (and the account)");
    let lost = open
        .replace("<sf:IsClosed>false", "<sf:IsClosed>true")
        .replace("Proposal/Price Quote", "Closed Lost");
    let events = outbound(&lost).unwrap();
    assert_eq!(
        summary(&events),
        [(
            "opportunity.lost".into(),
            "0065g00000Qb2RuAAJ".into(),
            "04l5g00000XyZ01AAC".into()
        )]
    );
    // Lost, and then only its amount changes: an update, not a second loss.
    let amended = lost.replace("<sf:Amount>212500.0", "<sf:Amount>200000.0");
    let events = outbound(&amended).unwrap();
    assert_eq!(events[0].event_type(), "opportunity.updated");
    assert_eq!(events[0].payload_value()["amount"], "200000.00");
}

#[test]
fn outbound_messages_for_other_objects_are_ignored() {
    assert_eq!(
        outbound(OUTBOUND_LEAD),
        Err(AdapterError::ignored(
            "outbound messages for `Lead` are not used by this adapter"
        ))
    );
    assert!(testing::state().is_empty());
}

#[test]
fn a_malformed_soap_envelope_is_a_bad_request_never_a_trap() {
    let envelope = |inner: &str| {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">{inner}</notifications>
 </soapenv:Body>
</soapenv:Envelope>"#
        )
    };
    let account = |fields: &str| {
        envelope(&format!(
            r#"<Notification><Id>04l5g00000XyZ11AAC</Id><sObject xsi:type="sf:Account" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>0015g00000Nw7QpAAJ</sf:Id>{fields}</sObject></Notification>"#
        ))
    };
    let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
    let cases: Vec<(String, &str)> = vec![
        (
            OUTBOUND_MALFORMED.into(),
            "the body is not well-formed XML: ill-formed document: expected `</sf:Name>`, but \
             `</sf:Nmae>` was found",
        ),
        (
            "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"b\">]><x/>".into(),
            "a DOCTYPE is not accepted",
        ),
        (
            "<root><child/></root>".into(),
            "the body is not a Salesforce outbound message: the root element is not a SOAP \
             Envelope",
        ),
        (
            r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><soapenv:Fault/></soapenv:Body></soapenv:Envelope>"#.into(),
            "the body is not a Salesforce outbound message: `Envelope/Body/notifications` is \
             missing",
        ),
        (
            envelope("<OrganizationId>00D5g000004XyZaEAK</OrganizationId>"),
            "the outbound message holds no Notification",
        ),
        (
            envelope("<Notification><Id>04l5g00000XyZ11AAC</Id></Notification>"),
            "`Notification[0].sObject` is missing",
        ),
        (
            envelope(
                "<Notification><Id>04l5g00000XyZ11AAC</Id><sObject><Id>1</Id></sObject></Notification>",
            ),
            "`Notification[0].sObject` has no xsi:type naming its object",
        ),
        (
            envelope(
                r#"<Notification><sObject xsi:type="sf:Account"><Id>1</Id></sObject></Notification>"#,
            ),
            "`Notification[0].Id` is missing",
        ),
        (
            account("<sf:AnnualRevenue>lots</sf:AnnualRevenue>"),
            "`Notification[0].sObject.AnnualRevenue` is `lots`, not a number",
        ),
        (
            account("<sf:NumberOfEmployees>12.5</sf:NumberOfEmployees>"),
            "`Notification[0].sObject.NumberOfEmployees` must be a whole number from 0 to \
             9007199254740991, got 12.5",
        ),
        (
            envelope(
                r#"<Notification><Id>04l5g00000XyZ11AAC</Id><sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>0065g00000Qb2RuAAJ</sf:Id><sf:IsWon>yes</sf:IsWon></sObject></Notification>"#,
            ),
            "`Notification[0].sObject.IsWon` is `yes`, not a boolean",
        ),
        (
            account("<sf:Name>A &nbsp; B</sf:Name>"),
            "the body is not well-formed XML: unknown entity `&nbsp;`",
        ),
        (
            account("").replace("</soapenv:Envelope>", ""),
            "the body is not well-formed XML: the document ends before its elements are closed",
        ),
        (
            format!("{}<extra/>", account("")),
            "the body is not well-formed XML: more than one root element",
        ),
        (
            format!("{} trailing", account("")),
            "the body is not well-formed XML: text outside the root element",
        ),
        (
            envelope(&format!(
                "<Notification><Id>04l5g00000XyZ11AAC</Id><sObject xsi:type=\"sf:Account\">{deep}</sObject></Notification>"
            )),
            "the XML is nested too deeply",
        ),
        (
            envelope(
                "<Notification><Id>04l5g00000XyZ11AAC</Id><Id>04l5g00000XyZ12AAC</Id></Notification>",
            ),
            "the body is not a Salesforce outbound message: a Notification has more than one Id",
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(bad_request(outbound(&body)), expected, "{body}");
    }
    assert!(testing::state().is_empty());
    let not_utf8 = testing::webhook(vec![b'<', 0xff, b'>']).with_header("content-type", "text/xml");
    let err = testing::run_webhook::<Salesforce>(&not_utf8, &ctx()).unwrap_err();
    assert!(
        err.message().starts_with("request body is not UTF-8 text"),
        "{err}"
    );
}

#[test]
fn xml_values_are_read_as_text_and_typed_by_the_field_tables() {
    let body = OUTBOUND_CONTACT
        .replace(
            "<sf:Title>VP, People &amp; Benefits</sf:Title>",
            "<sf:Title><![CDATA[VP <People>]]> &#38; &#x42;enefits</sf:Title>",
        )
        .replace(
            "<sf:MailingCity>San Francisco</sf:MailingCity>",
            "<sf:MailingCity xsi:nil=\"true\"/><!-- cleared --><sf:Unmapped><sf:Nested>x</sf:Nested></sf:Unmapped>",
        );
    let events = outbound(&body).unwrap();
    let payload = events[0].payload_value();
    assert_eq!(payload["title"], "VP <People> & Benefits");
    assert!(payload.get("mailing_city").is_none(), "{payload}");
}

#[test]
fn the_content_type_or_the_first_character_tells_the_two_formats_apart() {
    let run = |body: &str, content_type: Option<&str>| {
        let mut req = testing::webhook(body);
        if let Some(content_type) = content_type {
            req = req.with_header("Content-Type", content_type);
        }
        testing::run_webhook::<Salesforce>(&req, &ctx())
    };
    for content_type in [
        Some("text/xml; charset=utf-8"),
        Some("application/soap+xml"),
        None,
    ] {
        let events = run(OUTBOUND_CONTACT, content_type).unwrap();
        assert_eq!(events[0].event_type(), "contact.created");
        testing::reset();
    }
    for content_type in [
        Some("application/json"),
        Some("application/json; charset=UTF-8"),
        None,
    ] {
        let events = run(CDC_ACCOUNT_CREATED, content_type).unwrap();
        assert_eq!(events[0].event_type(), "account.created");
    }
    // After leading blanks.
    let events = run(&format!("\n  {CDC_ACCOUNT_CREATED}"), None).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        run(CDC_ACCOUNT_CREATED, Some("text/plain")),
        Err(AdapterError::bad_request(
            "content type `text/plain` is neither XML (outbound messages) nor JSON (change \
             events)"
        ))
    );
    assert_eq!(
        run("id=1", None),
        Err(AdapterError::bad_request(
            "the body is neither XML (outbound messages) nor JSON (change events)"
        ))
    );
    assert_eq!(
        run(" \n", None),
        Err(AdapterError::bad_request("request body is empty"))
    );
    // The declared type wins over the content.
    assert_eq!(
        bad_request(run(CDC_ACCOUNT_CREATED, Some("text/xml"))),
        "the body is not well-formed XML: text outside the root element"
    );
}

#[test]
fn the_org_is_the_connection_setting_and_must_be_allowed() {
    let req = testing::webhook(CDC_ACCOUNT_CREATED);
    let platform = testing::context();
    let events = testing::run_webhook::<Salesforce>(&req, &platform).unwrap();
    assert_eq!(events[0].org_id(), None);
    let not_allowed = testing::context().with_setting(DEFAULT_ORG_SETTING, "org-9");
    assert_eq!(
        testing::run_webhook::<Salesforce>(&req, &not_allowed),
        Err(AdapterError::failed(
            "org `org-9` (setting `default_org_id`) is not one of this connection's allowed \
             orgs; allow it on the connection, then redrive"
        ))
    );
    let page = testing::poll_page(SOQL_PAGE_1);
    assert!(matches!(
        testing::run_poll::<Salesforce>(&page, &not_allowed),
        Err(AdapterError::Failed(_))
    ));
    assert!(testing::state().is_empty(), "the host would roll it back");
}

#[test]
fn query_pages_follow_next_records_url_then_resume_from_the_newest_change() {
    let first = poll(SOQL_PAGE_1, None).unwrap();
    assert_eq!(
        summary(&first.events)
            .into_iter()
            .map(|(t, id, _)| (t, id))
            .collect::<Vec<_>>(),
        [
            ("opportunity.created".into(), "0065g00000Qb2RsAAJ".into()),
            ("opportunity.created".into(), "0065g00000Qb2RuAAJ".into()),
            ("opportunity.won".into(), "0065g00000Qb2RuAAJ".into()),
        ]
    );
    assert_eq!(first.records, Some(2), "two records, three events");
    assert_eq!(
        first.next_cursor.as_deref(),
        Some("/services/data/v62.0/query/01gRO00000BdQ3WYAV-2")
    );
    assert_eq!(
        state::get_string(soql::HIGH_WATER_KEY).unwrap().as_deref(),
        Some("2025-12-01T11:30:04Z")
    );
    let payload = first.events[0].payload_value();
    assert_eq!(payload["amount"], "48250.50");
    assert_eq!(payload["occurred_at"], "2025-12-01T11:00:00Z");

    // The query's last page: the cursor is the newest SystemModstamp of all its pages.
    let second = poll(SOQL_PAGE_2, first.next_cursor.as_deref()).unwrap();
    assert_eq!(second.events.len(), 1);
    assert_eq!(second.events[0].payload_value()["amount"], "15000.00");
    assert_eq!(second.next_cursor.as_deref(), Some("2025-12-01T11:45:00Z"));
    assert_eq!(state::get(soql::HIGH_WATER_KEY), None);

    // The next query: one record only touched (and its decimals written differently), one
    // lost, one deleted, one new.
    let next = poll(SOQL_NEXT_POLL, second.next_cursor.as_deref()).unwrap();
    assert_eq!(
        summary(&next.events),
        [
            (
                "opportunity.lost".into(),
                "0065g00000Qb2RtAAJ".into(),
                "Opportunity/0065g00000Qb2RtAAJ@2025-12-02T09:20:00Z/lost".into()
            ),
            (
                "opportunity.deleted".into(),
                "0065g00000Qb2RuAAJ".into(),
                "Opportunity/0065g00000Qb2RuAAJ@2025-12-02T09:25:00Z/deleted".into()
            ),
            (
                "opportunity.created".into(),
                "0065g00000Qb2RvAAJ".into(),
                "Opportunity/0065g00000Qb2RvAAJ@2025-12-02T09:30:00Z/created".into()
            ),
        ]
    );
    assert_eq!(next.next_cursor.as_deref(), Some("2025-12-02T09:30:00Z"));
    assert_eq!(next.records, Some(4), "the touched record is seen too");
    // The same page again: nothing at all, and the cursor stays.
    let again = poll(SOQL_NEXT_POLL, next.next_cursor.as_deref()).unwrap();
    assert!(again.events.is_empty(), "{:?}", summary(&again.events));
    assert_eq!(
        again.records,
        Some(4),
        "unchanged and deleted records are still seen"
    );
    assert_eq!(again.next_cursor.as_deref(), Some("2025-12-02T09:30:00Z"));
}

#[test]
fn the_poll_cursor_never_moves_back() {
    let empty = r#"{"totalSize": 0, "done": true, "records": []}"#;
    let out = poll(empty, Some("2025-12-05T00:00:00Z")).unwrap();
    assert_eq!(out.next_cursor.as_deref(), Some("2025-12-05T00:00:00Z"));
    assert_eq!(out.records, Some(0));
    let out = poll(SOQL_PAGE_2, Some("2025-12-05T00:00:00Z")).unwrap();
    assert_eq!(out.next_cursor.as_deref(), Some("2025-12-05T00:00:00Z"));
    // No cursor and no record: the host keeps what it had.
    assert_eq!(poll(empty, None).unwrap().next_cursor, None);
}

#[test]
fn malformed_query_pages_are_bad_requests_and_leave_the_state_alone() {
    let cases: Vec<(String, &str)> = vec![
        (
            patched(SOQL_PAGE_1, |b| {
                b.as_object_mut().unwrap().remove("nextRecordsUrl");
            }),
            "`done` is false but `nextRecordsUrl` is missing",
        ),
        (
            patched(SOQL_PAGE_1, |b| {
                let record = b["records"][1].as_object_mut().unwrap();
                record.remove("SystemModstamp");
                record.remove("LastModifiedDate");
            }),
            "`records[1].SystemModstamp` and `LastModifiedDate` are missing: select one of them, \
             so that polling can resume where it stopped",
        ),
        (
            patched(SOQL_PAGE_1, |b| {
                b["records"][0]["SystemModstamp"] = json!("today")
            }),
            "`records[0].SystemModstamp` is `today`, not a date-time such as \
             \"2025-12-01T10:00:00Z\"",
        ),
        (
            patched(SOQL_PAGE_1, |b| {
                b["records"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("attributes");
            }),
            "`records[0].attributes` is missing",
        ),
        (
            patched(SOQL_PAGE_1, |b| b["records"][1]["Amount"] = json!(true)),
            "`records[1].Amount`: expected a decimal (a string such as \"12.50\" or a number), \
             got the boolean true",
        ),
        (r#"{"done": true}"#.into(), "`records` is missing"),
    ];
    for (body, expected) in cases {
        assert_eq!(
            poll(&body, None),
            Err(AdapterError::bad_request(expected)),
            "{body}"
        );
        assert!(testing::state().is_empty());
    }
    let page = testing::poll_page(SOQL_PAGE_1).with_content_type("text/csv");
    assert_eq!(
        testing::run_poll::<Salesforce>(&page, &ctx()),
        Err(AdapterError::bad_request(
            "content type `text/csv` is not JSON; query results are JSON"
        ))
    );
}

#[test]
fn records_of_other_objects_in_a_page_are_skipped_with_a_warning() {
    let body = patched(SOQL_PAGE_2, |b| {
        b["records"][0]["attributes"]["type"] = json!("Lead");
    });
    let out = poll(&body, None).unwrap();
    assert!(out.events.is_empty());
    assert_eq!(out.records, Some(1), "a skipped record was still seen");
    // A skipped record is not read further: it does not move the cursor.
    assert_eq!(out.next_cursor.as_deref(), None);
    let logs = testing::logs();
    assert!(
        logs.iter().any(|l| l.level == Level::Warn
            && l.message
                == "records[0].attributes.type: `Lead` records are not used by this adapter; skipped"),
        "{logs:?}"
    );
}

#[test]
fn every_fixture_meets_the_host_contracts() {
    // run_webhook / run_poll already assert this; here every event of every fixture is checked
    // in one place, against a connection that allows the org.
    let info = Salesforce::describe();
    let ctx = ctx();
    let mut checked = 0;
    for body in JSON_FIXTURES.iter().chain(&XML_FIXTURES) {
        testing::reset();
        if let Ok(events) = Salesforce::handle_webhook(&testing::webhook(*body), &ctx) {
            check_events(&info, &ctx, &events).unwrap();
            checked += events.len();
        }
    }
    testing::reset();
    for body in POLL_FIXTURES {
        let out = Salesforce::handle_poll(&testing::poll_page(body), &ctx).unwrap();
        check_events(&info, &ctx, &out.events).unwrap();
        checked += out.events.len();
    }
    assert!(checked >= 20, "{checked}");
}

#[test]
fn no_input_makes_the_adapter_panic() {
    // Every prefix of every fixture, and every fixture with one byte replaced: each must give
    // an answer (usually a bad request), never a panic.
    let ctx = ctx();
    let replacements = [b'0', b'"', b'-', b'x', b'{', b']', b'<', b'/', b'&'];
    for (body, content_type) in JSON_FIXTURES
        .iter()
        .map(|b| (*b, "application/json"))
        .chain(XML_FIXTURES.iter().map(|b| (*b, "text/xml")))
    {
        let bytes = body.as_bytes();
        for end in 0..bytes.len() {
            let req = testing::webhook(&bytes[..end]).with_header("content-type", content_type);
            let _ = Salesforce::handle_webhook(&req, &ctx);
        }
        for (i, replacement) in (0..bytes.len()).zip(replacements.iter().cycle()) {
            let mut body = bytes.to_vec();
            body[i] = *replacement;
            let _ = Salesforce::handle_webhook(&testing::webhook(body), &ctx);
        }
    }
    for body in POLL_FIXTURES {
        for end in 0..body.len() {
            let page = testing::poll_page(&body.as_bytes()[..end]);
            let _ = Salesforce::handle_poll(&page, &ctx);
        }
    }
}

#[test]
fn platform_events_are_ignored_with_the_reason_unless_the_connection_rejects_them() {
    let reason = "`Order_Placed__e` is a platform event, not a change event: this adapter \
                  maps Change Data Capture events only";
    assert_eq!(cdc(PLATFORM_EVENT), Err(AdapterError::ignored(reason)));
    // The same event as its `data` part, and decoded (Pub/Sub API), without the channel.
    let data: Value = serde_json::from_str::<Value>(PLATFORM_EVENT).unwrap()["data"].clone();
    assert_eq!(
        cdc(&data.to_string()),
        Err(AdapterError::ignored(
            "the event of schema `Kx3LvX2yQeK8cVh2_tSSbA` is a platform event, not a change \
             event: this adapter maps Change Data Capture events only"
        ))
    );
    let decoded = data["payload"].to_string();
    assert!(
        matches!(cdc(&decoded), Err(AdapterError::Ignored(_))),
        "{decoded}"
    );
    // Beside change events, it is skipped and they are mapped.
    let mixed = format!("[{PLATFORM_EVENT},{CDC_ACCOUNT_CREATED}]");
    let events = cdc(&mixed).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type(), "account.created");
    // A connection that must never get them refuses the delivery.
    let rejecting = ctx().with_setting(cdc::PLATFORM_EVENTS_SETTING, "reject");
    let req = testing::webhook(PLATFORM_EVENT).with_header("Content-Type", "application/json");
    let refused = bad_request(testing::run_webhook::<Salesforce>(&req, &rejecting));
    assert!(
        refused.contains("`platform_events` setting is `reject`"),
        "{refused}"
    );
    let odd = ctx().with_setting(cdc::PLATFORM_EVENTS_SETTING, "drop");
    assert!(matches!(
        testing::run_webhook::<Salesforce>(&req, &odd),
        Err(AdapterError::Failed(message)) if message.contains("`ignore` (the default) or `reject`")
    ));
    // A body that is neither a change event nor a platform event is still a bad request.
    let neither = r#"{"payload": {"Name": "x"}}"#;
    assert!(bad_request(cdc(neither)).contains("ChangeEventHeader"));
}
