//! The audit log in PostgreSQL: appended, listed, never changed (the schema's trigger).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{Filtered, execute, get, json_column, page};
use crate::store::{AuditEntry, AuditFilter, Error, Page, PageRequest, Result, page_size};

const AUDIT: &str = "id, at, tenant_id, org_id, actor, roles_json, action, resource_type, \
    resource_id, request_id, status, detail_json, support";

fn audit_row(row: &Row) -> Result<AuditEntry> {
    let status: i64 = get(row, "status")?;
    Ok(AuditEntry {
        id: get(row, "id")?,
        at: get(row, "at")?,
        tenant_id: get(row, "tenant_id")?,
        org_id: get(row, "org_id")?,
        actor: get(row, "actor")?,
        roles: json_column(row, "roles_json")?,
        action: get(row, "action")?,
        resource_type: get(row, "resource_type")?,
        resource_id: get(row, "resource_id")?,
        request_id: get(row, "request_id")?,
        status: u16::try_from(status).map_err(|e| Error::Backend(format!("column status: {e}")))?,
        detail_json: get(row, "detail_json")?,
        support: get(row, "support")?,
    })
}

pub(super) async fn append_audit(db: &impl GenericClient, entry: &AuditEntry) -> Result<()> {
    let roles =
        serde_json::to_string(&entry.roles).map_err(|e| Error::Invalid(format!("roles: {e}")))?;
    execute(
        db,
        &format!(
            "INSERT INTO audit ({AUDIT}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ),
        &[
            &entry.id,
            &entry.at,
            &entry.tenant_id,
            &entry.org_id,
            &entry.actor,
            &roles,
            &entry.action,
            &entry.resource_type,
            &entry.resource_id,
            &entry.request_id,
            &i64::from(entry.status),
            &entry.detail_json,
            &entry.support,
        ],
    )
    .await
    .map(drop)
}

pub(super) async fn list_audit(
    db: &impl GenericClient,
    tenant_id: &str,
    org_id: Option<&str>,
    filter: AuditFilter,
    request: PageRequest,
) -> Result<Page<AuditEntry>> {
    let limit = page_size(request.limit);
    let mut query = Filtered::new(format!("SELECT {AUDIT} FROM audit WHERE 1 = 1"));
    query.and("tenant_id = ?", Some(tenant_id.to_owned()));
    query.and("(org_id IS NULL OR org_id = ?)", org_id.map(str::to_owned));
    query.and("actor = ?", filter.actor);
    query.and("action = ?", filter.action);
    query.and("resource_type = ?", filter.resource_type);
    query.and("resource_id = ?", filter.resource_id);
    query.and("at >= ?", filter.since);
    query.and("at < ?", filter.until);
    query.and("id < ?", request.cursor);
    let items = query.run(db, "ORDER BY id DESC", limit, audit_row).await?;
    Ok(page(items, limit, |e| e.id.clone()))
}
