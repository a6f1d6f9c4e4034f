//! One recorded invocation, exported for an exact replay (`GET /v1/invocations/{id}/export`,
//! the `INVOCATION.json` that `adapter-host replay` takes), and replayed by the host
//! (`POST /v1/invocations/{id}/replay`), on the version that ran or another one to test a fix
//! against it (see [`crate::replay`]). Both are adapter development: a tenant admin's, and, when
//! the version declares personal data, only with the `pii_reader` role (the input holds the
//! CRM's records whole).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::ApiError;
use super::manage::{ApiState, internal};
use super::scope::Scope;
use crate::replay::{self, ExportedAdapter, InvocationExport, RecordedInput, RecordedResponse};
use crate::sandbox::VersionRecord;
use crate::store::Export;

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/v1/invocations/{invocation_id}/export",
            get(export_invocation),
        )
        .route(
            "/v1/invocations/{invocation_id}/replay",
            post(replay_invocation),
        )
        .with_state(state)
}

/// The export of invocation `id`, when the scope may have it.
async fn exported(
    state: &ApiState,
    scope: &Scope,
    invocation_id: &str,
) -> Result<InvocationExport, ApiError> {
    let store = state.host.store();
    let not_found = || ApiError::NotFound(format!("no invocation `{invocation_id}`"));
    let (invocation, replay) = store
        .get_invocation_replay(invocation_id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let delivery = store
        .get_delivery(&invocation.delivery_id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    store
        .get_connection(&delivery.info.connection_id)
        .await
        .map_err(internal)?
        .filter(|c| scope.sees(&c.tenant_id, c.org_id.as_deref()))
        .ok_or_else(not_found)?;
    scope.require_write()?;
    let record = &invocation.record;
    let version = store
        .get_adapter_version(&record.adapter_id, record.adapter_version)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::internal("an invocation's adapter version is missing"))?;
    let declared: VersionRecord = serde_json::from_str(&version.info_json).unwrap_or_default();
    let personal = declared
        .info
        .event_types
        .iter()
        .any(|t| !t.pii_fields.is_empty());
    if personal && !scope.caller.sees_personal_data {
        return Err(ApiError::Forbidden(format!(
            "version {} of adapter `{}` declares personal data: its invocations are exported \
             and replayed only for a token with the `pii_reader` role",
            record.adapter_version, record.adapter_id
        )));
    }
    let unavailable = |why: &str| {
        ApiError::Conflict(format!(
            "invocation `{invocation_id}` cannot be replayed: {why}"
        ))
    };
    if !matches!(record.export, Export::HandleWebhook | Export::HandlePoll) {
        return Err(unavailable(
            "it asked for a poll request, whose input is not stored (replay the page it fetched)",
        ));
    }
    if delivery.body_erased {
        return Err(unavailable("its input was erased"));
    }
    if delivery.info.body_purged_at.is_some() {
        return Err(unavailable(
            "its input has expired (the retention of delivery bodies)",
        ));
    }
    let replay = replay.ok_or_else(|| {
        unavailable(
            "nothing was recorded to replay it (it ran before this host recorded replays, or \
             its log was purged or erased)",
        )
    })?;
    let record_json: replay::ReplayRecord =
        serde_json::from_str(&replay).map_err(ApiError::internal)?;
    let input = RecordedInput::of(&delivery.to_input())
        .ok_or_else(|| ApiError::internal("a stored delivery has no input"))?;
    let responses = store
        .list_exchanges(&invocation.delivery_id)
        .await
        .map_err(internal)?
        .iter()
        .filter(|e| e.invocation_id.as_deref() == Some(invocation_id))
        .map(RecordedResponse::of)
        .collect();
    Ok(InvocationExport {
        format: replay::FORMAT.to_owned(),
        invocation_id: invocation.id,
        delivery_id: invocation.delivery_id,
        adapter: ExportedAdapter {
            id: record.adapter_id.clone(),
            version: record.adapter_version,
            sha256: record.adapter_sha256.clone(),
        },
        export: record.export,
        limits: serde_json::from_str(&version.limits_json).map_err(ApiError::internal)?,
        input,
        record: record_json,
        responses,
    })
}

/// `GET /v1/invocations/{id}/export`: everything that replays the invocation exactly (its
/// input, the state it saw, its seed and clock readings, the answers to its requests) and what
/// it computed. No secret: credentials never reach what is stored.
#[utoipa::path(
    get,
    path = "/v1/invocations/{invocation_id}/export",
    tag = "deliveries",
    params(("invocation_id" = String, Path, description = "The invocation's id (a delivery's `invocations[].id`)")),
    responses(
        (status = 200, description = "The invocation, for `adapter-host replay`", body = InvocationExport),
        super::openapi::Problems,
    ),
)]
pub(super) async fn export_invocation(
    State(state): State<ApiState>,
    scope: Scope,
    Path(invocation_id): Path<String>,
) -> Result<Json<InvocationExport>, ApiError> {
    Ok(Json(exported(&state, &scope, &invocation_id).await?))
}

/// What to replay an invocation on.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayRequest {
    /// Another version of the same adapter (a fix to test against the recording); default:
    /// the version that ran.
    #[serde(default)]
    adapter_version: Option<u32>,
}

/// `POST /v1/invocations/{id}/replay`: runs the invocation again in the sandbox, exactly as it
/// ran, and says whether the outcome is the same byte for byte (and where not). Writes nothing.
#[utoipa::path(
    post,
    path = "/v1/invocations/{invocation_id}/replay",
    tag = "deliveries",
    params(("invocation_id" = String, Path, description = "The invocation's id")),
    request_body(content = Option<ReplayRequest>),
    responses(
        (status = 200, description = "What the replay computed; nothing was written", body = replay::Replayed),
        super::openapi::Problems,
    ),
)]
pub(super) async fn replay_invocation(
    State(state): State<ApiState>,
    scope: Scope,
    Path(invocation_id): Path<String>,
    body: Bytes,
) -> Result<Json<replay::Replayed>, ApiError> {
    let request: ReplayRequest = if body.is_empty() {
        ReplayRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not a replay request: {e}")))?
    };
    let export = exported(&state, &scope, &invocation_id).await?;
    let version = request.adapter_version.unwrap_or(export.adapter.version);
    let stored = state
        .host
        .store()
        .get_adapter_version(&export.adapter.id, version)
        .await
        .map_err(internal)?
        .filter(|v| v.status == crate::store::VersionStatus::Ready)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "adapter `{}` has no ready version {version}",
                export.adapter.id
            ))
        })?;
    let adapter = state
        .host
        .adapter(&stored.adapter_id, stored.version)
        .await
        .map_err(ApiError::internal)?;
    let replayed = replay::replay(&adapter, &export, version != export.adapter.version)
        .await
        .map_err(ApiError::BadRequest)?;
    Ok(Json(replayed))
}
