//! The host's HTTP client for adapters: every byte an adapter sends to a CRM goes through here.
//!
//! An adapter never touches the network. It names a request (`poll-request`, `http.fetch`);
//! an [`EgressSession`], bound to one connection and one invocation (or one poll page), decides
//! whether it may go out and performs it:
//!
//! - **Where**: only the connection's API base URL and its other allowed origins (scheme, host
//!   and port, exactly); no userinfo; redirects followed only within them; a host that resolves
//!   to (or is) a loopback, private, link-local, shared or otherwise special address is refused
//!   unless the connection allows private hosts (an on-premises CRM, or a test's fake one).
//! - **Credentials**: added by the host to requests to the base URL's origin only (never to
//!   another origin, never visible to the adapter), and scrubbed from what comes back (a CRM
//!   that echoes the request cannot hand the token to the adapter). Recorded requests never
//!   hold them.
//! - **Pace**: a per-connection rate limit (token bucket); a `429` is honoured (`Retry-After`,
//!   and nothing goes to that CRM from this connection before it passes); `5xx` and network
//!   failures are retried with backoff; every wait counts against the invocation's network
//!   budget.
//! - **Size and time**: a request timeout, a response size cap, a count of requests and a
//!   total network time per invocation ([`crate::sandbox::Limits`]).
//! - **Record**: every exchange (method, URL, headers with credentials redacted, status, sizes,
//!   time, the body as received) is kept with the invocation, so a tenant sees exactly what its
//!   adapter asked for.

mod dns;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex as AsyncMutex;

use crate::sandbox::{FetchError, HttpRequest, HttpResponse, Limits};
use crate::secrets::SecretStore;
use crate::store::{self, Millis};

pub use dns::is_special_address;

/// The most redirects followed for one request.
const MAX_REDIRECTS: usize = 5;
/// Attempts of one request that fails with a 5xx or no answer.
const MAX_ATTEMPTS: u32 = 3;
/// The longest `Retry-After` waited out inside one invocation; a longer one ends the request
/// with the 429 (a poll run then resumes after it).
const MAX_INLINE_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Most of a response body kept in the record of an exchange.
const MAX_RECORDED_BODY: usize = 1024 * 1024;
/// Headers an adapter may not set: the host owns credentials, the target and the framing.
const FORBIDDEN_HEADERS: [&str; 8] = [
    "authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
];

/// How a connection reaches its CRM's API (the connection's `api` settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiAccess {
    /// The URL requests are relative to: `https://acme.my.salesforce.com`. https, or http only
    /// for a private host the connection allows. Left empty for an OAuth provider that names it
    /// when the connection is connected (Salesforce's instance, Zoho's data centre).
    #[serde(default)]
    pub base_url: String,
    /// Other origins (`https://host[:port]`) an adapter may reach, e.g. a next-page link on
    /// another of the CRM's hosts. The credential is never sent to them.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Allow hosts on loopback, private or link-local addresses (an on-premises CRM, a test's
    /// fake one). Off by default.
    #[serde(default)]
    pub allow_private: bool,
    /// Requests to the CRM per minute from this connection.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// The credential the host adds to requests to the base URL.
    #[serde(default)]
    pub credential: CredentialConfig,
}

impl ApiAccess {
    /// The settings with what a credential's preset knows filled in: HubSpot's API URL.
    pub fn with_defaults(mut self) -> Self {
        if let CredentialConfig::Oauth2(oauth) = &self.credential
            && self.base_url.is_empty()
            && let Some(base) = oauth.default_base_url()
        {
            self.base_url = base.to_owned();
        }
        self
    }
}

/// A token bucket: `per_minute` requests a minute on average, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests a minute.
    pub per_minute: u32,
    /// Requests allowed back to back.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_minute: 600,
            burst: 20,
        }
    }
}

/// What the host adds to requests to a connection's API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialConfig {
    /// Nothing.
    #[default]
    None,
    /// An API key from the secret store, in a header (`header`, the value after `prefix`) or a
    /// query parameter (`query`).
    ApiKey {
        /// The secret's name in the connection's scope (see `PUT /v1/secrets/{name}`).
        secret: String,
        /// The header to put it in, e.g. `Authorization` or `X-Api-Key`.
        #[serde(default)]
        header: Option<String>,
        /// What precedes the key in the header, e.g. `apikey ` (Zenoti) or `Bearer `.
        #[serde(default)]
        prefix: Option<String>,
        /// The query parameter to put it in instead, e.g. `api_key`.
        #[serde(default)]
        query: Option<String>,
    },
    /// A bearer token from the secret store (`Authorization: Bearer <token>`).
    Bearer {
        /// The secret's name in the connection's scope.
        secret: String,
    },
    /// OAuth 2.0: the host connects the account (`POST /v1/connections/{id}/oauth/start`),
    /// keeps its tokens in the secret store and fresh, and adds the access token.
    Oauth2(crate::oauth::OAuthConfig),
}

/// A credential ready to add to requests.
#[derive(Clone)]
pub enum Credential {
    /// A header and its value.
    Header {
        /// Its name.
        name: reqwest::header::HeaderName,
        /// Its full value (prefix included).
        value: crate::secrets::SecretValue,
        /// What of it to scrub from answers (the key itself).
        secret: crate::secrets::SecretValue,
    },
    /// A query parameter.
    Query {
        /// Its name.
        name: String,
        /// Its value.
        value: crate::secrets::SecretValue,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Header { name, .. } => write!(f, "Credential::Header({name}, redacted)"),
            Self::Query { name, .. } => write!(f, "Credential::Query({name}, redacted)"),
        }
    }
}

impl Credential {
    /// The secret bytes that must never reach an adapter or a record.
    fn secret(&self) -> &[u8] {
        match self {
            Self::Header { secret, .. } => secret.expose(),
            Self::Query { value, .. } => value.expose(),
        }
    }

    /// The name of the query parameter it travels in, if any.
    fn query_name(&self) -> Option<&str> {
        match self {
            Self::Query { name, .. } => Some(name),
            Self::Header { .. } => None,
        }
    }
}

/// Supplies a connection's credential for a request (an API key or bearer token from the secret
/// store, or an OAuth access token that is kept fresh).
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync + std::fmt::Debug {
    /// The credential to add now.
    async fn credential(&self) -> Result<Option<Credential>, FetchError>;
    /// The CRM answered 401 with `used`: get a new one if that can help (an OAuth refresh),
    /// once. `None`: nothing better is available.
    async fn after_unauthorized(&self, used: &Credential) -> Option<Credential> {
        let _ = used;
        None
    }
}

/// A credential from the secret store, as configured.
#[derive(Debug)]
pub struct StoredCredential {
    secrets: Arc<dyn SecretStore>,
    secret_ref: String,
    shape: Shape,
}

#[derive(Debug)]
enum Shape {
    Header { name: String, prefix: String },
    Query { name: String },
}

impl StoredCredential {
    /// The credential of `config` (`None` for `none`), named in the secret store by
    /// `secret_ref(name)`.
    pub fn of(
        config: &CredentialConfig,
        secrets: Arc<dyn SecretStore>,
        secret_ref: impl Fn(&str) -> String,
    ) -> Option<Self> {
        let (secret, shape) = match config {
            // OAuth tokens come from the OAuth machinery, not a stored secret.
            CredentialConfig::None | CredentialConfig::Oauth2(_) => return None,
            CredentialConfig::ApiKey {
                secret,
                header,
                prefix,
                query,
            } => (
                secret,
                match (query, header) {
                    (Some(query), _) => Shape::Query {
                        name: query.clone(),
                    },
                    (None, header) => Shape::Header {
                        name: header.clone().unwrap_or_else(|| "authorization".into()),
                        prefix: prefix.clone().unwrap_or_default(),
                    },
                },
            ),
            CredentialConfig::Bearer { secret } => (
                secret,
                Shape::Header {
                    name: "authorization".into(),
                    prefix: "Bearer ".into(),
                },
            ),
        };
        Some(Self {
            secrets,
            secret_ref: secret_ref(secret),
            shape,
        })
    }
}

#[async_trait::async_trait]
impl CredentialSource for StoredCredential {
    async fn credential(&self) -> Result<Option<Credential>, FetchError> {
        let active = self
            .secrets
            .get(&self.secret_ref, SystemTime::now())
            .map_err(|e| FetchError::NotAllowed(format!("the connection's credential: {e}")))?
            .ok_or_else(|| {
                FetchError::NotAllowed(
                    "the connection's credential is not written yet (PUT /v1/secrets/{name})"
                        .into(),
                )
            })?;
        let key = active.current;
        Ok(Some(match &self.shape {
            Shape::Header { name, prefix } => {
                let mut value = prefix.as_bytes().to_vec();
                value.extend_from_slice(key.expose());
                Credential::Header {
                    name: reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(
                        |_| FetchError::NotAllowed(format!("`{name}` is not a header name")),
                    )?,
                    value: crate::secrets::SecretValue::new(value),
                    secret: key,
                }
            }
            Shape::Query { name } => Credential::Query {
                name: name.clone(),
                value: key,
            },
        }))
    }
}

/// One request and its answer, as recorded with the invocation that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// When it started.
    pub started_at: Millis,
    /// The method.
    pub method: String,
    /// The URL, a credential in its query redacted.
    pub url: String,
    /// The headers sent: the adapter's, and the credential's header, its value shown as
    /// `[redacted]`.
    pub request_headers: Vec<(String, String)>,
    /// Size of the request body.
    pub request_bytes: u64,
    /// The final answer's status; `None` when there was none.
    pub status: Option<u16>,
    /// Its headers (`set-cookie` redacted).
    pub response_headers: Vec<(String, String)>,
    /// Size of its body.
    pub response_bytes: u64,
    /// Sends it took (retries, redirects).
    pub attempts: u32,
    /// Wall time, in microseconds.
    pub duration_us: u64,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The body as received (credential scrubbed), up to 1 MiB; kept by the retention rules.
    #[serde(skip)]
    pub response_body: Vec<u8>,
}

/// The host's HTTP client for adapters (one per host).
#[derive(Debug, Clone)]
pub struct Egress {
    inner: Arc<EgressInner>,
}

#[derive(Debug)]
struct EgressInner {
    /// Resolves only to public addresses.
    public: reqwest::Client,
    /// Resolves to any address (connections that allow private hosts).
    any: reqwest::Client,
    /// Per connection: its token bucket and how long a 429 told it to wait.
    pace: Mutex<HashMap<String, Arc<AsyncMutex<Pace>>>>,
}

impl Egress {
    /// A client; fails only when the TLS backend cannot start.
    pub fn new() -> Result<Self, String> {
        let build = |public: bool| {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("adapter-host/", env!("CARGO_PKG_VERSION")))
                .dns_resolver(Arc::new(dns::Guarded { public }))
                .build()
                .map_err(|e| format!("the HTTP client: {e}"))
        };
        Ok(Self {
            inner: Arc::new(EgressInner {
                public: build(true)?,
                any: build(false)?,
                pace: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The client for requests the host makes itself (an OAuth token endpoint): resolving to
    /// public addresses only unless `allow_private`.
    pub fn client(&self, allow_private: bool) -> &reqwest::Client {
        if allow_private {
            &self.inner.any
        } else {
            &self.inner.public
        }
    }

    /// A session for `connection_id` reaching `api` under `limits`, with `credential`.
    /// `Err` when `api` itself is unusable (a base URL that is not an allowed kind of URL).
    pub fn session(
        &self,
        connection_id: &str,
        api: &ApiAccess,
        credential: Option<Arc<dyn CredentialSource>>,
        limits: &Limits,
    ) -> Result<EgressSession, String> {
        let origins = Origins::of(api)?;
        let pace = self
            .inner
            .pace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(connection_id.to_owned())
            .or_insert_with(|| Arc::new(AsyncMutex::new(Pace::new(api.rate_limit))))
            .clone();
        Ok(EgressSession {
            inner: Arc::clone(&self.inner),
            origins,
            allow_private: api.allow_private,
            rate_limit: api.rate_limit,
            credential,
            pace,
            budget: Mutex::new(Budget {
                requests_left: limits.http_requests,
                time_left: Duration::from_millis(limits.http_budget_ms),
            }),
            timeout: Duration::from_millis(limits.http_timeout_ms),
            max_response: usize::try_from(limits.http_response_bytes).unwrap_or(usize::MAX),
            recorded: Mutex::new(Vec::new()),
            retry_after: Mutex::new(None),
        })
    }
}

/// Checks an `api` setting as the API is given it: the message says what is wrong.
pub fn check_api(api: &ApiAccess) -> Result<(), String> {
    let mut named_on_connect = false;
    if let CredentialConfig::Oauth2(oauth) = &api.credential {
        oauth
            .validate()
            .map_err(|e| format!("`api.credential`: {e}"))?;
        named_on_connect = oauth.names_base_url();
    }
    match (api.base_url.is_empty(), named_on_connect) {
        (true, true) => {}
        (true, false) => {
            return Err(
                "`api.base_url` is required (only Salesforce and Zoho OAuth \
                        connections may leave it out: the provider names it when connecting)"
                    .into(),
            );
        }
        (false, _) => Origins::of(api).map(|_| ())?,
    }
    if api.rate_limit.per_minute == 0 || api.rate_limit.burst == 0 {
        return Err("`api.rate_limit` needs `per_minute` and `burst` of at least 1".into());
    }
    Ok(())
}

/// The origins a connection may reach: the base URL's (which alone gets the credential) first.
#[derive(Debug, Clone)]
struct Origins {
    base: reqwest::Url,
    all: Vec<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn of(url: &reqwest::Url) -> Option<Self> {
        Some(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }
}

impl Origins {
    fn of(api: &ApiAccess) -> Result<Self, String> {
        let parse = |text: &str, what: &str| -> Result<reqwest::Url, String> {
            let url = reqwest::Url::parse(text).map_err(|_| format!("{what} is not a URL"))?;
            check_target(&url, api.allow_private).map_err(|why| format!("{what}: {why}"))?;
            Ok(url)
        };
        if api.base_url.is_empty() {
            return Err(
                "the connection has no API base URL yet: connect it to its CRM \
                        (POST /v1/connections/{id}/oauth/start) or set `api.base_url`"
                    .into(),
            );
        }
        let base = parse(&api.base_url, "`api.base_url`")?;
        if base.query().is_some() || base.fragment().is_some() {
            return Err("`api.base_url` cannot have a query or a fragment".into());
        }
        let mut all = vec![Origin::of(&base).ok_or("`api.base_url` has no host")?];
        for extra in &api.allowed_origins {
            let url = parse(extra, "an entry of `api.allowed_origins`")?;
            if url.path() != "/" || url.query().is_some() {
                return Err(format!(
                    "`api.allowed_origins` takes origins (scheme://host[:port]), not {extra:?}"
                ));
            }
            all.extend(Origin::of(&url));
        }
        Ok(Self { base, all })
    }

    /// The URL an adapter's `url` names: a path relative to the base URL, or an absolute URL on
    /// an allowed origin.
    fn resolve(&self, url: &str) -> Result<reqwest::Url, FetchError> {
        let refused = |why: String| Err(FetchError::NotAllowed(why));
        if url.starts_with('/') && !url.starts_with("//") {
            // Relative to the base URL's path: `/services/...` under `https://x/base` is
            // `https://x/base/services/...`.
            let mut joined = self.base.clone();
            let base_path = joined.path().trim_end_matches('/').to_owned();
            let (path, query) = url.split_once('?').unwrap_or((url, ""));
            joined.set_path(&format!("{base_path}{path}"));
            joined.set_query((!query.is_empty()).then_some(query));
            // `set_path` resolves `..`: what comes out must still be under the base path.
            let lowered = path.to_ascii_lowercase();
            if !joined.path().starts_with(&format!("{base_path}/"))
                || lowered.contains("/../")
                || lowered.ends_with("/..")
                || lowered.contains("%2e")
            {
                return refused("the path may not climb out of the base URL".into());
            }
            return Ok(joined);
        }
        let Ok(absolute) = reqwest::Url::parse(url) else {
            return refused(format!(
                "`{}` is neither a path starting with `/` nor an absolute URL",
                shorten(url)
            ));
        };
        self.check_allowed(&absolute)?;
        Ok(absolute)
    }

    /// `Ok` when `url` is on one of the connection's origins.
    fn check_allowed(&self, url: &reqwest::Url) -> Result<(), FetchError> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::NotAllowed(
                "URLs with credentials in them (user@host) are refused".into(),
            ));
        }
        match Origin::of(url) {
            Some(origin) if self.all.contains(&origin) => Ok(()),
            _ => Err(FetchError::NotAllowed(format!(
                "{} is not one of the connection's origins ({})",
                shorten(&origin_text(url)),
                self.all
                    .iter()
                    .map(|o| format!("{}://{}:{}", o.scheme, o.host, o.port))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Whether `url` is on the base URL's origin (the only one that gets the credential).
    fn is_base(&self, url: &reqwest::Url) -> bool {
        Origin::of(url).as_ref() == self.all.first()
    }
}

fn origin_text(url: &reqwest::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

/// Refuses a URL that is not http(s), has credentials, or names an address the connection may
/// not reach by IP (DNS answers are checked when they come, by [`dns::Guarded`]).
pub(crate) fn check_target(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => return Err("plain http is only allowed for private hosts".into()),
        other => return Err(format!("the scheme `{other}` is not allowed")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URLs with credentials in them (user@host) are refused".into());
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err("the URL has no host".into()),
    };
    if let Some(ip) = ip
        && !allow_private
    {
        return Err(format!(
            "an IP address ({ip}) instead of the CRM's host name is only allowed for private hosts"
        ));
    }
    Ok(())
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(200) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// What an invocation may still spend on the network.
#[derive(Debug)]
struct Budget {
    requests_left: u32,
    time_left: Duration,
}

/// A connection's pace: its token bucket and the end of the last `Retry-After`.
#[derive(Debug)]
struct Pace {
    tokens: f64,
    refilled: Instant,
    blocked_until: Option<Instant>,
}

impl Pace {
    fn new(limit: RateLimit) -> Self {
        Self {
            tokens: f64::from(limit.burst),
            refilled: Instant::now(),
            blocked_until: None,
        }
    }

    /// How long to wait for a token (taking it); zero when one is there.
    fn take(&mut self, limit: RateLimit) -> Duration {
        let now = Instant::now();
        let rate = f64::from(limit.per_minute) / 60.0;
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(limit.burst));
        self.refilled = now;
        let blocked = self
            .blocked_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return blocked;
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / rate);
        self.tokens -= 1.0;
        wait.max(blocked)
    }
}

/// One connection's access to its CRM for one invocation (or one poll page).
#[derive(Debug)]
pub struct EgressSession {
    inner: Arc<EgressInner>,
    origins: Origins,
    allow_private: bool,
    rate_limit: RateLimit,
    credential: Option<Arc<dyn CredentialSource>>,
    pace: Arc<AsyncMutex<Pace>>,
    budget: Mutex<Budget>,
    timeout: Duration,
    max_response: usize,
    recorded: Mutex<Vec<Exchange>>,
    retry_after: Mutex<Option<SystemTime>>,
}

/// What one send got.
enum Sent {
    Answer(HttpResponse),
    Failed(String),
}

impl EgressSession {
    /// The exchanges so far, taken out (each is returned once).
    pub fn take_exchanges(&self) -> Vec<Exchange> {
        std::mem::take(&mut *self.recorded.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The time a `429` answered in this session said to wait until, when one did.
    pub fn retry_after(&self) -> Option<SystemTime> {
        *self.retry_after.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Performs `request` under every rule of the module: the answer whatever its status, or
    /// why there is none.
    pub async fn perform(&self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        let started = Instant::now();
        let started_at = store::now_millis();
        let mut exchange = Exchange {
            started_at,
            method: request.method.to_ascii_uppercase(),
            url: shorten(&request.url),
            request_headers: request.headers.clone(),
            request_bytes: request.body.as_ref().map_or(0, |b| b.len() as u64),
            status: None,
            response_headers: Vec::new(),
            response_bytes: 0,
            attempts: 0,
            duration_us: 0,
            error: None,
            response_body: Vec::new(),
        };
        let result = self.perform_recorded(request, &mut exchange).await;
        exchange.duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match &result {
            Ok(response) => {
                exchange.status = Some(response.status);
                exchange.response_bytes = response.body.len() as u64;
                exchange.response_headers = redact_headers(&response.headers);
                exchange.response_body =
                    response.body[..response.body.len().min(MAX_RECORDED_BODY)].to_vec();
            }
            Err(error) => exchange.error = Some(error.to_string()),
        }
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(exchange);
        result
    }

    async fn perform_recorded(
        &self,
        request: HttpRequest,
        exchange: &mut Exchange,
    ) -> Result<HttpResponse, FetchError> {
        {
            let mut budget = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            if budget.requests_left == 0 {
                return Err(FetchError::LimitExceeded(
                    "this invocation has made all the requests it may (http_requests)".into(),
                ));
            }
            budget.requests_left -= 1;
        }
        let method = reqwest::Method::from_bytes(exchange.method.as_bytes())
            .ok()
            .filter(|m| {
                [
                    reqwest::Method::GET,
                    reqwest::Method::POST,
                    reqwest::Method::PUT,
                    reqwest::Method::PATCH,
                    reqwest::Method::DELETE,
                    reqwest::Method::HEAD,
                ]
                .contains(m)
            })
            .ok_or_else(|| {
                FetchError::NotAllowed(format!("the method `{}` is not allowed", exchange.method))
            })?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &request.headers {
            let lower = name.to_ascii_lowercase();
            if FORBIDDEN_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
                return Err(FetchError::NotAllowed(format!(
                    "the header `{lower}` is set by the host, not the adapter"
                )));
            }
            let name = reqwest::header::HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| FetchError::NotAllowed(format!("`{name}` is not a header name")))?;
            let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                FetchError::NotAllowed(format!("the value of `{name}` is not a header value"))
            })?;
            headers.append(name, value);
        }
        let mut url = self.origins.resolve(&request.url)?;
        if !request.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in &request.query {
                pairs.append_pair(name, value);
            }
        }
        let credential = match &self.credential {
            Some(source) => source.credential().await?,
            None => None,
        };
        if let Some(name) = credential.as_ref().and_then(Credential::query_name)
            && url.query_pairs().any(|(k, _)| k == name)
        {
            return Err(FetchError::NotAllowed(format!(
                "the query parameter `{name}` is set by the host, not the adapter"
            )));
        }
        exchange.url = shorten(&redact_url(&url, credential.as_ref()));
        if let Some(Credential::Header { name, .. }) = &credential
            && self.origins.is_base(&url)
        {
            // The record shows that the credential went, never what it is.
            exchange
                .request_headers
                .push((name.as_str().to_owned(), "[redacted]".to_owned()));
        }
        let (mut method, mut body) = (method, request.body);
        let mut credential = credential;
        let mut retried_unauthorized = false;
        let mut redirects = 0;
        loop {
            let on_base = self.origins.is_base(&url);
            let sent = self
                .send_with_retries(
                    &method,
                    &url,
                    &headers,
                    body.as_deref(),
                    credential.as_ref().filter(|_| on_base),
                    exchange,
                )
                .await?;
            let mut response = match sent {
                Sent::Answer(response) => response,
                Sent::Failed(why) => return Err(FetchError::Unavailable(why)),
            };
            if response.status == 401
                && on_base
                && !retried_unauthorized
                && let (Some(source), Some(used)) = (&self.credential, &credential)
                && let Some(fresh) = source.after_unauthorized(used).await
            {
                // The token may have expired between its check and the request: once more
                // with a fresh one.
                retried_unauthorized = true;
                credential = Some(fresh);
                continue;
            }
            if (300..400).contains(&response.status)
                && let Some(location) = header(&response.headers, "location")
            {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(FetchError::Unavailable(format!(
                        "more than {MAX_REDIRECTS} redirects"
                    )));
                }
                let next = url.join(location).map_err(|_| {
                    FetchError::Unavailable("a redirect to something that is not a URL".into())
                })?;
                check_target(&next, self.allow_private).map_err(FetchError::NotAllowed)?;
                self.origins.check_allowed(&next).map_err(|e| match e {
                    FetchError::NotAllowed(why) => {
                        FetchError::NotAllowed(format!("a redirect left the origins: {why}"))
                    }
                    other => other,
                })?;
                if response.status == 303
                    || (matches!(response.status, 301 | 302) && method == reqwest::Method::POST)
                {
                    method = reqwest::Method::GET;
                    body = None;
                }
                url = next;
                exchange.url = shorten(&redact_url(&url, credential.as_ref()));
                continue;
            }
            if let Some(credential) = &credential {
                scrub(&mut response, credential.secret());
            }
            return Ok(response);
        }
    }

    /// Sends once, or more when the CRM answers 5xx or 429, or does not answer.
    async fn send_with_retries(
        &self,
        method: &reqwest::Method,
        url: &reqwest::Url,
        headers: &reqwest::header::HeaderMap,
        body: Option<&[u8]>,
        credential: Option<&Credential>,
        exchange: &mut Exchange,
    ) -> Result<Sent, FetchError> {
        let mut backoff = Duration::from_millis(200);
        let mut last = Sent::Failed("not sent".into());
        for attempt in 1..=MAX_ATTEMPTS {
            let wait = self.pace.lock().await.take(self.rate_limit);
            self.spend(wait)?;
            tokio::time::sleep(wait).await;
            exchange.attempts += 1;
            let sent_at = Instant::now();
            let sent = self.send(method, url, headers, body, credential).await;
            self.spend(sent_at.elapsed())?;
            last = match sent {
                Ok(response) if response.status == 429 => {
                    let after = retry_after(&response.headers).unwrap_or(Duration::from_secs(1));
                    let until = Instant::now() + after;
                    {
                        let mut pace = self.pace.lock().await;
                        pace.blocked_until =
                            Some(pace.blocked_until.map_or(until, |u| u.max(until)));
                    }
                    *self.retry_after.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(SystemTime::now() + after);
                    if after > MAX_INLINE_RETRY_AFTER || attempt == MAX_ATTEMPTS {
                        return Ok(Sent::Answer(response));
                    }
                    // The next attempt waits for the bucket, which waits for `Retry-After`.
                    Sent::Answer(response)
                }
                Ok(response) if response.status >= 500 && attempt < MAX_ATTEMPTS => {
                    self.spend(backoff)?;
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    Sent::Answer(response)
                }
                Ok(response) => return Ok(Sent::Answer(response)),
                Err(SendError::TooLarge(why)) => return Err(FetchError::TooLarge(why)),
                Err(SendError::Timeout) => {
                    Sent::Failed(format!("no answer within {} ms", self.timeout.as_millis()))
                }
                Err(SendError::Refused(why)) => return Err(FetchError::NotAllowed(why)),
                Err(SendError::Network(why)) => {
                    if attempt < MAX_ATTEMPTS {
                        self.spend(backoff)?;
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                    Sent::Failed(why)
                }
            };
        }
        Ok(last)
    }

    /// Takes `spent` from the invocation's network time; `Err` when there is not that much.
    fn spend(&self, spent: Duration) -> Result<(), FetchError> {
        let mut budget = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        if spent > budget.time_left {
            budget.time_left = Duration::ZERO;
            return Err(FetchError::LimitExceeded(
                "this invocation has spent its network time (http_budget_ms)".into(),
            ));
        }
        budget.time_left -= spent;
        Ok(())
    }

    async fn send(
        &self,
        method: &reqwest::Method,
        url: &reqwest::Url,
        headers: &reqwest::header::HeaderMap,
        body: Option<&[u8]>,
        credential: Option<&Credential>,
    ) -> Result<HttpResponse, SendError> {
        let client = if self.allow_private {
            &self.inner.any
        } else {
            &self.inner.public
        };
        let mut target = url.clone();
        let mut headers = headers.clone();
        match credential {
            Some(Credential::Header { name, value, .. }) => {
                let mut value =
                    reqwest::header::HeaderValue::from_bytes(value.expose()).map_err(|_| {
                        SendError::Refused("the credential is not a header value".into())
                    })?;
                value.set_sensitive(true);
                headers.insert(name.clone(), value);
            }
            Some(Credential::Query { name, value }) => {
                let value = std::str::from_utf8(value.expose())
                    .map_err(|_| SendError::Refused("the credential is not text".into()))?;
                target.query_pairs_mut().append_pair(name, value);
            }
            None => {}
        }
        let mut builder = client
            .request(method.clone(), target)
            .headers(headers)
            .timeout(self.timeout);
        if let Some(body) = body {
            builder = builder.body(body.to_vec());
        }
        let mut response = builder.send().await.map_err(SendError::from_reqwest)?;
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        if let Some(length) = response.content_length()
            && length > self.max_response as u64
        {
            return Err(SendError::TooLarge(format!(
                "the answer is {length} bytes; at most {} are accepted (http_response_bytes)",
                self.max_response
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(SendError::from_reqwest)? {
            if body.len() + chunk.len() > self.max_response {
                return Err(SendError::TooLarge(format!(
                    "the answer is larger than {} bytes (http_response_bytes)",
                    self.max_response
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

#[async_trait::async_trait]
impl crate::sandbox::Fetch for EgressSession {
    async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        self.perform(request).await
    }
}

enum SendError {
    Timeout,
    TooLarge(String),
    Refused(String),
    Network(String),
}

impl SendError {
    fn from_reqwest(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            return Self::Timeout;
        }
        // The DNS guard's refusal travels as the connect error's source.
        let mut cause: Option<&dyn std::error::Error> = Some(&error);
        while let Some(e) = cause {
            if let Some(refused) = e.downcast_ref::<dns::Refused>() {
                return Self::Refused(refused.to_string());
            }
            cause = e.source();
        }
        Self::Network(if error.is_connect() {
            "the CRM could not be reached (connection failed)".into()
        } else {
            "the exchange with the CRM failed".into()
        })
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &[(String, String)]) -> Option<Duration> {
    let value = header(headers, "retry-after")?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds.min(24 * 3600)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn redact_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            if name.eq_ignore_ascii_case("set-cookie") {
                (name.clone(), "[redacted]".into())
            } else {
                (name.clone(), value.clone())
            }
        })
        .collect()
}

/// `url` as it is sent, the value of a credential's query parameter (which the host adds when
/// it sends) shown as redacted.
fn redact_url(url: &reqwest::Url, credential: Option<&Credential>) -> String {
    let Some(name) = credential.and_then(Credential::query_name) else {
        return url.to_string();
    };
    let mut shown = url.clone();
    shown.query_pairs_mut().append_pair(name, "[redacted]");
    shown.to_string()
}

/// Replaces every occurrence of `secret` (and of its URL-encoded form) in an answer: a CRM
/// that echoes the request must not hand the credential to the adapter.
fn scrub(response: &mut HttpResponse, secret: &[u8]) {
    if secret.len() < 4 {
        return;
    }
    let encoded: Vec<u8> = url::form_urlencoded::byte_serialize(secret)
        .collect::<String>()
        .into_bytes();
    for needle in [secret, encoded.as_slice()] {
        response.body = replace_all(&response.body, needle, b"[redacted]");
        for (_, value) in &mut response.headers {
            let replaced = replace_all(value.as_bytes(), needle, b"[redacted]");
            *value = String::from_utf8_lossy(&replaced).into_owned();
        }
    }
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests;
