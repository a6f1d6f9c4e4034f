//! Integration health and alerts: a connection's health computed now
//! (`GET /v1/connections/{id}/health`), the tenant's summary of the latest assessments
//! (`GET /v1/health`), its thresholds (`GET`/`PUT /v1/health/rules`) and its alerts
//! (`GET /v1/alerts`). How health is computed: [`crate::health`].

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApiError;
use super::audit::Target;
use super::connections::visible_connection;
use super::manage::{ApiState, internal, list_error, page_limit};
use super::scope::Scope;
use crate::health::{HealthRules, Reason, Status, Thresholds};
use crate::store::{self, Alert, AlertFilter, AlertStatus, HealthSnapshot, Page, PageRequest};

/// The health routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/health", get(tenant_health))
        .route("/v1/health/rules", get(get_rules).put(put_rules))
        .route("/v1/alerts", get(list_alerts))
        .route(
            "/v1/connections/{connection_id}/health",
            get(connection_health),
        )
        .with_state(state)
}

/// A connection's health as last assessed by the monitor.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(super) struct HealthView {
    /// `healthy`, `degraded`, `failing`, `stale` or `error`.
    status: Status,
    /// The rules that fire, worst first in order of the rule table.
    reasons: Vec<Reason>,
    /// When it was assessed (Unix milliseconds).
    assessed_at: store::Millis,
    /// Since when it has had this status.
    changed_at: store::Millis,
}

impl HealthView {
    pub(super) fn of(snapshot: HealthSnapshot) -> Option<Self> {
        Some(Self {
            status: serde_json::from_value(Value::String(snapshot.status)).ok()?,
            reasons: serde_json::from_str(&snapshot.reasons_json).unwrap_or_default(),
            assessed_at: snapshot.assessed_at,
            changed_at: snapshot.changed_at,
        })
    }
}

/// The figures a connection's health is computed from, over the window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Figures {
    /// The window, in seconds.
    window_secs: u64,
    /// Deliveries received in the window and completed (webhook and pushed pages).
    deliveries: u64,
    /// Of those, failed (kept for redrive).
    deliveries_failed: u64,
    /// Of those, refused by the adapter as malformed.
    deliveries_rejected: u64,
    /// Failed share, a decimal string (`"0.2500"`).
    failure_rate: String,
    last_delivery_at: Option<store::Millis>,
    /// The latest processed or ignored delivery.
    last_success_at: Option<store::Millis>,
    /// Poll runs ended in the window.
    polls: u64,
    polls_failed: u64,
    /// Poll runs failed in a row.
    poll_failures_in_a_row: u32,
    /// The latest successful run's end.
    last_poll_success_at: Option<store::Millis>,
    /// Refused signatures in the window (counted up to the monitor's last tick).
    signature_failures: u64,
    /// Its events a subscriber gave up on.
    dead_subscriber_deliveries: u64,
    /// Its events waiting to be published.
    outbox_pending: u64,
    /// Age of the oldest of them, in seconds.
    outbox_lag_secs: Option<i64>,
}

/// A connection's health computed now, with its figures and open alerts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ConnectionHealth {
    connection_id: String,
    status: Status,
    reasons: Vec<Reason>,
    /// When (now; Unix milliseconds).
    assessed_at: store::Millis,
    figures: Figures,
    /// The thresholds applied (the tenant's, for this connection).
    thresholds: Thresholds,
    /// Its open alerts.
    open_alerts: Vec<AlertView>,
}

/// `GET /v1/connections/{id}/health`: the connection's health computed now.
#[utoipa::path(
    get,
    path = "/v1/connections/{connection_id}/health",
    tag = "health",
    params(("connection_id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "Its health now", body = ConnectionHealth),
        super::openapi::Problems,
    ),
)]
async fn connection_health(
    State(state): State<ApiState>,
    scope: Scope,
    Path(connection_id): Path<String>,
) -> Result<Json<ConnectionHealth>, ApiError> {
    let connection = visible_connection(&state, &scope, &connection_id).await?;
    let rules = state
        .host
        .health_rules(&connection.tenant_id)
        .await
        .map_err(internal)?;
    let assessed = state
        .host
        .assess_connection(&connection, &rules)
        .await
        .map_err(internal)?;
    let open = state
        .host
        .store()
        .list_alerts(
            scope.tenant_id(),
            Some(&scope.org_id),
            AlertFilter {
                status: Some(AlertStatus::Open),
                connection_id: Some(connection.id.clone()),
                rule: None,
            },
            PageRequest {
                limit: 100,
                cursor: None,
            },
        )
        .await
        .map_err(internal)?;
    let a = &assessed.activity;
    Ok(Json(ConnectionHealth {
        connection_id: connection.id,
        status: assessed.assessment.status,
        reasons: assessed.assessment.reasons,
        assessed_at: assessed.at,
        figures: Figures {
            window_secs: assessed.thresholds.window_secs,
            deliveries: a.deliveries,
            deliveries_failed: a.deliveries_failed,
            deliveries_rejected: a.deliveries_rejected,
            failure_rate: crate::health::rate(a.deliveries_failed, a.deliveries),
            last_delivery_at: a.last_delivery_at,
            last_success_at: a.last_success_at,
            polls: a.polls,
            polls_failed: a.polls_failed,
            poll_failures_in_a_row: a.poll_failures_in_a_row,
            last_poll_success_at: a.last_poll_success_at,
            signature_failures: a.signature_failures,
            dead_subscriber_deliveries: a.dead_subscriber_deliveries,
            outbox_pending: a.outbox_pending,
            outbox_lag_secs: a
                .outbox_oldest_pending_at
                .map(|at| (assessed.at - at).max(0) / 1000),
        },
        thresholds: assessed.thresholds,
        open_alerts: open.items.into_iter().map(AlertView::from).collect(),
    }))
}

/// The tenant's health at a glance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TenantHealth {
    /// The worst status of its connections (`healthy` without any).
    status: Status,
    /// Connections by status, as last assessed.
    counts: std::collections::BTreeMap<String, u64>,
    /// Connections not assessed yet (created since the monitor's last tick).
    not_assessed: u64,
    /// The connections that are not healthy, worst first.
    unhealthy: Vec<UnhealthyConnection>,
    /// Open alerts in the scope.
    open_alerts: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct UnhealthyConnection {
    connection_id: String,
    #[serde(flatten)]
    health: HealthView,
}

/// `GET /v1/health`: the tenant's connections' health in the org scope, as the monitor last
/// assessed them.
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "health",
    responses(
        (status = 200, description = "The tenant's summary", body = TenantHealth),
        super::openapi::Problems,
    ),
)]
async fn tenant_health(
    State(state): State<ApiState>,
    scope: Scope,
) -> Result<Json<TenantHealth>, ApiError> {
    let store = state.host.store();
    let snapshots = store
        .list_health(scope.tenant_id(), Some(&scope.org_id))
        .await
        .map_err(internal)?;
    let connections = count_connections(&state, &scope).await?;
    let mut counts: std::collections::BTreeMap<String, u64> = [
        Status::Healthy,
        Status::Degraded,
        Status::Stale,
        Status::Failing,
        Status::Error,
    ]
    .into_iter()
    .map(|s| (s.as_str().to_owned(), 0))
    .collect();
    let mut unhealthy = Vec::new();
    for snapshot in snapshots {
        let id = snapshot.connection_id.clone();
        let Some(view) = HealthView::of(snapshot) else {
            continue;
        };
        *counts.entry(view.status.as_str().to_owned()).or_default() += 1;
        if view.status != Status::Healthy {
            unhealthy.push(UnhealthyConnection {
                connection_id: id,
                health: view,
            });
        }
    }
    unhealthy.sort_by_key(|view| std::cmp::Reverse(view.health.status));
    let assessed: u64 = counts.values().sum();
    let mut open_alerts = 0;
    let mut cursor = None;
    loop {
        let page = store
            .list_alerts(
                scope.tenant_id(),
                Some(&scope.org_id),
                AlertFilter {
                    status: Some(AlertStatus::Open),
                    ..AlertFilter::default()
                },
                PageRequest {
                    limit: 1000,
                    cursor,
                },
            )
            .await
            .map_err(internal)?;
        open_alerts += page.items.len() as u64;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(Json(TenantHealth {
        status: unhealthy
            .first()
            .map_or(Status::Healthy, |u| u.health.status),
        counts,
        not_assessed: connections.saturating_sub(assessed),
        unhealthy,
        open_alerts,
    }))
}

/// How many connections the scope sees.
async fn count_connections(state: &ApiState, scope: &Scope) -> Result<u64, ApiError> {
    let mut count = 0;
    let mut cursor = None;
    loop {
        let page = state
            .host
            .store()
            .list_connections(
                scope.tenant_id(),
                Some(&scope.org_id),
                PageRequest {
                    limit: 1000,
                    cursor,
                },
            )
            .await
            .map_err(internal)?;
        count += page.items.len() as u64;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(count),
        }
    }
}

/// `GET /v1/health/rules`: the tenant's thresholds (the platform's defaults where it set
/// none), with the per-connection ones of the connections the scope sees.
#[utoipa::path(
    get,
    path = "/v1/health/rules",
    tag = "health",
    responses(
        (status = 200, description = "The thresholds", body = HealthRules),
        super::openapi::Problems,
    ),
)]
async fn get_rules(
    State(state): State<ApiState>,
    scope: Scope,
) -> Result<Json<HealthRules>, ApiError> {
    let mut rules = state
        .host
        .health_rules(scope.tenant_id())
        .await
        .map_err(internal)?;
    // Another org's connections are not named to this one.
    let mut visible = std::collections::BTreeMap::new();
    for (id, changes) in std::mem::take(&mut rules.connections) {
        if visible_connection(&state, &scope, &id).await.is_ok() {
            visible.insert(id, changes);
        }
    }
    rules.connections = visible;
    Ok(Json(rules))
}

/// `PUT /v1/health/rules`: replaces the tenant's thresholds (fields left out take the
/// platform's defaults). They apply to every org's connections, so only a platform-level
/// `tenant_admin` may set them.
#[utoipa::path(
    put,
    path = "/v1/health/rules",
    tag = "health",
    request_body = HealthRules,
    responses(
        (status = 200, description = "The thresholds as stored", body = HealthRules),
        super::openapi::Problems,
    ),
)]
async fn put_rules(
    State(state): State<ApiState>,
    scope: Scope,
    body: Result<Json<HealthRules>, JsonRejection>,
) -> Result<Json<HealthRules>, ApiError> {
    scope.check_write(scope.tenant_id(), None, || {
        "tenant's health rules".to_owned()
    })?;
    let Json(rules) = body?;
    rules
        .validate()
        .map_err(|e| ApiError::BadRequest(format!("health rules: {e}")))?;
    let text = serde_json::to_string(&rules).map_err(ApiError::internal)?;
    state
        .host
        .store()
        .set_health_rules(scope.tenant_id(), &text, store::now_millis())
        .await
        .map_err(internal)?;
    let tenant = scope.tenant_id().to_owned();
    scope
        .audit(
            &state,
            StatusCode::OK,
            "health_rules.put",
            Target::new("health_rules", &tenant, None),
            serde_json::json!({ "connections": rules.connections.keys().collect::<Vec<_>>() }),
        )
        .await;
    Ok(Json(rules))
}

/// An alert as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AlertView {
    id: String,
    org_id: Option<String>,
    connection_id: String,
    provider: String,
    /// The rule that fired.
    rule: String,
    /// The health status it implied.
    severity: String,
    /// What was wrong.
    detail: String,
    /// The figures when it fired.
    #[schema(value_type = Object)]
    figures: Value,
    /// `open` or `resolved`.
    status: AlertStatus,
    raised_at: store::Millis,
    resolved_at: Option<store::Millis>,
    /// The `integration_alert.raised` event's id.
    raised_event_id: String,
    /// The `integration_alert.resolved` event's id.
    resolved_event_id: Option<String>,
}

impl From<Alert> for AlertView {
    fn from(alert: Alert) -> Self {
        Self {
            figures: serde_json::from_str(&alert.figures_json).unwrap_or(Value::Null),
            id: alert.id,
            org_id: alert.org_id,
            connection_id: alert.connection_id,
            provider: alert.provider,
            rule: alert.rule,
            severity: alert.severity,
            detail: alert.detail,
            status: alert.status,
            raised_at: alert.raised_at,
            resolved_at: alert.resolved_at,
            raised_event_id: alert.raised_event_id,
            resolved_event_id: alert.resolved_event_id,
        }
    }
}

/// Filters of `GET /v1/alerts`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AlertQuery {
    /// `open` or `resolved`.
    status: Option<AlertStatus>,
    /// Only this connection's.
    connection_id: Option<String>,
    /// Only this rule's (`delivery_failures`, `stale`, ...).
    rule: Option<String>,
    /// Page size: 1 to 1000, default 100.
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /v1/alerts`: the alerts of the tenant's connections in the org scope, newest first.
#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "health",
    params(AlertQuery),
    responses(
        (status = 200, description = "One page, newest first", body = Page<AlertView>),
        super::openapi::Problems,
    ),
)]
async fn list_alerts(
    State(state): State<ApiState>,
    scope: Scope,
    query: Result<Query<AlertQuery>, QueryRejection>,
) -> Result<Json<Page<AlertView>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let page = state
        .host
        .store()
        .list_alerts(
            scope.tenant_id(),
            Some(&scope.org_id),
            AlertFilter {
                status: query.status,
                connection_id: query.connection_id,
                rule: query.rule,
            },
            PageRequest {
                limit: page_limit(query.limit)?,
                cursor: query.cursor,
            },
        )
        .await
        .map_err(list_error)?;
    Ok(Json(page.map(AlertView::from)))
}
