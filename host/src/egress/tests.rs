//! The egress rules against a CRM stand-in on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::*;
use crate::secrets::{InMemorySecretStore, SecretValue};

/// A CRM stand-in: answers by path, counts requests, echoes what it got on `/echo`.
async fn crm() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    let flaky = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().fallback(move |request: Request| {
        let (counted, flaky) = (Arc::clone(&counted), Arc::clone(&flaky));
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or("").to_owned();
            let headers: Vec<String> = request
                .headers()
                .iter()
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("")))
                .collect();
            let answer: Response = match path.as_str() {
                "/echo" => format!("{query}\n{}", headers.join("\n")).into_response(),
                "/redirect-out" => (
                    StatusCode::FOUND,
                    [("location", "https://evil.example/steal")],
                )
                    .into_response(),
                "/redirect-in" => {
                    (StatusCode::FOUND, [("location", "/echo?moved=1")]).into_response()
                }
                "/flaky" => {
                    if flaky.fetch_add(1, Ordering::SeqCst) == 0 {
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    } else {
                        "recovered".into_response()
                    }
                }
                "/limited" => {
                    if flaky.fetch_add(1, Ordering::SeqCst) == 0 {
                        (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
                    } else {
                        "after the wait".into_response()
                    }
                }
                "/big" => vec![b'x'; 2 * 1024 * 1024].into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            };
            answer
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, count)
}

fn api(addr: std::net::SocketAddr, credential: CredentialConfig) -> ApiAccess {
    ApiAccess {
        base_url: format!("http://{addr}"),
        allowed_origins: vec!["https://other.example".into()],
        allow_private: true,
        rate_limit: RateLimit::default(),
        credential,
    }
}

const KEY: &str = "zk_live_5f3c9a1e7b2d4f60";

fn session(api: &ApiAccess, limits: &Limits) -> EgressSession {
    let secrets = Arc::new(InMemorySecretStore::new());
    secrets
        .put(
            "c1/key",
            SecretValue::new(KEY),
            Duration::ZERO,
            SystemTime::now(),
        )
        .unwrap();
    let credential = StoredCredential::of(&api.credential, secrets, |name| format!("c1/{name}"))
        .map(|c| Arc::new(c) as Arc<dyn CredentialSource>);
    Egress::new()
        .unwrap()
        .session("c1", api, credential, limits)
        .unwrap()
}

fn get(url: &str) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        url: url.into(),
        ..HttpRequest::default()
    }
}

#[tokio::test]
async fn the_credential_goes_to_the_base_url_only_and_never_comes_back() {
    let (addr, _) = crm().await;
    let header = CredentialConfig::ApiKey {
        secret: "key".into(),
        header: Some("Authorization".into()),
        prefix: Some("apikey ".into()),
        query: None,
    };
    let session = session(&api(addr, header), &Limits::default());
    // The CRM echoes the request's headers: the adapter sees the key scrubbed.
    let answer = session.perform(get("/echo?x=1")).await.unwrap();
    let text = String::from_utf8(answer.body).unwrap();
    assert!(text.contains("authorization: apikey [redacted]"), "{text}");
    assert!(!text.contains(KEY), "{text}");
    // And the record holds no credential either.
    let exchanges = session.take_exchanges();
    let recorded = serde_json::to_string(&exchanges).unwrap();
    assert!(!recorded.contains(KEY));
    assert!(!String::from_utf8_lossy(&exchanges[0].response_body).contains(KEY));
    assert_eq!(exchanges[0].status, Some(200));

    // In a query parameter: added by the host, redacted in the record, scrubbed from echoes.
    let query = CredentialConfig::ApiKey {
        secret: "key".into(),
        header: None,
        prefix: None,
        query: Some("api_key".into()),
    };
    let session = super::tests::session(&api(addr, query), &Limits::default());
    let answer = session.perform(get("/echo")).await.unwrap();
    let text = String::from_utf8(answer.body).unwrap();
    assert!(text.starts_with("api_key=[redacted]"), "{text}");
    let exchanges = session.take_exchanges();
    assert!(
        exchanges[0].url.contains("api_key=%5Bredacted%5D"),
        "{}",
        exchanges[0].url
    );
    assert!(!serde_json::to_string(&exchanges).unwrap().contains(KEY));
    // An adapter cannot set the credential's parameter or header itself.
    let mut own = get("/echo");
    own.query = vec![("api_key".into(), "mine".into())];
    assert!(matches!(
        session.perform(own).await,
        Err(FetchError::NotAllowed(_))
    ));
    let mut own = get("/echo");
    own.headers = vec![("Authorization".into(), "Bearer x".into())];
    assert!(matches!(
        session.perform(own).await,
        Err(FetchError::NotAllowed(_))
    ));
}

#[tokio::test]
async fn only_the_connection_s_origins_are_reached() {
    let (addr, count) = crm().await;
    let session = session(&api(addr, CredentialConfig::None), &Limits::default());
    for (url, why) in [
        (
            "https://evil.example/x",
            "not one of the connection's origins",
        ),
        (
            "http://127.0.0.1:1/x",
            "not one of the connection's origins",
        ),
        (
            &format!("http://user@{addr}/echo") as &str,
            "credentials in them",
        ),
        (
            "ftp://other.example/",
            "not one of the connection's origins",
        ),
        ("echo", "neither a path"),
        ("//evil.example/x", "neither a path"),
    ] {
        match session.perform(get(url)).await {
            Err(FetchError::NotAllowed(message)) => {
                assert!(message.contains(why), "{url}: {message}")
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    assert_eq!(count.load(Ordering::SeqCst), 0, "nothing was sent");
    // A redirect out of the origins is refused; one inside them is followed.
    match session.perform(get("/redirect-out")).await {
        Err(FetchError::NotAllowed(message)) => {
            assert!(message.contains("redirect left the origins"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let answer = session.perform(get("/redirect-in")).await.unwrap();
    assert!(
        String::from_utf8(answer.body)
            .unwrap()
            .starts_with("moved=1")
    );
}

#[tokio::test]
async fn private_hosts_need_the_connection_s_consent() {
    let mut refused = api("127.0.0.1:9".parse().unwrap(), CredentialConfig::None);
    refused.allow_private = false;
    // As a base URL: refused when the connection is configured.
    assert!(check_api(&refused).unwrap_err().contains("plain http"));
    refused.base_url = "https://127.0.0.1:9".into();
    assert!(check_api(&refused).unwrap_err().contains("IP address"));
    // A name that resolves to loopback: refused when connecting.
    refused.base_url = "https://localhost:9".into();
    check_api(&refused).unwrap();
    let session = Egress::new()
        .unwrap()
        .session("c1", &refused, None, &Limits::default())
        .unwrap();
    match session.perform(get("/x")).await {
        Err(FetchError::NotAllowed(message)) => {
            assert!(message.contains("resolves to"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn failures_are_retried_and_429_is_waited_out() {
    let (addr, count) = crm().await;
    let session = session(&api(addr, CredentialConfig::None), &Limits::default());
    let answer = session.perform(get("/flaky")).await.unwrap();
    assert_eq!(
        (answer.status, answer.body.as_slice()),
        (200, &b"recovered"[..])
    );
    assert_eq!(session.take_exchanges()[0].attempts, 2);

    let (addr, count2) = crm().await;
    let session = super::tests::session(&api(addr, CredentialConfig::None), &Limits::default());
    let started = Instant::now();
    let answer = session.perform(get("/limited")).await.unwrap();
    assert_eq!(answer.body, b"after the wait");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    assert!(session.retry_after().is_some());
    let _ = (count, count2);
}

#[tokio::test]
async fn budgets_bound_requests_and_answers() {
    let (addr, count) = crm().await;
    let limits = Limits {
        http_requests: 3,
        http_response_bytes: 1024 * 1024,
        ..Limits::default()
    };
    let session = session(&api(addr, CredentialConfig::None), &limits);
    match session.perform(get("/big")).await {
        Err(FetchError::TooLarge(message)) => assert!(message.contains("1048576"), "{message}"),
        other => panic!("{other:?}"),
    }
    session.perform(get("/echo")).await.unwrap();
    session.perform(get("/echo")).await.unwrap();
    assert!(matches!(
        session.perform(get("/echo")).await,
        Err(FetchError::LimitExceeded(_))
    ));
    assert_eq!(count.load(Ordering::SeqCst), 3);
    assert_eq!(
        session.take_exchanges().len(),
        4,
        "the refused one is recorded too"
    );
}

#[test]
fn relative_paths_stay_under_the_base_url() {
    let origins = Origins::of(&ApiAccess {
        base_url: "https://crm.example/api/v2".into(),
        allowed_origins: Vec::new(),
        allow_private: false,
        rate_limit: RateLimit::default(),
        credential: CredentialConfig::None,
    })
    .unwrap();
    assert_eq!(
        origins.resolve("/deals?limit=5").unwrap().as_str(),
        "https://crm.example/api/v2/deals?limit=5"
    );
    assert!(origins.resolve("/../admin").is_err());
    assert!(
        origins.resolve("https://crm.example:8443/x").is_err(),
        "another port"
    );
    assert!(
        origins.resolve("http://crm.example/x").is_err(),
        "another scheme"
    );
    assert!(
        origins.resolve("https://crm.example/other").is_ok(),
        "same origin"
    );
}
