//! What encryption at rest costs a webhook delivery: sealing what the store writes of it (the
//! raw body, the event's payload, the invocation's log) under the tenant's data key, and opening
//! them again, against the body's sha256 that every delivery computes anyway, in the same run.
//!
//! `cargo bench -p adapter-host --bench sealing`

use std::sync::Arc;

use adapter_host::secrets::InMemorySecretStore;
use adapter_host::vault::{Purpose, Vault};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let body = std::fs::read(test_artifacts::sample_file(
        "champion-health/fixtures/enrollment-1kb.json",
    ))
    .unwrap();
    // What champion-health emits and logs for that body (its golden case).
    let expected = std::fs::read_to_string(test_artifacts::sample_file(
        "champion-health/golden/enrollment-numbers-become-decimal-strings/expected.json",
    ))
    .unwrap();
    let expected: serde_json::Value = serde_json::from_str(&expected).unwrap();
    let payload = expected["outcome"]["events"][0]["payload"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = serde_json::json!({
        "lines": [{"level": "info", "message": "enrollment E-1001 for member M-1001 mapped"}],
        "bytes": 44, "truncated": false, "dropped_bytes": 0,
    })
    .to_string();
    let vault = Vault::new(Arc::new(InMemorySecretStore::new()));
    // The key is made and cached by the first seal, as by a tenant's first delivery.
    vault.seal("tenant-a", Purpose::Body, b"warm").unwrap();

    let mut group = c.benchmark_group(format!(
        "sealing per delivery ({} B body, {} B payload, {} B log)",
        body.len(),
        payload.len(),
        log.len()
    ));
    group.bench_function("sha256 of the body (baseline)", |b| {
        b.iter(|| adapter_host::sandbox::sha256_hex(&body))
    });
    group.bench_function("seal body, payload and log", |b| {
        b.iter(|| {
            (
                vault.seal("tenant-a", Purpose::Body, &body).unwrap(),
                vault
                    .seal_text("tenant-a", Purpose::Payload, &payload)
                    .unwrap(),
                vault.seal_text("tenant-a", Purpose::Log, &log).unwrap(),
            )
        })
    });
    let sealed = (
        vault.seal("tenant-a", Purpose::Body, &body).unwrap(),
        vault
            .seal_text("tenant-a", Purpose::Payload, &payload)
            .unwrap(),
        vault.seal_text("tenant-a", Purpose::Log, &log).unwrap(),
    );
    group.bench_function("open body, payload and log", |b| {
        b.iter(|| {
            (
                vault.open(Purpose::Body, sealed.0.clone()).unwrap(),
                vault.open_text(Purpose::Payload, sealed.1.clone()).unwrap(),
                vault.open_text(Purpose::Log, sealed.2.clone()).unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
