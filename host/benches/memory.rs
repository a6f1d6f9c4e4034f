//! Resident memory per loaded adapter version, each version invoked once (so that its code
//! and instance template are paged in, as a version in use is):
//!
//! - **the same component, 100 versions** (a tenant uploading the same bytes again, or many
//!   tenants running one sample adapter): what each version costs above the first;
//! - **distinct components** (`MEMORY_DISTINCT`, default 1,000): copies of the noop guest made
//!   distinct by a custom section (so each is compiled and loaded on its own), and 100 such
//!   copies of champion-health, a realistic adapter: what each costs.
//!
//! RSS is read from `/proc/self/status` (Linux) after each step; the idle figure is the
//! process with its sandbox made and nothing loaded.
//!
//! `cargo bench -p adapter-host --bench memory`. BENCHMARKS.md records the figures.

use adapter_host::sandbox::{
    Adapter, ConnectionContext, Env, Input, Limits, PlatformLimits, Sandbox, WebhookRequest,
};
use std::time::SystemTime;

/// Resident memory: all of it, and its anonymous part (the rest is file pages, such as the
/// compiled code mapped from the artifact cache, which the kernel can drop and read again).
#[derive(Clone, Copy)]
struct Rss {
    total: u64,
    anon: u64,
}

fn rss() -> Rss {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib * 1024)
    };
    Rss {
        total: field("VmRSS:"),
        anon: field("RssAnon:"),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `wasm` with a custom section naming `n` appended: the same code, other bytes (another
/// sha256), so the host compiles and keeps it as a component of its own.
fn distinct(wasm: &[u8], n: usize) -> Vec<u8> {
    fn leb(mut value: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"bench-copy";
    let payload = n.to_string();
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(payload.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // a custom section
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
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

struct Run {
    versions: usize,
    idle: Rss,
    /// After the first version.
    first: Rss,
    after: Rss,
}

impl Run {
    /// Above idle, after the last version.
    fn above_idle(&self) -> u64 {
        self.after.total.saturating_sub(self.idle.total)
    }

    /// What each version after the first added.
    fn per_further_version(&self) -> f64 {
        mib(self.after.total.saturating_sub(self.first.total)) / (self.versions - 1) as f64
    }

    fn anon_per_further_version(&self) -> f64 {
        mib(self.after.anon.saturating_sub(self.first.anon)) / (self.versions - 1) as f64
    }
}

/// Loads `versions` components (`make(i)` each) in a fresh sandbox and invokes each once on
/// `input`; RSS before and after. The adapters are kept alive until the figures are read.
async fn measure(versions: usize, make: impl Fn(usize) -> Vec<u8>, input: &Input) -> Run {
    let cache = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(PlatformLimits::default(), Some(cache.path())).unwrap();
    let context = ConnectionContext {
        connection_id: "bench".into(),
        tenant_id: "tenant-bench".into(),
        org_id: None,
        provider: "custom".into(),
        allowed_org_ids: vec!["org-456".into()],
        settings: Vec::new(),
        api_base_url: None,
    };
    let idle = rss();
    let mut first = idle;
    let mut loaded: Vec<Adapter> = Vec::with_capacity(versions);
    for i in 0..versions {
        let adapter = sandbox.load(&make(i), Limits::default()).await.unwrap();
        let report = adapter.invoke(input, &context, Env::default()).await;
        assert!(
            report.outcome.is_success() || matches!(input, Input::Webhook(w) if w.body.is_empty()),
            "{:?}",
            report.outcome
        );
        loaded.push(adapter);
        if i == 0 {
            first = rss();
        }
    }
    let after = rss();
    drop(loaded);
    Run {
        versions,
        idle,
        first,
        after,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and expects no work.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let distinct_count: usize = std::env::var("MEMORY_DISTINCT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let champion = std::fs::read(test_artifacts::CHAMPION_HEALTH).unwrap();
        let noop = std::fs::read(test_artifacts::NOOP).unwrap();
        let body = std::fs::read(test_artifacts::sample_file(
            "champion-health/fixtures/enrollment-1kb.json",
        ))
        .unwrap();
        let champion_input = webhook(body);
        let noop_input = webhook(Vec::new());

        let same = measure(100, |_| champion.clone(), &champion_input).await;
        let distinct_champions = measure(100, |i| distinct(&champion, i), &champion_input).await;
        let distinct_noops = measure(distinct_count, |i| distinct(&noop, i), &noop_input).await;

        println!(
            "| versions loaded and invoked once | RSS idle | the first version | above idle \
             after all | each further version | of it anonymous |"
        );
        println!("|---|---|---|---|---|---|");
        for (name, run) in [
            ("champion-health, the same component", &same),
            ("champion-health, distinct components", &distinct_champions),
            ("noop, distinct components", &distinct_noops),
        ] {
            println!(
                "| {} x {name} | {:.1} MiB | +{:.1} MiB | {:.1} MiB | {:.3} MiB | {:.3} MiB |",
                run.versions,
                mib(run.idle.total),
                mib(run.first.total.saturating_sub(run.idle.total)),
                mib(run.above_idle()),
                run.per_further_version(),
                run.anon_per_further_version(),
            );
        }
    });
}
