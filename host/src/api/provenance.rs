//! The provenance keys: the public key set every consumer verifies events with (served
//! unauthenticated at the well-known URL) and its rotation by the platform's admin.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::ApiError;
use super::audit::Target;
use super::auth::Role;
use super::manage::ApiState;
use super::scope::Scope;
use crate::provenance::{KeySet, WELL_KNOWN_PATH};

/// The provenance routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(WELL_KNOWN_PATH, get(key_set))
        .route("/v1/provenance-keys/rotate", post(rotate))
        .with_state(state)
}

/// `GET /.well-known/adapter-host/provenance-keys`: the Ed25519 public keys (a JWKS, RFC 8037)
/// that sign every event's `metadata.provenance`; the active key first, then the retired
/// ones, which keep verifying what they signed. Needs no token.
#[utoipa::path(
    get,
    path = "/.well-known/adapter-host/provenance-keys",
    tag = "provenance",
    security(()),
    responses(
        (status = 200, description = "The public keys", body = KeySet),
        super::openapi::Problems,
    ),
)]
pub(super) async fn key_set(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let provenance = state.host.provenance().clone();
    let keys = tokio::task::spawn_blocking(move || provenance.key_set())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let mut response = Json(keys).into_response();
    // A consumer may cache the set briefly; a rotation keeps the old keys in it.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(response)
}

/// `POST /v1/provenance-keys/rotate`: a new key signs events from now on; the old one's public
/// half stays in the key set, retired. For the platform's `admin` role with a platform-level
/// token, outside support mode; recorded in the audit log.
#[utoipa::path(
    post,
    path = "/v1/provenance-keys/rotate",
    tag = "provenance",
    responses(
        (status = 200, description = "The key set after the rotation", body = KeySet),
        super::openapi::Problems,
    ),
)]
pub(super) async fn rotate(
    State(state): State<ApiState>,
    scope: Scope,
) -> Result<Json<KeySet>, ApiError> {
    if scope.caller.role != Role::Admin || scope.caller.org_id.is_some() || scope.support {
        return Err(ApiError::Forbidden(
            "rotating the provenance key is for the platform's admin role, with a \
             platform-level token and without X-Support-Tenant"
                .into(),
        ));
    }
    let provenance = state.host.provenance().clone();
    let keys = tokio::task::spawn_blocking(move || provenance.rotate())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let active = keys
        .keys
        .first()
        .map(|key| key.kid.clone())
        .unwrap_or_default();
    tracing::info!(kid = %active, by = %scope.caller.subject, "provenance key rotated");
    scope
        .audit(
            &state,
            StatusCode::OK,
            "provenance_key.rotate",
            Target::new("provenance_key", &active, None),
            serde_json::json!({ "retired": keys.keys.get(1).map(|key| &key.kid) }),
        )
        .await;
    Ok(Json(keys))
}
