//! The identity map in the embedded store (see `store/identities.rs`).

use rusqlite::types::Value;
use rusqlite::{Connection as Db, Row, params};

use super::{Filtered, new_id, page, page_size, text, uint};
use crate::store::identities::external_identity;
use crate::store::{Identity, IdentityFilter, Millis, NewOutboxEvent, Page, Result};

pub(super) const MIGRATION: &str = r#"
-- The identity map: which platform entity a CRM's record is, and where it was seen.
CREATE TABLE identities (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL,
    org_id               TEXT,
    -- The org, or '' at platform level: one identity per org.
    org_key              TEXT NOT NULL,
    source               TEXT NOT NULL,
    entity_type          TEXT NOT NULL,
    external_id          TEXT NOT NULL,
    entity_id            TEXT NOT NULL,
    first_event_id       TEXT NOT NULL,
    first_seen_at        INTEGER NOT NULL,
    first_connection_id  TEXT NOT NULL,
    last_event_id        TEXT NOT NULL,
    last_seen_at         INTEGER NOT NULL,
    last_connection_id   TEXT NOT NULL,
    events               INTEGER NOT NULL
);
CREATE UNIQUE INDEX identities_by_key
    ON identities (tenant_id, org_key, source, entity_type, external_id);
CREATE INDEX identities_by_tenant ON identities (tenant_id, id);
"#;

const IDENTITY: &str = "id, tenant_id, org_id, source, entity_type, external_id, entity_id, \
    first_event_id, first_seen_at, first_connection_id, last_event_id, last_seen_at, \
    last_connection_id, events";

/// Notes the record `event` names, if it names one: appended by `connection_id` at `at`.
pub(super) fn record(
    db: &Db,
    tenant_id: &str,
    connection_id: &str,
    event: &NewOutboxEvent,
    at: Millis,
) -> Result<()> {
    let Some((source, external_id)) = external_identity(&event.payload_json) else {
        return Ok(());
    };
    db.prepare_cached(
        "INSERT INTO identities (id, tenant_id, org_id, org_key, source, entity_type, \
         external_id, entity_id, first_event_id, first_seen_at, first_connection_id, \
         last_event_id, last_seen_at, last_connection_id, events) \
         VALUES (?1, ?2, ?3, coalesce(?3, ''), ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?8, ?9, ?10, 1) \
         ON CONFLICT (tenant_id, org_key, source, entity_type, external_id) \
         DO UPDATE SET entity_id = excluded.entity_id, last_event_id = excluded.last_event_id, \
         last_seen_at = excluded.last_seen_at, last_connection_id = excluded.last_connection_id, \
         events = events + 1",
    )?
    .execute(params![
        new_id(),
        tenant_id,
        event.org_id,
        source,
        event.entity_type,
        external_id,
        event.entity_id,
        event.event_id,
        at,
        connection_id,
    ])?;
    Ok(())
}

pub(super) fn list(db: &Db, filter: IdentityFilter) -> Result<Page<Identity>> {
    let limit = page_size(filter.limit);
    let mut query = Filtered::new(format!("SELECT {IDENTITY} FROM identities WHERE 1 = 1"));
    query.and("tenant_id = ?", Some(Value::Text(filter.tenant_id.clone())));
    // Without an org, an identity is the org's of the connection that first named it.
    query.and_repeated(
        "coalesce(org_id, (SELECT c.org_id FROM connections c \
           WHERE c.id = identities.first_connection_id), ?) = ?",
        text(filter.org_id.as_ref()),
        2,
    );
    query.and("source = ?", text(filter.source.as_ref()));
    query.and("entity_type = ?", text(filter.entity_type.as_ref()));
    query.and("external_id = ?", text(filter.external_id.as_ref()));
    query.and("entity_id = ?", text(filter.entity_id.as_ref()));
    query.and("id < ?", text(filter.cursor.as_ref()));
    let items = query.run(db, "ORDER BY id DESC", limit, identity_row)?;
    Ok(page(items, limit, |identity| identity.id.clone()))
}

/// Forgets every identity of the tenant (its erasure); how many.
pub(super) fn erase(db: &Db, tenant_id: &str) -> Result<u64> {
    Ok(db
        .prepare_cached("DELETE FROM identities WHERE tenant_id = ?1")?
        .execute([tenant_id])? as u64)
}

fn identity_row(row: &Row<'_>) -> rusqlite::Result<Identity> {
    Ok(Identity {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        org_id: row.get("org_id")?,
        source: row.get("source")?,
        entity_type: row.get("entity_type")?,
        external_id: row.get("external_id")?,
        entity_id: row.get("entity_id")?,
        first_event_id: row.get("first_event_id")?,
        first_seen_at: row.get("first_seen_at")?,
        first_connection_id: row.get("first_connection_id")?,
        last_event_id: row.get("last_event_id")?,
        last_seen_at: row.get("last_seen_at")?,
        last_connection_id: row.get("last_connection_id")?,
        events: uint(row, "events")?,
    })
}
