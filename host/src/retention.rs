//! Retention: what the host keeps of a tenant's traffic, and for how long. Past their time,
//! raw delivery bodies, the HTTP answers recorded with them and invocation logs are purged in
//! small batches by a background loop on every node; the rows stay (ids, hashes, sizes,
//! outcomes, events), so history still reads, and each purged row says when it was purged. A
//! purged delivery cannot be redriven (409: its body has expired). A tenant may set its own
//! number of days for each kind (`PUT /v1/retention`) instead of the platform's. Outbox
//! payloads are the platform's audit trail and are not purged here.

use std::time::Duration;

use crate::pipeline::Host;
use crate::store::{self, Purge, Purged};

/// How long the host keeps bodies and logs, and how it purges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Delivery bodies and recorded HTTP answers; `None`: kept for good.
    pub bodies: Option<Duration>,
    /// Invocation logs; `None`: kept for good.
    pub logs: Option<Duration>,
    /// How often a node purges.
    pub every: Duration,
    /// Rows of each kind one batch purges at most (a short write between webhooks).
    pub batch: usize,
}

/// The platform's default: 30 days of bodies and logs.
pub const DEFAULT_DAYS: u64 = 30;

impl Default for RetentionSettings {
    fn default() -> Self {
        let days = Duration::from_secs(DEFAULT_DAYS * 24 * 3600);
        Self {
            bodies: Some(days),
            logs: Some(days),
            every: Duration::from_secs(600),
            batch: 500,
        }
    }
}

impl RetentionSettings {
    /// Days as given on the command line: 0 keeps for good.
    pub fn days(days: u64) -> Option<Duration> {
        (days > 0).then(|| Duration::from_secs(days.saturating_mul(24 * 3600)))
    }
}

impl Host {
    /// Purges what passed its time as of `now`, batch after batch until a batch comes back
    /// short; what it purged in all.
    pub async fn purge_expired(&self, now: store::Millis) -> store::Result<Purged> {
        let retention = &self.settings().retention;
        let purge = Purge {
            bodies_keep: retention.bodies.map(store::millis),
            logs_keep: retention.logs.map(store::millis),
            limit: retention.batch.max(1),
            now,
        };
        let mut total = Purged::default();
        loop {
            let purged = self.store().purge_expired(purge).await?;
            total.bodies += purged.bodies;
            total.exchanges += purged.exchanges;
            total.logs += purged.logs;
            if !purged.full(purge.limit) {
                break;
            }
            // Between batches the writer serves the webhook path.
            tokio::task::yield_now().await;
        }
        if total != Purged::default() {
            tracing::info!(
                bodies = total.bodies,
                exchanges = total.exchanges,
                logs = total.logs,
                "retention purge"
            );
        }
        Ok(total)
    }

    /// Purges every [`RetentionSettings::every`] until `shutdown`.
    pub async fn run_retention(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let every = self.settings().retention.every;
        loop {
            if let Err(error) = self.purge_expired(store::now_millis()).await {
                tracing::error!(%error, "a retention purge failed");
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
