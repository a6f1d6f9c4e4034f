//! The management API in process: JWT authentication, and the org-scope contract checked on
//! every endpoint (JWT org authoritative, X-Org-Id required of platform-level callers, lists
//! of the org plus platform-level rows, 404 across orgs and tenants, no write across orgs).

use std::sync::Arc;
use std::time::SystemTime;

use adapter_host::api::auth::{AuthConfig, RemoteJwks};
use adapter_host::pipeline::Host;
use adapter_host::serve::{ServeOptions, open_host};
use adapter_host::server::{ServerSettings, app};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

#[path = "common/backend.rs"]
mod backend;
#[path = "common/jwt.rs"]
mod jwt;
use jwt::{now, token_with};

struct Api {
    host: Host,
    settings: ServerSettings,
    _schema: backend::Schema,
    _dir: tempfile::TempDir,
}

async fn start() -> Api {
    start_with(|_| {}).await
}

/// [`start`] with other options.
async fn start_with(change: impl FnOnce(&mut ServeOptions)) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let settings = ServerSettings {
        auth: Arc::new(jwt::auth_config()),
        ..ServerSettings::default()
    };
    let mut options = ServeOptions {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        config: None,
        public_base_url: Some("https://hooks.example.test".into()),
        relay: Default::default(),
        server: settings.clone(),
        // Uploads are answered once compiled (ready) however loaded the machine is; the test
        // of slow compiles sets this to zero.
        upload_compile_wait: std::time::Duration::from_secs(300),
        ..ServeOptions::default()
    };
    change(&mut options);
    let host = open_host(&backend::on_backend(options)).await.unwrap();
    Api {
        host,
        settings,
        _schema: backend::guard(&dir.path().join("data")),
        _dir: dir,
    }
}

/// Who calls.
#[derive(Clone)]
struct As {
    token: String,
    org_header: Option<&'static str>,
}

fn org_admin(org: &str) -> As {
    As {
        token: token_with(json!({"org_id": org})),
        org_header: None,
    }
}

fn platform(org_header: Option<&'static str>) -> As {
    As {
        token: token_with(json!({})),
        org_header,
    }
}

impl Api {
    async fn call(
        &self,
        who: &As,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(who, &[], method, path, body).await
    }

    /// [`Api::call`] with more headers (`x-request-id`, `x-support-tenant`).
    async fn call_with(
        &self,
        who: &As,
        headers: &[(&str, &str)],
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", who.token));
        if let Some(org) = who.org_header {
            request = request.header("x-org-id", org);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        self.send(request).await
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = app(self.host.clone(), self.settings.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(content_type, "application/problem+json", "{status}");
        }
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, body)
    }

    async fn upload(&self, who: &As, adapter_id: &str, wasm: &str) -> (StatusCode, Value) {
        let mut request = Request::post(format!("/v1/adapters/{adapter_id}/versions"))
            .header("authorization", format!("Bearer {}", who.token))
            .header("content-type", "application/wasm");
        if let Some(org) = who.org_header {
            request = request.header("x-org-id", org);
        }
        self.send(
            request
                .body(Body::from(std::fs::read(wasm).unwrap()))
                .unwrap(),
        )
        .await
    }

    /// An adapter with one version (noop), created by `who`; its id.
    async fn adapter(&self, who: &As, name: &str, platform_level: bool) -> String {
        let (status, adapter) = self
            .call(
                who,
                Method::POST,
                "/v1/adapters",
                Some(json!({"name": name, "platform_level": platform_level})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{adapter}");
        let id = adapter["id"].as_str().unwrap().to_owned();
        let (status, version) = self.upload(who, &id, test_artifacts::NOOP).await;
        assert_eq!(status, StatusCode::CREATED, "{version}");
        id
    }

    /// A connection running `adapter_id`, created by `who` with its signing secret; its id.
    async fn connection(&self, who: &As, adapter_id: &str, platform_level: bool) -> String {
        let (status, written) = self
            .call(
                who,
                Method::PUT,
                "/v1/secrets/github-signing",
                Some(json!({"value": "github-secret", "platform_level": platform_level})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{written}");
        let (status, connection) = self
            .call(
                who,
                Method::POST,
                "/v1/connections",
                Some(json!({
                    "provider": "custom", "adapter_id": adapter_id,
                    "signature": {"scheme": "github"}, "secret": "github-signing",
                    "platform_level": platform_level,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{connection}");
        connection["id"].as_str().unwrap().to_owned()
    }
}

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn bad_tokens_are_refused_with_the_reason() {
    let api = start().await;
    let cases = [
        (json!({"exp": now() - 120}), "the token has expired"),
        (json!({"nbf": now() + 600}), "the token is not valid yet"),
        (
            json!({"iss": "https://evil.example"}),
            "the token's issuer is not accepted",
        ),
        (
            json!({"aud": "someone-else"}),
            "the token's audience is not accepted",
        ),
        (
            json!({"aud": null}),
            "the token lacks a required claim (sub, tenant_id, exp, and iss/aud when required)",
        ),
        (
            json!({"tenant_id": null}),
            "the token lacks a required claim (sub, tenant_id, exp, and iss/aud when required)",
        ),
        (
            json!({"tenant_id": "a/b"}),
            "the token's `sub` must not be empty, and `tenant_id` and `org_id` must be ids (printable ASCII, no `/`)",
        ),
    ];
    for (claims, reason) in cases {
        let who = As {
            token: token_with(claims.clone()),
            org_header: Some("org-a"),
        };
        let (status, problem) = api.call(&who, Method::GET, "/v1/connections", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{claims}");
        assert_eq!(problem["detail"], reason, "{claims}");
    }

    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "x", "tenant_id": "t1", "roles": ["admin"], "iss": "https://id.example",
                "aud": "adapter-host", "exp": now() + 600}),
        &EncodingKey::from_secret(b"another-key-another-key-another-key-0"),
    )
    .unwrap();
    let unsigned = {
        let mut parts: Vec<&str> = forged.split('.').collect();
        parts[2] = "";
        // alg "none" in the header.
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        format!("{header}.{}.", parts[1])
    };
    for (token, reason) in [
        (forged, "the token's signature does not verify"),
        (unsigned, "the token is not a well-formed JWT"),
        ("not-a-jwt".to_owned(), "the token is not a well-formed JWT"),
    ] {
        let who = As {
            token,
            org_header: Some("org-a"),
        };
        let (status, problem) = api.call(&who, Method::GET, "/v1/adapters", None).await;
        assert_eq!(
            (status, problem["detail"].as_str()),
            (StatusCode::UNAUTHORIZED, Some(reason))
        );
    }

    let request = Request::get("/v1/adapters").body(Body::empty()).unwrap();
    let (status, problem) = api.send(request).await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("a bearer token is required"))
    );
    // The webhook endpoint takes no token: it is verified by signature.
    let request = Request::post("/v1/hooks/nope").body(Body::empty()).unwrap();
    assert_eq!(api.send(request).await.0, StatusCode::NOT_FOUND);

    let who = As {
        token: token_with(json!({"roles": ["auditor"]})),
        org_header: Some("org-a"),
    };
    assert_eq!(
        api.call(&who, Method::GET, "/v1/adapters", None).await.0,
        StatusCode::FORBIDDEN
    );
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// One row of every kind in org-a: an adapter with a version, a connection that took a
/// delivery which appended an event, a subscriber and a replay.
struct OrgA {
    adapter: String,
    connection: String,
    delivery: String,
    event: String,
    seq: i64,
    subscriber: String,
    replay: String,
}

impl OrgA {
    async fn new(api: &Api, a: &As) -> Self {
        let ack = one_event_in_org_a(api, a).await;
        let delivery = ack["delivery_id"].as_str().unwrap().to_owned();
        let (_, found) = api
            .call(a, Method::GET, &format!("/v1/deliveries/{delivery}"), None)
            .await;
        let connection = found["delivery"]["connection_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (_, events) = api.call(a, Method::GET, "/v1/events", None).await;
        let event = &events["items"][0];
        let (_, connection_row) = api
            .call(
                a,
                Method::GET,
                &format!("/v1/connections/{connection}"),
                None,
            )
            .await;
        api.call(
            a,
            Method::PUT,
            "/v1/secrets/sub",
            Some(json!({"value": "whsec_c3Vic2NyaWJlcg=="})),
        )
        .await;
        let (status, subscriber) = api
            .call(
                a,
                Method::POST,
                "/v1/subscribers",
                Some(json!({"url": "https://subscriber.example/hook", "secret": "sub"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{subscriber}");
        let (status, replay) = api
            .call(
                a,
                Method::POST,
                "/v1/replays",
                Some(json!({"from": 0, "to": 1000})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{replay}");
        Self {
            adapter: connection_row["adapter_id"].as_str().unwrap().to_owned(),
            connection,
            delivery,
            event: event["event_id"].as_str().unwrap().to_owned(),
            seq: event["seq"].as_i64().unwrap(),
            subscriber: subscriber["id"].as_str().unwrap().to_owned(),
            replay: replay["id"].as_str().unwrap().to_owned(),
        }
    }

    fn ids(&self) -> [&str; 6] {
        [
            &self.adapter,
            &self.connection,
            &self.delivery,
            &self.event,
            &self.subscriber,
            &self.replay,
        ]
    }
}

/// Every management endpoint (the upload is checked on its own: its body is a component),
/// on the rows of org-a.
fn endpoints(f: &OrgA) -> Vec<(Method, String, Option<Value>)> {
    let OrgA {
        adapter,
        connection,
        delivery,
        event,
        seq,
        subscriber,
        replay,
    } = f;
    vec![
        (Method::GET, "/v1/adapters".into(), None),
        (Method::GET, "/v1/audit".into(), None),
        (Method::GET, "/v1/health".into(), None),
        (Method::GET, "/v1/health/rules".into(), None),
        (Method::GET, "/v1/alerts".into(), None),
        (
            Method::GET,
            format!("/v1/connections/{connection}/health"),
            None,
        ),
        (
            Method::POST,
            "/v1/adapters".into(),
            Some(json!({"name": "x"})),
        ),
        (Method::GET, format!("/v1/adapters/{adapter}"), None),
        (
            Method::GET,
            format!("/v1/adapters/{adapter}/versions"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/adapters/{adapter}/versions/1"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/adapters/{adapter}/versions/1/test"),
            Some(json!({"kind": "webhook", "body": "{}"})),
        ),
        (Method::GET, "/v1/connections".into(), None),
        (
            Method::POST,
            "/v1/connections".into(),
            Some(
                json!({"provider": "custom", "adapter_id": adapter, "signature": {"scheme": "github"}}),
            ),
        ),
        (Method::GET, format!("/v1/connections/{connection}"), None),
        (
            Method::PATCH,
            format!("/v1/connections/{connection}"),
            Some(json!({"enabled": false})),
        ),
        (
            Method::DELETE,
            format!("/v1/connections/{connection}"),
            None,
        ),
        (
            Method::PUT,
            "/v1/secrets/signing".into(),
            Some(json!({"value": "s3cret"})),
        ),
        (Method::GET, "/v1/events".into(), None),
        (Method::GET, format!("/v1/events/{event}"), None),
        (Method::GET, "/v1/deliveries".into(), None),
        (Method::GET, format!("/v1/deliveries/{delivery}"), None),
        (
            Method::POST,
            format!("/v1/deliveries/{delivery}/redrive"),
            None,
        ),
        (
            Method::POST,
            "/v1/deliveries/redrive".into(),
            Some(json!({"connection_id": connection})),
        ),
        (Method::GET, "/v1/replays".into(), None),
        (
            Method::POST,
            "/v1/replays".into(),
            Some(json!({"from": 0, "to": 1000})),
        ),
        (Method::GET, format!("/v1/replays/{replay}"), None),
        (Method::GET, "/v1/subscribers".into(), None),
        (
            Method::POST,
            "/v1/subscribers".into(),
            Some(json!({"url": "https://x.example/hook", "secret": "s"})),
        ),
        (Method::GET, format!("/v1/subscribers/{subscriber}"), None),
        (
            Method::PATCH,
            format!("/v1/subscribers/{subscriber}"),
            Some(json!({"enabled": false})),
        ),
        (
            Method::DELETE,
            format!("/v1/subscribers/{subscriber}"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/subscribers/{subscriber}/deliveries"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/subscribers/{subscriber}/deliveries/{seq}/retry"),
            None,
        ),
    ]
}

#[tokio::test]
async fn every_endpoint_needs_an_org_from_the_token_or_the_header() {
    let api = start().await;
    let a = org_admin("org-a");
    let f = OrgA::new(&api, &a).await;
    for (method, path, body) in endpoints(&f) {
        let (status, problem) = api.call(&platform(None), method.clone(), &path, body).await;
        assert_eq!(
            (status, problem["detail"].as_str()),
            (
                StatusCode::BAD_REQUEST,
                Some("the token has no org_id: send the org in the X-Org-Id header")
            ),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn another_org_or_tenant_finds_nothing_and_changes_nothing() {
    let api = start().await;
    let a = org_admin("org-a");
    let f = OrgA::new(&api, &a).await;
    let outsiders = [
        ("org-b", org_admin("org-b")),
        // X-Org-Id cannot take an org-scoped token elsewhere.
        (
            "org-b claiming org-a",
            As {
                org_header: Some("org-a"),
                ..org_admin("org-b")
            },
        ),
        ("platform caller in org-b", platform(Some("org-b"))),
        (
            "another tenant",
            As {
                token: token_with(json!({"tenant_id": "t2", "org_id": "org-a"})),
                org_header: None,
            },
        ),
    ];
    for (who, caller) in &outsiders {
        for (method, path, body) in endpoints(&f) {
            let (status, answer) = api.call(caller, method.clone(), &path, body).await;
            let text = answer.to_string();
            if f.ids().iter().any(|id| path.contains(id)) {
                assert_eq!(
                    status,
                    StatusCode::NOT_FOUND,
                    "{who}: {method} {path}: {answer}"
                );
                assert!(
                    !text.contains("org-a"),
                    "{who}: {method} {path} leaks: {answer}"
                );
            } else if method == Method::GET {
                assert_eq!(status, StatusCode::OK, "{who}: {method} {path}");
                assert!(
                    f.ids().iter().all(|id| !text.contains(id)),
                    "{who}: {method} {path} lists org-a's rows: {answer}"
                );
            } else if path == "/v1/connections" {
                // The body names org-a's adapter.
                assert_eq!(
                    status,
                    StatusCode::NOT_FOUND,
                    "{who}: {method} {path}: {answer}"
                );
            } else if path == "/v1/deliveries/redrive" {
                // The filter names org-a's connection: nothing of it is selected.
                assert_eq!(
                    (
                        status,
                        answer["redriven"].as_u64(),
                        answer["refused"].as_u64()
                    ),
                    (StatusCode::OK, Some(0), Some(0)),
                    "{who}: {answer}"
                );
            }
        }
    }
    // Nothing changed for org-a.
    let get = |path: String| {
        let a = a.clone();
        let api = &api;
        async move { api.call(&a, Method::GET, &path, None).await }
    };
    let (status, still) = get(format!("/v1/connections/{}", f.connection)).await;
    assert_eq!(
        (status, still["status"].as_str()),
        (StatusCode::OK, Some("active"))
    );
    let (status, still) = get(format!("/v1/subscribers/{}", f.subscriber)).await;
    assert_eq!(
        (status, still["enabled"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (_, delivery) = get(format!("/v1/deliveries/{}", f.delivery)).await;
    assert_eq!(
        delivery["invocations"].as_array().unwrap().len(),
        1,
        "never redriven"
    );
    let (_, versions) = get(format!("/v1/adapters/{}/versions", f.adapter)).await;
    assert_eq!(versions["items"].as_array().unwrap().len(), 1);
    // Nor can an outsider upload a version of org-a's adapter.
    let (status, _) = api
        .upload(&org_admin("org-b"), &f.adapter, test_artifacts::NOOP)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn lists_hold_the_org_and_platform_level_rows() {
    let api = start().await;
    let (a, b) = (org_admin("org-a"), org_admin("org-b"));
    let platform_b = platform(Some("org-b"));
    let shared = api.adapter(&platform_b, "shared", true).await;
    let mine = api.adapter(&a, "mine", false).await;
    let theirs = api.adapter(&b, "theirs", false).await;
    let shared_connection = api.connection(&platform_b, &shared, true).await;
    let my_connection = api.connection(&a, &shared, false).await;
    let their_connection = api.connection(&b, &theirs, false).await;

    let (_, list) = api.call(&a, Method::GET, "/v1/adapters", None).await;
    let mut expected = vec![shared.clone(), mine.clone()];
    expected.sort();
    assert_eq!(ids(&list), expected);
    let (_, list) = api.call(&a, Method::GET, "/v1/connections", None).await;
    let mut expected = vec![shared_connection.clone(), my_connection.clone()];
    expected.sort();
    assert_eq!(ids(&list), expected);
    let (_, list) = api
        .call(&platform_b, Method::GET, "/v1/connections", None)
        .await;
    let mut expected = vec![shared_connection.clone(), their_connection];
    expected.sort();
    assert_eq!(ids(&list), expected);

    // A platform-level row is readable by an org, not changeable by it.
    let path = format!("/v1/connections/{shared_connection}");
    assert_eq!(
        api.call(&a, Method::GET, &path, None).await.0,
        StatusCode::OK
    );
    let (status, problem) = api
        .call(&a, Method::PATCH, &path, Some(json!({"enabled": false})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(
        api.call(&a, Method::DELETE, &path, None).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = api
        .call(
            &platform_b,
            Method::PATCH,
            &path,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Org tokens cannot create platform-level rows.
    let (status, _) = api
        .call(
            &a,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "p", "platform_level": true})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_tenants_orgs_are_listed_without_an_org_and_an_org_sees_only_its_own() {
    let api = start().await;
    let (a, b) = (org_admin("org-a"), org_admin("org-b"));
    let platform_b = platform(Some("org-b"));
    let shared = api.adapter(&platform_b, "shared", true).await;
    api.adapter(&a, "mine", false).await;
    api.connection(&a, &shared, false).await;
    api.connection(&b, &shared, false).await;
    // A platform-level connection that may emit into org-c, which nothing else names.
    let (status, written) = api
        .call(
            &platform_b,
            Method::PUT,
            "/v1/secrets/github-signing",
            Some(json!({"value": "github-secret", "platform_level": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{written}");
    let (status, created) = api
        .call(
            &platform_b,
            Method::POST,
            "/v1/connections",
            Some(json!({
                "provider": "custom", "adapter_id": shared, "platform_level": true,
                "signature": {"scheme": "github"}, "secret": "github-signing",
                "allowed_org_ids": ["org-c"],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    // Another tenant's org is not this tenant's.
    let stranger = As {
        token: token_with(json!({"tenant_id": "tenant-other", "org_id": "org-z"})),
        org_header: None,
    };
    api.adapter(&stranger, "elsewhere", false).await;

    // No X-Org-Id needed: this is how a platform-level caller finds one.
    let (status, orgs) = api
        .call(&platform(None), Method::GET, "/v1/orgs", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{orgs}");
    assert_eq!(
        orgs["items"],
        json!([
            {"org_id": "org-a", "connections": 1, "allowed_by": 0, "adapters": 1, "subscribers": 0},
            {"org_id": "org-b", "connections": 1, "allowed_by": 0, "adapters": 0, "subscribers": 0},
            {"org_id": "org-c", "connections": 0, "allowed_by": 1, "adapters": 0, "subscribers": 0},
        ]),
        "{orgs}"
    );
    let (_, first) = api
        .call(&platform(None), Method::GET, "/v1/orgs?limit=2", None)
        .await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (_, second) = api
        .call(
            &platform(None),
            Method::GET,
            &format!("/v1/orgs?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(second["items"][0]["org_id"], "org-c", "{second}");
    assert_eq!(second["next_cursor"], Value::Null);

    // An org-scoped caller sees its org alone, whatever it asks; an org no row names yet too.
    let (_, mine) = api.call(&a, Method::GET, "/v1/orgs", None).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["items"][0]["org_id"], "org-a");
    let (_, fresh) = api
        .call(&org_admin("org-new"), Method::GET, "/v1/orgs", None)
        .await;
    assert_eq!(
        fresh["items"],
        json!([{"org_id": "org-new", "connections": 0, "allowed_by": 0, "adapters": 0, "subscribers": 0}])
    );
    let (_, theirs) = api.call(&stranger, Method::GET, "/v1/orgs", None).await;
    assert_eq!(theirs["items"][0]["org_id"], "org-z", "{theirs}");
    assert_eq!(theirs["items"][0]["adapters"], 1);

    let (status, problem) = api
        .call(&platform(None), Method::GET, "/v1/orgs?limit=0", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (status, problem) = api
        .call(&platform(None), Method::GET, "/v1/orgs?org=x", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let no_token = Request::get("/v1/orgs").body(Body::empty()).unwrap();
    assert_eq!(api.send(no_token).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_ready_version_reports_its_world_and_imports() {
    let api = start().await;
    let a = org_admin("org-a");
    for (name, wasm, world) in [
        ("current", test_artifacts::POLLER, "0.2.0"),
        ("legacy", test_artifacts::LEGACY_V0_1, "0.1.0"),
    ] {
        let (_, adapter) = api
            .call(
                &a,
                Method::POST,
                "/v1/adapters",
                Some(json!({"name": name})),
            )
            .await;
        let id = adapter["id"].as_str().unwrap();
        let (status, version) = api.upload(&a, id, wasm).await;
        assert_eq!(status, StatusCode::CREATED, "{version}");
        assert_eq!(version["world"], world, "{version}");
        let imports: Vec<&str> = version["imports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap())
            .collect();
        let mut sorted = imports.clone();
        sorted.sort_unstable();
        assert_eq!(imports, sorted, "sorted");
        assert!(
            imports
                .iter()
                .all(|i| i.starts_with("crm:adapter/") || i.starts_with("wasi:")),
            "{imports:?}"
        );
        // What it declares stays under `info`, as before.
        assert!(version["info"]["event_types"].is_array(), "{version}");
        assert!(version["info"].get("world").is_none(), "{version}");
        let (_, read) = api
            .call(
                &a,
                Method::GET,
                &format!("/v1/adapters/{id}/versions/1"),
                None,
            )
            .await;
        assert_eq!(
            (&read["world"], &read["imports"]),
            (&version["world"], &version["imports"])
        );
    }
    // The poller fetches through the host: its world's HTTP interface is among its imports.
    let (_, adapters) = api.call(&a, Method::GET, "/v1/adapters", None).await;
    let current = adapters["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "current")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, version) = api
        .call(
            &a,
            Method::GET,
            &format!("/v1/adapters/{current}/versions/1"),
            None,
        )
        .await;
    assert!(
        version["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("crm:adapter/http")),
        "{version}"
    );
}

/// The drifts of `connection` once `done` holds of them; the watch judges off the webhook
/// path, so they show up shortly after the delivery (bounded wait).
async fn drifts_when(
    api: &Api,
    who: &As,
    connection: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    for _ in 0..200 {
        let (status, page) = api
            .call(
                who,
                Method::GET,
                &format!("/v1/connections/{connection}/drifts"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap().clone();
        if done(&items) {
            return items;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the drifts of {connection} never got there");
}

#[tokio::test]
async fn a_crm_whose_amount_turns_from_string_to_number_raises_one_drift_alert() {
    let api = start().await;
    let a = org_admin("org-a");
    let adapter = api.adapter(&a, "drifting", false).await;
    let connection = api.connection(&a, &adapter, false).await;
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/sample-adapters/custom-crm-rust/fixtures/deal-won.json",
            test_artifacts::REPO_ROOT
        ))
        .unwrap(),
    )
    .unwrap();
    let deal = |i: usize, amount: Value| {
        let mut body = fixture.clone();
        body["event_id"] = json!(format!("evt-{i}"));
        body["data"]["amount"] = amount;
        body.to_string()
    };
    for i in 0..20 {
        deliver_hostile(&api, &connection, &deal(i, json!(format!("{i}.50")))).await;
    }
    let turned = deliver_hostile(&api, &connection, &deal(20, json!(1234.5))).await;
    let drifts = drifts_when(&api, &a, &connection, |d| !d.is_empty()).await;
    assert_eq!(drifts.len(), 1, "{drifts:?}");
    let drift = &drifts[0];
    assert_eq!(
        (
            drift["kind"].as_str(),
            drift["pointer"].as_str(),
            drift["change"].as_str(),
            drift["was"].as_str(),
            drift["now"].as_str(),
        ),
        (
            Some("webhook:deal.won"),
            Some("/data/amount"),
            Some("decimal_as_number"),
            Some("string"),
            Some("number")
        ),
        "{drift}"
    );
    assert_eq!(drift["example_delivery_id"], turned["delivery_id"]);

    // The monitor raises one alert naming the pointer, with the drift in its figures.
    let changes = api.host.assess_all().await.unwrap();
    let raised: Vec<&adapter_host::store::Alert> = changes
        .raised
        .iter()
        .filter(|alert| alert.rule == "schema_drift")
        .collect();
    assert_eq!(raised.len(), 1, "{changes:?}");
    assert!(
        raised[0].detail.contains("`/data/amount`"),
        "{}",
        raised[0].detail
    );
    assert!(
        raised[0]
            .detail
            .contains(turned["delivery_id"].as_str().unwrap())
    );

    // The next number is no news (learned); a new field is, and shows the one before was judged.
    deliver_hostile(&api, &connection, &deal(21, json!(99))).await;
    let mut extra: Value = serde_json::from_str(&deal(22, json!("1.00"))).unwrap();
    extra["data"]["discount"] = json!("0.10");
    deliver_hostile(&api, &connection, &extra.to_string()).await;
    let drifts = drifts_when(&api, &a, &connection, |d| d.len() >= 2).await;
    let seen: Vec<(&str, &str)> = drifts
        .iter()
        .map(|d| {
            (
                d["pointer"].as_str().unwrap(),
                d["change"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("/data/discount", "appeared"),
            ("/data/amount", "decimal_as_number")
        ],
        "newest first, the amount once"
    );
    let again = api.host.assess_all().await.unwrap();
    assert!(
        again
            .raised
            .iter()
            .all(|alert| alert.rule != "schema_drift"),
        "one open alert per rule: {again:?}"
    );

    // Another org does not see them.
    let (status, _) = api
        .call(
            &org_admin("org-b"),
            Method::GET,
            &format!("/v1/connections/{connection}/drifts"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_delivery_past_its_retention_keeps_its_history_and_cannot_be_redriven() {
    let api = start().await;
    let a = org_admin("org-a");
    let connection = hostile_connection(&api, &a).await;
    let old = deliver_hostile(&api, &connection, "fail\nold").await;
    assert_eq!(old["status"], "failed", "{old}");
    let path = format!("/v1/deliveries/{}", old["delivery_id"].as_str().unwrap());
    let (_, before) = api.call(&a, Method::GET, &path, None).await;

    // Thirty days and a minute later (the default retention), the purge runs.
    let later = adapter_host::store::now_millis() + 30 * 24 * 3600 * 1000 + 60_000;
    let purged = api.host.purge_expired(later).await.unwrap();
    assert_eq!((purged.bodies, purged.logs), (1, 1), "{purged:?}");
    assert_eq!(
        api.host.purge_expired(later).await.unwrap(),
        Default::default(),
        "once"
    );

    let (status, after) = api.call(&a, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["delivery"]["body_purged_at"], json!(later), "{after}");
    for kept in [
        "id",
        "status",
        "body_bytes",
        "body_sha256",
        "reason_json",
        "received_at",
    ] {
        assert_eq!(
            after["delivery"][kept], before["delivery"][kept],
            "{kept} is history: kept"
        );
    }
    let invocation = &after["invocations"][0];
    assert_eq!(invocation["log_purged_at"], json!(later), "{after}");
    assert_eq!(invocation["outcome"], before["invocations"][0]["outcome"]);

    let (status, problem) = api
        .call(&a, Method::POST, &format!("{path}/redrive"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("its body has expired"),
        "{problem}"
    );
    // The batch redrive says so for it too, and runs nothing.
    let (status, batch) = api
        .call(
            &a,
            Method::POST,
            "/v1/deliveries/redrive",
            Some(json!({"connection_id": connection})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["redriven"], 0, "{batch}");
    assert!(
        batch.to_string().contains("its body has expired"),
        "{batch}"
    );
}

/// A tenant admin of `org` who may see personal data.
fn pii_reader(org: &str) -> As {
    As {
        token: token_with(json!({"org_id": org, "roles": ["tenant_admin", "pii_reader"]})),
        org_header: None,
    }
}

/// The person the hostile guest's `person` command emits (and logs, at every level).
const PERSON_EMAIL: &str = "ada.lovelace.pii@example.test";
const PERSON_PHONE: &str = "+44 20 7946 0958";

fn person_body() -> String {
    format!("person\n{PERSON_EMAIL}\n{PERSON_PHONE}\norg-a")
}

/// `texts` holds neither of the person's values.
fn assert_no_person(what: &str, text: &str) {
    for value in [PERSON_EMAIL, PERSON_PHONE] {
        assert!(!text.contains(value), "{what} shows {value}: {text}");
    }
}

#[tokio::test]
async fn personal_data_is_masked_without_its_role_kept_out_of_logs_and_withheld_on_request() {
    let api = start().await;
    let a = org_admin("org-a");
    let reader = pii_reader("org-a");
    let connection = hostile_connection(&api, &a).await;
    let ack = deliver_hostile(&api, &connection, &person_body()).await;
    assert_eq!(
        (ack["status"].as_str(), ack["events"].as_u64()),
        (Some("processed"), Some(1)),
        "{ack}"
    );

    // The event: masked for an admin without the role, whole for a reader; the metadata names
    // where the personal data is.
    let (_, events) = api.call(&a, Method::GET, "/v1/events", None).await;
    let event = &events["items"][0];
    assert_eq!(event["masked"], json!(["/email", "/phones/0"]), "{event}");
    assert_eq!(event["payload"]["email"], "~masked");
    assert_eq!(event["payload"]["phones"], json!(["~masked"]));
    assert_eq!(
        (
            event["payload"]["name"].as_str(),
            event["payload"]["city"].as_str()
        ),
        (Some("Test Person"), Some("Leeds"))
    );
    assert_eq!(
        event["metadata"]["personal_data"],
        json!(["/email", "/phones/0"])
    );
    assert_no_person("the event list", &events.to_string());
    let path = format!("/v1/events/{}", event["event_id"].as_str().unwrap());
    let (_, masked) = api.call(&a, Method::GET, &path, None).await;
    assert_no_person("the event", &masked.to_string());
    let (_, whole) = api.call(&reader, Method::GET, &path, None).await;
    assert_eq!(whole["payload"]["email"], PERSON_EMAIL, "{whole}");
    assert_eq!(whole["payload"]["phones"], json!([PERSON_PHONE]));
    assert_eq!(whole["masked"], json!([]));

    // The guest logged the person at every level and on stdout and stderr: every line of
    // the stored log is masked, whoever reads it.
    let delivery = format!("/v1/deliveries/{}", ack["delivery_id"].as_str().unwrap());
    let (_, detail) = api.call(&reader, Method::GET, &delivery, None).await;
    let log: Value =
        serde_json::from_str(detail["invocations"][0]["log_json"].as_str().unwrap()).unwrap();
    let lines = log["lines"].as_array().unwrap().clone();
    let levels: Vec<&str> = lines.iter().map(|l| l["level"].as_str().unwrap()).collect();
    for level in [
        "trace", "debug", "info", "warn", "error", "stdout", "stderr",
    ] {
        assert!(levels.contains(&level), "{level} logged: {detail}");
    }
    for line in &lines {
        assert_eq!(
            line["message"], "person ~masked reachable at ~masked",
            "{line}"
        );
    }
    assert_no_person("the delivery", &detail.to_string());

    // A dry run masks too, unless the caller may see it; its log is masked either way.
    let (_, adapter) = api
        .call(
            &a,
            Method::GET,
            &format!("/v1/connections/{connection}"),
            None,
        )
        .await;
    let test = format!(
        "/v1/adapters/{}/versions/1/test",
        adapter["adapter_id"].as_str().unwrap()
    );
    let sample = json!({"kind": "webhook", "body": person_body()});
    let (status, report) = api
        .call(&a, Method::POST, &test, Some(sample.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report["masked"],
        json!([{"event": 0, "fields": ["/email", "/phones/0"]}]),
        "{report}"
    );
    assert_no_person("a dry run", &report.to_string());
    let (_, report) = api.call(&reader, Method::POST, &test, Some(sample)).await;
    let payload: Value =
        serde_json::from_str(report["outcome"]["events"][0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["email"], PERSON_EMAIL, "{report}");
    assert_no_person("a reader's dry-run log", &report["log"].to_string());

    // The connection withholds the phones from export: later events never carry them.
    let (status, problem) = api
        .call(&a, Method::PATCH, &format!("/v1/connections/{connection}"),
            Some(json!({"export": {"withhold": [{"event_type": "contact.created", "field": "phones"}]}})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("withhold[0].field"),
        "{problem}"
    );
    let policy = json!({"withhold": [{"event_type": "contact.created", "field": "/phones/*"}]});
    let (status, updated) = api
        .call(
            &a,
            Method::PATCH,
            &format!("/v1/connections/{connection}"),
            Some(json!({"export": policy})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["export"], policy);
    let second = deliver_hostile(
        &api,
        &connection,
        &format!("person\nsecond.{PERSON_EMAIL}\n+44 20 7946 0999\norg-a"),
    )
    .await;
    assert_eq!(second["events"], 1, "{second}");
    let (_, events) = api.call(&reader, Method::GET, "/v1/events", None).await;
    let newest = &events["items"][0];
    assert_eq!(
        newest["payload"]["email"],
        format!("second.{PERSON_EMAIL}"),
        "{newest}"
    );
    assert_eq!(newest["payload"]["phones"], json!([]), "{newest}");
    assert_eq!(newest["metadata"]["withheld"], json!(["/phones/0"]));
    assert_eq!(newest["metadata"]["personal_data"], json!(["/email"]));
    assert!(!events.to_string().contains("+44 20 7946 0999"), "{events}");
    // What the outbox holds is what is published and signed: the stored row has no phone.
    let row = api
        .host
        .store()
        .get_event(newest["event_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !row.payload_json.contains("+44 20 7946 0999"),
        "{}",
        row.payload_json
    );
    // Events stored before the policy keep what they had (the outbox is append-only).
    assert_eq!(
        events["items"][1]["payload"]["phones"],
        json!([PERSON_PHONE])
    );
    // `null` withholds nothing again.
    let (_, cleared) = api
        .call(
            &a,
            Method::PATCH,
            &format!("/v1/connections/{connection}"),
            Some(json!({"export": null})),
        )
        .await;
    assert_eq!(cleared["export"], Value::Null, "{cleared}");
}

#[tokio::test]
async fn a_recorded_invocation_replays_exactly_through_the_api_and_the_cli_and_a_change_shows() {
    let api = start().await;
    let a = org_admin("org-a");
    let reader = pii_reader("org-a");
    let connection = hostile_connection(&api, &a).await;
    // Two runs of the same input: the state, the clocks and the random seed differ.
    let first = deliver_hostile(&api, &connection, "entropy\norg-a").await;
    let second = deliver_hostile(&api, &connection, "entropy\norg-a\n").await;
    assert_eq!(
        (first["events"].as_u64(), second["events"].as_u64()),
        (Some(1), Some(1)),
        "{first} {second}"
    );
    let (_, events) = api.call(&reader, Method::GET, "/v1/events", None).await;
    let details: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["payload"]["detail"].as_str().unwrap())
        .collect();
    assert!(
        details[0].starts_with("run 2 ") && details[1].starts_with("run 1 "),
        "{details:?}"
    );

    let delivery = format!("/v1/deliveries/{}", second["delivery_id"].as_str().unwrap());
    let (_, detail) = api.call(&a, Method::GET, &delivery, None).await;
    let invocation = detail["invocations"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        !detail.to_string().contains("entropy-count"),
        "the replay record is not shown: {detail}"
    );
    let export_path = format!("/v1/invocations/{invocation}/export");

    // The version declares personal data: exporting it needs pii_reader; a viewer, never.
    let (status, problem) = api.call(&a, Method::GET, &export_path, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("pii_reader"),
        "{problem}"
    );
    let viewer = As {
        token: token_with(json!({"org_id": "org-a", "roles": ["viewer", "pii_reader"]})),
        org_header: None,
    };
    assert_eq!(
        api.call(&viewer, Method::GET, &export_path, None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.call(&org_admin("org-b"), Method::GET, &export_path, None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let (status, export) = api.call(&reader, Method::GET, &export_path, None).await;
    assert_eq!(status, StatusCode::OK, "{export}");
    assert_eq!(export["format"], "adapter-host.invocation/1");
    assert!(
        !export.to_string().contains("github-secret"),
        "no secret: {export}"
    );
    // What it saw of the state: the counter as the first run left it.
    assert_eq!(
        export["record"]["state"]["entropy-count"], "MQ==",
        "{export}"
    );

    // Replayed by the host: the same outcome, byte for byte.
    let replay_path = format!("/v1/invocations/{invocation}/replay");
    let (status, replayed) = api.call(&reader, Method::POST, &replay_path, None).await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(replayed["identical"], true, "{replayed}");
    assert_eq!(replayed["differences"], json!([]));
    let payload: Value = serde_json::from_str(
        replayed["outcome"]["events"][0]["payload"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        payload["detail"], details[0],
        "the same clock readings and seed"
    );
    let (_, again) = api
        .call(&reader, Method::POST, &replay_path, Some(json!({})))
        .await;
    assert_eq!(again["identical"], true, "{again}");
    let (status, _) = api
        .call(
            &reader,
            Method::POST,
            &replay_path,
            Some(json!({"adapter_version": 9})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Replayed locally with the CLI, from the export alone.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("invocation.json");
    std::fs::write(&file, export.to_string()).unwrap();
    let run = |file: &std::path::Path, wasm: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_adapter-host"))
            .arg("replay")
            .arg(file)
            .arg(wasm)
            .arg("--no-cache")
            .output()
            .unwrap()
    };
    let out = run(&file, test_artifacts::HOSTILE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("identical:"), "{stdout}");
    // Another component is refused unless asked for.
    let out = run(&file, test_artifacts::NOOP);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("the invocation ran component"));

    // A different recorded state computes something else, and the replay names where.
    let mut changed = export.clone();
    changed["record"]["state"]["entropy-count"] = json!("NQ==");
    std::fs::write(&file, changed.to_string()).unwrap();
    let out = run(&file, test_artifacts::HOSTILE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}");
    assert!(
        stdout.contains("differs at /events/0/payload/detail"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_tenant_sets_its_own_retention_and_the_purge_applies_it() {
    let api = start().await;
    let a = org_admin("org-a");
    let whole = platform(Some("org-a"));
    let (status, read) = api.call(&a, Method::GET, "/v1/retention", None).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(
        (&read["tenant"], &read["platform"], &read["effective"]),
        (
            &json!({"bodies_days": null, "logs_days": null}),
            &json!({"bodies_days": 30, "logs_days": 30}),
            &json!({"bodies_days": 30, "logs_days": 30}),
        ),
        "{read}"
    );
    // It applies to every org: an org's token may not set it, nor a viewer.
    let viewer = As {
        token: token_with(json!({"roles": ["viewer"]})),
        org_header: Some("org-a"),
    };
    let seven = Some(json!({"bodies_days": 7}));
    for who in [&a, &viewer] {
        let (status, problem) = api
            .call(who, Method::PUT, "/v1/retention", seven.clone())
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    }
    for (body, says) in [
        (json!({"bodies_days": 0}), "1 to 3650 days"),
        (json!({"logs_days": 3651}), "1 to 3650 days"),
        (json!({"bodies_days": "7"}), "bodies_days"),
        (
            json!({"bodies_days": 7, "payloads_days": 1}),
            "payloads_days",
        ),
    ] {
        let (status, problem) = api
            .call(&whole, Method::PUT, "/v1/retention", Some(body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{problem}"
        );
    }
    let (status, set) = api.call(&whole, Method::PUT, "/v1/retention", seven).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(
        (&set["tenant"], &set["effective"], &set["updated_by"]),
        (
            &json!({"bodies_days": 7, "logs_days": null}),
            &json!({"bodies_days": 7, "logs_days": 30}),
            &json!("alice@example.com"),
        ),
        "{set}"
    );
    let (_, read) = api.call(&a, Method::GET, "/v1/retention", None).await;
    assert_eq!(read["effective"], set["effective"]);

    // A week and a minute later the body is purged; the log (30 days) stays.
    let connection = hostile_connection(&api, &a).await;
    let failed = deliver_hostile(&api, &connection, "fail\nweek").await;
    let later = adapter_host::store::now_millis() + 7 * 24 * 3600 * 1000 + 60_000;
    let purged = api.host.purge_expired(later).await.unwrap();
    assert_eq!((purged.bodies, purged.logs), (1, 0), "{purged:?}");
    let path = format!("/v1/deliveries/{}", failed["delivery_id"].as_str().unwrap());
    let (_, read) = api.call(&a, Method::GET, &path, None).await;
    assert_eq!(read["delivery"]["body_purged_at"], json!(later), "{read}");
    assert_eq!(
        read["invocations"][0]["log_purged_at"],
        Value::Null,
        "{read}"
    );

    let log = audit_log(&api, &a, "&action=retention.put").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        log[0]["detail"],
        json!({"bodies_days": 7, "logs_days": null})
    );
    // Nothing set: the platform's again.
    let (status, back) = api
        .call(&whole, Method::PUT, "/v1/retention", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(
        back["effective"],
        json!({"bodies_days": 30, "logs_days": 30})
    );
    assert_eq!(back["updated_at"], Value::Null);
}

#[tokio::test]
async fn erasing_a_tenant_needs_its_whole_tenant_admin_and_leaves_every_row_erased() {
    let api = start().await;
    let a = org_admin("org-a");
    let ack = one_event_in_org_a(&api, &a).await;
    let delivery = format!("/v1/deliveries/{}", ack["delivery_id"].as_str().unwrap());
    // And a failed delivery, which could be redriven.
    let connection = hostile_connection(&api, &a).await;
    let failed = deliver_hostile(&api, &connection, "fail\nonce").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let failed = format!("/v1/deliveries/{}", failed["delivery_id"].as_str().unwrap());
    let (_, list) = api.call(&a, Method::GET, "/v1/events", None).await;
    let event = format!(
        "/v1/events/{}",
        list["items"][0]["event_id"].as_str().unwrap()
    );
    let confirm = || Some(json!({"confirm_tenant_id": "t1"}));
    let erase = "/v1/erasure";

    // Nobody narrower than the whole tenant's admin may, whatever the body says.
    let tenant_wide = |roles: Value| As {
        token: token_with(json!({"roles": roles})),
        org_header: None,
    };
    // (An admin erases another tenant only in support mode, never its own tenant by its role.)
    for who in [
        a.clone(),
        tenant_wide(json!(["viewer"])),
        tenant_wide(json!(["admin"])),
    ] {
        let (status, problem) = api.call(&who, Method::POST, erase, confirm()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    }
    let admin = tenant_wide(json!(["tenant_admin"]));
    for (body, says) in [
        (
            json!({"confirm_tenant_id": "t2"}),
            "must be the tenant being erased, `t1`",
        ),
        (json!({}), "confirm_tenant_id"),
        (json!({"confirm_tenant_id": "t1", "also": 1}), "also"),
    ] {
        let (status, problem) = api.call(&admin, Method::POST, erase, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{problem}"
        );
    }
    // Refused calls changed nothing.
    let (_, kept) = api.call(&a, Method::GET, &event, None).await;
    assert_eq!(kept["payload"]["pepm_rate"], "12.50", "{kept}");
    assert_eq!(kept["payload_erased"], false);

    let (status, erased) = api.call(&admin, Method::POST, erase, confirm()).await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    assert_eq!(
        (&erased["tenant_id"], &erased["key_destroyed"]),
        (&json!("t1"), &json!(true)),
        "{erased}"
    );
    // Every row is still there, its payload erased; the delivery cannot be redriven.
    let (status, gone) = api.call(&a, Method::GET, &event, None).await;
    assert_eq!(status, StatusCode::OK, "{gone}");
    assert_eq!(
        (&gone["payload"], &gone["payload_erased"]),
        (&Value::Null, &json!(true)),
        "{gone}"
    );
    assert_eq!(gone["event_type"], kept["event_type"]);
    let (status, read) = api.call(&a, Method::GET, &delivery, None).await;
    assert_eq!(
        (status, &read["body_erased"]),
        (StatusCode::OK, &json!(true)),
        "{read}"
    );
    assert_eq!(read["delivery"]["status"], "processed");
    let (status, problem) = api
        .call(&a, Method::POST, &format!("{failed}/redrive"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("its body was erased"),
        "{problem}"
    );
    // Audited, once, with what it did; erasing again finds no key.
    let log = audit_log(&api, &a, "&action=tenant.erase").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["actor"], "alice@example.com");
    assert_eq!(log[0]["detail"]["key_destroyed"], true, "{log:?}");
    let (status, again) = api.call(&admin, Method::POST, erase, confirm()).await;
    assert_eq!(
        (status, &again["key_destroyed"]),
        (StatusCode::OK, &json!(false))
    );
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_problems_quote_it() {
    let api = start().await;
    let call = |request_id: Option<&str>| {
        let mut request = Request::get("/v1/adapters");
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        let request = request.body(Body::empty()).unwrap();
        let app = app(api.host.clone(), api.settings.clone());
        async move {
            let response = app.oneshot(request).await.unwrap();
            let header = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            (header, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    // No token: a 401 problem, quoting the id it was given.
    let (header, problem) = call(None).await;
    assert_eq!(header.len(), 36, "a generated UUID: {header}");
    assert_eq!(problem["request_id"], header.as_str());
    let (header, problem) = call(Some("lb-7f3a:42")).await;
    assert_eq!(header, "lb-7f3a:42", "a caller's sane id is kept");
    assert_eq!(problem["request_id"], "lb-7f3a:42");
    let (header, _) = call(Some("bad id with spaces")).await;
    assert_ne!(header, "bad id with spaces");
    assert_eq!(header.len(), 36);
    // Two requests, two ids.
    assert_ne!(call(None).await.0, call(None).await.0);
    // The webhook endpoint too.
    let response = app(api.host.clone(), api.settings.clone())
        .oneshot(Request::post("/v1/hooks/nope").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(response.headers().contains_key("x-request-id"));
}

/// A token of tenant t1, org-a, signed with `pem` (ES256 or RS256) under key id `kid`.
fn signed_token(alg: Algorithm, pem: &str, kid: &str) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let claims = json!({
        "sub": "idp-user", "tenant_id": "t1", "org_id": "org-a", "roles": ["viewer"],
        "iss": jwt::ISSUER, "aud": jwt::AUDIENCE, "exp": now() + 600,
    });
    encode(&header, &claims, &key).unwrap()
}

/// The public half of `pem` as a JWK with key id `kid`.
fn public_jwk(alg: Algorithm, pem: &str, kid: &str) -> Value {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    };
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
    jwk["kid"] = kid.into();
    jwk
}

const ES256_PEM: &str = include_str!("common/keys/es256-test.pem");
const RS256_PEM: &str = include_str!("common/keys/rs256-test.pem");

#[tokio::test]
async fn identity_provider_tokens_are_verified_with_a_jwks_url_that_follows_rotation() {
    // The identity provider: a loopback server publishing whatever keys the test sets.
    let published = Arc::new(std::sync::Mutex::new(json!({
        "keys": [public_jwk(Algorithm::ES256, ES256_PEM, "k1")]
    })));
    let served = Arc::clone(&published);
    let provider = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let served = Arc::clone(&served);
            async move { axum::Json(served.lock().unwrap().clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, provider).await.unwrap() });

    let mut api = start().await;
    let remote = Arc::new(RemoteJwks::new(&url).unwrap());
    let client = reqwest::Client::new();
    assert_eq!(remote.refresh(&client).await.unwrap(), 1);
    api.settings.auth = Arc::new(AuthConfig {
        jwks_url: Some(Arc::clone(&remote)),
        ..jwt::auth_config()
    });
    let call = |token: String| As {
        token,
        org_header: None,
    };
    let es256 = call(signed_token(Algorithm::ES256, ES256_PEM, "k1"));
    let (status, answer) = api.call(&es256, Method::GET, "/v1/adapters", None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // A key the provider has not published yet.
    let rs256 = call(signed_token(Algorithm::RS256, RS256_PEM, "k2"));
    let (status, problem) = api.call(&rs256, Method::GET, "/v1/adapters", None).await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("the token's key is not known")
        )
    );
    // The provider rotates: k2 in, k1 out. After the next fetch, k2 verifies and k1 no longer.
    *published.lock().unwrap() = json!({"keys": [
        public_jwk(Algorithm::RS256, RS256_PEM, "k2"),
        // A key that cannot verify anything is left out, the others still serve.
        {"kty": "oct", "kid": "k3", "alg": "HS256", "k": "c2VjcmV0"},
    ]});
    assert_eq!(remote.refresh(&client).await.unwrap(), 1);
    assert_eq!(
        api.call(&rs256, Method::GET, "/v1/adapters", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.call(&es256, Method::GET, "/v1/adapters", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A token claiming k2 but signed with another algorithm or key.
    let mismatched = call(signed_token(Algorithm::ES256, ES256_PEM, "k2"));
    let (status, problem) = api
        .call(&mismatched, Method::GET, "/v1/adapters", None)
        .await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("the token's algorithm does not match its key")
        )
    );
    // A provider that answers garbage keeps the last good keys.
    *published.lock().unwrap() = json!({"not": "a jwks"});
    assert!(remote.refresh(&client).await.is_err());
    assert_eq!(
        api.call(&rs256, Method::GET, "/v1/adapters", None).await.0,
        StatusCode::OK
    );

    assert!(
        RemoteJwks::new("http://idp.example/jwks.json").is_err(),
        "https only"
    );
    assert!(RemoteJwks::new("https://idp.example/jwks.json").is_ok());
}

#[tokio::test]
async fn identity_provider_tokens_are_verified_with_a_jwks_file() {
    let mut api = start().await;
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(json!({"keys": [
        public_jwk(Algorithm::ES256, ES256_PEM, "file-1"),
        public_jwk(Algorithm::RS256, RS256_PEM, "file-2"),
    ]}))
    .unwrap();
    let auth = AuthConfig {
        jwks: Some(jwks),
        ..jwt::auth_config()
    };
    auth.validate().unwrap();
    api.settings.auth = Arc::new(auth);
    for token in [
        signed_token(Algorithm::ES256, ES256_PEM, "file-1"),
        signed_token(Algorithm::RS256, RS256_PEM, "file-2"),
    ] {
        let who = As {
            token,
            org_header: None,
        };
        let (status, answer) = api.call(&who, Method::GET, "/v1/adapters", None).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    // Signed by a key the file does not hold, under one of its key ids.
    let who = As {
        token: signed_token(
            Algorithm::ES256,
            include_str!("common/keys/es256-other-test.pem"),
            "file-1",
        ),
        org_header: None,
    };
    let (status, problem) = api.call(&who, Method::GET, "/v1/adapters", None).await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("the token's signature does not verify")
        )
    );
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_token() {
    let api = start().await;
    let (status, document) = api
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        document,
        serde_json::from_str::<Value>(&adapter_host::api::openapi::document()).unwrap()
    );
    assert_eq!(document["openapi"], "3.1.0");
    for path in [
        "/v1/adapters",
        "/v1/replays",
        "/v1/deliveries/redrive",
        "/v1/hooks/{connection_id}",
    ] {
        assert!(document["paths"].get(path).is_some(), "{path}");
    }
}

/// What `GET` of `path` answers through the whole application: status, headers, body.
async fn get_raw(api: &Api, path: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = app(api.host.clone(), api.settings.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, headers, body.to_vec())
}

#[tokio::test]
async fn the_web_page_is_served_with_a_strict_policy_and_versioned_assets() {
    let api = start().await;
    let (status, headers, body) = get_raw(&api, "/ui/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    let html = String::from_utf8(body).unwrap();
    let version = adapter_host::server::ui::asset_version();
    let base = format!("/ui/assets/{version}");
    assert!(
        html.contains(&format!(r#"src="{base}/js/app.js""#)),
        "{html}"
    );
    for (path, content_type) in [
        ("js/app.js", "text/javascript; charset=utf-8"),
        ("js/pages/connection.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let (status, headers, body) = get_raw(&api, &format!("{base}/{path}")).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert!(
            headers["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable"),
            "{path}"
        );
        assert!(!body.is_empty(), "{path}");
    }
    // An unknown file, or a known one under another binary's version: a 404 problem.
    for path in [
        format!("{base}/js/nope.js"),
        "/ui/assets/0123456789abcdef/js/app.js".to_owned(),
        "/ui/nope".to_owned(),
    ] {
        let (status, headers, body) = get_raw(&api, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            headers["content-type"], "application/problem+json",
            "{path}"
        );
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["title"], "Not Found", "{path}");
        assert_eq!(problem["status"], 404, "{path}");
    }
}

#[tokio::test]
async fn lists_are_read_page_by_page_with_cursors() {
    let api = start().await;
    let a = org_admin("org-a");
    let mut adapters = Vec::new();
    for name in ["a-1", "a-2", "a-3", "a-4", "a-5"] {
        adapters.push(api.adapter(&a, name, false).await);
    }
    let mut seen = Vec::new();
    let mut path = "/v1/adapters?limit=2".to_owned();
    loop {
        let (status, page) = api.call(&a, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = ids(&page);
        assert!(items.len() <= 2);
        seen.extend(items);
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/adapters?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    seen.sort();
    adapters.sort();
    assert_eq!(seen, adapters, "every adapter once");

    for bad in [
        "/v1/adapters?limit=0",
        "/v1/connections?limit=1001",
        "/v1/events?limit=-1",
        "/v1/adapters?page=2",
        "/v1/deliveries?cursor=not-a-cursor&limit=x",
    ] {
        let (status, problem) = api.call(&a, Method::GET, bad, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
    }
    let (status, problem) = api
        .call(
            &a,
            Method::GET,
            &format!("/v1/adapters/{}/versions?cursor=v1", adapters[0]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
}

#[tokio::test]
async fn viewers_read_and_cannot_write() {
    let api = start().await;
    let a = org_admin("org-a");
    let f = OrgA::new(&api, &a).await;
    let viewer = As {
        token: token_with(json!({"org_id": "org-a", "roles": ["viewer"]})),
        org_header: None,
    };
    for (method, path, body) in endpoints(&f) {
        let (status, answer) = api.call(&viewer, method.clone(), &path, body).await;
        if method == Method::GET {
            assert_eq!(status, StatusCode::OK, "{method} {path}: {answer}");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        }
    }
    let (status, _) = api.upload(&viewer, &f.adapter, test_artifacts::NOOP).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_connection_is_created_switched_rolled_back_and_deleted() {
    let api = start().await;
    let a = org_admin("org-a");
    let adapter = api.adapter(&a, "acme", false).await;
    let (status, v2) = api.upload(&a, &adapter, test_artifacts::HOSTILE).await;
    assert_eq!(status, StatusCode::CREATED, "{v2}");
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["created_by"], "alice@example.com");
    assert_eq!(v2["info"]["name"], "hostile");
    // The same component again is the same version.
    let (status, again) = api.upload(&a, &adapter, test_artifacts::HOSTILE).await;
    assert_eq!(
        (status, again["version"].as_u64()),
        (StatusCode::OK, Some(2))
    );

    let new_connection = json!({
        "provider": "custom", "adapter_id": adapter, "adapter_version": 1,
        "signature": {"scheme": "standard_webhooks"}, "secret": "signing",
        "settings": {"default_org_id": "org-a"},
    });
    // A connection its webhook could not verify with (its secret not written yet) is refused
    // when written, rather than answered 503 at every delivery.
    let (status, problem) = api
        .call(
            &a,
            Method::POST,
            "/v1/connections",
            Some(new_connection.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("signature: "),
        "{problem}"
    );
    let put_secret = |value: &'static str| {
        let a = a.clone();
        let api = &api;
        async move {
            let body = json!({ "value": value });
            api.call(&a, Method::PUT, "/v1/secrets/signing", Some(body))
                .await
        }
    };
    assert_eq!(
        put_secret("whsec_c2lnbmluZy1zZWNyZXQ=").await.0,
        StatusCode::OK
    );
    let (status, created) = api
        .call(&a, Method::POST, "/v1/connections", Some(new_connection))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["org_id"], "org-a");
    assert_eq!(created["allowed_org_ids"], json!(["org-a"]));
    assert_eq!(
        created["secret_refs"],
        json!(["tenants/t1/orgs/org-a/signing"])
    );
    assert_eq!(
        created["webhook_url"],
        format!("https://hooks.example.test/v1/hooks/{id}")
    );

    let path = format!("/v1/connections/{id}");
    let (status, switched) = api
        .call(
            &a,
            Method::PATCH,
            &path,
            Some(json!({"adapter_version": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{switched}");
    assert_eq!(
        (
            switched["adapter_version"].as_u64(),
            switched["version_changed_by"].as_str()
        ),
        (Some(2), Some("alice@example.com"))
    );
    let (_, rolled_back) = api
        .call(
            &a,
            Method::PATCH,
            &path,
            Some(json!({"adapter_version": 1})),
        )
        .await;
    assert_eq!(rolled_back["adapter_version"], 1);
    let (status, problem) = api
        .call(
            &a,
            Method::PATCH,
            &path,
            Some(json!({"adapter_version": 7})),
        )
        .await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some(format!("adapter `{adapter}` has no version 7").as_str())
        )
    );
    let (status, _) = api
        .call(
            &a,
            Method::PATCH,
            &path,
            Some(json!({"allowed_org_ids": ["org-b"]})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an org's connection cannot emit for another"
    );
    let (status, problem) = api
        .call(
            &a,
            Method::PATCH,
            &path,
            Some(json!({"signature": {"scheme": "nope"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");

    assert_eq!(
        api.call(&a, Method::DELETE, &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(&a, Method::GET, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_component_that_is_not_an_adapter_is_refused_with_the_reason() {
    let api = start().await;
    let a = org_admin("org-a");
    let (_, adapter) = api
        .call(
            &a,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "broken"})),
        )
        .await;
    let id = adapter["id"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("x.wasm");
    std::fs::write(&not_wasm, b"definitely not wasm").unwrap();
    let (status, problem) = api.upload(&a, id, not_wasm.to_str().unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let core_module = dir.path().join("core.wasm");
    std::fs::write(&core_module, wat::parse_str("(module)").unwrap()).unwrap();
    let (status, problem) = api.upload(&a, id, core_module.to_str().unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (_, versions) = api
        .call(
            &a,
            Method::GET,
            &format!("/v1/adapters/{id}/versions"),
            None,
        )
        .await;
    assert_eq!(versions["items"], json!([]), "nothing stored");

    let (status, problem) = api
        .call(
            &a,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "broken"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let (status, _) = api
        .call(
            &a,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "has space"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn secrets_are_write_only_and_scoped_to_the_org() {
    let api = start().await;
    let a = org_admin("org-a");
    let (status, written) = api
        .call(
            &a,
            Method::PUT,
            "/v1/secrets/signing",
            Some(json!({"value": "first"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{written}");
    assert!(!written.to_string().contains("first"), "never returned");
    let stored = api
        .host
        .secrets()
        .get("tenants/t1/orgs/org-a/signing", SystemTime::now())
        .unwrap()
        .unwrap();
    assert_eq!(stored.current.expose(), b"first");

    // Rotation keeps the previous value for the grace period.
    let (status, _) = api
        .call(
            &a,
            Method::PUT,
            "/v1/secrets/signing",
            Some(json!({"value": "second", "grace_secs": 3600})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let values = api
        .host
        .secrets()
        .get("tenants/t1/orgs/org-a/signing", SystemTime::now())
        .unwrap()
        .unwrap()
        .into_values();
    let values: Vec<&[u8]> = values.iter().map(|v| v.expose()).collect();
    assert_eq!(values, [b"second".as_slice(), b"first".as_slice()]);

    for (body, path) in [
        (json!({"value": ""}), "/v1/secrets/signing"),
        (
            json!({"value": "x", "grace_secs": 999_999_999}),
            "/v1/secrets/signing",
        ),
        (json!({"value": "x"}), "/v1/secrets/bad%20name"),
    ] {
        let (status, problem) = api.call(&a, Method::PUT, path, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {problem}");
    }
    // There is no way to read a secret back.
    let (status, _) = api.call(&a, Method::GET, "/v1/secrets/signing", None).await;
    assert!(status == StatusCode::METHOD_NOT_ALLOWED || status == StatusCode::NOT_FOUND);
}

/// Sets up the champion-health adapter and a GitHub-signed connection in org-a (as `a`) and
/// sends it one enrollment delivery, which makes one `member.enrolled` event in org-a; the ack.
async fn one_event_in_org_a(api: &Api, a: &As) -> Value {
    let (_, adapter) = api
        .call(
            a,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "champion"})),
        )
        .await;
    let adapter = adapter["id"].as_str().unwrap().to_owned();
    let (status, _) = api
        .upload(a, &adapter, test_artifacts::CHAMPION_HEALTH)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    api.call(
        a,
        Method::PUT,
        "/v1/secrets/gh",
        Some(json!({"value": "gh-secret"})),
    )
    .await;
    let (_, connection) = api
        .call(
            a,
            Method::POST,
            "/v1/connections",
            Some(json!({
                "provider": "custom", "adapter_id": adapter, "signature": {"scheme": "github"},
                "secret": "gh", "settings": {"default_org_id": "org-a"},
            })),
        )
        .await;
    let connection = connection["id"].as_str().unwrap();
    let body = std::fs::read(test_artifacts::sample_file(
        "champion-health/fixtures/enrollment-1kb.json",
    ))
    .unwrap();
    deliver_one_event(api, connection, body).await
}

/// `body` delivered to the champion connection of [`one_event_in_org_a`] (GitHub-signed with its
/// secret), which must answer one event; the acknowledgement.
async fn deliver_one_event(api: &Api, connection: &str, body: Vec<u8>) -> Value {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"gh-secret").unwrap();
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let (status, ack) = api
        .send(
            Request::post(format!("/v1/hooks/{connection}"))
                .header("content-type", "application/json")
                .header("x-hub-signature-256", signature)
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (status, ack["events"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{ack}"
    );
    ack
}

#[tokio::test]
async fn the_identity_map_names_the_crm_records_an_adapter_emitted_within_the_org() {
    let api = start().await;
    let a = org_admin("org-a");
    let ack = one_event_in_org_a(&api, &a).await;
    let (_, events) = api.call(&a, Method::GET, "/v1/events", None).await;
    let event = &events["items"][0];
    let external_id = event["payload"]["external_id"].as_str().unwrap();
    let path = format!("/v1/identities?source=champion_health&external_id={external_id}");
    let (status, list) = api.call(&a, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    let identity = &items[0];
    assert_eq!(
        (
            &identity["entity_type"],
            &identity["entity_id"],
            &identity["first_event_id"],
            &identity["org_id"],
            &identity["events"],
        ),
        (
            &event["entity_type"],
            &event["entity_id"],
            &event["event_id"],
            &json!("org-a"),
            &json!(1),
        ),
        "{identity}"
    );
    assert_eq!(identity["first_connection_id"], event["connection_id"]);
    // Another org or tenant finds nothing; bad filters are refused.
    let other_tenant = As {
        token: token_with(json!({"tenant_id": "t2", "org_id": "org-a"})),
        org_header: None,
    };
    for who in [org_admin("org-b"), other_tenant] {
        let (_, list) = api.call(&who, Method::GET, "/v1/identities", None).await;
        assert_eq!(list["items"], json!([]), "{list}");
    }
    for bad in ["/v1/identities?limit=0", "/v1/identities?email=x"] {
        let (status, problem) = api.call(&a, Method::GET, bad, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    }

    // Erasing that person: a viewer may not; another org finds nothing; bad bodies are refused.
    let erase = "/v1/erasure/subjects";
    let subject = json!({"source": "champion_health", "external_id": external_id});
    let viewer = As {
        token: token_with(json!({"org_id": "org-a", "roles": ["viewer"]})),
        org_header: None,
    };
    let (status, problem) = api
        .call(&viewer, Method::POST, erase, Some(subject.clone()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let (status, problem) = api
        .call(
            &org_admin("org-b"),
            Method::POST,
            erase,
            Some(subject.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    for body in [
        json!({"source": "champion_health"}),
        json!({"source": "", "external_id": "x"}),
        json!({"source": "s", "external_id": "x", "email": "y"}),
    ] {
        let (status, problem) = api.call(&a, Method::POST, erase, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    }
    let (status, erased) = api
        .call(&a, Method::POST, erase, Some(subject.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    assert_eq!(
        erased,
        json!({"identities": 1, "events": 1, "deliveries": 1})
    );
    let event_path = format!("/v1/events/{}", event["event_id"].as_str().unwrap());
    let (_, gone) = api.call(&a, Method::GET, &event_path, None).await;
    assert_eq!(
        (&gone["payload"], &gone["payload_erased"]),
        (&Value::Null, &json!(true))
    );
    let delivery_path = format!("/v1/deliveries/{}", ack["delivery_id"].as_str().unwrap());
    let (_, delivery) = api.call(&a, Method::GET, &delivery_path, None).await;
    assert_eq!(delivery["body_erased"], true, "{delivery}");
    let (_, list) = api.call(&a, Method::GET, &path, None).await;
    assert_eq!(list["items"], json!([]));
    let (status, _) = api.call(&a, Method::POST, erase, Some(subject)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "once is enough");
    let log = audit_log(&api, &a, "&action=subject.erase").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        log[0]["resource_id"],
        json!(format!("champion_health/{external_id}"))
    );
}

#[tokio::test]
async fn events_are_listed_and_read_within_the_org() {
    let api = start().await;
    let a = org_admin("org-a");
    let ack = one_event_in_org_a(&api, &a).await;

    let (status, list) = api
        .call(
            &a,
            Method::GET,
            "/v1/events?event_type=member.enrolled",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let event = &list["items"][0];
    assert_eq!(event["org_id"], "org-a");
    assert_eq!(
        event["payload"]["pepm_rate"], "12.50",
        "decimals stay strings"
    );
    let event_id = event["event_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/events/{event_id}");
    let (status, one) = api.call(&a, Method::GET, &path, None).await;
    assert_eq!(
        (status, &one["event_id"]),
        (StatusCode::OK, &json!(event_id))
    );
    let (status, _) = api
        .call(&platform(Some("org-a")), Method::GET, &path, None)
        .await;
    assert_eq!(status, StatusCode::OK);

    let other_tenant = As {
        token: token_with(json!({"tenant_id": "t2", "org_id": "org-a"})),
        org_header: None,
    };
    for who in [org_admin("org-b"), platform(Some("org-b")), other_tenant] {
        assert_eq!(
            api.call(&who, Method::GET, &path, None).await.0,
            StatusCode::NOT_FOUND
        );
        let (_, list) = api.call(&who, Method::GET, "/v1/events", None).await;
        assert_eq!(list["items"], json!([]));
    }
    // The delivery behind it, with its invocation record, in the same scope.
    let delivery_id = ack["delivery_id"].as_str().unwrap();
    let (status, deliveries) = api
        .call(&a, Method::GET, "/v1/deliveries?status=processed", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{deliveries}");
    assert_eq!(deliveries["items"][0]["id"], delivery_id);
    let delivery_path = format!("/v1/deliveries/{delivery_id}");
    let (status, delivery) = api.call(&a, Method::GET, &delivery_path, None).await;
    assert_eq!(status, StatusCode::OK, "{delivery}");
    assert_eq!(delivery["invocations"][0]["events"], 1);
    assert!(delivery.get("body").is_none() && delivery["delivery"].get("body").is_none());
    for who in [org_admin("org-b"), platform(Some("org-b"))] {
        assert_eq!(
            api.call(&who, Method::GET, &delivery_path, None).await.0,
            StatusCode::NOT_FOUND
        );
        let (_, list) = api.call(&who, Method::GET, "/v1/deliveries", None).await;
        assert_eq!(list["items"], json!([]));
    }
    let (status, _) = api
        .call(&a, Method::GET, "/v1/deliveries?status=lost", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, problem) = api
        .call(&a, Method::GET, "/v1/events?status=lost", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (status, _) = api
        .call(&a, Method::GET, "/v1/events?cursor=garbage", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .call(&platform(None), Method::GET, "/v1/events", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn subscribers_are_managed_and_dead_deliveries_retried_within_the_org() {
    use adapter_host::metrics::Metrics;
    use adapter_host::relay::{Relay, RelayConfig};

    let api = start().await;
    let a = org_admin("org-a");
    // A subscriber cannot name a secret that is not written, nor one that cannot sign.
    let create = json!({
        "url": "http://127.0.0.1:9/hook", "event_types": ["member.*"], "secret": "sub",
    });
    let (status, problem) = api
        .call(&a, Method::POST, "/v1/subscribers", Some(create.clone()))
        .await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some(
                "secret: no secret `sub` in this scope: write it with PUT /v1/secrets/sub \
                 (a Standard Webhooks key, `whsec_<base64>`) before a subscriber names it"
            )
        )
    );
    api.call(
        &a,
        Method::PUT,
        "/v1/secrets/not-base64",
        Some(json!({"value": "whsec_not base64!"})),
    )
    .await;
    let (status, problem) = api
        .call(
            &a,
            Method::POST,
            "/v1/subscribers",
            Some(json!({"url": "http://127.0.0.1:9/hook", "secret": "not-base64"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("secret `not-base64` cannot sign Standard Webhooks deliveries"),
        "{problem}"
    );
    assert!(!problem.to_string().contains("not base64!"), "{problem}");
    api.call(
        &a,
        Method::PUT,
        "/v1/secrets/sub",
        Some(json!({"value": "whsec_c3Vi"})),
    )
    .await;
    let (status, subscriber) = api
        .call(
            &a,
            Method::POST,
            "/v1/subscribers",
            Some(json!({
                // Nothing listens on loopback's port 9: every attempt is refused.
                "url": "http://127.0.0.1:9/hook", "event_types": ["member.*"], "secret": "sub",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{subscriber}");
    assert_eq!(subscriber["org_id"], "org-a");
    assert_eq!(subscriber["secret_ref"], "tenants/t1/orgs/org-a/sub");
    let id = subscriber["id"].as_str().unwrap().to_owned();
    one_event_in_org_a(&api, &a).await;
    let relay = Relay::new(
        api.host.store().clone(),
        api.host.bus().clone(),
        Metrics::new(),
        RelayConfig {
            subscriber_max_attempts: 1,
            ..RelayConfig::default()
        },
        Arc::new(tokio::sync::Notify::new()),
    )
    .with_secrets(api.host.secrets().clone());
    assert_eq!(relay.publish_once().await.unwrap(), 1);
    assert_eq!(relay.deliver_once().await.unwrap(), 0);

    let path = format!("/v1/subscribers/{id}");
    let (status, page) = api
        .call(
            &a,
            Method::GET,
            &format!("{path}/deliveries?status=dead"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let dead = &page["items"][0];
    assert_eq!(
        (dead["status"].as_str(), dead["attempts"].as_u64()),
        (Some("dead"), Some(1))
    );
    let seq = dead["outbox_seq"].as_i64().unwrap();
    let retry = format!("{path}/deliveries/{seq}/retry");

    // Another org finds nothing; a viewer reads but cannot retry.
    let b = org_admin("org-b");
    for (method, url) in [
        (Method::GET, path.clone()),
        (Method::GET, format!("{path}/deliveries")),
        (Method::POST, retry.clone()),
        (Method::PATCH, path.clone()),
        (Method::DELETE, path.clone()),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"enabled": false}));
        assert_eq!(
            api.call(&b, method.clone(), &url, body).await.0,
            StatusCode::NOT_FOUND,
            "{method} {url}"
        );
    }
    let (_, list) = api.call(&b, Method::GET, "/v1/subscribers", None).await;
    assert_eq!(list["items"], json!([]));
    let viewer = As {
        token: token_with(json!({"org_id": "org-a", "roles": ["viewer"]})),
        org_header: None,
    };
    assert_eq!(
        api.call(&viewer, Method::GET, &path, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.call(&viewer, Method::POST, &retry, None).await.0,
        StatusCode::FORBIDDEN
    );

    let (status, answer) = api.call(&a, Method::POST, &retry, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, page) = api
        .call(
            &a,
            Method::GET,
            &format!("{path}/deliveries?status=pending"),
            None,
        )
        .await;
    assert_eq!(page["items"][0]["attempts"], 0, "attempts start over");
    let (status, _) = api
        .call(
            &a,
            Method::POST,
            &format!("{path}/deliveries/999999/retry"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .call(
            &a,
            Method::POST,
            &format!("{path}/deliveries/seven/retry"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, updated) = api
        .call(
            &a,
            Method::PATCH,
            &path,
            Some(json!({"event_types": ["deal.won"], "enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        (updated["event_types"].clone(), updated["enabled"].clone()),
        (json!(["deal.won"]), json!(false))
    );
    let (status, problem) = api
        .call(
            &a,
            Method::PATCH,
            &path,
            Some(json!({"url": "ftp://x.example/"})),
        )
        .await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("`url` must be an http or https URL with a host")
        )
    );
    assert_eq!(
        api.call(&a, Method::DELETE, &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(&a, Method::GET, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_version_is_dry_run_against_a_sample_and_nothing_is_written() {
    let api = start().await;
    let a = org_admin("org-a");
    let (_, adapter) = api
        .call(
            &a,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "champion"})),
        )
        .await;
    let adapter = adapter["id"].as_str().unwrap().to_owned();
    api.upload(&a, &adapter, test_artifacts::CHAMPION_HEALTH)
        .await;
    let sample = std::fs::read_to_string(test_artifacts::sample_file(
        "champion-health/fixtures/enrollment-1kb.json",
    ))
    .unwrap();
    let path = format!("/v1/adapters/{adapter}/versions/1/test");
    let request = |settings: Value| {
        json!({
            "kind": "webhook", "body": sample, "settings": settings,
            "headers": {"content-type": "application/json"},
        })
    };
    let (status, report) = api
        .call(
            &a,
            Method::POST,
            &path,
            Some(request(json!({"default_org_id": "org-a"}))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["outcome"]["status"], "accepted", "{report}");
    let event = &report["outcome"]["events"][0];
    assert_eq!(event["org_id"], "org-a");
    assert!(report["usage"]["fuel_consumed"].as_u64().unwrap() > 0);

    // An org the connection would not allow: the contract check answers, as it would live.
    let (status, report) = api
        .call(
            &a,
            Method::POST,
            &path,
            Some(request(json!({"default_org_id": "org-b"}))),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(report["outcome"]["status"], "accepted", "{report}");

    // Dry runs are adapter development: not a viewer's; another org finds nothing.
    let viewer = As {
        token: token_with(json!({"org_id": "org-a", "roles": ["viewer"]})),
        org_header: None,
    };
    let body = request(json!({}));
    assert_eq!(
        api.call(&viewer, Method::POST, &path, Some(body.clone()))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.call(&org_admin("org-b"), Method::POST, &path, Some(body.clone()))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let missing = format!("/v1/adapters/{adapter}/versions/9/test");
    assert_eq!(
        api.call(&a, Method::POST, &missing, Some(body)).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = api
        .call(
            &a,
            Method::POST,
            &path,
            Some(json!({"kind": "carrier-pigeon", "body": ""})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Nothing was written.
    let (_, deliveries) = api.call(&a, Method::GET, "/v1/deliveries", None).await;
    let (_, events) = api.call(&a, Method::GET, "/v1/events", None).await;
    assert_eq!(
        (deliveries["items"].clone(), events["items"].clone()),
        (json!([]), json!([]))
    );
}

#[tokio::test]
async fn secret_names_with_dot_segments_are_refused_everywhere() {
    let api = start().await;
    let a = org_admin("org-a");
    let (_, adapter) = api
        .call(
            &a,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "champion"})),
        )
        .await;
    let adapter = adapter["id"].as_str().unwrap().to_owned();
    api.upload(&a, &adapter, test_artifacts::CHAMPION_HEALTH)
        .await;
    api.call(
        &a,
        Method::PUT,
        "/v1/secrets/gh",
        Some(json!({"value": "gh-secret"})),
    )
    .await;
    let (status, connection) = api
        .call(
            &a,
            Method::POST,
            "/v1/connections",
            Some(json!({"provider": "custom", "adapter_id": adapter,
                        "signature": {"scheme": "github"}, "secret": "gh"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{connection}");
    let connection = format!("/v1/connections/{}", connection["id"].as_str().unwrap());
    for name in ["..", ".", "a/../b", "a/./b", "../gh", "gh/.."] {
        let (status, problem) = api
            .call(
                &a,
                Method::POST,
                "/v1/connections",
                Some(json!({"provider": "custom", "adapter_id": adapter,
                            "signature": {"scheme": "github"}, "secret": name})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "POST {name}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("`.` or `..`"),
            "{problem}"
        );
        let (status, problem) = api
            .call(
                &a,
                Method::PATCH,
                &connection,
                Some(json!({"secret": name})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "PATCH {name}: {problem}");
        let (status, problem) = api
            .call(
                &a,
                Method::POST,
                "/v1/subscribers",
                Some(
                    json!({"url": "https://example.test/hook", "event_types": ["*"],
                            "secret": name}),
                ),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "subscriber {name}: {problem}"
        );
    }
    // Names with dots that are not dot segments are fine.
    let (status, written) = api
        .call(
            &a,
            Method::PUT,
            "/v1/secrets/crm.v2/signing..key",
            Some(json!({"value": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{written}");
}

#[tokio::test]
async fn an_org_connection_publishes_nothing_at_platform_level() {
    let api = start().await;
    let a = org_admin("org-a");
    let (_, adapter) = api
        .call(
            &a,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "hostile"})),
        )
        .await;
    let adapter = adapter["id"].as_str().unwrap().to_owned();
    api.upload(&a, &adapter, test_artifacts::HOSTILE).await;
    // Told `ok`, the hostile guest emits its event without an org: platform level, which an
    // org-a connection may not publish.
    api.call(
        &a,
        Method::PUT,
        "/v1/secrets/gh",
        Some(json!({"value": "gh-secret"})),
    )
    .await;
    let (_, connection) = api
        .call(
            &a,
            Method::POST,
            "/v1/connections",
            Some(json!({"provider": "custom", "adapter_id": adapter,
                        "signature": {"scheme": "github"}, "secret": "gh"})),
        )
        .await;
    let connection_id = connection["id"].as_str().unwrap().to_owned();
    let body = b"ok".to_vec();
    let signature = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"gh-secret").unwrap();
        mac.update(&body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let (status, ack) = api
        .send(
            Request::post(format!("/v1/hooks/{connection_id}"))
                .header("content-type", "application/json")
                .header("x-hub-signature-256", signature)
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (status, ack["status"].as_str()),
        (StatusCode::ACCEPTED, Some("failed")),
        "{ack}"
    );
    let path = format!("/v1/deliveries/{}", ack["delivery_id"].as_str().unwrap());
    let (_, delivery) = api.call(&a, Method::GET, &path, None).await;
    let reason = delivery.to_string();
    assert!(reason.contains("org_not_allowed"), "{reason}");

    // A platform-level event such a connection emitted before this was refused (written here
    // straight to the store) stays org-a's: org-b does not see it, nor its connection's id.
    let store = api.host.store();
    let recorded = store
        .record_delivery(
            adapter_host::store::NewDelivery {
                connection_id: connection_id.clone(),
                received_at: adapter_host::store::now_millis(),
                provider_delivery_id: Some("legacy".into()),
                method: "POST".into(),
                path: "/".into(),
                query: String::new(),
                headers: Vec::new(),
                body: b"{}".to_vec(),
                trace_id: "t".into(),
                kind: adapter_host::store::DeliveryKind::Webhook,
                poll_run_id: None,
                cursor: None,
            },
            std::time::Duration::from_secs(300),
            0,
        )
        .await
        .unwrap();
    let version = store
        .get_connection(&connection_id)
        .await
        .unwrap()
        .unwrap()
        .adapter_version;
    store
        .complete_delivery(adapter_host::store::Completion {
            delivery_id: recorded.id.clone(),
            status: adapter_host::store::DeliveryStatus::Processed,
            reason_json: None,
            completed_at: adapter_host::store::now_millis(),
            invocation: adapter_host::store::InvocationRecord {
                adapter_id: adapter.clone(),
                adapter_version: version,
                adapter_sha256: "0".repeat(64),
                input_sha256: "0".repeat(64),
                started_at: 0,
                duration_us: 1,
                fuel: 1,
                peak_memory_bytes: 1,
                bytes_in: 2,
                bytes_out: 2,
                events: 1,
                outcome: adapter_host::store::InvocationOutcome::Accepted,
                detail_json: None,
                log_json: "{}".into(),
                replay_json: None,
                export: adapter_host::store::Export::HandleWebhook,
            },
            events: vec![adapter_host::store::NewOutboxEvent {
                event_id: "legacy-event".into(),
                org_id: None,
                event_type: "member.enrolled".into(),
                entity_type: "member".into(),
                entity_id: "m-1".into(),
                payload_json: "{}".into(),
                metadata_json: "{}".into(),
            }],
            state: None,
            attempt_counted: true,
            preceding: Vec::new(),
            exchanges: Vec::new(),
            poll: None,
        })
        .await
        .unwrap();
    let (_, mine) = api.call(&a, Method::GET, "/v1/events", None).await;
    assert_eq!(ids_of_events(&mine), ["legacy-event"]);
    for who in [org_admin("org-b"), platform(Some("org-b"))] {
        let (_, list) = api.call(&who, Method::GET, "/v1/events", None).await;
        assert_eq!(list["items"], json!([]), "{list}");
        let (status, _) = api
            .call(&who, Method::GET, "/v1/events/legacy-event", None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

fn ids_of_events(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn pushed_poll_pages_run_through_the_adapter_once() {
    let api = start().await;
    // Platform level: the hostile guest's events carry no org.
    let a = platform(Some("org-a"));
    let (_, adapter) = api
        .call(
            &a,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "hostile", "platform_level": true})),
        )
        .await;
    let adapter = adapter["id"].as_str().unwrap().to_owned();
    api.upload(&a, &adapter, test_artifacts::HOSTILE).await;
    for (name, value) in [("gh", "gh-secret"), ("pusher", "push-secret-value-0123")] {
        api.call(
            &a,
            Method::PUT,
            &format!("/v1/secrets/{name}"),
            Some(json!({ "value": value, "platform_level": true })),
        )
        .await;
    }
    let (status, connection) = api
        .call(
            &a,
            Method::POST,
            "/v1/connections",
            Some(json!({"provider": "custom", "adapter_id": adapter,
                        "signature": {"scheme": "github"}, "secret": "gh",
                        "platform_level": true,
                        "polling": {"push_secret": "pusher"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{connection}");
    let id = connection["id"].as_str().unwrap().to_owned();
    let push = |bearer: String, cursor: &'static str, body: &'static str| {
        Request::post(format!("/v1/connections/{id}/poll-results"))
            .header("authorization", format!("Bearer {bearer}"))
            .header("x-org-id", "org-a")
            .header("content-type", "application/json")
            .header("poll-cursor", cursor)
            .body(Body::from(body))
            .unwrap()
    };
    // A page pushed with a tenant admin's token: the adapter's events and its next cursor.
    let (status, taken) = api.send(push(a.token.clone(), "c1", "[]")).await;
    assert_eq!(status, StatusCode::OK, "{taken}");
    assert_eq!(
        (&taken["events"], &taken["next_cursor"], &taken["duplicate"]),
        (&json!(1), &json!("c1x"), &json!(false))
    );
    // The same page with the same cursor again is a repeat, whoever pushes it.
    let (status, again) = api
        .send(push("push-secret-value-0123".into(), "c1", "[]"))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["delivery_id"], taken["delivery_id"]);
    // The push secret alone authorises a machine client; a wrong one does not.
    let (status, next) = api
        .send(push("push-secret-value-0123".into(), "c1x", "[]"))
        .await;
    assert_eq!(
        (status, &next["duplicate"]),
        (StatusCode::OK, &json!(false)),
        "{next}"
    );
    let (status, refused) = api.send(push("not-the-secret".into(), "c2", "[]")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert_eq!(refused["status"], 401);
    // A page the adapter fails on is kept for redrive: 202 with the delivery.
    let (status, failed) = api.send(push(a.token.clone(), "c3", "panic")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{failed}");
    assert_eq!(failed["status"], "failed");
    // The pages are the connection's deliveries, of kind `push`.
    let path = format!("/v1/deliveries/{}", taken["delivery_id"].as_str().unwrap());
    let (_, delivery) = api.call(&a, Method::GET, &path, None).await;
    assert_eq!(delivery["delivery"]["kind"], "push", "{delivery}");
    assert_eq!(delivery["delivery"]["cursor"], "c1");
    // An org's token may read a platform-level connection, not push to it.
    let b = org_admin("org-b");
    let (status, forbidden) = api.send(push(b.token.clone(), "c9", "[]")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{forbidden}");
    // No runs yet: the polls list says so.
    let (status, polls) = api
        .call(
            &a,
            Method::GET,
            &format!("/v1/connections/{id}/polls"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{polls}");
    assert_eq!(
        (&polls["state"], &polls["items"]),
        (&Value::Null, &json!([]))
    );
    let (status, missing) = api
        .call(
            &a,
            Method::GET,
            &format!("/v1/connections/{id}/polls/nope"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    // A disabled connection takes no pages.
    api.call(
        &a,
        Method::PATCH,
        &format!("/v1/connections/{id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    let (status, disabled) = api.send(push(a.token.clone(), "c4", "[]")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{disabled}");
    // Polled on demand, an adapter that names no request (this one has no poll-request of its
    // own) ends its run at once, having fetched nothing.
    api.call(
        &a,
        Method::PATCH,
        &format!("/v1/connections/{id}"),
        Some(json!({"enabled": true})),
    )
    .await;
    let (status, run) = api
        .call(
            &a,
            Method::POST,
            &format!("/v1/connections/{id}/poll"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let path = format!("/v1/connections/{id}/polls/{}", run["id"].as_str().unwrap());
    let mut view = Value::Null;
    for _ in 0..200 {
        view = api.call(&a, Method::GET, &path, None).await.1;
        if view["run"]["status"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(view["run"]["status"], "done", "{view}");
    assert_eq!(
        (&view["run"]["pages"], &view["run"]["requests"]),
        (&json!(0), &json!(0))
    );
    assert_eq!(view["requests"], json!([]));
}

#[tokio::test]
async fn oauth_settings_are_checked_and_the_token_namespace_is_the_hosts() {
    let api = start().await;
    let a = org_admin("org-a");
    let (_, adapter) = api
        .call(
            &a,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "poller"})),
        )
        .await;
    let adapter = adapter["id"].as_str().unwrap().to_owned();
    api.upload(&a, &adapter, test_artifacts::POLLER).await;
    for name in ["gh", "sf-client", "token"] {
        api.call(
            &a,
            Method::PUT,
            &format!("/v1/secrets/{name}"),
            Some(json!({"value": "s3cret-value"})),
        )
        .await;
    }
    let create = |credential: Value| {
        json!({"provider": "custom", "adapter_id": adapter,
               "signature": {"scheme": "github"}, "secret": "gh",
               "api": {"credential": credential}})
    };
    let oauth = |extra: Value| {
        let mut credential = json!({"kind": "oauth2", "provider": "salesforce",
                                    "client_id": "cid", "client_secret": "sf-client"});
        credential
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        credential
    };
    for (credential, expected) in [
        (oauth(json!({"client_id": ""})), "`client_id` is empty"),
        (
            oauth(json!({"scopes": ["api refresh_token"]})),
            "has spaces",
        ),
        (
            oauth(json!({"provider": "custom"})),
            "a custom provider needs `authorize_url`",
        ),
        (
            oauth(json!({"token_url": "ftp://login.example/token"})),
            "must be https",
        ),
        (oauth(json!({"client_secret": "../x"})), "`.` or `..`"),
        (oauth(json!({"shape": "round"})), "unknown field `shape`"),
    ] {
        let (status, problem) = api
            .call(
                &a,
                Method::POST,
                "/v1/connections",
                Some(create(credential)),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(expected),
            "{detail:?} should say {expected:?}"
        );
    }

    // Salesforce names the API's URL when connecting: a connection may have none until then.
    // HubSpot's is known.
    let (status, salesforce) = api
        .call(
            &a,
            Method::POST,
            "/v1/connections",
            Some(create(oauth(json!({})))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{salesforce}");
    assert_eq!(salesforce["api"]["base_url"], "");
    assert_eq!(salesforce["auth"], Value::Null);
    assert_eq!(
        salesforce["api"]["credential"]["client_secret"],
        "tenants/t1/orgs/org-a/sf-client"
    );
    // Changed before it is connected, its stored settings still pass.
    let (status, patched) = api
        .call(
            &a,
            Method::PATCH,
            &format!("/v1/connections/{}", salesforce["id"].as_str().unwrap()),
            Some(json!({"polling": {"interval_secs": 900}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["api"], salesforce["api"]);
    let (status, hubspot) = api
        .call(
            &a,
            Method::POST,
            "/v1/connections",
            Some(create(oauth(json!({"provider": "hubspot"})))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hubspot}");
    assert_eq!(hubspot["api"]["base_url"], "https://api.hubapi.com");
    // Any other credential needs a base URL.
    let (status, problem) = api
        .call(
            &a,
            Method::POST,
            "/v1/connections",
            Some(create(json!({"kind": "bearer", "secret": "token"}))),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("`api.base_url` is required"),
        "{problem}"
    );

    // A connection that does not use OAuth cannot be connected with it.
    let (_, plain) = api
        .call(
            &a,
            Method::POST,
            "/v1/connections",
            Some(json!({"provider": "custom", "adapter_id": adapter,
                        "signature": {"scheme": "github"}, "secret": "gh"})),
        )
        .await;
    let path = format!(
        "/v1/connections/{}/oauth/start",
        plain["id"].as_str().unwrap()
    );
    let (status, problem) = api.call(&a, Method::POST, &path, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("does not use OAuth")
    );

    // Tokens live under `connections/`: no tenant writes there.
    let (status, problem) = api
        .call(
            &a,
            Method::PUT,
            &format!(
                "/v1/secrets/connections/{}/oauth-tokens",
                salesforce["id"].as_str().unwrap()
            ),
            Some(json!({"value": "{\"access_token\": \"mine\"}"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("`connections/`"),
        "{problem}"
    );

    // A callback without a state this host issued is a clear problem, with no JWT needed.
    let (status, problem) = api
        .send(
            Request::get("/v1/oauth/callback?code=abc&state=made-up")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not one this host issued"),
        "{problem}"
    );
}

/// The audit log as `who` reads it, every page, newest first.
async fn audit_log(api: &Api, who: &As, query: &str) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/audit?limit=5&cursor={cursor}{query}"),
            None => format!("/v1/audit?limit=5{query}"),
        };
        let (status, page) = api.call(who, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        entries.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return entries,
        }
    }
}

#[tokio::test]
async fn every_write_is_audited_with_who_and_the_request_and_no_secret_value() {
    let api = start().await;
    let a = org_admin("org-a");
    // Each write with its own request id: (request id, method, path, body, answer).
    let mut step = 0;
    let mut write =
        async |method: Method, path: &str, body: Option<Value>, expected: StatusCode| {
            step += 1;
            let id = format!("audit-step-{step}");
            let (status, answer) = api
                .call_with(&a, &[("x-request-id", &id)], method, path, body)
                .await;
            assert_eq!(status, expected, "{path}: {answer}");
            (id, answer)
        };
    let (r_adapter, adapter) = write(
        Method::POST,
        "/v1/adapters",
        Some(json!({"name": "hostile"})),
        StatusCode::CREATED,
    )
    .await;
    let adapter = adapter["id"].as_str().unwrap().to_owned();
    // The upload goes its own way (a component body); its entry is checked without an id.
    let (status, _) = api.upload(&a, &adapter, test_artifacts::HOSTILE).await;
    assert_eq!(status, StatusCode::CREATED);
    let secret_values = [
        // Also the subscriber's signing key: a Standard Webhooks key.
        "whsec_Z2gtc2VjcmV0LTdmM2E=",
        "push-secret-value-9c1e",
        "url-token-5d2b",
    ];
    let (r_secret, _) = write(
        Method::PUT,
        "/v1/secrets/gh",
        Some(json!({"value": secret_values[0]})),
        StatusCode::OK,
    )
    .await;
    write(
        Method::PUT,
        "/v1/secrets/pusher",
        Some(json!({"value": secret_values[1]})),
        StatusCode::OK,
    )
    .await;
    let (r_connection, connection) = write(
        Method::POST,
        "/v1/connections",
        Some(json!({"provider": "custom", "adapter_id": adapter,
                    "signature": {"scheme": "github"}, "secret": "gh",
                    "polling": {"push_secret": "pusher"}})),
        StatusCode::CREATED,
    )
    .await;
    let connection = connection["id"].as_str().unwrap().to_owned();
    let (r_update, _) = write(
        Method::PATCH,
        &format!("/v1/connections/{connection}"),
        Some(json!({"settings": {"region": "eu"}, "enabled": true})),
        StatusCode::OK,
    )
    .await;
    // A page the adapter fails on (data, not a management write: no entry), then redriven.
    let (status, failed) = api
        .send(
            Request::post(format!("/v1/connections/{connection}/poll-results"))
                .header("authorization", format!("Bearer {}", a.token))
                .header("content-type", "application/json")
                .header("poll-cursor", "c1")
                .body(Body::from("panic"))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{failed}");
    let delivery = failed["delivery_id"].as_str().unwrap().to_owned();
    let (r_redrive, _) = write(
        Method::POST,
        &format!("/v1/deliveries/{delivery}/redrive"),
        None,
        StatusCode::OK,
    )
    .await;
    let (r_bulk, bulk) = write(
        Method::POST,
        "/v1/deliveries/redrive",
        Some(json!({"connection_id": connection})),
        StatusCode::OK,
    )
    .await;
    assert_eq!(bulk["redriven"], 1, "{bulk}");
    let (r_poll, run) = write(
        Method::POST,
        &format!("/v1/connections/{connection}/poll"),
        None,
        StatusCode::ACCEPTED,
    )
    .await;
    let (r_subscriber, subscriber) = write(
        Method::POST,
        "/v1/subscribers",
        Some(
            json!({"url": format!("https://subscriber.example/hook?token={}", secret_values[2]),
                    "secret": "gh"}),
        ),
        StatusCode::CREATED,
    )
    .await;
    let subscriber = subscriber["id"].as_str().unwrap().to_owned();
    let (r_subscriber_update, _) = write(
        Method::PATCH,
        &format!("/v1/subscribers/{subscriber}"),
        Some(json!({"enabled": false})),
        StatusCode::OK,
    )
    .await;
    let (r_subscriber_delete, _) = write(
        Method::DELETE,
        &format!("/v1/subscribers/{subscriber}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    let (r_replay, replay) = write(
        Method::POST,
        "/v1/replays",
        Some(json!({"from": 0, "to": 1000})),
        StatusCode::ACCEPTED,
    )
    .await;
    let (_, spare) = write(
        Method::POST,
        "/v1/connections",
        Some(json!({"provider": "custom", "adapter_id": adapter,
                    "signature": {"scheme": "github"}, "secret": "gh"})),
        StatusCode::CREATED,
    )
    .await;
    let spare = spare["id"].as_str().unwrap().to_owned();
    let (r_delete, _) = write(
        Method::DELETE,
        &format!("/v1/connections/{spare}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    // What was refused changed nothing and is not recorded.
    write(
        Method::DELETE,
        &format!("/v1/connections/{connection}"),
        None,
        StatusCode::CONFLICT,
    )
    .await;

    let log = audit_log(&api, &a, "").await;
    let got: Vec<(&str, &str, &str)> = log
        .iter()
        .rev()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["resource_id"].as_str().unwrap(),
                e["request_id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let upload_request = got[1].2;
    assert_eq!(
        got,
        [
            ("adapter.create", adapter.as_str(), r_adapter.as_str()),
            ("adapter_version.upload", adapter.as_str(), upload_request),
            ("secret.put", "gh", r_secret.as_str()),
            ("secret.put", "pusher", "audit-step-3"),
            (
                "connection.create",
                connection.as_str(),
                r_connection.as_str()
            ),
            ("connection.update", connection.as_str(), r_update.as_str()),
            ("delivery.redrive", delivery.as_str(), r_redrive.as_str()),
            ("delivery.redrive", delivery.as_str(), r_bulk.as_str()),
            ("poll.start", connection.as_str(), r_poll.as_str()),
            (
                "subscriber.create",
                subscriber.as_str(),
                r_subscriber.as_str()
            ),
            (
                "subscriber.update",
                subscriber.as_str(),
                r_subscriber_update.as_str()
            ),
            (
                "subscriber.delete",
                subscriber.as_str(),
                r_subscriber_delete.as_str()
            ),
            (
                "replay.create",
                replay["id"].as_str().unwrap(),
                r_replay.as_str()
            ),
            ("connection.create", spare.as_str(), "audit-step-13"),
            ("connection.delete", spare.as_str(), r_delete.as_str()),
        ]
    );
    // A request id the host made up is still recorded (the upload sent none).
    assert!(!upload_request.is_empty());
    for entry in &log {
        assert_eq!(
            (
                &entry["actor"],
                &entry["tenant_id"],
                &entry["org_id"],
                &entry["roles"],
                &entry["support"],
            ),
            (
                &json!("alice@example.com"),
                &json!("t1"),
                &json!("org-a"),
                &json!(["tenant_admin"]),
                &json!(false),
            ),
            "{entry}"
        );
    }
    let by_action = |action: &str| -> Vec<&Value> {
        log.iter().rev().filter(|e| e["action"] == action).collect()
    };
    let update = by_action("connection.update")[0];
    assert_eq!(update["detail"]["fields"], json!(["settings", "enabled"]));
    assert_eq!(update["status"], 200);
    let redriven = by_action("delivery.redrive");
    assert_eq!(
        (
            &redriven[0]["detail"]["batch"],
            &redriven[1]["detail"]["batch"]
        ),
        (&json!(false), &json!(true))
    );
    assert_eq!(by_action("poll.start")[0]["detail"]["run_id"], run["id"]);
    assert_eq!(by_action("poll.start")[0]["status"], 202);
    assert_eq!(by_action("subscriber.delete")[0]["status"], 204);
    assert_eq!(by_action("secret.put")[0]["detail"]["version"], 1);
    // No secret value anywhere in what the log answers.
    let text = serde_json::to_string(&log).unwrap();
    for value in secret_values {
        assert!(
            !text.contains(value),
            "the audit log shows a secret: {text}"
        );
    }

    // Filters narrow the log; a viewer of the org reads it too.
    let viewer = As {
        token: token_with(json!({"org_id": "org-a", "roles": ["viewer"]})),
        org_header: None,
    };
    let secrets = audit_log(&api, &viewer, "&action=secret.put").await;
    assert_eq!(secrets.len(), 2);
    let on_spare = audit_log(
        &api,
        &a,
        &format!("&resource_type=connection&resource_id={spare}"),
    )
    .await;
    assert_eq!(on_spare.len(), 2);
    assert!(
        audit_log(&api, &a, "&actor=bob@example.com")
            .await
            .is_empty()
    );
    let (status, problem) = api.call(&a, Method::GET, "/v1/audit?limit=0", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (status, problem) = api.call(&a, Method::GET, "/v1/audit?who=alice", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
}

#[tokio::test]
async fn an_org_reads_its_own_and_the_platform_level_audit_entries_only() {
    let api = start().await;
    let a = org_admin("org-a");
    let b = org_admin("org-b");
    let platform_a = platform(Some("org-a"));
    for (who, name, platform_level) in [
        (&a, "of-a", false),
        (&b, "of-b", false),
        (&platform_a, "of-all", true),
    ] {
        let (status, answer) = api
            .call(
                who,
                Method::POST,
                "/v1/adapters",
                Some(json!({"name": name, "platform_level": platform_level})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let names = |log: Vec<Value>| -> Vec<String> {
        let mut names: Vec<String> = log
            .iter()
            .map(|e| e["detail"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(audit_log(&api, &a, "").await), ["of-a", "of-all"]);
    assert_eq!(names(audit_log(&api, &b, "").await), ["of-all", "of-b"]);
    let platform_entry = audit_log(&api, &b, "&action=adapter.create")
        .await
        .into_iter()
        .find(|e| e["detail"]["name"] == "of-all")
        .unwrap();
    assert_eq!(platform_entry["org_id"], Value::Null);
    // Another tenant sees none of it.
    let other = As {
        token: token_with(json!({"tenant_id": "t2", "org_id": "org-a"})),
        org_header: None,
    };
    assert!(audit_log(&api, &other, "").await.is_empty());
}

#[tokio::test]
async fn support_mode_needs_the_header_and_an_admin_and_is_marked() {
    let api = start().await;
    let a = org_admin("org-a");
    // The platform's operator: an admin of its own tenant, without an org.
    let operator = As {
        token: token_with(json!({"sub": "ops@platform.example", "tenant_id": "ops",
                                 "roles": ["admin", "viewer"]})),
        org_header: Some("org-a"),
    };
    let support = [("x-support-tenant", "t1")];
    let (status, adapter) = api
        .call_with(
            &operator,
            &support,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "fixed-by-support"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{adapter}");
    let adapter_id = adapter["id"].as_str().unwrap();
    // It is t1's: org-a sees it, and the entry says support did it.
    let (_, listed) = api.call(&a, Method::GET, "/v1/adapters", None).await;
    assert_eq!(ids(&listed), [adapter_id]);
    let log = audit_log(&api, &a, "").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (
            &log[0]["actor"],
            &log[0]["tenant_id"],
            &log[0]["org_id"],
            &log[0]["roles"],
            &log[0]["support"],
        ),
        (
            &json!("ops@platform.example"),
            &json!("t1"),
            &json!("org-a"),
            &json!(["viewer", "admin"]),
            &json!(true),
        )
    );
    // The operator reads t1's log in support mode too.
    let (status, read) = api
        .call_with(&operator, &support, Method::GET, "/v1/audit", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["items"].as_array().unwrap().len(), 1);

    // Without the header an admin token acts in its own tenant only, unmarked.
    let (_, own) = api.call(&operator, Method::GET, "/v1/adapters", None).await;
    assert_eq!(ids(&own), Vec::<String>::new());
    let t1_admin = As {
        token: token_with(json!({"sub": "root@t1.example", "roles": ["admin"]})),
        org_header: Some("org-a"),
    };
    let (status, _) = api
        .call(
            &t1_admin,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "by-own-admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let log = audit_log(&api, &a, "&actor=root@t1.example").await;
    assert_eq!((log.len(), &log[0]["support"]), (1, &json!(false)));

    // The header gives nobody else anything: a tenant admin, a viewer, an org-scoped admin.
    let refused = [
        token_with(json!({"tenant_id": "t2"})),
        token_with(json!({"tenant_id": "t2", "roles": ["viewer"]})),
        token_with(json!({"tenant_id": "ops", "org_id": "org-a", "roles": ["admin"]})),
    ];
    for token in refused {
        let who = As {
            token,
            org_header: Some("org-a"),
        };
        for (method, body) in [
            (Method::GET, None),
            (Method::POST, Some(json!({"name": "intruder"}))),
        ] {
            let (status, problem) = api
                .call_with(&who, &support, method, "/v1/adapters", body)
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
        }
    }
    let (status, problem) = api
        .call_with(
            &operator,
            &[("x-support-tenant", "a/b")],
            Method::GET,
            "/v1/adapters",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    // Nothing more was written to t1.
    assert_eq!(audit_log(&api, &a, "").await.len(), 2);
}

/// A subscriber endpoint on loopback that takes everything and keeps the bodies.
async fn subscriber_stand_in() -> (String, Arc<std::sync::Mutex<Vec<(String, Value)>>>) {
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let kept = Arc::clone(&kept);
                async move {
                    let signature = headers
                        .get("webhook-signature")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    kept.lock()
                        .unwrap()
                        .push((signature, serde_json::from_slice(&body).unwrap()));
                    StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// A connection of `who`'s org on a new adapter running the hostile guest (which fails a
/// body starting `fail`); its id.
async fn hostile_connection(api: &Api, who: &As) -> String {
    let (_, adapter) = api
        .call(
            who,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "flaky"})),
        )
        .await;
    let adapter = adapter["id"].as_str().unwrap().to_owned();
    let (status, _) = api.upload(who, &adapter, test_artifacts::HOSTILE).await;
    assert_eq!(status, StatusCode::CREATED);
    api.connection(who, &adapter, false).await
}

async fn deliver_hostile(api: &Api, connection: &str, body: &str) -> Value {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"github-secret").unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let (status, ack) = api
        .send(
            Request::post(format!("/v1/hooks/{connection}"))
                .header("x-hub-signature-256", signature)
                .body(Body::from(body.to_owned()))
                .unwrap(),
        )
        .await;
    assert!(status.is_success(), "{status}: {ack}");
    ack
}

#[tokio::test]
async fn a_failing_connection_raises_one_alert_that_a_fix_resolves_and_subscribers_receive_both() {
    use adapter_host::metrics::Metrics;
    use adapter_host::relay::{Relay, RelayConfig};

    let api = start().await;
    let a = org_admin("org-a");
    // Thresholds are the tenant's: a platform-level admin sets them, an org's admin cannot.
    let rules =
        json!({"defaults": {"window_secs": 600, "min_deliveries": 2, "realert_after_secs": 0}});
    let (status, problem) = api
        .call(&a, Method::PUT, "/v1/health/rules", Some(rules.clone()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let (status, problem) = api
        .call(
            &platform(Some("org-a")),
            Method::PUT,
            "/v1/health/rules",
            Some(json!({"defaults": {"window_secs": 5}})),
        )
        .await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("health rules: defaults: `window_secs` must be between 60 and 86400, got 5")
        )
    );
    let (status, stored) = api
        .call(
            &platform(Some("org-a")),
            Method::PUT,
            "/v1/health/rules",
            Some(rules),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    let (_, audited) = api
        .call(&a, Method::GET, "/v1/audit?action=health_rules.put", None)
        .await;
    assert_eq!(
        (
            audited["items"].as_array().unwrap().len(),
            audited["items"][0]["status"].as_u64()
        ),
        (1, Some(200)),
        "one audited write, the refused ones not: {audited}"
    );
    let (_, read) = api.call(&a, Method::GET, "/v1/health/rules", None).await;
    assert_eq!(
        (
            read["defaults"]["min_deliveries"].as_u64(),
            read["defaults"]["failing_failure_percent"].as_u64()
        ),
        (Some(2), Some(50)),
        "{read}"
    );

    let (url, received) = subscriber_stand_in().await;
    api.call(
        &a,
        Method::PUT,
        "/v1/secrets/sub",
        Some(json!({"value": "whsec_c3Vic2NyaWJlcg=="})),
    )
    .await;
    let (status, subscriber) = api
        .call(
            &a,
            Method::POST,
            "/v1/subscribers",
            Some(json!({"url": url, "event_types": ["integration_alert.*"], "secret": "sub"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{subscriber}");
    let relay = Relay::new(
        api.host.store().clone(),
        api.host.bus().clone(),
        Metrics::new(),
        RelayConfig::default(),
        Arc::new(tokio::sync::Notify::new()),
    )
    .with_secrets(api.host.secrets().clone());

    // An adapter that fails every delivery.
    let (_, adapter) = api
        .call(
            &a,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "flaky"})),
        )
        .await;
    let adapter = adapter["id"].as_str().unwrap().to_owned();
    let (status, _) = api.upload(&a, &adapter, test_artifacts::HOSTILE).await;
    assert_eq!(status, StatusCode::CREATED);
    let connection = api.connection(&a, &adapter, false).await;
    let health_path = format!("/v1/connections/{connection}/health");
    assert!(api.host.assess_all().await.unwrap().raised.is_empty());
    let (_, healthy) = api.call(&a, Method::GET, &health_path, None).await;
    assert_eq!(healthy["status"], "healthy", "{healthy}");

    for n in 0..3 {
        let ack = deliver_hostile(&api, &connection, &format!("fail\n{n}")).await;
        assert_eq!(ack["status"], "failed", "{ack}");
    }
    let changes = api.host.assess_all().await.unwrap();
    assert_eq!(
        (changes.raised.len(), changes.resolved.len()),
        (1, 0),
        "{changes:?}"
    );
    // Assessed again, still failing: no second alert.
    assert!(!api.host.assess_all().await.unwrap().appended());

    let (status, health) = api.call(&a, Method::GET, &health_path, None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "failing", "{health}");
    let reason = &health["reasons"][0];
    assert_eq!(reason["rule"], "delivery_failures");
    assert!(
        reason["detail"].as_str().unwrap().contains(
            "3 of 3 deliveries in the last 600 s failed; the latest: adapter_error: hostile failed"
        ),
        "{reason}"
    );
    assert_eq!(health["figures"]["failure_rate"], "1.0000");
    assert_eq!(health["figures"]["deliveries_failed"], 3);
    assert_eq!(health["open_alerts"].as_array().unwrap().len(), 1);
    let (_, listed) = api.call(&a, Method::GET, "/v1/connections", None).await;
    assert_eq!(
        listed["items"][0]["health"]["status"], "failing",
        "{listed}"
    );
    let (_, summary) = api.call(&a, Method::GET, "/v1/health", None).await;
    assert_eq!(
        (
            summary["status"].as_str(),
            summary["counts"]["failing"].as_u64(),
            summary["open_alerts"].as_u64(),
            summary["unhealthy"][0]["connection_id"].as_str(),
        ),
        (Some("failing"), Some(1), Some(1), Some(connection.as_str())),
        "{summary}"
    );
    let (_, open) = api
        .call(&a, Method::GET, "/v1/alerts?status=open", None)
        .await;
    let alert = open["items"][0].clone();
    assert_eq!(
        (
            alert["rule"].as_str(),
            alert["severity"].as_str(),
            open["items"].as_array().unwrap().len()
        ),
        (Some("delivery_failures"), Some("failing"), 1),
        "{open}"
    );
    // Another org sees neither the alert nor the connection's health.
    let b = org_admin("org-b");
    let (_, theirs) = api.call(&b, Method::GET, "/v1/alerts", None).await;
    assert_eq!(theirs["items"], json!([]));
    assert_eq!(
        api.call(&b, Method::GET, &health_path, None).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, theirs) = api.call(&b, Method::GET, "/v1/health", None).await;
    assert_eq!(theirs["status"], "healthy", "{theirs}");

    // The raised event goes out like any event, signed.
    relay.publish_once().await.unwrap();
    relay.deliver_once().await.unwrap();

    // The fix: a version that works, switched to, and the failed deliveries redriven.
    let (status, _) = api.upload(&a, &adapter, test_artifacts::NOOP).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, switched) = api
        .call(
            &a,
            Method::PATCH,
            &format!("/v1/connections/{connection}"),
            Some(json!({"adapter_version": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{switched}");
    let (_, batch) = api
        .call(
            &a,
            Method::POST,
            "/v1/deliveries/redrive",
            Some(json!({"connection_id": connection})),
        )
        .await;
    assert_eq!(batch["redriven"], 3, "{batch}");
    let changes = api.host.assess_all().await.unwrap();
    assert_eq!(
        (changes.raised.len(), changes.resolved.len()),
        (0, 1),
        "{changes:?}"
    );
    assert!(!api.host.assess_all().await.unwrap().appended());
    let (_, health) = api.call(&a, Method::GET, &health_path, None).await;
    assert_eq!(health["status"], "healthy", "{health}");
    let (_, resolved) = api
        .call(&a, Method::GET, "/v1/alerts?status=resolved", None)
        .await;
    assert_eq!(resolved["items"][0]["id"], alert["id"], "{resolved}");
    assert!(resolved["items"][0]["resolved_at"].is_i64());

    relay.publish_once().await.unwrap();
    relay.deliver_once().await.unwrap();
    let received = received.lock().unwrap().clone();
    let kinds: Vec<(&str, &str)> = received
        .iter()
        .map(|(_, event)| {
            (
                event["event_type"].as_str().unwrap(),
                event["payload"]["alert_id"].as_str().unwrap(),
            )
        })
        .collect();
    let alert_id = alert["id"].as_str().unwrap();
    assert_eq!(
        kinds,
        [
            ("integration_alert.raised", alert_id),
            ("integration_alert.resolved", alert_id)
        ]
    );
    assert!(
        received
            .iter()
            .all(|(signature, _)| signature.starts_with("v1,"))
    );
    let raised = &received[0].1;
    assert_eq!(
        (
            raised["org_id"].as_str(),
            raised["payload"]["figures"]["failure_rate"].as_str()
        ),
        (Some("org-a"), Some("1.0000")),
        "{raised}"
    );
    // Both are in the outbox, listed with the org's events.
    let (_, events) = api
        .call(
            &a,
            Method::GET,
            "/v1/events?entity_type=integration_alert",
            None,
        )
        .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 2, "{events}");
}

#[tokio::test]
async fn a_connection_silent_past_its_cadence_is_stale_until_it_hears_again() {
    let api = start().await;
    let a = org_admin("org-a");
    let adapter = api.adapter(&a, "quiet", false).await;
    let connection = api.connection(&a, &adapter, false).await;
    api.call(
        &platform(Some("org-a")),
        Method::PUT,
        "/v1/health/rules",
        Some(json!({"connections": {connection.clone(): {"stale_after_secs": 1}}})),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let changes = api.host.assess_all().await.unwrap();
    assert_eq!(changes.raised.len(), 1, "{changes:?}");
    assert_eq!(changes.raised[0].rule, "stale");
    let (_, health) = api
        .call(
            &a,
            Method::GET,
            &format!("/v1/connections/{connection}/health"),
            None,
        )
        .await;
    assert_eq!(health["status"], "stale", "{health}");
    assert_eq!(health["thresholds"]["stale_after_secs"], 1);

    deliver_hostile(&api, &connection, "anything").await;
    let changes = api.host.assess_all().await.unwrap();
    assert_eq!(
        (changes.raised.len(), changes.resolved.len()),
        (0, 1),
        "{changes:?}"
    );
}

/// Waits (up to 10 s) for a replay to end; its record.
async fn replay_done(api: &Api, who: &As, id: &str) -> Value {
    for _ in 0..100 {
        let (_, replay) = api
            .call(who, Method::GET, &format!("/v1/replays/{id}"), None)
            .await;
        if replay["status"] != "running" {
            return replay;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("replay {id} still running after 10 s");
}

#[tokio::test]
async fn a_replay_reaches_every_subscriber_or_the_one_it_names_with_the_original_ids() {
    use adapter_host::metrics::Metrics;
    use adapter_host::relay::{Relay, RelayConfig};

    let api = start().await;
    let a = org_admin("org-a");
    api.call(
        &a,
        Method::PUT,
        "/v1/secrets/sub",
        Some(json!({"value": "whsec_c3Vic2NyaWJlcg=="})),
    )
    .await;
    let mut subscribers = Vec::new();
    for _ in 0..2 {
        let (url, received) = subscriber_stand_in().await;
        let (status, subscriber) = api
            .call(
                &a,
                Method::POST,
                "/v1/subscribers",
                Some(json!({"url": url, "secret": "sub"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{subscriber}");
        subscribers.push((subscriber["id"].as_str().unwrap().to_owned(), received));
    }
    let ack = one_event_in_org_a(&api, &a).await;
    let relay = Relay::new(
        api.host.store().clone(),
        api.host.bus().clone(),
        Metrics::new(),
        RelayConfig::default(),
        Arc::new(tokio::sync::Notify::new()),
    )
    .with_secrets(api.host.secrets().clone());
    relay.publish_once().await.unwrap();
    assert_eq!(relay.deliver_once().await.unwrap(), 2);
    let (_, events) = api.call(&a, Method::GET, "/v1/events", None).await;
    let event_id = events["items"][0]["event_id"].as_str().unwrap().to_owned();
    assert!(ack["delivery_id"].is_string());
    let received = |n: usize| -> Vec<String> {
        subscribers[n]
            .1
            .lock()
            .unwrap()
            .iter()
            .map(|(_, event)| event["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        (received(0), received(1)),
        (vec![event_id.clone()], vec![event_id.clone()])
    );

    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let range = json!({"from": now - 3_600_000, "to": now + 60_000});
    // Every subscriber, by default, with the original event id.
    let (status, replay) = api
        .call(&a, Method::POST, "/v1/replays", Some(range.clone()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replay}");
    assert_eq!(replay["target"], "all");
    let done = replay_done(&api, &a, replay["id"].as_str().unwrap()).await;
    assert_eq!(
        (
            done["status"].as_str(),
            done["replayed"].as_u64(),
            done["queued"].as_u64()
        ),
        (Some("done"), Some(1), Some(2)),
        "{done}"
    );
    assert_eq!(relay.deliver_once().await.unwrap(), 2);
    assert_eq!(received(0), [event_id.clone(), event_id.clone()]);
    assert_eq!(received(1), [event_id.clone(), event_id.clone()]);

    // One subscriber, named; a target that cannot go with it is refused, another org's
    // subscriber is not found. (The hourly allowance of replays is 3.)
    let mut named = range.clone();
    named["subscriber_id"] = json!(subscribers[1].0);
    named["target"] = json!("bus");
    let (status, problem) = api
        .call(&a, Method::POST, "/v1/replays", Some(named.clone()))
        .await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("`subscriber_id` goes with the target `subscribers`, not `bus`")
        )
    );
    named.as_object_mut().unwrap().remove("target");
    let (status, _) = api
        .call(
            &org_admin("org-b"),
            Method::POST,
            "/v1/replays",
            Some(named.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, replay) = api.call(&a, Method::POST, "/v1/replays", Some(named)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replay}");
    assert_eq!(
        (replay["target"].as_str(), replay["subscriber_id"].as_str()),
        (Some("subscribers"), Some(subscribers[1].0.as_str()))
    );
    let done = replay_done(&api, &a, replay["id"].as_str().unwrap()).await;
    assert_eq!(done["queued"], 1, "{done}");
    assert_eq!(relay.deliver_once().await.unwrap(), 1);
    assert_eq!(received(0).len(), 2);
    assert_eq!(received(1).len(), 3);
}

#[tokio::test]
async fn an_upload_answers_before_a_slow_compile_and_the_version_is_usable_once_ready() {
    // An upload that does not wait at all: every compile is "slow".
    let api = start_with(|options| options.upload_compile_wait = std::time::Duration::ZERO).await;
    let a = org_admin("org-a");
    let (_, adapter) = api
        .call(
            &a,
            Method::POST,
            "/v1/adapters",
            Some(json!({"name": "slow"})),
        )
        .await;
    let adapter = adapter["id"].as_str().unwrap().to_owned();
    let (status, version) = api.upload(&a, &adapter, test_artifacts::NOOP).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{version}");
    assert_eq!(version["status"], "compiling", "{version}");
    // A connection cannot run it yet: no ready version.
    api.call(
        &a,
        Method::PUT,
        "/v1/secrets/github-signing",
        Some(json!({"value": "github-secret"})),
    )
    .await;
    let create = json!({
        "provider": "custom", "adapter_id": adapter, "adapter_version": 1,
        "signature": {"scheme": "github"}, "secret": "github-signing",
    });
    let (status, problem) = api
        .call(&a, Method::POST, "/v1/connections", Some(create.clone()))
        .await;
    // It may have finished already on a fast machine: then the connection is created.
    if status == StatusCode::CONFLICT {
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("is still compiling"),
            "{problem}"
        );
    } else {
        assert_eq!(status, StatusCode::CREATED, "{problem}");
    }
    let ready = compiled(&api, &a, &format!("/v1/adapters/{adapter}/versions/1")).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(
        ready["info"]["name"].is_string(),
        "what it declares: {ready}"
    );
    // The same bytes again: the same version.
    let (status, again) = api.upload(&a, &adapter, test_artifacts::NOOP).await;
    assert_eq!(
        (status, again["version"].as_u64()),
        (StatusCode::OK, Some(1))
    );

    // A component that passes the pre-check (it exports the adapter interface by name) but
    // fails once compiled (the interface has none of the functions): its version is recorded
    // as failed, with the reason, and cannot be run.
    let dir = tempfile::tempdir().unwrap();
    let hollow = dir.path().join("hollow.wasm");
    std::fs::write(
        &hollow,
        wat::parse_str(
            r#"(component (instance $i) (export "crm:adapter/adapter@0.2.0" (instance $i)))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let (status, failing) = api.upload(&a, &adapter, hollow.to_str().unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{failing}");
    let number = failing["version"].as_u64().unwrap();
    let failed = compiled(
        &api,
        &a,
        &format!("/v1/adapters/{adapter}/versions/{number}"),
    )
    .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["failure"].is_string(), "{failed}");
    let mut switch = create;
    switch["adapter_version"] = json!(number);
    let (status, problem) = api
        .call(&a, Method::POST, "/v1/connections", Some(switch))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("failed to compile"),
        "{problem}"
    );
}

/// The version at `path` once its compile has ended (up to 10 s).
async fn compiled(api: &Api, who: &As, path: &str) -> Value {
    for _ in 0..200 {
        let (_, read) = api.call(who, Method::GET, path, None).await;
        if read["status"] != "compiling" {
            return read;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{path} still compiling after 10 s");
}

/// The public key set, as anyone reads it (no token).
async fn well_known_keys(api: &Api) -> (StatusCode, Value) {
    let request = Request::get("/.well-known/adapter-host/provenance-keys")
        .body(Body::empty())
        .unwrap();
    api.send(request).await
}

/// `adapter-host verify-event` on `event` with `keys`, and more arguments: its exit status and
/// what it printed.
fn verify_event(event: &Value, keys: &Value, more: &[&std::ffi::OsStr]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let (event_path, keys_path) = (dir.path().join("event.json"), dir.path().join("keys.json"));
    std::fs::write(&event_path, event.to_string()).unwrap();
    std::fs::write(&keys_path, keys.to_string()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_adapter-host"))
        .arg("verify-event")
        .arg(&event_path)
        .arg("--keys")
        .arg(&keys_path)
        .args(more)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn every_event_is_signed_and_verifies_offline_across_a_key_rotation() {
    let api = start().await;
    let a = org_admin("org-a");
    let ack = one_event_in_org_a(&api, &a).await;
    let (status, list) = api.call(&a, Method::GET, "/v1/events?limit=10", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let event = list["items"][0].clone();
    let record = &event["metadata"]["provenance"];
    assert_eq!(
        record["input"]["delivery_id"], ack["delivery_id"],
        "{record}"
    );
    assert_eq!(record["tenant_id"], "t1");
    assert_eq!(record["contract"]["world"], "0.2.0");
    let component = std::fs::read(test_artifacts::CHAMPION_HEALTH).unwrap();
    assert_eq!(
        record["adapter"]["component_sha256"],
        adapter_host::sandbox::sha256_hex(&component)
    );
    let input = test_artifacts::sample_file("champion-health/fixtures/enrollment-1kb.json");

    // The public keys need no token; rotating them is for the platform's admin only.
    let (status, before) = well_known_keys(&api).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert_eq!(before["keys"].as_array().unwrap().len(), 1);
    for who in [&a, &platform(Some("org-a"))] {
        let (status, problem) = api
            .call(who, Method::POST, "/v1/provenance-keys/rotate", None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    }
    let admin = As {
        token: token_with(json!({"roles": ["admin"]})),
        org_header: Some("org-a"),
    };
    let (status, rotated) = api
        .call(&admin, Method::POST, "/v1/provenance-keys/rotate", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let (_, keys) = well_known_keys(&api).await;
    assert_eq!(keys, rotated);
    assert_eq!(
        keys["keys"][1]["kid"], before["keys"][0]["kid"],
        "the old key is kept"
    );
    assert!(keys["keys"][1]["retired_at"].is_i64());
    let entries = audit_log(&api, &admin, "&action=provenance_key.rotate").await;
    assert_eq!(entries.len(), 1, "{entries:?}");

    // Signed before the rotation, the event verifies with the key set after it, from the
    // input and component that made it.
    let (code, out) = verify_event(
        &event,
        &keys,
        &[
            "--input".as_ref(),
            input.as_os_str(),
            "--adapter".as_ref(),
            test_artifacts::CHAMPION_HEALTH.as_ref(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("verified: signed by key"), "{out}");
    // Tampered: a decimal changed, the event fails.
    let mut tampered = event.clone();
    let payload = tampered["payload"].as_object_mut().unwrap();
    let (field, _) = payload
        .iter()
        .find(|(_, value)| value.is_string())
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    payload.insert(field, json!("999999.99"));
    let (code, out) = verify_event(&tampered, &keys, &[]);
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("does not match its signed digest"), "{out}");
    // Another input, or another component, is named as such.
    let (code, out) = verify_event(
        &event,
        &keys,
        &["--adapter".as_ref(), test_artifacts::NOOP.as_ref()],
    );
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("is not the component"), "{out}");

    // An event made after the rotation is signed by the new key.
    let body = std::fs::read_to_string(&input)
        .unwrap()
        .replace("evt_01JDX3K8Q9V2YB6M4T7R5N0C1A", "evt_after_the_rotation")
        .replace("M-88412", "M-88413");
    let connection = event["connection_id"].as_str().unwrap();
    let ack = deliver_one_event(&api, connection, body.into_bytes()).await;
    let (_, list) = api.call(&a, Method::GET, "/v1/events?limit=10", None).await;
    let newer = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["metadata"]["provenance"]["input"]["delivery_id"] == ack["delivery_id"])
        .unwrap()
        .clone();
    assert_eq!(
        newer["metadata"]["provenance"]["kid"],
        keys["keys"][0]["kid"]
    );
    assert_eq!(verify_event(&newer, &keys, &[]).0, 0);
}
