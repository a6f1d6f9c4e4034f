//! Durable storage: adapters, connections, the inbox of deliveries, invocation records, the
//! append-only outbox of integration events, adapters' state and outgoing-webhook subscribers.
//!
//! [`Store`] is the backend-neutral interface; [`sqlite::SqliteStore`] is the embedded default
//! (one file under the data directory, a single writer with durable group commit), and
//! [`postgres::PostgresStore`] the shared one (several hosts on one PostgreSQL database).
//! Adapter components are not in the database: they live in a [`BlobStore`], content-addressed
//! ([`FsBlobStore`] under the data directory; with PostgreSQL, [`postgres::PgBlobStore`] in the
//! database, so that every host has them).
//!
//! Every method that writes is durable when it returns `Ok`: the caller may acknowledge what
//! it wrote (answer a CRM 2xx, tell an admin "saved"). Times are Unix milliseconds
//! ([`Millis`]) and are passed in by the caller, so behaviour that depends on time (dedupe
//! windows, retry schedules, leases) is deterministic to test.
//!
//! The store keeps `secret_ref`s (names in the secret store), never secret values; callers must
//! strip credential-bearing headers (an `Authorization` token, say) before recording a delivery.

mod blobs;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

pub use crate::sandbox::StateMap;
use crate::sandbox::{AdapterErrorKind, Outcome, Report, StateAccess};
pub use blobs::FsBlobStore;
pub use sqlite::SqliteStore;

/// Unix time in milliseconds.
pub type Millis = i64;

/// Errors of the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The row the operation targets does not exist (names what was missing).
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation clashes with existing data (a duplicate name, a row in another state).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The input breaks a rule of the data model (an empty entity id, malformed JSON).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A limit on how often an operation may run was reached (says which); try again later.
    #[error("limited: {0}")]
    Limited(String),
    /// The connection's state changed since the invocation being completed read it (another
    /// invocation committed first): run it again on the current state.
    #[error("stale state: {0}")]
    StaleState(String),
    /// The database or the filesystem failed; the operation did not take effect.
    #[error("storage backend: {0}")]
    Backend(String),
    /// The store is shut down.
    #[error("the store is closed")]
    Closed,
}

/// This module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The current time as Unix milliseconds.
pub fn now_millis() -> Millis {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// A new time-ordered unique id (UUID v7, hyphenated lower case): ids sort by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// `duration` in whole milliseconds, saturating.
pub fn millis(duration: Duration) -> Millis {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Declares a closed set of values stored as text, with its text form.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The stored text of this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;

            fn from_str(text: &str) -> Result<Self> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => Err(Error::Backend(format!(
                        concat!("unknown ", stringify!($name), " {:?} in the database"),
                        other
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod drift;
pub use drift::{Drift, NewDrift, SavedShape};
pub mod health;
pub mod identities;
pub use identities::{Identity, IdentityFilter};
pub mod sealing;
pub use health::{
    Activity, Alert, AlertChanges, AlertFilter, AlertStatus, Firing, HealthRecord, HealthSnapshot,
};

text_enum! {
    /// Where a replay is.
    ReplayStatus {
        /// Re-publishing.
        Running => "running",
        /// Every event of the range was re-published.
        Done => "done",
        /// Stopped by an error (see the replay's `error`).
        Failed => "failed",
        /// The host stopped while it ran; the events re-published before are not counted.
        Interrupted => "interrupted",
    }
}

text_enum! {
    /// Whether an adapter version can run.
    VersionStatus {
        /// Uploaded and checked; being compiled.
        Compiling => "compiling",
        /// Compiled and described: connections may run it.
        Ready => "ready",
        /// Refused when compiled or described (see its `failure`).
        Failed => "failed",
    }
}

text_enum! {
    /// Whom a replay re-sends to.
    ReplayTarget {
        /// The bus and every subscriber that wants the events.
        All => "all",
        /// The bus only.
        Bus => "bus",
        /// Subscribers only (every one that wants the events, or the one named).
        Subscribers => "subscribers",
    }
}

text_enum! {
    /// Whether a connection takes deliveries.
    ConnectionStatus {
        /// Deliveries are taken.
        Active => "active",
        /// The hosted endpoint answers 404.
        Disabled => "disabled",
    }
}

text_enum! {
    /// Where a connection's authorization with its CRM stands (OAuth 2.0 connections).
    AuthState {
        /// Authorized: the host holds tokens and keeps them fresh.
        Connected => "connected",
        /// The provider refused the tokens (a revoked or invalid grant): the connection cannot
        /// reach its CRM until it is connected again. Polls are paused meanwhile.
        Error => "error",
        /// Disconnected on purpose: the tokens were revoked and deleted.
        Disconnected => "disconnected",
    }
}

text_enum! {
    /// Where a delivery is in its life.
    DeliveryStatus {
        /// Recorded, not yet completed (in flight, or interrupted by a crash).
        Received => "received",
        /// The adapter's events are in the outbox.
        Processed => "processed",
        /// The adapter chose to produce nothing.
        Ignored => "ignored",
        /// The adapter or the sandbox failed, or an event broke a contract: kept for redrive.
        Failed => "failed",
        /// The adapter judged the input malformed: retrying cannot help.
        Rejected => "rejected",
    }
}

impl DeliveryStatus {
    /// The status a delivery ends in after an invocation with `outcome`. A contract violation
    /// is `Failed` (the adapter is at fault and can be fixed, then the delivery redriven); only
    /// an adapter's own "bad request" is `Rejected`.
    pub fn for_outcome(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Accepted { .. } => Self::Processed,
            Outcome::Ignored { .. } => Self::Ignored,
            Outcome::AdapterError {
                kind: AdapterErrorKind::BadRequest,
                ..
            } => Self::Rejected,
            Outcome::AdapterError { .. } | Outcome::Rejected { .. } | Outcome::Failed { .. } => {
                Self::Failed
            }
        }
    }
}

text_enum! {
    /// How one invocation ended (mirrors [`Outcome`]).
    InvocationOutcome {
        /// Every event passed the contracts.
        Accepted => "accepted",
        /// The adapter produced nothing on purpose.
        Ignored => "ignored",
        /// The adapter returned an error.
        AdapterError => "adapter_error",
        /// An event broke a contract.
        Rejected => "rejected",
        /// The sandbox stopped the adapter.
        Failed => "failed",
    }
}

impl From<&Outcome> for InvocationOutcome {
    fn from(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Accepted { .. } => Self::Accepted,
            Outcome::Ignored { .. } => Self::Ignored,
            Outcome::AdapterError { .. } => Self::AdapterError,
            Outcome::Rejected { .. } => Self::Rejected,
            Outcome::Failed { .. } => Self::Failed,
        }
    }
}

text_enum! {
    /// Where an outbox row is in publication.
    OutboxStatus {
        /// Not yet published (possibly claimed by a relay, or waiting for a retry).
        Pending => "pending",
        /// Published on the bus.
        Published => "published",
        /// Given up after too many attempts.
        Dead => "dead",
    }
}

text_enum! {
    /// How a delivery reached the inbox.
    DeliveryKind {
        /// A CRM's webhook.
        Webhook => "webhook",
        /// A page the host fetched for a poll run.
        Poll => "poll",
        /// A page an external poller pushed (`POST /v1/connections/{id}/poll-results`).
        Push => "push",
    }
}

text_enum! {
    /// Which export of the adapter an invocation called.
    Export {
        /// `handle-webhook`.
        HandleWebhook => "handle_webhook",
        /// `handle-poll`.
        HandlePoll => "handle_poll",
        /// `poll-request`.
        PollRequest => "poll_request",
    }
}

text_enum! {
    /// Where a poll run is.
    PollRunStatus {
        /// Fetching and committing pages.
        Running => "running",
        /// Ended: nothing more to fetch, or the page limit of a run reached.
        Done => "done",
        /// Ended by a failure (see its reason); the cursor is where the last committed page
        /// left it, and the next run starts from there.
        Failed => "failed",
        /// Its host stopped (or lost the lease) while it ran.
        Interrupted => "interrupted",
    }
}

text_enum! {
    /// What started a poll run.
    PollTrigger {
        /// The connection's schedule.
        Schedule => "schedule",
        /// A tenant admin (`POST /v1/connections/{id}/poll`).
        Manual => "manual",
    }
}

text_enum! {
    /// Where one event's delivery to one subscriber is.
    SubscriberDeliveryStatus {
        /// Not yet delivered (possibly claimed, or waiting for a retry).
        Pending => "pending",
        /// The subscriber answered 2xx.
        Delivered => "delivered",
        /// Given up after too many attempts (can be retried by hand).
        Dead => "dead",
    }
}

// ---------------------------------------------------------------------------------------------
// Adapters

/// A new adapter (a named series of versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAdapter {
    /// The owning tenant.
    pub tenant_id: String,
    /// The owning org; `None` for platform level.
    pub org_id: Option<String>,
    /// Unique within the tenant.
    pub name: String,
    /// When it was created.
    pub created_at: Millis,
}

/// An adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adapter {
    /// Its id (assigned by the store).
    pub id: String,
    /// The owning tenant.
    pub tenant_id: String,
    /// The owning org; `None` for platform level.
    pub org_id: Option<String>,
    /// Unique within the tenant.
    pub name: String,
    /// When it was created.
    pub created_at: Millis,
}

/// A new immutable version of an adapter. Its component must already be in the
/// [`BlobStore`] under `sha256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAdapterVersion {
    /// The adapter.
    pub adapter_id: String,
    /// Hex sha256 of the component.
    pub sha256: String,
    /// The component's size.
    pub size_bytes: u64,
    /// What the adapter declares about itself (JSON text).
    pub info_json: String,
    /// The limits its invocations run under (JSON text).
    pub limits_json: String,
    /// When it was uploaded.
    pub created_at: Millis,
    /// Who uploaded it.
    pub created_by: String,
    /// `Ready` when compiled already; `Compiling` when the compile runs after the row is
    /// written (its `info_json` is then filled in by [`Store::finish_adapter_version`]).
    pub status: VersionStatus,
}

/// An immutable adapter version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdapterVersion {
    /// The adapter.
    pub adapter_id: String,
    /// 1, 2, ... in upload order.
    pub version: u32,
    /// Hex sha256 of the component.
    pub sha256: String,
    /// The component's size.
    pub size_bytes: u64,
    /// What the adapter declares about itself (JSON text).
    pub info_json: String,
    /// The limits its invocations run under (JSON text).
    pub limits_json: String,
    /// When it was uploaded.
    pub created_at: Millis,
    /// Who uploaded it.
    pub created_by: String,
    /// Whether it can run.
    pub status: VersionStatus,
    /// Why it failed to compile.
    pub failure: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Connections

/// A connection's configuration, as provisioned (config file or API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSpec {
    /// The connection's id (appears in the hosted webhook URL).
    pub id: String,
    /// The owning tenant; a connection never changes tenant.
    pub tenant_id: String,
    /// The owning org; `None` for platform level.
    pub org_id: Option<String>,
    /// The CRM provider (`salesforce`, `hubspot`, ..., `custom`).
    pub provider: String,
    /// The adapter it runs.
    pub adapter_id: String,
    /// The adapter version it runs.
    pub adapter_version: u32,
    /// The signature scheme's configuration (JSON text, opaque to the store).
    pub signature_json: String,
    /// The orgs its events may be scoped to.
    pub allowed_org_ids: Vec<String>,
    /// Names of its secrets in the secret store (JSON text); never the secrets.
    pub secret_refs_json: String,
    /// Non-secret settings handed to the adapter (JSON text).
    pub settings_json: String,
    /// Polling configuration (JSON text), for polling connections.
    pub polling_json: Option<String>,
    /// How the host reaches the CRM's API (JSON text: base URL, origins, rate limit,
    /// credential), for connections with API access.
    pub api_json: Option<String>,
    /// What its webhook checks besides the signature (JSON text: source allow list,
    /// capability secret, methods); `None` for nothing.
    pub webhook_json: Option<String>,
    /// What it withholds from export (JSON text of an [`crate::export::ExportPolicy`]); `None`
    /// for nothing.
    pub export_json: Option<String>,
    /// Whether it takes deliveries.
    pub status: ConnectionStatus,
}

/// An org of a tenant as the host knows it: named by a connection (its own org or one of its
/// allowed orgs), an adapter or a subscriber. Orgs themselves live on the platform; the host
/// only sees the ones its rows name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrgUse {
    /// The org's id.
    pub org_id: String,
    /// Connections of this org.
    pub connections: u64,
    /// Connections of other orgs (or platform level) that list it among their allowed orgs.
    pub allowed_by: u64,
    /// Adapters of this org.
    pub adapters: u64,
    /// Subscribers of this org.
    pub subscribers: u64,
}

/// A stored connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Connection {
    /// The connection's id.
    pub id: String,
    /// The owning tenant.
    pub tenant_id: String,
    /// The owning org; `None` for platform level.
    pub org_id: Option<String>,
    /// The CRM provider.
    pub provider: String,
    /// The adapter it runs.
    pub adapter_id: String,
    /// The adapter version it runs.
    pub adapter_version: u32,
    /// The signature scheme's configuration (JSON text).
    pub signature_json: String,
    /// The orgs its events may be scoped to.
    pub allowed_org_ids: Vec<String>,
    /// Names of its secrets in the secret store (JSON text).
    pub secret_refs_json: String,
    /// Non-secret settings (JSON text).
    pub settings_json: String,
    /// Polling configuration (JSON text).
    pub polling_json: Option<String>,
    /// API access (JSON text).
    pub api_json: Option<String>,
    /// Webhook guard (JSON text).
    pub webhook_json: Option<String>,
    /// Export policy (JSON text).
    pub export_json: Option<String>,
    /// Whether it takes deliveries.
    pub status: ConnectionStatus,
    /// When it was created.
    pub created_at: Millis,
    /// When its configuration last changed.
    pub updated_at: Millis,
    /// When it last received a (non-duplicate) delivery.
    pub last_delivery_at: Option<Millis>,
    /// Who last switched its adapter version.
    pub version_changed_by: Option<String>,
    /// When its adapter version was last switched.
    pub version_changed_at: Option<Millis>,
}

impl Connection {
    /// Its configuration, to write back changed.
    pub fn spec(&self) -> ConnectionSpec {
        ConnectionSpec {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            org_id: self.org_id.clone(),
            provider: self.provider.clone(),
            adapter_id: self.adapter_id.clone(),
            adapter_version: self.adapter_version,
            signature_json: self.signature_json.clone(),
            allowed_org_ids: self.allowed_org_ids.clone(),
            secret_refs_json: self.secret_refs_json.clone(),
            settings_json: self.settings_json.clone(),
            polling_json: self.polling_json.clone(),
            api_json: self.api_json.clone(),
            webhook_json: self.webhook_json.clone(),
            export_json: self.export_json.clone(),
            status: self.status,
        }
    }
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Upsert {
    /// The row did not exist.
    Created,
    /// The row existed and differed.
    Updated,
    /// The row existed and already matched: nothing was written.
    Unchanged,
}

// ---------------------------------------------------------------------------------------------
// The inbox

/// A delivery to record, as received (after its signature was verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The connection it came in on (the tenant is the connection's).
    pub connection_id: String,
    /// When the host received it.
    pub received_at: Millis,
    /// The provider's id of this delivery (webhook id, event id), when it has one.
    pub provider_delivery_id: Option<String>,
    /// HTTP method (`POLL` or similar for a poll page).
    pub method: String,
    /// Request path without the query.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// Headers in order, credential-bearing ones already removed.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The trace this delivery belongs to.
    pub trace_id: String,
    /// How it reached the inbox.
    pub kind: DeliveryKind,
    /// For a page of a poll run: the run.
    pub poll_run_id: Option<String>,
    /// For a poll page: the cursor it was fetched (or pushed) with.
    pub cursor: Option<String>,
}

impl NewDelivery {
    /// What a retry without the provider's id is recognised by (the `body_sha256` column): the
    /// body's SHA-256, or for a delivery without a body (a HubSpot workflow GET, whose data is
    /// all in the query) the method's and query's, so that two such calls with different
    /// data are not taken for one.
    pub fn content_sha256(&self) -> String {
        if self.body.is_empty() && !self.query.is_empty() {
            let mut bodiless = vec![0u8];
            bodiless.extend_from_slice(self.method.as_bytes());
            bodiless.push(b'?');
            bodiless.extend_from_slice(self.query.as_bytes());
            return sha256_hex(&bodiless);
        }
        sha256_hex(&self.body)
    }
}

/// The result of recording a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    /// The delivery's id: the original's when this was a duplicate.
    pub id: String,
    /// Whether the delivery had already been recorded (nothing was written).
    pub duplicate: bool,
    /// The (original) delivery's status.
    pub status: DeliveryStatus,
}

/// A delivery without its headers and body (for lists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeliveryInfo {
    /// Time-ordered id.
    pub id: String,
    /// The connection it came in on.
    pub connection_id: String,
    /// The connection's tenant.
    pub tenant_id: String,
    /// When the host received it.
    pub received_at: Millis,
    /// The provider's id of this delivery.
    pub provider_delivery_id: Option<String>,
    /// Hex sha256 of the body.
    pub body_sha256: String,
    /// Size of the body as received (kept when the body is purged or erased).
    pub body_bytes: u64,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Invocations started on it so far (a start interrupted by a crash counts).
    pub attempts: u32,
    /// Why it failed or was ignored (JSON text).
    pub reason_json: Option<String>,
    /// When it was last completed.
    pub processed_at: Option<Millis>,
    /// The trace it belongs to.
    pub trace_id: String,
    /// How it reached the inbox.
    pub kind: DeliveryKind,
    /// For a page of a poll run: the run.
    pub poll_run_id: Option<String>,
    /// For a poll page: the cursor it was fetched (or pushed) with.
    pub cursor: Option<String>,
    /// When its body (and the answers recorded with it) passed the tenant's retention and
    /// was purged; everything else stays.
    pub body_purged_at: Option<Millis>,
}

/// What a new delivery needs before its adapter runs ([`Store::prepare_delivery`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// A retry of a delivery already recorded: there is nothing to run.
    Duplicate(Recorded),
    /// A delivery not seen before, and its connection's state for the adapter.
    New(StateSnapshot),
}

/// A connection's adapter state as read: its keys and values, the version each key was last
/// written at, and the connection's version (the last commit that wrote any key), all of one
/// commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateSnapshot {
    /// The keys and values.
    pub map: StateMap,
    /// The version each key of `map` was last written at.
    pub versions: BTreeMap<String, i64>,
    /// The version of the last commit that wrote the state; 0 before the first.
    pub version: i64,
}

impl StateSnapshot {
    /// The commit of an invocation that ran on this snapshot and did `access`, under the
    /// limits `bounds`; `None` when it neither read nor wrote the state.
    pub fn commit(&self, access: &StateAccess, bounds: StateBounds) -> Option<StateCommit> {
        if access.is_empty() {
            return None;
        }
        Some(StateCommit {
            base_version: self.version,
            reads: access
                .reads
                .iter()
                .map(|key| (key.clone(), self.versions.get(key).copied()))
                .collect(),
            prefixes: access
                .prefixes
                .iter()
                .map(|prefix| {
                    let keys = self
                        .map
                        .range(prefix.clone()..)
                        .take_while(|(key, _)| key.starts_with(prefix.as_str()))
                        .count();
                    (prefix.clone(), keys as u64)
                })
                .collect(),
            writes: access
                .writes
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            bounds,
        })
    }
}

/// The limits a connection's whole state stays within (the adapter's `state_keys` and
/// `state_total_bytes`): checked at commit, because invocations that each stayed within them
/// on their own snapshot may together go past them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateBounds {
    /// Keys at most.
    pub keys: u64,
    /// Bytes of keys and values at most.
    pub bytes: u64,
}

/// What a completion does to its connection's state, when its invocation used (read or wrote)
/// it: checked and applied key by key, in the completion's transaction. The store refuses the
/// whole completion with [`Error::StaleState`], writing nothing of it, when another commit
/// since the snapshot wrote a key the invocation read, or changed which keys a prefix it listed
/// holds, or when its writes would take the state past its bounds. So no change is ever lost
/// and no event is based on a state that was overwritten, while invocations that touch
/// different keys commit side by side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCommit {
    /// The connection's version in the snapshot the invocation ran on.
    pub base_version: i64,
    /// Keys the invocation read, with the version each had in its snapshot (`None`: absent).
    pub reads: Vec<(String, Option<i64>)>,
    /// Prefixes the invocation listed, with how many keys each held in its snapshot.
    pub prefixes: Vec<(String, u64)>,
    /// The final value of each key it wrote (`None`: deleted).
    pub writes: Vec<(String, Option<Vec<u8>>)>,
    /// The limits the state stays within once written.
    pub bounds: StateBounds,
}

#[cfg(test)]
impl StateCommit {
    /// Writes each key of `map` onto `base_version` without reading anything (for tests).
    pub fn blind(base_version: i64, map: StateMap) -> Self {
        Self {
            base_version,
            reads: Vec::new(),
            prefixes: Vec::new(),
            writes: map.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            bounds: StateBounds {
                keys: 1_024,
                bytes: 1 << 20,
            },
        }
    }
}

/// A pending OAuth authorization: started by `created_by` for a connection, taken once by the
/// provider's redirect before `expires_at`. The `state` itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthState {
    /// SHA-256 of the `state` sent to the provider, hex.
    pub state_hash: String,
    /// The connection being authorized.
    pub connection_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Its org (`None`: platform level).
    pub org_id: Option<String>,
    /// Who started it.
    pub created_by: String,
    /// When.
    pub created_at: Millis,
    /// When it stops being accepted.
    pub expires_at: Millis,
}

/// Where a connection's authorization with its CRM stands. Tokens live in the secret store;
/// this is what may be shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ConnectionAuth {
    /// The connection.
    #[serde(skip)]
    pub connection_id: String,
    /// Connected, in error, or disconnected.
    pub state: AuthState,
    /// Why it is in error (or how it was disconnected).
    pub reason: Option<String>,
    /// Who connected it last.
    pub connected_by: Option<String>,
    /// When.
    pub connected_at: Option<Millis>,
    /// When the state last changed.
    pub changed_at: Millis,
    /// When the current access token expires, when the provider said.
    pub access_expires_at: Option<Millis>,
    /// The scopes granted, as the provider answered them.
    pub scopes: Option<String>,
}

/// What [`Store::record_completed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// A retry of a delivery already recorded (found inside the transaction): nothing was
    /// written.
    Duplicate(Recorded),
    /// The delivery was recorded with its completion.
    Completed(Completed),
}

/// A delivery with everything needed to run it (again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Everything but headers and body.
    pub info: DeliveryInfo,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The raw body (empty once erased).
    pub body: Vec<u8>,
    /// Whether the body was erased (its tenant's data key destroyed).
    pub body_erased: bool,
}

/// The pseudo-header a poll page's answer status is recorded in, among its headers.
pub const STATUS_HEADER: &str = ":status";

impl Delivery {
    /// What the delivery gives its adapter: the webhook request, or the poll page.
    pub fn to_input(&self) -> crate::sandbox::Input {
        stored_input(StoredInput {
            kind: self.info.kind,
            method: &self.info.method,
            path: &self.info.path,
            query: &self.info.query,
            received_at: self.info.received_at,
            cursor: self.info.cursor.as_deref(),
            headers: &self.headers,
            body: &self.body,
        })
    }
}

impl NewDelivery {
    /// What the delivery gives its adapter, exactly as [`Delivery::to_input`] gives it once
    /// stored: a redrive or a replay runs on the same input as the first run.
    pub fn to_input(&self) -> crate::sandbox::Input {
        stored_input(StoredInput {
            kind: self.kind,
            method: &self.method,
            path: &self.path,
            query: &self.query,
            received_at: self.received_at,
            cursor: self.cursor.as_deref(),
            headers: &self.headers,
            body: &self.body,
        })
    }
}

/// What of a delivery makes its adapter's input.
struct StoredInput<'a> {
    kind: DeliveryKind,
    method: &'a str,
    path: &'a str,
    query: &'a str,
    received_at: Millis,
    cursor: Option<&'a str>,
    headers: &'a [(String, String)],
    body: &'a [u8],
}

/// The webhook request, or the poll page: for a page, the request the host made (its method,
/// URL and query as recorded) and the answer's status, headers and body.
fn stored_input(d: StoredInput<'_>) -> crate::sandbox::Input {
    let received = std::time::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(d.received_at).unwrap_or_default());
    if d.kind == DeliveryKind::Webhook {
        return crate::sandbox::Input::Webhook(crate::sandbox::WebhookRequest {
            method: d.method.to_owned(),
            path: d.path.to_owned(),
            query: d.query.to_owned(),
            headers: d.headers.to_vec(),
            body: d.body.to_vec(),
            received_at: received,
        });
    }
    let status = d
        .headers
        .iter()
        .find(|(name, _)| name == STATUS_HEADER)
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(200);
    let headers: Vec<(String, String)> = d
        .headers
        .iter()
        .filter(|(name, _)| name != STATUS_HEADER)
        .cloned()
        .collect();
    let content_type = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.clone());
    let polled = d.kind == DeliveryKind::Poll;
    let request = polled.then(|| crate::sandbox::HttpRequest {
        method: d.method.to_owned(),
        url: d.path.to_owned(),
        query: url::form_urlencoded::parse(d.query.as_bytes())
            .into_owned()
            .collect(),
        headers: Vec::new(),
        body: None,
    });
    crate::sandbox::Input::Poll(crate::sandbox::PollPage {
        body: d.body.to_vec(),
        content_type,
        cursor: d.cursor.map(str::to_owned),
        fetched_at: received,
        request,
        status,
        headers: if polled { headers } else { Vec::new() },
    })
}

/// Which deliveries to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only this tenant's.
    pub tenant_id: Option<String>,
    /// `Some(org)`: only deliveries of that org's connections and platform-level ones.
    pub org_id: Option<String>,
    /// Only this connection's.
    pub connection_id: Option<String>,
    /// Only in this status.
    pub status: Option<DeliveryStatus>,
    /// Received at or after.
    pub since: Option<Millis>,
    /// Received before.
    pub until: Option<Millis>,
    /// Page size (clamped to 1..=1000; 0 means 100).
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A replay to record: who asked to re-publish which published events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReplay {
    /// The tenant.
    pub tenant_id: String,
    /// The org whose events are re-published; `None`: the platform-level events.
    pub org_id: Option<String>,
    /// Events created at or after (Unix milliseconds).
    pub from: Millis,
    /// Events created before.
    pub to: Millis,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Whom it re-sends to.
    pub target: ReplayTarget,
    /// Only this subscriber (with the `subscribers` target).
    pub subscriber_id: Option<String>,
    /// Who asked (the caller's subject).
    pub requested_by: String,
    /// When.
    pub requested_at: Millis,
}

/// A recorded replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Replay {
    /// Its id.
    pub id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The org whose events are re-published; `None`: the platform-level events.
    pub org_id: Option<String>,
    /// Events created at or after (Unix milliseconds).
    pub from: Millis,
    /// Events created before.
    pub to: Millis,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Whom it re-sends to.
    pub target: ReplayTarget,
    /// Only this subscriber (with the `subscribers` target).
    pub subscriber_id: Option<String>,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: Millis,
    /// Where it is.
    pub status: ReplayStatus,
    /// Events of the range replayed (known when it ends).
    pub replayed: u64,
    /// Subscriber deliveries queued again (known when it ends): they go out with the
    /// original event ids, so a subscriber drops what it already has.
    pub queued: u64,
    /// When it ended.
    pub finished_at: Option<Millis>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Which page of a list to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Page size (clamped to 1..=1000; 0 means 100).
    pub limit: usize,
    /// The `next_cursor` of the previous page; `None` for the first.
    pub cursor: Option<String>,
}

/// One page of a list, and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The same page with each item turned into what `f` makes of it.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

/// What one invocation did, recorded with its delivery's completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InvocationRecord {
    /// The export it called.
    pub export: Export,
    /// The adapter that ran.
    pub adapter_id: String,
    /// Its version.
    pub adapter_version: u32,
    /// Its component's hash.
    pub adapter_sha256: String,
    /// Hex sha256 of the input (the body).
    pub input_sha256: String,
    /// When it started.
    pub started_at: Millis,
    /// How long it ran.
    pub duration_us: u64,
    /// Fuel consumed.
    pub fuel: u64,
    /// The largest linear memory it held.
    pub peak_memory_bytes: u64,
    /// Input size.
    pub bytes_in: u64,
    /// Output size.
    pub bytes_out: u64,
    /// Events returned.
    pub events: u64,
    /// How it ended.
    pub outcome: InvocationOutcome,
    /// Violations, failure or adapter error (JSON text).
    pub detail_json: Option<String>,
    /// The adapter's log (JSON text, already bounded by the sandbox).
    pub log_json: String,
    /// What replays it exactly (JSON text of a [`crate::replay::ReplayRecord`]): never shown
    /// with the invocation; kept, purged and erased with its log.
    #[serde(skip)]
    pub replay_json: Option<String>,
}

/// Which adapter version ran an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterRef<'a> {
    /// The adapter.
    pub adapter_id: &'a str,
    /// Its version.
    pub version: u32,
    /// Its component's hash.
    pub sha256: &'a str,
}

impl InvocationRecord {
    /// The record of the invocation that produced `report`.
    pub fn from_report(
        report: &Report,
        export: Export,
        adapter: AdapterRef<'_>,
        input_sha256: &str,
        started_at: Millis,
    ) -> Self {
        let usage = &report.usage;
        let detail = match &report.outcome {
            // The accepted events are in the outbox: only the cursor, whether more pages follow
            // and the request asked for are left to keep. (The general case below would copy
            // every event into a `Value` to drop them.)
            Outcome::Accepted {
                next_cursor,
                more,
                records,
                request,
                ..
            } => {
                let mut detail = serde_json::Map::new();
                if let Some(cursor) = next_cursor {
                    detail.insert("next_cursor".into(), cursor.clone().into());
                }
                if *more {
                    detail.insert("more".into(), true.into());
                }
                if let Some(records) = records {
                    detail.insert("records".into(), (*records).into());
                }
                if let Some(request) = request {
                    detail.insert(
                        "request".into(),
                        serde_json::to_value(request).unwrap_or_default(),
                    );
                }
                (!detail.is_empty()).then(|| serde_json::Value::Object(detail).to_string())
            }
            other => Self::detail(other),
        };
        Self {
            export,
            adapter_id: adapter.adapter_id.to_owned(),
            adapter_version: adapter.version,
            adapter_sha256: adapter.sha256.to_owned(),
            input_sha256: input_sha256.to_owned(),
            started_at,
            duration_us: u64::try_from(usage.duration.as_micros()).unwrap_or(u64::MAX),
            fuel: usage.fuel_consumed,
            peak_memory_bytes: usage.peak_memory_bytes,
            bytes_in: usage.bytes_in,
            bytes_out: usage.bytes_out,
            events: usage.events,
            outcome: InvocationOutcome::from(&report.outcome),
            detail_json: detail,
            log_json: serde_json::to_string(&report.log).unwrap_or_else(|_| "null".to_owned()),
            replay_json: None,
        }
    }

    /// What the record keeps of an outcome: everything but its events, status and nulls.
    fn detail(outcome: &Outcome) -> Option<String> {
        match serde_json::to_value(outcome) {
            // The accepted events are in the outbox; the record keeps what else there is.
            Ok(serde_json::Value::Object(mut detail)) => {
                detail.remove("events");
                detail.remove("status");
                detail.retain(|_, value| !value.is_null());
                (!detail.is_empty()).then(|| serde_json::Value::Object(detail).to_string())
            }
            Ok(other) => Some(other.to_string()),
            Err(e) => Some(serde_json::json!({ "unserializable": e.to_string() }).to_string()),
        }
    }
}

/// A stored invocation record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Invocation {
    /// Time-ordered id.
    pub id: String,
    /// The delivery it ran on.
    pub delivery_id: String,
    /// What it did.
    #[serde(flatten)]
    pub record: InvocationRecord,
    /// When its log passed the retention and was purged (the log reads as empty then).
    pub log_purged_at: Option<Millis>,
    /// Whether its log was erased (its tenant's data key destroyed; the log reads as empty).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub log_erased: bool,
}

/// One pass of the retention purge: what is older than each bound loses its content, at most
/// `limit` rows of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purge {
    /// How long the platform keeps delivery bodies (of deliveries no longer being taken) and
    /// the HTTP answers recorded with them (ms); `None`: for good. A tenant's own retention
    /// ([`TenantRetention`]) comes first.
    pub bodies_keep: Option<Millis>,
    /// How long the platform keeps invocation logs (ms); `None`: for good.
    pub logs_keep: Option<Millis>,
    /// Rows purged at most, per kind.
    pub limit: usize,
    /// The purge's time, recorded on what it purged.
    pub now: Millis,
}

/// A day, in milliseconds (retention is set in days).
pub const DAY_MILLIS: Millis = 24 * 3600 * 1000;

/// A tenant's own retention, in days, instead of the platform's ([`Purge`]); `None`: the
/// platform's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TenantRetention {
    /// The tenant.
    pub tenant_id: String,
    /// Days raw delivery bodies and recorded HTTP answers are kept.
    pub bodies_days: Option<u32>,
    /// Days invocation logs are kept.
    pub logs_days: Option<u32>,
    /// When it was last set.
    pub updated_at: Millis,
    /// Who set it.
    pub updated_by: String,
}

/// What one pass purged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Delivery bodies.
    pub bodies: u64,
    /// Recorded HTTP answers' bodies.
    pub exchanges: u64,
    /// Invocation logs.
    pub logs: u64,
}

impl Purged {
    /// Whether a kind filled its `limit`: more may wait.
    pub fn full(&self, limit: usize) -> bool {
        let limit = limit as u64;
        self.bodies >= limit || self.exchanges >= limit || self.logs >= limit
    }
}

/// What erasing a tenant did ([`Store::erase_tenant`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Erasure {
    /// Whether the tenant had a data key (false: nothing of it was sealed yet, or it was
    /// erased already).
    pub key_destroyed: bool,
    /// Deliveries still waiting to be processed, failed now (their bodies are gone).
    pub deliveries_failed: u64,
    /// Events not yet published, dead now (their payloads are gone).
    pub events_dead: u64,
    /// Deliveries to subscribers not yet made, dead now.
    pub subscriber_deliveries_dead: u64,
    /// Values the tenant stored in the clear (before encryption at rest), which its key never
    /// sealed: overwritten now, so they read as erased too.
    pub plaintext_overwritten: u64,
    /// Entries of its identity map, forgotten.
    pub identities_forgotten: u64,
}

/// One CRM record (one person) to erase: what the identity map knows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The tenant.
    pub tenant_id: String,
    /// `Some(org)`: its identities in that org (and at platform level, with
    /// `platform_level`); `None`: in every org.
    pub org_id: Option<String>,
    /// Whether platform-level identities are reached from an org (only a platform-level
    /// caller may change platform-level rows).
    pub platform_level: bool,
    /// Its system (`external_source`).
    pub source: String,
    /// Its id there (`external_id`).
    pub external_id: String,
}

/// What erasing one subject did ([`Store::erase_subject`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SubjectErasure {
    /// Its entries in the identity map, forgotten (0: the host knows no such record).
    pub identities: u64,
    /// Events of its entities whose payloads were erased (their rows stay).
    pub events: u64,
    /// Deliveries those events came from whose bodies, logs and recorded answers were erased.
    pub deliveries: u64,
}

/// An invocation log with nothing in it, as the sandbox's empty [`crate::sandbox::Log`] is
/// stored: what a purged log reads as.
pub fn empty_log() -> String {
    serde_json::to_string(&crate::sandbox::Log::default()).expect("a log serializes")
}

/// An accepted event to append to the outbox. The tenant, connection and delivery are the
/// completed delivery's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxEvent {
    /// Stable id computed by the caller (the same delivery and event give the same id on a
    /// redrive), so appending it twice is a no-op.
    pub event_id: String,
    /// `None` for platform level.
    pub org_id: Option<String>,
    /// `entity.action`.
    pub event_type: String,
    /// The part of `event_type` before the dot.
    pub entity_type: String,
    /// The entity's id (non-empty).
    pub entity_id: String,
    /// Exactly the adapter's payload text: never re-serialized.
    pub payload_json: String,
    /// `trace_id`, `source`, `actor`, `timestamp` (JSON text).
    pub metadata_json: String,
}

/// The end of one invocation on a delivery: written in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The delivery.
    pub delivery_id: String,
    /// Its new status (anything but `Received`).
    pub status: DeliveryStatus,
    /// Why it failed or was ignored (JSON text).
    pub reason_json: Option<String>,
    /// When it completed (the outbox rows' `created_at`).
    pub completed_at: Millis,
    /// What the invocation did.
    pub invocation: InvocationRecord,
    /// The accepted events, in emission order.
    pub events: Vec<NewOutboxEvent>,
    /// The connection's state, checked and changed, when the invocation used it and succeeded.
    pub state: Option<StateCommit>,
    /// Whether this invocation's start was already counted in the delivery's `attempts` (by
    /// [`Store::record_delivery`] or [`Store::claim_recovery`]); otherwise completing counts it.
    pub attempt_counted: bool,
    /// Invocations that led to this one and belong with it (a poll page's `poll-request`),
    /// recorded before it.
    pub preceding: Vec<InvocationRecord>,
    /// Requests made for the delivery: by the host (a poll page's own fetch) or by the
    /// invocation (`http.fetch`), recorded with it.
    pub exchanges: Vec<ExchangeRecord>,
    /// For a page of a poll run: the run's checkpoint, committed with the page.
    pub poll: Option<PollCheckpoint>,
}

/// A request recorded with a completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRecord {
    /// Whether the invocation made it (`http.fetch`); otherwise the host did (a poll page's
    /// own request).
    pub by_invocation: bool,
    /// The request and its answer.
    pub exchange: crate::egress::Exchange,
}

/// What a poll page commits besides its events: the run's cursor moves (fenced by the run's
/// lease and the cursor the page was fetched with), the run's counters grow, its lease is
/// renewed. When the run lost its lease (another node took over) or the cursor moved meanwhile,
/// the whole page is refused ([`Error::Conflict`]) and nothing of it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollCheckpoint {
    /// The run.
    pub run_id: String,
    /// Who holds its lease.
    pub owner: String,
    /// The cursor the page was fetched with.
    pub cursor_before: Option<String>,
    /// The cursor after the page (`None` keeps it), when the page is to move it: a failed page
    /// leaves the cursor where it was.
    pub advance: Option<Option<String>>,
    /// The lease's new end.
    pub lease_until: Millis,
    /// Requests the page took (its fetch and the adapter's).
    pub requests: u32,
    /// Records the page held, as the adapter counted them (0 when it did not).
    pub records: u32,
}

/// What a completion wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Completed {
    /// The invocation record's id.
    pub invocation_id: String,
    /// Outbox sequence numbers of the events appended now, in order.
    pub appended: Vec<i64>,
    /// Events already in the outbox (same `event_id`: a redrive), not appended again.
    pub already_present: usize,
}

// ---------------------------------------------------------------------------------------------
// The outbox

/// A row of the outbox (`integration_events_outbox`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxRow {
    /// Global order of appends.
    pub seq: i64,
    /// Stable id consumers drop duplicates by.
    pub event_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// `None` for platform level.
    pub org_id: Option<String>,
    /// `entity.action`.
    pub event_type: String,
    /// The entity's type.
    pub entity_type: String,
    /// The entity's id.
    pub entity_id: String,
    /// The payload, exactly as emitted (`null` once erased).
    pub payload_json: String,
    /// Whether the payload was erased (its tenant's data key destroyed): the row keeps its ids,
    /// types and times.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub payload_erased: bool,
    /// The host-stamped metadata (JSON text).
    pub metadata_json: String,
    /// The delivery it came from.
    pub delivery_id: String,
    /// The connection it came from.
    pub connection_id: String,
    /// When it was appended.
    pub created_at: Millis,
    /// Where it is in publication.
    pub status: OutboxStatus,
    /// Publication attempts so far (a claim counts as one).
    pub attempts: u32,
    /// When it may next be claimed.
    pub next_attempt_at: Millis,
    /// When it was published.
    pub published_at: Option<Millis>,
    /// The last publication error.
    pub last_error: Option<String>,
}

/// How far publication is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutboxLag {
    /// Rows not yet published (dead rows excluded).
    pub pending: u64,
    /// `created_at` of the oldest of them.
    pub oldest_pending_created_at: Option<Millis>,
}

/// Which outbox rows to list, newest first. `tenant_id` is required: a tenant never sees
/// another's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxFilter {
    /// The tenant.
    pub tenant_id: String,
    /// `Some(org)`: that org's rows and platform-level rows; `None`: all. A row without an org
    /// counts as platform level only when its connection is platform level too.
    pub org_id: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only this entity type.
    pub entity_type: Option<String>,
    /// Only this entity id.
    pub entity_id: Option<String>,
    /// Only in this status.
    pub status: Option<OutboxStatus>,
    /// Only from this connection.
    pub connection_id: Option<String>,
    /// Created at or after.
    pub since: Option<Millis>,
    /// Created before.
    pub until: Option<Millis>,
    /// Page size (clamped to 1..=1000; 0 means 100).
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Audit log

/// A management write to record: who did what to which resource, for which request, with what
/// answer. Never a secret value: `detail_json` names fields and versions, secrets by name only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// When the write took effect.
    pub at: Millis,
    /// The tenant whose resource was written.
    pub tenant_id: String,
    /// The resource's org; `None`: a platform-level resource (every org of the tenant sees it).
    pub org_id: Option<String>,
    /// The caller's subject (the JWT's `sub`).
    pub actor: String,
    /// The roles the caller's token granted.
    pub roles: Vec<String>,
    /// What was done, `<resource>.<verb>` (`connection.update`, `secret.put`).
    pub action: String,
    /// The kind of resource written (`connection`, `secret`).
    pub resource_type: String,
    /// Which one (its id, or a secret's name).
    pub resource_id: String,
    /// The HTTP request's id (`X-Request-Id`), so a log line and an entry meet.
    pub request_id: Option<String>,
    /// The HTTP status the write was answered with.
    pub status: u16,
    /// What changed, as a JSON object.
    pub detail_json: String,
    /// Whether the platform's admin did it in support mode (`X-Support-Tenant`).
    pub support: bool,
}

/// A recorded audit entry: never changed, never deleted (the database refuses both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its id (time-ordered).
    pub id: String,
    /// When the write took effect.
    pub at: Millis,
    /// The tenant.
    pub tenant_id: String,
    /// The resource's org; `None`: platform level.
    pub org_id: Option<String>,
    /// The caller's subject.
    pub actor: String,
    /// The roles the caller's token granted.
    pub roles: Vec<String>,
    /// What was done.
    pub action: String,
    /// The kind of resource written.
    pub resource_type: String,
    /// Which one.
    pub resource_id: String,
    /// The HTTP request's id.
    pub request_id: Option<String>,
    /// The HTTP status the write was answered with.
    pub status: u16,
    /// What changed, as a JSON object.
    pub detail_json: String,
    /// Whether it was done in support mode.
    pub support: bool,
}

impl AuditEntry {
    /// The entry `new` becomes, with a fresh id; [`Error::Invalid`] when its detail is not a
    /// JSON object or it names no actor or action (an entry nobody can read back is no record).
    fn recorded(new: NewAuditEntry) -> Result<Self> {
        check_json("an audit entry's detail", &new.detail_json)?;
        if !new.detail_json.trim_start().starts_with('{') {
            return Err(Error::Invalid(
                "an audit entry's detail must be a JSON object".into(),
            ));
        }
        if new.actor.is_empty() || new.action.is_empty() {
            return Err(Error::Invalid(
                "an audit entry names its actor and its action".into(),
            ));
        }
        Ok(Self {
            id: new_id(),
            at: new.at,
            tenant_id: new.tenant_id,
            org_id: new.org_id,
            actor: new.actor,
            roles: new.roles,
            action: new.action,
            resource_type: new.resource_type,
            resource_id: new.resource_id,
            request_id: new.request_id,
            status: new.status,
            detail_json: new.detail_json,
            support: new.support,
        })
    }
}

/// Which audit entries to list (within a tenant and org filter), newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this caller's.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only on this kind of resource.
    pub resource_type: Option<String>,
    /// Only on this resource.
    pub resource_id: Option<String>,
    /// At or after.
    pub since: Option<Millis>,
    /// Before.
    pub until: Option<Millis>,
}

// ---------------------------------------------------------------------------------------------
// Subscribers

/// A new outgoing-webhook subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscriber {
    /// The tenant whose events it receives.
    pub tenant_id: String,
    /// `Some(org)`: that org's events plus platform-level ones; `None`: all the tenant's.
    pub org_id: Option<String>,
    /// Where events are POSTed.
    pub url: String,
    /// Event types it wants (`deal.won`, `deal.*`); empty: all.
    pub event_types: Vec<String>,
    /// Name of its signing secret in the secret store.
    pub secret_ref: String,
    /// Whether it receives events.
    pub enabled: bool,
    /// When it was created.
    pub created_at: Millis,
}

/// What can change in a subscriber (all of it at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberUpdate {
    /// Where events are POSTed.
    pub url: String,
    /// Event types it wants; empty: all.
    pub event_types: Vec<String>,
    /// Name of its signing secret in the secret store.
    pub secret_ref: String,
    /// Whether it receives events (a disabled subscriber keeps its queue, unsent).
    pub enabled: bool,
}

/// An outgoing-webhook subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Subscriber {
    /// Its id (assigned by the store).
    pub id: String,
    /// The tenant whose events it receives.
    pub tenant_id: String,
    /// Org filter (see [`NewSubscriber::org_id`]).
    pub org_id: Option<String>,
    /// Where events are POSTed.
    pub url: String,
    /// Event type filter; empty: all.
    pub event_types: Vec<String>,
    /// Name of its signing secret in the secret store.
    pub secret_ref: String,
    /// Whether it receives events.
    pub enabled: bool,
    /// When it was created.
    pub created_at: Millis,
}

impl Subscriber {
    /// Whether this subscriber wants `row`: same tenant, org filter (an org subscriber sees its
    /// org's events and platform-level ones), event type filter (exact, `entity.*` or `*`).
    pub fn wants(&self, row: &OutboxRow) -> bool {
        let org_ok = match (&self.org_id, &row.org_id) {
            (None, _) | (_, None) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
        };
        let type_ok = self.event_types.is_empty()
            || self.event_types.iter().any(|wanted| {
                wanted == "*"
                    || *wanted == row.event_type
                    || wanted
                        .strip_suffix(".*")
                        .is_some_and(|entity| entity == row.entity_type)
            });
        self.enabled && self.tenant_id == row.tenant_id && org_ok && type_ok
    }
}

/// The state of one event's delivery to one subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SubscriberDelivery {
    /// The subscriber.
    pub subscriber_id: String,
    /// The event's outbox sequence number.
    pub outbox_seq: i64,
    /// Where it is.
    pub status: SubscriberDeliveryStatus,
    /// Attempts so far (a claim counts as one).
    pub attempts: u32,
    /// When it may next be claimed.
    pub next_attempt_at: Millis,
    /// The HTTP status of the last attempt, when there was an answer.
    pub last_status: Option<u16>,
    /// The last error.
    pub last_error: Option<String>,
    /// When it last changed.
    pub updated_at: Millis,
}

/// A claimed subscriber delivery: who to send what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberJob {
    /// The subscriber.
    pub subscriber: Subscriber,
    /// The event.
    pub event: OutboxRow,
    /// Attempts including this one.
    pub attempts: u32,
}

/// How an attempt to deliver to a subscriber went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberAttempt {
    /// When it ended.
    pub at: Millis,
    /// The HTTP status, when the subscriber answered.
    pub status_code: Option<u16>,
    /// What went wrong (never a secret).
    pub error: Option<String>,
    /// What happens next.
    pub next: AttemptNext,
}

/// What happens after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptNext {
    /// Delivered: done.
    Delivered,
    /// Failed: try again at this time.
    RetryAt(Millis),
    /// Failed for the last time.
    Dead,
}

/// Which subscriber deliveries to list, newest event first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriberDeliveryFilter {
    /// The subscriber.
    pub subscriber_id: String,
    /// Only in this status.
    pub status: Option<SubscriberDeliveryStatus>,
    /// Page size (clamped to 1..=1000; 0 means 100).
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Polling

/// A connection's poll schedule and checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PollState {
    /// The connection.
    pub connection_id: String,
    /// The cursor the last committed page left (`None` before the first).
    pub cursor: Option<String>,
    /// When the next scheduled run is due.
    pub next_run_at: Millis,
    /// Runs that failed in a row (they back off).
    pub failures: u32,
    /// The run holding the lease, or the last run.
    pub run_id: Option<String>,
    /// Until when a run holds it.
    pub lease_until: Option<Millis>,
}

/// One poll run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PollRun {
    /// Time-ordered id.
    pub id: String,
    /// The connection.
    pub connection_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// What started it.
    pub trigger: PollTrigger,
    /// When it started.
    pub started_at: Millis,
    /// When it ended.
    pub finished_at: Option<Millis>,
    /// Where it is.
    pub status: PollRunStatus,
    /// Pages committed.
    pub pages: u64,
    /// Events appended.
    pub events: u64,
    /// Records the pages held, changed or not, as the adapter counted them.
    pub records: u64,
    /// Requests made (the host's page fetches and the adapter's).
    pub requests: u64,
    /// The cursor it started from.
    pub cursor_before: Option<String>,
    /// The cursor its last committed page left.
    pub cursor_after: Option<String>,
    /// Why it failed.
    pub reason: Option<String>,
}

/// A run claimed for a connection: run it, then [`Store::finish_poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollClaim {
    /// The run, recorded as running.
    pub run: PollRun,
    /// The cursor to start from.
    pub cursor: Option<String>,
    /// Failed runs before this one, in a row.
    pub failures: u32,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollEnd {
    /// The run.
    pub run_id: String,
    /// Who held its lease.
    pub owner: String,
    /// `Done` or `Failed`.
    pub status: PollRunStatus,
    /// Why it failed.
    pub reason: Option<String>,
    /// When it ended.
    pub at: Millis,
    /// When the next scheduled run is due.
    pub next_run_at: Millis,
    /// Requests made since its last committed page (a failed fetch), recorded with the run.
    pub exchanges: Vec<crate::egress::Exchange>,
    /// Requests counted since its last committed page.
    pub requests: u32,
}

/// A recorded request and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredExchange {
    /// The delivery it belongs to; `None` for a poll run's request that got no page (it
    /// failed, or the CRM answered 429 or 5xx).
    pub delivery_id: Option<String>,
    /// The invocation that made it; `None` when the host made it (a poll page's fetch).
    pub invocation_id: Option<String>,
    /// The request and its answer (the body is kept apart).
    #[serde(flatten)]
    pub exchange: crate::egress::Exchange,
    /// Whether the answer's body was erased (its tenant's data key destroyed; it reads empty).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub response_erased: bool,
}

/// Write counters: `commands / commits` is the group-commit batching factor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriteStats {
    /// Write commands executed (each in its own savepoint).
    pub commands: u64,
    /// Commands that failed and were rolled back alone.
    pub failed_commands: u64,
    /// Transactions committed (each one durable sync).
    pub commits: u64,
}

/// The counters behind [`WriteStats`], as a backend keeps them.
#[derive(Debug, Default)]
pub(crate) struct WriteCounters {
    pub(crate) commands: std::sync::atomic::AtomicU64,
    pub(crate) failed_commands: std::sync::atomic::AtomicU64,
    pub(crate) commits: std::sync::atomic::AtomicU64,
}

impl WriteCounters {
    pub(crate) fn snapshot(&self) -> WriteStats {
        use std::sync::atomic::Ordering::Relaxed;
        WriteStats {
            commands: self.commands.load(Relaxed),
            failed_commands: self.failed_commands.load(Relaxed),
            commits: self.commits.load(Relaxed),
        }
    }
}

/// The storage interface every backend implements. Writes are durable when they return `Ok`.
///
/// Gets by id are not scoped: callers compare the row's `tenant_id`/`org_id` with the caller's
/// and answer 404 on a mismatch. Lists take the tenant, and an org filter meaning "that org's
/// rows plus platform-level rows".
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    // --- Adapters

    /// Creates an adapter; [`Error::Conflict`] when the tenant already has one of that name.
    async fn create_adapter(&self, new: NewAdapter) -> Result<Adapter>;
    /// The adapter with this id.
    async fn get_adapter(&self, id: &str) -> Result<Option<Adapter>>;
    /// The tenant's adapter with this name.
    async fn find_adapter(&self, tenant_id: &str, name: &str) -> Result<Option<Adapter>>;
    /// One page of the tenant's adapters (see the trait's note on `org_id`), by name.
    async fn list_adapters(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Adapter>>;
    /// Adds the next version (1, 2, ...) of an adapter; [`Error::NotFound`] for an unknown one.
    async fn add_adapter_version(&self, new: NewAdapterVersion) -> Result<AdapterVersion>;
    /// One version of an adapter.
    async fn get_adapter_version(
        &self,
        adapter_id: &str,
        version: u32,
    ) -> Result<Option<AdapterVersion>>;
    /// One page of an adapter's versions, oldest first.
    async fn list_adapter_versions(
        &self,
        adapter_id: &str,
        page: PageRequest,
    ) -> Result<Page<AdapterVersion>>;
    /// An adapter's newest ready version number; `None` before one is ready.
    async fn latest_adapter_version(&self, adapter_id: &str) -> Result<Option<u32>>;
    /// Ends the compile of a `compiling` version: ready with what it declares (`Ok(info_json)`)
    /// or failed with the reason. [`Error::Conflict`] when it was not compiling.
    async fn finish_adapter_version(
        &self,
        adapter_id: &str,
        version: u32,
        outcome: std::result::Result<String, String>,
    ) -> Result<AdapterVersion>;
    /// Every version still `compiling` (a host that stopped during a compile left them so:
    /// compiling them again is harmless, the first to finish wins).
    async fn compiling_versions(&self) -> Result<Vec<AdapterVersion>>;
    /// The versions of an adapter made of the component `sha256`, oldest first.
    async fn adapter_versions_of(
        &self,
        adapter_id: &str,
        sha256: &str,
    ) -> Result<Vec<AdapterVersion>>;

    // --- Connections

    /// Creates or updates a connection from its configuration (idempotent: the same spec twice
    /// writes nothing the second time). Keeps `created_at` and `last_delivery_at`; a change of
    /// adapter version is recorded as made by `actor`. [`Error::Conflict`] when the id belongs
    /// to another tenant, [`Error::NotFound`] when the adapter version does not exist.
    async fn upsert_connection(
        &self,
        spec: ConnectionSpec,
        actor: &str,
        now: Millis,
    ) -> Result<(Connection, Upsert)>;
    /// The connection with this id.
    async fn get_connection(&self, id: &str) -> Result<Option<Connection>>;
    /// One page of the tenant's connections, by id (creation order).
    async fn list_connections(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Connection>>;
    /// One page of the orgs the tenant's rows name, by org id; with `only`, that org's alone.
    async fn list_orgs(
        &self,
        tenant_id: &str,
        only: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<OrgUse>>;
    /// Enables or disables a connection.
    async fn set_connection_status(
        &self,
        id: &str,
        status: ConnectionStatus,
        now: Millis,
    ) -> Result<Connection>;
    /// Deletes a connection that never took a delivery (and its adapter state).
    /// [`Error::Conflict`] when it has deliveries: their inbox and outbox rows are kept, so
    /// such a connection can only be disabled. [`Error::NotFound`] for an unknown id.
    async fn delete_connection(&self, id: &str) -> Result<()>;
    /// Points a connection at another version of its adapter (upgrade or rollback).
    async fn set_connection_version(
        &self,
        id: &str,
        version: u32,
        actor: &str,
        now: Millis,
    ) -> Result<Connection>;

    // --- The inbox

    /// Records a delivery, durably, unless it is a duplicate: same connection and provider
    /// delivery id, or (when it has none) same connection and body received within
    /// `dedupe_window` of it. A duplicate writes nothing and returns the original's id. The
    /// delivery's first invocation is under way: it counts as an attempt, and recovery leaves
    /// the delivery alone until `lease_until`.
    async fn record_delivery(
        &self,
        new: NewDelivery,
        dedupe_window: Duration,
        lease_until: Millis,
    ) -> Result<Recorded>;
    /// Completes an invocation on a delivery in one transaction: the invocation record, the
    /// events appended to the outbox (a known `event_id` is skipped), the connection's state
    /// checked and replaced (see [`StateCommit`]), the delivery's status, `processed_at` and
    /// attempts. Nothing of it is written if any part fails ([`Error::StaleState`] when the
    /// state moved on).
    async fn complete_delivery(&self, completion: Completion) -> Result<Completed>;
    /// Whether `new` would be a duplicate for [`Store::record_delivery`] (the same rules),
    /// writing nothing: the original when it is, else the connection's state, for the adapter.
    async fn prepare_delivery(
        &self,
        new: &NewDelivery,
        dedupe_window: Duration,
    ) -> Result<Prepared>;
    /// [`Store::record_delivery`] and [`Store::complete_delivery`] of a delivery the adapter
    /// already ran on, in one transaction (one durable commit instead of two). The duplicate
    /// check is made again inside the transaction; a duplicate writes nothing. The new
    /// delivery gets `completion.delivery_id` as its id (a fresh [`new_id`]), its completion
    /// counts as its first attempt. Nothing of it is written if any part fails.
    async fn record_completed(
        &self,
        new: NewDelivery,
        dedupe_window: Duration,
        completion: Completion,
    ) -> Result<Taken>;
    /// A delivery with its headers and body.
    async fn get_delivery(&self, id: &str) -> Result<Option<Delivery>>;
    /// Deliveries matching `filter`, newest first.
    async fn list_deliveries(&self, filter: DeliveryFilter) -> Result<Page<DeliveryInfo>>;
    /// Claims up to `limit` deliveries recorded but never completed (a process stopped while
    /// their adapter ran) whose lease has ended, oldest first: each claim counts an attempt and
    /// holds the delivery until `lease_until`, durably, before anything runs it (so a delivery
    /// that brings the host down is not run forever; see [`Store::park_delivery`]).
    async fn claim_recovery(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Delivery>>;
    /// How many deliveries are recorded and not completed (`received`).
    async fn unfinished_deliveries(&self) -> Result<u64>;
    /// Ends a delivery that is still `received` as `failed` with `reason_json`, without an
    /// invocation (it was given up: too many attempts cut off by the host stopping).
    /// [`Error::Conflict`] when it is no longer `received`.
    async fn park_delivery(&self, id: &str, reason_json: &str, now: Millis) -> Result<()>;
    /// The invocations run on a delivery, oldest first.
    async fn list_invocations(&self, delivery_id: &str) -> Result<Vec<Invocation>>;
    /// One invocation and what replays it (`None` when nothing was recorded, its log was
    /// purged or erased).
    async fn get_invocation_replay(
        &self,
        invocation_id: &str,
    ) -> Result<Option<(Invocation, Option<String>)>>;
    /// A connection's adapter state and its version (empty, version 0, when it has none).
    async fn load_state(&self, connection_id: &str) -> Result<StateSnapshot>;

    // --- The outbox

    /// Claims up to `limit` due pending rows in `seq` order, skipping any row whose entity
    /// (tenant, entity type, entity id) has an earlier pending row that is not due (claimed by
    /// a relay, or waiting for a retry), so several rows of one entity can be claimed at once,
    /// in order. A claimed row counts an attempt and is not due again for `lease` (so a relay
    /// that dies mid-publish does not lose it, and a second relay does not take it meanwhile).
    /// The caller publishes the rows in `seq` order and stops at an entity's first failure
    /// ([`Store::release_outbox`] for the rest).
    async fn claim_outbox(
        &self,
        limit: usize,
        now: Millis,
        lease: Duration,
    ) -> Result<Vec<OutboxRow>>;
    /// Marks rows published.
    async fn mark_published(&self, seqs: &[i64], now: Millis) -> Result<()>;
    /// What the relay does with rows the bus took, in one write: queues them for every enabled
    /// subscriber that wants them ([`Store::enqueue_subscriber_deliveries`]), then marks them
    /// published. Returns how many deliveries were queued.
    async fn complete_publication(&self, seqs: &[i64], now: Millis) -> Result<u64>;
    /// Gives back claimed rows that were not attempted (an earlier row of their entity failed):
    /// due at `now` again, their claim's attempt uncounted. They stay behind that earlier row.
    async fn release_outbox(&self, seqs: &[i64], now: Millis) -> Result<()>;
    /// Records a failed publication: retried at `next_attempt_at`, or parked as dead.
    async fn mark_publish_failed(
        &self,
        seq: i64,
        error: &str,
        next_attempt_at: Millis,
        dead: bool,
    ) -> Result<()>;
    /// Puts a dead row back in the queue, due at `now`, with its attempts reset.
    async fn retry_outbox_event(&self, seq: i64, now: Millis) -> Result<()>;
    /// How far publication is behind.
    async fn outbox_lag(&self) -> Result<OutboxLag>;

    /// The backend's name, for readiness and logs.
    fn backend(&self) -> &'static str {
        "unnamed"
    }
    /// Outbox rows matching `filter`, newest first.
    async fn list_outbox(&self, filter: OutboxFilter) -> Result<Page<OutboxRow>>;
    /// The published rows `replay` covers (its tenant and org, created in `[from, to)`, of its
    /// event type if it names one) with `seq > after_seq`, in `seq` order, at most `limit`.
    /// Changes nothing.
    async fn replay_range(
        &self,
        replay: &Replay,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>>;

    // --- Replays

    /// Records a replay as running. [`Error::Limited`] when the tenant already has one running,
    /// or has started `max_per_hour` in the hour before `new.requested_at`.
    async fn start_replay(&self, new: NewReplay, max_per_hour: u32) -> Result<Replay>;
    /// Records the end of a running replay: how many events it replayed and subscriber
    /// deliveries it queued, and its error if it failed. [`Error::Conflict`] when it is not
    /// running.
    async fn finish_replay(
        &self,
        id: &str,
        replayed: u64,
        queued: u64,
        error: Option<String>,
        now: Millis,
    ) -> Result<Replay>;
    /// Marks every running replay interrupted (at start: nothing runs them any more).
    async fn interrupt_replays(&self, now: Millis) -> Result<u64>;
    /// The replay with this id.
    async fn get_replay(&self, id: &str) -> Result<Option<Replay>>;
    /// One page of the tenant's replays (see the trait's note on `org_id`), newest first.
    async fn list_replays(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Replay>>;
    /// The outbox row of an event.
    async fn get_event(&self, event_id: &str) -> Result<Option<OutboxRow>>;

    // --- Subscribers

    /// Creates a subscriber.
    async fn create_subscriber(&self, new: NewSubscriber) -> Result<Subscriber>;
    /// The subscriber with this id.
    async fn get_subscriber(&self, id: &str) -> Result<Option<Subscriber>>;
    /// One page of the tenant's subscribers, oldest first.
    async fn list_subscribers(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Subscriber>>;
    /// The subscriber of `tenant_id` in exactly `org_id` (`None`: platform level) that POSTs to
    /// `url`, if any (the config file's key for a subscriber).
    async fn find_subscriber(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        url: &str,
    ) -> Result<Option<Subscriber>>;
    /// Changes a subscriber; [`Error::NotFound`] when there is none with this id.
    async fn update_subscriber(&self, id: &str, update: SubscriberUpdate) -> Result<Subscriber>;
    /// Deletes a subscriber and its delivery records.
    async fn delete_subscriber(&self, id: &str) -> Result<()>;
    /// Queues the outbox rows `seqs` for every enabled subscriber that wants them
    /// ([`Subscriber::wants`]); idempotent. Returns how many deliveries were queued now.
    async fn enqueue_subscriber_deliveries(&self, seqs: &[i64], now: Millis) -> Result<u64>;
    /// Claims up to `limit` due pending deliveries of enabled subscribers in `seq` order,
    /// never one whose entity has an earlier pending delivery to the same subscriber that is
    /// not due (in flight under another claim, or waiting for a retry): a due run of one
    /// entity comes in one claim, earliest first, and must be delivered in that order
    /// ([`Store::release_subscriber_deliveries`] gives back what follows a failure). A claim
    /// counts an attempt and holds the delivery for `lease`.
    async fn claim_subscriber_deliveries(
        &self,
        limit: usize,
        now: Millis,
        lease: Duration,
    ) -> Result<Vec<SubscriberJob>>;
    /// Gives claimed deliveries `(subscriber id, outbox seq)` back unattempted (the claim's
    /// attempt uncounted), due at `now`: those of an entity claimed after one that failed, or
    /// that the lease left no time to send.
    async fn release_subscriber_deliveries(
        &self,
        deliveries: &[(String, i64)],
        now: Millis,
    ) -> Result<()>;
    /// Queues the published rows `seqs` again for every enabled subscriber that wants them
    /// (or only `subscriber_id`), whether or not they were delivered: due at `now`, attempts
    /// reset. How many deliveries were queued.
    async fn replay_to_subscribers(
        &self,
        seqs: &[i64],
        subscriber_id: Option<&str>,
        now: Millis,
    ) -> Result<u64>;
    /// Records how attempts went, in one write (a run of deliveries is recorded when it
    /// ends); a delivery that is gone (its subscriber deleted meanwhile) is skipped.
    async fn mark_subscriber_deliveries(
        &self,
        attempts: &[(String, i64, SubscriberAttempt)],
    ) -> Result<()>;
    /// Records how an attempt went.
    async fn mark_subscriber_delivery(
        &self,
        subscriber_id: &str,
        seq: i64,
        attempt: SubscriberAttempt,
    ) -> Result<()>;
    /// Makes a dead (or waiting) delivery due at `now`, attempts reset. [`Error::Conflict`]
    /// when it was already delivered.
    async fn retry_subscriber_delivery(
        &self,
        subscriber_id: &str,
        seq: i64,
        now: Millis,
    ) -> Result<()>;
    /// A subscriber's deliveries, newest event first.
    async fn list_subscriber_deliveries(
        &self,
        filter: SubscriberDeliveryFilter,
    ) -> Result<Page<SubscriberDelivery>>;

    // --- Polling

    /// Claims up to `limit` connections whose poll is due at `now` (an active connection with
    /// polling settings, its next run due, no run holding its lease): for each, a run is
    /// recorded as running, holding the lease as `owner` until `lease_until`. A run that was
    /// still marked running (its host stopped) is marked interrupted.
    async fn claim_polls(
        &self,
        now: Millis,
        owner: &str,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<PollClaim>>;
    /// Claims a run of one connection now, whatever its schedule. [`Error::Conflict`] when a
    /// run holds its lease; [`Error::Invalid`] when it does not poll or is disabled.
    async fn claim_poll_now(
        &self,
        connection_id: &str,
        now: Millis,
        owner: &str,
        lease_until: Millis,
    ) -> Result<PollClaim>;
    /// Records the end of a run and schedules the next one; releases the lease. A run whose
    /// lease `owner` no longer holds changes only its own record.
    async fn finish_poll(&self, end: PollEnd) -> Result<PollRun>;
    /// A connection's poll state, if it ever polled.
    async fn poll_state(&self, connection_id: &str) -> Result<Option<PollState>>;
    /// One page of a connection's runs, newest first.
    async fn list_poll_runs(&self, connection_id: &str, page: PageRequest)
    -> Result<Page<PollRun>>;
    /// The requests recorded with a delivery, in order.
    async fn list_exchanges(&self, delivery_id: &str) -> Result<Vec<StoredExchange>>;
    /// One poll run.
    async fn get_poll_run(&self, run_id: &str) -> Result<Option<PollRun>>;
    /// Every request a poll run made (its pages' and those that got no page), in order.
    async fn list_run_exchanges(&self, run_id: &str) -> Result<Vec<StoredExchange>>;

    // --- OAuth

    /// Records a pending authorization (its `state` hashed).
    async fn create_oauth_state(&self, state: OAuthState) -> Result<()>;
    /// Takes a pending authorization, once, at `now` (it is used up whether or not it has
    /// expired: the caller checks `expires_at`): [`Error::NotFound`] for an unknown state,
    /// [`Error::Conflict`] for one already used.
    async fn take_oauth_state(&self, state_hash: &str, now: Millis) -> Result<OAuthState>;
    /// Records where a connection's authorization stands.
    async fn set_connection_auth(&self, auth: ConnectionAuth) -> Result<()>;
    /// Where a connection's authorization stands; `None` before it was ever connected.
    async fn connection_auth(&self, connection_id: &str) -> Result<Option<ConnectionAuth>>;

    // --- Audit log

    /// Appends an entry to the audit log (after `detail_json` is checked to be JSON).
    async fn append_audit(&self, entry: NewAuditEntry) -> Result<AuditEntry>;
    /// One page of the tenant's audit entries matching `filter` (see the trait's note on
    /// `org_id`), newest first.
    async fn list_audit(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        filter: AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditEntry>>;

    // --- Health and alerts

    /// What `connection_id` did since `since` (and its backlog now): the figures its health
    /// is computed from.
    async fn connection_activity(&self, connection_id: &str, since: Millis) -> Result<Activity>;
    /// Adds the signature failures a node counted, as (connection, minute start, count), and
    /// forgets minutes before `forget_before`.
    async fn add_signature_failures(
        &self,
        counts: Vec<(String, Millis, u64)>,
        forget_before: Millis,
    ) -> Result<()>;
    /// The tenant's health thresholds (JSON text), when it set them.
    async fn health_rules(&self, tenant_id: &str) -> Result<Option<String>>;
    /// Sets the tenant's health thresholds (JSON text, checked by the caller).
    async fn set_health_rules(&self, tenant_id: &str, rules_json: &str, now: Millis) -> Result<()>;
    /// Records an assessment, raising and resolving its alerts (with their outbox events) in
    /// one transaction: at most one open alert per connection and rule, whichever node asks.
    async fn record_health(&self, record: HealthRecord) -> Result<AlertChanges>;
    /// The latest assessments of the tenant's connections (see the trait's note on `org_id`).
    async fn list_health(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
    ) -> Result<Vec<HealthSnapshot>>;
    /// A connection's latest assessment.
    async fn get_health(&self, connection_id: &str) -> Result<Option<HealthSnapshot>>;
    /// One page of the tenant's alerts matching `filter`, newest first.
    async fn list_alerts(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        filter: AlertFilter,
        page: PageRequest,
    ) -> Result<Page<Alert>>;
    /// The learned shape of `connection_id`'s payloads of `kind` (JSON text), if any.
    async fn payload_shape(&self, connection_id: &str, kind: &str) -> Result<Option<String>>;
    /// Saves learned shapes, each replacing the one before.
    async fn save_payload_shapes(&self, shapes: Vec<SavedShape>) -> Result<()>;
    /// Records `drifts`, leaving out each equal (connection, kind, pointer, change) to one
    /// detected at or after `since` (another node found it too); how many it recorded.
    async fn record_drifts(&self, drifts: Vec<NewDrift>, since: Millis) -> Result<u64>;
    /// One page of a connection's drifts, newest first.
    async fn list_drifts(&self, connection_id: &str, page: PageRequest) -> Result<Page<Drift>>;
    /// Purges what passed its retention ([`Purge`]): delivery bodies, the answers recorded
    /// with them and invocation logs lose their content, their rows (ids, hashes, outcomes,
    /// sizes) stay. A delivery still being taken (`received`) keeps its body.
    async fn purge_expired(&self, purge: Purge) -> Result<Purged>;
    /// One page of the tenant's identity map ([`Identity`]), newest first.
    async fn list_identities(&self, filter: IdentityFilter) -> Result<Page<Identity>>;
    /// The tenant's own retention, if it set one.
    async fn get_retention(&self, tenant_id: &str) -> Result<Option<TenantRetention>>;
    /// Sets the tenant's own retention; with neither kind set, the tenant goes back to the
    /// platform's. Days are at least 1.
    async fn put_retention(&self, retention: TenantRetention) -> Result<()>;
    /// Erases a tenant by crypto-shredding: destroys its data key (see [`crate::vault`]), so
    /// every body, answer, log and event payload sealed under it reads as erased from now on,
    /// while every row stays (the append-only outbox keeps its ids, types and times). What was
    /// still waiting is ended: deliveries not yet processed fail with `reason_json`, events not
    /// yet published and their subscriber deliveries are dead. Blocking (secret store) for the
    /// key's deletion. What the tenant sends afterwards is sealed under a new key.
    async fn erase_tenant(
        &self,
        tenant_id: &str,
        reason_json: &str,
        now: Millis,
    ) -> Result<Erasure>;
    /// Erases one CRM record's data: through the identity map, every event of the platform
    /// entities it is (their payloads erased, rows kept; pending ones dead), the deliveries those
    /// events came from (bodies, logs and recorded answers erased: all of them, a raw body
    /// holding others' records too cannot be cut), and its identity entries. Nothing when the
    /// map knows no such record.
    async fn erase_subject(&self, subject: Subject, now: Millis) -> Result<SubjectErasure>;
    /// Every connection of every tenant, by id, after `after` (the health monitor's walk).
    async fn connections_after(&self, after: Option<&str>, limit: usize)
    -> Result<Vec<Connection>>;

    // --- Operations

    /// Write counters since the store was opened.
    fn write_stats(&self) -> WriteStats;
}

/// Content-addressed storage of adapter components, keyed by their hex sha256.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores `bytes` durably and returns their hex sha256 (storing the same bytes twice is a
    /// no-op).
    async fn put(&self, bytes: Vec<u8>) -> Result<String>;
    /// The bytes stored under `sha256`, checked against it.
    async fn get(&self, sha256: &str) -> Result<Option<Vec<u8>>>;
    /// Whether bytes are stored under `sha256`.
    async fn contains(&self, sha256: &str) -> Result<bool>;
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::sandbox::sha256_hex(bytes)
}

/// Clamps a page size: 0 means the default of 100, at most 1000.
fn page_size(limit: usize) -> usize {
    match limit {
        0 => 100,
        n => n.min(1000),
    }
}

impl ConnectionSpec {
    /// Checks the JSON columns (the store keeps JSON as text; a malformed value is refused);
    /// the allowed orgs as the JSON text both backends store.
    fn checked_allowed_orgs(&self) -> Result<String> {
        check_json("signature_json", &self.signature_json)?;
        check_json("secret_refs_json", &self.secret_refs_json)?;
        check_json("settings_json", &self.settings_json)?;
        if let Some(polling) = &self.polling_json {
            check_json("polling_json", polling)?;
        }
        if let Some(export) = &self.export_json {
            check_json("export_json", export)?;
        }
        if let Some(webhook) = &self.webhook_json {
            check_json("webhook_json", webhook)?;
        }
        serde_json::to_string(&self.allowed_org_ids)
            .map_err(|e| Error::Invalid(format!("allowed_org_ids: {e}")))
    }
}

/// Checks that `text` is JSON (the store keeps JSON as text; a malformed value is refused).
fn check_json(what: &str, text: &str) -> Result<()> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| Error::Invalid(format!("{what} is not JSON: {e}")))
}

/// Keeps an error text bounded (a subscriber's answer can be anything).
fn bounded_error(error: &str) -> String {
    const MAX: usize = 2048;
    if error.len() <= MAX {
        return error.to_owned();
    }
    let mut end = MAX;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated, {} bytes]", &error[..end], error.len())
}
