//! The embedded default: every secret in one sealed file, `secrets.enc`, in the data directory.
//!
//! File format (version 1):
//!
//! ```text
//! offset  len  field
//!      0    8  magic "ahsecret"
//!      8    1  format version (1)
//!      9    1  algorithm (1: XChaCha20-Poly1305)
//!     10    8  key id: the first 8 bytes of HMAC-SHA256(master key, KEY_ID_LABEL)
//!     18   24  nonce, fresh from the OS RNG on every write
//!     42    -  XChaCha20-Poly1305 ciphertext and 16-byte tag of the JSON
//!              {"secrets": {name: {current, previous, previous_valid_until, version,
//!              rotated_at}}}, values in base64; associated data: bytes 0..42
//! ```
//!
//! The header is authenticated (it is the associated data), so no byte of the file can change
//! unnoticed. The key id tells a wrong master key from a damaged file; the secrets' names, like
//! their values, are inside the ciphertext.
//!
//! Writes go to a temporary file (mode 0600) that is synced and renamed over `secrets.enc`;
//! the in-memory copy that `get` reads is replaced only after that, so a failed write changes
//! nothing. A file that cannot be opened is never written over: [`LocalSecretStore::open`]
//! fails instead. One process owns the data directory (as it owns the SQLite file): the file is
//! read once, at open.

use std::ffi::OsString;
use std::io::{self, Write as _};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cap_std::fs::{Dir, OpenOptions};
use chacha20poly1305::aead::{AeadInOut, Generate, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{
    ActiveSecret, Error, Result, SecretMap, SecretMeta, SecretStore, SecretValue, apply_end_grace,
    apply_put, list_map, validate_name, validate_prefix, validate_put,
};

/// The sealed file, in the data directory.
pub const SECRETS_FILE: &str = "secrets.enc";
/// The generated master key's file, in the data directory, when the environment has none.
pub const MASTER_KEY_FILE: &str = "master.key";
/// The environment variable holding the master key (base64 of [`MASTER_KEY_LEN`] bytes).
pub const MASTER_KEY_ENV: &str = "ADAPTER_HOST_MASTER_KEY";
/// Length of a master key, in bytes.
pub const MASTER_KEY_LEN: usize = 32;

const MAGIC: &[u8; 8] = b"ahsecret";
const FORMAT_VERSION: u8 = 1;
const ALG_XCHACHA20_POLY1305: u8 = 1;
pub(super) const KEY_ID_LEN: usize = 8;
const KEY_ID_LABEL: &[u8] = b"adapter-host secrets.enc key id v1";
const NONCE_LEN: usize = 24;
pub(super) const HEADER_LEN: usize = MAGIC.len() + 2 + KEY_ID_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

/// The key that seals `secrets.enc`. Zeroed when dropped; `Debug` shows no bytes.
pub struct MasterKey(Zeroizing<[u8; MASTER_KEY_LEN]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(redacted)")
    }
}

impl MasterKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A key from the base64 of its 32 bytes (surrounding whitespace is ignored).
    pub fn from_base64(text: &str) -> Result<Self> {
        Self::parse("the given text", text)
    }

    /// A fresh random key from the OS RNG.
    pub fn generate() -> Result<Self> {
        let bytes = <[u8; MASTER_KEY_LEN]>::try_generate().map_err(|_| Error::Random)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key in base64, as [`MASTER_KEY_ENV`] and [`MASTER_KEY_FILE`] hold it.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(*self.0))
    }

    /// The host's master key: [`MASTER_KEY_ENV`] when set (base64 of 32 bytes; set but invalid
    /// or empty is an error, never a fallback); else [`MASTER_KEY_FILE`] in the data directory,
    /// generated on first use (mode 0600, with a warning). Refuses to generate a key when
    /// `secrets.enc` already exists, since a new key could not open it.
    ///
    /// A key kept beside the data only protects against a copy of `secrets.enc` (or of a
    /// backup) on its own: production should set the environment variable. To move to it, set
    /// it to the contents of `master.key`, then delete the file.
    pub fn from_env_or_file(data_dir: &Dir) -> Result<Self> {
        Self::from_env_value_or_file(std::env::var_os(MASTER_KEY_ENV), data_dir)
    }

    /// [`MasterKey::from_env_or_file`] with the environment variable's value given, so that
    /// tests need not change the process's environment.
    pub(super) fn from_env_value_or_file(env: Option<OsString>, data_dir: &Dir) -> Result<Self> {
        match env {
            Some(value) => {
                let text =
                    Zeroizing::new(value.into_string().map_err(|_| Error::InvalidMasterKey {
                        origin: MASTER_KEY_ENV,
                        reason: "not UTF-8",
                    })?);
                Self::parse(MASTER_KEY_ENV, &text)
            }
            None => Self::from_file(data_dir),
        }
    }

    fn from_file(dir: &Dir) -> Result<Self> {
        if let Some(key) = Self::read_file(dir)? {
            return Ok(key);
        }
        let exists = dir
            .try_exists(SECRETS_FILE)
            .map_err(Error::io("looking for secrets.enc"))?;
        if exists {
            return Err(Error::MissingMasterKey);
        }
        let key = Self::generate()?;
        if create_key_file(dir, &key)? {
            tracing::warn!(
                "generated a master key in {MASTER_KEY_FILE} in the data directory; a key kept \
                 beside the data only protects against a copy of {SECRETS_FILE} alone: in \
                 production set {MASTER_KEY_ENV} (base64 of {MASTER_KEY_LEN} bytes)"
            );
            return Ok(key);
        }
        // Another process created it first: use theirs.
        Self::read_file(dir)?.ok_or(Error::Internal("master.key vanished after it was created"))
    }

    /// The key in `master.key`, if the file exists.
    fn read_file(dir: &Dir) -> Result<Option<Self>> {
        let bytes = match dir.read(MASTER_KEY_FILE) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading master.key")(e)),
        };
        warn_if_readable_by_others(dir, MASTER_KEY_FILE);
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::InvalidMasterKey {
            origin: MASTER_KEY_FILE,
            reason: "not UTF-8",
        })?;
        Self::parse(MASTER_KEY_FILE, text).map(Some)
    }

    fn parse(origin: &'static str, text: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidMasterKey { origin, reason };
        let text = text.trim();
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(text.len() / 4 * 3 + 3));
        STANDARD
            .decode_vec(text, &mut bytes)
            .map_err(|_| invalid("not valid base64"))?;
        if bytes.len() != MASTER_KEY_LEN {
            return Err(invalid("it must be the base64 of 32 bytes"));
        }
        let mut key = Zeroizing::new([0; MASTER_KEY_LEN]);
        key.copy_from_slice(&bytes);
        Ok(Self(key))
    }

    /// Identifies the key in the file header without revealing anything usable about it.
    pub(super) fn key_id(&self) -> [u8; KEY_ID_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&*self.0)
            .expect("HMAC-SHA256 takes keys of any length");
        mac.update(KEY_ID_LABEL);
        let digest = mac.finalize().into_bytes();
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        id
    }

    pub(super) fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new_from_slice(&*self.0).expect("the master key has the cipher's size")
    }
}

/// Creates `master.key` (mode 0600) without ever replacing one: written to a temporary file,
/// synced, then hard-linked into place. Returns false when the file already existed.
fn create_key_file(dir: &Dir, key: &MasterKey) -> Result<bool> {
    let tmp = format!("{MASTER_KEY_FILE}.tmp-{}", std::process::id());
    let mut text = key.to_base64();
    text.push('\n');
    write_private_file(dir, &tmp, text.as_bytes()).map_err(|e| {
        let _ = dir.remove_file(&tmp);
        Error::io("writing master.key")(e)
    })?;
    let linked = dir.hard_link(&tmp, dir, MASTER_KEY_FILE);
    let _ = dir.remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir_after_rename(dir);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io("creating master.key")(e)),
    }
}

/// Writes a new file readable by its owner only, and syncs it.
fn write_private_file(dir: &Dir, name: &str, contents: &[u8]) -> io::Result<()> {
    // A leftover from a crash may have other permissions: start afresh.
    if let Err(e) = dir.remove_file(name)
        && e.kind() != io::ErrorKind::NotFound
    {
        return Err(e);
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    cap_std::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = dir.open_with(name, &options)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes a rename in the directory durable. (`Dir`'s own descriptor is `O_PATH` on Linux and
/// cannot be synced; `.` opened for reading can.)
pub(super) fn sync_dir(dir: &Dir) -> io::Result<()> {
    if cfg!(unix) {
        dir.open(".")?.sync_all()
    } else {
        Ok(())
    }
}

/// [`sync_dir`] after a rename that has happened whatever this says: a failure is logged, and
/// the write, which has taken effect, is reported as done.
fn sync_dir_after_rename(dir: &Dir) {
    if let Err(e) = sync_dir(dir) {
        tracing::warn!(error = %e, "could not sync the data directory after a write");
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(dir: &Dir, name: &str) {
    use cap_std::fs::PermissionsExt as _;
    if let Ok(meta) = dir.metadata(name)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!("{name} in the data directory is readable by other users: chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_dir: &Dir, _name: &str) {}

/// The plaintext inside the sealed blob.
#[derive(Serialize, Deserialize)]
struct Contents<M> {
    secrets: M,
}

/// Counts what serde_json writes, so the plaintext buffer is allocated once at its final size
/// (a growing buffer would leave copies of the plaintext behind in freed memory).
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn header(key_id: &[u8; KEY_ID_LEN], nonce: &XNonce) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8] = FORMAT_VERSION;
    header[9] = ALG_XCHACHA20_POLY1305;
    header[10..10 + KEY_ID_LEN].copy_from_slice(key_id);
    header[10 + KEY_ID_LEN..].copy_from_slice(nonce);
    header
}

/// The file's bytes for these secrets.
fn seal(cipher: &XChaCha20Poly1305, key_id: &[u8; KEY_ID_LEN], map: &SecretMap) -> Result<Vec<u8>> {
    let contents = Contents { secrets: map };
    let mut size = ByteCounter(0);
    serde_json::to_writer(&mut size, &contents)
        .map_err(|_| Error::Internal("cannot serialize the secrets"))?;
    let mut buffer = Zeroizing::new(Vec::with_capacity(size.0 + TAG_LEN));
    serde_json::to_writer(&mut *buffer, &contents)
        .map_err(|_| Error::Internal("cannot serialize the secrets"))?;
    let nonce = XNonce::try_generate().map_err(|_| Error::Random)?;
    let header = header(key_id, &nonce);
    cipher
        .encrypt_in_place(&nonce, &header, &mut *buffer)
        .map_err(|_| Error::Internal("encryption failed"))?;
    let mut file = Vec::with_capacity(HEADER_LEN + buffer.len());
    file.extend_from_slice(&header);
    file.extend_from_slice(&buffer);
    Ok(file)
}

/// The secrets in a file's bytes.
pub(super) fn unseal(
    cipher: &XChaCha20Poly1305,
    key_id: &[u8; KEY_ID_LEN],
    file: &[u8],
) -> Result<SecretMap> {
    if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
        return Err(Error::Corrupted("not a secrets file"));
    }
    if file.len() < HEADER_LEN + TAG_LEN {
        return Err(Error::Corrupted("truncated"));
    }
    let (header, sealed) = file.split_at(HEADER_LEN);
    if header[8] != FORMAT_VERSION {
        return Err(Error::UnsupportedFormat(format!("version {}", header[8])));
    }
    if header[9] != ALG_XCHACHA20_POLY1305 {
        return Err(Error::UnsupportedFormat(format!("algorithm {}", header[9])));
    }
    if header[10..10 + KEY_ID_LEN] != key_id[..] {
        return Err(Error::WrongMasterKey);
    }
    let nonce = XNonce::try_from(&header[10 + KEY_ID_LEN..])
        .map_err(|_| Error::Internal("the header's nonce has the wrong size"))?;
    let mut buffer = Zeroizing::new(sealed.to_vec());
    cipher
        .decrypt_in_place(&nonce, header, &mut *buffer)
        .map_err(|_| Error::Corrupted("authentication failed"))?;
    let contents: Contents<SecretMap> = serde_json::from_slice(&buffer)
        .map_err(|_| Error::Corrupted("the decrypted contents are not readable"))?;
    Ok(contents.secrets)
}

/// The embedded default [`SecretStore`]: `secrets.enc` in the data directory, sealed under a
/// [`MasterKey`], with a decrypted copy in memory for `get`. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct LocalSecretStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: Dir,
    cipher: XChaCha20Poly1305,
    key_id: [u8; KEY_ID_LEN],
    /// Readers clone the `Arc` and let go of the lock at once; a write swaps in a new map.
    secrets: RwLock<Arc<SecretMap>>,
    /// Serializes writers (read, change, seal, rename, swap).
    writer: Mutex<()>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSecretStore")
            .field("file", &SECRETS_FILE)
            .field("secrets", &self.snapshot().len())
            .finish_non_exhaustive()
    }
}

impl LocalSecretStore {
    /// Opens the store in `data_dir` (the host's data directory), reading and decrypting
    /// `secrets.enc` if it exists. A wrong key or a damaged file is an error and the file is
    /// left as it is.
    pub fn open(data_dir: &Dir, key: MasterKey) -> Result<Self> {
        let dir = data_dir
            .try_clone()
            .map_err(Error::io("opening the data directory"))?;
        let cipher = key.cipher();
        let key_id = key.key_id();
        let secrets = match dir.read(SECRETS_FILE) {
            Ok(file) => unseal(&cipher, &key_id, &file)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => SecretMap::new(),
            Err(e) => return Err(Error::io("reading secrets.enc")(e)),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                cipher,
                key_id,
                secrets: RwLock::new(Arc::new(secrets)),
                writer: Mutex::new(()),
            }),
        })
    }

    /// [`LocalSecretStore::open`] with [`MasterKey::from_env_or_file`].
    pub fn open_default(data_dir: &Dir) -> Result<Self> {
        Self::open(data_dir, MasterKey::from_env_or_file(data_dir)?)
    }
}

impl Inner {
    fn snapshot(&self) -> Arc<SecretMap> {
        // The map behind the lock is only ever replaced whole, so a poisoned lock still holds
        // a consistent one.
        Arc::clone(&self.secrets.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Applies `change` to a copy of the secrets; if it changed anything, seals the copy to
    /// disk, then makes it the one readers see.
    fn write<T>(&self, change: impl FnOnce(&mut SecretMap) -> (T, bool)) -> Result<T> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = SecretMap::clone(&self.snapshot());
        let (out, changed) = change(&mut next);
        if changed {
            self.persist(&next)?;
            *self.secrets.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        }
        Ok(out)
    }

    fn persist(&self, secrets: &SecretMap) -> Result<()> {
        let file = seal(&self.cipher, &self.key_id, secrets)?;
        let tmp = format!("{SECRETS_FILE}.tmp-{}", std::process::id());
        let written = write_private_file(&self.dir, &tmp, &file)
            .and_then(|()| self.dir.rename(&tmp, &self.dir, SECRETS_FILE));
        if let Err(e) = written {
            let _ = self.dir.remove_file(&tmp);
            return Err(Error::io("writing secrets.enc")(e));
        }
        sync_dir_after_rename(&self.dir);
        Ok(())
    }
}

impl SecretStore for LocalSecretStore {
    fn get(&self, name: &str, now: SystemTime) -> Result<Option<ActiveSecret>> {
        validate_name(name)?;
        Ok(self.inner.snapshot().get(name).map(|e| e.active(now)))
    }

    fn put(&self, name: &str, value: SecretValue, grace: Duration, now: SystemTime) -> Result<u64> {
        validate_put(name, &value, grace, now)?;
        self.inner
            .write(|map| (apply_put(map, name, value, grace, now), true))
    }

    fn create(&self, name: &str, value: SecretValue, now: SystemTime) -> Result<bool> {
        validate_put(name, &value, Duration::ZERO, now)?;
        self.inner.write(|map| {
            if map.contains_key(name) {
                return (false, false);
            }
            apply_put(map, name, value, Duration::ZERO, now);
            (true, true)
        })
    }

    fn end_grace(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        self.inner.write(|map| {
            let ended = apply_end_grace(map, name);
            (ended, ended)
        })
    }

    fn delete(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        self.inner.write(|map| {
            let deleted = map.remove(name).is_some();
            (deleted, deleted)
        })
    }

    fn meta(&self, name: &str, now: SystemTime) -> Result<Option<SecretMeta>> {
        validate_name(name)?;
        Ok(self.inner.snapshot().get(name).map(|e| e.meta(name, now)))
    }

    fn list(&self, prefix: &str, now: SystemTime) -> Result<Vec<SecretMeta>> {
        validate_prefix(prefix)?;
        Ok(list_map(&self.inner.snapshot(), prefix, now))
    }
}
