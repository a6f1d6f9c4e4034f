//! The retention purge in PostgreSQL: the same as the embedded store's. Several nodes may
//! purge at once: each takes its batch with `FOR UPDATE SKIP LOCKED`, so they share the work.

use deadpool_postgres::GenericClient;

use super::{execute, int};
use crate::store::{Purge, Purged, Result, empty_log};

pub(super) const MIGRATION: &str = r#"
ALTER TABLE deliveries ADD COLUMN body_purged_at BIGINT;
ALTER TABLE invocations ADD COLUMN log_purged_at BIGINT;
CREATE INDEX deliveries_unpurged ON deliveries (received_at) WHERE body_purged_at IS NULL;
CREATE INDEX invocations_unpurged ON invocations (started_at) WHERE log_purged_at IS NULL;
CREATE INDEX http_exchanges_kept ON http_exchanges (started_at) WHERE response_body IS NOT NULL;
"#;

pub(super) async fn purge(db: &impl GenericClient, purge: Purge) -> Result<Purged> {
    let limit = int(purge.limit as u64);
    let mut purged = Purged::default();
    if let Some(before) = purge.bodies_before {
        purged.bodies = execute(
            db,
            "UPDATE deliveries SET body = '\\x'::bytea, body_purged_at = $1 WHERE id IN ( \
                 SELECT id FROM deliveries WHERE body_purged_at IS NULL \
                 AND received_at < $2 AND status <> 'received' LIMIT $3 \
                 FOR UPDATE SKIP LOCKED)",
            &[&purge.now, &before, &limit],
        )
        .await?;
        purged.exchanges = execute(
            db,
            "UPDATE http_exchanges SET response_body = NULL WHERE ctid IN ( \
                 SELECT ctid FROM http_exchanges WHERE response_body IS NOT NULL \
                 AND started_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&before, &limit],
        )
        .await?;
    }
    if let Some(before) = purge.logs_before {
        purged.logs = execute(
            db,
            "UPDATE invocations SET log_json = $1, log_purged_at = $2 WHERE id IN ( \
                 SELECT id FROM invocations WHERE log_purged_at IS NULL \
                 AND started_at < $3 LIMIT $4 FOR UPDATE SKIP LOCKED)",
            &[&empty_log(), &purge.now, &before, &limit],
        )
        .await?;
    }
    Ok(purged)
}
