//! The cost of signing an event's provenance record, against what the pipeline does for every
//! event anyway (the metadata JSON, the payload's contract check), measured in the same run.
//!
//! `cargo bench -p adapter-host --bench provenance`

use std::sync::Arc;

use adapter_contracts::{Declaration, EmittedEvent, Scope, check_events};
use adapter_host::provenance::{EventFacts, Origin, Provenance, event_digest};
use adapter_host::secrets::InMemorySecretStore;
use criterion::{Criterion, criterion_group, criterion_main};

/// The payload champion-health emits for its 1 KB enrollment (from its golden case): what an
/// event holds, decimals as strings.
fn payload() -> String {
    let expected = std::fs::read_to_string(test_artifacts::sample_file(
        "champion-health/golden/enrollment-numbers-become-decimal-strings/expected.json",
    ))
    .unwrap();
    let expected: serde_json::Value = serde_json::from_str(&expected).unwrap();
    expected["outcome"]["events"][0]["payload"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn bench(c: &mut Criterion) {
    let provenance = Provenance::new(Arc::new(InMemorySecretStore::new()));
    let signer = provenance.signer().unwrap();
    let payload = payload();
    let facts = EventFacts {
        event_id: "0193f2d4-6a8e-7c1b-9f00-1234567890ab",
        org_id: Some("org-456"),
        event_type: "enrollment.created",
        entity_type: "enrollment",
        entity_id: "E-1001",
        payload_json: &payload,
    };
    let origin = Origin {
        tenant_id: "tenant-a",
        connection_id: "0193f2d4-0000-7000-8000-000000000001",
        delivery_id: "0193f2d4-0000-7000-8000-000000000002",
        input_kind: "webhook",
        input_sha256: "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4",
        adapter_id: "0193f2d4-0000-7000-8000-000000000003",
        adapter_version: 3,
        component_sha256: "1b4f0e9851971998e732078544c96b36c3d01cedf7caa332359d6f1d83567014",
        world: "0.2.0",
    };
    let mut group = c.benchmark_group(format!(
        "provenance per event ({} B payload)",
        payload.len()
    ));
    // The baseline: the metadata every event gets without provenance.
    group.bench_function("metadata json (baseline)", |b| {
        b.iter(|| {
            serde_json::json!({
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "source": "webhook:custom",
                "actor": "adapter@3",
                "timestamp": "2026-12-03T08:00:00.000Z",
            })
            .to_string()
        })
    });
    // The other baseline: the contract check every event passes before it is stored.
    let declaration = Declaration::new([("enrollment.created".to_owned(), Vec::new())]).unwrap();
    let scope = Scope {
        tenant_id: "tenant-a".into(),
        allowed_org_ids: ["org-456".to_owned()].into(),
        platform_level: false,
    };
    let emitted = [EmittedEvent {
        event_type: "enrollment.created".into(),
        entity_type: "enrollment".into(),
        entity_id: "E-1001".into(),
        org_id: Some("org-456".into()),
        payload: payload.clone(),
        dedupe_key: None,
        idempotency_key: None,
    }];
    group.bench_function("contract check (baseline)", |b| {
        b.iter(|| check_events(&emitted, &declaration, &scope))
    });
    group.bench_function("event digest (JCS + sha256)", |b| {
        b.iter(|| event_digest("tenant-a", &facts).unwrap())
    });
    // The signature alone, over a record-sized message (the floor of any signed record).
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let message = vec![b'r'; 640];
    group.bench_function("Ed25519 signature of 640 bytes", |b| {
        b.iter(|| ed25519_dalek::Signer::sign(&key, &message))
    });
    group.bench_function("signed record (digest + JCS + Ed25519)", |b| {
        b.iter(|| signer.record(&origin, &facts).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
