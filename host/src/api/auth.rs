//! Who is calling the management API: a bearer JWT, verified with HS256 (the embedded default,
//! a key from the environment or a key file) or RS256/ES256 against a JWKS file or a JWKS URL
//! (production: keys published by the identity provider, fetched at start, refreshed every few
//! minutes and soon after a token names a key id not seen yet, so key rotation needs no
//! restart).
//!
//! Claims: `sub`, `tenant_id`, optional `org_id`, `roles` (`tenant_admin`, `viewer`, and the
//! platform's `admin`), `exp` (required), `nbf`, and `iss`/`aud` when the host is configured to
//! require them. Every failure is a 401 whose detail names the check that failed (expired, not
//! yet valid, issuer, audience, signature), never a key or the token.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::ApiError;
use super::scope::is_id;

/// Allowed clock skew on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// Longest accepted token, in bytes (a bearer header larger than this is refused unread).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How tokens are verified.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// The HS256 key (at least 32 bytes).
    pub hs256_key: Option<Zeroizing<Vec<u8>>>,
    /// Public keys for RS256 and ES256 tokens, picked by the token's `kid`.
    pub jwks: Option<JwkSet>,
    /// Public keys published at a URL, kept fresh by [`RemoteJwks::run`].
    pub jwks_url: Option<Arc<RemoteJwks>>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("hs256_key", &self.hs256_key.as_ref().map(|_| "(set)"))
            .field("jwks_keys", &self.jwks.as_ref().map(|set| set.keys.len()))
            .field(
                "jwks_url",
                &self.jwks_url.as_ref().map(|remote| remote.url.as_str()),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl AuthConfig {
    /// Checks the configuration once, at start: a short HS256 key or a JWKS key that cannot
    /// verify anything is an operator's mistake to report, not something to find per request.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(key) = &self.hs256_key
            && key.len() < 32
        {
            anyhow::bail!(
                "the JWT HS256 key is {} bytes long; use at least 32 random bytes",
                key.len()
            );
        }
        if let Some(jwks) = &self.jwks {
            for (i, jwk) in jwks.keys.iter().enumerate() {
                check_jwk(jwk).map_err(|why| anyhow::anyhow!("JWKS key {i}: {why}"))?;
            }
        }
        Ok(())
    }

    /// Whether any key is configured (without one, the management API refuses every call).
    pub fn enabled(&self) -> bool {
        self.hs256_key.is_some()
            || self.jwks.as_ref().is_some_and(|set| !set.keys.is_empty())
            || self.jwks_url.is_some()
    }

    /// The public key a token's header names: by `kid` (or the only key when there is one and
    /// the token names none), from the JWKS file first, then the URL's latest keys.
    fn public_key(&self, kid: Option<&str>) -> Option<Jwk> {
        let pick = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        if let Some(found) = self.jwks.as_ref().and_then(pick) {
            return Some(found);
        }
        let remote = self.jwks_url.as_ref()?;
        let found = pick(&remote.keys());
        if found.is_none() {
            // Perhaps the identity provider rotated its keys: look again soon.
            remote.wake.notify_one();
        }
        found
    }
}

/// Why a JWKS key cannot verify tokens, if it cannot.
fn check_jwk(jwk: &Jwk) -> Result<(), String> {
    DecodingKey::from_jwk(jwk).map_err(|e| format!("not a usable public key: {e}"))?;
    match jwk.common.key_algorithm {
        Some(KeyAlgorithm::RS256 | KeyAlgorithm::ES256) => Ok(()),
        Some(other) => Err(format!(
            "its `alg` is {other}; RS256 and ES256 are accepted"
        )),
        None => Err("it has no `alg`: say RS256 or ES256".into()),
    }
}

/// The identity provider's public keys, published at a URL.
#[derive(Debug)]
pub struct RemoteJwks {
    url: reqwest::Url,
    keys: RwLock<Arc<JwkSet>>,
    last_fetch: Mutex<Option<Instant>>,
    wake: tokio::sync::Notify,
}

impl RemoteJwks {
    /// How often the keys are fetched again.
    pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
    /// The least time between two fetches, however often unknown key ids come.
    pub const MIN_INTERVAL: Duration = Duration::from_secs(30);
    /// The largest JWKS document read.
    const MAX_BYTES: usize = 256 * 1024;

    /// Keys to be fetched from `url`: HTTPS, or HTTP on a loopback address (tests, sidecars).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("the JWKS URL: {e}"))?;
        let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            anyhow::bail!("the JWKS URL must be https (http only on a loopback address)");
        }
        Ok(Self {
            url,
            keys: RwLock::new(Arc::new(JwkSet { keys: Vec::new() })),
            last_fetch: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// The keys of the last successful fetch.
    pub fn keys(&self) -> Arc<JwkSet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Fetches the keys now; keeps the usable ones (a key that cannot verify is logged and
    /// left out, the others still serve). On failure the previous keys stay.
    pub async fn refresh(&self, client: &reqwest::Client) -> anyhow::Result<usize> {
        *self
            .last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let response = client
            .get(self.url.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| anyhow::anyhow!("fetching the JWKS: {}", e.without_url()))?;
        if response
            .content_length()
            .is_some_and(|length| length > Self::MAX_BYTES as u64)
        {
            anyhow::bail!("the JWKS document is larger than {} bytes", Self::MAX_BYTES);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| anyhow::anyhow!("reading the JWKS: {}", e.without_url()))?;
        if body.len() > Self::MAX_BYTES {
            anyhow::bail!("the JWKS document is larger than {} bytes", Self::MAX_BYTES);
        }
        let mut set: JwkSet = serde_json::from_slice(&body)
            .map_err(|e| anyhow::anyhow!("the JWKS URL did not answer a JWKS document: {e}"))?;
        set.keys.retain(|jwk| match check_jwk(jwk) {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(kid = ?jwk.common.key_id, %why, "a JWKS key is left out");
                false
            }
        });
        let count = set.keys.len();
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
        Ok(count)
    }

    /// Keeps the keys fresh until `stop` turns true: every [`Self::REFRESH_EVERY`], and soon
    /// (at most every [`Self::MIN_INTERVAL`]) after a token names a key not known yet.
    pub async fn run(
        self: Arc<Self>,
        client: reqwest::Client,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let since = self
                .last_fetch
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .map(|at| at.elapsed());
            let due = match since {
                None => Duration::ZERO,
                Some(since) => Self::REFRESH_EVERY.saturating_sub(since),
            };
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(due) => {}
                () = self.wake.notified() => {
                    let waited = since.unwrap_or(Self::MIN_INTERVAL);
                    tokio::select! {
                        _ = stop.changed() => return,
                        () = tokio::time::sleep(Self::MIN_INTERVAL.saturating_sub(waited)) => {}
                    }
                }
            }
            match self.refresh(&client).await {
                Ok(keys) => tracing::debug!(keys, "JWKS refreshed"),
                Err(e) => {
                    tracing::error!(error = %e, "the JWKS could not be refreshed; the previous keys stay")
                }
            }
        }
    }
}

/// A role a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads the tenant's configuration and traffic.
    Viewer,
    /// Configures the tenant: adapters, connections, secrets, subscribers, redrive, replay.
    TenantAdmin,
    /// The platform's operators: everything a tenant admin can, for bootstrap and support.
    Admin,
}

impl Role {
    /// The role's name in a token's `roles`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::TenantAdmin => "tenant_admin",
            Self::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject (recorded as the actor of changes).
    pub subject: String,
    /// The tenant the caller acts in; nothing outside it is ever visible.
    pub tenant_id: String,
    /// The caller's org, when the token is org-scoped; authoritative.
    pub org_id: Option<String>,
    /// The highest role the token grants.
    pub role: Role,
    /// Every role of this API the token grants, by name (recorded with the changes it makes).
    pub roles: Vec<String>,
    /// Whether the token grants [`PERSONAL_DATA_ROLE`]: only then are payload fields an adapter
    /// declares as personal data shown unmasked.
    pub sees_personal_data: bool,
}

/// The role that lets a caller see personal data (the fields adapters declare in `pii-fields`)
/// in payloads. It adds to a token's other role and implies none: a tenant admin, even a
/// platform admin, sees those fields masked without it.
pub const PERSONAL_DATA_ROLE: &str = "pii_reader";

impl Caller {
    /// Whether the caller may change configuration.
    pub fn can_write(&self) -> bool {
        self.role >= Role::TenantAdmin
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    tenant_id: String,
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// Verifies the bearer token of `headers` and returns the caller it names.
pub fn authenticate(config: &AuthConfig, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if !config.enabled() {
        return Err(ApiError::Unauthorized(
            "the management API is disabled: no JWT key is configured".into(),
        ));
    }
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
        })?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(ApiError::Unauthorized("the token is too long".into()));
    }
    let malformed = || ApiError::Unauthorized("the token is not a well-formed JWT".into());
    let header = jsonwebtoken::decode_header(token).map_err(|_| malformed())?;
    let key = match header.alg {
        Algorithm::HS256 => config
            .hs256_key
            .as_ref()
            .map(|key| DecodingKey::from_secret(key))
            .ok_or_else(|| ApiError::Unauthorized("HS256 tokens are not accepted".into()))?,
        Algorithm::RS256 | Algorithm::ES256 => {
            if config.jwks.is_none() && config.jwks_url.is_none() {
                return Err(ApiError::Unauthorized(format!(
                    "{:?} tokens are not accepted",
                    header.alg
                )));
            }
            let jwk = config
                .public_key(header.kid.as_deref())
                .ok_or_else(|| ApiError::Unauthorized("the token's key is not known".into()))?;
            let key_alg = jwk.common.key_algorithm.map(|a| a.to_string());
            if key_alg.as_deref() != Some(&format!("{:?}", header.alg)) {
                return Err(ApiError::Unauthorized(
                    "the token's algorithm does not match its key".into(),
                ));
            }
            DecodingKey::from_jwk(&jwk)
                .map_err(|_| ApiError::Unauthorized("the token's key is not usable".into()))?
        }
        other => {
            return Err(ApiError::Unauthorized(format!(
                "{other:?} tokens are not accepted (HS256, RS256 or ES256)"
            )));
        }
    };
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY.as_secs();
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    match &config.issuer {
        Some(issuer) => {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match &config.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|error| {
            ApiError::Unauthorized(
                match error.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
                    ErrorKind::InvalidAudience => "the token's audience is not accepted",
                    ErrorKind::InvalidSignature => "the token's signature does not verify",
                    ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
                        "the token lacks a required claim (sub, tenant_id, exp, and iss/aud when required)"
                    }
                    _ => "the token is not a well-formed JWT",
                }
                .into(),
            )
        })?
        .claims;
    if claims.sub.trim().is_empty()
        || !is_id(&claims.tenant_id)
        || claims.org_id.as_deref().is_some_and(|org| !is_id(org))
    {
        return Err(ApiError::Unauthorized(
            "the token's `sub` must not be empty, and `tenant_id` and `org_id` must be ids \
             (printable ASCII, no `/`)"
                .into(),
        ));
    }
    let mut granted: Vec<Role> = claims
        .roles
        .iter()
        .filter_map(|role| match role.as_str() {
            "admin" => Some(Role::Admin),
            "tenant_admin" => Some(Role::TenantAdmin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        })
        .collect();
    granted.sort_unstable();
    granted.dedup();
    let role = granted.last().copied().ok_or_else(|| {
        ApiError::Forbidden("the token grants no role of this API (tenant_admin, viewer)".into())
    })?;
    let sees_personal_data = claims.roles.iter().any(|r| r == PERSONAL_DATA_ROLE);
    let mut roles: Vec<String> = granted.iter().map(|r| r.as_str().to_owned()).collect();
    if sees_personal_data {
        roles.push(PERSONAL_DATA_ROLE.to_owned());
    }
    Ok(Caller {
        subject: claims.sub,
        tenant_id: claims.tenant_id,
        org_id: claims.org_id,
        role,
        roles,
        sees_personal_data,
    })
}
