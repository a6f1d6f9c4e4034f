//! Which store the in-process tests run on: SQLite in the data directory (the default), or
//! PostgreSQL when `ADAPTER_HOST_TEST_BACKEND=postgres` (`scripts/test.sh` runs the pipeline and
//! API tests a second time so). Each data directory gets a schema of its own, named from its
//! path, so a test that reopens a directory finds its data again; the schema is dropped with
//! the [`Schema`] guard, and `scripts/test.sh` drops what a test that panicked left behind
//! (schemas named `t_<ADAPTER_HOST_TEST_RUN>_…`).

#![allow(dead_code)] // Each test crate uses its own part.

use std::path::Path;

use adapter_host::serve::{PostgresOptions, ServeOptions};
use sha2::{Digest, Sha256};

/// Whether the tests run on PostgreSQL.
pub fn postgres() -> bool {
    std::env::var("ADAPTER_HOST_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

fn url() -> String {
    std::env::var("ADAPTER_HOST_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn schema_of(data_dir: &Path) -> String {
    let run = std::env::var("ADAPTER_HOST_TEST_RUN").unwrap_or_else(|_| "local".into());
    let run: String = run
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    format!("t_{run}_{}", hex::encode(&digest[..8]))
}

/// Drops its schema when dropped.
#[derive(Debug)]
pub struct Schema(Option<String>);

impl Drop for Schema {
    fn drop(&mut self) {
        if let Some(schema) = &self.0 {
            let _ = std::process::Command::new("psql")
                .args([url().as_str(), "-q", "-c"])
                .arg(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .output();
        }
    }
}

/// `options` on the backend the run asks for.
pub fn on_backend(mut options: ServeOptions) -> ServeOptions {
    if postgres() {
        assert!(
            std::env::var_os("ADAPTER_HOST_MASTER_KEY").is_some(),
            "ADAPTER_HOST_TEST_BACKEND=postgres needs ADAPTER_HOST_MASTER_KEY (scripts/test.sh sets one)"
        );
        options.postgres = Some(PostgresOptions {
            url: url(),
            schema: schema_of(&options.data_dir),
        });
    }
    options
}

/// The guard that drops the schema of `data_dir` (nothing on SQLite).
pub fn guard(data_dir: &Path) -> Schema {
    Schema(postgres().then(|| schema_of(data_dir)))
}
