//! The secret store that several host nodes share: one row per secret in PostgreSQL, under
//! envelope encryption with a master key the database never holds.
//!
//! Each secret has a data key of its own (32 random bytes). The row holds the secret's entry
//! (current value, previous value and its grace period, version) sealed with XChaCha20-Poly1305
//! under that data key, and the data key sealed under the master key, with the master key's id
//! (the same HMAC-derived id as [`super::LocalSecretStore`]'s file header). Both seals bind the
//! secret's name as associated data, so a row copied under another name does not open. The
//! database sees names, versions and times (what [`SecretStore::meta`] shows anyway), never a
//! value or a key.
//!
//! **Rotating the master key** needs no downtime, in three steps: (1) give every node the new
//! key in [`PREVIOUS_MASTER_KEYS_ENV`] (they still seal under the old one, and can now open
//! what the new one seals); (2) swap them: the new key as [`MASTER_KEY_ENV`], the old one in
//! [`PREVIOUS_MASTER_KEYS_ENV`]: the first node to open seals every data key again under the
//! new key ([`PostgresSecretStore::rewrap`], one conditional update per row), while the nodes
//! not yet restarted still open every row; (3) once [`PostgresSecretStore::rows_under_other_keys`]
//! is 0, drop the old key. Values are never re-encrypted: only the data keys move.
//!
//! Reads go to the database every time (no cache): a token refreshed or a secret rotated on one
//! node is what the next read on any node sees. The store's trait is synchronous, so the
//! database is driven from a thread of its own with its own connection; callers wait for its
//! answer (in `block_in_place` on a multi-threaded runtime, so other tasks go on). Writes take a
//! transaction-scoped advisory lock on the name, so concurrent rotations on several nodes apply
//! one after the other and versions never collide.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{AeadInOut, Generate, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::{
    ActiveSecret, Entry, Error, MASTER_KEY_ENV, MasterKey, Result, SecretMap, SecretMeta,
    SecretStore, SecretValue, apply_end_grace, apply_put, validate_name, validate_prefix,
    validate_put,
};

/// Master keys that rows may still be sealed under (comma-separated base64), while a rotation
/// of [`MASTER_KEY_ENV`] is under way.
pub const PREVIOUS_MASTER_KEYS_ENV: &str = "ADAPTER_HOST_PREVIOUS_MASTER_KEYS";

const NONCE_LEN: usize = 24;
const DEK_LEN: usize = 32;
const DEK_AAD: &[u8] = b"adapter-host secret data key v1\0";
const ENTRY_AAD: &[u8] = b"adapter-host secret entry v1\0";
/// The longest a caller waits for the database.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The master keys a node holds: the current one seals, every one opens.
pub struct Keyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &hex::encode(self.current.key_id()))
            .field(
                "previous",
                &self
                    .previous
                    .iter()
                    .map(|k| hex::encode(k.key_id()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    /// A ring that seals with `current` and also opens what `previous` sealed.
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Self {
        Self { current, previous }
    }

    /// [`MASTER_KEY_ENV`] (required: a shared store has no data directory to keep a generated
    /// key in, and must not) and [`PREVIOUS_MASTER_KEYS_ENV`].
    pub fn from_env() -> Result<Self> {
        let current = std::env::var(MASTER_KEY_ENV).map_err(|_| Error::InvalidMasterKey {
            origin: MASTER_KEY_ENV,
            reason: "it must be set (base64 of 32 bytes) to use the PostgreSQL secret store",
        })?;
        let current = Zeroizing::new(current);
        let previous = Zeroizing::new(std::env::var(PREVIOUS_MASTER_KEYS_ENV).unwrap_or_default());
        let previous = previous
            .split(',')
            .filter(|k| !k.trim().is_empty())
            .map(|k| {
                MasterKey::from_base64(k).map_err(|_| Error::InvalidMasterKey {
                    origin: PREVIOUS_MASTER_KEYS_ENV,
                    reason: "each key must be the base64 of 32 bytes",
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let current = MasterKey::from_base64(&current).map_err(|_| Error::InvalidMasterKey {
            origin: MASTER_KEY_ENV,
            reason: "it must be the base64 of 32 bytes",
        })?;
        Ok(Self::new(current, previous))
    }

    fn find(&self, id: &[u8]) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.key_id()[..] == *id)
    }
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSecretSettings {
    /// `postgres://user@host:5432/db` (a libpq-style string also works).
    pub url: String,
    /// The schema its table is in (created if missing): `[a-z0-9_]`, at most 63 bytes.
    pub schema: String,
}

/// A [`SecretStore`] in PostgreSQL (see the module docs). Cheap to clone (shared).
#[derive(Clone)]
pub struct PostgresSecretStore {
    jobs: Arc<Mutex<mpsc::Sender<Job>>>,
    schema: Arc<str>,
}

impl std::fmt::Debug for PostgresSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSecretStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The database thread's side.
struct Worker {
    runtime: tokio::runtime::Runtime,
    url: String,
    table: String,
    keys: Keyring,
    client: Option<tokio_postgres::Client>,
}

fn db_error(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |e| Error::Database {
        action,
        message: e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
    }
}

fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn cipher(key: &[u8]) -> Result<XChaCha20Poly1305> {
    XChaCha20Poly1305::new_from_slice(key).map_err(|_| Error::Internal("a key has the wrong size"))
}

fn aad(label: &[u8], name: &str) -> Vec<u8> {
    [label, name.as_bytes()].concat()
}

/// `nonce || ciphertext and tag` of `plain` under `cipher`.
fn seal(cipher: &XChaCha20Poly1305, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let nonce = XNonce::try_generate().map_err(|_| Error::Random)?;
    let mut buffer = Zeroizing::new(plain.to_vec());
    cipher
        .encrypt_in_place(&nonce, aad, &mut *buffer)
        .map_err(|_| Error::Internal("encryption failed"))?;
    Ok([&nonce[..], &buffer[..]].concat())
}

fn open(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(Error::Corrupted("a sealed column is truncated"));
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce =
        XNonce::try_from(nonce).map_err(|_| Error::Internal("a nonce has the wrong size"))?;
    let mut buffer = Zeroizing::new(body.to_vec());
    cipher
        .decrypt_in_place(&nonce, aad, &mut *buffer)
        .map_err(|_| Error::Corrupted("authentication failed"))?;
    Ok(buffer)
}

/// A row as stored.
struct Row {
    kek_id: Vec<u8>,
    wrapped_dek: Vec<u8>,
    sealed: Vec<u8>,
}

/// The connection, opened (again) if there is none or it broke.
fn connected<'a>(
    client: &'a mut Option<tokio_postgres::Client>,
    runtime: &tokio::runtime::Runtime,
    url: &str,
) -> Result<&'a tokio_postgres::Client> {
    if client
        .as_ref()
        .is_some_and(tokio_postgres::Client::is_closed)
    {
        *client = None;
    }
    if client.is_none() {
        let (opened, connection) = runtime
            .block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))
            .map_err(db_error("connecting to PostgreSQL"))?;
        runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the secret store's database connection ended");
            }
        });
        *client = Some(opened);
    }
    client
        .as_ref()
        .ok_or(Error::Internal("no database connection"))
}

impl Worker {
    /// Runs `work` with the connection on the worker's runtime.
    fn with<T>(
        &mut self,
        work: impl AsyncFnOnce(&tokio_postgres::Client, &str, &Keyring) -> Result<T>,
    ) -> Result<T> {
        let client = connected(&mut self.client, &self.runtime, &self.url)?;
        self.runtime.block_on(work(client, &self.table, &self.keys))
    }
}

fn row(r: &tokio_postgres::Row) -> Row {
    Row {
        kek_id: r.get("kek_id"),
        wrapped_dek: r.get("wrapped_dek"),
        sealed: r.get("sealed"),
    }
}

fn meta_row(r: &tokio_postgres::Row, now: SystemTime) -> SecretMeta {
    let until = r
        .get::<_, Option<i64>>("previous_valid_until")
        .map(from_millis)
        .filter(|until| now < *until);
    SecretMeta {
        name: r.get("name"),
        version: u64::try_from(r.get::<_, i64>("version")).unwrap_or(0),
        rotated_at: from_millis(r.get("rotated_at")),
        previous_valid_until: until,
    }
}

fn data_key(keys: &Keyring, name: &str, row: &Row) -> Result<XChaCha20Poly1305> {
    let kek = keys.find(&row.kek_id).ok_or_else(|| Error::Database {
        action: "opening a secret",
        message: format!(
            "the secret {name} is sealed under master key {}, which this node does not hold \
             (keep it in {PREVIOUS_MASTER_KEYS_ENV} until the rows are rewrapped)",
            hex::encode(&row.kek_id)
        ),
    })?;
    let dek = open(&kek.cipher(), &aad(DEK_AAD, name), &row.wrapped_dek)?;
    cipher(&dek)
}

fn entry(keys: &Keyring, name: &str, row: &Row) -> Result<Entry> {
    let plain = open(
        &data_key(keys, name, row)?,
        &aad(ENTRY_AAD, name),
        &row.sealed,
    )?;
    serde_json::from_slice(&plain).map_err(|_| Error::Corrupted("a secret entry is unreadable"))
}

fn seal_entry(dek: &XChaCha20Poly1305, name: &str, entry: &Entry) -> Result<Vec<u8>> {
    let plain = Zeroizing::new(
        serde_json::to_vec(entry).map_err(|_| Error::Internal("cannot serialize a secret"))?,
    );
    seal(dek, &aad(ENTRY_AAD, name), &plain)
}

/// A new data key and its seal under the current master key.
fn new_data_key(keys: &Keyring, name: &str) -> Result<(XChaCha20Poly1305, Vec<u8>)> {
    let dek = Zeroizing::new(<[u8; DEK_LEN]>::try_generate().map_err(|_| Error::Random)?);
    let wrapped = seal(&keys.current.cipher(), &aad(DEK_AAD, name), &*dek)?;
    Ok((cipher(&*dek)?, wrapped))
}

fn check_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(Error::Database {
            action: "opening the secret store",
            message: format!(
                "the schema name {schema:?} must be 1 to 63 of [a-z0-9_], not starting with a digit"
            ),
        })
    }
}

impl PostgresSecretStore {
    /// Connects, creates the schema and table if they are missing, and rewraps the data keys
    /// that are not under the ring's current key.
    pub fn open(settings: &PostgresSecretSettings, keys: Keyring) -> Result<Self> {
        check_schema(&settings.schema)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("starting the secret store's runtime"))?;
        let mut worker = Worker {
            runtime,
            url: settings.url.clone(),
            table: format!("\"{}\".secrets", settings.schema),
            keys,
            client: None,
        };
        let (jobs, received) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("secrets-postgres".into())
            .spawn(move || {
                while let Ok(job) = received.recv() {
                    job(&mut worker);
                }
            })
            .map_err(Error::io("starting the secret store's thread"))?;
        let store = Self {
            jobs: Arc::new(Mutex::new(jobs)),
            schema: settings.schema.clone().into(),
        };
        let schema = settings.schema.clone();
        store.call(move |worker| {
            worker.with(async |client, table, _| {
                let sql = format!(
                    "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; \
                 CREATE TABLE IF NOT EXISTS {table} ( \
                   name TEXT PRIMARY KEY, \
                   kek_id BYTEA NOT NULL, \
                   wrapped_dek BYTEA NOT NULL, \
                   sealed BYTEA NOT NULL, \
                   version BIGINT NOT NULL, \
                   rotated_at BIGINT NOT NULL, \
                   previous_valid_until BIGINT, \
                   updated_at BIGINT NOT NULL)"
                );
                match client.batch_execute(&sql).await {
                    Ok(()) => Ok(()),
                    // Two nodes creating it at once: the loser's race is harmless.
                    Err(e)
                        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(db_error("creating the secrets table")(e)),
                }
            })
        })?;
        let rewrapped = store.rewrap()?;
        if rewrapped > 0 {
            tracing::info!(
                rewrapped,
                "secret data keys sealed again under the current master key"
            );
        }
        Ok(store)
    }

    /// Runs `work` on the database thread and waits for it.
    fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Worker) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Box::new(move |worker| {
                let _ = reply.send(work(worker));
            }))
            .map_err(|_| Error::Internal("the secret store's thread has stopped"))?;
        let wait = || {
            answer
                .recv_timeout(TIMEOUT)
                .map_err(|_| Error::Internal("the secret store's database did not answer"))?
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// Seals every data key that is not under the current master key again under it; returns
    /// how many were. A row under a key the ring does not hold is left as it is (and counted by
    /// [`PostgresSecretStore::rows_under_other_keys`]).
    pub fn rewrap(&self) -> Result<u64> {
        self.call(|worker| {
            worker.with(async |client, table, keys| {
                let current = keys.current.key_id().to_vec();
                let rows = client
                    .query(
                        &format!("SELECT name, kek_id, wrapped_dek FROM {table} WHERE kek_id <> $1"),
                        &[&current],
                    )
                    .await
                    .map_err(db_error("listing data keys to rewrap"))?;
                let mut rewrapped = 0;
                for r in &rows {
                    let name: String = r.get("name");
                    let old: Vec<u8> = r.get("kek_id");
                    let Some(kek) = keys.find(&old) else {
                        tracing::warn!(secret = %name, key = %hex::encode(&old), "a secret is sealed under a master key this node does not hold");
                        continue;
                    };
                    let wrapped: Vec<u8> = r.get("wrapped_dek");
                    let dek = open(&kek.cipher(), &aad(DEK_AAD, &name), &wrapped)?;
                    let again = seal(&keys.current.cipher(), &aad(DEK_AAD, &name), &dek)?;
                    // Only if no other node changed it meanwhile.
                    rewrapped += client
                        .execute(
                            &format!(
                                "UPDATE {table} SET kek_id = $1, wrapped_dek = $2 \
                                 WHERE name = $3 AND kek_id = $4 AND wrapped_dek = $5"
                            ),
                            &[&current, &again, &name, &old, &wrapped],
                        )
                        .await
                        .map_err(db_error("rewrapping a data key"))?;
                }
                Ok(rewrapped)
            })
        })
    }

    /// How many rows are sealed under another master key than the ring's current one.
    pub fn rows_under_other_keys(&self) -> Result<u64> {
        self.call(|worker| {
            worker.with(async |client, table, keys| {
                let row = client
                    .query_one(
                        &format!("SELECT count(*) FROM {table} WHERE kek_id <> $1"),
                        &[&keys.current.key_id().to_vec()],
                    )
                    .await
                    .map_err(db_error("counting rows"))?;
                Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
            })
        })
    }

    /// Reads the row of `name` for update in a transaction, lets `change` turn its entry into
    /// the next one (`None`: delete), and writes it.
    fn update<T: Send + 'static>(
        &self,
        name: &str,
        now: SystemTime,
        change: impl FnOnce(Option<Entry>) -> (T, Option<Option<Entry>>) + Send + 'static,
    ) -> Result<T> {
        let name = name.to_owned();
        self.call(move |worker| {
            worker.with(async move |client, table, keys| {
                let transaction_sql = "BEGIN";
                client
                    .batch_execute(transaction_sql)
                    .await
                    .map_err(db_error("starting a transaction"))?;
                let outcome = async {
                    client
                        .execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", &[&name])
                        .await
                        .map_err(db_error("locking the secret"))?;
                    let found = client
                        .query_opt(
                            &format!("SELECT kek_id, wrapped_dek, sealed FROM {table} WHERE name = $1"),
                            &[&name],
                        )
                        .await
                        .map_err(db_error("reading the secret"))?
                        .map(|r| row(&r));
                    let current = found.as_ref().map(|r| entry(keys, &name, r)).transpose()?;
                    let (out, next) = change(current);
                    match next {
                        None => {}
                        Some(None) => {
                            client
                                .execute(&format!("DELETE FROM {table} WHERE name = $1"), &[&name])
                                .await
                                .map_err(db_error("deleting the secret"))?;
                        }
                        Some(Some(next)) => {
                            let (dek, wrapped, kek_id) = match &found {
                                Some(r) => (data_key(keys, &name, r)?, r.wrapped_dek.clone(), r.kek_id.clone()),
                                None => {
                                    let (dek, wrapped) = new_data_key(keys, &name)?;
                                    (dek, wrapped, keys.current.key_id().to_vec())
                                }
                            };
                            let sealed = seal_entry(&dek, &name, &next)?;
                            client
                                .execute(
                                    &format!(
                                        "INSERT INTO {table} (name, kek_id, wrapped_dek, sealed, version, \
                                           rotated_at, previous_valid_until, updated_at) \
                                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                                         ON CONFLICT (name) DO UPDATE SET kek_id = $2, wrapped_dek = $3, \
                                           sealed = $4, version = $5, rotated_at = $6, \
                                           previous_valid_until = $7, updated_at = $8"
                                    ),
                                    &[
                                        &name,
                                        &kek_id,
                                        &wrapped,
                                        &sealed,
                                        &i64::try_from(next.version).unwrap_or(i64::MAX),
                                        &millis(next.rotated_at),
                                        &next.live_previous_until(now).map(millis),
                                        &millis(now),
                                    ],
                                )
                                .await
                                .map_err(db_error("writing the secret"))?;
                        }
                    }
                    Ok(out)
                }
                .await;
                let end = if outcome.is_ok() { "COMMIT" } else { "ROLLBACK" };
                client
                    .batch_execute(end)
                    .await
                    .map_err(db_error("ending a transaction"))?;
                outcome
            })
        })
    }
}

impl SecretStore for PostgresSecretStore {
    fn get(&self, name: &str, now: SystemTime) -> Result<Option<ActiveSecret>> {
        validate_name(name)?;
        let name = name.to_owned();
        self.call(move |worker| {
            worker.with(async move |client, table, keys| {
                let found = client
                    .query_opt(
                        &format!("SELECT kek_id, wrapped_dek, sealed FROM {table} WHERE name = $1"),
                        &[&name],
                    )
                    .await
                    .map_err(db_error("reading a secret"))?;
                found
                    .map(|r| entry(keys, &name, &row(&r)).map(|e| e.active(now)))
                    .transpose()
            })
        })
    }

    fn put(&self, name: &str, value: SecretValue, grace: Duration, now: SystemTime) -> Result<u64> {
        validate_put(name, &value, grace, now)?;
        let key = name.to_owned();
        self.update(name, now, move |current| {
            let mut map = SecretMap::new();
            if let Some(current) = current {
                map.insert(key.clone(), current);
            }
            let version = apply_put(&mut map, &key, value, grace, now);
            (version, Some(map.remove(&key)))
        })
    }

    fn create(&self, name: &str, value: SecretValue, now: SystemTime) -> Result<bool> {
        validate_put(name, &value, Duration::ZERO, now)?;
        let key = name.to_owned();
        self.update(name, now, move |current| {
            if current.is_some() {
                return (false, None);
            }
            let mut map = SecretMap::new();
            apply_put(&mut map, &key, value, Duration::ZERO, now);
            (true, Some(map.remove(&key)))
        })
    }

    fn end_grace(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        let key = name.to_owned();
        self.update(name, SystemTime::now(), move |current| {
            let Some(current) = current else {
                return (false, None);
            };
            let mut map = SecretMap::from([(key.clone(), current)]);
            if apply_end_grace(&mut map, &key) {
                (true, Some(map.remove(&key)))
            } else {
                (false, None)
            }
        })
    }

    fn delete(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        self.update(name, SystemTime::now(), |current| match current {
            Some(_) => (true, Some(None)),
            None => (false, None),
        })
    }

    fn meta(&self, name: &str, now: SystemTime) -> Result<Option<SecretMeta>> {
        validate_name(name)?;
        let name = name.to_owned();
        self.call(move |worker| {
            worker.with(async move |client, table, _| {
                let found = client
                    .query_opt(
                        &format!(
                            "SELECT name, version, rotated_at, previous_valid_until FROM {table} \
                             WHERE name = $1"
                        ),
                        &[&name],
                    )
                    .await
                    .map_err(db_error("reading a secret's metadata"))?;
                Ok(found.map(|r| meta_row(&r, now)))
            })
        })
    }

    fn list(&self, prefix: &str, now: SystemTime) -> Result<Vec<SecretMeta>> {
        validate_prefix(prefix)?;
        let prefix = prefix.to_owned();
        self.call(move |worker| {
            worker.with(async move |client, table, _| {
                // Byte-wise order and a prefix match that no `%` or `_` in a name can widen.
                let rows = client
                    .query(
                        &format!(
                            "SELECT name, version, rotated_at, previous_valid_until FROM {table} \
                             WHERE left(name, length($1)) = $1 ORDER BY name COLLATE \"C\""
                        ),
                        &[&prefix],
                    )
                    .await
                    .map_err(db_error("listing secrets"))?;
                Ok(rows.iter().map(|r| meta_row(r, now)).collect())
            })
        })
    }
}
