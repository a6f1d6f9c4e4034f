//! A fake CRM on loopback, for the tests and benchmarks of the host's polling path: one axum
//! server that answers the requests the four sample adapters name when they poll (their READMEs'
//! "Polling" sections and `src/api.rs`), in the shapes the adapters parse (their `fixtures/`).
//!
//! ```text
//! let crm = FakeCrm::start().await;                 // 127.0.0.1:<port>, on the current runtime
//! crm.accept_authorization(Some("Bearer tok-1"));
//! let ids = crm.seed_opportunities(25);
//! // a connection with api.base_url = crm.base_url(), allow_private = true, ...
//! ```
//!
//! # What it serves
//!
//! Every record has a modification time from the fake's clock, which starts at
//! 2025-12-01T00:00:00Z and moves one second per write ([`FakeCrm::upsert`], [`FakeCrm::delete`]),
//! so that the adapters' cursors move and "modified since" filters have something to filter;
//! while it is held ([`FakeCrm::hold_clock`]) writes share one time, as a bulk update's do.
//!
//! - **Salesforce** (`/services/data/vNN.N/...`, any version):
//!   - `GET queryAll?q=<SOQL>` (deleted records included, `IsDeleted: true`) and `GET query?q=`
//!     (without them). The SOQL is read as far as the adapter writes it:
//!     `SELECT <fields> FROM <Object> [WHERE SystemModstamp > <literal>] [ORDER BY
//!     SystemModstamp ASC, Id ASC] [LIMIT n]` (`>=`, `LastModifiedDate`, `DESC` too); anything
//!     else is a `400 MALFORMED_QUERY`. Records hold the selected fields only (`null` when the
//!     record has no such field) and `attributes: {type, url}`; `Id`, `IsDeleted`,
//!     `SystemModstamp`, `LastModifiedDate` and `CreatedDate` come from the fake
//!     (`2025-12-01T00:00:05.000+0000`). Pages of 2,000 by default; a result with more is a
//!     snapshot behind a query locator, paged by `nextRecordsUrl`
//!     (`/services/data/v59.0/query/01gFAKE00000000001-2000`); an unknown or expired locator
//!     ([`FakeCrm::expire_query_locators`]) is a `400 INVALID_QUERY_LOCATOR`.
//!   - `GET sobjects/<Type>/<Id>`: the whole record, or `404 NOT_FOUND` for one that is unknown
//!     or deleted.
//!   - Errors are Salesforce's array, `[{"message": ..., "errorCode": ...}]`; a refused
//!     credential is `401 INVALID_SESSION_ID` ("Session expired or invalid", expired or not, as
//!     Salesforce says it).
//! - **HubSpot** (`/crm/v3/objects/<type>...`):
//!   - `POST <type>/search`: `filterGroups` (groups OR'ed, filters AND'ed; `GT`, `GTE`, `LT`,
//!     `LTE`, `EQ`, `NEQ`, `IN`, `NOT_IN`, `HAS_PROPERTY`, `NOT_HAS_PROPERTY`; the modification
//!     properties `lastmodifieddate` / `hs_lastmodifieddate` and `createdate` compare as epoch
//!     milliseconds), `sorts`, `properties`, `limit` (default 10, at most 200) and `after` (an
//!     offset as a string; `10000` or more is a `400`, as HubSpot's search window). Live records
//!     only. Answer `{"total", "results": [...], "paging": {"next": {"after"}}}` (no `paging` on
//!     the last page).
//!   - `GET <type>?archived=true|false&limit=&after=&properties=`: the archived (deleted) or live
//!     records, by id, `limit` at most 100.
//!   - `GET <type>/<id>`: one live record, else `404 OBJECT_NOT_FOUND`.
//!   - A record is `{"id", "properties", "createdAt", "updatedAt", "archived"[, "archivedAt"]}`;
//!     `properties` holds those asked for (`null` when unset) plus `hs_object_id`, `createdate`
//!     and the type's modification property (`lastmodifieddate` for contacts, else
//!     `hs_lastmodifieddate`), times as `2025-12-01T00:00:05.000Z`.
//!   - Errors are `{"status": "error", "message", "correlationId", "category"}`; a wrong
//!     credential is `INVALID_AUTHENTICATION`, an expired one `EXPIRED_AUTHENTICATION`.
//! - **Zoho** (`/crm/vN/<Module>...`, any version):
//!   - `GET <Module>?fields=...&per_page=[&page_token=|&page=][&sort_by=&sort_order=]` with an
//!     optional `If-Modified-Since` (records modified strictly after it): `fields` is required;
//!     records hold `id` and the fields asked for (`null` when unset; `Modified_Time` and
//!     `Created_Time` from the fake, `2025-12-01T00:00:05+00:00`); sorted by `id` descending by
//!     default, as Zoho. `per_page` at most 200; pages by `page` up to the 2,000th record only
//!     (`400 DISCRETE_PAGINATION_LIMIT_EXCEEDED` beyond); every page with more has a
//!     `next_page_token` (a snapshot of the listing; unknown or expired,
//!     [`FakeCrm::expire_page_tokens`]: `400 INVALID_DATA` "the page token has expired").
//!     Nothing to list: `304` (no body) when `If-Modified-Since` was sent, else `204`.
//!   - `GET <Module>?fields=...&ids=<id>,<id>` (at most 100): the live ones among them, `204`
//!     when none is.
//!   - `GET <Module>/deleted?type=all|recycle|permanent&per_page=&page=` with an optional
//!     `If-Modified-Since` (on `deleted_time`): `{"data": [{"id", "display_name", "type",
//!     "deleted_by", "created_by", "deleted_time"}], "info": {...}}`, newest first; `type` is
//!     `recycle` for a record the fake held, `permanent` for one deleted without ever being
//!     upserted. `304` / `204` as above.
//!   - Errors are `{"code", "details", "message", "status": "error"}`; an expired credential is
//!     `401 INVALID_TOKEN` ("invalid oauth token", what Zoho answers for an expired token), a
//!     wrong or missing one `401 AUTHENTICATION_FAILURE`.
//! - **Zenoti** (`/v1/...`):
//!   - `GET /v1/appointments?center_id=&start_date=&end_date=[&include_no_show_cancel=true]`:
//!     `{"appointments": [...]}`, the center's appointments whose `start_time` falls on one of
//!     the dates (a range of at most seven days, else `400`), by `start_time`; cancelled (`-1`)
//!     and no-show (`-2`) ones only with `include_no_show_cancel=true`. A record is the fields
//!     it was upserted with plus `appointment_id`; the fake matches the center on the record's
//!     `center_id` field (which is served too: the adapter takes a record's own center first).
//!     Zenoti has no modification time, so none is served, and no paging (page sizes do not
//!     apply). A deleted appointment is no longer listed (Zenoti has no deleted list).
//!   - Errors are ASP.NET's `{"Message": ...}`; a refused credential, expired or not, is `401
//!     {"Message": "Authorization has been denied for this request."}`.
//!
//! Every request, whatever it is, is logged ([`FakeCrm::requests`]). Injected failures
//! ([`FakeCrm::fail_next`]) come first, then the credential check, then the answer. The newest
//! 1,024 Salesforce query locators and Zoho page tokens are kept; older ones have expired.
//!
//! # Connections for the seeded records
//!
//! Any adapter's connection needs API access: `api.base_url` = [`FakeCrm::base_url`],
//! `allow_private: true` (the fake is on loopback, plain http), a credential the fake accepts
//! ([`FakeCrm::accept_authorization`]: `{"kind": "bearer"}` is `Bearer <token>`, an `api_key`
//! with `prefix` `Zoho-oauthtoken ` or `apikey ` the others), and a rate limit that does not pace
//! a benchmark (the default is 600 requests a minute, bursts of 20). Then, per adapter:
//!
//! - **salesforce** ([`FakeCrm::seed_opportunities`]: open opportunities, `Amount` and
//!   `ExpectedRevenue` as JSON numbers, `Probability` 10, `StageName` `Prospecting`, a
//!   `CloseDate`, an `OwnerId`): no setting is required (the default `poll_objects` walks
//!   `Account,Contact,Opportunity`, the first two empty); `poll_objects` = `Opportunity` saves
//!   those two queries. Events (`opportunity.created`) are scoped to `default_org_id` (one of
//!   the connection's allowed orgs) if set, else to the connection's own org, else platform
//!   level.
//! - **hubspot** ([`FakeCrm::seed_hubspot_deals`]: deals in `appointmentscheduled` of the
//!   `default` pipeline, `amount` as a string such as `"1250.50"`, a `closedate`, a
//!   `hubspot_owner_id`; [`FakeCrm::seed_hubspot_contacts`]): no setting is required (the
//!   default `poll_objects` = `contacts,companies,deals,archived-contacts`); `poll_objects` =
//!   `deals` (or `deals,contacts,archived-contacts` for deletions) saves requests. The seeded
//!   stage is not won under the default `won_deal_stages` (`closedwon`), so deals give
//!   `deal.created` only. Org: `default_org_id`, else the connection's org, else platform level;
//!   a platform-level connection with `portal_org.*` settings needs `default_org_id`.
//! - **zoho** ([`FakeCrm::seed_zoho_deals`]: `Deals` with `Amount` / `Expected_Revenue` as JSON
//!   numbers, `Probability`, `Stage` `Qualification`, `Closing_Date`, `Owner` and `Account_Name`
//!   lookups): no setting is required (default `poll_modules` = `Contacts,Accounts,Deals`, each
//!   module's records then its deletions); `poll_modules` = `Deals` saves four requests a run.
//!   (`poll_module` is for pushed pages; when set without `poll_modules` it is the module a run
//!   walks.) Org as for Salesforce (`default_org_id`).
//! - **zenoti** ([`FakeCrm::seed_zenoti_appointments`]: booked appointments, status `0`, of one
//!   center on one day, `price` / `final_price` as JSON numbers, nested `service`, `therapist`,
//!   `guest`): `poll_start_date` is required (`YYYY-MM-DD`, on or before the seeded day), and
//!   the center must be polled: `poll_centers` = `<center id>`, or a `center_org.<center id>` =
//!   `<org>` setting (which also scopes the events; without one, `default_org_id`, else the
//!   connection's org). A run reads week after week from `poll_start_date` up to the week that
//!   holds today (the host's clock, not the fake's), so keep `poll_start_date` close to today,
//!   and seed days in that range: a day after this week is not read yet.

#![allow(dead_code)] // Each test crate uses its own part.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Map, Value, json};

/// The fake's clock at its first write: 2025-12-01T00:00:00Z, in seconds since the epoch.
pub const CLOCK_START: i64 = 1_764_547_200;

/// A fake CRM HTTP server on `127.0.0.1`, serving the four sample adapters' polling requests.
/// Stopped when dropped.
#[derive(Debug)]
pub struct FakeCrm {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

/// One request the fake received, and the status it answered.
#[derive(Debug, Clone)]
pub struct Logged {
    /// When it arrived.
    pub at: Instant,
    /// `GET`, `POST`...
    pub method: String,
    /// The path, as sent (percent-encoded).
    pub path: String,
    /// The query string without `?`, as sent (percent-encoded); empty without one.
    pub query: String,
    /// Its headers, names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
    /// The status answered; `0` while the answer is being made (a delay).
    pub status: u16,
}

impl Logged {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The decoded query parameters, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        decode_query(&self.query)
    }

    /// The decoded value of query parameter `name`, if sent.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

impl FakeCrm {
    /// Starts the fake on `127.0.0.1:0`, served by a task of the current tokio runtime (call it
    /// inside the runtime; on a current-thread runtime the fake answers only while that thread
    /// awaits, so a benchmark that blocks its thread needs a multi-thread runtime).
    pub async fn start() -> FakeCrm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake CRM on loopback");
        let addr = listener.local_addr().expect("the fake CRM's address");
        let state = Arc::new(Mutex::new(State::new(format!("http://{addr}"))));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeCrm {
            addr,
            state,
            server,
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:PORT` (no trailing slash): a connection's API base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Upserts a record: `provider` is "salesforce"|"hubspot"|"zoho"|"zenoti", `object` the
    /// provider's object/module name ("Opportunity", "deals", "Deals", "appointments"), `id` its
    /// id, `fields` its provider-shaped fields (merged into the record the fake serves: top-level
    /// fields for Salesforce, Zoho and Zenoti, the `properties` for HubSpot; a `null` stores a
    /// null). Each upsert stamps the record with the fake's clock (a modification time that
    /// strictly increases by one second per write, starting 2025-12-01T00:00:00Z, unless the
    /// clock is held: [`FakeCrm::hold_clock`]), so cursors move. Upserting a deleted record restores it (Salesforce's undelete, HubSpot's restore).
    /// Panics on an unknown provider or when `fields` is not a JSON object.
    pub fn upsert(&self, provider: &str, object: &str, id: &str, fields: Value) {
        let provider = Provider::named(provider);
        let Value::Object(fields) = fields else {
            panic!("the fields of {provider:?} {object} {id} are not a JSON object: {fields}");
        };
        let mut state = self.lock();
        let stamp = state.tick();
        let table = state
            .records
            .entry((provider, object.to_owned()))
            .or_default();
        let record = table.entry(id.to_owned()).or_insert_with(|| Rec {
            fields: Map::new(),
            created: stamp,
            modified: stamp,
            deleted: None,
            tombstone: false,
        });
        if record.tombstone {
            record.created = stamp;
            record.tombstone = false;
        }
        record.fields.extend(fields);
        record.modified = stamp;
        record.deleted = None;
    }

    /// Deletes a record (a write: it moves the clock): Salesforce's recycle bin (`IsDeleted: true`
    /// in `queryAll`, 404 from `sobjects`), HubSpot's archive (the `archived=true` list), Zoho's
    /// deleted records (`/deleted`), and for Zenoti gone from the listing. A record the fake never
    /// held is recorded as deleted all the same (Zoho lists it as `permanent`).
    pub fn delete(&self, provider: &str, object: &str, id: &str) {
        let provider = Provider::named(provider);
        let mut state = self.lock();
        let stamp = state.tick();
        let table = state
            .records
            .entry((provider, object.to_owned()))
            .or_default();
        let record = table.entry(id.to_owned()).or_insert_with(|| Rec {
            fields: Map::new(),
            created: stamp,
            modified: stamp,
            deleted: None,
            tombstone: true,
        });
        record.modified = stamp;
        record.deleted = Some(stamp);
    }

    /// Records per page for `provider` (default: the provider's usual: Salesforce 2,000, HubSpot
    /// and Zoho what the request asks for, `limit` / `per_page`). A request asking for fewer gets
    /// fewer. Zenoti's appointments are not paged: no effect there.
    pub fn set_page_size(&self, provider: &str, size: usize) {
        let provider = Provider::named(provider);
        self.lock().page_sizes.insert(provider, size.max(1));
    }

    /// Waits `delay` before every answer (to pace runs); zero by default.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Accept only this credential (the whole Authorization header value, e.g. "Bearer tok-1",
    /// "Zoho-oauthtoken tok-1", "apikey k"; for a query credential, see
    /// [`FakeCrm::accept_query`]). Others get 401 in the provider's error shape. None = accept
    /// anything. Ends an expiry ([`FakeCrm::expire_token_after`]).
    pub fn accept_authorization(&self, value: Option<&str>) {
        let mut state = self.lock();
        state.accepted = value.map(|v| Accepted::Header(v.to_owned()));
        state.expired = false;
        state.expire_after = None;
    }

    /// Accept only requests whose query parameter `name` is `value` (a credential the host puts
    /// in the query, `api_key=...`). Others get 401 in the provider's error shape. None = accept
    /// anything. Replaces [`FakeCrm::accept_authorization`]'s credential, and ends an expiry.
    pub fn accept_query(&self, name: &str, value: Option<&str>) {
        let mut state = self.lock();
        state.accepted = value.map(|v| Accepted::Query(name.to_owned(), v.to_owned()));
        state.expired = false;
        state.expire_after = None;
    }

    /// After `n` more successful requests (answered below 400), the accepted credential stops
    /// working (401, the provider's "expired token" error shape) until accept_authorization
    /// (or accept_query) is called again. `0`: at once.
    pub fn expire_token_after(&self, n: usize) {
        let mut state = self.lock();
        if n == 0 {
            state.expired = true;
            state.expire_after = None;
        } else {
            state.expired = false;
            state.expire_after = Some(n);
        }
    }

    /// The next `times` requests whose path starts with `path_prefix` get `status` (e.g. 429 with a
    /// `Retry-After: <secs>` header when retry_after is Some, or 500), then it answers normally.
    /// The body is the provider's error shape for that status. Several injections queue up, the
    /// oldest first.
    pub fn fail_next(
        &self,
        path_prefix: &str,
        status: u16,
        retry_after: Option<u64>,
        times: usize,
    ) {
        if times == 0 {
            return;
        }
        self.lock().failures.push(Failure {
            prefix: path_prefix.to_owned(),
            status,
            retry_after,
            times,
        });
    }

    /// Salesforce: forgets every query locator, so that following a `nextRecordsUrl` gets `400
    /// INVALID_QUERY_LOCATOR` (a locator unused for 15 minutes).
    pub fn expire_query_locators(&self) {
        let mut state = self.lock();
        state.locators.clear();
        state.locator_order.clear();
    }

    /// Zoho: forgets every page token, so that a `page_token` request gets `400` "the page token
    /// has expired" (a token older than a day).
    pub fn expire_page_tokens(&self) {
        let mut state = self.lock();
        state.page_tokens.clear();
        state.page_token_order.clear();
    }

    /// Every request, in the order they arrived.
    pub fn requests(&self) -> Vec<Logged> {
        self.lock().log.iter().map(|(_, l)| l.clone()).collect()
    }

    /// The requests whose path starts with `path_prefix`, in order.
    pub fn requests_to(&self, path_prefix: &str) -> Vec<Logged> {
        self.lock()
            .log
            .iter()
            .filter(|(_, l)| l.path.starts_with(path_prefix))
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// How many requests arrived (since the last [`FakeCrm::reset_log`]).
    pub fn count(&self) -> usize {
        self.lock().log.len()
    }

    /// Forgets the requests logged so far.
    pub fn reset_log(&self) {
        self.lock().log.clear();
    }

    /// The time the next write will be stamped with.
    pub fn clock(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.lock().clock as u64)
    }

    /// Moves the fake's clock forward by `by` (whole seconds), as if time passed without writes.
    pub fn advance_clock(&self, by: Duration) {
        self.lock().clock += by.as_secs() as i64;
    }

    /// Holds the clock (`true`): the writes until it is released share one stamp, the time the
    /// next write would have had (as the records of a bulk update share a modification time,
    /// to the millisecond in HubSpot, to the second in Zoho). Released (`false`), the clock
    /// goes on from the second after that stamp, if a write used it.
    pub fn hold_clock(&self, held: bool) {
        let mut state = self.lock();
        if !held && state.held == Some(true) {
            state.clock += 1;
        }
        state.held = held.then_some(false);
    }

    /// When a record was last written (upserted or deleted), if the fake holds it.
    pub fn modified_at(&self, provider: &str, object: &str, id: &str) -> Option<SystemTime> {
        let provider = Provider::named(provider);
        let state = self.lock();
        let record = state.records.get(&(provider, object.to_owned()))?.get(id)?;
        Some(UNIX_EPOCH + Duration::from_secs(record.modified as u64))
    }

    /// The ids of `object`'s records that are not deleted, sorted.
    pub fn live_ids(&self, provider: &str, object: &str) -> Vec<String> {
        let provider = Provider::named(provider);
        let state = self.lock();
        state
            .records
            .get(&(provider, object.to_owned()))
            .map(|t| {
                t.iter()
                    .filter(|(_, r)| r.deleted.is_none())
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn next_seed(&self) -> u64 {
        let mut state = self.lock();
        state.seeded += 1;
        state.seeded
    }

    /// Upserts `n` open Salesforce opportunities (`Opportunity`, 18-character ids `006FAKE...`)
    /// that the salesforce adapter turns into `opportunity.created`; returns their ids, oldest
    /// first. Fields: `Name`, `AccountId`, `StageName` `Prospecting`, `Amount` and
    /// `ExpectedRevenue` (JSON numbers, as Salesforce sends them), `Probability` 10.0,
    /// `CloseDate`, `IsClosed` / `IsWon` false, `Type`, `LeadSource`, `ForecastCategoryName`,
    /// `OwnerId`.
    pub fn seed_opportunities(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let k = self.next_seed();
                let id = format!("006FAKE{k:011}");
                let cents = 100_000 + k * 25_050;
                self.upsert(
                    "salesforce",
                    "Opportunity",
                    &id,
                    json!({
                        "Name": format!("Fake Dental {k} - Group Benefits"),
                        "AccountId": format!("001FAKE{k:011}"),
                        "StageName": "Prospecting",
                        "Amount": cents as f64 / 100.0,
                        "ExpectedRevenue": cents as f64 / 1000.0,
                        "Probability": 10.0,
                        "CloseDate": "2026-01-30",
                        "IsClosed": false,
                        "IsWon": false,
                        "Type": "New Customer",
                        "LeadSource": "Web",
                        "ForecastCategoryName": "Pipeline",
                        "OwnerId": "005FAKE00000000001",
                    }),
                );
                id
            })
            .collect()
    }

    /// Upserts `n` open HubSpot deals (`deals`, numeric ids) that the hubspot adapter turns into
    /// `deal.created`; returns their ids, oldest first. Properties (strings, as HubSpot stores
    /// them): `dealname`, `dealstage` `appointmentscheduled`, `pipeline` `default`, `closedate`,
    /// `hubspot_owner_id`, `amount` and `amount_in_home_currency` (`"1250.50"`).
    pub fn seed_hubspot_deals(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let k = self.next_seed();
                let id = (7_305_600_000 + k).to_string();
                let amount = format!("{}.{:02}", 1000 + k * 250, (k * 50) % 100);
                self.upsert(
                    "hubspot",
                    "deals",
                    &id,
                    json!({
                        "dealname": format!("Fake Dental {k} - group benefits"),
                        "dealstage": "appointmentscheduled",
                        "pipeline": "default",
                        "closedate": "2026-01-30T17:00:00Z",
                        "hubspot_owner_id": "88102231",
                        "amount": amount,
                        "amount_in_home_currency": amount,
                    }),
                );
                id
            })
            .collect()
    }

    /// Upserts `n` HubSpot contacts (`contacts`, numeric ids) that the hubspot adapter turns into
    /// `contact.created` (and, once [deleted](FakeCrm::delete), `contact.deleted` from the archived
    /// list); returns their ids, oldest first.
    pub fn seed_hubspot_contacts(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let k = self.next_seed();
                let id = (90_600 + k).to_string();
                self.upsert(
                    "hubspot",
                    "contacts",
                    &id,
                    json!({
                        "email": format!("contact{k}@example.com"),
                        "firstname": "Robin",
                        "lastname": format!("Fake{k}"),
                        "company": "Acme Dental",
                        "jobtitle": "Benefits Manager",
                        "lifecyclestage": "lead",
                        "hubspot_owner_id": "88102231",
                    }),
                );
                id
            })
            .collect()
    }

    /// Upserts `n` open Zoho deals (`Deals`, 19-digit ids) that the zoho adapter turns into
    /// `deal.created`; returns their ids, oldest first. Fields: `Deal_Name`, `Stage`
    /// `Qualification`, `Amount` and `Expected_Revenue` (JSON numbers), `Probability` 10,
    /// `Closing_Date`, `Type`, `Lead_Source`, `Currency` `USD`, `Exchange_Rate` 1, `Account_Name`
    /// and `Owner` lookups, `Contact_Name` null.
    pub fn seed_zoho_deals(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let k = self.next_seed();
                let id = format!("57257670000{k:08}");
                let cents = 100_000 + k * 25_050;
                self.upsert(
                    "zoho",
                    "Deals",
                    &id,
                    json!({
                        "Owner": {
                            "name": "Maya Fischer",
                            "id": "5725767000000411001",
                            "email": "maya.fischer@example.com",
                        },
                        "Deal_Name": format!("Fake Schools {k} - Dental"),
                        "Stage": "Qualification",
                        "Amount": cents as f64 / 100.0,
                        "Expected_Revenue": cents as f64 / 1000.0,
                        "Probability": 10,
                        "Closing_Date": "2026-01-30",
                        "Type": "New Business",
                        "Lead_Source": "Partner",
                        "Currency": "USD",
                        "Exchange_Rate": 1,
                        "Account_Name": {
                            "name": format!("Fake Schools {k}"),
                            "id": format!("57257670000{:08}", 50_000_000 + k),
                        },
                        "Contact_Name": null,
                    }),
                );
                id
            })
            .collect()
    }

    /// Upserts `n` booked Zenoti appointments (`appointments`, UUID ids) of center `center_id`
    /// starting on `day` (`YYYY-MM-DD`, the center's local time, from 08:00 every 15 minutes),
    /// which the zenoti adapter turns into `appointment.created`; returns their ids. Fields:
    /// `center_id`, `appointment_group_id`, `invoice_id`, `service` / `therapist` / `guest`
    /// (nested, as Zenoti's API writes them), `start_time`, `end_time`, `status` 0, `price` and
    /// `final_price` (JSON numbers).
    pub fn seed_zenoti_appointments(&self, center_id: &str, day: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let k = self.next_seed();
                let id = format!("{k:08x}-7e57-4a00-8000-{k:012x}");
                let start = 8 * 60 + (i % 48) * 15;
                let end = start + 45;
                let hm = |m: usize| format!("{:02}:{:02}:00", m / 60, m % 60);
                self.upsert(
                    "zenoti",
                    "appointments",
                    &id,
                    json!({
                        "center_id": center_id,
                        "appointment_group_id": format!("{k:08x}-7e57-4b00-8000-{k:012x}"),
                        "invoice_id": format!("{k:08x}-7e57-4c00-8000-{k:012x}"),
                        "service": {
                            "id": "71c3e8a5-2f9d-4b16-8c07-e5a4d1b9f620",
                            "name": "Signature Facial 60 min",
                            "is_addon": false,
                            "has_addons": false,
                        },
                        "start_time": format!("{day}T{}", hm(start)),
                        "end_time": format!("{day}T{}", hm(end)),
                        "status": 0,
                        "guest": {
                            "id": format!("{k:08x}-7e57-4d00-8000-{k:012x}"),
                            "first_name": "Tomas",
                            "last_name": format!("Fake{k}"),
                            "email": format!("guest{k}@example.com"),
                        },
                        "therapist": {
                            "id": "e1a7c3f9-5d28-4b60-9e4b-0c6f2d8a7b15",
                            "first_name": "Keiko",
                            "last_name": "Arai",
                        },
                        "price": 120.0,
                        "final_price": 108.0,
                        "notes": null,
                    }),
                );
                id
            })
            .collect()
    }
}

impl Drop for FakeCrm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Provider {
    Salesforce,
    HubSpot,
    Zoho,
    Zenoti,
}

impl Provider {
    fn named(name: &str) -> Provider {
        match name.to_ascii_lowercase().as_str() {
            "salesforce" => Provider::Salesforce,
            "hubspot" => Provider::HubSpot,
            "zoho" => Provider::Zoho,
            "zenoti" => Provider::Zenoti,
            _ => panic!("unknown provider `{name}`: salesforce, hubspot, zoho or zenoti"),
        }
    }

    /// The provider whose API `path` is under.
    fn of_path(path: &str) -> Option<Provider> {
        if path.starts_with("/services/data/") {
            return Some(Provider::Salesforce);
        }
        if path.starts_with("/crm/v3/objects/") {
            return Some(Provider::HubSpot);
        }
        if let Some(rest) = path.strip_prefix("/crm/v") {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 && rest[digits..].starts_with('/') {
                return Some(Provider::Zoho);
            }
        }
        if path.starts_with("/v1/") {
            return Some(Provider::Zenoti);
        }
        None
    }
}

#[derive(Debug, Clone)]
struct Rec {
    /// Provider-shaped fields (HubSpot: the properties).
    fields: Map<String, Value>,
    /// Seconds since the epoch.
    created: i64,
    modified: i64,
    deleted: Option<i64>,
    /// Deleted without ever being upserted.
    tombstone: bool,
}

#[derive(Debug, Clone)]
enum Accepted {
    Header(String),
    Query(String, String),
}

#[derive(Debug)]
struct Failure {
    prefix: String,
    status: u16,
    retry_after: Option<u64>,
    times: usize,
}

/// A Zoho page token: the listing it pages through, and where the next page starts.
#[derive(Debug, Clone)]
struct PageToken {
    ids: Arc<Vec<String>>,
    offset: usize,
    per_page: usize,
    sort_by: String,
    sort_order: String,
}

#[derive(Debug)]
struct State {
    base_url: String,
    /// The next write's stamp, seconds since the epoch.
    clock: i64,
    /// While the clock is held, whether a write has used its stamp.
    held: Option<bool>,
    records: BTreeMap<(Provider, String), BTreeMap<String, Rec>>,
    page_sizes: HashMap<Provider, usize>,
    delay: Duration,
    accepted: Option<Accepted>,
    expired: bool,
    expire_after: Option<usize>,
    failures: Vec<Failure>,
    log: Vec<(u64, Logged)>,
    next_request: u64,
    /// Salesforce query locators: the records of the query.
    locators: HashMap<String, Arc<Vec<Value>>>,
    locator_order: VecDeque<String>,
    page_tokens: HashMap<String, PageToken>,
    page_token_order: VecDeque<String>,
    /// For locator, token and correlation ids.
    serial: u64,
    /// For the seeders' ids.
    seeded: u64,
}

impl State {
    fn new(base_url: String) -> Self {
        Self {
            base_url,
            clock: CLOCK_START,
            held: None,
            records: BTreeMap::new(),
            page_sizes: HashMap::new(),
            delay: Duration::ZERO,
            accepted: None,
            expired: false,
            expire_after: None,
            failures: Vec::new(),
            log: Vec::new(),
            next_request: 0,
            locators: HashMap::new(),
            locator_order: VecDeque::new(),
            page_tokens: HashMap::new(),
            page_token_order: VecDeque::new(),
            serial: 0,
            seeded: 0,
        }
    }

    fn tick(&mut self) -> i64 {
        let stamp = self.clock;
        match self.held {
            Some(_) => self.held = Some(true),
            None => self.clock += 1,
        }
        stamp
    }

    fn serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    fn correlation_id(&mut self) -> String {
        format!("fa4ecf00-0000-4000-8000-{:012x}", self.serial())
    }

    fn table(&self, provider: Provider, object: &str) -> impl Iterator<Item = (&String, &Rec)> {
        self.records
            .get(&(provider, object.to_owned()))
            .into_iter()
            .flat_map(|t| t.iter())
    }

    /// Records per page: the request's, capped by the page size set for the provider.
    fn page_size(&self, provider: Provider, asked: usize) -> usize {
        match self.page_sizes.get(&provider) {
            Some(size) => asked.min(*size).max(1),
            None => asked.max(1),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serving

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, value: &Value) -> Self {
        Self {
            status,
            headers: vec![(
                "content-type".into(),
                "application/json;charset=UTF-8".into(),
            )],
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

/// What the handler knows of a request.
struct Req<'a> {
    method: &'a Method,
    path: &'a str,
    pairs: Vec<(String, String)>,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

impl Req<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn decode_query(query: &str) -> Vec<(String, String)> {
    let uri: Uri = match format!("/?{query}").parse() {
        Ok(uri) => uri,
        Err(_) => return Vec::new(),
    };
    Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

async fn handle(
    AxumState(state): AxumState<Arc<Mutex<State>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    let (seq, delay) = {
        let mut state = lock();
        let seq = state.next_request;
        state.next_request += 1;
        let logged = Logged {
            at: Instant::now(),
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            status: 0,
        };
        state.log.push((seq, logged));
        (seq, state.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let req = Req {
        method: &method,
        path: uri.path(),
        pairs: decode_query(uri.query().unwrap_or_default()),
        headers: &headers,
        body: &body,
    };
    let answer = {
        let mut state = lock();
        let answer = state.answer(&req);
        if let Some((_, logged)) = state.log.iter_mut().rev().find(|(s, _)| *s == seq) {
            logged.status = answer.status;
        }
        answer
    };
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

impl State {
    fn answer(&mut self, req: &Req<'_>) -> Answer {
        let provider = Provider::of_path(req.path);
        if let Some(at) = self
            .failures
            .iter()
            .position(|f| req.path.starts_with(&f.prefix))
        {
            let failure = &mut self.failures[at];
            failure.times -= 1;
            let (status, retry_after) = (failure.status, failure.retry_after);
            if failure.times == 0 {
                self.failures.remove(at);
            }
            let mut answer = self.injected(provider, status);
            if let Some(secs) = retry_after {
                answer
                    .headers
                    .push(("retry-after".into(), secs.to_string()));
            }
            return answer;
        }
        let credential_ok = match &self.accepted {
            None => true,
            Some(Accepted::Header(value)) => req.header("authorization") == Some(value.as_str()),
            Some(Accepted::Query(name, value)) => req.param(name) == Some(value.as_str()),
        };
        if !credential_ok {
            return self.unauthorized(provider, false);
        }
        if self.expired {
            return self.unauthorized(provider, true);
        }
        let answer = match provider {
            Some(Provider::Salesforce) => self.salesforce(req),
            Some(Provider::HubSpot) => self.hubspot(req),
            Some(Provider::Zoho) => self.zoho(req),
            Some(Provider::Zenoti) => self.zenoti(req),
            None => Answer::json(
                404,
                &json!({"message": format!("the fake CRM serves nothing at {}", req.path)}),
            ),
        };
        if answer.status < 400
            && let Some(left) = &mut self.expire_after
        {
            *left -= 1;
            if *left == 0 {
                self.expire_after = None;
                self.expired = true;
            }
        }
        answer
    }

    /// A refused credential, in the provider's shape.
    fn unauthorized(&mut self, provider: Option<Provider>, expired: bool) -> Answer {
        match provider {
            Some(Provider::Salesforce) => {
                sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
            }
            Some(Provider::HubSpot) if expired => {
                let id = self.correlation_id();
                Answer::json(
                    401,
                    &json!({
                        "status": "error",
                        "message": "The OAuth token used to make this call expired 1 minute(s) ago.",
                        "correlationId": id,
                        "category": "EXPIRED_AUTHENTICATION",
                    }),
                )
            }
            Some(Provider::HubSpot) => {
                let id = self.correlation_id();
                Answer::json(
                    401,
                    &json!({
                        "status": "error",
                        "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                        "correlationId": id,
                        "category": "INVALID_AUTHENTICATION",
                    }),
                )
            }
            Some(Provider::Zoho) if expired => {
                zoho_error(401, "INVALID_TOKEN", "invalid oauth token", json!({}))
            }
            Some(Provider::Zoho) => zoho_error(
                401,
                "AUTHENTICATION_FAILURE",
                "Authentication failed",
                json!({}),
            ),
            Some(Provider::Zenoti) => {
                zenoti_error(401, "Authorization has been denied for this request.")
            }
            None => Answer::json(401, &json!({"message": "unauthorized"})),
        }
    }

    /// An injected failure, in the provider's shape.
    fn injected(&mut self, provider: Option<Provider>, status: u16) -> Answer {
        if status == 401 {
            return self.unauthorized(provider, false);
        }
        match provider {
            Some(Provider::Salesforce) => {
                let (code, message) = match status {
                    429 => ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
                    400 => ("MALFORMED_QUERY", "the fake CRM refused this request"),
                    403 => (
                        "INSUFFICIENT_ACCESS",
                        "insufficient access rights on object",
                    ),
                    404 => ("NOT_FOUND", "The requested resource does not exist"),
                    503 => ("SERVER_UNAVAILABLE", "Server is unavailable"),
                    s if s >= 500 => (
                        "UNKNOWN_EXCEPTION",
                        "An unexpected error occurred. Please include this ErrorId if you \
                         contact support: 0-0 (fake)",
                    ),
                    _ => ("UNKNOWN_EXCEPTION", "the fake CRM refused this request"),
                };
                sf_error(status, code, message)
            }
            Some(Provider::HubSpot) => {
                let id = self.correlation_id();
                let body = match status {
                    429 => json!({
                        "status": "error",
                        "message": "You have reached your secondly limit.",
                        "errorType": "RATE_LIMIT",
                        "correlationId": id,
                        "policyName": "SECONDLY",
                        "category": "RATE_LIMITS",
                    }),
                    s if s >= 500 => json!({
                        "status": "error",
                        "message": "internal error",
                        "correlationId": id,
                        "category": "INTERNAL_ERROR",
                    }),
                    _ => json!({
                        "status": "error",
                        "message": "the fake CRM refused this request",
                        "correlationId": id,
                        "category": "VALIDATION_ERROR",
                    }),
                };
                Answer::json(status, &body)
            }
            Some(Provider::Zoho) => {
                let (code, message) = match status {
                    429 => (
                        "TOO_MANY_REQUESTS",
                        "The number of API requests has exceeded the limit",
                    ),
                    s if s >= 500 => ("INTERNAL_ERROR", "Internal Server Error"),
                    _ => ("INVALID_DATA", "the fake CRM refused this request"),
                };
                zoho_error(status, code, message, json!({}))
            }
            Some(Provider::Zenoti) => zenoti_error(
                status,
                match status {
                    429 => "Too many requests. Retry later.",
                    s if s >= 500 => "An error has occurred.",
                    _ => "The request is invalid.",
                },
            ),
            None => Answer::json(status, &json!({"message": "injected failure"})),
        }
    }
}

/// The most query locators (Salesforce) and page tokens (Zoho) kept: past it the oldest expire,
/// as the providers' own do (each holds a snapshot of its listing).
const MAX_CURSORS: usize = 1024;

/// Keeps `value` under `key`, forgetting the oldest entry past [`MAX_CURSORS`].
fn remember<T>(map: &mut HashMap<String, T>, order: &mut VecDeque<String>, key: String, value: T) {
    order.push_back(key.clone());
    map.insert(key, value);
    while order.len() > MAX_CURSORS {
        if let Some(oldest) = order.pop_front() {
            map.remove(&oldest);
        }
    }
}

fn sf_error(status: u16, code: &str, message: &str) -> Answer {
    Answer::json(status, &json!([{"message": message, "errorCode": code}]))
}

fn zoho_error(status: u16, code: &str, message: &str, details: Value) -> Answer {
    Answer::json(
        status,
        &json!({"code": code, "details": details, "message": message, "status": "error"}),
    )
}

fn zenoti_error(status: u16, message: &str) -> Answer {
    Answer::json(status, &json!({"Message": message}))
}

// ---------------------------------------------------------------------------------------------
// Salesforce

/// A query as the adapter writes it.
#[derive(Debug)]
struct Soql {
    fields: Vec<String>,
    object: String,
    /// `(field, inclusive, epoch ms)`.
    bound: Option<(String, bool, i64)>,
    /// `(field, descending)`.
    order: Vec<(String, bool)>,
    limit: Option<usize>,
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

fn parse_soql(q: &str) -> Result<Soql, String> {
    let q = q.trim();
    let upper = q.to_ascii_uppercase();
    let rest = upper
        .strip_prefix("SELECT ")
        .map(|_| &q[7..])
        .ok_or("the query does not start with SELECT")?;
    let from = rest
        .to_ascii_uppercase()
        .find(" FROM ")
        .ok_or("the query has no FROM")?;
    let fields: Vec<String> = rest[..from]
        .split(',')
        .map(|f| f.trim().to_owned())
        .collect();
    if let Some(bad) = fields.iter().find(|f| !is_field_name(f)) {
        return Err(format!("unexpected token: '{bad}'"));
    }
    let tokens: Vec<&str> = rest[from + 6..].split_whitespace().collect();
    let object = tokens.first().ok_or("FROM names no object")?;
    if !is_field_name(object) {
        return Err(format!("unexpected token: '{object}'"));
    }
    let mut soql = Soql {
        fields,
        object: (*object).to_owned(),
        bound: None,
        order: Vec::new(),
        limit: None,
    };
    let mut i = 1;
    let at = |i: usize| tokens.get(i).copied().unwrap_or("");
    if at(i).eq_ignore_ascii_case("WHERE") {
        let (field, op, literal) = (at(i + 1), at(i + 2), at(i + 3));
        if !["SystemModstamp", "LastModifiedDate"].contains(&field) {
            return Err(format!(
                "the fake CRM filters on SystemModstamp or LastModifiedDate only, not `{field}`"
            ));
        }
        let inclusive = match op {
            ">" => false,
            ">=" => true,
            _ => return Err(format!("unexpected token: '{op}'")),
        };
        let ms = parse_time_ms(literal)
            .filter(|_| !literal.starts_with('\''))
            .ok_or_else(|| format!("value of filter criterion for field '{field}' must be of type dateTime and should not be enclosed in quotes: {literal}"))?;
        soql.bound = Some((field.to_owned(), inclusive, ms));
        i += 4;
    }
    if at(i).eq_ignore_ascii_case("ORDER") && at(i + 1).eq_ignore_ascii_case("BY") {
        i += 2;
        let start = i;
        while i < tokens.len() && !tokens[i].eq_ignore_ascii_case("LIMIT") {
            i += 1;
        }
        for key in tokens[start..i].join(" ").split(',') {
            let words: Vec<&str> = key.split_whitespace().collect();
            let descending = match words.as_slice() {
                [_] => false,
                [_, dir] if dir.eq_ignore_ascii_case("ASC") => false,
                [_, dir] if dir.eq_ignore_ascii_case("DESC") => true,
                _ => return Err(format!("unexpected ORDER BY `{}`", key.trim())),
            };
            let field = words[0];
            if !["SystemModstamp", "LastModifiedDate", "CreatedDate", "Id"].contains(&field) {
                return Err(format!("the fake CRM cannot order by `{field}`"));
            }
            soql.order.push((field.to_owned(), descending));
        }
    }
    if at(i).eq_ignore_ascii_case("LIMIT") {
        soql.limit = Some(
            at(i + 1)
                .parse()
                .map_err(|_| format!("unexpected token: '{}'", at(i + 1)))?,
        );
        i += 2;
    }
    if i < tokens.len() {
        return Err(format!("unexpected token: '{}'", tokens[i]));
    }
    Ok(soql)
}

fn sf_time(secs: i64) -> String {
    format!("{}.000+0000", iso_seconds(secs))
}

/// A record as Salesforce answers it: `attributes`, then the selected fields (all, without a
/// selection).
fn sf_record(version: &str, object: &str, id: &str, rec: &Rec, select: Option<&[String]>) -> Value {
    let computed = |name: &str| -> Option<Value> {
        match name {
            "Id" => Some(json!(id)),
            "IsDeleted" => Some(json!(rec.deleted.is_some())),
            "SystemModstamp" | "LastModifiedDate" => Some(json!(sf_time(rec.modified))),
            "CreatedDate" => Some(json!(sf_time(rec.created))),
            _ => None,
        }
    };
    let mut out = Map::new();
    out.insert(
        "attributes".into(),
        json!({"type": object, "url": format!("/services/data/{version}/sobjects/{object}/{id}")}),
    );
    match select {
        Some(fields) => {
            for field in fields {
                let value = computed(field)
                    .or_else(|| rec.fields.get(field).cloned())
                    .unwrap_or(Value::Null);
                out.insert(field.clone(), value);
            }
        }
        None => {
            for name in [
                "Id",
                "IsDeleted",
                "CreatedDate",
                "LastModifiedDate",
                "SystemModstamp",
            ] {
                out.insert(name.into(), computed(name).unwrap_or(Value::Null));
            }
            for (name, value) in &rec.fields {
                if computed(name).is_none() {
                    out.insert(name.clone(), value.clone());
                }
            }
        }
    }
    Value::Object(out)
}

impl State {
    fn salesforce(&mut self, req: &Req<'_>) -> Answer {
        let rest = &req.path["/services/data/".len()..];
        let (version, rest) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_version = version
            .strip_prefix('v')
            .and_then(|v| v.split_once('.'))
            .is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            });
        if !valid_version {
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist");
        }
        if *req.method != Method::GET {
            return sf_error(
                405,
                "METHOD_NOT_ALLOWED",
                &format!(
                    "HTTP Method '{}' not allowed. Allowed are GET,HEAD",
                    req.method
                ),
            );
        }
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            ["queryAll"] => self.sf_query(version, req, true),
            ["query"] => self.sf_query(version, req, false),
            ["query", locator] | ["queryAll", locator] => self.sf_more(version, locator),
            ["sobjects", object, id] => match self
                .records
                .get(&(Provider::Salesforce, (*object).to_owned()))
                .and_then(|t| t.get(*id))
                .filter(|r| r.deleted.is_none())
            {
                Some(rec) => Answer::json(200, &sf_record(version, object, id, rec, None)),
                None => sf_error(404, "NOT_FOUND", "The requested resource does not exist"),
            },
            _ => sf_error(404, "NOT_FOUND", "The requested resource does not exist"),
        }
    }

    fn sf_query(&mut self, version: &str, req: &Req<'_>, all: bool) -> Answer {
        let Some(q) = req.param("q") else {
            return sf_error(400, "MALFORMED_QUERY", "A query string has to be specified");
        };
        let soql = match parse_soql(q) {
            Ok(soql) => soql,
            Err(why) => return sf_error(400, "MALFORMED_QUERY", &why),
        };
        let mut matches: Vec<(&String, &Rec)> = self
            .table(Provider::Salesforce, &soql.object)
            .filter(|(_, r)| all || r.deleted.is_none())
            .filter(|(_, r)| match &soql.bound {
                None => true,
                Some((_, inclusive, ms)) => {
                    let at = r.modified * 1000;
                    if *inclusive { at >= *ms } else { at > *ms }
                }
            })
            .collect();
        let order = if soql.order.is_empty() {
            vec![("Id".to_owned(), false)]
        } else {
            soql.order.clone()
        };
        matches.sort_by(|(a_id, a), (b_id, b)| {
            for (field, descending) in &order {
                let ordering = match field.as_str() {
                    "Id" => a_id.cmp(b_id),
                    "CreatedDate" => a.created.cmp(&b.created),
                    _ => a.modified.cmp(&b.modified),
                };
                let ordering = if *descending {
                    ordering.reverse()
                } else {
                    ordering
                };
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
            Ordering::Equal
        });
        if let Some(limit) = soql.limit {
            matches.truncate(limit);
        }
        let records: Vec<Value> = matches
            .into_iter()
            .map(|(id, rec)| sf_record(version, &soql.object, id, rec, Some(&soql.fields)))
            .collect();
        self.sf_page(version, Arc::new(records), 0, None)
    }

    fn sf_more(&mut self, version: &str, locator: &str) -> Answer {
        let found = locator.rsplit_once('-').and_then(|(id, offset)| {
            let records = self.locators.get(id)?;
            let offset: usize = offset.parse().ok()?;
            (offset <= records.len()).then(|| (id.to_owned(), Arc::clone(records), offset))
        });
        match found {
            Some((id, records, offset)) => self.sf_page(version, records, offset, Some(id)),
            None => sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator"),
        }
    }

    fn sf_page(
        &mut self,
        version: &str,
        records: Arc<Vec<Value>>,
        offset: usize,
        locator: Option<String>,
    ) -> Answer {
        let size = self.page_size(Provider::Salesforce, 2000);
        let total = records.len();
        let end = (offset + size).min(total);
        let mut body = json!({
            "totalSize": total,
            "done": end >= total,
            "records": records[offset..end].to_vec(),
        });
        if end < total {
            let id = locator.unwrap_or_else(|| {
                let id = format!("01gFAKE{:011}", self.serial());
                remember(
                    &mut self.locators,
                    &mut self.locator_order,
                    id.clone(),
                    Arc::clone(&records),
                );
                id
            });
            body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{id}-{end}"));
        }
        Answer::json(200, &body)
    }
}

// ---------------------------------------------------------------------------------------------
// HubSpot

fn hs_time(secs: i64) -> String {
    format!("{}.000Z", iso_seconds(secs))
}

fn hs_modified_property(object: &str) -> &'static str {
    if object == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

/// A property's value as HubSpot holds it (text), the fake's times and id included.
fn hs_property(id: &str, rec: &Rec, name: &str) -> Option<Value> {
    match name {
        "hs_object_id" => Some(json!(id)),
        "createdate" => Some(json!(hs_time(rec.created))),
        "lastmodifieddate" | "hs_lastmodifieddate" => Some(json!(hs_time(rec.modified))),
        _ => rec.fields.get(name).filter(|v| !v.is_null()).cloned(),
    }
}

/// A value to compare: a time (ms) or a number, else text.
#[derive(Debug, PartialEq, PartialOrd)]
enum Comparable {
    Number(f64),
    Text(String),
}

fn comparable(value: &Value) -> Option<Comparable> {
    let text = match value {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    };
    if let Ok(n) = text.parse::<f64>() {
        return Some(Comparable::Number(n));
    }
    if let Some(ms) = parse_time_ms(&text) {
        return Some(Comparable::Number(ms as f64));
    }
    Some(Comparable::Text(text.to_lowercase()))
}

fn compare(a: &Option<Comparable>, b: &Option<Comparable>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        // Numbers before text (the variants' order); NaN equals anything.
        (Some(a), Some(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
    }
}

#[derive(Debug)]
struct HsFilter {
    property: String,
    operator: String,
    value: Option<Value>,
    values: Vec<Value>,
}

impl HsFilter {
    fn matches(&self, id: &str, rec: &Rec) -> bool {
        let actual = hs_property(id, rec, &self.property);
        let have = actual.as_ref().and_then(comparable);
        let want = self.value.as_ref().and_then(comparable);
        let cmp = || have.is_some() && want.is_some() && compare(&have, &want) != Ordering::Less;
        match self.operator.as_str() {
            "HAS_PROPERTY" => have.is_some(),
            "NOT_HAS_PROPERTY" => have.is_none(),
            "EQ" => have.is_some() && have == want,
            "NEQ" => have != want,
            "GT" => cmp() && have != want,
            "GTE" => cmp(),
            "LT" => have.is_some() && want.is_some() && compare(&have, &want) == Ordering::Less,
            "LTE" => have.is_some() && want.is_some() && compare(&have, &want) != Ordering::Greater,
            "IN" => self
                .values
                .iter()
                .any(|v| have.is_some() && comparable(v) == have),
            "NOT_IN" => !self.values.iter().any(|v| comparable(v) == have),
            _ => false,
        }
    }
}

/// An id's sort key: numeric ids by number.
fn id_key(id: &str) -> (usize, &str) {
    (id.len(), id)
}

fn hs_record(object: &str, id: &str, rec: &Rec, properties: Option<&[String]>) -> Value {
    let mut props = Map::new();
    let always = ["hs_object_id", "createdate", hs_modified_property(object)];
    match properties {
        Some(names) => {
            for name in names.iter().map(String::as_str).chain(always) {
                props.insert(
                    name.to_owned(),
                    hs_property(id, rec, name).unwrap_or(Value::Null),
                );
            }
        }
        None => {
            for (name, value) in &rec.fields {
                props.insert(name.clone(), value.clone());
            }
            for name in always {
                props.insert(
                    name.to_owned(),
                    hs_property(id, rec, name).unwrap_or(Value::Null),
                );
            }
        }
    }
    let mut record = json!({
        "id": id,
        "properties": props,
        "createdAt": hs_time(rec.created),
        "updatedAt": hs_time(rec.modified),
        "archived": rec.deleted.is_some(),
    });
    if let Some(at) = rec.deleted {
        record["archivedAt"] = json!(hs_time(at));
    }
    record
}

impl State {
    fn hs_error(&mut self, status: u16, category: &str, message: &str) -> Answer {
        let id = self.correlation_id();
        Answer::json(
            status,
            &json!({"status": "error", "message": message, "correlationId": id,
                    "category": category}),
        )
    }

    fn hubspot(&mut self, req: &Req<'_>) -> Answer {
        let rest = &req.path["/crm/v3/objects/".len()..];
        let segments: Vec<&str> = rest.split('/').collect();
        let (get, post) = (*req.method == Method::GET, *req.method == Method::POST);
        match segments.as_slice() {
            [object, "search"] if post => self.hs_search(object, req),
            [object] if get && !object.is_empty() => self.hs_list(object, req),
            [object, id] if get => {
                let archived = req.param("archived") == Some("true");
                let properties = hs_properties_param(req);
                let found = self
                    .records
                    .get(&(Provider::HubSpot, (*object).to_owned()))
                    .and_then(|t| t.get(*id))
                    .filter(|r| r.deleted.is_some() == archived)
                    .map(|r| hs_record(object, id, r, properties.as_deref()));
                match found {
                    Some(record) => Answer::json(200, &record),
                    None => self.hs_error(
                        404,
                        "OBJECT_NOT_FOUND",
                        "Object not found.  objectId are usually numeric.",
                    ),
                }
            }
            _ => self.hs_error(404, "OBJECT_NOT_FOUND", "Resource not found"),
        }
    }

    fn hs_search(&mut self, object: &str, req: &Req<'_>) -> Answer {
        let body: Value = match serde_json::from_slice(req.body) {
            Ok(Value::Object(body)) => Value::Object(body),
            _ => {
                return self.hs_error(400, "VALIDATION_ERROR", "Invalid input JSON: not an object");
            }
        };
        let mut groups: Vec<Vec<HsFilter>> = Vec::new();
        for group in body["filterGroups"].as_array().into_iter().flatten() {
            let mut filters = Vec::new();
            for filter in group["filters"].as_array().into_iter().flatten() {
                let (Some(property), Some(operator)) =
                    (filter["propertyName"].as_str(), filter["operator"].as_str())
                else {
                    return self.hs_error(
                        400,
                        "VALIDATION_ERROR",
                        "a filter needs propertyName and operator",
                    );
                };
                if ![
                    "GT",
                    "GTE",
                    "LT",
                    "LTE",
                    "EQ",
                    "NEQ",
                    "IN",
                    "NOT_IN",
                    "HAS_PROPERTY",
                    "NOT_HAS_PROPERTY",
                ]
                .contains(&operator)
                {
                    return self.hs_error(
                        400,
                        "VALIDATION_ERROR",
                        &format!("the fake CRM does not know the operator `{operator}`"),
                    );
                }
                filters.push(HsFilter {
                    property: property.to_owned(),
                    operator: operator.to_owned(),
                    value: filter.get("value").cloned(),
                    values: filter["values"].as_array().cloned().unwrap_or_default(),
                });
            }
            groups.push(filters);
        }
        let limit = match &body["limit"] {
            Value::Null => 10,
            v => match v.as_u64() {
                Some(n) if (1..=200).contains(&n) => n as usize,
                _ => {
                    return self.hs_error(
                        400,
                        "VALIDATION_ERROR",
                        "limit must be between 1 and 200",
                    );
                }
            },
        };
        let after = match &body["after"] {
            Value::Null => 0,
            Value::String(s) => match s.parse::<usize>() {
                Ok(n) => n,
                Err(_) => {
                    return self.hs_error(400, "VALIDATION_ERROR", "after must be a number");
                }
            },
            Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
            _ => return self.hs_error(400, "VALIDATION_ERROR", "after must be a number"),
        };
        if after >= 10_000 {
            return self.hs_error(
                400,
                "VALIDATION_ERROR",
                "There was a problem with the request: paging past 10000 results is not allowed",
            );
        }
        let mut sorts: Vec<(String, bool)> = Vec::new();
        for sort in body["sorts"].as_array().into_iter().flatten() {
            match sort {
                Value::String(s) => match s.strip_prefix('-') {
                    Some(name) => sorts.push((name.to_owned(), true)),
                    None => sorts.push((s.clone(), false)),
                },
                other => {
                    let Some(name) = other["propertyName"].as_str() else {
                        return self.hs_error(400, "VALIDATION_ERROR", "a sort needs propertyName");
                    };
                    let descending = other["direction"].as_str() == Some("DESCENDING");
                    sorts.push((name.to_owned(), descending));
                }
            }
        }
        let properties: Option<Vec<String>> = body["properties"].as_array().map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        });
        let mut matches: Vec<(&String, &Rec)> = self
            .table(Provider::HubSpot, object)
            .filter(|(_, r)| r.deleted.is_none())
            .filter(|(id, r)| {
                groups.is_empty() || groups.iter().any(|g| g.iter().all(|f| f.matches(id, r)))
            })
            .collect();
        matches.sort_by(|(a_id, a), (b_id, b)| {
            for (name, descending) in &sorts {
                let ka = hs_property(a_id, a, name).as_ref().and_then(comparable);
                let kb = hs_property(b_id, b, name).as_ref().and_then(comparable);
                let ordering = compare(&ka, &kb);
                let ordering = if *descending {
                    ordering.reverse()
                } else {
                    ordering
                };
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
            id_key(a_id).cmp(&id_key(b_id))
        });
        let total = matches.len();
        let size = self.page_size(Provider::HubSpot, limit);
        let start = after.min(total);
        let end = (start + size).min(total);
        let results: Vec<Value> = matches[start..end]
            .iter()
            .map(|(id, rec)| hs_record(object, id, rec, properties.as_deref()))
            .collect();
        let mut answer = json!({"total": total, "results": results});
        if end < total {
            answer["paging"] = json!({"next": {"after": end.to_string()}});
        }
        Answer::json(200, &answer)
    }

    fn hs_list(&mut self, object: &str, req: &Req<'_>) -> Answer {
        let archived = req.param("archived") == Some("true");
        let limit = match req.param("limit") {
            None => 10,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n >= 1 => n.min(100),
                _ => return self.hs_error(400, "VALIDATION_ERROR", "limit must be a number"),
            },
        };
        let after = match req.param("after") {
            None => 0,
            Some(text) => match text.parse::<usize>() {
                Ok(n) => n,
                Err(_) => return self.hs_error(400, "VALIDATION_ERROR", "after must be a number"),
            },
        };
        let properties = hs_properties_param(req);
        let mut matches: Vec<(&String, &Rec)> = self
            .table(Provider::HubSpot, object)
            .filter(|(_, r)| r.deleted.is_some() == archived)
            .collect();
        matches.sort_by(|(a, _), (b, _)| id_key(a).cmp(&id_key(b)));
        let total = matches.len();
        let size = self.page_size(Provider::HubSpot, limit);
        let start = after.min(total);
        let end = (start + size).min(total);
        let results: Vec<Value> = matches[start..end]
            .iter()
            .map(|(id, rec)| hs_record(object, id, rec, properties.as_deref()))
            .collect();
        let mut answer = json!({"results": results});
        if end < total {
            let link = format!(
                "{}/crm/v3/objects/{object}?archived={archived}&limit={limit}&after={end}",
                self.base_url
            );
            answer["paging"] = json!({"next": {"after": end.to_string(), "link": link}});
        }
        Answer::json(200, &answer)
    }
}

/// The `properties` of a HubSpot GET (comma separated, possibly repeated).
fn hs_properties_param(req: &Req<'_>) -> Option<Vec<String>> {
    let names: Vec<String> = req
        .pairs
        .iter()
        .filter(|(n, _)| n == "properties")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    (!names.is_empty()).then_some(names)
}

// ---------------------------------------------------------------------------------------------
// Zoho

fn zoho_time(secs: i64) -> String {
    format!("{}+00:00", iso_seconds(secs))
}

fn zoho_record(id: &str, rec: &Rec, fields: &[String]) -> Value {
    let mut out = Map::new();
    for field in fields {
        let value = match field.as_str() {
            "id" => json!(id),
            "Modified_Time" => json!(zoho_time(rec.modified)),
            "Created_Time" => json!(zoho_time(rec.created)),
            _ => rec.fields.get(field).cloned().unwrap_or(Value::Null),
        };
        out.insert(field.clone(), value);
    }
    out.insert("id".into(), json!(id));
    Value::Object(out)
}

/// What a deleted-records entry calls a record.
fn zoho_display_name(id: &str, rec: &Rec) -> String {
    let text = |name: &str| rec.fields.get(name).and_then(Value::as_str);
    if let Some(name) = ["Deal_Name", "Full_Name", "Account_Name", "Subject", "Name"]
        .iter()
        .find_map(|n| text(n))
    {
        return name.to_owned();
    }
    match (text("First_Name"), text("Last_Name")) {
        (Some(first), Some(last)) => format!("{first} {last}"),
        (None, Some(last)) => last.to_owned(),
        _ => id.to_owned(),
    }
}

impl State {
    fn zoho(&mut self, req: &Req<'_>) -> Answer {
        let after_version = req.path["/crm/v".len()..]
            .split_once('/')
            .map_or("", |(_, rest)| rest);
        let segments: Vec<&str> = after_version.split('/').collect();
        if *req.method != Method::GET {
            return zoho_error(
                405,
                "INVALID_REQUEST_METHOD",
                "The http request method type is not a valid one",
                json!({}),
            );
        }
        match segments.as_slice() {
            [module] if !module.is_empty() => self.zoho_list(module, req),
            [module, "deleted"] => self.zoho_deleted(module, req),
            _ => zoho_error(
                404,
                "INVALID_URL_PATTERN",
                "Please check if the URL trying to access is a correct one",
                json!({}),
            ),
        }
    }

    fn zoho_per_page(&self, req: &Req<'_>) -> Result<usize, Answer> {
        match req.param("per_page") {
            None => Ok(self.page_size(Provider::Zoho, 200)),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=200).contains(&n) => Ok(self.page_size(Provider::Zoho, n)),
                _ => Err(zoho_error(
                    400,
                    "INVALID_DATA",
                    "invalid data",
                    json!({"param_name": "per_page"}),
                )),
            },
        }
    }

    /// `If-Modified-Since` in epoch milliseconds: `Ok(None)` without one.
    fn zoho_since(req: &Req<'_>) -> Result<Option<i64>, Answer> {
        match req.header("if-modified-since") {
            None => Ok(None),
            Some(text) => parse_time_ms(text).map(Some).ok_or_else(|| {
                zoho_error(
                    400,
                    "INVALID_DATA",
                    "invalid data",
                    json!({"header_name": "If-Modified-Since"}),
                )
            }),
        }
    }

    fn zoho_page_number(req: &Req<'_>) -> Result<usize, Answer> {
        match req.param("page") {
            None => Ok(1),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(zoho_error(
                    400,
                    "INVALID_DATA",
                    "invalid data",
                    json!({"param_name": "page"}),
                )),
            },
        }
    }

    fn zoho_list(&mut self, module: &str, req: &Req<'_>) -> Answer {
        let Some(fields) = req.param("fields") else {
            return zoho_error(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                json!({"param": "fields"}),
            );
        };
        let fields: Vec<String> = fields
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(ids) = req.param("ids") {
            return self.zoho_by_ids(module, ids, &fields);
        }
        let per_page = match self.zoho_per_page(req) {
            Ok(n) => n,
            Err(answer) => return answer,
        };
        let (ids, offset, page, sort_by, sort_order) = match req.param("page_token") {
            Some(token) => match self.page_tokens.get(token) {
                Some(t) => (
                    t.ids.clone(),
                    t.offset,
                    t.offset / t.per_page.max(1) + 1,
                    t.sort_by.clone(),
                    t.sort_order.clone(),
                ),
                None => {
                    return zoho_error(
                        400,
                        "INVALID_DATA",
                        "the page token has expired",
                        json!({"param_name": "page_token"}),
                    );
                }
            },
            None => {
                let since = match Self::zoho_since(req) {
                    Ok(since) => since,
                    Err(answer) => return answer,
                };
                let page = match Self::zoho_page_number(req) {
                    Ok(page) => page,
                    Err(answer) => return answer,
                };
                let sort_by = req.param("sort_by").unwrap_or("id").to_owned();
                let sort_order = req.param("sort_order").unwrap_or("desc").to_owned();
                if !["id", "Modified_Time", "Created_Time"].contains(&sort_by.as_str())
                    || !["asc", "desc"].contains(&sort_order.as_str())
                {
                    return zoho_error(
                        400,
                        "INVALID_DATA",
                        "invalid data",
                        json!({"param_name": "sort_by"}),
                    );
                }
                let offset = (page - 1) * per_page;
                if offset + per_page > 2000 {
                    return zoho_error(
                        400,
                        "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                        "cannot fetch more than 2000 records. Use page_token",
                        json!({}),
                    );
                }
                let mut matches: Vec<(&String, &Rec)> = self
                    .table(Provider::Zoho, module)
                    .filter(|(_, r)| r.deleted.is_none())
                    .filter(|(_, r)| since.is_none_or(|ms| r.modified * 1000 > ms))
                    .collect();
                matches.sort_by(|(a_id, a), (b_id, b)| {
                    let ordering = match sort_by.as_str() {
                        "Modified_Time" => a.modified.cmp(&b.modified),
                        "Created_Time" => a.created.cmp(&b.created),
                        _ => Ordering::Equal,
                    }
                    .then_with(|| id_key(a_id).cmp(&id_key(b_id)));
                    if sort_order == "desc" {
                        ordering.reverse()
                    } else {
                        ordering
                    }
                });
                if matches.is_empty() || offset >= matches.len() {
                    return Answer::empty(if since.is_some() { 304 } else { 204 });
                }
                let ids = Arc::new(matches.into_iter().map(|(id, _)| id.clone()).collect());
                (ids, offset, page, sort_by, sort_order)
            }
        };
        let end = (offset + per_page).min(ids.len());
        let table = self.records.get(&(Provider::Zoho, module.to_owned()));
        let data: Vec<Value> = ids[offset..end]
            .iter()
            .filter_map(|id| {
                let rec = table?.get(id).filter(|r| r.deleted.is_none())?;
                Some(zoho_record(id, rec, &fields))
            })
            .collect();
        let more = end < ids.len();
        let next_page_token = if more {
            let token = format!("fa4e{:045x}", self.serial());
            let next = PageToken {
                ids,
                offset: end,
                per_page,
                sort_by: sort_by.clone(),
                sort_order: sort_order.clone(),
            };
            remember(
                &mut self.page_tokens,
                &mut self.page_token_order,
                token.clone(),
                next,
            );
            Value::String(token)
        } else {
            Value::Null
        };
        let expiry = if more {
            json!(zoho_time(self.clock + 86_400))
        } else {
            Value::Null
        };
        Answer::json(
            200,
            &json!({
                "data": data,
                "info": {
                    "per_page": per_page,
                    "count": end - offset,
                    "page": page,
                    "sort_by": sort_by,
                    "sort_order": sort_order,
                    "more_records": more,
                    "next_page_token": next_page_token,
                    "previous_page_token": null,
                    "page_token_expiry": expiry,
                },
            }),
        )
    }

    fn zoho_by_ids(&mut self, module: &str, ids: &str, fields: &[String]) -> Answer {
        let mut unique = BTreeSet::new();
        let ids: Vec<&str> = ids
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty() && unique.insert(*id))
            .collect();
        if ids.len() > 100 {
            return zoho_error(
                400,
                "LIMIT_EXCEEDED",
                "the number of ids exceeds the limit",
                json!({"param_name": "ids", "limit": 100}),
            );
        }
        let table = self.records.get(&(Provider::Zoho, module.to_owned()));
        let data: Vec<Value> = ids
            .iter()
            .filter_map(|id| {
                let rec = table?.get(*id).filter(|r| r.deleted.is_none())?;
                Some(zoho_record(id, rec, fields))
            })
            .collect();
        if data.is_empty() {
            return Answer::empty(204);
        }
        Answer::json(
            200,
            &json!({
                "data": data,
                "info": {"per_page": 200, "count": data.len(), "page": 1, "more_records": false},
            }),
        )
    }

    fn zoho_deleted(&mut self, module: &str, req: &Req<'_>) -> Answer {
        let kind = req.param("type").unwrap_or("all");
        if !["all", "recycle", "permanent"].contains(&kind) {
            return zoho_error(
                400,
                "INVALID_DATA",
                "invalid data",
                json!({"param_name": "type"}),
            );
        }
        let per_page = match self.zoho_per_page(req) {
            Ok(n) => n,
            Err(answer) => return answer,
        };
        let since = match Self::zoho_since(req) {
            Ok(since) => since,
            Err(answer) => return answer,
        };
        let page = match Self::zoho_page_number(req) {
            Ok(page) => page,
            Err(answer) => return answer,
        };
        let mut matches: Vec<(&String, &Rec, i64)> = self
            .table(Provider::Zoho, module)
            .filter_map(|(id, r)| Some((id, r, r.deleted?)))
            .filter(|(_, r, _)| match kind {
                "recycle" => !r.tombstone,
                "permanent" => r.tombstone,
                _ => true,
            })
            .filter(|(_, _, at)| since.is_none_or(|ms| at * 1000 > ms))
            .collect();
        matches.sort_by(|(a_id, _, a), (b_id, _, b)| {
            b.cmp(a).then_with(|| id_key(b_id).cmp(&id_key(a_id)))
        });
        let offset = (page - 1) * per_page;
        if matches.is_empty() || offset >= matches.len() {
            return Answer::empty(if since.is_some() { 304 } else { 204 });
        }
        let end = (offset + per_page).min(matches.len());
        let user = json!({"name": "Fake Admin", "id": "5725767000000000001"});
        let data: Vec<Value> = matches[offset..end]
            .iter()
            .map(|(id, rec, at)| {
                json!({
                    "deleted_by": user,
                    "id": id,
                    "display_name": zoho_display_name(id, rec),
                    "type": if rec.tombstone { "permanent" } else { "recycle" },
                    "created_by": user,
                    "deleted_time": zoho_time(*at),
                })
            })
            .collect();
        Answer::json(
            200,
            &json!({
                "data": data,
                "info": {
                    "per_page": per_page,
                    "count": end - offset,
                    "page": page,
                    "more_records": end < matches.len(),
                },
            }),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Zenoti

impl State {
    fn zenoti(&mut self, req: &Req<'_>) -> Answer {
        if req.path != "/v1/appointments" {
            return zenoti_error(
                404,
                &format!(
                    "No HTTP resource was found that matches the request URI '{}'.",
                    req.path
                ),
            );
        }
        if *req.method != Method::GET {
            return zenoti_error(405, "The requested resource does not support http method.");
        }
        let (Some(center), Some(start), Some(end)) = (
            req.param("center_id"),
            req.param("start_date"),
            req.param("end_date"),
        ) else {
            return zenoti_error(400, "center_id, start_date and end_date are required.");
        };
        let (Some(first), Some(last)) = (parse_date(start), parse_date(end)) else {
            return zenoti_error(400, "start_date and end_date must be dates (YYYY-MM-DD).");
        };
        if last < first || last - first > 6 {
            return zenoti_error(
                400,
                "The date range cannot be more than 7 days, and end_date cannot be before \
                 start_date.",
            );
        }
        let include_cancelled = req
            .param("include_no_show_cancel")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut matches: Vec<(&String, &Rec)> = self
            .table(Provider::Zenoti, "appointments")
            .filter(|(_, r)| r.deleted.is_none())
            .filter(|(_, r)| r.fields.get("center_id").and_then(Value::as_str) == Some(center))
            .filter(|(_, r)| {
                r.fields
                    .get("start_time")
                    .and_then(Value::as_str)
                    .and_then(|t| t.get(..10))
                    .and_then(parse_date)
                    .is_some_and(|day| (first..=last).contains(&day))
            })
            .filter(|(_, r)| {
                include_cancelled
                    || !matches!(
                        r.fields.get("status").and_then(Value::as_i64),
                        Some(-1 | -2)
                    )
            })
            .collect();
        matches.sort_by(|(a_id, a), (b_id, b)| {
            let start = |r: &Rec| {
                r.fields
                    .get("start_time")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            start(a).cmp(&start(b)).then_with(|| a_id.cmp(b_id))
        });
        let appointments: Vec<Value> = matches
            .iter()
            .map(|(id, rec)| {
                let mut out = rec.fields.clone();
                out.insert("appointment_id".into(), json!(id));
                Value::Object(out)
            })
            .collect();
        Answer::json(200, &json!({"appointments": appointments}))
    }
}

// ---------------------------------------------------------------------------------------------
// Times

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let year = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (if month <= 2 { year + 1 } else { year }, month, day)
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a time in seconds since the epoch.
pub fn iso_seconds(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn number(text: &str) -> Option<i64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// Days since the epoch of a `YYYY-MM-DD` date.
fn parse_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (
        number(&text[..4])?,
        number(&text[5..7])?,
        number(&text[8..])?,
    );
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(y, m, d))
}

/// Epoch milliseconds of an ISO 8601 date-time with an offset, in any of the providers' forms:
/// `2025-12-01T11:45:00Z`, `2025-12-01T09:15:00.000+0000`, `2025-12-01T15:30:00+05:30`,
/// `2025-12-01T09:52:13.905Z`.
pub fn parse_time_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || !(b[10] == b'T' || b[10] == b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let days = parse_date(&text[..10])?;
    let (h, mi, s) = (
        number(&text[11..13])?,
        number(&text[14..16])?,
        number(&text[17..19])?,
    );
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut ms = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let millis: String = fraction[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        ms = millis.parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = rest[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || rest.len() - 1 > 5 {
                return None;
            }
            sign * (number(&digits[..2])? * 60 + number(&digits[2..])?)
        }
    };
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_minutes * 60;
    Some(secs * 1000 + ms)
}
