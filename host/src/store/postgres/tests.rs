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
struct PostgresBackend {
    url: String,
    schema: String,
}

impl PostgresBackend {
    fn new() -> Self {
        Self {
            url: url(),
            schema: format!("test_{}", uuid::Uuid::now_v7().simple()),
        }
    }

    async fn connect(&self) -> PostgresStore {
        PostgresStore::connect(&self.url, &self.schema)
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
