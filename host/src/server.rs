//! The HTTP server: the hosted webhook endpoint, admin operations, health and metrics.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::pipeline::{Ack, Host, Inbound, Reply};
use crate::store::DeliveryStatus;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Largest accepted webhook body, in bytes.
    pub max_body_bytes: usize,
    /// Bearer token of the admin operations (redrive); `None` disables them.
    pub admin_token: Option<String>,
    /// How the management API verifies its JWTs.
    pub auth: std::sync::Arc<crate::api::auth::AuthConfig>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            admin_token: None,
            auth: std::sync::Arc::default(),
        }
    }
}

#[derive(Debug, Clone)]
struct AppState {
    host: Host,
    settings: ServerSettings,
}

/// The application: every route, ready to serve or to test with `oneshot`.
pub fn app(host: Host, settings: ServerSettings) -> Router {
    let limit = settings.max_body_bytes;
    Router::new()
        .route(
            "/v1/hooks/{connection_id}",
            post(receive_webhook).layer(DefaultBodyLimit::max(limit)),
        )
        .route("/v1/deliveries/{delivery_id}/redrive", post(redrive))
        .route("/v1/events/replay", post(replay))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState {
            host: host.clone(),
            settings: settings.clone(),
        })
        .merge(crate::api::manage::router(crate::api::manage::ApiState {
            host,
            auth: settings.auth,
        }))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::MethodNotAllowed(format!("this endpoint does not take {method}"))
        })
}

/// What Salesforce expects in answer to an outbound message it may stop resending.
const SALESFORCE_ACK: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#,
    r#"<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">"#,
    r#"<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#,
);

fn ack_response(ack: Ack) -> Response {
    if ack.reply == Reply::SalesforceAck {
        // Stored durably: Salesforce may stop resending, whatever the adapter made of it (a
        // failed delivery is kept for redrive). Salesforce only takes a 200.
        return (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/xml; charset=utf-8"),
                (
                    header::HeaderName::from_static("x-delivery-id"),
                    ack.delivery_id.as_str(),
                ),
            ],
            SALESFORCE_ACK,
        )
            .into_response();
    }
    // A delivery the adapter failed on is kept for redrive: the CRM gains nothing by retrying.
    let status = match ack.status {
        DeliveryStatus::Failed | DeliveryStatus::Rejected => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    (status, axum::Json(ack)).into_response()
}

async fn receive_webhook(
    State(state): State<AppState>,
    Path(connection_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(_)
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::PayloadTooLarge(format!(
                "the body exceeds the limit of {} bytes",
                state.settings.max_body_bytes
            ))
        }
        other => ApiError::BadRequest(other.body_text()),
    })?;
    let inbound = Inbound {
        connection_id,
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        // One entry per header line; values that are not UTF-8 cannot be signature material.
        headers: headers
            .iter()
            .filter_map(|(name, value)| {
                value
                    .to_str()
                    .ok()
                    .map(|value| (name.as_str().to_owned(), value.to_owned()))
            })
            .collect(),
        body: body.to_vec(),
    };
    state.host.receive_webhook(inbound).await.map(ack_response)
}

fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.settings.admin_token else {
        return Err(ApiError::Forbidden(
            "admin operations are disabled: set ADAPTER_HOST_ADMIN_TOKEN".into(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "a valid admin bearer token is required".into(),
        ))
    }
}

async fn redrive(
    State(state): State<AppState>,
    Path(delivery_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    state.host.redrive(&delivery_id).await.map(ack_response)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state
        .host
        .store()
        .outbox_lag()
        .await
        .map(|_| "ready")
        .map_err(|e| ApiError::Unavailable(format!("the store is not available: {e}")))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let host = &state.host;
    if let Ok(lag) = host.store().outbox_lag().await {
        let metrics = host.metrics();
        metrics
            .outbox_pending
            .set(i64::try_from(lag.pending).unwrap_or(i64::MAX));
        let age = lag.oldest_pending_created_at.map_or(0, |created| {
            let now = crate::store::now_millis();
            (now - created).max(0) / 1000
        });
        metrics.outbox_lag_seconds.set(age);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        host.metrics().render(),
    )
        .into_response()
}

/// The longest time range one replay call may cover.
pub const MAX_REPLAY_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// A replay request: re-publish a tenant's published events appended in `[from_ms, to_ms)`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    tenant_id: String,
    from_ms: i64,
    to_ms: i64,
}

async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::Json<ReplayRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let axum::Json(request) = body?;
    let window = request.to_ms - request.from_ms;
    if window <= 0 {
        return Err(ApiError::BadRequest(
            "`to_ms` must be after `from_ms`".into(),
        ));
    }
    if window > crate::store::millis(MAX_REPLAY_WINDOW) {
        return Err(ApiError::BadRequest(format!(
            "a replay covers at most {} days; split the range",
            MAX_REPLAY_WINDOW.as_secs() / 86_400
        )));
    }
    let host = &state.host;
    let (mut after, mut replayed) = (0_i64, 0_u64);
    loop {
        let rows = host
            .store()
            .replay_range(
                &request.tenant_id,
                request.from_ms,
                request.to_ms,
                after,
                500,
            )
            .await
            .map_err(ApiError::internal)?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in &rows {
            // The same event id as the first time: consumers (and the bus) drop what they have.
            crate::relay::publish_row(host.bus().as_ref(), row)
                .await
                .map_err(|e| ApiError::Unavailable(format!("replay stopped: {e}")))?;
            replayed += 1;
        }
    }
    tracing::info!(tenant = %request.tenant_id, from = request.from_ms, to = request.to_ms, replayed, "replay");
    Ok(axum::Json(serde_json::json!({ "replayed": replayed })).into_response())
}
