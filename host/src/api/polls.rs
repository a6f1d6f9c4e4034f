//! Polling over the management API: run a connection's poll now, list its runs, and take a
//! page an external poller pushes.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use subtle::ConstantTimeEq as _;

use super::ApiError;
use super::audit::Target;
use super::connections::visible_connection;
use super::manage::{ApiState, ListQuery, internal, list_error, list_query};
use super::scope::Scope;
use crate::poll::PollingConfig;
use crate::store::{self, DeliveryStatus, Page, PollRun, PollState};

/// The header a pushed page's cursor travels in: the cursor the page was fetched with (absent
/// before the first page).
pub const CURSOR_HEADER: &str = "poll-cursor";

/// The polling routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/connections/{connection_id}/poll", post(poll_now))
        .route("/v1/connections/{connection_id}/polls", get(list_polls))
        .route(
            "/v1/connections/{connection_id}/polls/{run_id}",
            get(get_poll),
        )
        .route(
            "/v1/connections/{connection_id}/poll-results",
            post(push_page),
        )
        .with_state(state)
}

/// `POST /v1/connections/{id}/poll`: the run just started.
#[utoipa::path(
    post,
    path = "/v1/connections/{connection_id}/poll",
    tag = "polling",
    params(("connection_id" = String, Path, description = "The connection's id")),
    responses(
        (status = 202, description = "A run started; follow it at GET .../polls", body = PollRun),
        super::openapi::Problems,
    ),
)]
async fn poll_now(
    State(state): State<ApiState>,
    scope: Scope,
    Path(connection_id): Path<String>,
) -> Result<Response, ApiError> {
    let connection = visible_connection(&state, &scope, &connection_id).await?;
    scope.check_write(&connection.tenant_id, connection.org_id.as_deref(), || {
        format!("connection `{connection_id}`")
    })?;
    let run = state
        .host
        .poll_now(&connection.id)
        .await
        .map_err(|e| match e {
            store::Error::Conflict(why) => ApiError::Conflict(why),
            store::Error::Invalid(why) => ApiError::Conflict(why),
            other => internal(other),
        })?;
    tracing::info!(connection = %connection.id, run = %run.id, by = %scope.caller.subject, "poll started");
    scope
        .audit(
            &state,
            StatusCode::ACCEPTED,
            "poll.start",
            Target::new("connection", &connection.id, connection.org_id.as_deref()),
            serde_json::json!({"run_id": run.id}),
        )
        .await;
    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
}

/// A connection's poll state and one page of its runs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PollsView {
    /// The schedule and checkpoint; null before the first run.
    state: Option<PollState>,
    /// Runs, newest first.
    items: Vec<PollRun>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// `GET /v1/connections/{id}/polls`.
#[utoipa::path(
    get,
    path = "/v1/connections/{connection_id}/polls",
    tag = "polling",
    params(("connection_id" = String, Path, description = "The connection's id"), ListQuery),
    responses(
        (status = 200, description = "The poll state and its runs, newest first", body = PollsView),
        super::openapi::Problems,
    ),
)]
async fn list_polls(
    State(state): State<ApiState>,
    scope: Scope,
    Path(connection_id): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<PollsView>, ApiError> {
    let connection = visible_connection(&state, &scope, &connection_id).await?;
    let store = state.host.store();
    let Page { items, next_cursor } = store
        .list_poll_runs(&connection.id, list_query(query)?)
        .await
        .map_err(list_error)?;
    let poll_state = store.poll_state(&connection.id).await.map_err(internal)?;
    Ok(Json(PollsView {
        state: poll_state,
        items,
        next_cursor,
    }))
}

/// One run and every request it made.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PollView {
    /// The run.
    run: PollRun,
    /// Its requests in order: each page's fetch and its adapter's own requests (with the
    /// page's `delivery_id`), and any that got no page (a refused or failed fetch, a 429 or
    /// 5xx answer that ended the run). Credentials show as `[redacted]`.
    #[schema(value_type = Vec<Object>)]
    requests: Vec<store::StoredExchange>,
}

/// `GET /v1/connections/{id}/polls/{run_id}`.
#[utoipa::path(
    get,
    path = "/v1/connections/{connection_id}/polls/{run_id}",
    tag = "polling",
    params(
        ("connection_id" = String, Path, description = "The connection's id"),
        ("run_id" = String, Path, description = "The run's id"),
    ),
    responses(
        (status = 200, description = "The run and its requests", body = PollView),
        super::openapi::Problems,
    ),
)]
async fn get_poll(
    State(state): State<ApiState>,
    scope: Scope,
    Path((connection_id, run_id)): Path<(String, String)>,
) -> Result<Json<PollView>, ApiError> {
    let connection = visible_connection(&state, &scope, &connection_id).await?;
    let store = state.host.store();
    let run = store
        .get_poll_run(&run_id)
        .await
        .map_err(internal)?
        .filter(|run| run.connection_id == connection.id)
        .ok_or_else(|| {
            ApiError::NotFound(format!("no poll run `{run_id}` of `{connection_id}`"))
        })?;
    let requests = store.list_run_exchanges(&run.id).await.map_err(internal)?;
    Ok(Json(PollView { run, requests }))
}

/// What taking a pushed page did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Pushed {
    /// The page's delivery (the original's, for a repeated page).
    delivery_id: String,
    /// Where it is.
    status: DeliveryStatus,
    /// Whether it repeats a page taken before (same body, same cursor): nothing new.
    duplicate: bool,
    /// Events appended.
    events: usize,
    /// The cursor to fetch the next page with (null: keep the one you have).
    next_cursor: Option<String>,
    /// Whether another page follows now, by the adapter.
    more: bool,
}

/// `POST /v1/connections/{id}/poll-results`: a page fetched by an external poller, run through
/// the connection's adapter like a webhook. The body is the page as fetched; its cursor (the
/// one it was fetched with) is in the `Poll-Cursor` header. Authorised by a `tenant_admin`
/// token, or by the connection's push secret as `Authorization: Bearer <value>`.
#[utoipa::path(
    post,
    path = "/v1/connections/{connection_id}/poll-results",
    tag = "polling",
    params(
        ("connection_id" = String, Path, description = "The connection's id"),
        ("Poll-Cursor" = Option<String>, Header, description = "The cursor the page was fetched with"),
    ),
    request_body(content = Vec<u8>, content_type = "application/json", description = "The page, byte for byte"),
    responses(
        (status = 200, description = "Taken (or a repeat of a page taken before)", body = Pushed),
        (status = 202, description = "Taken, but the adapter failed on it: kept for redrive", body = Pushed),
        super::openapi::Problems,
    ),
)]
async fn push_page(
    State(state): State<ApiState>,
    Path(connection_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let connection = authorize_push(&state, &connection_id, &headers).await?;
    if connection.status != store::ConnectionStatus::Active {
        return Err(ApiError::Conflict(format!(
            "connection `{connection_id}` is disabled: enable it to take pages"
        )));
    }
    let body = body.map_err(|rejection| ApiError::from_body(&rejection))?;
    let text_header = |name: &str| -> Result<Option<String>, ApiError> {
        headers
            .get(name)
            .map(|value| {
                value
                    .to_str()
                    .map(str::to_owned)
                    .map_err(|_| ApiError::BadRequest(format!("`{name}` is not text")))
            })
            .transpose()
    };
    let cursor = text_header(CURSOR_HEADER)?;
    if cursor.as_ref().is_some_and(|c| c.len() > 4096) {
        return Err(ApiError::BadRequest(
            "`Poll-Cursor` is longer than 4096 bytes".into(),
        ));
    }
    let content_type = text_header(header::CONTENT_TYPE.as_str())?;
    let traceparent = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok());
    let ingested = state
        .host
        .receive_pushed_page(connection, body.to_vec(), content_type, cursor, traceparent)
        .await?;
    let status = match ingested.ack.status {
        DeliveryStatus::Failed | DeliveryStatus::Rejected => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    let pushed = Pushed {
        delivery_id: ingested.ack.delivery_id,
        status: ingested.ack.status,
        duplicate: ingested.ack.duplicate,
        events: ingested.ack.events,
        next_cursor: ingested.next_cursor,
        more: ingested.more,
    };
    Ok((status, Json(pushed)).into_response())
}

/// The connection a push is for, when the caller may push to it: a `tenant_admin` token of its
/// scope (with `X-Org-Id` as usual), or its push secret. Everything else is a 401 or a 404.
async fn authorize_push(
    state: &ApiState,
    connection_id: &str,
    headers: &HeaderMap,
) -> Result<store::Connection, ApiError> {
    let not_found = || ApiError::NotFound(format!("no connection `{connection_id}`"));
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // A push secret is not a JWT (three dot-separated parts): try it first.
    if let Some(token) = bearer.filter(|t| t.split('.').count() != 3) {
        let connection = state
            .host
            .store()
            .get_connection(connection_id)
            .await
            .map_err(internal)?
            .ok_or_else(not_found)?;
        let secret_ref = PollingConfig::of(&connection)
            .map_err(ApiError::internal)?
            .and_then(|p| p.push_secret);
        let Some(secret_ref) = secret_ref else {
            return Err(ApiError::Unauthorized(
                "this connection takes no push secret: use a tenant_admin token".into(),
            ));
        };
        let active = state
            .host
            .secrets()
            .get(&secret_ref, std::time::SystemTime::now())
            .map_err(ApiError::internal)?;
        let matches = active.is_some_and(|active| {
            active
                .into_values()
                .iter()
                .any(|value| bool::from(value.expose().ct_eq(token.as_bytes())))
        });
        return if matches {
            Ok(connection)
        } else {
            Err(ApiError::Unauthorized(
                "the push secret does not match".into(),
            ))
        };
    }
    let caller = super::auth::authenticate(&state.auth, headers)?;
    let scope = Scope::new(caller, headers)?;
    let connection = visible_connection(state, &scope, connection_id).await?;
    scope.check_write(&connection.tenant_id, connection.org_id.as_deref(), || {
        format!("connection `{connection_id}`")
    })?;
    Ok(connection)
}
