//! Fixture tests: every fixture under `fixtures/` goes through the adapter as the host would run
//! it (`testing::run_webhook` / `run_poll` also check the host's contracts).

use crm_adapter_sdk::serde_json::{self, Value, json};
use crm_adapter_sdk::testing::{self, check_events, check_info};
use crm_adapter_sdk::{AdapterError, Event, PollOutput};

use super::*;

mod polling;

const APPOINTMENT_GROUP_CREATED: &str = include_str!("../fixtures/appointment-group-created.json");
const APPOINTMENT_STARTED: &str = include_str!("../fixtures/appointment-started.json");
const APPOINTMENT_COMPLETED: &str = include_str!("../fixtures/appointment-completed.json");
const GUEST_CREATED: &str = include_str!("../fixtures/guest-created.json");
const GUEST_UPDATED: &str = include_str!("../fixtures/guest-updated.json");
const SERVICE_CREATED: &str = include_str!("../fixtures/service-created.json");
const SERVICE_UPDATED: &str = include_str!("../fixtures/service-updated.json");
const INVOICE_CLOSED: &str = include_str!("../fixtures/invoice-closed.json");
const BAD_PRICE: &str = include_str!("../fixtures/bad-price.json");
const POLL_APPOINTMENTS_1: &str = include_str!("../fixtures/poll-appointments-1.json");
const POLL_APPOINTMENTS_2: &str = include_str!("../fixtures/poll-appointments-2.json");
const POLL_GUESTS: &str = include_str!("../fixtures/poll-guests.json");
const POLL_SERVICES: &str = include_str!("../fixtures/poll-services.json");

const WEBHOOK_FIXTURES: [&str; 9] = [
    APPOINTMENT_GROUP_CREATED,
    APPOINTMENT_STARTED,
    APPOINTMENT_COMPLETED,
    GUEST_CREATED,
    GUEST_UPDATED,
    SERVICE_CREATED,
    SERVICE_UPDATED,
    INVOICE_CLOSED,
    BAD_PRICE,
];
const POLL_FIXTURES: [&str; 4] = [
    POLL_APPOINTMENTS_1,
    POLL_APPOINTMENTS_2,
    POLL_GUESTS,
    POLL_SERVICES,
];

const EAST: &str = "4f6c2a1e-8d3b-4a57-9e0c-2b7d51c3a9f4";
const WEST: &str = "b2e9d7c4-1a6f-4c38-8b25-7e4f0d9a1c63";

/// The connection of most tests: two centers, each in its own org; records without a center
/// are platform level.
fn ctx() -> Context {
    testing::context()
        .with_provider("zenoti")
        .with_org("org-east")
        .with_org("org-west")
        .with_setting(format!("{CENTER_ORG_PREFIX}{EAST}"), "org-east")
        .with_setting(format!("{CENTER_ORG_PREFIX}{WEST}"), "org-west")
}

fn webhook_with(body: &str, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
    let req = testing::webhook(body).with_header("Content-Type", "application/json");
    testing::run_webhook::<Zenoti>(&req, ctx)
}

fn webhook(body: &str) -> Result<Vec<Event>, AdapterError> {
    webhook_with(body, &ctx())
}

fn one(body: &str) -> Event {
    let mut events = webhook(body).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    events.pop().unwrap()
}

fn poll(body: &str) -> Result<PollOutput, AdapterError> {
    testing::run_poll::<Zenoti>(&testing::poll_page(body), &ctx())
}

fn bad_request(body: &str) -> String {
    match webhook(body) {
        Err(AdapterError::BadRequest(message)) => message,
        other => panic!("expected a bad request, got {other:?}"),
    }
}

/// `body` with `patch` applied (numbers keep their text: serde_json's arbitrary precision).
fn patched(body: &str, patch: impl Fn(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(body).unwrap();
    patch(&mut value);
    value.to_string()
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
fn describe_declares_the_event_types_and_their_prices() {
    let info = Zenoti::describe();
    check_info(&info).unwrap();
    assert_eq!(info.provider, "zenoti");
    let names: Vec<_> = info.event_types.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "appointment.created",
            "appointment.updated",
            "appointment.completed",
            "member.created",
            "member.updated",
            "service.created",
            "service.updated"
        ]
    );
    for name in [
        "appointment.created",
        "appointment.updated",
        "appointment.completed",
    ] {
        assert_eq!(
            info.decl(name).unwrap().decimal_fields,
            ["/price", "/final_price"]
        );
    }
    assert_eq!(
        info.decl("service.updated").unwrap().decimal_fields,
        ["/price"]
    );
    assert!(
        info.decl("member.created")
            .unwrap()
            .decimal_fields
            .is_empty()
    );
}

#[test]
fn an_appointment_group_becomes_one_event_per_appointment() {
    let events = webhook(APPOINTMENT_GROUP_CREATED).unwrap();
    assert_eq!(
        summary(&events),
        pairs(&[
            (
                "appointment.created",
                "2b7f4e91-0c6d-4a3b-8e52-d19f7a6c0b84"
            ),
            (
                "appointment.created",
                "8c0e5a27-d4b1-4f96-9a3e-6b2f8d1c7e05"
            ),
        ])
    );
    assert!(events.iter().all(|e| e.org_id() == Some("org-east")));
    assert_eq!(
        events[0].dedupe_key_str(),
        Some("6750a1c2e4b09d3f18a7c201/2b7f4e91-0c6d-4a3b-8e52-d19f7a6c0b84")
    );
    assert_eq!(
        events[0].payload_value(),
        json!({
            "appointment_id": "2b7f4e91-0c6d-4a3b-8e52-d19f7a6c0b84",
            "appointment_group_id": "c81f2d07-5b9e-4e61-a3d4-0f6b92e17a58",
            "invoice_id": "e3a94b6c-7d21-4f08-9c5e-1b8d06f4a2c7",
            "center_id": EAST,
            "member_id": "9d2e6b14-3c7a-4f85-b0e1-6a4c8d2f9b37",
            "guest_name": "Priya Raman",
            "service_id": "71c3e8a5-2f9d-4b16-8c07-e5a4d1b9f620",
            "service_name": "Signature Facial 60 min",
            "therapist_id": "3e8b1f6d-9a24-4c7e-b503-a7d2c6e1f948",
            "therapist_name": "Marisol Vega",
            "start_time": "2025-12-04T10:00:00",
            "end_time": "2025-12-04T11:00:00",
            "status": "booked",
            "status_code": 0,
            "price": "120.00",
            "final_price": "108.00",
            "external_id": "2b7f4e91-0c6d-4a3b-8e52-d19f7a6c0b84",
            "external_source": "zenoti",
            "occurred_at": "2025-12-01T15:04:11.2870412Z"
        })
    );
    // Prices as JSON numbers keep their scale; as strings, their text.
    assert!(
        events[0]
            .payload_json()
            .contains(r#""final_price":"108.00","#)
    );
    assert_eq!(events[1].payload_value()["price"], "35");
}

#[test]
fn a_started_appointment_is_an_update_read_from_zenotis_flat_fields() {
    let event = one(APPOINTMENT_STARTED);
    assert_eq!(event.event_type(), "appointment.updated");
    assert_eq!(event.entity_id(), "2b7f4e91-0c6d-4a3b-8e52-d19f7a6c0b84");
    let payload = event.payload_value();
    assert_eq!(payload["status"], "checked_in");
    assert_eq!(payload["status_code"], 2);
    assert_eq!(
        payload["therapist_id"],
        "3e8b1f6d-9a24-4c7e-b503-a7d2c6e1f948"
    );
    assert_eq!(payload["member_id"], "9d2e6b14-3c7a-4f85-b0e1-6a4c8d2f9b37");
    assert!(payload.get("guest_name").is_none(), "{payload}");
    assert!(payload.get("room_id").is_none(), "not mapped: {payload}");
}

#[test]
fn a_completed_appointment_is_completed() {
    let event = one(APPOINTMENT_COMPLETED);
    assert_eq!(event.event_type(), "appointment.completed");
    assert_eq!(event.payload_value()["status"], "closed");
    assert_eq!(event.payload_value()["final_price"], "97.20");

    // Any appointment event whose appointment is closed is a completion, whatever its name...
    let body = APPOINTMENT_COMPLETED.replace("Appointment.Completed", "Appointment.Updated");
    assert_eq!(one(&body).event_type(), "appointment.completed");
    // ...and one booked and closed at once is created, then completed.
    let body = APPOINTMENT_COMPLETED.replace("Appointment.Completed", "AppointmentGroup.Created");
    let events = webhook(&body).unwrap();
    assert_eq!(
        summary(&events),
        pairs(&[
            (
                "appointment.created",
                "2b7f4e91-0c6d-4a3b-8e52-d19f7a6c0b84"
            ),
            (
                "appointment.completed",
                "2b7f4e91-0c6d-4a3b-8e52-d19f7a6c0b84"
            ),
        ])
    );
    assert_ne!(events[0].dedupe_key_str(), events[1].dedupe_key_str());
}

#[test]
fn guests_become_members() {
    let created = one(GUEST_CREATED);
    assert_eq!(created.event_type(), "member.created");
    assert_eq!(created.entity_id(), "9d2e6b14-3c7a-4f85-b0e1-6a4c8d2f9b37");
    assert_eq!(created.org_id(), Some("org-east"));
    assert_eq!(created.dedupe_key_str(), Some("6750a0f7e4b09d3f18a7c1e8"));
    assert_eq!(
        created.payload_value(),
        json!({
            "member_id": "9d2e6b14-3c7a-4f85-b0e1-6a4c8d2f9b37",
            "guest_code": "EW20331",
            "center_id": EAST,
            "first_name": "Priya",
            "last_name": "Raman",
            "email": "priya.raman@example.com",
            "mobile_phone": "5550142",
            "date_of_birth": "1990-07-18T00:00:00",
            "external_id": "9d2e6b14-3c7a-4f85-b0e1-6a4c8d2f9b37",
            "external_source": "zenoti",
            "occurred_at": "2025-12-01T15:00:55.9021475Z"
        })
    );
    let updated = one(GUEST_UPDATED);
    assert_eq!(updated.event_type(), "member.updated");
    assert_eq!(updated.payload_value()["last_name"], "Raman-Osei");
}

#[test]
fn services_carry_their_price_as_a_decimal_string() {
    // No center: platform level (the catalog is the whole organization's).
    let created = one(SERVICE_CREATED);
    assert_eq!(created.event_type(), "service.created");
    assert_eq!(created.org_id(), None);
    assert_eq!(
        created.payload_value(),
        json!({
            "service_id": "d9b4e2a7-6c1f-4835-a0e9-5f3c7b2d8e14",
            "code": "FAC-HYD-45",
            "name": "Hydrating Facial 45 min",
            "category": "Facials",
            "duration_minutes": 45,
            "price": "95.00",
            "external_id": "d9b4e2a7-6c1f-4835-a0e9-5f3c7b2d8e14",
            "external_source": "zenoti",
            "occurred_at": "2025-11-30T08:30:00.1180000Z"
        })
    );
    let updated = one(SERVICE_UPDATED);
    assert_eq!(updated.event_type(), "service.updated");
    assert_eq!(updated.payload_value()["price"], "99.50");
    // With a default org, center-less records go there.
    let ctx = ctx().with_setting(DEFAULT_ORG_SETTING, "org-west");
    assert_eq!(
        webhook_with(SERVICE_CREATED, &ctx).unwrap()[0].org_id(),
        Some("org-west")
    );
}

#[test]
fn deliveries_without_a_platform_event_are_ignored() {
    assert_eq!(
        webhook(INVOICE_CLOSED),
        Err(AdapterError::ignored(
            "`Invoice.Closed` deliveries are not used by this adapter"
        ))
    );
    let merged = GUEST_UPDATED.replace("Guest.Updated", "Guest.Merged");
    assert_eq!(
        webhook(&merged),
        Err(AdapterError::ignored(
            "`Guest.Merged` deliveries are not used by this adapter"
        ))
    );
    let deleted = APPOINTMENT_STARTED.replace("Appointment.Started", "Appointment.Deleted");
    assert_eq!(
        webhook(&deleted),
        Err(AdapterError::ignored(
            "`Appointment.Deleted`: the platform has no event for deleted appointments"
        ))
    );
    let empty = patched(APPOINTMENT_STARTED, |b| {
        b["data"]["appointments"] = json!([])
    });
    assert_eq!(
        webhook(&empty),
        Err(AdapterError::ignored(
            "`Appointment.Started` carries no appointment"
        ))
    );
    assert!(testing::state().is_empty());
}

#[test]
fn a_malformed_price_is_a_bad_request_naming_the_field() {
    assert_eq!(
        bad_request(BAD_PRICE),
        "`data.appointments[0].price`: `120,00` is not a canonical decimal (expected \
         -?digits(.digits)?, e.g. \"12.50\")"
    );
}

#[test]
fn malformed_deliveries_are_bad_requests_with_clear_messages() {
    let group =
        |patch: &dyn Fn(&mut Value)| bad_request(&patched(APPOINTMENT_GROUP_CREATED, patch));
    let cases: Vec<(String, &str)> = vec![
        (bad_request(""), "request body is empty; expected JSON"),
        (
            bad_request("[]"),
            "a Zenoti webhook must be a JSON object, got an array",
        ),
        (
            group(&|b| b["event_type"] = json!("AppointmentGroupCreated")),
            "`event_type` is `AppointmentGroupCreated`, not `Resource.Action` (e.g. \
             `Guest.Created`)",
        ),
        (
            group(&|b| b["event_type"] = Value::Null),
            "`event_type` is missing",
        ),
        (
            group(&|b| b["id"] = json!(false)),
            "`id` must be a string or a whole number, got a boolean",
        ),
        (
            group(&|b| b["data"] = json!("{}")),
            "`data` must be an object, got a string",
        ),
        (
            group(&|b| {
                b["data"]
                    .as_object_mut()
                    .unwrap()
                    .remove("appointments")
                    .map(drop)
                    .unwrap()
            }),
            "`data.appointments` is missing",
        ),
        (
            group(&|b| b["data"]["appointments"][1]["final_price"] = json!(-5)),
            "`data.appointments[1].final_price` is -5; a price cannot be negative",
        ),
        (
            group(&|b| b["data"]["appointments"][0]["status"] = json!("Booked")),
            "`data.appointments[0].status` must be a whole number, got a string",
        ),
        (
            group(&|b| {
                b["data"]["appointments"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("id")
                    .map(drop)
                    .unwrap()
            }),
            "`data.appointments[0].id` is missing",
        ),
        (
            group(&|b| b["data"]["guest"]["id"] = json!("")),
            "`data.guest.id` is empty",
        ),
        (
            bad_request(&patched(GUEST_CREATED, |b| {
                b["data"]["personal_info"]["last_name"] = Value::Null
            })),
            "`data.personal_info.last_name` is missing",
        ),
        (
            bad_request(&patched(SERVICE_UPDATED, |b| {
                b["data"]["duration"] = json!(45.5)
            })),
            "`data.duration` must be a whole number from 0 to 9007199254740991, got 45.5",
        ),
    ];
    for (actual, expected) in cases {
        assert_eq!(actual, expected);
    }
    let req = testing::webhook(GUEST_CREATED).with_header("Content-Type", "text/html");
    assert_eq!(
        Zenoti::handle_webhook(&req, &ctx()),
        Err(AdapterError::bad_request(
            "content type `text/html` is not JSON"
        ))
    );
}

#[test]
fn centers_map_to_orgs() {
    // No settings at all: platform level.
    let events = webhook_with(GUEST_CREATED, &testing::context()).unwrap();
    assert_eq!(events[0].org_id(), None);
    // Only a default: every record goes there.
    let ctx = testing::context()
        .with_org("org-1")
        .with_setting(DEFAULT_ORG_SETTING, "org-1");
    assert_eq!(
        webhook_with(GUEST_CREATED, &ctx).unwrap()[0].org_id(),
        Some("org-1")
    );
    let before = testing::state();
    // Centers mapped, but not this one, and no default: failed (kept for redrive), never
    // published at platform level where every org would see it.
    let ctx = testing::context()
        .with_org("org-west")
        .with_setting(format!("{CENTER_ORG_PREFIX}{WEST}"), "org-west");
    assert_eq!(
        webhook_with(GUEST_CREATED, &ctx),
        Err(AdapterError::failed(format!(
            "center {EAST} is not mapped to an org: set `center_org.{EAST}` (or \
             `default_org_id`) on the connection, then redrive"
        )))
    );
    // A mapped org the connection does not allow: failed too.
    let ctx = testing::context().with_setting(format!("{CENTER_ORG_PREFIX}{EAST}"), "org-east");
    assert_eq!(
        webhook_with(GUEST_CREATED, &ctx),
        Err(AdapterError::failed(
            "org `org-east` is not one of this connection's allowed orgs; allow it on the \
             connection, then redrive"
        ))
    );
    assert_eq!(testing::state(), before, "failed invocations keep nothing");
}

#[test]
fn polling_appointments_emits_only_what_changed() {
    let first = poll(POLL_APPOINTMENTS_1).unwrap();
    assert_eq!(
        summary(&first.events),
        pairs(&[
            (
                "appointment.created",
                "0d4f7a2c-6e19-4b83-95c1-a8e3d6b2f047"
            ),
            (
                "appointment.created",
                "7b3e9d15-a2c6-4f48-8d07-5e1f4c9b2a36"
            ),
            (
                "appointment.created",
                "e5c1a8f3-7d42-4b96-9c0e-2a6f8b3d1e74"
            ),
            (
                "appointment.completed",
                "e5c1a8f3-7d42-4b96-9c0e-2a6f8b3d1e74"
            ),
        ])
    );
    assert_eq!(
        first.next_cursor, None,
        "Zenoti's lists have no change cursor"
    );
    assert_eq!(first.records, Some(3), "three appointments, four events");
    // The page's center applies to its records.
    assert!(first.events.iter().all(|e| e.org_id() == Some("org-west")));
    let payload = first.events[1].payload_value();
    assert_eq!(payload["center_id"], WEST);
    assert_eq!(payload["price"], "165.00");
    assert_eq!(payload["final_price"], "148.50");
    assert_eq!(payload["guest_name"], "Grace Okafor");
    assert_eq!(payload["therapist_name"], "Daniel Reyes");
    assert_eq!(payload["service_name"], "Deep Tissue Massage 90 min");
    assert!(payload.get("occurred_at").is_none());

    // The same window again: nothing, though every record is seen.
    let again = poll(POLL_APPOINTMENTS_1).unwrap();
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(again.records, Some(3));

    // Next poll: the first one's notes changed (not carried: nothing), the second closed
    // (completed), the third is as it was (already completed: nothing), a fourth is new.
    let second = poll(POLL_APPOINTMENTS_2).unwrap();
    assert_eq!(
        summary(&second.events),
        pairs(&[
            (
                "appointment.completed",
                "7b3e9d15-a2c6-4f48-8d07-5e1f4c9b2a36"
            ),
            (
                "appointment.created",
                "c2f8e6a1-3d97-4b50-8a4c-7e1b5d9f3c62"
            ),
        ])
    );
    assert_eq!(second.records, Some(4), "unchanged ones included");
    assert_eq!(second.events[1].payload_value()["status"], "confirmed");
    assert_eq!(second.events[1].payload_value()["final_price"], "89.55");

    // A completed appointment changed again (a refund lowers its final price): updated.
    let refunded = POLL_APPOINTMENTS_2.replace("31.50", "0.00");
    let third = poll(&refunded).unwrap();
    assert_eq!(
        summary(&third.events),
        pairs(&[(
            "appointment.updated",
            "e5c1a8f3-7d42-4b96-9c0e-2a6f8b3d1e74"
        )])
    );

    let keys: Vec<_> = first
        .events
        .iter()
        .chain(&second.events)
        .map(|e| e.dedupe_key_str().unwrap().to_owned())
        .collect();
    assert!(keys[0].starts_with("appointments/0d4f7a2c-"), "{keys:?}");
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len());
}

#[test]
fn webhooks_record_what_they_saw_so_polling_does_not_repeat_it() {
    webhook(APPOINTMENT_GROUP_CREATED).unwrap();
    // The same first appointment as the list API returns it (nested service, guest,
    // therapist), plus the second one now checked in.
    let page = json!({
        "center_id": EAST,
        "appointments": [
            {
                "appointment_id": "2b7f4e91-0c6d-4a3b-8e52-d19f7a6c0b84",
                "appointment_group_id": "c81f2d07-5b9e-4e61-a3d4-0f6b92e17a58",
                "invoice_id": "e3a94b6c-7d21-4f08-9c5e-1b8d06f4a2c7",
                "service": {"id": "71c3e8a5-2f9d-4b16-8c07-e5a4d1b9f620", "name": "Signature Facial 60 min"},
                "guest": {"id": "9d2e6b14-3c7a-4f85-b0e1-6a4c8d2f9b37", "first_name": "Priya", "last_name": "Raman", "email": "priya.raman@example.com"},
                "therapist": {"id": "3e8b1f6d-9a24-4c7e-b503-a7d2c6e1f948", "first_name": "Marisol", "last_name": "Vega"},
                "start_time": "2025-12-04T10:00:00",
                "end_time": "2025-12-04T11:00:00",
                "status": 0,
                "price": "120.00",
                "final_price": "108.00"
            },
            {
                "appointment_id": "8c0e5a27-d4b1-4f96-9a3e-6b2f8d1c7e05",
                "appointment_group_id": "c81f2d07-5b9e-4e61-a3d4-0f6b92e17a58",
                "invoice_id": "e3a94b6c-7d21-4f08-9c5e-1b8d06f4a2c7",
                "service": {"id": "a6d2f1c8-4e07-4b9a-93d5-2c8e7f1b0a46", "name": "LED Therapy Add-on"},
                "guest": {"id": "9d2e6b14-3c7a-4f85-b0e1-6a4c8d2f9b37", "first_name": "Priya", "last_name": "Raman"},
                "therapist": {"id": "3e8b1f6d-9a24-4c7e-b503-a7d2c6e1f948", "first_name": "Marisol", "last_name": "Vega"},
                "start_time": "2025-12-04T11:00:00",
                "end_time": "2025-12-04T11:15:00",
                "status": 2,
                "price": "35",
                "final_price": "35"
            }
        ]
    });
    let out = poll(&page.to_string()).unwrap();
    assert_eq!(
        summary(&out.events),
        pairs(&[(
            "appointment.updated",
            "8c0e5a27-d4b1-4f96-9a3e-6b2f8d1c7e05"
        )])
    );

    // A completion seen by webhook is not completed again by the next poll.
    webhook(APPOINTMENT_COMPLETED).unwrap();
    let closed = patched(&page.to_string(), |p| {
        p["appointments"][0]["status"] = json!(1);
        p["appointments"][0]["final_price"] = json!("97.20");
    });
    assert!(poll(&closed).unwrap().events.is_empty());
}

#[test]
fn polling_guests_and_services() {
    let guests = poll(POLL_GUESTS).unwrap();
    assert_eq!(
        summary(&guests.events),
        pairs(&[
            ("member.created", "5c8a1e7d-3b64-4f29-a0c5-d2e9b7f41a83"),
            ("member.created", "a9d3f6b2-4e18-4c75-8b0a-e5c7d2f193b4"),
        ])
    );
    assert_eq!(guests.events[0].org_id(), Some("org-west"));
    assert_eq!(guests.records, Some(2));
    let moved = POLL_GUESTS.replace("grace.okafor@example.com", "grace@okafor.example");
    assert_eq!(
        summary(&poll(&moved).unwrap().events),
        pairs(&[("member.updated", "a9d3f6b2-4e18-4c75-8b0a-e5c7d2f193b4")])
    );

    let services = poll(POLL_SERVICES).unwrap();
    assert_eq!(services.events.len(), 3);
    assert_eq!(services.records, Some(3));
    assert!(
        services
            .events
            .iter()
            .all(|e| e.event_type() == "service.created")
    );
    assert_eq!(services.events[0].payload_value()["price"], "120.00");
    assert_eq!(services.events[0].payload_value()["center_id"], WEST);
    // The same catalog from another center, at its own prices: tracked per center.
    let east = POLL_SERVICES
        .replace(WEST, EAST)
        .replace("165.00", "175.00");
    let out = poll(&east).unwrap();
    assert_eq!(out.events.len(), 3);
    assert!(out.events.iter().all(|e| e.org_id() == Some("org-east")));
    let repriced = POLL_SERVICES.replace("35.00", "38.00");
    assert_eq!(
        summary(&poll(&repriced).unwrap().events),
        pairs(&[("service.updated", "a6d2f1c8-4e07-4b9a-93d5-2c8e7f1b0a46")])
    );
}

#[test]
fn malformed_pages_are_bad_requests_and_leave_the_state_alone() {
    assert_eq!(
        poll(r#"{"page_info": {"total": 0}}"#),
        Err(AdapterError::bad_request(
            "the page holds none of `appointments`, `guests`, `services`"
        ))
    );
    assert_eq!(
        poll(r#"{"guests": [], "services": []}"#),
        Err(AdapterError::bad_request(
            "the page holds more than one of `appointments`, `guests`, `services`"
        ))
    );
    let bad = patched(POLL_APPOINTMENTS_1, |p| {
        p["appointments"][2]["price"] = json!("1e3")
    });
    assert_eq!(
        poll(&bad),
        Err(AdapterError::bad_request(
            "`appointments[2].price`: `1e3` is not a canonical decimal (expected \
             -?digits(.digits)?, e.g. \"12.50\")"
        ))
    );
    assert!(testing::state().is_empty(), "the host rolls the state back");
    assert_eq!(
        poll(r#"{"services": {}}"#),
        Err(AdapterError::bad_request(
            "`services` must be an array, got an object"
        ))
    );
}

#[test]
fn the_state_stays_within_the_host_limits_for_thousands_of_appointments() {
    // 2,000 appointments over 20 pages: fingerprints share 32 keys instead of one key each.
    for page in 0..20 {
        let appointments: Vec<Value> = (0..100)
            .map(|i| {
                json!({
                    "appointment_id": format!("00000000-0000-4000-8000-{:012}", page * 100 + i),
                    "service": {"id": "71c3e8a5-2f9d-4b16-8c07-e5a4d1b9f620", "name": "Facial"},
                    "start_time": "2025-12-05T09:00:00",
                    "status": 0,
                    "price": "120.00"
                })
            })
            .collect();
        let body = json!({"center_id": WEST, "appointments": appointments}).to_string();
        assert_eq!(poll(&body).unwrap().events.len(), 100);
    }
    let state = testing::state();
    assert_eq!(state.len(), 32);
    let total: usize = state.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(total < 160 * 1024, "{total} bytes of state");
}

#[test]
fn every_event_of_every_fixture_keeps_the_host_contracts() {
    let info = Zenoti::describe();
    let ctx = ctx();
    let mut all = Vec::new();
    for fixture in WEBHOOK_FIXTURES {
        all.extend(webhook(fixture).unwrap_or_default());
    }
    testing::reset();
    for fixture in POLL_FIXTURES {
        all.extend(poll(fixture).unwrap().events);
    }
    // 2 + 1 + 1 + 2 guests + 2 services; 4 + 2 appointments, 2 guests, 3 services.
    assert_eq!(all.len(), 19);
    check_events(&info, &ctx, &all).unwrap();
    // On a connection that allows no org, every event with an org breaks the org contract.
    let with_org = all.iter().filter(|e| e.org_id().is_some()).count();
    assert_eq!(with_org, 17);
    let violations = check_events(&info, &testing::context(), &all).unwrap_err();
    assert_eq!(violations.len(), with_org);
}

#[test]
fn no_input_makes_the_adapter_panic() {
    // Every prefix of every fixture, and every fixture with one byte replaced: each must give
    // an answer (usually a bad request), never a panic.
    let ctx = ctx();
    for fixture in WEBHOOK_FIXTURES.iter().chain(&POLL_FIXTURES) {
        let bytes = fixture.as_bytes();
        for end in 0..bytes.len() {
            let _ = Zenoti::handle_webhook(&testing::webhook(&bytes[..end]), &ctx);
            let _ = Zenoti::handle_poll(&testing::poll_page(&bytes[..end]), &ctx);
        }
        for (i, replacement) in
            (0..bytes.len()).zip([b'0', b'"', b'-', b'x', b'{', b']', b'.'].iter().cycle())
        {
            let mut body = bytes.to_vec();
            body[i] = *replacement;
            let _ = Zenoti::handle_webhook(&testing::webhook(body.clone()), &ctx);
            let _ = Zenoti::handle_poll(&testing::poll_page(body), &ctx);
        }
    }
}
