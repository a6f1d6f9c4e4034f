//! Polling through the host: `poll_request` names each center's next week of appointments,
//! `handle_poll` reads the host's answer.

use crm_adapter_sdk::log::Level;
use crm_adapter_sdk::testing::TEST_TIME;
use crm_adapter_sdk::{HttpRequest, PollPage, Timestamp};

use super::*;

const WEEK_1: &str = include_str!("../../fixtures/v1-appointments-week-1.json");
const WEEK_2: &str = include_str!("../../fixtures/v1-appointments-week-2.json");
const EMPTY: &str = include_str!("../../fixtures/v1-appointments-empty.json");
const UNAUTHORIZED: &str = include_str!("../../fixtures/error-unauthorized.json");

/// 2025-12-10T15:00:00Z: December 9 has ended everywhere, December 11 has begun somewhere.
const DEC_10_AFTERNOON: Timestamp = Timestamp {
    seconds: 1_765_378_800,
    nanoseconds: 0,
};

fn api_ctx() -> Context {
    ctx()
        .with_api_base_url("https://api.zenoti.com")
        .with_setting(api::POLL_START_SETTING, "2025-12-01")
}

fn west_ctx() -> Context {
    api_ctx().with_setting(api::POLL_CENTERS_SETTING, WEST)
}

fn request(cursor: Option<&str>, ctx: &Context) -> HttpRequest {
    Zenoti::poll_request(cursor, ctx)
        .unwrap()
        .expect("a request")
}

fn appointments(center: &str, start: &str, end: &str) -> HttpRequest {
    HttpRequest::get("/v1/appointments")
        .query("center_id", center)
        .query("start_date", start)
        .query("end_date", end)
        .query("include_no_show_cancel", "true")
}

fn answer(
    request: HttpRequest,
    cursor: Option<&str>,
    status: u16,
    body: &str,
    at: Timestamp,
) -> PollPage {
    let mut page = testing::poll_page(body)
        .with_request(request)
        .with_status(status)
        .with_fetched_at(at);
    if let Some(cursor) = cursor {
        page = page.with_cursor(cursor);
    }
    page
}

/// One step of a run as the host drives it, answered 200 with `body`, fetched at `at`.
fn step(
    cursor: Option<&str>,
    body: &str,
    at: Timestamp,
    ctx: &Context,
) -> (HttpRequest, PollOutput) {
    let req = request(cursor, ctx);
    let out =
        testing::run_poll::<Zenoti>(&answer(req.clone(), cursor, 200, body, at), ctx).unwrap();
    (req, out)
}

fn keys(events: &[Event]) -> Vec<(&str, &str)> {
    events
        .iter()
        .map(|e| (e.event_type(), e.dedupe_key_str().unwrap_or_default()))
        .collect()
}

#[test]
fn a_run_walks_a_center_a_week_at_a_time_up_to_today() {
    let ctx = west_ctx();
    // First page ever: the first week from `poll_start_date`.
    let (req, first) = step(None, WEEK_1, DEC_10_AFTERNOON, &ctx);
    assert_eq!(req, appointments(WEST, "2025-12-01", "2025-12-07"));
    let fp = |e: &Event| {
        e.dedupe_key_str()
            .unwrap()
            .split('/')
            .nth(2)
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        summary(&first.events),
        pairs(&[
            (
                "appointment.created",
                "0d4f7a2c-6e19-4b83-95c1-a8e3d6b2f047"
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
        first.events[2].dedupe_key_str(),
        Some(
            format!(
                "appointments/e5c1a8f3-7d42-4b96-9c0e-2a6f8b3d1e74/{}/completed",
                fp(&first.events[2])
            )
            .as_str()
        )
    );
    // The records do not name their center: the request did, and it maps to org-west.
    let payload = first.events[0].payload_value();
    assert_eq!(payload["center_id"], WEST);
    assert_eq!(payload["price"], "120.00");
    assert!(first.events.iter().all(|e| e.org_id() == Some("org-west")));
    assert!(first.more, "the week ended before today");
    assert_eq!(first.records, Some(2), "two appointments, three events");
    let cursor = first.next_cursor.unwrap();
    assert_eq!(
        cursor,
        format!(r#"{{"through":{{"{WEST}":"2025-12-07"}},"center":"{WEST}"}}"#)
    );

    // The week that holds today ends the center's walk; only the days that have ended
    // everywhere count as fetched.
    let (req, last) = step(Some(&cursor), WEEK_2, DEC_10_AFTERNOON, &ctx);
    assert_eq!(req, appointments(WEST, "2025-12-08", "2025-12-14"));
    assert_eq!(
        summary(&last.events),
        pairs(&[(
            "appointment.created",
            "7b3e9d15-a2c6-4f48-8d07-5e1f4c9b2a36"
        )])
    );
    assert_eq!(last.events[0].payload_value()["status"], "confirmed");
    assert!(!last.more);
    assert_eq!(last.records, Some(1));
    let cursor = last.next_cursor.unwrap();
    assert_eq!(
        cursor,
        format!(r#"{{"through":{{"{WEST}":"2025-12-09"}}}}"#)
    );

    // The next run starts with the first day not fully fetched; the same appointments again
    // emit nothing.
    let (req, next) = step(Some(&cursor), WEEK_2, DEC_10_AFTERNOON, &ctx);
    assert_eq!(req, appointments(WEST, "2025-12-10", "2025-12-16"));
    assert!(next.events.is_empty());
    assert_eq!(next.records, Some(1), "unchanged records are still seen");
    assert_eq!(
        next.next_cursor.as_deref(),
        Some(cursor.as_str()),
        "never back"
    );
}

#[test]
fn a_day_is_complete_once_it_has_ended_everywhere() {
    let ctx = west_ctx();
    let cursor = format!(r#"{{"through":{{"{WEST}":"2025-12-04"}}}}"#);
    for (seconds, through, more) in [
        // 2025-12-10T11:59:59Z: December 9 is not over at UTC-12.
        (1_765_367_999, "2025-12-08", false),
        // 2025-12-10T12:00:00Z: it is.
        (1_765_368_000, "2025-12-09", false),
        // 2025-12-11T10:00:00Z: December 12 has begun at UTC+14, after the window's last day.
        (1_765_447_200, "2025-12-09", true),
    ] {
        let at = Timestamp {
            seconds,
            nanoseconds: 0,
        };
        let (req, out) = step(Some(&cursor), EMPTY, at, &ctx);
        assert_eq!(req, appointments(WEST, "2025-12-05", "2025-12-11"));
        let expected = match more {
            true => format!(r#"{{"through":{{"{WEST}":"{through}"}},"center":"{WEST}"}}"#),
            false => format!(r#"{{"through":{{"{WEST}":"{through}"}}}}"#),
        };
        assert_eq!(
            out.next_cursor.as_deref(),
            Some(expected.as_str()),
            "{seconds}"
        );
        assert_eq!(out.more, more, "{seconds}");
        assert_eq!(out.records, Some(0), "{seconds}");
    }
}

#[test]
fn every_center_is_walked_in_turn() {
    // Default: the centers the `center_org.*` settings map, in their order.
    let ctx = api_ctx();
    let (req, out) = step(None, EMPTY, TEST_TIME, &ctx);
    assert_eq!(req, appointments(EAST, "2025-12-01", "2025-12-07"));
    assert!(out.more, "the west center is still to walk");
    let cursor = out.next_cursor.unwrap();
    // Nothing of the window has ended yet: the next run starts at `poll_start_date` again.
    assert_eq!(
        cursor,
        format!(r#"{{"through":{{"{EAST}":"2025-11-30"}},"center":"{WEST}"}}"#)
    );
    let (req, out) = step(Some(&cursor), EMPTY, TEST_TIME, &ctx);
    assert_eq!(req, appointments(WEST, "2025-12-01", "2025-12-07"));
    assert!(!out.more);
    // A cursor naming a center no longer polled starts over with the first.
    let gone = r#"{"center":"0f0f0f0f-0000-4000-8000-000000000000"}"#;
    assert_eq!(
        request(Some(gone), &ctx),
        appointments(EAST, "2025-12-01", "2025-12-07")
    );
    // So does one that is not this adapter's, with a warning.
    assert_eq!(
        request(Some("2025-12-01"), &ctx),
        appointments(EAST, "2025-12-01", "2025-12-07")
    );
    assert!(
        testing::logs()
            .iter()
            .any(|l| l.level == Level::Warn && l.message.contains("starting over"))
    );
}

#[test]
fn polling_needs_centers_a_start_date_and_api_access() {
    let no_centers = testing::context()
        .with_api_base_url("https://api.zenoti.com")
        .with_setting(api::POLL_START_SETTING, "2025-12-01");
    assert_eq!(
        Zenoti::poll_request(None, &no_centers),
        Err(AdapterError::failed(
            "no center to poll: set `poll_centers` (or `center_org.<center id>`) on the connection"
        ))
    );
    let no_start = ctx().with_api_base_url("https://api.zenoti.com");
    assert_eq!(
        Zenoti::poll_request(None, &no_start),
        Err(AdapterError::failed(
            "connection setting `poll_start_date` is not configured"
        ))
    );
    let bad_start = no_start
        .clone()
        .with_setting(api::POLL_START_SETTING, "01/12/2025");
    assert_eq!(
        Zenoti::poll_request(None, &bad_start),
        Err(AdapterError::failed(
            "connection setting `poll_start_date` is `01/12/2025`, not a date such as 2025-12-01"
        ))
    );
    // A center already walked needs no start date.
    let cursor = format!(r#"{{"through":{{"{EAST}":"2025-12-04"}}}}"#);
    assert_eq!(
        request(Some(&cursor), &no_start),
        appointments(EAST, "2025-12-05", "2025-12-11")
    );
    assert_eq!(Zenoti::poll_request(None, &ctx()), Ok(None));
}

#[test]
fn an_answer_other_than_2xx_fails_the_page_and_keeps_the_state() {
    let ctx = west_ctx();
    for status in [400, 401, 404, 500] {
        let page = answer(request(None, &ctx), None, status, UNAUTHORIZED, TEST_TIME);
        let err = testing::run_poll::<Zenoti>(&page, &ctx).unwrap_err();
        assert_eq!(
            err,
            AdapterError::failed(format!(
                "Zenoti answered {status} to the appointments of center {WEST} from 2025-12-01 \
                 to 2025-12-07: {UNAUTHORIZED}"
            ))
        );
        assert!(testing::state().is_empty());
    }
}

#[test]
fn appointments_a_webhook_reported_are_not_reported_again() {
    let ctx = api_ctx().with_setting(api::POLL_CENTERS_SETTING, EAST);
    webhook_with(APPOINTMENT_GROUP_CREATED, &ctx).unwrap();
    // The same appointments, as the list API writes them, in the center's week.
    let group: Value = serde_json::from_str(APPOINTMENT_GROUP_CREATED).unwrap();
    let page = json!({"appointments": group["data"]["appointments"]});
    let inherited = |mut page: Value| {
        for a in page["appointments"].as_array_mut().unwrap() {
            a["appointment_group_id"] = group["data"]["appointment_group_id"].clone();
            a["invoice_id"] = group["data"]["invoice_id"].clone();
            a["guest"] = group["data"]["guest"].clone();
        }
        page
    };
    let (_, out) = step(None, &inherited(page).to_string(), TEST_TIME, &ctx);
    assert!(out.events.is_empty(), "{:?}", keys(&out.events));
}

#[test]
fn an_org_connection_without_a_mapping_emits_for_its_own_org() {
    let ctx = testing::context()
        .with_connection_org("org-9")
        .with_setting(api::POLL_CENTERS_SETTING, WEST)
        .with_setting(api::POLL_START_SETTING, "2025-12-01")
        .with_api_base_url("https://api.zenoti.com");
    let (_, out) = step(None, WEEK_1, TEST_TIME, &ctx);
    assert!(out.events.iter().all(|e| e.org_id() == Some("org-9")));
    let events = webhook_with(SERVICE_CREATED, &ctx).unwrap();
    assert_eq!(
        events[0].org_id(),
        Some("org-9"),
        "a catalog service, no center"
    );
    let events = webhook_with(APPOINTMENT_GROUP_CREATED, &ctx).unwrap();
    assert!(events.iter().all(|e| e.org_id() == Some("org-9")));
}

#[test]
fn no_answer_makes_the_adapter_panic() {
    let ctx = west_ctx();
    for body in [WEEK_1, WEEK_2, EMPTY, UNAUTHORIZED] {
        for end in 0..body.len() {
            let page = answer(request(None, &ctx), None, 200, &body[..end], TEST_TIME);
            let _ = Zenoti::handle_poll(&page, &ctx);
        }
    }
}
