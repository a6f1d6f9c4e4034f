//! The HTTP server: the hosted webhook endpoint, health and metrics, the management API
//! ([`crate::api::manage`]) and the web page on it ([`ui`]); [`listen`] accepts connections,
//! [`limits`] bounds request bodies.

pub mod limits;
pub mod listen;
pub mod ui;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::api::ApiError;
use crate::pipeline::{Ack, Host, Inbound, Reply, hook_path};
use crate::signatures::Secret;
use crate::store::DeliveryStatus;
pub use limits::RequestLimits;
pub use listen::ConnectionSettings;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Largest accepted webhook body, in bytes.
    pub max_body_bytes: usize,
    /// How the management API verifies its JWTs.
    pub auth: std::sync::Arc<crate::api::auth::AuthConfig>,
    /// Request limits: the head's size, the bodies of the other routes, and how long a body may
    /// take to arrive (the webhook limit is `max_body_bytes`).
    pub requests: RequestLimits,
    /// Limits of the connection layer (connections at once, header timeout and size).
    pub connections: ConnectionSettings,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            auth: std::sync::Arc::default(),
            requests: RequestLimits::default(),
            connections: ConnectionSettings::default(),
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
    let requests = RequestLimits {
        head_bytes: settings.connections.max_header_bytes,
        webhook_bytes: limit,
        upload_bytes: usize::try_from(host.sandbox().platform().max_component_bytes)
            .unwrap_or(usize::MAX),
        ..settings.requests.clone()
    };
    Router::new()
        // Every method reaches the handler, which answers those the connection does not take
        // with 405 and its `Allow`.
        .route(
            "/v1/hooks/{connection_id}",
            any(receive_webhook).layer(DefaultBodyLimit::max(limit)),
        )
        .route(
            "/v1/hooks/{connection_id}/{token}",
            any(receive_capability_webhook).layer(DefaultBodyLimit::max(limit)),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .with_state(AppState {
            host: host.clone(),
            settings: settings.clone(),
        })
        .merge(crate::api::manage::router(crate::api::manage::ApiState {
            host,
            auth: settings.auth,
        }))
        .merge(ui::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::MethodNotAllowed(format!("this endpoint does not take {method}"))
        })
        .layer(axum::middleware::from_fn_with_state(
            requests,
            limits::bound_requests,
        ))
        .layer(axum::middleware::from_fn(problems_everywhere))
        .layer(axum::middleware::from_fn(crate::api::request_id::assign))
}

/// Middleware: an error answered by anything but our own handlers (an extractor's rejection, a
/// path that is not UTF-8 once decoded) is turned into problem+json with the same status, its
/// text as the detail. Every error the host answers has one shape.
async fn problems_everywhere(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&text).trim().to_owned();
    let detail = if detail.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        detail
    };
    let mut problem = crate::api::problem::problem_response(status, detail);
    // Keep what the original answer said about the protocol (`Allow`, `Retry-After`, ...).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
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

/// The hosted webhook endpoint a CRM is given: the request is checked by the connection's
/// webhook guard (source allow list, method) and signature scheme, recorded, run through its
/// adapter, and answered once the outcome and its events are durable. A connection takes the
/// methods its scheme can verify (POST; GET too for HubSpot v2 and v3; PUT and PATCH for
/// unsigned and generic HMAC connections), or the fewer its `webhook.methods` name: others are
/// answered 405 with `Allow`.
#[utoipa::path(
    method(post, put, patch, get),
    path = "/v1/hooks/{connection_id}",
    tag = "webhooks",
    params(("connection_id" = String, Path, description = "The connection's id")),
    request_body(
        content = Vec<u8>,
        content_type = "application/octet-stream",
        description = "The CRM's delivery, byte for byte (signed by it)",
    ),
    responses(
        (status = 200, description = "Processed or ignored, or a retry of a delivery taken \
            before; Salesforce outbound messages get their SOAP Ack instead", body = Ack),
        (status = 202, description = "Taken, but the adapter failed or broke a contract: kept \
            for redrive (retrying gains nothing)", body = Ack),
        crate::api::openapi::Problems,
    ),
    security(()),
)]
async fn receive_webhook(
    State(state): State<AppState>,
    Path(connection_id): Path<String>,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = Received {
        method,
        uri,
        headers,
        peer: peer.map(|axum::Extension(ConnectInfo(peer))| peer.ip()),
    };
    take_webhook(&state, connection_id, None, request, body).await
}

/// A connection's webhook at its capability URL: the token in the path must be the
/// connection's (its `webhook.capability_secret`, the current value or, during a rotation's
/// grace period, the previous one). The token is never stored or logged: the delivery's path
/// is kept with `[redacted]` in its place.
#[utoipa::path(
    method(post, put, patch, get),
    path = "/v1/hooks/{connection_id}/{token}",
    tag = "webhooks",
    params(
        ("connection_id" = String, Path, description = "The connection's id"),
        ("token" = String, Path, description = "The connection's capability token"),
    ),
    request_body(
        content = Vec<u8>,
        content_type = "application/octet-stream",
        description = "The CRM's delivery, byte for byte",
    ),
    responses(
        (status = 200, description = "Processed or ignored, or a retry of a delivery taken \
            before; Salesforce outbound messages get their SOAP Ack instead", body = Ack),
        (status = 202, description = "Taken, but the adapter failed or broke a contract: kept \
            for redrive (retrying gains nothing)", body = Ack),
        crate::api::openapi::Problems,
    ),
    security(()),
)]
async fn receive_capability_webhook(
    State(state): State<AppState>,
    Path((connection_id, token)): Path<(String, String)>,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = Received {
        method,
        uri,
        headers,
        peer: peer.map(|axum::Extension(ConnectInfo(peer))| peer.ip()),
    };
    let token = Secret::new(token);
    take_webhook(&state, connection_id, Some(token), request, body).await
}

/// What the webhook handlers read of a request besides its body.
struct Received {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    peer: Option<std::net::IpAddr>,
}

async fn take_webhook(
    state: &AppState,
    connection_id: String,
    capability: Option<Secret>,
    Received {
        method,
        uri,
        headers,
        peer,
    }: Received,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| match ApiError::from_body(&rejection) {
        ApiError::PayloadTooLarge(_) => ApiError::PayloadTooLarge(format!(
            "the body exceeds the limit of {} bytes",
            state.settings.max_body_bytes
        )),
        other => other,
    })?;
    // The token never goes further than the check: the path kept names it `[redacted]`.
    let path = match &capability {
        Some(_) => hook_path(&connection_id, Some("[redacted]")),
        None => uri.path().to_owned(),
    };
    let inbound = Inbound {
        connection_id,
        method: method.to_string(),
        path,
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
        peer,
        capability,
    };
    state.host.receive_webhook(inbound).await.map(ack_response)
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Where each backend stands, as `/readyz` answers it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`.
    status: &'static str,
    /// The store's backend (`sqlite`, `postgres`).
    store: &'static str,
    /// The bus's backend (`memory`, `nats`).
    bus: &'static str,
}

/// Readiness: the store and the bus answer. Not ready (503): the problem names the backend.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        crate::api::openapi::Problems,
    ))]
async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Readiness>, ApiError> {
    let host = &state.host;
    let (store, bus) = (host.store(), host.bus());
    store.outbox_lag().await.map_err(|e| {
        ApiError::Unavailable(format!(
            "the store ({}) is not available: {e}",
            store.backend()
        ))
    })?;
    bus.check().await.map_err(|e| {
        ApiError::Unavailable(format!("the bus ({}) is not available: {e}", bus.backend()))
    })?;
    Ok(axum::Json(Readiness {
        status: "ready",
        store: store.backend(),
        bus: bus.backend(),
    }))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "The metrics", body = String,
        content_type = "text/plain; version=0.0.4")))]
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
    if let Ok(unfinished) = host.store().unfinished_deliveries().await {
        host.metrics()
            .deliveries_unfinished
            .set(i64::try_from(unfinished).unwrap_or(i64::MAX));
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        host.metrics().render(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
        body = Object, content_type = "application/json")))]
async fn openapi_json() -> Response {
    static DOCUMENT: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(crate::api::openapi::document);
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}
