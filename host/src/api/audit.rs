//! The audit log of the management API: every write that succeeded, with who made it (the
//! token's `sub`, tenant, org and roles), the request's id, its answer, what changed (field
//! names and versions, a secret by its name only, never a value), and whether the platform's
//! admin made it in support mode. Listed by `GET /v1/audit` within the org scope.
//!
//! What is not recorded here: reads, dry runs (they write nothing), an upload of a version
//! that exists already (a no-op), and pages pushed to `poll-results`: those are the CRM's
//! data, like webhooks, and each is recorded as a delivery already.
//!
//! An entry is appended after the write it records is durable, not in the same transaction:
//! when the append fails the write has happened all the same, so the answer stays the
//! write's (a 500 would have the client retry a write that took effect) and the failure is
//! logged as an error with everything the entry would have held but its detail.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApiError;
use super::manage::{ApiState, list_error, page_limit};
use super::scope::Scope;
use crate::store::{self, AuditEntry, AuditFilter, NewAuditEntry, Page, PageRequest};

/// The audit routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/audit", get(list_audit))
        .with_state(state)
}

/// The resource a write changed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target<'a> {
    /// Its kind (`connection`, `secret`).
    pub kind: &'static str,
    /// Its id, or a secret's name.
    pub id: &'a str,
    /// Its org; `None`: platform level (every org of the tenant sees the entry).
    pub org_id: Option<&'a str>,
}

impl<'a> Target<'a> {
    pub(super) fn new(kind: &'static str, id: &'a str, org_id: Option<&'a str>) -> Self {
        Self { kind, id, org_id }
    }
}

/// `{"fields": [...]}`: the names of the fields a patch gave, in `fields`' order.
pub(super) fn changed_fields(fields: &[(&'static str, bool)]) -> Value {
    let names: Vec<&str> = fields
        .iter()
        .filter(|(_, given)| *given)
        .map(|(name, _)| *name)
        .collect();
    serde_json::json!({ "fields": names })
}

impl Scope {
    /// Records that this caller did `action` to `target`, answered with `status`; `detail`
    /// says what changed (a JSON object, never a secret value). Call it once the write is
    /// durable; a failure to record is logged, not answered (see the module's note).
    pub(super) async fn audit(
        &self,
        state: &ApiState,
        status: StatusCode,
        action: &'static str,
        target: Target<'_>,
        detail: Value,
    ) {
        record(
            state,
            NewAuditEntry {
                at: store::now_millis(),
                tenant_id: self.tenant_id().to_owned(),
                org_id: target.org_id.map(str::to_owned),
                actor: self.caller.subject.clone(),
                roles: self.caller.roles.clone(),
                action: action.to_owned(),
                resource_type: target.kind.to_owned(),
                resource_id: target.id.to_owned(),
                request_id: super::request_id::current(),
                status: status.as_u16(),
                detail_json: detail.to_string(),
                support: self.support,
            },
        )
        .await;
    }
}

/// Appends `entry`, logging (not answering) a failure: the write it records already happened.
pub(super) async fn record(state: &ApiState, entry: NewAuditEntry) {
    let (tenant, actor, action, resource) = (
        entry.tenant_id.clone(),
        entry.actor.clone(),
        entry.action.clone(),
        entry.resource_id.clone(),
    );
    if let Err(error) = state.host.store().append_audit(entry).await {
        tracing::error!(
            %tenant, %actor, %action, %resource, %error,
            "a management write succeeded but its audit entry could not be recorded"
        );
    }
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Only this caller's (a token's `sub`).
    actor: Option<String>,
    /// Only this action (`connection.update`, `secret.put`, ...).
    action: Option<String>,
    /// Only on this kind of resource (`adapter`, `connection`, `secret`, `subscriber`,
    /// `delivery`, `replay`).
    resource_type: Option<String>,
    /// Only on this resource (its id; a secret's name).
    resource_id: Option<String>,
    /// At or after (Unix milliseconds).
    since: Option<store::Millis>,
    /// Before (Unix milliseconds).
    until: Option<store::Millis>,
    /// Page size: 1 to 1000, default 100.
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// An audit entry as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AuditView {
    id: String,
    /// When the write took effect (Unix milliseconds).
    at: store::Millis,
    tenant_id: String,
    /// The org of the resource written; null: a platform-level resource.
    org_id: Option<String>,
    /// Who: the token's `sub`.
    actor: String,
    /// The roles the token granted.
    roles: Vec<String>,
    /// What, as `<resource>.<verb>`: `connection.update`, `secret.put`, `delivery.redrive`.
    action: String,
    resource_type: String,
    resource_id: String,
    /// The request's `X-Request-Id`.
    request_id: Option<String>,
    /// The HTTP status the write was answered with.
    status: u16,
    /// What changed: field names, versions; secrets by name, never a value.
    #[schema(value_type = Object)]
    detail: Value,
    /// Done by the platform's admin in support mode (`X-Support-Tenant`).
    support: bool,
}

impl From<AuditEntry> for AuditView {
    fn from(entry: AuditEntry) -> Self {
        Self {
            detail: serde_json::from_str(&entry.detail_json).unwrap_or(Value::Null),
            id: entry.id,
            at: entry.at,
            tenant_id: entry.tenant_id,
            org_id: entry.org_id,
            actor: entry.actor,
            roles: entry.roles,
            action: entry.action,
            resource_type: entry.resource_type,
            resource_id: entry.resource_id,
            request_id: entry.request_id,
            status: entry.status,
            support: entry.support,
        }
    }
}

/// `GET /v1/audit`: the tenant's audit entries of the org and the platform-level ones, newest
/// first. Any role of the API may read them.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page, newest first", body = Page<AuditView>),
        super::openapi::Problems,
    ),
)]
async fn list_audit(
    State(state): State<ApiState>,
    scope: Scope,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Page<AuditView>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let page = state
        .host
        .store()
        .list_audit(
            scope.tenant_id(),
            Some(&scope.org_id),
            AuditFilter {
                actor: query.actor,
                action: query.action,
                resource_type: query.resource_type,
                resource_id: query.resource_id,
                since: query.since,
                until: query.until,
            },
            PageRequest {
                limit: page_limit(query.limit)?,
                cursor: query.cursor,
            },
        )
        .await
        .map_err(list_error)?;
    Ok(Json(page.map(AuditView::from)))
}
