//! Outgoing webhooks: each queued event is POSTed to its subscriber as the event envelope (the
//! bus message's body, the payload byte for byte), signed the [Standard Webhooks] way:
//! `webhook-id` is the event id (the same on every retry, so the subscriber can drop
//! duplicates), `webhook-timestamp` the attempt's time in seconds, and `webhook-signature` a
//! `v1` signature with the subscriber's secret (two while a rotation's grace period lasts, so
//! that a subscriber holding either secret verifies).
//!
//! A 2xx answer delivers; anything else (another status, a redirect, no answer within
//! `http_timeout`, no usable secret) is a failed attempt, retried with backoff and parked as
//! dead after `subscriber_max_attempts`. What is recorded and logged of a failure is bounded
//! and never holds a secret, the subscriber's URL (it may carry a token) or the payload.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use super::{Relay, message_of, mix};
use crate::bus::Message;
use crate::secrets::SecretStore;
use crate::signatures::{self, Secret};
use crate::store::{self, AttemptNext, Millis, SubscriberAttempt, SubscriberJob};

/// At most this much of a failed answer's body is kept with the attempt (it often says why).
const MAX_ANSWER_BYTES: usize = 256;

/// A failed attempt: the HTTP status when the subscriber answered, and what went wrong.
#[derive(Debug)]
struct Failure {
    status: Option<u16>,
    error: String,
}

impl Failure {
    /// A failure before or instead of an answer.
    fn unanswered(error: String) -> Self {
        Self {
            status: None,
            error,
        }
    }
}

impl Relay {
    /// One pass over due subscriber deliveries: claims up to `batch` of them, in runs per
    /// subscriber and entity ([`Store::claim_subscriber_deliveries`]), and POSTs each run in
    /// order, the runs side by side with at most `delivery_concurrency` requests in flight,
    /// recording every attempt. A run stops at its first failure, and before a request whose
    /// answer could come after the claim's lease (another claim could send it again): what is
    /// left of it is given back unattempted, for the next pass. Returns how many were
    /// delivered. Without a secret store ([`Relay::with_secrets`]) it sends nothing.
    ///
    /// [`Store::claim_subscriber_deliveries`]: crate::store::Store::claim_subscriber_deliveries
    pub async fn deliver_once(&self) -> store::Result<usize> {
        self.deliver_pass(None).await
    }

    /// [`Relay::deliver_once`]; once `stop` turns true, runs send nothing more (what is left
    /// is given back), so that stopping waits for the requests in flight only.
    pub(super) async fn deliver_pass(
        &self,
        stop: Option<&watch::Receiver<bool>>,
    ) -> store::Result<usize> {
        if self.secrets.is_none() {
            return Ok(0);
        }
        let claimed_at = Instant::now();
        let jobs = self
            .store
            .claim_subscriber_deliveries(self.config.batch, self.clock.now(), self.config.lease)
            .await?;
        // Requests start while the lease leaves room for a whole answer (half the lease at
        // least, when the timeout is set longer than it should be).
        let send_before = claimed_at
            + self
                .config
                .lease
                .saturating_sub(self.config.http_timeout)
                .max(self.config.lease / 2);
        let slots = Arc::new(Semaphore::new(self.config.delivery_concurrency.max(1)));
        let mut in_flight = JoinSet::new();
        for run in runs(jobs) {
            // A run starts once it holds a request slot: runs start in claim order, and no more
            // wait at once than there are slots.
            let first = Arc::clone(&slots)
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let (relay, slots, stop) = (self.clone(), slots.clone(), stop.cloned());
            in_flight.spawn(async move {
                relay
                    .deliver_run(run, first, &slots, send_before, stop.as_ref())
                    .await
            });
        }
        let mut delivered = 0;
        let mut failure = None;
        while let Some(joined) = in_flight.join_next().await {
            match joined {
                Ok(Ok(n)) => delivered += n,
                // Not recorded: the delivery is due again when its lease ends.
                Ok(Err(error)) => {
                    failure.get_or_insert(error);
                }
                Err(error) => tracing::error!(%error, "a subscriber delivery task failed"),
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(delivered),
        }
    }

    /// Delivers one run of a subscriber and entity in order; returns how many were delivered.
    /// Stops at the first failure, at `send_before` or once `stop` turns true, giving the rest
    /// back. The attempts are recorded together when the run ends (one write, not one per
    /// request: a host that stops mid-run sends them again, which subscribers drop by
    /// `webhook-id`).
    async fn deliver_run(
        &self,
        run: Vec<SubscriberJob>,
        first: OwnedSemaphorePermit,
        slots: &Arc<Semaphore>,
        send_before: Instant,
        stop: Option<&watch::Receiver<bool>>,
    ) -> store::Result<usize> {
        let mut attempts = Vec::with_capacity(run.len());
        // The job a stop or the lease's end kept from being sent.
        let mut unsent = None;
        let mut jobs = run.into_iter();
        let mut first = Some(first);
        for job in jobs.by_ref() {
            let permit = match first.take() {
                Some(permit) => permit,
                None => Arc::clone(slots)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed"),
            };
            if Instant::now() >= send_before || stop.is_some_and(|stop| *stop.borrow()) {
                unsent = Some(job);
                break;
            }
            let attempt = self.attempt(&job).await;
            drop(permit);
            let delivered = attempt.next == AttemptNext::Delivered;
            attempts.push((job.subscriber.id, job.event.seq, attempt));
            if !delivered {
                break;
            }
        }
        let rest: Vec<(String, i64)> = unsent
            .into_iter()
            .chain(jobs)
            .map(|job| (job.subscriber.id, job.event.seq))
            .collect();
        if !rest.is_empty() {
            self.store
                .release_subscriber_deliveries(&rest, self.clock.now())
                .await?;
        }
        let delivered = attempts
            .iter()
            .filter(|(_, _, attempt)| attempt.next == AttemptNext::Delivered)
            .count();
        if !attempts.is_empty() {
            self.store.mark_subscriber_deliveries(&attempts).await?;
        }
        Ok(delivered)
    }

    /// Makes one attempt: how it went, to be recorded.
    async fn attempt(&self, job: &SubscriberJob) -> SubscriberAttempt {
        let outcome = self.send(job).await;
        let at = self.clock.now();
        let subscriber = job.subscriber.id.as_str();
        let seq = job.event.seq;
        let attempt = match outcome {
            Ok(status) => SubscriberAttempt {
                at,
                status_code: Some(status),
                error: None,
                next: AttemptNext::Delivered,
            },
            Err(failure) => {
                // An erased payload is gone for good: no attempt can ever send it.
                let dead =
                    job.attempts >= self.config.subscriber_max_attempts || job.event.payload_erased;
                tracing::warn!(
                    subscriber,
                    seq,
                    attempts = job.attempts,
                    status = failure.status,
                    dead,
                    error = %failure.error,
                    "subscriber delivery failed"
                );
                let next = if dead {
                    AttemptNext::Dead
                } else {
                    let key = seq ^ i64::from_ne_bytes(fnv1a(subscriber).to_ne_bytes());
                    let delay = self.backoff(job.attempts, key);
                    AttemptNext::RetryAt(at.saturating_add(store::millis(delay)))
                };
                SubscriberAttempt {
                    at,
                    status_code: failure.status,
                    error: Some(failure.error),
                    next,
                }
            }
        };
        self.count(
            "subscriber",
            match attempt.next {
                AttemptNext::Delivered => "ok",
                AttemptNext::RetryAt(_) => "retry",
                AttemptNext::Dead => "dead",
            },
        );
        attempt
    }

    /// POSTs the event; the 2xx status it was answered with, or why it failed.
    async fn send(&self, job: &SubscriberJob) -> Result<u16, Failure> {
        let now = self.clock.now();
        let message = message_of(&job.event).map_err(Failure::unanswered)?;
        let timestamp = now.div_euclid(1000).to_string();
        let signature = self.signature(&job.subscriber.secret_ref, &message, &timestamp, now)?;
        let response = self
            .http
            .post(&job.subscriber.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &message.event_id)
            .header("webhook-timestamp", &timestamp)
            .header("webhook-signature", signature)
            .body(message.body.to_string())
            .send()
            .await
            .map_err(|e| Failure::unanswered(describe(e, self.config.http_timeout)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        Err(Failure {
            status: Some(status.as_u16()),
            error: format!("HTTP {status}{}", excerpt(response).await),
        })
    }

    /// The `webhook-signature` value: one `v1` signature per valid secret, current first.
    fn signature(
        &self,
        secret_ref: &str,
        message: &Message,
        timestamp: &str,
        now: Millis,
    ) -> Result<String, Failure> {
        let secrets = self
            .secrets
            .as_ref()
            .ok_or_else(|| Failure::unanswered("no secret store".to_owned()))?;
        sign(
            secrets.as_ref(),
            secret_ref,
            &message.event_id,
            timestamp,
            message.body.as_bytes(),
            now,
        )
        .map_err(Failure::unanswered)
    }
}

/// The `webhook-signature` of `body` with every active value of the secret `secret_ref` at
/// `now` (two while a rotation's grace period lasts), or why there is none.
fn sign(
    secrets: &dyn SecretStore,
    secret_ref: &str,
    event_id: &str,
    timestamp: &str,
    body: &[u8],
    now: Millis,
) -> Result<String, String> {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(now).unwrap_or(0));
    let active = secrets
        .get(secret_ref, at)
        .map_err(|e| format!("reading signing secret {secret_ref}: {e}"))?
        .ok_or_else(|| format!("no signing secret named {secret_ref}"))?;
    let signatures = active
        .into_values()
        .into_iter()
        .map(|value| {
            signatures::sign_standard_webhooks(&Secret::from(value), event_id, timestamp, body)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("signing with {secret_ref}: {e}"))?;
    Ok(signatures.join(" "))
}

/// Whether the relay could sign a subscriber's deliveries with the secret `secret_ref` now:
/// the reason when it could not (not written, or not a Standard Webhooks key), in which case
/// every delivery to the subscriber would fail.
pub fn check_signing_secret(secrets: &dyn SecretStore, secret_ref: &str) -> Result<(), String> {
    sign(
        secrets,
        secret_ref,
        "probe",
        "0",
        b"{}",
        store::now_millis(),
    )
    .map(drop)
}

/// A request error with its causes, without the URL (it may carry a token).
fn describe(error: reqwest::Error, timeout: Duration) -> String {
    let error = error.without_url();
    if error.is_timeout() {
        return format!("no answer within {}", humantime::format_duration(timeout));
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// `": <the start of the answer's body>"` on one line, or nothing for an empty body.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() <= MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let truncated = bytes.len() > MAX_ANSWER_BYTES;
    bytes.truncate(MAX_ANSWER_BYTES);
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match text.trim() {
        "" => String::new(),
        text if truncated => format!(": {text}…"),
        text => format!(": {text}"),
    }
}

/// A stable 64-bit hash of `text` (FNV-1a, then mixed): spreads one event's retries to
/// different subscribers apart.
fn fnv1a(text: &str) -> u64 {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    mix(hash)
}

/// Claimed deliveries (in `outbox_seq` order) as runs per subscriber and entity, each in that
/// order, the runs in the order of their first delivery.
fn runs(jobs: Vec<SubscriberJob>) -> Vec<Vec<SubscriberJob>> {
    let mut index: HashMap<(String, String, String), usize> = HashMap::new();
    let mut runs: Vec<Vec<SubscriberJob>> = Vec::new();
    for job in jobs {
        let key = (
            job.subscriber.id.clone(),
            job.event.entity_type.clone(),
            job.event.entity_id.clone(),
        );
        match index.get(&key) {
            Some(&run) => runs[run].push(job),
            None => {
                index.insert(key, runs.len());
                runs.push(vec![job]);
            }
        }
    }
    runs
}
