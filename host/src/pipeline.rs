//! The webhook path: signature check -> inbox -> adapter in the sandbox -> contracts -> outbox.
//!
//! A delivery is recorded durably in the inbox before its adapter runs; the adapter's accepted
//! events, the invocation record, the connection's new state and the delivery's final status are
//! then written in one transaction. A crash in between leaves the delivery `received`, and
//! [`Host::recover`] runs it again at start. Every event gets an id derived from the connection,
//! the delivery (or the provider's id of it) and the adapter's dedupe key (or position), so a
//! redrive or a recovery can never append an event twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, Semaphore};

use crate::api::ApiError;
use crate::bus::Bus;
use crate::metrics::Metrics;
use crate::sandbox::{self, Adapter, ConnectionContext, Input, Limits, Outcome, Sandbox};
use crate::secrets::SecretStore;
use crate::signatures::{self, RawRequest, SchemeConfig, Secret};
use crate::store::{
    self, AdapterRef, BlobStore, Completion, Connection, ConnectionStatus, Delivery, DeliveryInfo,
    DeliveryStatus, InvocationRecord, NewDelivery, NewOutboxEvent, Store,
};

/// Settings of the webhook path.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The URL the CRMs call, without a trailing slash (HubSpot signs the full URL).
    pub public_base_url: String,
    /// How long a retried delivery without a provider id is recognised by its body hash.
    pub dedupe_window: Duration,
    /// Invocations of one tenant that may run at once.
    pub tenant_concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            public_base_url: "http://127.0.0.1:8080".into(),
            dedupe_window: Duration::from_secs(300),
            tenant_concurrency: 4,
        }
    }
}

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
    sandbox: Sandbox,
    bus: Arc<dyn Bus>,
    metrics: Metrics,
    settings: Settings,
    adapters: Mutex<HashMap<(String, u32), Adapter>>,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    instances: Arc<Semaphore>,
    outbox_appended: Arc<Notify>,
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
}

/// The answer to a webhook that was taken.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ack {
    /// The delivery's id (the original's for a retry).
    pub delivery_id: String,
    /// Where the delivery is.
    pub status: DeliveryStatus,
    /// Whether this was a retry of a delivery already taken.
    pub duplicate: bool,
    /// Events appended to the outbox by this request.
    pub events: usize,
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
        Self {
            inner: Arc::new(Inner {
                store,
                blobs,
                secrets,
                sandbox,
                bus,
                metrics,
                settings,
                adapters: Mutex::new(HashMap::new()),
                tenants: Mutex::new(HashMap::new()),
                instances,
                outbox_appended: Arc::new(Notify::new()),
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

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Takes one webhook: checks it, records it durably, runs the adapter and stores the
    /// outcome. Returns only after everything it acknowledges is committed.
    pub async fn receive_webhook(&self, inbound: Inbound) -> Result<Ack, ApiError> {
        let started = Instant::now();
        let store = &self.inner.store;
        let connection = store
            .get_connection(&inbound.connection_id)
            .await
            .map_err(ApiError::internal)?
            .filter(|c| c.status == ConnectionStatus::Active)
            .ok_or_else(|| {
                ApiError::NotFound(format!("no active connection `{}`", inbound.connection_id))
            })?;
        let scheme: SchemeConfig = serde_json::from_str(&connection.signature_json)
            .map_err(|e| ApiError::internal(format!("connection {}: {e}", connection.id)))?;
        let verified = self.verify(&connection, &scheme, &inbound)?;

        let trace_id = store::new_id();
        let span = tracing::info_span!("delivery", %trace_id, connection = %connection.id);
        let _guard = span.enter();
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
        };
        // What processing needs is at hand: keep it, rather than read it back from the store.
        let (headers, body) = (new.headers.clone(), new.body.clone());
        let mut info = DeliveryInfo {
            id: String::new(),
            connection_id: new.connection_id.clone(),
            tenant_id: connection.tenant_id.clone(),
            received_at: new.received_at,
            provider_delivery_id: new.provider_delivery_id.clone(),
            body_sha256: sandbox::sha256_hex(&new.body),
            body_bytes: new.body.len() as u64,
            method: new.method.clone(),
            path: new.path.clone(),
            query: new.query.clone(),
            status: DeliveryStatus::Received,
            attempts: 0,
            reason_json: None,
            processed_at: None,
            trace_id: new.trace_id.clone(),
        };
        let recorded = store
            .record_delivery(new, self.inner.settings.dedupe_window)
            .await
            .map_err(ApiError::internal)?;
        let ack = if recorded.duplicate {
            tracing::info!(delivery = %recorded.id, "retry of a delivery already taken");
            Ack {
                delivery_id: recorded.id,
                status: recorded.status,
                duplicate: true,
                events: 0,
                reply: Reply::of(&scheme),
            }
        } else {
            info.id = recorded.id.clone();
            let delivery = Delivery {
                info,
                headers,
                body,
            };
            let (status, events) = self
                .process(&delivery, &connection)
                .await
                .map_err(ApiError::internal)?;
            Ack {
                delivery_id: recorded.id,
                status,
                duplicate: false,
                events,
                reply: Reply::of(&scheme),
            }
        };
        let metrics = &self.inner.metrics;
        metrics
            .deliveries
            .with_label_values(&[
                if ack.duplicate {
                    "duplicate"
                } else {
                    ack.status.as_str()
                },
                scheme.name(),
            ])
            .inc();
        metrics
            .ack_latency
            .with_label_values(&[ack.status.as_str()])
            .observe(started.elapsed().as_secs_f64());
        Ok(ack)
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
        let mut url = format!("{}{}", self.inner.settings.public_base_url, inbound.path);
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
            self.inner
                .metrics
                .signature_failures
                .with_label_values(&[scheme.name(), error.code()])
                .inc();
            if error.is_config_error() {
                // The CRM cannot fix this: say so without detail, and log it for the tenant.
                tracing::error!(connection = %connection.id, %error, "signature configuration");
                ApiError::Unavailable(
                    "the connection's signature verification is misconfigured".into(),
                )
            } else {
                tracing::info!(connection = %connection.id, code = error.code(), "signature refused");
                ApiError::Unauthorized(format!("the webhook signature did not verify: {error}"))
            }
        })
    }

    /// The connection's signing secret(s): the current one, and the previous one while its
    /// rotation grace period lasts.
    fn signing_secrets(&self, connection: &Connection) -> Result<Vec<Secret>, ApiError> {
        let refs: Vec<String> = serde_json::from_str(&connection.secret_refs_json)
            .map_err(|e| ApiError::internal(format!("connection {}: {e}", connection.id)))?;
        let Some(name) = refs.first() else {
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

    /// Runs a recorded delivery through its connection's current adapter and writes the outcome.
    /// Returns the delivery's new status and the number of events appended.
    pub async fn process(
        &self,
        delivery: &Delivery,
        connection: &Connection,
    ) -> anyhow::Result<(DeliveryStatus, usize)> {
        let store = &self.inner.store;
        let delivery_id = delivery.info.id.as_str();
        let adapter = self
            .adapter(&connection.adapter_id, connection.adapter_version)
            .await?;
        let context = connection_context(connection)?;
        let state = store.load_state(&connection.id).await?;
        let input = Input::Webhook(delivery.to_webhook_request());

        let started_at = store::now_millis();
        let report = {
            let _tenant = self
                .tenant_permit(&connection.tenant_id)
                .acquire_owned()
                .await?;
            let _instance = self.inner.instances.clone().acquire_owned().await?;
            let adapter = adapter.clone();
            tokio::task::spawn_blocking(move || adapter.invoke(&input, &context, state)).await?
        };
        self.observe(&report);

        let status = DeliveryStatus::for_outcome(&report.outcome);
        let events = outbox_events(connection, delivery, &report.outcome)?;
        let reason_json = match &report.outcome {
            Outcome::Accepted { .. } => None,
            other => Some(serde_json::to_string(other)?),
        };
        let version = connection.adapter_version;
        let invocation = InvocationRecord::from_report(
            &report,
            AdapterRef {
                adapter_id: &connection.adapter_id,
                version,
                sha256: adapter.sha256(),
            },
            &sandbox::sha256_hex(&delivery.body),
            started_at,
        );
        let completed = store
            .complete_delivery(Completion {
                delivery_id: delivery_id.to_owned(),
                status,
                reason_json,
                completed_at: store::now_millis(),
                invocation,
                events,
                new_state: report.state,
            })
            .await?;
        if !completed.appended.is_empty() {
            self.inner.outbox_appended.notify_one();
        }
        tracing::info!(
            delivery = delivery_id,
            status = status.as_str(),
            appended = completed.appended.len(),
            "delivery processed"
        );
        Ok((status, completed.appended.len()))
    }

    /// Runs again every delivery that was recorded but never completed (a crash in between).
    pub async fn recover(&self) -> anyhow::Result<usize> {
        let mut recovered = 0;
        loop {
            let pending = self.inner.store.deliveries_to_recover(64).await?;
            if pending.is_empty() {
                return Ok(recovered);
            }
            for delivery in pending {
                let connection = self.connection_of(&delivery).await?;
                self.process(&delivery, &connection).await?;
                recovered += 1;
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
        let connection = self
            .connection_of(&delivery)
            .await
            .map_err(ApiError::internal)?;
        let (status, events) = self
            .process(&delivery, &connection)
            .await
            .map_err(ApiError::internal)?;
        Ok(Ack {
            delivery_id: delivery_id.to_owned(),
            status,
            duplicate: false,
            events,
            reply: Reply::Json,
        })
    }

    /// The loaded adapter of a version (loaded from the blob store on first use).
    pub async fn adapter(&self, adapter_id: &str, version: u32) -> anyhow::Result<Adapter> {
        let key = (adapter_id.to_owned(), version);
        if let Some(adapter) = self.lock_adapters().get(&key) {
            return Ok(adapter.clone());
        }
        let stored = self
            .inner
            .store
            .get_adapter_version(adapter_id, version)
            .await?
            .ok_or_else(|| anyhow::anyhow!("adapter {adapter_id} has no version {version}"))?;
        let wasm = self
            .inner
            .blobs
            .get(&stored.sha256)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the component {} is missing", stored.sha256))?;
        let limits: Limits = serde_json::from_str(&stored.limits_json)?;
        let sandbox = self.inner.sandbox.clone();
        let adapter = tokio::task::spawn_blocking(move || sandbox.load(&wasm, limits)).await??;
        self.lock_adapters().insert(key, adapter.clone());
        Ok(adapter)
    }

    fn lock_adapters(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Adapter>> {
        self.inner
            .adapters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// The connection as its adapter sees it.
fn connection_context(connection: &Connection) -> anyhow::Result<ConnectionContext> {
    let settings: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&connection.settings_json)?;
    Ok(ConnectionContext {
        connection_id: connection.id.clone(),
        tenant_id: connection.tenant_id.clone(),
        provider: connection.provider.clone(),
        allowed_org_ids: connection.allowed_org_ids.clone(),
        settings: settings.into_iter().collect(),
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

fn outbox_events(
    connection: &Connection,
    delivery: &Delivery,
    outcome: &Outcome,
) -> anyhow::Result<Vec<NewOutboxEvent>> {
    let source_id = delivery
        .info
        .provider_delivery_id
        .as_deref()
        .unwrap_or(&delivery.info.id);
    let received = std::time::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(delivery.info.received_at).unwrap_or_default());
    let metadata = serde_json::json!({
        "trace_id": delivery.info.trace_id,
        "source": format!("webhook:{}", connection.provider),
        "actor": format!("{}@{}", connection.adapter_id, connection.adapter_version),
        "timestamp": humantime::format_rfc3339_millis(received).to_string(),
    })
    .to_string();
    Ok(outcome
        .events()
        .iter()
        .enumerate()
        .map(|(position, event)| NewOutboxEvent {
            event_id: event_id(
                &connection.id,
                source_id,
                event.dedupe_key.as_deref(),
                position,
            ),
            org_id: event.org_id.clone(),
            event_type: event.event_type.clone(),
            entity_type: event.entity_type.clone(),
            entity_id: event.entity_id.clone(),
            payload_json: event.payload.clone(),
            metadata_json: metadata.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::event_id;

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
