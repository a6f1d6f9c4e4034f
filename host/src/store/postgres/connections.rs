//! Adapters and connections in PostgreSQL.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{execute, get, json_column, query_opt, small, text_enum, uint};
use crate::store::{
    Adapter, AdapterVersion, Connection, ConnectionSpec, Error, Millis, Result, Upsert,
};

pub(super) const ADAPTER: &str = "id, tenant_id, org_id, name, created_at";
pub(super) const VERSION: &str = "adapter_id, version, sha256, size_bytes, info_json, \
    limits_json, created_at, created_by, status, failure";
pub(super) const CONNECTION: &str = "id, tenant_id, org_id, provider, adapter_id, adapter_version, \
    signature_json, allowed_org_ids_json, secret_refs_json, settings_json, polling_json, status, \
    created_at, updated_at, last_delivery_at, version_changed_by, version_changed_at, api_json, \
    webhook_json, export_json";

pub(super) fn adapter_row(row: &Row) -> Result<Adapter> {
    Ok(Adapter {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        org_id: get(row, "org_id")?,
        name: get(row, "name")?,
        created_at: get(row, "created_at")?,
    })
}

pub(super) fn version_row(row: &Row) -> Result<AdapterVersion> {
    Ok(AdapterVersion {
        adapter_id: get(row, "adapter_id")?,
        version: small(row, "version")?,
        sha256: get(row, "sha256")?,
        size_bytes: uint(row, "size_bytes")?,
        info_json: get(row, "info_json")?,
        limits_json: get(row, "limits_json")?,
        created_at: get(row, "created_at")?,
        created_by: get(row, "created_by")?,
        status: text_enum(row, "status")?,
        failure: get(row, "failure")?,
    })
}

pub(super) fn connection_row(row: &Row) -> Result<Connection> {
    Ok(Connection {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        org_id: get(row, "org_id")?,
        provider: get(row, "provider")?,
        adapter_id: get(row, "adapter_id")?,
        adapter_version: small(row, "adapter_version")?,
        signature_json: get(row, "signature_json")?,
        allowed_org_ids: json_column(row, "allowed_org_ids_json")?,
        secret_refs_json: get(row, "secret_refs_json")?,
        settings_json: get(row, "settings_json")?,
        polling_json: get(row, "polling_json")?,
        api_json: get(row, "api_json")?,
        webhook_json: get(row, "webhook_json")?,
        export_json: get(row, "export_json")?,
        status: text_enum(row, "status")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        last_delivery_at: get(row, "last_delivery_at")?,
        version_changed_by: get(row, "version_changed_by")?,
        version_changed_at: get(row, "version_changed_at")?,
    })
}

pub(super) async fn get_connection(
    db: &impl GenericClient,
    id: &str,
) -> Result<Option<Connection>> {
    query_opt(
        db,
        &format!("SELECT {CONNECTION} FROM connections WHERE id = $1"),
        &[&id],
        connection_row,
    )
    .await
}

pub(super) async fn require_connection(db: &impl GenericClient, id: &str) -> Result<Connection> {
    get_connection(db, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("connection {id}")))
}

/// The adapter version, which must belong to an adapter of `tenant_id`.
pub(super) async fn require_version(
    db: &impl GenericClient,
    tenant_id: &str,
    adapter_id: &str,
    version: u32,
) -> Result<()> {
    let found = query_opt(
        db,
        "SELECT 1 FROM adapter_versions v JOIN adapters a ON a.id = v.adapter_id \
         WHERE v.adapter_id = $1 AND v.version = $2 AND a.tenant_id = $3",
        &[&adapter_id, &i64::from(version), &tenant_id],
        |_| Ok(()),
    )
    .await?;
    found.ok_or_else(|| {
        Error::NotFound(format!(
            "version {version} of adapter {adapter_id} of this tenant"
        ))
    })
}

pub(super) async fn upsert_connection(
    db: &impl GenericClient,
    spec: &ConnectionSpec,
    allowed_org_ids_json: &str,
    actor: &str,
    now: Millis,
) -> Result<(Connection, Upsert)> {
    require_version(db, &spec.tenant_id, &spec.adapter_id, spec.adapter_version).await?;
    let version = i64::from(spec.adapter_version);
    // Locked: two hosts applying the same configuration at once do not both update it.
    let old = query_opt(
        db,
        &format!("SELECT {CONNECTION} FROM connections WHERE id = $1 FOR UPDATE"),
        &[&spec.id],
        connection_row,
    )
    .await?;
    let Some(old) = old else {
        let inserted = execute(
            db,
            &format!(
                "INSERT INTO connections ({CONNECTION}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, NULL, NULL, NULL, \
                  $14, $15, $16) ON CONFLICT (id) DO NOTHING"
            ),
            &[
                &spec.id,
                &spec.tenant_id,
                &spec.org_id,
                &spec.provider,
                &spec.adapter_id,
                &version,
                &spec.signature_json,
                &allowed_org_ids_json,
                &spec.secret_refs_json,
                &spec.settings_json,
                &spec.polling_json,
                &spec.status.as_str(),
                &now,
                &spec.api_json,
                &spec.webhook_json,
                &spec.export_json,
            ],
        )
        .await?;
        if inserted == 0 {
            return Err(Error::Conflict(format!(
                "connection {} was created meanwhile: try again",
                spec.id
            )));
        }
        return Ok((require_connection(db, &spec.id).await?, Upsert::Created));
    };
    if old.tenant_id != spec.tenant_id {
        return Err(Error::Conflict(format!(
            "connection {} belongs to another tenant",
            spec.id
        )));
    }
    if old.spec() == *spec {
        return Ok((old, Upsert::Unchanged));
    }
    let version_changed =
        old.adapter_id != spec.adapter_id || old.adapter_version != spec.adapter_version;
    execute(
        db,
        "UPDATE connections SET org_id = $2, provider = $3, adapter_id = $4, \
         adapter_version = $5, signature_json = $6, allowed_org_ids_json = $7, \
         secret_refs_json = $8, settings_json = $9, polling_json = $10, status = $11, \
         updated_at = $12, api_json = $15, webhook_json = $16, export_json = $17, \
         version_changed_by = CASE WHEN $13::boolean THEN $14::text ELSE version_changed_by END, \
         version_changed_at = CASE WHEN $13::boolean THEN $12 ELSE version_changed_at END \
         WHERE id = $1",
        &[
            &spec.id,
            &spec.org_id,
            &spec.provider,
            &spec.adapter_id,
            &version,
            &spec.signature_json,
            &allowed_org_ids_json,
            &spec.secret_refs_json,
            &spec.settings_json,
            &spec.polling_json,
            &spec.status.as_str(),
            &now,
            &version_changed,
            &actor,
            &spec.api_json,
            &spec.webhook_json,
            &spec.export_json,
        ],
    )
    .await?;
    if old.polling_json != spec.polling_json {
        // A shorter interval takes effect now, not after the run the old one scheduled.
        execute(
            db,
            "UPDATE poll_state SET next_run_at = \
             LEAST(next_run_at, $2::bigint + 1000 * ($3::text::jsonb ->> 'interval_secs')::numeric) \
             WHERE connection_id = $1 AND ($3::text::jsonb ->> 'interval_secs') IS NOT NULL",
            &[&spec.id, &now, &spec.polling_json],
        )
        .await?;
    }
    Ok((require_connection(db, &spec.id).await?, Upsert::Updated))
}

pub(super) async fn delete_connection(db: &impl GenericClient, id: &str) -> Result<()> {
    query_opt(
        db,
        "SELECT 1 FROM connections WHERE id = $1 FOR UPDATE",
        &[&id],
        |_| Ok(()),
    )
    .await?
    .ok_or_else(|| Error::NotFound(format!("connection {id}")))?;
    let has_deliveries = query_opt(
        db,
        "SELECT 1 FROM deliveries WHERE connection_id = $1 LIMIT 1",
        &[&id],
        |_| Ok(()),
    )
    .await?
    .is_some();
    if has_deliveries {
        return Err(Error::Conflict(format!(
            "connection {id} has deliveries, which are kept: disable it instead"
        )));
    }
    // What belongs to the connection alone goes with it; poll runs that fetched no page have
    // no deliveries to keep.
    for sql in [
        "DELETE FROM connection_state WHERE connection_id = $1",
        "DELETE FROM connection_state_versions WHERE connection_id = $1",
        "DELETE FROM http_exchanges WHERE poll_run_id IN \
         (SELECT id FROM poll_runs WHERE connection_id = $1)",
        "DELETE FROM poll_runs WHERE connection_id = $1",
        "DELETE FROM poll_state WHERE connection_id = $1",
        "DELETE FROM oauth_states WHERE connection_id = $1",
        "DELETE FROM connection_auth WHERE connection_id = $1",
        "DELETE FROM connections WHERE id = $1",
    ] {
        execute(db, sql, &[&id]).await?;
    }
    Ok(())
}
