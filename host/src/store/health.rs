//! What the store keeps for connection health: the figures an assessment is computed from, the
//! latest assessment of each connection, the tenant's thresholds, and the alerts raised and
//! resolved. An alert's `integration_alert.raised` / `.resolved` events are appended to the
//! outbox in the same transaction as the alert's row, so a subscriber or the bus sees each
//! exactly as often as the alert table says it happened.

use serde::Serialize;

use super::{AuthState, Error, Millis, NewOutboxEvent, PollRunStatus, Result};

/// What a connection did in a window: the inputs of its health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// Deliveries (webhook and pushed pages) received in the window and completed.
    pub deliveries: u64,
    /// Of those, the ones that failed (adapter error, trap, contract violation).
    pub deliveries_failed: u64,
    /// Of those, the ones the adapter judged malformed.
    pub deliveries_rejected: u64,
    /// The reason of the latest failed delivery of the window (JSON text), with its id.
    pub last_failure: Option<(String, Option<String>)>,
    /// When the connection last received a delivery (any kind).
    pub last_delivery_at: Option<Millis>,
    /// When a delivery (any kind) was last processed or ignored.
    pub last_success_at: Option<Millis>,
    /// Poll runs that ended in the window.
    pub polls: u64,
    /// Of those, the ones that failed.
    pub polls_failed: u64,
    /// The connection's latest ended run: status, end, reason.
    pub last_poll: Option<(PollRunStatus, Millis, Option<String>)>,
    /// When a run last ended `done`.
    pub last_poll_success_at: Option<Millis>,
    /// Runs failed in a row (the poll schedule's count).
    pub poll_failures_in_a_row: u32,
    /// Signature checks refused in the window (counted by every node).
    pub signature_failures: u64,
    /// Where its OAuth authorization stands, when it has one, and why.
    pub auth: Option<(AuthState, Option<String>)>,
    /// Its events that a subscriber gave up on (dead, not retried since).
    pub dead_subscriber_deliveries: u64,
    /// Its events not yet published.
    pub outbox_pending: u64,
    /// When the oldest of them was appended.
    pub outbox_oldest_pending_at: Option<Millis>,
    /// Changes found in its payloads in the window, newest first (at most
    /// [`RECENT_DRIFTS`]).
    pub drifts: Vec<super::Drift>,
}

/// The most drifts an [`Activity`] carries.
pub const RECENT_DRIFTS: usize = 10;

/// A connection's latest assessment, as the host keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthSnapshot {
    /// The connection.
    pub connection_id: String,
    /// `healthy`, `degraded`, `failing`, `stale` or `error`.
    pub status: String,
    /// The reasons (JSON text: an array).
    pub reasons_json: String,
    /// When it was assessed.
    pub assessed_at: Millis,
    /// When its status last changed.
    pub changed_at: Millis,
}

/// A rule that fires on a connection now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    /// The rule's name (`delivery_failures`, `stale`, ...).
    pub rule: String,
    /// The health status it implies.
    pub severity: String,
    /// What is wrong, for a person.
    pub detail: String,
    /// The figures behind it (JSON text: an object).
    pub figures_json: String,
}

/// One assessment to record, with the rules firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRecord {
    /// The connection.
    pub connection_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Its org.
    pub org_id: Option<String>,
    /// Its CRM.
    pub provider: String,
    /// The status computed.
    pub status: String,
    /// The reasons (JSON text: an array).
    pub reasons_json: String,
    /// The rules firing (an alert is raised for each that has none open).
    pub firing: Vec<Firing>,
    /// Whether alerts may be raised (a disabled connection's only resolve).
    pub raise: bool,
    /// A rule's alert resolved less than this long ago is not raised again.
    pub realert_after: Millis,
    /// When.
    pub now: Millis,
}

text_enum! {
    /// Whether an alert still holds.
    AlertStatus {
        /// Its condition holds.
        Open => "open",
        /// Its condition cleared (or its connection was disabled).
        Resolved => "resolved",
    }
}

/// An alert on one connection and rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// Its id (time-ordered).
    pub id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The connection's org.
    pub org_id: Option<String>,
    /// The connection.
    pub connection_id: String,
    /// The connection's CRM.
    pub provider: String,
    /// The rule that fired.
    pub rule: String,
    /// The health status the rule implied when it fired.
    pub severity: String,
    /// What was wrong.
    pub detail: String,
    /// The figures when it fired (JSON text).
    pub figures_json: String,
    /// Open or resolved.
    pub status: AlertStatus,
    /// When it was raised.
    pub raised_at: Millis,
    /// When it was resolved.
    pub resolved_at: Option<Millis>,
    /// The id of its `integration_alert.raised` event.
    pub raised_event_id: String,
    /// The id of its `integration_alert.resolved` event.
    pub resolved_event_id: Option<String>,
}

/// What recording an assessment changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertChanges {
    /// Alerts raised now.
    pub raised: Vec<Alert>,
    /// Alerts resolved now.
    pub resolved: Vec<Alert>,
}

impl AlertChanges {
    /// Whether events were appended to the outbox.
    pub fn appended(&self) -> bool {
        !self.raised.is_empty() || !self.resolved.is_empty()
    }
}

/// Filters of an alert list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Only open, or only resolved, ones.
    pub status: Option<AlertStatus>,
    /// Only this connection's.
    pub connection_id: Option<String>,
    /// Only this rule's.
    pub rule: Option<String>,
}

/// A new alert for `record` and `firing`, open at `now`.
pub(crate) fn new_alert(record: &HealthRecord, firing: &Firing) -> Alert {
    Alert {
        id: super::new_id(),
        tenant_id: record.tenant_id.clone(),
        org_id: record.org_id.clone(),
        connection_id: record.connection_id.clone(),
        provider: record.provider.clone(),
        rule: firing.rule.clone(),
        severity: firing.severity.clone(),
        detail: firing.detail.clone(),
        figures_json: firing.figures_json.clone(),
        status: AlertStatus::Open,
        raised_at: record.now,
        resolved_at: None,
        raised_event_id: super::new_id(),
        resolved_event_id: None,
    }
}

/// `alert` resolved at `now`.
pub(crate) fn resolved(mut alert: Alert, now: Millis) -> Alert {
    alert.status = AlertStatus::Resolved;
    alert.resolved_at = Some(now);
    alert.resolved_event_id = Some(super::new_id());
    alert
}

/// The platform event announcing `alert` (`integration_alert.raised`, or `.resolved` once it
/// is), appended to the outbox like an adapter's events. Its entity is the alert, so a
/// subscriber gets an alert's two events in order.
pub(crate) fn alert_event(alert: &Alert) -> NewOutboxEvent {
    let (action, event_id, at) = match (&alert.resolved_event_id, alert.resolved_at) {
        (Some(id), Some(at)) => ("resolved", id.clone(), at),
        _ => ("raised", alert.raised_event_id.clone(), alert.raised_at),
    };
    let figures: serde_json::Value =
        serde_json::from_str(&alert.figures_json).unwrap_or(serde_json::Value::Null);
    let payload = serde_json::json!({
        "alert_id": alert.id,
        "connection_id": alert.connection_id,
        "provider": alert.provider,
        "rule": alert.rule,
        "severity": alert.severity,
        "status": alert.status.as_str(),
        "detail": alert.detail,
        "figures": figures,
        "raised_at": rfc3339(alert.raised_at),
        "resolved_at": alert.resolved_at.map(rfc3339),
    });
    let metadata = serde_json::json!({
        "trace_id": super::new_id(),
        "source": "host:health",
        "actor": "adapter-host",
        "timestamp": rfc3339(at),
    });
    NewOutboxEvent {
        event_id,
        org_id: alert.org_id.clone(),
        event_type: format!("integration_alert.{action}"),
        entity_type: "integration_alert".to_owned(),
        entity_id: alert.id.clone(),
        payload_json: payload.to_string(),
        metadata_json: metadata.to_string(),
    }
}

fn rfc3339(at: Millis) -> String {
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}
