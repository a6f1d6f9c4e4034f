//! OAuth 2.0 for connections: the authorization-code flow with PKCE, tokens kept fresh, and
//! disconnection.
//!
//! - **Start** ([`OAuth::start`]): a random `state` (its hash stored, single use, bound to the
//!   tenant, org and connection, 10 minutes) and a PKCE verifier derived from it with a host
//!   key, so that nothing secret is stored; the answer is the provider's authorize URL.
//! - **Callback** ([`OAuth::callback`]): the state is taken (used up whatever follows), the code
//!   exchanged with the verifier, the tokens written to the secret store under the connection's
//!   namespace (never the database), who connected it and when recorded, and a base URL the
//!   provider names (Salesforce's `instance_url`, Zoho's `api_domain`) written to the
//!   connection's API settings.
//! - **Refresh** ([`OAuthCredential`]): before expiry (with [`REFRESH_SKEW`]) and once on a 401
//!   from the CRM; one refresh at a time per connection (the others wait for it and take its
//!   tokens), a rotated refresh token saved with the access token in one write, the token
//!   endpoint's failures backed off. A refused grant (`invalid_grant`) puts the connection's
//!   authorization in `error` with the reason; polls pause until it is connected again.
//! - **Disconnect** ([`OAuth::disconnect`]): revoked at the provider where it can be, deleted.
//!
//! Presets ([`OAuthProvider`]) know Salesforce's, HubSpot's and Zoho's endpoints and quirks; a
//! custom provider works from its URLs alone. Every URL may be overridden (a sandbox org, a
//! data centre, a test's fake provider).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex as AsyncMutex;

use crate::egress::{Credential, CredentialSource, Egress};
use crate::sandbox::FetchError;
use crate::secrets::{SecretStore, SecretValue};
use crate::store::{self, AuthState, Connection, ConnectionAuth, Millis, OAuthState, Store};

#[cfg(test)]
mod tests;

/// How long a started authorization may be completed.
pub const STATE_TTL: Duration = Duration::from_secs(600);
/// How long before its expiry an access token is refreshed: this, or a quarter of its
/// lifetime when that is shorter.
pub const REFRESH_SKEW: Duration = Duration::from_secs(60);
/// The first wait after a failed refresh; doubled after each further one, up to
/// [`REFRESH_BACKOFF_MAX`].
const REFRESH_BACKOFF: Duration = Duration::from_secs(1);
const REFRESH_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// The longest the host waits for the token endpoint.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);
/// The host's key that PKCE verifiers are derived with, in the secret store.
const PKCE_KEY: &str = "host/oauth/pkce-key";

/// Where a connection's tokens are in the secret store (its namespace; a tenant cannot write
/// there through the API, whose names may not start with `connections/`).
pub fn token_ref(connection: &Connection) -> String {
    crate::api::scope::Scope::secret_ref(
        &connection.tenant_id,
        connection.org_id.as_deref(),
        &format!("connections/{}/oauth-tokens", connection.id),
    )
}

/// Which provider's endpoints and quirks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OAuthProvider {
    /// `login.salesforce.com` (or `login_url`: `https://test.salesforce.com`, a My Domain);
    /// the token answer names the org's `instance_url`, which becomes the API base URL.
    /// Access tokens carry no lifetime: they are refreshed when the API answers 401.
    Salesforce,
    /// `app.hubspot.com` / `api.hubapi.com`; access tokens last 30 minutes.
    Hubspot,
    /// `accounts.zoho.com` (or the data centre's, `login_url`: `https://accounts.zoho.eu`,
    /// `.in`, `.com.au`, `.jp`, `.ca`, `.sa`, `.com.cn`); the token answer names the
    /// `api_domain`, which becomes the API base URL; tokens go as `Zoho-oauthtoken`.
    Zoho,
    /// Any other: `authorize_url` and `token_url` (and `revoke_url`, if it has one) given.
    Custom,
}

/// A connection's OAuth 2.0 settings (the credential `{"kind": "oauth2", ...}` of its `api`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The provider preset, or `custom`.
    pub provider: OAuthProvider,
    /// The client (app) id registered with the provider.
    pub client_id: String,
    /// The name of the secret holding the client secret (see `PUT /v1/secrets/{name}`).
    pub client_secret: String,
    /// Scopes to ask for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The provider's login or accounts domain, for presets that have several (Salesforce
    /// sandboxes and My Domains, Zoho's data centres).
    #[serde(default)]
    pub login_url: Option<String>,
    /// The authorize endpoint, instead of the preset's.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// The token endpoint, instead of the preset's.
    #[serde(default)]
    pub token_url: Option<String>,
    /// The revocation endpoint, instead of the preset's.
    #[serde(default)]
    pub revoke_url: Option<String>,
    /// Further parameters of the authorize request (`prompt`, `audience`...).
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
}

/// How a provider revokes a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Revocation {
    /// `POST url` with the form `token=<token>` (RFC 7009; Salesforce).
    Form(url::Url),
    /// `POST url?token=<token>` (Zoho).
    Query(url::Url),
    /// `DELETE url/<refresh token>` (HubSpot).
    Delete(url::Url),
}

/// A provider's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoints {
    authorize: url::Url,
    token: url::Url,
    revoke: Option<Revocation>,
}

fn parse_url(what: &str, text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{what}` is not a URL: {e}"))?;
    match url.scheme() {
        "https" | "http" => Ok(url),
        other => Err(format!("`{what}` must be https, not `{other}`")),
    }
}

impl OAuthConfig {
    /// Checks the settings: the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.client_id.trim().is_empty() {
            return Err("`client_id` is empty".into());
        }
        if self.client_secret.trim().is_empty() {
            return Err("`client_secret` names no secret".into());
        }
        for scope in &self.scopes {
            if scope.is_empty() || scope.contains(char::is_whitespace) {
                return Err(format!("the scope {scope:?} is empty or has spaces"));
            }
        }
        self.endpoints().map(|_| ())
    }

    fn endpoints(&self) -> Result<Endpoints, String> {
        let login = |default: &str| -> Result<url::Url, String> {
            parse_url("login_url", self.login_url.as_deref().unwrap_or(default))
        };
        let join = |base: &url::Url, path: &str| -> Result<url::Url, String> {
            base.join(path).map_err(|e| format!("{base}{path}: {e}"))
        };
        let (authorize, token, revoke) = match self.provider {
            OAuthProvider::Salesforce => {
                let base = login("https://login.salesforce.com")?;
                (
                    join(&base, "/services/oauth2/authorize")?,
                    join(&base, "/services/oauth2/token")?,
                    Some(Revocation::Form(join(&base, "/services/oauth2/revoke")?)),
                )
            }
            OAuthProvider::Hubspot => (
                parse_url("authorize_url", "https://app.hubspot.com/oauth/authorize")?,
                parse_url("token_url", "https://api.hubapi.com/oauth/v1/token")?,
                Some(Revocation::Delete(parse_url(
                    "revoke_url",
                    "https://api.hubapi.com/oauth/v1/refresh-tokens/",
                )?)),
            ),
            OAuthProvider::Zoho => {
                let base = login("https://accounts.zoho.com")?;
                (
                    join(&base, "/oauth/v2/auth")?,
                    join(&base, "/oauth/v2/token")?,
                    Some(Revocation::Query(join(&base, "/oauth/v2/token/revoke")?)),
                )
            }
            OAuthProvider::Custom => {
                let authorize = self
                    .authorize_url
                    .as_deref()
                    .ok_or("a custom provider needs `authorize_url`")?;
                let token = self
                    .token_url
                    .as_deref()
                    .ok_or("a custom provider needs `token_url`")?;
                (
                    parse_url("authorize_url", authorize)?,
                    parse_url("token_url", token)?,
                    None,
                )
            }
        };
        let authorize = match &self.authorize_url {
            Some(url) => parse_url("authorize_url", url)?,
            None => authorize,
        };
        let token = match &self.token_url {
            Some(url) => parse_url("token_url", url)?,
            None => token,
        };
        let revoke = match (&self.revoke_url, revoke) {
            (Some(url), Some(Revocation::Query(_))) => {
                Some(Revocation::Query(parse_url("revoke_url", url)?))
            }
            (Some(url), Some(Revocation::Delete(_))) => {
                let mut url = parse_url("revoke_url", url)?;
                if !url.path().ends_with('/') {
                    url.set_path(&format!("{}/", url.path()));
                }
                Some(Revocation::Delete(url))
            }
            (Some(url), _) => Some(Revocation::Form(parse_url("revoke_url", url)?)),
            (None, revoke) => revoke,
        };
        Ok(Endpoints {
            authorize,
            token,
            revoke,
        })
    }

    /// What precedes the access token in `Authorization`.
    fn header_prefix(&self) -> &'static str {
        match self.provider {
            OAuthProvider::Zoho => "Zoho-oauthtoken ",
            _ => "Bearer ",
        }
    }

    /// The API base URL a connection has before the provider names one, if the preset knows.
    pub fn default_base_url(&self) -> Option<&'static str> {
        match self.provider {
            OAuthProvider::Hubspot => Some("https://api.hubapi.com"),
            _ => None,
        }
    }

    /// Whether the token answer names the API base URL (so a connection may have none until
    /// it is connected).
    pub fn names_base_url(&self) -> bool {
        matches!(
            self.provider,
            OAuthProvider::Salesforce | OAuthProvider::Zoho
        )
    }
}

/// The tokens of a connection, as kept in the secret store (one value, so that an access token
/// and the refresh token that came with it are written together).
#[derive(Clone, Serialize, Deserialize)]
struct TokenSet {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    /// When the access token was issued (Unix ms).
    #[serde(default)]
    issued_at: Millis,
    /// When the access token expires (Unix ms); `None`: the provider did not say.
    #[serde(default)]
    expires_at: Option<Millis>,
    #[serde(default)]
    scope: Option<String>,
    /// The API base URL the provider named.
    #[serde(default)]
    api_base_url: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl TokenSet {
    /// Whether it is time to refresh: within the skew of its expiry.
    fn expiring(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| {
            let skew = store::millis(REFRESH_SKEW).min((at - self.issued_at).max(0) / 4);
            at - skew <= system_millis(now)
        })
    }
}

/// A token endpoint's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    scope: Option<String>,
    /// Salesforce.
    #[serde(default)]
    instance_url: Option<String>,
    /// Zoho.
    #[serde(default)]
    api_domain: Option<String>,
}

/// A token endpoint's error answer (RFC 6749 §5.2).
#[derive(Debug, Deserialize)]
struct TokenErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Why a token request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The provider refused the grant: the code or refresh token is invalid, expired or
    /// revoked. Only connecting again helps.
    #[error("the provider refused the grant ({0})")]
    Refused(String),
    /// The token endpoint failed or could not be reached; trying later may help.
    #[error("the token endpoint failed: {0}")]
    Unavailable(String),
    /// The settings cannot work (bad URL, missing client secret).
    #[error("{0}")]
    Config(String),
}

fn system_millis(at: SystemTime) -> Millis {
    store::millis(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The answer of [`OAuth::start`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Started {
    /// Send the browser here.
    pub authorize_url: String,
    /// The redirect URI the provider will call (register it with the provider's app).
    pub redirect_uri: String,
    /// When the authorization stops being accepted.
    pub expires_at: Millis,
}

/// The query of the provider's redirect.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Callback {
    /// The authorization code.
    #[serde(default)]
    pub code: Option<String>,
    /// The `state` the authorize URL carried.
    #[serde(default)]
    pub state: Option<String>,
    /// The provider's error (`access_denied`...).
    #[serde(default)]
    pub error: Option<String>,
    /// Its description.
    #[serde(default)]
    pub error_description: Option<String>,
}

/// Why a callback failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallbackError {
    /// The request is not a callback this host can take: no, unknown, forged, replayed or
    /// expired `state`. Nothing is known about the connection: answered as a problem.
    #[error("{0}")]
    BadState(String),
    /// The state was good, and connecting failed (the user said no, the provider refused the
    /// code): reported to the return URL with the connection.
    #[error("{reason}")]
    Failed {
        /// The connection.
        connection_id: String,
        /// A short code: the provider's `error`, or `token_exchange_failed`.
        code: String,
        /// What happened.
        reason: String,
    },
}

/// A connection just connected.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The connection.
    pub connection_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Its org; `None`: platform level.
    pub org_id: Option<String>,
    /// Who started the authorization (the subject recorded at its start).
    pub started_by: String,
}

/// The answer of [`OAuth::disconnect`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Disconnected {
    /// Whether the provider confirmed the revocation (false: it offers none, there was no
    /// token, or it failed; the tokens are deleted all the same).
    pub revoked: bool,
    /// Why it was not revoked, when it was not.
    pub note: Option<String>,
}

/// A connection's refresh: one at a time, and the failures that back it off.
#[derive(Debug, Default)]
struct Flight {
    failures: u32,
    retry_at: Option<Instant>,
}

/// The host's OAuth machinery (one per host).
#[derive(Debug)]
pub struct OAuth {
    secrets: Arc<dyn SecretStore>,
    store: Arc<dyn Store>,
    egress: Egress,
    redirect_uri: String,
    flights: Mutex<HashMap<String, Arc<AsyncMutex<Flight>>>>,
    metrics: crate::metrics::Metrics,
}

impl OAuth {
    /// The OAuth machinery of a host whose public URL is `public_base_url`.
    pub fn new(
        secrets: Arc<dyn SecretStore>,
        store: Arc<dyn Store>,
        egress: Egress,
        public_base_url: &str,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        Self {
            secrets,
            store,
            egress,
            redirect_uri: format!(
                "{}/v1/oauth/callback",
                public_base_url.trim_end_matches('/')
            ),
            flights: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The redirect URI to register with the provider's app.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Starts authorizing `connection` for `actor`: the URL to send the browser to.
    pub async fn start(
        &self,
        connection: &Connection,
        config: &OAuthConfig,
        actor: &str,
    ) -> Result<Started, TokenError> {
        let endpoints = config.endpoints().map_err(TokenError::Config)?;
        let state = URL_SAFE_NO_PAD.encode(
            crate::secrets::random_bytes::<32>()
                .map_err(|e| TokenError::Config(format!("cannot draw a random state: {e}")))?,
        );
        let verifier = self.verifier(&state)?;
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let now = store::now_millis();
        let expires_at = now + store::millis(STATE_TTL);
        self.store
            .create_oauth_state(OAuthState {
                state_hash: sha256_hex(&state),
                connection_id: connection.id.clone(),
                tenant_id: connection.tenant_id.clone(),
                org_id: connection.org_id.clone(),
                created_by: actor.to_owned(),
                created_at: now,
                expires_at,
            })
            .await
            .map_err(|e| TokenError::Unavailable(format!("recording the authorization: {e}")))?;
        let mut url = endpoints.authorize;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &config.client_id)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("state", &state)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            if !config.scopes.is_empty() {
                query.append_pair("scope", &config.scopes.join(" "));
            }
            if config.provider == OAuthProvider::Zoho {
                // Without these Zoho issues no refresh token.
                query
                    .append_pair("access_type", "offline")
                    .append_pair("prompt", "consent");
            }
            for (name, value) in &config.extra_params {
                query.append_pair(name, value);
            }
        }
        Ok(Started {
            authorize_url: url.to_string(),
            redirect_uri: self.redirect_uri.clone(),
            expires_at,
        })
    }

    /// The PKCE verifier of `state`: derived with the host's key, so none is stored.
    fn verifier(&self, state: &str) -> Result<String, TokenError> {
        let now = SystemTime::now();
        let key = match self.secrets.get(PKCE_KEY, now) {
            Ok(Some(active)) => active.current,
            Ok(None) => {
                let key = crate::secrets::random_bytes::<32>()
                    .map_err(|e| TokenError::Config(format!("cannot draw a key: {e}")))?;
                let value = SecretValue::new(URL_SAFE_NO_PAD.encode(key));
                self.secrets
                    .put(PKCE_KEY, value, Duration::ZERO, now)
                    .map_err(|e| TokenError::Config(format!("storing the PKCE key: {e}")))?;
                // Another node may have written one first: use what is stored.
                self.secrets
                    .get(PKCE_KEY, now)
                    .ok()
                    .flatten()
                    .ok_or_else(|| TokenError::Config("the PKCE key vanished".into()))?
                    .current
            }
            Err(e) => return Err(TokenError::Config(format!("reading the PKCE key: {e}"))),
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(key.expose())
            .map_err(|_| TokenError::Config("the PKCE key is unusable".into()))?;
        mac.update(state.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// Takes the provider's redirect: checks the state, exchanges the code, stores the tokens.
    pub async fn callback(&self, query: &Callback) -> Result<Connected, CallbackError> {
        let state = query
            .state
            .as_deref()
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .ok_or_else(|| CallbackError::BadState("the callback carries no `state`".into()))?;
        let now = store::now_millis();
        let pending = self
            .store
            .take_oauth_state(&sha256_hex(state), now)
            .await
            .map_err(|e| match e {
                store::Error::NotFound(_) => CallbackError::BadState(
                    "the `state` is not one this host issued (forged, or for another host)".into(),
                ),
                store::Error::Conflict(why) => CallbackError::BadState(why),
                other => CallbackError::BadState(format!("reading the authorization: {other}")),
            })?;
        if pending.expires_at <= now {
            return Err(CallbackError::BadState(
                "the authorization expired (it lasts 10 minutes): start a new one".into(),
            ));
        }
        let failed = |code: &str, reason: String| CallbackError::Failed {
            connection_id: pending.connection_id.clone(),
            code: code.to_owned(),
            reason,
        };
        if let Some(error) = &query.error {
            let reason = match &query.error_description {
                Some(description) => format!("the provider answered `{error}`: {description}"),
                None => format!("the provider answered `{error}`"),
            };
            return Err(failed(&short_code(error), reason));
        }
        let code = query
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| failed("invalid_request", "the callback carries no `code`".into()))?;
        let connection = self
            .store
            .get_connection(&pending.connection_id)
            .await
            .ok()
            .flatten()
            .filter(|c| c.tenant_id == pending.tenant_id && c.org_id == pending.org_id)
            .ok_or_else(|| failed("connection_gone", "the connection is gone".into()))?;
        let (api, config) = oauth_settings(&connection)
            .ok_or_else(|| failed("not_oauth", "the connection no longer uses OAuth".into()))?;
        let verifier = self
            .verifier(state)
            .map_err(|e| failed("server_error", e.to_string()))?;
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", self.redirect_uri.clone()),
            ("code_verifier", verifier),
        ];
        let answer = self
            .token_request(&config, api.allow_private, form)
            .await
            .map_err(|e| failed("token_exchange_failed", e.to_string()))?;
        let tokens = token_set(answer, None);
        self.save(&connection, &tokens)
            .map_err(|e| failed("server_error", e))?;
        if let Some(base) = tokens
            .api_base_url
            .as_deref()
            .filter(|_| config.names_base_url())
        {
            self.set_base_url(&connection, base)
                .await
                .map_err(|e| failed("server_error", e))?;
        }
        let auth = ConnectionAuth {
            connection_id: connection.id.clone(),
            state: AuthState::Connected,
            reason: None,
            connected_by: Some(pending.created_by.clone()),
            connected_at: Some(now),
            changed_at: now,
            access_expires_at: tokens.expires_at,
            scopes: tokens.scope.clone(),
        };
        self.store
            .set_connection_auth(auth)
            .await
            .map_err(|e| failed("server_error", e.to_string()))?;
        self.flight(&connection.id).lock().await.failures = 0;
        tracing::info!(connection = %connection.id, by = %pending.created_by, "connection authorized");
        Ok(Connected {
            connection_id: connection.id,
            tenant_id: connection.tenant_id,
            org_id: connection.org_id,
            started_by: pending.created_by,
        })
    }

    /// Revokes the connection's grant where the provider can, deletes its tokens, and records
    /// it as disconnected by `actor`.
    pub async fn disconnect(
        &self,
        connection: &Connection,
        actor: &str,
    ) -> Result<Disconnected, TokenError> {
        let disconnected = self.forget(connection).await?;
        let now = store::now_millis();
        let previous = self
            .store
            .connection_auth(&connection.id)
            .await
            .ok()
            .flatten();
        self.store
            .set_connection_auth(ConnectionAuth {
                connection_id: connection.id.clone(),
                state: AuthState::Disconnected,
                reason: Some(format!("disconnected by {actor}")),
                connected_by: previous.as_ref().and_then(|p| p.connected_by.clone()),
                connected_at: previous.as_ref().and_then(|p| p.connected_at),
                changed_at: now,
                access_expires_at: None,
                scopes: None,
            })
            .await
            .map_err(|e| TokenError::Unavailable(e.to_string()))?;
        tracing::info!(connection = %connection.id, by = %actor, revoked = disconnected.revoked, "connection disconnected");
        Ok(disconnected)
    }

    /// Revokes the connection's grant where the provider can and deletes its tokens (for a
    /// connection being deleted too).
    pub async fn forget(&self, connection: &Connection) -> Result<Disconnected, TokenError> {
        let (api, config) = oauth_settings(connection)
            .ok_or_else(|| TokenError::Config("the connection does not use OAuth".into()))?;
        let tokens = self.load(connection).map_err(TokenError::Config)?;
        let revocation = config.endpoints().map_err(TokenError::Config)?.revoke;
        let (revoked, note) = match (&tokens, revocation) {
            (None, _) => (false, Some("there were no tokens".to_owned())),
            (Some(_), None) => (
                false,
                Some("the provider offers no revocation: the tokens were deleted".to_owned()),
            ),
            (Some(tokens), Some(revocation)) => {
                match self.revoke(&api, &revocation, tokens).await {
                    Ok(()) => (true, None),
                    Err(why) => (
                        false,
                        Some(format!("revoking failed ({why}); the tokens were deleted")),
                    ),
                }
            }
        };
        self.secrets
            .delete(&token_ref(connection))
            .map_err(|e| TokenError::Config(format!("deleting the tokens: {e}")))?;
        Ok(Disconnected { revoked, note })
    }

    async fn revoke(
        &self,
        api: &crate::egress::ApiAccess,
        revocation: &Revocation,
        tokens: &TokenSet,
    ) -> Result<(), String> {
        // The refresh token ends the grant; an access token alone ends only itself.
        let token = tokens
            .refresh_token
            .as_deref()
            .unwrap_or(&tokens.access_token);
        let client = self.egress.client(api.allow_private);
        let request = match revocation {
            Revocation::Form(url) => {
                check_endpoint(url, api.allow_private)?;
                client
                    .post(url.clone())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form_body(&[("token", token.to_owned())]))
            }
            Revocation::Query(url) => {
                check_endpoint(url, api.allow_private)?;
                let mut url = url.clone();
                url.query_pairs_mut().append_pair("token", token);
                client.post(url)
            }
            Revocation::Delete(url) => {
                check_endpoint(url, api.allow_private)?;
                let url = url
                    .join(
                        &url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>(),
                    )
                    .map_err(|e| e.to_string())?;
                client.delete(url)
            }
        };
        let response = request
            .timeout(TOKEN_TIMEOUT)
            .send()
            .await
            .map_err(|e| scrub(&e.to_string(), token))?;
        let status = response.status();
        // RFC 7009: an unknown or already revoked token is a success too.
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(format!("the provider answered {status}"))
        }
    }

    /// The credential source of `connection`'s requests.
    pub fn credential(
        self: &Arc<Self>,
        connection: &Connection,
        config: &OAuthConfig,
        allow_private: bool,
    ) -> Arc<dyn CredentialSource> {
        Arc::new(OAuthCredential {
            oauth: Arc::clone(self),
            connection: connection.clone(),
            config: config.clone(),
            allow_private,
        })
    }

    fn load(&self, connection: &Connection) -> Result<Option<TokenSet>, String> {
        let Some(active) = self
            .secrets
            .get(&token_ref(connection), SystemTime::now())
            .map_err(|e| format!("reading the tokens: {e}"))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(active.current.expose())
            .map(Some)
            .map_err(|_| "the stored tokens are unreadable: connect again".into())
    }

    fn save(&self, connection: &Connection, tokens: &TokenSet) -> Result<(), String> {
        let text = serde_json::to_vec(tokens).map_err(|e| e.to_string())?;
        self.secrets
            .put(
                &token_ref(connection),
                SecretValue::new(text),
                Duration::ZERO,
                SystemTime::now(),
            )
            .map(|_| ())
            .map_err(|e| format!("storing the tokens: {e}"))
    }

    /// Writes the base URL the provider named into the connection's API settings.
    async fn set_base_url(&self, connection: &Connection, base: &str) -> Result<(), String> {
        let base = base.trim_end_matches('/');
        let mut api: crate::egress::ApiAccess = connection
            .api_json
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| e.to_string())?
            .ok_or("the connection has no API settings")?;
        if api.base_url == base {
            return Ok(());
        }
        api.base_url = base.to_owned();
        crate::egress::check_api(&api).map_err(|e| format!("the provider's API URL: {e}"))?;
        let mut spec = connection.spec();
        spec.api_json = Some(serde_json::to_string(&api).map_err(|e| e.to_string())?);
        self.store
            .upsert_connection(spec, "oauth", store::now_millis())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn flight(&self, connection_id: &str) -> Arc<AsyncMutex<Flight>> {
        Arc::clone(
            self.flights
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(connection_id.to_owned())
                .or_default(),
        )
    }

    /// Fresh tokens for `connection`: refreshed unless another caller did it since `stale` (the
    /// access token found wanting) was read.
    async fn refresh(
        &self,
        connection: &Connection,
        config: &OAuthConfig,
        allow_private: bool,
        stale: &str,
    ) -> Result<TokenSet, FetchError> {
        let flight = self.flight(&connection.id);
        let mut flight = flight.lock().await;
        let current = self
            .load(connection)
            .map_err(FetchError::NotAllowed)?
            .ok_or_else(not_connected)?;
        if current.access_token != stale && !current.expiring(SystemTime::now()) {
            // Refreshed by someone else while this one waited.
            return Ok(current);
        }
        if let Some(retry_at) = flight.retry_at
            && Instant::now() < retry_at
        {
            return Err(FetchError::Unavailable(format!(
                "the token endpoint failed lately; the next refresh is in {} s",
                retry_at
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    .max(1)
            )));
        }
        let Some(refresh_token) = current.refresh_token.clone() else {
            self.fail(
                connection,
                "the provider gave no refresh token: connect again".into(),
            )
            .await;
            return Err(FetchError::NotAllowed(
                "the access token expired and there is no refresh token: connect again".into(),
            ));
        };
        let form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.clone()),
        ];
        match self.token_request(config, allow_private, form).await {
            Ok(answer) => {
                let tokens = token_set(answer, Some(&current));
                self.save(connection, &tokens)
                    .map_err(FetchError::Unavailable)?;
                flight.failures = 0;
                flight.retry_at = None;
                self.metrics
                    .oauth_refreshes
                    .with_label_values(&["ok"])
                    .inc();
                let now = store::now_millis();
                let previous = self
                    .store
                    .connection_auth(&connection.id)
                    .await
                    .ok()
                    .flatten();
                let _ = self
                    .store
                    .set_connection_auth(ConnectionAuth {
                        connection_id: connection.id.clone(),
                        state: AuthState::Connected,
                        reason: None,
                        connected_by: previous.as_ref().and_then(|p| p.connected_by.clone()),
                        connected_at: previous.as_ref().and_then(|p| p.connected_at),
                        changed_at: now,
                        access_expires_at: tokens.expires_at,
                        scopes: tokens.scope.clone().or(previous.and_then(|p| p.scopes)),
                    })
                    .await;
                tracing::info!(connection = %connection.id, "access token refreshed");
                Ok(tokens)
            }
            Err(TokenError::Refused(why)) => {
                self.metrics
                    .oauth_refreshes
                    .with_label_values(&["refused"])
                    .inc();
                // Another node may have rotated the refresh token meanwhile: its tokens stand.
                if let Ok(Some(now)) = self.load(connection)
                    && now.access_token != current.access_token
                {
                    return Ok(now);
                }
                let reason = format!(
                    "refreshing the access token: the provider refused the grant ({why}); connect again"
                );
                self.fail(connection, reason.clone()).await;
                Err(FetchError::NotAllowed(reason))
            }
            Err(error) => {
                self.metrics
                    .oauth_refreshes
                    .with_label_values(&["failed"])
                    .inc();
                flight.failures += 1;
                let wait = REFRESH_BACKOFF
                    .saturating_mul(1 << flight.failures.min(16).saturating_sub(1))
                    .min(REFRESH_BACKOFF_MAX);
                flight.retry_at = Some(Instant::now() + wait);
                tracing::warn!(connection = %connection.id, %error, "refreshing the access token failed");
                Err(FetchError::Unavailable(format!(
                    "refreshing the access token: {error}"
                )))
            }
        }
    }

    /// Puts the connection's authorization in error with `reason`.
    async fn fail(&self, connection: &Connection, reason: String) {
        tracing::warn!(connection = %connection.id, %reason, "connection authorization failed");
        let previous = self
            .store
            .connection_auth(&connection.id)
            .await
            .ok()
            .flatten();
        let _ = self
            .store
            .set_connection_auth(ConnectionAuth {
                connection_id: connection.id.clone(),
                state: AuthState::Error,
                reason: Some(reason),
                connected_by: previous.as_ref().and_then(|p| p.connected_by.clone()),
                connected_at: previous.as_ref().and_then(|p| p.connected_at),
                changed_at: store::now_millis(),
                access_expires_at: None,
                scopes: previous.and_then(|p| p.scopes),
            })
            .await;
    }

    /// One request to the token endpoint with the client's credentials.
    async fn token_request(
        &self,
        config: &OAuthConfig,
        allow_private: bool,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<TokenAnswer, TokenError> {
        let endpoints = config.endpoints().map_err(TokenError::Config)?;
        check_endpoint(&endpoints.token, allow_private).map_err(TokenError::Config)?;
        let client_secret = self
            .secrets
            .get(&config.client_secret, SystemTime::now())
            .map_err(|e| TokenError::Config(format!("the client secret: {e}")))?
            .ok_or_else(|| {
                TokenError::Config(
                    "the client secret is not written yet (PUT /v1/secrets/{name})".into(),
                )
            })?
            .current;
        let client_secret = String::from_utf8(client_secret.expose().to_vec())
            .map_err(|_| TokenError::Config("the client secret is not text".into()))?;
        form.push(("client_id", config.client_id.clone()));
        form.push(("client_secret", client_secret.clone()));
        let secrets: Vec<String> = form
            .iter()
            .filter(|(name, _)| {
                ["client_secret", "refresh_token", "code", "code_verifier"].contains(name)
            })
            .map(|(_, value)| value.clone())
            .collect();
        let clean = |text: &str| secrets.iter().fold(text.to_owned(), |t, s| scrub(&t, s));
        let response = self
            .egress
            .client(allow_private)
            .post(endpoints.token)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form_body(&form))
            .timeout(TOKEN_TIMEOUT)
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(clean(&e.to_string())))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| TokenError::Unavailable(clean(&e.to_string())))?;
        if status.is_success() {
            return serde_json::from_slice::<TokenAnswer>(&body).map_err(|_| {
                TokenError::Unavailable(format!(
                    "the token endpoint answered {status} without an access token"
                ))
            });
        }
        match serde_json::from_slice::<TokenErrorAnswer>(&body) {
            // Refused grants: RFC 6749's `invalid_grant`, and what providers say instead.
            Ok(answer) if status.is_client_error() && is_refusal(&answer.error) => {
                let why = match answer.error_description {
                    Some(description) => format!("{}: {}", answer.error, clean(&description)),
                    None => answer.error,
                };
                Err(TokenError::Refused(short(&why)))
            }
            Ok(answer) if status.is_client_error() => Err(TokenError::Config(format!(
                "the token endpoint answered {status} `{}`",
                short(&answer.error)
            ))),
            _ => Err(TokenError::Unavailable(format!(
                "the token endpoint answered {status}"
            ))),
        }
    }
}

/// Whether a token endpoint's `error` means the grant is gone.
fn is_refusal(error: &str) -> bool {
    matches!(
        error,
        "invalid_grant" | "invalid_token" | "unauthorized_client"
    ) || error.contains("expired")
        || error.contains("revoked")
}

fn token_set(answer: TokenAnswer, previous: Option<&TokenSet>) -> TokenSet {
    let expires_in = answer.expires_in.and_then(|value| match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    });
    let now = store::now_millis();
    TokenSet {
        issued_at: now,
        access_token: answer.access_token,
        // A provider that does not rotate refresh tokens sends none with a refresh.
        refresh_token: answer
            .refresh_token
            .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
        expires_at: expires_in.map(|secs| now + 1000 * secs as Millis),
        scope: answer
            .scope
            .or_else(|| previous.and_then(|p| p.scope.clone())),
        api_base_url: answer
            .instance_url
            .or(answer.api_domain)
            .or_else(|| previous.and_then(|p| p.api_base_url.clone())),
    }
}

fn not_connected() -> FetchError {
    FetchError::NotAllowed(
        "the connection is not connected to its CRM yet: POST /v1/connections/{id}/oauth/start"
            .into(),
    )
}

/// A provider's error code, short and plain, for a redirect's query.
fn short_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}

fn short(text: &str) -> String {
    match text.char_indices().nth(300) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// `text` with `secret` (and its URL-encoded form) replaced.
fn scrub(text: &str, secret: &str) -> String {
    if secret.len() < 4 {
        return text.to_owned();
    }
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    text.replace(secret, "[redacted]")
        .replace(&encoded, "[redacted]")
}

fn form_body(pairs: &[(&str, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Refuses an endpoint that is not https (http only where private hosts are allowed).
fn check_endpoint(url: &url::Url, allow_private: bool) -> Result<(), String> {
    crate::egress::check_target(url, allow_private).map_err(|e| format!("{url}: {e}"))
}

/// The connection's API settings and OAuth settings, when its credential is OAuth 2.0.
pub fn oauth_settings(connection: &Connection) -> Option<(crate::egress::ApiAccess, OAuthConfig)> {
    let api: crate::egress::ApiAccess =
        serde_json::from_str(connection.api_json.as_deref()?).ok()?;
    match &api.credential {
        crate::egress::CredentialConfig::Oauth2(config) => {
            let config = config.clone();
            Some((api, config))
        }
        _ => None,
    }
}

/// A connection's OAuth access token, kept fresh.
#[derive(Debug)]
pub struct OAuthCredential {
    oauth: Arc<OAuth>,
    connection: Connection,
    config: OAuthConfig,
    allow_private: bool,
}

impl OAuthCredential {
    fn header(&self, tokens: &TokenSet) -> Result<Credential, FetchError> {
        let mut value = self.config.header_prefix().as_bytes().to_vec();
        value.extend_from_slice(tokens.access_token.as_bytes());
        Ok(Credential::Header {
            name: reqwest::header::AUTHORIZATION,
            value: SecretValue::new(value),
            secret: SecretValue::new(tokens.access_token.clone()),
        })
    }
}

#[async_trait::async_trait]
impl CredentialSource for OAuthCredential {
    async fn credential(&self) -> Result<Option<Credential>, FetchError> {
        let tokens = self
            .oauth
            .load(&self.connection)
            .map_err(FetchError::NotAllowed)?
            .ok_or_else(not_connected)?;
        let tokens = if tokens.expiring(SystemTime::now()) {
            self.oauth
                .refresh(
                    &self.connection,
                    &self.config,
                    self.allow_private,
                    &tokens.access_token,
                )
                .await?
        } else {
            tokens
        };
        self.header(&tokens).map(Some)
    }

    async fn after_unauthorized(&self, used: &Credential) -> Option<Credential> {
        let Credential::Header { secret, .. } = used else {
            return None;
        };
        let stale = std::str::from_utf8(secret.expose()).ok()?;
        let tokens = self
            .oauth
            .refresh(&self.connection, &self.config, self.allow_private, stale)
            .await
            .ok()?;
        self.header(&tokens).ok()
    }
}
