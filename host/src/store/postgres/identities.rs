//! The identity map in PostgreSQL: the same as the embedded store's.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{Filtered, execute, get, page, uint};
use crate::store::identities::external_identity;
use crate::store::{
    Identity, IdentityFilter, Millis, NewOutboxEvent, Page, Result, new_id, page_size,
};

pub(super) const MIGRATION: &str = r#"
-- The identity map: which platform entity a CRM's record is, and where it was seen.
CREATE TABLE identities (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    tenant_id            TEXT COLLATE "C" NOT NULL,
    org_id               TEXT COLLATE "C",
    -- The org, or '' at platform level: one identity per org.
    org_key              TEXT COLLATE "C" NOT NULL,
    source               TEXT COLLATE "C" NOT NULL,
    entity_type          TEXT COLLATE "C" NOT NULL,
    external_id          TEXT COLLATE "C" NOT NULL,
    entity_id            TEXT NOT NULL,
    first_event_id       TEXT NOT NULL,
    first_seen_at        BIGINT NOT NULL,
    first_connection_id  TEXT COLLATE "C" NOT NULL,
    last_event_id        TEXT NOT NULL,
    last_seen_at         BIGINT NOT NULL,
    last_connection_id   TEXT COLLATE "C" NOT NULL,
    events               BIGINT NOT NULL,
    UNIQUE (tenant_id, org_key, source, entity_type, external_id)
);
CREATE INDEX identities_by_tenant ON identities (tenant_id, id);
"#;

const IDENTITY: &str = "id, tenant_id, org_id, source, entity_type, external_id, entity_id, \
    first_event_id, first_seen_at, first_connection_id, last_event_id, last_seen_at, \
    last_connection_id, events";

/// Notes the record `event` names, if it names one: appended by `connection_id` at `at`.
pub(super) async fn record(
    db: &impl GenericClient,
    tenant_id: &str,
    connection_id: &str,
    event: &NewOutboxEvent,
    at: Millis,
) -> Result<()> {
    let Some((source, external_id)) = external_identity(&event.payload_json) else {
        return Ok(());
    };
    execute(
        db,
        "INSERT INTO identities (id, tenant_id, org_id, org_key, source, entity_type, \
         external_id, entity_id, first_event_id, first_seen_at, first_connection_id, \
         last_event_id, last_seen_at, last_connection_id, events) \
         VALUES ($1, $2, $3, coalesce($3, ''), $4, $5, $6, $7, $8, $9, $10, $8, $9, $10, 1) \
         ON CONFLICT (tenant_id, org_key, source, entity_type, external_id) \
         DO UPDATE SET entity_id = excluded.entity_id, last_event_id = excluded.last_event_id, \
         last_seen_at = excluded.last_seen_at, last_connection_id = excluded.last_connection_id, \
         events = identities.events + 1",
        &[
            &new_id(),
            &tenant_id,
            &event.org_id,
            &source,
            &event.entity_type,
            &external_id,
            &event.entity_id,
            &event.event_id,
            &at,
            &connection_id,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn list(
    db: &impl GenericClient,
    filter: IdentityFilter,
) -> Result<Page<Identity>> {
    let limit = page_size(filter.limit);
    let mut query = Filtered::new(format!("SELECT {IDENTITY} FROM identities WHERE 1 = 1"));
    query.and("tenant_id = ?", Some(filter.tenant_id));
    // Without an org, an identity is the org's of the connection that first named it.
    query.and(
        "coalesce(org_id, (SELECT c.org_id FROM connections c \
           WHERE c.id = identities.first_connection_id), ?) = ?",
        filter.org_id,
    );
    query.and("source = ?", filter.source);
    query.and("entity_type = ?", filter.entity_type);
    query.and("external_id = ?", filter.external_id);
    query.and("entity_id = ?", filter.entity_id);
    query.and("id < ?", filter.cursor);
    let items = query
        .run(db, "ORDER BY id DESC", limit, identity_row)
        .await?;
    Ok(page(items, limit, |identity| identity.id.clone()))
}

/// Forgets every identity of the tenant (its erasure); how many.
pub(super) async fn erase(db: &impl GenericClient, tenant_id: &str) -> Result<u64> {
    execute(
        db,
        "DELETE FROM identities WHERE tenant_id = $1",
        &[&tenant_id],
    )
    .await
}

fn identity_row(row: &Row) -> Result<Identity> {
    Ok(Identity {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        org_id: get(row, "org_id")?,
        source: get(row, "source")?,
        entity_type: get(row, "entity_type")?,
        external_id: get(row, "external_id")?,
        entity_id: get(row, "entity_id")?,
        first_event_id: get(row, "first_event_id")?,
        first_seen_at: get(row, "first_seen_at")?,
        first_connection_id: get(row, "first_connection_id")?,
        last_event_id: get(row, "last_event_id")?,
        last_seen_at: get(row, "last_seen_at")?,
        last_connection_id: get(row, "last_connection_id")?,
        events: uint(row, "events")?,
    })
}
