//! The orgs of a tenant as the host knows them: `GET /v1/orgs`. Orgs live on the platform; the
//! host lists those its rows name (a connection's own org or allowed orgs, an adapter's, a
//! subscriber's), so that a platform-level caller can pick the org to act in (`X-Org-Id`).
//! An org-scoped caller sees its own org only, whatever it asks.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};

use super::ApiError;
use super::auth;
use super::manage::{ApiState, ListQuery, list_error, list_query};
use super::scope::Scope;
use crate::store::{OrgUse, Page};

/// The org routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/orgs", get(list_orgs))
        .with_state(state)
}

/// `GET /v1/orgs`: the tenant's orgs by id, each with the rows that name it. Needs no
/// `X-Org-Id` (it is how a platform-level caller finds one); `X-Support-Tenant` applies.
#[utoipa::path(
    get,
    path = "/v1/orgs",
    tag = "orgs",
    params(ListQuery),
    responses(
        (status = 200, description = "One page, by org id", body = Page<OrgUse>),
        super::openapi::Problems,
    ),
)]
pub(super) async fn list_orgs(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<OrgUse>>, ApiError> {
    let caller = auth::authenticate(&state.auth, &headers)?;
    let (caller, _support) = Scope::tenant_caller(caller, &headers)?;
    let page = list_query(query)?;
    let only = caller.org_id.as_deref();
    let mut orgs = state
        .host
        .store()
        .list_orgs(&caller.tenant_id, only, page)
        .await
        .map_err(list_error)?;
    // An org-scoped caller's org is listed even before any row names it.
    if let Some(org) = only
        && orgs.items.is_empty()
    {
        orgs.items.push(OrgUse {
            org_id: org.to_owned(),
            connections: 0,
            allowed_by: 0,
            adapters: 0,
            subscribers: 0,
        });
        orgs.next_cursor = None;
    }
    Ok(Json(orgs))
}
