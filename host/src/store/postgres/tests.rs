//! The shared suite against PostgreSQL, each case in a schema of its own, and what only this
//! backend has: migrations racing, blobs, claims by two hosts at once.
//!
//! The server is `postgres://postgres@127.0.0.1:5432/test` unless
//! `ADAPTER_HOST_TEST_POSTGRES_URL` says otherwise. An unreachable server fails the tests: a
//! backend that was never tested must not look green.

use std::sync::Arc;

use async_trait::async_trait;

use super::PostgresStore;
use crate::store::tests::Backend;
use crate::store::{BlobStore, Store};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("ADAPTER_HOST_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A fresh schema, dropped (best effort) when the backend is.
pub(crate) struct PostgresBackend {
    url: String,
    schema: String,
    vault: Arc<crate::vault::Vault>,
}

impl PostgresBackend {
    pub(crate) fn new() -> Self {
        Self {
            url: url(),
            schema: format!("test_{}", uuid::Uuid::now_v7().simple()),
            vault: crate::store::tests::test_vault(),
        }
    }

    async fn connect(&self) -> PostgresStore {
        self.connect_with(Arc::clone(&self.vault)).await
    }

    async fn connect_with(&self, vault: Arc<crate::vault::Vault>) -> PostgresStore {
        PostgresStore::connect_sealed(&self.url, &self.schema, vault)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the PostgreSQL store tests need a server (set ADAPTER_HOST_TEST_POSTGRES_URL \
                     to reach another one): {e}"
                )
            })
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(self.connect().await)
    }

    fn vault(&self) -> Arc<crate::vault::Vault> {
        Arc::clone(&self.vault)
    }

    async fn open_unsealed(&self) -> Arc<dyn Store> {
        let vault = Arc::new(crate::vault::Vault::disabled());
        Arc::new(self.connect_with(vault).await)
    }

    async fn stores_plaintext(&self, needle: &str) -> bool {
        // Every row of every table of the schema as text (bytea as hex).
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(connection);
        let tables = client
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
                &[&self.schema],
            )
            .await
            .unwrap();
        let hex = hex::encode(needle);
        let mut found = false;
        for table in tables {
            let table: String = table.get(0);
            let rows = client
                .query(
                    &format!("SELECT t::text FROM {}.{table} t", self.schema),
                    &[],
                )
                .await
                .unwrap();
            found |= rows.iter().any(|row| {
                let text: String = row.get(0);
                text.contains(needle) || text.contains(&hex)
            });
        }
        drop(client);
        let _ = task.await;
        found
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Drop runs inside the test's runtime, which must not be blocked on: a thread of its
        // own, with a runtime of its own, drops the schema.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                let task = tokio::spawn(connection);
                let dropped = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await;
                drop(client);
                let _ = task.await;
                dropped.ok()
            })
        })
        .join();
    }
}

mod postgres_suite {
    crate::store::tests::store_suite!(super::PostgresBackend::new());
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let e = PostgresStore::connect("postgres://postgres:hunter2@127.0.0.1:1/test", "test_x")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot reach PostgreSQL at 127.0.0.1:1"), "{e}");
    assert!(!e.contains("hunter2"), "the password leaked: {e}");
    assert!(matches!(
        PostgresStore::connect(&url(), "Robert'); DROP").await,
        Err(crate::store::Error::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_starting_at_once_migrate_once() {
    let backend = PostgresBackend::new();
    let (a, b, c) = tokio::join!(backend.connect(), backend.connect(), backend.connect());
    drop((a, b, c));
    let store = backend.connect().await;
    let db = store.db().await.unwrap();
    let versions: Vec<i64> = db
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let expected: Vec<i64> = (1..=super::schema::MIGRATIONS.len() as i64).collect();
    assert_eq!(versions, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_shared_and_checked() {
    let backend = PostgresBackend::new();
    let (one, two) = (
        backend.connect().await.blobs(),
        backend.connect().await.blobs(),
    );
    let sha = one.put(b"\0asm component".to_vec()).await.unwrap();
    assert_eq!(one.put(b"\0asm component".to_vec()).await.unwrap(), sha);
    assert!(two.contains(&sha).await.unwrap());
    assert_eq!(
        two.get(&sha).await.unwrap().as_deref(),
        Some(&b"\0asm component"[..])
    );
    assert_eq!(two.get(&"0".repeat(64)).await.unwrap(), None);
    assert!(two.get("../etc/passwd").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_never_claim_the_same_rows() {
    use crate::store::tests::{T0, emit, event, tenant};
    let backend = PostgresBackend::new();
    let (a, b) = (backend.connect().await, backend.connect().await);
    let t = tenant(&a, "t1", "c1").await;
    let events = (0..60)
        .map(|i| event(&format!("e{i}"), "deal.won", &format!("D{}", i % 6), None))
        .collect();
    emit(&a, &t, events, T0).await;
    let lease = std::time::Duration::from_secs(30);
    let claim = |store: PostgresStore| async move {
        let mut claimed = Vec::new();
        for _ in 0..10 {
            claimed.extend(store.claim_outbox(7, T0 + 1, lease).await.unwrap());
        }
        claimed
    };
    let (from_a, from_b) = tokio::join!(claim(a.clone()), claim(b.clone()));
    let mut all: Vec<i64> = from_a.iter().chain(&from_b).map(|row| row.seq).collect();
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!(all.len(), before, "a row was claimed twice");
    // Each entity's rows went to one host only.
    for row in &from_a {
        assert!(
            !from_b.iter().any(|other| other.entity_id == row.entity_id),
            "entity {} was claimed by both hosts",
            row.entity_id
        );
    }
    assert!(!all.is_empty());
}

/// Two hosts (two stores on one schema) with a tenant and its connection `c1`.
async fn two_hosts() -> (
    PostgresBackend,
    PostgresStore,
    PostgresStore,
    crate::store::tests::Tenant,
) {
    let backend = PostgresBackend::new();
    let (a, b) = (backend.connect().await, backend.connect().await);
    let t = crate::store::tests::tenant(&a, "t1", "c1").await;
    (backend, a, b, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_reaching_two_hosts_at_once_is_recorded_once() {
    use crate::store::tests::{LEASE_ENDED, T0, WINDOW, delivery};
    let (_backend, a, b, _) = two_hosts().await;
    for i in 0..20 {
        // By the provider's id, then by the body within the window.
        let provider_id = (i % 2 == 0).then(|| format!("p{i}"));
        let new = delivery("c1", &format!("body {i}"), provider_id.as_deref(), T0 + i);
        let (one, two) = tokio::join!(
            a.record_delivery(new.clone(), WINDOW, LEASE_ENDED),
            b.record_delivery(new, WINDOW, LEASE_ENDED)
        );
        let (one, two) = (one.unwrap(), two.unwrap());
        assert_eq!(one.id, two.id, "round {i}");
        assert!(one.duplicate != two.duplicate, "round {i}: {one:?} {two:?}");
    }
    assert_eq!(a.unfinished_deliveries().await.unwrap(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_commits_of_two_hosts_never_lose_a_write() {
    use crate::store::tests::{LEASE_ENDED, T0, WINDOW, completion, delivery};
    use crate::store::{Error, StateBounds, StateCommit};
    let (_backend, a, b, t) = two_hosts().await;
    for round in 0..15 {
        let snapshot = a.load_state("c1").await.unwrap();
        let commit = |host: &str| StateCommit {
            base_version: snapshot.version,
            reads: vec![("n".to_owned(), snapshot.versions.get("n").copied())],
            prefixes: Vec::new(),
            writes: vec![("n".to_owned(), Some(format!("{round} {host}").into_bytes()))],
            bounds: StateBounds {
                keys: 10,
                bytes: 1_000,
            },
        };
        let mut completions = Vec::new();
        for host in ["a", "b"] {
            let recorded = a
                .record_delivery(
                    delivery("c1", &format!("{round} {host}"), None, T0),
                    WINDOW,
                    LEASE_ENDED,
                )
                .await
                .unwrap();
            completions.push(completion(
                &recorded.id,
                &t.adapter.id,
                Vec::new(),
                Some(commit(host)),
                T0,
            ));
        }
        let (second, first) = (completions.pop().unwrap(), completions.pop().unwrap());
        let (one, two) = tokio::join!(a.complete_delivery(first), b.complete_delivery(second));
        let stale = [&one, &two]
            .iter()
            .filter(|r| matches!(r, Err(Error::StaleState(_))))
            .count();
        assert_eq!(stale, 1, "round {round}: {one:?} {two:?}");
        assert!(one.is_ok() || two.is_ok());
        let after = b.load_state("c1").await.unwrap();
        assert_eq!(after.version, snapshot.version + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_and_polls_are_claimed_by_one_host() {
    use crate::store::tests::{LEASE_ENDED, SECOND, T0, WINDOW, delivery};
    let (_backend, a, b, t) = two_hosts().await;
    for i in 0..40 {
        a.record_delivery(
            delivery("c1", &format!("stuck {i}"), None, T0),
            WINDOW,
            LEASE_ENDED,
        )
        .await
        .unwrap();
    }
    let recover = |store: PostgresStore| async move {
        let mut ids = Vec::new();
        loop {
            let claimed = store.claim_recovery(T0, T0 + 30 * SECOND, 3).await.unwrap();
            if claimed.is_empty() {
                return ids;
            }
            ids.extend(claimed.into_iter().map(|d| d.info.id));
        }
    };
    let (from_a, from_b) = tokio::join!(recover(a.clone()), recover(b.clone()));
    let mut all: Vec<String> = from_a.into_iter().chain(from_b).collect();
    all.sort_unstable();
    let claimed = all.len();
    all.dedup();
    assert_eq!(
        (claimed, all.len()),
        (40, 40),
        "a delivery was recovered twice"
    );

    for i in 0..12 {
        let spec = crate::store::ConnectionSpec {
            id: format!("poll-{i}"),
            polling_json: Some(r#"{"interval_secs":60}"#.to_owned()),
            ..t.connection.spec()
        };
        a.upsert_connection(spec, "admin", T0).await.unwrap();
    }
    let poll = |store: PostgresStore, owner: &'static str| async move {
        let mut connections = Vec::new();
        for _ in 0..10 {
            let claims = store
                .claim_polls(T0, owner, T0 + 30 * SECOND, 2)
                .await
                .unwrap();
            connections.extend(claims.into_iter().map(|c| c.run.connection_id));
        }
        connections
    };
    let (from_a, from_b) = tokio::join!(poll(a.clone(), "node-a"), poll(b.clone(), "node-b"));
    let mut all: Vec<String> = from_a.into_iter().chain(from_b).collect();
    all.sort_unstable();
    let claimed = all.len();
    all.dedup();
    assert_eq!((claimed, all.len()), (12, 12), "a poll was claimed twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_and_the_outbox_is_append_only() {
    use crate::store::tests::{T0, emit, event, tenant};
    let backend = PostgresBackend::new();
    let store = backend.connect().await;
    let t = tenant(&store, "t1", "c1").await;
    emit(&store, &t, vec![event("e", "deal.won", "D", None)], T0).await;
    let db = store.db().await.unwrap();
    let delete = db.execute("DELETE FROM outbox", &[]).await;
    assert!(
        delete
            .unwrap_err()
            .as_db_error()
            .unwrap()
            .message()
            .contains("append-only"),
        "a delete went through"
    );
    let rewrite = db
        .execute("UPDATE outbox SET payload_json = '{}'", &[])
        .await;
    assert!(
        rewrite
            .unwrap_err()
            .as_db_error()
            .unwrap()
            .message()
            .contains("immutable"),
        "an event was rewritten"
    );
    // Nor is a sealed payload replaced by another sealed value; it may only be erased.
    let reseal = db
        .execute("UPDATE outbox SET payload_json = '~sealed1:AA'", &[])
        .await;
    let message = reseal
        .unwrap_err()
        .as_db_error()
        .unwrap()
        .message()
        .to_owned();
    assert!(message.contains("only ever erased"), "{message}");
    db.execute("UPDATE outbox SET payload_json = '~erased1'", &[])
        .await
        .unwrap();
    db.execute("UPDATE outbox SET status = 'published'", &[])
        .await
        .unwrap();

    db.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)",
        &[],
    )
    .await
    .unwrap();
    drop((db, store));
    match PostgresStore::connect(&backend.url, &backend.schema).await {
        Err(crate::store::Error::Backend(message)) => {
            assert!(message.contains("upgrade the host"), "{message}")
        }
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_recorded_completed_in_one_transaction_or_not_at_all() {
    use crate::store::tests::{SECOND, T0, WINDOW, completion, delivery, event, tenant};
    use crate::store::{DeliveryStatus, Prepared, StateCommit, Taken};
    let backend = PostgresBackend::new();
    let store = backend.connect().await;
    let t = tenant(&store, "t1", "c1").await;

    // An event the outbox refuses (no entity id): nothing of the delivery is kept.
    let mut broken = event("e1", "deal.won", "d1", None);
    broken.entity_id = String::new();
    let failing = completion(
        &crate::store::new_id(),
        &t.adapter.id,
        vec![broken],
        None,
        T0,
    );
    let failed_id = failing.delivery_id.clone();
    assert!(
        store
            .record_completed(delivery("c1", "one", Some("p1"), T0), WINDOW, failing)
            .await
            .is_err()
    );
    assert!(store.get_delivery(&failed_id).await.unwrap().is_none());
    assert!(store.list_invocations(&failed_id).await.unwrap().is_empty());
    let connection = store.get_connection("c1").await.unwrap().unwrap();
    assert_eq!(connection.last_delivery_at, None);

    // The CRM's retry is taken as new, with its events and state.
    let state: crate::store::StateMap = [("cursor".to_owned(), b"42".to_vec())].into();
    let done = completion(
        &crate::store::new_id(),
        &t.adapter.id,
        vec![event("e1", "deal.won", "d1", None)],
        Some(StateCommit::blind(0, state.clone())),
        T0 + SECOND,
    );
    let id = done.delivery_id.clone();
    let Taken::Completed(completed) = store
        .record_completed(delivery("c1", "one", Some("p1"), T0), WINDOW, done)
        .await
        .unwrap()
    else {
        panic!("a new delivery was taken as a duplicate");
    };
    assert_eq!(completed.appended.len(), 1);
    let stored = store.get_delivery(&id).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.info.status,
            stored.info.attempts,
            stored.info.processed_at
        ),
        (DeliveryStatus::Processed, 1, Some(T0 + SECOND))
    );
    assert_eq!(
        store.get_event("e1").await.unwrap().unwrap().delivery_id,
        id
    );

    // Its retry is the original, and writes nothing.
    let again = completion(
        &crate::store::new_id(),
        &t.adapter.id,
        vec![event("e2", "deal.won", "d2", None)],
        None,
        T0,
    );
    let Taken::Duplicate(original) = store
        .record_completed(delivery("c1", "one again", Some("p1"), T0), WINDOW, again)
        .await
        .unwrap()
    else {
        panic!("a retry was taken twice");
    };
    assert_eq!(original.id, id);
    assert!(store.get_event("e2").await.unwrap().is_none());
    let Prepared::New(seen) = store
        .prepare_delivery(&delivery("c1", "two", Some("p2"), T0), WINDOW)
        .await
        .unwrap()
    else {
        panic!("a new delivery was taken as a duplicate");
    };
    assert_eq!((seen.map, seen.version), (state, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_cannot_be_changed() {
    use crate::store::tests::audit_entry;
    let backend = PostgresBackend::new();
    let store = backend.connect().await;
    store
        .append_audit(audit_entry("t1", None, "alice", "adapter.create", "a1", 0))
        .await
        .unwrap();
    let db = store.db().await.unwrap();
    for sql in [
        "DELETE FROM audit",
        "UPDATE audit SET actor = 'mallory'",
        "UPDATE audit SET support = true",
        "TRUNCATE audit",
    ] {
        let refused = db.batch_execute(sql).await;
        assert!(
            refused
                .unwrap_err()
                .as_db_error()
                .is_some_and(|e| e.message().contains("append-only")),
            "{sql} went through"
        );
    }
    let row = db.query_one("SELECT actor FROM audit", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "alice");
}
