//! Schema drift: the host learns the shape of each connection's incoming payloads per source
//! kind and records when one changes it (a field appears, disappears, changes type, or a
//! decimal field starts arriving as a number), naming the JSON pointer with one example
//! delivery. The health monitor raises a `schema_drift` alert while a drift is recent.
//!
//! - **What is learned**: the body of every delivery taken (webhooks, polled and pushed pages)
//!   that is JSON, after its signature was verified, whatever the adapter made of it: a CRM
//!   that starts sending `amount` as a number is exactly when an adapter may fail.
//! - **Source kind**: the delivery's kind and the CRM's event kind, read from the first of
//!   [`KIND_POINTERS`] that holds a short string (`webhook:deal.won`, `webhook:*`, `poll:*`);
//!   each kind has its own shape. A connection has at most [`MAX_KINDS`] kinds in a node's
//!   memory; beyond them payloads share the kind `other`.
//! - **Off the webhook path**: an observation is queued (dropped when [`QUEUE`] are waiting)
//!   and judged by one task per node, which loads a shape from the store on first use, keeps it
//!   in memory and saves the ones it changed every [`SAVE_EVERY`]. Nodes learn side by side; a
//!   change found by two is recorded once a day ([`Store::record_drifts`]).

pub mod shape;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::store::{self, Connection, DeliveryKind, Millis, NewDrift, SavedShape, Store};
pub use shape::{Change, ChangeKind, Shape};

/// Where the CRM's event kind is looked for, in order: the custom CRMs' and Zenoti's fields,
/// HubSpot's (a batch: its first item's), Salesforce change events', Zoho's module.
pub const KIND_POINTERS: [&str; 8] = [
    "/event_type",
    "/eventType",
    "/event",
    "/type",
    "/subscriptionType",
    "/0/subscriptionType",
    "/ChangeEventHeader/entityName",
    "/module",
];
/// Source kinds a connection has in a node's memory.
pub const MAX_KINDS: usize = 64;
/// Observations waiting to be judged; more are dropped (drift is learned from a sample then).
pub const QUEUE: usize = 1024;
/// How often the shapes changed are saved.
pub const SAVE_EVERY: Duration = Duration::from_secs(5);
/// Bodies larger than this are not learned (parsing them would cost more than it tells).
pub const MAX_BODY: usize = 1 << 20;
/// Pointers kept in memory over all shapes (about 15 MB at most); beyond, every shape is
/// saved and forgotten, and loaded again when needed.
const MAX_CACHED_FIELDS: usize = 100_000;
/// A change found again within this is not recorded again.
const DEDUPE: Millis = 24 * 3600 * 1000;

/// The source kind of a `delivery` payload.
pub fn source_kind(delivery: DeliveryKind, payload: &Value) -> String {
    let kind = KIND_POINTERS
        .iter()
        .find_map(|pointer| payload.pointer(pointer)?.as_str())
        .filter(|kind| {
            !kind.is_empty() && kind.len() <= 64 && kind.bytes().all(|b| b.is_ascii_graphic())
        })
        .unwrap_or("*");
    format!("{}:{kind}", delivery.as_str())
}

/// A delivery's body to learn from.
#[derive(Debug)]
struct Observation {
    tenant_id: String,
    org_id: Option<String>,
    connection_id: String,
    delivery_id: String,
    kind: DeliveryKind,
    body: Vec<u8>,
}

/// The node's drift watch: queues observations for its task (started on first use).
#[derive(Clone)]
pub struct DriftWatch {
    store: Arc<dyn Store>,
    queue: Arc<OnceLock<mpsc::Sender<Observation>>>,
}

impl std::fmt::Debug for DriftWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftWatch").finish_non_exhaustive()
    }
}

impl DriftWatch {
    /// A watch saving into `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            queue: Arc::new(OnceLock::new()),
        }
    }

    /// Queues delivery `delivery_id`'s `body` of `connection` to be learned; never waits
    /// (call it from within a Tokio runtime: the first call starts the task).
    pub fn observe(
        &self,
        connection: &Connection,
        delivery_id: &str,
        kind: DeliveryKind,
        body: &[u8],
    ) {
        let json = body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| matches!(b, b'{' | b'['));
        if body.len() > MAX_BODY || !json {
            return;
        }
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            tokio::spawn(run(Arc::clone(&self.store), receiver));
            sender
        });
        let observation = Observation {
            tenant_id: connection.tenant_id.clone(),
            org_id: connection.org_id.clone(),
            connection_id: connection.id.clone(),
            delivery_id: delivery_id.to_owned(),
            kind,
            body: body.to_vec(),
        };
        if queue.try_send(observation).is_err() {
            tracing::debug!(connection = %connection.id, "drift watch busy: a payload is not learned");
        }
    }
}

/// A shape in memory, and whether it changed since it was saved.
struct Learned {
    shape: Shape,
    dirty: bool,
}

/// The task: judges and learns each observation, saves changed shapes every [`SAVE_EVERY`].
async fn run(store: Arc<dyn Store>, mut queue: mpsc::Receiver<Observation>) {
    let mut shapes: HashMap<(String, String), Learned> = HashMap::new();
    let mut kinds: HashMap<String, usize> = HashMap::new();
    let mut fields = 0usize;
    let mut tick = tokio::time::interval(SAVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            observation = queue.recv() => {
                let Some(observation) = observation else {
                    save(store.as_ref(), &mut shapes).await;
                    return;
                };
                if fields >= MAX_CACHED_FIELDS {
                    save(store.as_ref(), &mut shapes).await;
                    shapes.clear();
                    kinds.clear();
                    fields = 0;
                }
                fields += judge(store.as_ref(), &mut shapes, &mut kinds, observation).await;
            }
            _ = tick.tick() => save(store.as_ref(), &mut shapes).await,
        }
    }
}

/// Judges and learns one observation; how many pointers it added to the shapes in memory.
async fn judge(
    store: &dyn Store,
    shapes: &mut HashMap<(String, String), Learned>,
    kinds: &mut HashMap<String, usize>,
    observation: Observation,
) -> usize {
    let Ok(payload) = serde_json::from_slice::<Value>(&observation.body) else {
        return 0;
    };
    let mut added = 0;
    let mut kind = source_kind(observation.kind, &payload);
    let key = (observation.connection_id.clone(), kind.clone());
    if !shapes.contains_key(&key) {
        let known = kinds.entry(observation.connection_id.clone()).or_default();
        if *known >= MAX_KINDS {
            kind = format!("{}:other", observation.kind.as_str());
        } else {
            *known += 1;
        }
    }
    let key = (observation.connection_id.clone(), kind.clone());
    if !shapes.contains_key(&key) {
        let stored = match store.payload_shape(&key.0, &key.1).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(connection = %key.0, %error, "reading a payload shape failed");
                return 0;
            }
        };
        let shape: Shape = stored
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        added += shape.fields.len();
        shapes.insert(
            key.clone(),
            Learned {
                shape,
                dirty: false,
            },
        );
    }
    let learned = shapes.get_mut(&key).expect("inserted above");
    let known = learned.shape.fields.len();
    let changes = learned.shape.observe(&payload);
    learned.dirty = true;
    added += learned.shape.fields.len() - known;
    if changes.is_empty() {
        return added;
    }
    let now = store::now_millis();
    let drifts: Vec<NewDrift> = changes
        .into_iter()
        .map(|change| NewDrift {
            tenant_id: observation.tenant_id.clone(),
            org_id: observation.org_id.clone(),
            connection_id: observation.connection_id.clone(),
            kind: kind.clone(),
            pointer: change.pointer,
            change: change.kind.as_str().to_owned(),
            was: change.was,
            now: change.now,
            example_delivery_id: observation.delivery_id.clone(),
            detected_at: now,
        })
        .collect();
    for drift in &drifts {
        tracing::info!(
            connection = %drift.connection_id,
            kind = %drift.kind,
            pointer = %drift.pointer,
            change = %drift.change,
            was = %drift.was,
            now = %drift.now,
            delivery = %drift.example_delivery_id,
            "schema drift"
        );
    }
    if let Err(error) = store.record_drifts(drifts, now - DEDUPE).await {
        tracing::warn!(connection = %observation.connection_id, %error, "recording schema drift failed");
    }
    added
}

async fn save(store: &dyn Store, shapes: &mut HashMap<(String, String), Learned>) {
    let now = store::now_millis();
    let dirty: Vec<SavedShape> = shapes
        .iter()
        .filter(|(_, learned)| learned.dirty)
        .filter_map(|((connection_id, kind), learned)| {
            Some(SavedShape {
                connection_id: connection_id.clone(),
                kind: kind.clone(),
                shape_json: serde_json::to_string(&learned.shape).ok()?,
                samples: learned.shape.samples,
                updated_at: now,
            })
        })
        .collect();
    if dirty.is_empty() {
        return;
    }
    match store.save_payload_shapes(dirty).await {
        Ok(()) => shapes
            .values_mut()
            .for_each(|learned| learned.dirty = false),
        Err(error) => tracing::warn!(%error, "saving payload shapes failed (kept in memory)"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_source_kind_is_read_where_each_crm_puts_it() {
        let cases = [
            (json!({"type": "deal.won"}), "webhook:deal.won"),
            (
                json!({"event_type": "Appointment.Completed", "type": "x"}),
                "webhook:Appointment.Completed",
            ),
            (
                json!([{"subscriptionType": "deal.propertyChange"}]),
                "webhook:deal.propertyChange",
            ),
            (
                json!({"ChangeEventHeader": {"entityName": "Account"}}),
                "webhook:Account",
            ),
            (json!({"module": "Deals", "ids": ["1"]}), "webhook:Deals"),
            (json!({"items": []}), "webhook:*"),
            (json!({"type": 7}), "webhook:*"),
            (json!({"type": "has space"}), "webhook:*"),
            (json!({"type": "x".repeat(65)}), "webhook:*"),
        ];
        for (payload, kind) in cases {
            assert_eq!(
                source_kind(DeliveryKind::Webhook, &payload),
                kind,
                "{payload}"
            );
        }
        assert_eq!(source_kind(DeliveryKind::Poll, &json!({})), "poll:*");
    }
}
