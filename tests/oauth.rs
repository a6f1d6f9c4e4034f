//! Connecting a CRM with OAuth 2.0, end to end through the real binary: a tenant admin starts
//! the flow, the browser goes to the provider (a fake one on loopback, which is also the CRM's
//! API) and comes back, the host keeps the token fresh on its own (before it expires, and once
//! on a 401), concurrent requests cause one refresh, a revoked grant puts the connection in
//! error with the reason, connecting again recovers it, and a replayed or forged `state` is
//! refused. Afterwards no token is anywhere the host writes: the database, the logs at trace
//! level, the recorded requests, the API's answers.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use fake_oauth::{CLIENT_ID, CLIENT_SECRET, FakeOAuth};
use hmac::{Hmac, Mac};
use process::{free_port, spawn_host_logged, wait_ready_logged};
use serde_json::{Value, json};

#[path = "common/fake_oauth.rs"]
mod fake_oauth;
#[path = "common/jwt.rs"]
mod jwt;
#[path = "common/process.rs"]
mod process;

const TENANT: &str = "tenant-oauth";
const SIGNING: &str = "github-signing-secret";
const RETURN_URL: &str = "https://app.example/connected";

struct Host {
    child: std::process::Child,
    port: u16,
    client: reqwest::Client,
    /// Follows no redirect: the test plays the browser.
    browser: reqwest::Client,
    token: String,
    /// Every answer of the API, to look for tokens in.
    answers: Mutex<Vec<String>>,
    data: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A connection `id` whose API is `base` (none: the provider names it), with `credential`.
fn connection(id: &str, base: Option<&str>, credential: &str) -> String {
    let base = base
        .map(|b| format!("base_url = \"{b}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
[[connections]]
id = "{id}"
tenant_id = "{TENANT}"
provider = "custom"
adapter = "poller"
signature = {{ scheme = "github" }}
secret = "tenants/{TENANT}/platform/signing"
polling = {{ max_pages = 10 }}

[connections.api]
{base}allow_private = true
credential = {credential}
"#
    )
}

impl Host {
    /// A host with the connection `crm` to `provider`, a custom one.
    async fn start(provider: &FakeOAuth) -> Self {
        let base = provider.base_url();
        Self::with_connections(&connection(
            "crm",
            Some(&base),
            &format!(
                r#"{{ kind = "oauth2", provider = "custom", client_id = "{CLIENT_ID}", client_secret = "tenants/{TENANT}/platform/oauth-client", authorize_url = "{base}/authorize", token_url = "{base}/token", revoke_url = "{base}/revoke", scopes = ["items.read"] }}"#
            ),
        ))
        .await
    }

    /// A host with `connections` (TOML) using the adapter `poller`.
    async fn with_connections(connections: &str) -> Self {
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
{connections}
[[secrets]]
name = "tenants/{TENANT}/platform/signing"
value = "{SIGNING}"

[[secrets]]
name = "tenants/{TENANT}/platform/oauth-client"
value = "{CLIENT_SECRET}"
"#,
                poller = test_artifacts::POLLER,
            ),
        )
        .unwrap();
        let data = dir.path().join("data");
        let log = dir.path().join("host.log");
        let port = free_port();
        let key = String::from_utf8(jwt::KEY.to_vec()).unwrap();
        let public = format!("http://127.0.0.1:{port}");
        let child = spawn_host_logged(
            &config,
            &data,
            port,
            &[
                ("ADAPTER_HOST_JWT_HS256_KEY", &key),
                ("ADAPTER_HOST_JWT_ISSUER", jwt::ISSUER),
                ("ADAPTER_HOST_JWT_AUDIENCE", jwt::AUDIENCE),
                ("ADAPTER_HOST_PUBLIC_URL", &public),
                ("ADAPTER_HOST_OAUTH_RETURN_URL", RETURN_URL),
                ("ADAPTER_HOST_HEALTH_INTERVAL_SECS", "1"),
                (
                    "ADAPTER_HOST_LOG",
                    "info,adapter_host=trace,tower_http=trace,reqwest=trace,hyper=debug",
                ),
            ],
            &log,
        );
        let client = reqwest::Client::new();
        wait_ready_logged(&client, port, &log).await;
        Self {
            child,
            port,
            client,
            browser: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            token: jwt::token_with(json!({"tenant_id": TENANT})),
            answers: Mutex::new(Vec::new()),
            data,
            log,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let response = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .header("x-org-id", "org-1")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        self.answers.lock().unwrap().push(text.clone());
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Connects the connection as the browser would; the callback URL the provider sent the
    /// browser to, and where the host sent it next.
    async fn connect(&self) -> (String, String) {
        self.connect_to("crm").await
    }

    async fn connect_to(&self, id: &str) -> (String, String) {
        let (status, started) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/connections/{id}/oauth/start"),
            )
            .await;
        assert_eq!(status, 200, "{started}");
        let to_provider = started["authorize_url"].as_str().unwrap();
        let at_provider = self.browser.get(to_provider).send().await.unwrap();
        assert_eq!(at_provider.status(), 302);
        let callback = location(&at_provider);
        let back = self.browser.get(&callback).send().await.unwrap();
        let status = back.status().as_u16();
        let next = location(&back);
        assert_eq!(status, 303, "{next}");
        (callback, next)
    }

    /// Polls the connection now and waits (bounded) for the run to end.
    async fn poll(&self) -> Value {
        self.poll_of("crm").await
    }

    async fn poll_of(&self, id: &str) -> Value {
        let (status, started) = self
            .call(reqwest::Method::POST, &format!("/v1/connections/{id}/poll"))
            .await;
        assert_eq!(status, 202, "{started}");
        let path = format!(
            "/v1/connections/{id}/polls/{}",
            started["id"].as_str().unwrap()
        );
        for _ in 0..400 {
            let (_, view) = self.call(reqwest::Method::GET, &path).await;
            if view["run"]["status"] != "running" {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the run did not end");
    }

    /// The one alert of `rule` in `status`, once the health monitor has raised (or resolved)
    /// it: waits up to 10 s.
    async fn alert_of(&self, rule: &str, status: &str) -> Value {
        for _ in 0..100 {
            let (code, page) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/alerts?rule={rule}&status={status}"),
                )
                .await;
            assert_eq!(code, 200, "{page}");
            if let Some(alert) = page["items"].get(0) {
                return alert.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {status} {rule} alert after 10 s");
    }

    async fn auth(&self) -> Value {
        self.connection_of("crm").await["auth"].clone()
    }

    async fn connection_of(&self, id: &str) -> Value {
        let (status, connection) = self
            .call(reqwest::Method::GET, &format!("/v1/connections/{id}"))
            .await;
        assert_eq!(status, 200, "{connection}");
        connection
    }

    /// A thin webhook naming `ids`: the poller fetches each record through the host.
    async fn webhook(&self, delivery: &str, ids: &[&str]) -> Value {
        let body = json!({ "ids": ids }).to_string();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SIGNING.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let response = self
            .client
            .post(self.url("/v1/hooks/crm"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .header("x-github-delivery", delivery)
            .body(body)
            .send()
            .await
            .unwrap();
        let text = response.text().await.unwrap();
        self.answers.lock().unwrap().push(text.clone());
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .expect("a redirect")
        .to_str()
        .unwrap()
        .to_owned()
}

fn query_of(url: &str) -> std::collections::BTreeMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path, bytes));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_connected_kept_fresh_and_recovers_from_a_revoked_grant() {
    let provider = FakeOAuth::start().await;
    // Short-lived access tokens: the host refreshes them a quarter of their life early.
    provider.set_lifetime(Duration::from_secs(4));
    let host = Host::start(&provider).await;

    // Not connected yet: a poll fails with a reason that says what to do.
    let view = host.poll().await;
    assert_eq!(view["run"]["status"], "failed", "{view}");
    assert!(
        view["run"]["reason"]
            .as_str()
            .unwrap()
            .contains("oauth/start"),
        "{view}"
    );
    assert_eq!(host.auth().await, Value::Null);

    // Connect: the provider was asked with PKCE and the scopes, the browser ends at the
    // return URL, and the connection says who connected it.
    let (callback, next) = host.connect().await;
    let asked = provider.last_authorize();
    assert_eq!(asked["client_id"], CLIENT_ID);
    assert_eq!(asked["code_challenge_method"], "S256");
    assert_eq!(asked["scope"], "items.read");
    assert_eq!(asked["redirect_uri"], host.url("/v1/oauth/callback"));
    assert_eq!(
        next,
        format!("{RETURN_URL}?oauth=connected&connection=crm"),
        "{next}"
    );
    let auth = host.auth().await;
    assert_eq!(auth["state"], "connected", "{auth}");
    assert_eq!(auth["connected_by"], "alice@example.com");
    assert_eq!(auth["scopes"], "items.read");
    assert!(auth["access_expires_at"].is_i64(), "{auth}");

    // The provider's redirect is good once: replayed, or with a state the host never issued,
    // it is refused with a clear problem (or page, for a browser).
    let replayed = host.browser.get(&callback).send().await.unwrap();
    assert_eq!(replayed.status(), 400);
    let problem: Value = serde_json::from_slice(&replayed.bytes().await.unwrap()).unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("already used"),
        "{problem}"
    );
    let forged = host
        .browser
        .get(host.url("/v1/oauth/callback?code=stolen&state=forged-state"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert!(
        forged
            .text()
            .await
            .unwrap()
            .contains("not one this host issued")
    );
    let (status, _) = {
        let response = host
            .browser
            .get(host.url("/v1/oauth/callback?code=x"))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), ())
    };
    assert_eq!(status, 400);
    assert_eq!(
        provider.code_exchanges(),
        1,
        "refused callbacks exchange nothing"
    );

    // Polls go out with the token.
    let view = host.poll().await;
    assert_eq!(view["run"]["status"], "done", "{view}");
    assert_eq!(view["run"]["events"], 6);
    assert_eq!((provider.refreshes(), provider.unauthorized()), (0, 0));

    // Near its expiry the token is refreshed before a request needs it: no 401, no failure.
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let view = host.poll().await;
    assert_eq!(view["run"]["status"], "done", "{view}");
    assert_eq!((provider.refreshes(), provider.unauthorized()), (1, 0));

    // Eight deliveries at once, each fetching its records with a token due for refresh: one
    // refresh between them.
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let deliveries: Vec<_> = (0..8)
        .map(|n| {
            let host = &host;
            async move { host.webhook(&format!("gh-{n}"), &["a", "b"]).await }
        })
        .collect();
    for ack in futures::future::join_all(deliveries).await {
        assert_eq!(ack["status"], "processed", "{ack}");
    }
    assert_eq!((provider.refreshes(), provider.unauthorized()), (2, 0));

    // A token the CRM stops taking early: answered 401 once, refreshed, and asked again.
    provider.expire_access_tokens();
    let view = host.poll().await;
    assert_eq!(view["run"]["status"], "done", "{view}");
    assert_eq!((provider.refreshes(), provider.unauthorized()), (3, 1));

    // The grant revoked at the provider: the connection is in error, with the reason.
    provider.revoke_grant();
    let view = host.poll().await;
    assert_eq!(view["run"]["status"], "failed", "{view}");
    let auth = host.auth().await;
    assert_eq!(auth["state"], "error", "{auth}");
    let reason = auth["reason"].as_str().unwrap();
    assert!(
        reason.contains("invalid_grant") && reason.contains("connect again"),
        "{reason}"
    );
    // The health monitor (every second here) raises one `credentials` alert, health `error`.
    let alert = host.alert_of("credentials", "open").await;
    assert_eq!(alert["severity"], "error", "{alert}");
    assert!(
        alert["detail"].as_str().unwrap().contains("invalid_grant"),
        "{alert}"
    );
    let (_, health) = host
        .call(reqwest::Method::GET, "/v1/connections/crm/health")
        .await;
    assert_eq!(health["status"], "error", "{health}");

    // The user says no at the provider: back at the return URL with the error; still in error.
    provider.deny_next();
    let (_, next) = host.connect().await;
    let query = query_of(&next);
    assert_eq!(
        (query["oauth"].as_str(), query["error"].as_str()),
        ("error", "access_denied")
    );
    assert_eq!(query["connection"], "crm");
    assert_eq!(host.auth().await["state"], "error");

    // Connecting again recovers it.
    let (_, next) = host.connect().await;
    assert!(next.contains("oauth=connected"), "{next}");
    assert_eq!(host.auth().await["state"], "connected");
    let view = host.poll().await;
    assert_eq!(view["run"]["status"], "done", "{view}");
    // ... and resolves its alert, once: the same alert, resolved.
    let resolved = host.alert_of("credentials", "resolved").await;
    assert_eq!(resolved["id"], alert["id"], "{resolved}");
    let (_, all) = host
        .call(reqwest::Method::GET, "/v1/alerts?rule=credentials")
        .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1, "{all}");

    // Disconnect: revoked at the provider, the tokens gone.
    let (status, disconnected) = host
        .call(reqwest::Method::DELETE, "/v1/connections/crm/oauth")
        .await;
    assert_eq!(status, 200, "{disconnected}");
    assert_eq!(disconnected["revoked"], true, "{disconnected}");
    assert!(!provider.revocations().is_empty());
    assert_eq!(host.auth().await["state"], "disconnected");
    let view = host.poll().await;
    assert_eq!(view["run"]["status"], "failed", "{view}");

    // The audit log holds each authorization step, by the admin who took it (the callback's
    // by the admin who started it), and its answer is checked for secrets below like the rest.
    let (status, audit) = host
        .call(reqwest::Method::GET, "/v1/audit?resource_id=crm")
        .await;
    assert_eq!(status, 200, "{audit}");
    let mut steps: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("oauth."))
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    steps.reverse();
    let alice = "alice@example.com";
    assert_eq!(
        steps,
        [
            ("oauth.start", alice),
            ("oauth.connected", alice),
            // Denied at the provider: started, never connected.
            ("oauth.start", alice),
            ("oauth.start", alice),
            ("oauth.connected", alice),
            ("oauth.disconnect", alice),
        ],
        "{audit}"
    );

    // No token, nor the client secret, in anything the host wrote or answered.
    let mut host = host;
    let _ = host.child.kill();
    let _ = host.child.wait();
    let answers = host.answers.lock().unwrap().join("\n");
    let mut secrets = provider.issued();
    secrets.push(CLIENT_SECRET.to_owned());
    assert!(secrets.len() >= 8, "{secrets:?}");
    let log = std::fs::read(&host.log).unwrap();
    let data = files(&host.data);
    assert!(
        log.len() > 10_000,
        "the trace log is there: {} bytes",
        log.len()
    );
    for secret in &secrets {
        assert!(
            !contains(answers.as_bytes(), secret),
            "an API answer holds {secret}"
        );
        assert!(!contains(&log, secret), "the log holds {secret}");
        for (path, bytes) in &data {
            assert!(
                !contains(bytes, secret),
                "{} holds {secret}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_salesforce_zoho_and_hubspot_presets_speak_their_providers_dialects() {
    // One provider each, at the preset's paths (the login domain or endpoints pointed at it).
    let (salesforce, zoho, hubspot) = (
        FakeOAuth::start().await,
        FakeOAuth::start().await,
        FakeOAuth::start().await,
    );
    let preset = |provider: &str, urls: String| {
        format!(
            r#"{{ kind = "oauth2", provider = "{provider}", client_id = "{CLIENT_ID}", client_secret = "tenants/{TENANT}/platform/oauth-client", {urls} }}"#
        )
    };
    let (sf, zo, hs) = (salesforce.base_url(), zoho.base_url(), hubspot.base_url());
    let connections = [
        // Salesforce and Zoho name the API's base URL when connecting: none until then.
        connection("sf", None, &preset("salesforce", format!(r#"login_url = "{sf}""#))),
        connection("zo", None, &preset("zoho", format!(r#"login_url = "{zo}""#))),
        connection(
            "hs",
            Some(&hs),
            &preset(
                "hubspot",
                format!(
                    r#"authorize_url = "{hs}/authorize", token_url = "{hs}/oauth/v1/token", revoke_url = "{hs}/oauth/v1/refresh-tokens""#
                ),
            ),
        ),
    ]
    .concat();
    let host = Host::with_connections(&connections).await;

    for (id, base) in [("sf", &sf), ("zo", &zo), ("hs", &hs)] {
        let (_, next) = host.connect_to(id).await;
        assert!(next.contains("oauth=connected"), "{id}: {next}");
        let view = host.poll_of(id).await;
        assert_eq!(view["run"]["status"], "done", "{id}: {view}");
        assert_eq!(view["run"]["events"], 6, "{id}: {view}");
        let connection = host.connection_of(id).await;
        assert_eq!(
            connection["api"]["base_url"],
            base.as_str(),
            "{id}: {connection}"
        );
        assert_eq!(
            connection["auth"]["state"], "connected",
            "{id}: {connection}"
        );
    }

    // Salesforce: the org's instance became the base URL; its tokens carry no lifetime, so
    // one is refreshed when the API refuses it.
    assert_eq!(
        host.connection_of("sf").await["auth"]["access_expires_at"],
        Value::Null
    );
    salesforce.expire_access_tokens();
    let view = host.poll_of("sf").await;
    assert_eq!(view["run"]["status"], "done", "{view}");
    assert_eq!((salesforce.refreshes(), salesforce.unauthorized()), (1, 1));
    assert_eq!(salesforce.last_scheme(), "Bearer");

    // Zoho: asked for offline access with consent (or it issues no refresh token), and its
    // tokens go as `Zoho-oauthtoken`.
    let asked = zoho.last_authorize();
    assert_eq!(
        (asked["access_type"].as_str(), asked["prompt"].as_str()),
        ("offline", "consent"),
        "{asked:?}"
    );
    assert_eq!(zoho.last_scheme(), "Zoho-oauthtoken");
    assert!(!hubspot.last_authorize().contains_key("access_type"));
    assert_eq!(hubspot.last_scheme(), "Bearer");

    // Disconnecting revokes the grant the provider's way: a form (Salesforce), a query
    // (Zoho), a DELETE of the refresh token (HubSpot: the fake takes no other method there).
    for (id, provider) in [("sf", &salesforce), ("zo", &zoho), ("hs", &hubspot)] {
        let refresh = provider
            .issued()
            .into_iter()
            .rev()
            .find(|t| t.starts_with("refresh-"))
            .unwrap();
        let (status, answer) = host
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/connections/{id}/oauth"),
            )
            .await;
        assert_eq!(status, 200, "{id}: {answer}");
        assert_eq!(answer["revoked"], true, "{id}: {answer}");
        assert_eq!(provider.revocations(), [refresh], "{id}");
    }
}
