//! The outbox relay: publishes appended events on the bus, at least once, in order per entity.
//!
//! Rows are claimed from the outbox with a lease (a relay that dies mid-publish gets its rows
//! back when the lease ends); the store never hands out a row while an earlier row of the same
//! entity is still pending, so per-entity order holds across retries. A failed publication is
//! retried with exponential backoff and parked as `dead` after a bounded number of attempts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::bus::{self, Bus, EventParts};
use crate::metrics::Metrics;
use crate::store::{self, OutboxRow, Store};

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed per pass.
    pub batch: usize,
    /// How long a claim holds a row.
    pub lease: Duration,
    /// Sleep between passes when there is nothing to do (a new event wakes it earlier).
    pub idle_poll: Duration,
    /// Attempts before a row is parked as dead.
    pub max_attempts: u32,
    /// Delay after the first failure; doubled after each further one.
    pub backoff_base: Duration,
    /// Longest delay between attempts.
    pub backoff_max: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 200,
            lease: Duration::from_secs(10),
            idle_poll: Duration::from_millis(500),
            max_attempts: 10,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
        }
    }
}

/// The outbox relay.
#[derive(Debug, Clone)]
pub struct Relay {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    metrics: Metrics,
    config: RelayConfig,
    wake: Arc<Notify>,
}

impl Relay {
    /// A relay from `store` to `bus`; `wake` is notified when events are appended.
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        metrics: Metrics,
        config: RelayConfig,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            bus,
            metrics,
            config,
            wake,
        }
    }

    /// The delay before attempt `attempts + 1`, after `attempts` failures: exponential, capped,
    /// with a spread derived from the row so that rows failing together do not retry together.
    pub fn backoff(&self, attempts: u32, seq: i64) -> Duration {
        let exponent = attempts.saturating_sub(1).min(30);
        let delay = self
            .config
            .backoff_base
            .saturating_mul(1 << exponent)
            .min(self.config.backoff_max);
        let spread = delay / 4;
        let nanos = u64::try_from(spread.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if nanos == 0 {
            0
        } else {
            seq.unsigned_abs().wrapping_mul(0x9E37_79B9_7F4A_7C15) % nanos
        };
        delay + Duration::from_nanos(jitter)
    }

    /// One pass: claims due rows, publishes them in order, records the results. Returns how
    /// many were published.
    pub async fn publish_once(&self) -> store::Result<usize> {
        let now = store::now_millis();
        let rows = self
            .store
            .claim_outbox(self.config.batch, now, self.config.lease)
            .await?;
        let mut published = Vec::with_capacity(rows.len());
        for row in &rows {
            match self.publish(row).await {
                Ok(()) => {
                    self.attempt("ok");
                    published.push(row.seq);
                }
                Err(error) => {
                    let dead = row.attempts >= self.config.max_attempts;
                    self.attempt(if dead { "dead" } else { "retry" });
                    let next = now + store::millis(self.backoff(row.attempts, row.seq));
                    tracing::warn!(seq = row.seq, attempts = row.attempts, dead, %error, "publication failed");
                    self.store
                        .mark_publish_failed(row.seq, &error, next, dead)
                        .await?;
                }
            }
        }
        if !published.is_empty() {
            self.store
                .mark_published(&published, store::now_millis())
                .await?;
            self.store
                .enqueue_subscriber_deliveries(&published, store::now_millis())
                .await?;
        }
        Ok(published.len())
    }

    async fn publish(&self, row: &OutboxRow) -> Result<(), String> {
        publish_row(self.bus.as_ref(), row).await
    }

    fn attempt(&self, result: &str) {
        self.metrics
            .relay_attempts
            .with_label_values(&["bus", result])
            .inc();
    }

    /// Runs passes until `shutdown` turns true: back to back while there is work, otherwise
    /// sleeping until new events are appended or `idle_poll` passes (for retries that come due).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let busy = match self.publish_once().await {
                Ok(published) => published > 0,
                Err(error) => {
                    tracing::error!(%error, "relay pass failed");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.idle_poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// Publishes one stored event on `bus` (the relay's path, and replay's).
pub async fn publish_row(bus: &dyn Bus, row: &OutboxRow) -> Result<(), String> {
    let message = bus::message(&EventParts {
        event_id: &row.event_id,
        event_type: &row.event_type,
        entity_type: &row.entity_type,
        entity_id: &row.entity_id,
        tenant_id: &row.tenant_id,
        org_id: row.org_id.as_deref(),
        payload_json: &row.payload_json,
        metadata_json: &row.metadata_json,
    })
    .map_err(|e| format!("building the envelope: {e}"))?;
    bus.publish(&message).await.map_err(|e| e.to_string())
}
