//! Polling in PostgreSQL: schedules and checkpoints (`poll_state`), runs (`poll_runs`), the
//! requests recorded with deliveries and runs (`http_exchanges`); and OAuth's pending
//! authorizations and connection auth, which polling pauses on.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{
    Filtered, execute, get, int, lock, page, query_all, query_opt, small, text_enum, uint,
};
use crate::egress::Exchange;
use crate::store::sealing::{self, Sealer};
use crate::store::{
    ConnectionAuth, Error, Millis, OAuthState, Page, PageRequest, PollCheckpoint, PollClaim,
    PollEnd, PollRun, PollRunStatus, PollState, PollTrigger, Result, StoredExchange, new_id,
    page_size,
};
use crate::vault::{Purpose, Vault};

const POLL_RUN: &str = "id, connection_id, tenant_id, trigger, started_at, finished_at, status, \
    pages, events, records, requests, cursor_before, cursor_after, reason";
const POLL_STATE: &str = "connection_id, cursor, next_run_at, failures, run_id, lease_until";
const EXCHANGE: &str = "delivery_id, invocation_id, started_at, method, url, request_headers_json, \
    request_bytes, status, response_headers_json, response_bytes, response_body, attempts, \
    duration_us, error";

fn poll_run_row(row: &Row) -> Result<PollRun> {
    Ok(PollRun {
        id: get(row, "id")?,
        connection_id: get(row, "connection_id")?,
        tenant_id: get(row, "tenant_id")?,
        trigger: text_enum(row, "trigger")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        status: text_enum(row, "status")?,
        pages: uint(row, "pages")?,
        events: uint(row, "events")?,
        records: uint(row, "records")?,
        requests: uint(row, "requests")?,
        cursor_before: get(row, "cursor_before")?,
        cursor_after: get(row, "cursor_after")?,
        reason: get(row, "reason")?,
    })
}

fn poll_state_row(row: &Row) -> Result<PollState> {
    Ok(PollState {
        connection_id: get(row, "connection_id")?,
        cursor: get(row, "cursor")?,
        next_run_at: get(row, "next_run_at")?,
        failures: small(row, "failures")?,
        run_id: get(row, "run_id")?,
        lease_until: get(row, "lease_until")?,
    })
}

fn exchange_row(row: &Row, vault: &Vault) -> Result<StoredExchange> {
    let stored = get::<Option<Vec<u8>>>(row, "response_body")?.unwrap_or_default();
    let (response_body, response_erased) = sealing::open_bytes(vault, Purpose::Response, stored)?;
    let headers = |column: &str| -> Result<Vec<(String, String)>> {
        Ok(serde_json::from_str(get(row, column)?).unwrap_or_default())
    };
    let status = get::<Option<i64>>(row, "status")?
        .map(|status| {
            u16::try_from(status)
                .map_err(|_| Error::Backend(format!("column status: {status} is no status")))
        })
        .transpose()?;
    Ok(StoredExchange {
        delivery_id: get(row, "delivery_id")?,
        invocation_id: get(row, "invocation_id")?,
        exchange: Exchange {
            started_at: get(row, "started_at")?,
            method: get(row, "method")?,
            url: get(row, "url")?,
            request_headers: headers("request_headers_json")?,
            request_bytes: uint(row, "request_bytes")?,
            status,
            response_headers: headers("response_headers_json")?,
            response_bytes: uint(row, "response_bytes")?,
            attempts: small(row, "attempts")?,
            duration_us: uint(row, "duration_us")?,
            error: get(row, "error")?,
            response_body,
        },
        response_erased,
    })
}

/// Whose an exchange is.
pub(super) struct ExchangeOwner<'a> {
    pub delivery_id: Option<&'a str>,
    pub invocation_id: Option<&'a str>,
    pub poll_run_id: Option<&'a str>,
}

pub(super) async fn insert_exchange(
    db: &impl GenericClient,
    sealer: Sealer<'_>,
    owner: ExchangeOwner<'_>,
    seq: usize,
    exchange: &Exchange,
) -> Result<()> {
    let headers = |headers: &[(String, String)]| {
        serde_json::to_string(headers).map_err(|e| Error::Invalid(format!("headers: {e}")))
    };
    execute(
        db,
        "INSERT INTO http_exchanges (delivery_id, invocation_id, poll_run_id, seq, started_at, \
         method, url, request_headers_json, request_bytes, status, response_headers_json, \
         response_bytes, response_body, attempts, duration_us, error) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        &[
            &owner.delivery_id,
            &owner.invocation_id,
            &owner.poll_run_id,
            &int(seq as u64),
            &exchange.started_at,
            &exchange.method,
            &exchange.url,
            &headers(&exchange.request_headers)?,
            &int(exchange.request_bytes),
            &exchange.status.map(i64::from),
            &headers(&exchange.response_headers)?,
            &int(exchange.response_bytes),
            &sealer.bytes(Purpose::Response, &exchange.response_body)?,
            &i64::from(exchange.attempts),
            &int(exchange.duration_us),
            &exchange.error,
        ],
    )
    .await?;
    Ok(())
}

/// A poll page's checkpoint, in its completion's transaction (see [`PollCheckpoint`]). The
/// update is conditional on the run's lease: a run that lost it to another host updates
/// nothing, and the whole completion is refused.
pub(super) async fn checkpoint(
    db: &impl GenericClient,
    connection_id: &str,
    checkpoint: &PollCheckpoint,
    appended: usize,
) -> Result<()> {
    let fenced = match &checkpoint.advance {
        Some(after) => {
            execute(
                db,
                "UPDATE poll_state SET cursor = coalesce($5, cursor), lease_until = $6 \
                 WHERE connection_id = $1 AND run_id = $2 AND lease_owner = $3 \
                   AND cursor IS NOT DISTINCT FROM $4",
                &[
                    &connection_id,
                    &checkpoint.run_id,
                    &checkpoint.owner,
                    &checkpoint.cursor_before,
                    after,
                    &checkpoint.lease_until,
                ],
            )
            .await?
        }
        None => {
            execute(
                db,
                "UPDATE poll_state SET lease_until = $4 \
                 WHERE connection_id = $1 AND run_id = $2 AND lease_owner = $3",
                &[
                    &connection_id,
                    &checkpoint.run_id,
                    &checkpoint.owner,
                    &checkpoint.lease_until,
                ],
            )
            .await?
        }
    };
    if fenced != 1 {
        return Err(Error::Conflict(format!(
            "poll run {} no longer holds connection {connection_id} at this cursor (its lease \
             ended and another run took over)",
            checkpoint.run_id
        )));
    }
    let cursor_after = checkpoint.advance.clone().flatten();
    execute(
        db,
        "UPDATE poll_runs SET pages = pages + 1, events = events + $2, requests = requests + $3, \
         records = records + $5, cursor_after = coalesce($4, cursor_after, cursor_before) \
         WHERE id = $1",
        &[
            &checkpoint.run_id,
            &int(appended as u64),
            &i64::from(checkpoint.requests),
            &cursor_after,
            &i64::from(checkpoint.records),
        ],
    )
    .await?;
    Ok(())
}

/// Marks a run still recorded as running (its host stopped) interrupted.
async fn interrupt(db: &impl GenericClient, run_id: Option<&str>, now: Millis) -> Result<()> {
    if let Some(run_id) = run_id {
        execute(
            db,
            "UPDATE poll_runs SET status = 'interrupted', finished_at = $2, \
             reason = 'the host running it stopped, or lost its lease, before it ended' \
             WHERE id = $1 AND status = 'running'",
            &[&run_id, &now],
        )
        .await?;
    }
    Ok(())
}

async fn get_run(db: &impl GenericClient, run_id: &str) -> Result<Option<PollRun>> {
    query_opt(
        db,
        &format!("SELECT {POLL_RUN} FROM poll_runs WHERE id = $1"),
        &[&run_id],
        poll_run_row,
    )
    .await
}

/// Starts a run of `connection_id` (its poll state made if it has none): records it, takes
/// the lease.
async fn start(
    db: &impl GenericClient,
    connection_id: &str,
    trigger: PollTrigger,
    now: Millis,
    owner: &str,
    lease_until: Millis,
) -> Result<PollClaim> {
    let tenant_id: String = query_opt(
        db,
        "SELECT tenant_id FROM connections WHERE id = $1",
        &[&connection_id],
        |row| get(row, "tenant_id"),
    )
    .await?
    .ok_or_else(|| Error::NotFound(format!("connection {connection_id}")))?;
    execute(
        db,
        "INSERT INTO poll_state (connection_id, next_run_at) VALUES ($1, $2) \
         ON CONFLICT (connection_id) DO NOTHING",
        &[&connection_id, &now],
    )
    .await?;
    let state = query_opt(
        db,
        &format!("SELECT {POLL_STATE} FROM poll_state WHERE connection_id = $1 FOR UPDATE"),
        &[&connection_id],
        poll_state_row,
    )
    .await?
    .ok_or_else(|| Error::Backend("a poll state just written is missing".into()))?;
    interrupt(db, state.run_id.as_deref(), now).await?;
    let run_id = new_id();
    execute(
        db,
        "UPDATE poll_state SET run_id = $2, lease_owner = $3, lease_until = $4 \
         WHERE connection_id = $1",
        &[&connection_id, &run_id, &owner, &lease_until],
    )
    .await?;
    execute(
        db,
        "INSERT INTO poll_runs (id, connection_id, tenant_id, trigger, owner, started_at, status, \
         cursor_before) VALUES ($1, $2, $3, $4, $5, $6, 'running', $7)",
        &[
            &run_id,
            &connection_id,
            &tenant_id,
            &trigger.as_str(),
            &owner,
            &now,
            &state.cursor,
        ],
    )
    .await?;
    let run = get_run(db, &run_id)
        .await?
        .ok_or_else(|| Error::Backend("a poll run just written is missing".into()))?;
    Ok(PollClaim {
        run,
        cursor: state.cursor,
        failures: state.failures,
    })
}

pub(super) async fn claim_polls(
    db: &impl GenericClient,
    lock_key: &str,
    now: Millis,
    owner: &str,
    lease_until: Millis,
    limit: usize,
) -> Result<Vec<PollClaim>> {
    // One claim at a time across hosts: each sees the leases the one before it took.
    lock(db, lock_key).await?;
    let due = query_all(
        db,
        "SELECT c.id FROM connections c LEFT JOIN poll_state p ON p.connection_id = c.id \
         WHERE (c.polling_json::jsonb ->> 'interval_secs') IS NOT NULL \
           AND c.status = 'active' \
           AND NOT EXISTS (SELECT 1 FROM connection_auth a \
                           WHERE a.connection_id = c.id AND a.state = 'error') \
           AND (p.connection_id IS NULL \
                OR (p.next_run_at <= $1 AND (p.lease_until IS NULL OR p.lease_until <= $1))) \
         ORDER BY coalesce(p.next_run_at, 0), c.id LIMIT $2",
        &[&now, &int(limit as u64)],
        |row| get::<String>(row, "id"),
    )
    .await?;
    let mut claims = Vec::with_capacity(due.len());
    for id in &due {
        claims.push(start(db, id, PollTrigger::Schedule, now, owner, lease_until).await?);
    }
    Ok(claims)
}

pub(super) async fn claim_poll_now(
    db: &impl GenericClient,
    lock_key: &str,
    connection_id: &str,
    now: Millis,
    owner: &str,
    lease_until: Millis,
) -> Result<PollClaim> {
    lock(db, lock_key).await?;
    let (polling, status): (Option<String>, String) = query_opt(
        db,
        "SELECT polling_json, status FROM connections WHERE id = $1",
        &[&connection_id],
        |row| Ok((get(row, "polling_json")?, get(row, "status")?)),
    )
    .await?
    .ok_or_else(|| Error::NotFound(format!("connection {connection_id}")))?;
    if polling.is_none() {
        return Err(Error::Invalid(format!(
            "connection {connection_id} has no polling settings"
        )));
    }
    if status != "active" {
        return Err(Error::Invalid(format!(
            "connection {connection_id} is disabled"
        )));
    }
    let leased: Option<Millis> = query_opt(
        db,
        "SELECT lease_until FROM poll_state WHERE connection_id = $1",
        &[&connection_id],
        |row| get(row, "lease_until"),
    )
    .await?
    .flatten();
    if leased.is_some_and(|until| until > now) {
        return Err(Error::Conflict(format!(
            "a poll run of connection {connection_id} is under way"
        )));
    }
    start(
        db,
        connection_id,
        PollTrigger::Manual,
        now,
        owner,
        lease_until,
    )
    .await
}

pub(super) async fn finish_poll(
    db: &impl GenericClient,
    vault: &Vault,
    end: &PollEnd,
) -> Result<PollRun> {
    let run = get_run(db, &end.run_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("poll run {}", end.run_id)))?;
    let sealer = Sealer {
        vault,
        tenant_id: &run.tenant_id,
    };
    for (seq, exchange) in end.exchanges.iter().enumerate() {
        insert_exchange(
            db,
            sealer,
            ExchangeOwner {
                delivery_id: None,
                invocation_id: None,
                poll_run_id: Some(&end.run_id),
            },
            seq,
            exchange,
        )
        .await?;
    }
    execute(
        db,
        "UPDATE poll_runs SET status = $2, reason = $3, finished_at = $4, \
         requests = requests + $5 WHERE id = $1 AND status = 'running'",
        &[
            &end.run_id,
            &end.status.as_str(),
            &end.reason,
            &end.at,
            &i64::from(end.requests),
        ],
    )
    .await?;
    // Only the run holding the lease schedules the next one.
    let failed = end.status == PollRunStatus::Failed;
    execute(
        db,
        "UPDATE poll_state SET next_run_at = $4, lease_owner = NULL, lease_until = NULL, \
         failures = CASE WHEN $5::boolean THEN failures + 1 ELSE 0 END \
         WHERE connection_id = $1 AND run_id = $2 AND lease_owner = $3",
        &[
            &run.connection_id,
            &end.run_id,
            &end.owner,
            &end.next_run_at,
            &failed,
        ],
    )
    .await?;
    get_run(db, &end.run_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("poll run {}", end.run_id)))
}

pub(super) async fn poll_state(
    db: &impl GenericClient,
    connection_id: &str,
) -> Result<Option<PollState>> {
    query_opt(
        db,
        &format!("SELECT {POLL_STATE} FROM poll_state WHERE connection_id = $1"),
        &[&connection_id],
        poll_state_row,
    )
    .await
}

pub(super) async fn list_poll_runs(
    db: &impl GenericClient,
    connection_id: &str,
    request: PageRequest,
) -> Result<Page<PollRun>> {
    let limit = page_size(request.limit);
    let mut query = Filtered::new(format!("SELECT {POLL_RUN} FROM poll_runs WHERE 1 = 1"));
    query.and("connection_id = ?", Some(connection_id.to_owned()));
    query.and("id < ?", request.cursor);
    let items = query
        .run(db, "ORDER BY id DESC", limit, poll_run_row)
        .await?;
    Ok(page(items, limit, |run| run.id.clone()))
}

pub(super) async fn get_poll_run(db: &impl GenericClient, run_id: &str) -> Result<Option<PollRun>> {
    get_run(db, run_id).await
}

pub(super) async fn list_run_exchanges(
    db: &impl GenericClient,
    vault: &Vault,
    run_id: &str,
) -> Result<Vec<StoredExchange>> {
    query_all(
        db,
        &format!(
            "SELECT {EXCHANGE} FROM http_exchanges WHERE poll_run_id = $1 \
             ORDER BY started_at, id"
        ),
        &[&run_id],
        |row| exchange_row(row, vault),
    )
    .await
}

pub(super) async fn list_exchanges(
    db: &impl GenericClient,
    vault: &Vault,
    delivery_id: &str,
) -> Result<Vec<StoredExchange>> {
    query_all(
        db,
        &format!("SELECT {EXCHANGE} FROM http_exchanges WHERE delivery_id = $1 ORDER BY seq, id"),
        &[&delivery_id],
        |row| exchange_row(row, vault),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// OAuth

pub(super) async fn create_oauth_state(db: &impl GenericClient, state: &OAuthState) -> Result<()> {
    super::require_connection(db, &state.connection_id).await?;
    execute(
        db,
        "INSERT INTO oauth_states (state_hash, connection_id, tenant_id, org_id, created_by, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &state.state_hash,
            &state.connection_id,
            &state.tenant_id,
            &state.org_id,
            &state.created_by,
            &state.created_at,
            &state.expires_at,
        ],
    )
    .await?;
    // Expired ones are of no use to anyone.
    execute(
        db,
        "DELETE FROM oauth_states WHERE expires_at < $1 - 86400000",
        &[&state.created_at],
    )
    .await?;
    Ok(())
}

pub(super) async fn take_oauth_state(
    db: &impl GenericClient,
    state_hash: &str,
    now: Millis,
) -> Result<OAuthState> {
    // Locked: of two hosts taking one state at once, the second sees it used.
    let found = query_opt(
        db,
        "SELECT connection_id, tenant_id, org_id, created_by, created_at, expires_at, used_at \
         FROM oauth_states WHERE state_hash = $1 FOR UPDATE",
        &[&state_hash],
        |row| {
            Ok((
                OAuthState {
                    state_hash: state_hash.to_owned(),
                    connection_id: get(row, "connection_id")?,
                    tenant_id: get(row, "tenant_id")?,
                    org_id: get(row, "org_id")?,
                    created_by: get(row, "created_by")?,
                    created_at: get(row, "created_at")?,
                    expires_at: get(row, "expires_at")?,
                },
                get::<Option<Millis>>(row, "used_at")?,
            ))
        },
    )
    .await?;
    let Some((state, used_at)) = found else {
        return Err(Error::NotFound("no such authorization".into()));
    };
    if used_at.is_some() {
        return Err(Error::Conflict(
            "this authorization was already used: start a new one".into(),
        ));
    }
    execute(
        db,
        "UPDATE oauth_states SET used_at = $2 WHERE state_hash = $1",
        &[&state_hash, &now],
    )
    .await?;
    Ok(state)
}

pub(super) async fn set_connection_auth(
    db: &impl GenericClient,
    auth: &ConnectionAuth,
) -> Result<()> {
    super::require_connection(db, &auth.connection_id).await?;
    execute(
        db,
        "INSERT INTO connection_auth (connection_id, state, reason, connected_by, \
         connected_at, changed_at, access_expires_at, scopes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (connection_id) DO UPDATE SET state = excluded.state, \
         reason = excluded.reason, connected_by = excluded.connected_by, \
         connected_at = excluded.connected_at, changed_at = excluded.changed_at, \
         access_expires_at = excluded.access_expires_at, scopes = excluded.scopes",
        &[
            &auth.connection_id,
            &auth.state.as_str(),
            &auth.reason,
            &auth.connected_by,
            &auth.connected_at,
            &auth.changed_at,
            &auth.access_expires_at,
            &auth.scopes,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn connection_auth(
    db: &impl GenericClient,
    connection_id: &str,
) -> Result<Option<ConnectionAuth>> {
    query_opt(
        db,
        "SELECT state, reason, connected_by, connected_at, changed_at, access_expires_at, \
         scopes FROM connection_auth WHERE connection_id = $1",
        &[&connection_id],
        |row| {
            Ok(ConnectionAuth {
                connection_id: connection_id.to_owned(),
                state: text_enum(row, "state")?,
                reason: get(row, "reason")?,
                connected_by: get(row, "connected_by")?,
                connected_at: get(row, "connected_at")?,
                changed_at: get(row, "changed_at")?,
                access_expires_at: get(row, "access_expires_at")?,
                scopes: get(row, "scopes")?,
            })
        },
    )
    .await
}
