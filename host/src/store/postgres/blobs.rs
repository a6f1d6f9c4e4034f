//! Adapter components in PostgreSQL (`blobs`), so every host of a deployment runs the same
//! ones without a shared filesystem.

use async_trait::async_trait;

use super::{PostgresStore, execute, get, query_opt};
use crate::store::blobs::check_hash;
use crate::store::{BlobStore, Error, Result, now_millis, sha256_hex};

/// Content-addressed components in the store's database, keyed by their hex sha256. Shares the
/// store's pool: get one with [`PostgresStore::blobs`].
#[derive(Debug, Clone)]
pub struct PgBlobStore {
    store: PostgresStore,
}

impl PostgresStore {
    /// The blob store kept in this store's database and schema.
    pub fn blobs(&self) -> PgBlobStore {
        PgBlobStore {
            store: self.clone(),
        }
    }
}

#[async_trait]
impl BlobStore for PgBlobStore {
    async fn put(&self, bytes: Vec<u8>) -> Result<String> {
        let sha256 = sha256_hex(&bytes);
        let db = self.store.db().await?;
        // The same bytes stored twice, or by two hosts at once, are one row.
        execute(
            &db,
            "INSERT INTO blobs (sha256, bytes, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (sha256) DO NOTHING",
            &[&sha256, &bytes, &now_millis()],
        )
        .await?;
        Ok(sha256)
    }

    async fn get(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        check_hash(sha256)?;
        let db = self.store.db().await?;
        let bytes = query_opt(
            &db,
            "SELECT bytes FROM blobs WHERE sha256 = $1",
            &[&sha256],
            |row| get::<Vec<u8>>(row, "bytes"),
        )
        .await?;
        match bytes {
            Some(bytes) if sha256_hex(&bytes) != sha256 => Err(Error::Backend(format!(
                "the blob {sha256} is corrupted (its content has another hash)"
            ))),
            other => Ok(other),
        }
    }

    async fn contains(&self, sha256: &str) -> Result<bool> {
        check_hash(sha256)?;
        let db = self.store.db().await?;
        Ok(query_opt(
            &db,
            "SELECT 1 FROM blobs WHERE sha256 = $1",
            &[&sha256],
            |_| Ok(()),
        )
        .await?
        .is_some())
    }
}
