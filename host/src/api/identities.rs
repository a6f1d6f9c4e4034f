//! The identity map (`GET /v1/identities`): which platform entity each CRM record is, with
//! where the host first and last saw it, within the caller's org.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::ApiError;
use super::manage::{ApiState, list_error, page_limit};
use super::scope::Scope;
use crate::store::{Identity, IdentityFilter, Page};

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/identities", get(list_identities))
        .with_state(state)
}

/// Filters of `GET /v1/identities`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct IdentitiesQuery {
    /// The system of the id (`external_source`: `salesforce`, `champion_health`).
    source: Option<String>,
    /// The entity type (`member`, `deal`).
    entity_type: Option<String>,
    /// The CRM's id of the record (`external_id`).
    external_id: Option<String>,
    /// The platform's entity id.
    entity_id: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /v1/identities`: the tenant's identity map in the caller's org (with the platform-level
/// entries), newest first: for each CRM record an adapter named (`external_source` and
/// `external_id` in an event's payload), the platform's entity id, and the first and last
/// event and connection that named it. `?source=salesforce&external_id=003...` looks one up.
#[utoipa::path(
    get,
    path = "/v1/identities",
    tag = "identities",
    params(IdentitiesQuery),
    responses(
        (status = 200, description = "A page of identities", body = Page<Identity>),
        super::openapi::Problems,
    ),
)]
pub(super) async fn list_identities(
    State(state): State<ApiState>,
    scope: Scope,
    query: Result<Query<IdentitiesQuery>, QueryRejection>,
) -> Result<Json<Page<Identity>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let page = state
        .host
        .store()
        .list_identities(IdentityFilter {
            tenant_id: scope.tenant_id().to_owned(),
            org_id: Some(scope.org_id.clone()),
            source: query.source,
            entity_type: query.entity_type,
            external_id: query.external_id,
            entity_id: query.entity_id,
            limit: page_limit(query.limit)?,
            cursor: query.cursor,
        })
        .await
        .map_err(list_error)?;
    Ok(Json(page))
}
