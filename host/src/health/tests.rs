use super::*;
use crate::store::{PollRunStatus, new_id};

const NOW: Millis = 10_000_000_000;

fn connection(polling: Option<&str>) -> Connection {
    Connection {
        id: new_id(),
        tenant_id: "t1".into(),
        org_id: Some("org-a".into()),
        provider: "hubspot".into(),
        adapter_id: "a1".into(),
        adapter_version: 1,
        signature_json: "{}".into(),
        allowed_org_ids: vec!["org-a".into()],
        secret_refs_json: "[]".into(),
        settings_json: "{}".into(),
        polling_json: polling.map(str::to_owned),
        api_json: None,
        webhook_json: None,
        export_json: None,
        status: ConnectionStatus::Active,
        created_at: NOW - 86_400_000,
        updated_at: NOW - 86_400_000,
        last_delivery_at: None,
        version_changed_by: None,
        version_changed_at: None,
    }
}

fn rules(reasons: &Assessment) -> Vec<&str> {
    reasons.reasons.iter().map(|r| r.rule.as_str()).collect()
}

#[test]
fn a_quiet_webhook_connection_is_healthy_by_default() {
    let assessment = assess(
        &connection(None),
        &Activity::default(),
        &Thresholds::default(),
        NOW,
    );
    assert_eq!(assessment.status, Status::Healthy);
    assert!(assessment.reasons.is_empty());
}

#[test]
fn failure_rates_degrade_then_fail_once_enough_deliveries_count() {
    let thresholds = Thresholds::default();
    let with = |total, failed| Activity {
        deliveries: total,
        deliveries_failed: failed,
        last_failure: Some((
            "d1".into(),
            Some(r#"{"status":"adapter_error","kind":"failed","message":"no amount"}"#.into()),
        )),
        ..Activity::default()
    };
    // Too few deliveries: a rate of one failure in two says nothing yet.
    let few = assess(&connection(None), &with(2, 2), &thresholds, NOW);
    assert_eq!(few.status, Status::Healthy);

    let some = assess(&connection(None), &with(10, 1), &thresholds, NOW);
    assert_eq!(some.status, Status::Degraded);
    let most = assess(&connection(None), &with(10, 5), &thresholds, NOW);
    assert_eq!(most.status, Status::Failing);
    let reason = &most.reasons[0];
    assert_eq!(reason.rule, "delivery_failures");
    assert!(
        reason.detail.contains("5 of 10") && reason.detail.contains("adapter_error: no amount"),
        "{}",
        reason.detail
    );
    // Decimals are strings, in alerts as everywhere.
    assert_eq!(reason.figures["failure_rate"], "0.5000");
    assert_eq!(reason.figures["latest_failed_delivery_id"], "d1");
}

#[test]
fn a_polling_connection_is_stale_after_its_intervals_without_a_good_run() {
    let polling = Some(r#"{"interval_secs": 600}"#);
    let thresholds = Thresholds::default();
    let recent = Activity {
        last_poll_success_at: Some(NOW - 1_700_000),
        ..Activity::default()
    };
    assert_eq!(
        assess(&connection(polling), &recent, &thresholds, NOW).status,
        Status::Healthy
    );
    let old = Activity {
        last_poll_success_at: Some(NOW - 1_900_000),
        ..Activity::default()
    };
    let stale = assess(&connection(polling), &old, &thresholds, NOW);
    assert_eq!(stale.status, Status::Stale);
    assert_eq!(stale.reasons[0].figures["silent_secs"], 1900);

    // Disabled: silence is expected.
    let mut disabled = connection(polling);
    disabled.status = ConnectionStatus::Disabled;
    assert_eq!(
        assess(&disabled, &old, &thresholds, NOW).status,
        Status::Healthy
    );
}

#[test]
fn a_webhook_connection_is_stale_only_when_the_tenant_expects_a_cadence() {
    let activity = Activity {
        last_delivery_at: Some(NOW - 7_200_000),
        ..Activity::default()
    };
    assert_eq!(
        assess(&connection(None), &activity, &Thresholds::default(), NOW).status,
        Status::Healthy
    );
    let expecting = Thresholds {
        stale_after_secs: Some(3600),
        ..Thresholds::default()
    };
    let stale = assess(&connection(None), &activity, &expecting, NOW);
    assert_eq!(stale.status, Status::Stale);
    assert!(stale.reasons[0].detail.contains("no delivery for 7200 s"));
}

#[test]
fn the_worst_reason_wins_and_every_reason_is_listed() {
    let activity = Activity {
        deliveries: 10,
        deliveries_failed: 2,
        poll_failures_in_a_row: 4,
        last_poll: Some((PollRunStatus::Failed, NOW - 1000, Some("HTTP 500".into()))),
        signature_failures: 12,
        auth: Some((AuthState::Error, Some("invalid_grant".into()))),
        dead_subscriber_deliveries: 3,
        outbox_pending: 7,
        outbox_oldest_pending_at: Some(NOW - 600_000),
        ..Activity::default()
    };
    let assessment = assess(
        &connection(Some(r#"{}"#)),
        &activity,
        &Thresholds::default(),
        NOW,
    );
    assert_eq!(assessment.status, Status::Error);
    assert_eq!(
        rules(&assessment),
        [
            "credentials",
            "delivery_failures",
            "poll_failures",
            "signature_failures",
            "dead_subscriber_deliveries",
            "outbox_lag"
        ]
    );
    assert!(assessment.reasons[0].detail.contains("invalid_grant"));
    assert!(assessment.reasons[2].detail.contains("HTTP 500"));
    assert_eq!(assessment.reasons[2].status, Status::Failing);
    let firing = assessment.firing();
    assert_eq!(firing[0].severity, "error");
    assert_eq!(firing.len(), 6);
}

#[test]
fn a_recent_drift_degrades_naming_the_latest_unless_the_tenant_turns_it_off() {
    let drift = |pointer: &str, change: &str| crate::store::Drift {
        id: new_id(),
        connection_id: "c1".into(),
        kind: "webhook:deal.won".into(),
        pointer: pointer.into(),
        change: change.into(),
        was: "string".into(),
        now: "number".into(),
        example_delivery_id: "d-9".into(),
        detected_at: NOW - 1000,
    };
    let activity = Activity {
        drifts: vec![
            drift("/data/amount", "decimal_as_number"),
            drift("/data/fee", "appeared"),
        ],
        ..Activity::default()
    };
    let connection = connection(None);
    let assessment = assess(&connection, &activity, &Thresholds::default(), NOW);
    assert_eq!(assessment.status, Status::Degraded);
    assert_eq!(rules(&assessment), ["schema_drift"]);
    let detail = &assessment.reasons[0].detail;
    assert!(
        detail.contains("`/data/amount` of webhook:deal.won arrived as a number where it was a decimal string (delivery d-9), and 1 more"),
        "{detail}"
    );
    assert_eq!(
        assessment.reasons[0].figures["drifts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let off = Thresholds {
        schema_drift: false,
        ..Thresholds::default()
    };
    assert_eq!(
        assess(&connection, &activity, &off, NOW).status,
        Status::Healthy
    );
}

#[test]
fn rules_merge_per_connection_and_refuse_nonsense_naming_the_field() {
    let text =
        r#"{"defaults": {"window_secs": 120}, "connections": {"c1": {"stale_after_secs": 60}}}"#;
    let rules = HealthRules::from_stored(Some(text)).unwrap();
    assert_eq!(
        rules.for_connection("c1").unwrap().stale_after_secs,
        Some(60)
    );
    assert_eq!(rules.for_connection("c1").unwrap().window_secs, 120);
    assert_eq!(rules.for_connection("c2").unwrap().stale_after_secs, None);

    for (bad, says) in [
        (
            r#"{"defaults": {"window_secs": 5}}"#,
            "defaults: `window_secs`",
        ),
        (
            r#"{"defaults": {"degraded_failure_percent": 60}}"#,
            "must not exceed `failing_failure_percent`",
        ),
        (
            r#"{"connections": {"c1": {"outbox_lag_secs": 0}}}"#,
            "connections.c1: `outbox_lag_secs`",
        ),
        (
            r#"{"connections": {"c1": {"no_such_field": 1}}}"#,
            "unknown field `no_such_field`",
        ),
        (r#"{"defaults": {}, "extra": 1}"#, "unknown field `extra`"),
    ] {
        let error = HealthRules::from_stored(Some(bad)).unwrap_err();
        assert!(error.contains(says), "{bad}: {error}");
    }
}

#[test]
fn rates_are_decimal_strings() {
    assert_eq!(rate(1, 3), "0.3333");
    assert_eq!(rate(0, 0), "0.0000");
    assert_eq!(rate(3, 3), "1.0000");
    assert_eq!(rate(1, 2), "0.5000");
}
