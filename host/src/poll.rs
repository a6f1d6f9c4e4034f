//! The polling path, a thin module on the ingest core ([`Host::take`]).
//!
//! A scheduler claims each polling connection when its run is due (a lease in the store, so a
//! connection never runs twice at once, across host nodes too), and a run walks pages:
//!
//! 1. `poll-request`: the adapter names the next request from the saved cursor (it may read
//!    the connection's state; its changes to it are not kept: make them in `handle-poll`);
//! 2. the host performs it ([`crate::egress`]: allow list, credential, rate limit, `Retry-After`,
//!    retries, caps, recorded);
//! 3. the answer goes through the ingest core as a delivery of kind `poll`: `handle-poll`, the
//!    contracts, and one commit of its events, the adapter's state, the new cursor (fenced by the
//!    run's lease and the cursor the page was fetched with) and the records of both invocations
//!    and of every request;
//! 4. while the adapter says `more`, the next page; otherwise the run ends.
//!
//! A crash between pages resumes, at the next run, from the last committed page: nothing is
//! lost, and nothing is doubled (events keep ids derived from the records they are about). A
//! failed page leaves the cursor where it was; the run ends failed and the next one, after a
//! backoff, fetches the page again. An external poller can push a page instead
//! ([`Host::receive_pushed_page`]): the same core, a duplicate page is recognised.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use crate::api::ApiError;
use crate::egress::Exchange;
use crate::pipeline::{Host, Ingest, Ingested};
use crate::sandbox::{self, Input, Outcome, PollPage};
use crate::store::{
    self, AdapterRef, Connection, ConnectionStatus, DeliveryKind, DeliveryStatus, Export,
    InvocationRecord, Millis, NewDelivery, PollCheckpoint, PollClaim, PollEnd, PollRun,
    PollRunStatus, STATUS_HEADER,
};

/// The shortest interval between scheduled runs: polling is the fallback path (minutes or
/// hours, never seconds).
pub const MIN_INTERVAL_SECS: u64 = 60;
/// The most pages one run may walk.
pub const MAX_PAGES: u32 = 10_000;

/// A connection's polling settings (its `polling`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PollingConfig {
    /// Seconds between scheduled runs (at least 60); absent: the host does not poll on its own
    /// (pages are pushed, or polls run on demand).
    #[serde(default)]
    pub interval_secs: Option<u64>,
    /// The most pages one run walks (default 100): the next run goes on from there.
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// The name of a secret (in the connection's scope) a machine client may present as
    /// `Authorization: Bearer <value>` to push pages, instead of a management token.
    #[serde(default)]
    pub push_secret: Option<String>,
}

fn default_max_pages() -> u32 {
    100
}

impl PollingConfig {
    /// Checks the settings: the message names the rule broken.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(interval) = self.interval_secs
            && interval < MIN_INTERVAL_SECS
        {
            return Err(format!(
                "`polling.interval_secs` must be at least {MIN_INTERVAL_SECS} (polling runs every \
                 minutes or hours, never seconds; webhooks are the real-time path), got {interval}"
            ));
        }
        if self.max_pages == 0 || self.max_pages > MAX_PAGES {
            return Err(format!(
                "`polling.max_pages` must be between 1 and {MAX_PAGES}, got {}",
                self.max_pages
            ));
        }
        Ok(())
    }

    /// The settings of `connection`, when it has any.
    pub fn of(connection: &Connection) -> anyhow::Result<Option<Self>> {
        connection
            .polling_json
            .as_deref()
            .map(|json| {
                serde_json::from_str(json).map_err(|e| {
                    anyhow::anyhow!("connection {}: polling settings: {e}", connection.id)
                })
            })
            .transpose()
    }
}

/// How the scheduler paces itself.
#[derive(Debug, Clone)]
pub struct PollerSettings {
    /// How often due runs are looked for.
    pub tick: Duration,
    /// How long a run's lease lasts; each committed page renews it.
    pub lease: Duration,
    /// Runs at once in this process.
    pub concurrency: usize,
    /// The wait after a first failed run; doubled after each further one.
    pub backoff_base: Duration,
    /// The longest wait after failures.
    pub backoff_max: Duration,
}

impl Default for PollerSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            lease: Duration::from_secs(120),
            concurrency: 4,
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(3600),
        }
    }
}

/// Why a run ended early.
struct RunFailure {
    reason: String,
    /// Do not run again before this (a `Retry-After`).
    not_before: Option<Millis>,
    /// Requests made since the last committed page.
    exchanges: Vec<Exchange>,
}

impl RunFailure {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            not_before: None,
            exchanges: Vec::new(),
        }
    }
}

impl Host {
    /// Runs the scheduler until `shutdown` turns true: every tick, claims the runs that are due
    /// (at most `concurrency` running at once) and runs them.
    pub async fn run_poller(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let settings = self.poller_settings().clone();
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            let free = settings.concurrency.saturating_sub(running.len());
            if free > 0 {
                let now = store::now_millis();
                match self
                    .store()
                    .claim_polls(
                        now,
                        self.node_id(),
                        now + store::millis(settings.lease),
                        free,
                    )
                    .await
                {
                    Ok(claims) => {
                        for claim in claims {
                            let host = self.clone();
                            running.spawn(async move { host.run_claimed(claim).await });
                        }
                    }
                    Err(error) => tracing::error!(%error, "claiming polls failed"),
                }
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                () = tokio::time::sleep(settings.tick) => {}
            }
        }
        // Runs under way finish their page; their leases end on their own otherwise.
        running.shutdown().await;
    }

    /// Starts a run of `connection_id` now (`POST /v1/connections/{id}/poll`), in the
    /// background; the run as recorded at its start.
    pub async fn poll_now(&self, connection_id: &str) -> store::Result<PollRun> {
        let now = store::now_millis();
        let lease = store::millis(self.poller_settings().lease);
        let claim = self
            .store()
            .claim_poll_now(connection_id, now, self.node_id(), now + lease)
            .await?;
        let run = claim.run.clone();
        let host = self.clone();
        tokio::spawn(async move { host.run_claimed(claim).await });
        Ok(run)
    }

    /// Runs a claimed run to its end and records how it ended: one trace, whose id every
    /// page's events carry.
    async fn run_claimed(&self, claim: PollClaim) {
        let run_id = claim.run.id.clone();
        let span = tracing::info_span!(
            "poll.run",
            run = %run_id,
            connection = %claim.run.connection_id,
            trace_id = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let trace_id = crate::telemetry::start_trace(&span, None);
        span.record("trace_id", trace_id.as_str());
        let started = std::time::Instant::now();
        let walked = self.walk(&claim, &trace_id).instrument(span.clone()).await;
        let result = if walked.is_ok() { "done" } else { "failed" };
        if walked.is_err() {
            span.record("otel.status_code", "error");
        }
        drop(span);
        let metrics = self.metrics();
        metrics
            .poll_run_duration
            .with_label_values(&[result])
            .observe(started.elapsed().as_secs_f64());
        if let Some(detail) = metrics.connection() {
            detail
                .poll_runs
                .with_label_values(&[&claim.run.tenant_id, &claim.run.connection_id, result])
                .inc();
        }
        let (status, reason, not_before, exchanges, interval) = match walked {
            Ok(interval) => (PollRunStatus::Done, None, None, Vec::new(), interval),
            Err(failure) => (
                PollRunStatus::Failed,
                Some(failure.reason),
                failure.not_before,
                failure.exchanges,
                None,
            ),
        };
        let now = store::now_millis();
        let settings = self.poller_settings();
        let next_run_at = match status {
            PollRunStatus::Failed => {
                let exponent = claim.failures.min(16);
                let backoff = settings
                    .backoff_base
                    .saturating_mul(1 << exponent)
                    .min(settings.backoff_max);
                (now + store::millis(backoff)).max(not_before.unwrap_or(0))
            }
            _ => match interval {
                // Spread runs of many connections with the same interval over time.
                Some(secs) => now + jittered(Duration::from_secs(secs), &run_id),
                // No schedule: nothing is due until asked again.
                None => Millis::MAX / 2,
            },
        };
        if let Some(reason) = &reason {
            tracing::warn!(run = %run_id, %reason, "poll run failed");
        }
        let requests = exchanges.len() as u32;
        let end = PollEnd {
            run_id: run_id.clone(),
            owner: self.node_id().to_owned(),
            status,
            reason,
            at: now,
            next_run_at,
            exchanges,
            requests,
        };
        if let Err(error) = self.store().finish_poll(end).await {
            tracing::error!(run = %run_id, %error, "recording the end of a poll run failed");
        }
    }

    /// Walks a run's pages, in the trace `trace_id`; the connection's interval when it ended
    /// well.
    async fn walk(&self, claim: &PollClaim, trace_id: &str) -> Result<Option<u64>, RunFailure> {
        let store = self.store();
        let run = &claim.run;
        let connection = store
            .get_connection(&run.connection_id)
            .await
            .map_err(|e| RunFailure::new(format!("reading the connection: {e}")))?
            .filter(|c| c.status == ConnectionStatus::Active)
            .ok_or_else(|| RunFailure::new("the connection is gone or disabled"))?;
        let polling = PollingConfig::of(&connection)
            .map_err(|e| RunFailure::new(format!("{e:#}")))?
            .ok_or_else(|| RunFailure::new("the connection has no polling settings"))?;
        let adapter = self
            .adapter(&connection.adapter_id, connection.adapter_version)
            .await
            .map_err(|e| RunFailure::new(format!("loading the adapter: {e:#}")))?;
        if !adapter.world_version().polls_through_host() {
            return Err(RunFailure::new(format!(
                "the adapter implements crm:adapter@{}, which cannot poll through the host: \
                 rebuild it against 0.2.0, or push pages to POST /v1/connections/{}/poll-results",
                adapter.world_version(),
                connection.id
            )));
        }
        let lease = store::millis(self.poller_settings().lease);
        let mut cursor = claim.cursor.clone();
        for _ in 0..polling.max_pages {
            // 1. The adapter names the next request.
            let snapshot = store
                .load_state(&connection.id)
                .await
                .map_err(|e| RunFailure::new(format!("reading the state: {e}")))?;
            let started_at = store::now_millis();
            let input = Input::PollRequest {
                cursor: cursor.clone(),
            };
            let asked = self
                .invoke(&adapter, &connection, input, snapshot.map)
                .await
                .map_err(|e| RunFailure::new(format!("running poll-request: {e:#}")))?;
            let request_record = InvocationRecord::from_report(
                &asked.report,
                Export::PollRequest,
                AdapterRef {
                    adapter_id: &connection.adapter_id,
                    version: connection.adapter_version,
                    sha256: adapter.sha256(),
                },
                &sandbox::sha256_hex(cursor.as_deref().unwrap_or("").as_bytes()),
                started_at,
            );
            let request = match asked.report.outcome {
                Outcome::Accepted {
                    request: Some(request),
                    ..
                } => request,
                // Nothing to fetch now: the run is done.
                Outcome::Accepted { request: None, .. } | Outcome::Ignored { .. } => {
                    return Ok(polling.interval_secs);
                }
                other => {
                    return Err(RunFailure::new(format!(
                        "poll-request did not name a request: {}",
                        serde_json::to_string(&other).unwrap_or_default()
                    )));
                }
            };

            // 2. The host performs it.
            let session = self
                .egress_session(&connection, adapter.limits())
                .map_err(|e| RunFailure::new(format!("{e:#}")))?
                .ok_or_else(|| {
                    RunFailure::new("the connection has no API access (`api.base_url`)")
                })?;
            let fetched_at = std::time::SystemTime::now();
            let answer = session
                .perform(request.clone())
                .instrument(tracing::info_span!("poll.fetch", method = %request.method))
                .await;
            let mut exchanges = asked.exchanges;
            exchanges.extend(session.take_exchanges());
            let response = match answer {
                Ok(response) if response.status == 429 || response.status >= 500 => {
                    return Err(RunFailure {
                        reason: format!(
                            "the CRM answered {} to {} {}",
                            response.status, request.method, request.url
                        ),
                        not_before: session.retry_after().map(system_millis),
                        exchanges,
                    });
                }
                Ok(response) => response,
                Err(error) => {
                    return Err(RunFailure {
                        reason: format!("{} {}: {error}", request.method, request.url),
                        not_before: session.retry_after().map(system_millis),
                        exchanges,
                    });
                }
            };

            // 3. The page through the ingest core, committed with the checkpoint.
            let mut headers = vec![(STATUS_HEADER.to_owned(), response.status.to_string())];
            headers.extend(response.headers.iter().cloned());
            let body = response.body.clone();
            let new = NewDelivery {
                connection_id: connection.id.clone(),
                received_at: system_millis(fetched_at),
                provider_delivery_id: None,
                method: request.method.clone(),
                path: request.url.clone(),
                query: url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&request.query)
                    .finish(),
                headers,
                body,
                trace_id: trace_id.to_owned(),
                kind: DeliveryKind::Poll,
                poll_run_id: Some(run.id.clone()),
                cursor: cursor.clone(),
            };
            let checkpoint = PollCheckpoint {
                run_id: run.id.clone(),
                owner: self.node_id().to_owned(),
                cursor_before: cursor.clone(),
                advance: None,
                lease_until: store::now_millis() + lease,
                requests: exchanges.len() as u32,
                records: 0,
            };
            // The page as the stored delivery gives it (a redrive and a replay run on the same).
            let input = new.to_input();
            let ingest = Ingest {
                new,
                input,
                preceding: vec![request_record],
                exchanges,
                poll: Some(checkpoint),
            };
            let ingested = self
                .take(ingest, &connection)
                .await
                .map_err(|error| match error.downcast_ref::<store::Error>() {
                    Some(store::Error::Conflict(why)) => RunFailure::new(why.clone()),
                    _ => RunFailure::new(format!("committing a page: {error:#}")),
                })?;
            if matches!(
                ingested.ack.status,
                DeliveryStatus::Failed | DeliveryStatus::Rejected
            ) {
                return Err(RunFailure::new(format!(
                    "the adapter failed on a page (delivery {}); the cursor stays before it",
                    ingested.ack.delivery_id
                )));
            }
            if let Some(next) = ingested.next_cursor {
                cursor = Some(next);
            }
            if !ingested.more {
                return Ok(polling.interval_secs);
            }
        }
        // The page limit of a run: the next run goes on from this cursor.
        Ok(polling.interval_secs)
    }

    /// Takes a page an external poller pushed (`POST /v1/connections/{id}/poll-results`): the
    /// same core as every delivery; the same page with the same cursor again is a duplicate.
    pub(crate) async fn receive_pushed_page(
        &self,
        connection: Connection,
        body: Vec<u8>,
        content_type: Option<String>,
        cursor: Option<String>,
        traceparent: Option<&str>,
    ) -> Result<Ingested, ApiError> {
        let span = tracing::info_span!(
            "poll.push",
            connection = %connection.id,
            trace_id = tracing::field::Empty,
            otel.kind = "server",
        );
        let trace_id = crate::telemetry::start_trace(&span, traceparent);
        span.record("trace_id", trace_id.as_str());
        let mut identity = cursor.clone().unwrap_or_default().into_bytes();
        identity.push(0);
        identity.extend_from_slice(&body);
        let mut headers = Vec::new();
        if let Some(content_type) = &content_type {
            headers.push(("content-type".to_owned(), content_type.clone()));
        }
        let received_at = store::now_millis();
        let new = NewDelivery {
            connection_id: connection.id.clone(),
            received_at,
            provider_delivery_id: Some(format!("push:{}", sandbox::sha256_hex(&identity))),
            method: "POST".into(),
            path: format!("/v1/connections/{}/poll-results", connection.id),
            query: String::new(),
            headers,
            body: body.clone(),
            trace_id,
            kind: DeliveryKind::Push,
            poll_run_id: None,
            cursor: cursor.clone(),
        };
        let page = PollPage::pushed(
            body,
            content_type,
            cursor,
            std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(received_at).unwrap_or(0)),
        );
        let ingest = Ingest {
            new,
            input: Input::Poll(page),
            preceding: Vec::new(),
            exchanges: Vec::new(),
            poll: None,
        };
        // On a task of its own, like a webhook: a pusher hanging up leaves nothing half done.
        let host = self.clone();
        tokio::spawn(async move { host.take(ingest, &connection).instrument(span).await })
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }
}

fn system_millis(at: std::time::SystemTime) -> Millis {
    store::millis(at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default())
}

/// `interval` plus or minus up to a tenth of it, spread by `key`.
fn jittered(interval: Duration, key: &str) -> Millis {
    let base = store::millis(interval);
    let spread = base / 10;
    if spread == 0 {
        return base;
    }
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let offset = i64::try_from(hash % (2 * spread as u64 + 1)).unwrap_or(0) - spread;
    base + offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_has_a_floor_of_a_minute() {
        let config = |interval: Option<u64>, max_pages: u32| PollingConfig {
            interval_secs: interval,
            max_pages,
            push_secret: None,
        };
        assert!(config(Some(60), 100).validate().is_ok());
        assert!(config(None, 100).validate().is_ok());
        let error = config(Some(5), 100).validate().unwrap_err();
        assert!(error.contains("at least 60"), "{error}");
        assert!(error.contains("got 5"), "{error}");
        assert!(config(Some(3600), 0).validate().is_err());
        assert!(config(Some(3600), MAX_PAGES + 1).validate().is_err());
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        for key in ["a", "b", "run-1", "run-2", ""] {
            let at = jittered(Duration::from_secs(600), key);
            assert!((540_000..=660_000).contains(&at), "{key}: {at}");
        }
    }
}
