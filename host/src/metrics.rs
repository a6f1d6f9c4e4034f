//! Prometheus metrics of the host, served at `/metrics`.
//!
//! Labels are bounded sets (outcomes, schemes, rules, results), except the per-connection
//! counters ([`ConnectionMetrics`]): one series per tenant and connection, which is unbounded,
//! so they are registered only when asked for (`serve --metrics-per-connection`).
//!
//! `host/monitoring/` holds alerting rules and a Grafana dashboard on these metrics; a test
//! below keeps every name they use exported.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric the host exports, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Webhook deliveries by outcome and signature scheme.
    pub deliveries: IntCounterVec,
    /// Signature checks that failed, by scheme and reason (nothing else is stored for them).
    pub signature_failures: IntCounterVec,
    /// Adapter invocation wall time, in seconds.
    pub invocation_duration: Histogram,
    /// Fuel consumed per invocation.
    pub invocation_fuel: Histogram,
    /// Invocations by outcome.
    pub invocations: IntCounterVec,
    /// Contract violations by rule.
    pub violations: IntCounterVec,
    /// Outbox rows not yet published.
    pub outbox_pending: IntGauge,
    /// Age of the oldest unpublished outbox row, in seconds.
    pub outbox_lag_seconds: IntGauge,
    /// Deliveries recorded whose invocation has not completed (under way, or cut off by a stop
    /// and waiting for recovery).
    pub deliveries_unfinished: IntGauge,
    /// Relay publication attempts by target (`bus`, `subscriber`) and result.
    pub relay_attempts: IntCounterVec,
    /// Time from receiving a delivery to acknowledging it, in seconds.
    pub ack_latency: HistogramVec,
    /// Adapter versions loaded into this process (compiled, or read from the compile cache),
    /// by result.
    pub adapter_loads: IntCounterVec,
    /// Commits refused because another invocation of the connection wrote state this one had
    /// read: the invocation ran again.
    pub state_conflicts: IntCounterVec,
    /// OAuth token refreshes by result (`ok`, `refused`: the grant is gone, `failed`).
    pub oauth_refreshes: IntCounterVec,
    /// Events appended to the outbox (every path: webhooks, polls, pushed pages, redrives).
    pub events_appended: IntCounter,
    /// Poll runs' wall time, by result (`done`, `failed`), in seconds.
    pub poll_run_duration: HistogramVec,
    /// Time the bus took to accept one event, in seconds.
    pub relay_publish_duration: Histogram,
    /// Time from appending an event to the outbox to publishing it on the bus, in seconds.
    pub relay_publish_lag: Histogram,
    /// Per-tenant and per-connection counters, when enabled.
    connections: Option<ConnectionMetrics>,
}

/// Counters per tenant and connection (labels `tenant`, `connection`). One series per
/// connection: enabled only on request, where the number of connections is known to be modest.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    /// Webhook deliveries by outcome (as `adapter_host_deliveries_total`).
    pub deliveries: IntCounterVec,
    /// Webhook deliveries refused by the signature check.
    pub signature_failures: IntCounterVec,
    /// Events appended to the outbox.
    pub events: IntCounterVec,
    /// Poll runs by result.
    pub poll_runs: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric, without per-connection detail.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// [`Metrics::new`], with the per-connection counters ([`ConnectionMetrics`]) as well.
    pub fn per_connection() -> Self {
        Self::build(true)
    }

    /// The per-connection counters, when enabled.
    pub fn connection(&self) -> Option<&ConnectionMetrics> {
        self.connections.as_ref()
    }

    fn build(per_connection: bool) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let deliveries = counter(
            "adapter_host_deliveries_total",
            "Webhook deliveries by outcome and signature scheme",
            &["outcome", "scheme"],
        );
        let signature_failures = counter(
            "adapter_host_signature_failures_total",
            "Webhook deliveries refused by the signature check",
            &["scheme", "reason"],
        );
        let invocations = counter(
            "adapter_host_invocations_total",
            "Adapter invocations by outcome",
            &["outcome"],
        );
        let violations = counter(
            "adapter_host_violations_total",
            "Contract violations by rule",
            &["rule"],
        );
        let relay_attempts = counter(
            "adapter_host_relay_attempts_total",
            "Relay publication attempts by target and result",
            &["target", "result"],
        );
        let adapter_loads = counter(
            "adapter_host_adapter_loads_total",
            "Adapter versions loaded into this process, by result",
            &["result"],
        );
        let state_conflicts = counter(
            "adapter_host_state_conflicts_total",
            "Commits refused as stale because another invocation wrote state first",
            &[],
        );
        let oauth_refreshes = counter(
            "adapter_host_oauth_refreshes_total",
            "OAuth access token refreshes by result",
            &["result"],
        );
        let outbox_pending = gauge(
            "adapter_host_outbox_pending",
            "Outbox events not yet published",
        );
        let outbox_lag_seconds = gauge(
            "adapter_host_outbox_lag_seconds",
            "Age of the oldest unpublished outbox event",
        );
        let deliveries_unfinished = gauge(
            "adapter_host_deliveries_unfinished",
            "Deliveries recorded whose invocation has not completed (under way, or waiting for recovery)",
        );
        let invocation_duration = Histogram::with_opts(
            HistogramOpts::new(
                "adapter_host_invocation_duration_seconds",
                "Adapter invocation wall time",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0,
            ]),
        )
        .expect("valid metric");
        let invocation_fuel = Histogram::with_opts(
            HistogramOpts::new(
                "adapter_host_invocation_fuel",
                "Fuel consumed per invocation",
            )
            .buckets(prometheus::exponential_buckets(10_000.0, 4.0, 10).expect("buckets")),
        )
        .expect("valid metric");
        let ack_latency = HistogramVec::new(
            HistogramOpts::new(
                "adapter_host_ack_latency_seconds",
                "Time from receiving a delivery to acknowledging it",
            )
            .buckets(vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            &["status"],
        )
        .expect("valid metric");
        let events_appended = IntCounter::new(
            "adapter_host_events_appended_total",
            "Events appended to the outbox",
        )
        .expect("valid metric");
        let poll_run_duration = HistogramVec::new(
            HistogramOpts::new(
                "adapter_host_poll_run_duration_seconds",
                "Poll runs' wall time, by result",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
            &["result"],
        )
        .expect("valid metric");
        let relay_publish_duration = Histogram::with_opts(
            HistogramOpts::new(
                "adapter_host_relay_publish_duration_seconds",
                "Time the bus took to accept one event",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0, 5.0,
            ]),
        )
        .expect("valid metric");
        let relay_publish_lag = Histogram::with_opts(
            HistogramOpts::new(
                "adapter_host_relay_publish_lag_seconds",
                "Time from appending an event to the outbox to publishing it on the bus",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                900.0, 3600.0,
            ]),
        )
        .expect("valid metric");
        for metric in [
            invocation_duration.clone(),
            invocation_fuel.clone(),
            relay_publish_duration.clone(),
            relay_publish_lag.clone(),
        ] {
            registry.register(Box::new(metric)).expect("unique metric");
        }
        for metric in [ack_latency.clone(), poll_run_duration.clone()] {
            registry.register(Box::new(metric)).expect("unique metric");
        }
        registry
            .register(Box::new(events_appended.clone()))
            .expect("unique metric");
        let connections = per_connection.then(|| ConnectionMetrics {
            deliveries: counter(
                "adapter_host_connection_deliveries_total",
                "Webhook deliveries per connection, by outcome",
                &["tenant", "connection", "outcome"],
            ),
            signature_failures: counter(
                "adapter_host_connection_signature_failures_total",
                "Webhook deliveries refused by the signature check, per connection",
                &["tenant", "connection"],
            ),
            events: counter(
                "adapter_host_connection_events_total",
                "Events appended to the outbox, per connection",
                &["tenant", "connection"],
            ),
            poll_runs: counter(
                "adapter_host_connection_poll_runs_total",
                "Poll runs per connection, by result",
                &["tenant", "connection", "result"],
            ),
        });
        Self {
            registry,
            deliveries,
            signature_failures,
            invocation_duration,
            invocation_fuel,
            invocations,
            violations,
            outbox_pending,
            outbox_lag_seconds,
            deliveries_unfinished,
            relay_attempts,
            ack_latency,
            adapter_loads,
            state_conflicts,
            oauth_refreshes,
            events_appended,
            poll_run_duration,
            relay_publish_duration,
            relay_publish_lag,
            connections,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding metrics into memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics() {
        let metrics = Metrics::new();
        metrics
            .deliveries
            .with_label_values(&["processed", "github"])
            .inc();
        metrics
            .violations
            .with_label_values(&["fractional_number"])
            .inc();
        let text = metrics.render();
        assert!(
            text.contains(
                r#"adapter_host_deliveries_total{outcome="processed",scheme="github"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("adapter_host_violations_total"), "{text}");
    }

    #[test]
    fn per_connection_counters_are_opt_in() {
        assert!(Metrics::new().connection().is_none());
        let metrics = Metrics::per_connection();
        touch_all(&metrics);
        assert!(!Metrics::new().render().contains("adapter_host_connection_"));
        assert!(
            metrics
                .render()
                .contains(r#"adapter_host_connection_events_total{connection="c",tenant="t"} 1"#),
            "{}",
            metrics.render()
        );
    }

    const ALERTS: &str = include_str!("../monitoring/alerts.yml");
    const ALERT_TESTS: &str = include_str!("../monitoring/alerts.test.yml");
    const DASHBOARD: &str = include_str!("../monitoring/grafana-dashboard.json");

    /// Gives every metric a sample, so that every one is rendered.
    fn touch_all(metrics: &Metrics) {
        metrics
            .deliveries
            .with_label_values(&["processed", "github"])
            .inc();
        metrics
            .signature_failures
            .with_label_values(&["github", "mismatch"])
            .inc();
        metrics.invocation_duration.observe(0.001);
        metrics.invocation_fuel.observe(1.0);
        metrics.invocations.with_label_values(&["accepted"]).inc();
        metrics
            .violations
            .with_label_values(&["fractional_number"])
            .inc();
        metrics.outbox_pending.set(1);
        metrics.outbox_lag_seconds.set(1);
        metrics.deliveries_unfinished.set(1);
        metrics
            .relay_attempts
            .with_label_values(&["bus", "ok"])
            .inc();
        metrics
            .ack_latency
            .with_label_values(&["processed"])
            .observe(0.001);
        metrics.adapter_loads.with_label_values(&["ok"]).inc();
        metrics.state_conflicts.with_label_values::<&str>(&[]).inc();
        metrics.oauth_refreshes.with_label_values(&["ok"]).inc();
        metrics.events_appended.inc();
        metrics
            .poll_run_duration
            .with_label_values(&["done"])
            .observe(1.0);
        metrics.relay_publish_duration.observe(0.001);
        metrics.relay_publish_lag.observe(0.1);
        if let Some(connection) = metrics.connection() {
            connection
                .deliveries
                .with_label_values(&["t", "c", "processed"])
                .inc();
            connection
                .signature_failures
                .with_label_values(&["t", "c"])
                .inc();
            connection.events.with_label_values(&["t", "c"]).inc();
            connection
                .poll_runs
                .with_label_values(&["t", "c", "done"])
                .inc();
        }
    }

    /// The sample names of an exposition (`name{labels} value` or `name value`).
    fn exported(text: &str) -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| line.split(['{', ' ']).next().unwrap_or_default().to_owned())
            .collect()
    }

    /// Every `adapter_host_…` name in `text`.
    fn referenced(text: &str) -> std::collections::BTreeSet<String> {
        text.match_indices("adapter_host_")
            .map(|(at, _)| {
                text[at..]
                    .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn every_metric_is_rendered_once_touched() {
        let metrics = Metrics::per_connection();
        touch_all(&metrics);
        let families = metrics.registry.gather().len();
        let rendered = metrics.render().matches("# TYPE ").count();
        assert_eq!(
            rendered, families,
            "touch_all misses a metric: give it a sample"
        );
    }

    #[test]
    fn the_monitoring_files_use_only_exported_metrics() {
        let metrics = Metrics::per_connection();
        touch_all(&metrics);
        let exported = exported(&metrics.render());
        let dashboard: serde_json::Value =
            serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
        let panels = dashboard["panels"].as_array().expect("panels");
        let exprs: Vec<&str> = panels
            .iter()
            .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
            .filter_map(|target| target["expr"].as_str())
            .collect();
        assert!(exprs.len() >= 10, "{exprs:?}");
        for (file, text) in [
            ("alerts.yml", ALERTS),
            ("alerts.test.yml", ALERT_TESTS),
            ("grafana-dashboard.json", DASHBOARD),
        ] {
            let names = referenced(text);
            assert!(!names.is_empty(), "{file} names no metric");
            let missing: Vec<_> = names.difference(&exported).collect();
            assert!(
                missing.is_empty(),
                "{file} uses metrics /metrics does not export: {missing:?}"
            );
        }
        // The per-connection counters are off by default: no alert may depend on them.
        let per_connection: Vec<_> = referenced(ALERTS)
            .into_iter()
            .filter(|name| name.starts_with("adapter_host_connection_"))
            .collect();
        assert!(per_connection.is_empty(), "{per_connection:?}");
    }

    #[test]
    fn a_name_that_is_not_exported_is_caught() {
        let metrics = Metrics::new();
        touch_all(&metrics);
        let exported = exported(&metrics.render());
        assert!(exported.contains("adapter_host_ack_latency_seconds_bucket"));
        assert!(exported.contains("adapter_host_events_appended_total"));
        assert!(!exported.contains("adapter_host_ack_latency_seconds"));
        assert_eq!(
            referenced(r#"sum(rate(adapter_host_deliveries_total{outcome="failed"}[5m]))"#),
            ["adapter_host_deliveries_total".to_owned()].into()
        );
    }
}
