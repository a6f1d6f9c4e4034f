//! A fake OAuth 2.0 provider on loopback, which is also the CRM whose API its tokens open: the
//! authorization-code flow with PKCE, refresh with rotating refresh tokens, revocation, and an
//! API (`GET /items?page=N`, `GET /items/<id>`) that takes only a current access token.
//!
//! Endpoints, in the shapes of the presets' providers and of a custom one:
//! - authorize: `/authorize`, `/services/oauth2/authorize` (Salesforce), `/oauth/v2/auth`
//!   (Zoho): redirects to `redirect_uri` with `code` and `state` (or `error=access_denied`
//!   when told to deny);
//! - token: `/token`, `/services/oauth2/token`, `/oauth/v2/token`, `/oauth/v1/token` (HubSpot):
//!   `authorization_code` (the code once, its `redirect_uri`, the PKCE verifier checked) and
//!   `refresh_token`; Salesforce's answer names `instance_url` and no lifetime, Zoho's
//!   `api_domain`;
//! - revoke: `/revoke` and `/services/oauth2/revoke` (form `token=`), `/oauth/v2/token/revoke`
//!   (`?token=`), `DELETE /oauth/v1/refresh-tokens/<token>` (HubSpot).

#![allow(dead_code)] // Each test crate uses its own part.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "fake-client-id";
pub const CLIENT_SECRET: &str = "fake-client-secret-0123456789";

#[derive(Debug)]
struct Code {
    redirect_uri: String,
    challenge: String,
    used: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// Its own base URL: Salesforce's `instance_url` and Zoho's `api_domain`.
    base: String,
    codes: HashMap<String, Code>,
    /// Access tokens and when they expire.
    access: HashMap<String, Instant>,
    /// The refresh token that currently holds the grant.
    refresh: Option<String>,
    lifetime: Duration,
    rotate: bool,
    deny_next: bool,
    counter: u64,
    /// Every token (access and refresh) ever issued, to look for in what the host keeps.
    issued: Vec<String>,
    refreshes: usize,
    code_exchanges: usize,
    unauthorized: usize,
    revocations: Vec<String>,
    /// What the authorize endpoint was asked, last.
    last_authorize: BTreeMap<String, String>,
    /// What the token endpoint was sent, last (client secret included).
    last_token_form: BTreeMap<String, String>,
    api_requests: usize,
    /// The scheme of the last API request's `Authorization` (`Bearer`, `Zoho-oauthtoken`).
    last_scheme: String,
}

/// The fake provider. The server stops when it is dropped.
#[derive(Debug)]
pub struct FakeOAuth {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOAuth {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Shared = Arc<Mutex<Inner>>;

impl FakeOAuth {
    /// Starts it on `127.0.0.1:<port>`; access tokens last an hour and refresh tokens rotate.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            lifetime: Duration::from_secs(3600),
            rotate: true,
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/authorize", get(authorize))
            .route("/services/oauth2/authorize", get(authorize))
            .route("/oauth/v2/auth", get(authorize))
            .route("/token", post(token))
            .route("/services/oauth2/token", post(token))
            .route("/oauth/v2/token", post(token))
            .route("/oauth/v1/token", post(token))
            .route("/revoke", post(revoke_form))
            .route("/services/oauth2/revoke", post(revoke_form))
            .route("/oauth/v2/token/revoke", post(revoke_query))
            .route("/oauth/v1/refresh-tokens/{token}", delete(revoke_path))
            .route("/items", get(items))
            .route("/items/{id}", get(item))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        inner.lock().unwrap().base = format!("http://{addr}");
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            inner,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    /// How long the access tokens issued from now on last.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.with(|i| i.lifetime = lifetime);
    }

    /// Whether refreshing issues a new refresh token (and retires the old one).
    pub fn set_rotation(&self, rotate: bool) {
        self.with(|i| i.rotate = rotate);
    }

    /// The next authorization is refused by the "user" (`error=access_denied`).
    pub fn deny_next(&self) {
        self.with(|i| i.deny_next = true);
    }

    /// Every access token stops working now (as if they expired early).
    pub fn expire_access_tokens(&self) {
        self.with(|i| i.access.clear());
    }

    /// The grant is revoked at the provider: its refresh token stops working, and so do
    /// access tokens.
    pub fn revoke_grant(&self) {
        self.with(|i| {
            i.refresh = None;
            i.access.clear();
        });
    }

    /// Refreshes done.
    pub fn refreshes(&self) -> usize {
        self.with(|i| i.refreshes)
    }

    /// Codes exchanged.
    pub fn code_exchanges(&self) -> usize {
        self.with(|i| i.code_exchanges)
    }

    /// API requests answered 401.
    pub fn unauthorized(&self) -> usize {
        self.with(|i| i.unauthorized)
    }

    /// API requests answered at all.
    pub fn api_requests(&self) -> usize {
        self.with(|i| i.api_requests)
    }

    /// Tokens revoked (as sent).
    pub fn revocations(&self) -> Vec<String> {
        self.with(|i| i.revocations.clone())
    }

    /// Every token issued.
    pub fn issued(&self) -> Vec<String> {
        self.with(|i| i.issued.clone())
    }

    /// The authorize request's query, last.
    pub fn last_authorize(&self) -> BTreeMap<String, String> {
        self.with(|i| i.last_authorize.clone())
    }

    /// The scheme of the last API request's `Authorization` (`Bearer`, `Zoho-oauthtoken`).
    pub fn last_scheme(&self) -> String {
        self.with(|i| i.last_scheme.clone())
    }

    /// The token request's form, last.
    pub fn last_token_form(&self) -> BTreeMap<String, String> {
        self.with(|i| i.last_token_form.clone())
    }
}

fn random(inner: &mut Inner, prefix: &str) -> String {
    inner.counter += 1;
    let digest = Sha256::digest(format!("{prefix}-{}-{:?}", inner.counter, Instant::now()));
    format!("{prefix}-{}", hex::encode(&digest[..12]))
}

async fn authorize(
    State(inner): State<Shared>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut inner = inner.lock().unwrap();
    inner.last_authorize = query.clone();
    let redirect = query.get("redirect_uri").cloned().unwrap_or_default();
    let state = query.get("state").cloned().unwrap_or_default();
    let separator = if redirect.contains('?') { '&' } else { '?' };
    if std::mem::take(&mut inner.deny_next) {
        let location = format!(
            "{redirect}{separator}error=access_denied&error_description=The+user+said+no&state={state}"
        );
        return (StatusCode::FOUND, [("location", location)]).into_response();
    }
    if query.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || query.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return (StatusCode::BAD_REQUEST, "bad authorize request").into_response();
    }
    let code = random(&mut inner, "code");
    inner.codes.insert(
        code.clone(),
        Code {
            redirect_uri: redirect.clone(),
            challenge: query.get("code_challenge").cloned().unwrap_or_default(),
            used: false,
        },
    );
    let location = format!("{redirect}{separator}code={code}&state={state}");
    (StatusCode::FOUND, [("location", location)]).into_response()
}

fn token_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(State(inner): State<Shared>, uri: axum::http::Uri, body: Bytes) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut inner = inner.lock().unwrap();
    inner.last_token_form = form.clone();
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let path = uri.path().to_owned();
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = form.get("code").cloned().unwrap_or_default();
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(verifier.as_bytes()));
            let Some(found) = inner.codes.get_mut(&code) else {
                return token_error("invalid_grant", "unknown code");
            };
            if found.used {
                return token_error("invalid_grant", "code already used");
            }
            found.used = true;
            if Some(&found.redirect_uri) != form.get("redirect_uri") {
                return token_error("invalid_grant", "redirect_uri mismatch");
            }
            if found.challenge != challenge {
                return token_error("invalid_grant", "PKCE verification failed");
            }
            inner.code_exchanges += 1;
            let refresh = random(&mut inner, "refresh");
            inner.refresh = Some(refresh.clone());
            inner.issued.push(refresh.clone());
            issue(&mut inner, &path, Some(refresh))
        }
        Some("refresh_token") => {
            let given = form.get("refresh_token").cloned().unwrap_or_default();
            if inner.refresh.as_deref() != Some(given.as_str()) {
                return token_error("invalid_grant", "the refresh token is invalid or revoked");
            }
            inner.refreshes += 1;
            let refresh = if inner.rotate {
                let next = random(&mut inner, "refresh");
                inner.refresh = Some(next.clone());
                inner.issued.push(next.clone());
                Some(next)
            } else {
                None
            };
            issue(&mut inner, &path, refresh)
        }
        _ => token_error("unsupported_grant_type", "no such grant type"),
    }
}

/// A new access token in the answer shape of the provider behind `path`.
fn issue(inner: &mut Inner, path: &str, refresh: Option<String>) -> Response {
    let access = random(inner, "access");
    let lifetime = inner.lifetime;
    inner
        .access
        .insert(access.clone(), Instant::now() + lifetime);
    inner.issued.push(access.clone());
    let mut answer = json!({
        "access_token": access,
        "token_type": "Bearer",
        "scope": "items.read",
    });
    if let Some(refresh) = refresh {
        answer["refresh_token"] = refresh.into();
    }
    if path.starts_with("/services/") {
        // Salesforce: no lifetime, the org's instance.
        answer["instance_url"] = inner.base.clone().into();
        answer["issued_at"] = "1764590000000".into();
    } else {
        answer["expires_in"] = lifetime.as_secs().into();
        if path.starts_with("/oauth/v2/") {
            // Zoho: the data centre's API domain.
            answer["api_domain"] = inner.base.clone().into();
        }
    }
    Json(answer).into_response()
}

async fn revoke_form(State(inner): State<Shared>, body: Bytes) -> StatusCode {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    revoked(&inner, form.get("token").cloned().unwrap_or_default())
}

async fn revoke_query(
    State(inner): State<Shared>,
    Query(query): Query<BTreeMap<String, String>>,
) -> StatusCode {
    revoked(&inner, query.get("token").cloned().unwrap_or_default())
}

async fn revoke_path(State(inner): State<Shared>, Path(token): Path<String>) -> StatusCode {
    revoked(&inner, token)
}

fn revoked(inner: &Shared, token: String) -> StatusCode {
    let mut inner = inner.lock().unwrap();
    if inner.refresh.as_deref() == Some(token.as_str()) {
        inner.refresh = None;
        inner.access.clear();
    }
    inner.revocations.push(token);
    StatusCode::OK
}

/// Whether the request carries a current access token.
fn authorized(inner: &mut Inner, headers: &HeaderMap) -> bool {
    inner.api_requests += 1;
    let (scheme, token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .unwrap_or_default();
    inner.last_scheme = scheme.to_owned();
    let token = match scheme {
        "Bearer" | "Zoho-oauthtoken" => token,
        _ => "",
    };
    let ok = inner
        .access
        .get(token)
        .is_some_and(|until| Instant::now() < *until);
    if !ok {
        inner.unauthorized += 1;
    }
    ok
}

async fn items(
    State(inner): State<Shared>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut inner = inner.lock().unwrap();
    if !authorized(&mut inner, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token"})),
        )
            .into_response();
    }
    let page: u64 = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let items: Vec<_> = (0..3)
        .map(|i| json!({"id": format!("item-{page}-{i}"), "version": 1}))
        .collect();
    let next = (page < 2).then_some(page + 1);
    Json(json!({"items": items, "next": next})).into_response()
}

async fn item(State(inner): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let mut inner = inner.lock().unwrap();
    if !authorized(&mut inner, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token"})),
        )
            .into_response();
    }
    Json(json!({"id": id, "version": 2})).into_response()
}
