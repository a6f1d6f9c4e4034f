//! Prometheus metrics of the host, served at `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
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
        for metric in [invocation_duration.clone(), invocation_fuel.clone()] {
            registry.register(Box::new(metric)).expect("unique metric");
        }
        registry
            .register(Box::new(ack_latency.clone()))
            .expect("unique metric");
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
}
