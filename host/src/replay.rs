//! Exact replay of one recorded invocation.
//!
//! Every invocation the host runs records, beside its log, what it drew on besides its input:
//! the values of the state keys it read (and of those under the prefixes it listed), the seed
//! of its random generators, every clock reading, and the connection context it ran for (a
//! [`ReplayRecord`]). With the stored input and the HTTP answers recorded for it, that is all a
//! deterministic guest can observe: running the same component on an [`InvocationExport`]
//! computes the same outcome, byte for byte. The record is sealed, purged and erased with the
//! invocation's log.
//!
//! An export (`INVOCATION.json`) carries no secret: the stored input has had its credentials
//! removed (credential headers, a capability token in the path, a token in the body), recorded
//! requests show credentials as `[redacted]`, and settings are the connection's non-secret ones.
//! It does carry the CRM's data (the body, the answers, the state): personal data included.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::sandbox::{
    self, Adapter, ConnectionContext, Determinism, Env, FetchError, HttpRequest, HttpResponse,
    Input, Outcome, Report, StateAccess, StateMap,
};
use crate::store::{Export, StoredExchange};

/// The format of an export, named in its `format`.
pub const FORMAT: &str = "adapter-host.invocation/1";

/// What replays one invocation, beside its stored input and recorded answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRecord {
    /// The connection it ran for, as it was then.
    pub context: ConnectionContext,
    /// The state it could observe: the keys it read before writing them and every key under a
    /// prefix it listed, with their values then (base64).
    pub state: BTreeMap<String, String>,
    /// Its seed and clock readings.
    pub determinism: Determinism,
    /// Its outcome (events as emitted, violations, failure) as JSON text: what a replay must
    /// compute again, byte for byte.
    pub outcome: String,
    /// Hex SHA-256 of `outcome`.
    pub outcome_sha256: String,
}

impl ReplayRecord {
    /// The record of the invocation `report`, run for `context` on `state` (the connection's
    /// state as the invocation started).
    pub fn of(report: &Report, context: &ConnectionContext, state: &StateMap) -> Self {
        let outcome = outcome_text(&report.outcome);
        Self {
            context: context.clone(),
            state: observed(&report.state_access, state),
            determinism: report.determinism.clone(),
            outcome_sha256: sandbox::sha256_hex(outcome.as_bytes()),
            outcome,
        }
    }

    /// The state to replay on.
    pub fn state_map(&self) -> Result<StateMap, String> {
        self.state
            .iter()
            .map(|(key, value)| {
                base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .map(|bytes| (key.clone(), bytes))
                    .map_err(|e| format!("state key {key:?}: not base64: {e}"))
            })
            .collect()
    }
}

/// What of `state` an invocation that accessed it as `access` could have seen.
fn observed(access: &StateAccess, state: &StateMap) -> BTreeMap<String, String> {
    let encode = |value: &Vec<u8>| base64::engine::general_purpose::STANDARD.encode(value);
    let mut seen = BTreeMap::new();
    for key in &access.reads {
        if let Some(value) = state.get(key) {
            seen.insert(key.clone(), encode(value));
        }
    }
    for prefix in &access.prefixes {
        for (key, value) in state.range(prefix.clone()..) {
            if !key.starts_with(prefix.as_str()) {
                break;
            }
            seen.insert(key.clone(), encode(value));
        }
    }
    seen
}

/// `outcome` as JSON text.
fn outcome_text(outcome: &Outcome) -> String {
    serde_json::to_string(outcome).unwrap_or_default()
}

/// One invocation, exported (`INVOCATION.json`): everything [`replay`] needs, and what the
/// invocation computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvocationExport {
    /// [`FORMAT`].
    pub format: String,
    /// The invocation's id.
    pub invocation_id: String,
    /// The delivery it ran on.
    pub delivery_id: String,
    /// The component that ran.
    pub adapter: ExportedAdapter,
    /// The export it called.
    #[schema(value_type = String)]
    pub export: Export,
    /// The limits it ran under (its version's).
    #[schema(value_type = Object)]
    pub limits: sandbox::Limits,
    /// Its input, as the adapter was given it.
    #[schema(value_type = Object)]
    pub input: RecordedInput,
    /// What it drew on besides its input, and what it computed (`record.outcome`).
    #[schema(value_type = Object)]
    pub record: ReplayRecord,
    /// The answers to its `http.fetch` calls, in order.
    #[schema(value_type = Vec<Object>)]
    pub responses: Vec<RecordedResponse>,
}

/// The component an invocation ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExportedAdapter {
    /// The adapter's id.
    pub id: String,
    /// Its version.
    pub version: u32,
    /// Hex SHA-256 of the component: a replay refuses another one.
    pub sha256: String,
}

/// An invocation's input, as the adapter was given it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordedInput {
    /// `handle-webhook`'s request.
    Webhook {
        /// The method.
        method: String,
        /// The path (a capability token shows as `[redacted]`).
        path: String,
        /// The raw query.
        query: String,
        /// The headers, credential-bearing ones removed.
        headers: Vec<(String, String)>,
        /// The body, base64.
        body: String,
        /// When it was received, Unix milliseconds.
        received_at: i64,
    },
    /// `handle-poll`'s page.
    Poll {
        /// The page, base64.
        body: String,
        /// Its media type.
        content_type: Option<String>,
        /// The cursor it was fetched with.
        cursor: Option<String>,
        /// When it was fetched, Unix milliseconds.
        fetched_at: i64,
        /// The request the host made for it; null for a pushed page.
        request: Option<HttpRequest>,
        /// The answer's status.
        status: u16,
        /// The answer's headers.
        headers: Vec<(String, String)>,
    },
}

fn millis(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn at(millis: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

impl RecordedInput {
    /// The input as exported.
    pub fn of(input: &Input) -> Option<Self> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        Some(match input {
            Input::Webhook(request) => Self::Webhook {
                method: request.method.clone(),
                path: request.path.clone(),
                query: request.query.clone(),
                headers: request.headers.clone(),
                body: b64(&request.body),
                received_at: millis(request.received_at),
            },
            Input::Poll(page) => Self::Poll {
                body: b64(&page.body),
                content_type: page.content_type.clone(),
                cursor: page.cursor.clone(),
                fetched_at: millis(page.fetched_at),
                request: page.request.clone(),
                status: page.status,
                headers: page.headers.clone(),
            },
            Input::PollRequest { .. } => return None,
        })
    }

    /// The input to give the adapter again.
    pub fn to_input(&self) -> Result<Input, String> {
        let decode = |text: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("the input's body is not base64: {e}"))
        };
        Ok(match self {
            Self::Webhook {
                method,
                path,
                query,
                headers,
                body,
                received_at,
            } => Input::Webhook(sandbox::WebhookRequest {
                method: method.clone(),
                path: path.clone(),
                query: query.clone(),
                headers: headers.clone(),
                body: decode(body)?,
                received_at: at(*received_at),
            }),
            Self::Poll {
                body,
                content_type,
                cursor,
                fetched_at,
                request,
                status,
                headers,
            } => Input::Poll(sandbox::PollPage {
                body: decode(body)?,
                content_type: content_type.clone(),
                cursor: cursor.clone(),
                fetched_at: at(*fetched_at),
                request: request.clone(),
                status: *status,
                headers: headers.clone(),
            }),
        })
    }
}

/// One recorded answer to an adapter's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedResponse {
    /// The request's method.
    pub method: String,
    /// Its URL (a credential in its query redacted).
    pub url: String,
    /// The answer's status; null when there was no answer.
    pub status: Option<u16>,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body, base64.
    pub body: String,
    /// Why there was no answer (`timeout: ...`, `unavailable: ...`).
    pub error: Option<String>,
}

impl RecordedResponse {
    /// The answer recorded in `stored`.
    pub fn of(stored: &StoredExchange) -> Self {
        let exchange = &stored.exchange;
        Self {
            method: exchange.method.clone(),
            url: exchange.url.clone(),
            status: exchange.status,
            headers: exchange.response_headers.clone(),
            body: base64::engine::general_purpose::STANDARD.encode(&exchange.response_body),
            error: exchange.error.clone(),
        }
    }

    fn answer(&self) -> Result<HttpResponse, FetchError> {
        match (self.status, &self.error) {
            (Some(status), _) => Ok(HttpResponse {
                status,
                headers: self.headers.clone(),
                body: base64::engine::general_purpose::STANDARD
                    .decode(&self.body)
                    .unwrap_or_default(),
            }),
            (None, error) => {
                let error = error.clone().unwrap_or_default();
                let split = |prefix: &str| error.strip_prefix(prefix).map(str::to_owned);
                Err(if let Some(m) = split("not allowed: ") {
                    FetchError::NotAllowed(m)
                } else if let Some(m) = split("limit exceeded: ") {
                    FetchError::LimitExceeded(m)
                } else if let Some(m) = split("timeout: ") {
                    FetchError::Timeout(m)
                } else if let Some(m) = split("too large: ") {
                    FetchError::TooLarge(m)
                } else {
                    FetchError::Unavailable(split("unavailable: ").unwrap_or(error))
                })
            }
        }
    }
}

/// Answers an adapter's requests with the recorded answers, in order, and notes where the
/// replay asked for something else.
#[derive(Debug)]
struct Answers {
    left: Mutex<VecDeque<RecordedResponse>>,
    diverged: Mutex<Vec<String>>,
    /// The connection's API base URL then: what a path is relative to.
    base_url: Option<String>,
}

#[async_trait::async_trait]
impl sandbox::Fetch for Answers {
    async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        let next = self
            .left
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let Some(recorded) = next else {
            self.note(format!(
                "a request the invocation did not make: {} {}",
                request.method, request.url
            ));
            return Err(FetchError::LimitExceeded(
                "the recorded invocation made no further request".into(),
            ));
        };
        let asked = absolute(self.base_url.as_deref(), &url_of(&request));
        if !recorded.method.eq_ignore_ascii_case(&request.method)
            || !same_url(&recorded.url, &asked)
        {
            self.note(format!(
                "asked {} {asked} where the invocation asked {} {}",
                request.method, recorded.method, recorded.url
            ));
        }
        recorded.answer()
    }
}

impl Answers {
    fn note(&self, what: String) {
        self.diverged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    }
}

/// The URL a request names, its query parameters appended as the host's client appends them.
pub(crate) fn url_of(request: &HttpRequest) -> String {
    let mut url = request.url.clone();
    if !request.query.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&request.query)
                .finish(),
        );
    }
    url
}

/// `url` as the host's client resolves it: a path (`/items`) is relative to the base URL's path
/// (`https://crm.test/api` makes `https://crm.test/api/items`).
fn absolute(base_url: Option<&str>, url: &str) -> String {
    let Some(mut joined) = base_url
        .filter(|_| url.starts_with('/') && !url.starts_with("//"))
        .and_then(|base| url::Url::parse(base).ok())
    else {
        return url.to_owned();
    };
    let base_path = joined.path().trim_end_matches('/').to_owned();
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    joined.set_path(&format!("{base_path}{path}"));
    joined.set_query((!query.is_empty()).then_some(query));
    joined.to_string()
}

/// Whether two URLs are the same request, a redacted credential in the recorded one aside.
fn same_url(recorded: &str, asked: &str) -> bool {
    if recorded == asked {
        return true;
    }
    let (Ok(recorded), Ok(asked)) = (url::Url::parse(recorded), url::Url::parse(asked)) else {
        return false;
    };
    let base = |u: &url::Url| {
        (
            u.scheme().to_owned(),
            u.host_str().map(str::to_owned),
            u.path().to_owned(),
        )
    };
    let recorded_pairs: Vec<(String, String)> = recorded.query_pairs().into_owned().collect();
    let asked_pairs: Vec<(String, String)> = asked.query_pairs().into_owned().collect();
    base(&recorded) == base(&asked)
        && recorded_pairs.len() == asked_pairs.len()
        && recorded_pairs
            .iter()
            .zip(&asked_pairs)
            .all(|((rk, rv), (ak, av))| rk == ak && (rv == av || rv == "[redacted]"))
}

/// What a replay computed against what was recorded.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    /// Whether the replay computed exactly the recorded outcome (same SHA-256).
    pub identical: bool,
    /// Hex SHA-256 of the recorded outcome.
    pub recorded_sha256: String,
    /// Hex SHA-256 of the replay's.
    pub replayed_sha256: String,
    /// The replay's outcome.
    #[schema(value_type = Object)]
    pub outcome: serde_json::Value,
    /// Where the replay differed from the recording on the way: other requests, more clock
    /// readings than were recorded.
    pub divergences: Vec<String>,
    /// Where the outcomes differ, by JSON pointer (empty when identical).
    pub differences: Vec<String>,
}

/// Runs `adapter` on `export` as it ran then: same input, context, state, seed, clock
/// readings and recorded answers. Refuses a component other than the one that ran unless
/// `any_component` (to test a fix against the recording).
pub async fn replay(
    adapter: &Adapter,
    export: &InvocationExport,
    any_component: bool,
) -> Result<Replayed, String> {
    if export.format != FORMAT {
        return Err(format!(
            "the export's format is {:?}; this host reads {FORMAT:?}",
            export.format
        ));
    }
    if !any_component && adapter.sha256() != export.adapter.sha256 {
        return Err(format!(
            "the invocation ran component {}, not {}: pass the component that ran (or ask to \
             replay on another one explicitly)",
            export.adapter.sha256,
            adapter.sha256()
        ));
    }
    let input = export.input.to_input()?;
    let answers = std::sync::Arc::new(Answers {
        left: Mutex::new(export.responses.iter().cloned().collect()),
        diverged: Mutex::new(Vec::new()),
        base_url: export.record.context.api_base_url.clone(),
    });
    let record = &export.record;
    let env = Env {
        state: record.state_map()?,
        http: Some(std::sync::Arc::clone(&answers) as std::sync::Arc<dyn sandbox::Fetch>),
        replay: Some(record.determinism.clone()),
    };
    let report = adapter.invoke(&input, &record.context, env).await;
    let mut divergences = answers
        .diverged
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let left = answers.left.lock().unwrap_or_else(|p| p.into_inner()).len();
    if left > 0 {
        divergences.push(format!(
            "{left} recorded request(s) the replay did not make"
        ));
    }
    let (recorded, replayed) = (&record.determinism, &report.determinism);
    if replayed.wall_ns.len() > recorded.wall_ns.len()
        || replayed.monotonic_ns.len() > recorded.monotonic_ns.len()
    {
        divergences.push("the replay read a clock more often than the invocation did".into());
    }
    if recorded.truncated {
        divergences.push(format!(
            "the invocation read a clock more than {} times: the readings past it were not \
             recorded",
            sandbox::MAX_CLOCK_READINGS
        ));
    }
    let text = outcome_text(&report.outcome);
    let replayed_sha256 = sandbox::sha256_hex(text.as_bytes());
    let outcome: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let identical = replayed_sha256 == record.outcome_sha256;
    let differences = if identical {
        Vec::new()
    } else {
        let recorded: serde_json::Value =
            serde_json::from_str(&record.outcome).unwrap_or(serde_json::Value::Null);
        let mut found = Vec::new();
        differ(&recorded, &outcome, &mut String::new(), &mut found);
        found
    };
    Ok(Replayed {
        identical,
        recorded_sha256: record.outcome_sha256.clone(),
        replayed_sha256,
        outcome,
        divergences,
        differences,
    })
}

/// The JSON pointers where `a` and `b` differ (at most 100), an event's payload (a JSON text)
/// compared as JSON.
fn differ(
    a: &serde_json::Value,
    b: &serde_json::Value,
    path: &mut String,
    found: &mut Vec<String>,
) {
    use serde_json::Value;
    if found.len() >= 100 || a == b {
        return;
    }
    let parsed = |v: &Value| match v {
        Value::String(text) if text.starts_with('{') => serde_json::from_str::<Value>(text).ok(),
        _ => None,
    };
    if let (Some(a), Some(b)) = (parsed(a), parsed(b)) {
        return differ(&a, &b, path, found);
    }
    let at = path.len();
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                path.push('/');
                path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => differ(x, y, path, found),
                    _ => found.push(path.clone()),
                }
                path.truncate(at);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for index in 0..a.len().max(b.len()) {
                path.push('/');
                path.push_str(&index.to_string());
                match (a.get(index), b.get(index)) {
                    (Some(x), Some(y)) => differ(x, y, path, found),
                    _ => found.push(path.clone()),
                }
                path.truncate(at);
            }
        }
        _ => found.push(if path.is_empty() {
            "/".into()
        } else {
            path.clone()
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn differences_are_named_by_pointer_inside_payload_texts() {
        let recorded = json!({"status": "accepted", "events": [
            {"event_type": "deal.won", "payload": "{\"amount\":\"1.00\",\"id\":\"A\"}"}]});
        let replayed = json!({"status": "accepted", "events": [
            {"event_type": "deal.won", "payload": "{\"amount\":\"2.00\",\"id\":\"A\"}"},
            {"event_type": "deal.won", "payload": "{}"}]});
        let mut found = Vec::new();
        differ(&recorded, &replayed, &mut String::new(), &mut found);
        assert_eq!(found, ["/events/0/payload/amount", "/events/1"]);
    }

    #[test]
    fn only_the_state_the_invocation_could_see_is_recorded() {
        let state: StateMap = [
            ("seen".to_owned(), b"1".to_vec()),
            ("list/a".to_owned(), b"2".to_vec()),
            ("list/b".to_owned(), b"3".to_vec()),
            ("other".to_owned(), b"secret-ish".to_vec()),
        ]
        .into_iter()
        .collect();
        let access = StateAccess {
            reads: ["seen".to_owned(), "missing".to_owned()].into(),
            prefixes: ["list/".to_owned()].into(),
            ..StateAccess::default()
        };
        let seen = observed(&access, &state);
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["list/a", "list/b", "seen"]
        );
    }

    #[test]
    fn recorded_failures_answer_the_same_error() {
        let failed = RecordedResponse {
            method: "GET".into(),
            url: "https://crm.test/x".into(),
            status: None,
            headers: vec![],
            body: String::new(),
            error: Some("timeout: no answer within 5000 ms".into()),
        };
        assert_eq!(
            failed.answer().unwrap_err().to_string(),
            "timeout: no answer within 5000 ms"
        );
        assert!(same_url(
            "https://crm.test/x?a=1&key=[redacted]",
            "https://crm.test/x?a=1&key=k-123"
        ));
        assert!(!same_url(
            "https://crm.test/x?a=1",
            "https://crm.test/y?a=1"
        ));
        assert_eq!(
            absolute(Some("https://crm.test/api/"), "/items/7?a=1"),
            "https://crm.test/api/items/7?a=1"
        );
        assert_eq!(
            absolute(Some("https://crm.test"), "https://other.test/x"),
            "https://other.test/x"
        );
    }
}
