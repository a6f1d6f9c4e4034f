//! The retention purge in the embedded store: delivery bodies, the HTTP answers recorded with
//! them and invocation logs lose their content once past the tenant's retention; their rows
//! stay (ids, hashes, sizes, outcomes), marked with when they were purged. A tenant may keep
//! each kind for its own number of days instead of the platform's.

use rusqlite::{Connection as Db, OptionalExtension as _, params};

use super::int;
use crate::store::{DAY_MILLIS, Millis, Purge, Purged, Result, TenantRetention, empty_log};

pub(super) const MIGRATION: &str = r#"
-- Retention: a delivery's body and an invocation's log are purged past their time; the rows
-- stay, marked.
ALTER TABLE deliveries ADD COLUMN body_purged_at INTEGER;
ALTER TABLE invocations ADD COLUMN log_purged_at INTEGER;
CREATE INDEX deliveries_unpurged ON deliveries (received_at) WHERE body_purged_at IS NULL;
CREATE INDEX invocations_unpurged ON invocations (started_at) WHERE log_purged_at IS NULL;
CREATE INDEX http_exchanges_kept ON http_exchanges (started_at) WHERE response_body IS NOT NULL;
"#;

/// Each tenant's own retention, where it set one (days; NULL: the platform's).
pub(super) const TENANTS_MIGRATION: &str = r#"
CREATE TABLE tenant_retention (
    tenant_id    TEXT PRIMARY KEY,
    bodies_days  INTEGER CHECK (bodies_days > 0),
    logs_days    INTEGER CHECK (logs_days > 0),
    updated_at   INTEGER NOT NULL,
    updated_by   TEXT NOT NULL
);
"#;

/// How long a row of the tenant `tenant` (an SQL expression) keeps a kind: the tenant's own
/// days (`column`), else the platform's `?default` (NULL: for good, so nothing compares).
fn keep(column: &str, tenant: &str, default: &str) -> String {
    format!(
        "coalesce((SELECT {column} * {DAY_MILLIS} FROM tenant_retention r \
         WHERE r.tenant_id = {tenant}), {default})"
    )
}

/// The shortest time any tenant keeps each kind (the platform's or a tenant's own): nothing
/// younger can be purged, which bounds every scan by the indexes' time ranges.
fn shortest(db: &Db, purge: &Purge) -> Result<(Option<Millis>, Option<Millis>)> {
    let (bodies, logs): (Option<i64>, Option<i64>) = db
        .prepare_cached("SELECT min(bodies_days), min(logs_days) FROM tenant_retention")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let shortest = |platform: Option<Millis>, tenant_days: Option<i64>| {
        let tenant = tenant_days.map(|days| days * DAY_MILLIS);
        platform.into_iter().chain(tenant).min()
    };
    Ok((
        shortest(purge.bodies_keep, bodies),
        shortest(purge.logs_keep, logs),
    ))
}

pub(super) fn purge(db: &Db, purge: Purge) -> Result<Purged> {
    let limit = int(purge.limit as u64);
    let mut purged = Purged::default();
    let (bodies, logs) = shortest(db, &purge)?;
    if let Some(shortest) = bodies {
        let sql = format!(
            "UPDATE deliveries SET body_bytes = coalesce(body_bytes, length(body)), body = X'', \
             body_purged_at = ?1 WHERE id IN ( \
                 SELECT id FROM deliveries d WHERE body_purged_at IS NULL \
                 AND received_at < ?1 - ?2 AND status <> 'received' \
                 AND received_at < ?1 - {} LIMIT ?4)",
            keep("bodies_days", "d.tenant_id", "?3")
        );
        purged.bodies = db.prepare_cached(&sql)?.execute(params![
            purge.now,
            shortest,
            purge.bodies_keep,
            limit
        ])? as u64;
        let tenant = "coalesce((SELECT tenant_id FROM deliveries WHERE id = e.delivery_id), \
                      (SELECT tenant_id FROM poll_runs WHERE id = e.poll_run_id))";
        let sql = format!(
            "UPDATE http_exchanges SET response_body = NULL WHERE rowid IN ( \
                 SELECT rowid FROM http_exchanges e WHERE response_body IS NOT NULL \
                 AND started_at < ?1 - ?2 AND started_at < ?1 - {} LIMIT ?4)",
            keep("bodies_days", tenant, "?3")
        );
        purged.exchanges = db.prepare_cached(&sql)?.execute(params![
            purge.now,
            shortest,
            purge.bodies_keep,
            limit
        ])? as u64;
    }
    if let Some(shortest) = logs {
        let tenant = "(SELECT tenant_id FROM deliveries WHERE id = i.delivery_id)";
        let sql = format!(
            "UPDATE invocations SET log_json = ?5, replay_json = NULL, log_purged_at = ?1 \
             WHERE id IN ( \
                 SELECT id FROM invocations i WHERE log_purged_at IS NULL \
                 AND started_at < ?1 - ?2 AND started_at < ?1 - {} LIMIT ?4)",
            keep("logs_days", tenant, "?3")
        );
        purged.logs = db.prepare_cached(&sql)?.execute(params![
            purge.now,
            shortest,
            purge.logs_keep,
            limit,
            empty_log()
        ])? as u64;
    }
    Ok(purged)
}

pub(super) fn get_retention(db: &Db, tenant_id: &str) -> Result<Option<TenantRetention>> {
    Ok(db
        .prepare_cached(
            "SELECT tenant_id, bodies_days, logs_days, updated_at, updated_by \
             FROM tenant_retention WHERE tenant_id = ?1",
        )?
        .query_row([tenant_id], |row| {
            Ok(TenantRetention {
                tenant_id: row.get(0)?,
                bodies_days: row.get(1)?,
                logs_days: row.get(2)?,
                updated_at: row.get(3)?,
                updated_by: row.get(4)?,
            })
        })
        .optional()?)
}

pub(super) fn put_retention(db: &Db, retention: &TenantRetention) -> Result<()> {
    if retention.bodies_days.is_none() && retention.logs_days.is_none() {
        db.prepare_cached("DELETE FROM tenant_retention WHERE tenant_id = ?1")?
            .execute([&retention.tenant_id])?;
        return Ok(());
    }
    db.prepare_cached(
        "INSERT INTO tenant_retention (tenant_id, bodies_days, logs_days, updated_at, updated_by) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant_id) DO UPDATE SET \
         bodies_days = excluded.bodies_days, logs_days = excluded.logs_days, \
         updated_at = excluded.updated_at, updated_by = excluded.updated_by",
    )?
    .execute(params![
        retention.tenant_id,
        retention.bodies_days,
        retention.logs_days,
        retention.updated_at,
        retention.updated_by
    ])?;
    Ok(())
}
