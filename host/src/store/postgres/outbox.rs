//! The outbox in PostgreSQL: claims and publication, replays, subscribers and their
//! deliveries.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{
    Filtered, execute, get, int, lock, page, query_all, query_opt, seq_cursor, small, text_enum,
    uint,
};
use crate::store::sealing;
use crate::store::{
    AttemptNext, Error, Millis, NewReplay, NewSubscriber, OutboxFilter, OutboxLag, OutboxRow,
    OutboxStatus, Page, PageRequest, Replay, ReplayStatus, Result, Subscriber, SubscriberAttempt,
    SubscriberDelivery, SubscriberDeliveryFilter, SubscriberDeliveryStatus, SubscriberJob,
    SubscriberUpdate, bounded_error, millis, new_id, page_size,
};
use crate::vault::{Purpose, Vault};

const OUTBOX: &str = "seq, event_id, tenant_id, org_id, event_type, entity_type, entity_id, \
    payload_json, metadata_json, delivery_id, connection_id, created_at, status, attempts, \
    next_attempt_at, published_at, last_error";
const REPLAY: &str = "id, tenant_id, org_id, from_ms, to_ms, event_type, requested_by, \
    requested_at, status, replayed, finished_at, error, target, subscriber_id, queued";
const SUBSCRIBER: &str =
    "id, tenant_id, org_id, url, event_types_json, secret_ref, enabled, created_at";
const SUBSCRIBER_DELIVERY: &str = "subscriber_id, outbox_seq, status, attempts, \
    next_attempt_at, last_status, last_error, updated_at";

fn outbox_row(row: &Row, vault: &Vault) -> Result<OutboxRow> {
    let (payload_json, payload_erased) =
        sealing::open_text(vault, Purpose::Payload, get(row, "payload_json")?, || {
            sealing::ERASED_PAYLOAD.to_owned()
        })?;
    Ok(OutboxRow {
        seq: get(row, "seq")?,
        event_id: get(row, "event_id")?,
        tenant_id: get(row, "tenant_id")?,
        org_id: get(row, "org_id")?,
        event_type: get(row, "event_type")?,
        entity_type: get(row, "entity_type")?,
        entity_id: get(row, "entity_id")?,
        payload_json,
        payload_erased,
        metadata_json: get(row, "metadata_json")?,
        delivery_id: get(row, "delivery_id")?,
        connection_id: get(row, "connection_id")?,
        created_at: get(row, "created_at")?,
        status: text_enum(row, "status")?,
        attempts: small(row, "attempts")?,
        next_attempt_at: get(row, "next_attempt_at")?,
        published_at: get(row, "published_at")?,
        last_error: get(row, "last_error")?,
    })
}

fn replay_row(row: &Row) -> Result<Replay> {
    Ok(Replay {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        org_id: get(row, "org_id")?,
        from: get(row, "from_ms")?,
        to: get(row, "to_ms")?,
        event_type: get(row, "event_type")?,
        requested_by: get(row, "requested_by")?,
        requested_at: get(row, "requested_at")?,
        status: text_enum(row, "status")?,
        replayed: uint(row, "replayed")?,
        finished_at: get(row, "finished_at")?,
        error: get(row, "error")?,
        target: text_enum(row, "target")?,
        subscriber_id: get(row, "subscriber_id")?,
        queued: uint(row, "queued")?,
    })
}

fn subscriber_row(row: &Row) -> Result<Subscriber> {
    Ok(Subscriber {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        org_id: get(row, "org_id")?,
        url: get(row, "url")?,
        event_types: super::json_column(row, "event_types_json")?,
        secret_ref: get(row, "secret_ref")?,
        enabled: get(row, "enabled")?,
        created_at: get(row, "created_at")?,
    })
}

fn subscriber_delivery_row(row: &Row) -> Result<SubscriberDelivery> {
    let last_status = get::<Option<i64>>(row, "last_status")?
        .map(|status| {
            u16::try_from(status)
                .map_err(|_| Error::Backend(format!("column last_status: {status} is no status")))
        })
        .transpose()?;
    Ok(SubscriberDelivery {
        subscriber_id: get(row, "subscriber_id")?,
        outbox_seq: get(row, "outbox_seq")?,
        status: text_enum(row, "status")?,
        attempts: small(row, "attempts")?,
        next_attempt_at: get(row, "next_attempt_at")?,
        last_status,
        last_error: get(row, "last_error")?,
        updated_at: get(row, "updated_at")?,
    })
}

async fn get_outbox_row(
    db: &impl GenericClient,
    vault: &Vault,
    seq: i64,
) -> Result<Option<OutboxRow>> {
    query_opt(
        db,
        &format!("SELECT {OUTBOX} FROM outbox WHERE seq = $1"),
        &[&seq],
        |row| outbox_row(row, vault),
    )
    .await
}

/// `NotFound` when the outbox has no row `seq`.
async fn require_outbox_row(db: &impl GenericClient, vault: &Vault, seq: i64) -> Result<OutboxRow> {
    get_outbox_row(db, vault, seq)
        .await?
        .ok_or_else(|| Error::NotFound(format!("outbox row {seq}")))
}

pub(super) async fn claim_outbox(
    db: &impl GenericClient,
    vault: &Vault,
    lock_key: &str,
    limit: usize,
    now: Millis,
    lease: Millis,
) -> Result<Vec<OutboxRow>> {
    // One claim at a time, across hosts: a claim sees the rows the one before it took (not
    // due any more) and so skips their entities, which keeps each entity in one relay's hands.
    lock(db, lock_key).await?;
    // A due row is claimed unless an earlier row of its entity is pending and not due (in
    // flight under another claim, or waiting for a retry). The outer conditions are checked
    // again on a row changed since the statement began (published, say): it is left alone.
    let mut rows = query_all(
        db,
        &format!(
            "WITH picked AS MATERIALIZED ( \
               SELECT o.seq AS picked_seq FROM outbox o \
               WHERE o.status = 'pending' AND o.next_attempt_at <= $1 \
                 AND NOT EXISTS ( \
                   SELECT 1 FROM outbox e \
                   WHERE e.status = 'pending' AND e.tenant_id = o.tenant_id \
                     AND e.entity_type = o.entity_type AND e.entity_id = o.entity_id \
                     AND e.next_attempt_at > $1 AND e.seq < o.seq) \
               ORDER BY o.seq LIMIT $2) \
             UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $3 FROM picked \
             WHERE seq = picked_seq AND status = 'pending' AND next_attempt_at <= $1 \
             RETURNING {OUTBOX}"
        ),
        &[&now, &int(limit as u64), &now.saturating_add(lease)],
        |row| outbox_row(row, vault),
    )
    .await?;
    rows.sort_unstable_by_key(|row| row.seq);
    Ok(rows)
}

pub(super) async fn mark_published(
    db: &impl GenericClient,
    seqs: &[i64],
    now: Millis,
) -> Result<()> {
    execute(
        db,
        "UPDATE outbox SET status = 'published', published_at = $2, last_error = NULL \
         WHERE seq = ANY($1) AND status <> 'published'",
        &[&seqs, &now],
    )
    .await?;
    Ok(())
}

pub(super) async fn release_outbox(
    db: &impl GenericClient,
    seqs: &[i64],
    now: Millis,
) -> Result<()> {
    execute(
        db,
        "UPDATE outbox SET attempts = GREATEST(attempts - 1, 0), next_attempt_at = $2 \
         WHERE seq = ANY($1) AND status = 'pending'",
        &[&seqs, &now],
    )
    .await?;
    Ok(())
}

pub(super) async fn mark_publish_failed(
    db: &impl GenericClient,
    seq: i64,
    error: &str,
    next_attempt_at: Millis,
    dead: bool,
) -> Result<()> {
    let error = bounded_error(error);
    let status = if dead {
        OutboxStatus::Dead
    } else {
        OutboxStatus::Pending
    };
    let changed = execute(
        db,
        "UPDATE outbox SET status = $2, last_error = $3, next_attempt_at = $4 \
         WHERE seq = $1 AND status = 'pending'",
        &[&seq, &status.as_str(), &error, &next_attempt_at],
    )
    .await?;
    if changed == 0 {
        // Already published (or dead): a late report changes nothing.
        query_opt(db, "SELECT seq FROM outbox WHERE seq = $1", &[&seq], |_| {
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("outbox row {seq}")))?;
    }
    Ok(())
}

pub(super) async fn retry_outbox_event(
    db: &impl GenericClient,
    vault: &Vault,
    seq: i64,
    now: Millis,
) -> Result<()> {
    let row = require_outbox_row(db, vault, seq).await?;
    if row.status == OutboxStatus::Published {
        return Err(Error::Conflict(format!(
            "outbox row {seq} is already published"
        )));
    }
    execute(
        db,
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $2 \
         WHERE seq = $1 AND status <> 'published'",
        &[&seq, &now],
    )
    .await?;
    Ok(())
}

pub(super) async fn outbox_lag(db: &impl GenericClient) -> Result<OutboxLag> {
    let lag = query_opt(
        db,
        "SELECT count(*) AS pending, min(created_at) AS oldest FROM outbox \
         WHERE status = 'pending'",
        &[],
        |row| {
            Ok(OutboxLag {
                pending: uint(row, "pending")?,
                oldest_pending_created_at: get(row, "oldest")?,
            })
        },
    )
    .await?;
    Ok(lag.unwrap_or(OutboxLag {
        pending: 0,
        oldest_pending_created_at: None,
    }))
}

pub(super) async fn list_outbox(
    db: &impl GenericClient,
    vault: &Vault,
    filter: OutboxFilter,
) -> Result<Page<OutboxRow>> {
    let limit = page_size(filter.limit);
    let before = seq_cursor(filter.cursor.as_ref())?;
    let mut query = Filtered::new(format!("SELECT {OUTBOX} FROM outbox WHERE 1 = 1"));
    query.and("tenant_id = ?", Some(filter.tenant_id));
    // An event without an org is platform level only when its connection is: one an org's
    // connection emitted (before that was refused) stays that org's.
    query.and(
        "coalesce(org_id, (SELECT c.org_id FROM connections c \
           WHERE c.id = outbox.connection_id), ?) = ?",
        filter.org_id,
    );
    query.and("event_type = ?", filter.event_type);
    query.and("entity_type = ?", filter.entity_type);
    query.and("entity_id = ?", filter.entity_id);
    query.and("status = ?", filter.status.map(|s| s.as_str().to_owned()));
    query.and("connection_id = ?", filter.connection_id);
    query.and("created_at >= ?", filter.since);
    query.and("created_at < ?", filter.until);
    query.and("seq < ?", before);
    let items = query
        .run(db, "ORDER BY seq DESC", limit, |row| outbox_row(row, vault))
        .await?;
    Ok(page(items, limit, |row| row.seq.to_string()))
}

pub(super) async fn replay_range(
    db: &impl GenericClient,
    vault: &Vault,
    replay: &Replay,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>> {
    query_all(
        db,
        &format!(
            "SELECT {OUTBOX} FROM outbox WHERE tenant_id = $1 AND org_id IS NOT DISTINCT FROM $2 \
             AND status = 'published' AND created_at >= $3 AND created_at < $4 \
             AND ($5::text IS NULL OR event_type = $5) AND seq > $6 ORDER BY seq LIMIT $7"
        ),
        &[
            &replay.tenant_id,
            &replay.org_id,
            &replay.from,
            &replay.to,
            &replay.event_type,
            &after_seq,
            &int(page_size(limit) as u64),
        ],
        |row| outbox_row(row, vault),
    )
    .await
}

pub(super) async fn get_event(
    db: &impl GenericClient,
    vault: &Vault,
    event_id: &str,
) -> Result<Option<OutboxRow>> {
    query_opt(
        db,
        &format!("SELECT {OUTBOX} FROM outbox WHERE event_id = $1"),
        &[&event_id],
        |row| outbox_row(row, vault),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Replays

pub(super) async fn start_replay(
    db: &impl GenericClient,
    lock_key: &str,
    new: &NewReplay,
    max_per_hour: u32,
) -> Result<Replay> {
    // The tenant's replays are counted one start at a time, across hosts.
    lock(db, lock_key).await?;
    let hour_ago = new.requested_at - millis(std::time::Duration::from_secs(3600));
    let running = query_opt(
        db,
        "SELECT count(*) AS n FROM replays WHERE tenant_id = $1 AND status = 'running'",
        &[&new.tenant_id],
        |row| get::<i64>(row, "n"),
    )
    .await?
    .unwrap_or_default();
    if running > 0 {
        return Err(Error::Limited(
            "a replay of this tenant is running: one at a time".into(),
        ));
    }
    let recent = query_opt(
        db,
        "SELECT count(*) AS n FROM replays WHERE tenant_id = $1 AND requested_at > $2",
        &[&new.tenant_id, &hour_ago],
        |row| get::<i64>(row, "n"),
    )
    .await?
    .unwrap_or_default();
    if recent >= i64::from(max_per_hour) {
        return Err(Error::Limited(format!(
            "a tenant may start {max_per_hour} replays an hour"
        )));
    }
    let replay = Replay {
        id: new_id(),
        tenant_id: new.tenant_id.clone(),
        org_id: new.org_id.clone(),
        from: new.from,
        to: new.to,
        event_type: new.event_type.clone(),
        target: new.target,
        subscriber_id: new.subscriber_id.clone(),
        requested_by: new.requested_by.clone(),
        requested_at: new.requested_at,
        status: ReplayStatus::Running,
        queued: 0,
        replayed: 0,
        finished_at: None,
        error: None,
    };
    execute(
        db,
        &format!(
            "INSERT INTO replays ({REPLAY}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, NULL, NULL, $10, $11, 0)"
        ),
        &[
            &replay.id,
            &replay.tenant_id,
            &replay.org_id,
            &replay.from,
            &replay.to,
            &replay.event_type,
            &replay.requested_by,
            &replay.requested_at,
            &replay.status.as_str(),
            &replay.target.as_str(),
            &replay.subscriber_id,
        ],
    )
    .await?;
    Ok(replay)
}

pub(super) async fn finish_replay(
    db: &impl GenericClient,
    id: &str,
    replayed: u64,
    queued: u64,
    error: Option<&str>,
    now: Millis,
) -> Result<Replay> {
    let status = if error.is_some() {
        ReplayStatus::Failed
    } else {
        ReplayStatus::Done
    };
    let error = error.map(bounded_error);
    let changed = execute(
        db,
        "UPDATE replays SET status = $2, replayed = $3, finished_at = $4, error = $5, \
         queued = $6 WHERE id = $1 AND status = 'running'",
        &[
            &id,
            &status.as_str(),
            &int(replayed),
            &now,
            &error,
            &int(queued),
        ],
    )
    .await?;
    if changed == 0 {
        return Err(Error::Conflict(format!("replay {id} is not running")));
    }
    get_replay(db, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("replay {id}")))
}

pub(super) async fn get_replay(db: &impl GenericClient, id: &str) -> Result<Option<Replay>> {
    query_opt(
        db,
        &format!("SELECT {REPLAY} FROM replays WHERE id = $1"),
        &[&id],
        replay_row,
    )
    .await
}

pub(super) async fn list_replays(
    db: &impl GenericClient,
    tenant_id: &str,
    org_id: Option<&str>,
    request: PageRequest,
) -> Result<Page<Replay>> {
    let limit = page_size(request.limit);
    let mut query = Filtered::new(format!("SELECT {REPLAY} FROM replays WHERE 1 = 1"));
    query.and("tenant_id = ?", Some(tenant_id.to_owned()));
    query.and("(org_id IS NULL OR org_id = ?)", org_id.map(str::to_owned));
    query.and("id < ?", request.cursor);
    let items = query.run(db, "ORDER BY id DESC", limit, replay_row).await?;
    Ok(page(items, limit, |r| r.id.clone()))
}

// ---------------------------------------------------------------------------------------------
// Subscribers

pub(super) async fn create_subscriber(
    db: &impl GenericClient,
    new: &NewSubscriber,
    event_types_json: &str,
) -> Result<Subscriber> {
    let subscriber = Subscriber {
        id: new_id(),
        tenant_id: new.tenant_id.clone(),
        org_id: new.org_id.clone(),
        url: new.url.clone(),
        event_types: new.event_types.clone(),
        secret_ref: new.secret_ref.clone(),
        enabled: new.enabled,
        created_at: new.created_at,
    };
    execute(
        db,
        &format!("INSERT INTO subscribers ({SUBSCRIBER}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
        &[
            &subscriber.id,
            &subscriber.tenant_id,
            &subscriber.org_id,
            &subscriber.url,
            &event_types_json,
            &subscriber.secret_ref,
            &subscriber.enabled,
            &subscriber.created_at,
        ],
    )
    .await?;
    Ok(subscriber)
}

pub(super) async fn get_subscriber(
    db: &impl GenericClient,
    id: &str,
) -> Result<Option<Subscriber>> {
    query_opt(
        db,
        &format!("SELECT {SUBSCRIBER} FROM subscribers WHERE id = $1"),
        &[&id],
        subscriber_row,
    )
    .await
}

pub(super) async fn list_subscribers(
    db: &impl GenericClient,
    tenant_id: &str,
    org_id: Option<&str>,
    request: PageRequest,
) -> Result<Page<Subscriber>> {
    let limit = page_size(request.limit);
    let mut query = Filtered::new(format!("SELECT {SUBSCRIBER} FROM subscribers WHERE 1 = 1"));
    query.and("tenant_id = ?", Some(tenant_id.to_owned()));
    query.and("(org_id IS NULL OR org_id = ?)", org_id.map(str::to_owned));
    query.and("id > ?", request.cursor);
    let items = query.run(db, "ORDER BY id", limit, subscriber_row).await?;
    Ok(page(items, limit, |s| s.id.clone()))
}

pub(super) async fn find_subscriber(
    db: &impl GenericClient,
    tenant_id: &str,
    org_id: Option<&str>,
    url: &str,
) -> Result<Option<Subscriber>> {
    query_opt(
        db,
        &format!(
            "SELECT {SUBSCRIBER} FROM subscribers \
             WHERE tenant_id = $1 AND org_id IS NOT DISTINCT FROM $2 AND url = $3 \
             ORDER BY id LIMIT 1"
        ),
        &[&tenant_id, &org_id, &url],
        subscriber_row,
    )
    .await
}

pub(super) async fn update_subscriber(
    db: &impl GenericClient,
    id: &str,
    update: &SubscriberUpdate,
    event_types_json: &str,
) -> Result<Subscriber> {
    let changed = execute(
        db,
        "UPDATE subscribers SET url = $2, event_types_json = $3, secret_ref = $4, enabled = $5 \
         WHERE id = $1",
        &[
            &id,
            &update.url,
            &event_types_json,
            &update.secret_ref,
            &update.enabled,
        ],
    )
    .await?;
    if changed == 0 {
        return Err(Error::NotFound(format!("subscriber {id}")));
    }
    get_subscriber(db, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("subscriber {id}")))
}

/// Queues subscriber deliveries of outbox rows: new ones once (a row already queued for a
/// subscriber is left as it is), or again for a replay (whatever became of them), for every
/// subscriber or only `Again(Some(id))`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Queue<'a> {
    New,
    Again(Option<&'a str>),
}

pub(super) async fn queue_subscriber_deliveries(
    db: &impl GenericClient,
    vault: &Vault,
    seqs: &[i64],
    how: Queue<'_>,
    now: Millis,
) -> Result<u64> {
    let on_conflict = match how {
        Queue::New => "DO NOTHING",
        Queue::Again(_) => {
            "DO UPDATE SET status = 'pending', attempts = 0, \
             next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at"
        }
    };
    let insert = format!(
        "INSERT INTO subscriber_deliveries (subscriber_id, outbox_seq, entity_type, \
         entity_id, status, attempts, next_attempt_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5) \
         ON CONFLICT (subscriber_id, outbox_seq) {on_conflict}"
    );
    let mut by_tenant: HashMap<String, Vec<Subscriber>> = HashMap::new();
    let mut queued = 0;
    for &seq in seqs {
        let row = require_outbox_row(db, vault, seq).await?;
        if !by_tenant.contains_key(&row.tenant_id) {
            let subscribers = query_all(
                db,
                &format!("SELECT {SUBSCRIBER} FROM subscribers WHERE tenant_id = $1 AND enabled"),
                &[&row.tenant_id],
                subscriber_row,
            )
            .await?;
            by_tenant.insert(row.tenant_id.clone(), subscribers);
        }
        for subscriber in by_tenant.get(&row.tenant_id).into_iter().flatten() {
            let chosen = match how {
                Queue::New | Queue::Again(None) => true,
                Queue::Again(Some(only)) => subscriber.id == only,
            };
            if chosen && subscriber.wants(&row) {
                queued += execute(
                    db,
                    &insert,
                    &[&subscriber.id, &seq, &row.entity_type, &row.entity_id, &now],
                )
                .await?;
            }
        }
    }
    Ok(queued)
}

pub(super) async fn release_subscriber_deliveries(
    db: &impl GenericClient,
    deliveries: &[(String, i64)],
    now: Millis,
) -> Result<()> {
    let (subscribers, seqs): (Vec<&str>, Vec<i64>) = deliveries
        .iter()
        .map(|(subscriber, seq)| (subscriber.as_str(), *seq))
        .unzip();
    execute(
        db,
        "UPDATE subscriber_deliveries d \
         SET attempts = GREATEST(d.attempts - 1, 0), next_attempt_at = $3, updated_at = $3 \
         FROM unnest($1::text[], $2::bigint[]) AS r(subscriber_id, outbox_seq) \
         WHERE d.subscriber_id = r.subscriber_id AND d.outbox_seq = r.outbox_seq \
           AND d.status = 'pending'",
        &[&subscribers, &seqs, &now],
    )
    .await?;
    Ok(())
}

pub(super) async fn claim_subscriber_deliveries(
    db: &impl GenericClient,
    vault: &Vault,
    lock_key: &str,
    limit: usize,
    now: Millis,
    lease: Millis,
) -> Result<Vec<SubscriberJob>> {
    // One claim at a time across hosts, as for the outbox; and as there, a due delivery is
    // claimed unless an earlier one of its subscriber and entity is pending and not due, so a
    // run of one entity comes in one claim.
    lock(db, lock_key).await?;
    let due = query_all(
        db,
        "SELECT d.subscriber_id, d.outbox_seq FROM subscriber_deliveries d \
         JOIN subscribers s ON s.id = d.subscriber_id \
         WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND s.enabled \
           AND NOT EXISTS (SELECT 1 FROM subscriber_deliveries e \
                           WHERE e.status = 'pending' AND e.subscriber_id = d.subscriber_id \
                             AND e.entity_type = d.entity_type AND e.entity_id = d.entity_id \
                             AND e.next_attempt_at > $1 AND e.outbox_seq < d.outbox_seq) \
         ORDER BY d.outbox_seq, d.subscriber_id LIMIT $2",
        &[&now, &int(limit as u64)],
        |row| {
            Ok((
                get::<String>(row, "subscriber_id")?,
                get::<i64>(row, "outbox_seq")?,
            ))
        },
    )
    .await?;
    let mut subscribers: HashMap<String, Subscriber> = HashMap::new();
    let mut jobs = Vec::with_capacity(due.len());
    for (subscriber_id, seq) in due {
        // Still pending and due: one marked (or retried by hand) since it was picked is left.
        let attempts = query_opt(
            db,
            "UPDATE subscriber_deliveries SET attempts = attempts + 1, next_attempt_at = $3, \
             updated_at = $4 WHERE subscriber_id = $1 AND outbox_seq = $2 \
               AND status = 'pending' AND next_attempt_at <= $4 RETURNING attempts",
            &[&subscriber_id, &seq, &now.saturating_add(lease), &now],
            |row| small(row, "attempts"),
        )
        .await?;
        let Some(attempts) = attempts else {
            continue;
        };
        if !subscribers.contains_key(&subscriber_id) {
            let subscriber = get_subscriber(db, &subscriber_id)
                .await?
                .ok_or_else(|| Error::NotFound(format!("subscriber {subscriber_id}")))?;
            subscribers.insert(subscriber_id.clone(), subscriber);
        }
        let subscriber = subscribers
            .get(&subscriber_id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("subscriber {subscriber_id}")))?;
        jobs.push(SubscriberJob {
            subscriber,
            event: require_outbox_row(db, vault, seq).await?,
            attempts,
        });
    }
    Ok(jobs)
}

async fn subscriber_delivery_status(
    db: &impl GenericClient,
    subscriber_id: &str,
    seq: i64,
) -> Result<SubscriberDeliveryStatus> {
    query_opt(
        db,
        "SELECT status FROM subscriber_deliveries \
         WHERE subscriber_id = $1 AND outbox_seq = $2 FOR UPDATE",
        &[&subscriber_id, &seq],
        |row| text_enum(row, "status"),
    )
    .await?
    .ok_or_else(|| Error::NotFound(format!("delivery of event {seq} to {subscriber_id}")))
}

pub(super) async fn mark_subscriber_deliveries(
    db: &impl GenericClient,
    attempts: &[(String, i64, SubscriberAttempt)],
) -> Result<()> {
    for (subscriber_id, seq, attempt) in attempts {
        record_subscriber_attempt(db, subscriber_id, *seq, attempt).await?;
    }
    Ok(())
}

pub(super) async fn mark_subscriber_delivery(
    db: &impl GenericClient,
    subscriber_id: &str,
    seq: i64,
    attempt: &SubscriberAttempt,
) -> Result<()> {
    subscriber_delivery_status(db, subscriber_id, seq).await?;
    record_subscriber_attempt(db, subscriber_id, seq, attempt).await
}

/// Records an attempt on a delivery (none when it is gone).
async fn record_subscriber_attempt(
    db: &impl GenericClient,
    subscriber_id: &str,
    seq: i64,
    attempt: &SubscriberAttempt,
) -> Result<()> {
    let error = attempt.error.as_deref().map(bounded_error);
    let (status, next_attempt_at) = match attempt.next {
        AttemptNext::Delivered => (SubscriberDeliveryStatus::Delivered, None),
        AttemptNext::RetryAt(at) => (SubscriberDeliveryStatus::Pending, Some(at)),
        AttemptNext::Dead => (SubscriberDeliveryStatus::Dead, None),
    };
    execute(
        db,
        "UPDATE subscriber_deliveries SET status = $3, \
         next_attempt_at = coalesce($4, next_attempt_at), last_status = $5, \
         last_error = $6, updated_at = $7 \
         WHERE subscriber_id = $1 AND outbox_seq = $2",
        &[
            &subscriber_id,
            &seq,
            &status.as_str(),
            &next_attempt_at,
            &attempt.status_code.map(i64::from),
            &error,
            &attempt.at,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn retry_subscriber_delivery(
    db: &impl GenericClient,
    subscriber_id: &str,
    seq: i64,
    now: Millis,
) -> Result<()> {
    if subscriber_delivery_status(db, subscriber_id, seq).await?
        == SubscriberDeliveryStatus::Delivered
    {
        return Err(Error::Conflict(format!(
            "event {seq} was already delivered to {subscriber_id}"
        )));
    }
    execute(
        db,
        "UPDATE subscriber_deliveries SET status = 'pending', attempts = 0, \
         next_attempt_at = $3, updated_at = $3 \
         WHERE subscriber_id = $1 AND outbox_seq = $2",
        &[&subscriber_id, &seq, &now],
    )
    .await?;
    Ok(())
}

pub(super) async fn list_subscriber_deliveries(
    db: &impl GenericClient,
    filter: SubscriberDeliveryFilter,
) -> Result<Page<SubscriberDelivery>> {
    let limit = page_size(filter.limit);
    let before = seq_cursor(filter.cursor.as_ref())?;
    let mut query = Filtered::new(format!(
        "SELECT {SUBSCRIBER_DELIVERY} FROM subscriber_deliveries WHERE 1 = 1"
    ));
    query.and("subscriber_id = ?", Some(filter.subscriber_id));
    query.and("status = ?", filter.status.map(|s| s.as_str().to_owned()));
    query.and("outbox_seq < ?", before);
    let items = query
        .run(
            db,
            "ORDER BY outbox_seq DESC",
            limit,
            subscriber_delivery_row,
        )
        .await?;
    Ok(page(items, limit, |d| d.outbox_seq.to_string()))
}
