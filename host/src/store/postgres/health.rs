//! Connection health in PostgreSQL: the same tables as the embedded store's. Several nodes
//! assess the same connections: an assessment locks the connection's `connection_health` row
//! (its upsert) for the rest of its transaction, so two nodes' records of one connection are
//! one after the other, and the unique index on open alerts holds the rest.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{
    CONNECTION, Filtered, connection_row, execute, get, int, lock, page, query_all, query_opt,
    small, text_enum, uint,
};
use crate::store::health::{
    Activity, Alert, AlertChanges, AlertFilter, HealthRecord, HealthSnapshot, alert_event,
    new_alert, resolved,
};
use crate::store::{
    AuthState, Connection, Millis, Page, PageRequest, PollRunStatus, Result, page_size,
};

pub(super) const MIGRATION: &str = r#"
CREATE TABLE connection_health (
    connection_id  TEXT COLLATE "C" PRIMARY KEY,
    status         TEXT NOT NULL
        CHECK (status IN ('healthy', 'degraded', 'failing', 'stale', 'error')),
    reasons_json   TEXT NOT NULL,
    assessed_at    BIGINT NOT NULL,
    changed_at     BIGINT NOT NULL
);

CREATE TABLE health_rules (
    tenant_id   TEXT PRIMARY KEY,
    rules_json  TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE signature_failures (
    connection_id  TEXT NOT NULL,
    minute         BIGINT NOT NULL,
    count          BIGINT NOT NULL,
    PRIMARY KEY (connection_id, minute)
);

CREATE TABLE alerts (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    org_id             TEXT,
    connection_id      TEXT NOT NULL,
    provider           TEXT NOT NULL,
    rule               TEXT NOT NULL,
    severity           TEXT NOT NULL,
    detail             TEXT NOT NULL,
    figures_json       TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    raised_at          BIGINT NOT NULL,
    resolved_at        BIGINT,
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
const SNAPSHOT: &str = "connection_id, status, reasons_json, assessed_at, changed_at";

fn alert_row(row: &Row) -> Result<Alert> {
    Ok(Alert {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        org_id: get(row, "org_id")?,
        connection_id: get(row, "connection_id")?,
        provider: get(row, "provider")?,
        rule: get(row, "rule")?,
        severity: get(row, "severity")?,
        detail: get(row, "detail")?,
        figures_json: get(row, "figures_json")?,
        status: text_enum(row, "status")?,
        raised_at: get(row, "raised_at")?,
        resolved_at: get(row, "resolved_at")?,
        raised_event_id: get(row, "raised_event_id")?,
        resolved_event_id: get(row, "resolved_event_id")?,
    })
}

fn snapshot_row(row: &Row) -> Result<HealthSnapshot> {
    Ok(HealthSnapshot {
        connection_id: get(row, "connection_id")?,
        status: get(row, "status")?,
        reasons_json: get(row, "reasons_json")?,
        assessed_at: get(row, "assessed_at")?,
        changed_at: get(row, "changed_at")?,
    })
}

pub(super) async fn activity(
    db: &impl GenericClient,
    connection_id: &str,
    since: Millis,
) -> Result<Activity> {
    let mut activity = Activity::default();
    let by_status = query_all(
        db,
        "SELECT status, COUNT(*) AS n FROM deliveries \
         WHERE connection_id = $1 AND received_at >= $2 GROUP BY status",
        &[&connection_id, &since],
        |row| Ok((get::<String>(row, "status")?, uint(row, "n")?)),
    )
    .await?;
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
    activity.last_failure = query_opt(
        db,
        "SELECT id, reason_json FROM deliveries \
         WHERE connection_id = $1 AND received_at >= $2 AND status = 'failed' \
         ORDER BY received_at DESC LIMIT 1",
        &[&connection_id, &since],
        |row| Ok((get(row, "id")?, get(row, "reason_json")?)),
    )
    .await?;
    activity.last_delivery_at = query_opt(
        db,
        "SELECT MAX(received_at) AS at FROM deliveries WHERE connection_id = $1",
        &[&connection_id],
        |row| get::<Option<Millis>>(row, "at"),
    )
    .await?
    .flatten();
    activity.last_success_at = query_opt(
        db,
        "SELECT received_at FROM deliveries \
         WHERE connection_id = $1 AND status IN ('processed', 'ignored') \
         ORDER BY received_at DESC LIMIT 1",
        &[&connection_id],
        |row| get(row, "received_at"),
    )
    .await?;

    let runs = query_all(
        db,
        "SELECT status, COUNT(*) AS n FROM poll_runs \
         WHERE connection_id = $1 AND finished_at >= $2 GROUP BY status",
        &[&connection_id, &since],
        |row| Ok((text_enum::<PollRunStatus>(row, "status")?, uint(row, "n")?)),
    )
    .await?;
    for (status, n) in runs {
        activity.polls += n;
        if status == PollRunStatus::Failed {
            activity.polls_failed += n;
        }
    }
    activity.last_poll = query_opt(
        db,
        "SELECT status, finished_at, reason FROM poll_runs \
         WHERE connection_id = $1 AND status <> 'running' AND finished_at IS NOT NULL \
         ORDER BY id DESC LIMIT 1",
        &[&connection_id],
        |row| {
            Ok((
                text_enum(row, "status")?,
                get(row, "finished_at")?,
                get(row, "reason")?,
            ))
        },
    )
    .await?;
    activity.last_poll_success_at = query_opt(
        db,
        "SELECT finished_at FROM poll_runs WHERE connection_id = $1 AND status = 'done' \
         ORDER BY id DESC LIMIT 1",
        &[&connection_id],
        |row| get(row, "finished_at"),
    )
    .await?;
    activity.poll_failures_in_a_row = query_opt(
        db,
        "SELECT failures FROM poll_state WHERE connection_id = $1",
        &[&connection_id],
        |row| small(row, "failures"),
    )
    .await?
    .unwrap_or(0);

    let minute = since - since.rem_euclid(60_000);
    activity.signature_failures = query_opt(
        db,
        "SELECT COALESCE(SUM(count), 0)::BIGINT AS n FROM signature_failures \
         WHERE connection_id = $1 AND minute >= $2",
        &[&connection_id, &minute],
        |row| uint(row, "n"),
    )
    .await?
    .unwrap_or(0);
    activity.auth = query_opt(
        db,
        "SELECT state, reason FROM connection_auth WHERE connection_id = $1",
        &[&connection_id],
        |row| Ok((text_enum::<AuthState>(row, "state")?, get(row, "reason")?)),
    )
    .await?;
    activity.dead_subscriber_deliveries = query_opt(
        db,
        "SELECT COUNT(*) AS n FROM subscriber_deliveries d JOIN outbox o ON o.seq = d.outbox_seq \
         WHERE d.status = 'dead' AND o.connection_id = $1",
        &[&connection_id],
        |row| uint(row, "n"),
    )
    .await?
    .unwrap_or(0);
    (activity.outbox_pending, activity.outbox_oldest_pending_at) = query_opt(
        db,
        "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox \
         WHERE status = 'pending' AND connection_id = $1",
        &[&connection_id],
        |row| Ok((uint(row, "n")?, get(row, "oldest")?)),
    )
    .await?
    .unwrap_or_default();
    Ok(activity)
}

pub(super) async fn add_signature_failures(
    db: &impl GenericClient,
    counts: &[(String, Millis, u64)],
    forget_before: Millis,
) -> Result<()> {
    for (connection_id, minute, count) in counts {
        execute(
            db,
            "INSERT INTO signature_failures (connection_id, minute, count) VALUES ($1, $2, $3) \
             ON CONFLICT (connection_id, minute) \
             DO UPDATE SET count = signature_failures.count + excluded.count",
            &[connection_id, minute, &int(*count)],
        )
        .await?;
    }
    execute(
        db,
        "DELETE FROM signature_failures WHERE minute < $1",
        &[&forget_before],
    )
    .await
    .map(drop)
}

pub(super) async fn health_rules(
    db: &impl GenericClient,
    tenant_id: &str,
) -> Result<Option<String>> {
    query_opt(
        db,
        "SELECT rules_json FROM health_rules WHERE tenant_id = $1",
        &[&tenant_id],
        |row| get(row, "rules_json"),
    )
    .await
}

pub(super) async fn set_health_rules(
    db: &impl GenericClient,
    tenant_id: &str,
    rules_json: &str,
    now: Millis,
) -> Result<()> {
    execute(
        db,
        "INSERT INTO health_rules (tenant_id, rules_json, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET rules_json = excluded.rules_json, \
         updated_at = excluded.updated_at",
        &[&tenant_id, &rules_json, &now],
    )
    .await
    .map(drop)
}

/// See the embedded store's `record_health`. `schema` names this deployment's locks.
pub(super) async fn record_health(
    db: &impl GenericClient,
    schema: &str,
    record: &HealthRecord,
) -> Result<AlertChanges> {
    // The upsert locks the row until the commit: other nodes' records of this connection wait.
    execute(
        db,
        "INSERT INTO connection_health (connection_id, status, reasons_json, assessed_at, \
         changed_at) VALUES ($1, $2, $3, $4, $4) \
         ON CONFLICT (connection_id) DO UPDATE SET status = excluded.status, \
         reasons_json = excluded.reasons_json, assessed_at = excluded.assessed_at, \
         changed_at = CASE WHEN connection_health.status = excluded.status \
             THEN connection_health.changed_at ELSE excluded.changed_at END",
        &[
            &record.connection_id,
            &record.status,
            &record.reasons_json,
            &record.now,
        ],
    )
    .await?;
    let open = query_all(
        db,
        &format!("SELECT {ALERT} FROM alerts WHERE connection_id = $1 AND status = 'open'"),
        &[&record.connection_id],
        alert_row,
    )
    .await?;
    let mut changes = AlertChanges::default();
    for alert in open {
        if record.raise && record.firing.iter().any(|f| f.rule == alert.rule) {
            continue;
        }
        let alert = resolved(alert, record.now);
        execute(
            db,
            "UPDATE alerts SET status = 'resolved', resolved_at = $2, resolved_event_id = $3 \
             WHERE id = $1",
            &[&alert.id, &alert.resolved_at, &alert.resolved_event_id],
        )
        .await?;
        append_event(db, schema, &alert).await?;
        changes.resolved.push(alert);
    }
    if !record.raise {
        return Ok(changes);
    }
    for firing in &record.firing {
        let recent = query_opt(
            db,
            "SELECT 1 AS one FROM alerts WHERE connection_id = $1 AND rule = $2 \
             AND (status = 'open' OR resolved_at > $3) LIMIT 1",
            &[
                &record.connection_id,
                &firing.rule,
                &(record.now - record.realert_after),
            ],
            |_| Ok(()),
        )
        .await?;
        if recent.is_some() {
            continue;
        }
        let alert = new_alert(record, firing);
        execute(
            db,
            &format!(
                "INSERT INTO alerts ({ALERT}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ),
            &[
                &alert.id,
                &alert.tenant_id,
                &alert.org_id,
                &alert.connection_id,
                &alert.provider,
                &alert.rule,
                &alert.severity,
                &alert.detail,
                &alert.figures_json,
                &alert.status.as_str(),
                &alert.raised_at,
                &alert.resolved_at,
                &alert.raised_event_id,
                &alert.resolved_event_id,
            ],
        )
        .await?;
        append_event(db, schema, &alert).await?;
        changes.raised.push(alert);
    }
    Ok(changes)
}

async fn append_event(db: &impl GenericClient, schema: &str, alert: &Alert) -> Result<()> {
    let event = alert_event(alert);
    let at = alert.resolved_at.unwrap_or(alert.raised_at);
    // The entity's lock, as every append takes it (see the store's note on order).
    let entity = serde_json::json!([alert.tenant_id, event.entity_type, event.entity_id]);
    lock(db, &format!("adapter-host {schema} entity {entity}")).await?;
    execute(
        db,
        "INSERT INTO outbox (event_id, tenant_id, org_id, event_type, entity_type, entity_id, \
         payload_json, metadata_json, delivery_id, connection_id, created_at, status, attempts, \
         next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', 0, $11)",
        &[
            &event.event_id,
            &alert.tenant_id,
            &event.org_id,
            &event.event_type,
            &event.entity_type,
            &event.entity_id,
            &event.payload_json,
            &event.metadata_json,
            &alert.id,
            &alert.connection_id,
            &at,
        ],
    )
    .await
    .map(drop)
}

pub(super) async fn list_health(
    db: &impl GenericClient,
    tenant_id: &str,
    org_id: Option<&str>,
) -> Result<Vec<HealthSnapshot>> {
    query_all(
        db,
        "SELECT h.connection_id, h.status, h.reasons_json, h.assessed_at, h.changed_at \
         FROM connection_health h JOIN connections c ON c.id = h.connection_id \
         WHERE c.tenant_id = $1 AND ($2::TEXT IS NULL OR c.org_id IS NULL OR c.org_id = $2) \
         ORDER BY h.connection_id",
        &[&tenant_id, &org_id],
        snapshot_row,
    )
    .await
}

pub(super) async fn get_health(
    db: &impl GenericClient,
    connection_id: &str,
) -> Result<Option<HealthSnapshot>> {
    query_opt(
        db,
        &format!("SELECT {SNAPSHOT} FROM connection_health WHERE connection_id = $1"),
        &[&connection_id],
        snapshot_row,
    )
    .await
}

pub(super) async fn list_alerts(
    db: &impl GenericClient,
    tenant_id: &str,
    org_id: Option<&str>,
    filter: AlertFilter,
    request: PageRequest,
) -> Result<Page<Alert>> {
    let limit = page_size(request.limit);
    let mut query = Filtered::new(format!("SELECT {ALERT} FROM alerts WHERE 1 = 1"));
    query.and("tenant_id = ?", Some(tenant_id.to_owned()));
    query.and("(org_id IS NULL OR org_id = ?)", org_id.map(str::to_owned));
    query.and("status = ?", filter.status.map(|s| s.as_str().to_owned()));
    query.and("connection_id = ?", filter.connection_id);
    query.and("rule = ?", filter.rule);
    query.and("id < ?", request.cursor);
    let items = query.run(db, "ORDER BY id DESC", limit, alert_row).await?;
    Ok(page(items, limit, |a| a.id.clone()))
}

pub(super) async fn connections_after(
    db: &impl GenericClient,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Connection>> {
    query_all(
        db,
        &format!("SELECT {CONNECTION} FROM connections WHERE id > $1 ORDER BY id LIMIT $2"),
        &[&after.unwrap_or_default(), &int(limit as u64)],
        connection_row,
    )
    .await
}
