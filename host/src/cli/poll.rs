//! `adapter-host run ADAPTER.wasm --poll`: a poll run the way the host walks one (the adapter
//! names a request, the request is performed, the adapter handles the answer, page after page
//! while it says more follow), against a real API under the host's egress rules or against
//! recorded responses, printing every request, the events, the cursor and the usage.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::egress::{ApiAccess, CredentialSource, Egress, Exchange, StoredCredential};
use crate::sandbox::{
    Adapter, ConnectionContext, Env, Fetch, FetchError, HttpRequest, HttpResponse, Input, Outcome,
    PollPage, Report, StateMap,
};
use crate::secrets::{InMemorySecretStore, SecretStore as _, SecretValue};

use super::{EXIT_FETCH_FAILED, EXIT_OK, exit_code, report_text};

/// Where the run's requests go.
pub(super) enum Target {
    /// The network, under the egress rules of the connection's `api` settings, with the
    /// secrets its credential names.
    Network {
        api: Box<ApiAccess>,
        secrets: Vec<(String, String)>,
    },
    /// Answers from a file of recorded responses.
    Recorded(Box<Path>),
}

/// One recorded answer: the first unused one whose method and path match a request (and
/// whose query parameters, when given, are all in it) answers it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedResponse {
    #[serde(default = "get")]
    method: String,
    /// The path, without the query (an absolute URL's path is compared for absolute URLs).
    path: String,
    #[serde(default)]
    query: Vec<(String, String)>,
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    headers: Vec<(String, String)>,
    /// The body: a JSON string is sent as it is, any other JSON value serialized.
    #[serde(default)]
    body: serde_json::Value,
}

fn get() -> String {
    "GET".into()
}

fn ok() -> u16 {
    200
}

/// Answers requests from recorded responses, and keeps what was asked.
#[derive(Debug)]
struct Recorded {
    unused: Mutex<Vec<RecordedResponse>>,
    asked: Mutex<Vec<Exchange>>,
}

impl Recorded {
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let responses: Vec<RecordedResponse> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: expected a JSON array of {{\"method\", \"path\", \"query\", \"status\", \
                 \"headers\", \"body\"}}",
                path.display()
            )
        })?;
        Ok(Self {
            unused: Mutex::new(responses),
            asked: Mutex::new(Vec::new()),
        })
    }

    fn answer(&self, request: &HttpRequest) -> Option<HttpResponse> {
        let (path, inline_query) = request.url.split_once('?').unwrap_or((&request.url, ""));
        let path = url::Url::parse(path).map_or(path.to_owned(), |url| url.path().to_owned());
        let mut query: Vec<(String, String)> = url::form_urlencoded::parse(inline_query.as_bytes())
            .into_owned()
            .collect();
        query.extend(request.query.iter().cloned());
        let mut unused = self.unused.lock().unwrap_or_else(|p| p.into_inner());
        let index = unused.iter().position(|recorded| {
            recorded.method.eq_ignore_ascii_case(&request.method)
                && recorded.path == path
                && recorded.query.iter().all(|pair| query.contains(pair))
        })?;
        let recorded = unused.remove(index);
        let body = match recorded.body {
            serde_json::Value::String(text) => text.into_bytes(),
            serde_json::Value::Null => Vec::new(),
            value => value.to_string().into_bytes(),
        };
        Some(HttpResponse {
            status: recorded.status,
            headers: recorded.headers,
            body,
        })
    }
}

#[async_trait::async_trait]
impl Fetch for Recorded {
    async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        let answer = self.answer(&request);
        let url = crate::replay::url_of(&request);
        let exchange = Exchange {
            started_at: crate::store::now_millis(),
            method: request.method.clone(),
            url,
            request_headers: request.headers.clone(),
            request_bytes: request.body.as_ref().map_or(0, |b| b.len() as u64),
            status: answer.as_ref().map(|a| a.status),
            response_headers: answer
                .as_ref()
                .map(|a| a.headers.clone())
                .unwrap_or_default(),
            response_bytes: answer.as_ref().map_or(0, |a| a.body.len() as u64),
            attempts: 1,
            duration_us: 0,
            error: answer
                .is_none()
                .then(|| "no recorded response matches".to_owned()),
            response_body: Vec::new(),
        };
        self.asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(exchange);
        answer.ok_or_else(|| {
            FetchError::NotAllowed(format!(
                "no recorded response left for {} {}",
                request.method, request.url
            ))
        })
    }
}

/// The run's way out, and the requests it made.
#[derive(Debug)]
enum Client {
    Network(Arc<crate::egress::EgressSession>),
    Recorded(Arc<Recorded>),
}

impl Client {
    fn fetch(&self) -> Arc<dyn Fetch> {
        match self {
            Client::Network(session) => Arc::clone(session) as Arc<dyn Fetch>,
            Client::Recorded(recorded) => Arc::clone(recorded) as Arc<dyn Fetch>,
        }
    }

    fn take_exchanges(&self) -> Vec<Exchange> {
        match self {
            Client::Network(session) => session.take_exchanges(),
            Client::Recorded(recorded) => {
                std::mem::take(&mut *recorded.asked.lock().unwrap_or_else(|p| p.into_inner()))
            }
        }
    }
}

/// One page of the run as printed.
#[derive(Debug, Serialize)]
struct PageReport {
    cursor: Option<String>,
    request: Option<HttpRequest>,
    requests: Vec<Exchange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip)]
    report: Option<Report>,
}

/// Runs a poll of `adapter` from `cursor` on `state`, at most `max_pages` pages; prints the
/// run; returns the exit status and the state after it.
pub(super) async fn run(
    adapter: &Adapter,
    context: &ConnectionContext,
    target: Target,
    mut cursor: Option<String>,
    mut state: StateMap,
    max_pages: u32,
    json: bool,
) -> anyhow::Result<(u8, StateMap)> {
    let client = match target {
        Target::Network { api, secrets } => {
            let api = *api;
            let store = Arc::new(InMemorySecretStore::new());
            for (name, value) in secrets {
                store
                    .put(
                        &name,
                        SecretValue::new(value),
                        std::time::Duration::ZERO,
                        SystemTime::now(),
                    )
                    .map_err(|e| anyhow::anyhow!("secret {name}: {e}"))?;
            }
            let credential = StoredCredential::of(&api.credential, store, str::to_owned)
                .map(|c| Arc::new(c) as Arc<dyn CredentialSource>);
            let session = Egress::new()
                .map_err(|e| anyhow::anyhow!("the HTTP client: {e}"))?
                .session(&context.connection_id, &api, credential, adapter.limits())
                .map_err(|e| anyhow::anyhow!("--api: {e}"))?;
            Client::Network(Arc::new(session))
        }
        Target::Recorded(path) => Client::Recorded(Arc::new(Recorded::read(&path)?)),
    };
    let mut pages = Vec::new();
    let mut status = EXIT_OK;
    for _ in 0..max_pages {
        let env = |state: &StateMap| Env {
            state: state.clone(),
            http: Some(client.fetch()),
            replay: None,
        };
        let mut page = PageReport {
            cursor: cursor.clone(),
            request: None,
            requests: Vec::new(),
            outcome: None,
            error: None,
            report: None,
        };
        // 1. The adapter names the request (its state changes are not kept, as on the host).
        let asked = adapter
            .invoke(
                &Input::PollRequest {
                    cursor: cursor.clone(),
                },
                context,
                env(&state),
            )
            .await;
        let request = match &asked.outcome {
            Outcome::Accepted {
                request: Some(request),
                ..
            } => request.clone(),
            Outcome::Accepted { request: None, .. } | Outcome::Ignored { .. } => {
                page.requests = client.take_exchanges();
                page.outcome = Some(asked.outcome.clone());
                page.report = Some(asked);
                pages.push(page);
                break;
            }
            _ => {
                status = exit_code(&asked.outcome);
                page.requests = client.take_exchanges();
                page.outcome = Some(asked.outcome.clone());
                page.report = Some(asked);
                pages.push(page);
                break;
            }
        };
        page.request = Some(request.clone());
        // 2. Performed as the host performs it.
        let fetched_at = SystemTime::now();
        let answer = client.fetch().fetch(request.clone()).await;
        page.requests = client.take_exchanges();
        let response = match answer {
            Ok(response) if response.status == 429 || response.status >= 500 => {
                page.error = Some(format!(
                    "the CRM answered {}: the host ends the run here and fetches this page \
                     again at the next one",
                    response.status
                ));
                status = EXIT_FETCH_FAILED;
                pages.push(page);
                break;
            }
            Ok(response) => response,
            Err(error) => {
                page.error = Some(error.to_string());
                status = EXIT_FETCH_FAILED;
                pages.push(page);
                break;
            }
        };
        // 3. The adapter handles the answer.
        let input = Input::Poll(PollPage::fetched(
            request,
            response,
            cursor.clone(),
            fetched_at,
        ));
        let report = adapter.invoke(&input, context, env(&state)).await;
        page.requests.extend(client.take_exchanges());
        page.outcome = Some(report.outcome.clone());
        let more = match &report.outcome {
            Outcome::Accepted {
                next_cursor, more, ..
            } => {
                if let Some(next) = next_cursor {
                    cursor = Some(next.clone());
                }
                if let Some(changed) = &report.state {
                    state = changed.clone();
                }
                *more
            }
            Outcome::Ignored { .. } => false,
            other => {
                status = exit_code(other);
                false
            }
        };
        page.report = Some(report);
        pages.push(page);
        if !more || status != EXIT_OK {
            break;
        }
    }
    if json {
        let json = serde_json::json!({
            "adapter": { "sha256": adapter.sha256(), "info": adapter.info() },
            "pages": pages.iter().map(|page| serde_json::json!({
                "cursor": page.cursor,
                "request": page.request,
                "requests": page.requests,
                "outcome": page.outcome,
                "error": page.error,
                "usage": page.report.as_ref().map(|r| &r.usage),
                "log": page.report.as_ref().map(|r| &r.log),
            })).collect::<Vec<_>>(),
            "cursor": cursor,
            "state": super::state_json(&state),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", text(adapter, &pages, cursor.as_deref()));
    }
    Ok((status, state))
}

fn text(adapter: &Adapter, pages: &[PageReport], cursor: Option<&str>) -> String {
    let mut out = String::new();
    let mut events = 0;
    for (index, page) in pages.iter().enumerate() {
        let _ = writeln!(
            out,
            "=== page {}  cursor: {}",
            index + 1,
            page.cursor.as_deref().unwrap_or("(none)")
        );
        for exchange in &page.requests {
            let _ = writeln!(
                out,
                "request  {} {} -> {} ({} bytes{})",
                exchange.method,
                exchange.url,
                exchange
                    .status
                    .map_or_else(|| "no answer".to_owned(), |s| s.to_string()),
                exchange.response_bytes,
                exchange
                    .error
                    .as_ref()
                    .map(|e| format!(", {e}"))
                    .unwrap_or_default()
            );
        }
        if let Some(error) = &page.error {
            let _ = writeln!(out, "error    {error}");
        }
        if let Some(report) = &page.report {
            events += report.outcome.events().len();
            out.push_str(&report_text(adapter, report));
        }
        out.push('\n');
    }
    let requests: usize = pages.iter().map(|p| p.requests.len()).sum();
    let _ = writeln!(
        out,
        "run      {} page(s), {events} event(s), {requests} request(s); cursor after: {}",
        pages.len(),
        cursor.unwrap_or("(none)")
    );
    if pages
        .last()
        .is_some_and(|page| matches!(page.outcome, Some(Outcome::Accepted { more: true, .. })))
    {
        let _ = writeln!(
            out,
            "         more pages follow (raise --max-pages to walk them)"
        );
    }
    out
}

/// The `api` settings of a `--poll` run: `--api` JSON, or `--base-url` alone.
pub(super) fn api_settings(
    api: Option<&str>,
    base_url: Option<&str>,
) -> anyhow::Result<Option<ApiAccess>> {
    match (api, base_url) {
        (Some(_), Some(_)) => bail!("give --api or --base-url, not both"),
        (Some(json), None) => Ok(Some(serde_json::from_str(json).context("parsing --api")?)),
        (None, Some(url)) => Ok(Some(ApiAccess {
            base_url: url.to_owned(),
            allowed_origins: Vec::new(),
            allow_private: false,
            rate_limit: Default::default(),
            credential: Default::default(),
        })),
        (None, None) => Ok(None),
    }
}
