//! The `adapter-host` binary as an adapter author uses it: `check` and `run`, their output and
//! their exit statuses.

use std::path::Path;
use std::process::{Command, Output};

use test_artifacts::{CHAMPION_HEALTH, HOSTILE, sample_file};

fn adapter_host(args: &[&str]) -> Output {
    let cache = Path::new(test_artifacts::REPO_ROOT).join("target/test-cache");
    Command::new(env!("CARGO_BIN_EXE_adapter-host"))
        .args(args)
        .env("ADAPTER_HOST_CACHE_DIR", cache)
        .output()
        .expect("running adapter-host")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn check_prints_what_the_adapter_declares() {
    let output = adapter_host(&["check", CHAMPION_HEALTH]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("champion-health"), "{text}");
    assert!(text.contains("decimals: "), "{text}");
    assert!(
        text.contains("ok: implements crm:adapter/adapter@0.2.0"),
        "{text}"
    );

    let output = adapter_host(&["check", "--json", CHAMPION_HEALTH]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["adapter"]["name"], "champion-health");
    assert_eq!(json["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(json["world"], "0.2.0");

    // A component of the frozen 0.1.0 world is still an adapter, and says which world.
    let output = adapter_host(&["check", test_artifacts::LEGACY_V0_1]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("ok: implements crm:adapter/adapter@0.1.0"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn check_refuses_a_file_that_is_not_an_adapter_with_a_precise_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.wasm");
    std::fs::write(&path, wat::parse_str("(module)").unwrap()).unwrap();
    let output = adapter_host(&["check", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.starts_with("error: loading "), "{message}");
    assert!(message.contains("not a valid component"), "{message}");

    let output = adapter_host(&["check", "/no/such/adapter.wasm"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("reading /no/such/adapter.wasm"));
}

#[test]
fn run_prints_events_logs_and_usage_and_exits_zero() {
    let fixture = sample_file("champion-health/fixtures/enrollment-1kb.json");
    let output = adapter_host(&[
        "run",
        CHAMPION_HEALTH,
        "--webhook",
        fixture.to_str().unwrap(),
        "--org",
        "org-456",
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    assert!(text.contains("outcome  accepted:"), "{text}");
    assert!(text.contains("usage "), "{text}");
    assert!(text.contains("fuel "), "{text}");
}

#[test]
fn run_json_reports_outcome_usage_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let body = write_file(&dir, "body", "stderr");
    let output = adapter_host(&["run", HOSTILE, "--webhook", &body, "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["outcome"]["status"], "accepted");
    assert_eq!(json["outcome"]["events"][0]["event_type"], "test.ok");
    assert!(json["usage"]["fuel_consumed"].as_u64().unwrap() > 0);
    assert!(json["usage"]["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert!(json["usage"]["duration_us"].is_u64());
    assert_eq!(json["log"]["lines"][0]["level"], "stderr");
}

#[test]
fn run_exits_four_on_a_contract_violation_and_names_the_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let body = write_file(&dir, "body", "float");
    let output = adapter_host(&["run", HOSTILE, "--webhook", &body]);
    assert_eq!(output.status.code(), Some(4));
    let text = stdout(&output);
    assert!(text.contains("rejected: 1 contract violation"), "{text}");
    assert!(text.contains("/payload/ratio  fractional_number"), "{text}");
    assert!(text.contains("(value: 12.5)"), "{text}");
}

#[test]
fn run_exits_three_when_the_adapter_fails() {
    let dir = tempfile::tempdir().unwrap();
    for (command, expected) in [
        (
            "panic",
            "failed (panic): the adapter panicked: hostile guest panicked on purpose",
        ),
        ("loop", "failed (deadline)"),
        (
            "bad-request",
            "adapter error (bad_request): hostile says no",
        ),
    ] {
        let body = write_file(&dir, command, command);
        let output = adapter_host(&["run", HOSTILE, "--webhook", &body]);
        assert_eq!(output.status.code(), Some(3), "{command}");
        assert!(
            stdout(&output).contains(expected),
            "{command}: {}",
            stdout(&output)
        );
    }
}

#[test]
fn run_loads_and_saves_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, r#"{"seen": "1"}"#).unwrap();
    let body = write_file(&dir, "body", "state-set\ncursor\n7");
    let output = adapter_host(&[
        "run",
        HOSTILE,
        "--webhook",
        &body,
        "--state",
        state.to_str().unwrap(),
        "--save-state",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved, serde_json::json!({"seen": "1", "cursor": "7"}));
}

#[test]
fn bad_command_lines_exit_two_and_bad_files_exit_one() {
    let output = adapter_host(&["run", HOSTILE]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--webhook"), "{}", stderr(&output));

    let dir = tempfile::tempdir().unwrap();
    let body = write_file(&dir, "body", "ok");
    let state = write_file(&dir, "state.json", "[1, 2]");
    let output = adapter_host(&["run", HOSTILE, "--webhook", &body, "--state", &state]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("must be a JSON object of string values"));

    let output = adapter_host(&["run", HOSTILE, "--webhook", &body, "--header", "no-colon"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("--header expects `name:value`"),
        "{}",
        stderr(&output)
    );
}

/// Salesforce's answers for a first poll of Account, Contact and Opportunity, from the
/// adapter's fixtures, as a `--responses` file.
fn salesforce_responses(dir: &tempfile::TempDir) -> String {
    let fixture = |name: &str| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(sample_file(&format!("salesforce/fixtures/{name}"))).unwrap(),
        )
        .unwrap()
    };
    let accounts = fixture("queryall-accounts-page-1.json");
    let next = accounts["nextRecordsUrl"].as_str().unwrap().to_owned();
    let json = |body: serde_json::Value, path: &str| {
        serde_json::json!({
            "path": path,
            "headers": [["content-type", "application/json"]],
            "body": body,
        })
    };
    let queried = "/services/data/v59.0/queryAll";
    let responses = serde_json::json!([
        json(accounts, queried),
        json(fixture("queryall-accounts-page-2.json"), &next),
        json(fixture("queryall-contacts-empty.json"), queried),
        json(fixture("queryall-opportunities.json"), queried),
    ]);
    write_file(dir, "responses.json", &responses.to_string())
}

#[test]
fn run_poll_walks_recorded_responses_page_after_page() {
    let salesforce = test_artifacts::ALL
        .iter()
        .find(|(stem, _)| *stem == "salesforce")
        .unwrap()
        .1;
    let dir = tempfile::tempdir().unwrap();
    let responses = salesforce_responses(&dir);
    let state = write_file(&dir, "state.json", "{}");
    let args = [
        "run",
        salesforce,
        "--poll",
        "--responses",
        &responses,
        "--org",
        "org-1",
        "--setting",
        "default_org_id=org-1",
        "--state",
        &state,
        "--save-state",
    ];
    let output = adapter_host(&args);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    // Every request, its answer, the events and where the cursor went.
    assert!(text.contains("=== page 4"), "{text}");
    assert!(
        text.contains("request  GET /services/data/v59.0/queryAll?q=SELECT+Id"),
        "{text}"
    );
    assert!(text.contains("-> 200"), "{text}");
    assert!(text.contains("account.created"), "{text}");
    assert!(text.contains("account.deleted"), "{text}");
    assert!(text.contains("records  2 on the page"), "{text}");
    assert!(text.contains("run      4 page(s)"), "{text}");
    assert!(text.contains("usage    "), "{text}");
    // The state after the run was saved.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(saved.as_object().unwrap().len() >= 3, "{saved}");

    // JSON: the same run, machine-readable.
    let mut json_args = args[..args.len() - 3].to_vec();
    json_args.push("--json");
    let output = adapter_host(&json_args);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["pages"].as_array().unwrap().len(), 4);
    assert_eq!(report["pages"][0]["requests"][0]["status"], 200);
    assert!(report["cursor"].as_str().unwrap().contains("Opportunity"));
}

#[test]
fn run_poll_exits_five_when_a_request_fails_and_names_it() {
    let poller = test_artifacts::POLLER;
    let dir = tempfile::tempdir().unwrap();
    // Nothing recorded for the request the adapter makes.
    let responses = write_file(
        &dir,
        "responses.json",
        r#"[{"path": "/other", "body": {}}]"#,
    );
    let output = adapter_host(&["run", poller, "--poll", "--responses", &responses]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(5), "{text}{}", stderr(&output));
    assert!(
        text.contains("no recorded response left for GET /items"),
        "{text}"
    );
    // A CRM that rate limits: the run stops there.
    let responses = write_file(
        &dir,
        "limited.json",
        r#"[{"path": "/items", "status": 429, "headers": [["retry-after", "30"]]}]"#,
    );
    let output = adapter_host(&["run", poller, "--poll", "--responses", &responses]);
    assert_eq!(output.status.code(), Some(5));
    assert!(
        stdout(&output).contains("the CRM answered 429"),
        "{}",
        stdout(&output)
    );
    // The network under the host's rules: a base URL on loopback is refused unless the
    // connection's settings allow private hosts.
    let output = adapter_host(&["run", poller, "--poll", "--base-url", "https://localhost:1"]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("a loopback, private or otherwise special address"),
        "{}",
        stdout(&output)
    );
    // Usage mistakes are precise.
    let output = adapter_host(&["run", poller, "--poll"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("needs --base-url, --api or --responses"),
        "{}",
        stderr(&output)
    );
    let output = adapter_host(&["run", poller, "--poll", "--api", "{\"base\": 1}"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("parsing --api"),
        "{}",
        stderr(&output)
    );
    let output = adapter_host(&[
        "run",
        poller,
        "--poll",
        "--api",
        r#"{"base_url": "https://crm.example", "credential": {"kind": "bearer", "secret": "t"}}"#,
        "--secret-env",
        "t=ADAPTER_HOST_TEST_UNSET_VARIABLE",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("$ADAPTER_HOST_TEST_UNSET_VARIABLE is not set"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn token_mints_what_the_host_accepts_and_refuses_bad_requests_precisely() {
    use adapter_host::api::auth::{AuthConfig, Role, authenticate};

    let dir = tempfile::tempdir().unwrap();
    let key = "local-key-for-the-token-test-0123456789";
    let key_file = write_file(&dir, "jwt.key", &format!("{key}\n"));
    let output = adapter_host(&[
        "token",
        "--jwt-key-file",
        &key_file,
        "--tenant",
        "demo-tenant",
        "--org",
        "org-456",
        "--jwt-issuer",
        "https://id.local",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let token = stdout(&output).trim().to_owned();
    // The host configured with the same key (and issuer) takes it.
    let config = AuthConfig {
        hs256_key: Some(zeroize::Zeroizing::new(key.as_bytes().to_vec())),
        issuer: Some("https://id.local".into()),
        ..AuthConfig::default()
    };
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let caller = authenticate(&config, &headers).unwrap();
    assert_eq!(
        (
            caller.tenant_id.as_str(),
            caller.org_id.as_deref(),
            caller.role,
            caller.subject.as_str()
        ),
        (
            "demo-tenant",
            Some("org-456"),
            Role::TenantAdmin,
            "local-developer"
        )
    );
    assert!(!caller.sees_personal_data, "pii_reader only when asked for");
    let reader = adapter_host(&[
        "token",
        "--jwt-key-file",
        &key_file,
        "--tenant",
        "demo-tenant",
        "--role",
        "viewer",
        "--pii-reader",
    ]);
    let mut reader_headers = axum::http::HeaderMap::new();
    reader_headers.insert(
        "authorization",
        format!("Bearer {}", stdout(&reader).trim())
            .parse()
            .unwrap(),
    );
    let reading = authenticate(
        &AuthConfig {
            issuer: None,
            ..config.clone()
        },
        &reader_headers,
    )
    .unwrap();
    assert_eq!(
        (reading.role, reading.sees_personal_data),
        (Role::Viewer, true)
    );
    assert_eq!(reading.roles, ["viewer", "pii_reader"]);
    // Another key does not.
    let other = AuthConfig {
        hs256_key: Some(zeroize::Zeroizing::new(vec![b'x'; 32])),
        ..AuthConfig::default()
    };
    assert!(authenticate(&other, &headers).is_err());

    for (args, code, says) in [
        (
            vec!["token", "--tenant", "t"],
            1,
            "no JWT key: give the key the host verifies with",
        ),
        (
            vec![
                "token",
                "--jwt-key-file",
                &key_file,
                "--tenant",
                "t",
                "--role",
                "root",
            ],
            2,
            "invalid value 'root' for '--role",
        ),
        (
            vec![
                "token",
                "--jwt-key-file",
                &key_file,
                "--tenant",
                "t",
                "--ttl-secs",
                "0",
            ],
            1,
            "--ttl-secs must be between 1 and 86400, got 0",
        ),
        (
            vec!["token", "--jwt-key-file", &key_file, "--tenant", "a/b"],
            1,
            "--tenant \"a/b\": 1 to 128 printable ASCII characters",
        ),
    ] {
        let output = adapter_host(&args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty());
    }
    let short = write_file(&dir, "short.key", "too-short");
    let output = adapter_host(&["token", "--jwt-key-file", &short, "--tenant", "t"]);
    assert!(
        stderr(&output).contains("the JWT HS256 key is 9 bytes long"),
        "{}",
        stderr(&output)
    );
}
