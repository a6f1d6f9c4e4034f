//! Connecting a connection to its CRM with OAuth 2.0: start (a tenant admin gets the provider's
//! authorize URL), the provider's redirect back (no token: the `state` is the proof), and
//! disconnect.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use super::ApiError;
use super::audit::Target;
use super::connections::visible_connection;
use super::manage::ApiState;
use super::scope::Scope;
use crate::oauth::{Callback, CallbackError, Disconnected, Started, TokenError, oauth_settings};

/// The OAuth routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/connections/{connection_id}/oauth/start", post(start))
        .route("/v1/connections/{connection_id}/oauth", delete(disconnect))
        .route("/v1/oauth/callback", get(callback))
        .with_state(state)
}

fn token_error(error: TokenError) -> ApiError {
    match error {
        TokenError::Config(why) => ApiError::Conflict(why),
        TokenError::Refused(why) | TokenError::Unavailable(why) => ApiError::Unavailable(why),
    }
}

/// `POST /v1/connections/{id}/oauth/start`: the provider URL to send the browser to.
#[utoipa::path(
    post,
    path = "/v1/connections/{connection_id}/oauth/start",
    tag = "oauth",
    params(("connection_id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "Send the browser to `authorize_url`; the provider redirects it back to `redirect_uri` within 10 minutes", body = Started),
        super::openapi::Problems,
    ),
)]
async fn start(
    State(state): State<ApiState>,
    scope: Scope,
    Path(connection_id): Path<String>,
) -> Result<Json<Started>, ApiError> {
    let connection = visible_connection(&state, &scope, &connection_id).await?;
    scope.check_write(&connection.tenant_id, connection.org_id.as_deref(), || {
        format!("connection `{connection_id}`")
    })?;
    let (_, config) = oauth_settings(&connection).ok_or_else(|| {
        ApiError::Conflict(format!(
            "connection `{connection_id}` does not use OAuth: its `api.credential` is not \
             `{{\"kind\": \"oauth2\", ...}}`"
        ))
    })?;
    let started = state
        .host
        .oauth()
        .start(&connection, &config, &scope.caller.subject)
        .await
        .map_err(token_error)?;
    tracing::info!(connection = %connection.id, by = %scope.caller.subject, "authorization started");
    scope
        .audit(
            &state,
            StatusCode::OK,
            "oauth.start",
            Target::new("connection", &connection.id, connection.org_id.as_deref()),
            serde_json::json!({"expires_at": started.expires_at}),
        )
        .await;
    Ok(Json(started))
}

/// `DELETE /v1/connections/{id}/oauth`: revoke the grant at the provider where it can be, and
/// delete the tokens.
#[utoipa::path(
    delete,
    path = "/v1/connections/{connection_id}/oauth",
    tag = "oauth",
    params(("connection_id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "Disconnected", body = Disconnected),
        super::openapi::Problems,
    ),
)]
async fn disconnect(
    State(state): State<ApiState>,
    scope: Scope,
    Path(connection_id): Path<String>,
) -> Result<Json<Disconnected>, ApiError> {
    let connection = visible_connection(&state, &scope, &connection_id).await?;
    scope.check_write(&connection.tenant_id, connection.org_id.as_deref(), || {
        format!("connection `{connection_id}`")
    })?;
    let disconnected = state
        .host
        .oauth()
        .disconnect(&connection, &scope.caller.subject)
        .await
        .map_err(token_error)?;
    scope
        .audit(
            &state,
            StatusCode::OK,
            "oauth.disconnect",
            Target::new("connection", &connection.id, connection.org_id.as_deref()),
            serde_json::json!({"revoked": disconnected.revoked}),
        )
        .await;
    Ok(Json(disconnected))
}

/// `GET /v1/oauth/callback`: where the provider sends the browser back. Redirects to the
/// host's OAuth return URL (`?oauth=connected|error&connection=...&error=...`), or, without
/// one, answers a short page. A missing, forged, replayed or expired `state` is a 400.
#[utoipa::path(
    get,
    path = "/v1/oauth/callback",
    tag = "oauth",
    params(Callback),
    security(()),
    responses(
        (status = 303, description = "Back to the return URL, with the outcome in its query"),
        (status = 200, description = "Connected (no return URL configured): a page saying so", content_type = "text/html"),
        super::openapi::Problems,
    ),
)]
async fn callback(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<Callback>, QueryRejection>,
) -> Response {
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let Ok(Query(query)) = query else {
        return ApiError::BadRequest("the callback's query is malformed".into()).into_response();
    };
    let outcome = state.host.oauth().callback(&query).await;
    let return_url = state.host.settings().oauth_return_url.clone();
    if let Ok(connected) = &outcome {
        // No token reaches the callback: the entry names who started the authorization (its
        // `oauth.start` entry says with which roles, and whether in support mode).
        super::audit::record(
            &state,
            crate::store::NewAuditEntry {
                at: crate::store::now_millis(),
                tenant_id: connected.tenant_id.clone(),
                org_id: connected.org_id.clone(),
                actor: connected.started_by.clone(),
                roles: Vec::new(),
                action: "oauth.connected".into(),
                resource_type: "connection".into(),
                resource_id: connected.connection_id.clone(),
                request_id: super::request_id::current(),
                status: if return_url.is_some() { 303 } else { 200 },
                detail_json: "{}".into(),
                support: false,
            },
        )
        .await;
    }
    match (outcome, return_url) {
        (Ok(connected), Some(url)) => Redirect::to(&with_query(
            &url,
            &[
                ("oauth", "connected"),
                ("connection", &connected.connection_id),
            ],
        ))
        .into_response(),
        (Ok(connected), None) => page(
            StatusCode::OK,
            "Connected",
            &format!(
                "The connection {} is connected to its CRM. You can close this window.",
                connected.connection_id
            ),
        ),
        (
            Err(CallbackError::Failed {
                connection_id,
                code,
                reason,
            }),
            return_url,
        ) => {
            tracing::warn!(connection = %connection_id, %reason, "authorization failed");
            match return_url {
                Some(url) => Redirect::to(&with_query(
                    &url,
                    &[
                        ("oauth", "error"),
                        ("connection", &connection_id),
                        ("error", &code),
                    ],
                ))
                .into_response(),
                None if browser => page(StatusCode::BAD_REQUEST, "Not connected", &reason),
                None => ApiError::BadRequest(reason).into_response(),
            }
        }
        (Err(CallbackError::BadState(why)), _) => {
            tracing::warn!(reason = %why, "a callback with a bad state was refused");
            if browser {
                page(StatusCode::BAD_REQUEST, "Not connected", &why)
            } else {
                ApiError::BadRequest(why).into_response()
            }
        }
    }
}

fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

/// A minimal page for a browser that has nowhere else to go.
fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>",
        escape(text)
    );
    (status, Html(html)).into_response()
}
