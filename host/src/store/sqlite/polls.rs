//! Polling in the embedded store: schedules and checkpoints (`poll_state`), runs
//! (`poll_runs`) and the requests recorded with deliveries and runs (`http_exchanges`).

use rusqlite::{Connection as Db, OptionalExtension, Row, params};

use super::{int, query_all, query_one, text_enum, uint};
use crate::egress::Exchange;
use crate::store::sealing::{self, Sealer};
use crate::store::{
    Error, Millis, PollCheckpoint, PollClaim, PollEnd, PollRun, PollRunStatus, PollState,
    PollTrigger, Result, StoredExchange, new_id,
};
use crate::vault::{Purpose, Vault};

pub(super) const POLL_RUN: &str = "id, connection_id, tenant_id, trigger, started_at, \
    finished_at, status, pages, events, records, requests, cursor_before, cursor_after, reason";
const POLL_STATE: &str = "connection_id, cursor, next_run_at, failures, run_id, lease_until";
const EXCHANGE: &str = "delivery_id, invocation_id, started_at, method, url, request_headers_json, \
    request_bytes, status, response_headers_json, response_bytes, response_body, attempts, \
    duration_us, error";

pub(super) fn poll_run_row(row: &Row<'_>) -> rusqlite::Result<PollRun> {
    Ok(PollRun {
        id: row.get("id")?,
        connection_id: row.get("connection_id")?,
        tenant_id: row.get("tenant_id")?,
        trigger: text_enum(row, "trigger")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        status: text_enum(row, "status")?,
        pages: uint(row, "pages")?,
        events: uint(row, "events")?,
        records: uint(row, "records")?,
        requests: uint(row, "requests")?,
        cursor_before: row.get("cursor_before")?,
        cursor_after: row.get("cursor_after")?,
        reason: row.get("reason")?,
    })
}

fn poll_state_row(row: &Row<'_>) -> rusqlite::Result<PollState> {
    Ok(PollState {
        connection_id: row.get("connection_id")?,
        cursor: row.get("cursor")?,
        next_run_at: row.get("next_run_at")?,
        failures: row.get("failures")?,
        run_id: row.get("run_id")?,
        lease_until: row.get("lease_until")?,
    })
}

fn exchange_row(row: &Row<'_>, vault: &Vault) -> rusqlite::Result<StoredExchange> {
    let stored = row.get::<_, Option<Vec<u8>>>("response_body")?;
    let (response_body, response_erased) =
        sealing::open_bytes(vault, Purpose::Response, stored.unwrap_or_default())
            .map_err(|e| super::conversion("response_body", e))?;
    let json = |column: &str| -> rusqlite::Result<Vec<(String, String)>> {
        let text: String = row.get(column)?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    };
    Ok(StoredExchange {
        delivery_id: row.get("delivery_id")?,
        invocation_id: row.get("invocation_id")?,
        exchange: Exchange {
            started_at: row.get("started_at")?,
            method: row.get("method")?,
            url: row.get("url")?,
            request_headers: json("request_headers_json")?,
            request_bytes: uint(row, "request_bytes")?,
            status: row.get("status")?,
            response_headers: json("response_headers_json")?,
            response_bytes: uint(row, "response_bytes")?,
            attempts: row.get("attempts")?,
            duration_us: uint(row, "duration_us")?,
            error: row.get("error")?,
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

pub(super) fn insert_exchange(
    db: &Db,
    sealer: Sealer<'_>,
    owner: ExchangeOwner<'_>,
    seq: usize,
    exchange: &Exchange,
) -> Result<()> {
    let headers = |headers: &[(String, String)]| {
        serde_json::to_string(headers).map_err(|e| Error::Invalid(format!("headers: {e}")))
    };
    db.prepare_cached(
        "INSERT INTO http_exchanges (delivery_id, invocation_id, poll_run_id, seq, started_at, \
         method, url, request_headers_json, request_bytes, status, response_headers_json, \
         response_bytes, response_body, attempts, duration_us, error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        owner.delivery_id,
        owner.invocation_id,
        owner.poll_run_id,
        int(seq as u64),
        exchange.started_at,
        exchange.method,
        exchange.url,
        headers(&exchange.request_headers)?,
        int(exchange.request_bytes),
        exchange.status,
        headers(&exchange.response_headers)?,
        int(exchange.response_bytes),
        sealer.bytes(Purpose::Response, &exchange.response_body)?,
        exchange.attempts,
        int(exchange.duration_us),
        exchange.error,
    ])?;
    Ok(())
}

/// A poll page's checkpoint, in its completion's transaction (see [`PollCheckpoint`]).
pub(super) fn checkpoint(
    db: &Db,
    connection_id: &str,
    checkpoint: &PollCheckpoint,
    appended: usize,
) -> Result<()> {
    let fenced = match &checkpoint.advance {
        Some(after) => db
            .prepare_cached(
                "UPDATE poll_state SET cursor = coalesce(?5, cursor), lease_until = ?6 \
                 WHERE connection_id = ?1 AND run_id = ?2 AND lease_owner = ?3 \
                   AND cursor IS ?4",
            )?
            .execute(params![
                connection_id,
                checkpoint.run_id,
                checkpoint.owner,
                checkpoint.cursor_before,
                after,
                checkpoint.lease_until,
            ])?,
        None => db
            .prepare_cached(
                "UPDATE poll_state SET lease_until = ?4 \
                 WHERE connection_id = ?1 AND run_id = ?2 AND lease_owner = ?3",
            )?
            .execute(params![
                connection_id,
                checkpoint.run_id,
                checkpoint.owner,
                checkpoint.lease_until,
            ])?,
    };
    if fenced != 1 {
        return Err(Error::Conflict(format!(
            "poll run {} no longer holds connection {connection_id} at this cursor (its lease \
             ended and another run took over)",
            checkpoint.run_id
        )));
    }
    let cursor_after = checkpoint.advance.clone().flatten();
    db.prepare_cached(
        "UPDATE poll_runs SET pages = pages + 1, events = events + ?2, requests = requests + ?3, \
         records = records + ?5, cursor_after = coalesce(?4, cursor_after, cursor_before) \
         WHERE id = ?1",
    )?
    .execute(params![
        checkpoint.run_id,
        int(appended as u64),
        checkpoint.requests,
        cursor_after,
        checkpoint.records,
    ])?;
    Ok(())
}

/// Marks a run still recorded as running (its host stopped) interrupted.
fn interrupt(db: &Db, run_id: Option<&str>, now: Millis) -> Result<()> {
    if let Some(run_id) = run_id {
        db.prepare_cached(
            "UPDATE poll_runs SET status = 'interrupted', finished_at = ?2, \
             reason = 'the host running it stopped, or lost its lease, before it ended' \
             WHERE id = ?1 AND status = 'running'",
        )?
        .execute(params![run_id, now])?;
    }
    Ok(())
}

/// Starts a run of `connection_id` (its poll state made if it has none): records it, takes
/// the lease.
fn start(
    db: &Db,
    connection_id: &str,
    trigger: PollTrigger,
    now: Millis,
    owner: &str,
    lease_until: Millis,
) -> Result<PollClaim> {
    let tenant_id: String = query_one(
        db,
        "SELECT tenant_id FROM connections WHERE id = ?1",
        [connection_id],
        |row| row.get(0),
    )?
    .ok_or_else(|| Error::NotFound(format!("connection {connection_id}")))?;
    db.prepare_cached(
        "INSERT INTO poll_state (connection_id, next_run_at) VALUES (?1, ?2) \
         ON CONFLICT (connection_id) DO NOTHING",
    )?
    .execute(params![connection_id, now])?;
    let state = query_one(
        db,
        &format!("SELECT {POLL_STATE} FROM poll_state WHERE connection_id = ?1"),
        [connection_id],
        poll_state_row,
    )?
    .ok_or_else(|| Error::Backend("a poll state just written is missing".into()))?;
    interrupt(db, state.run_id.as_deref(), now)?;
    let run_id = new_id();
    db.prepare_cached(
        "UPDATE poll_state SET run_id = ?2, lease_owner = ?3, lease_until = ?4 \
         WHERE connection_id = ?1",
    )?
    .execute(params![connection_id, run_id, owner, lease_until])?;
    db.prepare_cached(
        "INSERT INTO poll_runs (id, connection_id, tenant_id, trigger, owner, started_at, status, \
         cursor_before) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7)",
    )?
    .execute(params![
        run_id,
        connection_id,
        tenant_id,
        trigger.as_str(),
        owner,
        now,
        state.cursor,
    ])?;
    let run = query_one(
        db,
        &format!("SELECT {POLL_RUN} FROM poll_runs WHERE id = ?1"),
        [&run_id],
        poll_run_row,
    )?
    .ok_or_else(|| Error::Backend("a poll run just written is missing".into()))?;
    Ok(PollClaim {
        run,
        cursor: state.cursor,
        failures: state.failures,
    })
}

pub(super) fn claim_polls(
    db: &Db,
    now: Millis,
    owner: &str,
    lease_until: Millis,
    limit: usize,
) -> Result<Vec<PollClaim>> {
    let due = query_all(
        db,
        "SELECT c.id FROM connections c LEFT JOIN poll_state p ON p.connection_id = c.id \
         WHERE json_extract(c.polling_json, '$.interval_secs') IS NOT NULL \
           AND c.status = 'active' \
           AND NOT EXISTS (SELECT 1 FROM connection_auth a \
                           WHERE a.connection_id = c.id AND a.state = 'error') \
           AND (p.connection_id IS NULL \
                OR (p.next_run_at <= ?1 AND (p.lease_until IS NULL OR p.lease_until <= ?1))) \
         ORDER BY coalesce(p.next_run_at, 0), c.id LIMIT ?2",
        params![now, int(limit as u64)],
        |row| row.get::<_, String>(0),
    )?;
    due.iter()
        .map(|id| start(db, id, PollTrigger::Schedule, now, owner, lease_until))
        .collect()
}

pub(super) fn claim_poll_now(
    db: &Db,
    connection_id: &str,
    now: Millis,
    owner: &str,
    lease_until: Millis,
) -> Result<PollClaim> {
    let (polling, status): (Option<String>, String) = query_one(
        db,
        "SELECT polling_json, status FROM connections WHERE id = ?1",
        [connection_id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?
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
    let leased: Option<Millis> = query_one(
        db,
        "SELECT lease_until FROM poll_state WHERE connection_id = ?1",
        [connection_id],
        |row| row.get(0),
    )?
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
}

pub(super) fn finish_poll(db: &Db, vault: &Vault, end: &PollEnd) -> Result<PollRun> {
    let run = query_one(
        db,
        &format!("SELECT {POLL_RUN} FROM poll_runs WHERE id = ?1"),
        [&end.run_id],
        poll_run_row,
    )?
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
        )?;
    }
    db.prepare_cached(
        "UPDATE poll_runs SET status = ?2, reason = ?3, finished_at = ?4, \
         requests = requests + ?5 WHERE id = ?1 AND status = 'running'",
    )?
    .execute(params![
        end.run_id,
        end.status.as_str(),
        end.reason,
        end.at,
        end.requests,
    ])?;
    // Only the run holding the lease schedules the next one.
    let failed = end.status == PollRunStatus::Failed;
    db.prepare_cached(
        "UPDATE poll_state SET next_run_at = ?4, lease_owner = NULL, lease_until = NULL, \
         failures = CASE WHEN ?5 THEN failures + 1 ELSE 0 END \
         WHERE connection_id = ?1 AND run_id = ?2 AND lease_owner = ?3",
    )?
    .execute(params![
        run.connection_id,
        end.run_id,
        end.owner,
        end.next_run_at,
        failed,
    ])?;
    query_one(
        db,
        &format!("SELECT {POLL_RUN} FROM poll_runs WHERE id = ?1"),
        [&end.run_id],
        poll_run_row,
    )?
    .ok_or_else(|| Error::NotFound(format!("poll run {}", end.run_id)))
}

pub(super) fn poll_state(db: &Db, connection_id: &str) -> Result<Option<PollState>> {
    Ok(db
        .prepare_cached(&format!(
            "SELECT {POLL_STATE} FROM poll_state WHERE connection_id = ?1"
        ))?
        .query_row([connection_id], poll_state_row)
        .optional()?)
}

pub(super) fn list_run_exchanges(
    db: &Db,
    vault: &Vault,
    run_id: &str,
) -> Result<Vec<StoredExchange>> {
    query_all(
        db,
        &format!(
            "SELECT {EXCHANGE} FROM http_exchanges WHERE poll_run_id = ?1 \
             ORDER BY started_at, rowid"
        ),
        [run_id],
        |row| exchange_row(row, vault),
    )
}

pub(super) fn get_poll_run(db: &Db, run_id: &str) -> Result<Option<PollRun>> {
    query_one(
        db,
        &format!("SELECT {POLL_RUN} FROM poll_runs WHERE id = ?1"),
        [run_id],
        poll_run_row,
    )
}

pub(super) fn list_exchanges(
    db: &Db,
    vault: &Vault,
    delivery_id: &str,
) -> Result<Vec<StoredExchange>> {
    query_all(
        db,
        &format!("SELECT {EXCHANGE} FROM http_exchanges WHERE delivery_id = ?1 ORDER BY seq"),
        [delivery_id],
        |row| exchange_row(row, vault),
    )
}
