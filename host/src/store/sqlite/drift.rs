//! Schema drift in the embedded store: learned payload shapes (`payload_shapes`) and the
//! changes found against them (`schema_drifts`).

use rusqlite::{Connection as Db, Row, params};

use super::{int, page, query_all, query_one, text};
use crate::store::health::RECENT_DRIFTS;
use crate::store::{
    Drift, Millis, NewDrift, Page, PageRequest, Result, SavedShape, new_id, page_size,
};

pub(super) const MIGRATION: &str = r#"
-- The shape each connection's payloads of a source kind were learned to have.
CREATE TABLE payload_shapes (
    connection_id  TEXT NOT NULL,
    kind           TEXT NOT NULL,
    shape_json     TEXT NOT NULL,
    samples        INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (connection_id, kind)
);

-- Changes found in payloads against their learned shape.
CREATE TABLE schema_drifts (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL,
    org_id               TEXT,
    connection_id        TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    pointer              TEXT NOT NULL,
    change               TEXT NOT NULL
        CHECK (change IN ('appeared', 'disappeared', 'type_changed', 'decimal_as_number')),
    was                  TEXT NOT NULL,
    now                  TEXT NOT NULL,
    example_delivery_id  TEXT NOT NULL,
    detected_at          INTEGER NOT NULL
);
CREATE INDEX schema_drifts_by_connection ON schema_drifts (connection_id, id);
CREATE INDEX schema_drifts_by_change
    ON schema_drifts (connection_id, kind, pointer, change, detected_at);
"#;

const DRIFT: &str =
    "id, connection_id, kind, pointer, change, was, now, example_delivery_id, detected_at";

fn drift_row(row: &Row<'_>) -> rusqlite::Result<Drift> {
    Ok(Drift {
        id: row.get("id")?,
        connection_id: row.get("connection_id")?,
        kind: row.get("kind")?,
        pointer: row.get("pointer")?,
        change: row.get("change")?,
        was: row.get("was")?,
        now: row.get("now")?,
        example_delivery_id: row.get("example_delivery_id")?,
        detected_at: row.get("detected_at")?,
    })
}

pub(super) fn payload_shape(db: &Db, connection_id: &str, kind: &str) -> Result<Option<String>> {
    query_one(
        db,
        "SELECT shape_json FROM payload_shapes WHERE connection_id = ?1 AND kind = ?2",
        params![connection_id, kind],
        |row| row.get(0),
    )
}

pub(super) fn save_payload_shapes(db: &Db, shapes: &[SavedShape]) -> Result<()> {
    let mut upsert = db.prepare_cached(
        "INSERT INTO payload_shapes (connection_id, kind, shape_json, samples, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (connection_id, kind) DO UPDATE SET shape_json = excluded.shape_json, \
         samples = excluded.samples, updated_at = excluded.updated_at",
    )?;
    for shape in shapes {
        upsert.execute(params![
            shape.connection_id,
            shape.kind,
            shape.shape_json,
            int(shape.samples),
            shape.updated_at
        ])?;
    }
    Ok(())
}

pub(super) fn record_drifts(db: &Db, drifts: &[NewDrift], since: Millis) -> Result<u64> {
    let mut insert = db.prepare_cached(
        "INSERT INTO schema_drifts (id, tenant_id, org_id, connection_id, kind, pointer, change, \
         was, now, example_delivery_id, detected_at) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11 WHERE NOT EXISTS ( \
             SELECT 1 FROM schema_drifts WHERE connection_id = ?4 AND kind = ?5 \
             AND pointer = ?6 AND change = ?7 AND detected_at >= ?12)",
    )?;
    let mut recorded = 0;
    for d in drifts {
        recorded += insert.execute(params![
            new_id(),
            d.tenant_id,
            d.org_id,
            d.connection_id,
            d.kind,
            d.pointer,
            d.change,
            d.was,
            d.now,
            d.example_delivery_id,
            d.detected_at,
            since
        ])? as u64;
    }
    Ok(recorded)
}

pub(super) fn list_drifts(
    db: &Db,
    connection_id: &str,
    request: PageRequest,
) -> Result<Page<Drift>> {
    let limit = page_size(request.limit);
    let items = query_all(
        db,
        &format!(
            "SELECT {DRIFT} FROM schema_drifts WHERE connection_id = ?1 \
             AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
        ),
        params![
            connection_id,
            text(request.cursor.as_ref()),
            int(limit as u64 + 1)
        ],
        drift_row,
    )?;
    Ok(page(items, limit, |d| d.id.clone()))
}

/// The connection's drifts found at or after `since`, newest first.
pub(super) fn recent_drifts(db: &Db, connection_id: &str, since: Millis) -> Result<Vec<Drift>> {
    query_all(
        db,
        &format!(
            "SELECT {DRIFT} FROM schema_drifts WHERE connection_id = ?1 AND detected_at >= ?2 \
             ORDER BY id DESC LIMIT ?3"
        ),
        params![connection_id, since, int(RECENT_DRIFTS as u64)],
        drift_row,
    )
}
