//! The shared store: PostgreSQL, for several hosts serving one deployment.
//!
//! Every table lives in one schema (given at connect), so deployments, or test runs, can share
//! a database without seeing each other. Connections come from a pool; each write is one
//! transaction (READ COMMITTED), committed before the call returns, so it is durable as the
//! server's settings make it (`synchronous_commit`).
//!
//! What makes it safe for several hosts at once, where SQLite's single writer did it alone:
//! - Claims of outbox rows and subscriber deliveries are serialized by a transaction-scoped
//!   advisory lock, so two relays never both take rows of one entity (each sees the other's
//!   claim before it picks). Appending an event takes a lock per entity until the commit, so
//!   within an entity `seq` order is commit order and a relay never publishes a later row
//!   before an earlier one is visible.
//! - Poll claims are serialized the same way; a run's checkpoint and end are fenced by its
//!   lease (conditional updates on `run_id` and `lease_owner`).
//! - Recovery claims of unfinished deliveries lock their rows (`FOR UPDATE SKIP LOCKED`):
//!   recovering hosts take disjoint sets, and a lease renewed meanwhile is seen.
//! - A state commit locks its connection's row of `connection_state_versions`, then checks
//!   the versions of what it read: commits of one connection are checked one at a time.
//! - The dedupe of deliveries takes a lock on (connection, provider id or body hash), so a
//!   retry arriving at two hosts at once is recorded once.
//!
//! Connections are not cached in memory (unlike the embedded store): another host may change
//! them at any time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::{IsolationLevel, NoTls};

use super::{
    Activity, Adapter, AdapterVersion, Alert, AlertChanges, AlertFilter, AuditEntry, AuditFilter,
    Completed, Completion, Connection, ConnectionAuth, ConnectionSpec, ConnectionStatus, Delivery,
    DeliveryFilter, DeliveryInfo, Drift, Erasure, Error, HealthRecord, HealthSnapshot, Identity,
    IdentityFilter, Invocation, Millis, NewAdapter, NewAdapterVersion, NewAuditEntry, NewDelivery,
    NewDrift, NewReplay, NewSubscriber, OAuthState, OrgUse, OutboxFilter, OutboxLag, OutboxRow,
    Page, PageRequest, PollClaim, PollEnd, PollRun, PollState, Prepared, Purge, Purged, Recorded,
    Replay, Result, SavedShape, StateSnapshot, Store, StoredExchange, Subject, SubjectErasure,
    Subscriber, SubscriberAttempt, SubscriberDelivery, SubscriberDeliveryFilter, SubscriberJob,
    SubscriberUpdate, Taken, TenantRetention, Upsert, VersionStatus, WriteCounters, WriteStats,
    check_json, new_id, page_size, sealing,
};
use crate::vault::Vault;

mod audit;
mod blobs;
mod connections;
mod drift;
mod erasure;
mod health;
mod identities;
mod inbox;
mod outbox;
mod polls;
mod retention;
mod schema;
mod sql;

pub use blobs::PgBlobStore;
use connections::{
    ADAPTER, CONNECTION, VERSION, adapter_row, connection_row, delete_connection, get_connection,
    require_connection, require_version, upsert_connection, version_row,
};
use sql::{
    Filtered, execute, get, int, json_column, lock, page, query_all, query_opt, seq_cursor, small,
    text_enum, uint,
};

/// Connections the pool keeps at most; callers beyond wait for one.
const POOL_SIZE: usize = 16;
/// How long connecting to the server may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One page of the orgs tenant `$1`'s rows name, after `$2`, `$3` rows at most (only `$4` when
/// it is not null), with what names each.
const ORG_USES: &str = "WITH named (org_id, kind) AS (\
        SELECT org_id, 'connection' FROM connections WHERE tenant_id = $1 AND org_id IS NOT NULL \
        UNION ALL SELECT allowed, 'allowed' FROM connections, \
            jsonb_array_elements_text(connections.allowed_org_ids_json::jsonb) AS allowed \
            WHERE tenant_id = $1 AND allowed IS DISTINCT FROM connections.org_id \
        UNION ALL SELECT org_id, 'adapter' FROM adapters WHERE tenant_id = $1 AND org_id IS NOT NULL \
        UNION ALL SELECT org_id, 'subscriber' FROM subscribers \
            WHERE tenant_id = $1 AND org_id IS NOT NULL) \
    SELECT org_id, COUNT(*) FILTER (WHERE kind = 'connection') AS connections, \
        COUNT(*) FILTER (WHERE kind = 'allowed') AS allowed_by, \
        COUNT(*) FILTER (WHERE kind = 'adapter') AS adapters, \
        COUNT(*) FILTER (WHERE kind = 'subscriber') AS subscribers \
    FROM named WHERE org_id COLLATE \"C\" > $2 AND ($4::text IS NULL OR org_id = $4) GROUP BY org_id ORDER BY org_id COLLATE \"C\" LIMIT $3";

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            // The cause (a refused connection, a value of the wrong type) is in the source.
            return match std::error::Error::source(&e) {
                Some(cause) => Error::Backend(format!("PostgreSQL: {e}: {cause}")),
                None => Error::Backend(format!("PostgreSQL: {e}")),
            };
        };
        let text = match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        };
        let code = db.code().code();
        if code == "23505" {
            Error::Conflict(text)
        } else if code.starts_with("23") || code.starts_with("22") {
            // Integrity (foreign key, check, not null) and data (a malformed value) errors.
            Error::Invalid(text)
        } else {
            Error::Backend(format!("PostgreSQL {code}: {text}"))
        }
    }
}

/// The shared store. Cheap to clone; the pool closes when the last clone is dropped.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    schema: String,
    /// Where the server is, for error messages (never the password).
    target: String,
    counters: WriteCounters,
    /// Seals payloads as they are written, opens them as they are read.
    vault: Arc<Vault>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.inner.target)
            .field("schema", &self.inner.schema)
            .field("stats", &self.inner.counters.snapshot())
            .finish_non_exhaustive()
    }
}

/// Refuses a schema name that would need quoting: it is put into SQL and into the
/// connection's `search_path` as it is.
fn check_schema(schema: &str) -> Result<()> {
    let mut bytes = schema.bytes();
    let ok = schema.len() <= 63
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "schema name {schema:?}: use 1 to 63 lower-case letters, digits and underscores, \
             not starting with a digit"
        )))
    }
}

/// Where `config` points (hosts, ports, database, user), without its password.
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "{}:{} database {} as {}",
        hosts.join(","),
        if ports.is_empty() {
            "5432".to_owned()
        } else {
            ports.join(",")
        },
        config.get_dbname().unwrap_or("(default)"),
        config.get_user().unwrap_or("(default)"),
    )
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or a key-value connection
    /// string) and uses the tables of `schema`, creating the schema and applying migrations
    /// when needed. Several hosts may connect at once: one migrates, the others wait for it.
    /// Payloads are stored as they are (see [`Self::connect_sealed`]).
    pub async fn connect(url: &str, schema: &str) -> Result<Self> {
        Self::connect_sealed(url, schema, Arc::new(Vault::disabled())).await
    }

    /// [`Self::connect`], with every payload sealed by `vault` as it is written and opened as
    /// it is read: what the host serves with.
    pub async fn connect_sealed(url: &str, schema: &str, vault: Arc<Vault>) -> Result<Self> {
        check_schema(schema)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::Invalid(format!(
                "the database URL is not a PostgreSQL connection string: {e}"
            ))
        })?;
        let options = match config.get_options() {
            Some(options) => format!("{options} -c search_path={schema}"),
            None => format!("-c search_path={schema}"),
        };
        config.options(&options);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let target = describe(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| Error::Backend(format!("building the PostgreSQL pool: {e}")))?;
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                schema: schema.to_owned(),
                target,
                counters: WriteCounters::default(),
                vault,
            }),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// A pooled connection.
    async fn db(&self) -> Result<Object> {
        self.inner.pool.get().await.map_err(|e| {
            Error::Backend(format!(
                "cannot reach PostgreSQL at {}: {e}",
                self.inner.target
            ))
        })
    }

    /// The key of an advisory lock of this schema named `name` (two schemas never share one,
    /// short of a hash collision, which only makes them wait for each other).
    fn lock_key(&self, name: &str) -> String {
        format!("adapter-host {} {name}", self.inner.schema)
    }

    /// Ends a write: commits when `result` is `Ok`, rolls back otherwise.
    async fn settle<T>(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        result: Result<T>,
    ) -> Result<T> {
        let counters = &self.inner.counters;
        counters.commands.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(value) => {
                tx.commit().await?;
                counters.commits.fetch_add(1, Ordering::Relaxed);
                Ok(value)
            }
            Err(e) => {
                counters.failed_commands.fetch_add(1, Ordering::Relaxed);
                // A rollback that fails leaves the connection broken: the pool drops it.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    async fn migrate(&self) -> Result<()> {
        let mut db = self.db().await?;
        let key = self.lock_key("migrations");
        // Session-level: held across the migrations' own transactions.
        db.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&key])
            .await?;
        let migrated = migrate_locked(&mut db, &self.inner.schema).await;
        let unlocked = db
            .execute(
                "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                &[&key],
            )
            .await;
        migrated?;
        unlocked?;
        Ok(())
    }
}

async fn migrate_locked(db: &mut Object, schema: &str) -> Result<()> {
    db.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; \
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ( \
             version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)"
    ))
    .await?;
    let applied: i64 = db
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations"),
            &[],
        )
        .await?
        .try_get(0)?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > schema::MIGRATIONS.len() {
        return Err(Error::Backend(format!(
            "schema {schema} has version {applied}; this host knows up to {}: upgrade the host",
            schema::MIGRATIONS.len()
        )));
    }
    for (index, sql) in schema::MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = db.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            &format!(
                "INSERT INTO {schema}.schema_migrations (version, applied_at) VALUES ($1, $2)"
            ),
            &[&int(index as u64 + 1), &super::now_millis()],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(schema, version = index + 1, "applied a store migration");
    }
    Ok(())
}

/// Opens a write transaction on `$store` as `$tx`, runs `$body` (a `Result`) in it, commits on
/// `Ok`, rolls back on `Err`.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut db = $store.db().await?;
        let $tx = db.transaction().await?;
        let result = async { $body }.await;
        $store.settle($tx, result).await
    }};
}

// ---------------------------------------------------------------------------------------------
// The trait

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn create_adapter(&self, new: NewAdapter) -> Result<Adapter> {
        let adapter = Adapter {
            id: new_id(),
            tenant_id: new.tenant_id,
            org_id: new.org_id,
            name: new.name,
            created_at: new.created_at,
        };
        in_tx!(self, |tx| {
            execute(
                &tx,
                &format!("INSERT INTO adapters ({ADAPTER}) VALUES ($1, $2, $3, $4, $5)"),
                &[
                    &adapter.id,
                    &adapter.tenant_id,
                    &adapter.org_id,
                    &adapter.name,
                    &adapter.created_at,
                ],
            )
            .await
            .map_err(|e| match e {
                Error::Conflict(_) => Error::Conflict(format!(
                    "the tenant already has an adapter named {:?}",
                    adapter.name
                )),
                other => other,
            })
        })?;
        Ok(adapter)
    }

    async fn get_adapter(&self, id: &str) -> Result<Option<Adapter>> {
        let db = self.db().await?;
        query_opt(
            &db,
            &format!("SELECT {ADAPTER} FROM adapters WHERE id = $1"),
            &[&id],
            adapter_row,
        )
        .await
    }

    async fn find_adapter(&self, tenant_id: &str, name: &str) -> Result<Option<Adapter>> {
        let db = self.db().await?;
        query_opt(
            &db,
            &format!("SELECT {ADAPTER} FROM adapters WHERE tenant_id = $1 AND name = $2"),
            &[&tenant_id, &name],
            adapter_row,
        )
        .await
    }

    async fn list_adapters(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        request: PageRequest,
    ) -> Result<Page<Adapter>> {
        let limit = page_size(request.limit);
        let mut query = Filtered::new(format!("SELECT {ADAPTER} FROM adapters WHERE 1 = 1"));
        query.and("tenant_id = ?", Some(tenant_id.to_owned()));
        query.and("(org_id IS NULL OR org_id = ?)", org_id.map(str::to_owned));
        query.and("name > ?", request.cursor);
        let db = self.db().await?;
        let items = query.run(&db, "ORDER BY name", limit, adapter_row).await?;
        Ok(page(items, limit, |a| a.name.clone()))
    }

    async fn add_adapter_version(&self, new: NewAdapterVersion) -> Result<AdapterVersion> {
        check_json("info_json", &new.info_json)?;
        check_json("limits_json", &new.limits_json)?;
        let version = in_tx!(self, |tx| {
            // The adapter's row is locked: versions are numbered one upload at a time.
            query_opt(
                &tx,
                "SELECT 1 FROM adapters WHERE id = $1 FOR UPDATE",
                &[&new.adapter_id],
                |_| Ok(()),
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("adapter {}", new.adapter_id)))?;
            let version: i64 = query_opt(
                &tx,
                "SELECT coalesce(max(version), 0) + 1 AS next FROM adapter_versions \
                 WHERE adapter_id = $1",
                &[&new.adapter_id],
                |row| get(row, "next"),
            )
            .await?
            .unwrap_or(1);
            execute(
                &tx,
                &format!(
                    "INSERT INTO adapter_versions ({VERSION}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)"
                ),
                &[
                    &new.adapter_id,
                    &version,
                    &new.sha256,
                    &int(new.size_bytes),
                    &new.info_json,
                    &new.limits_json,
                    &new.created_at,
                    &new.created_by,
                    &new.status.as_str(),
                ],
            )
            .await?;
            u32::try_from(version)
                .map_err(|_| Error::Backend(format!("adapter version {version} is too large")))
        })?;
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
        let (status, info, failure) = match &outcome {
            Ok(info) => (VersionStatus::Ready, Some(info.clone()), None),
            Err(why) => (VersionStatus::Failed, None, Some(super::bounded_error(why))),
        };
        in_tx!(self, |tx| {
            let changed = execute(
                &tx,
                "UPDATE adapter_versions SET status = $3, info_json = coalesce($4, info_json), \
                 failure = $5 WHERE adapter_id = $1 AND version = $2 AND status = 'compiling'",
                &[
                    &adapter_id,
                    &i64::from(version),
                    &status.as_str(),
                    &info,
                    &failure,
                ],
            )
            .await?;
            if changed == 0 {
                return Err(Error::Conflict(format!(
                    "version {version} of adapter {adapter_id} is not compiling"
                )));
            }
            query_opt(
                &tx,
                &format!(
                    "SELECT {VERSION} FROM adapter_versions WHERE adapter_id = $1 AND version = $2"
                ),
                &[&adapter_id, &i64::from(version)],
                version_row,
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("adapter {adapter_id} version {version}")))
        })
    }

    async fn compiling_versions(&self) -> Result<Vec<AdapterVersion>> {
        let db = self.db().await?;
        query_all(
            &db,
            &format!(
                "SELECT {VERSION} FROM adapter_versions WHERE status = 'compiling' \
                 ORDER BY adapter_id, version"
            ),
            &[],
            version_row,
        )
        .await
    }

    async fn get_adapter_version(
        &self,
        adapter_id: &str,
        version: u32,
    ) -> Result<Option<AdapterVersion>> {
        let db = self.db().await?;
        query_opt(
            &db,
            &format!(
                "SELECT {VERSION} FROM adapter_versions WHERE adapter_id = $1 AND version = $2"
            ),
            &[&adapter_id, &i64::from(version)],
            version_row,
        )
        .await
    }

    async fn list_adapter_versions(
        &self,
        adapter_id: &str,
        request: PageRequest,
    ) -> Result<Page<AdapterVersion>> {
        let limit = page_size(request.limit);
        let after = seq_cursor(request.cursor.as_ref())?;
        let mut query = Filtered::new(format!(
            "SELECT {VERSION} FROM adapter_versions WHERE 1 = 1"
        ));
        query.and("adapter_id = ?", Some(adapter_id.to_owned()));
        query.and("version > ?", after);
        let db = self.db().await?;
        let items = query
            .run(&db, "ORDER BY version", limit, version_row)
            .await?;
        Ok(page(items, limit, |v| v.version.to_string()))
    }

    async fn latest_adapter_version(&self, adapter_id: &str) -> Result<Option<u32>> {
        let db = self.db().await?;
        let latest = query_opt(
            &db,
            "SELECT max(version) AS latest FROM adapter_versions \
             WHERE adapter_id = $1 AND status = 'ready'",
            &[&adapter_id],
            |row| get::<Option<i64>>(row, "latest"),
        )
        .await?
        .flatten();
        latest
            .map(|v| {
                u32::try_from(v)
                    .map_err(|_| Error::Backend(format!("adapter version {v} is too large")))
            })
            .transpose()
    }

    async fn adapter_versions_of(
        &self,
        adapter_id: &str,
        sha256: &str,
    ) -> Result<Vec<AdapterVersion>> {
        let db = self.db().await?;
        query_all(
            &db,
            &format!(
                "SELECT {VERSION} FROM adapter_versions WHERE adapter_id = $1 AND sha256 = $2 \
                 ORDER BY version"
            ),
            &[&adapter_id, &sha256],
            version_row,
        )
        .await
    }

    async fn upsert_connection(
        &self,
        spec: ConnectionSpec,
        actor: &str,
        now: Millis,
    ) -> Result<(Connection, Upsert)> {
        let allowed = spec.checked_allowed_orgs()?;
        in_tx!(self, |tx| upsert_connection(
            &tx, &spec, &allowed, actor, now
        )
        .await)
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>> {
        let db = self.db().await?;
        get_connection(&db, id).await
    }

    async fn list_connections(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        request: PageRequest,
    ) -> Result<Page<Connection>> {
        let limit = page_size(request.limit);
        let mut query = Filtered::new(format!("SELECT {CONNECTION} FROM connections WHERE 1 = 1"));
        query.and("tenant_id = ?", Some(tenant_id.to_owned()));
        query.and("(org_id IS NULL OR org_id = ?)", org_id.map(str::to_owned));
        query.and("id > ?", request.cursor);
        let db = self.db().await?;
        let items = query.run(&db, "ORDER BY id", limit, connection_row).await?;
        Ok(page(items, limit, |c| c.id.clone()))
    }

    async fn list_orgs(
        &self,
        tenant_id: &str,
        only: Option<&str>,
        request: PageRequest,
    ) -> Result<Page<OrgUse>> {
        let limit = page_size(request.limit);
        let db = self.db().await?;
        let items = query_all(
            &db,
            ORG_USES,
            &[
                &tenant_id,
                &request.cursor.unwrap_or_default(),
                &int(limit as u64 + 1),
                &only,
            ],
            |row| {
                Ok(OrgUse {
                    org_id: get(row, "org_id")?,
                    connections: uint(row, "connections")?,
                    allowed_by: uint(row, "allowed_by")?,
                    adapters: uint(row, "adapters")?,
                    subscribers: uint(row, "subscribers")?,
                })
            },
        )
        .await?;
        Ok(page(items, limit, |o| o.org_id.clone()))
    }

    async fn set_connection_status(
        &self,
        id: &str,
        status: ConnectionStatus,
        now: Millis,
    ) -> Result<Connection> {
        in_tx!(self, |tx| {
            execute(
                &tx,
                "UPDATE connections SET status = $2, updated_at = $3 \
                 WHERE id = $1 AND status <> $2",
                &[&id, &status.as_str(), &now],
            )
            .await?;
            require_connection(&tx, id).await
        })
    }

    async fn delete_connection(&self, id: &str) -> Result<()> {
        in_tx!(self, |tx| delete_connection(&tx, id).await)
    }

    async fn set_connection_version(
        &self,
        id: &str,
        version: u32,
        actor: &str,
        now: Millis,
    ) -> Result<Connection> {
        in_tx!(self, |tx| {
            let connection = require_connection(&tx, id).await?;
            require_version(&tx, &connection.tenant_id, &connection.adapter_id, version).await?;
            execute(
                &tx,
                "UPDATE connections SET adapter_version = $2, version_changed_by = $3, \
                 version_changed_at = $4, updated_at = $4 WHERE id = $1",
                &[&id, &i64::from(version), &actor, &now],
            )
            .await?;
            require_connection(&tx, id).await
        })
    }

    async fn record_delivery(
        &self,
        new: NewDelivery,
        dedupe_window: Duration,
        lease_until: Millis,
    ) -> Result<Recorded> {
        let prepared = inbox::PreparedDelivery::new(new, dedupe_window)?;
        in_tx!(self, |tx| inbox::record_delivery(
            &tx,
            &self.inner.vault,
            &self.inner.schema,
            &prepared,
            lease_until
        )
        .await)
    }

    async fn complete_delivery(&self, completion: Completion) -> Result<Completed> {
        inbox::check_completion(&completion)?;
        in_tx!(self, |tx| inbox::complete_delivery(
            &tx,
            &self.inner.vault,
            &self.inner.schema,
            &completion
        )
        .await)
    }

    async fn prepare_delivery(
        &self,
        new: &NewDelivery,
        dedupe_window: Duration,
    ) -> Result<Prepared> {
        let mut db = self.db().await?;
        // One snapshot: the duplicate check and the state are of the same moment.
        let tx = db
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let prepared = inbox::prepare_delivery(&tx, new, dedupe_window).await;
        tx.rollback().await?;
        prepared
    }

    async fn record_completed(
        &self,
        new: NewDelivery,
        dedupe_window: Duration,
        completion: Completion,
    ) -> Result<Taken> {
        inbox::check_completion(&completion)?;
        let prepared = inbox::PreparedDelivery::new(new, dedupe_window)?;
        in_tx!(self, |tx| inbox::record_completed(
            &tx,
            &self.inner.vault,
            &self.inner.schema,
            &prepared,
            &completion
        )
        .await)
    }

    async fn get_delivery(&self, id: &str) -> Result<Option<Delivery>> {
        let db = self.db().await?;
        inbox::get_delivery(&db, &self.inner.vault, id).await
    }

    async fn list_deliveries(&self, filter: DeliveryFilter) -> Result<Page<DeliveryInfo>> {
        let db = self.db().await?;
        inbox::list_deliveries(&db, filter).await
    }

    async fn claim_recovery(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        in_tx!(self, |tx| inbox::claim_recovery(
            &tx,
            &self.inner.vault,
            now,
            lease_until,
            limit
        )
        .await)
    }

    async fn unfinished_deliveries(&self) -> Result<u64> {
        let db = self.db().await?;
        Ok(query_opt(
            &db,
            "SELECT count(*) AS n FROM deliveries WHERE status = 'received'",
            &[],
            |row| uint(row, "n"),
        )
        .await?
        .unwrap_or(0))
    }

    async fn park_delivery(&self, id: &str, reason_json: &str, now: Millis) -> Result<()> {
        check_json("reason_json", reason_json)?;
        in_tx!(self, |tx| inbox::park_delivery(&tx, id, reason_json, now)
            .await)
    }

    async fn list_invocations(&self, delivery_id: &str) -> Result<Vec<Invocation>> {
        let db = self.db().await?;
        inbox::list_invocations(&db, &self.inner.vault, delivery_id).await
    }

    async fn get_invocation_replay(
        &self,
        invocation_id: &str,
    ) -> Result<Option<(Invocation, Option<String>)>> {
        let db = self.db().await?;
        inbox::get_invocation_replay(&db, &self.inner.vault, invocation_id).await
    }

    async fn load_state(&self, connection_id: &str) -> Result<StateSnapshot> {
        let mut db = self.db().await?;
        let tx = db
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let snapshot = inbox::load_state(&tx, connection_id).await;
        tx.rollback().await?;
        snapshot
    }

    async fn claim_outbox(
        &self,
        limit: usize,
        now: Millis,
        lease: Duration,
    ) -> Result<Vec<OutboxRow>> {
        let key = self.lock_key("outbox claims");
        in_tx!(self, |tx| outbox::claim_outbox(
            &tx,
            &self.inner.vault,
            &key,
            limit,
            now,
            super::millis(lease)
        )
        .await)
    }

    async fn mark_published(&self, seqs: &[i64], now: Millis) -> Result<()> {
        in_tx!(self, |tx| outbox::mark_published(&tx, seqs, now).await)
    }

    async fn complete_publication(&self, seqs: &[i64], now: Millis) -> Result<u64> {
        in_tx!(self, |tx| {
            let queued = outbox::queue_subscriber_deliveries(
                &tx,
                &self.inner.vault,
                seqs,
                outbox::Queue::New,
                now,
            )
            .await?;
            outbox::mark_published(&tx, seqs, now).await?;
            Ok(queued)
        })
    }

    async fn release_outbox(&self, seqs: &[i64], now: Millis) -> Result<()> {
        in_tx!(self, |tx| outbox::release_outbox(&tx, seqs, now).await)
    }

    async fn mark_publish_failed(
        &self,
        seq: i64,
        error: &str,
        next_attempt_at: Millis,
        dead: bool,
    ) -> Result<()> {
        in_tx!(self, |tx| outbox::mark_publish_failed(
            &tx,
            seq,
            error,
            next_attempt_at,
            dead
        )
        .await)
    }

    async fn retry_outbox_event(&self, seq: i64, now: Millis) -> Result<()> {
        in_tx!(self, |tx| outbox::retry_outbox_event(
            &tx,
            &self.inner.vault,
            seq,
            now
        )
        .await)
    }

    async fn outbox_lag(&self) -> Result<OutboxLag> {
        let db = self.db().await?;
        outbox::outbox_lag(&db).await
    }

    async fn list_outbox(&self, filter: OutboxFilter) -> Result<Page<OutboxRow>> {
        let db = self.db().await?;
        outbox::list_outbox(&db, &self.inner.vault, filter).await
    }

    async fn replay_range(
        &self,
        replay: &Replay,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>> {
        let db = self.db().await?;
        outbox::replay_range(&db, &self.inner.vault, replay, after_seq, limit).await
    }

    async fn start_replay(&self, new: NewReplay, max_per_hour: u32) -> Result<Replay> {
        let key = self.lock_key(&format!("replays of {}", new.tenant_id));
        in_tx!(self, |tx| outbox::start_replay(
            &tx,
            &key,
            &new,
            max_per_hour
        )
        .await)
    }

    async fn finish_replay(
        &self,
        id: &str,
        replayed: u64,
        queued: u64,
        error: Option<String>,
        now: Millis,
    ) -> Result<Replay> {
        in_tx!(self, |tx| outbox::finish_replay(
            &tx,
            id,
            replayed,
            queued,
            error.as_deref(),
            now
        )
        .await)
    }

    async fn interrupt_replays(&self, now: Millis) -> Result<u64> {
        in_tx!(self, |tx| execute(
            &tx,
            "UPDATE replays SET status = 'interrupted', finished_at = $1 \
             WHERE status = 'running'",
            &[&now],
        )
        .await)
    }

    async fn get_replay(&self, id: &str) -> Result<Option<Replay>> {
        let db = self.db().await?;
        outbox::get_replay(&db, id).await
    }

    async fn list_replays(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        request: PageRequest,
    ) -> Result<Page<Replay>> {
        let db = self.db().await?;
        outbox::list_replays(&db, tenant_id, org_id, request).await
    }

    async fn get_event(&self, event_id: &str) -> Result<Option<OutboxRow>> {
        let db = self.db().await?;
        outbox::get_event(&db, &self.inner.vault, event_id).await
    }

    async fn create_subscriber(&self, new: NewSubscriber) -> Result<Subscriber> {
        let event_types = serde_json::to_string(&new.event_types)
            .map_err(|e| Error::Invalid(format!("event_types: {e}")))?;
        in_tx!(self, |tx| outbox::create_subscriber(
            &tx,
            &new,
            &event_types
        )
        .await)
    }

    async fn get_subscriber(&self, id: &str) -> Result<Option<Subscriber>> {
        let db = self.db().await?;
        outbox::get_subscriber(&db, id).await
    }

    async fn list_subscribers(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        request: PageRequest,
    ) -> Result<Page<Subscriber>> {
        let db = self.db().await?;
        outbox::list_subscribers(&db, tenant_id, org_id, request).await
    }

    async fn find_subscriber(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        url: &str,
    ) -> Result<Option<Subscriber>> {
        let db = self.db().await?;
        outbox::find_subscriber(&db, tenant_id, org_id, url).await
    }

    async fn update_subscriber(&self, id: &str, update: SubscriberUpdate) -> Result<Subscriber> {
        let event_types = serde_json::to_string(&update.event_types)
            .map_err(|e| Error::Invalid(format!("event_types: {e}")))?;
        in_tx!(self, |tx| outbox::update_subscriber(
            &tx,
            id,
            &update,
            &event_types
        )
        .await)
    }

    async fn delete_subscriber(&self, id: &str) -> Result<()> {
        in_tx!(self, |tx| {
            let deleted = execute(&tx, "DELETE FROM subscribers WHERE id = $1", &[&id]).await?;
            if deleted == 0 {
                return Err(Error::NotFound(format!("subscriber {id}")));
            }
            Ok(())
        })
    }

    async fn enqueue_subscriber_deliveries(&self, seqs: &[i64], now: Millis) -> Result<u64> {
        in_tx!(self, |tx| outbox::queue_subscriber_deliveries(
            &tx,
            &self.inner.vault,
            seqs,
            outbox::Queue::New,
            now
        )
        .await)
    }

    async fn replay_to_subscribers(
        &self,
        seqs: &[i64],
        subscriber_id: Option<&str>,
        now: Millis,
    ) -> Result<u64> {
        in_tx!(self, |tx| outbox::queue_subscriber_deliveries(
            &tx,
            &self.inner.vault,
            seqs,
            outbox::Queue::Again(subscriber_id),
            now
        )
        .await)
    }

    async fn release_subscriber_deliveries(
        &self,
        deliveries: &[(String, i64)],
        now: Millis,
    ) -> Result<()> {
        in_tx!(self, |tx| outbox::release_subscriber_deliveries(
            &tx, deliveries, now
        )
        .await)
    }

    async fn claim_subscriber_deliveries(
        &self,
        limit: usize,
        now: Millis,
        lease: Duration,
    ) -> Result<Vec<SubscriberJob>> {
        let key = self.lock_key("subscriber claims");
        in_tx!(self, |tx| outbox::claim_subscriber_deliveries(
            &tx,
            &self.inner.vault,
            &key,
            limit,
            now,
            super::millis(lease)
        )
        .await)
    }

    async fn mark_subscriber_deliveries(
        &self,
        attempts: &[(String, i64, SubscriberAttempt)],
    ) -> Result<()> {
        in_tx!(self, |tx| outbox::mark_subscriber_deliveries(&tx, attempts)
            .await)
    }

    async fn mark_subscriber_delivery(
        &self,
        subscriber_id: &str,
        seq: i64,
        attempt: SubscriberAttempt,
    ) -> Result<()> {
        in_tx!(self, |tx| outbox::mark_subscriber_delivery(
            &tx,
            subscriber_id,
            seq,
            &attempt
        )
        .await)
    }

    async fn retry_subscriber_delivery(
        &self,
        subscriber_id: &str,
        seq: i64,
        now: Millis,
    ) -> Result<()> {
        in_tx!(self, |tx| outbox::retry_subscriber_delivery(
            &tx,
            subscriber_id,
            seq,
            now
        )
        .await)
    }

    async fn list_subscriber_deliveries(
        &self,
        filter: SubscriberDeliveryFilter,
    ) -> Result<Page<SubscriberDelivery>> {
        let db = self.db().await?;
        outbox::list_subscriber_deliveries(&db, filter).await
    }

    async fn claim_polls(
        &self,
        now: Millis,
        owner: &str,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<PollClaim>> {
        let key = self.lock_key("poll claims");
        in_tx!(self, |tx| polls::claim_polls(
            &tx,
            &key,
            now,
            owner,
            lease_until,
            limit
        )
        .await)
    }

    async fn claim_poll_now(
        &self,
        connection_id: &str,
        now: Millis,
        owner: &str,
        lease_until: Millis,
    ) -> Result<PollClaim> {
        let key = self.lock_key("poll claims");
        in_tx!(self, |tx| polls::claim_poll_now(
            &tx,
            &key,
            connection_id,
            now,
            owner,
            lease_until
        )
        .await)
    }

    async fn finish_poll(&self, end: PollEnd) -> Result<PollRun> {
        in_tx!(self, |tx| polls::finish_poll(&tx, &self.inner.vault, &end)
            .await)
    }

    async fn poll_state(&self, connection_id: &str) -> Result<Option<PollState>> {
        let db = self.db().await?;
        polls::poll_state(&db, connection_id).await
    }

    async fn list_poll_runs(
        &self,
        connection_id: &str,
        request: PageRequest,
    ) -> Result<Page<PollRun>> {
        let db = self.db().await?;
        polls::list_poll_runs(&db, connection_id, request).await
    }

    async fn list_exchanges(&self, delivery_id: &str) -> Result<Vec<StoredExchange>> {
        let db = self.db().await?;
        polls::list_exchanges(&db, &self.inner.vault, delivery_id).await
    }

    async fn get_poll_run(&self, run_id: &str) -> Result<Option<PollRun>> {
        let db = self.db().await?;
        polls::get_poll_run(&db, run_id).await
    }

    async fn list_run_exchanges(&self, run_id: &str) -> Result<Vec<StoredExchange>> {
        let db = self.db().await?;
        polls::list_run_exchanges(&db, &self.inner.vault, run_id).await
    }

    async fn create_oauth_state(&self, state: OAuthState) -> Result<()> {
        in_tx!(self, |tx| polls::create_oauth_state(&tx, &state).await)
    }

    async fn take_oauth_state(&self, state_hash: &str, now: Millis) -> Result<OAuthState> {
        in_tx!(self, |tx| polls::take_oauth_state(&tx, state_hash, now)
            .await)
    }

    async fn set_connection_auth(&self, auth: ConnectionAuth) -> Result<()> {
        in_tx!(self, |tx| polls::set_connection_auth(&tx, &auth).await)
    }

    async fn connection_auth(&self, connection_id: &str) -> Result<Option<ConnectionAuth>> {
        let db = self.db().await?;
        polls::connection_auth(&db, connection_id).await
    }

    async fn append_audit(&self, entry: NewAuditEntry) -> Result<AuditEntry> {
        let entry = AuditEntry::recorded(entry)?;
        in_tx!(self, |tx| audit::append_audit(&tx, &entry).await)?;
        Ok(entry)
    }

    async fn list_audit(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        filter: AuditFilter,
        request: PageRequest,
    ) -> Result<Page<AuditEntry>> {
        let db = self.db().await?;
        audit::list_audit(&db, tenant_id, org_id, filter, request).await
    }

    async fn connection_activity(&self, connection_id: &str, since: Millis) -> Result<Activity> {
        let db = self.db().await?;
        let mut activity = health::activity(&db, connection_id, since).await?;
        activity.drifts = drift::recent_drifts(&db, connection_id, since).await?;
        Ok(activity)
    }

    async fn erase_tenant(
        &self,
        tenant_id: &str,
        reason_json: &str,
        now: Millis,
    ) -> Result<Erasure> {
        check_json("reason_json", reason_json)?;
        let key_destroyed = sealing::shred(Arc::clone(&self.inner.vault), tenant_id).await?;
        let ended = in_tx!(self, |tx| erasure::end_waiting(
            &tx,
            tenant_id,
            reason_json,
            now
        )
        .await)?;
        Ok(Erasure {
            key_destroyed,
            ..ended
        })
    }

    async fn erase_subject(&self, subject: Subject, now: Millis) -> Result<SubjectErasure> {
        in_tx!(self, |tx| erasure::erase_subject(&tx, &subject, now).await)
    }

    async fn purge_expired(&self, purge: Purge) -> Result<Purged> {
        in_tx!(self, |tx| retention::purge(&tx, purge).await)
    }

    async fn list_identities(&self, filter: IdentityFilter) -> Result<Page<Identity>> {
        let db = self.db().await?;
        identities::list(&db, filter).await
    }

    async fn get_retention(&self, tenant_id: &str) -> Result<Option<TenantRetention>> {
        let db = self.db().await?;
        retention::get_retention(&db, tenant_id).await
    }

    async fn put_retention(&self, retention: TenantRetention) -> Result<()> {
        let db = self.db().await?;
        retention::put_retention(&db, &retention).await
    }

    async fn payload_shape(&self, connection_id: &str, kind: &str) -> Result<Option<String>> {
        let db = self.db().await?;
        drift::payload_shape(&db, connection_id, kind).await
    }

    async fn save_payload_shapes(&self, shapes: Vec<SavedShape>) -> Result<()> {
        in_tx!(self, |tx| drift::save_payload_shapes(&tx, &shapes).await)
    }

    async fn record_drifts(&self, drifts: Vec<NewDrift>, since: Millis) -> Result<u64> {
        in_tx!(self, |tx| drift::record_drifts(&tx, &drifts, since).await)
    }

    async fn list_drifts(&self, connection_id: &str, page: PageRequest) -> Result<Page<Drift>> {
        let db = self.db().await?;
        drift::list_drifts(&db, connection_id, page).await
    }

    async fn add_signature_failures(
        &self,
        counts: Vec<(String, Millis, u64)>,
        forget_before: Millis,
    ) -> Result<()> {
        in_tx!(self, |tx| health::add_signature_failures(
            &tx,
            &counts,
            forget_before
        )
        .await)
    }

    async fn health_rules(&self, tenant_id: &str) -> Result<Option<String>> {
        let db = self.db().await?;
        health::health_rules(&db, tenant_id).await
    }

    async fn set_health_rules(&self, tenant_id: &str, rules_json: &str, now: Millis) -> Result<()> {
        in_tx!(self, |tx| health::set_health_rules(
            &tx, tenant_id, rules_json, now
        )
        .await)
    }

    async fn record_health(&self, record: HealthRecord) -> Result<AlertChanges> {
        let schema = self.inner.schema.clone();
        in_tx!(self, |tx| health::record_health(&tx, &schema, &record)
            .await)
    }

    async fn list_health(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
    ) -> Result<Vec<HealthSnapshot>> {
        let db = self.db().await?;
        health::list_health(&db, tenant_id, org_id).await
    }

    async fn get_health(&self, connection_id: &str) -> Result<Option<HealthSnapshot>> {
        let db = self.db().await?;
        health::get_health(&db, connection_id).await
    }

    async fn list_alerts(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        filter: AlertFilter,
        request: PageRequest,
    ) -> Result<Page<Alert>> {
        let db = self.db().await?;
        health::list_alerts(&db, tenant_id, org_id, filter, request).await
    }

    async fn connections_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Connection>> {
        let db = self.db().await?;
        health::connections_after(&db, after, limit).await
    }

    fn write_stats(&self) -> WriteStats {
        self.inner.counters.snapshot()
    }
}

#[cfg(test)]
pub(crate) mod tests;
