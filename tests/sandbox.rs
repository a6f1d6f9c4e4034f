//! The sandbox against real components: the sample adapter, a no-op adapter, and a hostile
//! guest that tries everything an adapter must not be able to do. Every hostile test asserts the
//! precise outcome and then checks that a normal invocation on the same adapter still works.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use adapter_host::contracts::Rule;
use adapter_host::sandbox::{
    Adapter, AdapterErrorKind, ConnectionContext, Env, Error, FailureKind, Input, Limits, LogLevel,
    Outcome, PlatformLimits, PollPage, Report, Sandbox, StateMap, WebhookRequest, WorldVersion,
};

/// The runtime the sandbox's async calls run on (one per test process).
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    rt().block_on(future)
}

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let cache = std::path::Path::new(test_artifacts::REPO_ROOT).join("target/test-cache");
        Sandbox::new(PlatformLimits::default(), Some(&cache)).expect("sandbox")
    })
}

fn load(path: &str, limits: Limits) -> Adapter {
    let wasm = std::fs::read(path).expect("guest built by test-artifacts");
    block_on(sandbox().load(&wasm, limits)).expect("loads")
}

fn hostile() -> &'static Adapter {
    static HOSTILE: OnceLock<Adapter> = OnceLock::new();
    HOSTILE.get_or_init(|| load(test_artifacts::HOSTILE, Limits::default()))
}

fn context() -> ConnectionContext {
    // A platform-level connection (it may emit platform-level events) allowing two orgs.
    ConnectionContext {
        connection_id: "conn-1".into(),
        tenant_id: "tenant-a".into(),
        org_id: None,
        provider: "custom".into(),
        allowed_org_ids: vec!["org-1".into(), "org-2".into()],
        settings: vec![("region".into(), "eu".into())],
        api_base_url: None,
    }
}

fn webhook(body: impl Into<Vec<u8>>) -> Input {
    Input::Webhook(WebhookRequest {
        method: "POST".into(),
        path: "/v1/hooks/conn-1".into(),
        query: String::new(),
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.into(),
        received_at: SystemTime::now(),
    })
}

fn run(adapter: &Adapter, command: &str) -> Report {
    invoke(adapter, &webhook(command), StateMap::new())
}

fn invoke(adapter: &Adapter, input: &Input, state: StateMap) -> Report {
    block_on(adapter.invoke(input, &context(), Env::with_state(state)))
}

/// A normal invocation right after a hostile one: the adapter, and the host, still work.
fn assert_still_serving(adapter: &Adapter) {
    let report = run(adapter, "ok");
    assert!(
        matches!(&report.outcome, Outcome::Accepted { events, .. } if events.len() == 1),
        "a normal invocation after a hostile one: {:?}",
        report.outcome
    );
}

fn failure(report: &Report) -> (FailureKind, &str) {
    match &report.outcome {
        Outcome::Failed { failure } => (failure.kind, failure.message.as_str()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn violations(report: &Report) -> Vec<(usize, &str, Rule)> {
    match &report.outcome {
        Outcome::Rejected { violations } => violations
            .iter()
            .map(|v| (v.event_index, v.pointer.as_str(), v.rule))
            .collect(),
        other => panic!("expected violations, got {other:?}"),
    }
}

#[test]
fn an_infinite_loop_is_stopped_at_the_deadline() {
    let report = run(hostile(), "loop");
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::Deadline);
    assert!(message.contains("deadline of 100 ms"), "{message}");
    // Stopped near the deadline, not long after it (the epoch tick is 5 ms).
    assert!(
        report.usage.duration >= Duration::from_millis(100),
        "{:?}",
        report.usage
    );
    assert!(
        report.usage.duration < Duration::from_secs(2),
        "{:?}",
        report.usage
    );
    assert_still_serving(hostile());
}

#[test]
fn polls_run_under_their_own_deadline() {
    let adapter = load(
        test_artifacts::HOSTILE,
        Limits {
            deadline_ms: 50,
            poll_deadline_ms: 400,
            ..Limits::default()
        },
    );
    let report = run(&adapter, "loop");
    let (_, message) = failure(&report);
    assert!(message.contains("deadline of 50 ms"), "{message}");
    let page = Input::Poll(PollPage::pushed(
        b"loop".to_vec(),
        None,
        None,
        SystemTime::now(),
    ));
    let report = invoke(&adapter, &page, StateMap::new());
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::Deadline);
    assert!(message.contains("deadline of 400 ms"), "{message}");
    assert!(report.usage.duration >= Duration::from_millis(400));
    // Beyond the platform's ceiling, refused like any limit.
    let wasm = std::fs::read(test_artifacts::HOSTILE).unwrap();
    let error = block_on(sandbox().load(
        &wasm,
        Limits {
            poll_deadline_ms: 3_600_000,
            ..Limits::default()
        },
    ))
    .unwrap_err();
    assert!(error.to_string().contains("poll_deadline_ms"), "{error}");
}

#[test]
fn a_fuel_budget_stops_a_loop_before_the_deadline() {
    let adapter = load(
        test_artifacts::HOSTILE,
        Limits {
            fuel: Some(5_000_000),
            deadline_ms: 5_000,
            ..Limits::default()
        },
    );
    let report = run(&adapter, "loop");
    assert_eq!(failure(&report).0, FailureKind::FuelExhausted);
    assert_eq!(report.usage.fuel_limit, Some(5_000_000));
    assert_eq!(report.usage.fuel_consumed, 5_000_000);
    assert_still_serving(&adapter);
}

#[test]
fn a_memory_bomb_hits_the_memory_cap() {
    // With time to spare: on a loaded machine, touching 64 MiB can take longer than the
    // default deadline, and memory is what must stop it here.
    static PATIENT: OnceLock<Adapter> = OnceLock::new();
    let patient = PATIENT.get_or_init(|| {
        load(
            test_artifacts::HOSTILE,
            Limits {
                deadline_ms: 10_000,
                ..Limits::default()
            },
        )
    });
    let report = run(patient, "alloc");
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::MemoryLimit, "{message}");
    assert!(message.contains("the limit is 67108864"), "{message}");
    assert!(report.usage.peak_memory_bytes <= 64 * 1024 * 1024);
    assert!(report.usage.peak_memory_bytes > 32 * 1024 * 1024);
    assert_still_serving(hostile());
}

#[test]
fn a_stack_overflow_is_reported_as_such() {
    let report = run(hostile(), "stack");
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::StackOverflow, "{message}");
    assert!(
        message.contains("unbounded recursion in `hostile::recurse`"),
        "{message}"
    );
    let Outcome::Failed { failure } = &report.outcome else {
        unreachable!()
    };
    assert!(
        failure.backtrace[0].starts_with("hostile::recurse (×"),
        "{:?}",
        failure.backtrace
    );
    assert_still_serving(hostile());
}

#[test]
fn a_panic_is_reported_with_its_message_and_location() {
    let report = run(hostile(), "panic");
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::Panic);
    assert!(
        message.contains("hostile guest panicked on purpose"),
        "{message}"
    );
    assert!(message.contains("src/lib.rs"), "{message}");
    // The guest's stderr is kept in the log for the tenant.
    assert!(report.log.lines.iter().any(|l| l.level == LogLevel::Stderr));
    assert_still_serving(hostile());
}

#[test]
fn floats_in_a_payload_are_refused_with_their_pointer() {
    let report = run(hostile(), "float");
    assert_eq!(
        violations(&report),
        [(0, "/payload/ratio", Rule::FractionalNumber)]
    );
    assert_still_serving(hostile());
}

#[test]
fn integers_beyond_two_to_the_53_are_refused() {
    let report = run(hostile(), "big-int");
    let Outcome::Rejected { violations } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(violations[0].rule, Rule::UnsafeInteger);
    assert_eq!(violations[0].pointer, "/payload/n");
    assert_eq!(violations[0].value.as_deref(), Some("9007199254740993"));
}

#[test]
fn a_declared_decimal_sent_as_a_number_or_in_exponent_form_is_refused() {
    let rules: Vec<Rule> = violations(&run(hostile(), "decimal-number"))
        .into_iter()
        .map(|(_, pointer, rule)| {
            assert_eq!(pointer, "/payload/amount");
            rule
        })
        .collect();
    assert!(rules.contains(&Rule::DecimalNotString), "{rules:?}");
    assert_eq!(
        violations(&run(hostile(), "decimal-bad")),
        [(0, "/payload/amount", Rule::DecimalNotCanonical)]
    );
}

#[test]
fn an_org_outside_the_allowed_set_is_refused() {
    let report = run(hostile(), "foreign-org");
    assert_eq!(violations(&report), [(0, "/org_id", Rule::OrgNotAllowed)]);
    assert_still_serving(hostile());
}

#[test]
fn a_tenant_id_smuggled_into_the_payload_is_refused() {
    let report = run(hostile(), "foreign-tenant");
    assert_eq!(
        violations(&report),
        [(0, "/payload/tenant_id", Rule::TenantMismatch)]
    );
}

#[test]
fn an_event_type_without_a_dot_is_refused() {
    let report = run(hostile(), "no-dot");
    let found = violations(&report);
    assert_eq!(
        found[0],
        (0, "/event_type", Rule::EventTypeFormat),
        "{found:?}"
    );
}

#[test]
fn an_undeclared_event_type_is_refused() {
    let report = run(hostile(), "undeclared");
    assert_eq!(
        violations(&report),
        [(0, "/event_type", Rule::UndeclaredEventType)]
    );
}

#[test]
fn a_hundred_thousand_events_exceed_the_output_limit() {
    // Building 100k events takes the guest longer than the default deadline: give it time, so
    // that it is the output limit that stops it.
    let adapter = load(
        test_artifacts::HOSTILE,
        Limits {
            deadline_ms: 10_000,
            ..Limits::default()
        },
    );
    let report = run(&adapter, "many-events");
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::OutputLimit);
    // 100,000 events are more than the host copies out for 1,000: it stops copying, and says
    // so with the figures.
    assert!(
        message.contains("room for 1000 events") && message.contains("1048576 bytes"),
        "{message}"
    );
    assert_still_serving(hostile());
}

#[test]
fn a_huge_payload_exceeds_the_output_bytes_limit() {
    // Building the payloads takes the guest tens of milliseconds, more on a loaded machine:
    // a deadline it cannot reach, so that only the output limit can stop it.
    let unhurried = Limits {
        deadline_ms: 10_000,
        ..Limits::default()
    };
    let adapter = load(test_artifacts::HOSTILE, unhurried.clone());
    let report = run(&adapter, "huge-payload");
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::OutputLimit, "{message}");
    assert!(message.contains("1048576"), "{message}");
    // Within what the host copies, but over the limit: counted and named.
    let adapter = load(
        test_artifacts::HOSTILE,
        Limits {
            output_bytes: 64 * 1024,
            max_events: 10_000,
            ..unhurried
        },
    );
    let report = run(&adapter, "huge-error\n1");
    assert!(matches!(report.outcome, Outcome::AdapterError { .. }));
    let report = run(&adapter, "copy-bomb\n1\n1");
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::OutputLimit, "{message}");
}

#[test]
fn a_log_flood_is_truncated_at_the_log_cap_and_marked() {
    let report = run(hostile(), "log-flood");
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    assert!(report.log.truncated);
    assert!(report.log.bytes <= 64 * 1024, "{}", report.log.bytes);
    assert!(report.log.dropped_bytes >= 10_000 * 1024 - 64 * 1024);
    assert_eq!(report.usage.log_bytes, report.log.bytes);
}

fn probe(command: &str) -> serde_json::Value {
    let report = run(hostile(), command);
    let events = report.outcome.events();
    assert_eq!(events.len(), 1, "{:?}", report.outcome);
    serde_json::from_str(&events[0].payload).unwrap()
}

#[test]
fn nothing_an_invocation_leaves_in_memory_reaches_the_next() {
    // Every invocation writes a static and 64 KiB of heap; each must start from the
    // component's initial memory however the pool recycles its slot.
    for _ in 0..4 {
        let report = run(hostile(), "remember");
        let events = report.outcome.events();
        assert_eq!(events.len(), 1, "{:?}", report.outcome);
        let seen: serde_json::Value = serde_json::from_str(&events[0].payload).unwrap();
        assert_eq!(seen["calls"], 1, "{seen}");
        assert_eq!(seen["heap_bytes"], 64 * 1024, "{seen}");
    }
}

#[test]
fn the_file_system_is_out_of_reach() {
    let result = probe("file");
    assert_eq!(result["allowed"], false, "{result}");
    assert!(
        !result["detail"].as_str().unwrap().contains("root:"),
        "{result}"
    );
}

#[test]
fn environment_variables_and_arguments_are_out_of_reach() {
    // The host process has variables of its own; none may leak into the guest.
    assert!(std::env::var_os("PATH").is_some());
    let result = probe("env");
    assert_eq!(result["allowed"], false, "{result}");
}

#[test]
fn sockets_are_out_of_reach() {
    let result = probe("socket");
    assert_eq!(result["allowed"], false, "{result}");
}

#[test]
fn adapter_errors_are_reported_by_kind() {
    assert!(matches!(
        run(hostile(), "bad-request").outcome,
        Outcome::AdapterError { kind: AdapterErrorKind::BadRequest, ref message } if message == "hostile says no"
    ));
    assert!(matches!(
        run(hostile(), "fail").outcome,
        Outcome::AdapterError { kind: AdapterErrorKind::Failed, ref message } if message == "hostile failed"
    ));
    let ignored = run(hostile(), "ignored");
    assert!(
        matches!(ignored.outcome, Outcome::Ignored { ref reason } if reason == "not interesting")
    );
    assert!(ignored.outcome.is_success());
}

#[test]
fn state_changes_are_returned_only_when_the_invocation_succeeds() {
    let report = run(hostile(), "state-set\ncursor\n42");
    let state = report
        .state
        .expect("a successful invocation that wrote state returns it");
    assert_eq!(state.get("cursor").map(Vec::as_slice), Some(&b"42"[..]));

    // The next invocation sees what the previous one saved.
    let report = invoke(hostile(), &webhook("state-get\ncursor"), state.clone());
    let payload: serde_json::Value =
        serde_json::from_str(&report.outcome.events()[0].payload).unwrap();
    assert_eq!(payload["value"], "42");
    assert!(report.state.is_none(), "reading does not change the state");

    // A failing invocation's writes are discarded.
    let report = invoke(hostile(), &webhook("state-bomb"), state);
    let Outcome::AdapterError { message, .. } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(message.contains("too large"), "{message}");
    assert!(report.state.is_none());
}

#[test]
fn stderr_lands_in_the_log() {
    let report = run(hostile(), "stderr");
    assert!(report.outcome.is_success());
    assert!(
        report
            .log
            .lines
            .iter()
            .any(|l| l.level == LogLevel::Stderr && l.message == "to stderr"),
        "{:?}",
        report.log
    );
}

#[test]
fn input_beyond_the_limit_is_refused_before_the_adapter_runs() {
    let adapter = load(
        test_artifacts::HOSTILE,
        Limits {
            input_bytes: 16,
            ..Limits::default()
        },
    );
    let report = run(&adapter, "ok\nthis body is longer than sixteen bytes");
    assert_eq!(failure(&report).0, FailureKind::InputTooLarge);
    assert_eq!(report.usage.fuel_consumed, 0);
}

#[test]
fn polls_return_events_and_the_next_cursor() {
    let page = Input::Poll(PollPage::pushed(
        b"[]".to_vec(),
        Some("application/json".into()),
        Some("abc".into()),
        SystemTime::now(),
    ));
    let report = invoke(hostile(), &page, StateMap::new());
    assert!(
        matches!(&report.outcome, Outcome::Accepted { events, next_cursor, .. } if events.len() == 1 && next_cursor.as_deref() == Some("abcx")),
        "{:?}",
        report.outcome
    );
}

#[test]
fn usage_is_reported_for_every_invocation() {
    let report = run(hostile(), "ok");
    let usage = &report.usage;
    assert!(usage.fuel_consumed > 0);
    assert!(usage.peak_memory_bytes > 0);
    assert_eq!(usage.bytes_in, 2);
    assert!(usage.bytes_out > 0);
    assert_eq!(usage.events, 1);
    assert!(usage.duration > Duration::ZERO);
}

#[test]
fn a_looping_tenant_does_not_starve_the_others() {
    let looping = std::thread::spawn(|| (0..3).map(|_| run(hostile(), "loop")).collect::<Vec<_>>());
    let noop = load(test_artifacts::NOOP, Limits::default());
    for _ in 0..50 {
        assert!(run(&noop, "").outcome.is_success());
    }
    for report in looping.join().unwrap() {
        assert_eq!(failure(&report).0, FailureKind::Deadline);
    }
}

#[test]
fn a_component_importing_an_unknown_interface_is_rejected_at_load() {
    let wasm = wat::parse_str(
        r#"(component
            (import "evil:net/raw-socket@1.0.0" (instance))
            (import "wasi:http/outgoing-handler@0.2.0" (instance)))"#,
    )
    .unwrap();
    let err = block_on(sandbox().load(&wasm, Limits::default())).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::World(_)), "{err:?}");
    assert!(
        message.contains("imports `evil:net/raw-socket@1.0.0`"),
        "{message}"
    );
    assert!(
        message.contains("imports `wasi:http/outgoing-handler@0.2.0`"),
        "{message}"
    );
    assert!(
        message
            .contains("does not export `crm:adapter/adapter@0.1.0` or `crm:adapter/adapter@0.2.0`"),
        "{message}"
    );
}

#[test]
fn a_refused_component_is_refused_before_compiling_and_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(PlatformLimits::default(), Some(dir.path())).unwrap();
    // A component with a core module inside (what compiling would spend its time on) and an
    // import outside the world.
    let wasm = wat::parse_str(
        r#"(component
            (import "evil:net/raw-socket@1.0.0" (instance))
            (core module (func (export "f") (result i32) i32.const 1)))"#,
    )
    .unwrap();
    let err = block_on(sandbox.load(&wasm, Limits::default())).unwrap_err();
    assert!(matches!(err, Error::World(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("imports `evil:net/raw-socket@1.0.0`"),
        "{err}"
    );
    assert!(
        walk(dir.path()).is_empty(),
        "nothing cached: {:?}",
        walk(dir.path())
    );
    // A core module is named as such.
    let err = block_on(sandbox.load(&wat::parse_str("(module)").unwrap(), Limits::default()))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("this is a core WebAssembly module"),
        "{err}"
    );
}

#[test]
fn a_component_over_its_instance_limit_is_refused_by_name_before_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(PlatformLimits::default(), Some(dir.path())).unwrap();
    // 38 core instances and 3 tables, as a Python component built with `--stub-wasi` has.
    let wasm = wat::parse_str(format!(
        "(component (core module $m (table 1 funcref) (table 1 funcref) (table 1 funcref)) {})",
        "(core instance (instantiate $m))".repeat(38)
    ))
    .unwrap();
    let tight = Limits {
        tables: 2,
        ..Limits::default()
    };
    let err = block_on(sandbox.load(&wasm, tight)).unwrap_err();
    assert!(matches!(err, Error::Limits(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "invalid limits: the component creates 38 core instances, over its `instances` limit \
         of 32 (the platform allows up to 64); the component creates 3 tables, over its \
         `tables` limit of 2 (the platform allows up to 64)"
    );
    assert!(walk(dir.path()).is_empty(), "{:?}", walk(dir.path()));
    // Within a raised limit, the count is no obstacle: what is judged next is the world.
    let raised = Limits {
        instances: 38,
        ..Limits::default()
    };
    let err = block_on(sandbox.load(&wasm, raised)).unwrap_err();
    assert!(matches!(err, Error::World(_)), "{err:?}");
}

#[test]
fn a_component_without_the_adapter_export_is_rejected_at_load() {
    let wasm = wat::parse_str("(component)").unwrap();
    let err = block_on(sandbox().load(&wasm, Limits::default())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the component does not implement the adapter world: does not export \
         `crm:adapter/adapter@0.1.0` or `crm:adapter/adapter@0.2.0`"
    );
}

#[test]
fn bytes_that_are_not_a_component_are_rejected_clearly() {
    for bytes in [
        &b"not wasm at all"[..],
        &wat::parse_str("(module)").unwrap(),
    ] {
        let err = block_on(sandbox().load(bytes, Limits::default())).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("not a valid component"),
            "{err}"
        );
    }
}

#[test]
fn limits_beyond_the_platform_are_rejected() {
    let wasm = std::fs::read(test_artifacts::NOOP).unwrap();
    let err = block_on(sandbox().load(
        &wasm,
        Limits {
            memory_bytes: 1 << 40,
            ..Limits::default()
        },
    ))
    .unwrap_err();
    assert!(matches!(err, Error::Limits(_)), "{err:?}");
}

#[test]
fn compiled_artifacts_are_cached_by_content_hash_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(test_artifacts::NOOP).unwrap();
    let sandbox = Sandbox::new(PlatformLimits::default(), Some(dir.path())).unwrap();
    let adapter = block_on(sandbox.load(&wasm, Limits::default())).unwrap();
    let artifact = walk(dir.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("an artifact in the cache");
    assert!(
        artifact
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(adapter.sha256())
    );
    std::fs::write(&artifact, b"garbage").unwrap();
    // While a version of these bytes is loaded, another version shares its compiled code and
    // instance template: nothing is compiled or read from the cache again.
    let shared = block_on(sandbox.load(&wasm, Limits::default())).unwrap();
    assert!(run(&shared, "").outcome.is_success());
    assert_eq!(std::fs::read(&artifact).unwrap(), b"garbage", "not read");
    // Once none is loaded, a corrupted artifact is detected and replaced, not executed.
    drop((adapter, shared));
    let again = block_on(sandbox.load(&wasm, Limits::default())).unwrap();
    assert!(run(&again, "").outcome.is_success());
    assert_ne!(std::fs::read(&artifact).unwrap(), b"garbage");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Hardening: what a careless or hostile guest can no longer do

#[test]
fn a_guest_blocked_in_a_wasi_sleep_is_stopped_at_its_deadline() {
    // `sleep` blocks in a clock wait for 3 s: no wasm runs, so no epoch check can stop it;
    // the watchdog must, at the 100 ms deadline.
    let started = std::time::Instant::now();
    let report = run(hostile(), "sleep\n3000");
    let elapsed = started.elapsed();
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::Deadline, "{message}");
    assert!(message.contains("deadline of 100 ms"), "{message}");
    assert!(message.contains("blocked"), "{message}");
    assert!(elapsed < Duration::from_millis(1_000), "{elapsed:?}");
    assert!(report.usage.duration < Duration::from_millis(1_000));
    // A sleep within the deadline is fine.
    let report = run(hostile(), "sleep\n5");
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    assert_still_serving(hostile());
}

#[test]
fn concurrent_sleepers_hold_their_slots_only_until_the_deadline() {
    let hostile = hostile().clone();
    let started = std::time::Instant::now();
    let reports: Vec<Report> = block_on(async {
        let sleepers = (0..4).map(|_| {
            let adapter = hostile.clone();
            tokio::spawn(async move {
                adapter
                    .invoke(&webhook("sleep\n30000"), &context(), Env::default())
                    .await
            })
        });
        let mut reports = Vec::new();
        for sleeper in sleepers.collect::<Vec<_>>() {
            reports.push(sleeper.await.unwrap());
        }
        reports
    });
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for report in &reports {
        assert_eq!(failure(report).0, FailureKind::Deadline);
    }
}

#[test]
fn a_flood_of_empty_lines_costs_the_log_budget() {
    // 4 MiB of bare newlines on stdout: every line costs its framing, so the stored log stays
    // within the 64 KiB budget, however many lines the guest writes. (A long deadline: this
    // test host is a debug build, and the point here is the log, not the time.)
    let adapter = load(
        test_artifacts::HOSTILE,
        Limits {
            deadline_ms: 10_000,
            ..Limits::default()
        },
    );
    let report = run(&adapter, "newlines\n4194304");
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    let log = &report.log;
    assert!(log.truncated);
    assert!(
        log.lines.len() <= 64 * 1024 / 32,
        "{} lines",
        log.lines.len()
    );
    assert!(log.dropped_lines > 4_000_000, "{}", log.dropped_lines);
    let stored = serde_json::to_string(log).unwrap();
    assert!(stored.len() <= 64 * 1024 + 256, "{} bytes", stored.len());
    assert_still_serving(&adapter);
}

#[test]
fn a_huge_adapter_error_is_cut_and_marked() {
    // Within what the host copies out (the output limit and then some): kept cut and marked.
    let report = run(hostile(), "huge-error\n1000000");
    let Outcome::AdapterError { kind, message } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(*kind, AdapterErrorKind::Failed);
    assert!(message.len() < 5_000, "{} bytes", message.len());
    assert!(
        message.ends_with("…[truncated, 1000000 bytes]"),
        "{}",
        &message[message.len() - 40..]
    );
    // Beyond it (15 MB against a 1 MiB output limit), the host does not even copy it.
    let report = run(hostile(), "huge-error\n15000000");
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::OutputLimit, "{message}");
    assert!(message.len() < 1_000);
    assert_still_serving(hostile());
}

#[test]
fn output_larger_than_the_host_copies_is_an_output_limit_with_its_figures() {
    // Two events of 9 MiB each against the 16 MiB output limit: the host stops copying at its
    // hostcall budget (output limit plus records), before holding all of it, and says so.
    let limits = Limits {
        output_bytes: 16 << 20,
        memory_bytes: 128 << 20,
        deadline_ms: 5_000,
        ..Limits::default()
    };
    let adapter = load(test_artifacts::HOSTILE, limits.clone());
    let report = run(&adapter, "copy-bomb\n2\n9");
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::OutputLimit, "{message}");
    assert!(
        message.contains(&limits.hostcall_bytes().to_string())
            && message.contains(&(16u64 << 20).to_string()),
        "{message}"
    );
    // Within the budget, the output limit's own check applies, with its figures.
    let report = run(&adapter, "copy-bomb\n1\n9");
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    assert_still_serving(&adapter);
}

#[test]
fn an_org_connection_cannot_emit_platform_level_events() {
    let org_context = ConnectionContext {
        org_id: Some("org-1".into()),
        ..context()
    };
    // `ok` emits an event without an org: platform level, which only a platform-level
    // connection may publish.
    let report = block_on(hostile().invoke(&webhook("ok"), &org_context, Env::default()));
    assert_eq!(violations(&report), [(0, "/org_id", Rule::OrgNotAllowed)]);
    let report = block_on(hostile().invoke(&webhook("ok"), &context(), Env::default()));
    assert!(report.outcome.is_success());
}

#[test]
fn a_frozen_0_1_0_component_keeps_working_unchanged() {
    let legacy = load(test_artifacts::LEGACY_V0_1, Limits::default());
    assert_eq!(legacy.world_version(), WorldVersion::V0_1);
    assert_eq!(legacy.info().name, "legacy");
    assert_eq!(
        legacy.info().event_types[0].decimal_fields,
        ["/amount"],
        "describe of 0.1.0"
    );
    // Webhooks, state, the log and the contracts, as before.
    let mut state = StateMap::new();
    state.insert("calls".into(), b"41".to_vec());
    let report = invoke(&legacy, &webhook("D-1"), state);
    let Outcome::Accepted { events, .. } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(
        (events[0].entity_id.as_str(), events[0].payload.as_str()),
        ("D-1", r#"{"calls":42,"amount":"12.50"}"#)
    );
    assert_eq!(report.state.as_ref().unwrap().get("calls").unwrap(), b"42");
    assert!(report.log.lines[0].message.starts_with("legacy call 42"));
    // Pushed poll pages through its 0.1.0 handle-poll.
    let page = Input::Poll(PollPage::pushed(
        b"{}".to_vec(),
        None,
        Some("c".into()),
        SystemTime::now(),
    ));
    let report = invoke(&legacy, &page, StateMap::new());
    assert!(
        matches!(&report.outcome, Outcome::Accepted { next_cursor, more: false, .. } if next_cursor.as_deref() == Some("c+")),
        "{:?}",
        report.outcome
    );
    // What 0.1.0 cannot do is refused, not attempted.
    let report = invoke(
        &legacy,
        &Input::PollRequest { cursor: None },
        StateMap::new(),
    );
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::Unsupported);
    assert!(message.contains("crm:adapter@0.1.0"), "{message}");
    // The SDK's adapters are 0.2.0.
    assert_eq!(hostile().world_version(), WorldVersion::V0_2);
}
