//! Logs and traces. Logs go to stderr, filtered by `ADAPTER_HOST_LOG`. Traces are OpenTelemetry
//! spans exported over OTLP/HTTP (protobuf), off unless `serve` is given an endpoint.
//!
//! A webhook delivery, a pushed page and a poll run are each one trace: the root span
//! (`webhook.delivery`, `poll.push`, `poll.run`) and, under it, `signature.verify`,
//! `sandbox.invoke`, `store.commit` (and a poll's `poll.fetch`). The trace id is the one every
//! event of the delivery carries as `metadata.trace_id`, so a consumer can follow an event back
//! to its trace; a caller's W3C `traceparent` is honoured, the delivery joining the caller's trace.
//!
//! The relay publishes later, from the outbox, which keeps only the trace id: its
//! `relay.publish` span is made a child of the root span from that id alone, because the root
//! span's id is derived from the trace id ([`root_span_id`]) rather than drawn at random. A
//! redriven or recovered delivery joins its original trace the same way.

use std::cell::Cell;
use std::collections::HashMap;

use anyhow::Context as _;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The `service.name` of the exported spans (unless `OTEL_SERVICE_NAME` says otherwise).
pub const SERVICE_NAME: &str = "adapter-host";

/// What was installed; [`Telemetry::shutdown`] flushes the spans still buffered.
#[derive(Debug)]
#[must_use = "shut it down at the end, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter. Call it outside any async
    /// runtime, after the last span ended (the exporter blocks on its HTTP requests).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: exporting the last spans failed: {error}");
        }
    }
}

/// Installs the global subscriber: the log (stderr, `ADAPTER_HOST_LOG` or `default_level`)
/// and, with `otlp_endpoint` (the OTLP base URL; spans go to `<url>/v1/traces`), the span
/// exporter. The exporter also reads the standard `OTEL_EXPORTER_OTLP_HEADERS` and
/// `OTEL_EXPORTER_OTLP_TIMEOUT`. Builds nothing that needs an async runtime.
pub fn install(default_level: &str, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_env("ADAPTER_HOST_LOG")
                .unwrap_or_else(|_| default_level.into()),
        );
    let provider = otlp_endpoint.map(tracer_provider).transpose();
    let traces = provider
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SERVICE_NAME))
                .with_threads(false)
                .with_filter(span_filter())
        });
    tracing_subscriber::registry().with(log).with(traces).init();
    Ok(Telemetry {
        provider: provider?,
    })
}

/// The host's own spans and events at `info` and above, except the per-HTTP-request span: a
/// scrape of `/metrics` is not a trace, and a delivery's trace starts at its own root.
fn span_filter() -> tracing_subscriber::filter::FilterFn {
    tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("adapter_host")
            && *meta.level() <= tracing::Level::INFO
            && !(meta.is_span() && meta.name() == "request")
    })
}

fn tracer_provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let url = traces_url(endpoint)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .context("building the OTLP span exporter")?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(HostIds::default())
        .with_resource(resource.build())
        .build())
}

/// `<endpoint>/v1/traces`, the OTLP/HTTP traces path under a base URL (as for the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT`).
fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(endpoint)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
        .with_context(|| {
            // The URL may carry credentials: never repeat it.
            "--otlp-endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) must be an http or https URL"
        })?;
    Ok(format!(
        "{}/v1/traces",
        parsed.as_str().trim_end_matches('/')
    ))
}

/// Starts the trace of a delivery, a pushed page or a poll run on `span`, its root span: in the
/// caller's trace when `traceparent` is a valid W3C header, else in a new one. Returns the trace
/// id (32 lowercase hex digits) that the events' metadata carries; when spans are exported, it
/// is the exported trace's id. `span` must not have been entered yet.
pub fn start_trace(span: &Span, traceparent: Option<&str>) -> String {
    let parent = traceparent
        .map(extract)
        .filter(|cx| cx.span().span_context().is_valid());
    let trace_id = match &parent {
        Some(cx) => cx.span().span_context().trace_id(),
        None => RandomIdGenerator::default().new_trace_id(),
    };
    if let Some(cx) = parent {
        // Fails only when spans are not exported (or this one is filtered out): nothing to do.
        let _ = span.set_parent(cx);
    }
    CHOSEN.set(Some((trace_id, root_span_id(trace_id))));
    // Starts the OpenTelemetry span now, with the ids chosen above.
    let started = span.context();
    CHOSEN.set(None);
    let exported = started.span().span_context().trace_id();
    debug_assert!(exported == TraceId::INVALID || exported == trace_id);
    trace_id.to_string()
}

/// Puts `span` into the trace `trace_id` (an event's `metadata.trace_id`), as a child of that
/// trace's root span: for work done later on what a delivery produced (publication, a redrive).
/// A trace id that is not one (an old row's) leaves `span` where it is.
pub fn continue_trace(span: &Span, trace_id: &str) {
    let Some(trace_id) = parse_trace_id(trace_id) else {
        return;
    };
    let root = SpanContext::new(
        trace_id,
        root_span_id(trace_id),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(root));
}

/// The trace id in an event's `metadata_json`, if it has one.
pub fn trace_id_of_metadata(metadata_json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        trace_id: Option<String>,
    }
    serde_json::from_str::<Metadata>(metadata_json)
        .ok()?
        .trace_id
}

/// A trace id as the host writes it (32 hex digits), or as it wrote it before traces were
/// exported (a UUID: the same 128 bits).
fn parse_trace_id(text: &str) -> Option<TraceId> {
    let id = if text.len() == 32 {
        TraceId::from_hex(text).ok()?
    } else {
        TraceId::from(uuid::Uuid::parse_str(text).ok()?.as_u128())
    };
    (id != TraceId::INVALID).then_some(id)
}

/// The span id of a trace's root span in the host: derived from the trace id (its low 64 bits),
/// so that work done later knows its parent from the trace id alone.
pub fn root_span_id(trace_id: TraceId) -> SpanId {
    let low = u128::from_be_bytes(trace_id.to_bytes()) as u64;
    SpanId::from(low.max(1))
}

/// The context a W3C `traceparent` header names.
fn extract(traceparent: &str) -> opentelemetry::Context {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

thread_local! {
    /// The ids the next span started on this thread gets ([`start_trace`]).
    static CHOSEN: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, except for a root span started by [`start_trace`], which gets the ids chosen
/// for it (the span is started synchronously on the calling thread).
#[derive(Debug, Default)]
struct HostIds {
    random: RandomIdGenerator,
}

impl IdGenerator for HostIds {
    fn new_trace_id(&self) -> TraceId {
        CHOSEN
            .get()
            .map_or_else(|| self.random.new_trace_id(), |(trace_id, _)| trace_id)
    }

    fn new_span_id(&self) -> SpanId {
        match CHOSEN.get() {
            Some((trace_id, span_id)) => {
                // One span only: anything else started meanwhile is random again.
                CHOSEN.set(Some((trace_id, SpanId::INVALID)));
                if span_id == SpanId::INVALID {
                    self.random.new_span_id()
                } else {
                    span_id
                }
            }
            None => self.random.new_span_id(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_names_the_trace() {
        let span = tracing::info_span!("test");
        let trace_id = start_trace(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn without_a_valid_traceparent_a_new_trace_starts() {
        let span = tracing::info_span!("test");
        let a = start_trace(&span, None);
        let b = start_trace(
            &span,
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        let c = start_trace(&span, Some("garbage"));
        for id in [&a, &b, &c] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(parse_trace_id(id).is_some(), "{id}");
        }
        assert!(a != b && b != c && a != c);
    }

    #[test]
    fn stored_trace_ids_parse_old_and_new() {
        let id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(parse_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"), Some(id));
        assert_eq!(
            parse_trace_id("4bf92f35-77b3-4da6-a3ce-929d0e0e4736"),
            Some(id)
        );
        assert_eq!(parse_trace_id("t"), None);
        assert_eq!(parse_trace_id(&"0".repeat(32)), None);
        assert_eq!(
            root_span_id(id),
            SpanId::from_hex("a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            trace_id_of_metadata(r#"{"trace_id":"abc","source":"webhook:x"}"#).as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn the_endpoint_is_a_base_url() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/base/").unwrap(),
            "https://otel.example/base/v1/traces"
        );
        let error = traces_url("ftp://user:pw@otel.example")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("pw"), "{error}");
        assert!(traces_url("not a url").is_err());
    }

    #[test]
    fn only_the_chosen_root_gets_the_chosen_ids() {
        let ids = HostIds::default();
        let trace_id = TraceId::from(7_u128);
        CHOSEN.set(Some((trace_id, SpanId::from(9_u64))));
        assert_eq!(ids.new_span_id(), SpanId::from(9_u64));
        assert_eq!(ids.new_trace_id(), trace_id);
        assert_ne!(ids.new_span_id(), SpanId::from(9_u64));
        CHOSEN.set(None);
        assert_ne!(ids.new_trace_id(), trace_id);
    }
}
