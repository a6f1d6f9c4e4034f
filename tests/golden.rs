//! Golden tests: every folder `sample-adapters/<adapter>/golden/<case>/` holds a `case.json`
//! (the input) and an `expected.json` (what the host must produce), run through the real host
//! runtime. `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the expected files; review the
//! diff before committing it.
//!
//! `case.json`:
//! ```json
//! { "kind": "webhook" | "poll", "body": "fixtures/x.json" (relative to the adapter folder),
//!   "headers": {"Content-Type": "application/json"}, "orgs": ["org-1"],
//!   "connection_org": "org-1", "settings": {"k": "v"}, "cursor": null,
//!   "state": {"key": "value"} }
//! ```
//! Without `connection_org` the connection is platform level (it may emit platform-level
//! events); with it, it belongs to that org (which it then also allows).
//! `expected.json`: the outcome (status and events, violations, or failure kind and message)
//! and the state after the run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use adapter_host::sandbox::{
    Adapter, ConnectionContext, Env, Input, Limits, Outcome, PlatformLimits, PollPage, Sandbox,
    WebhookRequest,
};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    kind: Kind,
    body: PathBuf,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    orgs: Vec<String>,
    #[serde(default)]
    connection_org: Option<String>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    state: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Webhook,
    Poll,
}

/// A fixed clock, so that outputs which mention the time are reproducible.
fn fixed_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_583_200)
}

fn run_case(adapter: &Adapter, adapter_dir: &Path, case: &Case) -> Value {
    let body = std::fs::read(adapter_dir.join(&case.body))
        .unwrap_or_else(|e| panic!("reading {}: {e}", case.body.display()));
    let input = match case.kind {
        Kind::Webhook => Input::Webhook(WebhookRequest {
            method: "POST".into(),
            path: "/v1/hooks/golden".into(),
            query: String::new(),
            headers: case.headers.clone().into_iter().collect(),
            body,
            received_at: fixed_time(),
        }),
        Kind::Poll => Input::Poll(PollPage::pushed(
            body,
            Some("application/json".into()),
            case.cursor.clone(),
            fixed_time(),
        )),
    };
    let mut allowed_org_ids = case.orgs.clone();
    allowed_org_ids.extend(
        case.connection_org
            .iter()
            .filter(|org| !case.orgs.contains(org))
            .cloned(),
    );
    let context = ConnectionContext {
        connection_id: "golden-connection".into(),
        tenant_id: "golden-tenant".into(),
        org_id: case.connection_org.clone(),
        provider: adapter.info().provider.clone(),
        allowed_org_ids,
        settings: case.settings.clone().into_iter().collect(),
        api_base_url: None,
    };
    let state = case
        .state
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    let report = runtime().block_on(adapter.invoke(&input, &context, Env::with_state(state)));
    let mut outcome = serde_json::to_value(&report.outcome).unwrap();
    if let Outcome::Accepted { events, .. } = &report.outcome {
        // Payloads are compared as JSON text exactly as emitted: that is what gets stored.
        outcome["events"] = events
            .iter()
            .map(|e| {
                json!({
                    "event_type": e.event_type, "entity_type": e.entity_type,
                    "entity_id": e.entity_id, "org_id": e.org_id,
                    "dedupe_key": e.dedupe_key, "idempotency_key": e.idempotency_key,
                    "payload": e.payload,
                })
            })
            .collect();
    }
    if let Outcome::Failed { failure } = &report.outcome {
        outcome["failure"] = json!({"kind": failure.kind, "message": failure.message});
    }
    let state: Option<BTreeMap<&String, String>> = report.state.as_ref().map(|s| {
        s.iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(v).into_owned()))
            .collect()
    });
    json!({ "outcome": outcome, "state_after": state })
}

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let root = Path::new(test_artifacts::REPO_ROOT).join("sample-adapters");
    let mut trials = Vec::new();
    let mut adapter_dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("golden").is_dir())
        .collect();
    adapter_dirs.sort();
    for adapter_dir in adapter_dirs {
        let stem = adapter_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('-', "_");
        let mut cases: Vec<PathBuf> = std::fs::read_dir(adapter_dir.join("golden"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        cases.sort();
        for case_dir in cases {
            let name = format!(
                "{stem}::{}",
                case_dir.file_name().unwrap().to_string_lossy()
            );
            let (stem, adapter_dir) = (stem.clone(), adapter_dir.clone());
            trials.push(libtest_mimic::Trial::test(name, move || {
                check_case(&stem, &adapter_dir, &case_dir)
            }));
        }
    }
    assert!(
        !trials.is_empty(),
        "no golden cases under {}",
        root.display()
    );
    libtest_mimic::run(&args, trials).exit_code()
}

/// The runtime invocations run on (one per process; the cases run on libtest's threads).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Loads (once per adapter and process) the component built from `stem`.
fn adapter(stem: &str) -> Adapter {
    static ADAPTERS: Mutex<BTreeMap<String, Adapter>> = Mutex::new(BTreeMap::new());
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    let sandbox = SANDBOX.get_or_init(|| Sandbox::new(PlatformLimits::default(), None).unwrap());
    let mut adapters = ADAPTERS.lock().unwrap();
    adapters
        .entry(stem.to_owned())
        .or_insert_with(|| {
            let path = test_artifacts::component(stem).unwrap_or_else(|| {
                panic!(
                    "no component built for {stem} (a sample in Python or JavaScript is built \
                     by scripts/build-polyglot.sh, which scripts/test.sh runs first)"
                )
            });
            runtime()
                .block_on(sandbox.load(&std::fs::read(path).unwrap(), Limits::default()))
                .unwrap_or_else(|e| panic!("loading {stem}: {e}"))
        })
        .clone()
}

fn check_case(
    stem: &str,
    adapter_dir: &Path,
    case_dir: &Path,
) -> Result<(), libtest_mimic::Failed> {
    let case: Case = serde_json::from_str(&std::fs::read_to_string(case_dir.join("case.json"))?)
        .map_err(|e| format!("case.json: {e}"))?;
    let actual = run_case(&adapter(stem), adapter_dir, &case);
    let expected_path = case_dir.join("expected.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(
            &expected_path,
            serde_json::to_string_pretty(&actual)? + "\n",
        )?;
    }
    let expected: Value = std::fs::read_to_string(&expected_path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    if actual == expected {
        Ok(())
    } else {
        Err(format!(
            "--- expected\n{}\n--- actual\n{}",
            serde_json::to_string_pretty(&expected)?,
            serde_json::to_string_pretty(&actual)?
        )
        .into())
    }
}
