//! Connection health in the embedded store: the activity an assessment reads, the latest
//! assessments (`connection_health`), the tenants' thresholds (`health_rules`), signature
//! failures by minute (`signature_failures`) and alerts with their outbox events (`alerts`).

use rusqlite::{Connection as Db, Row, params};

use super::{Filtered, page, query_all, query_one, text, text_enum, uint};
use crate::store::health::{
    Activity, Alert, AlertChanges, AlertFilter, HealthRecord, HealthSnapshot, alert_event,
    new_alert, resolved,
};
use crate::store::{AuthState, Millis, Page, PageRequest, PollRunStatus, Result, page_size};

pub(super) const MIGRATION: &str = r#"
-- A connection's latest health assessment.
CREATE TABLE connection_health (
    connection_id  TEXT PRIMARY KEY,
    status         TEXT NOT NULL
        CHECK (status IN ('healthy', 'degraded', 'failing', 'stale', 'error')),
    reasons_json   TEXT NOT NULL,
    assessed_at    INTEGER NOT NULL,
    changed_at     INTEGER NOT NULL
);

-- A tenant's health thresholds (absent: the platform's defaults).
CREATE TABLE health_rules (
    tenant_id   TEXT PRIMARY KEY,
    rules_json  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Signature checks refused, per connection and minute (nothing else is stored for them).
CREATE TABLE signature_failures (
    connection_id  TEXT NOT NULL,
    minute         INTEGER NOT NULL,
    count          INTEGER NOT NULL,
    PRIMARY KEY (connection_id, minute)
);

-- One open alert per connection and rule; resolved ones stay as history.
CREATE TABLE alerts (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    org_id             TEXT,
    connection_id      TEXT NOT NULL,
    provider           TEXT NOT NULL,
    rule               TEXT NOT NULL,
    severity           TEXT NOT NULL,
    detail             TEXT NOT NULL,
    figures_json       TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    raised_at          INTEGER NOT NULL,
    resolved_at        INTEGER,
    raised_event_id    TEXT NOT NULL,
    resolved_event_id  TEXT
);
CREATE UNIQUE INDEX alerts_open ON alerts (connection_id, rule) WHERE status = 'open';
CREATE INDEX alerts_by_connection_rule ON alerts (connection_id, rule, resolved_at);
CREATE INDEX alerts_by_tenant ON alerts (tenant_id, id);

CREATE INDEX deliveries_by_connection_time ON deliveries (connection_id, received_at);
CREATE INDEX subscriber_deliveries_dead ON subscriber_deliveries (outbox_seq)
    WHERE status = 'dead';
"#;

const ALERT: &str = "id, tenant_id, org_id, connection_id, provider, rule, severity, detail, \
    figures_json, status, raised_at, resolved_at, raised_event_id, resolved_event_id";

fn alert_row(row: &Row<'_>) -> rusqlite::Result<Alert> {
    Ok(Alert {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        org_id: row.get("org_id")?,
        connection_id: row.get("connection_id")?,
        provider: row.get("provider")?,
        rule: row.get("rule")?,
        severity: row.get("severity")?,
        detail: row.get("detail")?,
        figures_json: row.get("figures_json")?,
        status: text_enum(row, "status")?,
        raised_at: row.get("raised_at")?,
        resolved_at: row.get("resolved_at")?,
        raised_event_id: row.get("raised_event_id")?,
        resolved_event_id: row.get("resolved_event_id")?,
    })
}

fn snapshot_row(row: &Row<'_>) -> rusqlite::Result<HealthSnapshot> {
    Ok(HealthSnapshot {
        connection_id: row.get("connection_id")?,
        status: row.get("status")?,
        reasons_json: row.get("reasons_json")?,
        assessed_at: row.get("assessed_at")?,
        changed_at: row.get("changed_at")?,
    })
}

/// What `connection_id` did since `since`.
pub(super) fn activity(db: &Db, connection_id: &str, since: Millis) -> Result<Activity> {
    let mut activity = Activity::default();
    let by_status = query_all(
        db,
        "SELECT status, COUNT(*) AS n FROM deliveries \
         WHERE connection_id = ?1 AND received_at >= ?2 GROUP BY status",
        params![connection_id, since],
        |row| Ok((row.get::<_, String>("status")?, uint(row, "n")?)),
    )?;
    for (status, n) in by_status {
        match status.as_str() {
            "processed" | "ignored" => activity.deliveries += n,
            "failed" => {
                activity.deliveries += n;
                activity.deliveries_failed += n;
            }
            "rejected" => {
                activity.deliveries += n;
                activity.deliveries_rejected += n;
            }
            _ => {}
        }
    }
    activity.last_failure = query_one(
        db,
        "SELECT id, reason_json FROM deliveries \
         WHERE connection_id = ?1 AND received_at >= ?2 AND status = 'failed' \
         ORDER BY received_at DESC LIMIT 1",
        params![connection_id, since],
        |row| Ok((row.get("id")?, row.get("reason_json")?)),
    )?;
    activity.last_delivery_at = query_one(
        db,
        "SELECT MAX(received_at) FROM deliveries WHERE connection_id = ?1",
        [connection_id],
        |row| row.get(0),
    )?
    .flatten();
    activity.last_success_at = query_one(
        db,
        "SELECT received_at FROM deliveries \
         WHERE connection_id = ?1 AND status IN ('processed', 'ignored') \
         ORDER BY received_at DESC LIMIT 1",
        [connection_id],
        |row| row.get(0),
    )?;

    let runs = query_all(
        db,
        "SELECT status, COUNT(*) AS n FROM poll_runs \
         WHERE connection_id = ?1 AND finished_at >= ?2 GROUP BY status",
        params![connection_id, since],
        |row| Ok((text_enum::<PollRunStatus>(row, "status")?, uint(row, "n")?)),
    )?;
    for (status, n) in runs {
        activity.polls += n;
        if status == PollRunStatus::Failed {
            activity.polls_failed += n;
        }
    }
    activity.last_poll = query_one(
        db,
        "SELECT status, finished_at, reason FROM poll_runs \
         WHERE connection_id = ?1 AND status <> 'running' AND finished_at IS NOT NULL \
         ORDER BY id DESC LIMIT 1",
        [connection_id],
        |row| {
            Ok((
                text_enum(row, "status")?,
                row.get("finished_at")?,
                row.get("reason")?,
            ))
        },
    )?;
    activity.last_poll_success_at = query_one(
        db,
        "SELECT finished_at FROM poll_runs WHERE connection_id = ?1 AND status = 'done' \
         ORDER BY id DESC LIMIT 1",
        [connection_id],
        |row| row.get(0),
    )?;
    activity.poll_failures_in_a_row = query_one(
        db,
        "SELECT failures FROM poll_state WHERE connection_id = ?1",
        [connection_id],
        |row| row.get(0),
    )?
    .unwrap_or(0);

    activity.signature_failures = query_one(
        db,
        "SELECT COALESCE(SUM(count), 0) AS n FROM signature_failures \
         WHERE connection_id = ?1 AND minute >= ?2",
        params![connection_id, since - since.rem_euclid(60_000)],
        |row| uint(row, "n"),
    )?
    .unwrap_or(0);
    activity.auth = query_one(
        db,
        "SELECT state, reason FROM connection_auth WHERE connection_id = ?1",
        [connection_id],
        |row| Ok((text_enum::<AuthState>(row, "state")?, row.get("reason")?)),
    )?;
    activity.dead_subscriber_deliveries = query_one(
        db,
        "SELECT COUNT(*) AS n FROM subscriber_deliveries d JOIN outbox o ON o.seq = d.outbox_seq \
         WHERE d.status = 'dead' AND o.connection_id = ?1",
        [connection_id],
        |row| uint(row, "n"),
    )?
    .unwrap_or(0);
    (activity.outbox_pending, activity.outbox_oldest_pending_at) = query_one(
        db,
        "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox \
         WHERE status = 'pending' AND connection_id = ?1",
        [connection_id],
        |row| Ok((uint(row, "n")?, row.get("oldest")?)),
    )?
    .unwrap_or_default();
    Ok(activity)
}

/// Adds signature failures counted by this node (connection, minute, count) and forgets the
/// minutes before `forget_before`.
pub(super) fn add_signature_failures(
    db: &Db,
    counts: &[(String, Millis, u64)],
    forget_before: Millis,
) -> Result<()> {
    let mut add = db.prepare_cached(
        "INSERT INTO signature_failures (connection_id, minute, count) VALUES (?1, ?2, ?3) \
         ON CONFLICT (connection_id, minute) DO UPDATE SET count = count + excluded.count",
    )?;
    for (connection_id, minute, count) in counts {
        add.execute(params![connection_id, minute, super::int(*count)])?;
    }
    db.prepare_cached("DELETE FROM signature_failures WHERE minute < ?1")?
        .execute([forget_before])?;
    Ok(())
}

pub(super) fn health_rules(db: &Db, tenant_id: &str) -> Result<Option<String>> {
    query_one(
        db,
        "SELECT rules_json FROM health_rules WHERE tenant_id = ?1",
        [tenant_id],
        |row| row.get(0),
    )
}

pub(super) fn set_health_rules(
    db: &Db,
    tenant_id: &str,
    rules_json: &str,
    now: Millis,
) -> Result<()> {
    db.prepare_cached(
        "INSERT INTO health_rules (tenant_id, rules_json, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (tenant_id) DO UPDATE SET rules_json = excluded.rules_json, \
         updated_at = excluded.updated_at",
    )?
    .execute(params![tenant_id, rules_json, now])?;
    Ok(())
}

/// Records an assessment; raises the alerts of rules firing without one open (unless one was
/// resolved within `realert_after`), resolves the open ones whose rule no longer fires, and
/// appends the events of both to the outbox.
pub(super) fn record_health(db: &Db, record: &HealthRecord) -> Result<AlertChanges> {
    db.prepare_cached(
        "INSERT INTO connection_health (connection_id, status, reasons_json, assessed_at, \
         changed_at) VALUES (?1, ?2, ?3, ?4, ?4) \
         ON CONFLICT (connection_id) DO UPDATE SET status = excluded.status, \
         reasons_json = excluded.reasons_json, assessed_at = excluded.assessed_at, \
         changed_at = CASE WHEN connection_health.status = excluded.status \
             THEN connection_health.changed_at ELSE excluded.changed_at END",
    )?
    .execute(params![
        record.connection_id,
        record.status,
        record.reasons_json,
        record.now
    ])?;
    let open = query_all(
        db,
        &format!("SELECT {ALERT} FROM alerts WHERE connection_id = ?1 AND status = 'open'"),
        [&record.connection_id],
        alert_row,
    )?;
    let mut changes = AlertChanges::default();
    for alert in open {
        let still = record.raise && record.firing.iter().any(|f| f.rule == alert.rule);
        if still {
            continue;
        }
        let alert = resolved(alert, record.now);
        db.prepare_cached(
            "UPDATE alerts SET status = 'resolved', resolved_at = ?2, resolved_event_id = ?3 \
             WHERE id = ?1",
        )?
        .execute(params![
            alert.id,
            alert.resolved_at,
            alert.resolved_event_id
        ])?;
        append_event(db, &alert)?;
        changes.resolved.push(alert);
    }
    if !record.raise {
        return Ok(changes);
    }
    for firing in &record.firing {
        let recent: Option<i64> = query_one(
            db,
            "SELECT 1 FROM alerts WHERE connection_id = ?1 AND rule = ?2 \
             AND (status = 'open' OR resolved_at > ?3) LIMIT 1",
            params![
                record.connection_id,
                firing.rule,
                record.now - record.realert_after
            ],
            |row| row.get(0),
        )?;
        if recent.is_some() {
            continue;
        }
        let alert = new_alert(record, firing);
        db.prepare_cached(&format!(
            "INSERT INTO alerts ({ALERT}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ))?
        .execute(params![
            alert.id,
            alert.tenant_id,
            alert.org_id,
            alert.connection_id,
            alert.provider,
            alert.rule,
            alert.severity,
            alert.detail,
            alert.figures_json,
            alert.status.as_str(),
            alert.raised_at,
            alert.resolved_at,
            alert.raised_event_id,
            alert.resolved_event_id,
        ])?;
        append_event(db, &alert)?;
        changes.raised.push(alert);
    }
    Ok(changes)
}

fn append_event(db: &Db, alert: &Alert) -> Result<()> {
    let event = alert_event(alert);
    let at = alert.resolved_at.unwrap_or(alert.raised_at);
    db.prepare_cached(
        "INSERT INTO outbox (event_id, tenant_id, org_id, event_type, entity_type, entity_id, \
         payload_json, metadata_json, delivery_id, connection_id, created_at, status, attempts, \
         next_attempt_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending', 0, ?11)",
    )?
    .execute(params![
        event.event_id,
        alert.tenant_id,
        event.org_id,
        event.event_type,
        event.entity_type,
        event.entity_id,
        event.payload_json,
        event.metadata_json,
        alert.id,
        alert.connection_id,
        at,
    ])?;
    Ok(())
}

/// The latest assessments of the tenant's connections in the org scope.
pub(super) fn list_health(
    db: &Db,
    tenant_id: &str,
    org_id: Option<&str>,
) -> Result<Vec<HealthSnapshot>> {
    query_all(
        db,
        "SELECT h.connection_id, h.status, h.reasons_json, h.assessed_at, h.changed_at \
         FROM connection_health h JOIN connections c ON c.id = h.connection_id \
         WHERE c.tenant_id = ?1 AND (?2 IS NULL OR c.org_id IS NULL OR c.org_id = ?2) \
         ORDER BY h.connection_id",
        params![tenant_id, org_id],
        snapshot_row,
    )
}

pub(super) fn get_health(db: &Db, connection_id: &str) -> Result<Option<HealthSnapshot>> {
    query_one(
        db,
        "SELECT connection_id, status, reasons_json, assessed_at, changed_at \
         FROM connection_health WHERE connection_id = ?1",
        [connection_id],
        snapshot_row,
    )
}

pub(super) fn list_alerts(
    db: &Db,
    tenant_id: &str,
    org_id: Option<&str>,
    filter: &AlertFilter,
    request: &PageRequest,
) -> Result<Page<Alert>> {
    use rusqlite::types::Value;
    let limit = page_size(request.limit);
    let mut query = Filtered::new(format!("SELECT {ALERT} FROM alerts WHERE 1 = 1"));
    query.and("tenant_id = ?", Some(Value::Text(tenant_id.to_owned())));
    query.and(
        "(org_id IS NULL OR org_id = ?)",
        org_id.map(|o| Value::Text(o.to_owned())),
    );
    query.and(
        "status = ?",
        filter.status.map(|s| Value::Text(s.as_str().to_owned())),
    );
    query.and("connection_id = ?", text(filter.connection_id.as_ref()));
    query.and("rule = ?", text(filter.rule.as_ref()));
    query.and("id < ?", text(request.cursor.as_ref()));
    let items = query.run(db, "ORDER BY id DESC", limit, alert_row)?;
    Ok(page(items, limit, |a| a.id.clone()))
}
