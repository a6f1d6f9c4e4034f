//! The embedded store: one SQLite database (`<data dir>/host.db`, WAL) with durable group
//! commit.
//!
//! One writer thread owns the only read-write connection. Every write is a command sent to it
//! over a channel; the writer takes every command queued (up to [`MAX_BATCH`]), runs each in
//! its own savepoint inside one transaction (a failing command is rolled back alone), commits
//! once with `synchronous = FULL` (the WAL is synced: the batch is durable), and only then
//! answers each caller. Under load, many deliveries share one sync; alone, a write costs one.
//! Reads go to a small pool of read-only connections on blocking threads: in WAL mode they see
//! every committed batch and never wait for the writer.
//!
//! Connections are read on every webhook delivery and rarely change, so the store keeps the
//! ones it has read in memory ([`ConnectionCache`]). Every write drops them after its commit
//! unless it is declared not to touch connections, so a read that follows a write never sees
//! what the write replaced. The store assumes it is the only writer of its database while it
//! is open (its single writer thread already does).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::{Type, Value};
use rusqlite::{
    Connection as Db, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior, params,
    params_from_iter,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    Activity, Adapter, AdapterVersion, Alert, AlertChanges, AlertFilter, AttemptNext, AuditEntry,
    AuditFilter, Completed, Completion, Connection, ConnectionAuth, ConnectionSpec,
    ConnectionStatus, Delivery, DeliveryFilter, DeliveryInfo, DeliveryKind, DeliveryStatus, Drift,
    Erasure, Error, HealthRecord, HealthSnapshot, Identity, IdentityFilter, Invocation,
    InvocationRecord, Millis, NewAdapter, NewAdapterVersion, NewAuditEntry, NewDelivery, NewDrift,
    NewReplay, NewSubscriber, OAuthState, OrgUse, OutboxFilter, OutboxLag, OutboxRow, OutboxStatus,
    Page, PageRequest, PollClaim, PollEnd, PollRun, PollState, Prepared, Purge, Purged, Recorded,
    Replay, ReplayStatus, Result, SavedShape, StateCommit, StateSnapshot, Store, StoredExchange,
    Subject, SubjectErasure, Subscriber, SubscriberAttempt, SubscriberDelivery,
    SubscriberDeliveryFilter, SubscriberDeliveryStatus, SubscriberJob, SubscriberUpdate, Taken,
    TenantRetention, Upsert, VersionStatus, WriteCounters, WriteStats, bounded_error, check_json,
    empty_log, millis, new_id, page_size, sealing,
};
use crate::store::sealing::Sealer;
use crate::vault::{Purpose, Vault};

mod drift;
mod erasure;
mod health;
mod identities;
mod polls;
mod retention;

/// The database file inside the data directory.
pub const DB_FILE: &str = "host.db";
/// The most commands one transaction takes.
pub const MAX_BATCH: usize = 512;
/// Commands waiting for the writer before senders wait too (backpressure).
const QUEUE: usize = 4096;
/// Read-only connections (and blocking threads) serving reads at once; more reads wait.
const READERS: usize = 8;
/// How long a connection waits for a lock held by another (another process on the same file).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations, applied in order at open; `PRAGMA user_version` counts those applied.
/// Never edit a published one: append.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE adapters (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    org_id      TEXT,
    name        TEXT NOT NULL CHECK (name <> ''),
    created_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE adapter_versions (
    adapter_id   TEXT NOT NULL REFERENCES adapters (id),
    version      INTEGER NOT NULL CHECK (version >= 1),
    sha256       TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL,
    info_json    TEXT NOT NULL,
    limits_json  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    PRIMARY KEY (adapter_id, version)
);

CREATE TABLE connections (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NOT NULL,
    org_id                TEXT,
    provider              TEXT NOT NULL,
    adapter_id            TEXT NOT NULL,
    adapter_version       INTEGER NOT NULL,
    signature_json        TEXT NOT NULL,
    allowed_org_ids_json  TEXT NOT NULL,
    secret_refs_json      TEXT NOT NULL,
    settings_json         TEXT NOT NULL,
    polling_json          TEXT,
    status                TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    last_delivery_at      INTEGER,
    version_changed_by    TEXT,
    version_changed_at    INTEGER,
    FOREIGN KEY (adapter_id, adapter_version) REFERENCES adapter_versions (adapter_id, version)
);
CREATE INDEX connections_by_tenant ON connections (tenant_id, id);

CREATE TABLE deliveries (
    id                    TEXT PRIMARY KEY,
    connection_id         TEXT NOT NULL REFERENCES connections (id),
    tenant_id             TEXT NOT NULL,
    received_at           INTEGER NOT NULL,
    provider_delivery_id  TEXT,
    body_sha256           TEXT NOT NULL,
    method                TEXT NOT NULL,
    path                  TEXT NOT NULL,
    query                 TEXT NOT NULL,
    headers_json          TEXT NOT NULL,
    body                  BLOB NOT NULL,
    status                TEXT NOT NULL
        CHECK (status IN ('received', 'processed', 'ignored', 'failed', 'rejected')),
    attempts              INTEGER NOT NULL DEFAULT 0,
    reason_json           TEXT,
    processed_at          INTEGER,
    trace_id              TEXT NOT NULL
);
CREATE UNIQUE INDEX deliveries_provider_id ON deliveries (connection_id, provider_delivery_id)
    WHERE provider_delivery_id IS NOT NULL;
CREATE INDEX deliveries_by_body ON deliveries (connection_id, body_sha256, received_at);
CREATE INDEX deliveries_by_connection ON deliveries (connection_id, id);
CREATE INDEX deliveries_by_tenant ON deliveries (tenant_id, id);
CREATE INDEX deliveries_unfinished ON deliveries (id) WHERE status = 'received';

CREATE TABLE invocations (
    id                 TEXT PRIMARY KEY,
    delivery_id        TEXT NOT NULL REFERENCES deliveries (id),
    adapter_id         TEXT NOT NULL,
    adapter_version    INTEGER NOT NULL,
    adapter_sha256     TEXT NOT NULL,
    input_sha256       TEXT NOT NULL,
    started_at         INTEGER NOT NULL,
    duration_us        INTEGER NOT NULL,
    fuel               INTEGER NOT NULL,
    peak_memory_bytes  INTEGER NOT NULL,
    bytes_in           INTEGER NOT NULL,
    bytes_out          INTEGER NOT NULL,
    events             INTEGER NOT NULL,
    outcome            TEXT NOT NULL
        CHECK (outcome IN ('accepted', 'ignored', 'adapter_error', 'rejected', 'failed')),
    detail_json        TEXT,
    log_json           TEXT NOT NULL
);
CREATE INDEX invocations_by_delivery ON invocations (delivery_id, id);

-- integration_events_outbox: append-only (see the triggers below).
CREATE TABLE outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    tenant_id        TEXT NOT NULL,
    org_id           TEXT,
    event_type       TEXT NOT NULL CHECK (event_type <> ''),
    entity_type      TEXT NOT NULL CHECK (entity_type <> ''),
    entity_id        TEXT NOT NULL CHECK (entity_id <> ''),
    payload_json     TEXT NOT NULL,
    metadata_json    TEXT NOT NULL,
    delivery_id      TEXT NOT NULL,
    connection_id    TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'published', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    published_at     INTEGER,
    last_error       TEXT
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending';
CREATE INDEX outbox_pending_by_entity ON outbox (tenant_id, entity_type, entity_id, seq)
    WHERE status = 'pending';
CREATE INDEX outbox_by_tenant ON outbox (tenant_id, seq);
CREATE INDEX outbox_by_tenant_time ON outbox (tenant_id, created_at);
CREATE TRIGGER outbox_no_delete BEFORE DELETE ON outbox
BEGIN
    SELECT RAISE(ABORT, 'the outbox is append-only');
END;
CREATE TRIGGER outbox_immutable_events
BEFORE UPDATE OF seq, event_id, tenant_id, org_id, event_type, entity_type, entity_id,
    payload_json, metadata_json, delivery_id, connection_id, created_at ON outbox
BEGIN
    SELECT RAISE(ABORT, 'outbox events are immutable');
END;

CREATE TABLE connection_state (
    connection_id  TEXT NOT NULL REFERENCES connections (id),
    key            TEXT NOT NULL,
    value          BLOB NOT NULL,
    PRIMARY KEY (connection_id, key)
);

CREATE TABLE subscribers (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    org_id            TEXT,
    url               TEXT NOT NULL,
    event_types_json  TEXT NOT NULL,
    secret_ref        TEXT NOT NULL,
    enabled           INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE INDEX subscribers_by_tenant ON subscribers (tenant_id, created_at);

-- entity_type and entity_id are copied from the outbox row: per-entity order without a join.
CREATE TABLE subscriber_deliveries (
    subscriber_id    TEXT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    outbox_seq       INTEGER NOT NULL REFERENCES outbox (seq),
    entity_type      TEXT NOT NULL,
    entity_id        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_status      INTEGER,
    last_error       TEXT,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (subscriber_id, outbox_seq)
);
CREATE INDEX subscriber_deliveries_pending ON subscriber_deliveries (outbox_seq)
    WHERE status = 'pending';
CREATE INDEX subscriber_deliveries_pending_by_entity
    ON subscriber_deliveries (subscriber_id, entity_type, entity_id, outbox_seq)
    WHERE status = 'pending';
"#,
    r#"
-- Who re-published which events, and when.
CREATE TABLE replays (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    org_id        TEXT,
    from_ms       INTEGER NOT NULL,
    to_ms         INTEGER NOT NULL,
    event_type    TEXT,
    requested_by  TEXT NOT NULL,
    requested_at  INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    replayed      INTEGER NOT NULL DEFAULT 0,
    finished_at   INTEGER,
    error         TEXT
);
CREATE INDEX replays_by_tenant ON replays (tenant_id, requested_at);
CREATE INDEX replays_running ON replays (tenant_id) WHERE status = 'running';
"#,
    r#"
-- A delivery left `received` is taken up again by the recovery loop once its lease has ended
-- (NULL: no lease, as for rows recorded before leases existed). `attempts` counts invocations
-- started, so a delivery that brings the host down is parked after a bounded number.
ALTER TABLE deliveries ADD COLUMN lease_until INTEGER;

-- Bumped by every commit that changes a connection's state: a completion that used the state
-- commits only onto the version it read.
CREATE TABLE connection_state_versions (
    connection_id  TEXT PRIMARY KEY REFERENCES connections (id),
    version        INTEGER NOT NULL
);

-- Claims of pending rows skip an entity whose earlier row is in flight or waiting to retry:
-- found by this index without reading the entity's other pending rows.
CREATE INDEX outbox_pending_by_entity_due
    ON outbox (tenant_id, entity_type, entity_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX subscriber_deliveries_pending_by_entity_due
    ON subscriber_deliveries (subscriber_id, entity_type, entity_id, next_attempt_at)
    WHERE status = 'pending';
"#,
    r#"
-- State is committed key by key: a row keeps the connection's version of the commit that
-- last wrote it, and the connection's row counts its keys and bytes so a commit can check the
-- bounds without reading the whole state.
ALTER TABLE connection_state ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connection_state_versions ADD COLUMN keys INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connection_state_versions ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
INSERT INTO connection_state_versions (connection_id, version, keys, bytes)
    SELECT connection_id, 0, count(*), sum(length(CAST(key AS BLOB)) + length(value))
    FROM connection_state GROUP BY connection_id
    ON CONFLICT (connection_id) DO UPDATE SET keys = excluded.keys, bytes = excluded.bytes;

-- How a connection reaches its CRM's API (base URL, origins, rate limit, credential).
ALTER TABLE connections ADD COLUMN api_json TEXT;

-- Poll pages are deliveries too: the same inbox, redrive and history as webhooks.
ALTER TABLE deliveries ADD COLUMN kind TEXT NOT NULL DEFAULT 'webhook'
    CHECK (kind IN ('webhook', 'poll', 'push'));
ALTER TABLE deliveries ADD COLUMN poll_run_id TEXT;
ALTER TABLE deliveries ADD COLUMN cursor TEXT;
ALTER TABLE invocations ADD COLUMN export TEXT NOT NULL DEFAULT 'handle_webhook'
    CHECK (export IN ('handle_webhook', 'handle_poll', 'poll_request'));

-- A connection's poll schedule and checkpoint. The cursor moves only with a committed page of
-- the run holding the lease.
CREATE TABLE poll_state (
    connection_id  TEXT PRIMARY KEY REFERENCES connections (id),
    cursor         TEXT,
    next_run_at    INTEGER NOT NULL,
    failures       INTEGER NOT NULL DEFAULT 0,
    run_id         TEXT,
    lease_owner    TEXT,
    lease_until    INTEGER
);
CREATE INDEX poll_state_due ON poll_state (next_run_at);

CREATE TABLE poll_runs (
    id             TEXT PRIMARY KEY,
    connection_id  TEXT NOT NULL REFERENCES connections (id),
    tenant_id      TEXT NOT NULL,
    trigger        TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    owner          TEXT NOT NULL,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    status         TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    pages          INTEGER NOT NULL DEFAULT 0,
    events         INTEGER NOT NULL DEFAULT 0,
    records        INTEGER NOT NULL DEFAULT 0,
    requests       INTEGER NOT NULL DEFAULT 0,
    cursor_before  TEXT,
    cursor_after   TEXT,
    reason         TEXT
);
CREATE INDEX poll_runs_by_connection ON poll_runs (connection_id, id);

-- Every request made for a delivery (a poll page's own fetch, the adapter's http.fetch), or
-- for a run that failed before it had a page. Credentials never reach this table.
CREATE TABLE http_exchanges (
    delivery_id            TEXT,
    invocation_id          TEXT,
    poll_run_id            TEXT,
    seq                    INTEGER NOT NULL,
    started_at             INTEGER NOT NULL,
    method                 TEXT NOT NULL,
    url                    TEXT NOT NULL,
    request_headers_json   TEXT NOT NULL,
    request_bytes          INTEGER NOT NULL,
    status                 INTEGER,
    response_headers_json  TEXT NOT NULL,
    response_bytes         INTEGER NOT NULL,
    response_body          BLOB,
    attempts               INTEGER NOT NULL,
    duration_us            INTEGER NOT NULL,
    error                  TEXT
);
CREATE INDEX http_exchanges_by_delivery ON http_exchanges (delivery_id, seq)
    WHERE delivery_id IS NOT NULL;
CREATE INDEX http_exchanges_by_run ON http_exchanges (poll_run_id, seq)
    WHERE poll_run_id IS NOT NULL;
"#,
    r#"
-- Pending OAuth authorizations: the state's hash only, used once, until it expires.
CREATE TABLE oauth_states (
    state_hash     TEXT PRIMARY KEY,
    connection_id  TEXT NOT NULL REFERENCES connections (id),
    tenant_id      TEXT NOT NULL,
    org_id         TEXT,
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER
);

-- Where a connection's authorization stands; its tokens are in the secret store.
CREATE TABLE connection_auth (
    connection_id      TEXT PRIMARY KEY REFERENCES connections (id),
    state              TEXT NOT NULL CHECK (state IN ('connected', 'error', 'disconnected')),
    reason             TEXT,
    connected_by       TEXT,
    connected_at       INTEGER,
    changed_at         INTEGER NOT NULL,
    access_expires_at  INTEGER,
    scopes             TEXT
);
"#,
    r#"
-- The management API's audit log: who changed what, when, for which request. Append-only:
-- the triggers refuse every change and every delete, whoever asks.
CREATE TABLE audit (
    id             TEXT PRIMARY KEY,
    at             INTEGER NOT NULL,
    tenant_id      TEXT NOT NULL,
    org_id         TEXT,
    actor          TEXT NOT NULL,
    roles_json     TEXT NOT NULL,
    action         TEXT NOT NULL CHECK (action <> ''),
    resource_type  TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    request_id     TEXT,
    status         INTEGER NOT NULL,
    detail_json    TEXT NOT NULL,
    support        INTEGER NOT NULL CHECK (support IN (0, 1))
);
CREATE INDEX audit_by_tenant ON audit (tenant_id, id);
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
"#,
    health::MIGRATION,
    r#"
-- An upload is answered before a slow compile ends: a version is `compiling`, then `ready`
-- (connections may run it) or `failed` with the reason. Versions before this were ready.
ALTER TABLE adapter_versions ADD COLUMN status TEXT NOT NULL DEFAULT 'ready'
    CHECK (status IN ('compiling', 'ready', 'failed'));
ALTER TABLE adapter_versions ADD COLUMN failure TEXT;

-- Replays name whom they re-send to (before: the bus only).
ALTER TABLE replays ADD COLUMN target TEXT NOT NULL DEFAULT 'bus'
    CHECK (target IN ('all', 'bus', 'subscribers'));
ALTER TABLE replays ADD COLUMN subscriber_id TEXT;
ALTER TABLE replays ADD COLUMN queued INTEGER NOT NULL DEFAULT 0;

-- What a connection's webhook checks besides its signature: source allow list, capability
-- secret (its name), methods.
ALTER TABLE connections ADD COLUMN webhook_json TEXT;
"#,
    drift::MIGRATION,
    retention::MIGRATION,
    r#"
-- Encryption at rest (see vault.rs): a sealed body is longer than the body, whose size is kept
-- here; rows written before read their size from the body itself.
ALTER TABLE deliveries ADD COLUMN body_bytes INTEGER;

-- Erasure overwrites a payload (one stored in the clear before encryption, or one person's)
-- with the erased marker: a payload changes only that way; every other column of an event
-- stays immutable.
DROP TRIGGER outbox_immutable_events;
CREATE TRIGGER outbox_immutable_events
BEFORE UPDATE OF seq, event_id, tenant_id, org_id, event_type, entity_type, entity_id,
    metadata_json, delivery_id, connection_id, created_at ON outbox
BEGIN
    SELECT RAISE(ABORT, 'outbox events are immutable');
END;
CREATE TRIGGER outbox_payloads_are_only_erased
BEFORE UPDATE OF payload_json ON outbox
WHEN NEW.payload_json IS NOT OLD.payload_json AND NEW.payload_json IS NOT '~erased1'
BEGIN
    SELECT RAISE(ABORT, 'outbox events are immutable: a payload is only ever erased');
END;
"#,
    retention::TENANTS_MIGRATION,
    identities::MIGRATION,
    r#"
-- The payload fields a connection withholds from export (see export.rs).
ALTER TABLE connections ADD COLUMN export_json TEXT;

-- What replays an invocation exactly (see replay.rs), sealed; kept, purged and erased with its
-- log.
ALTER TABLE invocations ADD COLUMN replay_json TEXT;
"#,
];

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error() {
            Some(err)
                if err.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || err.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                Error::Conflict(e.to_string())
            }
            Some(err) if err.code == ErrorCode::ConstraintViolation => {
                Error::Invalid(e.to_string())
            }
            _ => Error::Backend(e.to_string()),
        }
    }
}

/// The embedded store. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    sender: Option<mpsc::Sender<Box<dyn Command>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    readers: Readers,
    counters: Arc<WriteCounters>,
    connections: Arc<ConnectionCache>,
    /// Seals payloads as they are written, opens them as they are read.
    vault: Arc<Vault>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("stats", &self.inner.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has answered what was queued.
        self.sender.take();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the store's writer thread panicked");
        }
    }
}

/// Connections as last read, by id. A write that may change connections drops them all after
/// its commit (on the writer, before it answers); one that records a delivery moves the cached
/// `last_delivery_at`. A read fills an entry only when no write committed while it read
/// (`generation` is unchanged), so no entry is ever older than the last commit it could miss.
/// Unknown ids are not cached (they are whatever a caller sends).
#[derive(Debug, Default)]
struct ConnectionCache {
    entries: Mutex<CachedConnections>,
}

#[derive(Debug, Default)]
struct CachedConnections {
    generation: u64,
    by_id: HashMap<String, Connection>,
}

impl ConnectionCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CachedConnections> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached connection, or the generation a read of it starts from.
    fn get(&self, id: &str) -> std::result::Result<Connection, u64> {
        let entries = self.lock();
        entries.by_id.get(id).cloned().ok_or(entries.generation)
    }

    /// Keeps what a read that started at `generation` found, unless a write committed since.
    fn fill(&self, generation: u64, connection: &Connection) {
        let mut entries = self.lock();
        if entries.generation == generation {
            entries
                .by_id
                .entry(connection.id.clone())
                .or_insert_with(|| connection.clone());
        }
    }

    /// After a commit that may have changed any connection.
    fn clear(&self) {
        let mut entries = self.lock();
        entries.generation += 1;
        entries.by_id.clear();
    }

    /// After a commit that recorded a delivery on `id` at `at` (and changed nothing else).
    fn delivered(&self, id: &str, at: Millis) {
        let mut entries = self.lock();
        match entries.by_id.get_mut(id) {
            Some(connection) => {
                connection.last_delivery_at =
                    Some(connection.last_delivery_at.map_or(at, |last| last.max(at)));
            }
            // A read in flight must not fill in the time this commit replaced.
            None => entries.generation += 1,
        }
    }
}

/// For writes that cannot change a connection.
fn keeps_connections<T>(_: &T, _: &ConnectionCache) {}

/// For writes that may change any connection: the default.
fn drops_connections<T>(_: &T, cache: &ConnectionCache) {
    cache.clear();
}

impl SqliteStore {
    /// Opens (creating it and applying migrations if needed) the database `dir/host.db`,
    /// storing payloads as they are (see [`Self::open_sealed`]).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_sealed(dir, Arc::new(Vault::disabled()))
    }

    /// [`Self::open`], with every payload sealed by `vault` as it is written and opened as it
    /// is read: what the host serves with.
    pub fn open_sealed(dir: &Path, vault: Arc<Vault>) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Backend(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let mut db = Db::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        db.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            db.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Backend(format!(
                "{} cannot use write-ahead logging (journal mode {mode})",
                path.display()
            )));
        }
        // FULL: the WAL is synced at every commit, so a committed batch survives a power cut.
        db.pragma_update(None, "synchronous", "FULL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        // Each command runs in a savepoint, whose journal (the pages it changes, as they were)
        // would otherwise spill to a temporary file once past 64 KiB: open, write, close and
        // unlink a file per command. Kept in memory, it is a copy per page and no system call.
        db.pragma_update(None, "temp_store", "MEMORY")?;
        // What a purge or an erasure empties is zeroed on the pages written anyway (no more
        // I/O), so it does not linger in the file; an erasure zeroes freed pages too.
        db.pragma_update(None, "secure_delete", "FAST")?;
        db.set_prepared_statement_cache_capacity(64);
        migrate(&mut db)?;

        let counters = Arc::new(WriteCounters::default());
        let (sender, receiver) = mpsc::channel(QUEUE);
        let writer = {
            let counters = Arc::clone(&counters);
            std::thread::Builder::new()
                .name("store-writer".to_owned())
                .spawn(move || writer_loop(db, receiver, &counters))
                .map_err(|e| Error::Backend(format!("starting the store writer: {e}")))?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                readers: Readers {
                    path: path.clone(),
                    idle: Mutex::new(Vec::new()),
                    permits: Arc::new(tokio::sync::Semaphore::new(READERS)),
                },
                path,
                sender: Some(sender),
                writer: Some(writer),
                counters,
                connections: Arc::default(),
                vault,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What seals and opens payloads (for the closures that run on the writer or a reader).
    fn vault(&self) -> Arc<Vault> {
        Arc::clone(&self.inner.vault)
    }

    /// Runs `f` on the writer, in a savepoint of the next batch; answers after the commit.
    /// Every cached connection is dropped after the commit: see [`SqliteStore::write_then`]
    /// for writes that cannot change one.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T> + Send + 'static,
    {
        self.write_then(f, drops_connections).await
    }

    /// [`SqliteStore::write`], with `after` applied to the connection cache once the command
    /// is committed (on the writer, before the caller is answered, so even a caller that went
    /// away cannot leave the cache behind the database).
    async fn write_then<T, F, A>(&self, f: F, after: A) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T> + Send + 'static,
        A: FnOnce(&T, &ConnectionCache) + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let command = Box::new(Call {
            f: Some(f),
            result: None,
            reply,
            after,
            cache: Arc::clone(&self.inner.connections),
        });
        let sender = self.inner.sender.as_ref().ok_or(Error::Closed)?;
        sender.send(command).await.map_err(|_| Error::Closed)?;
        // If the caller goes away now, the command still runs and commits.
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Runs `f` on a read-only connection on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.inner.readers.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.readers.with(f)
        })
        .await
        .map_err(|e| Error::Backend(format!("a store read failed: {e}")))?
    }
}

fn migrate(db: &mut Db) -> Result<()> {
    let applied: i64 = db.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(Error::Backend(format!(
            "the database has schema version {applied}; this host knows up to {}: \
             upgrade the host",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", int(index as u64 + 1))?;
        tx.commit()?;
        tracing::info!(version = index + 1, "applied a store migration");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The writer

/// A write queued for the writer.
trait Command: Send {
    /// Runs the command; `true` when it succeeded (its savepoint is then kept).
    fn run(&mut self, db: &Db) -> bool;
    /// Replaces a successful result with an error (its savepoint could not be released).
    fn fail(&mut self, error: Error);
    /// Sends the result, once the batch's fate (`committed`) is known.
    fn answer(self: Box<Self>, committed: Result<()>);
}

struct Call<T, F, A> {
    f: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
    /// Applied to the connection cache once the command is committed.
    after: A,
    cache: Arc<ConnectionCache>,
}

impl<T, F, A> Command for Call<T, F, A>
where
    T: Send,
    F: FnOnce(&Db) -> Result<T> + Send,
    A: FnOnce(&T, &ConnectionCache) + Send,
{
    fn run(&mut self, db: &Db) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        // A bug in one command must not take the writer (and every later write) down.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(db)))
            .unwrap_or_else(|_| Err(Error::Backend("a store command panicked".to_owned())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn fail(&mut self, error: Error) {
        self.result = Some(Err(error));
    }

    fn answer(self: Box<Self>, committed: Result<()>) {
        let Call {
            result,
            reply,
            after,
            cache,
            ..
        } = *self;
        let result = match (result, committed) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), Ok(())) => {
                after(&value, &cache);
                Ok(value)
            }
            (Some(Ok(_)) | None, Err(e)) => Err(e),
            (None, Ok(())) => Err(Error::Backend("the command did not run".to_owned())),
        };
        let _ = reply.send(result);
    }
}

fn writer_loop(
    mut db: Db,
    mut receiver: mpsc::Receiver<Box<dyn Command>>,
    counters: &WriteCounters,
) {
    while let Some(first) = receiver.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        run_batch(&mut db, batch, counters);
    }
}

/// Runs a statement without parameters or rows, prepared once per connection (the savepoint
/// statements run for every command).
fn execute_cached(db: &Db, sql: &str) -> rusqlite::Result<()> {
    db.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs `batch` in one transaction, each command in a savepoint, commits once, then answers.
fn run_batch(db: &mut Db, batch: Vec<Box<dyn Command>>, counters: &WriteCounters) {
    let tx = match db.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let error = Error::from(e);
            tracing::error!(%error, "the store cannot begin a transaction");
            for command in batch {
                command.answer(Err(error.clone()));
            }
            return;
        }
    };
    let mut ran: Vec<Box<dyn Command>> = Vec::with_capacity(batch.len());
    // Set when the transaction as a whole is lost: nothing of this batch may be acknowledged.
    let mut broken: Option<Error> = None;
    for mut command in batch {
        if broken.is_none() && tx.is_autocommit() {
            // SQLite rolled the whole transaction back (I/O error, disk full).
            broken = Some(Error::Backend(
                "the database rolled the transaction back".to_owned(),
            ));
        }
        if broken.is_some() {
            ran.push(command);
            continue;
        }
        if let Err(e) = execute_cached(&tx, "SAVEPOINT command") {
            broken = Some(e.into());
            ran.push(command);
            continue;
        }
        let ok = command.run(&tx);
        let closed = if ok {
            execute_cached(&tx, "RELEASE command")
        } else {
            execute_cached(&tx, "ROLLBACK TO command")
                .and_then(|()| execute_cached(&tx, "RELEASE command"))
        };
        counters.commands.fetch_add(1, Ordering::Relaxed);
        if !ok {
            counters.failed_commands.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = closed {
            let error = Error::from(e);
            command.fail(error.clone());
            broken = Some(error);
        }
        ran.push(command);
    }
    let committed = match broken {
        Some(error) => {
            let _ = tx.rollback();
            Err(error)
        }
        None => tx.commit().map_err(Error::from),
    };
    match &committed {
        Ok(()) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => tracing::error!(%error, commands = ran.len(), "a store batch failed"),
    }
    for command in ran {
        command.answer(committed.clone());
    }
}

// ---------------------------------------------------------------------------------------------
// Readers

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Db>>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Readers {
    fn with<T>(&self, f: impl FnOnce(&Db) -> Result<T>) -> Result<T> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let db = match idle {
            Some(db) => db,
            None => self.open()?,
        };
        let result = f(&db);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < READERS {
            idle.push(db);
        }
        result
    }

    fn open(&self) -> Result<Db> {
        let db = Db::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        db.busy_timeout(BUSY_TIMEOUT)?;
        db.set_prepared_statement_cache_capacity(64);
        Ok(db)
    }
}

// ---------------------------------------------------------------------------------------------
// Rows

const ADAPTER: &str = "id, tenant_id, org_id, name, created_at";
const VERSION: &str = "adapter_id, version, sha256, size_bytes, info_json, limits_json, \
    created_at, created_by, status, failure";
const CONNECTION: &str = "id, tenant_id, org_id, provider, adapter_id, adapter_version, \
    signature_json, allowed_org_ids_json, secret_refs_json, settings_json, polling_json, status, \
    created_at, updated_at, last_delivery_at, version_changed_by, version_changed_at, api_json, \
    webhook_json, export_json";
const DELIVERY_INFO: &str = "id, connection_id, tenant_id, received_at, provider_delivery_id, \
    body_sha256, coalesce(body_bytes, length(body)) AS body_bytes, method, path, query, status, attempts, reason_json, \
    processed_at, trace_id, kind, poll_run_id, cursor, body_purged_at";
const OUTBOX: &str = "seq, event_id, tenant_id, org_id, event_type, entity_type, entity_id, \
    payload_json, metadata_json, delivery_id, connection_id, created_at, status, attempts, \
    next_attempt_at, published_at, last_error";
const REPLAY: &str = "id, tenant_id, org_id, from_ms, to_ms, event_type, requested_by, \
    requested_at, status, replayed, finished_at, error, target, subscriber_id, queued";
const AUDIT: &str = "id, at, tenant_id, org_id, actor, roles_json, action, resource_type, \
    resource_id, request_id, status, detail_json, support";
const SUBSCRIBER: &str =
    "id, tenant_id, org_id, url, event_types_json, secret_ref, enabled, created_at";
const SUBSCRIBER_DELIVERY: &str = "subscriber_id, outbox_seq, status, attempts, \
    next_attempt_at, last_status, last_error, updated_at";
const INVOCATION: &str = "id, delivery_id, adapter_id, adapter_version, adapter_sha256, \
    input_sha256, started_at, duration_us, fuel, peak_memory_bytes, bytes_in, bytes_out, events, \
    outcome, detail_json, log_json, export, replay_json";
/// What an invocation's row answers: what was inserted, and when its log was purged.
const INVOCATION_READ: &str = "id, delivery_id, adapter_id, adapter_version, adapter_sha256, \
    input_sha256, started_at, duration_us, fuel, peak_memory_bytes, bytes_in, bytes_out, events, \
    outcome, detail_json, log_json, export, log_purged_at";

fn conversion(
    column: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        Type::Text,
        Box::new(ColumnError {
            column: column.to_owned(),
            message: error.to_string(),
        }),
    )
}

#[derive(Debug, thiserror::Error)]
#[error("column {column}: {message}")]
struct ColumnError {
    column: String,
    message: String,
}

fn text_enum<T: FromStr<Err = Error>>(row: &Row<'_>, column: &str) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    text.parse().map_err(|e: Error| conversion(column, e))
}

fn json_column<T: serde::de::DeserializeOwned>(row: &Row<'_>, column: &str) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|e| conversion(column, e))
}

/// A non-negative integer column.
fn uint(row: &Row<'_>, column: &str) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|e| conversion(column, e))
}

/// `value` as an SQL integer (values beyond `i64::MAX` saturate: none occur in practice).
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn adapter_row(row: &Row<'_>) -> rusqlite::Result<Adapter> {
    Ok(Adapter {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        org_id: row.get("org_id")?,
        name: row.get("name")?,
        created_at: row.get("created_at")?,
    })
}

fn version_row(row: &Row<'_>) -> rusqlite::Result<AdapterVersion> {
    Ok(AdapterVersion {
        adapter_id: row.get("adapter_id")?,
        version: row.get("version")?,
        sha256: row.get("sha256")?,
        size_bytes: uint(row, "size_bytes")?,
        info_json: row.get("info_json")?,
        limits_json: row.get("limits_json")?,
        created_at: row.get("created_at")?,
        created_by: row.get("created_by")?,
        status: text_enum(row, "status")?,
        failure: row.get("failure")?,
    })
}

fn connection_row(row: &Row<'_>) -> rusqlite::Result<Connection> {
    Ok(Connection {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        org_id: row.get("org_id")?,
        provider: row.get("provider")?,
        adapter_id: row.get("adapter_id")?,
        adapter_version: row.get("adapter_version")?,
        signature_json: row.get("signature_json")?,
        allowed_org_ids: json_column(row, "allowed_org_ids_json")?,
        secret_refs_json: row.get("secret_refs_json")?,
        settings_json: row.get("settings_json")?,
        polling_json: row.get("polling_json")?,
        api_json: row.get("api_json")?,
        webhook_json: row.get("webhook_json")?,
        export_json: row.get("export_json")?,
        status: text_enum(row, "status")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        last_delivery_at: row.get("last_delivery_at")?,
        version_changed_by: row.get("version_changed_by")?,
        version_changed_at: row.get("version_changed_at")?,
    })
}

fn delivery_info_row(row: &Row<'_>) -> rusqlite::Result<DeliveryInfo> {
    Ok(DeliveryInfo {
        id: row.get("id")?,
        connection_id: row.get("connection_id")?,
        tenant_id: row.get("tenant_id")?,
        received_at: row.get("received_at")?,
        provider_delivery_id: row.get("provider_delivery_id")?,
        body_sha256: row.get("body_sha256")?,
        body_bytes: uint(row, "body_bytes")?,
        method: row.get("method")?,
        path: row.get("path")?,
        query: row.get("query")?,
        status: text_enum(row, "status")?,
        attempts: row.get("attempts")?,
        reason_json: row.get("reason_json")?,
        processed_at: row.get("processed_at")?,
        trace_id: row.get("trace_id")?,
        kind: text_enum(row, "kind")?,
        poll_run_id: row.get("poll_run_id")?,
        cursor: row.get("cursor")?,
        body_purged_at: row.get("body_purged_at")?,
    })
}

fn delivery_row(row: &Row<'_>, vault: &Vault) -> rusqlite::Result<Delivery> {
    let (body, body_erased) = sealing::open_bytes(vault, Purpose::Body, row.get("body")?)
        .map_err(|e| conversion("body", e))?;
    Ok(Delivery {
        info: delivery_info_row(row)?,
        headers: json_column(row, "headers_json")?,
        body,
        body_erased,
    })
}

fn replay_row(row: &Row<'_>) -> rusqlite::Result<Replay> {
    Ok(Replay {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        org_id: row.get("org_id")?,
        from: row.get("from_ms")?,
        to: row.get("to_ms")?,
        event_type: row.get("event_type")?,
        requested_by: row.get("requested_by")?,
        requested_at: row.get("requested_at")?,
        status: text_enum(row, "status")?,
        replayed: uint(row, "replayed")?,
        finished_at: row.get("finished_at")?,
        error: row.get("error")?,
        target: text_enum(row, "target")?,
        subscriber_id: row.get("subscriber_id")?,
        queued: uint(row, "queued")?,
    })
}

fn audit_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let status: i64 = row.get("status")?;
    Ok(AuditEntry {
        id: row.get("id")?,
        at: row.get("at")?,
        tenant_id: row.get("tenant_id")?,
        org_id: row.get("org_id")?,
        actor: row.get("actor")?,
        roles: json_column(row, "roles_json")?,
        action: row.get("action")?,
        resource_type: row.get("resource_type")?,
        resource_id: row.get("resource_id")?,
        request_id: row.get("request_id")?,
        status: u16::try_from(status).map_err(|e| conversion("status", e))?,
        detail_json: row.get("detail_json")?,
        support: row.get("support")?,
    })
}

fn outbox_row(row: &Row<'_>, vault: &Vault) -> rusqlite::Result<OutboxRow> {
    let (payload_json, payload_erased) =
        sealing::open_text(vault, Purpose::Payload, row.get("payload_json")?, || {
            sealing::ERASED_PAYLOAD.to_owned()
        })
        .map_err(|e| conversion("payload_json", e))?;
    Ok(OutboxRow {
        seq: row.get("seq")?,
        event_id: row.get("event_id")?,
        tenant_id: row.get("tenant_id")?,
        org_id: row.get("org_id")?,
        event_type: row.get("event_type")?,
        entity_type: row.get("entity_type")?,
        entity_id: row.get("entity_id")?,
        payload_json,
        payload_erased,
        metadata_json: row.get("metadata_json")?,
        delivery_id: row.get("delivery_id")?,
        connection_id: row.get("connection_id")?,
        created_at: row.get("created_at")?,
        status: text_enum(row, "status")?,
        attempts: row.get("attempts")?,
        next_attempt_at: row.get("next_attempt_at")?,
        published_at: row.get("published_at")?,
        last_error: row.get("last_error")?,
    })
}

fn subscriber_row(row: &Row<'_>) -> rusqlite::Result<Subscriber> {
    Ok(Subscriber {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        org_id: row.get("org_id")?,
        url: row.get("url")?,
        event_types: json_column(row, "event_types_json")?,
        secret_ref: row.get("secret_ref")?,
        enabled: row.get("enabled")?,
        created_at: row.get("created_at")?,
    })
}

fn subscriber_delivery_row(row: &Row<'_>) -> rusqlite::Result<SubscriberDelivery> {
    Ok(SubscriberDelivery {
        subscriber_id: row.get("subscriber_id")?,
        outbox_seq: row.get("outbox_seq")?,
        status: text_enum(row, "status")?,
        attempts: row.get("attempts")?,
        next_attempt_at: row.get("next_attempt_at")?,
        last_status: row.get("last_status")?,
        last_error: row.get("last_error")?,
        updated_at: row.get("updated_at")?,
    })
}

fn invocation_row(row: &Row<'_>, vault: &Vault) -> rusqlite::Result<Invocation> {
    let (log_json, log_erased) =
        sealing::open_text(vault, Purpose::Log, row.get("log_json")?, empty_log)
            .map_err(|e| conversion("log_json", e))?;
    Ok(Invocation {
        id: row.get("id")?,
        delivery_id: row.get("delivery_id")?,
        record: InvocationRecord {
            export: text_enum(row, "export")?,
            adapter_id: row.get("adapter_id")?,
            adapter_version: row.get("adapter_version")?,
            adapter_sha256: row.get("adapter_sha256")?,
            input_sha256: row.get("input_sha256")?,
            started_at: row.get("started_at")?,
            duration_us: uint(row, "duration_us")?,
            fuel: uint(row, "fuel")?,
            peak_memory_bytes: uint(row, "peak_memory_bytes")?,
            bytes_in: uint(row, "bytes_in")?,
            bytes_out: uint(row, "bytes_out")?,
            events: uint(row, "events")?,
            outcome: text_enum(row, "outcome")?,
            detail_json: row.get("detail_json")?,
            log_json,
            replay_json: None,
        },
        log_purged_at: row.get("log_purged_at")?,
        log_erased,
    })
}

/// The orgs tenant `?1`'s rows name, with what names each: a select to finish with a `WHERE`
/// on `org_id`, `GROUP BY org_id` and an order.
const ORG_USES: &str = "WITH named (org_id, kind) AS (\
        SELECT org_id, 'connection' FROM connections WHERE tenant_id = ?1 AND org_id IS NOT NULL \
        UNION ALL SELECT allowed.value, 'allowed' FROM connections, \
            json_each(connections.allowed_org_ids_json) AS allowed \
            WHERE tenant_id = ?1 AND allowed.value IS NOT connections.org_id \
        UNION ALL SELECT org_id, 'adapter' FROM adapters WHERE tenant_id = ?1 AND org_id IS NOT NULL \
        UNION ALL SELECT org_id, 'subscriber' FROM subscribers \
            WHERE tenant_id = ?1 AND org_id IS NOT NULL) \
    SELECT org_id, SUM(kind = 'connection') AS connections, SUM(kind = 'allowed') AS allowed_by, \
        SUM(kind = 'adapter') AS adapters, SUM(kind = 'subscriber') AS subscribers FROM named";

/// Runs a query with positional `args` and maps every row.
fn query_all<T>(
    db: &Db,
    sql: &str,
    args: impl rusqlite::Params,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut statement = db.prepare_cached(sql)?;
    let rows = statement.query_map(args, map)?;
    Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
}

fn query_one<T>(
    db: &Db,
    sql: &str,
    args: impl rusqlite::Params,
    map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    Ok(db.prepare_cached(sql)?.query_row(args, map).optional()?)
}

/// Cuts the one extra row fetched to learn whether another page follows.
fn page<T>(mut items: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next_cursor }
}

fn seq_cursor(cursor: Option<&String>) -> Result<Option<i64>> {
    cursor
        .map(|text| {
            text.parse::<i64>()
                .map_err(|_| Error::Invalid(format!("not a cursor of this list: {text:?}")))
        })
        .transpose()
}

/// An SQL statement assembled from optional filters.
struct Filtered {
    sql: String,
    args: Vec<Value>,
}

impl Filtered {
    fn new(select: String) -> Self {
        Self {
            sql: select,
            args: Vec::new(),
        }
    }

    fn and(&mut self, condition: &str, value: Option<Value>) {
        if let Some(value) = value {
            self.sql.push_str(" AND ");
            self.sql.push_str(condition);
            self.args.push(value);
        }
    }

    /// [`Filtered::and`] for a condition that uses the value `uses` times.
    fn and_repeated(&mut self, condition: &str, value: Option<Value>, uses: usize) {
        if let Some(value) = value {
            self.sql.push_str(" AND ");
            self.sql.push_str(condition);
            self.args.extend(std::iter::repeat_n(value, uses));
        }
    }

    fn run<T>(
        mut self,
        db: &Db,
        tail: &str,
        limit: usize,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        self.sql.push(' ');
        self.sql.push_str(tail);
        self.sql.push_str(" LIMIT ?");
        self.args.push(Value::Integer(int(limit as u64 + 1)));
        query_all(db, &self.sql, params_from_iter(self.args), map)
    }
}

fn text(value: Option<&String>) -> Option<Value> {
    value.map(|v| Value::Text(v.clone()))
}

fn integer(value: Option<i64>) -> Option<Value> {
    value.map(Value::Integer)
}

// ---------------------------------------------------------------------------------------------
// Operations run on the writer

fn get_connection(db: &Db, id: &str) -> Result<Option<Connection>> {
    query_one(
        db,
        &format!("SELECT {CONNECTION} FROM connections WHERE id = ?1"),
        [id],
        connection_row,
    )
}

fn require_connection(db: &Db, id: &str) -> Result<Connection> {
    get_connection(db, id)?.ok_or_else(|| Error::NotFound(format!("connection {id}")))
}

/// The adapter version, which must belong to an adapter of `tenant_id`.
fn require_version(db: &Db, tenant_id: &str, adapter_id: &str, version: u32) -> Result<()> {
    let found = query_one(
        db,
        "SELECT 1 FROM adapter_versions v JOIN adapters a ON a.id = v.adapter_id \
         WHERE v.adapter_id = ?1 AND v.version = ?2 AND a.tenant_id = ?3",
        params![adapter_id, version, tenant_id],
        |_| Ok(()),
    )?;
    found.ok_or_else(|| {
        Error::NotFound(format!(
            "version {version} of adapter {adapter_id} of this tenant"
        ))
    })
}

fn upsert_connection(
    db: &Db,
    spec: ConnectionSpec,
    allowed_org_ids_json: String,
    actor: &str,
    now: Millis,
) -> Result<(Connection, Upsert)> {
    require_version(db, &spec.tenant_id, &spec.adapter_id, spec.adapter_version)?;
    let Some(old) = get_connection(db, &spec.id)? else {
        db.prepare_cached(&format!(
            "INSERT INTO connections ({CONNECTION}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, NULL, NULL, NULL, ?14, \
             ?15, ?16)"
        ))?
        .execute(params![
            spec.id,
            spec.tenant_id,
            spec.org_id,
            spec.provider,
            spec.adapter_id,
            spec.adapter_version,
            spec.signature_json,
            allowed_org_ids_json,
            spec.secret_refs_json,
            spec.settings_json,
            spec.polling_json,
            spec.status.as_str(),
            now,
            spec.api_json,
            spec.webhook_json,
            spec.export_json,
        ])?;
        return Ok((require_connection(db, &spec.id)?, Upsert::Created));
    };
    if old.tenant_id != spec.tenant_id {
        return Err(Error::Conflict(format!(
            "connection {} belongs to another tenant",
            spec.id
        )));
    }
    if old.spec() == spec {
        return Ok((old, Upsert::Unchanged));
    }
    let version_changed =
        old.adapter_id != spec.adapter_id || old.adapter_version != spec.adapter_version;
    db.prepare_cached(
        "UPDATE connections SET org_id = ?2, provider = ?3, adapter_id = ?4, \
         adapter_version = ?5, signature_json = ?6, allowed_org_ids_json = ?7, \
         secret_refs_json = ?8, settings_json = ?9, polling_json = ?10, status = ?11, \
         updated_at = ?12, api_json = ?15, webhook_json = ?16, export_json = ?17, \
         version_changed_by = CASE WHEN ?13 THEN ?14 ELSE version_changed_by END, \
         version_changed_at = CASE WHEN ?13 THEN ?12 ELSE version_changed_at END \
         WHERE id = ?1",
    )?
    .execute(params![
        spec.id,
        spec.org_id,
        spec.provider,
        spec.adapter_id,
        spec.adapter_version,
        spec.signature_json,
        allowed_org_ids_json,
        spec.secret_refs_json,
        spec.settings_json,
        spec.polling_json,
        spec.status.as_str(),
        now,
        version_changed,
        actor,
        spec.api_json,
        spec.webhook_json,
        spec.export_json,
    ])?;
    if old.polling_json != spec.polling_json {
        // A shorter interval takes effect now, not after the run the old one scheduled.
        db.prepare_cached(
            "UPDATE poll_state SET next_run_at = \
             min(next_run_at, ?2 + 1000 * json_extract(?3, '$.interval_secs')) \
             WHERE connection_id = ?1 AND json_extract(?3, '$.interval_secs') IS NOT NULL",
        )?
        .execute(params![spec.id, now, spec.polling_json])?;
    }
    Ok((require_connection(db, &spec.id)?, Upsert::Updated))
}

/// A delivery prepared off the writer thread (hash and header JSON computed by the caller).
struct PreparedDelivery {
    new: NewDelivery,
    body_sha256: String,
    headers_json: String,
    window: Millis,
}

impl PreparedDelivery {
    fn new(new: NewDelivery, dedupe_window: Duration) -> Result<Self> {
        Ok(Self {
            body_sha256: new.content_sha256(),
            headers_json: serde_json::to_string(&new.headers)
                .map_err(|e| Error::Invalid(format!("headers: {e}")))?,
            window: millis(dedupe_window),
            new,
        })
    }
}

/// What finds the original of a retried delivery (see [`Store::record_delivery`]).
struct DedupeKey<'a> {
    kind: DeliveryKind,
    connection_id: &'a str,
    provider_delivery_id: Option<&'a str>,
    body_sha256: &'a str,
    received_at: Millis,
    window: Millis,
}

impl PreparedDelivery {
    fn key(&self) -> DedupeKey<'_> {
        DedupeKey {
            kind: self.new.kind,
            connection_id: &self.new.connection_id,
            provider_delivery_id: self.new.provider_delivery_id.as_deref(),
            body_sha256: &self.body_sha256,
            received_at: self.new.received_at,
            window: self.window,
        }
    }
}

/// The tenant of a connection; `NotFound` for an unknown one.
fn connection_tenant(db: &Db, connection_id: &str) -> Result<String> {
    query_one(
        db,
        "SELECT tenant_id FROM connections WHERE id = ?1",
        [connection_id],
        |row| row.get::<_, String>(0),
    )?
    .ok_or_else(|| Error::NotFound(format!("connection {connection_id}")))
}

/// The delivery that `key` is a retry of, if any. A page a poll run fetched is never one: the
/// run fetches it again precisely because it must be processed again (its cursor did not
/// move); its events keep their ids all the same.
fn find_original(db: &Db, key: &DedupeKey<'_>) -> Result<Option<Recorded>> {
    if key.kind == DeliveryKind::Poll {
        return Ok(None);
    }
    let original = match key.provider_delivery_id {
        Some(provider_id) => query_one(
            db,
            "SELECT id, status FROM deliveries \
             WHERE connection_id = ?1 AND provider_delivery_id = ?2",
            params![key.connection_id, provider_id],
            |row| Ok((row.get::<_, String>(0)?, text_enum(row, "status")?)),
        )?,
        None => query_one(
            db,
            "SELECT id, status FROM deliveries \
             WHERE connection_id = ?1 AND body_sha256 = ?2 \
               AND received_at >= ?3 AND received_at <= ?4 \
             ORDER BY received_at, id LIMIT 1",
            params![
                key.connection_id,
                key.body_sha256,
                key.received_at.saturating_sub(key.window),
                key.received_at.saturating_add(key.window),
            ],
            |row| Ok((row.get::<_, String>(0)?, text_enum(row, "status")?)),
        )?,
    };
    Ok(original.map(|(id, status)| Recorded {
        id,
        duplicate: true,
        status,
    }))
}

/// How a new delivery is inserted: completed already, or `received` with its first
/// invocation under way until the lease ends.
enum Inserted<'c> {
    Completed(&'c Completion),
    Received { lease_until: Millis },
}

/// Inserts a new delivery. Its first invocation counts as an attempt either way.
fn insert_delivery(
    db: &Db,
    vault: &Vault,
    id: &str,
    tenant_id: &str,
    p: &PreparedDelivery,
    inserted: Inserted<'_>,
) -> Result<()> {
    let new = &p.new;
    let body = vault.seal(tenant_id, Purpose::Body, &new.body)?;
    let (status, reason_json, processed_at, lease_until) = match inserted {
        Inserted::Completed(c) => (
            c.status,
            c.reason_json.as_deref(),
            Some(c.completed_at),
            None,
        ),
        Inserted::Received { lease_until } => {
            (DeliveryStatus::Received, None, None, Some(lease_until))
        }
    };
    db.prepare_cached(
        "INSERT INTO deliveries (id, connection_id, tenant_id, received_at, \
         provider_delivery_id, body_sha256, method, path, query, headers_json, body, status, \
         attempts, reason_json, processed_at, trace_id, lease_until, kind, poll_run_id, cursor, \
         body_bytes) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 1, ?13, ?14, ?15, ?16, ?17, \
                 ?18, ?19, ?20)",
    )?
    .execute(params![
        id,
        new.connection_id,
        tenant_id,
        new.received_at,
        new.provider_delivery_id,
        p.body_sha256,
        new.method,
        new.path,
        new.query,
        p.headers_json,
        body,
        status.as_str(),
        reason_json,
        processed_at,
        new.trace_id,
        lease_until,
        new.kind.as_str(),
        new.poll_run_id,
        new.cursor,
        int(new.body.len() as u64),
    ])?;
    // Only a later time is written: the row is left alone (no page rewritten) otherwise.
    db.prepare_cached(
        "UPDATE connections SET last_delivery_at = ?2 \
         WHERE id = ?1 AND (last_delivery_at IS NULL OR last_delivery_at < ?2)",
    )?
    .execute(params![new.connection_id, new.received_at])?;
    Ok(())
}

fn record_delivery(
    db: &Db,
    vault: &Vault,
    p: PreparedDelivery,
    lease_until: Millis,
) -> Result<Recorded> {
    let tenant_id = connection_tenant(db, &p.new.connection_id)?;
    if let Some(original) = find_original(db, &p.key())? {
        return Ok(original);
    }
    let id = new_id();
    let received = Inserted::Received { lease_until };
    insert_delivery(db, vault, &id, &tenant_id, &p, received)?;
    Ok(Recorded {
        id,
        duplicate: false,
        status: DeliveryStatus::Received,
    })
}

fn record_completed(db: &Db, vault: &Vault, p: PreparedDelivery, c: Completion) -> Result<Taken> {
    let tenant_id = connection_tenant(db, &p.new.connection_id)?;
    if let Some(original) = find_original(db, &p.key())? {
        return Ok(Taken::Duplicate(original));
    }
    let completed = Inserted::Completed(&c);
    insert_delivery(db, vault, &c.delivery_id, &tenant_id, &p, completed)?;
    let sealer = Sealer {
        vault,
        tenant_id: &tenant_id,
    };
    Ok(Taken::Completed(write_outcome(
        db,
        sealer,
        &c,
        &p.new.connection_id,
    )?))
}

fn complete_delivery(db: &Db, vault: &Vault, c: Completion) -> Result<Completed> {
    let (connection_id, tenant_id) = query_one(
        db,
        "SELECT connection_id, tenant_id FROM deliveries WHERE id = ?1",
        [&c.delivery_id],
        |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
    )?
    .ok_or_else(|| Error::NotFound(format!("delivery {}", c.delivery_id)))?;
    let sealer = Sealer {
        vault,
        tenant_id: &tenant_id,
    };
    let completed = write_outcome(db, sealer, &c, &connection_id)?;
    db.prepare_cached(
        "UPDATE deliveries SET status = ?2, reason_json = ?3, processed_at = ?4, \
         attempts = attempts + ?5, lease_until = NULL WHERE id = ?1",
    )?
    .execute(params![
        c.delivery_id,
        c.status.as_str(),
        c.reason_json,
        c.completed_at,
        i64::from(!c.attempt_counted),
    ])?;
    Ok(completed)
}

/// What a completion writes besides the delivery's own row: the invocation record, the
/// events, the connection's new state.
fn write_outcome(
    db: &Db,
    sealer: Sealer<'_>,
    c: &Completion,
    connection_id: &str,
) -> Result<Completed> {
    let tenant_id = sealer.tenant_id;
    for preceding in &c.preceding {
        insert_invocation(db, sealer, &new_id(), &c.delivery_id, preceding)?;
    }
    let invocation_id = new_id();
    insert_invocation(db, sealer, &invocation_id, &c.delivery_id, &c.invocation)?;
    for (seq, record) in c.exchanges.iter().enumerate() {
        polls::insert_exchange(
            db,
            sealer,
            polls::ExchangeOwner {
                delivery_id: Some(&c.delivery_id),
                invocation_id: record.by_invocation.then_some(invocation_id.as_str()),
                poll_run_id: c.poll.as_ref().map(|p| p.run_id.as_str()),
            },
            seq,
            &record.exchange,
        )?;
    }

    let mut appended = Vec::with_capacity(c.events.len());
    let mut already_present = 0;
    if !c.events.is_empty() {
        let mut insert = db.prepare_cached(
            "INSERT INTO outbox (event_id, tenant_id, org_id, event_type, entity_type, \
             entity_id, payload_json, metadata_json, delivery_id, connection_id, created_at, \
             status, attempts, next_attempt_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending', 0, ?11) \
             ON CONFLICT (event_id) DO NOTHING",
        )?;
        for event in &c.events {
            let inserted = insert.execute(params![
                event.event_id,
                tenant_id,
                event.org_id,
                event.event_type,
                event.entity_type,
                event.entity_id,
                sealer.text(Purpose::Payload, &event.payload_json)?,
                event.metadata_json,
                c.delivery_id,
                connection_id,
                c.completed_at,
            ])?;
            if inserted == 1 {
                appended.push(db.last_insert_rowid());
                identities::record(db, tenant_id, connection_id, event, c.completed_at)?;
            } else {
                already_present += 1;
            }
        }
    }

    if let Some(commit) = &c.state {
        commit_state(db, connection_id, commit)?;
    }
    if let Some(checkpoint) = &c.poll {
        polls::checkpoint(db, connection_id, checkpoint, appended.len())?;
    }
    Ok(Completed {
        invocation_id,
        appended,
        already_present,
    })
}

fn insert_invocation(
    db: &Db,
    sealer: Sealer<'_>,
    id: &str,
    delivery_id: &str,
    r: &InvocationRecord,
) -> Result<()> {
    db.prepare_cached(&format!(
        "INSERT INTO invocations ({INVOCATION}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
    ))?
    .execute(params![
        id,
        delivery_id,
        r.adapter_id,
        r.adapter_version,
        r.adapter_sha256,
        r.input_sha256,
        r.started_at,
        int(r.duration_us),
        int(r.fuel),
        int(r.peak_memory_bytes),
        int(r.bytes_in),
        int(r.bytes_out),
        int(r.events),
        r.outcome.as_str(),
        r.detail_json,
        sealer.text(Purpose::Log, &r.log_json)?,
        r.export.as_str(),
        r.replay_json
            .as_deref()
            .map(|replay| sealer.text(Purpose::Replay, replay))
            .transpose()?,
    ])?;
    Ok(())
}

/// Refuses a completion that does not end its delivery, or carries text that is not JSON.
fn check_completion(completion: &Completion) -> Result<()> {
    if completion.status == DeliveryStatus::Received {
        return Err(Error::Invalid(
            "a completion must end the delivery in a final status".to_owned(),
        ));
    }
    if let Some(reason) = &completion.reason_json {
        check_json("reason_json", reason)?;
    }
    for event in &completion.events {
        check_json("metadata_json", &event.metadata_json)?;
    }
    Ok(())
}

fn load_state(db: &Db, connection_id: &str) -> Result<StateSnapshot> {
    // One read transaction: the map and its versions are of the same commit.
    let entries = query_all(
        db,
        "SELECT key, value, version FROM connection_state WHERE connection_id = ?1",
        [connection_id],
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, i64>(2)?,
            ))
        },
    )?;
    let mut snapshot = StateSnapshot {
        version: state_totals(db, connection_id)?.version,
        ..StateSnapshot::default()
    };
    for (key, value, version) in entries {
        snapshot.versions.insert(key.clone(), version);
        snapshot.map.insert(key, value);
    }
    Ok(snapshot)
}

/// A connection's state version and size.
#[derive(Debug, Default)]
struct StateTotals {
    version: i64,
    keys: i64,
    bytes: i64,
}

fn state_totals(db: &Db, connection_id: &str) -> Result<StateTotals> {
    Ok(query_one(
        db,
        "SELECT version, keys, bytes FROM connection_state_versions WHERE connection_id = ?1",
        [connection_id],
        |row| {
            Ok(StateTotals {
                version: row.get(0)?,
                keys: row.get(1)?,
                bytes: row.get(2)?,
            })
        },
    )?
    .unwrap_or_default())
}

/// Checks `commit` against the state as committed and applies its writes (see
/// [`StateCommit`]).
fn commit_state(db: &Db, connection_id: &str, commit: &StateCommit) -> Result<()> {
    let stale = |why: String| {
        Err(Error::StaleState(format!(
            "connection {connection_id}: {why}"
        )))
    };
    let mut key_version = db.prepare_cached(
        "SELECT version, length(CAST(key AS BLOB)) + length(value) FROM connection_state \
         WHERE connection_id = ?1 AND key = ?2",
    )?;
    for (key, seen) in &commit.reads {
        let now = key_version
            .query_row(params![connection_id, key], |row| row.get::<_, i64>(0))
            .optional()?;
        if now != *seen {
            return stale(format!(
                "key {key:?} was written after the invocation read it"
            ));
        }
    }
    let mut listed = db.prepare_cached(
        "SELECT count(*), coalesce(max(version), 0) FROM connection_state \
         WHERE connection_id = ?1 AND key >= ?2 AND substr(key, 1, length(?2)) = ?2",
    )?;
    for (prefix, seen) in &commit.prefixes {
        let (keys, newest) = listed.query_row(params![connection_id, prefix], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
        })?;
        // A key added or rewritten since has a newer version; with none, only a removal can
        // have changed the count.
        if newest > commit.base_version || keys != int(*seen) {
            return stale(format!(
                "keys under {prefix:?} changed after the invocation listed them"
            ));
        }
    }
    if commit.writes.is_empty() {
        return Ok(());
    }
    let mut totals = state_totals(db, connection_id)?;
    let (keys_before, bytes_before) = (totals.keys, totals.bytes);
    totals.version += 1;
    let mut upsert = db.prepare_cached(
        "INSERT INTO connection_state (connection_id, key, value, version) \
         VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (connection_id, key) DO UPDATE \
         SET value = excluded.value, version = excluded.version",
    )?;
    let mut delete =
        db.prepare_cached("DELETE FROM connection_state WHERE connection_id = ?1 AND key = ?2")?;
    for (key, value) in &commit.writes {
        let old = key_version
            .query_row(params![connection_id, key], |row| row.get::<_, i64>(1))
            .optional()?;
        if let Some(old) = old {
            totals.keys -= 1;
            totals.bytes -= old;
        }
        match value {
            Some(value) => {
                upsert.execute(params![connection_id, key, value, totals.version])?;
                totals.keys += 1;
                totals.bytes += int((key.len() + value.len()) as u64);
            }
            None => {
                delete.execute(params![connection_id, key])?;
            }
        }
    }
    // A state already past lowered bounds may stay there, but may not grow.
    let bounds = commit.bounds;
    if (totals.keys > keys_before && totals.keys > int(bounds.keys))
        || (totals.bytes > bytes_before && totals.bytes > int(bounds.bytes))
    {
        return stale(format!(
            "with the writes of invocations that ran beside it, the state would hold {} keys \
             and {} bytes (at most {} and {})",
            totals.keys, totals.bytes, bounds.keys, bounds.bytes
        ));
    }
    db.prepare_cached(
        "INSERT INTO connection_state_versions (connection_id, version, keys, bytes) \
         VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (connection_id) DO UPDATE \
         SET version = excluded.version, keys = excluded.keys, bytes = excluded.bytes",
    )?
    .execute(params![
        connection_id,
        totals.version,
        totals.keys,
        totals.bytes
    ])?;
    Ok(())
}

fn get_outbox_row(db: &Db, vault: &Vault, seq: i64) -> Result<Option<OutboxRow>> {
    query_one(
        db,
        &format!("SELECT {OUTBOX} FROM outbox WHERE seq = ?1"),
        [seq],
        |row| outbox_row(row, vault),
    )
}

fn claim_outbox(
    db: &Db,
    vault: &Vault,
    limit: usize,
    now: Millis,
    lease: Millis,
) -> Result<Vec<OutboxRow>> {
    // A due row is claimed unless an earlier row of its entity is pending and not due (in
    // flight under another claim, or waiting for a retry): whole runs of one entity go in one
    // claim, in `seq` order, and the relay publishes them in that order.
    let mut rows = query_all(
        db,
        &format!(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?3 WHERE seq IN ( \
               SELECT o.seq FROM outbox o \
               WHERE o.status = 'pending' AND o.next_attempt_at <= ?1 \
                 AND NOT EXISTS ( \
                   SELECT 1 FROM outbox e INDEXED BY outbox_pending_by_entity_due \
                   WHERE e.status = 'pending' AND e.tenant_id = o.tenant_id \
                     AND e.entity_type = o.entity_type AND e.entity_id = o.entity_id \
                     AND e.next_attempt_at > ?1 AND e.seq < o.seq) \
               ORDER BY o.seq LIMIT ?2) \
             RETURNING {OUTBOX}"
        ),
        params![now, int(limit as u64), now.saturating_add(lease)],
        |row| outbox_row(row, vault),
    )?;
    rows.sort_unstable_by_key(|row| row.seq);
    Ok(rows)
}

/// `NotFound` when the outbox has no row `seq`.
fn require_outbox_row(db: &Db, vault: &Vault, seq: i64) -> Result<OutboxRow> {
    get_outbox_row(db, vault, seq)?.ok_or_else(|| Error::NotFound(format!("outbox row {seq}")))
}

/// Queues subscriber deliveries of outbox rows: new ones once (a row already queued for a
/// subscriber is left as it is), or again for a replay (whatever became of them).
#[derive(Debug, Clone, Copy)]
enum Queue<'a> {
    New,
    /// Only for this subscriber, when given.
    Again(Option<&'a str>),
}

impl Queue<'_> {
    /// What an insert does to a delivery already queued.
    const NEW: &'static str = "DO NOTHING";
    const AGAIN: &'static str = "DO UPDATE SET status = 'pending', attempts = 0, \
        next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at";

    fn on_conflict(self) -> &'static str {
        match self {
            Self::New => Self::NEW,
            Self::Again(_) => Self::AGAIN,
        }
    }

    fn wants(self, subscriber: &Subscriber) -> bool {
        match self {
            Self::New | Self::Again(None) => true,
            Self::Again(Some(only)) => subscriber.id == only,
        }
    }
}

fn mark_published(db: &Db, seqs: &[i64], now: Millis) -> Result<()> {
    let mut update = db.prepare_cached(
        "UPDATE outbox SET status = 'published', published_at = ?2, last_error = NULL \
         WHERE seq = ?1 AND status <> 'published'",
    )?;
    for &seq in seqs {
        update.execute(params![seq, now])?;
    }
    Ok(())
}

fn queue_subscriber_deliveries(
    db: &Db,
    vault: &Vault,
    seqs: &[i64],
    how: Queue<'_>,
    now: Millis,
) -> Result<u64> {
    let mut by_tenant: std::collections::HashMap<String, Vec<Subscriber>> = Default::default();
    let mut insert = db.prepare_cached(&format!(
        "INSERT INTO subscriber_deliveries (subscriber_id, outbox_seq, entity_type, entity_id, \
         status, attempts, next_attempt_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5) \
         ON CONFLICT (subscriber_id, outbox_seq) {}",
        how.on_conflict()
    ))?;
    let mut tenant_of = db.prepare_cached("SELECT tenant_id FROM outbox WHERE seq = ?1")?;
    let mut queued = 0;
    for &seq in seqs {
        // The tenant first: the row itself is read only when the tenant has subscribers.
        let tenant: Option<String> = tenant_of.query_row([seq], |row| row.get(0)).optional()?;
        let Some(tenant) = tenant else {
            return Err(Error::NotFound(format!("outbox row {seq}")));
        };
        if !by_tenant.contains_key(&tenant) {
            let subscribers = query_all(
                db,
                &format!("SELECT {SUBSCRIBER} FROM subscribers WHERE tenant_id = ?1 AND enabled"),
                [&tenant],
                subscriber_row,
            )?;
            by_tenant.insert(tenant.clone(), subscribers);
        }
        if by_tenant[&tenant].is_empty() {
            continue;
        }
        let row = require_outbox_row(db, vault, seq)?;
        for subscriber in &by_tenant[&row.tenant_id] {
            if how.wants(subscriber) && subscriber.wants(&row) {
                queued += insert.execute(params![
                    subscriber.id,
                    seq,
                    row.entity_type,
                    row.entity_id,
                    now
                ])? as u64;
            }
        }
    }
    Ok(queued)
}

fn get_subscriber(db: &Db, id: &str) -> Result<Option<Subscriber>> {
    query_one(
        db,
        &format!("SELECT {SUBSCRIBER} FROM subscribers WHERE id = ?1"),
        [id],
        subscriber_row,
    )
}

fn claim_subscriber_deliveries(
    db: &Db,
    vault: &Vault,
    limit: usize,
    now: Millis,
    lease: Millis,
) -> Result<Vec<SubscriberJob>> {
    // As for the outbox: a due delivery is claimed unless an earlier delivery of its subscriber
    // and entity is pending and not due (in flight, or waiting for a retry), so a run of one
    // entity comes in one claim, in `outbox_seq` order.
    let due = query_all(
        db,
        "SELECT d.subscriber_id, d.outbox_seq FROM subscriber_deliveries d \
         JOIN subscribers s ON s.id = d.subscriber_id \
         WHERE d.status = 'pending' AND d.next_attempt_at <= ?1 AND s.enabled \
           AND NOT EXISTS ( \
             SELECT 1 FROM subscriber_deliveries e \
               INDEXED BY subscriber_deliveries_pending_by_entity_due \
             WHERE e.status = 'pending' AND e.subscriber_id = d.subscriber_id \
               AND e.entity_type = d.entity_type AND e.entity_id = d.entity_id \
               AND e.next_attempt_at > ?1 AND e.outbox_seq < d.outbox_seq) \
         ORDER BY d.outbox_seq, d.subscriber_id LIMIT ?2",
        params![now, int(limit as u64)],
        |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
    )?;
    let mut claim = db.prepare_cached(
        "UPDATE subscriber_deliveries SET attempts = attempts + 1, next_attempt_at = ?3, \
         updated_at = ?4 WHERE subscriber_id = ?1 AND outbox_seq = ?2 \
         RETURNING attempts",
    )?;
    let mut subscribers: std::collections::HashMap<String, Subscriber> = Default::default();
    let mut jobs = Vec::with_capacity(due.len());
    for (subscriber_id, seq) in due {
        let attempts: u32 = claim.query_row(
            params![subscriber_id, seq, now.saturating_add(lease), now],
            |row| row.get(0),
        )?;
        if !subscribers.contains_key(&subscriber_id) {
            let subscriber = get_subscriber(db, &subscriber_id)?
                .ok_or_else(|| Error::NotFound(format!("subscriber {subscriber_id}")))?;
            subscribers.insert(subscriber_id.clone(), subscriber);
        }
        jobs.push(SubscriberJob {
            subscriber: subscribers[&subscriber_id].clone(),
            event: require_outbox_row(db, vault, seq)?,
            attempts,
        });
    }
    Ok(jobs)
}

/// Records an attempt on a delivery (none when it is gone).
fn record_subscriber_attempt(
    db: &Db,
    subscriber_id: &str,
    seq: i64,
    attempt: &SubscriberAttempt,
) -> Result<()> {
    let (status, next_attempt_at) = match attempt.next {
        AttemptNext::Delivered => (SubscriberDeliveryStatus::Delivered, None),
        AttemptNext::RetryAt(at) => (SubscriberDeliveryStatus::Pending, Some(at)),
        AttemptNext::Dead => (SubscriberDeliveryStatus::Dead, None),
    };
    db.prepare_cached(
        "UPDATE subscriber_deliveries SET status = ?3, \
         next_attempt_at = coalesce(?4, next_attempt_at), last_status = ?5, \
         last_error = ?6, updated_at = ?7 \
         WHERE subscriber_id = ?1 AND outbox_seq = ?2",
    )?
    .execute(params![
        subscriber_id,
        seq,
        status.as_str(),
        next_attempt_at,
        attempt.status_code,
        attempt.error.as_deref().map(bounded_error),
        attempt.at,
    ])?;
    Ok(())
}

fn subscriber_delivery_status(
    db: &Db,
    subscriber_id: &str,
    seq: i64,
) -> Result<SubscriberDeliveryStatus> {
    query_one(
        db,
        "SELECT status FROM subscriber_deliveries WHERE subscriber_id = ?1 AND outbox_seq = ?2",
        params![subscriber_id, seq],
        |row| text_enum(row, "status"),
    )?
    .ok_or_else(|| Error::NotFound(format!("delivery of event {seq} to {subscriber_id}")))
}

// ---------------------------------------------------------------------------------------------
// The trait

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn create_adapter(&self, new: NewAdapter) -> Result<Adapter> {
        self.write(move |db| {
            let adapter = Adapter {
                id: new_id(),
                tenant_id: new.tenant_id,
                org_id: new.org_id,
                name: new.name,
                created_at: new.created_at,
            };
            db.prepare_cached(&format!(
                "INSERT INTO adapters ({ADAPTER}) VALUES (?1, ?2, ?3, ?4, ?5)"
            ))?
            .execute(params![
                adapter.id,
                adapter.tenant_id,
                adapter.org_id,
                adapter.name,
                adapter.created_at
            ])
            .map_err(|e| match Error::from(e) {
                Error::Conflict(_) => Error::Conflict(format!(
                    "the tenant already has an adapter named {:?}",
                    adapter.name
                )),
                other => other,
            })?;
            Ok(adapter)
        })
        .await
    }

    async fn get_adapter(&self, id: &str) -> Result<Option<Adapter>> {
        let id = id.to_owned();
        self.read(move |db| {
            query_one(
                db,
                &format!("SELECT {ADAPTER} FROM adapters WHERE id = ?1"),
                [id],
                adapter_row,
            )
        })
        .await
    }

    async fn find_adapter(&self, tenant_id: &str, name: &str) -> Result<Option<Adapter>> {
        let (tenant_id, name) = (tenant_id.to_owned(), name.to_owned());
        self.read(move |db| {
            query_one(
                db,
                &format!("SELECT {ADAPTER} FROM adapters WHERE tenant_id = ?1 AND name = ?2"),
                [tenant_id, name],
                adapter_row,
            )
        })
        .await
    }

    async fn list_adapters(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        request: PageRequest,
    ) -> Result<Page<Adapter>> {
        let limit = page_size(request.limit);
        let (tenant_id, org_id) = (tenant_id.to_owned(), org_id.map(str::to_owned));
        self.read(move |db| {
            let mut query = Filtered::new(format!("SELECT {ADAPTER} FROM adapters WHERE 1 = 1"));
            query.and("tenant_id = ?", Some(Value::Text(tenant_id)));
            query.and("(org_id IS NULL OR org_id = ?)", text(org_id.as_ref()));
            query.and("name > ?", text(request.cursor.as_ref()));
            let items = query.run(db, "ORDER BY name", limit, adapter_row)?;
            Ok(page(items, limit, |a| a.name.clone()))
        })
        .await
    }

    async fn add_adapter_version(&self, new: NewAdapterVersion) -> Result<AdapterVersion> {
        check_json("info_json", &new.info_json)?;
        check_json("limits_json", &new.limits_json)?;
        self.write(move |db| {
            let next: Option<u32> = query_one(
                db,
                "SELECT (SELECT coalesce(max(version), 0) + 1 FROM adapter_versions \
                         WHERE adapter_id = ?1) FROM adapters WHERE id = ?1",
                [&new.adapter_id],
                |row| row.get(0),
            )?;
            let version =
                next.ok_or_else(|| Error::NotFound(format!("adapter {}", new.adapter_id)))?;
            db.prepare_cached(&format!(
                "INSERT INTO adapter_versions ({VERSION}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL)"
            ))?
            .execute(params![
                new.adapter_id,
                version,
                new.sha256,
                int(new.size_bytes),
                new.info_json,
                new.limits_json,
                new.created_at,
                new.created_by,
                new.status.as_str(),
            ])?;
            Ok(AdapterVersion {
                adapter_id: new.adapter_id,
                version,
                sha256: new.sha256,
                size_bytes: new.size_bytes,
                info_json: new.info_json,
                limits_json: new.limits_json,
                created_at: new.created_at,
                created_by: new.created_by,
                status: new.status,
                failure: None,
            })
        })
        .await
    }

    async fn get_adapter_version(
        &self,
        adapter_id: &str,
        version: u32,
    ) -> Result<Option<AdapterVersion>> {
        let adapter_id = adapter_id.to_owned();
        self.read(move |db| {
            query_one(
                db,
                &format!(
                    "SELECT {VERSION} FROM adapter_versions WHERE adapter_id = ?1 AND version = ?2"
                ),
                params![adapter_id, version],
                version_row,
            )
        })
        .await
    }

    async fn list_adapter_versions(
        &self,
        adapter_id: &str,
        request: PageRequest,
    ) -> Result<Page<AdapterVersion>> {
        let limit = page_size(request.limit);
        let after = seq_cursor(request.cursor.as_ref())?;
        let adapter_id = adapter_id.to_owned();
        self.read(move |db| {
            let mut query = Filtered::new(format!(
                "SELECT {VERSION} FROM adapter_versions WHERE 1 = 1"
            ));
            query.and("adapter_id = ?", Some(Value::Text(adapter_id)));
            query.and("version > ?", integer(after));
            let items = query.run(db, "ORDER BY version", limit, version_row)?;
            Ok(page(items, limit, |v| v.version.to_string()))
        })
        .await
    }

    async fn latest_adapter_version(&self, adapter_id: &str) -> Result<Option<u32>> {
        let adapter_id = adapter_id.to_owned();
        self.read(move |db| {
            Ok(query_one(
                db,
                "SELECT max(version) FROM adapter_versions \
                 WHERE adapter_id = ?1 AND status = 'ready'",
                [adapter_id],
                |row| row.get::<_, Option<u32>>(0),
            )?
            .flatten())
        })
        .await
    }

    async fn finish_adapter_version(
        &self,
        adapter_id: &str,
        version: u32,
        outcome: std::result::Result<String, String>,
    ) -> Result<AdapterVersion> {
        if let Ok(info_json) = &outcome {
            check_json("info_json", info_json)?;
        }
        let adapter_id = adapter_id.to_owned();
        self.write_then(
            move |db| {
                let (status, info, failure) = match &outcome {
                    Ok(info) => (VersionStatus::Ready, Some(info.as_str()), None),
                    Err(why) => (VersionStatus::Failed, None, Some(bounded_error(why))),
                };
                let changed = db
                    .prepare_cached(
                        "UPDATE adapter_versions SET status = ?3, \
                         info_json = coalesce(?4, info_json), failure = ?5 \
                         WHERE adapter_id = ?1 AND version = ?2 AND status = 'compiling'",
                    )?
                    .execute(params![adapter_id, version, status.as_str(), info, failure])?;
                if changed == 0 {
                    return Err(Error::Conflict(format!(
                        "version {version} of adapter {adapter_id} is not compiling"
                    )));
                }
                query_one(
                    db,
                    &format!(
                        "SELECT {VERSION} FROM adapter_versions \
                         WHERE adapter_id = ?1 AND version = ?2"
                    ),
                    params![adapter_id, version],
                    version_row,
                )?
                .ok_or_else(|| Error::NotFound(format!("adapter {adapter_id} version {version}")))
            },
            keeps_connections,
        )
        .await
    }

    async fn compiling_versions(&self) -> Result<Vec<AdapterVersion>> {
        self.read(move |db| {
            query_all(
                db,
                &format!(
                    "SELECT {VERSION} FROM adapter_versions WHERE status = 'compiling' \
                     ORDER BY adapter_id, version"
                ),
                [],
                version_row,
            )
        })
        .await
    }

    async fn adapter_versions_of(
        &self,
        adapter_id: &str,
        sha256: &str,
    ) -> Result<Vec<AdapterVersion>> {
        let (adapter_id, sha256) = (adapter_id.to_owned(), sha256.to_owned());
        self.read(move |db| {
            query_all(
                db,
                &format!(
                    "SELECT {VERSION} FROM adapter_versions WHERE adapter_id = ?1 AND sha256 = ?2 \
                     ORDER BY version"
                ),
                [adapter_id, sha256],
                version_row,
            )
        })
        .await
    }

    async fn upsert_connection(
        &self,
        spec: ConnectionSpec,
        actor: &str,
        now: Millis,
    ) -> Result<(Connection, Upsert)> {
        let allowed = spec.checked_allowed_orgs()?;
        let actor = actor.to_owned();
        self.write(move |db| upsert_connection(db, spec, allowed, &actor, now))
            .await
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>> {
        let generation = match self.inner.connections.get(id) {
            Ok(cached) => return Ok(Some(cached)),
            Err(generation) => generation,
        };
        let id = id.to_owned();
        let found = self.read(move |db| get_connection(db, &id)).await?;
        if let Some(connection) = &found {
            self.inner.connections.fill(generation, connection);
        }
        Ok(found)
    }

    async fn list_connections(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        request: PageRequest,
    ) -> Result<Page<Connection>> {
        let limit = page_size(request.limit);
        let (tenant_id, org_id) = (tenant_id.to_owned(), org_id.map(str::to_owned));
        self.read(move |db| {
            let mut query =
                Filtered::new(format!("SELECT {CONNECTION} FROM connections WHERE 1 = 1"));
            query.and("tenant_id = ?", Some(Value::Text(tenant_id)));
            query.and("(org_id IS NULL OR org_id = ?)", text(org_id.as_ref()));
            query.and("id > ?", text(request.cursor.as_ref()));
            let items = query.run(db, "ORDER BY id", limit, connection_row)?;
            Ok(page(items, limit, |c| c.id.clone()))
        })
        .await
    }

    async fn list_orgs(
        &self,
        tenant_id: &str,
        only: Option<&str>,
        request: PageRequest,
    ) -> Result<Page<OrgUse>> {
        let limit = page_size(request.limit);
        let (tenant_id, only) = (tenant_id.to_owned(), only.map(str::to_owned));
        self.read(move |db| {
            let items = query_all(
                db,
                &format!(
                    "{ORG_USES} WHERE org_id > ?2 AND (?4 IS NULL OR org_id = ?4) \
                     GROUP BY org_id ORDER BY org_id LIMIT ?3"
                ),
                params![
                    tenant_id,
                    request.cursor.unwrap_or_default(),
                    int(limit as u64 + 1),
                    only
                ],
                |row| {
                    Ok(OrgUse {
                        org_id: row.get("org_id")?,
                        connections: uint(row, "connections")?,
                        allowed_by: uint(row, "allowed_by")?,
                        adapters: uint(row, "adapters")?,
                        subscribers: uint(row, "subscribers")?,
                    })
                },
            )?;
            Ok(page(items, limit, |o| o.org_id.clone()))
        })
        .await
    }

    async fn set_connection_status(
        &self,
        id: &str,
        status: ConnectionStatus,
        now: Millis,
    ) -> Result<Connection> {
        let id = id.to_owned();
        self.write(move |db| {
            db.prepare_cached(
                "UPDATE connections SET status = ?2, updated_at = ?3 \
                 WHERE id = ?1 AND status <> ?2",
            )?
            .execute(params![id, status.as_str(), now])?;
            require_connection(db, &id)
        })
        .await
    }

    async fn delete_connection(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.write(move |db| {
            require_connection(db, &id)?;
            let has_deliveries = db
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE connection_id = ?1)",
                )?
                .query_row([&id], |row| row.get::<_, bool>(0))?;
            if has_deliveries {
                return Err(Error::Conflict(format!(
                    "connection {id} has deliveries, which are kept: disable it instead"
                )));
            }
            // What belongs to the connection alone goes with it; poll runs that fetched no
            // page have no deliveries to keep.
            for sql in [
                "DELETE FROM connection_state WHERE connection_id = ?1",
                "DELETE FROM connection_state_versions WHERE connection_id = ?1",
                "DELETE FROM http_exchanges WHERE poll_run_id IN \
                 (SELECT id FROM poll_runs WHERE connection_id = ?1)",
                "DELETE FROM poll_runs WHERE connection_id = ?1",
                "DELETE FROM poll_state WHERE connection_id = ?1",
                "DELETE FROM oauth_states WHERE connection_id = ?1",
                "DELETE FROM connection_auth WHERE connection_id = ?1",
            ] {
                db.prepare_cached(sql)?.execute([&id])?;
            }
            db.prepare_cached("DELETE FROM connections WHERE id = ?1")?
                .execute([&id])?;
            Ok(())
        })
        .await
    }

    async fn set_connection_version(
        &self,
        id: &str,
        version: u32,
        actor: &str,
        now: Millis,
    ) -> Result<Connection> {
        let (id, actor) = (id.to_owned(), actor.to_owned());
        self.write(move |db| {
            let connection = require_connection(db, &id)?;
            require_version(db, &connection.tenant_id, &connection.adapter_id, version)?;
            db.prepare_cached(
                "UPDATE connections SET adapter_version = ?2, version_changed_by = ?3, \
                 version_changed_at = ?4, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id, version, actor, now])?;
            require_connection(db, &id)
        })
        .await
    }

    async fn record_delivery(
        &self,
        new: NewDelivery,
        dedupe_window: Duration,
        lease_until: Millis,
    ) -> Result<Recorded> {
        let vault = self.vault();
        // Hashing and encoding happen here, on the caller's task, not on the writer.
        let prepared = PreparedDelivery::new(new, dedupe_window)?;
        let (connection_id, at) = (prepared.new.connection_id.clone(), prepared.new.received_at);
        self.write_then(
            move |db| record_delivery(db, &vault, prepared, lease_until),
            move |recorded: &Recorded, cache| {
                if !recorded.duplicate {
                    cache.delivered(&connection_id, at);
                }
            },
        )
        .await
    }

    async fn complete_delivery(&self, completion: Completion) -> Result<Completed> {
        let vault = self.vault();
        check_completion(&completion)?;
        self.write_then(
            move |db| complete_delivery(db, &vault, completion),
            keeps_connections,
        )
        .await
    }

    async fn prepare_delivery(
        &self,
        new: &NewDelivery,
        dedupe_window: Duration,
    ) -> Result<Prepared> {
        let connection_id = new.connection_id.clone();
        let kind = new.kind;
        let provider_delivery_id = new.provider_delivery_id.clone();
        // The body's hash only matters to a delivery without the provider's id.
        let body_sha256 = match &provider_delivery_id {
            Some(_) => String::new(),
            None => new.content_sha256(),
        };
        let (received_at, window) = (new.received_at, millis(dedupe_window));
        self.read(move |db| {
            connection_tenant(db, &connection_id)?;
            let key = DedupeKey {
                kind,
                connection_id: &connection_id,
                provider_delivery_id: provider_delivery_id.as_deref(),
                body_sha256: &body_sha256,
                received_at,
                window,
            };
            Ok(match find_original(db, &key)? {
                Some(original) => Prepared::Duplicate(original),
                None => Prepared::New(load_state(db, &connection_id)?),
            })
        })
        .await
    }

    async fn record_completed(
        &self,
        new: NewDelivery,
        dedupe_window: Duration,
        completion: Completion,
    ) -> Result<Taken> {
        let vault = self.vault();
        check_completion(&completion)?;
        let prepared = PreparedDelivery::new(new, dedupe_window)?;
        let (connection_id, at) = (prepared.new.connection_id.clone(), prepared.new.received_at);
        self.write_then(
            move |db| record_completed(db, &vault, prepared, completion),
            move |taken: &Taken, cache| {
                if let Taken::Completed(_) = taken {
                    cache.delivered(&connection_id, at);
                }
            },
        )
        .await
    }

    async fn get_delivery(&self, id: &str) -> Result<Option<Delivery>> {
        let vault = self.vault();
        let id = id.to_owned();
        self.read(move |db| {
            query_one(
                db,
                &format!(
                    "SELECT {DELIVERY_INFO}, headers_json, body FROM deliveries WHERE id = ?1"
                ),
                [id],
                |row| delivery_row(row, &vault),
            )
        })
        .await
    }

    async fn list_deliveries(&self, filter: DeliveryFilter) -> Result<Page<DeliveryInfo>> {
        let limit = page_size(filter.limit);
        self.read(move |db| {
            let mut query = Filtered::new(format!(
                "SELECT {DELIVERY_INFO} FROM deliveries WHERE 1 = 1"
            ));
            query.and("tenant_id = ?", text(filter.tenant_id.as_ref()));
            query.and("connection_id = ?", text(filter.connection_id.as_ref()));
            query.and(
                "connection_id IN (SELECT id FROM connections WHERE org_id IS NULL OR org_id = ?)",
                text(filter.org_id.as_ref()),
            );
            query.and(
                "status = ?",
                filter.status.map(|s| Value::Text(s.as_str().to_owned())),
            );
            query.and("received_at >= ?", integer(filter.since));
            query.and("received_at < ?", integer(filter.until));
            query.and("id < ?", text(filter.cursor.as_ref()));
            let items = query.run(db, "ORDER BY id DESC", limit, delivery_info_row)?;
            Ok(page(items, limit, |d| d.id.clone()))
        })
        .await
    }

    async fn claim_recovery(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let vault = self.vault();
        let limit = int(limit as u64);
        self.write_then(
            move |db| {
                let ids = query_all(
                    db,
                    "SELECT id FROM deliveries WHERE status = 'received' \
                       AND (lease_until IS NULL OR lease_until <= ?1) ORDER BY id LIMIT ?2",
                    params![now, limit],
                    |row| row.get::<_, String>(0),
                )?;
                let mut claim = db.prepare_cached(
                    "UPDATE deliveries SET attempts = attempts + 1, lease_until = ?2 WHERE id = ?1",
                )?;
                let mut claimed = Vec::with_capacity(ids.len());
                for id in ids {
                    claim.execute(params![id, lease_until])?;
                    claimed.extend(query_one(
                        db,
                        &format!(
                            "SELECT {DELIVERY_INFO}, headers_json, body FROM deliveries \
                             WHERE id = ?1"
                        ),
                        [&id],
                        |row| delivery_row(row, &vault),
                    )?);
                }
                Ok(claimed)
            },
            keeps_connections,
        )
        .await
    }

    async fn unfinished_deliveries(&self) -> Result<u64> {
        self.read(|db| {
            Ok(query_one(
                db,
                "SELECT count(*) AS n FROM deliveries WHERE status = 'received'",
                [],
                |row| uint(row, "n"),
            )?
            .unwrap_or(0))
        })
        .await
    }

    async fn park_delivery(&self, id: &str, reason_json: &str, now: Millis) -> Result<()> {
        check_json("reason_json", reason_json)?;
        let (id, reason_json) = (id.to_owned(), reason_json.to_owned());
        self.write_then(
            move |db| {
                let changed = db
                    .prepare_cached(
                        "UPDATE deliveries SET status = 'failed', reason_json = ?2, \
                         processed_at = ?3, lease_until = NULL \
                         WHERE id = ?1 AND status = 'received'",
                    )?
                    .execute(params![id, reason_json, now])?;
                if changed == 1 {
                    return Ok(());
                }
                match query_one(
                    db,
                    "SELECT status FROM deliveries WHERE id = ?1",
                    [&id],
                    |row| row.get::<_, String>(0),
                )? {
                    Some(status) => Err(Error::Conflict(format!(
                        "delivery {id} is {status}, not received"
                    ))),
                    None => Err(Error::NotFound(format!("delivery {id}"))),
                }
            },
            keeps_connections,
        )
        .await
    }

    async fn list_invocations(&self, delivery_id: &str) -> Result<Vec<Invocation>> {
        let vault = self.vault();
        let delivery_id = delivery_id.to_owned();
        self.read(move |db| {
            query_all(
                db,
                &format!(
                    "SELECT {INVOCATION_READ} FROM invocations WHERE delivery_id = ?1 ORDER BY id"
                ),
                [delivery_id],
                |row| invocation_row(row, &vault),
            )
        })
        .await
    }

    async fn get_invocation_replay(
        &self,
        invocation_id: &str,
    ) -> Result<Option<(Invocation, Option<String>)>> {
        let vault = self.vault();
        let invocation_id = invocation_id.to_owned();
        self.read(move |db| {
            Ok(db
                .prepare_cached(&format!(
                    "SELECT {INVOCATION_READ}, replay_json FROM invocations WHERE id = ?1"
                ))?
                .query_row([invocation_id], |row| {
                    let invocation = invocation_row(row, &vault)?;
                    let replay = match row.get::<_, Option<String>>("replay_json")? {
                        Some(stored) => {
                            match sealing::open_text(&vault, Purpose::Replay, stored, String::new)
                                .map_err(|e| conversion("replay_json", e))?
                            {
                                (_, true) => None,
                                (text, false) => Some(text),
                            }
                        }
                        None => None,
                    };
                    Ok((invocation, replay))
                })
                .optional()?)
        })
        .await
    }

    async fn load_state(&self, connection_id: &str) -> Result<StateSnapshot> {
        let connection_id = connection_id.to_owned();
        self.read(move |db| load_state(db, &connection_id)).await
    }

    async fn claim_outbox(
        &self,
        limit: usize,
        now: Millis,
        lease: Duration,
    ) -> Result<Vec<OutboxRow>> {
        let vault = self.vault();
        let lease = millis(lease);
        self.write_then(
            move |db| claim_outbox(db, &vault, limit, now, lease),
            keeps_connections,
        )
        .await
    }

    async fn mark_published(&self, seqs: &[i64], now: Millis) -> Result<()> {
        let seqs = seqs.to_vec();
        self.write_then(move |db| mark_published(db, &seqs, now), keeps_connections)
            .await
    }

    async fn complete_publication(&self, seqs: &[i64], now: Millis) -> Result<u64> {
        let vault = self.vault();
        let seqs = seqs.to_vec();
        self.write_then(
            move |db| {
                let queued = queue_subscriber_deliveries(db, &vault, &seqs, Queue::New, now)?;
                mark_published(db, &seqs, now)?;
                Ok(queued)
            },
            keeps_connections,
        )
        .await
    }

    async fn release_outbox(&self, seqs: &[i64], now: Millis) -> Result<()> {
        let seqs = seqs.to_vec();
        self.write_then(
            move |db| {
                let mut release = db.prepare_cached(
                    "UPDATE outbox SET attempts = max(attempts - 1, 0), next_attempt_at = ?2 \
                     WHERE seq = ?1 AND status = 'pending'",
                )?;
                for seq in seqs {
                    release.execute(params![seq, now])?;
                }
                Ok(())
            },
            keeps_connections,
        )
        .await
    }

    async fn mark_publish_failed(
        &self,
        seq: i64,
        error: &str,
        next_attempt_at: Millis,
        dead: bool,
    ) -> Result<()> {
        let error = bounded_error(error);
        self.write_then(
            move |db| {
                let status = if dead {
                    OutboxStatus::Dead
                } else {
                    OutboxStatus::Pending
                };
                let changed = db
                    .prepare_cached(
                        "UPDATE outbox SET status = ?2, last_error = ?3, next_attempt_at = ?4 \
                     WHERE seq = ?1 AND status = 'pending'",
                    )?
                    .execute(params![seq, status.as_str(), error, next_attempt_at])?;
                if changed == 0 {
                    // Already published (or dead): a late report changes nothing.
                    query_one(db, "SELECT seq FROM outbox WHERE seq = ?1", [seq], |_| {
                        Ok(())
                    })?
                    .ok_or_else(|| Error::NotFound(format!("outbox row {seq}")))?;
                }
                Ok(())
            },
            keeps_connections,
        )
        .await
    }

    async fn retry_outbox_event(&self, seq: i64, now: Millis) -> Result<()> {
        let vault = self.vault();
        self.write_then(
            move |db| {
                let row = require_outbox_row(db, &vault, seq)?;
                if row.status == OutboxStatus::Published {
                    return Err(Error::Conflict(format!(
                        "outbox row {seq} is already published"
                    )));
                }
                db.prepare_cached(
                    "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?2 \
                 WHERE seq = ?1",
                )?
                .execute(params![seq, now])?;
                Ok(())
            },
            keeps_connections,
        )
        .await
    }

    async fn outbox_lag(&self) -> Result<OutboxLag> {
        self.read(|db| {
            let lag = query_one(
                db,
                "SELECT count(*) AS pending, min(created_at) FROM outbox WHERE status = 'pending'",
                [],
                |row| {
                    Ok(OutboxLag {
                        pending: uint(row, "pending")?,
                        oldest_pending_created_at: row.get(1)?,
                    })
                },
            )?;
            Ok(lag.unwrap_or(OutboxLag {
                pending: 0,
                oldest_pending_created_at: None,
            }))
        })
        .await
    }

    async fn list_outbox(&self, filter: OutboxFilter) -> Result<Page<OutboxRow>> {
        let vault = self.vault();
        let limit = page_size(filter.limit);
        let before = seq_cursor(filter.cursor.as_ref())?;
        self.read(move |db| {
            let mut query = Filtered::new(format!("SELECT {OUTBOX} FROM outbox WHERE 1 = 1"));
            query.and("tenant_id = ?", Some(Value::Text(filter.tenant_id.clone())));
            // An event without an org is platform level only when its connection is: one an
            // org's connection emitted (before that was refused) stays that org's.
            query.and_repeated(
                "coalesce(org_id, (SELECT c.org_id FROM connections c \
                   WHERE c.id = outbox.connection_id), ?) = ?",
                text(filter.org_id.as_ref()),
                2,
            );
            query.and("event_type = ?", text(filter.event_type.as_ref()));
            query.and("entity_type = ?", text(filter.entity_type.as_ref()));
            query.and("entity_id = ?", text(filter.entity_id.as_ref()));
            query.and(
                "status = ?",
                filter.status.map(|s| Value::Text(s.as_str().to_owned())),
            );
            query.and("connection_id = ?", text(filter.connection_id.as_ref()));
            query.and("created_at >= ?", integer(filter.since));
            query.and("created_at < ?", integer(filter.until));
            query.and("seq < ?", integer(before));
            let items = query.run(db, "ORDER BY seq DESC", limit, |row| {
                outbox_row(row, &vault)
            })?;
            Ok(page(items, limit, |row| row.seq.to_string()))
        })
        .await
    }

    async fn replay_range(
        &self,
        replay: &Replay,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>> {
        let vault = self.vault();
        let replay = replay.clone();
        let limit = int(page_size(limit) as u64);
        self.read(move |db| {
            query_all(
                db,
                &format!(
                    "SELECT {OUTBOX} FROM outbox WHERE tenant_id = ?1 AND org_id IS ?2 \
                     AND status = 'published' AND created_at >= ?3 AND created_at < ?4 \
                     AND (?5 IS NULL OR event_type = ?5) AND seq > ?6 ORDER BY seq LIMIT ?7"
                ),
                params![
                    replay.tenant_id,
                    replay.org_id,
                    replay.from,
                    replay.to,
                    replay.event_type,
                    after_seq,
                    limit
                ],
                |row| outbox_row(row, &vault),
            )
        })
        .await
    }

    async fn start_replay(&self, new: NewReplay, max_per_hour: u32) -> Result<Replay> {
        let hour_ago = new.requested_at - millis(Duration::from_secs(3600));
        self.write_then(
            move |db| {
                let running: i64 = query_one(
                    db,
                    "SELECT count(*) FROM replays WHERE tenant_id = ?1 AND status = 'running'",
                    [&new.tenant_id],
                    |row| row.get(0),
                )?
                .unwrap_or_default();
                if running > 0 {
                    return Err(Error::Limited(
                        "a replay of this tenant is running: one at a time".into(),
                    ));
                }
                let recent: i64 = query_one(
                    db,
                    "SELECT count(*) FROM replays WHERE tenant_id = ?1 AND requested_at > ?2",
                    params![new.tenant_id, hour_ago],
                    |row| row.get(0),
                )?
                .unwrap_or_default();
                if recent >= i64::from(max_per_hour) {
                    return Err(Error::Limited(format!(
                        "a tenant may start {max_per_hour} replays an hour"
                    )));
                }
                let replay = Replay {
                    id: new_id(),
                    tenant_id: new.tenant_id,
                    org_id: new.org_id,
                    from: new.from,
                    to: new.to,
                    event_type: new.event_type,
                    target: new.target,
                    subscriber_id: new.subscriber_id,
                    requested_by: new.requested_by,
                    requested_at: new.requested_at,
                    status: ReplayStatus::Running,
                    replayed: 0,
                    queued: 0,
                    finished_at: None,
                    error: None,
                };
                db.prepare_cached(&format!(
                    "INSERT INTO replays ({REPLAY}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, NULL, NULL, ?10, ?11, 0)"
                ))?
                .execute(params![
                    replay.id,
                    replay.tenant_id,
                    replay.org_id,
                    replay.from,
                    replay.to,
                    replay.event_type,
                    replay.requested_by,
                    replay.requested_at,
                    replay.status.as_str(),
                    replay.target.as_str(),
                    replay.subscriber_id,
                ])?;
                Ok(replay)
            },
            keeps_connections,
        )
        .await
    }

    async fn finish_replay(
        &self,
        id: &str,
        replayed: u64,
        queued: u64,
        error: Option<String>,
        now: Millis,
    ) -> Result<Replay> {
        let id = id.to_owned();
        let status = if error.is_some() {
            ReplayStatus::Failed
        } else {
            ReplayStatus::Done
        };
        let error = error.as_deref().map(bounded_error);
        self.write_then(
            move |db| {
                let changed = db
                    .prepare_cached(
                        "UPDATE replays SET status = ?2, replayed = ?3, finished_at = ?4, \
                         error = ?5, queued = ?6 WHERE id = ?1 AND status = 'running'",
                    )?
                    .execute(params![
                        id,
                        status.as_str(),
                        int(replayed),
                        now,
                        error,
                        int(queued)
                    ])?;
                if changed == 0 {
                    return Err(Error::Conflict(format!("replay {id} is not running")));
                }
                query_one(
                    db,
                    &format!("SELECT {REPLAY} FROM replays WHERE id = ?1"),
                    [&id],
                    replay_row,
                )?
                .ok_or_else(|| Error::NotFound(format!("replay {id}")))
            },
            keeps_connections,
        )
        .await
    }

    async fn interrupt_replays(&self, now: Millis) -> Result<u64> {
        self.write_then(
            move |db| {
                let changed = db
                    .prepare_cached(
                        "UPDATE replays SET status = 'interrupted', finished_at = ?1 \
                         WHERE status = 'running'",
                    )?
                    .execute([now])?;
                Ok(changed as u64)
            },
            keeps_connections,
        )
        .await
    }

    async fn get_replay(&self, id: &str) -> Result<Option<Replay>> {
        let id = id.to_owned();
        self.read(move |db| {
            query_one(
                db,
                &format!("SELECT {REPLAY} FROM replays WHERE id = ?1"),
                [id],
                replay_row,
            )
        })
        .await
    }

    async fn list_replays(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        request: PageRequest,
    ) -> Result<Page<Replay>> {
        let limit = page_size(request.limit);
        let (tenant_id, org_id) = (tenant_id.to_owned(), org_id.map(str::to_owned));
        self.read(move |db| {
            let mut query = Filtered::new(format!("SELECT {REPLAY} FROM replays WHERE 1 = 1"));
            query.and("tenant_id = ?", Some(Value::Text(tenant_id)));
            query.and("(org_id IS NULL OR org_id = ?)", text(org_id.as_ref()));
            query.and("id < ?", text(request.cursor.as_ref()));
            let items = query.run(db, "ORDER BY id DESC", limit, replay_row)?;
            Ok(page(items, limit, |r| r.id.clone()))
        })
        .await
    }

    async fn get_event(&self, event_id: &str) -> Result<Option<OutboxRow>> {
        let vault = self.vault();
        let event_id = event_id.to_owned();
        self.read(move |db| {
            query_one(
                db,
                &format!("SELECT {OUTBOX} FROM outbox WHERE event_id = ?1"),
                [event_id],
                |row| outbox_row(row, &vault),
            )
        })
        .await
    }

    async fn create_subscriber(&self, new: NewSubscriber) -> Result<Subscriber> {
        let event_types = serde_json::to_string(&new.event_types)
            .map_err(|e| Error::Invalid(format!("event_types: {e}")))?;
        self.write(move |db| {
            let subscriber = Subscriber {
                id: new_id(),
                tenant_id: new.tenant_id,
                org_id: new.org_id,
                url: new.url,
                event_types: new.event_types,
                secret_ref: new.secret_ref,
                enabled: new.enabled,
                created_at: new.created_at,
            };
            db.prepare_cached(&format!(
                "INSERT INTO subscribers ({SUBSCRIBER}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?
            .execute(params![
                subscriber.id,
                subscriber.tenant_id,
                subscriber.org_id,
                subscriber.url,
                event_types,
                subscriber.secret_ref,
                subscriber.enabled,
                subscriber.created_at,
            ])?;
            Ok(subscriber)
        })
        .await
    }

    async fn get_subscriber(&self, id: &str) -> Result<Option<Subscriber>> {
        let id = id.to_owned();
        self.read(move |db| get_subscriber(db, &id)).await
    }

    async fn list_subscribers(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        request: PageRequest,
    ) -> Result<Page<Subscriber>> {
        let limit = page_size(request.limit);
        let (tenant_id, org_id) = (tenant_id.to_owned(), org_id.map(str::to_owned));
        self.read(move |db| {
            let mut query =
                Filtered::new(format!("SELECT {SUBSCRIBER} FROM subscribers WHERE 1 = 1"));
            query.and("tenant_id = ?", Some(Value::Text(tenant_id)));
            query.and("(org_id IS NULL OR org_id = ?)", text(org_id.as_ref()));
            query.and("id > ?", text(request.cursor.as_ref()));
            let items = query.run(db, "ORDER BY id", limit, subscriber_row)?;
            Ok(page(items, limit, |s| s.id.clone()))
        })
        .await
    }

    async fn find_subscriber(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        url: &str,
    ) -> Result<Option<Subscriber>> {
        let (tenant_id, org_id, url) = (
            tenant_id.to_owned(),
            org_id.map(str::to_owned),
            url.to_owned(),
        );
        self.read(move |db| {
            query_one(
                db,
                &format!(
                    "SELECT {SUBSCRIBER} FROM subscribers \
                     WHERE tenant_id = ?1 AND org_id IS ?2 AND url = ?3 ORDER BY id LIMIT 1"
                ),
                params![tenant_id, org_id, url],
                subscriber_row,
            )
        })
        .await
    }

    async fn update_subscriber(&self, id: &str, update: SubscriberUpdate) -> Result<Subscriber> {
        let event_types = serde_json::to_string(&update.event_types)
            .map_err(|e| Error::Invalid(format!("event_types: {e}")))?;
        let id = id.to_owned();
        self.write(move |db| {
            let changed = db
                .prepare_cached(
                    "UPDATE subscribers SET url = ?2, event_types_json = ?3, secret_ref = ?4, \
                     enabled = ?5 WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    update.url,
                    event_types,
                    update.secret_ref,
                    update.enabled
                ])?;
            if changed == 0 {
                return Err(Error::NotFound(format!("subscriber {id}")));
            }
            get_subscriber(db, &id)?.ok_or_else(|| Error::NotFound(format!("subscriber {id}")))
        })
        .await
    }

    async fn delete_subscriber(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.write(move |db| {
            let deleted = db
                .prepare_cached("DELETE FROM subscribers WHERE id = ?1")?
                .execute([&id])?;
            if deleted == 0 {
                return Err(Error::NotFound(format!("subscriber {id}")));
            }
            Ok(())
        })
        .await
    }

    async fn enqueue_subscriber_deliveries(&self, seqs: &[i64], now: Millis) -> Result<u64> {
        let vault = self.vault();
        let seqs = seqs.to_vec();
        self.write_then(
            move |db| queue_subscriber_deliveries(db, &vault, &seqs, Queue::New, now),
            keeps_connections,
        )
        .await
    }

    async fn replay_to_subscribers(
        &self,
        seqs: &[i64],
        subscriber_id: Option<&str>,
        now: Millis,
    ) -> Result<u64> {
        let vault = self.vault();
        let (seqs, only) = (seqs.to_vec(), subscriber_id.map(str::to_owned));
        self.write_then(
            move |db| {
                queue_subscriber_deliveries(db, &vault, &seqs, Queue::Again(only.as_deref()), now)
            },
            keeps_connections,
        )
        .await
    }

    async fn claim_subscriber_deliveries(
        &self,
        limit: usize,
        now: Millis,
        lease: Duration,
    ) -> Result<Vec<SubscriberJob>> {
        let (lease, vault) = (millis(lease), self.vault());
        self.write_then(
            move |db| claim_subscriber_deliveries(db, &vault, limit, now, lease),
            keeps_connections,
        )
        .await
    }

    async fn release_subscriber_deliveries(
        &self,
        deliveries: &[(String, i64)],
        now: Millis,
    ) -> Result<()> {
        let deliveries = deliveries.to_vec();
        self.write_then(
            move |db| {
                let mut release = db.prepare_cached(
                    "UPDATE subscriber_deliveries \
                     SET attempts = max(attempts - 1, 0), next_attempt_at = ?3, updated_at = ?3 \
                     WHERE subscriber_id = ?1 AND outbox_seq = ?2 AND status = 'pending'",
                )?;
                for (subscriber_id, seq) in deliveries {
                    release.execute(params![subscriber_id, seq, now])?;
                }
                Ok(())
            },
            keeps_connections,
        )
        .await
    }

    async fn mark_subscriber_deliveries(
        &self,
        attempts: &[(String, i64, SubscriberAttempt)],
    ) -> Result<()> {
        let attempts = attempts.to_vec();
        self.write_then(
            move |db| {
                for (subscriber_id, seq, attempt) in &attempts {
                    record_subscriber_attempt(db, subscriber_id, *seq, attempt)?;
                }
                Ok(())
            },
            keeps_connections,
        )
        .await
    }

    async fn mark_subscriber_delivery(
        &self,
        subscriber_id: &str,
        seq: i64,
        attempt: SubscriberAttempt,
    ) -> Result<()> {
        let subscriber_id = subscriber_id.to_owned();
        self.write_then(
            move |db| {
                subscriber_delivery_status(db, &subscriber_id, seq)?;
                record_subscriber_attempt(db, &subscriber_id, seq, &attempt)
            },
            keeps_connections,
        )
        .await
    }

    async fn retry_subscriber_delivery(
        &self,
        subscriber_id: &str,
        seq: i64,
        now: Millis,
    ) -> Result<()> {
        let subscriber_id = subscriber_id.to_owned();
        self.write_then(
            move |db| {
                if subscriber_delivery_status(db, &subscriber_id, seq)?
                    == SubscriberDeliveryStatus::Delivered
                {
                    return Err(Error::Conflict(format!(
                        "event {seq} was already delivered to {subscriber_id}"
                    )));
                }
                db.prepare_cached(
                    "UPDATE subscriber_deliveries SET status = 'pending', attempts = 0, \
                 next_attempt_at = ?3, updated_at = ?3 \
                 WHERE subscriber_id = ?1 AND outbox_seq = ?2",
                )?
                .execute(params![subscriber_id, seq, now])?;
                Ok(())
            },
            keeps_connections,
        )
        .await
    }

    async fn list_subscriber_deliveries(
        &self,
        filter: SubscriberDeliveryFilter,
    ) -> Result<Page<SubscriberDelivery>> {
        let limit = page_size(filter.limit);
        let before = seq_cursor(filter.cursor.as_ref())?;
        self.read(move |db| {
            let mut query = Filtered::new(format!(
                "SELECT {SUBSCRIBER_DELIVERY} FROM subscriber_deliveries WHERE 1 = 1"
            ));
            query.and("subscriber_id = ?", Some(Value::Text(filter.subscriber_id)));
            query.and(
                "status = ?",
                filter.status.map(|s| Value::Text(s.as_str().to_owned())),
            );
            query.and("outbox_seq < ?", integer(before));
            let items = query.run(
                db,
                "ORDER BY outbox_seq DESC",
                limit,
                subscriber_delivery_row,
            )?;
            Ok(page(items, limit, |d| d.outbox_seq.to_string()))
        })
        .await
    }

    async fn claim_polls(
        &self,
        now: Millis,
        owner: &str,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<PollClaim>> {
        let owner = owner.to_owned();
        self.write_then(
            move |db| polls::claim_polls(db, now, &owner, lease_until, limit),
            keeps_connections,
        )
        .await
    }

    async fn claim_poll_now(
        &self,
        connection_id: &str,
        now: Millis,
        owner: &str,
        lease_until: Millis,
    ) -> Result<PollClaim> {
        let (connection_id, owner) = (connection_id.to_owned(), owner.to_owned());
        self.write_then(
            move |db| polls::claim_poll_now(db, &connection_id, now, &owner, lease_until),
            keeps_connections,
        )
        .await
    }

    async fn finish_poll(&self, end: PollEnd) -> Result<PollRun> {
        let vault = self.vault();
        self.write_then(
            move |db| polls::finish_poll(db, &vault, &end),
            keeps_connections,
        )
        .await
    }

    async fn poll_state(&self, connection_id: &str) -> Result<Option<PollState>> {
        let connection_id = connection_id.to_owned();
        self.read(move |db| polls::poll_state(db, &connection_id))
            .await
    }

    async fn list_poll_runs(
        &self,
        connection_id: &str,
        request: PageRequest,
    ) -> Result<Page<PollRun>> {
        let connection_id = connection_id.to_owned();
        let limit = page_size(request.limit);
        self.read(move |db| {
            let mut query = Filtered::new(format!(
                "SELECT {} FROM poll_runs WHERE connection_id = ?",
                polls::POLL_RUN
            ));
            query.args.push(Value::Text(connection_id));
            query.and("id < ?", text(request.cursor.as_ref()));
            let items = query.run(db, "ORDER BY id DESC", limit, polls::poll_run_row)?;
            Ok(page(items, limit, |run| run.id.clone()))
        })
        .await
    }

    async fn list_exchanges(&self, delivery_id: &str) -> Result<Vec<StoredExchange>> {
        let delivery_id = delivery_id.to_owned();
        let vault = self.vault();
        self.read(move |db| polls::list_exchanges(db, &vault, &delivery_id))
            .await
    }

    async fn create_oauth_state(&self, state: OAuthState) -> Result<()> {
        self.write(move |db| {
            require_connection(db, &state.connection_id)?;
            db.prepare_cached(
                "INSERT INTO oauth_states (state_hash, connection_id, tenant_id, org_id, \
                 created_by, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                state.state_hash,
                state.connection_id,
                state.tenant_id,
                state.org_id,
                state.created_by,
                state.created_at,
                state.expires_at,
            ])?;
            // Expired ones are of no use to anyone.
            db.prepare_cached("DELETE FROM oauth_states WHERE expires_at < ?1 - 86400000")?
                .execute([state.created_at])?;
            Ok(())
        })
        .await
    }

    async fn take_oauth_state(&self, state_hash: &str, now: Millis) -> Result<OAuthState> {
        let state_hash = state_hash.to_owned();
        self.write(move |db| {
            let found = query_one(
                db,
                "SELECT connection_id, tenant_id, org_id, created_by, created_at, expires_at, \
                 used_at FROM oauth_states WHERE state_hash = ?1",
                [&state_hash],
                |row| {
                    Ok((
                        OAuthState {
                            state_hash: state_hash.clone(),
                            connection_id: row.get(0)?,
                            tenant_id: row.get(1)?,
                            org_id: row.get(2)?,
                            created_by: row.get(3)?,
                            created_at: row.get(4)?,
                            expires_at: row.get(5)?,
                        },
                        row.get::<_, Option<Millis>>(6)?,
                    ))
                },
            )?;
            let Some((state, used_at)) = found else {
                return Err(Error::NotFound("no such authorization".into()));
            };
            if used_at.is_some() {
                return Err(Error::Conflict(
                    "this authorization was already used: start a new one".into(),
                ));
            }
            db.prepare_cached("UPDATE oauth_states SET used_at = ?2 WHERE state_hash = ?1")?
                .execute(params![state_hash, now])?;
            Ok(state)
        })
        .await
    }

    async fn set_connection_auth(&self, auth: ConnectionAuth) -> Result<()> {
        self.write(move |db| {
            require_connection(db, &auth.connection_id)?;
            db.prepare_cached(
                "INSERT INTO connection_auth (connection_id, state, reason, connected_by, \
                 connected_at, changed_at, access_expires_at, scopes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (connection_id) DO UPDATE SET state = excluded.state, \
                 reason = excluded.reason, connected_by = excluded.connected_by, \
                 connected_at = excluded.connected_at, changed_at = excluded.changed_at, \
                 access_expires_at = excluded.access_expires_at, scopes = excluded.scopes",
            )?
            .execute(params![
                auth.connection_id,
                auth.state.as_str(),
                auth.reason,
                auth.connected_by,
                auth.connected_at,
                auth.changed_at,
                auth.access_expires_at,
                auth.scopes,
            ])?;
            Ok(())
        })
        .await
    }

    async fn connection_auth(&self, connection_id: &str) -> Result<Option<ConnectionAuth>> {
        let connection_id = connection_id.to_owned();
        self.read(move |db| {
            query_one(
                db,
                "SELECT state, reason, connected_by, connected_at, changed_at, \
                 access_expires_at, scopes FROM connection_auth WHERE connection_id = ?1",
                [&connection_id],
                |row| {
                    Ok(ConnectionAuth {
                        connection_id: connection_id.clone(),
                        state: text_enum(row, "state")?,
                        reason: row.get("reason")?,
                        connected_by: row.get("connected_by")?,
                        connected_at: row.get("connected_at")?,
                        changed_at: row.get("changed_at")?,
                        access_expires_at: row.get("access_expires_at")?,
                        scopes: row.get("scopes")?,
                    })
                },
            )
        })
        .await
    }

    async fn get_poll_run(&self, run_id: &str) -> Result<Option<PollRun>> {
        let run_id = run_id.to_owned();
        self.read(move |db| polls::get_poll_run(db, &run_id)).await
    }

    async fn list_run_exchanges(&self, run_id: &str) -> Result<Vec<StoredExchange>> {
        let run_id = run_id.to_owned();
        let vault = self.vault();
        self.read(move |db| polls::list_run_exchanges(db, &vault, &run_id))
            .await
    }

    async fn append_audit(&self, entry: NewAuditEntry) -> Result<AuditEntry> {
        let entry = AuditEntry::recorded(entry)?;
        let roles = serde_json::to_string(&entry.roles)
            .map_err(|e| Error::Invalid(format!("roles: {e}")))?;
        self.write_then(
            move |db| {
                db.prepare_cached(&format!(
                    "INSERT INTO audit ({AUDIT}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ))?
                .execute(params![
                    entry.id,
                    entry.at,
                    entry.tenant_id,
                    entry.org_id,
                    entry.actor,
                    roles,
                    entry.action,
                    entry.resource_type,
                    entry.resource_id,
                    entry.request_id,
                    entry.status,
                    entry.detail_json,
                    entry.support,
                ])?;
                Ok(entry)
            },
            keeps_connections,
        )
        .await
    }

    async fn list_audit(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        filter: AuditFilter,
        request: PageRequest,
    ) -> Result<Page<AuditEntry>> {
        let limit = page_size(request.limit);
        let (tenant_id, org_id) = (tenant_id.to_owned(), org_id.map(str::to_owned));
        self.read(move |db| {
            let mut query = Filtered::new(format!("SELECT {AUDIT} FROM audit WHERE 1 = 1"));
            query.and("tenant_id = ?", Some(Value::Text(tenant_id)));
            query.and("(org_id IS NULL OR org_id = ?)", text(org_id.as_ref()));
            query.and("actor = ?", text(filter.actor.as_ref()));
            query.and("action = ?", text(filter.action.as_ref()));
            query.and("resource_type = ?", text(filter.resource_type.as_ref()));
            query.and("resource_id = ?", text(filter.resource_id.as_ref()));
            query.and("at >= ?", integer(filter.since));
            query.and("at < ?", integer(filter.until));
            query.and("id < ?", text(request.cursor.as_ref()));
            let items = query.run(db, "ORDER BY id DESC", limit, audit_row)?;
            Ok(page(items, limit, |e| e.id.clone()))
        })
        .await
    }

    async fn connection_activity(&self, connection_id: &str, since: Millis) -> Result<Activity> {
        let connection_id = connection_id.to_owned();
        self.read(move |db| {
            let mut activity = health::activity(db, &connection_id, since)?;
            activity.drifts = drift::recent_drifts(db, &connection_id, since)?;
            Ok(activity)
        })
        .await
    }

    async fn erase_tenant(
        &self,
        tenant_id: &str,
        reason_json: &str,
        now: Millis,
    ) -> Result<Erasure> {
        check_json("reason_json", reason_json)?;
        let key_destroyed = sealing::shred(self.vault(), tenant_id).await?;
        let (tenant, reason_json) = (tenant_id.to_owned(), reason_json.to_owned());
        let ended = self
            .write_then(
                move |db| erasure::end_waiting(db, &tenant, &reason_json, now),
                keeps_connections,
            )
            .await?;
        if ended.plaintext_overwritten > 0 {
            let path = self.inner.path.clone();
            tokio::task::spawn_blocking(move || erasure::checkpoint(&path))
                .await
                .map_err(|e| Error::Backend(format!("checkpointing the erasure: {e}")))??;
        }
        Ok(Erasure {
            key_destroyed,
            ..ended
        })
    }

    async fn erase_subject(&self, subject: Subject, now: Millis) -> Result<SubjectErasure> {
        self.write_then(
            move |db| erasure::erase_subject(db, &subject, now),
            keeps_connections,
        )
        .await
    }

    async fn purge_expired(&self, purge: Purge) -> Result<Purged> {
        self.write_then(move |db| retention::purge(db, purge), keeps_connections)
            .await
    }

    async fn list_identities(&self, filter: IdentityFilter) -> Result<Page<Identity>> {
        self.read(move |db| identities::list(db, filter)).await
    }

    async fn get_retention(&self, tenant_id: &str) -> Result<Option<TenantRetention>> {
        let tenant_id = tenant_id.to_owned();
        self.read(move |db| retention::get_retention(db, &tenant_id))
            .await
    }

    async fn put_retention(&self, retention: TenantRetention) -> Result<()> {
        self.write_then(
            move |db| retention::put_retention(db, &retention),
            keeps_connections,
        )
        .await
    }

    async fn payload_shape(&self, connection_id: &str, kind: &str) -> Result<Option<String>> {
        let (connection_id, kind) = (connection_id.to_owned(), kind.to_owned());
        self.read(move |db| drift::payload_shape(db, &connection_id, &kind))
            .await
    }

    async fn save_payload_shapes(&self, shapes: Vec<SavedShape>) -> Result<()> {
        self.write_then(
            move |db| drift::save_payload_shapes(db, &shapes),
            keeps_connections,
        )
        .await
    }

    async fn record_drifts(&self, drifts: Vec<NewDrift>, since: Millis) -> Result<u64> {
        self.write_then(
            move |db| drift::record_drifts(db, &drifts, since),
            keeps_connections,
        )
        .await
    }

    async fn list_drifts(&self, connection_id: &str, page: PageRequest) -> Result<Page<Drift>> {
        let connection_id = connection_id.to_owned();
        self.read(move |db| drift::list_drifts(db, &connection_id, page))
            .await
    }

    async fn add_signature_failures(
        &self,
        counts: Vec<(String, Millis, u64)>,
        forget_before: Millis,
    ) -> Result<()> {
        self.write_then(
            move |db| health::add_signature_failures(db, &counts, forget_before),
            keeps_connections,
        )
        .await
    }

    async fn health_rules(&self, tenant_id: &str) -> Result<Option<String>> {
        let tenant_id = tenant_id.to_owned();
        self.read(move |db| health::health_rules(db, &tenant_id))
            .await
    }

    async fn set_health_rules(&self, tenant_id: &str, rules_json: &str, now: Millis) -> Result<()> {
        let (tenant_id, rules_json) = (tenant_id.to_owned(), rules_json.to_owned());
        self.write_then(
            move |db| health::set_health_rules(db, &tenant_id, &rules_json, now),
            keeps_connections,
        )
        .await
    }

    async fn record_health(&self, record: HealthRecord) -> Result<AlertChanges> {
        self.write_then(
            move |db| health::record_health(db, &record),
            keeps_connections,
        )
        .await
    }

    async fn list_health(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
    ) -> Result<Vec<HealthSnapshot>> {
        let (tenant_id, org_id) = (tenant_id.to_owned(), org_id.map(str::to_owned));
        self.read(move |db| health::list_health(db, &tenant_id, org_id.as_deref()))
            .await
    }

    async fn get_health(&self, connection_id: &str) -> Result<Option<HealthSnapshot>> {
        let connection_id = connection_id.to_owned();
        self.read(move |db| health::get_health(db, &connection_id))
            .await
    }

    async fn list_alerts(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        filter: AlertFilter,
        request: PageRequest,
    ) -> Result<Page<Alert>> {
        let (tenant_id, org_id) = (tenant_id.to_owned(), org_id.map(str::to_owned));
        self.read(move |db| {
            health::list_alerts(db, &tenant_id, org_id.as_deref(), &filter, &request)
        })
        .await
    }

    async fn connections_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Connection>> {
        let after = after.unwrap_or_default().to_owned();
        self.read(move |db| {
            query_all(
                db,
                &format!("SELECT {CONNECTION} FROM connections WHERE id > ?1 ORDER BY id LIMIT ?2"),
                params![after, int(limit as u64)],
                connection_row,
            )
        })
        .await
    }

    fn write_stats(&self) -> WriteStats {
        self.inner.counters.snapshot()
    }
}

// ---------------------------------------------------------------------------------------------
// Test hooks

#[cfg(test)]
impl SqliteStore {
    /// Occupies the writer until the returned sender is dropped (or sent to), so that a test
    /// can queue commands and watch them go into one batch. Returns once the writer is held.
    pub(crate) async fn hold_writer(&self) -> std::sync::mpsc::Sender<()> {
        let (held, is_held) = oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let store = self.clone();
        tokio::spawn(async move {
            store
                .write(move |_| {
                    let _ = held.send(());
                    let _ = released.recv();
                    Ok(())
                })
                .await
        });
        is_held.await.expect("the writer runs the hold command");
        release
    }

    /// Commands waiting for the writer.
    pub(crate) fn queued(&self) -> usize {
        self.inner
            .sender
            .as_ref()
            .map_or(0, |s| s.max_capacity() - s.capacity())
    }
}

// ---------------------------------------------------------------------------------------------
// Tests of what only this backend has so far (the backend-neutral suite is in `tests.rs`)

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InvocationOutcome;
    use crate::store::tests::{SECOND, T0, Tenant, event, tenant};

    const WINDOW: Duration = Duration::from_secs(300);

    async fn open() -> (tempfile::TempDir, SqliteStore, Tenant) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let t = tenant(&store, "t1", "c1").await;
        (dir, store, t)
    }

    fn delivery(body: &str, provider_id: Option<&str>, at: Millis) -> NewDelivery {
        NewDelivery {
            connection_id: "c1".to_owned(),
            received_at: at,
            provider_delivery_id: provider_id.map(str::to_owned),
            method: "POST".to_owned(),
            path: "/v1/hooks/c1".to_owned(),
            query: String::new(),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: body.as_bytes().to_vec(),
            trace_id: "trace-1".to_owned(),
            kind: crate::store::DeliveryKind::Webhook,
            poll_run_id: None,
            cursor: None,
        }
    }

    fn completion(
        t: &Tenant,
        events: Vec<crate::store::NewOutboxEvent>,
        new_state: Option<crate::store::StateMap>,
        at: Millis,
    ) -> Completion {
        Completion {
            delivery_id: new_id(),
            status: DeliveryStatus::Processed,
            reason_json: None,
            completed_at: at,
            invocation: InvocationRecord {
                adapter_id: t.adapter.id.clone(),
                adapter_version: 1,
                adapter_sha256: "a".repeat(64),
                input_sha256: "f".repeat(64),
                started_at: at,
                duration_us: 100,
                fuel: 1_000,
                peak_memory_bytes: 1 << 20,
                bytes_in: 10,
                bytes_out: 10,
                events: events.len() as u64,
                outcome: InvocationOutcome::Accepted,
                detail_json: None,
                log_json: "{}".to_owned(),
                replay_json: None,
                export: crate::store::Export::HandleWebhook,
            },
            events,
            state: new_state.map(|map| crate::store::StateCommit::blind(0, map)),
            attempt_counted: true,
            preceding: Vec::new(),
            exchanges: Vec::new(),
            poll: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivery_is_recorded_completed_in_one_command() {
        let (_dir, store, t) = open().await;
        let state: crate::store::StateMap = [("cursor".to_owned(), b"42".to_vec())].into();
        let done = completion(
            &t,
            vec![event("e1", "deal.won", "d1", None)],
            Some(state.clone()),
            T0 + SECOND,
        );
        let id = done.delivery_id.clone();
        let before = store.write_stats();
        let Taken::Completed(completed) = store
            .record_completed(delivery("one", Some("p1"), T0), WINDOW, done)
            .await
            .unwrap()
        else {
            panic!("a new delivery was taken as a duplicate");
        };
        assert_eq!(store.write_stats().commands - before.commands, 1);
        assert_eq!(completed.appended.len(), 1);
        let stored = store.get_delivery(&id).await.unwrap().unwrap();
        assert_eq!(stored.info.status, DeliveryStatus::Processed);
        assert_eq!(stored.info.attempts, 1);
        assert_eq!(stored.info.processed_at, Some(T0 + SECOND));
        assert_eq!(stored.info.tenant_id, "t1");
        assert_eq!(stored.body, b"one");
        assert_eq!(store.list_invocations(&id).await.unwrap().len(), 1);
        assert_eq!(
            store.get_event("e1").await.unwrap().unwrap().delivery_id,
            id
        );
        assert!(
            store
                .claim_recovery(T0 + 60 * SECOND, T0 + 61 * SECOND, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let connection = store.get_connection("c1").await.unwrap().unwrap();
        assert_eq!(connection.last_delivery_at, Some(T0));

        // The same provider id again: the original, before running anything and inside the
        // transaction; nothing is written.
        let Prepared::Duplicate(original) = store
            .prepare_delivery(&delivery("one again", Some("p1"), T0), WINDOW)
            .await
            .unwrap()
        else {
            panic!("a retry was not recognised");
        };
        assert_eq!(
            (original.id.as_str(), original.status),
            (id.as_str(), DeliveryStatus::Processed)
        );
        let again = completion(&t, vec![event("e2", "deal.won", "d2", None)], None, T0);
        let Taken::Duplicate(original) = store
            .record_completed(delivery("one again", Some("p1"), T0), WINDOW, again)
            .await
            .unwrap()
        else {
            panic!("a racing copy was taken twice");
        };
        assert_eq!(original.id, id);
        assert!(store.get_event("e2").await.unwrap().is_none());

        // A new delivery sees the state the first one left.
        let Prepared::New(seen) = store
            .prepare_delivery(&delivery("two", Some("p2"), T0), WINDOW)
            .await
            .unwrap()
        else {
            panic!("a new delivery was taken as a duplicate");
        };
        assert_eq!((seen.map, seen.version), (state, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivery_without_a_provider_id_is_recognised_by_its_body_within_the_window() {
        let (_dir, store, t) = open().await;
        let first = completion(&t, Vec::new(), None, T0);
        let id = first.delivery_id.clone();
        store
            .record_completed(delivery("same body", None, T0), WINDOW, first)
            .await
            .unwrap();
        let within = delivery("same body", None, T0 + 299 * SECOND);
        let after = delivery("same body", None, T0 + 301 * SECOND);
        assert!(matches!(
            store.prepare_delivery(&within, WINDOW).await.unwrap(),
            Prepared::Duplicate(original) if original.id == id
        ));
        assert!(matches!(
            store.prepare_delivery(&after, WINDOW).await.unwrap(),
            Prepared::New(_)
        ));
        let unknown = NewDelivery {
            connection_id: "nope".to_owned(),
            ..delivery("x", None, T0)
        };
        assert!(matches!(
            store.prepare_delivery(&unknown, WINDOW).await,
            Err(Error::NotFound(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_record_completed_leaves_no_trace() {
        let (_dir, store, t) = open().await;
        let mut broken = event("e1", "deal.won", "d1", None);
        broken.entity_id = String::new(); // refused by the outbox's CHECK
        let failing = completion(&t, vec![broken], None, T0);
        let id = failing.delivery_id.clone();
        assert!(
            store
                .record_completed(delivery("body", Some("p1"), T0), WINDOW, failing)
                .await
                .is_err()
        );
        assert!(store.get_delivery(&id).await.unwrap().is_none());
        assert!(store.list_invocations(&id).await.unwrap().is_empty());
        assert_eq!(
            store
                .get_connection("c1")
                .await
                .unwrap()
                .unwrap()
                .last_delivery_at,
            None
        );
        // The CRM's retry is taken as new.
        let fixed = completion(&t, vec![event("e1", "deal.won", "d1", None)], None, T0);
        assert!(matches!(
            store
                .record_completed(delivery("body", Some("p1"), T0), WINDOW, fixed)
                .await
                .unwrap(),
            Taken::Completed(_)
        ));
        let received = Completion {
            status: DeliveryStatus::Received,
            ..completion(&t, Vec::new(), None, T0)
        };
        assert!(matches!(
            store
                .record_completed(delivery("other", Some("p2"), T0), WINDOW, received)
                .await,
            Err(Error::Invalid(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cached_connections_follow_every_write() {
        let (_dir, store, t) = open().await;
        let spec = |settings: &str, version: u32| ConnectionSpec {
            id: "c1".to_owned(),
            tenant_id: "t1".to_owned(),
            org_id: None,
            provider: "hubspot".to_owned(),
            adapter_id: t.adapter.id.clone(),
            adapter_version: version,
            signature_json: r#"{"scheme":"hubspot-v3"}"#.to_owned(),
            allowed_org_ids: vec!["org-a".to_owned(), "org-b".to_owned()],
            secret_refs_json: r#"{"signing":"secrets/hubspot-signing"}"#.to_owned(),
            settings_json: settings.to_owned(),
            polling_json: None,
            status: ConnectionStatus::Active,
            api_json: None,
            webhook_json: None,
            export_json: None,
        };
        let get = || async { store.get_connection("c1").await.unwrap().unwrap() };
        assert_eq!(get().await, t.connection);
        assert_eq!(get().await, t.connection, "served from the cache");

        let disabled = store
            .set_connection_status("c1", ConnectionStatus::Disabled, T0 + SECOND)
            .await
            .unwrap();
        assert_eq!(get().await, disabled);
        assert_eq!(disabled.status, ConnectionStatus::Disabled);
        let (updated, _) = store
            .upsert_connection(spec(r#"{"portal":"43"}"#, 1), "admin", T0 + 2 * SECOND)
            .await
            .unwrap();
        assert_eq!(get().await, updated);
        assert_eq!(updated.settings_json, r#"{"portal":"43"}"#);
        let switched = store
            .set_connection_version("c1", 2, "admin", T0 + 3 * SECOND)
            .await
            .unwrap();
        assert_eq!(get().await, switched);
        assert_eq!(switched.adapter_version, 2);

        // Recording moves `last_delivery_at`, forward only, as the database does.
        for at in [T0 + 10 * SECOND, T0 + 5 * SECOND] {
            let done = completion(&t, Vec::new(), None, at);
            let body = format!("at {at}");
            store
                .record_completed(delivery(&body, None, at), WINDOW, done)
                .await
                .unwrap();
        }
        store
            .record_delivery(delivery("received", None, T0 + 7 * SECOND), WINDOW, T0)
            .await
            .unwrap();
        assert_eq!(get().await.last_delivery_at, Some(T0 + 10 * SECOND));
        let reopened_view = store
            .read(|db| get_connection(db, "c1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            get().await,
            reopened_view,
            "the cache agrees with the database"
        );
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_cached() {
        let cache = ConnectionCache::default();
        let connection = Connection {
            id: "c1".to_owned(),
            tenant_id: "t1".to_owned(),
            org_id: None,
            provider: "custom".to_owned(),
            adapter_id: "a".to_owned(),
            adapter_version: 1,
            signature_json: "{}".to_owned(),
            allowed_org_ids: Vec::new(),
            secret_refs_json: "[]".to_owned(),
            settings_json: "{}".to_owned(),
            polling_json: None,
            status: ConnectionStatus::Active,
            created_at: T0,
            updated_at: T0,
            last_delivery_at: None,
            version_changed_by: None,
            version_changed_at: None,
            api_json: None,
            webhook_json: None,
            export_json: None,
        };
        // A write commits while the read is under way: what the read found may be stale.
        let generation = cache.get("c1").unwrap_err();
        cache.clear();
        cache.fill(generation, &connection);
        assert!(cache.get("c1").is_err());
        // The same for a delivery recorded meanwhile (its time would be lost).
        let generation = cache.get("c1").unwrap_err();
        cache.delivered("c1", T0);
        cache.fill(generation, &connection);
        assert!(cache.get("c1").is_err());
        // Undisturbed, the read is kept; a later delivery moves the cached time forward only.
        let generation = cache.get("c1").unwrap_err();
        cache.fill(generation, &connection);
        cache.delivered("c1", T0 + SECOND);
        cache.delivered("c1", T0);
        assert_eq!(cache.get("c1").unwrap().last_delivery_at, Some(T0 + SECOND));
    }
}
