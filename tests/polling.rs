//! The polling path end to end, through the real binary on loopback: the host polls a CRM
//! stand-in (this test's server) with the `poller` test guest, on its own schedule and on
//! demand, and every page's events, cursor and state commit together. A host killed in the
//! middle of a run resumes from its last committed page; `Retry-After` is waited out; a
//! failing page is fetched again by the next run; a rejected credential stops the run until it
//! is rotated. Nothing is lost or published twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapter_host::store::{OutboxFilter, SqliteStore, Store};
use axum::Json;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use process::{free_port, spawn_host, wait_ready};
use serde_json::{Value, json};

#[path = "common/jwt.rs"]
mod jwt;
#[path = "common/process.rs"]
mod process;

const TENANT: &str = "tenant-poll";
const TOKEN_1: &str = "crm-token-0001-aaaaaaaaaaaa";
const TOKEN_2: &str = "crm-token-0002-bbbbbbbbbbbb";

/// One request the CRM stand-in answered.
#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    page: usize,
    status: u16,
}

/// The CRM stand-in's data and behaviour: `pages` pages of `per_page` items at `version`.
#[derive(Debug)]
struct Crm {
    pages: usize,
    per_page: usize,
    version: u64,
    delay: Duration,
    token: String,
    /// Answers to give instead, by page: status and `Retry-After` seconds.
    faults: HashMap<usize, VecDeque<(u16, Option<u64>)>>,
    hits: Vec<Hit>,
}

type Shared = Arc<Mutex<Crm>>;

/// Serves `GET /items?page=N` as `{"items": [...], "next": N+1 | null}`, with a bearer token.
async fn crm(pages: usize, per_page: usize, delay: Duration) -> (Shared, u16) {
    let crm = Arc::new(Mutex::new(Crm {
        pages,
        per_page,
        version: 1,
        delay,
        token: TOKEN_1.into(),
        faults: HashMap::new(),
        hits: Vec::new(),
    }));
    let shared = Arc::clone(&crm);
    let app = axum::Router::new()
        .route(
            "/items",
            axum::routing::get(
                move |Query(query): Query<BTreeMap<String, String>>, headers: HeaderMap| {
                    let crm = Arc::clone(&shared);
                    async move { answer(&crm, &query, &headers).await }
                },
            ),
        )
        // One record, as an adapter fetches it after a page named it (counted as page 0).
        .route(
            "/items/{id}",
            axum::routing::get({
                let crm = Arc::clone(&crm);
                move |axum::extract::Path(id): axum::extract::Path<String>| {
                    let crm = Arc::clone(&crm);
                    async move {
                        let mut crm = crm.lock().unwrap();
                        crm.hits.push(Hit {
                            at: Instant::now(),
                            page: 0,
                            status: 200,
                        });
                        Json(json!({"id": id, "version": crm.version}))
                    }
                }
            }),
        )
        // For hostile adapters: a way out, an endless answer, an echo of the request.
        .route(
            "/redirect-out",
            axum::routing::get(|| async {
                (
                    StatusCode::FOUND,
                    [("location", "https://evil.example/steal")],
                )
            }),
        )
        .route(
            "/huge",
            axum::routing::get(|| async { axum::body::Body::new(Endless { left: 100 }) }),
        )
        .route(
            "/echo",
            axum::routing::get(|headers: HeaderMap| async move {
                let seen: Vec<String> = headers
                    .iter()
                    .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("")))
                    .collect();
                seen.join("\n")
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (crm, port)
}

async fn answer(crm: &Shared, query: &BTreeMap<String, String>, headers: &HeaderMap) -> Response {
    let delay = crm.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut crm = crm.lock().unwrap();
    let (status, response) = if auth != format!("Bearer {}", crm.token) {
        (
            401,
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "invalid_token"})),
            )
                .into_response(),
        )
    } else if let Some((status, retry_after)) =
        crm.faults.get_mut(&page).and_then(VecDeque::pop_front)
    {
        let mut response = StatusCode::from_u16(status).unwrap().into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
        }
        (status, response)
    } else if page == 0 || page > crm.pages {
        (404, StatusCode::NOT_FOUND.into_response())
    } else {
        let items: Vec<Value> = (0..crm.per_page)
            .map(|i| json!({"id": format!("item-{page}-{i}"), "version": crm.version}))
            .collect();
        let next = (page < crm.pages).then_some(page + 1);
        (
            200,
            Json(json!({"items": items, "next": next})).into_response(),
        )
    };
    crm.hits.push(Hit {
        at: Instant::now(),
        page,
        status,
    });
    response
}

/// 100 MB, made as it is read, a MiB at a time: the host stops reading at its cap.
struct Endless {
    left: usize,
}

impl http_body::Body for Endless {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        let chunk = axum::body::Bytes::from(vec![b'x'; 1 << 20]);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }
}

fn hits(crm: &Shared) -> Vec<Hit> {
    crm.lock().unwrap().hits.clone()
}

/// The host under test, its data directory and the management API.
struct Host {
    child: Option<Child>,
    config: std::path::PathBuf,
    data: std::path::PathBuf,
    port: u16,
    extra: Vec<(String, String)>,
    client: reqwest::Client,
    token: String,
    _dir: tempfile::TempDir,
}

impl Host {
    /// A host with one polling connection `poller` (its `polling` settings as TOML) against
    /// the stand-in on `crm_port`.
    async fn start(crm_port: u16, polling: &str, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[[adapters]]
tenant_id = "{TENANT}"
name = "poller"
wasm = "{poller}"

[[connections]]
id = "poller"
tenant_id = "{TENANT}"
provider = "custom"
adapter = "poller"
signature = {{ scheme = "github" }}
secret = "tenants/{TENANT}/platform/signing"
polling = {polling}
api = {{ base_url = "http://127.0.0.1:{crm_port}", allow_private = true, credential = {{ kind = "bearer", secret = "tenants/{TENANT}/platform/crm-token" }} }}

[[secrets]]
name = "tenants/{TENANT}/platform/signing"
value = "signing-secret"

[[secrets]]
name = "tenants/{TENANT}/platform/crm-token"
value = "{TOKEN_1}"
"#,
                poller = test_artifacts::POLLER,
            ),
        )
        .unwrap();
        let mut host = Self {
            child: None,
            data: dir.path().join("data"),
            config,
            port: free_port(),
            extra: extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            client: reqwest::Client::new(),
            token: jwt::token_with(json!({"tenant_id": TENANT})),
            _dir: dir,
        };
        host.spawn().await;
        host
    }

    async fn spawn(&mut self) {
        let key = String::from_utf8(jwt::KEY.to_vec()).unwrap();
        let mut env: Vec<(&str, &str)> = vec![
            ("ADAPTER_HOST_JWT_HS256_KEY", &key),
            ("ADAPTER_HOST_JWT_ISSUER", jwt::ISSUER),
            ("ADAPTER_HOST_JWT_AUDIENCE", jwt::AUDIENCE),
        ];
        env.extend(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.child = Some(spawn_host(&self.config, &self.data, self.port, &env));
        wait_ready(&self.client, self.port).await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL: nothing gets to finish
            child.wait().unwrap();
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("http://127.0.0.1:{}{path}", self.port))
            .bearer_auth(&self.token)
            // A platform-level caller names the org it acts in.
            .header("x-org-id", "org-1");
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn polls(&self) -> Value {
        let (status, polls) = self
            .call(reqwest::Method::GET, "/v1/connections/poller/polls", None)
            .await;
        assert_eq!(status, 200, "{polls}");
        polls
    }

    /// Waits (bounded) until the newest run is no longer running and at least `runs` exist.
    async fn wait_for_runs(&self, runs: usize) -> Value {
        for _ in 0..600 {
            let polls = self.polls().await;
            let items = polls["items"].as_array().unwrap();
            if items.len() >= runs && items[0]["status"] != "running" {
                return polls;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the poll runs did not end: {}", self.polls().await);
    }

    /// Stops the host and opens its store.
    fn stop_and_open(&mut self) -> SqliteStore {
        self.kill();
        SqliteStore::open(&self.data).unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every event in the outbox: entity id to how many rows carry it.
async fn outbox(store: &SqliteStore) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_outbox(OutboxFilter {
                tenant_id: TENANT.into(),
                limit: 500,
                cursor,
                ..OutboxFilter::default()
            })
            .await
            .unwrap();
        for row in page.items {
            *counts.entry(row.entity_id).or_default() += 1;
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return counts,
        }
    }
}

fn all_items(pages: usize, per_page: usize) -> Vec<String> {
    let mut ids: Vec<String> = (1..=pages)
        .flat_map(|page| (0..per_page).map(move |i| format!("item-{page}-{i}")))
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_way_resumes_from_its_last_page_without_loss_or_duplicates() {
    const PAGES: usize = 50;
    const PER_PAGE: usize = 20;
    let (crm, crm_port) = crm(PAGES, PER_PAGE, Duration::from_millis(40)).await;
    let mut host = Host::start(
        crm_port,
        "{ interval_secs = 3600, max_pages = 100 }",
        &[("ADAPTER_HOST_POLL_LEASE_SECS", "2")],
    )
    .await;
    // The first run starts on its own; it is killed a third of the way through.
    for _ in 0..400 {
        if hits(&crm).len() >= 17 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    host.kill();
    let before_restart = hits(&crm).len();
    assert!(
        (17..PAGES).contains(&before_restart),
        "{before_restart} pages"
    );
    // Restarted, the host takes the run over once its lease has lapsed, from the last page
    // it committed.
    host.spawn().await;
    let polls = host.wait_for_runs(2).await;
    let runs = polls["items"].as_array().unwrap();
    assert_eq!(runs[0]["status"], "done", "{polls}");
    assert_eq!(runs[1]["status"], "interrupted", "{polls}");
    let pages_committed = runs[0]["pages"].as_u64().unwrap() + runs[1]["pages"].as_u64().unwrap();
    assert_eq!(pages_committed, PAGES as u64, "{polls}");
    assert_eq!(
        runs[0]["records"].as_u64().unwrap() + runs[1]["records"].as_u64().unwrap(),
        (PAGES * PER_PAGE) as u64
    );
    assert_eq!(runs[0]["cursor_before"], runs[1]["cursor_after"], "{polls}");
    // Every page was fetched once, but the one in flight when the host died (fetched, not
    // committed): fetched again.
    let fetched = hits(&crm);
    let mut per_page: BTreeMap<usize, usize> = BTreeMap::new();
    for hit in &fetched {
        *per_page.entry(hit.page).or_default() += 1;
    }
    assert_eq!(per_page.len(), PAGES, "{per_page:?}");
    let again: Vec<_> = per_page.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        again.len() <= 1 && again.iter().all(|(_, n)| **n == 2),
        "{again:?}"
    );

    let store = host.stop_and_open();
    let events = outbox(&store).await;
    assert_eq!(
        events.keys().cloned().collect::<Vec<_>>(),
        all_items(PAGES, PER_PAGE),
        "no event lost"
    );
    assert!(events.values().all(|n| *n == 1), "none doubled");
    // The state counted each committed page once.
    let state = store.load_state("poller").await.unwrap();
    assert_eq!(state.map["pages"], PAGES.to_string().into_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_waited_out_and_a_failing_page_is_fetched_again_by_the_next_run() {
    const PAGES: usize = 6;
    let (crm, crm_port) = crm(PAGES, 3, Duration::ZERO).await;
    {
        let mut crm = crm.lock().unwrap();
        // Page 2: rate limited once, for 2 s. Page 4: fails on every attempt of the run.
        crm.faults.insert(2, [(429, Some(2))].into());
        crm.faults
            .insert(4, [(500, None), (500, None), (503, None)].into());
    }
    let host = Host::start(
        crm_port,
        "{ interval_secs = 3600, max_pages = 100 }",
        &[("ADAPTER_HOST_POLL_BACKOFF_SECS", "1")],
    )
    .await;
    let polls = host.wait_for_runs(1).await;
    let run = &polls["items"][0];
    assert_eq!(run["status"], "failed", "{polls}");
    let reason = run["reason"].as_str().unwrap();
    assert!(reason.contains("503"), "{reason}");
    assert_eq!(run["pages"], 3, "pages 1 to 3 committed: {polls}");
    // The 429 was obeyed: page 2 was not asked again before its Retry-After.
    let fetched = hits(&crm);
    let page2: Vec<_> = fetched.iter().filter(|h| h.page == 2).collect();
    assert_eq!(
        page2.iter().map(|h| h.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let waited = page2[1].at - page2[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    // The next run (after its 1 s backoff) starts again at page 4 and finishes.
    let polls = host.wait_for_runs(2).await;
    let run = &polls["items"][0];
    assert_eq!(run["status"], "done", "{polls}");
    assert_eq!(run["pages"], 3, "{polls}");
    assert_eq!(polls["state"]["failures"], 0);
    let page4: Vec<u16> = hits(&crm)
        .iter()
        .filter(|h| h.page == 4)
        .map(|h| h.status)
        .collect();
    assert_eq!(page4, [500, 500, 503, 200]);
    let mut host = host;
    let events = outbox(&host.stop_and_open()).await;
    assert_eq!(
        events.keys().cloned().collect::<Vec<_>>(),
        all_items(PAGES, 3)
    );
    assert!(events.values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_rejected_mid_run_stops_the_run_until_it_is_rotated() {
    const PAGES: usize = 8;
    let (crm, crm_port) = crm(PAGES, 2, Duration::from_millis(20)).await;
    let host = Host::start(crm_port, "{ max_pages = 100 }", &[]).await;
    // No interval: nothing runs until asked.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(hits(&crm).is_empty());
    let (status, started) = host
        .call(reqwest::Method::POST, "/v1/connections/poller/poll", None)
        .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["trigger"], "manual");
    // The token expires after the third page.
    for _ in 0..400 {
        if hits(&crm).len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    crm.lock().unwrap().token = TOKEN_2.into();
    let polls = host.wait_for_runs(1).await;
    let run = &polls["items"][0];
    assert_eq!(run["status"], "failed", "{polls}");
    let reason = run["reason"].as_str().unwrap();
    assert!(reason.contains("the adapter failed on a page"), "{reason}");
    let cursor = polls["state"]["cursor"].clone();
    assert!(cursor.is_string(), "{polls}");
    // The run's requests, in order, the credential's place shown, never its value.
    let run_id = run["id"].as_str().unwrap();
    let (status, view) = host
        .call(
            reqwest::Method::GET,
            &format!("/v1/connections/poller/polls/{run_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    let statuses: Vec<_> = view["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses.last(), Some(&401), "{view}");
    assert!(
        statuses[..statuses.len() - 1].iter().all(|s| *s == 200),
        "{view}"
    );
    assert_eq!(
        view["requests"][0]["request_headers"],
        json!([["authorization", "[redacted]"]]),
        "{view}"
    );
    assert!(!view.to_string().contains(TOKEN_1));
    // The failed page's delivery shows what was asked and answered, the credential redacted.
    let (_, deliveries) = host
        .call(reqwest::Method::GET, "/v1/deliveries?status=failed", None)
        .await;
    let failed = deliveries["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, delivery) = host
        .call(
            reqwest::Method::GET,
            &format!("/v1/deliveries/{failed}"),
            None,
        )
        .await;
    let shown = delivery.to_string();
    assert!(shown.contains("401"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    assert!(
        !shown.contains(TOKEN_1) && !shown.contains(TOKEN_2),
        "{shown}"
    );

    // Once the credential is rotated, the next run goes on from the cursor.
    let (status, rotated) = host
        .call(
            reqwest::Method::PUT,
            "/v1/secrets/crm-token",
            Some(json!({"value": TOKEN_2, "platform_level": true})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let (status, _) = host
        .call(reqwest::Method::POST, "/v1/connections/poller/poll", None)
        .await;
    assert_eq!(status, 202);
    let polls = host.wait_for_runs(2).await;
    let run = &polls["items"][0];
    assert_eq!(run["status"], "done", "{polls}");
    assert_eq!(run["cursor_before"], cursor);
    let mut host = host;
    let events = outbox(&host.stop_and_open()).await;
    assert_eq!(
        events.keys().cloned().collect::<Vec<_>>(),
        all_items(PAGES, 2)
    );
    assert!(events.values().all(|n| *n == 1));
    assert!(hits(&crm).iter().all(|h| h.status != 500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_connection_runs_on_its_own_schedule_and_unchanged_records_emit_nothing() {
    let (crm, crm_port) = crm(2, 5, Duration::ZERO).await;
    let host = Host::start(crm_port, "{ interval_secs = 60 }", &[]).await;
    // Due as soon as it exists: the first run starts within the scheduler's tick.
    let started = Instant::now();
    let polls = host.wait_for_runs(1).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let run = &polls["items"][0];
    assert_eq!(run["trigger"], "schedule");
    assert_eq!(run["status"], "done", "{polls}");
    assert_eq!(
        (
            &run["pages"],
            &run["records"],
            &run["events"],
            &run["requests"]
        ),
        (&json!(2), &json!(10), &json!(10), &json!(2)),
        "{polls}"
    );
    // The next one is due an interval later, give or take a tenth.
    let finished = run["finished_at"].as_i64().unwrap();
    let next = polls["state"]["next_run_at"].as_i64().unwrap();
    assert!(
        (54_000..=66_000).contains(&(next - finished)),
        "next run {} ms after the last",
        next - finished
    );
    // Run now: the same records are seen again, and produce nothing new.
    let (status, _) = host
        .call(reqwest::Method::POST, "/v1/connections/poller/poll", None)
        .await;
    assert_eq!(status, 202);
    let polls = host.wait_for_runs(2).await;
    let run = &polls["items"][0];
    // The poller's cursor is the page it ends on: the run reads that page again.
    assert_eq!(run["cursor_before"], "2", "{polls}");
    assert_eq!(
        (&run["records"], &run["events"]),
        (&json!(5), &json!(0)),
        "{polls}"
    );
    // A new version of the records is new events.
    crm.lock().unwrap().version = 2;
    host.call(reqwest::Method::POST, "/v1/connections/poller/poll", None)
        .await;
    let polls = host.wait_for_runs(3).await;
    assert_eq!(polls["items"][0]["events"], 5, "{polls}");

    // A run of its own while one holds the connection is a conflict; a disabled connection
    // does not poll; an interval under a minute is refused with the floor named.
    crm.lock().unwrap().delay = Duration::from_millis(500);
    let (first, _) = host
        .call(reqwest::Method::POST, "/v1/connections/poller/poll", None)
        .await;
    let (second, conflict) = host
        .call(reqwest::Method::POST, "/v1/connections/poller/poll", None)
        .await;
    assert_eq!((first, second), (202, 409), "{conflict}");
    assert!(conflict["detail"].as_str().unwrap().contains("under way"));
    host.wait_for_runs(4).await;
    let (status, _) = host
        .call(
            reqwest::Method::PATCH,
            "/v1/connections/poller",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, disabled) = host
        .call(reqwest::Method::POST, "/v1/connections/poller/poll", None)
        .await;
    assert_eq!(status, 409, "{disabled}");
    assert!(disabled["detail"].as_str().unwrap().contains("disabled"));
    let (status, floor) = host
        .call(
            reqwest::Method::PATCH,
            "/v1/connections/poller",
            Some(json!({"polling": {"interval_secs": 5}})),
        )
        .await;
    assert_eq!(status, 400, "{floor}");
    assert!(
        floor["detail"].as_str().unwrap().contains("at least 60"),
        "{floor}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_adapters_are_refused_with_a_precise_reason_and_harm_no_one() {
    let (crm, crm_port) = crm(2, 2, Duration::ZERO).await;
    // One connection per misbehaviour, each of its own tenant, and one that behaves.
    let modes = [
        ("other-host", "evil.example"),
        ("ip-literal", "169.254.169.254"),
        ("userinfo", "credentials in them"),
        ("redirect-out", "a redirect left the origins"),
        ("huge", "too large"),
        ("many-requests", "http_requests"),
    ];
    let mut config = String::new();
    let mut connection = |id: &str, tenant: &str, settings: &str, base_url: &str| {
        config.push_str(&format!(
            r#"
[[adapters]]
tenant_id = "{tenant}"
name = "poller"
wasm = "{poller}"

[[connections]]
id = "{id}"
tenant_id = "{tenant}"
provider = "custom"
adapter = "poller"
signature = {{ scheme = "github" }}
secret = "shared/signing"
settings = {{ {settings} }}
polling = {{ max_pages = 10 }}
api = {{ base_url = "{base_url}", allow_private = {private}, credential = {{ kind = "bearer", secret = "shared/crm-token" }} }}
"#,
            poller = test_artifacts::POLLER,
            private = base_url.starts_with("http:"),
        ));
    };
    let local = format!("http://127.0.0.1:{crm_port}");
    for (mode, _) in &modes {
        connection(
            mode,
            &format!("tenant-{mode}"),
            &format!(r#"mode = "{mode}""#),
            &local,
        );
    }
    connection("echo", "tenant-echo", r#"mode = "echo""#, &local);
    // No private hosts for this one: its base URL's name resolves to loopback.
    connection(
        "loopback",
        "tenant-loopback",
        "",
        &format!("https://localhost:{crm_port}"),
    );
    connection("healthy", "tenant-healthy", "", &local);
    config.push_str(&format!(
        r#"
[[secrets]]
name = "shared/signing"
value = "signing-secret"

[[secrets]]
name = "shared/crm-token"
value = "{TOKEN_1}"
"#
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut child = spawn_host(&path, &data, port, &[]);
    let client = reqwest::Client::new();
    wait_ready(&client, port).await;
    child.kill().unwrap();
    child.wait().unwrap();

    // Runs now, in-process on the same data: each run's outcome is read back from the store.
    let options = adapter_host::serve::ServeOptions {
        data_dir: data.clone(),
        ..adapter_host::serve::ServeOptions::default()
    };
    let host = adapter_host::serve::open_host(&options).await.unwrap();
    for id in modes
        .iter()
        .map(|(mode, _)| *mode)
        .chain(["echo", "loopback", "healthy"])
    {
        host.poll_now(id).await.unwrap();
    }
    let store = host.store().clone();
    let finished = |id: &'static str| {
        let store = Arc::clone(&store);
        async move {
            for _ in 0..400 {
                let runs = store
                    .list_poll_runs(id, Default::default())
                    .await
                    .unwrap()
                    .items;
                if runs[0].status != adapter_host::store::PollRunStatus::Running {
                    return runs[0].clone();
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("the run of {id} did not end");
        }
    };
    for (mode, expected) in modes {
        let run = finished(mode).await;
        assert_eq!(
            run.status,
            adapter_host::store::PollRunStatus::Failed,
            "{mode}"
        );
        // The page's delivery failed with the adapter's message, which names the refusal.
        let deliveries = store
            .list_deliveries(adapter_host::store::DeliveryFilter {
                tenant_id: Some(format!("tenant-{mode}")),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .items;
        let reason = deliveries[0].reason_json.clone().unwrap_or_default();
        assert!(reason.contains(expected), "{mode}: {reason}");
        assert!(
            !reason.contains("the host let it through"),
            "{mode}: {reason}"
        );
    }
    // The echo shows the adapter the credential's place, never the credential.
    finished("echo").await;
    let echoed = store
        .list_outbox(OutboxFilter {
            tenant_id: "tenant-echo".into(),
            limit: 10,
            ..OutboxFilter::default()
        })
        .await
        .unwrap()
        .items;
    let payload = &echoed[0].payload_json;
    assert!(
        payload.contains("authorization: Bearer [redacted]"),
        "{payload}"
    );
    assert!(!payload.contains(TOKEN_1), "{payload}");
    // A name that resolves to loopback is refused for a connection that allows no private
    // host, before anything is sent.
    let run = finished("loopback").await;
    let reason = run.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("127.0.0.1") || reason.contains("loopback"),
        "{reason}"
    );
    // The one that behaves polled all its pages meanwhile.
    let run = finished("healthy").await;
    assert_eq!(
        run.status,
        adapter_host::store::PollRunStatus::Done,
        "{run:?}"
    );
    assert_eq!((run.pages, run.events), (2, 4));
    // And the stand-in saw no request to anything but its own paths, at most the adapter's
    // request budget (50) from the one asking for 10,000.
    assert!(
        hits(&crm).len() <= 2 * modes.len() + 2 + 2 + 50 + 4,
        "{}",
        hits(&crm).len()
    );
}

// --- The sample adapters against the fake CRM ---------------------------------------------

#[path = "common/fake_crm.rs"]
mod fake_crm;

/// Events of `tenant` in the outbox, oldest first: (event type, entity id).
async fn events_of(store: &Arc<dyn Store>, tenant: &str) -> Vec<(String, String)> {
    let mut rows = store
        .list_outbox(OutboxFilter {
            tenant_id: tenant.into(),
            limit: 1000,
            ..OutboxFilter::default()
        })
        .await
        .unwrap()
        .items;
    rows.sort_by_key(|row| row.seq);
    rows.into_iter()
        .map(|row| (row.event_type, row.entity_id))
        .collect()
}

/// Runs a poll of `connection` now and waits (bounded) for it to end.
async fn poll_to_end(
    host: &adapter_host::pipeline::Host,
    connection: &str,
) -> adapter_host::store::PollRun {
    let started = host.poll_now(connection).await.unwrap();
    for _ in 0..600 {
        let runs = host
            .store()
            .list_poll_runs(connection, Default::default())
            .await
            .unwrap()
            .items;
        let run = runs.into_iter().find(|run| run.id == started.id).unwrap();
        if run.status != adapter_host::store::PollRunStatus::Running {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the run of {connection} did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_adapter_keeps_a_tenant_in_sync_by_polling_its_crm() {
    let crm = fake_crm::FakeCrm::start().await;
    let base = crm.base_url();
    // Zenoti days count once they have ended everywhere: seed the day before yesterday.
    let day =
        humantime::format_rfc3339(std::time::SystemTime::now() - Duration::from_secs(2 * 86_400))
            .to_string()[..10]
            .to_owned();
    let opportunities = crm.seed_opportunities(5);
    let deals = crm.seed_hubspot_deals(3);
    let contacts = crm.seed_hubspot_contacts(2);
    let zoho_deals = crm.seed_zoho_deals(4);
    let appointments = crm.seed_zenoti_appointments("center-1", &day, 3);
    let connection =
        |id: &str, adapter: &str, signature: &str, settings: &str, credential: &str| {
            sample_connection(&base, id, adapter, signature, settings, credential)
        };
    let config = [
        connection(
            "sf",
            "salesforce",
            r#"{ scheme = "salesforce_outbound", organization_id = "00D5g000004XyZaEAK" }"#,
            r#"poll_objects = "Opportunity,Contact""#,
            r#"{ kind = "bearer", secret = "tenant-sf/crm" }"#,
        ),
        connection(
            "hs",
            "hubspot",
            r#"{ scheme = "hubspot", version = "v3" }"#,
            r#"poll_objects = "deals,contacts,archived-contacts""#,
            r#"{ kind = "bearer", secret = "tenant-hs/crm" }"#,
        ),
        connection(
            "zo",
            "zoho",
            r#"{ scheme = "zoho_token", field = "token" }"#,
            r#"poll_modules = "Deals""#,
            r#"{ kind = "api_key", secret = "tenant-zo/crm", header = "Authorization", prefix = "Zoho-oauthtoken " }"#,
        ),
        connection(
            "ze",
            "zenoti",
            r#"{ scheme = "github" }"#,
            &format!(r#"poll_centers = "center-1", poll_start_date = "{day}""#),
            r#"{ kind = "api_key", secret = "tenant-ze/crm", header = "Authorization", prefix = "apikey " }"#,
        ),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let host = adapter_host::serve::open_host(&adapter_host::serve::ServeOptions {
        data_dir: dir.path().join("data"),
        config: Some(path),
        ..adapter_host::serve::ServeOptions::default()
    })
    .await
    .unwrap();
    let store = host.store().clone();

    // First runs: every record the CRM holds becomes its `created` event, once.
    let created = |events: &[(String, String)], kind: &str| -> Vec<String> {
        let mut ids: Vec<String> = events
            .iter()
            .filter(|(event_type, _)| event_type == &format!("{kind}.created"))
            .map(|(_, id)| id.clone())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    for id in ["sf", "hs", "zo", "ze"] {
        let run = poll_to_end(&host, id).await;
        assert_eq!(
            run.status,
            adapter_host::store::PollRunStatus::Done,
            "{id}: {run:?}"
        );
    }
    let sf = events_of(&store, "tenant-sf").await;
    assert_eq!(
        created(&sf, "opportunity"),
        sorted(opportunities.clone()),
        "{sf:?}"
    );
    let hs = events_of(&store, "tenant-hs").await;
    assert_eq!(created(&hs, "deal"), sorted(deals.clone()), "{hs:?}");
    assert_eq!(created(&hs, "contact"), sorted(contacts.clone()), "{hs:?}");
    let zo = events_of(&store, "tenant-zo").await;
    assert_eq!(created(&zo, "deal"), sorted(zoho_deals.clone()), "{zo:?}");
    let ze = events_of(&store, "tenant-ze").await;
    assert_eq!(
        created(&ze, "appointment"),
        sorted(appointments.clone()),
        "{ze:?}"
    );
    // Each went with its provider's credential, added by the host.
    let auth = |prefix: &str| -> Vec<String> {
        crm.requests_to(prefix)
            .iter()
            .filter_map(|r| r.header("authorization").map(str::to_owned))
            .collect()
    };
    assert!(
        auth("/services/data")
            .iter()
            .all(|a| a == "Bearer crm-key-sf")
    );
    assert!(auth("/crm/v3").iter().all(|a| a == "Bearer crm-key-hs"));
    assert!(
        auth("/crm/v5")
            .iter()
            .all(|a| a == "Zoho-oauthtoken crm-key-zo")
    );
    assert!(
        auth("/v1/appointments")
            .iter()
            .all(|a| a == "apikey crm-key-ze")
    );
    // Decimals stay exact strings.
    let row = store
        .list_outbox(OutboxFilter {
            tenant_id: "tenant-sf".into(),
            limit: 1,
            ..OutboxFilter::default()
        })
        .await
        .unwrap()
        .items
        .remove(0);
    let payload: Value = serde_json::from_str(&row.payload_json).unwrap();
    assert!(payload["amount"].is_string(), "{payload}");

    // Second runs: nothing changed, nothing emitted.
    for id in ["sf", "hs", "zo", "ze"] {
        let run = poll_to_end(&host, id).await;
        assert_eq!(
            (run.status, run.events),
            (adapter_host::store::PollRunStatus::Done, 0),
            "{id}: {run:?}"
        );
    }

    // A change and a delete: exactly those.
    let changed = |provider: &str, object: &str, id: &str, fields: Value| {
        crm.upsert(provider, object, id, fields);
    };
    changed(
        "salesforce",
        "Opportunity",
        &opportunities[1],
        json!({"StageName": "Negotiation/Review", "Probability": 60.0}),
    );
    crm.delete("salesforce", "Opportunity", &opportunities[2]);
    changed(
        "hubspot",
        "deals",
        &deals[0],
        json!({"dealstage": "qualifiedtobuy"}),
    );
    crm.delete("hubspot", "contacts", &contacts[1]);
    changed(
        "zoho",
        "Deals",
        &zoho_deals[3],
        json!({"Stage": "Needs Analysis"}),
    );
    crm.delete("zoho", "Deals", &zoho_deals[0]);
    let new_events = |before: usize, events: Vec<(String, String)>| events[before..].to_vec();
    for (id, tenant, before) in [
        ("sf", "tenant-sf", sf.len()),
        ("hs", "tenant-hs", hs.len()),
        ("zo", "tenant-zo", zo.len()),
    ] {
        let run = poll_to_end(&host, id).await;
        assert_eq!(
            run.status,
            adapter_host::store::PollRunStatus::Done,
            "{id}: {run:?}"
        );
        let new = new_events(before, events_of(&store, tenant).await);
        let deleted: Vec<_> = new
            .iter()
            .filter(|(t, _)| t.ends_with(".deleted"))
            .collect();
        assert_eq!(deleted.len(), 1, "{id}: {new:?}");
        assert!(new.len() >= 2, "{id}: {new:?}");
    }
    let sf_new = new_events(sf.len(), events_of(&store, "tenant-sf").await);
    assert!(
        sf_new
            .iter()
            .any(|(t, e)| t == "opportunity.updated" && e == &opportunities[1]),
        "{sf_new:?}"
    );
    assert!(
        sf_new.contains(&("opportunity.deleted".into(), opportunities[2].clone())),
        "{sf_new:?}"
    );
    let hs_new = new_events(hs.len(), events_of(&store, "tenant-hs").await);
    assert!(
        hs_new.contains(&("contact.deleted".into(), contacts[1].clone())),
        "{hs_new:?}"
    );
    assert!(hs_new.iter().any(|(_, e)| e == &deals[0]), "{hs_new:?}");
    let zo_new = new_events(zo.len(), events_of(&store, "tenant-zo").await);
    assert!(
        zo_new.contains(&("deal.deleted".into(), zoho_deals[0].clone())),
        "{zo_new:?}"
    );
    assert!(
        zo_new.iter().any(|(_, e)| e == &zoho_deals[3]),
        "{zo_new:?}"
    );

    // Thin webhooks: the records behind Zoho's notification ids are fetched through the host.
    crm.upsert(
        "zoho",
        "Deals",
        &zoho_deals[2],
        json!({"Stage": "Closed Won", "Probability": 100}),
    );
    let before = events_of(&store, "tenant-zo").await.len();
    let notification = json!({
        "server_time": 1_766_397_600_000_u64,
        "module": "Deals",
        "ids": [zoho_deals[2]],
        "operation": "update",
        "channel_id": "1000000068003",
        "token": "zc-7f3a91d2-northwind-deals",
    });
    let ack = host
        .receive_webhook(adapter_host::pipeline::Inbound {
            connection_id: "zo".into(),
            method: "POST".into(),
            path: "/v1/hooks/zo".into(),
            query: String::new(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: notification.to_string().into_bytes(),
            peer: None,
            capability: None,
        })
        .await
        .unwrap();
    assert_eq!(
        ack.status,
        adapter_host::store::DeliveryStatus::Processed,
        "{ack:?}"
    );
    let fetched = crm.requests_to("/crm/v5/Deals");
    let last = fetched.last().unwrap();
    assert_eq!(
        last.query_param("ids").as_deref(),
        Some(zoho_deals[2].as_str())
    );
    let mut rows = store
        .list_outbox(OutboxFilter {
            tenant_id: "tenant-zo".into(),
            limit: 1000,
            ..OutboxFilter::default()
        })
        .await
        .unwrap()
        .items;
    rows.sort_by_key(|row| row.seq);
    assert_eq!(rows.len(), before + 1);
    let row = &rows[before];
    assert_eq!(row.entity_id, zoho_deals[2]);
    assert!(
        row.payload_json.contains("Closed Won") || row.payload_json.contains("closed_won"),
        "{}",
        row.payload_json
    );
    // The record's fingerprint was kept: the next poll does not report it again.
    let run = poll_to_end(&host, "zo").await;
    assert_eq!(run.events, 0, "{run:?}");

    // And behind a Salesforce outbound message that carries ids only.
    crm.upsert(
        "salesforce",
        "Contact",
        "0035g00000Jx4LpAAB",
        json!({"FirstName": "Robin", "LastName": "Bundy", "Email": "robin@example.com"}),
    );
    let before = events_of(&store, "tenant-sf").await.len();
    let thin = std::fs::read(test_artifacts::sample_file(
        "salesforce/fixtures/outbound-thin.xml",
    ))
    .unwrap();
    let ack = host
        .receive_webhook(adapter_host::pipeline::Inbound {
            connection_id: "sf".into(),
            method: "POST".into(),
            path: "/v1/hooks/sf".into(),
            query: String::new(),
            headers: vec![("content-type".into(), "text/xml; charset=utf-8".into())],
            body: thin,
            peer: None,
            capability: None,
        })
        .await
        .unwrap();
    assert_eq!(
        ack.status,
        adapter_host::store::DeliveryStatus::Processed,
        "{ack:?}"
    );
    assert!(
        crm.requests_to("/services/data/v59.0/sobjects/Contact/0035g00000Jx4LpAAB")
            .len()
            == 1
    );
    let sf_new = new_events(before, events_of(&store, "tenant-sf").await);
    // The contact was fetched whole; the opportunity the fake does not hold is gone.
    assert!(
        sf_new.iter().any(|(_, e)| e == "0035g00000Jx4LpAAB"),
        "{sf_new:?}"
    );
    assert!(
        sf_new.contains(&("opportunity.deleted".into(), "0065g00000Qb2RwAAJ".into())),
        "{sf_new:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_and_zoho_read_a_bulk_update_larger_than_a_page_once() {
    let crm = fake_crm::FakeCrm::start().await;
    let base = crm.base_url();
    // Pages of two, and five deals saved in one second (one millisecond for HubSpot) between
    // older and newer ones: the walks must page within that one time and miss nothing.
    crm.set_page_size("hubspot", 2);
    crm.set_page_size("zoho", 2);
    let mut hubspot = crm.seed_hubspot_deals(1);
    let mut zoho = crm.seed_zoho_deals(1);
    crm.hold_clock(true);
    hubspot.extend(crm.seed_hubspot_deals(5));
    zoho.extend(crm.seed_zoho_deals(5));
    crm.hold_clock(false);
    hubspot.extend(crm.seed_hubspot_deals(2));
    zoho.extend(crm.seed_zoho_deals(2));
    let connection = |id: &str, adapter: &str, signature: &str, settings: &str, prefix: &str| {
        let credential = format!(
            r#"{{ kind = "api_key", secret = "tenant-{id}/crm", header = "Authorization", prefix = "{prefix}" }}"#
        );
        sample_connection(&base, id, adapter, signature, settings, &credential)
    };
    let config = [
        connection(
            "hs",
            "hubspot",
            r#"{ scheme = "hubspot", version = "v3" }"#,
            r#"poll_objects = "deals""#,
            "Bearer ",
        ),
        connection(
            "zo",
            "zoho",
            r#"{ scheme = "zoho_token", field = "token" }"#,
            r#"poll_modules = "Deals""#,
            "Zoho-oauthtoken ",
        ),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let host = adapter_host::serve::open_host(&adapter_host::serve::ServeOptions {
        data_dir: dir.path().join("data"),
        config: Some(path),
        ..adapter_host::serve::ServeOptions::default()
    })
    .await
    .unwrap();
    let store = host.store().clone();
    for (id, tenant, seeded) in [("hs", "tenant-hs", &hubspot), ("zo", "tenant-zo", &zoho)] {
        let run = poll_to_end(&host, id).await;
        assert_eq!(
            run.status,
            adapter_host::store::PollRunStatus::Done,
            "{id}: {run:?}"
        );
        let mut created: Vec<String> = events_of(&store, tenant)
            .await
            .into_iter()
            .map(|(event_type, entity)| {
                assert_eq!(event_type, "deal.created", "{id}");
                entity
            })
            .collect();
        created.sort();
        let mut expected = seeded.clone();
        expected.sort();
        assert_eq!(created, expected, "{id}: each deal once");
        // More than one page per two records: the bulk's time was paged through.
        assert!(run.pages > 4, "{id}: {run:?}");
        let again = poll_to_end(&host, id).await;
        assert_eq!(again.events, 0, "{id}: {again:?}");
    }
    // HubSpot: searches by modification time (`GTE`), never by offset, and that millisecond
    // walked by id.
    let searches: Vec<Value> = crm
        .requests_to("/crm/v3/objects/deals/search")
        .iter()
        .map(|l| serde_json::from_slice(&l.body).unwrap())
        .collect();
    assert!(searches.iter().all(|b| b.get("after").is_none()));
    assert!(
        searches
            .iter()
            .any(|b| b["sorts"][0]["propertyName"] == "hs_object_id"),
        "{searches:?}"
    );
    // Zoho: listings oldest change first, that second paged through with the page token.
    let listings: Vec<_> = crm
        .requests_to("/crm/v5/Deals")
        .into_iter()
        .filter(|l| l.path == "/crm/v5/Deals")
        .collect();
    assert!(!listings.is_empty());
    assert!(listings.iter().all(|l| {
        l.query_param("sort_by").as_deref() == Some("Modified_Time")
            && l.query_param("sort_order").as_deref() == Some("asc")
    }));
    assert!(
        listings
            .iter()
            .any(|l| l.query_param("page_token").is_some())
    );
}

/// A sample adapter's tenant, connection (polling the fake CRM at `base` with `credential`,
/// TOML) and secrets, as provisioning TOML: the connection `id` of tenant `tenant-<id>`.
fn sample_connection(
    base: &str,
    id: &str,
    adapter: &str,
    signature: &str,
    settings: &str,
    credential: &str,
) -> String {
    let wasm = test_artifacts::ALL
        .iter()
        .find(|(stem, _)| *stem == adapter)
        .unwrap()
        .1;
    format!(
        r#"
[[adapters]]
tenant_id = "tenant-{id}"
name = "{adapter}"
wasm = "{wasm}"

[[connections]]
id = "{id}"
tenant_id = "tenant-{id}"
provider = "{adapter}"
adapter = "{adapter}"
signature = {signature}
secret = "tenant-{id}/signing"
allowed_orgs = ["org-1"]
settings = {{ default_org_id = "org-1", {settings} }}
polling = {{ max_pages = 50 }}
api = {{ base_url = "{base}", allow_private = true, credential = {credential} }}

[[secrets]]
name = "tenant-{id}/signing"
value = "zc-7f3a91d2-northwind-deals"

[[secrets]]
name = "tenant-{id}/crm"
value = "crm-key-{id}"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_adapter_fetched_each_record_replays_exactly_without_reaching_the_crm() {
    let (crm, crm_port) = crm(1, 3, Duration::ZERO).await;
    // The `fetch` setting (given beside the polling table) makes the adapter fetch each record
    // of the page itself: three requests of its own, answered by the CRM.
    let host = Host::start(
        crm_port,
        "{ interval_secs = 86400 }\nsettings = { fetch = \"1\" }",
        &[],
    )
    .await;
    let polls = host.wait_for_runs(1).await;
    assert_eq!(polls["items"][0]["events"], 3, "{polls}");
    let (_, deliveries) = host
        .call(
            reqwest::Method::GET,
            "/v1/deliveries?connection_id=poller",
            None,
        )
        .await;
    let delivery = deliveries["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, detail) = host
        .call(
            reqwest::Method::GET,
            &format!("/v1/deliveries/{delivery}"),
            None,
        )
        .await;
    // The page's invocation (the first asked for the request: that one has no stored input).
    let invocation = detail["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["export"] == "handle_poll")
        .unwrap_or_else(|| panic!("{detail}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, export) = host
        .call(
            reqwest::Method::GET,
            &format!("/v1/invocations/{invocation}/export"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["input"]["kind"], "poll");
    assert_eq!(export["responses"].as_array().unwrap().len(), 3, "{export}");
    assert!(
        !export.to_string().contains(TOKEN_1),
        "no credential in an export"
    );

    let asked = hits(&crm).len();
    let (status, replayed) = host
        .call(
            reqwest::Method::POST,
            &format!("/v1/invocations/{invocation}/replay"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(
        (&replayed["identical"], &replayed["divergences"]),
        (&json!(true), &json!([])),
        "{replayed}"
    );
    assert_eq!(hits(&crm).len(), asked, "the replay reached nothing");
    // The CRM's records have changed since: the replay still answers what it answered then.
    crm.lock().unwrap().version = 2;
    let (_, again) = host
        .call(
            reqwest::Method::POST,
            &format!("/v1/invocations/{invocation}/replay"),
            None,
        )
        .await;
    assert_eq!(again["identical"], true, "{again}");
}
