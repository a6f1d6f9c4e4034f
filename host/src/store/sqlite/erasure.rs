//! Erasing a tenant in the embedded store: its data key is destroyed (see `vault.rs`), then, in
//! one write, what was waiting for it ends and what it stored in the clear (before encryption)
//! is overwritten.

use std::path::Path;

use rusqlite::{Connection as Db, params};

use crate::store::sealing::ERASED;
use crate::store::{Erasure, Millis, Result, Subject, SubjectErasure};
use crate::vault::{MAGIC, TEXT_PREFIX, Vault};

pub(super) fn end_waiting(
    db: &Db,
    tenant_id: &str,
    reason_json: &str,
    now: Millis,
) -> Result<Erasure> {
    let deliveries_failed = db
        .prepare_cached(
            "UPDATE deliveries SET status = 'failed', reason_json = ?2, processed_at = ?3, \
             lease_until = NULL WHERE tenant_id = ?1 AND status = 'received'",
        )?
        .execute(params![tenant_id, reason_json, now])? as u64;
    let subscriber_deliveries_dead = db
        .prepare_cached(
            "UPDATE subscriber_deliveries SET status = 'dead', last_error = ?2, updated_at = ?3 \
             WHERE status = 'pending' AND outbox_seq IN ( \
                 SELECT seq FROM outbox WHERE tenant_id = ?1)",
        )?
        .execute(params![tenant_id, ERASED, now])? as u64;
    let events_dead = db
        .prepare_cached(
            "UPDATE outbox SET status = 'dead', last_error = ?2 \
             WHERE tenant_id = ?1 AND status = 'pending'",
        )?
        .execute(params![tenant_id, ERASED])? as u64;
    Ok(Erasure {
        key_destroyed: false,
        deliveries_failed,
        events_dead,
        subscriber_deliveries_dead,
        plaintext_overwritten: overwrite_plaintext(db, tenant_id)?,
        identities_forgotten: super::identities::erase(db, tenant_id)?,
    })
}

/// Overwrites with tombstones (see [`Vault::tombstone`]) the tenant's payloads stored in the
/// clear: what was written before encryption at rest, which its key never sealed. Purged values
/// stay as they are (empty). Returns how many values were overwritten.
fn overwrite_plaintext(db: &Db, tenant_id: &str) -> Result<u64> {
    // Zeroing what is freed, overflow pages included, costs writes: for this write only.
    db.pragma_update(None, "secure_delete", "ON")?;
    let overwritten = overwrite_plaintext_zeroing(db, tenant_id);
    db.pragma_update(None, "secure_delete", "FAST")?;
    overwritten
}

fn overwrite_plaintext_zeroing(db: &Db, tenant_id: &str) -> Result<u64> {
    let tomb = Vault::tombstone(tenant_id)?;
    let tomb_text = Vault::tombstone_text();
    let (magic, magic_len) = (MAGIC.as_slice(), MAGIC.len() as i64);
    let (prefix, prefix_len) = (TEXT_PREFIX, TEXT_PREFIX.len() as i64);
    let mut overwritten = 0;
    overwritten += db
        .prepare_cached(
            "UPDATE deliveries SET body_bytes = coalesce(body_bytes, length(body)), body = ?2 \
             WHERE tenant_id = ?1 AND body_purged_at IS NULL AND length(body) > 0 \
             AND substr(body, 1, ?4) IS NOT ?3",
        )?
        .execute(params![tenant_id, tomb, magic, magic_len])?;
    overwritten += db
        .prepare_cached(
            "UPDATE http_exchanges SET response_body = ?2 \
             WHERE response_body IS NOT NULL AND length(response_body) > 0 \
             AND substr(response_body, 1, ?4) IS NOT ?3 \
             AND (delivery_id IN (SELECT id FROM deliveries WHERE tenant_id = ?1) \
                  OR poll_run_id IN (SELECT id FROM poll_runs WHERE tenant_id = ?1))",
        )?
        .execute(params![tenant_id, tomb, magic, magic_len])?;
    overwritten += db
        .prepare_cached(
            "UPDATE invocations SET log_json = ?2 \
             WHERE log_purged_at IS NULL AND substr(log_json, 1, ?4) IS NOT ?3 \
             AND log_json <> ?2 AND delivery_id IN (SELECT id FROM deliveries WHERE tenant_id = ?1)",
        )?
        .execute(params![tenant_id, tomb_text, prefix, prefix_len])?;
    overwritten += db
        .prepare_cached(
            "UPDATE outbox SET payload_json = ?2 \
             WHERE tenant_id = ?1 AND substr(payload_json, 1, ?4) IS NOT ?3 \
             AND payload_json <> ?2",
        )?
        .execute(params![tenant_id, tomb_text, prefix, prefix_len])?;
    Ok(overwritten as u64)
}

/// Moves what the erasure wrote from the write-ahead log into the database file, over the pages
/// that held the values in the clear, and empties the log, whose older frames held them too. A
/// reader still on an older snapshot keeps the log from emptying: that is logged, and the next
/// checkpoints finish the work.
pub(super) fn checkpoint(path: &Path) -> Result<()> {
    let db = Db::open(path)?;
    db.busy_timeout(super::BUSY_TIMEOUT)?;
    let (busy, frames, copied): (i64, i64, i64) =
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    if busy != 0 {
        tracing::warn!(
            frames,
            copied,
            "an erasure's checkpoint could not finish: overwritten values stay in the \
             write-ahead log until the next checkpoint"
        );
    }
    Ok(())
}

/// Erases one subject (see [`crate::store::Store::erase_subject`]), in one write.
pub(super) fn erase_subject(db: &Db, subject: &Subject, now: Millis) -> Result<SubjectErasure> {
    let tenant = subject.tenant_id.as_str();
    let mut find = db.prepare_cached(
        "SELECT id, org_key, entity_type, entity_id FROM identities \
         WHERE tenant_id = ?1 AND source = ?2 AND external_id = ?3 \
         AND (?4 IS NULL OR coalesce(org_id, (SELECT c.org_id FROM connections c \
              WHERE c.id = identities.first_connection_id), \
              CASE WHEN ?5 THEN ?4 ELSE '' END) = ?4)",
    )?;
    let found = find
        .query_map(
            params![
                tenant,
                subject.source,
                subject.external_id,
                subject.org_id,
                subject.platform_level
            ],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut erased = SubjectErasure::default();
    let mut deliveries = std::collections::BTreeSet::new();
    let erased_text = Vault::tombstone_text();
    for (id, org_key, entity_type, entity_id) in &found {
        let mut events = db.prepare_cached(
            "SELECT seq, delivery_id FROM outbox WHERE tenant_id = ?1 \
             AND coalesce(org_id, '') = ?2 AND entity_type = ?3 AND entity_id = ?4",
        )?;
        let rows = events
            .query_map(params![tenant, org_key, entity_type, entity_id], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (seq, delivery_id) in rows {
            db.prepare_cached(
                "UPDATE subscriber_deliveries SET status = 'dead', last_error = ?2, \
                 updated_at = ?3 WHERE status = 'pending' AND outbox_seq = ?1",
            )?
            .execute(params![seq, ERASED, now])?;
            db.prepare_cached(
                "UPDATE outbox SET status = 'dead', last_error = ?2 \
                 WHERE seq = ?1 AND status = 'pending'",
            )?
            .execute(params![seq, ERASED])?;
            erased.events += db
                .prepare_cached(
                    "UPDATE outbox SET payload_json = ?2 WHERE seq = ?1 AND payload_json <> ?2",
                )?
                .execute(params![seq, erased_text])? as u64;
            deliveries.insert(delivery_id);
        }
        db.prepare_cached("DELETE FROM identities WHERE id = ?1")?
            .execute([id])?;
        erased.identities += 1;
    }
    let tomb = Vault::tombstone(tenant)?;
    for delivery_id in &deliveries {
        let body = db
            .prepare_cached(
                "UPDATE deliveries SET body_bytes = coalesce(body_bytes, length(body)), \
                 body = ?2 WHERE id = ?1 AND body_purged_at IS NULL AND body IS NOT ?2",
            )?
            .execute(params![delivery_id, tomb])?;
        let logs = db
            .prepare_cached(
                "UPDATE invocations SET log_json = ?2, replay_json = NULL WHERE delivery_id = ?1 \
                 AND log_purged_at IS NULL AND log_json <> ?2",
            )?
            .execute(params![delivery_id, erased_text])?;
        let answers = db
            .prepare_cached(
                "UPDATE http_exchanges SET response_body = ?2 WHERE delivery_id = ?1 \
                 AND response_body IS NOT NULL AND response_body IS NOT ?2",
            )?
            .execute(params![delivery_id, tomb])?;
        if body + logs + answers > 0 {
            erased.deliveries += 1;
        }
    }
    Ok(erased)
}
