//! A tenant's own retention (`/v1/retention`): how many days its raw delivery bodies (with the
//! HTTP answers recorded for them) and its invocation logs are kept before the purge empties
//! them, instead of the platform's.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::audit::Target;
use super::manage::{ApiState, internal};
use super::scope::Scope;
use crate::store::{self, TenantRetention};

/// The longest a tenant may keep either kind: ten years.
pub const MAX_DAYS: u32 = 3650;

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/retention", get(get_retention).put(put_retention))
        .with_state(state)
}

/// Days each kind is kept; null: for good (the platform's), or the platform's (the tenant's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RetentionDays {
    /// Raw delivery bodies and the HTTP answers recorded for them.
    #[serde(default)]
    bodies_days: Option<u32>,
    /// Invocation logs.
    #[serde(default)]
    logs_days: Option<u32>,
}

/// The tenant's retention: its own days, the platform's, and what applies.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RetentionView {
    /// What the tenant set (null: the platform's applies).
    tenant: RetentionDays,
    /// The platform's (null: kept for good).
    platform: RetentionDays,
    /// What the purge applies: the tenant's where set, else the platform's.
    effective: RetentionDays,
    /// When the tenant last set it, and who.
    updated_at: Option<store::Millis>,
    updated_by: Option<String>,
}

fn view(state: &ApiState, own: Option<TenantRetention>) -> RetentionView {
    let settings = &state.host.settings().retention;
    let days = |keep: Option<std::time::Duration>| {
        keep.map(|keep| u32::try_from(keep.as_secs() / 86_400).unwrap_or(u32::MAX))
    };
    let platform = RetentionDays {
        bodies_days: days(settings.bodies),
        logs_days: days(settings.logs),
    };
    let tenant = RetentionDays {
        bodies_days: own.as_ref().and_then(|own| own.bodies_days),
        logs_days: own.as_ref().and_then(|own| own.logs_days),
    };
    RetentionView {
        tenant,
        platform,
        effective: RetentionDays {
            bodies_days: tenant.bodies_days.or(platform.bodies_days),
            logs_days: tenant.logs_days.or(platform.logs_days),
        },
        updated_at: own.as_ref().map(|own| own.updated_at),
        updated_by: own.map(|own| own.updated_by),
    }
}

/// `GET /v1/retention`: how long the tenant's bodies and logs are kept.
#[utoipa::path(
    get,
    path = "/v1/retention",
    tag = "retention",
    responses(
        (status = 200, description = "The tenant's retention", body = RetentionView),
        super::openapi::Problems,
    ),
)]
pub(super) async fn get_retention(
    State(state): State<ApiState>,
    scope: Scope,
) -> Result<Json<RetentionView>, ApiError> {
    let own = state
        .host
        .store()
        .get_retention(scope.tenant_id())
        .await
        .map_err(internal)?;
    Ok(Json(view(&state, own)))
}

/// `PUT /v1/retention`: sets the days the tenant's bodies (with their recorded answers) and
/// logs are kept, 1 to 3650 each; a kind left out or null takes the platform's again. The purge
/// applies it at its next pass: a shorter time empties what is past it then. It applies to
/// every org of the tenant, so only a platform-level `tenant_admin` may set it. Audited.
#[utoipa::path(
    put,
    path = "/v1/retention",
    tag = "retention",
    request_body = RetentionDays,
    responses(
        (status = 200, description = "The tenant's retention as stored", body = RetentionView),
        super::openapi::Problems,
    ),
)]
pub(super) async fn put_retention(
    State(state): State<ApiState>,
    scope: Scope,
    body: Result<Json<RetentionDays>, JsonRejection>,
) -> Result<Json<RetentionView>, ApiError> {
    scope.check_write(scope.tenant_id(), None, || "tenant's retention".to_owned())?;
    let Json(days) = body?;
    for (field, value) in [
        ("bodies_days", days.bodies_days),
        ("logs_days", days.logs_days),
    ] {
        if value.is_some_and(|days| !(1..=MAX_DAYS).contains(&days)) {
            return Err(ApiError::BadRequest(format!(
                "`{field}` must be 1 to {MAX_DAYS} days, or null for the platform's"
            )));
        }
    }
    let tenant = scope.tenant_id().to_owned();
    let retention = TenantRetention {
        tenant_id: tenant.clone(),
        bodies_days: days.bodies_days,
        logs_days: days.logs_days,
        updated_at: store::now_millis(),
        updated_by: scope.caller.subject.clone(),
    };
    let store = state.host.store();
    store
        .put_retention(retention.clone())
        .await
        .map_err(internal)?;
    scope
        .audit(
            &state,
            StatusCode::OK,
            "retention.put",
            Target::new("retention", &tenant, None),
            serde_json::to_value(days).map_err(ApiError::internal)?,
        )
        .await;
    let own = (days != RetentionDays::default()).then_some(retention);
    Ok(Json(view(&state, own)))
}
