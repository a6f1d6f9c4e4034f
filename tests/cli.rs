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
