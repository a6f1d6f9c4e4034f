//! Fixture tests: every fixture under `fixtures/` goes through the adapter as the host would run
//! it (`testing::run_webhook` / `run_poll` also check the host's contracts).

use crm_adapter_sdk::serde_json::{Value, json};
use crm_adapter_sdk::testing::{self, check_info};
use crm_adapter_sdk::{AdapterError, Event, PollOutput, log::Level, state};

use super::*;

const ENROLLMENT_1KB: &str = include_str!("../fixtures/enrollment-1kb.json");
const AGENT_CREATED: &str = include_str!("../fixtures/agent-created.json");
const AGENT_UPDATED: &str = include_str!("../fixtures/agent-updated.json");
const ENROLLMENT_UPDATED: &str = include_str!("../fixtures/enrollment-updated.json");
const COMMISSION_CALCULATED: &str = include_str!("../fixtures/commission-calculated.json");
const PING: &str = include_str!("../fixtures/ping.json");
const BAD_DECIMAL: &str = include_str!("../fixtures/bad-decimal.json");
const POLL_PAGE_1: &str = include_str!("../fixtures/poll-page-1.json");
const POLL_PAGE_2: &str = include_str!("../fixtures/poll-page-2.json");

fn ctx() -> Context {
    testing::context().with_org("org-456")
}

fn webhook(body: &str) -> Result<Vec<Event>, AdapterError> {
    let req = testing::webhook(body).with_header("content-type", "application/json");
    testing::run_webhook::<ChampionHealth>(&req, &ctx())
}

fn one(body: &str) -> Event {
    let mut events = webhook(body).unwrap();
    assert_eq!(events.len(), 1);
    events.pop().unwrap()
}

fn poll(body: &str, cursor: Option<&str>) -> Result<PollOutput, AdapterError> {
    let mut page = testing::poll_page(body);
    if let Some(cursor) = cursor {
        page = page.with_cursor(cursor);
    }
    testing::run_poll::<ChampionHealth>(&page, &ctx())
}

fn bad_request(body: &str) -> String {
    match webhook(body) {
        Err(AdapterError::BadRequest(message)) => message,
        other => panic!("expected a bad request, got {other:?}"),
    }
}

#[test]
fn describe_is_valid_and_declares_the_decimals() {
    let info = ChampionHealth::describe();
    check_info(&info).unwrap();
    assert_eq!(info.provider, "custom");
    let names: Vec<_> = info.event_types.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "agent.created",
            "agent.updated",
            "member.enrolled",
            "member.enrollment_updated",
            "commission.calculated"
        ]
    );
    assert_eq!(
        info.decl("member.enrolled").unwrap().decimal_fields,
        ["/pepm_rate", "/split_pct", "/splits/*/split_pct"]
    );
    assert_eq!(
        info.decl("commission.calculated").unwrap().decimal_fields,
        ["/pepm_rate", "/split_pct", "/commission_amount"]
    );
}

#[test]
fn the_1kb_enrollment_becomes_member_enrolled_with_exact_decimals() {
    // The benchmark fixture: decimals arrive as JSON numbers, no org (platform level).
    let event = one(ENROLLMENT_1KB);
    assert_eq!(event.event_type(), "member.enrolled");
    assert_eq!(event.entity_type(), "member");
    assert_eq!(event.entity_id(), "M-88412");
    assert_eq!(event.org_id(), None);
    assert_eq!(
        event.dedupe_key_str(),
        Some("evt_01JDX3K8Q9V2YB6M4T7R5N0C1A")
    );
    assert_eq!(
        event.payload_value(),
        json!({
            "member_id": "M-88412",
            "first_name": "Alex",
            "last_name": "Moreno",
            "email": "alex.moreno@example.com",
            "date_of_birth": "1984-03-09",
            "employer_group": "Acme Dental Group",
            "enrollment_id": "ENR-2025-0042",
            "status": "active",
            "plan_code": "DEN-PPO-2",
            "plan_name": "Dental PPO 2",
            "carrier": "Delta Dental",
            "coverage_tier": "employee_spouse",
            "effective_date": "2026-01-01",
            "pepm_rate": "12.50",
            "agent_id": "721995",
            "split_pct": "66.666667",
            "splits": [
                {"agent_id": "721995", "split_pct": "66.666667"},
                {"agent_id": "721996", "split_pct": "33.333333"}
            ],
            "external_id": "M-88412",
            "external_source": "champion_health",
            "occurred_at": "2025-12-01T10:00:00Z"
        })
    );
    // Exact text on the wire (as shown in README.md), scale kept.
    assert_eq!(
        event.payload_json(),
        concat!(
            r#"{"agent_id":"721995","carrier":"Delta Dental","coverage_tier":"employee_spouse","#,
            r#""date_of_birth":"1984-03-09","effective_date":"2026-01-01","#,
            r#""email":"alex.moreno@example.com","employer_group":"Acme Dental Group","#,
            r#""enrollment_id":"ENR-2025-0042","external_id":"M-88412","#,
            r#""external_source":"champion_health","first_name":"Alex","last_name":"Moreno","#,
            r#""member_id":"M-88412","occurred_at":"2025-12-01T10:00:00Z","pepm_rate":"12.50","#,
            r#""plan_code":"DEN-PPO-2","plan_name":"Dental PPO 2","split_pct":"66.666667","#,
            r#""splits":[{"agent_id":"721995","split_pct":"66.666667"},"#,
            r#"{"agent_id":"721996","split_pct":"33.333333"}],"status":"active"}"#
        )
    );
    // The fixture stays about 1 KB: benchmarks rely on it.
    assert!(
        (900..=1100).contains(&ENROLLMENT_1KB.len()),
        "{}",
        ENROLLMENT_1KB.len()
    );
}

#[test]
fn agent_created_takes_the_org_and_numeric_ids_from_the_delivery() {
    let event = one(AGENT_CREATED);
    assert_eq!(event.event_type(), "agent.created");
    assert_eq!(event.entity_id(), "721995");
    assert_eq!(event.org_id(), Some("org-456"));
    assert_eq!(
        event.dedupe_key_str(),
        Some("evt_01JDX2Z4W1A8K3M6P9Q2R5S7T0")
    );
    assert_eq!(
        event.payload_value(),
        json!({
            "agent_id": "721995",
            "first_name": "Robin",
            "last_name": "Bundy",
            "email": "robin@example.com",
            "phone": "+1-555-0100",
            "npn": "17788123",
            "status": "active",
            "external_id": "721995",
            "external_source": "champion_health",
            "occurred_at": "2025-11-28T15:42:10Z"
        })
    );
}

#[test]
fn agent_updated_drops_null_fields() {
    let event = one(AGENT_UPDATED);
    assert_eq!(event.event_type(), "agent.updated");
    let payload = event.payload_value();
    assert_eq!(payload["last_name"], "Bundy-Hale");
    assert_eq!(payload["email"], "robin.hale@example.com");
    assert!(payload.get("phone").is_none(), "{payload}");
}

#[test]
fn enrollment_updated_accepts_decimal_strings_and_numbers_alike() {
    let event = one(ENROLLMENT_UPDATED);
    assert_eq!(event.event_type(), "member.enrollment_updated");
    assert_eq!(event.entity_id(), "M-88412");
    let payload = event.payload_value();
    assert_eq!(payload["pepm_rate"], "14.25");
    assert_eq!(payload["split_pct"], "50.00");
    // One split came as "50.00", the other as 50.00: both keep their scale.
    assert_eq!(
        payload["splits"],
        json!([
            {"agent_id": "721995", "split_pct": "50.00"},
            {"agent_id": "721996", "split_pct": "50.00"}
        ])
    );
}

#[test]
fn commission_calculated_keeps_amounts_exact() {
    let event = one(COMMISSION_CALCULATED);
    assert_eq!(event.event_type(), "commission.calculated");
    assert_eq!(event.entity_type(), "commission");
    assert_eq!(event.entity_id(), "COM-2025-12-721995");
    assert_eq!(
        event.payload_value(),
        json!({
            "commission_id": "COM-2025-12-721995",
            "agent_id": "721995",
            "enrollment_id": "ENR-2025-0042",
            "period": "2025-12",
            "member_count": 148,
            "pepm_rate": "12.50",
            "split_pct": "66.666667",
            "commission_amount": "1234.56",
            "currency": "USD",
            "external_id": "COM-2025-12-721995",
            "external_source": "champion_health",
            "occurred_at": "2025-12-31T23:00:00Z"
        })
    );
}

#[test]
fn pings_and_unused_kinds_are_ignored() {
    assert_eq!(webhook(PING), Err(AdapterError::ignored("ping delivery")));
    let body = r#"{"event_id": "e1", "event": "member.note_added"}"#;
    assert_eq!(
        webhook(body),
        Err(AdapterError::ignored(
            "`member.note_added` deliveries are not used by this adapter"
        ))
    );
}

#[test]
fn a_malformed_decimal_is_a_bad_request_naming_the_field() {
    assert_eq!(
        bad_request(BAD_DECIMAL),
        "`enrollment.pepm_rate`: `12,50` is not a canonical decimal (expected \
         -?digits(.digits)?, e.g. \"12.50\")"
    );
}

#[test]
fn malformed_deliveries_are_bad_requests_with_clear_messages() {
    let enrollment = |patch: &dyn Fn(&mut Value)| {
        let mut body: Value = crm_adapter_sdk::serde_json::from_str(ENROLLMENT_1KB).unwrap();
        patch(&mut body);
        bad_request(&body.to_string())
    };
    let cases: Vec<(String, &str)> = vec![
        (bad_request(""), "request body is empty; expected JSON"),
        (
            bad_request("[1, 2]"),
            "the delivery must be a JSON object, got an array",
        ),
        (bad_request(r#"{"event_id": "e1"}"#), "`event` is missing"),
        (
            bad_request(r#"{"event": 7}"#),
            "`event` must be a string, got a number",
        ),
        (
            bad_request(r#"{"event": "agent.created"}"#),
            "`event_id` is missing",
        ),
        (
            bad_request(r#"{"event": "agent.created", "event_id": 1.5}"#),
            "`event_id` must be a string or a whole number, got a number",
        ),
        (
            bad_request(r#"{"event": "agent.created", "event_id": "e", "agent": "721995"}"#),
            "`agent` must be an object, got a string",
        ),
        (
            enrollment(&|b| b["member"]["first_name"] = Value::Null),
            "`member.first_name` is missing",
        ),
        (
            enrollment(&|b| b["enrollment"]["pepm_rate"] = json!(true)),
            "`enrollment.pepm_rate`: expected a decimal (a string such as \"12.50\" or a \
             number), got the boolean true",
        ),
        (
            enrollment(&|b| b["enrollment"]["pepm_rate"] = json!("-1.00")),
            "`enrollment.pepm_rate` is -1.00; a rate cannot be negative",
        ),
        (
            enrollment(&|b| b["enrollment"]["splits"][1]["split_pct"] = json!(150)),
            "`enrollment.splits[1].split_pct` is 150; a percentage must be between 0 and 100",
        ),
        (
            enrollment(&|b| b["enrollment"]["splits"][0] = json!("721995")),
            "`enrollment.splits[0]` must be an object, got a string",
        ),
        (
            enrollment(&|b| b["member"]["member_id"] = json!("")),
            "`member.member_id` is empty",
        ),
        (
            enrollment(&|b| b["member"]["member_id"] = json!("x".repeat(300))),
            "`member.member_id` is 300 bytes long; the limit is 256",
        ),
    ];
    for (got, expected) in cases {
        assert_eq!(got, expected);
    }
    // A decimal too precise for the platform is refused, not rounded.
    let message = enrollment(&|b| {
        b["enrollment"]["pepm_rate"] =
            crm_adapter_sdk::serde_json::from_str("0.123456789012345678901234567891").unwrap();
    });
    assert!(message.contains("out of range"), "{message}");
    // The body is not JSON at all.
    let message = bad_request("{\"event\": ");
    assert!(
        message.starts_with("request body is not valid JSON: "),
        "{message}"
    );
}

#[test]
fn headers_are_checked_when_present() {
    let req = testing::webhook(AGENT_CREATED).with_header("Content-Type", "text/plain");
    assert_eq!(
        ChampionHealth::handle_webhook(&req, &ctx()),
        Err(AdapterError::bad_request(
            "content type `text/plain` is not JSON"
        ))
    );
    let req = testing::webhook(AGENT_CREATED).with_header("X-Champion-Event", "agent.updated");
    assert_eq!(
        ChampionHealth::handle_webhook(&req, &ctx()),
        Err(AdapterError::bad_request(
            "header x-champion-event says `agent.updated` but the body says `agent.created`"
        ))
    );
    let req = testing::webhook(AGENT_CREATED)
        .with_header("content-type", "application/json; charset=utf-8")
        .with_header("x-champion-event", "agent.created");
    assert!(ChampionHealth::handle_webhook(&req, &ctx()).is_ok());
}

#[test]
fn orgs_come_from_the_delivery_or_the_default_setting_and_must_be_allowed() {
    // Not allowed on this connection: failed (kept for redrive), not a bad request.
    let req = testing::webhook(AGENT_CREATED);
    let err = testing::run_webhook::<ChampionHealth>(&req, &testing::context()).unwrap_err();
    assert_eq!(
        err,
        AdapterError::failed(
            "org `org-456` is not one of this connection's allowed orgs; allow it on the \
             connection, then redrive"
        )
    );
    // No org in the delivery: the connection's default, when set.
    let ctx = testing::context()
        .with_org("org-9")
        .with_setting(DEFAULT_ORG_SETTING, "org-9");
    let req = testing::webhook(ENROLLMENT_1KB);
    let events = testing::run_webhook::<ChampionHealth>(&req, &ctx).unwrap();
    assert_eq!(events[0].org_id(), Some("org-9"));
    // Without a default, an org's own connection emits for its org (never platform level).
    let own = testing::context().with_connection_org("org-7");
    let events = testing::run_webhook::<ChampionHealth>(&req, &own).unwrap();
    assert_eq!(events[0].org_id(), Some("org-7"));
}

#[test]
fn no_input_makes_the_adapter_panic() {
    // Every prefix of every fixture, and every fixture with one byte replaced: each must give
    // an answer (usually a bad request), never a panic.
    let fixtures = [
        ENROLLMENT_1KB,
        AGENT_CREATED,
        AGENT_UPDATED,
        ENROLLMENT_UPDATED,
        COMMISSION_CALCULATED,
        PING,
        BAD_DECIMAL,
    ];
    let ctx = ctx();
    for fixture in fixtures {
        let bytes = fixture.as_bytes();
        for end in 0..bytes.len() {
            let req = testing::webhook(&bytes[..end]);
            let _ = ChampionHealth::handle_webhook(&req, &ctx);
        }
        for (i, replacement) in
            (0..bytes.len()).zip([b'0', b'"', b'-', b'x', b'{', b']'].iter().cycle())
        {
            let mut body = bytes.to_vec();
            body[i] = *replacement;
            let _ = ChampionHealth::handle_webhook(&testing::webhook(body), &ctx);
        }
    }
    for page in [POLL_PAGE_1, POLL_PAGE_2] {
        for end in 0..page.len() {
            let _ = ChampionHealth::handle_poll(&testing::poll_page(&page.as_bytes()[..end]), &ctx);
        }
    }
}

#[test]
fn polling_emits_only_what_changed() {
    let first = poll(POLL_PAGE_1, None).unwrap();
    let summary = |out: &PollOutput| -> Vec<(String, String)> {
        out.events
            .iter()
            .map(|e| (e.event_type().to_owned(), e.entity_id().to_owned()))
            .collect()
    };
    assert_eq!(
        summary(&first),
        [
            ("agent.created".into(), "721995".into()),
            ("agent.created".into(), "721996".into()),
            ("member.enrolled".into(), "M-88412".into()),
        ]
    );
    assert_eq!(first.next_cursor.as_deref(), Some("cur_0002"));
    assert_eq!(first.records, Some(3));
    assert_eq!(first.events[2].payload_value()["pepm_rate"], "12.50");
    assert_eq!(
        first.events[0].payload_value()["occurred_at"],
        "2025-12-01T08:00:00Z"
    );

    // The same page again: nothing changed, nothing emitted.
    let again = poll(POLL_PAGE_1, Some("cur_0002")).unwrap();
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(again.records, Some(3), "unchanged records are still seen");

    // Page 2: agent 721995 only touched (new updated_at), 721996's email changed, 721997 is
    // new, and the enrollment's decimals now come as strings with the same values.
    let second = poll(POLL_PAGE_2, Some("cur_0002")).unwrap();
    assert_eq!(
        summary(&second),
        [
            ("agent.updated".into(), "721996".into()),
            ("agent.created".into(), "721997".into()),
        ]
    );
    assert_eq!(second.records, Some(4), "2 events from 4 records");
    assert_eq!(
        second.events[0].payload_value()["email"],
        "casey.ng@example.com"
    );
    assert_eq!(
        second.next_cursor, None,
        "a null next_cursor keeps the previous cursor"
    );

    // Dedupe keys are unique and name the record.
    let keys: Vec<_> = first
        .events
        .iter()
        .chain(&second.events)
        .map(|e| e.dedupe_key_str().unwrap().to_owned())
        .collect();
    assert!(keys[0].starts_with("agent/721995/"), "{keys:?}");
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len());
    assert_eq!(state::keys("fp/agent/").len(), 3);
}

#[test]
fn webhooks_record_what_they_saw_so_polling_does_not_repeat_it() {
    webhook(AGENT_CREATED).unwrap();
    let page = json!({
        "records": [{
            "type": "agent",
            "org_id": "org-456",
            "agent": {
                "agent_id": "721995", "first_name": "Robin", "last_name": "Bundy",
                "email": "robin@example.com", "phone": "+1-555-0100", "npn": "17788123",
                "status": "active"
            }
        }]
    });
    let out = poll(&page.to_string(), None).unwrap();
    assert!(out.events.is_empty(), "{:?}", out.events);
}

#[test]
fn a_bad_poll_record_fails_the_page_and_leaves_the_state_alone() {
    let page = json!({
        "records": [
            {"type": "agent", "agent": {"agent_id": "1", "first_name": "A", "last_name": "B"}},
            {"type": "agent", "agent": {"agent_id": "2", "first_name": "C"}}
        ]
    });
    assert_eq!(
        poll(&page.to_string(), None),
        Err(AdapterError::bad_request(
            "`records[1].agent.last_name` is missing"
        ))
    );
    assert!(
        testing::state().is_empty(),
        "the host would roll the state back"
    );
    assert_eq!(
        poll(r#"{"next_cursor": "c"}"#, None),
        Err(AdapterError::bad_request("`records` is missing"))
    );
}

#[test]
fn unknown_poll_record_types_are_skipped_with_a_warning() {
    let page = r#"{"records": [{"type": "invoice", "invoice": {}}], "next_cursor": "c9"}"#;
    let out = poll(page, None).unwrap();
    assert!(out.events.is_empty());
    assert_eq!(out.records, Some(1), "a skipped record was still seen");
    assert_eq!(out.next_cursor.as_deref(), Some("c9"));
    let logs = testing::logs();
    assert!(
        logs.iter().any(|l| l.level == Level::Warn
            && l.message == "records[0].type: record type `invoice` skipped"),
        "{logs:?}"
    );
}
