//! Credentials: webhook signing secrets, API keys and OAuth tokens (DESIGN.md section 3).
//!
//! Secrets live here and nowhere else: the database keeps a `secret_ref` (a name in this store),
//! logs never see a value, and adapters never get one. Through the API they are write-only.
//!
//! - [`SecretStore`] is the backend-neutral interface. [`LocalSecretStore`] is the embedded
//!   default: one file, `secrets.enc`, in the data directory, sealed with XChaCha20-Poly1305
//!   under a [`MasterKey`] taken from the environment or a key file. [`PostgresSecretStore`]
//!   is the one several nodes share: a row per secret, under envelope encryption with a master
//!   key the database never holds (a [`Keyring`], rotated without downtime).
//!   [`InMemorySecretStore`] is for tests of other modules.
//! - A secret is rotated by putting a new value with a grace period: until it ends, the old
//!   value is handed out as [`ActiveSecret::previous`] so that webhooks signed with either one
//!   verify (the signatures module takes the current one first). Only one previous value is
//!   kept: rotating again during a grace period drops the older one.
//! - [`SecretValue`] never prints its bytes (`Debug` is redacted, there is no `Display` and no
//!   `Serialize`) and zeroes them when dropped. No [`Error`] message contains secret bytes.
//! - Times are parameters (`now`), so grace periods are deterministic to test.
//!
//! Names are `[A-Za-z0-9._/-]`, at most [`MAX_NAME_LEN`] bytes, made of non-empty `/`-separated
//! segments other than `.` and `..`, e.g. `tenants/<tenant>/connections/<id>/signing`. The store
//! does not scope by tenant: callers build names under the tenant's prefix and list by it.

mod local;
mod memory;
pub mod postgres;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use local::{
    LocalSecretStore, MASTER_KEY_ENV, MASTER_KEY_FILE, MASTER_KEY_LEN, MasterKey, SECRETS_FILE,
};
pub use memory::InMemorySecretStore;
pub use postgres::{Keyring, PostgresSecretSettings, PostgresSecretStore};

/// Longest secret name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Largest secret value, in bytes (OAuth tokens can run to a few kilobytes).
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Longest grace period: a rotated-out secret stays valid for at most this long.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// A secret's bytes. `Debug` prints `SecretValue(redacted, N bytes)`; there is no `Display` and
/// no `Serialize`; the memory is zeroed when dropped.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps a secret's bytes (a `Vec<u8>` or `String` moves in without a copy).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(bytes.into()))
    }

    /// The bytes, for the code that signs or verifies with them. Do not log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(redacted, {} bytes)", self.0.len())
    }
}

/// Hands the bytes over to the signature verifier without copying them.
impl From<SecretValue> for crate::signatures::Secret {
    fn from(value: SecretValue) -> Self {
        let SecretValue(mut bytes) = value;
        crate::signatures::Secret::new(std::mem::take(&mut *bytes))
    }
}

/// What a reader gets: the current value, and the previous one while its grace period lasts.
#[derive(Debug, Clone)]
pub struct ActiveSecret {
    /// The value put last.
    pub current: SecretValue,
    /// The value it replaced, only while `now < previous_valid_until`.
    pub previous: Option<SecretValue>,
    /// When `previous` stops being valid (set exactly when `previous` is).
    pub previous_valid_until: Option<SystemTime>,
    /// 1 for the first value put under this name, then one more per rotation. Deleting the
    /// secret starts the count again.
    pub version: u64,
    /// When `current` was put.
    pub rotated_at: SystemTime,
}

impl ActiveSecret {
    /// The values that verify, current first: what `signatures::verify` takes (after
    /// `.map(signatures::Secret::from)`).
    pub fn into_values(self) -> Vec<SecretValue> {
        std::iter::once(self.current).chain(self.previous).collect()
    }
}

/// A secret's metadata: everything but the values, safe to show in the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    /// The secret's name.
    pub name: String,
    /// See [`ActiveSecret::version`].
    pub version: u64,
    /// When the current value was put.
    pub rotated_at: SystemTime,
    /// When the previous value stops verifying; `None` when there is no valid previous value.
    pub previous_valid_until: Option<SystemTime>,
}

/// Errors of the secret store. Messages never contain secret bytes (nor master keys).
///
/// For the HTTP layer: [`Error::is_invalid_input`] variants are the caller's (400); everything
/// else is the host's (500, logged, not echoed).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name breaks the naming rule (see the module docs). 400.
    #[error("invalid secret name: {0}")]
    InvalidName(&'static str),
    /// The value is empty or longer than [`MAX_VALUE_LEN`]. 400.
    #[error("invalid secret value: {0}")]
    InvalidValue(&'static str),
    /// The grace period is longer than [`MAX_GRACE`]. 400.
    #[error("invalid grace period: {0}")]
    InvalidGrace(&'static str),
    /// `now` cannot be recorded (it is before 1970). A caller's bug: 500.
    #[error("invalid time: {0}")]
    InvalidTime(&'static str),
    /// The master key is not the base64 of [`MASTER_KEY_LEN`] bytes. At startup.
    #[error("invalid master key from {origin}: {reason}")]
    InvalidMasterKey {
        /// Where it came from: the environment variable, the key file, or a given string.
        origin: &'static str,
        /// What is wrong with it (never the key itself).
        reason: &'static str,
    },
    /// `secrets.enc` exists but there is no master key to open it; generating a new one would
    /// not help. At startup.
    #[error(
        "{SECRETS_FILE} exists but there is no master key: set {MASTER_KEY_ENV} or restore \
         {MASTER_KEY_FILE} (a new key cannot open it)"
    )]
    MissingMasterKey,
    /// `secrets.enc` was sealed under another master key. At startup; the file is untouched.
    #[error("cannot decrypt {SECRETS_FILE}: wrong master key (it was sealed with another one)")]
    WrongMasterKey,
    /// `secrets.enc` fails authentication or is not a secrets file. At startup; the file is
    /// untouched.
    #[error("cannot decrypt {SECRETS_FILE}: the file is corrupted or was tampered with ({0})")]
    Corrupted(&'static str),
    /// `secrets.enc` has a format this host does not read (written by a newer host?).
    #[error("{SECRETS_FILE} has format {0}, which this host does not read")]
    UnsupportedFormat(String),
    /// Reading or writing the store's files failed; a write did not take effect.
    #[error("secret store I/O failed while {action}: {source}")]
    Io {
        /// What the store was doing.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The shared store's database failed or refused (a write did not take effect), or a row
    /// cannot be opened with the keys this node holds.
    #[error("secret store database error while {action}: {message}")]
    Database {
        /// What the store was doing.
        action: &'static str,
        /// The database's message (never a value: values travel only sealed).
        message: String,
    },
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random,
    /// A bug or a shutdown, described.
    #[error("secret store internal error: {0}")]
    Internal(&'static str),
}

impl Error {
    /// A stable snake_case code, for metrics and the problem `type`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidName(_) => "invalid_secret_name",
            Self::InvalidValue(_) => "invalid_secret_value",
            Self::InvalidGrace(_) => "invalid_grace",
            Self::InvalidTime(_) => "invalid_time",
            Self::InvalidMasterKey { .. } => "invalid_master_key",
            Self::MissingMasterKey => "missing_master_key",
            Self::WrongMasterKey => "wrong_master_key",
            Self::Corrupted(_) => "secrets_corrupted",
            Self::UnsupportedFormat(_) => "secrets_unsupported_format",
            Self::Io { .. } => "secrets_io",
            Self::Database { .. } => "secrets_database",
            Self::Random => "random_failed",
            Self::Internal(_) => "secrets_internal",
        }
    }

    /// True when the request was at fault (a bad name, value or grace period): a 400 whose
    /// message can be shown as is.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Self::InvalidName(_) | Self::InvalidValue(_) | Self::InvalidGrace(_)
        )
    }

    fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { action, source }
    }
}

/// This module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A secret store. Every write is durable when it returns `Ok`; a failed write changes nothing.
///
/// Synchronous: reads are answered from memory (the embedded backend keeps a decrypted copy,
/// and a remote backend would need a cache anyway, as `get` runs on every webhook). Writes
/// sync a file to disk: async code that must not stall a worker for that can run them in
/// `tokio::task::spawn_blocking`.
pub trait SecretStore: Send + Sync + fmt::Debug {
    /// The secret's values as of `now`; `None` when there is no such secret. Called on every
    /// webhook: the local backend answers from memory.
    fn get(&self, name: &str, now: SystemTime) -> Result<Option<ActiveSecret>>;

    /// Sets the secret, or rotates it: the value it replaces stays valid for `grace` (zero:
    /// not at all) and any older previous value is dropped. Returns the new version.
    fn put(&self, name: &str, value: SecretValue, grace: Duration, now: SystemTime) -> Result<u64>;

    /// Sets the secret only if there is none by that name (version 1); returns whether it was
    /// set. What two writers racing to make one secret agree on: the first one's value.
    fn create(&self, name: &str, value: SecretValue, now: SystemTime) -> Result<bool>;

    /// Ends a rotation's grace period now: the previous value stops verifying. Returns whether
    /// there was a previous value to drop.
    fn end_grace(&self, name: &str) -> Result<bool>;

    /// Deletes the secret; returns whether it existed.
    fn delete(&self, name: &str) -> Result<bool>;

    /// The secret's metadata as of `now` (never its values).
    fn meta(&self, name: &str, now: SystemTime) -> Result<Option<SecretMeta>>;

    /// Metadata of the secrets whose names start with `prefix` (`""`: all), by name. `prefix`
    /// is plain text, not a path: `tenants/t1` also matches `tenants/t10/..`, so end it with
    /// `/`.
    fn list(&self, prefix: &str, now: SystemTime) -> Result<Vec<SecretMeta>>;
}

/// `N` random bytes from the OS.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use chacha20poly1305::aead::Generate as _;
    <[u8; N]>::try_generate().map_err(|_| Error::Random)
}

/// Checks a secret name against the naming rule (see the module docs).
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidName("the name is empty"));
    }
    validate_prefix(name)?;
    if name
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(Error::InvalidName(
            "a '/'-separated segment is empty, '.' or '..'",
        ));
    }
    Ok(())
}

/// Checks a [`SecretStore::list`] prefix: the name rule's length and characters.
fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > MAX_NAME_LEN {
        return Err(Error::InvalidName("the name is longer than 256 bytes"));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/');
    if !prefix.bytes().all(allowed) {
        return Err(Error::InvalidName(
            "only ASCII letters, digits, '.', '_', '-' and '/' are allowed",
        ));
    }
    Ok(())
}

/// Checks a value before it is stored.
fn validate_value(value: &SecretValue) -> Result<()> {
    if value.is_empty() {
        return Err(Error::InvalidValue("the value is empty"));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::InvalidValue("the value is longer than 64 KiB"));
    }
    Ok(())
}

/// One stored secret, as both backends keep it (and the local one serializes it, inside the
/// sealed blob).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    #[serde(with = "value_base64")]
    current: SecretValue,
    #[serde(with = "option_value_base64", default)]
    previous: Option<SecretValue>,
    #[serde(default)]
    previous_valid_until: Option<SystemTime>,
    version: u64,
    rotated_at: SystemTime,
}

impl Entry {
    /// The previous value's deadline, if it is still valid at `now`.
    fn live_previous_until(&self, now: SystemTime) -> Option<SystemTime> {
        self.previous
            .as_ref()
            .and(self.previous_valid_until)
            .filter(|until| now < *until)
    }

    fn active(&self, now: SystemTime) -> ActiveSecret {
        let until = self.live_previous_until(now);
        ActiveSecret {
            current: self.current.clone(),
            previous: until.and(self.previous.clone()),
            previous_valid_until: until,
            version: self.version,
            rotated_at: self.rotated_at,
        }
    }

    fn meta(&self, name: &str, now: SystemTime) -> SecretMeta {
        SecretMeta {
            name: name.to_owned(),
            version: self.version,
            rotated_at: self.rotated_at,
            previous_valid_until: self.live_previous_until(now),
        }
    }
}

/// All secrets by name.
type SecretMap = BTreeMap<String, Entry>;

/// The checks of a put, before any backend work.
fn validate_put(name: &str, value: &SecretValue, grace: Duration, now: SystemTime) -> Result<()> {
    validate_name(name)?;
    validate_value(value)?;
    if grace > MAX_GRACE {
        return Err(Error::InvalidGrace("longer than 30 days"));
    }
    if now < UNIX_EPOCH {
        return Err(Error::InvalidTime("before 1970"));
    }
    Ok(())
}

/// Applies a (validated) put to a map; returns the new version. Also drops every previous value
/// whose grace period is over, so that expired values do not linger in storage.
fn apply_put(
    map: &mut SecretMap,
    name: &str,
    value: SecretValue,
    grace: Duration,
    now: SystemTime,
) -> u64 {
    for entry in map.values_mut() {
        if entry.live_previous_until(now).is_none() {
            entry.previous = None;
            entry.previous_valid_until = None;
        }
    }
    let until = now.checked_add(grace).filter(|_| !grace.is_zero());
    let entry = match map.remove(name) {
        Some(old) => Entry {
            previous: until.map(|_| old.current),
            previous_valid_until: until,
            current: value,
            version: old.version.saturating_add(1),
            rotated_at: now,
        },
        None => Entry {
            current: value,
            previous: None,
            previous_valid_until: None,
            version: 1,
            rotated_at: now,
        },
    };
    let version = entry.version;
    map.insert(name.to_owned(), entry);
    version
}

/// Drops a secret's previous value; returns whether there was one.
fn apply_end_grace(map: &mut SecretMap, name: &str) -> bool {
    match map.get_mut(name) {
        Some(entry) if entry.previous.is_some() => {
            entry.previous = None;
            entry.previous_valid_until = None;
            true
        }
        _ => false,
    }
}

/// Metadata of the entries under `prefix`, by name.
fn list_map(map: &SecretMap, prefix: &str, now: SystemTime) -> Vec<SecretMeta> {
    map.range::<str, _>((
        std::ops::Bound::Included(prefix),
        std::ops::Bound::Unbounded,
    ))
    .take_while(|(name, _)| name.starts_with(prefix))
    .map(|(name, entry)| entry.meta(name, now))
    .collect()
}

/// Serializes a value as base64 text through a zeroed temporary; deserializes straight into
/// zeroed memory. Only used inside the sealed blob.
mod value_base64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserializer, Serializer, de};
    use zeroize::Zeroizing;

    use super::SecretValue;

    pub(super) fn serialize<S: Serializer>(value: &SecretValue, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(STANDARD.encode(value.expose()));
        s.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretValue, D::Error> {
        d.deserialize_str(Base64Visitor)
    }

    pub(super) struct Base64Visitor;

    impl de::Visitor<'_> for Base64Visitor {
        type Value = SecretValue;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a base64 string")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<SecretValue, E> {
            let mut bytes = Zeroizing::new(Vec::with_capacity(text.len() / 4 * 3 + 3));
            STANDARD
                .decode_vec(text, &mut bytes)
                .map_err(|_| E::custom("a secret value is not valid base64"))?;
            Ok(SecretValue(bytes))
        }
    }
}

mod option_value_base64 {
    use serde::{Deserializer, Serializer, de};

    use super::SecretValue;
    use super::value_base64::Base64Visitor;

    pub(super) fn serialize<S: Serializer>(
        value: &Option<SecretValue>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::value_base64::serialize(value, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SecretValue>, D::Error> {
        struct OptionVisitor;
        impl<'de> de::Visitor<'de> for OptionVisitor {
            type Value = Option<SecretValue>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("null or a base64 string")
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_str(Base64Visitor).map(Some)
            }
        }
        d.deserialize_option(OptionVisitor)
    }
}
