//! What learning a payload's shape costs the drift watch per delivery, against parsing the
//! same body (which the watch does too, and which is the baseline), in the same run.
//!
//! `cargo bench -p adapter-host --bench drift`

use adapter_host::drift::{Shape, source_kind};
use adapter_host::store::DeliveryKind;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let body = std::fs::read(test_artifacts::sample_file(
        "champion-health/fixtures/enrollment-1kb.json",
    ))
    .unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut warmed = Shape::default();
    for _ in 0..100 {
        warmed.observe(&payload);
    }
    let mut group = c.benchmark_group(format!("drift per delivery ({} B body)", body.len()));
    group.bench_function("parse the body (baseline)", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(&body).unwrap())
    });
    group.bench_function("parse, source kind, judge and learn", |b| {
        let mut shape = warmed.clone();
        b.iter(|| {
            let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let kind = source_kind(DeliveryKind::Webhook, &payload);
            (kind, shape.observe(&payload))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
