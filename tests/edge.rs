//! The HTTP edge against careless and hostile clients, over the real binary on loopback:
//! malformed requests, huge declared bodies, idle and trickling connections, more connections
//! than the process has descriptors for, and a CRM that hangs up mid-delivery. Every answer is
//! problem+json, nothing holds the host, and nothing taken is left half done.

use std::process::Child;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use process::{free_port, spawn_host_limited, wait_ready};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "common/process.rs"]
mod process;

const SECRET: &str = "edge-test-signing-secret";

/// A host running the hostile guest on connection `hostile` (GitHub-style signatures), with a
/// 3 s deadline so that a delivery can be slow on purpose.
struct Edge {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(env: &[(&str, &str)], nofile: Option<u32>) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[adapters]]
tenant_id = "tenant-edge"
name = "hostile"
wasm = "{hostile}"
limits = {{ deadline_ms = 3000 }}

[[connections]]
id = "hostile"
tenant_id = "tenant-edge"
provider = "custom"
adapter = "hostile"
signature = {{ scheme = "github" }}
secret = "edge/signing"

[[connections]]
id = "allow-listed"
tenant_id = "tenant-edge"
provider = "salesforce"
adapter = "hostile"
signature = {{ scheme = "github" }}
secret = "edge/signing"
webhook = {{ allowed_ips = ["203.0.113.0/24"] }}

[[secrets]]
name = "edge/signing"
value = "{SECRET}"
"#,
            hostile = test_artifacts::HOSTILE
        ),
    )
    .unwrap();
    let port = free_port();
    let child = spawn_host_limited(&config, &dir.path().join("data"), port, env, nofile);
    wait_ready(&reqwest::Client::new(), port).await;
    Edge {
        child,
        port,
        _dir: dir,
    }
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Writes `request` on a new connection and reads the answer until the host closes the
/// connection or `wait` passes.
async fn exchange(port: u16, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_closed(&mut stream, wait).await
}

async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status and problem+json body of an answer, asserting that it is problem+json.
fn problem(answer: &str) -> (u16, serde_json::Value) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer: {answer:?}"));
    let status: u16 = head[9..12].parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "not problem+json: {head}"
    );
    let problem: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert_eq!(problem["status"], status);
    assert!(problem["type"].as_str().unwrap().starts_with("https://"));
    (status, problem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_parse_are_answered_with_problems() {
    let edge = start(&[], None).await;
    let wait = Duration::from_secs(3);
    // A request line that is not HTTP.
    let answer = exchange(edge.port, b"GARBAGE\r\n\r\n", wait).await;
    assert_eq!(problem(&answer).0, 400, "{answer}");
    // Headers beyond 64 KiB.
    let mut big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 100 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let answer = exchange(edge.port, &big, wait).await;
    assert_eq!(problem(&answer).0, 431, "{answer}");
    // A URI beyond what the host reads.
    let mut long = b"GET /".to_vec();
    long.extend(std::iter::repeat_n(b'a', 70 * 1024));
    long.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    let answer = exchange(edge.port, &long, wait).await;
    assert!(matches!(problem(&answer).0, 414 | 431), "{answer}");
    // Raw bytes that are not a URI.
    let answer = exchange(
        edge.port,
        b"POST /v1/hooks/\xff\xfe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        wait,
    )
    .await;
    assert_eq!(problem(&answer).0, 400, "{answer}");
    // A path that is not UTF-8 once decoded, on the webhook and on the management API.
    for path in ["/v1/hooks/%FF%FE", "/v1/adapters/%C3%28"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = exchange(edge.port, request.as_bytes(), wait).await;
        let (status, detail) = problem(&answer);
        assert!(status == 400 || status == 405 || status == 401, "{answer}");
        assert!(detail["detail"].is_string());
    }
    // The host still serves.
    let answer = exchange(
        edge.port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_too_large_is_refused_before_it_is_sent() {
    let edge = start(&[], None).await;
    let started = Instant::now();
    // 5 GiB declared, not a byte sent: the answer comes at once.
    let answer = exchange(
        edge.port,
        b"POST /v1/hooks/hostile HTTP/1.1\r\nHost: x\r\nContent-Length: 5368709120\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    let (status, body) = problem(&answer);
    assert_eq!(status, 413, "{answer}");
    assert!(
        body["detail"].as_str().unwrap().contains("5368709120"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // The management API's uploads have their own limit, and the JSON routes theirs.
    let answer = exchange(
        edge.port,
        b"POST /v1/adapters/a/versions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(problem(&answer).0, 413, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_trickling_and_slow_body_clients_are_dropped() {
    let edge = start(
        &[
            ("ADAPTER_HOST_HEADER_TIMEOUT_SECS", "1"),
            ("ADAPTER_HOST_BODY_TIMEOUT_SECS", "2"),
        ],
        None,
    )
    .await;
    // Connected, silent: closed after the header timeout.
    let started = Instant::now();
    let mut idle = TcpStream::connect(("127.0.0.1", edge.port)).await.unwrap();
    read_until_closed(&mut idle, Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "idle for {waited:?}");

    // Headers one byte every 200 ms: closed too, though bytes keep coming.
    let started = Instant::now();
    let mut trickle = TcpStream::connect(("127.0.0.1", edge.port)).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: trickle.example\r\nX-Slow: yes\r\n\r\n";
    for byte in request {
        if trickle.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a trickling client was kept for {:?}",
        started.elapsed()
    );

    // A body that stops arriving: 408 problem+json after the body timeout.
    let started = Instant::now();
    let mut slow = TcpStream::connect(("127.0.0.1", edge.port)).await.unwrap();
    slow.write_all(
        b"POST /v1/hooks/hostile HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 100\r\n\r\nok",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert_eq!(problem(&answer).0, 408, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_connections_than_descriptors_cannot_take_the_host_down() {
    // 256 descriptors: the host keeps 128 for itself and serves 128 connections.
    let edge = start(&[("ADAPTER_HOST_HEADER_TIMEOUT_SECS", "2")], Some(256)).await;
    let mut idle = Vec::new();
    for _ in 0..400 {
        match TcpStream::connect(("127.0.0.1", edge.port)).await {
            Ok(stream) => idle.push(stream),
            Err(_) => break,
        }
    }
    assert!(idle.len() >= 300, "{} connections", idle.len());
    // Meanwhile a new client gets an answer at once: served, or a clear 503.
    let started = Instant::now();
    let answer = exchange(
        edge.port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2), "{answer}");
    if !answer.starts_with("HTTP/1.1 200") {
        let (status, body) = problem(&answer);
        assert_eq!(status, 503);
        assert!(
            body["detail"].as_str().unwrap().contains("at most 128"),
            "{body}"
        );
    }
    // The idle ones are dropped at the header timeout, and the host serves again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(idle);
    let answer = exchange(
        edge.port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_that_hangs_up_still_gets_its_delivery_processed() {
    let edge = start(&[], None).await;
    let body = b"sleep\n1200";
    let request = |body: &[u8]| {
        let mut request = format!(
            "POST /v1/hooks/hostile HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: {}\r\n\
             X-GitHub-Delivery: gh-hangup\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            sign(body),
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    };
    // The adapter takes 1.2 s; the CRM gives up after 0.3 s and hangs up.
    let mut stream = TcpStream::connect(("127.0.0.1", edge.port)).await.unwrap();
    stream.write_all(&request(body)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    // Its retry a little later finds the delivery taken, and finished: not left `received`.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let answer = exchange(edge.port, &request(body), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let ack: serde_json::Value =
        serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(ack["duplicate"], true, "{ack}");
    assert_eq!(ack["status"], "processed", "{ack}");
}

/// A signed delivery to the allow-listed connection, with `X-Forwarded-For: xff` if given.
fn allow_listed(xff: Option<&str>) -> Vec<u8> {
    let body = b"ok";
    let forwarded = xff.map_or(String::new(), |xff| format!("X-Forwarded-For: {xff}\r\n"));
    let mut request = format!(
        "POST /v1/hooks/allow-listed HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: {}\r\n\
         {forwarded}Content-Length: {}\r\nConnection: close\r\n\r\n",
        sign(body),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_sees_the_real_peer_and_a_forwarding_header_only_from_a_trusted_proxy() {
    let wait = Duration::from_secs(5);
    // No trusted proxy: the peer (127.0.0.1) is the source, and a forged header changes nothing.
    let edge = start(&[], None).await;
    let answer = exchange(edge.port, &allow_listed(Some("203.0.113.9")), wait).await;
    let (status, body) = problem(&answer);
    assert_eq!(status, 403, "{answer}");
    assert_eq!(
        body["detail"],
        "the source address 127.0.0.1 is not one this connection takes deliveries from"
    );
    drop(edge);

    // Loopback as the trusted proxy (from the environment, as a deployment sets it): the
    // right-most hop it did not add is the source.
    let edge = start(
        &[("ADAPTER_HOST_TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8")],
        None,
    )
    .await;
    let answer = exchange(
        edge.port,
        &allow_listed(Some("198.51.100.1, 203.0.113.9")),
        wait,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 20"), "{answer}");
    let answer = exchange(
        edge.port,
        &allow_listed(Some("203.0.113.9, 198.51.100.1")),
        wait,
    )
    .await;
    let (status, body) = problem(&answer);
    assert_eq!(status, 403, "{answer}");
    assert!(
        body["detail"].as_str().unwrap().contains("198.51.100.1"),
        "{body}"
    );
    // Through the proxy without a header: the proxy itself, not in the list.
    let answer = exchange(edge.port, &allow_listed(None), wait).await;
    assert_eq!(problem(&answer).0, 403, "{answer}");
}
