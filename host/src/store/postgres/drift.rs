//! Schema drift in PostgreSQL: the same tables as the embedded store's. Several nodes learn
//! shapes side by side (each saves what it learned; the last save wins, which only changes
//! how soon a change is found), and a change two nodes find is recorded once: its insert
//! skips a drift of the same connection, kind, pointer and change recorded since `since`,
//! under an advisory lock on the connection.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{execute, get, int, lock, page, query_all, query_opt};
use crate::store::health::RECENT_DRIFTS;
use crate::store::{
    Drift, Millis, NewDrift, Page, PageRequest, Result, SavedShape, new_id, page_size,
};

pub(super) const MIGRATION: &str = r#"
CREATE TABLE payload_shapes (
    connection_id  TEXT COLLATE "C" NOT NULL,
    kind           TEXT COLLATE "C" NOT NULL,
    shape_json     TEXT NOT NULL,
    samples        BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (connection_id, kind)
);

CREATE TABLE schema_drifts (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    tenant_id            TEXT NOT NULL,
    org_id               TEXT,
    connection_id        TEXT COLLATE "C" NOT NULL,
    kind                 TEXT COLLATE "C" NOT NULL,
    pointer              TEXT COLLATE "C" NOT NULL,
    change               TEXT NOT NULL
        CHECK (change IN ('appeared', 'disappeared', 'type_changed', 'decimal_as_number')),
    was                  TEXT NOT NULL,
    now                  TEXT NOT NULL,
    example_delivery_id  TEXT NOT NULL,
    detected_at          BIGINT NOT NULL
);
CREATE INDEX schema_drifts_by_connection ON schema_drifts (connection_id, id);
CREATE INDEX schema_drifts_by_change
    ON schema_drifts (connection_id, kind, pointer, change, detected_at);
"#;

const DRIFT: &str =
    "id, connection_id, kind, pointer, change, was, now, example_delivery_id, detected_at";

fn drift_row(row: &Row) -> Result<Drift> {
    Ok(Drift {
        id: get(row, "id")?,
        connection_id: get(row, "connection_id")?,
        kind: get(row, "kind")?,
        pointer: get(row, "pointer")?,
        change: get(row, "change")?,
        was: get(row, "was")?,
        now: get(row, "now")?,
        example_delivery_id: get(row, "example_delivery_id")?,
        detected_at: get(row, "detected_at")?,
    })
}

pub(super) async fn payload_shape(
    db: &impl GenericClient,
    connection_id: &str,
    kind: &str,
) -> Result<Option<String>> {
    query_opt(
        db,
        "SELECT shape_json FROM payload_shapes WHERE connection_id = $1 AND kind = $2",
        &[&connection_id, &kind],
        |row| get(row, "shape_json"),
    )
    .await
}

pub(super) async fn save_payload_shapes(
    db: &impl GenericClient,
    shapes: &[SavedShape],
) -> Result<()> {
    for shape in shapes {
        execute(
            db,
            "INSERT INTO payload_shapes (connection_id, kind, shape_json, samples, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (connection_id, kind) DO UPDATE SET shape_json = excluded.shape_json, \
             samples = excluded.samples, updated_at = excluded.updated_at",
            &[
                &shape.connection_id,
                &shape.kind,
                &shape.shape_json,
                &int(shape.samples),
                &shape.updated_at,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn record_drifts(
    db: &impl GenericClient,
    drifts: &[NewDrift],
    since: Millis,
) -> Result<u64> {
    let mut recorded = 0;
    for d in drifts {
        lock(db, &format!("schema_drifts/{}", d.connection_id)).await?;
        recorded += execute(
            db,
            "INSERT INTO schema_drifts (id, tenant_id, org_id, connection_id, kind, pointer, \
             change, was, now, example_delivery_id, detected_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 WHERE NOT EXISTS ( \
                 SELECT 1 FROM schema_drifts WHERE connection_id = $4 AND kind = $5 \
                 AND pointer = $6 AND change = $7 AND detected_at >= $12)",
            &[
                &new_id(),
                &d.tenant_id,
                &d.org_id,
                &d.connection_id,
                &d.kind,
                &d.pointer,
                &d.change,
                &d.was,
                &d.now,
                &d.example_delivery_id,
                &d.detected_at,
                &since,
            ],
        )
        .await?;
    }
    Ok(recorded)
}

pub(super) async fn list_drifts(
    db: &impl GenericClient,
    connection_id: &str,
    request: PageRequest,
) -> Result<Page<Drift>> {
    let limit = page_size(request.limit);
    let items = query_all(
        db,
        &format!(
            "SELECT {DRIFT} FROM schema_drifts WHERE connection_id = $1 \
             AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        ),
        &[&connection_id, &request.cursor, &int(limit as u64 + 1)],
        drift_row,
    )
    .await?;
    Ok(page(items, limit, |d| d.id.clone()))
}

/// The connection's drifts found at or after `since`, newest first.
pub(super) async fn recent_drifts(
    db: &impl GenericClient,
    connection_id: &str,
    since: Millis,
) -> Result<Vec<Drift>> {
    query_all(
        db,
        &format!(
            "SELECT {DRIFT} FROM schema_drifts WHERE connection_id = $1 AND detected_at >= $2 \
             ORDER BY id DESC LIMIT $3"
        ),
        &[&connection_id, &since, &int(RECENT_DRIFTS as u64)],
        drift_row,
    )
    .await
}
