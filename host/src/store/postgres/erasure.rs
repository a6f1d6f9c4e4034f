//! Erasing a tenant in PostgreSQL: the same as the embedded store's. (Row versions an update
//! leaves behind stay in the table's files until vacuum reclaims them.)

use deadpool_postgres::GenericClient;

use super::execute;
use crate::store::sealing::ERASED;
use crate::store::{Erasure, Millis, Result, Subject, SubjectErasure};
use crate::vault::{MAGIC, TEXT_PREFIX, Vault};

pub(super) async fn end_waiting(
    db: &impl GenericClient,
    tenant_id: &str,
    reason_json: &str,
    now: Millis,
) -> Result<Erasure> {
    let deliveries_failed = execute(
        db,
        "UPDATE deliveries SET status = 'failed', reason_json = $2, processed_at = $3, \
         lease_until = NULL WHERE tenant_id = $1 AND status = 'received'",
        &[&tenant_id, &reason_json, &now],
    )
    .await?;
    let subscriber_deliveries_dead = execute(
        db,
        "UPDATE subscriber_deliveries SET status = 'dead', last_error = $2, updated_at = $3 \
         WHERE status = 'pending' AND outbox_seq IN (SELECT seq FROM outbox WHERE tenant_id = $1)",
        &[&tenant_id, &ERASED, &now],
    )
    .await?;
    let events_dead = execute(
        db,
        "UPDATE outbox SET status = 'dead', last_error = $2 \
         WHERE tenant_id = $1 AND status = 'pending'",
        &[&tenant_id, &ERASED],
    )
    .await?;
    Ok(Erasure {
        key_destroyed: false,
        deliveries_failed,
        events_dead,
        subscriber_deliveries_dead,
        plaintext_overwritten: overwrite_plaintext(db, tenant_id).await?,
        identities_forgotten: super::identities::erase(db, tenant_id).await?,
    })
}

/// Overwrites with tombstones the tenant's payloads stored in the clear (see the embedded
/// store's `overwrite_plaintext`).
async fn overwrite_plaintext(db: &impl GenericClient, tenant_id: &str) -> Result<u64> {
    let tomb = Vault::tombstone(tenant_id)?;
    let tomb_text = Vault::tombstone_text();
    let magic = MAGIC.as_slice();
    let mut overwritten = execute(
        db,
        "UPDATE deliveries SET body_bytes = coalesce(body_bytes, octet_length(body)::bigint), \
         body = $2 WHERE tenant_id = $1 AND body_purged_at IS NULL AND octet_length(body) > 0 \
         AND substring(body FROM 1 FOR octet_length($3::bytea)) IS DISTINCT FROM $3::bytea",
        &[&tenant_id, &tomb, &magic],
    )
    .await?;
    overwritten += execute(
        db,
        "UPDATE http_exchanges SET response_body = $2 \
         WHERE octet_length(response_body) > 0 \
         AND substring(response_body FROM 1 FOR octet_length($3::bytea)) \
             IS DISTINCT FROM $3::bytea \
         AND (delivery_id IN (SELECT id FROM deliveries WHERE tenant_id = $1) \
              OR poll_run_id IN (SELECT id FROM poll_runs WHERE tenant_id = $1))",
        &[&tenant_id, &tomb, &magic],
    )
    .await?;
    overwritten += execute(
        db,
        "UPDATE invocations SET log_json = $2 \
         WHERE log_purged_at IS NULL AND NOT starts_with(log_json, $3) AND log_json <> $2 \
         AND delivery_id IN (SELECT id FROM deliveries WHERE tenant_id = $1)",
        &[&tenant_id, &tomb_text, &TEXT_PREFIX],
    )
    .await?;
    overwritten += execute(
        db,
        "UPDATE outbox SET payload_json = $2 WHERE tenant_id = $1 \
         AND NOT starts_with(payload_json, $3) AND payload_json <> $2",
        &[&tenant_id, &tomb_text, &TEXT_PREFIX],
    )
    .await?;
    Ok(overwritten)
}

/// Erases one subject (see [`crate::store::Store::erase_subject`]), in one transaction.
pub(super) async fn erase_subject(
    db: &impl GenericClient,
    subject: &Subject,
    now: Millis,
) -> Result<SubjectErasure> {
    let tenant = subject.tenant_id.as_str();
    let found = db
        .query(
            "SELECT id, org_key, entity_type, entity_id FROM identities \
             WHERE tenant_id = $1 AND source = $2 AND external_id = $3 \
             AND ($4::text IS NULL OR coalesce(org_id, (SELECT c.org_id FROM connections c \
                  WHERE c.id = identities.first_connection_id), \
                  CASE WHEN $5 THEN $4 ELSE '' END) = $4) FOR UPDATE",
            &[
                &tenant,
                &subject.source,
                &subject.external_id,
                &subject.org_id,
                &subject.platform_level,
            ],
        )
        .await?;
    let mut erased = SubjectErasure::default();
    let mut deliveries = std::collections::BTreeSet::new();
    let erased_text = Vault::tombstone_text();
    for identity in &found {
        let (id, org_key, entity_type, entity_id): (String, String, String, String) = (
            identity.get(0),
            identity.get(1),
            identity.get(2),
            identity.get(3),
        );
        let events = db
            .query(
                "SELECT seq, delivery_id FROM outbox WHERE tenant_id = $1 \
                 AND coalesce(org_id, '') = $2 AND entity_type = $3 AND entity_id = $4",
                &[&tenant, &org_key, &entity_type, &entity_id],
            )
            .await?;
        let seqs: Vec<i64> = events.iter().map(|row| row.get(0)).collect();
        deliveries.extend(events.iter().map(|row| row.get::<_, String>(1)));
        execute(
            db,
            "UPDATE subscriber_deliveries SET status = 'dead', last_error = $2, updated_at = $3 \
             WHERE status = 'pending' AND outbox_seq = ANY($1)",
            &[&seqs, &ERASED, &now],
        )
        .await?;
        execute(
            db,
            "UPDATE outbox SET status = 'dead', last_error = $2 \
             WHERE seq = ANY($1) AND status = 'pending'",
            &[&seqs, &ERASED],
        )
        .await?;
        erased.events += execute(
            db,
            "UPDATE outbox SET payload_json = $2 WHERE seq = ANY($1) AND payload_json <> $2",
            &[&seqs, &erased_text],
        )
        .await?;
        execute(db, "DELETE FROM identities WHERE id = $1", &[&id]).await?;
        erased.identities += 1;
    }
    let tomb = Vault::tombstone(tenant)?;
    for delivery_id in &deliveries {
        let body = execute(
            db,
            "UPDATE deliveries SET body_bytes = coalesce(body_bytes, octet_length(body)::bigint), \
             body = $2 WHERE id = $1 AND body_purged_at IS NULL AND body IS DISTINCT FROM $2",
            &[delivery_id, &tomb],
        )
        .await?;
        let logs = execute(
            db,
            "UPDATE invocations SET log_json = $2, replay_json = NULL WHERE delivery_id = $1 \
             AND log_purged_at IS NULL AND log_json <> $2",
            &[delivery_id, &erased_text],
        )
        .await?;
        let answers = execute(
            db,
            "UPDATE http_exchanges SET response_body = $2 WHERE delivery_id = $1 \
             AND response_body IS NOT NULL AND response_body IS DISTINCT FROM $2",
            &[delivery_id, &tomb],
        )
        .await?;
        if body + logs + answers > 0 {
            erased.deliveries += 1;
        }
    }
    Ok(erased)
}
