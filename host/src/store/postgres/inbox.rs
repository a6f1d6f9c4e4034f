//! The inbox in PostgreSQL: deliveries, their completions (invocations, events, state) and
//! their recovery.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{Filtered, execute, get, int, lock, page, polls, query_all, query_opt, small, uint};
use crate::store::sealing::{self, Sealer};
use crate::store::{
    Completed, Completion, Delivery, DeliveryFilter, DeliveryInfo, DeliveryKind, DeliveryStatus,
    Error, Invocation, InvocationRecord, Millis, NewDelivery, Page, Prepared, Recorded, Result,
    StateCommit, StateSnapshot, Taken, check_json, empty_log, millis, new_id, page_size,
};
use crate::vault::{Purpose, Vault};

const DELIVERY_INFO: &str = "id, connection_id, tenant_id, received_at, provider_delivery_id, \
    body_sha256, coalesce(body_bytes, octet_length(body)::bigint) AS body_bytes, method, path, query, status, \
    attempts, reason_json, processed_at, trace_id, kind, poll_run_id, cursor, body_purged_at";
const INVOCATION: &str = "id, delivery_id, adapter_id, adapter_version, adapter_sha256, \
    input_sha256, started_at, duration_us, fuel, peak_memory_bytes, bytes_in, bytes_out, events, \
    outcome, detail_json, log_json, export, replay_json";
/// What an invocation's row answers: what was inserted, and when its log was purged.
const INVOCATION_READ: &str = "id, delivery_id, adapter_id, adapter_version, adapter_sha256, \
    input_sha256, started_at, duration_us, fuel, peak_memory_bytes, bytes_in, bytes_out, events, \
    outcome, detail_json, log_json, export, log_purged_at";

fn delivery_info_row(row: &Row) -> Result<DeliveryInfo> {
    Ok(DeliveryInfo {
        id: get(row, "id")?,
        connection_id: get(row, "connection_id")?,
        tenant_id: get(row, "tenant_id")?,
        received_at: get(row, "received_at")?,
        provider_delivery_id: get(row, "provider_delivery_id")?,
        body_sha256: get(row, "body_sha256")?,
        body_bytes: uint(row, "body_bytes")?,
        method: get(row, "method")?,
        path: get(row, "path")?,
        query: get(row, "query")?,
        status: super::text_enum(row, "status")?,
        attempts: small(row, "attempts")?,
        reason_json: get(row, "reason_json")?,
        processed_at: get(row, "processed_at")?,
        trace_id: get(row, "trace_id")?,
        kind: super::text_enum(row, "kind")?,
        poll_run_id: get(row, "poll_run_id")?,
        cursor: get(row, "cursor")?,
        body_purged_at: get(row, "body_purged_at")?,
    })
}

fn delivery_row(row: &Row, vault: &Vault) -> Result<Delivery> {
    let (body, body_erased) = sealing::open_bytes(vault, Purpose::Body, get(row, "body")?)?;
    Ok(Delivery {
        info: delivery_info_row(row)?,
        headers: super::json_column(row, "headers_json")?,
        body,
        body_erased,
    })
}

fn invocation_row(row: &Row, vault: &Vault) -> Result<Invocation> {
    let (log_json, log_erased) =
        sealing::open_text(vault, Purpose::Log, get(row, "log_json")?, empty_log)?;
    Ok(Invocation {
        id: get(row, "id")?,
        delivery_id: get(row, "delivery_id")?,
        record: InvocationRecord {
            export: super::text_enum(row, "export")?,
            adapter_id: get(row, "adapter_id")?,
            adapter_version: small(row, "adapter_version")?,
            adapter_sha256: get(row, "adapter_sha256")?,
            input_sha256: get(row, "input_sha256")?,
            started_at: get(row, "started_at")?,
            duration_us: uint(row, "duration_us")?,
            fuel: uint(row, "fuel")?,
            peak_memory_bytes: uint(row, "peak_memory_bytes")?,
            bytes_in: uint(row, "bytes_in")?,
            bytes_out: uint(row, "bytes_out")?,
            events: uint(row, "events")?,
            outcome: super::text_enum(row, "outcome")?,
            detail_json: get(row, "detail_json")?,
            log_json,
            replay_json: None,
        },
        log_purged_at: get(row, "log_purged_at")?,
        log_erased,
    })
}

/// A delivery with its body's hash and headers' JSON computed before the transaction.
pub(super) struct PreparedDelivery {
    new: NewDelivery,
    body_sha256: String,
    headers_json: String,
    window: Millis,
}

impl PreparedDelivery {
    pub(super) fn new(new: NewDelivery, dedupe_window: Duration) -> Result<Self> {
        Ok(Self {
            body_sha256: new.content_sha256(),
            headers_json: serde_json::to_string(&new.headers)
                .map_err(|e| Error::Invalid(format!("headers: {e}")))?,
            window: millis(dedupe_window),
            new,
        })
    }

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

/// What finds the original of a retried delivery (see [`crate::store::Store::record_delivery`]).
struct DedupeKey<'a> {
    kind: DeliveryKind,
    connection_id: &'a str,
    provider_delivery_id: Option<&'a str>,
    body_sha256: &'a str,
    received_at: Millis,
    window: Millis,
}

impl DedupeKey<'_> {
    /// Takes, until the commit, the lock that the retries of this delivery share: a retry
    /// arriving at another host meanwhile waits, then finds this one.
    async fn lock(&self, db: &impl GenericClient, schema: &str) -> Result<()> {
        if self.kind == DeliveryKind::Poll {
            return Ok(());
        }
        let key = match self.provider_delivery_id {
            Some(id) => format!(
                "adapter-host {schema} delivery {} id {id}",
                self.connection_id
            ),
            None => format!(
                "adapter-host {schema} delivery {} body {}",
                self.connection_id, self.body_sha256
            ),
        };
        lock(db, &key).await
    }
}

/// The tenant of a connection; `NotFound` for an unknown one.
async fn connection_tenant(db: &impl GenericClient, connection_id: &str) -> Result<String> {
    query_opt(
        db,
        "SELECT tenant_id FROM connections WHERE id = $1",
        &[&connection_id],
        |row| get(row, "tenant_id"),
    )
    .await?
    .ok_or_else(|| Error::NotFound(format!("connection {connection_id}")))
}

/// The delivery that `key` is a retry of, if any. A page a poll run fetched is never one (see
/// the embedded store).
async fn find_original(db: &impl GenericClient, key: &DedupeKey<'_>) -> Result<Option<Recorded>> {
    if key.kind == DeliveryKind::Poll {
        return Ok(None);
    }
    let map = |row: &Row| -> Result<(String, DeliveryStatus)> {
        Ok((get(row, "id")?, super::text_enum(row, "status")?))
    };
    let original = match key.provider_delivery_id {
        Some(provider_id) => {
            query_opt(
                db,
                "SELECT id, status FROM deliveries \
                 WHERE connection_id = $1 AND provider_delivery_id = $2",
                &[&key.connection_id, &provider_id],
                map,
            )
            .await?
        }
        None => {
            query_opt(
                db,
                "SELECT id, status FROM deliveries \
                 WHERE connection_id = $1 AND body_sha256 = $2 \
                   AND received_at >= $3 AND received_at <= $4 \
                 ORDER BY received_at, id LIMIT 1",
                &[
                    &key.connection_id,
                    &key.body_sha256,
                    &key.received_at.saturating_sub(key.window),
                    &key.received_at.saturating_add(key.window),
                ],
                map,
            )
            .await?
        }
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
async fn insert_delivery(
    db: &impl GenericClient,
    vault: &Vault,
    id: &str,
    tenant_id: &str,
    p: &PreparedDelivery,
    inserted: Inserted<'_>,
) -> Result<()> {
    let new = &p.new;
    let body = vault.seal(tenant_id, Purpose::Body, &new.body)?;
    let body_bytes = int(new.body.len() as u64);
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
    execute(
        db,
        "INSERT INTO deliveries (id, connection_id, tenant_id, received_at, \
         provider_delivery_id, body_sha256, method, path, query, headers_json, body, status, \
         attempts, reason_json, processed_at, trace_id, lease_until, kind, poll_run_id, cursor, \
         body_bytes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $14, $15, $16, $17, \
                 $18, $19, $20)",
        &[
            &id,
            &new.connection_id,
            &tenant_id,
            &new.received_at,
            &new.provider_delivery_id,
            &p.body_sha256,
            &new.method,
            &new.path,
            &new.query,
            &p.headers_json,
            &body,
            &status.as_str(),
            &reason_json,
            &processed_at,
            &new.trace_id,
            &lease_until,
            &new.kind.as_str(),
            &new.poll_run_id,
            &new.cursor,
            &body_bytes,
        ],
    )
    .await?;
    // Only a time at least a second later is written: the row is left alone (and unlocked)
    // otherwise. Writing every delivery's time would lock the connection's row until commit
    // and queue every delivery of the connection behind the one before, on every node.
    execute(
        db,
        "UPDATE connections SET last_delivery_at = $2 \
         WHERE id = $1 AND (last_delivery_at IS NULL OR last_delivery_at <= $2::bigint - 1000)",
        &[&new.connection_id, &new.received_at],
    )
    .await?;
    Ok(())
}

pub(super) async fn record_delivery(
    db: &impl GenericClient,
    vault: &Vault,
    schema: &str,
    p: &PreparedDelivery,
    lease_until: Millis,
) -> Result<Recorded> {
    let tenant_id = connection_tenant(db, &p.new.connection_id).await?;
    let key = p.key();
    key.lock(db, schema).await?;
    if let Some(original) = find_original(db, &key).await? {
        return Ok(original);
    }
    let id = new_id();
    insert_delivery(
        db,
        vault,
        &id,
        &tenant_id,
        p,
        Inserted::Received { lease_until },
    )
    .await?;
    Ok(Recorded {
        id,
        duplicate: false,
        status: DeliveryStatus::Received,
    })
}

pub(super) async fn record_completed(
    db: &impl GenericClient,
    vault: &Vault,
    schema: &str,
    p: &PreparedDelivery,
    c: &Completion,
) -> Result<Taken> {
    let tenant_id = connection_tenant(db, &p.new.connection_id).await?;
    let key = p.key();
    key.lock(db, schema).await?;
    if let Some(original) = find_original(db, &key).await? {
        return Ok(Taken::Duplicate(original));
    }
    insert_delivery(
        db,
        vault,
        &c.delivery_id,
        &tenant_id,
        p,
        Inserted::Completed(c),
    )
    .await?;
    Ok(Taken::Completed(
        write_outcome(db, vault, schema, c, &p.new.connection_id, &tenant_id).await?,
    ))
}

pub(super) async fn prepare_delivery(
    db: &impl GenericClient,
    new: &NewDelivery,
    dedupe_window: Duration,
) -> Result<Prepared> {
    connection_tenant(db, &new.connection_id).await?;
    // The body's hash only matters to a delivery without the provider's id.
    let body_sha256 = match &new.provider_delivery_id {
        Some(_) => String::new(),
        None => new.content_sha256(),
    };
    let key = DedupeKey {
        kind: new.kind,
        connection_id: &new.connection_id,
        provider_delivery_id: new.provider_delivery_id.as_deref(),
        body_sha256: &body_sha256,
        received_at: new.received_at,
        window: millis(dedupe_window),
    };
    Ok(match find_original(db, &key).await? {
        Some(original) => Prepared::Duplicate(original),
        None => Prepared::New(load_state(db, &new.connection_id).await?),
    })
}

pub(super) async fn complete_delivery(
    db: &impl GenericClient,
    vault: &Vault,
    schema: &str,
    c: &Completion,
) -> Result<Completed> {
    let (connection_id, tenant_id): (String, String) = query_opt(
        db,
        "SELECT connection_id, tenant_id FROM deliveries WHERE id = $1",
        &[&c.delivery_id],
        |row| Ok((get(row, "connection_id")?, get(row, "tenant_id")?)),
    )
    .await?
    .ok_or_else(|| Error::NotFound(format!("delivery {}", c.delivery_id)))?;
    let completed = write_outcome(db, vault, schema, c, &connection_id, &tenant_id).await?;
    execute(
        db,
        "UPDATE deliveries SET status = $2, reason_json = $3, processed_at = $4, \
         attempts = attempts + $5, lease_until = NULL WHERE id = $1",
        &[
            &c.delivery_id,
            &c.status.as_str(),
            &c.reason_json,
            &c.completed_at,
            &i64::from(!c.attempt_counted),
        ],
    )
    .await?;
    Ok(completed)
}

/// What a completion writes besides the delivery's own row: the invocation record, the
/// events, the connection's new state, the poll run's checkpoint.
async fn write_outcome(
    db: &impl GenericClient,
    vault: &Vault,
    schema: &str,
    c: &Completion,
    connection_id: &str,
    tenant_id: &str,
) -> Result<Completed> {
    let sealer = Sealer { vault, tenant_id };
    for preceding in &c.preceding {
        insert_invocation(db, sealer, &new_id(), &c.delivery_id, preceding).await?;
    }
    let invocation_id = new_id();
    insert_invocation(db, sealer, &invocation_id, &c.delivery_id, &c.invocation).await?;
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
        )
        .await?;
    }

    let mut appended = Vec::with_capacity(c.events.len());
    let mut already_present = 0;
    if !c.events.is_empty() {
        // Each entity's lock is held until the commit: within an entity, `seq` order is
        // commit order, so a relay never sees a later row of it before an earlier one. Taken
        // in one order, so two completions never wait for each other in a cycle.
        let mut entities: Vec<String> = c
            .events
            .iter()
            .map(|e| {
                // A JSON array: unambiguous whatever the parts hold (text cannot hold NUL).
                let entity = serde_json::json!([tenant_id, e.entity_type, e.entity_id]);
                format!("adapter-host {schema} entity {entity}")
            })
            .collect();
        entities.sort_unstable();
        entities.dedup();
        for entity in &entities {
            lock(db, entity).await?;
        }
        for event in &c.events {
            let seq = query_opt(
                db,
                "INSERT INTO outbox (event_id, tenant_id, org_id, event_type, entity_type, \
                 entity_id, payload_json, metadata_json, delivery_id, connection_id, created_at, \
                 status, attempts, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', 0, $11) \
                 ON CONFLICT (event_id) DO NOTHING RETURNING seq",
                &[
                    &event.event_id,
                    &tenant_id,
                    &event.org_id,
                    &event.event_type,
                    &event.entity_type,
                    &event.entity_id,
                    &sealer.text(Purpose::Payload, &event.payload_json)?,
                    &event.metadata_json,
                    &c.delivery_id,
                    &connection_id,
                    &c.completed_at,
                ],
                |row| get::<i64>(row, "seq"),
            )
            .await?;
            match seq {
                Some(seq) => {
                    appended.push(seq);
                    super::identities::record(db, tenant_id, connection_id, event, c.completed_at)
                        .await?;
                }
                None => already_present += 1,
            }
        }
    }

    if let Some(commit) = &c.state {
        commit_state(db, connection_id, commit).await?;
    }
    if let Some(checkpoint) = &c.poll {
        polls::checkpoint(db, connection_id, checkpoint, appended.len()).await?;
    }
    Ok(Completed {
        invocation_id,
        appended,
        already_present,
    })
}

async fn insert_invocation(
    db: &impl GenericClient,
    sealer: Sealer<'_>,
    id: &str,
    delivery_id: &str,
    r: &InvocationRecord,
) -> Result<()> {
    execute(
        db,
        &format!(
            "INSERT INTO invocations ({INVOCATION}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        ),
        &[
            &id,
            &delivery_id,
            &r.adapter_id,
            &i64::from(r.adapter_version),
            &r.adapter_sha256,
            &r.input_sha256,
            &r.started_at,
            &int(r.duration_us),
            &int(r.fuel),
            &int(r.peak_memory_bytes),
            &int(r.bytes_in),
            &int(r.bytes_out),
            &int(r.events),
            &r.outcome.as_str(),
            &r.detail_json,
            &sealer.text(Purpose::Log, &r.log_json)?,
            &r.export.as_str(),
            &r.replay_json
                .as_deref()
                .map(|replay| sealer.text(Purpose::Replay, replay))
                .transpose()?,
        ],
    )
    .await?;
    Ok(())
}

/// Refuses a completion that does not end its delivery, or carries text that is not JSON.
pub(super) fn check_completion(completion: &Completion) -> Result<()> {
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

/// A connection's state; in a repeatable-read transaction, the map and its versions are of
/// one commit.
pub(super) async fn load_state(
    db: &impl GenericClient,
    connection_id: &str,
) -> Result<StateSnapshot> {
    let entries = query_all(
        db,
        "SELECT key, value, version FROM connection_state WHERE connection_id = $1",
        &[&connection_id],
        |row| {
            Ok((
                get::<String>(row, "key")?,
                get::<Vec<u8>>(row, "value")?,
                get::<i64>(row, "version")?,
            ))
        },
    )
    .await?;
    let version = query_opt(
        db,
        "SELECT version FROM connection_state_versions WHERE connection_id = $1",
        &[&connection_id],
        |row| get::<i64>(row, "version"),
    )
    .await?
    .unwrap_or(0);
    let mut snapshot = StateSnapshot {
        version,
        ..StateSnapshot::default()
    };
    for (key, value, version) in entries {
        snapshot.versions.insert(key.clone(), version);
        snapshot.map.insert(key, value);
    }
    Ok(snapshot)
}

/// Checks `commit` against the state as committed and applies its writes (see
/// [`StateCommit`]). The connection's version row is locked first, so the checks see every
/// commit before this one and none can slip in between (on any host).
async fn commit_state(
    db: &impl GenericClient,
    connection_id: &str,
    commit: &StateCommit,
) -> Result<()> {
    let stale = |why: String| {
        Err(Error::StaleState(format!(
            "connection {connection_id}: {why}"
        )))
    };
    execute(
        db,
        "INSERT INTO connection_state_versions (connection_id, version, keys, bytes) \
         VALUES ($1, 0, 0, 0) ON CONFLICT (connection_id) DO NOTHING",
        &[&connection_id],
    )
    .await?;
    // A commit that writes nothing only checks its reads: a shared lock, which commits of
    // other readers share and a writer's commit waits for (and they for it), so the deliveries
    // of a connection that only read its state commit side by side.
    let lock = if commit.writes.is_empty() {
        "FOR SHARE"
    } else {
        "FOR UPDATE"
    };
    let (mut version, mut keys, mut bytes) = query_opt(
        db,
        &format!(
            "SELECT version, keys, bytes FROM connection_state_versions \
             WHERE connection_id = $1 {lock}"
        ),
        &[&connection_id],
        |row| {
            Ok((
                get::<i64>(row, "version")?,
                get::<i64>(row, "keys")?,
                get::<i64>(row, "bytes")?,
            ))
        },
    )
    .await?
    .ok_or_else(|| Error::Backend("a state version just written is missing".into()))?;

    const KEY: &str = "SELECT version, (octet_length(key) + octet_length(value))::bigint AS size \
         FROM connection_state WHERE connection_id = $1 AND key = $2";
    for (key, seen) in &commit.reads {
        let now = query_opt(db, KEY, &[&connection_id, key], |row| {
            get::<i64>(row, "version")
        })
        .await?;
        if now != *seen {
            return stale(format!(
                "key {key:?} was written after the invocation read it"
            ));
        }
    }
    for (prefix, seen) in &commit.prefixes {
        let (count, newest) = query_opt(
            db,
            "SELECT count(*) AS keys, coalesce(max(version), 0)::bigint AS newest \
             FROM connection_state \
             WHERE connection_id = $1 AND key >= $2 AND starts_with(key, $2)",
            &[&connection_id, prefix],
            |row| Ok((get::<i64>(row, "keys")?, get::<i64>(row, "newest")?)),
        )
        .await?
        .unwrap_or((0, 0));
        // A key added or rewritten since has a newer version; with none, only a removal can
        // have changed the count.
        if newest > commit.base_version || count != int(*seen) {
            return stale(format!(
                "keys under {prefix:?} changed after the invocation listed them"
            ));
        }
    }
    if commit.writes.is_empty() {
        return Ok(());
    }
    let (keys_before, bytes_before) = (keys, bytes);
    version += 1;
    for (key, value) in &commit.writes {
        let old = query_opt(db, KEY, &[&connection_id, key], |row| {
            get::<i64>(row, "size")
        })
        .await?;
        if let Some(old) = old {
            keys -= 1;
            bytes -= old;
        }
        match value {
            Some(value) => {
                execute(
                    db,
                    "INSERT INTO connection_state (connection_id, key, value, version) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (connection_id, key) DO UPDATE \
                     SET value = excluded.value, version = excluded.version",
                    &[&connection_id, key, value, &version],
                )
                .await?;
                keys += 1;
                bytes += int((key.len() + value.len()) as u64);
            }
            None => {
                execute(
                    db,
                    "DELETE FROM connection_state WHERE connection_id = $1 AND key = $2",
                    &[&connection_id, key],
                )
                .await?;
            }
        }
    }
    // A state already past lowered bounds may stay there, but may not grow.
    let bounds = commit.bounds;
    if (keys > keys_before && keys > int(bounds.keys))
        || (bytes > bytes_before && bytes > int(bounds.bytes))
    {
        return stale(format!(
            "with the writes of invocations that ran beside it, the state would hold {keys} keys \
             and {bytes} bytes (at most {} and {})",
            bounds.keys, bounds.bytes
        ));
    }
    execute(
        db,
        "UPDATE connection_state_versions SET version = $2, keys = $3, bytes = $4 \
         WHERE connection_id = $1",
        &[&connection_id, &version, &keys, &bytes],
    )
    .await?;
    Ok(())
}

pub(super) async fn get_delivery(
    db: &impl GenericClient,
    vault: &Vault,
    id: &str,
) -> Result<Option<Delivery>> {
    query_opt(
        db,
        &format!("SELECT {DELIVERY_INFO}, headers_json, body FROM deliveries WHERE id = $1"),
        &[&id],
        |row| delivery_row(row, vault),
    )
    .await
}

pub(super) async fn list_deliveries(
    db: &impl GenericClient,
    filter: DeliveryFilter,
) -> Result<Page<DeliveryInfo>> {
    let limit = page_size(filter.limit);
    let mut query = Filtered::new(format!(
        "SELECT {DELIVERY_INFO} FROM deliveries WHERE 1 = 1"
    ));
    query.and("tenant_id = ?", filter.tenant_id);
    query.and("connection_id = ?", filter.connection_id);
    query.and(
        "connection_id IN (SELECT id FROM connections WHERE org_id IS NULL OR org_id = ?)",
        filter.org_id,
    );
    query.and("status = ?", filter.status.map(|s| s.as_str().to_owned()));
    query.and("received_at >= ?", filter.since);
    query.and("received_at < ?", filter.until);
    query.and("id < ?", filter.cursor);
    let items = query
        .run(db, "ORDER BY id DESC", limit, delivery_info_row)
        .await?;
    Ok(page(items, limit, |d| d.id.clone()))
}

pub(super) async fn claim_recovery(
    db: &impl GenericClient,
    vault: &Vault,
    now: Millis,
    lease_until: Millis,
    limit: usize,
) -> Result<Vec<Delivery>> {
    // Rows another host is claiming are skipped, not waited for; one it claimed and committed
    // meanwhile is checked again on its new lease. Picked once, in a materialized CTE: a
    // subquery with LIMIT and SKIP LOCKED may be run again by the plan, and pick other rows.
    let mut claimed = query_all(
        db,
        &format!(
            "WITH picked AS MATERIALIZED ( \
               SELECT id AS picked_id FROM deliveries WHERE status = 'received' \
                 AND (lease_until IS NULL OR lease_until <= $1) \
               ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE deliveries SET attempts = attempts + 1, lease_until = $2 FROM picked \
             WHERE id = picked_id AND status = 'received' \
             RETURNING {DELIVERY_INFO}, headers_json, body"
        ),
        &[&now, &lease_until, &int(limit as u64)],
        |row| delivery_row(row, vault),
    )
    .await?;
    claimed.sort_unstable_by(|a, b| a.info.id.cmp(&b.info.id));
    Ok(claimed)
}

pub(super) async fn park_delivery(
    db: &impl GenericClient,
    id: &str,
    reason_json: &str,
    now: Millis,
) -> Result<()> {
    let changed = execute(
        db,
        "UPDATE deliveries SET status = 'failed', reason_json = $2, processed_at = $3, \
         lease_until = NULL WHERE id = $1 AND status = 'received'",
        &[&id, &reason_json, &now],
    )
    .await?;
    if changed == 1 {
        return Ok(());
    }
    match query_opt(
        db,
        "SELECT status FROM deliveries WHERE id = $1",
        &[&id],
        |row| get::<String>(row, "status"),
    )
    .await?
    {
        Some(status) => Err(Error::Conflict(format!(
            "delivery {id} is {status}, not received"
        ))),
        None => Err(Error::NotFound(format!("delivery {id}"))),
    }
}

pub(super) async fn get_invocation_replay(
    db: &impl GenericClient,
    vault: &Vault,
    invocation_id: &str,
) -> Result<Option<(Invocation, Option<String>)>> {
    let Some(row) = db
        .query_opt(
            &format!("SELECT {INVOCATION_READ}, replay_json FROM invocations WHERE id = $1"),
            &[&invocation_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let invocation = invocation_row(&row, vault)?;
    let replay = match get::<Option<String>>(&row, "replay_json")? {
        Some(stored) => match sealing::open_text(vault, Purpose::Replay, stored, String::new)? {
            (_, true) => None,
            (text, false) => Some(text),
        },
        None => None,
    };
    Ok(Some((invocation, replay)))
}

pub(super) async fn list_invocations(
    db: &impl GenericClient,
    vault: &Vault,
    delivery_id: &str,
) -> Result<Vec<Invocation>> {
    query_all(
        db,
        &format!("SELECT {INVOCATION_READ} FROM invocations WHERE delivery_id = $1 ORDER BY id"),
        &[&delivery_id],
        |row| invocation_row(row, vault),
    )
    .await
}
