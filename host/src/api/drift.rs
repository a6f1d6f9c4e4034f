//! A connection's schema drift: `GET /v1/connections/{id}/drifts`, the changes the host found
//! in its CRM's payloads (see [`crate::drift`]), within the org scope.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};

use super::ApiError;
use super::connections::visible_connection;
use super::manage::{ApiState, ListQuery, list_error, list_query};
use super::scope::Scope;
use crate::store::{Drift, Page};

/// The drift routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/connections/{connection_id}/drifts", get(list_drifts))
        .with_state(state)
}

/// `GET /v1/connections/{id}/drifts`: newest first, each with the JSON pointer, how it
/// changed and one delivery that showed it.
#[utoipa::path(
    get,
    path = "/v1/connections/{connection_id}/drifts",
    tag = "connections",
    params(("connection_id" = String, Path, description = "The connection's id"), ListQuery),
    responses(
        (status = 200, description = "One page, newest first", body = Page<Drift>),
        super::openapi::Problems,
    ),
)]
pub(super) async fn list_drifts(
    State(state): State<ApiState>,
    scope: Scope,
    Path(connection_id): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<Drift>>, ApiError> {
    let connection = visible_connection(&state, &scope, &connection_id).await?;
    let drifts = state
        .host
        .store()
        .list_drifts(&connection.id, list_query(query)?)
        .await
        .map_err(list_error)?;
    Ok(Json(drifts))
}
