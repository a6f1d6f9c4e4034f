//! The retention purge in PostgreSQL: the same as the embedded store's. Several nodes may
//! purge at once: each takes its batch with `FOR UPDATE SKIP LOCKED`, so they share the work.

use deadpool_postgres::GenericClient;

use super::{execute, int};
use crate::store::{DAY_MILLIS, Millis, Purge, Purged, Result, TenantRetention, empty_log};

pub(super) const MIGRATION: &str = r#"
ALTER TABLE deliveries ADD COLUMN body_purged_at BIGINT;
ALTER TABLE invocations ADD COLUMN log_purged_at BIGINT;
CREATE INDEX deliveries_unpurged ON deliveries (received_at) WHERE body_purged_at IS NULL;
CREATE INDEX invocations_unpurged ON invocations (started_at) WHERE log_purged_at IS NULL;
CREATE INDEX http_exchanges_kept ON http_exchanges (started_at) WHERE response_body IS NOT NULL;
"#;

/// Each tenant's own retention, where it set one (days; NULL: the platform's).
pub(super) const TENANTS_MIGRATION: &str = r#"
CREATE TABLE tenant_retention (
    tenant_id    TEXT COLLATE "C" PRIMARY KEY,
    bodies_days  BIGINT CHECK (bodies_days > 0),
    logs_days    BIGINT CHECK (logs_days > 0),
    updated_at   BIGINT NOT NULL,
    updated_by   TEXT NOT NULL
);
"#;

/// How long a row of the tenant `tenant` (an SQL expression) keeps a kind: the tenant's own
/// days (`column`), else the platform's `$3` (NULL: for good, so nothing compares).
fn keep(column: &str, tenant: &str) -> String {
    format!(
        "coalesce((SELECT {column} * {DAY_MILLIS} FROM tenant_retention r \
         WHERE r.tenant_id = {tenant}), $3::bigint)"
    )
}

/// The shortest time any tenant keeps each kind (see the embedded store's).
async fn shortest(
    db: &impl GenericClient,
    purge: &Purge,
) -> Result<(Option<Millis>, Option<Millis>)> {
    let row = db
        .query_one(
            "SELECT min(bodies_days), min(logs_days) FROM tenant_retention",
            &[],
        )
        .await?;
    let shortest = |platform: Option<Millis>, tenant_days: Option<i64>| {
        let tenant = tenant_days.map(|days| days * DAY_MILLIS);
        platform.into_iter().chain(tenant).min()
    };
    Ok((
        shortest(purge.bodies_keep, row.get(0)),
        shortest(purge.logs_keep, row.get(1)),
    ))
}

pub(super) async fn purge(db: &impl GenericClient, purge: Purge) -> Result<Purged> {
    let limit = int(purge.limit as u64);
    let mut purged = Purged::default();
    let (bodies, logs) = shortest(db, &purge).await?;
    if let Some(shortest) = bodies {
        let sql = format!(
            "UPDATE deliveries SET body_bytes = coalesce(body_bytes, octet_length(body)::bigint), \
             body = '\\x'::bytea, body_purged_at = $1 WHERE id IN ( \
                 SELECT id FROM deliveries d WHERE body_purged_at IS NULL \
                 AND received_at < $1::bigint - $2::bigint AND status <> 'received' \
                 AND received_at < $1::bigint - {} LIMIT $4 FOR UPDATE SKIP LOCKED)",
            keep("bodies_days", "d.tenant_id")
        );
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&purge.now, &shortest, &purge.bodies_keep, &limit];
        purged.bodies = execute(db, &sql, &params).await?;
        let tenant = "coalesce((SELECT tenant_id FROM deliveries WHERE id = e.delivery_id), \
                      (SELECT tenant_id FROM poll_runs WHERE id = e.poll_run_id))";
        let sql = format!(
            "UPDATE http_exchanges SET response_body = NULL WHERE ctid IN ( \
                 SELECT ctid FROM http_exchanges e WHERE response_body IS NOT NULL \
                 AND started_at < $1::bigint - $2::bigint AND started_at < $1::bigint - {} LIMIT $4 \
                 FOR UPDATE SKIP LOCKED)",
            keep("bodies_days", tenant)
        );
        purged.exchanges = execute(db, &sql, &params).await?;
    }
    if let Some(shortest) = logs {
        let tenant = "(SELECT tenant_id FROM deliveries WHERE id = i.delivery_id)";
        let sql = format!(
            "UPDATE invocations SET log_json = $5, replay_json = NULL, log_purged_at = $1 \
             WHERE id IN ( \
                 SELECT id FROM invocations i WHERE log_purged_at IS NULL \
                 AND started_at < $1::bigint - $2::bigint AND started_at < $1::bigint - {} LIMIT $4 \
                 FOR UPDATE SKIP LOCKED)",
            keep("logs_days", tenant)
        );
        purged.logs = execute(
            db,
            &sql,
            &[
                &purge.now,
                &shortest,
                &purge.logs_keep,
                &limit,
                &empty_log(),
            ],
        )
        .await?;
    }
    Ok(purged)
}

pub(super) async fn get_retention(
    db: &impl GenericClient,
    tenant_id: &str,
) -> Result<Option<TenantRetention>> {
    let row = db
        .query_opt(
            "SELECT tenant_id, bodies_days, logs_days, updated_at, updated_by \
             FROM tenant_retention WHERE tenant_id = $1",
            &[&tenant_id],
        )
        .await?;
    let days = |value: Option<i64>| value.map(|days| u32::try_from(days).unwrap_or(u32::MAX));
    Ok(row.map(|row| TenantRetention {
        tenant_id: row.get(0),
        bodies_days: days(row.get(1)),
        logs_days: days(row.get(2)),
        updated_at: row.get(3),
        updated_by: row.get(4),
    }))
}

pub(super) async fn put_retention(
    db: &impl GenericClient,
    retention: &TenantRetention,
) -> Result<()> {
    if retention.bodies_days.is_none() && retention.logs_days.is_none() {
        execute(
            db,
            "DELETE FROM tenant_retention WHERE tenant_id = $1",
            &[&retention.tenant_id],
        )
        .await?;
        return Ok(());
    }
    let days = |value: Option<u32>| value.map(i64::from);
    execute(
        db,
        "INSERT INTO tenant_retention (tenant_id, bodies_days, logs_days, updated_at, updated_by) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO UPDATE SET \
         bodies_days = excluded.bodies_days, logs_days = excluded.logs_days, \
         updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        &[
            &retention.tenant_id,
            &days(retention.bodies_days),
            &days(retention.logs_days),
            &retention.updated_at,
            &retention.updated_by,
        ],
    )
    .await?;
    Ok(())
}
