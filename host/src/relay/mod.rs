//! The outbox relay: publishes appended events on the bus, then to outgoing webhook
//! subscribers, at least once, in order per entity.
//!
//! Rows are claimed from the outbox with a lease (a relay that dies mid-publish gets its rows
//! back when the lease ends); the store never hands out a row while an earlier row of the same
//! entity is still pending, so per-entity order holds across retries. A failed publication is
//! retried with exponential backoff and parked as `dead` after a bounded number of attempts.
//!
//! An event the bus took is queued for every subscriber that wants it; [`webhooks`] POSTs it
//! to them, signed the Standard Webhooks way, with the same retry and dead rules (per
//! subscriber and entity, a delivery waits for the earlier ones).

#[cfg(test)]
mod tests;
mod webhooks;
pub use webhooks::check_signing_secret;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::Instrument as _;

use crate::bus::{self, Bus, EventParts, Message};
use crate::metrics::Metrics;
use crate::secrets::SecretStore;
use crate::store::{self, Millis, OutboxRow, ReplayTarget, Store};
use crate::telemetry;

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows (and subscriber deliveries) claimed per pass. Each pass costs two writes (the
    /// claim, then queueing and marking what the bus took), so larger passes publish more per
    /// write: 500 published 1.3-1.6x what 100 did with 100-event batches (`relay_load`).
    pub batch: usize,
    /// How long a claim holds a row. Keep it well above `http_timeout`: a delivery still in
    /// flight when its lease ends may be claimed again (by another node) and sent twice.
    pub lease: Duration,
    /// Sleep between passes when there is nothing to do (a new event wakes it earlier).
    pub idle_poll: Duration,
    /// Attempts to publish on the bus before a row is parked as dead.
    pub max_attempts: u32,
    /// Attempts to deliver to a subscriber before the delivery is parked as dead.
    pub subscriber_max_attempts: u32,
    /// Delay after the first failure; doubled after each further one.
    pub backoff_base: Duration,
    /// Longest delay between attempts.
    pub backoff_max: Duration,
    /// Longest a subscriber may take to answer (connecting, sending, reading the answer).
    pub http_timeout: Duration,
    /// Subscriber requests in flight at once.
    pub delivery_concurrency: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 500,
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_millis(200),
            max_attempts: 10,
            subscriber_max_attempts: 8,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            http_timeout: Duration::from_secs(10),
            delivery_concurrency: 16,
        }
    }
}

/// The relay's clock (Unix milliseconds); tests drive it by hand so retries come due without
/// sleeping.
#[derive(Clone)]
struct Clock(Arc<dyn Fn() -> Millis + Send + Sync>);

impl Clock {
    fn now(&self) -> Millis {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock(..)")
    }
}

/// The outbox relay.
#[derive(Debug, Clone)]
pub struct Relay {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    secrets: Option<Arc<dyn SecretStore>>,
    metrics: Metrics,
    config: RelayConfig,
    http: reqwest::Client,
    wake: Arc<Notify>,
    /// Notified when published events were queued for subscribers.
    queued: Arc<Notify>,
    clock: Clock,
}

impl Relay {
    /// A relay from `store` to `bus`; `wake` is notified when events are appended (the
    /// pipeline's [`outbox_appended`](crate::pipeline::Host::outbox_appended)). Outgoing
    /// webhooks need the secret store too: see [`Relay::with_secrets`].
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        metrics: Metrics,
        config: RelayConfig,
        wake: Arc<Notify>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .connect_timeout(config.http_timeout)
            // A subscriber's URL is the one it registered: a redirect is an answer, not a hop.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("adapter-host/", env!("CARGO_PKG_VERSION")))
            .build()
            // Only fails when the TLS backend cannot start, as `reqwest::Client::new` would.
            .expect("the HTTP client starts");
        Self {
            store,
            bus,
            secrets: None,
            metrics,
            config,
            http,
            wake,
            queued: Arc::new(Notify::new()),
            clock: Clock(Arc::new(store::now_millis)),
        }
    }

    /// Enables delivery to outgoing webhook subscribers, signed with their secrets from
    /// `secrets`. Without it, deliveries are queued but not sent.
    pub fn with_secrets(mut self, secrets: Arc<dyn SecretStore>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// What to notify after appending events, so that the relay starts at once rather than at
    /// its next poll.
    pub fn notifier(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The delay before attempt `attempts + 1`, after `attempts` failures: exponential, capped,
    /// plus up to a quarter more, spread by `key` (the row) and the attempt so that rows
    /// failing together do not retry together.
    pub fn backoff(&self, attempts: u32, key: i64) -> Duration {
        let exponent = attempts.saturating_sub(1).min(30);
        let delay = self
            .config
            .backoff_base
            .saturating_mul(1 << exponent)
            .min(self.config.backoff_max);
        let spread = u64::try_from((delay / 4).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            0
        } else {
            mix(key.unsigned_abs() ^ u64::from(attempts).rotate_left(32)) % spread
        };
        delay + Duration::from_nanos(jitter)
    }

    /// One pass over the outbox: claims due rows, publishes them on the bus in `seq` order,
    /// queues the published ones for subscribers and marks them published; a failure is
    /// retried after [`Relay::backoff`], or parked as dead at the last attempt, and the rows of
    /// its entity claimed after it are given back unattempted (they wait behind it, so per-entity
    /// order holds). Returns how many were published.
    pub async fn publish_once(&self) -> store::Result<usize> {
        let now = self.clock.now();
        let rows = self
            .store
            .claim_outbox(self.config.batch, now, self.config.lease)
            .await?;
        let mut published = Vec::with_capacity(rows.len());
        let mut held_back = Vec::new();
        let mut failed_entities: HashSet<(&str, &str, &str)> = HashSet::new();
        for row in &rows {
            let entity = (
                row.tenant_id.as_str(),
                row.entity_type.as_str(),
                row.entity_id.as_str(),
            );
            if failed_entities.contains(&entity) {
                held_back.push(row.seq);
                continue;
            }
            if row.payload_erased {
                // Nothing left to send, now or later: dead at once, and the entity goes on.
                self.count("bus", "dead");
                tracing::warn!(seq = row.seq, "an erased event is not published");
                self.store
                    .mark_publish_failed(row.seq, ERASED, now, true)
                    .await?;
                continue;
            }
            let span = tracing::info_span!(
                "relay.publish",
                event_id = %row.event_id,
                seq = row.seq,
                attempt = row.attempts,
                otel.kind = "producer",
                otel.status_code = tracing::field::Empty,
            );
            // Published later than the delivery that appended it: a child of that delivery's
            // trace, from the trace id its metadata carries.
            if let Some(trace_id) = telemetry::trace_id_of_metadata(&row.metadata_json) {
                telemetry::continue_trace(&span, &trace_id);
            }
            let started = std::time::Instant::now();
            let result = publish_row(self.bus.as_ref(), row)
                .instrument(span.clone())
                .await;
            self.metrics
                .relay_publish_duration
                .observe(started.elapsed().as_secs_f64());
            if result.is_err() {
                span.record("otel.status_code", "error");
            }
            drop(span);
            match result {
                Ok(()) => {
                    self.count("bus", "ok");
                    let lag = (self.clock.now() - row.created_at).max(0);
                    self.metrics.relay_publish_lag.observe(lag as f64 / 1000.0);
                    published.push(row.seq);
                }
                Err(error) => {
                    failed_entities.insert(entity);
                    let dead = row.attempts >= self.config.max_attempts;
                    self.count("bus", if dead { "dead" } else { "retry" });
                    let next =
                        now.saturating_add(store::millis(self.backoff(row.attempts, row.seq)));
                    tracing::warn!(seq = row.seq, attempts = row.attempts, dead, %error, "publication failed");
                    self.store
                        .mark_publish_failed(row.seq, &error, next, dead)
                        .await?;
                }
            }
        }
        if !held_back.is_empty() {
            self.store.release_outbox(&held_back, now).await?;
        }
        if !published.is_empty() {
            // Queued and marked in one write: a row is never marked without being queued (it
            // would be lost to every subscriber); if the write fails the rows are published
            // again.
            self.store
                .complete_publication(&published, self.clock.now())
                .await?;
        }
        Ok(published.len())
    }

    fn count(&self, target: &str, result: &str) {
        self.metrics
            .relay_attempts
            .with_label_values(&[target, result])
            .inc();
    }

    /// Runs passes until `shutdown` turns true (see [`Relay::run_until`]).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        self.run_until(async move {
            // A dropped sender also stops the relay.
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    }

    /// Runs until `shutdown` completes: publication and subscriber delivery, each in a loop of
    /// its own (a slow subscriber never holds back the bus, nor the bus a subscriber), back to
    /// back while there is work, otherwise sleeping until new events are appended (published
    /// ones queued, for delivery) or `idle_poll` passes (for retries that come due). On
    /// `shutdown` no new request starts and the ones in flight are waited for, so stopping can
    /// take up to `http_timeout`. Keeps the outbox gauges current.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        if self.secrets.is_none() {
            tracing::warn!("no secret store: outgoing webhooks are queued but not sent");
        }
        let (stop, stopped) = watch::channel(false);
        let loops = async {
            tokio::join!(
                self.publication_loop(stopped.clone()),
                self.delivery_loop(stopped)
            )
        };
        tokio::pin!(shutdown, loops);
        tokio::select! {
            biased;
            () = &mut shutdown => {
                let _ = stop.send(true);
                loops.await;
            }
            _ = &mut loops => {}
        }
    }

    async fn publication_loop(&self, mut stop: watch::Receiver<bool>) {
        // The gauges cost a query: once a second is plenty, and a busy relay passes far more
        // often than that.
        let mut gauges_refreshed: Option<std::time::Instant> = None;
        while !*stop.borrow() {
            let published = self.publish_once().await.unwrap_or_else(|error| {
                tracing::error!(%error, "relay pass failed");
                0
            });
            if gauges_refreshed.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                self.refresh_gauges().await;
                gauges_refreshed = Some(std::time::Instant::now());
            }
            if published > 0 {
                // Queued for subscribers; more may be due already.
                self.queued.notify_one();
                continue;
            }
            tokio::select! {
                biased;
                _ = stop.changed() => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.idle_poll) => {}
            }
        }
    }

    async fn delivery_loop(&self, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            let delivered = self
                .deliver_pass(Some(&stop))
                .await
                .unwrap_or_else(|error| {
                    tracing::error!(%error, "subscriber delivery pass failed");
                    0
                });
            if delivered > 0 {
                continue;
            }
            tokio::select! {
                biased;
                _ = stop.changed() => {}
                () = self.queued.notified() => {}
                () = tokio::time::sleep(self.config.idle_poll) => {}
            }
        }
    }

    /// Sets `outbox_pending` and `outbox_lag_seconds` from the store.
    async fn refresh_gauges(&self) {
        match self.store.outbox_lag().await {
            Ok(lag) => {
                self.metrics
                    .outbox_pending
                    .set(i64::try_from(lag.pending).unwrap_or(i64::MAX));
                let age = lag
                    .oldest_pending_created_at
                    .map_or(0, |created| (self.clock.now() - created).max(0) / 1000);
                self.metrics.outbox_lag_seconds.set(age);
            }
            Err(error) => tracing::warn!(%error, "reading the outbox lag failed"),
        }
    }
}

/// Checks a subscriber's endpoint and event type filter: an `http` or `https` URL with a host,
/// and types that are a type name, `entity.*` or `*`. The message never repeats the URL (it
/// may carry a token).
pub fn check_subscriber(url: &str, event_types: &[String]) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "`url` is not a URL".to_owned())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err("`url` must be an http or https URL with a host".into());
    }
    if let Some(bad) = event_types
        .iter()
        .find(|t| t.is_empty() || t.len() > 128 || t.chars().any(char::is_whitespace))
    {
        return Err(format!(
            "event type {bad:?} is not a type name, `entity.*` or `*`"
        ));
    }
    Ok(())
}

/// A 64-bit finaliser (splitmix64): spreads close keys far apart.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Why an event whose payload was erased (its tenant's data key destroyed) is never sent.
pub const ERASED: &str = "its payload was erased (the tenant's data key was destroyed): it is \
    never published";

/// The message of a stored event: its envelope (the payload embedded byte for byte) and
/// subject. What the bus carries and what subscribers receive.
pub fn message_of(row: &OutboxRow) -> Result<Message, String> {
    if row.payload_erased {
        return Err(ERASED.to_owned());
    }
    bus::message(&EventParts {
        event_id: &row.event_id,
        event_type: &row.event_type,
        entity_type: &row.entity_type,
        entity_id: &row.entity_id,
        tenant_id: &row.tenant_id,
        org_id: row.org_id.as_deref(),
        payload_json: &row.payload_json,
        metadata_json: &row.metadata_json,
    })
    .map_err(|e| format!("building the envelope: {e}"))
}

/// Publishes one stored event on `bus` (the relay's path, and replay's).
pub async fn publish_row(bus: &dyn Bus, row: &OutboxRow) -> Result<(), String> {
    let message = message_of(row)?;
    bus.publish(&message).await.map_err(|e| e.to_string())
}

/// Runs a recorded replay to its end: re-sends every published event it covers, in order,
/// with the event ids of the first time (consumers, subscribers and the bus drop what they
/// already have) to its target: re-published on the bus, and queued again for subscribers
/// (every one that wants the event, or the one named), whether or not they had it. Then
/// records how many and, if it stopped early, why. Appends nothing to the outbox. Events whose
/// payload was erased are passed over (not counted).
pub async fn run_replay(
    store: &dyn Store,
    bus: &dyn Bus,
    replay: &store::Replay,
) -> store::Result<store::Replay> {
    const PAGE: usize = 500;
    let to_bus = matches!(replay.target, ReplayTarget::All | ReplayTarget::Bus);
    let to_subscribers = matches!(replay.target, ReplayTarget::All | ReplayTarget::Subscribers);
    let (mut after, mut replayed, mut queued) = (0_i64, 0_u64, 0_u64);
    let error = 'run: loop {
        let rows = match store.replay_range(replay, after, PAGE).await {
            Ok(rows) => rows,
            Err(e) => break 'run Some(format!("reading the outbox: {e}")),
        };
        let Some(last) = rows.last() else {
            break 'run None;
        };
        after = last.seq;
        // An erased event has nothing left to send: the replay passes over it.
        let rows: Vec<OutboxRow> = rows.into_iter().filter(|row| !row.payload_erased).collect();
        if to_bus {
            for row in &rows {
                if let Err(e) = publish_row(bus, row).await {
                    break 'run Some(format!("publishing event {}: {e}", row.event_id));
                }
            }
        }
        if to_subscribers {
            let seqs: Vec<i64> = rows.iter().map(|row| row.seq).collect();
            match store
                .replay_to_subscribers(&seqs, replay.subscriber_id.as_deref(), store::now_millis())
                .await
            {
                Ok(n) => queued += n,
                Err(e) => break 'run Some(format!("queueing subscriber deliveries: {e}")),
            }
        }
        replayed += rows.len() as u64;
    };
    match &error {
        None => tracing::info!(replay = %replay.id, replayed, queued, "replay done"),
        Some(why) => tracing::warn!(replay = %replay.id, replayed, queued, %why, "replay failed"),
    }
    store
        .finish_replay(&replay.id, replayed, queued, error, store::now_millis())
        .await
}
