//! Sandbox overhead, measured against its floor in the same run.
//!
//! - `floor/instantiate`: a fresh store + instance from the pre-linked template, no call;
//! - `floor/warm_call/*`: a call on one instance kept warm (never done for tenants);
//! - `fresh_call/*`: what every invocation pays: fresh store + instance + call;
//! - `invoke/*`: the whole `Adapter::invoke`, including output limits and contract checks;
//! - `contracts/champion_health`: the contract check alone on champion-health's output.
//!
//! Invocations are async (the sandbox runs guests on fibers so that a deadline can cut a guest
//! blocked in a host call): each iteration is driven to completion on a current-thread runtime,
//! the same for every benchmark, so the ratios compare like with like.
//!
//! `SANDBOX_VARIANTS=name=path.wasm,...` also measures other builds of champion-health (another
//! optimisation level, say) side by side: `variants/warm_call/<name>` and
//! `variants/fresh_call/<name>`, on the same fixture.
//!
//! `cargo bench -p adapter-host --bench sandbox`; BENCHMARKS.md records the ratios.

use std::hint::black_box;
use std::time::SystemTime;

use adapter_host::contracts::{Scope, check_events};
use adapter_host::sandbox::{
    Adapter, ConnectionContext, Env, Input, Limits, PlatformLimits, Sandbox, WebhookRequest, bench,
};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;

fn load(rt: &Runtime, sandbox: &Sandbox, path: &str) -> Adapter {
    rt.block_on(sandbox.load(&std::fs::read(path).unwrap(), Limits::default()))
        .unwrap()
}

fn webhook(body: Vec<u8>) -> Input {
    Input::Webhook(WebhookRequest {
        method: "POST".into(),
        path: "/v1/hooks/bench".into(),
        query: String::new(),
        headers: vec![("content-type".into(), "application/json".into())],
        body,
        received_at: SystemTime::now(),
    })
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sandbox = Sandbox::new(PlatformLimits::default(), None).unwrap();
    let noop = load(&rt, &sandbox, test_artifacts::NOOP);
    let champion = load(&rt, &sandbox, test_artifacts::CHAMPION_HEALTH);
    let body = std::fs::read(test_artifacts::sample_file(
        "champion-health/fixtures/enrollment-1kb.json",
    ))
    .unwrap();
    let champion_input = webhook(body);
    let noop_input = webhook(Vec::new());
    let context = ConnectionContext {
        connection_id: "bench".into(),
        tenant_id: "tenant-bench".into(),
        org_id: None,
        provider: "custom".into(),
        allowed_org_ids: vec!["org-456".into()],
        settings: Vec::new(),
        api_base_url: None,
    };
    let report = rt.block_on(champion.invoke(&champion_input, &context, Env::default()));
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    let events = report.outcome.events().to_vec();
    assert!(!events.is_empty());

    let mut floor = c.benchmark_group("floor");
    floor.bench_function("instantiate/champion_health", |b| {
        b.iter(|| rt.block_on(bench::instantiate(&champion)))
    });
    let mut warm = rt.block_on(bench::warm(&champion));
    floor.bench_function("warm_call/champion_health", |b| {
        b.iter(|| black_box(rt.block_on(warm.call(&champion_input, &context))))
    });
    let mut warm_noop = rt.block_on(bench::warm(&noop));
    floor.bench_function("warm_call/noop", |b| {
        b.iter(|| black_box(rt.block_on(warm_noop.call(&noop_input, &context))))
    });
    floor.finish();

    let mut fresh = c.benchmark_group("fresh_call");
    fresh.bench_function("noop", |b| {
        b.iter(|| black_box(rt.block_on(bench::fresh_call(&noop, &noop_input, &context))))
    });
    fresh.bench_function("champion_health", |b| {
        b.iter(|| black_box(rt.block_on(bench::fresh_call(&champion, &champion_input, &context))))
    });
    fresh.finish();

    let mut invoke = c.benchmark_group("invoke");
    invoke.bench_function("champion_health", |b| {
        b.iter(|| {
            black_box(rt.block_on(champion.invoke(&champion_input, &context, Env::default())))
        })
    });
    invoke.finish();

    if let Ok(list) = std::env::var("SANDBOX_VARIANTS") {
        let mut variants = c.benchmark_group("variants");
        for entry in list.split(',').filter(|e| !e.is_empty()) {
            let (name, path) = entry
                .split_once('=')
                .expect("SANDBOX_VARIANTS is name=path.wasm,...");
            let adapter = load(&rt, &sandbox, path);
            let report = rt.block_on(adapter.invoke(&champion_input, &context, Env::default()));
            let same = |outcome| serde_json::to_string(&outcome).unwrap();
            assert_eq!(
                same(report.outcome),
                same(load_outcome(&rt, &champion, &champion_input, &context)),
                "{name} computes what champion-health computes"
            );
            println!("{name}: {} fuel per invocation", report.usage.fuel_consumed);
            let mut warm = rt.block_on(bench::warm(&adapter));
            variants.bench_function(format!("warm_call/{name}"), |b| {
                b.iter(|| black_box(rt.block_on(warm.call(&champion_input, &context))))
            });
            variants.bench_function(format!("fresh_call/{name}"), |b| {
                b.iter(|| {
                    black_box(rt.block_on(bench::fresh_call(&adapter, &champion_input, &context)))
                })
            });
        }
        variants.finish();
    }

    let scope: Scope = context.scope();
    c.bench_function("contracts/champion_health", |b| {
        b.iter(|| black_box(check_events(&events, champion.declaration(), &scope)))
    });
}

/// What `adapter` computes on `input`: a variant must compute the same.
fn load_outcome(
    rt: &Runtime,
    adapter: &Adapter,
    input: &Input,
    context: &ConnectionContext,
) -> adapter_host::sandbox::Outcome {
    rt.block_on(adapter.invoke(input, context, Env::default()))
        .outcome
}

criterion_group!(sandbox, benches);
criterion_main!(sandbox);
