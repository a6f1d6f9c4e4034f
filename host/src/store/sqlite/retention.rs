//! The retention purge in the embedded store: delivery bodies, the HTTP answers recorded with
//! them and invocation logs lose their content once past the tenant's retention; their rows
//! stay (ids, hashes, sizes, outcomes), marked with when they were purged.

use rusqlite::{Connection as Db, params};

use super::int;
use crate::store::{Purge, Purged, Result, empty_log};

pub(super) const MIGRATION: &str = r#"
-- Retention: a delivery's body and an invocation's log are purged past their time; the rows
-- stay, marked.
ALTER TABLE deliveries ADD COLUMN body_purged_at INTEGER;
ALTER TABLE invocations ADD COLUMN log_purged_at INTEGER;
CREATE INDEX deliveries_unpurged ON deliveries (received_at) WHERE body_purged_at IS NULL;
CREATE INDEX invocations_unpurged ON invocations (started_at) WHERE log_purged_at IS NULL;
CREATE INDEX http_exchanges_kept ON http_exchanges (started_at) WHERE response_body IS NOT NULL;
"#;

pub(super) fn purge(db: &Db, purge: Purge) -> Result<Purged> {
    let limit = int(purge.limit as u64);
    let mut purged = Purged::default();
    if let Some(before) = purge.bodies_before {
        purged.bodies = db
            .prepare_cached(
                "UPDATE deliveries SET body = X'', body_purged_at = ?1 WHERE id IN ( \
                     SELECT id FROM deliveries WHERE body_purged_at IS NULL \
                     AND received_at < ?2 AND status <> 'received' LIMIT ?3)",
            )?
            .execute(params![purge.now, before, limit])? as u64;
        purged.exchanges = db
            .prepare_cached(
                "UPDATE http_exchanges SET response_body = NULL WHERE rowid IN ( \
                     SELECT rowid FROM http_exchanges WHERE response_body IS NOT NULL \
                     AND started_at < ?1 LIMIT ?2)",
            )?
            .execute(params![before, limit])? as u64;
    }
    if let Some(before) = purge.logs_before {
        purged.logs = db
            .prepare_cached(
                "UPDATE invocations SET log_json = ?1, log_purged_at = ?2 WHERE id IN ( \
                     SELECT id FROM invocations WHERE log_purged_at IS NULL \
                     AND started_at < ?3 LIMIT ?4)",
            )?
            .execute(params![empty_log(), purge.now, before, limit])? as u64;
    }
    Ok(purged)
}
