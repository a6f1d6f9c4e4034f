//! The store's behaviour, written against [`Store`] so that every backend runs the same suite:
//! a backend implements [`Backend`] and invokes [`store_suite!`] (see `sqlite_suite` below).
//! Backend-specific tests (group commit, files on disk) follow the suite.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::*;

/// A database for the suite. `open` may be called again after every store it returned was
/// dropped, and must then see the same data.
#[async_trait]
pub(crate) trait Backend: Send + Sync {
    /// The store, sealing every payload under keys that survive reopening.
    async fn open(&self) -> Arc<dyn Store>;
    /// The keys its sealed stores share.
    fn vault(&self) -> Arc<crate::vault::Vault>;
    /// The same database as a store that seals nothing: as a host before encryption at rest
    /// wrote it.
    async fn open_unsealed(&self) -> Arc<dyn Store>;
    /// Whether the database as stored (files, tables) holds `needle` anywhere, as bytes or as
    /// text.
    async fn stores_plaintext(&self, needle: &str) -> bool;
}

/// Expands to one `#[tokio::test]` per case of the suite, each on a fresh `$backend`.
macro_rules! store_suite {
    ($backend:expr) => {
        $crate::store::tests::store_suite!(@cases $backend;
            adapters_and_their_versions,
            versions_compile_then_become_ready_or_failed,
            configuration_lists_page_by_cursor,
            orgs_are_listed_from_the_rows_that_name_them,
            drifts_are_recorded_once_a_window_and_shapes_saved,
            the_purge_empties_exactly_what_is_past_its_time,
            a_tenant_s_own_retention_comes_before_the_platform_s,
            the_identity_map_keeps_each_record_once_with_where_it_was_seen,
            erasing_one_subject_erases_its_entity_s_events_and_their_deliveries,
            payloads_are_sealed_at_rest_and_erasing_a_tenant_shreds_them,
            erasing_a_tenant_overwrites_what_it_stored_before_encryption,
            connection_upsert_is_idempotent,
            connection_status_and_version_switch,
            only_a_connection_without_deliveries_is_deleted,
            recording_is_idempotent_by_provider_id,
            recording_dedupes_bodies_within_the_window,
            completion_writes_everything,
            a_failed_completion_leaves_no_trace,
            redrive_never_duplicates_events,
            state_is_committed_key_by_key,
            a_completion_on_a_stale_state_is_refused,
            unfinished_deliveries_are_recovered,
            polls_are_claimed_once_and_move_their_cursor_under_their_lease,
            delivery_lists_filter_and_page,
            claims_keep_each_entity_in_order,
            a_failed_row_holds_back_the_rest_of_its_entity,
            failed_publication_retries_then_dies,
            replay_returns_published_rows_in_range,
            replays_are_recorded_and_limited,
            audit_entries_are_listed_by_scope_filter_and_page,
            health_reads_activity_and_keeps_one_open_alert_per_rule,
            outbox_lists_filter_and_page,
            subscribers_receive_what_they_filter_for,
            subscriber_deliveries_retry_die_and_revive,
            replays_queue_subscriber_deliveries_again,
            concurrent_writers_all_land,
            data_survives_reopening,
        );
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $backend;
                $crate::store::tests::$case(&backend).await;
            }
        )*
    };
}
pub(crate) use store_suite;

// ---------------------------------------------------------------------------------------------
// Fixtures

pub(crate) const T0: Millis = 1_700_000_000_000;
pub(crate) const SECOND: Millis = 1_000;
pub(crate) const WINDOW: Duration = Duration::from_secs(300);
const LEASE: Duration = Duration::from_secs(30);

/// A tenant with an adapter (two versions) and a connection.
pub(crate) struct Tenant {
    pub(crate) adapter: Adapter,
    pub(crate) connection: Connection,
}

fn spec(id: &str, tenant_id: &str, adapter_id: &str, version: u32) -> ConnectionSpec {
    ConnectionSpec {
        id: id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        org_id: None,
        provider: "hubspot".to_owned(),
        adapter_id: adapter_id.to_owned(),
        adapter_version: version,
        signature_json: r#"{"scheme":"hubspot-v3"}"#.to_owned(),
        allowed_org_ids: vec!["org-a".to_owned(), "org-b".to_owned()],
        secret_refs_json: r#"{"signing":"secrets/hubspot-signing"}"#.to_owned(),
        settings_json: r#"{"portal":"42"}"#.to_owned(),
        polling_json: None,
        status: ConnectionStatus::Active,
        api_json: None,
        webhook_json: None,
        export_json: None,
    }
}

fn new_version(adapter_id: &str, sha: char) -> NewAdapterVersion {
    NewAdapterVersion {
        status: VersionStatus::Ready,
        adapter_id: adapter_id.to_owned(),
        sha256: sha.to_string().repeat(64),
        size_bytes: 1234,
        info_json: r#"{"name":"acme"}"#.to_owned(),
        limits_json: r#"{"fuel":1000000}"#.to_owned(),
        created_at: T0,
        created_by: "admin@example.com".to_owned(),
    }
}

pub(crate) async fn tenant(store: &dyn Store, tenant_id: &str, connection_id: &str) -> Tenant {
    let adapter = store
        .create_adapter(NewAdapter {
            tenant_id: tenant_id.to_owned(),
            org_id: None,
            name: "acme".to_owned(),
            created_at: T0,
        })
        .await
        .unwrap();
    for sha in ['a', 'b'] {
        store
            .add_adapter_version(new_version(&adapter.id, sha))
            .await
            .unwrap();
    }
    let (connection, _) = store
        .upsert_connection(spec(connection_id, tenant_id, &adapter.id, 1), "config", T0)
        .await
        .unwrap();
    Tenant {
        adapter,
        connection,
    }
}

pub(crate) fn delivery(
    connection_id: &str,
    body: &str,
    provider_id: Option<&str>,
    at: Millis,
) -> NewDelivery {
    NewDelivery {
        connection_id: connection_id.to_owned(),
        received_at: at,
        provider_delivery_id: provider_id.map(str::to_owned),
        method: "POST".to_owned(),
        path: format!("/v1/hooks/{connection_id}"),
        query: "a=1".to_owned(),
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                "x-hubspot-signature-v3".to_owned(),
                "c2lnbmF0dXJl".to_owned(),
            ),
        ],
        body: body.as_bytes().to_vec(),
        trace_id: "trace-1".to_owned(),
        kind: crate::store::DeliveryKind::Webhook,
        poll_run_id: None,
        cursor: None,
    }
}

pub(crate) fn event(
    event_id: &str,
    event_type: &str,
    entity_id: &str,
    org_id: Option<&str>,
) -> NewOutboxEvent {
    NewOutboxEvent {
        event_id: event_id.to_owned(),
        org_id: org_id.map(str::to_owned),
        event_type: event_type.to_owned(),
        entity_type: event_type.split('.').next().unwrap_or_default().to_owned(),
        entity_id: entity_id.to_owned(),
        // Odd spacing on purpose: the store keeps the adapter's text byte for byte.
        payload_json: format!(r#"{{ "id" : "{entity_id}", "amount": "12.50" }}"#),
        metadata_json: r#"{"trace_id":"trace-1","source":"hubspot","actor":"crm","timestamp":"2025-12-01T10:00:00Z"}"#.to_owned(),
    }
}

fn invocation(adapter_id: &str, outcome: InvocationOutcome) -> InvocationRecord {
    InvocationRecord {
        adapter_id: adapter_id.to_owned(),
        adapter_version: 1,
        adapter_sha256: "a".repeat(64),
        input_sha256: "f".repeat(64),
        started_at: T0,
        duration_us: 812,
        fuel: 150_000,
        peak_memory_bytes: 1 << 20,
        bytes_in: 60,
        bytes_out: 120,
        events: 0,
        outcome,
        detail_json: None,
        log_json: r#"{"lines":[],"bytes":0,"truncated":false,"dropped_bytes":0}"#.to_owned(),
        replay_json: Some(r#"{"replayed":true}"#.to_owned()),
        export: crate::store::Export::HandleWebhook,
    }
}

/// The completion of a recorded delivery (its attempt counted when it was recorded), writing
/// `state` when given.
pub(crate) fn completion(
    delivery_id: &str,
    adapter_id: &str,
    events: Vec<NewOutboxEvent>,
    state: Option<StateCommit>,
    at: Millis,
) -> Completion {
    Completion {
        delivery_id: delivery_id.to_owned(),
        status: DeliveryStatus::Processed,
        reason_json: None,
        completed_at: at,
        invocation: InvocationRecord {
            events: events.len() as u64,
            ..invocation(adapter_id, InvocationOutcome::Accepted)
        },
        events,
        state,
        attempt_counted: true,
        preceding: Vec::new(),
        exchanges: Vec::new(),
        poll: None,
    }
}

/// A state write onto `base_version`.
fn writes(base_version: i64, new_state: StateMap) -> Option<StateCommit> {
    Some(StateCommit::blind(base_version, new_state))
}

/// A lease that has already ended: recovery may take the delivery at once.
pub(crate) const LEASE_ENDED: Millis = 0;

fn state(entries: &[(&str, &str)]) -> StateMap {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// Records a delivery and completes it with `events` at `at`; returns the appended seqs.
pub(crate) async fn emit(
    store: &dyn Store,
    t: &Tenant,
    events: Vec<NewOutboxEvent>,
    at: Millis,
) -> Vec<i64> {
    let body = format!("body-{}", new_id());
    let recorded = store
        .record_delivery(
            delivery(&t.connection.id, &body, None, at),
            WINDOW,
            LEASE_ENDED,
        )
        .await
        .unwrap();
    store
        .complete_delivery(completion(&recorded.id, &t.adapter.id, events, None, at))
        .await
        .unwrap()
        .appended
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> String) -> Vec<String> {
    items.iter().map(id).collect()
}

async fn all_outbox(store: &dyn Store, tenant_id: &str) -> Vec<OutboxRow> {
    let mut rows = store
        .list_outbox(OutboxFilter {
            tenant_id: tenant_id.to_owned(),
            limit: 1000,
            ..OutboxFilter::default()
        })
        .await
        .unwrap()
        .items;
    rows.reverse();
    rows
}

// ---------------------------------------------------------------------------------------------
// The suite

/// Walks a list page by page, `limit` at a time; every page but the last is full.
async fn walk<T, F>(limit: usize, mut read: impl FnMut(PageRequest) -> F) -> Vec<T>
where
    F: std::future::Future<Output = Result<Page<T>>>,
{
    let (mut all, mut cursor) = (Vec::new(), None);
    loop {
        let page = read(PageRequest { limit, cursor }).await.unwrap();
        let full = page.items.len() == limit;
        all.extend(page.items);
        match page.next_cursor {
            Some(next) => {
                assert!(full, "only the last page may be short");
                cursor = Some(next);
            }
            None => return all,
        }
    }
}

pub(crate) async fn orgs_are_listed_from_the_rows_that_name_them(backend: &dyn Backend) {
    let store = backend.open().await;
    // c-0: platform level, allowing org-a and org-b.
    let t = tenant(store.as_ref(), "t1", "c-0").await;
    store
        .create_adapter(NewAdapter {
            tenant_id: "t1".to_owned(),
            org_id: Some("org-c".to_owned()),
            name: "org-c-adapter".to_owned(),
            created_at: T0,
        })
        .await
        .unwrap();
    let own = ConnectionSpec {
        org_id: Some("org-a".to_owned()),
        allowed_org_ids: vec!["org-a".to_owned(), "org-d".to_owned()],
        ..spec("c-1", "t1", &t.adapter.id, 1)
    };
    store.upsert_connection(own, "config", T0).await.unwrap();
    store
        .create_subscriber(NewSubscriber {
            tenant_id: "t1".to_owned(),
            org_id: Some("org-e".to_owned()),
            url: "https://subscriber.example/e".to_owned(),
            event_types: Vec::new(),
            secret_ref: "secrets/subscriber".to_owned(),
            enabled: true,
            created_at: T0,
        })
        .await
        .unwrap();
    let other = tenant(store.as_ref(), "t2", "c-t2").await;
    let elsewhere = ConnectionSpec {
        org_id: Some("org-z".to_owned()),
        ..spec("c-t2-z", "t2", &other.adapter.id, 1)
    };
    store
        .upsert_connection(elsewhere, "config", T0)
        .await
        .unwrap();

    let orgs = walk(2, |page| store.list_orgs("t1", None, page)).await;
    let uses = |o: &OrgUse| (o.connections, o.allowed_by, o.adapters, o.subscribers);
    let listed: Vec<(String, (u64, u64, u64, u64))> =
        orgs.iter().map(|o| (o.org_id.clone(), uses(o))).collect();
    assert_eq!(
        listed,
        [
            // Its own connection allows it too: counted once, as its own.
            ("org-a".to_owned(), (1, 1, 0, 0)),
            ("org-b".to_owned(), (0, 1, 0, 0)),
            ("org-c".to_owned(), (0, 0, 1, 0)),
            ("org-d".to_owned(), (0, 1, 0, 0)),
            ("org-e".to_owned(), (0, 0, 0, 1)),
        ],
        "by id, another tenant's org-z absent"
    );
    let only = store
        .list_orgs("t1", Some("org-d"), PageRequest::default())
        .await
        .unwrap();
    assert_eq!(ids(&only.items, |o| o.org_id.clone()), ["org-d"]);
    assert_eq!(only.next_cursor, None);
    let unknown = store
        .list_orgs("t1", Some("org-z"), PageRequest::default())
        .await
        .unwrap();
    assert!(unknown.items.is_empty(), "org-z is t2's: {unknown:?}");
}

pub(crate) async fn drifts_are_recorded_once_a_window_and_shapes_saved(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(store.as_ref(), "t1", "c-1").await;
    let id = &t.connection.id;
    assert_eq!(
        store.payload_shape(id, "webhook:deal.won").await.unwrap(),
        None
    );
    let saved = |json: &str, samples| SavedShape {
        connection_id: id.clone(),
        kind: "webhook:deal.won".into(),
        shape_json: json.into(),
        samples,
        updated_at: T0,
    };
    store
        .save_payload_shapes(vec![saved(r#"{"samples":1}"#, 1)])
        .await
        .unwrap();
    store
        .save_payload_shapes(vec![saved(r#"{"samples":2}"#, 2)])
        .await
        .unwrap();
    assert_eq!(
        store
            .payload_shape(id, "webhook:deal.won")
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"samples":2}"#),
        "the last save wins"
    );
    assert_eq!(store.payload_shape(id, "webhook:*").await.unwrap(), None);

    let drift = |pointer: &str, at: Millis| NewDrift {
        tenant_id: "t1".into(),
        org_id: None,
        connection_id: id.clone(),
        kind: "webhook:deal.won".into(),
        pointer: pointer.into(),
        change: "decimal_as_number".into(),
        was: "string".into(),
        now: "number".into(),
        example_delivery_id: format!("d-{at}"),
        detected_at: at,
    };
    let since = T0 - 3600 * SECOND;
    let first = store
        .record_drifts(
            vec![drift("/data/amount", T0), drift("/data/fee", T0)],
            since,
        )
        .await
        .unwrap();
    assert_eq!(first, 2);
    // Another node finds the same change: not recorded again within the window.
    let again = store
        .record_drifts(vec![drift("/data/amount", T0 + SECOND)], since)
        .await
        .unwrap();
    assert_eq!(again, 0);
    // After the window, it is news again.
    let later = store
        .record_drifts(vec![drift("/data/amount", T0 + 7200 * SECOND)], T0 + 1)
        .await
        .unwrap();
    assert_eq!(later, 1);

    let listed = walk(2, |page| store.list_drifts(id, page)).await;
    let seen: Vec<(String, String)> = listed
        .iter()
        .map(|d: &Drift| (d.pointer.clone(), d.example_delivery_id.clone()))
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        seen[0],
        (
            "/data/amount".to_owned(),
            format!("d-{}", T0 + 7200 * SECOND)
        ),
        "newest first"
    );
    let activity = store
        .connection_activity(id, T0 + 3600 * SECOND)
        .await
        .unwrap();
    assert_eq!(activity.drifts.len(), 1, "only the window's");
    assert_eq!(activity.drifts[0].pointer, "/data/amount");
    let other = tenant(store.as_ref(), "t2", "c-2").await;
    assert!(
        store
            .list_drifts(&other.connection.id, PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// An event whose payload names `person`.
fn personal_event(id: &str, person: &str) -> NewOutboxEvent {
    NewOutboxEvent {
        payload_json: format!(r#"{{"id":"{id}","email":"{person}","amount":"12.50"}}"#),
        ..event(id, "person.updated", id, None)
    }
}

/// A delivery of `t` processed with `person` in everything it stores: its body, its log, the
/// answer its adapter fetched, and its event's payload. Its id.
async fn processed_with(store: &dyn Store, t: &Tenant, person: &str, n: u32) -> String {
    let body = format!(r#"{{"n":{n},"email":"{person}"}}"#);
    let recorded = store
        .record_delivery(
            delivery(&t.connection.id, &body, None, T0),
            WINDOW,
            LEASE_ENDED,
        )
        .await
        .unwrap();
    let events = vec![personal_event(&format!("p-{n}"), person)];
    let mut completion = completion(&recorded.id, &t.adapter.id, events, None, T0);
    completion.invocation.log_json = format!(
        r#"{{"lines":[{{"level":"info","message":"{person}"}}],"bytes":10,"truncated":false,"dropped_bytes":0}}"#
    );
    completion.exchanges = vec![ExchangeRecord {
        by_invocation: true,
        exchange: crate::egress::Exchange {
            started_at: T0,
            method: "GET".into(),
            url: "https://crm.example/people/1".into(),
            request_headers: Vec::new(),
            request_bytes: 0,
            status: Some(200),
            response_headers: Vec::new(),
            response_bytes: 40,
            attempts: 1,
            duration_us: 10,
            error: None,
            response_body: format!(r#"{{"email":"{person}"}}"#).into_bytes(),
        },
    }];
    store.complete_delivery(completion).await.unwrap();
    recorded.id
}

pub(crate) async fn payloads_are_sealed_at_rest_and_erasing_a_tenant_shreds_them(
    backend: &dyn Backend,
) {
    const PERSON: &str = "ada.lovelace@example.com";
    let store = backend.open().await;
    let one = tenant(store.as_ref(), "t1", "c-1").await;
    let two = tenant(store.as_ref(), "t2", "c-2").await;
    let personal = |id: &str| personal_event(id, PERSON);
    // Per tenant: a completed delivery (body, log, answer, event) and one still waiting, with
    // an event not yet published.
    let mut done = Vec::new();
    for (t, n) in [(&one, 1), (&two, 2)] {
        let recorded = processed_with(store.as_ref(), t, PERSON, n).await;
        let waiting = store
            .record_delivery(
                delivery(
                    &t.connection.id,
                    &format!("{PERSON} waits {n}"),
                    None,
                    T0 + 1,
                ),
                WINDOW,
                T0 + 60 * SECOND,
            )
            .await
            .unwrap();
        done.push((recorded, waiting.id));
    }
    // Everything reads back as written...
    let delivery_one = store.get_delivery(&done[0].0).await.unwrap().unwrap();
    assert!(!delivery_one.body_erased);
    assert!(
        String::from_utf8(delivery_one.body)
            .unwrap()
            .contains(PERSON)
    );
    let body_one = format!(r#"{{"n":1,"email":"{PERSON}"}}"#);
    assert_eq!(
        delivery_one.info.body_bytes,
        body_one.len() as u64,
        "the body's own size, not the sealed one's"
    );
    let log = &store.list_invocations(&done[0].0).await.unwrap()[0];
    assert!(log.record.log_json.contains(PERSON) && !log.log_erased);
    let answer = &store.list_exchanges(&done[0].0).await.unwrap()[0];
    assert!(String::from_utf8_lossy(&answer.exchange.response_body).contains(PERSON));
    let events = all_outbox(store.as_ref(), "t1").await;
    assert!(events[0].payload_json.contains(PERSON) && !events[0].payload_erased);
    // ... while no byte of it is stored in the clear.
    assert!(
        !backend.stores_plaintext(PERSON).await,
        "a payload is stored in the clear"
    );

    let reason = r#"{"kind":"erased"}"#;
    let erased = store.erase_tenant("t1", reason, T0 + 2).await.unwrap();
    assert_eq!(
        erased,
        Erasure {
            key_destroyed: true,
            deliveries_failed: 1,
            events_dead: 1,
            subscriber_deliveries_dead: 0,
            plaintext_overwritten: 0,
            identities_forgotten: 0,
        }
    );
    // The tenant's rows stay, their payloads erased: the outbox keeps every row.
    let after = all_outbox(store.as_ref(), "t1").await;
    assert_eq!(after.len(), events.len());
    assert_eq!(
        (after[0].event_id.as_str(), after[0].payload_json.as_str()),
        (events[0].event_id.as_str(), "null")
    );
    assert!(after[0].payload_erased);
    assert_eq!(after[0].status, OutboxStatus::Dead);
    let gone = store.get_delivery(&done[0].0).await.unwrap().unwrap();
    assert!(gone.body_erased && gone.body.is_empty());
    assert_eq!(gone.info.body_bytes, body_one.len() as u64);
    let waiting = store.get_delivery(&done[0].1).await.unwrap().unwrap();
    assert_eq!(waiting.info.status, DeliveryStatus::Failed);
    assert_eq!(waiting.info.reason_json.as_deref(), Some(reason));
    let log = &store.list_invocations(&done[0].0).await.unwrap()[0];
    assert!(log.log_erased && !log.record.log_json.contains(PERSON));
    let answer = &store.list_exchanges(&done[0].0).await.unwrap()[0];
    assert!(answer.response_erased && answer.exchange.response_body.is_empty());
    // The other tenant is untouched.
    let other = all_outbox(store.as_ref(), "t2").await;
    assert!(other[0].payload_json.contains(PERSON) && other[0].status == OutboxStatus::Pending);
    let theirs = store.get_delivery(&done[1].1).await.unwrap().unwrap();
    assert_eq!(theirs.info.status, DeliveryStatus::Received);
    assert!(String::from_utf8(theirs.body).unwrap().contains(PERSON));

    // Erasing again finds no key; what the tenant sends next is kept, under a new key.
    let again = store.erase_tenant("t1", reason, T0 + 3).await.unwrap();
    assert!(!again.key_destroyed);
    let next = emit(store.as_ref(), &one, vec![personal("p-3")], T0 + 4).await;
    let rows = all_outbox(store.as_ref(), "t1").await;
    let row = rows.iter().find(|r| r.seq == next[0]).unwrap();
    assert!(row.payload_json.contains(PERSON) && !row.payload_erased);
    drop(store);
    let reopened = backend.open().await;
    assert!(all_outbox(reopened.as_ref(), "t1").await[0].payload_erased);
    assert!(!all_outbox(reopened.as_ref(), "t2").await[0].payload_erased);
}

pub(crate) async fn erasing_a_tenant_overwrites_what_it_stored_before_encryption(
    backend: &dyn Backend,
) {
    const ADA: &str = "ada.lovelace@example.com";
    const GRACE: &str = "grace.hopper@example.com";
    // Written by a host before encryption at rest: in the clear.
    let before = backend.open_unsealed().await;
    let one = tenant(before.as_ref(), "t1", "c-1").await;
    let two = tenant(before.as_ref(), "t2", "c-2").await;
    let ada = processed_with(before.as_ref(), &one, ADA, 1).await;
    let grace = processed_with(before.as_ref(), &two, GRACE, 2).await;
    drop(before);
    assert!(
        backend.stores_plaintext(ADA).await,
        "the fixture is in the clear"
    );

    // The host now seals; what is stored in the clear still reads as it is...
    let store = backend.open().await;
    let body = store.get_delivery(&ada).await.unwrap().unwrap();
    assert!(String::from_utf8(body.body.clone()).unwrap().contains(ADA));
    // ... until its tenant is erased, though it has no key yet.
    let erased = store
        .erase_tenant("t1", r#"{"kind":"erased"}"#, T0 + 2)
        .await
        .unwrap();
    assert_eq!(
        (erased.key_destroyed, erased.plaintext_overwritten),
        (false, 4),
        "a body, an answer, a log and a payload"
    );
    let gone = store.get_delivery(&ada).await.unwrap().unwrap();
    assert!(gone.body_erased && gone.body.is_empty());
    assert_eq!(
        gone.info.body_bytes, body.info.body_bytes,
        "its size is history"
    );
    assert_eq!(gone.info.body_sha256, body.info.body_sha256);
    let log = &store.list_invocations(&ada).await.unwrap()[0];
    assert!(log.log_erased && !log.record.log_json.contains(ADA));
    let answer = &store.list_exchanges(&ada).await.unwrap()[0];
    assert!(answer.response_erased && answer.exchange.response_body.is_empty());
    let events = all_outbox(store.as_ref(), "t1").await;
    assert_eq!(events.len(), 1);
    assert!(
        events[0].payload_erased && events[0].payload_json == crate::store::sealing::ERASED_PAYLOAD
    );
    // The other tenant reads as it was; once erased, nothing can be overwritten again.
    let theirs = store.get_delivery(&grace).await.unwrap().unwrap();
    assert!(String::from_utf8(theirs.body).unwrap().contains(GRACE));
    assert!(
        all_outbox(store.as_ref(), "t2").await[0]
            .payload_json
            .contains(GRACE)
    );
    let again = store
        .erase_tenant("t1", r#"{"kind":"erased"}"#, T0 + 3)
        .await
        .unwrap();
    assert_eq!(again.plaintext_overwritten, 0);
    drop(store);
    assert!(
        !backend.stores_plaintext(ADA).await,
        "an erased value stays on disk"
    );
    assert!(backend.stores_plaintext(GRACE).await);
}

pub(crate) async fn the_purge_empties_exactly_what_is_past_its_time(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(store.as_ref(), "t1", "c-1").await;
    const DAY: Millis = 24 * 3600 * SECOND;
    let old = emit(
        store.as_ref(),
        &t,
        vec![event("e-old", "deal.won", "d-1", None)],
        T0,
    )
    .await;
    // Recent: received, and its adapter run, ten days later.
    let at = T0 + 10 * DAY;
    let recorded = store
        .record_delivery(
            delivery(&t.connection.id, "recent", None, at),
            WINDOW,
            LEASE_ENDED,
        )
        .await
        .unwrap();
    let mut done = completion(
        &recorded.id,
        &t.adapter.id,
        vec![event("e-new", "deal.won", "d-2", None)],
        None,
        at,
    );
    done.invocation.started_at = at;
    store.complete_delivery(done).await.unwrap();
    assert_eq!(old.len(), 1);
    // Old, but still being taken: its body is what recovery runs again.
    let unfinished = store
        .record_delivery(
            delivery(&t.connection.id, "unfinished", None, T0),
            WINDOW,
            T0 + DAY,
        )
        .await
        .unwrap();
    let deliveries = |store: Arc<dyn Store>| async move {
        let mut all = Vec::new();
        for info in store
            .list_deliveries(DeliveryFilter {
                tenant_id: Some("t1".into()),
                ..DeliveryFilter::default()
            })
            .await
            .unwrap()
            .items
        {
            all.push(store.get_delivery(&info.id).await.unwrap().unwrap());
        }
        all
    };
    let before = deliveries(Arc::clone(&store)).await;
    let outbox_before = all_outbox(store.as_ref(), "t1").await.len();

    let now = T0 + 20 * DAY;
    // Kept 19 days: what is older than T0 + 1 day.
    let purge = Purge {
        bodies_keep: Some(19 * DAY),
        logs_keep: Some(19 * DAY),
        limit: 1,
        now,
    };
    let first = store.purge_expired(purge).await.unwrap();
    assert_eq!((first.bodies, first.logs), (1, 1), "{first:?}");
    assert!(first.full(1), "a full batch: more may wait");
    let second = store.purge_expired(purge).await.unwrap();
    assert_eq!(second, Purged::default(), "nothing else is past its time");

    for delivery in deliveries(Arc::clone(&store)).await {
        let was = before
            .iter()
            .find(|d| d.info.id == delivery.info.id)
            .unwrap();
        assert_eq!(
            delivery.info.body_sha256, was.info.body_sha256,
            "the hash stays"
        );
        assert_eq!(delivery.info.status, was.info.status, "the outcome stays");
        let invocations = store.list_invocations(&delivery.info.id).await.unwrap();
        if delivery.info.id == unfinished.id {
            assert_eq!(delivery.body, b"unfinished", "being taken: kept");
            assert_eq!(delivery.info.body_purged_at, None);
        } else if delivery.info.received_at == T0 {
            assert!(delivery.body.is_empty(), "past its time: purged");
            assert_eq!(delivery.info.body_purged_at, Some(now));
            assert_eq!(invocations[0].log_purged_at, Some(now));
            assert_eq!(invocations[0].record.log_json, empty_log());
            assert_eq!(invocations[0].record.outcome, InvocationOutcome::Accepted);
            let (_, replay) = store
                .get_invocation_replay(&invocations[0].id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(replay, None, "what replays it goes with the log");
        } else {
            assert_eq!(delivery.body, was.body, "recent: kept");
            assert_eq!(delivery.info.body_purged_at, None);
            assert_eq!(invocations[0].log_purged_at, None);
            let (read, replay) = store
                .get_invocation_replay(&invocations[0].id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(read, invocations[0]);
            assert_eq!(
                replay.as_deref(),
                Some(r#"{"replayed":true}"#),
                "kept, opened"
            );
        }
    }
    assert_eq!(
        all_outbox(store.as_ref(), "t1").await.len(),
        outbox_before,
        "events stay"
    );
    let kept = Purge {
        bodies_keep: None,
        logs_keep: None,
        ..purge
    };
    assert_eq!(store.purge_expired(kept).await.unwrap(), Purged::default());
}

pub(crate) async fn a_tenant_s_own_retention_comes_before_the_platform_s(backend: &dyn Backend) {
    let store = backend.open().await;
    let one = tenant(store.as_ref(), "t1", "c-1").await;
    let two = tenant(store.as_ref(), "t2", "c-2").await;
    // Each: a body, the answer fetched for it and a log, at T0.
    let theirs = [
        processed_with(store.as_ref(), &one, "a@example.com", 1).await,
        processed_with(store.as_ref(), &two, "b@example.com", 2).await,
    ];
    assert_eq!(store.get_retention("t1").await.unwrap(), None);
    let own = TenantRetention {
        tenant_id: "t1".into(),
        bodies_days: Some(5),
        logs_days: None,
        updated_at: T0,
        updated_by: "alice".into(),
    };
    store.put_retention(own.clone()).await.unwrap();
    assert_eq!(store.get_retention("t1").await.unwrap(), Some(own.clone()));
    assert_eq!(store.get_retention("t2").await.unwrap(), None);
    let purged_of = |store: Arc<dyn Store>, id: String| async move {
        let delivery = store.get_delivery(&id).await.unwrap().unwrap();
        let log = &store.list_invocations(&id).await.unwrap()[0];
        let answer = &store.list_exchanges(&id).await.unwrap()[0];
        (
            delivery.info.body_purged_at.is_some(),
            answer.exchange.response_body.is_empty(),
            log.log_purged_at.is_some(),
        )
    };

    // Ten days on, the platform keeping 30: t1's bodies and answers (5 days) go, its logs (the
    // platform's 30) stay; t2 keeps everything.
    let platform = Purge {
        bodies_keep: Some(30 * DAY_MILLIS),
        logs_keep: Some(30 * DAY_MILLIS),
        limit: 100,
        now: T0 + 10 * DAY_MILLIS,
    };
    let purged = store.purge_expired(platform).await.unwrap();
    assert_eq!(
        (purged.bodies, purged.exchanges, purged.logs),
        (1, 1, 0),
        "{purged:?}"
    );
    let [t1, t2] = theirs;
    assert_eq!(
        purged_of(Arc::clone(&store), t1.clone()).await,
        (true, true, false)
    );
    assert_eq!(
        purged_of(Arc::clone(&store), t2.clone()).await,
        (false, false, false)
    );

    // A platform that keeps logs for good still purges those of a tenant that keeps 2 days.
    store
        .put_retention(TenantRetention {
            logs_days: Some(2),
            updated_at: T0 + 1,
            ..own.clone()
        })
        .await
        .unwrap();
    let forever = Purge {
        logs_keep: None,
        ..platform
    };
    assert_eq!(store.purge_expired(forever).await.unwrap().logs, 1);
    assert_eq!(purged_of(Arc::clone(&store), t1).await, (true, true, true));
    assert_eq!(
        purged_of(Arc::clone(&store), t2).await,
        (false, false, false)
    );

    // Neither kind set: back to the platform's.
    store
        .put_retention(TenantRetention {
            bodies_days: None,
            logs_days: None,
            ..own
        })
        .await
        .unwrap();
    assert_eq!(store.get_retention("t1").await.unwrap(), None);
}

pub(crate) async fn the_identity_map_keeps_each_record_once_with_where_it_was_seen(
    backend: &dyn Backend,
) {
    let store = backend.open().await;
    let t = tenant(store.as_ref(), "t1", "c-1").await;
    let other = tenant(store.as_ref(), "t2", "c-2").await;
    let named = |id: &str, entity: &str, external: &str, org: &str| NewOutboxEvent {
        payload_json: format!(
            r#"{{"member_id":"{entity}","external_source":"crm","external_id":"{external}"}}"#
        ),
        ..event(id, "member.updated", entity, Some(org))
    };
    emit(
        store.as_ref(),
        &t,
        vec![named("e-1", "M-1", "C-1", "org-a")],
        T0,
    )
    .await;
    // The same record again (the entity renamed), another one, one naming none, and the first
    // record's id in another org (another identity).
    let later = vec![
        named("e-2", "M-1b", "C-1", "org-a"),
        named("e-3", "M-2", "C-2", "org-a"),
        event("e-4", "member.updated", "M-3", Some("org-a")),
        named("e-5", "M-9", "C-1", "org-b"),
    ];
    emit(store.as_ref(), &t, later, T0 + SECOND).await;
    // An event appended again (a redrive) is not counted twice.
    emit(
        store.as_ref(),
        &t,
        vec![named("e-2", "M-1b", "C-1", "org-a")],
        T0 + 2 * SECOND,
    )
    .await;
    emit(
        store.as_ref(),
        &other,
        vec![named("x-1", "M-1", "C-1", "org-a")],
        T0,
    )
    .await;

    let list = |org: &str, external_id: Option<&str>| IdentityFilter {
        tenant_id: "t1".into(),
        org_id: Some(org.into()),
        external_id: external_id.map(str::to_owned),
        ..IdentityFilter::default()
    };
    let org_a = store
        .list_identities(list("org-a", None))
        .await
        .unwrap()
        .items;
    let keys: Vec<_> = org_a.iter().map(|i| i.external_id.as_str()).collect();
    assert_eq!(keys, ["C-2", "C-1"], "newest first");
    let c1 = &org_a[1];
    assert_eq!(
        (
            c1.source.as_str(),
            c1.entity_type.as_str(),
            c1.entity_id.as_str(),
            c1.events
        ),
        ("crm", "member", "M-1b", 2)
    );
    assert_eq!(
        (
            c1.first_event_id.as_str(),
            c1.first_seen_at,
            c1.first_connection_id.as_str()
        ),
        ("e-1", T0, t.connection.id.as_str())
    );
    assert_eq!(
        (c1.last_event_id.as_str(), c1.last_seen_at),
        ("e-2", T0 + SECOND)
    );
    let one = store
        .list_identities(list("org-a", Some("C-1")))
        .await
        .unwrap();
    assert_eq!(one.items, vec![c1.clone()]);
    let org_b = store
        .list_identities(list("org-b", None))
        .await
        .unwrap()
        .items;
    assert_eq!(
        (
            org_b.len(),
            org_b[0].entity_id.as_str(),
            org_b[0].org_id.as_deref()
        ),
        (1, "M-9", Some("org-b"))
    );
    // Page by page.
    let first = store
        .list_identities(IdentityFilter {
            limit: 1,
            ..list("org-a", None)
        })
        .await
        .unwrap();
    let second = store
        .list_identities(IdentityFilter {
            limit: 1,
            cursor: first.next_cursor.clone(),
            ..list("org-a", None)
        })
        .await
        .unwrap();
    assert_eq!(
        (
            first.items[0].external_id.as_str(),
            second.items[0].external_id.as_str()
        ),
        ("C-2", "C-1")
    );

    // Erasing the tenant forgets its map, not the other tenant's.
    let erased = store
        .erase_tenant("t1", r#"{"kind":"erased"}"#, T0 + 3)
        .await
        .unwrap();
    assert_eq!(erased.identities_forgotten, 3);
    assert!(
        store
            .list_identities(list("org-a", None))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let theirs = IdentityFilter {
        tenant_id: "t2".into(),
        ..list("org-a", None)
    };
    assert_eq!(store.list_identities(theirs).await.unwrap().items.len(), 1);
}

pub(crate) async fn erasing_one_subject_erases_its_entity_s_events_and_their_deliveries(
    backend: &dyn Backend,
) {
    let store = backend.open().await;
    let t = tenant(store.as_ref(), "t1", "c-1").await;
    let named = |id: &str, entity: &str, external: &str| NewOutboxEvent {
        payload_json: format!(
            r#"{{"member_id":"{entity}","external_source":"crm","external_id":"{external}"}}"#
        ),
        ..event(id, "member.updated", entity, Some("org-a"))
    };
    emit(store.as_ref(), &t, vec![named("e-1", "M-1", "C-1")], T0).await;
    emit(store.as_ref(), &t, vec![named("e-2", "M-2", "C-2")], T0).await;
    // A later event of the same member that does not repeat its CRM id.
    emit(
        store.as_ref(),
        &t,
        vec![event("e-3", "member.updated", "M-1", Some("org-a"))],
        T0 + 1,
    )
    .await;
    let subject = |org: &str, external_id: &str| Subject {
        tenant_id: "t1".into(),
        org_id: Some(org.into()),
        platform_level: true,
        source: "crm".into(),
        external_id: external_id.into(),
    };
    // Another org cannot reach it.
    let refused = store
        .erase_subject(subject("org-b", "C-1"), T0 + 2)
        .await
        .unwrap();
    assert_eq!(refused, SubjectErasure::default());

    let erased = store
        .erase_subject(subject("org-a", "C-1"), T0 + 2)
        .await
        .unwrap();
    assert_eq!(
        erased,
        SubjectErasure {
            identities: 1,
            events: 2,
            deliveries: 2,
        }
    );
    let rows = all_outbox(store.as_ref(), "t1").await;
    let by_id = |id: &str| rows.iter().find(|r| r.event_id == id).unwrap().clone();
    for gone in ["e-1", "e-3"] {
        let row = by_id(gone);
        assert!(row.payload_erased && row.payload_json == crate::store::sealing::ERASED_PAYLOAD);
        assert_eq!(row.status, OutboxStatus::Dead, "{gone} was pending");
        let delivery = store.get_delivery(&row.delivery_id).await.unwrap().unwrap();
        assert!(delivery.body_erased && delivery.body.is_empty(), "{gone}");
        let log = &store.list_invocations(&row.delivery_id).await.unwrap()[0];
        assert!(log.log_erased);
        let (_, replay) = store.get_invocation_replay(&log.id).await.unwrap().unwrap();
        assert_eq!(
            replay, None,
            "{gone}: what replays it is erased with its log"
        );
    }
    let kept = by_id("e-2");
    assert!(!kept.payload_erased && kept.payload_json.contains("C-2"));
    let delivery = store
        .get_delivery(&kept.delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!delivery.body_erased && !delivery.body.is_empty());
    assert_eq!(rows.len(), 3, "every row stays");
    let left: Vec<_> = store
        .list_identities(IdentityFilter {
            tenant_id: "t1".into(),
            ..IdentityFilter::default()
        })
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.external_id)
        .collect();
    assert_eq!(left, ["C-2"]);
    // Once is enough: nothing is left to erase.
    let again = store
        .erase_subject(subject("org-a", "C-1"), T0 + 3)
        .await
        .unwrap();
    assert_eq!(again, SubjectErasure::default());
}

pub(crate) async fn configuration_lists_page_by_cursor(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(store.as_ref(), "t1", "c-0").await;
    for (i, org) in [
        (1, Some("org-a")),
        (2, None),
        (3, Some("org-b")),
        (4, Some("org-a")),
    ] {
        store
            .create_adapter(NewAdapter {
                tenant_id: "t1".to_owned(),
                org_id: org.map(str::to_owned),
                name: format!("adapter-{i}"),
                created_at: T0,
            })
            .await
            .unwrap();
        let connection = ConnectionSpec {
            org_id: org.map(str::to_owned),
            ..spec(&format!("c-{i}"), "t1", &t.adapter.id, 1)
        };
        store
            .upsert_connection(connection, "config", T0)
            .await
            .unwrap();
        store
            .create_subscriber(NewSubscriber {
                tenant_id: "t1".to_owned(),
                org_id: org.map(str::to_owned),
                url: format!("https://subscriber.example/{i}"),
                event_types: Vec::new(),
                secret_ref: "secrets/subscriber".to_owned(),
                enabled: true,
                created_at: T0,
            })
            .await
            .unwrap();
    }
    for sha in ['c', 'd', 'e'] {
        store
            .add_adapter_version(new_version(&t.adapter.id, sha))
            .await
            .unwrap();
    }
    let org_a = Some("org-a");
    let adapters: Vec<String> = walk(2, |page| store.list_adapters("t1", org_a, page))
        .await
        .into_iter()
        .map(|a: Adapter| a.name)
        .collect();
    let mut expected = vec![
        t.adapter.name.clone(),
        "adapter-1".into(),
        "adapter-2".into(),
        "adapter-4".into(),
    ];
    expected.sort();
    assert_eq!(
        adapters, expected,
        "org-a's and platform-level adapters, by name"
    );

    let connections: Vec<String> = walk(1, |page| store.list_connections("t1", org_a, page))
        .await
        .into_iter()
        .map(|c: Connection| c.id)
        .collect();
    assert_eq!(connections, ["c-0", "c-1", "c-2", "c-4"]);
    let everything = walk(3, |page| store.list_connections("t1", None, page)).await;
    assert_eq!(everything.len(), 5, "no row lost or repeated across pages");

    let subscribers: Vec<String> = walk(2, |page| store.list_subscribers("t1", org_a, page))
        .await
        .into_iter()
        .map(|s: Subscriber| s.url)
        .collect();
    assert_eq!(
        subscribers,
        [
            "https://subscriber.example/1",
            "https://subscriber.example/2",
            "https://subscriber.example/4"
        ],
        "oldest first"
    );
    let found = store
        .find_subscriber("t1", None, "https://subscriber.example/2")
        .await
        .unwrap();
    assert_eq!(found.map(|s| s.org_id), Some(None));
    assert_eq!(
        store
            .find_subscriber("t1", org_a, "https://subscriber.example/2")
            .await
            .unwrap(),
        None,
        "the key is the exact org"
    );

    let versions: Vec<u32> = walk(2, |page| store.list_adapter_versions(&t.adapter.id, page))
        .await
        .into_iter()
        .map(|v: AdapterVersion| v.version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    let bad = PageRequest {
        limit: 2,
        cursor: Some("not-a-version".into()),
    };
    assert!(matches!(
        store.list_adapter_versions(&t.adapter.id, bad).await,
        Err(Error::Invalid(_))
    ));
}

pub(crate) async fn adapters_and_their_versions(backend: &dyn Backend) {
    let store = backend.open().await;
    let new = |tenant: &str, org: Option<&str>, name: &str| NewAdapter {
        tenant_id: tenant.to_owned(),
        org_id: org.map(str::to_owned),
        name: name.to_owned(),
        created_at: T0,
    };
    let acme = store.create_adapter(new("t1", None, "acme")).await.unwrap();
    assert_eq!(
        store.get_adapter(&acme.id).await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(
        store.find_adapter("t1", "acme").await.unwrap(),
        Some(acme.clone())
    );
    assert!(matches!(
        store.create_adapter(new("t1", Some("org-a"), "acme")).await,
        Err(Error::Conflict(_))
    ));
    // Names are per tenant.
    store.create_adapter(new("t2", None, "acme")).await.unwrap();
    let in_a = store
        .create_adapter(new("t1", Some("org-a"), "in-a"))
        .await
        .unwrap();
    store
        .create_adapter(new("t1", Some("org-b"), "in-b"))
        .await
        .unwrap();
    let names = |list: Vec<Adapter>| list.into_iter().map(|a| a.name).collect::<Vec<_>>();
    assert_eq!(
        names(
            store
                .list_adapters("t1", None, PageRequest::default())
                .await
                .unwrap()
                .items
        ),
        ["acme", "in-a", "in-b"]
    );
    assert_eq!(
        names(
            store
                .list_adapters("t1", Some("org-a"), PageRequest::default())
                .await
                .unwrap()
                .items
        ),
        ["acme", "in-a"]
    );
    assert_eq!(in_a.org_id.as_deref(), Some("org-a"));

    let v1 = store
        .add_adapter_version(new_version(&acme.id, 'a'))
        .await
        .unwrap();
    let v2 = store
        .add_adapter_version(new_version(&acme.id, 'b'))
        .await
        .unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    assert_eq!(
        store.get_adapter_version(&acme.id, 2).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(store.get_adapter_version(&acme.id, 3).await.unwrap(), None);
    assert_eq!(
        store
            .list_adapter_versions(&acme.id, PageRequest::default())
            .await
            .unwrap()
            .items,
        [v1.clone(), v2.clone()]
    );
    assert_eq!(
        store.latest_adapter_version(&acme.id).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        store
            .adapter_versions_of(&acme.id, &v2.sha256)
            .await
            .unwrap(),
        std::slice::from_ref(&v2)
    );
    // Another adapter numbers its own versions.
    assert_eq!(
        store
            .add_adapter_version(new_version(&in_a.id, 'c'))
            .await
            .unwrap()
            .version,
        1
    );
    assert!(matches!(
        store
            .add_adapter_version(new_version("no-such-adapter", 'a'))
            .await,
        Err(Error::NotFound(_))
    ));
    let broken = NewAdapterVersion {
        info_json: "{not json".to_owned(),
        ..new_version(&acme.id, 'd')
    };
    assert!(matches!(
        store.add_adapter_version(broken).await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(
        store.latest_adapter_version(&acme.id).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        store.latest_adapter_version(&in_a.id).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        store
            .latest_adapter_version("no-such-adapter")
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn connection_upsert_is_idempotent(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let first = t.connection.clone();
    assert_eq!(first.created_at, T0);
    assert_eq!(first.allowed_org_ids, ["org-a", "org-b"]);
    assert_eq!(first.version_changed_by, None);

    let base = spec("c1", "t1", &t.adapter.id, 1);
    let (again, what) = store
        .upsert_connection(base.clone(), "config", T0 + SECOND)
        .await
        .unwrap();
    assert_eq!(what, Upsert::Unchanged);
    assert_eq!(again, first, "the same spec twice writes nothing");

    let changed = ConnectionSpec {
        settings_json: r#"{"portal":"43"}"#.to_owned(),
        ..base.clone()
    };
    let (updated, what) = store
        .upsert_connection(changed, "config", T0 + 2 * SECOND)
        .await
        .unwrap();
    assert_eq!(what, Upsert::Updated);
    assert_eq!(updated.settings_json, r#"{"portal":"43"}"#);
    assert_eq!(
        (updated.created_at, updated.updated_at),
        (T0, T0 + 2 * SECOND)
    );
    assert_eq!(updated.version_changed_by, None);

    // The webhook guard is kept, changed and removed like any other column.
    let guarded = ConnectionSpec {
        webhook_json: Some(r#"{"allowed_ips":["203.0.113.0/24"]}"#.to_owned()),
        ..base.clone()
    };
    let (kept, what) = store
        .upsert_connection(guarded.clone(), "config", T0 + 2 * SECOND)
        .await
        .unwrap();
    assert_eq!(what, Upsert::Updated);
    assert_eq!(kept.spec(), guarded);
    let bad_guard = ConnectionSpec {
        webhook_json: Some("{".to_owned()),
        ..base.clone()
    };
    assert!(matches!(
        store.upsert_connection(bad_guard, "x", T0).await,
        Err(Error::Invalid(_))
    ));
    let (unguarded, _) = store
        .upsert_connection(
            ConnectionSpec {
                settings_json: r#"{"portal":"43"}"#.to_owned(),
                ..base.clone()
            },
            "config",
            T0 + 2 * SECOND,
        )
        .await
        .unwrap();
    assert_eq!(unguarded.webhook_json, None);

    let upgraded = ConnectionSpec {
        adapter_version: 2,
        ..base.clone()
    };
    let (upgraded, _) = store
        .upsert_connection(upgraded, "deploy.yaml", T0 + 3 * SECOND)
        .await
        .unwrap();
    assert_eq!(upgraded.adapter_version, 2);
    assert_eq!(upgraded.version_changed_by.as_deref(), Some("deploy.yaml"));
    assert_eq!(upgraded.version_changed_at, Some(T0 + 3 * SECOND));
    assert_eq!(store.get_connection("c1").await.unwrap(), Some(upgraded));

    // A connection never changes tenant, and never runs another tenant's adapter.
    let other = tenant(&*store, "t2", "c2").await;
    let stolen = spec("c1", "t2", &other.adapter.id, 1);
    assert!(matches!(
        store.upsert_connection(stolen, "x", T0).await,
        Err(Error::Conflict(_))
    ));
    let borrowed = spec("c3", "t1", &other.adapter.id, 1);
    assert!(matches!(
        store.upsert_connection(borrowed, "x", T0).await,
        Err(Error::NotFound(_))
    ));
    let unknown_version = ConnectionSpec {
        adapter_version: 9,
        ..base.clone()
    };
    assert!(matches!(
        store.upsert_connection(unknown_version, "x", T0).await,
        Err(Error::NotFound(_))
    ));
    let bad_json = ConnectionSpec {
        signature_json: "nope".to_owned(),
        ..base
    };
    assert!(matches!(
        store.upsert_connection(bad_json, "x", T0).await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(store.get_connection("c3").await.unwrap(), None);

    // Lists: per tenant; an org sees its own and platform-level connections.
    let org_b = ConnectionSpec {
        org_id: Some("org-b".to_owned()),
        ..spec("c4", "t1", &t.adapter.id, 1)
    };
    store.upsert_connection(org_b, "config", T0).await.unwrap();
    let listed = |list: Vec<Connection>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        listed(
            store
                .list_connections("t1", None, PageRequest::default())
                .await
                .unwrap()
                .items
        ),
        ["c1", "c4"]
    );
    assert_eq!(
        listed(
            store
                .list_connections("t1", Some("org-a"), PageRequest::default())
                .await
                .unwrap()
                .items
        ),
        ["c1"]
    );
    assert_eq!(
        listed(
            store
                .list_connections("t1", Some("org-b"), PageRequest::default())
                .await
                .unwrap()
                .items
        ),
        ["c1", "c4"]
    );
    assert_eq!(
        listed(
            store
                .list_connections("t2", None, PageRequest::default())
                .await
                .unwrap()
                .items
        ),
        ["c2"]
    );
}

pub(crate) async fn only_a_connection_without_deliveries_is_deleted(backend: &dyn Backend) {
    let store = backend.open().await;
    let used = tenant(&*store, "t1", "used").await;
    let (unused, _) = store
        .upsert_connection(spec("unused", "t1", &used.adapter.id, 1), "config", T0)
        .await
        .unwrap();
    emit(
        &*store,
        &used,
        vec![event("e1", "deal.won", "D1", None)],
        T0,
    )
    .await;

    store.delete_connection(&unused.id).await.unwrap();
    assert_eq!(store.get_connection(&unused.id).await.unwrap(), None);
    assert!(store.load_state(&unused.id).await.unwrap().map.is_empty());
    assert!(matches!(
        store.delete_connection(&unused.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.delete_connection(&used.connection.id).await,
        Err(Error::Conflict(_))
    ));
    assert!(
        store
            .get_connection(&used.connection.id)
            .await
            .unwrap()
            .is_some()
    );
}

pub(crate) async fn connection_status_and_version_switch(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let disabled = store
        .set_connection_status("c1", ConnectionStatus::Disabled, T0 + SECOND)
        .await
        .unwrap();
    assert_eq!(disabled.status, ConnectionStatus::Disabled);
    assert_eq!(disabled.updated_at, T0 + SECOND);
    assert_eq!(
        store.get_connection("c1").await.unwrap().unwrap().status,
        ConnectionStatus::Disabled
    );
    assert!(matches!(
        store
            .set_connection_status("nope", ConnectionStatus::Active, T0)
            .await,
        Err(Error::NotFound(_))
    ));

    let switched = store
        .set_connection_version("c1", 2, "alice", T0 + 5 * SECOND)
        .await
        .unwrap();
    assert_eq!(switched.adapter_version, 2);
    assert_eq!(switched.version_changed_by.as_deref(), Some("alice"));
    assert_eq!(switched.version_changed_at, Some(T0 + 5 * SECOND));
    let rolled_back = store
        .set_connection_version("c1", 1, "bob", T0 + 6 * SECOND)
        .await
        .unwrap();
    assert_eq!(rolled_back.adapter_version, 1);
    assert_eq!(rolled_back.version_changed_by.as_deref(), Some("bob"));
    assert!(matches!(
        store.set_connection_version("c1", 3, "bob", T0).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.set_connection_version("nope", 1, "bob", T0).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        store
            .get_connection("c1")
            .await
            .unwrap()
            .unwrap()
            .adapter_version,
        1
    );
    assert_eq!(t.connection.last_delivery_at, None);
}

pub(crate) async fn recording_is_idempotent_by_provider_id(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let first = store
        .record_delivery(
            delivery("c1", "body", Some("evt-1"), T0),
            WINDOW,
            LEASE_ENDED,
        )
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.status, DeliveryStatus::Received);

    // The CRM retries an hour later, even with a re-rendered body: same delivery.
    let retry = store
        .record_delivery(
            delivery("c1", "body, again", Some("evt-1"), T0 + 3_600 * SECOND),
            WINDOW,
            LEASE_ENDED,
        )
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.id, first.id);
    // A different provider id is a different delivery, even with the same body.
    let second = store
        .record_delivery(
            delivery("c1", "body", Some("evt-2"), T0),
            WINDOW,
            LEASE_ENDED,
        )
        .await
        .unwrap();
    assert!(!second.duplicate);
    assert_ne!(second.id, first.id);

    // A duplicate of a completed delivery reports the original's status.
    store
        .complete_delivery(completion(
            &first.id,
            &t.adapter.id,
            vec![],
            None,
            T0 + SECOND,
        ))
        .await
        .unwrap();
    let late = store
        .record_delivery(
            delivery("c1", "body", Some("evt-1"), T0 + 2 * SECOND),
            WINDOW,
            LEASE_ENDED,
        )
        .await
        .unwrap();
    assert_eq!(
        (late.id.as_str(), late.duplicate, late.status),
        (first.id.as_str(), true, DeliveryStatus::Processed)
    );

    let all = store
        .list_deliveries(DeliveryFilter {
            connection_id: Some("c1".to_owned()),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2);
    let stored = store.get_delivery(&first.id).await.unwrap().unwrap();
    assert_eq!(stored.body, b"body");
    assert_eq!(stored.info.provider_delivery_id.as_deref(), Some("evt-1"));
    assert_eq!(stored.info.tenant_id, "t1");
    assert_eq!(stored.info.body_sha256, sha256_hex(b"body"));
    assert_eq!(stored.info.body_bytes, 4);
    assert_eq!(stored.headers, delivery("c1", "", None, T0).headers);
    assert_eq!(
        store
            .get_connection("c1")
            .await
            .unwrap()
            .unwrap()
            .last_delivery_at,
        Some(T0)
    );

    assert!(matches!(
        store
            .record_delivery(
                delivery("no-such-connection", "x", None, T0),
                WINDOW,
                LEASE_ENDED
            )
            .await,
        Err(Error::NotFound(_))
    ));
}

pub(crate) async fn recording_dedupes_bodies_within_the_window(backend: &dyn Backend) {
    let store = backend.open().await;
    tenant(&*store, "t1", "c1").await;
    tenant(&*store, "t2", "c2").await;
    let record = |connection: &'static str, body: &'static str, at: Millis| {
        let store = Arc::clone(&store);
        async move {
            store
                .record_delivery(delivery(connection, body, None, at), WINDOW, LEASE_ENDED)
                .await
                .unwrap()
        }
    };
    let original = record("c1", "same", T0).await;
    assert!(!original.duplicate);
    let retry = record("c1", "same", T0 + 299 * SECOND).await;
    assert!(retry.duplicate);
    assert_eq!(retry.id, original.id);
    // Outside the window it is a new delivery (the same change sent again, legitimately).
    let later = record("c1", "same", T0 + 301 * SECOND).await;
    assert!(!later.duplicate);
    assert_ne!(later.id, original.id);
    // Same body on another connection, or another body: new.
    assert!(!record("c2", "same", T0).await.duplicate);
    assert!(!record("c1", "other", T0 + SECOND).await.duplicate);
    let count = store
        .list_deliveries(DeliveryFilter {
            connection_id: Some("c1".to_owned()),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(count, 3);
    assert_eq!(
        store
            .get_connection("c1")
            .await
            .unwrap()
            .unwrap()
            .last_delivery_at,
        Some(T0 + 301 * SECOND)
    );
}

pub(crate) async fn completion_writes_everything(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let recorded = store
        .record_delivery(
            delivery("c1", "deal won", Some("e1"), T0),
            WINDOW,
            LEASE_ENDED,
        )
        .await
        .unwrap();
    let events = vec![
        event("ev-1", "deal.won", "D1", Some("org-a")),
        event("ev-2", "deal.updated", "D1", None),
    ];
    let mut done = completion(
        &recorded.id,
        &t.adapter.id,
        events.clone(),
        writes(0, state(&[("cursor", "42")])),
        T0 + SECOND,
    );
    done.invocation.detail_json = Some(r#"{"next_cursor":"42"}"#.to_owned());
    let completed = store.complete_delivery(done.clone()).await.unwrap();
    assert_eq!(completed.appended.len(), 2);
    assert!(completed.appended[0] < completed.appended[1]);
    assert_eq!(completed.already_present, 0);

    let stored = store
        .get_delivery(&recorded.id)
        .await
        .unwrap()
        .unwrap()
        .info;
    assert_eq!(stored.status, DeliveryStatus::Processed);
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.processed_at, Some(T0 + SECOND));

    let invocations = store.list_invocations(&recorded.id).await.unwrap();
    assert_eq!(invocations.len(), 1);
    assert_eq!(invocations[0].id, completed.invocation_id);
    // A listing leaves out what replays it: that is read on its own, opened.
    assert_eq!(
        invocations[0].record,
        InvocationRecord {
            replay_json: None,
            ..done.invocation.clone()
        }
    );
    let (one, replay) = store
        .get_invocation_replay(&completed.invocation_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one, invocations[0]);
    assert_eq!(replay, done.invocation.replay_json);
    assert!(
        store
            .get_invocation_replay("no-such-invocation")
            .await
            .unwrap()
            .is_none()
    );

    for (seq, sent) in completed.appended.iter().zip(&events) {
        let row = store.get_event(&sent.event_id).await.unwrap().unwrap();
        assert_eq!(row.seq, *seq);
        assert_eq!(
            row.payload_json, sent.payload_json,
            "payload kept byte for byte"
        );
        assert_eq!(row.metadata_json, sent.metadata_json);
        assert_eq!(row.org_id, sent.org_id);
        assert_eq!(
            (
                row.event_type.as_str(),
                row.entity_type.as_str(),
                row.entity_id.as_str()
            ),
            (sent.event_type.as_str(), "deal", "D1")
        );
        assert_eq!(
            (
                row.tenant_id.as_str(),
                row.connection_id.as_str(),
                row.delivery_id.as_str()
            ),
            ("t1", "c1", recorded.id.as_str())
        );
        assert_eq!(
            (
                row.status,
                row.attempts,
                row.created_at,
                row.next_attempt_at
            ),
            (OutboxStatus::Pending, 0, T0 + SECOND, T0 + SECOND)
        );
        assert_eq!((row.published_at, row.last_error), (None, None));
    }
    let snapshot = store.load_state("c1").await.unwrap();
    assert_eq!(
        (snapshot.map, snapshot.version),
        (state(&[("cursor", "42")]), 1)
    );
    assert!(
        store
            .claim_recovery(T0 + 100 * SECOND, T0 + 200 * SECOND, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.outbox_lag().await.unwrap(),
        OutboxLag {
            pending: 2,
            oldest_pending_created_at: Some(T0 + SECOND)
        }
    );

    let not_final = Completion {
        status: DeliveryStatus::Received,
        ..done.clone()
    };
    assert!(matches!(
        store.complete_delivery(not_final).await,
        Err(Error::Invalid(_))
    ));
    let unknown = Completion {
        delivery_id: "nope".to_owned(),
        ..done
    };
    assert!(matches!(
        store.complete_delivery(unknown).await,
        Err(Error::NotFound(_))
    ));
}

pub(crate) async fn a_failed_completion_leaves_no_trace(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let first = store
        .record_delivery(delivery("c1", "one", None, T0), WINDOW, LEASE_ENDED)
        .await
        .unwrap();
    store
        .complete_delivery(completion(
            &first.id,
            &t.adapter.id,
            vec![],
            writes(0, state(&[("k", "v1")])),
            T0,
        ))
        .await
        .unwrap();

    let second = store
        .record_delivery(delivery("c1", "two", None, T0), WINDOW, LEASE_ENDED)
        .await
        .unwrap();
    // The second event breaks a constraint of the outbox (an empty entity id) after the
    // invocation row and the first event were written: all of it must go.
    let events = vec![
        event("ok-1", "deal.won", "D1", None),
        event("bad-1", "deal.won", "", None),
    ];
    let failing = completion(
        &second.id,
        &t.adapter.id,
        events,
        writes(1, state(&[("k", "v2")])),
        T0 + SECOND,
    );
    assert!(store.complete_delivery(failing).await.is_err());

    let info = store.get_delivery(&second.id).await.unwrap().unwrap().info;
    assert_eq!(
        (info.status, info.attempts, info.processed_at),
        (DeliveryStatus::Received, 1, None)
    );
    assert!(store.list_invocations(&second.id).await.unwrap().is_empty());
    assert_eq!(store.get_event("ok-1").await.unwrap(), None);
    assert_eq!(store.outbox_lag().await.unwrap().pending, 0);
    let snapshot = store.load_state("c1").await.unwrap();
    assert_eq!((snapshot.map, snapshot.version), (state(&[("k", "v1")]), 1));
    assert_eq!(
        ids(
            &store
                .claim_recovery(T0 + 10 * SECOND, T0 + 20 * SECOND, 10)
                .await
                .unwrap(),
            |d| d.info.id.clone()
        ),
        [second.id.as_str()]
    );

    // The store is fine afterwards, and the delivery can still be completed.
    let fixed = completion(
        &second.id,
        &t.adapter.id,
        vec![event("ok-1", "deal.won", "D1", None)],
        None,
        T0 + 2 * SECOND,
    );
    assert_eq!(
        store.complete_delivery(fixed).await.unwrap().appended.len(),
        1
    );
}

pub(crate) async fn redrive_never_duplicates_events(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let recorded = store
        .record_delivery(delivery("c1", "x", None, T0), WINDOW, LEASE_ENDED)
        .await
        .unwrap();
    let failed = Completion {
        status: DeliveryStatus::Failed,
        reason_json: Some(r#"{"kind":"trap","message":"the adapter trapped"}"#.to_owned()),
        invocation: invocation(&t.adapter.id, InvocationOutcome::Failed),
        ..completion(&recorded.id, &t.adapter.id, vec![], None, T0)
    };
    store.complete_delivery(failed).await.unwrap();
    let info = store
        .get_delivery(&recorded.id)
        .await
        .unwrap()
        .unwrap()
        .info;
    assert_eq!((info.status, info.attempts), (DeliveryStatus::Failed, 1));
    assert!(info.reason_json.unwrap().contains("trapped"));

    // Redriven after a fix: two events. A redrive is a new attempt.
    let e = |id: &str, entity: &str| event(id, "deal.won", entity, None);
    let redrive = |events, at| Completion {
        attempt_counted: false,
        ..completion(&recorded.id, &t.adapter.id, events, None, at)
    };
    let first = store
        .complete_delivery(redrive(vec![e("r-1", "D1"), e("r-2", "D2")], T0 + SECOND))
        .await
        .unwrap();
    assert_eq!((first.appended.len(), first.already_present), (2, 0));
    // Redriven again (or the completion retried after a crash): the same events are not
    // appended twice; a new one is.
    let second = store
        .complete_delivery(redrive(
            vec![e("r-1", "D1"), e("r-2", "D2"), e("r-3", "D3")],
            T0 + 2 * SECOND,
        ))
        .await
        .unwrap();
    assert_eq!((second.appended.len(), second.already_present), (1, 2));
    let rows = all_outbox(&*store, "t1").await;
    assert_eq!(ids(&rows, |r| r.event_id.clone()), ["r-1", "r-2", "r-3"]);
    assert_eq!(
        rows[0].created_at,
        T0 + SECOND,
        "the first append is the one kept"
    );
    let info = store
        .get_delivery(&recorded.id)
        .await
        .unwrap()
        .unwrap()
        .info;
    assert_eq!(
        (info.status, info.attempts, info.reason_json),
        (DeliveryStatus::Processed, 3, None)
    );
    let outcomes: Vec<_> = store
        .list_invocations(&recorded.id)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.record.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            InvocationOutcome::Failed,
            InvocationOutcome::Accepted,
            InvocationOutcome::Accepted
        ]
    );
}

pub(crate) async fn state_is_committed_key_by_key(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    tenant(&*store, "t2", "c2").await;
    let mut at = T0;
    // Completes a new delivery of c1 with `state` (built on the version current then).
    let mut complete = |state: &dyn Fn(i64) -> Option<StateCommit>| {
        at += SECOND;
        let state = state(0);
        let store = Arc::clone(&store);
        let adapter_id = t.adapter.id.clone();
        async move {
            let body = format!("b{at}");
            let d = store
                .record_delivery(delivery("c1", &body, None, at), WINDOW, LEASE_ENDED)
                .await
                .unwrap();
            let version = store.load_state("c1").await.unwrap().version;
            let state = state.map(|commit| StateCommit {
                base_version: version,
                ..commit
            });
            store
                .complete_delivery(completion(&d.id, &adapter_id, vec![], state, at))
                .await
        }
    };
    let read = |id: &'static str| {
        let store = Arc::clone(&store);
        async move { store.load_state(id).await.unwrap() }
    };
    assert_eq!(read("c1").await, StateSnapshot::default());
    complete(&|_| writes(0, state(&[("a", "1"), ("b", "2")])))
        .await
        .unwrap();
    let snapshot = read("c1").await;
    assert_eq!(snapshot.map, state(&[("a", "1"), ("b", "2")]));
    assert_eq!(snapshot.version, 1);
    assert_eq!(snapshot.versions, [("a".into(), 1), ("b".into(), 1)].into());
    // Keys not written stay as they were, with their versions; a deleted key is gone.
    complete(&|_| {
        Some(StateCommit {
            writes: vec![("b".into(), None), ("c".into(), Some(b"4".to_vec()))],
            ..StateCommit::blind(0, StateMap::new())
        })
    })
    .await
    .unwrap();
    let snapshot = read("c1").await;
    assert_eq!(snapshot.map, state(&[("a", "1"), ("c", "4")]));
    assert_eq!(snapshot.version, 2);
    assert_eq!(snapshot.versions, [("a".into(), 1), ("c".into(), 2)].into());
    // A completion that leaves the state alone keeps it, and its version; so does one that
    // only read it.
    complete(&|_| None).await.unwrap();
    complete(&|_| {
        Some(StateCommit {
            reads: vec![("a".into(), Some(1))],
            ..StateCommit::blind(0, StateMap::new())
        })
    })
    .await
    .unwrap();
    assert_eq!(read("c1").await.version, 2);
    let binary: StateMap = [("bin".to_owned(), vec![0u8, 255, 0, 7])].into();
    complete(&|_| writes(0, binary.clone())).await.unwrap();
    assert_eq!(read("c1").await.map["bin"], vec![0u8, 255, 0, 7]);
    assert_eq!(
        read("c2").await,
        StateSnapshot::default(),
        "state is per connection"
    );
    // The bounds hold for the whole state, whatever each invocation saw: three keys are there.
    let bounded = |keys: u64, bytes: u64, map: StateMap| {
        Some(StateCommit {
            bounds: StateBounds { keys, bytes },
            ..StateCommit::blind(0, map)
        })
    };
    assert!(matches!(
        complete(&|_| bounded(3, 1 << 20, state(&[("d", "5")]))).await,
        Err(Error::StaleState(_))
    ));
    let used = 2 + 2 + 7; // "a1", "c4", "bin" and its 4 bytes
    assert!(matches!(
        complete(&|_| bounded(8, used + 2, state(&[("a", "1234")]))).await,
        Err(Error::StaleState(_))
    ));
    // Overwriting within the bounds is fine, and so is shrinking a state already past bounds
    // that were lowered.
    complete(&|_| bounded(3, used, state(&[("a", "2")])))
        .await
        .unwrap();
    complete(&|_| {
        Some(StateCommit {
            writes: vec![("bin".into(), None)],
            ..bounded(1, 1, StateMap::new()).unwrap()
        })
    })
    .await
    .unwrap();
    assert_eq!(read("c1").await.map, state(&[("a", "2"), ("c", "4")]));
}

pub(crate) async fn a_completion_on_a_stale_state_is_refused(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let record = |body: &'static str| {
        let store = Arc::clone(&store);
        async move {
            store
                .record_delivery(delivery("c1", body, None, T0), WINDOW, LEASE_ENDED)
                .await
                .unwrap()
                .id
        }
    };
    let complete = |id: &str, event_id: &str, state: StateCommit| {
        completion(
            id,
            &t.adapter.id,
            vec![event(event_id, "deal.won", "D1", None)],
            Some(state),
            T0,
        )
    };
    // Reads `key` as it was at `base` (`seen`) and writes `value` to it.
    let increment = |base: i64, key: &str, seen: Option<i64>, value: &str| StateCommit {
        reads: vec![(key.to_owned(), seen)],
        ..StateCommit::blind(base, state(&[(key, value)]))
    };
    let ids = [
        record("a").await,
        record("b").await,
        record("c").await,
        record("d").await,
        record("e").await,
        record("f").await,
    ];
    // Two invocations read the counter absent at version 0 and both set it to 1: the first
    // commits, the second is refused whole (its event and its state), so its increment is
    // never lost to an overwrite: it runs again on version 1.
    store
        .complete_delivery(complete(&ids[0], "ev-a", increment(0, "count", None, "1")))
        .await
        .unwrap();
    let stale = complete(&ids[1], "ev-b", increment(0, "count", None, "1"));
    assert!(matches!(
        store.complete_delivery(stale.clone()).await,
        Err(Error::StaleState(_))
    ));
    assert_eq!(store.get_event("ev-b").await.unwrap(), None);
    let info = store.get_delivery(&ids[1]).await.unwrap().unwrap().info;
    assert_eq!(info.status, DeliveryStatus::Received);
    assert!(store.list_invocations(&ids[1]).await.unwrap().is_empty());
    // Run again on what is there now.
    let snapshot = store.load_state("c1").await.unwrap();
    assert_eq!(
        (snapshot.map.clone(), snapshot.version),
        (state(&[("count", "1")]), 1)
    );
    let retried = Completion {
        state: Some(increment(
            1,
            "count",
            snapshot.versions.get("count").copied(),
            "2",
        )),
        ..stale
    };
    store.complete_delivery(retried).await.unwrap();
    assert_eq!(
        store.load_state("c1").await.unwrap().map,
        state(&[("count", "2")])
    );
    // An invocation that ran on version 0 but touched another key commits beside them.
    store
        .complete_delivery(complete(&ids[2], "ev-c", increment(0, "other", None, "1")))
        .await
        .unwrap();
    // One that listed a prefix is refused once a key under it appeared or went away, and
    // not for keys elsewhere.
    let listed = |base: i64, prefix: &str, keys: u64| StateCommit {
        prefixes: vec![(prefix.to_owned(), keys)],
        ..StateCommit::blind(base, StateMap::new())
    };
    assert!(matches!(
        store
            .complete_delivery(complete(&ids[3], "ev-d", listed(1, "oth", 0)))
            .await,
        Err(Error::StaleState(_))
    ));
    store
        .complete_delivery(complete(&ids[3], "ev-d", listed(1, "count-", 0)))
        .await
        .unwrap();
    let delete_other = StateCommit {
        writes: vec![("other".into(), None)],
        ..StateCommit::blind(3, StateMap::new())
    };
    store
        .complete_delivery(complete(&ids[4], "ev-e", delete_other))
        .await
        .unwrap();
    assert!(matches!(
        store
            .complete_delivery(complete(&ids[5], "ev-f", listed(3, "o", 1)))
            .await,
        Err(Error::StaleState(_))
    ));
    // A read of a key that was deleted since is stale as well.
    assert!(matches!(
        store
            .complete_delivery(complete(
                &ids[5],
                "ev-f",
                increment(3, "other", Some(3), "2")
            ))
            .await,
        Err(Error::StaleState(_))
    ));
    let snapshot = store.load_state("c1").await.unwrap();
    assert_eq!(
        snapshot.version, 4,
        "reads and refusals do not move the version"
    );
    assert_eq!(snapshot.map, state(&[("count", "2")]));
    // The same rule holds for a delivery recorded with its completion.
    let new = delivery("c1", "g", Some("p-g"), T0);
    let taken = store
        .record_completed(
            new.clone(),
            WINDOW,
            completion(
                &new_id(),
                &t.adapter.id,
                vec![],
                Some(increment(1, "count", Some(1), "9")),
                T0,
            ),
        )
        .await;
    assert!(matches!(taken, Err(Error::StaleState(_))));
    assert!(matches!(
        store.prepare_delivery(&new, WINDOW).await.unwrap(),
        Prepared::New(snapshot) if snapshot.version == 4 && snapshot.map == state(&[("count", "2")])
    ));
}

pub(crate) async fn polls_are_claimed_once_and_move_their_cursor_under_their_lease(
    backend: &dyn Backend,
) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let polling = |interval: &str| Some(format!(r#"{{{interval}"max_pages":100}}"#));
    let connect = |id: &str, polling_json: Option<String>, status: ConnectionStatus| {
        let store = Arc::clone(&store);
        let spec = ConnectionSpec {
            polling_json,
            status,
            ..spec(id, "t1", &t.adapter.id, 1)
        };
        async move { store.upsert_connection(spec, "admin", T0).await.unwrap() }
    };
    connect(
        "c1",
        polling(r#""interval_secs":60,"#),
        ConnectionStatus::Active,
    )
    .await;
    // Pages pushed only (no interval), and a disabled connection: never scheduled.
    connect("c2", polling(""), ConnectionStatus::Active).await;
    connect(
        "c3",
        polling(r#""interval_secs":60,"#),
        ConnectionStatus::Disabled,
    )
    .await;
    let claims = store
        .claim_polls(T0, "node-a", T0 + 30 * SECOND, 10)
        .await
        .unwrap();
    assert_eq!(claims.len(), 1, "{claims:?}");
    let claim = &claims[0];
    assert_eq!(claim.run.connection_id, "c1");
    assert_eq!((claim.cursor.clone(), claim.failures), (None, 0));
    assert_eq!(claim.run.status, PollRunStatus::Running);
    assert_eq!(claim.run.trigger, PollTrigger::Schedule);
    let run_id = claim.run.id.clone();
    // Held: neither another node nor a manual run takes it while the lease lasts.
    assert!(
        store
            .claim_polls(T0 + SECOND, "node-b", T0 + 31 * SECOND, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store
            .claim_poll_now("c1", T0 + SECOND, "node-b", T0 + 31 * SECOND)
            .await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store
            .claim_poll_now("c3", T0 + SECOND, "node-b", T0 + 31 * SECOND)
            .await,
        Err(Error::Invalid(_))
    ));

    // A page committed under the lease moves the cursor and renews the lease.
    let page = |body: &str, owner: &str, before: Option<&str>, after: &str| {
        let new = NewDelivery {
            kind: DeliveryKind::Poll,
            poll_run_id: Some(run_id.clone()),
            cursor: before.map(str::to_owned),
            ..delivery("c1", body, None, T0 + SECOND)
        };
        let completion = Completion {
            poll: Some(PollCheckpoint {
                run_id: run_id.clone(),
                owner: owner.to_owned(),
                cursor_before: before.map(str::to_owned),
                advance: Some(Some(after.to_owned())),
                lease_until: T0 + 60 * SECOND,
                requests: 1,
                records: 5,
            }),
            ..completion(
                &new_id(),
                &t.adapter.id,
                vec![event(&format!("ev-{body}"), "deal.won", "D1", None)],
                None,
                T0 + SECOND,
            )
        };
        (new, completion)
    };
    let (new, done) = page("page-1", "node-a", None, "c-1");
    store.record_completed(new, WINDOW, done).await.unwrap();
    let state = store.poll_state("c1").await.unwrap().unwrap();
    assert_eq!(state.cursor.as_deref(), Some("c-1"));
    assert_eq!(state.lease_until, Some(T0 + 60 * SECOND));
    // A page fetched from a cursor that moved on, or by a node without the lease, is refused
    // whole: no delivery, no event, no cursor move.
    for (body, owner, before) in [
        ("page-x", "node-a", None),
        ("page-y", "node-b", Some("c-1")),
    ] {
        let (new, refused) = page(body, owner, before, "c-x");
        assert!(matches!(
            store.record_completed(new.clone(), WINDOW, refused).await,
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            store.prepare_delivery(&new, WINDOW).await.unwrap(),
            Prepared::New(_)
        ));
        assert_eq!(store.get_event(&format!("ev-{body}")).await.unwrap(), None);
    }
    assert_eq!(
        store
            .poll_state("c1")
            .await
            .unwrap()
            .unwrap()
            .cursor
            .as_deref(),
        Some("c-1")
    );

    let end =
        |run_id: &str, owner: &str, status: PollRunStatus, at: Millis, next: Millis| PollEnd {
            run_id: run_id.to_owned(),
            owner: owner.to_owned(),
            status,
            reason: (status == PollRunStatus::Failed).then(|| "the CRM answered 500".to_owned()),
            at,
            next_run_at: next,
            exchanges: Vec::new(),
            requests: 0,
        };
    let run = store
        .finish_poll(end(
            &run_id,
            "node-a",
            PollRunStatus::Done,
            T0 + 2 * SECOND,
            T0 + 62 * SECOND,
        ))
        .await
        .unwrap();
    assert_eq!(run.status, PollRunStatus::Done);
    assert_eq!(
        (run.pages, run.events, run.records, run.requests),
        (1, 1, 5, 1)
    );
    assert_eq!(
        (run.cursor_before, run.cursor_after.as_deref()),
        (None, Some("c-1"))
    );
    assert_eq!(run.finished_at, Some(T0 + 2 * SECOND));
    let state = store.poll_state("c1").await.unwrap().unwrap();
    assert_eq!((state.lease_until, state.failures), (None, 0));

    // Due at its next run, not before; it starts from the committed cursor.
    let claim = |at: Millis, owner: &'static str| {
        let store = Arc::clone(&store);
        async move {
            store
                .claim_polls(at, owner, at + 30 * SECOND, 10)
                .await
                .unwrap()
        }
    };
    assert!(claim(T0 + 61 * SECOND, "node-a").await.is_empty());
    let second = claim(T0 + 62 * SECOND, "node-a").await.remove(0);
    assert_eq!(second.cursor.as_deref(), Some("c-1"));
    store
        .finish_poll(end(
            &second.run.id,
            "node-a",
            PollRunStatus::Failed,
            T0 + 63 * SECOND,
            T0 + 200 * SECOND,
        ))
        .await
        .unwrap();
    assert_eq!(store.poll_state("c1").await.unwrap().unwrap().failures, 1);

    // A run whose host stopped: once its lease has lapsed another node takes over, and the
    // stopped run is marked interrupted; its late end changes nothing but its own record.
    let third = claim(T0 + 200 * SECOND, "node-a").await.remove(0);
    assert_eq!(third.failures, 1);
    let fourth = claim(T0 + 231 * SECOND, "node-b").await.remove(0);
    store
        .finish_poll(end(
            &third.run.id,
            "node-a",
            PollRunStatus::Done,
            T0 + 232 * SECOND,
            T0,
        ))
        .await
        .unwrap();
    let state = store.poll_state("c1").await.unwrap().unwrap();
    assert_eq!(state.run_id.as_deref(), Some(fourth.run.id.as_str()));
    assert_eq!(state.lease_until, Some(T0 + 261 * SECOND));
    let runs = store
        .list_poll_runs("c1", PageRequest::default())
        .await
        .unwrap()
        .items;
    let statuses: Vec<_> = runs.iter().map(|run| run.status).collect();
    assert_eq!(
        statuses,
        [
            PollRunStatus::Running,
            PollRunStatus::Interrupted,
            PollRunStatus::Failed,
            PollRunStatus::Done
        ]
    );
    assert_eq!(runs[2].reason.as_deref(), Some("the CRM answered 500"));

    // A connection without deliveries goes with its poll history.
    connect(
        "c4",
        polling(r#""interval_secs":60,"#),
        ConnectionStatus::Active,
    )
    .await;
    let c4 = store
        .claim_poll_now("c4", T0, "node-a", T0 + SECOND)
        .await
        .unwrap();
    assert_eq!(c4.run.trigger, PollTrigger::Manual);
    store.delete_connection("c4").await.unwrap();
    assert_eq!(store.poll_state("c4").await.unwrap(), None);
}

pub(crate) async fn unfinished_deliveries_are_recovered(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let mut recorded = Vec::new();
    // Recorded ahead of their outcome, each with its invocation under way until T0 + 30 s.
    let lease_until = T0 + 30 * SECOND;
    for (i, body) in ["one", "two", "three"].into_iter().enumerate() {
        let at = T0 + i as Millis * SECOND;
        recorded.push(
            store
                .record_delivery(delivery("c1", body, None, at), WINDOW, lease_until)
                .await
                .unwrap()
                .id,
        );
    }
    // A retry of an unfinished one adds nothing to recover.
    assert!(
        store
            .record_delivery(
                delivery("c1", "one", None, T0 + 5 * SECOND),
                WINDOW,
                lease_until
            )
            .await
            .unwrap()
            .duplicate
    );
    store
        .complete_delivery(completion(
            &recorded[1],
            &t.adapter.id,
            vec![],
            None,
            T0 + 9 * SECOND,
        ))
        .await
        .unwrap();
    // While their invocations may still run, nothing is handed to recovery.
    let during = T0 + 20 * SECOND;
    assert!(
        store
            .claim_recovery(during, during + 15 * SECOND, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Once the lease ends, the unfinished ones are claimed, oldest first, each claim counted as
    // an attempt and leased anew.
    let after = lease_until;
    let pending = store
        .claim_recovery(after, after + 15 * SECOND, 10)
        .await
        .unwrap();
    assert_eq!(
        ids(&pending, |d| d.info.id.clone()),
        [recorded[0].clone(), recorded[2].clone()]
    );
    assert!(pending.iter().all(|d| d.info.attempts == 2));
    assert_eq!(pending[0].body, b"one");
    assert_eq!(pending[1].body, b"three");
    assert_eq!(pending[0].headers, delivery("c1", "", None, T0).headers);
    let crate::sandbox::Input::Webhook(request) = pending[0].to_input() else {
        panic!("a webhook delivery is a webhook request");
    };
    assert_eq!(
        (request.method.as_str(), request.query.as_str()),
        ("POST", "a=1")
    );
    assert_eq!(
        request.received_at,
        std::time::UNIX_EPOCH + Duration::from_millis(T0 as u64)
    );
    // Claimed: not handed out again until that lease ends too; then one at a time by limit.
    assert!(
        store
            .claim_recovery(after + SECOND, after + 16 * SECOND, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_recovery(after + 15 * SECOND, after + 30 * SECOND, 1)
        .await
        .unwrap();
    assert_eq!(ids(&again, |d| d.info.id.clone()), [recorded[0].clone()]);
    assert_eq!(again[0].info.attempts, 3);

    // Given up: parked as failed with the reason, without an invocation, never claimed again.
    let reason = r#"{"status":"failed","failure":{"kind":"interrupted","message":"parked"}}"#;
    store
        .park_delivery(&recorded[0], reason, after + 16 * SECOND)
        .await
        .unwrap();
    let parked = store
        .get_delivery(&recorded[0])
        .await
        .unwrap()
        .unwrap()
        .info;
    assert_eq!(
        (
            parked.status,
            parked.attempts,
            parked.reason_json.as_deref()
        ),
        (DeliveryStatus::Failed, 3, Some(reason))
    );
    assert!(
        store
            .list_invocations(&recorded[0])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.park_delivery(&recorded[0], reason, after).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.park_delivery("no-such-delivery", reason, after).await,
        Err(Error::NotFound(_))
    ));
    let much_later = after + 3_600 * SECOND;
    assert_eq!(
        ids(
            &store
                .claim_recovery(much_later, much_later + SECOND, 10)
                .await
                .unwrap(),
            |d| d.info.id.clone()
        ),
        [recorded[2].clone()]
    );
}

pub(crate) async fn delivery_lists_filter_and_page(backend: &dyn Backend) {
    let store = backend.open().await;
    let t1 = tenant(&*store, "t1", "c1").await;
    tenant(&*store, "t2", "c2").await;
    let mut c1_ids = Vec::new();
    for i in 0..7 {
        let at = T0 + i * SECOND;
        let id = store
            .record_delivery(
                delivery("c1", &format!("b{i}"), None, at),
                WINDOW,
                LEASE_ENDED,
            )
            .await
            .unwrap()
            .id;
        c1_ids.push(id);
    }
    store
        .record_delivery(
            delivery("c2", "other tenant", None, T0),
            WINDOW,
            LEASE_ENDED,
        )
        .await
        .unwrap();
    for id in &c1_ids[..3] {
        store
            .complete_delivery(completion(
                id,
                &t1.adapter.id,
                vec![],
                None,
                T0 + 10 * SECOND,
            ))
            .await
            .unwrap();
    }
    let list = |filter: DeliveryFilter| {
        let store = Arc::clone(&store);
        async move { store.list_deliveries(filter).await.unwrap() }
    };
    let newest_first: Vec<String> = c1_ids.iter().rev().cloned().collect();
    let all = list(DeliveryFilter {
        tenant_id: Some("t1".to_owned()),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&all.items, |d| d.id.clone()), newest_first);
    assert_eq!(all.next_cursor, None);

    // Pages of 3 cover everything once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(DeliveryFilter {
            connection_id: Some("c1".to_owned()),
            limit: 3,
            cursor: cursor.clone(),
            ..Default::default()
        })
        .await;
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|d| d.id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);

    let processed = list(DeliveryFilter {
        connection_id: Some("c1".to_owned()),
        status: Some(DeliveryStatus::Processed),
        ..Default::default()
    })
    .await;
    assert_eq!(
        ids(&processed.items, |d| d.id.clone()),
        c1_ids[..3].iter().rev().cloned().collect::<Vec<_>>()
    );
    let window = list(DeliveryFilter {
        connection_id: Some("c1".to_owned()),
        since: Some(T0 + 2 * SECOND),
        until: Some(T0 + 4 * SECOND),
        ..Default::default()
    })
    .await;
    assert_eq!(
        ids(&window.items, |d| d.id.clone()),
        [c1_ids[3].clone(), c1_ids[2].clone()]
    );
    let other = list(DeliveryFilter {
        tenant_id: Some("t2".to_owned()),
        ..Default::default()
    })
    .await;
    assert_eq!(other.items.len(), 1);
    assert_eq!(other.items[0].connection_id, "c2");

    // An org sees deliveries of its connections and of platform-level ones (c1), not another
    // org's.
    let (_, _) = store
        .upsert_connection(
            ConnectionSpec {
                org_id: Some("org-b".to_owned()),
                ..spec("c1-org-b", "t1", &t1.adapter.id, 1)
            },
            "config",
            T0,
        )
        .await
        .unwrap();
    let org_b_delivery = store
        .record_delivery(delivery("c1-org-b", "org b", None, T0), WINDOW, LEASE_ENDED)
        .await
        .unwrap()
        .id;
    let in_org = |org: &str| {
        list(DeliveryFilter {
            tenant_id: Some("t1".to_owned()),
            org_id: Some(org.to_owned()),
            limit: 100,
            ..Default::default()
        })
    };
    let seen_by_a = in_org("org-a").await;
    assert_eq!(ids(&seen_by_a.items, |d| d.id.clone()), newest_first);
    let seen_by_b = in_org("org-b").await;
    assert_eq!(seen_by_b.items.len(), 8);
    assert!(seen_by_b.items.iter().any(|d| d.id == org_b_delivery));
}

pub(crate) async fn claims_keep_each_entity_in_order(backend: &dyn Backend) {
    let store = backend.open().await;
    let t1 = tenant(&*store, "t1", "c1").await;
    let t2 = tenant(&*store, "t2", "c2").await;
    let seqs = emit(
        &*store,
        &t1,
        vec![
            event("x1", "deal.won", "X", None),
            event("x2", "deal.updated", "X", None),
            event("y1", "deal.won", "Y", None),
            event("cx", "contact.created", "X", None),
        ],
        T0,
    )
    .await;
    // Another tenant's entity with the same type and id is another entity.
    let other = emit(&*store, &t2, vec![event("t2-x", "deal.won", "X", None)], T0).await;

    // Every due row goes in one claim, in seq order: a run of one entity (x1, x2) too, for the
    // relay to publish in that order.
    let now = T0 + SECOND;
    let claimed = store.claim_outbox(10, now, LEASE).await.unwrap();
    assert_eq!(
        ids(&claimed, |r| r.event_id.clone()),
        ["x1", "x2", "y1", "cx", "t2-x"]
    );
    assert!(
        claimed
            .iter()
            .all(|r| r.attempts == 1 && r.status == OutboxStatus::Pending)
    );
    assert_eq!(claimed[0].seq, seqs[0]);
    assert_eq!(claimed[4].seq, other[0]);
    // Leased rows are not handed out again.
    assert!(store.claim_outbox(10, now, LEASE).await.unwrap().is_empty());

    // A row appended while earlier rows of its entity are in flight waits behind them; another
    // entity's does not.
    let later_rows = emit(
        &*store,
        &t1,
        vec![
            event("x3", "deal.updated", "X", None),
            event("z1", "deal.won", "Z", None),
        ],
        now,
    )
    .await;
    let next = store.claim_outbox(10, now, LEASE).await.unwrap();
    assert_eq!(ids(&next, |r| r.event_id.clone()), ["z1"]);
    store
        .mark_published(&[seqs[0], seqs[1], seqs[3]], now)
        .await
        .unwrap();
    let next = store.claim_outbox(10, now, LEASE).await.unwrap();
    assert_eq!(ids(&next, |r| r.event_id.clone()), ["x3"]);

    // A relay that died mid-publish: its rows come back when the lease ends.
    let later = now + crate::store::millis(LEASE) + 1;
    let reclaimed = store.claim_outbox(10, later, LEASE).await.unwrap();
    assert_eq!(
        ids(&reclaimed, |r| r.event_id.clone()),
        ["y1", "t2-x", "x3", "z1"]
    );
    assert_eq!(reclaimed[0].attempts, 2);

    // Rows given back unattempted are due again, their claim uncounted, in the same order.
    store
        .release_outbox(&[later_rows[0], later_rows[1]], later)
        .await
        .unwrap();
    let released = store.claim_outbox(10, later, LEASE).await.unwrap();
    assert_eq!(ids(&released, |r| r.event_id.clone()), ["x3", "z1"]);
    assert!(released.iter().all(|r| r.attempts == 2));
    assert_eq!(
        store
            .claim_outbox(1, later + 2 * crate::store::millis(LEASE), LEASE)
            .await
            .unwrap()
            .len(),
        1,
        "limit"
    );

    let published = store.get_event("x1").await.unwrap().unwrap();
    assert_eq!(
        (published.status, published.published_at),
        (OutboxStatus::Published, Some(now))
    );
}

pub(crate) async fn a_failed_row_holds_back_the_rest_of_its_entity(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let seqs = emit(
        &*store,
        &t,
        vec![
            event("a1", "deal.won", "A", None),
            event("a2", "deal.updated", "A", None),
            event("b1", "deal.won", "B", None),
        ],
        T0,
    )
    .await;
    let now = T0 + SECOND;
    let claimed = store.claim_outbox(10, now, LEASE).await.unwrap();
    assert_eq!(ids(&claimed, |r| r.event_id.clone()), ["a1", "a2", "b1"]);
    // a1 fails (retried in a minute): the relay gives a2 back unattempted and publishes b1.
    let retry_at = now + 60 * SECOND;
    store
        .mark_publish_failed(seqs[0], "bus down", retry_at, false)
        .await
        .unwrap();
    store.release_outbox(&[seqs[1]], now).await.unwrap();
    store.mark_published(&[seqs[2]], now).await.unwrap();
    // a2 is due, but waits behind a1 until a1 is due again.
    assert!(store.claim_outbox(10, now, LEASE).await.unwrap().is_empty());
    assert!(
        store
            .claim_outbox(10, retry_at - 1, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store.claim_outbox(10, retry_at, LEASE).await.unwrap();
    assert_eq!(ids(&again, |r| r.event_id.clone()), ["a1", "a2"]);
    assert_eq!((again[0].attempts, again[1].attempts), (2, 1));
    // A dead row no longer holds its entity back.
    store
        .mark_publish_failed(seqs[0], "gave up", retry_at, true)
        .await
        .unwrap();
    store.release_outbox(&[seqs[1]], retry_at).await.unwrap();
    let after_death = store.claim_outbox(10, retry_at, LEASE).await.unwrap();
    assert_eq!(ids(&after_death, |r| r.event_id.clone()), ["a2"]);
}

pub(crate) async fn failed_publication_retries_then_dies(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let seqs = emit(
        &*store,
        &t,
        vec![
            event("e1", "deal.won", "X", None),
            event("e2", "deal.updated", "X", None),
        ],
        T0,
    )
    .await;
    let (e1, e2) = (seqs[0], seqs[1]);
    let now = T0 + SECOND;
    assert_eq!(
        ids(&store.claim_outbox(10, now, LEASE).await.unwrap(), |r| r
            .event_id
            .clone()),
        ["e1", "e2"]
    );
    // e1 fails: the relay gives e2 back unattempted, behind it.
    store
        .mark_publish_failed(e1, "bus unavailable", now + 10 * SECOND, false)
        .await
        .unwrap();
    store.release_outbox(&[e2], now).await.unwrap();
    assert!(
        store
            .claim_outbox(10, now + 5 * SECOND, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "backing off; e2 waits"
    );
    let retried = store
        .claim_outbox(10, now + 10 * SECOND, LEASE)
        .await
        .unwrap();
    assert_eq!(ids(&retried, |r| r.event_id.clone()), ["e1", "e2"]);
    assert_eq!(
        (retried[0].attempts, retried[0].last_error.as_deref()),
        (2, Some("bus unavailable"))
    );
    assert_eq!(retried[1].attempts, 1, "a release uncounts the claim");
    store
        .release_outbox(&[e2], now + 10 * SECOND)
        .await
        .unwrap();

    store
        .mark_publish_failed(e1, &"x".repeat(10_000), now + 20 * SECOND, true)
        .await
        .unwrap();
    let dead = store.get_event("e1").await.unwrap().unwrap();
    assert_eq!(dead.status, OutboxStatus::Dead);
    assert!(dead.last_error.unwrap().len() < 3_000, "errors are bounded");
    // A dead row no longer holds its entity back; it is never claimed again by itself.
    let after = store
        .claim_outbox(10, now + 11 * SECOND, LEASE)
        .await
        .unwrap();
    assert_eq!(ids(&after, |r| r.event_id.clone()), ["e2"]);
    assert_eq!(
        store.outbox_lag().await.unwrap(),
        OutboxLag {
            pending: 1,
            oldest_pending_created_at: Some(T0)
        }
    );
    store
        .mark_published(&[e2], now + 12 * SECOND)
        .await
        .unwrap();
    assert_eq!(
        store.outbox_lag().await.unwrap(),
        OutboxLag {
            pending: 0,
            oldest_pending_created_at: None
        }
    );
    assert!(
        store
            .claim_outbox(10, now + 1_000 * SECOND, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    // A late failure report for a published row changes nothing.
    store
        .mark_publish_failed(e2, "late", now, false)
        .await
        .unwrap();
    assert_eq!(
        store.get_event("e2").await.unwrap().unwrap().status,
        OutboxStatus::Published
    );

    // An operator revives the dead row.
    store
        .retry_outbox_event(e1, now + 30 * SECOND)
        .await
        .unwrap();
    let revived = store
        .claim_outbox(10, now + 30 * SECOND, LEASE)
        .await
        .unwrap();
    assert_eq!(ids(&revived, |r| r.event_id.clone()), ["e1"]);
    assert_eq!(revived[0].attempts, 1);
    assert!(matches!(
        store.retry_outbox_event(e2, now).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.retry_outbox_event(999_999, now).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.mark_publish_failed(999_999, "x", now, false).await,
        Err(Error::NotFound(_))
    ));
}

pub(crate) async fn replay_returns_published_rows_in_range(backend: &dyn Backend) {
    let store = backend.open().await;
    let t1 = tenant(&*store, "t1", "c1").await;
    let t2 = tenant(&*store, "t2", "c2").await;
    let a = emit(&*store, &t1, vec![event("a", "deal.won", "A", None)], T0).await;
    let b = emit(
        &*store,
        &t1,
        vec![event("b", "deal.won", "B", None)],
        T0 + 1_000 * SECOND,
    )
    .await;
    let c = emit(
        &*store,
        &t1,
        vec![event("c", "deal.won", "C", None)],
        T0 + 2_000 * SECOND,
    )
    .await;
    let other = emit(&*store, &t2, vec![event("o", "deal.won", "O", None)], T0).await;
    store
        .mark_published(&[a[0], b[0], other[0]], T0 + 3_000 * SECOND)
        .await
        .unwrap();
    let before = all_outbox(&*store, "t1").await;

    let replay = |from: Millis, to: Millis, after: i64, limit: usize| {
        let store = Arc::clone(&store);
        async move {
            let covering = replay_of("t1", None, from, to, None);
            ids(
                &store.replay_range(&covering, after, limit).await.unwrap(),
                |r| r.event_id.clone(),
            )
        }
    };
    // c is not published yet: a replay is for what consumers already had.
    assert_eq!(replay(T0, T0 + 3_000 * SECOND, 0, 100).await, ["a", "b"]);
    assert_eq!(
        replay(T0 + 500 * SECOND, T0 + 3_000 * SECOND, 0, 100).await,
        ["b"]
    );
    assert_eq!(
        replay(T0, T0 + 1_000 * SECOND, 0, 100).await,
        ["a"],
        "the end is exclusive"
    );
    assert_eq!(replay(T0, T0 + 3_000 * SECOND, 0, 1).await, ["a"]);
    assert_eq!(replay(T0, T0 + 3_000 * SECOND, a[0], 1).await, ["b"]);
    assert!(c[0] > b[0]);
    assert_eq!(
        all_outbox(&*store, "t1").await,
        before,
        "a replay changes nothing"
    );

    // A replay covers one org (or the platform-level events) and optionally one event type.
    let org_a = emit(
        &*store,
        &t1,
        vec![
            event("won-a", "deal.won", "D1", Some("org-a")),
            event("lost-a", "deal.lost", "D2", Some("org-a")),
            event("won-b", "deal.won", "D3", Some("org-b")),
        ],
        T0 + 4_000 * SECOND,
    )
    .await;
    store
        .mark_published(&org_a, T0 + 5_000 * SECOND)
        .await
        .unwrap();
    let range = |org: Option<&str>, event_type: Option<&str>| {
        let store = Arc::clone(&store);
        let covering = replay_of("t1", org, T0, T0 + 5_000 * SECOND, event_type);
        async move {
            ids(&store.replay_range(&covering, 0, 100).await.unwrap(), |r| {
                r.event_id.clone()
            })
        }
    };
    assert_eq!(range(Some("org-a"), None).await, ["won-a", "lost-a"]);
    assert_eq!(range(Some("org-a"), Some("deal.lost")).await, ["lost-a"]);
    assert_eq!(range(None, None).await, ["a", "b"], "platform-level only");
}

/// A replay record covering `[from, to)` (what `replay_range` reads).
fn replay_of(
    tenant_id: &str,
    org_id: Option<&str>,
    from: Millis,
    to: Millis,
    event_type: Option<&str>,
) -> Replay {
    Replay {
        id: new_id(),
        tenant_id: tenant_id.to_owned(),
        org_id: org_id.map(str::to_owned),
        from,
        to,
        event_type: event_type.map(str::to_owned),
        target: ReplayTarget::All,
        subscriber_id: None,
        requested_by: "alice".to_owned(),
        requested_at: T0,
        status: ReplayStatus::Running,
        replayed: 0,
        queued: 0,
        finished_at: None,
        error: None,
    }
}

/// An audit entry of `tenant` in `org` by `actor`, at `T0 + at_s` seconds.
pub(crate) fn audit_entry(
    tenant: &str,
    org: Option<&str>,
    actor: &str,
    action: &str,
    resource_id: &str,
    at_s: i64,
) -> NewAuditEntry {
    NewAuditEntry {
        at: T0 + at_s * SECOND,
        tenant_id: tenant.to_owned(),
        org_id: org.map(str::to_owned),
        actor: actor.to_owned(),
        roles: vec!["tenant_admin".to_owned()],
        action: action.to_owned(),
        resource_type: action.split('.').next().unwrap_or_default().to_owned(),
        resource_id: resource_id.to_owned(),
        request_id: Some(format!("req-{resource_id}-{at_s}")),
        status: 200,
        detail_json: format!(r#"{{"fields":["{action}"]}}"#),
        support: false,
    }
}

pub(crate) async fn audit_entries_are_listed_by_scope_filter_and_page(backend: &dyn Backend) {
    let store = backend.open().await;
    let first = store
        .append_audit(NewAuditEntry {
            support: true,
            status: 201,
            roles: vec!["admin".to_owned()],
            ..audit_entry(
                "t1",
                Some("org-a"),
                "ops@platform",
                "connection.create",
                "c1",
                0,
            )
        })
        .await
        .unwrap();
    assert_eq!(
        (
            first.actor.as_str(),
            first.roles.clone(),
            first.status,
            first.support,
            first.request_id.as_deref(),
            first.detail_json.as_str(),
        ),
        (
            "ops@platform",
            vec!["admin".to_owned()],
            201,
            true,
            Some("req-c1-0"),
            r#"{"fields":["connection.create"]}"#,
        )
    );
    let appended = [
        audit_entry("t1", None, "alice", "adapter.create", "a1", 1),
        audit_entry("t1", Some("org-b"), "bob", "connection.update", "c2", 2),
        audit_entry("t1", Some("org-a"), "alice", "connection.update", "c1", 3),
        audit_entry("t2", Some("org-a"), "alice", "connection.update", "c9", 4),
        audit_entry("t1", Some("org-a"), "alice", "secret.put", "s1", 5),
    ];
    for entry in appended {
        store.append_audit(entry).await.unwrap();
    }
    let list = |org: Option<&'static str>, filter: AuditFilter, limit: usize| {
        let store = Arc::clone(&store);
        async move {
            store
                .list_audit(
                    "t1",
                    org,
                    filter,
                    PageRequest {
                        limit,
                        cursor: None,
                    },
                )
                .await
                .unwrap()
        }
    };
    let resources = |page: &Page<AuditEntry>| -> Vec<String> {
        page.items.iter().map(|e| e.resource_id.clone()).collect()
    };

    // Newest first; an org sees its own entries and the platform-level ones, never another
    // org's or another tenant's.
    let org_a = list(Some("org-a"), AuditFilter::default(), 100).await;
    assert_eq!(resources(&org_a), ["s1", "c1", "a1", "c1"]);
    assert_eq!(org_a.items[3], first);
    assert_eq!(list(None, AuditFilter::default(), 100).await.items.len(), 5);

    let filtered = |filter: AuditFilter| list(Some("org-a"), filter, 100);
    let by_actor = filtered(AuditFilter {
        actor: Some("alice".into()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(resources(&by_actor), ["s1", "c1", "a1"]);
    let by_action = filtered(AuditFilter {
        action: Some("connection.update".into()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(resources(&by_action), ["c1"]);
    let by_resource = filtered(AuditFilter {
        resource_type: Some("connection".into()),
        resource_id: Some("c1".into()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(resources(&by_resource), ["c1", "c1"]);
    let in_window = filtered(AuditFilter {
        since: Some(T0 + SECOND),
        until: Some(T0 + 5 * SECOND),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(resources(&in_window), ["c1", "a1"]);

    // Cursor pages cover the list once, in order.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_audit(
                "t1",
                Some("org-a"),
                AuditFilter::default(),
                PageRequest { limit: 3, cursor },
            )
            .await
            .unwrap();
        seen.extend(resources(&page));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["s1", "c1", "a1", "c1"]);

    // A detail that is not a JSON object is refused: the log holds what it can show.
    for bad in ["not json", "[1]"] {
        let refused = store
            .append_audit(NewAuditEntry {
                detail_json: bad.to_owned(),
                ..audit_entry("t1", None, "alice", "adapter.create", "a2", 6)
            })
            .await;
        assert!(
            matches!(refused, Err(Error::Invalid(_))),
            "{bad}: {refused:?}"
        );
    }
}

pub(crate) async fn replays_are_recorded_and_limited(backend: &dyn Backend) {
    let store = backend.open().await;
    let new = |tenant: &str, org: Option<&str>, at: Millis| NewReplay {
        tenant_id: tenant.to_owned(),
        org_id: org.map(str::to_owned),
        from: T0,
        to: T0 + 3_600 * SECOND,
        event_type: Some("deal.won".to_owned()),
        target: ReplayTarget::Subscribers,
        subscriber_id: Some("sub-1".to_owned()),
        requested_by: "alice@example.com".to_owned(),
        requested_at: at,
    };
    let first = store
        .start_replay(new("t1", Some("org-a"), T0), 3)
        .await
        .unwrap();
    assert_eq!(first.status, ReplayStatus::Running);
    assert_eq!(
        (first.target, first.subscriber_id.as_deref()),
        (ReplayTarget::Subscribers, Some("sub-1"))
    );
    assert_eq!(
        store.get_replay(&first.id).await.unwrap(),
        Some(first.clone())
    );

    // One at a time per tenant; other tenants are not held up.
    assert!(matches!(
        store.start_replay(new("t1", None, T0 + SECOND), 3).await,
        Err(Error::Limited(_))
    ));
    store
        .start_replay(new("t2", None, T0 + SECOND), 3)
        .await
        .unwrap();

    let done = store
        .finish_replay(&first.id, 7, 5, None, T0 + 2 * SECOND)
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.replayed, done.queued, done.finished_at),
        (ReplayStatus::Done, 7, 5, Some(T0 + 2 * SECOND))
    );
    assert!(matches!(
        store
            .finish_replay(&first.id, 8, 0, None, T0 + 3 * SECOND)
            .await,
        Err(Error::Conflict(_))
    ));

    let second = store
        .start_replay(new("t1", None, T0 + 3 * SECOND), 3)
        .await
        .unwrap();
    let failed = store
        .finish_replay(
            &second.id,
            1,
            0,
            Some("the bus is down".into()),
            T0 + 4 * SECOND,
        )
        .await
        .unwrap();
    assert_eq!(failed.status, ReplayStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("the bus is down"));

    // At most 3 started in the hour before: the fourth waits until the first is an hour old.
    let third = store
        .start_replay(new("t1", None, T0 + 5 * SECOND), 3)
        .await
        .unwrap();
    store
        .finish_replay(&third.id, 0, 0, None, T0 + 6 * SECOND)
        .await
        .unwrap();
    assert!(matches!(
        store
            .start_replay(new("t1", None, T0 + 3_599 * SECOND), 3)
            .await,
        Err(Error::Limited(_))
    ));
    let later = store
        .start_replay(new("t1", None, T0 + 3_600 * SECOND), 3)
        .await
        .unwrap();

    // What a stop leaves running is closed at the next start.
    assert_eq!(
        store.interrupt_replays(T0 + 3_700 * SECOND).await.unwrap(),
        2
    );
    let interrupted = store.get_replay(&later.id).await.unwrap().unwrap();
    assert_eq!(interrupted.status, ReplayStatus::Interrupted);

    // Lists: newest first, the org's and platform-level ones.
    let listed = |org: Option<&'static str>| {
        let store = Arc::clone(&store);
        async move {
            store
                .list_replays("t1", org, PageRequest::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(None).await,
        [
            later.id.clone(),
            third.id.clone(),
            second.id.clone(),
            first.id.clone()
        ]
    );
    assert_eq!(listed(Some("org-b")).await, [later.id, third.id, second.id]);
}

pub(crate) async fn outbox_lists_filter_and_page(backend: &dyn Backend) {
    let store = backend.open().await;
    let t1 = tenant(&*store, "t1", "c1").await;
    let t2 = tenant(&*store, "t2", "c2").await;
    emit(
        &*store,
        &t1,
        vec![
            event("1", "deal.won", "D1", Some("org-a")),
            event("2", "deal.lost", "D2", Some("org-b")),
        ],
        T0,
    )
    .await;
    emit(
        &*store,
        &t1,
        vec![
            event("3", "contact.created", "P1", None),
            event("4", "deal.won", "D1", None),
        ],
        T0 + SECOND,
    )
    .await;
    emit(&*store, &t2, vec![event("5", "deal.won", "D1", None)], T0).await;
    let list = |filter: OutboxFilter| {
        let store = Arc::clone(&store);
        async move {
            ids(&store.list_outbox(filter).await.unwrap().items, |r| {
                r.event_id.clone()
            })
        }
    };
    let t1_filter = || OutboxFilter {
        tenant_id: "t1".to_owned(),
        ..Default::default()
    };
    assert_eq!(list(t1_filter()).await, ["4", "3", "2", "1"]);
    assert_eq!(
        list(OutboxFilter {
            event_type: Some("deal.won".to_owned()),
            ..t1_filter()
        })
        .await,
        ["4", "1"]
    );
    assert_eq!(
        list(OutboxFilter {
            entity_type: Some("deal".to_owned()),
            entity_id: Some("D1".to_owned()),
            ..t1_filter()
        })
        .await,
        ["4", "1"]
    );
    assert_eq!(
        list(OutboxFilter {
            org_id: Some("org-a".to_owned()),
            ..t1_filter()
        })
        .await,
        ["4", "3", "1"]
    );
    assert_eq!(
        list(OutboxFilter {
            since: Some(T0 + SECOND),
            ..t1_filter()
        })
        .await,
        ["4", "3"]
    );
    assert_eq!(
        list(OutboxFilter {
            until: Some(T0 + SECOND),
            ..t1_filter()
        })
        .await,
        ["2", "1"]
    );
    assert_eq!(
        list(OutboxFilter {
            connection_id: Some("c2".to_owned()),
            ..t1_filter()
        })
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        list(OutboxFilter {
            tenant_id: "t2".to_owned(),
            ..Default::default()
        })
        .await,
        ["5"]
    );
    assert_eq!(
        list(OutboxFilter {
            status: Some(OutboxStatus::Published),
            ..t1_filter()
        })
        .await,
        Vec::<String>::new()
    );

    let first = store
        .list_outbox(OutboxFilter {
            limit: 3,
            ..t1_filter()
        })
        .await
        .unwrap();
    assert_eq!(ids(&first.items, |r| r.event_id.clone()), ["4", "3", "2"]);
    let rest = store
        .list_outbox(OutboxFilter {
            limit: 3,
            cursor: first.next_cursor.clone(),
            ..t1_filter()
        })
        .await
        .unwrap();
    assert_eq!(
        (ids(&rest.items, |r| r.event_id.clone()), rest.next_cursor),
        (vec!["1".to_owned()], None)
    );
    assert!(matches!(
        store
            .list_outbox(OutboxFilter {
                cursor: Some("garbage".to_owned()),
                ..t1_filter()
            })
            .await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(store.get_event("3").await.unwrap().unwrap().entity_id, "P1");
    assert_eq!(store.get_event("nope").await.unwrap(), None);
}

pub(crate) async fn subscribers_receive_what_they_filter_for(backend: &dyn Backend) {
    let store = backend.open().await;
    let t1 = tenant(&*store, "t1", "c1").await;
    tenant(&*store, "t2", "c2").await;
    let subscribe =
        |tenant: &str, org: Option<&str>, types: &[&str], enabled: bool| NewSubscriber {
            tenant_id: tenant.to_owned(),
            org_id: org.map(str::to_owned),
            url: "https://subscriber.example/hook".to_owned(),
            event_types: types.iter().map(|t| (*t).to_owned()).collect(),
            secret_ref: "secrets/subscriber".to_owned(),
            enabled,
            created_at: T0,
        };
    let all = store
        .create_subscriber(subscribe("t1", None, &[], true))
        .await
        .unwrap();
    let org_a = store
        .create_subscriber(subscribe("t1", Some("org-a"), &[], true))
        .await
        .unwrap();
    let deals = store
        .create_subscriber(subscribe("t1", None, &["deal.*"], true))
        .await
        .unwrap();
    let exact = store
        .create_subscriber(subscribe("t1", None, &["contact.created"], true))
        .await
        .unwrap();
    let disabled = store
        .create_subscriber(subscribe("t1", None, &[], false))
        .await
        .unwrap();
    let other_tenant = store
        .create_subscriber(subscribe("t2", None, &[], true))
        .await
        .unwrap();
    assert_eq!(
        store.get_subscriber(&deals.id).await.unwrap(),
        Some(deals.clone())
    );

    let seqs = emit(
        &*store,
        &t1,
        vec![
            event("won-a", "deal.won", "D1", Some("org-a")),
            event("contact-b", "contact.created", "P1", Some("org-b")),
            event("lost-platform", "deal.lost", "D2", None),
        ],
        T0,
    )
    .await;
    assert_eq!(
        store
            .enqueue_subscriber_deliveries(&seqs, T0)
            .await
            .unwrap(),
        8
    );
    assert_eq!(
        store
            .enqueue_subscriber_deliveries(&seqs, T0)
            .await
            .unwrap(),
        0,
        "idempotent"
    );

    let received = |subscriber: &Subscriber| {
        let store = Arc::clone(&store);
        let id = subscriber.id.clone();
        async move {
            let page = store
                .list_subscriber_deliveries(SubscriberDeliveryFilter {
                    subscriber_id: id,
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut events = Vec::new();
            for d in page.items {
                assert_eq!(
                    (d.status, d.attempts),
                    (SubscriberDeliveryStatus::Pending, 0)
                );
                events.push(
                    store
                        .list_outbox(OutboxFilter {
                            tenant_id: "t1".to_owned(),
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .items
                        .into_iter()
                        .find(|r| r.seq == d.outbox_seq)
                        .unwrap()
                        .event_id,
                );
            }
            events.sort();
            events
        }
    };
    assert_eq!(
        received(&all).await,
        ["contact-b", "lost-platform", "won-a"]
    );
    // An org subscriber gets its org's events and platform-level ones.
    assert_eq!(received(&org_a).await, ["lost-platform", "won-a"]);
    assert_eq!(received(&deals).await, ["lost-platform", "won-a"]);
    assert_eq!(received(&exact).await, ["contact-b"]);
    assert!(received(&disabled).await.is_empty());
    assert!(received(&other_tenant).await.is_empty());

    let names = |list: Vec<Subscriber>| list.into_iter().map(|s| s.id).collect::<BTreeSet<_>>();
    assert_eq!(
        names(
            store
                .list_subscribers("t1", None, PageRequest::default())
                .await
                .unwrap()
                .items
        )
        .len(),
        5
    );
    let visible_to_b = names(
        store
            .list_subscribers("t1", Some("org-b"), PageRequest::default())
            .await
            .unwrap()
            .items,
    );
    assert!(!visible_to_b.contains(&org_a.id) && visible_to_b.contains(&all.id));
    assert_eq!(
        names(
            store
                .list_subscribers("t2", None, PageRequest::default())
                .await
                .unwrap()
                .items
        ),
        BTreeSet::from([other_tenant.id.clone()])
    );

    let update = SubscriberUpdate {
        url: "https://subscriber.example/v2".to_owned(),
        event_types: vec!["deal.won".to_owned()],
        secret_ref: "secrets/rotated".to_owned(),
        enabled: false,
    };
    let updated = store
        .update_subscriber(&deals.id, update.clone())
        .await
        .unwrap();
    assert_eq!(
        updated,
        Subscriber {
            url: update.url.clone(),
            event_types: update.event_types.clone(),
            secret_ref: update.secret_ref.clone(),
            enabled: false,
            ..deals.clone()
        }
    );
    assert_eq!(
        store.get_subscriber(&deals.id).await.unwrap(),
        Some(updated)
    );
    assert!(matches!(
        store.update_subscriber("nope", update).await,
        Err(Error::NotFound(_))
    ));

    store.delete_subscriber(&exact.id).await.unwrap();
    assert_eq!(store.get_subscriber(&exact.id).await.unwrap(), None);
    assert!(
        received(&exact).await.is_empty(),
        "its deliveries go with it"
    );
    assert!(matches!(
        store.delete_subscriber(&exact.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.enqueue_subscriber_deliveries(&[999_999], T0).await,
        Err(Error::NotFound(_))
    ));
}

pub(crate) async fn subscriber_deliveries_retry_die_and_revive(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let subscriber = store
        .create_subscriber(NewSubscriber {
            tenant_id: "t1".to_owned(),
            org_id: None,
            url: "https://subscriber.example/hook".to_owned(),
            event_types: vec![],
            secret_ref: "secrets/subscriber".to_owned(),
            enabled: true,
            created_at: T0,
        })
        .await
        .unwrap();
    let seqs = emit(
        &*store,
        &t,
        vec![
            event("x1", "deal.won", "X", None),
            event("x2", "deal.updated", "X", None),
            event("y1", "deal.won", "Y", None),
        ],
        T0,
    )
    .await;
    let (x1, x2, y1) = (seqs[0], seqs[1], seqs[2]);
    store
        .enqueue_subscriber_deliveries(&seqs, T0)
        .await
        .unwrap();
    let sid = subscriber.id.as_str();
    let claim = |now: Millis| {
        let store = Arc::clone(&store);
        async move {
            store
                .claim_subscriber_deliveries(10, now, LEASE)
                .await
                .unwrap()
        }
    };
    let attempt = |at: Millis, code: Option<u16>, next: AttemptNext| SubscriberAttempt {
        at,
        status_code: code,
        error: (next != AttemptNext::Delivered).then(|| "503 Service Unavailable".to_owned()),
        next,
    };

    let now = T0 + SECOND;
    let jobs = claim(now).await;
    assert_eq!(
        ids(&jobs, |j| j.event.event_id.clone()),
        ["x1", "x2", "y1"],
        "X's run comes whole, in order"
    );
    assert_eq!(jobs[0].subscriber, subscriber);
    assert_eq!(jobs[0].attempts, 1);
    assert_eq!(
        jobs[0].event.payload_json,
        event("x1", "deal.won", "X", None).payload_json
    );
    assert!(claim(now).await.is_empty(), "claimed deliveries are leased");

    store
        .mark_subscriber_delivery(
            sid,
            x1,
            attempt(now, Some(503), AttemptNext::RetryAt(now + 10 * SECOND)),
        )
        .await
        .unwrap();
    store
        .mark_subscriber_delivery(sid, y1, attempt(now, Some(200), AttemptNext::Delivered))
        .await
        .unwrap();
    // x1 failed: x2, claimed behind it, is given back unattempted, and waits for x1's retry.
    store
        .release_subscriber_deliveries(&[(sid.to_owned(), x2)], now)
        .await
        .unwrap();
    assert!(claim(now + 5 * SECOND).await.is_empty());
    let retry = claim(now + 10 * SECOND).await;
    assert_eq!(
        (
            ids(&retry, |j| j.event.event_id.clone()),
            retry[0].attempts,
            retry[1].attempts
        ),
        (vec!["x1".to_owned(), "x2".to_owned()], 2, 1)
    );
    store
        .mark_subscriber_delivery(sid, x1, attempt(now + 10 * SECOND, None, AttemptNext::Dead))
        .await
        .unwrap();
    store
        .release_subscriber_deliveries(&[(sid.to_owned(), x2)], now + 10 * SECOND)
        .await
        .unwrap();
    // Dead no longer holds the entity back.
    let next = claim(now + 11 * SECOND).await;
    assert_eq!(ids(&next, |j| j.event.event_id.clone()), ["x2"]);
    assert_eq!(next[0].attempts, 1, "released claims are not counted");
    store
        .mark_subscriber_delivery(
            sid,
            x2,
            attempt(now + 11 * SECOND, Some(204), AttemptNext::Delivered),
        )
        .await
        .unwrap();

    let list = |status: Option<SubscriberDeliveryStatus>| {
        let store = Arc::clone(&store);
        let subscriber_id = sid.to_owned();
        async move {
            store
                .list_subscriber_deliveries(SubscriberDeliveryFilter {
                    subscriber_id,
                    status,
                    ..Default::default()
                })
                .await
                .unwrap()
                .items
        }
    };
    let dead = list(Some(SubscriberDeliveryStatus::Dead)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].outbox_seq,
            dead[0].attempts,
            dead[0].last_status,
            dead[0].last_error.as_deref()
        ),
        (x1, 2, None, Some("503 Service Unavailable"))
    );
    let everything = list(None).await;
    assert_eq!(
        everything.iter().map(|d| d.outbox_seq).collect::<Vec<_>>(),
        [y1, x2, x1]
    );
    assert_eq!(everything[0].last_status, Some(200));

    // Manual retry of the dead one.
    store
        .retry_subscriber_delivery(sid, x1, now + 20 * SECOND)
        .await
        .unwrap();
    let revived = claim(now + 20 * SECOND).await;
    assert_eq!(
        (
            ids(&revived, |j| j.event.event_id.clone()),
            revived[0].attempts
        ),
        (vec!["x1".to_owned()], 1)
    );
    assert!(matches!(
        store.retry_subscriber_delivery(sid, x2, now).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.retry_subscriber_delivery(sid, 999_999, now).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store
            .mark_subscriber_delivery("nope", x1, attempt(now, None, AttemptNext::Dead))
            .await,
        Err(Error::NotFound(_))
    ));
}

pub(crate) async fn concurrent_writers_all_land(backend: &dyn Backend) {
    let store = backend.open().await;
    tenant(&*store, "t1", "c1").await;
    let before = store.write_stats();
    let writers: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .record_delivery(
                        delivery("c1", &format!("body {i}"), Some(&format!("p{i}")), T0 + i),
                        WINDOW,
                        LEASE_ENDED,
                    )
                    .await
            })
        })
        .collect();
    let mut recorded = BTreeSet::new();
    for writer in writers {
        let r = writer.await.unwrap().unwrap();
        assert!(!r.duplicate);
        recorded.insert(r.id);
    }
    assert_eq!(recorded.len(), 200);
    let listed = store
        .list_deliveries(DeliveryFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(|d| d.id.clone())
            .collect::<BTreeSet<_>>(),
        recorded
    );
    let after = store.write_stats();
    assert!(after.commands - before.commands >= 200);
    assert!(after.commits - before.commits <= after.commands - before.commands);
}

pub(crate) async fn data_survives_reopening(backend: &dyn Backend) {
    let (delivered, unfinished, subscriber) = {
        let store = backend.open().await;
        let t = tenant(&*store, "t1", "c1").await;
        let delivered = store
            .record_delivery(delivery("c1", "done", Some("p1"), T0), WINDOW, LEASE_ENDED)
            .await
            .unwrap();
        store
            .complete_delivery(completion(
                &delivered.id,
                &t.adapter.id,
                vec![event("kept", "deal.won", "D1", None)],
                writes(0, state(&[("k", "v")])),
                T0,
            ))
            .await
            .unwrap();
        let unfinished = store
            .record_delivery(
                delivery("c1", "in flight", Some("p2"), T0),
                WINDOW,
                LEASE_ENDED,
            )
            .await
            .unwrap();
        let subscriber = store
            .create_subscriber(NewSubscriber {
                tenant_id: "t1".to_owned(),
                org_id: None,
                url: "https://subscriber.example/hook".to_owned(),
                event_types: vec!["deal.won".to_owned()],
                secret_ref: "secrets/s".to_owned(),
                enabled: true,
                created_at: T0,
            })
            .await
            .unwrap();
        (delivered.id, unfinished.id, subscriber)
    };
    let store = backend.open().await;
    let info = store.get_delivery(&delivered).await.unwrap().unwrap().info;
    assert_eq!((info.status, info.attempts), (DeliveryStatus::Processed, 1));
    assert_eq!(
        store.get_event("kept").await.unwrap().unwrap().delivery_id,
        delivered
    );
    let snapshot = store.load_state("c1").await.unwrap();
    assert_eq!((snapshot.map, snapshot.version), (state(&[("k", "v")]), 1));
    assert_eq!(
        store.get_subscriber(&subscriber.id).await.unwrap(),
        Some(subscriber)
    );
    assert_eq!(
        ids(
            &store
                .claim_recovery(T0 + SECOND, T0 + 2 * SECOND, 10)
                .await
                .unwrap(),
            |d| d.info.id.clone()
        ),
        [unfinished.as_str()]
    );
    // Dedupe still knows what was taken before the restart.
    let retry = store
        .record_delivery(
            delivery("c1", "in flight", Some("p2"), T0 + SECOND),
            WINDOW,
            LEASE_ENDED,
        )
        .await
        .unwrap();
    assert_eq!((retry.id, retry.duplicate), (unfinished, true));
    // And new writes work.
    let fresh = store
        .record_delivery(
            delivery("c1", "new", Some("p3"), T0 + SECOND),
            WINDOW,
            LEASE_ENDED,
        )
        .await
        .unwrap();
    assert!(!fresh.duplicate);
}

// ---------------------------------------------------------------------------------------------
// Helpers that need no backend

#[test]
fn invocation_records_and_statuses_follow_the_report() {
    use crate::contracts::{Rule, Violation};
    use crate::sandbox::{AdapterErrorKind, Failure, FailureKind, Log, Outcome, Report, Usage};

    let report = |outcome: Outcome| Report {
        outcome,
        usage: Usage {
            duration: Duration::from_micros(1500),
            fuel_consumed: 99,
            events: 1,
            ..Usage::default()
        },
        log: Log::default(),
        state: None,
        state_access: Default::default(),
        determinism: Default::default(),
    };
    let adapter = AdapterRef {
        adapter_id: "a1",
        version: 3,
        sha256: "abc",
    };
    let violations = vec![Violation {
        event_index: 0,
        pointer: "/payload/split_pct".to_owned(),
        rule: Rule::EventTypeFormat,
        message: "bad".to_owned(),
        value: Some("33.3".to_owned()),
    }];
    let rejected = InvocationRecord::from_report(
        &report(Outcome::Rejected { violations }),
        Export::HandleWebhook,
        adapter,
        "in",
        T0,
    );
    assert_eq!(rejected.outcome, InvocationOutcome::Rejected);
    assert_eq!(
        (
            rejected.duration_us,
            rejected.fuel,
            rejected.adapter_version
        ),
        (1500, 99, 3)
    );
    let detail: serde_json::Value =
        serde_json::from_str(rejected.detail_json.as_deref().unwrap()).unwrap();
    assert_eq!(detail["violations"][0]["pointer"], "/payload/split_pct");
    assert!(serde_json::from_str::<serde_json::Value>(&rejected.log_json).is_ok());

    let accepted = Outcome::Accepted {
        events: vec![],
        next_cursor: None,
        more: false,
        records: None,
        request: None,
    };
    assert_eq!(
        InvocationRecord::from_report(
            &report(accepted.clone()),
            Export::HandleWebhook,
            adapter,
            "in",
            T0
        )
        .detail_json,
        None
    );
    let with_cursor = Outcome::Accepted {
        events: vec![],
        next_cursor: Some("c2".to_owned()),
        more: false,
        records: None,
        request: None,
    };
    let record = InvocationRecord::from_report(
        &report(with_cursor),
        Export::HandleWebhook,
        adapter,
        "in",
        T0,
    );
    assert_eq!(
        record.detail_json.as_deref(),
        Some(r#"{"next_cursor":"c2"}"#)
    );

    let failed = Outcome::Failed {
        failure: Failure {
            kind: FailureKind::Deadline,
            message: "late".to_owned(),
            backtrace: vec![],
        },
    };
    let bad_request = Outcome::AdapterError {
        kind: AdapterErrorKind::BadRequest,
        message: "no".to_owned(),
    };
    let adapter_failed = Outcome::AdapterError {
        kind: AdapterErrorKind::Failed,
        message: "no".to_owned(),
    };
    let ignored = Outcome::Ignored {
        reason: "ping".to_owned(),
    };
    assert!(
        InvocationRecord::from_report(
            &report(failed.clone()),
            Export::HandleWebhook,
            adapter,
            "in",
            T0
        )
        .detail_json
        .unwrap()
        .contains("deadline")
    );
    let statuses: Vec<_> = [&accepted, &ignored, &bad_request, &adapter_failed, &failed]
        .into_iter()
        .map(DeliveryStatus::for_outcome)
        .collect();
    use DeliveryStatus::*;
    assert_eq!(statuses, [Processed, Ignored, Rejected, Failed, Failed]);
    assert_eq!(
        "adapter_error".parse::<InvocationOutcome>().unwrap(),
        InvocationOutcome::AdapterError
    );
    assert!("nope".parse::<DeliveryStatus>().is_err());
}

// ---------------------------------------------------------------------------------------------
// SQLite

pub(crate) struct SqliteBackend {
    dir: tempfile::TempDir,
    vault: Arc<crate::vault::Vault>,
}

/// A vault over secrets in memory: what a backend's stores of one test share.
pub(crate) fn test_vault() -> Arc<crate::vault::Vault> {
    Arc::new(crate::vault::Vault::new(Arc::new(
        crate::secrets::InMemorySecretStore::new(),
    )))
}

impl SqliteBackend {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
            vault: test_vault(),
        }
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn open(&self) -> Arc<dyn Store> {
        let store = SqliteStore::open_sealed(self.dir.path(), Arc::clone(&self.vault));
        Arc::new(store.expect("the store opens"))
    }

    fn vault(&self) -> Arc<crate::vault::Vault> {
        Arc::clone(&self.vault)
    }

    async fn open_unsealed(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(self.dir.path()).expect("the store opens"))
    }

    async fn stores_plaintext(&self, needle: &str) -> bool {
        // The database file and its write-ahead log, whatever was checkpointed yet.
        let mut found = false;
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            found |= bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes());
        }
        found
    }
}

mod sqlite_suite {
    store_suite!(super::SqliteBackend::new());
}

mod sqlite_specific {
    use super::*;
    use crate::store::sqlite::DB_FILE;

    async fn open() -> (tempfile::TempDir, SqliteStore, Tenant) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let t = tenant(&store, "t1", "c1").await;
        (dir, store, t)
    }

    async fn wait_queued(store: &SqliteStore, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store.queued() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {n} commands queued",
                store.queued()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // A sender counts as queued from when it reserves its slot, a moment before its
        // command is in the channel: let the last ones finish writing, or the writer may see
        // all but one of them in its first batch.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fn spawn_records(
        store: &SqliteStore,
        n: usize,
        tag: &str,
    ) -> Vec<tokio::task::JoinHandle<Result<Recorded>>> {
        (0..n)
            .map(|i| {
                let store = store.clone();
                let body = format!("{tag} {i}");
                tokio::spawn(async move {
                    store
                        .record_delivery(delivery("c1", &body, None, T0), WINDOW, LEASE_ENDED)
                        .await
                })
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_batches_queued_writers() {
        let (_dir, store, _) = open().await;
        let release = store.hold_writer().await;
        let before = store.write_stats();
        let writers = spawn_records(&store, 200, "batched");
        wait_queued(&store, 200).await;
        drop(release);
        for writer in writers {
            assert!(!writer.await.unwrap().unwrap().duplicate);
        }
        let after = store.write_stats();
        // The held command's batch, then one batch of the 200 queued behind it.
        assert_eq!(after.commands - before.commands, 200 + 1);
        assert_eq!(after.commits - before.commits, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_under_free_running_load() {
        // Each writer records deliveries one after another, waiting for each acknowledgment,
        // as a webhook handler does; the writers run concurrently.
        const EACH: usize = 20;
        let (_dir, store, _) = open().await;
        for writers in [1usize, 8, 64, 200] {
            let before = store.write_stats();
            let started = std::time::Instant::now();
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        for i in 0..EACH {
                            let body = format!("sustained {writers} {w} {i}");
                            let new = delivery("c1", &body, None, T0);
                            assert!(
                                !store
                                    .record_delivery(new, WINDOW, LEASE_ENDED)
                                    .await
                                    .unwrap()
                                    .duplicate
                            );
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            let elapsed = started.elapsed();
            let after = store.write_stats();
            let (commands, commits) = (
                after.commands - before.commands,
                after.commits - before.commits,
            );
            println!(
                "{writers:>4} writers x {EACH} acknowledged record_delivery: {commands} commands, \
                 {commits} commits ({:.1} per commit), {elapsed:?}, {:.0} deliveries/s",
                commands as f64 / commits as f64,
                commands as f64 / elapsed.as_secs_f64()
            );
            assert_eq!(commands, (writers * EACH) as u64);
            assert!(commits >= 1 && commits <= commands);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_failing_command_does_not_sink_its_batch() {
        let (_dir, store, t) = open().await;
        let victim = store
            .record_delivery(delivery("c1", "victim", None, T0), WINDOW, LEASE_ENDED)
            .await
            .unwrap();
        let release = store.hold_writer().await;
        let before = store.write_stats();
        let mut writers = spawn_records(&store, 5, "neighbour");
        wait_queued(&store, 5).await;
        let failing = {
            let store = store.clone();
            // A redrive's completion (it would count an attempt) that breaks a constraint.
            let bad = Completion {
                attempt_counted: false,
                ..completion(
                    &victim.id,
                    &t.adapter.id,
                    vec![
                        event("fine", "deal.won", "D", None),
                        event("bad", "deal.won", "", None),
                    ],
                    None,
                    T0,
                )
            };
            tokio::spawn(async move { store.complete_delivery(bad).await })
        };
        wait_queued(&store, 6).await;
        writers.extend(spawn_records(&store, 5, "after"));
        wait_queued(&store, 11).await;
        drop(release);
        assert!(matches!(failing.await.unwrap(), Err(Error::Invalid(_))));
        let mut ids = Vec::new();
        for writer in writers {
            ids.push(writer.await.unwrap().unwrap().id);
        }
        let after = store.write_stats();
        assert_eq!(
            after.commits - before.commits,
            2,
            "the neighbours shared one commit"
        );
        assert_eq!(after.failed_commands - before.failed_commands, 1);
        for id in ids {
            assert_eq!(
                store.get_delivery(&id).await.unwrap().unwrap().info.status,
                DeliveryStatus::Received
            );
        }
        assert_eq!(store.get_event("fine").await.unwrap(), None);
        assert_eq!(
            store
                .get_delivery(&victim.id)
                .await
                .unwrap()
                .unwrap()
                .info
                .attempts,
            1,
            "the failed completion's attempt was rolled back with it"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_writes_are_on_disk_without_a_clean_shutdown() {
        let (dir, store, t) = open().await;
        let recorded = store
            .record_delivery(delivery("c1", "acked", Some("p1"), T0), WINDOW, LEASE_ENDED)
            .await
            .unwrap();
        store
            .complete_delivery(completion(
                &recorded.id,
                &t.adapter.id,
                vec![event("acked-event", "deal.won", "D", None)],
                None,
                T0,
            ))
            .await
            .unwrap();
        let unfinished = store
            .record_delivery(
                delivery("c1", "in flight", Some("p2"), T0),
                WINDOW,
                LEASE_ENDED,
            )
            .await
            .unwrap();
        // What is on disk right now, with the store still running (nothing checkpointed, no
        // clean close): as if the process had been killed here.
        let crashed = tempfile::tempdir().unwrap();
        let release = store.hold_writer().await;
        for file in [DB_FILE.to_owned(), format!("{DB_FILE}-wal")] {
            let from = dir.path().join(&file);
            if from.exists() {
                std::fs::copy(&from, crashed.path().join(&file)).unwrap();
            }
        }
        drop(release);
        assert!(
            crashed.path().join(format!("{DB_FILE}-wal")).exists(),
            "the commits are in the WAL"
        );

        let recovered = SqliteStore::open(crashed.path()).unwrap();
        let info = recovered
            .get_delivery(&recorded.id)
            .await
            .unwrap()
            .unwrap()
            .info;
        assert_eq!(info.status, DeliveryStatus::Processed);
        assert!(recovered.get_event("acked-event").await.unwrap().is_some());
        let pending = recovered
            .claim_recovery(T0 + SECOND, T0 + 2 * SECOND, 10)
            .await
            .unwrap();
        assert_eq!(ids(&pending, |d| d.info.id.clone()), [unfinished.id]);
        assert_eq!(pending[0].body, b"in flight");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_schema_version_is_recorded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let path = dir.path().join(DB_FILE);
        let version = |db: &rusqlite::Connection| {
            db.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
                .unwrap()
        };
        {
            let db = rusqlite::Connection::open(&path).unwrap();
            assert!(version(&db) >= 1);
            let journal: String = db
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            assert_eq!(journal, "wal");
        }
        // Reopening applies nothing twice.
        drop(SqliteStore::open(dir.path()).unwrap());
        {
            let db = rusqlite::Connection::open(&path).unwrap();
            db.pragma_update(None, "user_version", 999).unwrap();
        }
        match SqliteStore::open(dir.path()) {
            Err(Error::Backend(message)) => {
                assert!(message.contains("upgrade the host"), "{message}")
            }
            other => panic!("a newer schema must be refused, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_outbox_is_append_only() {
        let (dir, store, t) = open().await;
        emit(&store, &t, vec![event("e", "deal.won", "D", None)], T0).await;
        drop(store);
        let db = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        let delete = db.execute("DELETE FROM outbox", []);
        assert!(delete.unwrap_err().to_string().contains("append-only"));
        let rewrite = db.execute("UPDATE outbox SET payload_json = '{}'", []);
        assert!(rewrite.unwrap_err().to_string().contains("immutable"));
        // A payload may be erased, and then stays so.
        db.execute("UPDATE outbox SET payload_json = '~erased1'", [])
            .unwrap();
        for again in ["'~sealed1:BB'", "'{}'"] {
            let rewrite = db.execute(&format!("UPDATE outbox SET payload_json = {again}"), []);
            assert!(rewrite.unwrap_err().to_string().contains("immutable"));
        }
        let other = db.execute("UPDATE outbox SET entity_id = 'E2'", []);
        assert!(other.unwrap_err().to_string().contains("immutable"));
        db.execute("UPDATE outbox SET status = 'published'", [])
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_audit_log_cannot_be_changed() {
        let (dir, store, _) = open().await;
        store
            .append_audit(audit_entry("t1", None, "alice", "adapter.create", "a1", 0))
            .await
            .unwrap();
        drop(store);
        let db = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        for sql in [
            "DELETE FROM audit",
            "UPDATE audit SET actor = 'mallory'",
            "UPDATE audit SET support = 1",
        ] {
            let refused = db.execute(sql, []);
            assert!(
                refused.unwrap_err().to_string().contains("append-only"),
                "{sql} went through"
            );
        }
        let actor: String = db
            .query_row("SELECT actor FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(actor, "alice");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blobs_are_content_addressed() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobStore::open_path(dir.path()).unwrap();
        let wasm = b"\0asm component bytes".to_vec();
        let sha = blobs.put(wasm.clone()).await.unwrap();
        assert_eq!(sha, sha256_hex(&wasm));
        assert_eq!(
            blobs.put(wasm.clone()).await.unwrap(),
            sha,
            "storing twice is a no-op"
        );
        assert!(blobs.contains(&sha).await.unwrap());
        assert_eq!(blobs.get(&sha).await.unwrap(), Some(wasm.clone()));
        let absent = "0".repeat(64);
        assert_eq!(blobs.get(&absent).await.unwrap(), None);
        assert!(!blobs.contains(&absent).await.unwrap());
        for bad in ["../../etc/passwd", "ABC", &"A".repeat(64)] {
            assert!(
                matches!(blobs.get(bad).await, Err(Error::Invalid(_))),
                "{bad}"
            );
        }
        let files: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            files,
            [std::ffi::OsString::from(format!("{sha}.wasm"))],
            "no temporary files left"
        );
        std::fs::write(
            dir.path().join("blobs").join(format!("{sha}.wasm")),
            b"tampered",
        )
        .unwrap();
        assert!(matches!(blobs.get(&sha).await, Err(Error::Backend(_))));
    }
}

// ---------------------------------------------------------------------------------------------
// Health and alerts

fn health_record(t: &Tenant, firing: &[&str], now: Millis) -> HealthRecord {
    HealthRecord {
        connection_id: t.connection.id.clone(),
        tenant_id: t.connection.tenant_id.clone(),
        org_id: t.connection.org_id.clone(),
        provider: t.connection.provider.clone(),
        status: if firing.is_empty() {
            "healthy"
        } else {
            "failing"
        }
        .to_owned(),
        reasons_json: "[]".to_owned(),
        firing: firing
            .iter()
            .map(|rule| Firing {
                rule: (*rule).to_owned(),
                severity: "failing".to_owned(),
                detail: format!("{rule} fires"),
                figures_json: r#"{"failure_rate":"0.5000"}"#.to_owned(),
            })
            .collect(),
        raise: true,
        realert_after: 60 * SECOND,
        now,
    }
}

async fn alert_events(store: &dyn Store, tenant_id: &str) -> Vec<OutboxRow> {
    let mut rows = store
        .list_outbox(OutboxFilter {
            tenant_id: tenant_id.to_owned(),
            entity_type: Some("integration_alert".to_owned()),
            ..OutboxFilter::default()
        })
        .await
        .unwrap()
        .items;
    rows.sort_by_key(|row| row.seq);
    rows
}

pub(crate) async fn health_reads_activity_and_keeps_one_open_alert_per_rule(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let other = tenant(&*store, "t2", "c2").await;

    // Activity: three processed deliveries and two failed ones, one of them before the window.
    for at in [T0, T0 + SECOND, T0 + 2 * SECOND] {
        emit(&*store, &t, vec![], at).await;
    }
    let mut failed_ids = Vec::new();
    for at in [T0 - 600 * SECOND, T0 + 3 * SECOND] {
        let recorded = store
            .record_delivery(
                delivery(&t.connection.id, &format!("bad-{at}"), None, at),
                WINDOW,
                LEASE_ENDED,
            )
            .await
            .unwrap();
        store
            .complete_delivery(Completion {
                status: DeliveryStatus::Failed,
                reason_json: Some(r#"{"status":"adapter_error","message":"no amount"}"#.to_owned()),
                ..completion(&recorded.id, &t.adapter.id, vec![], None, at)
            })
            .await
            .unwrap();
        failed_ids.push(recorded.id);
    }
    store
        .add_signature_failures(vec![("c1".to_owned(), T0, 4), ("c2".to_owned(), T0, 1)], 0)
        .await
        .unwrap();
    store
        .add_signature_failures(vec![("c1".to_owned(), T0, 3)], 0)
        .await
        .unwrap();
    let activity = store.connection_activity("c1", T0).await.unwrap();
    assert_eq!(
        (
            activity.deliveries,
            activity.deliveries_failed,
            activity.signature_failures
        ),
        (4, 1, 7)
    );
    assert_eq!(
        activity.last_failure,
        Some((
            failed_ids[1].clone(),
            Some(r#"{"status":"adapter_error","message":"no amount"}"#.to_owned())
        ))
    );
    assert_eq!(activity.last_success_at, Some(T0 + 2 * SECOND));
    assert_eq!(activity.last_delivery_at, Some(T0 + 3 * SECOND));
    assert_eq!(activity.dead_subscriber_deliveries, 0);
    assert_eq!(activity.auth, None);
    // Old minutes are forgotten.
    store
        .add_signature_failures(vec![], T0 + 60 * SECOND)
        .await
        .unwrap();
    assert_eq!(
        store
            .connection_activity("c1", T0)
            .await
            .unwrap()
            .signature_failures,
        0
    );

    // Raised once, however often the rule fires; its event is in the outbox.
    let now = T0 + 10 * SECOND;
    let raised = store
        .record_health(health_record(&t, &["delivery_failures"], now))
        .await
        .unwrap();
    assert_eq!((raised.raised.len(), raised.resolved.len()), (1, 0));
    let alert = raised.raised[0].clone();
    assert_eq!(alert.status, AlertStatus::Open);
    let again = store
        .record_health(health_record(&t, &["delivery_failures"], now + SECOND))
        .await
        .unwrap();
    assert!(!again.appended());
    let events = alert_events(&*store, "t1").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "integration_alert.raised");
    assert_eq!(events[0].event_id, alert.raised_event_id);
    assert_eq!(events[0].entity_id, alert.id);
    assert_eq!(events[0].connection_id, "c1");
    let payload: serde_json::Value = serde_json::from_str(&events[0].payload_json).unwrap();
    assert_eq!(payload["rule"], "delivery_failures");
    assert_eq!(payload["figures"]["failure_rate"], "0.5000");
    assert_eq!(payload["status"], "open");
    assert!(alert_events(&*store, "t2").await.is_empty());

    let snapshot = store.get_health("c1").await.unwrap().unwrap();
    assert_eq!(
        (snapshot.status.as_str(), snapshot.changed_at),
        ("failing", now)
    );

    // Cleared: resolved once, with its event after the raised one.
    let cleared = store
        .record_health(health_record(&t, &[], now + 2 * SECOND))
        .await
        .unwrap();
    assert_eq!((cleared.raised.len(), cleared.resolved.len()), (0, 1));
    assert_eq!(cleared.resolved[0].id, alert.id);
    let events = alert_events(&*store, "t1").await;
    assert_eq!(
        events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["integration_alert.raised", "integration_alert.resolved"]
    );
    assert!(events[0].seq < events[1].seq);
    assert_eq!(
        store.get_health("c1").await.unwrap().unwrap().changed_at,
        now + 2 * SECOND
    );

    // Firing again within the re-alert period: nothing; after it: a new alert.
    let flapping = store
        .record_health(health_record(&t, &["delivery_failures"], now + 30 * SECOND))
        .await
        .unwrap();
    assert!(!flapping.appended());
    let later = store
        .record_health(health_record(
            &t,
            &["delivery_failures", "stale"],
            now + 90 * SECOND,
        ))
        .await
        .unwrap();
    assert_eq!(later.raised.len(), 2);

    // A connection that may not raise (disabled) resolves what it has open.
    let disabled = store
        .record_health(HealthRecord {
            raise: false,
            ..health_record(&t, &["delivery_failures", "stale"], now + 100 * SECOND)
        })
        .await
        .unwrap();
    assert_eq!((disabled.raised.len(), disabled.resolved.len()), (0, 2));

    // Lists: newest first, by status and rule, in the tenant only.
    let all = store
        .list_alerts("t1", None, AlertFilter::default(), PageRequest::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);
    assert!(all.items.windows(2).all(|w| w[0].id > w[1].id));
    let stale = store
        .list_alerts(
            "t1",
            None,
            AlertFilter {
                rule: Some("stale".to_owned()),
                status: Some(AlertStatus::Resolved),
                ..AlertFilter::default()
            },
            PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(stale.items.len(), 1);
    let first_page = store
        .list_alerts(
            "t1",
            None,
            AlertFilter::default(),
            PageRequest {
                limit: 2,
                cursor: None,
            },
        )
        .await
        .unwrap();
    let second_page = store
        .list_alerts(
            "t1",
            None,
            AlertFilter::default(),
            PageRequest {
                limit: 2,
                cursor: first_page.next_cursor.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!((first_page.items.len(), second_page.items.len()), (2, 1));
    assert!(
        store
            .list_alerts("t2", None, AlertFilter::default(), PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(store.list_health("t1", None).await.unwrap().len(), 1);
    assert!(store.list_health("t2", None).await.unwrap().is_empty());

    // Rules are the tenant's; the walk sees every tenant's connections in id order.
    assert_eq!(store.health_rules("t1").await.unwrap(), None);
    store
        .set_health_rules("t1", r#"{"defaults":{"window_secs":120}}"#, now)
        .await
        .unwrap();
    store
        .set_health_rules("t1", r#"{"defaults":{"window_secs":300}}"#, now)
        .await
        .unwrap();
    assert_eq!(
        store.health_rules("t1").await.unwrap().as_deref(),
        Some(r#"{"defaults":{"window_secs":300}}"#)
    );
    assert_eq!(store.health_rules("t2").await.unwrap(), None);
    let walked = store.connections_after(None, 1).await.unwrap();
    assert_eq!(walked.len(), 1);
    let rest = store
        .connections_after(Some(&walked[0].id), 10)
        .await
        .unwrap();
    let mut ids: Vec<_> = walked.iter().chain(&rest).map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["c1", other.connection.id.as_str()]);
}

pub(crate) async fn replays_queue_subscriber_deliveries_again(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let subscriber = |url: &str| NewSubscriber {
        tenant_id: "t1".to_owned(),
        org_id: None,
        url: url.to_owned(),
        event_types: vec!["deal.*".to_owned()],
        secret_ref: "secrets/subscriber".to_owned(),
        enabled: true,
        created_at: T0,
    };
    let one = store
        .create_subscriber(subscriber("https://one.example/hook"))
        .await
        .unwrap();
    let two = store
        .create_subscriber(subscriber("https://two.example/hook"))
        .await
        .unwrap();
    let seqs = emit(
        &*store,
        &t,
        vec![
            event("x1", "deal.won", "X", None),
            event("m1", "member.joined", "M", None),
        ],
        T0,
    )
    .await;
    assert_eq!(
        store
            .enqueue_subscriber_deliveries(&seqs, T0)
            .await
            .unwrap(),
        2
    );
    // Both deliver x1.
    let jobs = store
        .claim_subscriber_deliveries(10, T0 + SECOND, LEASE)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
    for job in &jobs {
        store
            .mark_subscriber_delivery(
                &job.subscriber.id,
                job.event.seq,
                SubscriberAttempt {
                    at: T0 + SECOND,
                    status_code: Some(204),
                    error: None,
                    next: AttemptNext::Delivered,
                },
            )
            .await
            .unwrap();
    }
    // Enqueueing again is a no-op; a replay queues them again, for one subscriber or all.
    assert_eq!(
        store
            .enqueue_subscriber_deliveries(&seqs, T0 + 2 * SECOND)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .replay_to_subscribers(&seqs, Some(&two.id), T0 + 3 * SECOND)
            .await
            .unwrap(),
        1,
        "x1 for two only: nobody wants member events"
    );
    let again = store
        .claim_subscriber_deliveries(10, T0 + 3 * SECOND, LEASE)
        .await
        .unwrap();
    assert_eq!(
        again
            .iter()
            .map(|j| (
                j.subscriber.id.as_str(),
                j.event.event_id.as_str(),
                j.attempts
            ))
            .collect::<Vec<_>>(),
        [(two.id.as_str(), "x1", 1)]
    );
    assert_eq!(
        store
            .replay_to_subscribers(&seqs, None, T0 + 4 * SECOND)
            .await
            .unwrap(),
        2
    );
    let mut everyone: Vec<String> = store
        .claim_subscriber_deliveries(10, T0 + 4 * SECOND, LEASE)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.subscriber.id)
        .collect();
    everyone.sort();
    let mut expected = vec![one.id.clone(), two.id.clone()];
    expected.sort();
    assert_eq!(everyone, expected);
}

pub(crate) async fn versions_compile_then_become_ready_or_failed(backend: &dyn Backend) {
    let store = backend.open().await;
    let t = tenant(&*store, "t1", "c1").await;
    let compiling = |sha| NewAdapterVersion {
        status: VersionStatus::Compiling,
        info_json: "{}".to_owned(),
        ..new_version(&t.adapter.id, sha)
    };
    let three = store.add_adapter_version(compiling('c')).await.unwrap();
    let four = store.add_adapter_version(compiling('d')).await.unwrap();
    assert_eq!(
        (three.version, three.status, four.version),
        (3, VersionStatus::Compiling, 4)
    );
    // Connections get the newest ready version, not one still compiling.
    assert_eq!(
        store.latest_adapter_version(&t.adapter.id).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        store
            .compiling_versions()
            .await
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        [3, 4]
    );
    let ready = store
        .finish_adapter_version(&t.adapter.id, 3, Ok(r#"{"name":"acme"}"#.to_owned()))
        .await
        .unwrap();
    assert_eq!(
        (ready.status, ready.info_json.as_str(), ready.failure),
        (VersionStatus::Ready, r#"{"name":"acme"}"#, None)
    );
    let failed = store
        .finish_adapter_version(&t.adapter.id, 4, Err("it traps in describe".to_owned()))
        .await
        .unwrap();
    assert_eq!(
        (
            failed.status,
            failed.failure.as_deref(),
            failed.info_json.as_str()
        ),
        (VersionStatus::Failed, Some("it traps in describe"), "{}")
    );
    assert_eq!(
        store.latest_adapter_version(&t.adapter.id).await.unwrap(),
        Some(3)
    );
    // Once only; never for a version that was not compiling.
    for version in [2, 3, 4] {
        assert!(matches!(
            store
                .finish_adapter_version(&t.adapter.id, version, Err("again".to_owned()))
                .await,
            Err(Error::Conflict(_))
        ));
    }
    assert!(store.compiling_versions().await.unwrap().is_empty());
    assert!(matches!(
        store
            .finish_adapter_version(&t.adapter.id, 3, Ok("{not json".to_owned()))
            .await,
        Err(Error::Invalid(_))
    ));
}
