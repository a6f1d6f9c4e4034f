//! Integration health: what the host concludes about each connection from what it did, and
//! the alerts that follow.
//!
//! An assessment reads a connection's [`Activity`] over the tenant's window and applies the
//! tenant's [`Thresholds`] (platform defaults unless the tenant set its own, per connection if
//! it likes). Each rule that fires is a [`Reason`] with the status it implies; the
//! connection's status is the worst of them:
//!
//! | rule | fires when | status |
//! |---|---|---|
//! | `credentials` | its OAuth grant was refused (or it was disconnected) | `error` |
//! | `delivery_failures` | the share of failed deliveries reaches `failing_failure_percent` / `degraded_failure_percent` (with at least `min_deliveries`) | `failing` / `degraded` |
//! | `poll_failures` | runs failed in a row reach `failing_poll_failures` / `degraded_poll_failures` | `failing` / `degraded` |
//! | `stale` | no successful run for `stale_poll_intervals` intervals; for webhooks, no delivery for `stale_after_secs` (unset: not checked) | `stale` |
//! | `signature_failures` | refused signatures in the window reach `signature_failures` | `degraded` |
//! | `dead_subscriber_deliveries` | a subscriber gave up on this many of its events | `degraded` |
//! | `outbox_lag` | its oldest unpublished event is older than `outbox_lag_secs` | `degraded` |
//! | `schema_drift` | its payloads changed shape in the window (see [`crate::drift`]) | `degraded` |
//!
//! The order of precedence is `error`, `failing`, `stale`, `degraded`, `healthy`. A disabled
//! connection is assessed (its figures still tell) but raises nothing, and its open alerts are
//! resolved. The monitor ([`monitor`]) assesses every connection each tick, records it and
//! raises or resolves one alert per connection and rule, each announced by an
//! `integration_alert.raised` / `.resolved` event through the outbox.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::poll::PollingConfig;
use crate::store::{Activity, AuthState, Connection, ConnectionStatus, Firing, Millis};

pub mod monitor;
#[cfg(test)]
mod tests;

/// A connection's health.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Nothing fires.
    Healthy,
    /// It works, with trouble: some failures, refused signatures, a backlog.
    Degraded,
    /// Silent for longer than its cadence.
    Stale,
    /// Most of what it receives or fetches fails.
    Failing,
    /// It cannot work until someone acts (its credentials).
    Error,
}

impl Status {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Stale => "stale",
            Self::Failing => "failing",
            Self::Error => "error",
        }
    }
}

/// One rule that fires, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reason {
    /// The rule (`delivery_failures`, `stale`, ...).
    pub rule: String,
    /// The status it implies.
    pub status: Status,
    /// What is wrong, for a person.
    pub detail: String,
    /// The figures it fired on.
    #[schema(value_type = Object)]
    pub figures: Value,
}

/// The thresholds of the rules. Every field has the platform's default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// The window failure rates and signature failures are counted over, in seconds
    /// (60 to 86,400; default 900).
    pub window_secs: u64,
    /// Deliveries the window needs before its failure rate counts (default 3).
    pub min_deliveries: u64,
    /// Failed share of the window's deliveries, in percent, from which the connection is
    /// degraded (default 10).
    pub degraded_failure_percent: u8,
    /// ... and failing (default 50).
    pub failing_failure_percent: u8,
    /// Poll runs failed in a row from which it is degraded (default 1).
    pub degraded_poll_failures: u32,
    /// ... and failing (default 3).
    pub failing_poll_failures: u32,
    /// A polling connection without a successful run for this many intervals is stale
    /// (default 3).
    pub stale_poll_intervals: u32,
    /// A connection without any delivery for this long (seconds) is stale; null (the
    /// default): silence is not checked (webhooks come when the CRM has something to say).
    pub stale_after_secs: Option<u64>,
    /// Refused signatures in the window from which it is degraded (default 10).
    pub signature_failures: u64,
    /// Dead subscriber deliveries of its events from which it is degraded (default 1).
    pub dead_subscriber_deliveries: u64,
    /// Age of its oldest unpublished event (seconds) from which it is degraded (default 300).
    pub outbox_lag_secs: u64,
    /// A rule's alert resolved less than this long ago (seconds) is not raised again
    /// (default 300): a flapping condition makes one alert per this period at most.
    pub realert_after_secs: u64,
    /// Whether a change in the shape of its payloads degrades it (default true; drifts are
    /// recorded and listed either way).
    pub schema_drift: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            window_secs: 900,
            min_deliveries: 3,
            degraded_failure_percent: 10,
            failing_failure_percent: 50,
            degraded_poll_failures: 1,
            failing_poll_failures: 3,
            stale_poll_intervals: 3,
            stale_after_secs: None,
            signature_failures: 10,
            dead_subscriber_deliveries: 1,
            outbox_lag_secs: 300,
            realert_after_secs: 300,
            schema_drift: true,
        }
    }
}

impl Thresholds {
    /// Checks the values: the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(60..=86_400).contains(&self.window_secs) {
            return Err(format!(
                "`window_secs` must be between 60 and 86400, got {}",
                self.window_secs
            ));
        }
        for (name, value) in [
            ("degraded_failure_percent", self.degraded_failure_percent),
            ("failing_failure_percent", self.failing_failure_percent),
        ] {
            if !(1..=100).contains(&value) {
                return Err(format!("`{name}` must be between 1 and 100, got {value}"));
            }
        }
        if self.degraded_failure_percent > self.failing_failure_percent {
            return Err(
                "`degraded_failure_percent` must not exceed `failing_failure_percent`".into(),
            );
        }
        if self.degraded_poll_failures == 0 || self.failing_poll_failures == 0 {
            return Err(
                "`degraded_poll_failures` and `failing_poll_failures` must be at least 1".into(),
            );
        }
        if self.degraded_poll_failures > self.failing_poll_failures {
            return Err("`degraded_poll_failures` must not exceed `failing_poll_failures`".into());
        }
        if self.stale_poll_intervals == 0 {
            return Err("`stale_poll_intervals` must be at least 1".into());
        }
        if self.stale_after_secs == Some(0) {
            return Err("`stale_after_secs` must be at least 1 (or null: not checked)".into());
        }
        for (name, value) in [
            ("min_deliveries", self.min_deliveries),
            ("signature_failures", self.signature_failures),
            (
                "dead_subscriber_deliveries",
                self.dead_subscriber_deliveries,
            ),
            ("outbox_lag_secs", self.outbox_lag_secs),
        ] {
            if value == 0 {
                return Err(format!("`{name}` must be at least 1"));
            }
        }
        Ok(())
    }
}

/// A tenant's health rules: thresholds for all its connections, and for some of them other
/// values (only the fields given change).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthRules {
    /// For every connection (absent fields: the platform's defaults).
    #[serde(default)]
    pub defaults: Thresholds,
    /// By connection id: the fields that differ for it.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub connections: BTreeMap<String, Map<String, Value>>,
}

impl HealthRules {
    /// Reads a tenant's stored rules (absent: the defaults).
    pub fn from_stored(text: Option<&str>) -> Result<Self, String> {
        let rules: Self = match text {
            Some(text) => serde_json::from_str(text).map_err(|e| e.to_string())?,
            None => Self::default(),
        };
        rules.validate()?;
        Ok(rules)
    }

    /// Checks the defaults and each connection's thresholds once merged.
    pub fn validate(&self) -> Result<(), String> {
        self.defaults
            .validate()
            .map_err(|e| format!("defaults: {e}"))?;
        for id in self.connections.keys() {
            self.for_connection(id)
                .map_err(|e| format!("connections.{id}: {e}"))?;
        }
        Ok(())
    }

    /// The thresholds that apply to connection `id`.
    pub fn for_connection(&self, id: &str) -> Result<Thresholds, String> {
        let Some(changes) = self.connections.get(id) else {
            return Ok(self.defaults.clone());
        };
        let mut merged = match serde_json::to_value(&self.defaults) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        merged.extend(changes.clone());
        let thresholds: Thresholds =
            serde_json::from_value(Value::Object(merged)).map_err(|e| e.to_string())?;
        thresholds.validate()?;
        Ok(thresholds)
    }
}

/// What an assessment concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The worst status of the reasons; `healthy` without any.
    pub status: Status,
    /// The rules that fire.
    pub reasons: Vec<Reason>,
}

impl Assessment {
    /// The reasons as the store keeps them (a JSON array).
    pub fn reasons_json(&self) -> String {
        serde_json::to_string(&self.reasons).unwrap_or_else(|_| "[]".to_owned())
    }

    /// The rules firing, as alerts are raised for them.
    pub fn firing(&self) -> Vec<Firing> {
        self.reasons
            .iter()
            .map(|reason| Firing {
                rule: reason.rule.clone(),
                severity: reason.status.as_str().to_owned(),
                detail: reason.detail.clone(),
                figures_json: reason.figures.to_string(),
            })
            .collect()
    }
}

/// The failed share of `failed` in `total`, as a decimal string with 4 places (`"0.2500"`).
pub fn rate(failed: u64, total: u64) -> String {
    let mut rate = if total == 0 {
        Decimal::ZERO
    } else {
        (Decimal::from(failed) / Decimal::from(total)).round_dp(4)
    };
    rate.rescale(4);
    rate.to_string()
}

/// Assesses `connection` from what it did (`activity`, over `thresholds.window_secs` up to
/// `now`).
pub fn assess(
    connection: &Connection,
    activity: &Activity,
    thresholds: &Thresholds,
    now: Millis,
) -> Assessment {
    let mut reasons = Vec::new();
    let mut fire = |rule: &str, status: Status, detail: String, figures: Value| {
        reasons.push(Reason {
            rule: rule.to_owned(),
            status,
            detail,
            figures,
        });
    };
    let secs = |ms: Millis| ms.max(0) / 1000;

    if let Some((state @ (AuthState::Error | AuthState::Disconnected), reason)) = &activity.auth {
        let why = reason.as_deref().unwrap_or("no reason given");
        let detail = match state {
            AuthState::Error => {
                format!("the CRM refused the connection's grant ({why}): connect it again")
            }
            _ => format!("the connection was disconnected from its CRM ({why}): connect it again"),
        };
        fire(
            "credentials",
            Status::Error,
            detail,
            serde_json::json!({ "auth_state": state.as_str() }),
        );
    }

    if activity.deliveries >= thresholds.min_deliveries && activity.deliveries_failed > 0 {
        let percent = activity.deliveries_failed * 100 / activity.deliveries.max(1);
        let status = if percent >= u64::from(thresholds.failing_failure_percent) {
            Some(Status::Failing)
        } else if percent >= u64::from(thresholds.degraded_failure_percent) {
            Some(Status::Degraded)
        } else {
            None
        };
        if let Some(status) = status {
            let last = activity.last_failure.as_ref();
            let last_reason = last
                .and_then(|(_, reason)| reason.as_deref())
                .and_then(|r| serde_json::from_str::<Value>(r).ok());
            let cause = last_reason
                .as_ref()
                .and_then(failure_summary)
                .map(|m| format!("; the latest: {m}"))
                .unwrap_or_default();
            fire(
                "delivery_failures",
                status,
                format!(
                    "{} of {} deliveries in the last {} s failed{cause}",
                    activity.deliveries_failed, activity.deliveries, thresholds.window_secs
                ),
                serde_json::json!({
                    "deliveries": activity.deliveries,
                    "failed": activity.deliveries_failed,
                    "failure_rate": rate(activity.deliveries_failed, activity.deliveries),
                    "latest_failed_delivery_id": last.map(|(id, _)| id),
                    "latest_reason": last_reason,
                }),
            );
        }
    }

    let in_a_row = activity.poll_failures_in_a_row;
    if in_a_row >= thresholds.degraded_poll_failures {
        let status = if in_a_row >= thresholds.failing_poll_failures {
            Status::Failing
        } else {
            Status::Degraded
        };
        let reason = activity
            .last_poll
            .as_ref()
            .and_then(|(_, _, reason)| reason.clone());
        fire(
            "poll_failures",
            status,
            format!(
                "the last {in_a_row} poll run(s) failed{}",
                reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            serde_json::json!({
                "failed_in_a_row": in_a_row,
                "runs": activity.polls,
                "runs_failed": activity.polls_failed,
                "latest_reason": reason,
            }),
        );
    }

    if connection.status == ConnectionStatus::Active {
        let interval = connection
            .polling_json
            .as_deref()
            .and_then(|p| serde_json::from_str::<PollingConfig>(p).ok())
            .and_then(|p| p.interval_secs);
        let since_created = now - connection.created_at;
        if let Some(interval) = interval {
            let limit =
                i64::try_from(interval.saturating_mul(thresholds.stale_poll_intervals.into()))
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000);
            let silent = activity
                .last_poll_success_at
                .map_or(since_created, |at| now - at);
            if silent > limit {
                fire(
                    "stale",
                    Status::Stale,
                    match activity.last_poll_success_at {
                        Some(_) => format!(
                            "no successful poll run for {} s (runs every {interval} s)",
                            secs(silent)
                        ),
                        None => format!(
                            "no successful poll run since it was created {} s ago (runs every {interval} s)",
                            secs(silent)
                        ),
                    },
                    serde_json::json!({
                        "silent_secs": secs(silent),
                        "interval_secs": interval,
                        "last_success_at": activity.last_poll_success_at,
                    }),
                );
            }
        } else if let Some(after) = thresholds.stale_after_secs {
            let silent = activity
                .last_delivery_at
                .map_or(since_created, |at| now - at);
            let limit = i64::try_from(after)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000);
            if silent > limit {
                fire(
                    "stale",
                    Status::Stale,
                    format!(
                        "no delivery for {} s (expected at least one every {after} s)",
                        secs(silent)
                    ),
                    serde_json::json!({
                        "silent_secs": secs(silent),
                        "stale_after_secs": after,
                        "last_delivery_at": activity.last_delivery_at,
                    }),
                );
            }
        }
    }

    if activity.signature_failures >= thresholds.signature_failures {
        fire(
            "signature_failures",
            Status::Degraded,
            format!(
                "{} deliveries were refused for their signature in the last {} s: a wrong \
                 secret, a rotation not finished, or someone else calling",
                activity.signature_failures, thresholds.window_secs
            ),
            serde_json::json!({ "signature_failures": activity.signature_failures }),
        );
    }

    if activity.dead_subscriber_deliveries >= thresholds.dead_subscriber_deliveries {
        fire(
            "dead_subscriber_deliveries",
            Status::Degraded,
            format!(
                "subscribers gave up on {} of its events: retry them once the subscriber is back",
                activity.dead_subscriber_deliveries
            ),
            serde_json::json!({ "dead": activity.dead_subscriber_deliveries }),
        );
    }

    if let Some(oldest) = activity.outbox_oldest_pending_at {
        let age = now - oldest;
        let limit = i64::try_from(thresholds.outbox_lag_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        if age > limit {
            fire(
                "outbox_lag",
                Status::Degraded,
                format!(
                    "{} of its events wait to be published, the oldest for {} s",
                    activity.outbox_pending,
                    secs(age)
                ),
                serde_json::json!({
                    "pending": activity.outbox_pending,
                    "oldest_secs": secs(age),
                }),
            );
        }
    }

    if let Some(latest) = activity.drifts.first().filter(|_| thresholds.schema_drift) {
        let more = activity.drifts.len() - 1;
        fire(
            "schema_drift",
            Status::Degraded,
            format!(
                "its CRM's payloads changed: {} (delivery {}){}",
                drift_summary(latest),
                latest.example_delivery_id,
                if more > 0 {
                    format!(
                        ", and {more} more change(s) in the last {} s",
                        thresholds.window_secs
                    )
                } else {
                    String::new()
                }
            ),
            serde_json::json!({ "drifts": activity.drifts }),
        );
    }

    let status = reasons
        .iter()
        .map(|r| r.status)
        .max()
        .unwrap_or(Status::Healthy);
    Assessment { status, reasons }
}

/// A drift for a person: `/data/amount` of `webhook:deal.won` arrived as a number where it
/// was a decimal string.
fn drift_summary(drift: &crate::store::Drift) -> String {
    let (pointer, kind) = (&drift.pointer, &drift.kind);
    match drift.change.as_str() {
        "appeared" => format!("`{pointer}` appeared in {kind} ({})", drift.now),
        "disappeared" => format!("`{pointer}` disappeared from {kind}"),
        "decimal_as_number" => {
            format!("`{pointer}` of {kind} arrived as a number where it was a decimal string")
        }
        _ => format!(
            "`{pointer}` of {kind} arrived as {} where it was {}",
            drift.now, drift.was
        ),
    }
}

/// A line saying why a delivery failed, from its stored reason (an invocation's outcome).
fn failure_summary(reason: &Value) -> Option<String> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let status = text(reason.get("status"));
    let message = text(reason.get("message"))
        .or_else(|| text(reason.pointer("/failure/message")))
        .or_else(|| {
            text(reason.pointer("/violations/0/message")).map(|m| {
                let pointer = text(reason.pointer("/violations/0/pointer")).unwrap_or_default();
                format!("contract violation at {pointer}: {m}")
            })
        });
    match (status, message) {
        (Some(status), Some(message)) => Some(format!("{status}: {message}")),
        (status, message) => message.or(status),
    }
}
