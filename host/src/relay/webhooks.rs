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

use std::time::{Duration, UNIX_EPOCH};

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
    /// One pass over due subscriber deliveries: claims up to `batch` of them (a few at a time,
    /// as request slots free up, so that a claim's lease starts when its request does), POSTs
    /// them with at most `delivery_concurrency` in flight, and records every attempt. Returns
    /// how many were delivered. Without a secret store ([`Relay::with_secrets`]) it sends
    /// nothing.
    pub async fn deliver_once(&self) -> store::Result<usize> {
        if self.secrets.is_none() {
            return Ok(0);
        }
        let slots = self.config.delivery_concurrency.max(1);
        let mut claimed = 0;
        let mut exhausted = false;
        let mut delivered = 0;
        let mut failure = None;
        let mut in_flight = JoinSet::new();
        loop {
            let free = slots - in_flight.len();
            // Refill when half the slots are free (or all are): one claim per few requests
            // rather than one per request.
            let refill = in_flight.is_empty() || free >= slots.div_ceil(2);
            if refill && !exhausted && failure.is_none() && claimed < self.config.batch {
                let wanted = free.min(self.config.batch - claimed);
                match self
                    .store
                    .claim_subscriber_deliveries(wanted, self.clock.now(), self.config.lease)
                    .await
                {
                    Ok(jobs) => {
                        exhausted = jobs.len() < wanted;
                        claimed += jobs.len();
                        for job in jobs {
                            let relay = self.clone();
                            in_flight.spawn(async move { relay.deliver(job).await });
                        }
                    }
                    Err(error) => failure = Some(error),
                }
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            match joined {
                Ok(Ok(true)) => delivered += 1,
                Ok(Ok(false)) => {}
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

    /// Makes one attempt and records it; returns whether it delivered.
    async fn deliver(&self, job: SubscriberJob) -> store::Result<bool> {
        let outcome = self.send(&job).await;
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
                let dead = job.attempts >= self.config.subscriber_max_attempts;
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
        let delivered = attempt.next == AttemptNext::Delivered;
        self.store
            .mark_subscriber_delivery(subscriber, seq, attempt)
            .await?;
        Ok(delivered)
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
