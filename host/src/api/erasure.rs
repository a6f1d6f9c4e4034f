//! Erasing a tenant by crypto-shredding (`POST /v1/erasure`): its data key is destroyed, so
//! every stored payload of it (delivery bodies, recorded answers, invocation logs, outbox
//! payloads) is unreadable at once, while every row stays. Erasing one person
//! (`POST /v1/erasure/subjects`): through the identity map, the payloads that hold its CRM
//! record are overwritten. Both audited.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::audit::Target;
use super::audit::record;
use super::auth::{self, Role};
use super::manage::ApiState;
use super::manage::internal;
use super::scope::Scope;
use crate::sandbox::{self, Outcome};
use crate::store::{self, Erasure, NewAuditEntry, Subject, SubjectErasure};

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/erasure", post(erase_tenant))
        .route("/v1/erasure/subjects", post(erase_subject))
        .with_state(state)
}

/// What confirms an erasure: the tenant's own id, typed again.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ErasureRequest {
    /// The id of the tenant to erase: the caller's (or the supported tenant's).
    confirm_tenant_id: String,
}

/// What an erasure did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ErasureView {
    tenant_id: String,
    /// When it was erased (Unix ms).
    erased_at: store::Millis,
    #[serde(flatten)]
    erasure: Erasure,
}

/// `POST /v1/erasure`: destroys the tenant's data key. Everything it stored so far reads as
/// erased from then on: delivery bodies (no redrive), recorded answers, invocation logs, and
/// outbox payloads (the rows keep their ids, types and times; events not yet published are
/// dead). Cannot be undone. For a tenant admin with a tenant-wide token (not an org's), or the
/// platform's admin with `X-Support-Tenant`; the body must name the tenant again.
#[utoipa::path(
    post,
    path = "/v1/erasure",
    tag = "erasure",
    request_body = ErasureRequest,
    responses(
        (status = 200, description = "The tenant's data is erased", body = ErasureView),
        super::openapi::Problems,
    ),
)]
pub(super) async fn erase_tenant(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<ErasureRequest>, JsonRejection>,
) -> Result<Json<ErasureView>, ApiError> {
    let caller = auth::authenticate(&state.auth, &headers)?;
    let (caller, support) = Scope::tenant_caller(caller, &headers)?;
    let allowed = match caller.role {
        Role::Viewer => false,
        Role::TenantAdmin => caller.org_id.is_none(),
        Role::Admin => support,
    };
    if !allowed {
        return Err(ApiError::Forbidden(
            "erasing a tenant is for its tenant_admin with a token of the whole tenant (no \
             org_id), or the platform's admin with X-Support-Tenant"
                .into(),
        ));
    }
    let Json(request) = body?;
    if request.confirm_tenant_id != caller.tenant_id {
        return Err(ApiError::BadRequest(format!(
            "`confirm_tenant_id` must be the tenant being erased, `{}`",
            caller.tenant_id
        )));
    }
    let failure = sandbox::Failure::new(
        sandbox::FailureKind::Interrupted,
        "the tenant's data was erased (its data key destroyed) before this delivery was \
         processed: its body is gone, so it never ran"
            .to_owned(),
    );
    let reason = serde_json::to_string(&Outcome::Failed { failure }).map_err(ApiError::internal)?;
    let now = store::now_millis();
    let erasure = state
        .host
        .store()
        .erase_tenant(&caller.tenant_id, &reason, now)
        .await
        .map_err(ApiError::internal)?;
    tracing::warn!(
        tenant = %caller.tenant_id,
        by = %caller.subject,
        key_destroyed = erasure.key_destroyed,
        "tenant erased: its data key is destroyed"
    );
    record(
        &state,
        NewAuditEntry {
            at: now,
            tenant_id: caller.tenant_id.clone(),
            org_id: None,
            actor: caller.subject.clone(),
            roles: caller.roles.clone(),
            action: "tenant.erase".to_owned(),
            resource_type: "tenant".to_owned(),
            resource_id: caller.tenant_id.clone(),
            request_id: super::request_id::current(),
            status: StatusCode::OK.as_u16(),
            detail_json: serde_json::to_string(&erasure).map_err(ApiError::internal)?,
            support,
        },
    )
    .await;
    Ok(Json(ErasureView {
        tenant_id: caller.tenant_id,
        erased_at: now,
        erasure,
    }))
}

/// Which CRM record to erase: as the identity map names it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SubjectRequest {
    /// Its system (`external_source`, as `GET /v1/identities` shows it).
    source: String,
    /// Its id there (`external_id`).
    external_id: String,
}

/// `POST /v1/erasure/subjects`: erases one person's data in the caller's org (and, for a
/// platform-level token, at platform level), found through the identity map: every event of the platform
/// entities the record is reads as erased (`payload` null; the rows stay; events not yet
/// published are dead), and the deliveries those events came from lose their bodies, logs and
/// recorded answers (whole: a raw body holding other records too cannot be cut). Its identity
/// entries are forgotten. 404 when the map knows no such record. Cannot be undone. Audited.
#[utoipa::path(
    post,
    path = "/v1/erasure/subjects",
    tag = "erasure",
    request_body = SubjectRequest,
    responses(
        (status = 200, description = "The record's data is erased", body = SubjectErasure),
        super::openapi::Problems,
    ),
)]
pub(super) async fn erase_subject(
    State(state): State<ApiState>,
    scope: Scope,
    body: Result<Json<SubjectRequest>, JsonRejection>,
) -> Result<Json<SubjectErasure>, ApiError> {
    scope.require_write()?;
    let Json(request) = body?;
    for (field, value) in [
        ("source", &request.source),
        ("external_id", &request.external_id),
    ] {
        if value.is_empty() {
            return Err(ApiError::BadRequest(format!("`{field}` is empty")));
        }
    }
    let subject = Subject {
        tenant_id: scope.tenant_id().to_owned(),
        org_id: Some(scope.org_id.clone()),
        platform_level: scope.caller.org_id.is_none(),
        source: request.source.clone(),
        external_id: request.external_id.clone(),
    };
    let erased = state
        .host
        .store()
        .erase_subject(subject, store::now_millis())
        .await
        .map_err(internal)?;
    if erased.identities == 0 {
        return Err(ApiError::NotFound(format!(
            "no record `{}` of `{}` in the identity map",
            request.external_id, request.source
        )));
    }
    let target = format!("{}/{}", request.source, request.external_id);
    scope
        .audit(
            &state,
            StatusCode::OK,
            "subject.erase",
            Target::new("subject", &target, Some(&scope.org_id)),
            serde_json::to_value(erased).map_err(ApiError::internal)?,
        )
        .await;
    Ok(Json(erased))
}
