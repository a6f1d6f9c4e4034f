//! The webhook path: signature check -> inbox -> adapter in the sandbox -> contracts -> outbox.
//!
//! Nothing is acknowledged before it is durable: the answer to a delivery is sent once the
//! transaction holding the delivery, its final status, the invocation record, the accepted
//! events and the connection's new state is committed.
//!
//! When the adapter answers within [`Settings::record_after`] (the usual case: a fresh instance
//! runs in about 0.1 ms), the delivery is recorded in the inbox together with its outcome, in
//! that one transaction: one durable commit per delivery. A delivery still in processing after
//! that time (a slow adapter, a busy tenant) is first recorded on its own, durably, while its
//! adapter runs, and completed afterwards; a crash in between leaves it `received`, and
//! [`Host::recover`] runs it again at start. Either way a crash before the answer loses nothing
//! that was acknowledged: the CRM, which got no 2xx, sends the delivery again.
//!
//! A retry of a delivery already recorded (the provider's delivery id, or the same body within
//! the dedupe window) is found before the adapter runs and answered with the original's id; two
//! copies racing each other are told apart inside the transaction, and the loser writes
//! nothing. Every event gets an id derived from the connection, the delivery (or the provider's
//! id of it) and the adapter's dedupe key (or position), so a redrive or a recovery can never
//! append an event twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument as _;

use crate::api::ApiError;
use crate::bus::Bus;
use crate::contracts::{self, EmittedEvent};
use crate::egress::{
    ApiAccess, CredentialSource, Egress, EgressSession, Exchange, StoredCredential,
};
use crate::export::Withholding;
use crate::metrics::Metrics;
use crate::oauth::OAuth;
use crate::provenance::{ActiveSigner, EventFacts, Origin, Provenance};
use crate::replay::ReplayRecord;
use crate::sandbox::{
    self, Adapter, ConnectionContext, Env, Input, Limits, Outcome, Report, Sandbox, StateMap,
};
use crate::secrets::SecretStore;
use crate::signatures::{
    self, GuardError, RawRequest, SchemeConfig, Secret, SignatureError, WebhookGuard,
};
use crate::store::{
    self, AdapterRef, BlobStore, Completion, Connection, ConnectionStatus, Delivery, DeliveryKind,
    DeliveryStatus, ExchangeRecord, Export, InvocationRecord, Millis, NewDelivery, NewOutboxEvent,
    PollCheckpoint, Prepared, StateBounds, StateSnapshot, Store, Taken,
};

/// Settings of the webhook path.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The URL the CRMs call, without a trailing slash (HubSpot signs the full URL).
    pub public_base_url: String,
    /// Whether `public_base_url` was configured, rather than made up from the listen address:
    /// a refused HubSpot signature says so when it was not.
    pub public_url_set: bool,
    /// The proxies in front of the host whose forwarding header names a request's source
    /// (none: the TCP peer is the source).
    pub trusted_proxies: signatures::TrustedProxies,
    /// Where the browser goes back to after connecting a CRM with OAuth (the admin page);
    /// `None`: the callback answers a short page itself.
    pub oauth_return_url: Option<String>,
    /// How long a retried delivery without a provider id is recognised by its body hash.
    pub dedupe_window: Duration,
    /// Invocations of one tenant that may run at once.
    pub tenant_concurrency: usize,
    /// How long a delivery may be in processing (waiting for its tenant's turn, then in its
    /// adapter) before it is recorded in the inbox on its own, ahead of its outcome. A delivery
    /// done sooner is recorded with its outcome in one commit. `Duration::ZERO` records every
    /// delivery before its adapter runs.
    pub record_after: Duration,
    /// How long a delivery recorded ahead of its outcome (or claimed by recovery) is left to
    /// the invocation under way before the recovery loop may take it up again: after a crash,
    /// a delivery is run again within about this time of the restart.
    pub recovery_lease: Duration,
    /// How often the recovery loop looks for deliveries whose invocation was cut off.
    pub recovery_interval: Duration,
    /// Invocations a delivery may start before recovery gives up on it: one that brings the
    /// host down (every run cut off by a crash) is parked as `failed` after this many.
    pub max_delivery_attempts: u32,
    /// How the poll scheduler paces itself.
    pub poller: crate::poll::PollerSettings,
    /// How the health monitor paces itself.
    pub health: crate::health::monitor::HealthSettings,
    /// How long an upload waits for its compile before it answers `compiling` (202).
    pub upload_compile_wait: Duration,
    /// How long bodies and logs are kept.
    pub retention: crate::retention::RetentionSettings,
    /// Whether each invocation records what replays it exactly.
    pub record_replays: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            public_base_url: "http://127.0.0.1:8080".into(),
            public_url_set: false,
            trusted_proxies: signatures::TrustedProxies::default(),
            oauth_return_url: None,
            dedupe_window: Duration::from_secs(300),
            tenant_concurrency: 4,
            // Far above an adapter's usual run (0.1 ms to a few ms) and below the time a CRM
            // waits for an answer: only a slow delivery pays a second commit.
            record_after: Duration::from_millis(500),
            recovery_lease: Duration::from_secs(15),
            recovery_interval: Duration::from_secs(2),
            max_delivery_attempts: 3,
            poller: crate::poll::PollerSettings::default(),
            health: crate::health::monitor::HealthSettings::default(),
            upload_compile_wait: Duration::from_secs(5),
            retention: crate::retention::RetentionSettings::default(),
            record_replays: true,
        }
    }
}

/// How many times one delivery's invocation is run again because another invocation of its
/// connection committed state it depended on first. After its first conflict an invocation
/// holds the connection's lock, so it can only lose again to invocations that started before
/// the conflict (each of which commits or loses once, then locks too) or to another host node:
/// every retry means another invocation's change was kept, and the bound is never reached in a
/// process of its own.
const MAX_STATE_RETRIES: u32 = 64;

/// How long after a state conflict on a connection its new invocations take the connection's
/// lock before they read the state: while contended they run one at a time instead of running
/// in vain; otherwise side by side, committing key by key. Short, so that a burst of conflicts
/// (the first deliveries of a new record, all racing to write it) does not serialize the
/// connection long after; under lasting contention each window wastes at most one round of
/// the invocations in flight.
const CONTENTION_MEMORY: Duration = Duration::from_millis(200);

/// Everything a host process shares between requests and workers.
#[derive(Debug, Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    secrets: Arc<dyn SecretStore>,
    /// Signs every event's provenance record.
    provenance: Arc<Provenance>,
    sandbox: Sandbox,
    bus: Arc<dyn Bus>,
    metrics: Metrics,
    settings: Settings,
    /// Adapter versions as loaded, by id and version: each loaded once, however many
    /// deliveries ask for it at the same time (a compile costs CPU seconds).
    adapters: Mutex<HashMap<(String, u32), Loading>>,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    instances: Arc<Semaphore>,
    outbox_appended: Arc<Notify>,
    /// Per connection: the lock an invocation holds from before its state is read until its
    /// outcome is committed once state conflicts were seen, so that this process runs them one
    /// at a time while contended.
    connection_locks: Mutex<HashMap<String, ConnectionLock>>,
    egress: Egress,
    oauth: Arc<OAuth>,
    /// This process among the host's nodes: the owner of the leases it takes.
    node_id: String,
    /// Refused signatures counted since the health monitor's last tick.
    signature_counts: crate::health::monitor::SignatureCounts,
    /// Learns the shape of incoming payloads and records their drift.
    drift: crate::drift::DriftWatch,
}

/// An adapter version, loaded or being loaded.
type Loading = Arc<tokio::sync::OnceCell<Adapter>>;

/// A connection's lock, and when its invocations last lost a state commit to each other.
#[derive(Debug, Default)]
struct ConnectionLock {
    lock: Arc<tokio::sync::Mutex<()>>,
    contended_at: Option<Instant>,
}

/// A webhook request as it reached the endpoint.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The connection named in the URL.
    pub connection_id: String,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query without `?`.
    pub query: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The TCP peer's address (`None` when the transport has none, e.g. in-process tests).
    pub peer: Option<std::net::IpAddr>,
    /// The capability token of a `/v1/hooks/{id}/{token}` URL (never printed: a [`Secret`]);
    /// `path` then holds `[redacted]` in its place.
    pub capability: Option<Secret>,
}

/// Whether a `Host` header's authority and a URL's name the same host and port (a default
/// port written out or left out is the same).
fn same_authority(sent: &str, public: &str) -> bool {
    let strip = |authority: &str| {
        authority
            .strip_suffix(":443")
            .or_else(|| authority.strip_suffix(":80"))
            .unwrap_or(authority)
            .to_owned()
    };
    strip(sent) == strip(public)
}

/// The path of a connection's webhook URL, with its capability token if any.
pub fn hook_path(connection_id: &str, token: Option<&str>) -> String {
    match token {
        Some(token) => format!("/v1/hooks/{connection_id}/{token}"),
        None => format!("/v1/hooks/{connection_id}"),
    }
}

/// The answer to a webhook that was taken.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Ack {
    /// The delivery's id (the original's for a retry).
    pub delivery_id: String,
    /// Where the delivery is.
    pub status: DeliveryStatus,
    /// Whether this was a retry of a delivery already taken.
    pub duplicate: bool,
    /// Events appended to the outbox by this request.
    pub events: usize,
    /// Events the adapter emitted that the outbox holds already (the same fact sent again,
    /// under the same idempotency or dedupe key): counted, never published again.
    pub repeated: usize,
    /// The dialect the sender expects its answer in.
    #[serde(skip)]
    pub reply: Reply,
}

/// How a taken webhook is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reply {
    /// The [`Ack`] as JSON.
    #[default]
    Json,
    /// Salesforce outbound messages: a SOAP `<Ack>true</Ack>`, without which Salesforce
    /// resends the message for 24 hours.
    SalesforceAck,
}

impl Reply {
    fn of(scheme: &SchemeConfig) -> Self {
        match scheme {
            SchemeConfig::SalesforceOutbound { .. } => Self::SalesforceAck,
            _ => Self::Json,
        }
    }
}

/// Headers never written to the inbox: they carry credentials, not signatures.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

impl Host {
    /// Assembles a host from its parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        blobs: Arc<dyn BlobStore>,
        secrets: Arc<dyn SecretStore>,
        sandbox: Sandbox,
        bus: Arc<dyn Bus>,
        metrics: Metrics,
        settings: Settings,
    ) -> Self {
        let instances = Arc::new(Semaphore::new(
            sandbox.platform().concurrent_instances as usize,
        ));
        let egress = Egress::new().expect("the TLS backend starts");
        let oauth = Arc::new(OAuth::new(
            Arc::clone(&secrets),
            Arc::clone(&store),
            egress.clone(),
            &settings.public_base_url,
            metrics.clone(),
        ));
        let provenance = Arc::new(Provenance::new(Arc::clone(&secrets)));
        let drift = crate::drift::DriftWatch::new(Arc::clone(&store));
        Self {
            inner: Arc::new(Inner {
                store,
                blobs,
                secrets,
                provenance,
                sandbox,
                bus,
                metrics,
                settings,
                adapters: Mutex::new(HashMap::new()),
                tenants: Mutex::new(HashMap::new()),
                instances,
                outbox_appended: Arc::new(Notify::new()),
                connection_locks: Mutex::new(HashMap::new()),
                egress,
                oauth,
                node_id: format!("node-{}", store::new_id()),
                signature_counts: Default::default(),
                drift,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The blob store.
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.inner.blobs
    }

    /// The secret store.
    pub fn secrets(&self) -> &Arc<dyn SecretStore> {
        &self.inner.secrets
    }

    /// The provenance signer (keys, rotation, the public key set).
    pub fn provenance(&self) -> &Arc<Provenance> {
        &self.inner.provenance
    }

    /// The OAuth machinery.
    pub fn oauth(&self) -> &Arc<OAuth> {
        &self.inner.oauth
    }

    /// The sandbox.
    pub fn sandbox(&self) -> &Sandbox {
        &self.inner.sandbox
    }

    /// The bus.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.inner.bus
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Notified whenever events are appended to the outbox (the relay waits on it).
    pub fn outbox_appended(&self) -> Arc<Notify> {
        self.inner.outbox_appended.clone()
    }

    /// Refused signatures counted since the health monitor's last tick.
    pub(crate) fn signature_counts(&self) -> &crate::health::monitor::SignatureCounts {
        &self.inner.signature_counts
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// How the poll scheduler paces itself.
    pub fn poller_settings(&self) -> &crate::poll::PollerSettings {
        &self.inner.settings.poller
    }

    /// This process's id among the host's nodes (the owner of its leases).
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Takes one webhook: checks it, runs the adapter, records the delivery and its outcome
    /// durably. Returns only after everything it acknowledges is committed. One trace (see
    /// [`crate::telemetry`]), in the caller's when it sends a `traceparent`.
    pub async fn receive_webhook(&self, inbound: Inbound) -> Result<Ack, ApiError> {
        let span = tracing::info_span!(
            "webhook.delivery",
            connection = %inbound.connection_id,
            trace_id = tracing::field::Empty,
            otel.kind = "server",
        );
        let traceparent = inbound
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("traceparent"))
            .map(|(_, value)| value.as_str());
        let trace_id = crate::telemetry::start_trace(&span, traceparent);
        span.record("trace_id", trace_id.as_str());
        self.receive_traced(inbound, trace_id, span.clone())
            .instrument(span)
            .await
    }

    async fn receive_traced(
        &self,
        inbound: Inbound,
        trace_id: String,
        span: tracing::Span,
    ) -> Result<Ack, ApiError> {
        let started = Instant::now();
        let connection = self
            .inner
            .store
            .get_connection(&inbound.connection_id)
            .await
            .map_err(ApiError::internal)?
            .filter(|c| c.status == ConnectionStatus::Active)
            .ok_or_else(|| {
                ApiError::NotFound(format!("no active connection `{}`", inbound.connection_id))
            })?;
        let scheme: SchemeConfig = serde_json::from_str(&connection.signature_json)
            .map_err(|e| ApiError::internal(format!("connection {}: {e}", connection.id)))?;
        let guard: WebhookGuard = connection
            .webhook_json
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| ApiError::internal(format!("connection {}: {e}", connection.id)))?
            .unwrap_or_default();
        self.admit(&connection, &scheme, &guard, &inbound)?;
        let verified = tracing::info_span!(
            "signature.verify",
            scheme = scheme.name(),
            otel.status_code = tracing::field::Empty,
        )
        .in_scope(|| {
            let verified = self.verify(&connection, &scheme, &inbound);
            if verified.is_err() {
                tracing::Span::current().record("otel.status_code", "error");
            }
            verified
        })?;

        let new = NewDelivery {
            connection_id: connection.id.clone(),
            received_at: store::now_millis(),
            provider_delivery_id: verified.delivery_id,
            method: inbound.method,
            path: inbound.path,
            query: inbound.query,
            headers: inbound
                .headers
                .into_iter()
                .filter(|(name, _)| {
                    !CREDENTIAL_HEADERS.contains(&name.to_ascii_lowercase().as_str())
                })
                .collect(),
            // A secret carried in the body (Zoho's token) is neither stored nor shown to the
            // adapter.
            body: signatures::redact(&scheme, inbound.body),
            trace_id,
            kind: DeliveryKind::Webhook,
            poll_run_id: None,
            cursor: None,
        };
        // On a task of its own: the CRM may hang up (hyper then drops this handler), but a
        // delivery that is being taken is taken to its end, never left half done.
        let ingest = Ingest::webhook(new);
        let host = self.clone();
        let taking = {
            let connection = connection.clone();
            tokio::spawn(async move { host.take(ingest, &connection).instrument(span).await })
        };
        let ack = Ack {
            reply: Reply::of(&scheme),
            ..taking
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?
                .ack
        };
        let metrics = &self.inner.metrics;
        let outcome = if ack.duplicate {
            "duplicate"
        } else {
            ack.status.as_str()
        };
        metrics
            .deliveries
            .with_label_values(&[outcome, scheme.name()])
            .inc();
        if let Some(detail) = metrics.connection() {
            detail
                .deliveries
                .with_label_values(&[&connection.tenant_id, &connection.id, outcome])
                .inc();
        }
        metrics
            .ack_latency
            .with_label_values(&[ack.status.as_str()])
            .observe(started.elapsed().as_secs_f64());
        Ok(ack)
    }

    /// The ingest core: runs a delivery (a verified webhook, a poll page, a pushed page)
    /// through its connection's adapter and records both durably, with whatever else commits
    /// with it (a poll page's checkpoint).
    pub(crate) async fn take(
        &self,
        ingest: Ingest,
        connection: &Connection,
    ) -> anyhow::Result<Ingested> {
        let store = &self.inner.store;
        let settings = &self.inner.settings;
        let window = settings.dedupe_window;
        let Ingest {
            new,
            input,
            preceding,
            exchanges,
            poll,
        } = ingest;
        let adapter = self
            .adapter(&connection.adapter_id, connection.adapter_version)
            .await?;
        let mut serial = self.serialize_state(&connection.id).await;
        let snapshot = match store.prepare_delivery(&new, window).await? {
            Prepared::Duplicate(original) => {
                return Ok(Ingested::from(duplicate(original.id, original.status)));
            }
            Prepared::New(snapshot) => snapshot,
        };
        let body_sha256 = sandbox::sha256_hex(&new.body);
        let started_at = store::now_millis();
        let mut run =
            std::pin::pin!(self.invoke(&adapter, connection, input.clone(), snapshot.map.clone()));
        // Done in time: the delivery and its outcome go into the inbox in one commit. Still
        // running: the delivery is recorded durably now (the invocation runs on meanwhile),
        // and completed when its adapter ends.
        let (invoked, recorded) = match tokio::time::timeout(settings.record_after, run.as_mut())
            .await
        {
            Ok(invoked) => (invoked?, None),
            Err(_) => {
                let lease_until = store::now_millis() + store::millis(settings.recovery_lease);
                let (recorded, invoked) =
                    tokio::join!(store.record_delivery(new.clone(), window, lease_until), run);
                let recorded = recorded?;
                if recorded.duplicate {
                    // The invocation's outcome belongs to no delivery.
                    tracing::info!(delivery = %recorded.id, "a copy of this delivery was taken first");
                    return Ok(Ingested::from(duplicate(recorded.id, recorded.status)));
                }
                (invoked?, Some(recorded.id))
            }
        };
        let id = recorded.clone().unwrap_or_else(store::new_id);
        let commit = Commit {
            connection,
            adapter: &adapter,
            input: &input,
            source: Source::of_new(&id, &new),
            body_sha256: &body_sha256,
            started_at,
            // Recorded on its own already: complete it; else record it with its outcome.
            new: recorded.is_none().then_some((&new, window)),
            attempt_counted: recorded.is_some(),
            preceding: &preceding,
            host_exchanges: &exchanges,
            poll: poll.as_ref(),
        };
        let (taken, status, next) = self.commit(&commit, snapshot, invoked, &mut serial).await?;
        match taken {
            Taken::Duplicate(original) => {
                tracing::info!(delivery = %original.id, "a copy of this delivery was taken first");
                Ok(Ingested::from(duplicate(original.id, original.status)))
            }
            Taken::Completed(completed) => {
                self.inner
                    .drift
                    .observe(connection, &id, new.kind, &new.body);
                Ok(Ingested {
                    ack: self.completed(connection, id, status, &completed),
                    next_cursor: next.next_cursor,
                    more: next.more,
                })
            }
        }
    }

    /// Commits `invoked`, the outcome of `commit`'s invocation on `snapshot`. When another
    /// invocation of the connection first committed state this one depended on (the store
    /// refuses the commit as stale), the adapter runs again on the state now current, from then
    /// on one invocation of the connection at a time, and that outcome is committed instead:
    /// no state change is lost.
    async fn commit(
        &self,
        commit: &Commit<'_>,
        snapshot: StateSnapshot,
        invoked: Invoked,
        serial: &mut Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> anyhow::Result<(Taken, DeliveryStatus, Continuation)> {
        let store = &self.inner.store;
        let signer = self
            .inner
            .provenance
            .signer()
            .map_err(|e| anyhow::anyhow!("signing the events' provenance: {e}"))?;
        let (mut invoked, mut snapshot) = (invoked, snapshot);
        let mut attempt = 1;
        let record_replays = self.inner.settings.record_replays;
        loop {
            let (completion, next) =
                completion(commit, invoked, &snapshot, &signer, record_replays)?;
            let status = completion.status;
            let span = tracing::info_span!(
                "store.commit",
                status = status.as_str(),
                attempt,
                otel.status_code = tracing::field::Empty,
            );
            let written = match commit.new {
                Some((new, window)) => {
                    store
                        .record_completed(new.clone(), window, completion)
                        .instrument(span.clone())
                        .await
                }
                None => store
                    .complete_delivery(completion)
                    .instrument(span.clone())
                    .await
                    .map(Taken::Completed),
            };
            if written.is_err() {
                span.record("otel.status_code", "error");
            }
            drop(span);
            match written {
                Ok(taken) => return Ok((taken, status, next)),
                Err(store::Error::StaleState(why)) if attempt < MAX_STATE_RETRIES => {
                    attempt += 1;
                    self.inner
                        .metrics
                        .state_conflicts
                        .with_label_values::<&str>(&[])
                        .inc();
                    tracing::debug!(connection = %commit.connection.id, attempt, %why, "state moved on; running again");
                    if serial.is_none() {
                        *serial = Some(self.connection_lock(&commit.connection.id, true).await);
                    }
                    snapshot = store.load_state(&commit.connection.id).await?;
                    invoked = self
                        .invoke(
                            commit.adapter,
                            commit.connection,
                            commit.input.clone(),
                            snapshot.map.clone(),
                        )
                        .await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The connection's lock when its invocations lost state commits to each other lately
    /// (within [`CONTENTION_MEMORY`]): held from before the state is read until the outcome is
    /// committed.
    async fn serialize_state(
        &self,
        connection_id: &str,
    ) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let lock = {
            let locks = self.connection_locks();
            let entry = locks.get(connection_id)?;
            let contended = entry
                .contended_at
                .is_some_and(|at| at.elapsed() < CONTENTION_MEMORY);
            contended.then(|| Arc::clone(&entry.lock))?
        };
        Some(lock.lock_owned().await)
    }

    /// The connection's lock; `contended` records a conflict seen just now.
    async fn connection_lock(
        &self,
        connection_id: &str,
        contended: bool,
    ) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.connection_locks();
            let entry = locks.entry(connection_id.to_owned()).or_default();
            if contended {
                entry.contended_at = Some(Instant::now());
            }
            Arc::clone(&entry.lock)
        };
        lock.lock_owned().await
    }

    fn connection_locks(&self) -> std::sync::MutexGuard<'_, HashMap<String, ConnectionLock>> {
        self.inner
            .connection_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The answer to a delivery whose outcome was just committed.
    fn completed(
        &self,
        connection: &Connection,
        delivery_id: String,
        status: DeliveryStatus,
        completed: &store::Completed,
    ) -> Ack {
        let (appended, repeated) = (completed.appended.len(), completed.already_present);
        if appended > 0 {
            self.inner.outbox_appended.notify_one();
            let metrics = &self.inner.metrics;
            metrics.events_appended.inc_by(appended as u64);
            if let Some(detail) = metrics.connection() {
                detail
                    .events
                    .with_label_values(&[&connection.tenant_id, &connection.id])
                    .inc_by(appended as u64);
            }
        }
        tracing::info!(
            delivery = %delivery_id,
            status = status.as_str(),
            appended,
            repeated,
            "delivery processed"
        );
        Ack {
            delivery_id,
            status,
            duplicate: false,
            events: appended,
            repeated,
            reply: Reply::Json,
        }
    }

    /// Runs `input` through a fresh instance of `adapter`, within the tenant's and the
    /// platform's concurrency bounds, with the connection's API access when it has one.
    pub(crate) async fn invoke(
        &self,
        adapter: &Adapter,
        connection: &Connection,
        input: Input,
        state: StateMap,
    ) -> anyhow::Result<Invoked> {
        let context = connection_context(connection)?;
        let session = self.egress_session(connection, adapter.limits())?;
        let env = Env {
            state,
            http: session
                .clone()
                .map(|session| session as Arc<dyn sandbox::Fetch>),
            replay: None,
        };
        let span = tracing::info_span!(
            "sandbox.invoke",
            export = export_of(&input).as_str(),
            adapter = %connection.adapter_id,
            adapter_version = connection.adapter_version,
            outcome = tracing::field::Empty,
        );
        let report = self
            .run_isolated(adapter, &input, &context, env)
            .instrument(span.clone())
            .await?;
        span.record(
            "outcome",
            store::InvocationOutcome::from(&report.outcome).as_str(),
        );
        let exchanges = session.map(|s| s.take_exchanges()).unwrap_or_default();
        Ok(Invoked {
            report,
            exchanges,
            context,
        })
    }

    /// The connection's egress session under `limits`, when it has API access.
    pub(crate) fn egress_session(
        &self,
        connection: &Connection,
        limits: &Limits,
    ) -> anyhow::Result<Option<Arc<EgressSession>>> {
        let Some(api) = api_access(connection)? else {
            return Ok(None);
        };
        let credential = self.credential_source(connection, &api);
        let session = self
            .inner
            .egress
            .session(&connection.id, &api, credential, limits)
            .map_err(|e| anyhow::anyhow!("connection {}: {e}", connection.id))?;
        Ok(Some(Arc::new(session)))
    }

    /// What supplies the credential of `connection`'s API access (its secret is named by its
    /// full reference, resolved when the connection was written).
    fn credential_source(
        &self,
        connection: &Connection,
        api: &ApiAccess,
    ) -> Option<Arc<dyn CredentialSource>> {
        if let crate::egress::CredentialConfig::Oauth2(config) = &api.credential {
            return Some(
                self.inner
                    .oauth
                    .credential(connection, config, api.allow_private),
            );
        }
        StoredCredential::of(&api.credential, self.inner.secrets.clone(), str::to_owned)
            .map(|c| Arc::new(c) as Arc<dyn CredentialSource>)
    }

    /// Runs one invocation within its tenant's and the platform's concurrency bounds (the
    /// webhook path, and dry runs, which take a sandbox slot like any invocation).
    pub async fn run_isolated(
        &self,
        adapter: &Adapter,
        input: &Input,
        context: &ConnectionContext,
        env: Env,
    ) -> anyhow::Result<Report> {
        let _tenant = self
            .tenant_permit(&context.tenant_id)
            .acquire_owned()
            .await?;
        let _instance = self.inner.instances.clone().acquire_owned().await?;
        let report = adapter.invoke(input, context, env).await;
        self.observe(&report);
        Ok(report)
    }

    /// What a request must pass before its signature is looked at, in this order: its source
    /// (403), its capability token (401), its method (405). A refusal is counted like a
    /// refused signature; nothing about it is stored, and the token is never logged.
    fn admit(
        &self,
        connection: &Connection,
        scheme: &SchemeConfig,
        guard: &WebhookGuard,
        inbound: &Inbound,
    ) -> Result<(), ApiError> {
        let refuse = |error: GuardError| {
            self.inner
                .metrics
                .signature_failures
                .with_label_values(&[scheme.name(), error.code()])
                .inc();
            self.count_signature_failure(&connection.id);
            tracing::info!(connection = %connection.id, code = error.code(), "webhook refused");
            error
        };
        if let Err(error) = guard.validate(scheme) {
            tracing::error!(connection = %connection.id, %error, "webhook guard configuration");
            return Err(ApiError::Unavailable(
                "the connection's webhook verification is misconfigured".into(),
            ));
        }
        if !guard.allowed_ips.is_empty() {
            let source = match inbound.peer {
                Some(peer) => Some(
                    self.inner
                        .settings
                        .trusted_proxies
                        .source(peer, &inbound.headers)
                        .map_err(|e| ApiError::Forbidden(refuse(e).to_string()))?,
                ),
                None => None,
            };
            guard
                .check_source(source)
                .map_err(|e| ApiError::Forbidden(refuse(e).to_string()))?;
        }
        match (&guard.capability_secret, &inbound.capability) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(ApiError::NotFound(format!(
                    "connection `{}` has no capability URL: its webhook URL is {}",
                    connection.id,
                    hook_path(&connection.id, None)
                )));
            }
            (Some(_), None) => {
                return Err(ApiError::Unauthorized(
                    refuse(GuardError::CapabilityMissing).to_string(),
                ));
            }
            (Some(name), Some(sent)) => {
                let tokens = self.secrets_of(Some(name))?;
                match signatures::verify_capability(sent, &tokens) {
                    Ok(_) => {}
                    Err(GuardError::NoToken) => {
                        refuse(GuardError::NoToken);
                        tracing::error!(connection = %connection.id, secret = %name,
                            "the capability secret holds no usable token");
                        return Err(ApiError::Unavailable(
                            "the connection's webhook verification is misconfigured".into(),
                        ));
                    }
                    Err(error) => return Err(ApiError::Unauthorized(refuse(error).to_string())),
                }
            }
        }
        let methods = guard.methods(scheme);
        if !methods.contains(&inbound.method.as_str()) {
            return Err(ApiError::WrongMethod {
                detail: format!(
                    "this connection takes {} requests, not {}",
                    methods.join(", "),
                    inbound.method
                ),
                allow: methods.join(", "),
            });
        }
        Ok(())
    }

    /// Whether the secret `name` holds a usable capability token now: the reason as a 400
    /// when it does not (not written, or not 32 to 256 URL-safe characters).
    pub fn check_capability(&self, name: &str) -> Result<(), ApiError> {
        let values = self.secrets_of(Some(name))?;
        match values.first() {
            None => Err(ApiError::BadRequest(
                "`webhook.capability_secret`: no such secret (write the token with PUT \
                 /v1/secrets/{name} before a connection names it)"
                    .into(),
            )),
            Some(current) if !signatures::usable_token(current.expose()) => {
                Err(ApiError::BadRequest(format!(
                    "`webhook.capability_secret`: the secret's value is not a capability token: \
                 it must be {} to {} characters of A-Z a-z 0-9 - _ . ~ (e.g. `openssl rand \
                 -hex 32`)",
                    signatures::guard::MIN_TOKEN_LEN,
                    signatures::guard::MAX_TOKEN_LEN
                )))
            }
            Some(_) => Ok(()),
        }
    }

    fn verify(
        &self,
        connection: &Connection,
        scheme: &SchemeConfig,
        inbound: &Inbound,
    ) -> Result<signatures::Verified, ApiError> {
        let secrets = if scheme.needs_secret() {
            self.signing_secrets(connection)?
        } else {
            Vec::new()
        };
        // The URL as the CRM called it: HubSpot signs it, capability token included.
        let path = match &inbound.capability {
            Some(token) => hook_path(
                &inbound.connection_id,
                Some(std::str::from_utf8(token.expose()).unwrap_or_default()),
            ),
            None => inbound.path.clone(),
        };
        let mut url = format!("{}{}", self.inner.settings.public_base_url, path);
        if !inbound.query.is_empty() {
            url.push('?');
            url.push_str(&inbound.query);
        }
        let request = RawRequest {
            method: &inbound.method,
            url: &url,
            headers: &inbound.headers,
            body: &inbound.body,
        };
        signatures::verify(scheme, &secrets, &request, SystemTime::now()).map_err(|error| {
            let metrics = &self.inner.metrics;
            metrics
                .signature_failures
                .with_label_values(&[scheme.name(), error.code()])
                .inc();
            self.count_signature_failure(&connection.id);
            if let Some(detail) = metrics.connection() {
                detail
                    .signature_failures
                    .with_label_values(&[&connection.tenant_id, &connection.id])
                    .inc();
            }
            if error.is_config_error() {
                // The CRM cannot fix this: say so without detail, and log it for the tenant.
                tracing::error!(connection = %connection.id, %error, "signature configuration");
                ApiError::Unavailable(
                    "the connection's signature verification is misconfigured".into(),
                )
            } else {
                tracing::info!(connection = %connection.id, code = error.code(), "signature refused");
                let hint = self.url_hint(scheme, &error, inbound);
                ApiError::Unauthorized(format!(
                    "the webhook signature did not verify: {error}{hint}"
                ))
            }
        })
    }

    /// For a HubSpot signature (v2, v3: they sign the URL the CRM called) that does not match,
    /// what may be wrong with the URL the host checked it against: the host's public URL is
    /// not configured, or names another host than the request's `Host`. Empty otherwise.
    fn url_hint(&self, scheme: &SchemeConfig, error: &SignatureError, inbound: &Inbound) -> String {
        let signs_url = matches!(
            scheme,
            SchemeConfig::HubSpot {
                version: signatures::HubSpotVersion::V2 | signatures::HubSpotVersion::V3,
                ..
            }
        );
        if !signs_url || *error != SignatureError::Mismatch {
            return String::new();
        }
        let settings = &self.inner.settings;
        if !settings.public_url_set {
            return format!(
                "; HubSpot signs the URL it called, and the host's public URL is not set \
                 (--public-url), so the signature was checked against {}: set it to the \
                 URL HubSpot calls",
                settings.public_base_url
            );
        }
        let sent_host = inbound
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("host"))
            .map(|(_, value)| value.trim().to_ascii_lowercase());
        let public = url::Url::parse(&settings.public_base_url).ok();
        let public_authority = public.as_ref().and_then(|url| {
            let host = url.host_str()?.to_ascii_lowercase();
            Some(match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
        match (sent_host, public_authority) {
            (Some(sent), Some(public)) if !same_authority(&sent, &public) => format!(
                "; HubSpot signs the URL it called, and the request was sent to host `{sent}` \
                 while the host's public URL ({}) names `{public}`: set --public-url to the \
                 URL HubSpot calls",
                settings.public_base_url
            ),
            _ => String::new(),
        }
    }

    /// The connection's signing secret(s): the current one, and the previous one while its
    /// rotation grace period lasts.
    fn signing_secrets(&self, connection: &Connection) -> Result<Vec<Secret>, ApiError> {
        let refs: Vec<String> = serde_json::from_str(&connection.secret_refs_json)
            .map_err(|e| ApiError::internal(format!("connection {}: {e}", connection.id)))?;
        self.secrets_of(refs.first().map(String::as_str))
    }

    /// Whether a connection signed by `scheme` with the secret `secret_ref` could verify a
    /// delivery now: `Err` with the reason when its configuration could not (a secret not written
    /// yet, or one the scheme cannot use), where the webhook would answer 503 to every delivery.
    pub fn check_signing(
        &self,
        scheme: &SchemeConfig,
        secret_ref: Option<&str>,
    ) -> Result<(), ApiError> {
        let secrets = if scheme.needs_secret() {
            self.secrets_of(secret_ref)?
        } else {
            Vec::new()
        };
        let probe = RawRequest {
            method: "POST",
            url: "https://probe.invalid/",
            headers: &[],
            body: b"",
        };
        match signatures::verify(scheme, &secrets, &probe, SystemTime::now()) {
            Err(error) if error.is_config_error() => Err(ApiError::BadRequest(format!(
                "signature: {error} (write the secret with PUT /v1/secrets/{{name}} before a \
                 connection names it)"
            ))),
            _ => Ok(()),
        }
    }

    /// The active values of the secret `name` (none when it is not written).
    fn secrets_of(&self, name: Option<&str>) -> Result<Vec<Secret>, ApiError> {
        let Some(name) = name else {
            return Ok(Vec::new());
        };
        let active = self
            .inner
            .secrets
            .get(name, SystemTime::now())
            .map_err(ApiError::internal)?;
        Ok(active
            .map(|active| active.into_values().into_iter().map(Secret::from).collect())
            .unwrap_or_default())
    }

    /// The connection a stored delivery came in on.
    async fn connection_of(&self, delivery: &Delivery) -> anyhow::Result<Connection> {
        self.inner
            .store
            .get_connection(&delivery.info.connection_id)
            .await?
            .ok_or_else(|| {
                anyhow::anyhow!("the connection of delivery {} vanished", delivery.info.id)
            })
    }

    /// Runs a recorded delivery through its connection's current adapter and writes the outcome;
    /// `attempt_counted` when the run was already counted in its attempts (a recovery claim).
    /// Returns the answer: the delivery's new status, the events appended and repeated. Traced
    /// in the delivery's original trace.
    pub async fn process(
        &self,
        delivery: &Delivery,
        connection: &Connection,
        attempt_counted: bool,
    ) -> anyhow::Result<Ack> {
        let span = tracing::info_span!(
            "delivery.rerun",
            delivery = %delivery.info.id,
            connection = %connection.id,
            recovery = attempt_counted,
        );
        crate::telemetry::continue_trace(&span, &delivery.info.trace_id);
        self.process_traced(delivery, connection, attempt_counted)
            .instrument(span)
            .await
    }

    async fn process_traced(
        &self,
        delivery: &Delivery,
        connection: &Connection,
        attempt_counted: bool,
    ) -> anyhow::Result<Ack> {
        let store = &self.inner.store;
        let adapter = self
            .adapter(&connection.adapter_id, connection.adapter_version)
            .await?;
        let mut serial = self.serialize_state(&connection.id).await;
        let snapshot = store.load_state(&connection.id).await?;
        let input = delivery.to_input();
        let started_at = store::now_millis();
        let invoked = self
            .invoke(&adapter, connection, input.clone(), snapshot.map.clone())
            .await?;
        let body_sha256 = sandbox::sha256_hex(&delivery.body);
        let commit = Commit {
            connection,
            adapter: &adapter,
            input: &input,
            source: Source::of(delivery),
            body_sha256: &body_sha256,
            started_at,
            new: None,
            attempt_counted,
            preceding: &[],
            host_exchanges: &[],
            poll: None,
        };
        let (taken, status, _) = self.commit(&commit, snapshot, invoked, &mut serial).await?;
        let Taken::Completed(completed) = taken else {
            anyhow::bail!("completing a recorded delivery cannot find a duplicate");
        };
        Ok(self.completed(connection, delivery.info.id.clone(), status, &completed))
    }

    /// One pass of recovery: claims deliveries whose invocation was cut off (the host stopped
    /// while their adapter ran) and whose lease has ended, and runs each again, or parks it as
    /// `failed` once it has used up its attempts (a delivery that brings the host down must not
    /// bring it down forever). Returns how many it finished.
    pub async fn recover_once(&self) -> anyhow::Result<usize> {
        let settings = &self.inner.settings;
        let now = store::now_millis();
        let claimed = self
            .inner
            .store
            .claim_recovery(now, now + store::millis(settings.recovery_lease), 16)
            .await?;
        let mut running = tokio::task::JoinSet::new();
        for delivery in claimed {
            let host = self.clone();
            running.spawn(async move {
                let id = delivery.info.id.clone();
                let result = host.recover_delivery(delivery).await;
                if let Err(error) = &result {
                    tracing::error!(delivery = %id, error = %format!("{error:#}"), "recovery failed");
                }
                result.is_ok()
            });
        }
        let mut recovered = 0;
        while let Some(done) = running.join_next().await {
            recovered += usize::from(done.unwrap_or(false));
        }
        Ok(recovered)
    }

    async fn recover_delivery(&self, delivery: Delivery) -> anyhow::Result<()> {
        if delivery.body_erased {
            let failure = sandbox::Failure::new(
                sandbox::FailureKind::Interrupted,
                "the tenant's data was erased (its data key destroyed) before this delivery \
                 was processed: its body is gone, so it cannot run"
                    .to_owned(),
            );
            let reason = serde_json::to_string(&Outcome::Failed { failure })?;
            self.inner
                .store
                .park_delivery(&delivery.info.id, &reason, store::now_millis())
                .await?;
            tracing::warn!(delivery = %delivery.info.id, "an erased delivery is parked, not run");
            return Ok(());
        }
        let max = self.inner.settings.max_delivery_attempts;
        if delivery.info.attempts > max {
            let started = delivery.info.attempts - 1;
            let failure = sandbox::Failure::new(
                sandbox::FailureKind::Interrupted,
                format!(
                    "the host stopped while this delivery's adapter ran, {started} times: it \
                     is parked rather than run again (look for an adapter exhausting the \
                     host's memory or CPU, fix it, then redrive the delivery)"
                ),
            );
            let reason = serde_json::to_string(&Outcome::Failed { failure })?;
            self.inner
                .store
                .park_delivery(&delivery.info.id, &reason, store::now_millis())
                .await?;
            tracing::warn!(delivery = %delivery.info.id, attempts = started, "delivery parked after repeated interruptions");
            return Ok(());
        }
        let connection = self.connection_of(&delivery).await?;
        self.process(&delivery, &connection, true).await?;
        tracing::info!(delivery = %delivery.info.id, "delivery recovered");
        Ok(())
    }

    /// Runs recovery passes every [`Settings::recovery_interval`] until `shutdown` turns true.
    /// Started once the host listens: a delivery that crashes the host then never stops it
    /// from serving.
    pub async fn run_recovery(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            match self.recover_once().await {
                Ok(n) if n > 0 => {
                    tracing::warn!(recovered = n, "re-ran deliveries cut off by a stop")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(error = %format!("{error:#}"), "recovery pass failed")
                }
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(self.inner.settings.recovery_interval) => {}
            }
        }
    }

    /// Re-runs a failed (or rejected) delivery through its connection's current adapter.
    pub async fn redrive(&self, delivery_id: &str) -> Result<Ack, ApiError> {
        let delivery = self
            .inner
            .store
            .get_delivery(delivery_id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::NotFound(format!("no delivery `{delivery_id}`")))?;
        if !matches!(
            delivery.info.status,
            DeliveryStatus::Failed | DeliveryStatus::Rejected
        ) {
            return Err(ApiError::Conflict(format!(
                "delivery `{delivery_id}` is {}; only failed or rejected deliveries are redriven",
                delivery.info.status.as_str()
            )));
        }
        if delivery.body_erased {
            return Err(ApiError::Conflict(format!(
                "delivery `{delivery_id}` cannot be redriven: its body was erased (the tenant's \
                 data key was destroyed)"
            )));
        }
        if let Some(purged_at) = delivery.info.body_purged_at {
            return Err(ApiError::Conflict(format!(
                "delivery `{delivery_id}` cannot be redriven: its body has expired (purged at \
                 {purged_at} ms by the retention of delivery bodies)"
            )));
        }
        let connection = self
            .connection_of(&delivery)
            .await
            .map_err(ApiError::internal)?;
        let ack = self
            .process(&delivery, &connection, false)
            .await
            .map_err(ApiError::internal)?;
        Ok(Ack {
            delivery_id: delivery_id.to_owned(),
            status: ack.status,
            duplicate: false,
            events: ack.events,
            repeated: ack.repeated,
            reply: Reply::Json,
        })
    }

    /// Compiles a `compiling` version from its stored component and records how it went:
    /// ready with what it declares, or failed with the reason. The loaded adapter stays in
    /// this process, so the first delivery it runs does not wait for the compiler.
    pub async fn compile_version(
        &self,
        adapter_id: &str,
        version: u32,
    ) -> store::Result<store::AdapterVersion> {
        let outcome = match self.adapter(adapter_id, version).await {
            Ok(adapter) => serde_json::to_string(&adapter.record()).map_err(|e| e.to_string()),
            Err(error) => Err(format!("{error:#}")),
        };
        if let Err(why) = &outcome {
            tracing::warn!(adapter = %adapter_id, version, error = %why, "an adapter version failed to compile");
        }
        self.store()
            .finish_adapter_version(adapter_id, version, outcome)
            .await
    }

    /// Compiles again, in the background, every version a stop left `compiling`; how many.
    pub async fn resume_compiles(&self) -> store::Result<usize> {
        let compiling = self.store().compiling_versions().await?;
        for stored in &compiling {
            let (host, adapter_id, version) =
                (self.clone(), stored.adapter_id.clone(), stored.version);
            tokio::spawn(async move {
                if let Err(error) = host.compile_version(&adapter_id, version).await {
                    // Another node finished it first (a conflict), or the store is down.
                    tracing::info!(adapter = %adapter_id, version, %error, "resumed compile not recorded");
                }
            });
        }
        Ok(compiling.len())
    }

    /// The loaded adapter of a version (loaded from the blob store on first use).
    pub async fn adapter(&self, adapter_id: &str, version: u32) -> anyhow::Result<Adapter> {
        let cell = {
            let mut adapters = self
                .inner
                .adapters
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(
                adapters
                    .entry((adapter_id.to_owned(), version))
                    .or_default(),
            )
        };
        // The first caller loads it; the others wait for that load (a failed load is tried
        // again by the next caller).
        let adapter = cell
            .get_or_try_init(|| async {
                let stored = self
                    .inner
                    .store
                    .get_adapter_version(adapter_id, version)
                    .await?
                    .ok_or_else(|| {
                        anyhow::anyhow!("adapter {adapter_id} has no version {version}")
                    })?;
                let wasm =
                    self.inner.blobs.get(&stored.sha256).await?.ok_or_else(|| {
                        anyhow::anyhow!("the component {} is missing", stored.sha256)
                    })?;
                let limits: Limits = serde_json::from_str(&stored.limits_json)?;
                let loaded = self.inner.sandbox.load(&wasm, limits).await;
                let result = if loaded.is_ok() { "ok" } else { "error" };
                self.inner
                    .metrics
                    .adapter_loads
                    .with_label_values(&[result])
                    .inc();
                anyhow::Ok(loaded?)
            })
            .await?;
        Ok(adapter.clone())
    }

    fn tenant_permit(&self, tenant_id: &str) -> Arc<Semaphore> {
        let mut tenants = self
            .inner
            .tenants
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tenants
            .entry(tenant_id.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.inner.settings.tenant_concurrency)))
            .clone()
    }

    fn observe(&self, report: &sandbox::Report) {
        let metrics = &self.inner.metrics;
        metrics
            .invocation_duration
            .observe(report.usage.duration.as_secs_f64());
        metrics
            .invocation_fuel
            .observe(report.usage.fuel_consumed as f64);
        metrics
            .invocations
            .with_label_values(&[store::InvocationOutcome::from(&report.outcome).as_str()])
            .inc();
        if let Outcome::Rejected { violations } = &report.outcome {
            for violation in violations {
                metrics
                    .violations
                    .with_label_values(&[violation.rule.as_str()])
                    .inc();
            }
        }
    }
}

/// The connection's API access, when it has one.
pub(crate) fn api_access(connection: &Connection) -> anyhow::Result<Option<ApiAccess>> {
    connection
        .api_json
        .as_deref()
        .map(|json| {
            serde_json::from_str(json)
                .map_err(|e| anyhow::anyhow!("connection {}: api settings: {e}", connection.id))
        })
        .transpose()
}

/// The connection as its adapter sees it.
fn connection_context(connection: &Connection) -> anyhow::Result<ConnectionContext> {
    let settings: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&connection.settings_json)?;
    Ok(ConnectionContext {
        connection_id: connection.id.clone(),
        tenant_id: connection.tenant_id.clone(),
        org_id: connection.org_id.clone(),
        provider: connection.provider.clone(),
        allowed_org_ids: connection.allowed_org_ids.clone(),
        settings: settings.into_iter().collect(),
        api_base_url: api_access(connection)?.map(|api| api.base_url),
    })
}

/// The namespace of event ids (UUID v5): fixed forever, or every id changes.
const EVENT_ID_NAMESPACE: uuid::Uuid = uuid::uuid!("5b1f7c8e-3c55-4f0e-9d62-6f1c0a7e2d41");

/// The stable id of the event at `position` of a delivery: the same delivery (or the same
/// provider delivery id) and the same dedupe key (or position) always give the same id.
pub fn event_id(
    connection_id: &str,
    source_id: &str,
    dedupe_key: Option<&str>,
    position: usize,
) -> String {
    // Distinct prefixes: an explicit key "1" and position 1 must not collide.
    let discriminator = match dedupe_key {
        Some(key) => format!("key:{key}"),
        None => format!("pos:{position}"),
    };
    let name = format!("{connection_id}\n{source_id}\n{discriminator}");
    uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// The answer to a retry of a delivery already taken.
fn duplicate(delivery_id: String, status: DeliveryStatus) -> Ack {
    tracing::info!(delivery = %delivery_id, "retry of a delivery already taken");
    Ack {
        delivery_id,
        status,
        duplicate: true,
        events: 0,
        repeated: 0,
        reply: Reply::Json,
    }
}

/// What of a delivery its events are stamped with.
struct Source<'a> {
    delivery_id: &'a str,
    provider_delivery_id: Option<&'a str>,
    received_at: Millis,
    trace_id: &'a str,
    kind: DeliveryKind,
    body: &'a [u8],
}

impl<'a> Source<'a> {
    fn of(delivery: &'a Delivery) -> Self {
        Self {
            delivery_id: &delivery.info.id,
            provider_delivery_id: delivery.info.provider_delivery_id.as_deref(),
            received_at: delivery.info.received_at,
            trace_id: &delivery.info.trace_id,
            kind: delivery.info.kind,
            body: &delivery.body,
        }
    }

    fn of_new(delivery_id: &'a str, new: &'a NewDelivery) -> Self {
        Self {
            delivery_id,
            provider_delivery_id: new.provider_delivery_id.as_deref(),
            received_at: new.received_at,
            trace_id: &new.trace_id,
            kind: new.kind,
            body: &new.body,
        }
    }

    /// The stable id of `event`, at `position` of this delivery's output (see [`event_id`]).
    fn event_id(&self, connection_id: &str, event: &EmittedEvent, position: usize) -> String {
        if let Some(fact) = &event.idempotency_key {
            // The same fact is one event, whatever delivery or page carries it.
            return event_id(connection_id, "facts", Some(fact), 0);
        }
        match self.kind {
            DeliveryKind::Webhook => event_id(
                connection_id,
                self.provider_delivery_id.unwrap_or(self.delivery_id),
                event.dedupe_key.as_deref(),
                position,
            ),
            // A record's identity and version (its dedupe key) is the same on whatever page
            // it comes again: its event is the same. Without a key, the same page (by its
            // content) gives the same events.
            DeliveryKind::Poll | DeliveryKind::Push => match &event.dedupe_key {
                Some(key) => event_id(connection_id, "records", Some(key), 0),
                None => event_id(
                    connection_id,
                    &format!("page:{}", sandbox::sha256_hex(self.body)),
                    None,
                    position,
                ),
            },
        }
    }
}

/// A delivery for the ingest core ([`Host::take`]).
#[derive(Debug)]
pub(crate) struct Ingest {
    /// What to record in the inbox.
    pub new: NewDelivery,
    /// What the adapter is given.
    pub input: Input,
    /// Invocations that led to this one (a poll page's `poll-request`).
    pub preceding: Vec<InvocationRecord>,
    /// Requests the host made for it (a poll page's own fetch).
    pub exchanges: Vec<Exchange>,
    /// A poll page's checkpoint.
    pub poll: Option<PollCheckpoint>,
}

impl Ingest {
    /// A verified webhook delivery.
    fn webhook(new: NewDelivery) -> Self {
        let input = new.to_input();
        Self {
            new,
            input,
            preceding: Vec::new(),
            exchanges: Vec::new(),
            poll: None,
        }
    }
}

/// What the ingest core did with a delivery: the answer, and for a poll page where the poll
/// goes next.
#[derive(Debug, Clone)]
pub(crate) struct Ingested {
    /// The answer.
    pub ack: Ack,
    /// The cursor the page left (`None` keeps the previous one).
    pub next_cursor: Option<String>,
    /// Whether another page follows now.
    pub more: bool,
}

impl From<Ack> for Ingested {
    fn from(ack: Ack) -> Self {
        Self {
            ack,
            next_cursor: None,
            more: false,
        }
    }
}

/// An invocation's report and the requests it made.
#[derive(Debug)]
pub(crate) struct Invoked {
    /// What it did.
    pub report: Report,
    /// What it fetched (`http.fetch`).
    pub exchanges: Vec<Exchange>,
    /// The connection it ran for (recorded for its replay).
    pub context: ConnectionContext,
}

/// Where a poll goes after a page.
#[derive(Debug, Clone, Default)]
struct Continuation {
    next_cursor: Option<String>,
    more: bool,
}

/// An invocation to commit: what it ran (to run it again on a newer state), what of its
/// delivery its events are stamped with, and where its outcome goes.
struct Commit<'a> {
    connection: &'a Connection,
    adapter: &'a Adapter,
    input: &'a Input,
    source: Source<'a>,
    body_sha256: &'a str,
    started_at: Millis,
    /// The delivery to record with its outcome; `None`: it is recorded already, complete it.
    new: Option<(&'a NewDelivery, Duration)>,
    /// Whether the invocation's start is counted in the delivery's attempts already.
    attempt_counted: bool,
    /// Invocations recorded before this one.
    preceding: &'a [InvocationRecord],
    /// Requests the host made for the delivery.
    host_exchanges: &'a [Exchange],
    /// A poll page's checkpoint (its cursor moves only when the page succeeded).
    poll: Option<&'a PollCheckpoint>,
}

/// The export `input` calls.
fn export_of(input: &Input) -> Export {
    match input {
        Input::Webhook(_) => Export::HandleWebhook,
        Input::Poll(_) => Export::HandlePoll,
        Input::PollRequest { .. } => Export::PollRequest,
    }
}

/// The completion of `commit`'s delivery by the invocation `invoked` on the state `snapshot`,
/// and where a poll goes after it.
fn completion(
    commit: &Commit<'_>,
    invoked: Invoked,
    snapshot: &StateSnapshot,
    signer: &ActiveSigner,
    record_replays: bool,
) -> anyhow::Result<(Completion, Continuation)> {
    let Commit {
        connection,
        adapter,
        input,
        ref source,
        body_sha256,
        started_at,
        attempt_counted,
        preceding,
        host_exchanges,
        poll,
        ..
    } = *commit;
    let Invoked {
        report,
        exchanges,
        context,
    } = invoked;
    let reason_json = match &report.outcome {
        Outcome::Accepted { .. } => None,
        other => Some(serde_json::to_string(other)?),
    };
    let mut invocation = InvocationRecord::from_report(
        &report,
        export_of(input),
        AdapterRef {
            adapter_id: &connection.adapter_id,
            version: connection.adapter_version,
            sha256: adapter.sha256(),
        },
        body_sha256,
        started_at,
    );
    if record_replays {
        let replay = ReplayRecord::of(&report, &context, &snapshot.map);
        invocation.replay_json = Some(serde_json::to_string(&replay)?);
    }
    let (next, records) = match &report.outcome {
        Outcome::Accepted {
            next_cursor,
            more,
            records,
            ..
        } => (
            Continuation {
                next_cursor: next_cursor.clone(),
                more: *more,
            },
            records.unwrap_or(0),
        ),
        _ => (Continuation::default(), 0),
    };
    let success = report.outcome.is_success();
    let poll = poll.map(|checkpoint| PollCheckpoint {
        // A failed page leaves the cursor where it was: the next run fetches it again.
        advance: success.then(|| next.next_cursor.clone()),
        requests: checkpoint.requests + exchanges.len() as u32,
        records,
        ..checkpoint.clone()
    });
    let exchanges = host_exchanges
        .iter()
        .map(|exchange| ExchangeRecord {
            by_invocation: false,
            exchange: exchange.clone(),
        })
        .chain(exchanges.into_iter().map(|exchange| ExchangeRecord {
            by_invocation: true,
            exchange,
        }))
        .collect();
    let completion = Completion {
        delivery_id: source.delivery_id.to_owned(),
        status: DeliveryStatus::for_outcome(&report.outcome),
        reason_json,
        completed_at: store::now_millis(),
        invocation,
        events: outbox_events(
            connection,
            source,
            &report.outcome,
            Signing {
                signer,
                adapter,
                body_sha256,
            },
        )?,
        // An invocation that read or wrote the state and succeeded commits only if what it
        // read is unchanged; one that failed changes nothing, so it needs no check.
        state: success
            .then(|| snapshot.commit(&report.state_access, state_bounds(adapter.limits())))
            .flatten(),
        attempt_counted,
        preceding: preceding.to_vec(),
        exchanges,
        poll,
    };
    Ok((completion, next))
}

/// The bounds a connection's whole state stays within under `limits`.
fn state_bounds(limits: &Limits) -> StateBounds {
    StateBounds {
        keys: limits.state_keys.into(),
        bytes: limits.state_total_bytes,
    }
}

/// What an event's provenance record is signed from, beside the delivery.
struct Signing<'a> {
    signer: &'a ActiveSigner,
    adapter: &'a Adapter,
    body_sha256: &'a str,
}

fn outbox_events(
    connection: &Connection,
    source: &Source<'_>,
    outcome: &Outcome,
    signing: Signing<'_>,
) -> anyhow::Result<Vec<NewOutboxEvent>> {
    let received = std::time::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(source.received_at).unwrap_or_default());
    let metadata = serde_json::json!({
        "trace_id": source.trace_id,
        "source": format!("{}:{}", source.kind.as_str(), connection.provider),
        "actor": format!("{}@{}", connection.adapter_id, connection.adapter_version),
        "timestamp": humantime::format_rfc3339_millis(received).to_string(),
    });
    let withholding = Withholding::of_stored(connection.export_json.as_deref())?;
    let declaration = signing.adapter.declaration();
    let origin = Origin {
        tenant_id: &connection.tenant_id,
        connection_id: &connection.id,
        delivery_id: source.delivery_id,
        input_kind: source.kind.as_str(),
        input_sha256: signing.body_sha256,
        adapter_id: &connection.adapter_id,
        adapter_version: connection.adapter_version,
        component_sha256: signing.adapter.sha256(),
        world: signing.adapter.world_version().as_str(),
    };
    outcome
        .events()
        .iter()
        .enumerate()
        .map(|(position, event)| {
            let event_id = source.event_id(&connection.id, event, position);
            let exported = exported_payload(event, declaration, &withholding)?;
            let payload_json = exported.payload.as_deref().unwrap_or(&event.payload);
            let facts = EventFacts {
                event_id: &event_id,
                org_id: event.org_id.as_deref(),
                event_type: &event.event_type,
                entity_type: &event.entity_type,
                entity_id: &event.entity_id,
                payload_json,
            };
            let record = signing
                .signer
                .record(&origin, &facts)
                .map_err(|e| anyhow::anyhow!("signing event {event_id}'s provenance: {e}"))?;
            let mut metadata = metadata.clone();
            metadata["provenance"] = record;
            if !exported.personal.is_empty() {
                metadata["personal_data"] = serde_json::json!(exported.personal);
            }
            if !exported.withheld.is_empty() {
                metadata["withheld"] = serde_json::json!(exported.withheld);
            }
            Ok(NewOutboxEvent {
                org_id: event.org_id.clone(),
                event_type: event.event_type.clone(),
                entity_type: event.entity_type.clone(),
                entity_id: event.entity_id.clone(),
                payload_json: payload_json.to_owned(),
                metadata_json: metadata.to_string(),
                event_id,
            })
        })
        .collect()
}

/// An event's payload as exported, and what the host knows of its personal data.
#[derive(Debug, Default)]
struct Exported {
    /// The payload without the withheld fields; `None`: the payload as emitted.
    payload: Option<String>,
    /// Where the payload holds personal data (concrete JSON pointers), as the adapter declares.
    personal: Vec<String>,
    /// The fields the connection withheld (as they were before their removal).
    withheld: Vec<String>,
}

/// `event`'s payload with the fields `withholding` names dropped, and where what is left holds
/// personal data by `declaration`. Payloads of event types without either are not parsed.
fn exported_payload(
    event: &EmittedEvent,
    declaration: &contracts::Declaration,
    withholding: &Withholding,
) -> anyhow::Result<Exported> {
    let personal = declaration
        .personal_fields(&event.event_type)
        .filter(|fields| !fields.is_empty());
    let withholds = withholding.applies_to(&event.event_type);
    if personal.is_none() && !withholds {
        return Ok(Exported::default());
    }
    // The contracts passed: the payload is a JSON object.
    let mut payload: Value = serde_json::from_str(&event.payload)?;
    let withheld = if withholds {
        withholding.apply(&event.event_type, &mut payload)
    } else {
        Vec::new()
    };
    Ok(Exported {
        payload: (!withheld.is_empty())
            .then(|| serde_json::to_string(&payload))
            .transpose()?,
        personal: personal.map(|f| f.locate(&payload)).unwrap_or_default(),
        withheld,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::{Host, Inbound, Settings, event_id};
    use crate::bus::MemoryBus;
    use crate::metrics::Metrics;
    use crate::sandbox::{PlatformLimits, Sandbox};
    use crate::secrets::InMemorySecretStore;
    use crate::store::{
        DeliveryFilter, DeliveryStatus, FsBlobStore, NewDelivery, OutboxFilter, SqliteStore, Store,
    };

    const SECRET: &str = "pipeline-test-secret";

    /// A host running the hostile test guest on connection `hostile` (GitHub signatures).
    async fn host(record_after: Duration) -> (tempfile::TempDir, SqliteStore, Host) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let store = SqliteStore::open(&data).unwrap();
        let blobs = cap_std::fs::Dir::open_ambient_dir(&data, cap_std::ambient_authority())
            .map(|dir| FsBlobStore::open(&dir).unwrap())
            .unwrap();
        let host = Host::new(
            Arc::new(store.clone()),
            Arc::new(blobs),
            Arc::new(InMemorySecretStore::new()),
            Sandbox::new(PlatformLimits::default(), None).unwrap(),
            Arc::new(MemoryBus::new()),
            Metrics::new(),
            Settings {
                record_after,
                ..Settings::default()
            },
        );
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[[adapters]]
tenant_id = "tenant-p"
name = "hostile"
wasm = "{}"

[[connections]]
id = "hostile"
tenant_id = "tenant-p"
provider = "custom"
adapter = "hostile"
signature = {{ scheme = "github" }}
secret = "tenant-p/signing"

[[secrets]]
name = "tenant-p/signing"
value = "{SECRET}"
"#,
                test_artifacts::HOSTILE
            ),
        )
        .unwrap();
        let loaded = crate::config::Config::load(&config).unwrap();
        crate::config::provision(&host, &loaded, dir.path())
            .await
            .unwrap();
        (dir, store, host)
    }

    /// A signed delivery whose body is the hostile guest's command.
    fn inbound(body: &str, provider_id: &str) -> Inbound {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        Inbound {
            connection_id: "hostile".into(),
            method: "POST".into(),
            path: "/v1/hooks/hostile".into(),
            query: String::new(),
            headers: vec![
                ("x-hub-signature-256".into(), signature),
                ("x-github-delivery".into(), provider_id.into()),
            ],
            body: body.as_bytes().to_vec(),
            peer: None,
            capability: None,
        }
    }

    async fn statuses(store: &SqliteStore) -> Vec<DeliveryStatus> {
        let page = store
            .list_deliveries(DeliveryFilter::default())
            .await
            .unwrap();
        page.items.iter().map(|d| d.status).collect()
    }

    async fn outbox_len(store: &SqliteStore) -> usize {
        let filter = OutboxFilter {
            tenant_id: "tenant-p".into(),
            ..OutboxFilter::default()
        };
        store.list_outbox(filter).await.unwrap().items.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fast_delivery_is_recorded_with_its_outcome_in_one_commit() {
        let (_dir, store, host) = host(Duration::from_secs(5)).await;
        let before = store.write_stats();
        let ack = host.receive_webhook(inbound("ok", "gh-1")).await.unwrap();
        assert_eq!(ack.status, DeliveryStatus::Processed);
        assert_eq!(ack.events, 1);
        let after = store.write_stats();
        assert_eq!(after.commands - before.commands, 1, "one write");
        assert_eq!(after.commits - before.commits, 1, "one commit");
        let delivery = store.get_delivery(&ack.delivery_id).await.unwrap().unwrap();
        assert_eq!(delivery.info.status, DeliveryStatus::Processed);
        assert_eq!(delivery.info.attempts, 1);
        assert!(delivery.info.processed_at.is_some());
        assert_eq!(
            store
                .list_invocations(&ack.delivery_id)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(outbox_len(&store).await, 1);

        // A retry is found before its adapter runs: no invocation, nothing written.
        let retry = host.receive_webhook(inbound("ok", "gh-1")).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.delivery_id, ack.delivery_id);
        assert_eq!(retry.status, DeliveryStatus::Processed);
        assert_eq!(store.write_stats().commands, after.commands);
        assert_eq!(
            store
                .list_invocations(&ack.delivery_id)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copies_racing_each_other_are_taken_once() {
        let (_dir, store, host) = host(Duration::from_secs(5)).await;
        // Both copies pass the lookup before either is written: the writer tells them apart.
        let release = store.hold_writer().await;
        let copies: Vec<_> = (0..2)
            .map(|_| {
                let host = host.clone();
                tokio::spawn(async move { host.receive_webhook(inbound("ok", "gh-race")).await })
            })
            .collect();
        while store.queued() < 2 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(release);
        let mut acks = Vec::new();
        for copy in copies {
            acks.push(copy.await.unwrap().unwrap());
        }
        assert_eq!(acks[0].delivery_id, acks[1].delivery_id);
        assert_eq!(acks.iter().filter(|a| a.duplicate).count(), 1);
        assert_eq!(statuses(&store).await, [DeliveryStatus::Processed]);
        assert_eq!(outbox_len(&store).await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_delivery_is_recorded_before_its_adapter_ends() {
        let (_dir, store, host) = host(Duration::ZERO).await;
        // `loop` runs until the adapter's deadline (100 ms): the delivery must be durable in
        // the inbox meanwhile, then completed.
        let task = {
            let host = host.clone();
            tokio::spawn(async move { host.receive_webhook(inbound("loop", "gh-slow")).await })
        };
        let mut seen = Vec::new();
        while !task.is_finished() {
            seen.extend(statuses(&store).await);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ack = task.await.unwrap().unwrap();
        assert!(
            seen.contains(&DeliveryStatus::Received),
            "the delivery was recorded while its adapter ran: {seen:?}"
        );
        assert_eq!(ack.status, DeliveryStatus::Failed);
        let delivery = store.get_delivery(&ack.delivery_id).await.unwrap().unwrap();
        assert_eq!(delivery.info.status, DeliveryStatus::Failed);
        assert_eq!(delivery.info.attempts, 1);
        assert!(
            store
                .claim_recovery(
                    crate::store::now_millis() + 3_600_000,
                    crate::store::now_millis() + 3_700_000,
                    10
                )
                .await
                .unwrap()
                .is_empty()
        );

        let ok = host
            .receive_webhook(inbound("ok", "gh-slow-ok"))
            .await
            .unwrap();
        assert_eq!(ok.status, DeliveryStatus::Processed);
        assert_eq!(outbox_len(&store).await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_deliveries_that_change_state_lose_no_change() {
        let (_dir, store, host) = host(Duration::from_secs(5)).await;
        // 16 clients send 200 deliveries to one connection, all at once; each adds one to a
        // counter in the connection's state. Last-writer-wins would lose most of them.
        const TOTAL: usize = 200;
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let clients: Vec<_> = (0..16)
            .map(|_| {
                let (host, next) = (host.clone(), Arc::clone(&next));
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n >= TOTAL {
                            return;
                        }
                        let ack = host
                            .receive_webhook(inbound("count", &format!("gh-count-{n}")))
                            .await
                            .unwrap();
                        assert_eq!(ack.status, DeliveryStatus::Processed, "{ack:?}");
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
        let state = store.load_state("hostile").await.unwrap();
        assert_eq!(
            state
                .map
                .get("count")
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            Some(TOTAL.to_string()),
            "every increment is kept"
        );
        // Each delivery saw a distinct value: 1..=200, once each.
        let filter = OutboxFilter {
            tenant_id: "tenant-p".into(),
            limit: 1000,
            ..OutboxFilter::default()
        };
        let mut seen: Vec<String> = store
            .list_outbox(filter)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|row| row.entity_id)
            .collect();
        seen.sort();
        let mut expected: Vec<String> = (1..=TOTAL).map(|n| format!("count-{n}")).collect();
        expected.sort();
        assert_eq!(seen, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliveries_that_change_different_keys_commit_side_by_side() {
        let (_dir, store, host) = host(Duration::from_secs(5)).await;
        // 100 deliveries at once, each adding one to a counter of its own: none depends on
        // what another wrote, so none is refused as stale and run again (one write command
        // each), and none waits for the connection's lock.
        const TOTAL: usize = 100;
        let before = store.write_stats().commands;
        let deliveries: Vec<_> = (0..TOTAL)
            .map(|n| {
                let host = host.clone();
                tokio::spawn(async move {
                    host.receive_webhook(inbound(&format!("count-key\nk{n}"), &format!("gh-k{n}")))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for delivery in deliveries {
            assert_eq!(delivery.await.unwrap().status, DeliveryStatus::Processed);
        }
        assert_eq!(store.write_stats().commands - before, TOTAL as u64);
        let metrics = &host.inner.metrics;
        assert_eq!(
            metrics.state_conflicts.with_label_values::<&str>(&[]).get(),
            0
        );
        assert_eq!(
            metrics.adapter_loads.with_label_values(&["ok"]).get(),
            1,
            "deliveries arriving together wait for one load of their adapter"
        );
        let state = store.load_state("hostile").await.unwrap();
        assert_eq!(state.map.len(), TOTAL);
        assert!(state.map.values().all(|v| v == b"1"));
        assert_eq!(
            state.version, TOTAL as i64,
            "one version per commit that wrote"
        );
        // The same key from many at once: every increment is kept.
        let deliveries: Vec<_> = (0..20)
            .map(|n| {
                let host = host.clone();
                tokio::spawn(async move {
                    host.receive_webhook(inbound("count-key\nk0", &format!("gh-k0-{n}")))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for delivery in deliveries {
            assert_eq!(delivery.await.unwrap().status, DeliveryStatus::Processed);
        }
        let state = store.load_state("hostile").await.unwrap();
        assert_eq!(state.map["count/k0"], b"21");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivery_is_finished_when_its_caller_goes_away() {
        let (_dir, store, host) = host(Duration::from_millis(50)).await;
        // The caller (hyper, when the CRM hangs up) drops the future mid-way: the delivery is
        // finished anyway, not left `received` until a restart.
        let taking = {
            let host = host.clone();
            tokio::spawn(async move { host.receive_webhook(inbound("loop", "gh-hangup")).await })
        };
        tokio::time::sleep(Duration::from_millis(60)).await;
        taking.abort();
        let finished = async {
            loop {
                let statuses = statuses(&store).await;
                if statuses == [DeliveryStatus::Failed] {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), finished)
            .await
            .expect("the delivery was finished without its caller");
        // And a retry from the CRM sees it as taken, with its real outcome.
        let retry = host
            .receive_webhook(inbound("loop", "gh-hangup"))
            .await
            .unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.status, DeliveryStatus::Failed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recovery_parks_a_delivery_that_keeps_being_cut_off() {
        let (_dir, store, host) = host(Duration::from_secs(5)).await;
        // What three crashes in a row leave: a delivery received, its attempts used up.
        let recorded = store
            .record_delivery(
                NewDelivery {
                    connection_id: "hostile".into(),
                    received_at: crate::store::now_millis(),
                    provider_delivery_id: Some("gh-oom".into()),
                    method: "POST".into(),
                    path: "/v1/hooks/hostile".into(),
                    query: String::new(),
                    headers: Vec::new(),
                    body: b"ok".to_vec(),
                    trace_id: "t".into(),
                    kind: crate::store::DeliveryKind::Webhook,
                    poll_run_id: None,
                    cursor: None,
                },
                Duration::from_secs(300),
                0,
            )
            .await
            .unwrap();
        for attempt in 2..=3 {
            let claimed = store
                .claim_recovery(crate::store::now_millis(), 0, 10)
                .await
                .unwrap();
            assert_eq!(claimed[0].info.attempts, attempt);
        }
        // The next pass would be its fourth start: parked, not run.
        assert_eq!(host.recover_once().await.unwrap(), 1);
        let delivery = store.get_delivery(&recorded.id).await.unwrap().unwrap();
        assert_eq!(delivery.info.status, DeliveryStatus::Failed);
        let reason = delivery.info.reason_json.unwrap();
        assert!(reason.contains(r#""kind":"interrupted""#), "{reason}");
        assert!(reason.contains("3 times"), "{reason}");
        assert!(
            store
                .list_invocations(&recorded.id)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(outbox_len(&store).await, 0);
        // Parked deliveries are redriven like any failed one.
        let redriven = host.redrive(&recorded.id).await.unwrap();
        assert_eq!(redriven.status, DeliveryStatus::Processed);
        assert_eq!(outbox_len(&store).await, 1);
    }

    #[test]
    fn event_ids_are_stable_and_keyed_apart_from_positions() {
        let a = event_id("conn", "delivery-1", None, 1);
        assert_eq!(a, event_id("conn", "delivery-1", None, 1));
        assert_ne!(a, event_id("conn", "delivery-1", Some("1"), 1));
        assert_ne!(a, event_id("conn", "delivery-2", None, 1));
        assert_ne!(a, event_id("other", "delivery-1", None, 1));
        assert_eq!(
            event_id("conn", "d", Some("evt-9"), 0),
            event_id("conn", "d", Some("evt-9"), 5),
            "a dedupe key makes the id independent of the position"
        );
    }
}
