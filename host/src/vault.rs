//! Encryption at rest: every tenant's stored payloads (raw delivery bodies, recorded HTTP
//! answers, invocation logs, outbox payloads) are sealed with XChaCha20-Poly1305 under a data key
//! of that tenant's own, and erasing a tenant is destroying its key (crypto-shredding).
//!
//! **Keys.** A tenant's data key (32 random bytes) is a secret of the secret store, under
//! `host/data-keys/<sha256 of the tenant id>` (outside every tenant's namespace): the store
//! seals it under its master key, so the database alone holds no key, and the SQLite file or
//! the PostgreSQL tables alone reveal no payload. A key is made on the tenant's first write,
//! created only if absent ([`SecretStore::create`]), so two nodes racing to make it agree on
//! one.
//!
//! **What a sealed value is.** `MAGIC | tenant length (1) | tenant | key id (8) | nonce (24) |
//! ciphertext and tag (16)`, where the key id is the first 8 bytes of HMAC-SHA256(key,
//! [`KEY_ID_LABEL`]). The header (everything before the nonce) and the value's [`Purpose`] are the
//! associated data: a value moved to another tenant, or from a log into a payload, does not open.
//! A text column holds [`TEXT_PREFIX`] and the base64 of the same bytes. Values written before
//! encryption (plaintext) read as they are: no JSON text begins with `~`, and no UTF-8 text with
//! the byte `0xff` that begins [`MAGIC`].
//!
//! **Shredding.** [`Vault::shred`] deletes the tenant's key: from then on every value sealed
//! under it reads as [`Opened::Erased`], the append-only outbox included (its rows keep their
//! ids, types and times). The tenant's next write makes a new key. Other nodes keep the key they
//! read for up to [`REREAD_AFTER`]: what they write meanwhile is erased with the rest.
//!
//! **Cost.** A node keeps each tenant's key in memory and reads it again from the secret store at
//! most every [`REREAD_AFTER`]; sealing what a 1 KB delivery stores (body, payload, log) costs
//! about 8 µs (see `BENCHMARKS.md`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use chacha20poly1305::aead::{AeadInOut, Generate, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::sandbox::sha256_hex;
use crate::secrets::{self, SecretStore, SecretValue};

/// What begins a sealed value (binary columns).
pub const MAGIC: [u8; 8] = *b"\xffsealed\x01";
/// What begins a sealed value in a text column, before its base64.
pub const TEXT_PREFIX: &str = "~sealed1:";
/// An erased value in a text column (no JSON text is this).
pub const ERASED_TEXT: &str = "~erased1";
/// What a key's id is derived from.
pub const KEY_ID_LABEL: &[u8] = b"adapter-host tenant data key id v1";
/// Where tenants' data keys live in the secret store (then the sha256 of the tenant id).
pub const KEYS_PREFIX: &str = "host/data-keys/";
/// How long a node uses the key (or the absence of one) it read before reading it again.
pub const REREAD_AFTER: Duration = Duration::from_secs(5);

const KEY_LEN: usize = 32;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The key id of [`Vault::tombstone`]s. A key has it with odds of 2^-64, and even then a
/// tombstone does not open under it (its tag is no tag): it never reads as a value.
const TOMBSTONE_KEY_ID: [u8; KEY_ID_LEN] = [0; KEY_ID_LEN];

/// Why a value could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The secret store failed.
    #[error("the tenant's data key: {0}")]
    Secrets(#[from] secrets::Error),
    /// A sealed value is damaged, or a stored key is not one this module made.
    #[error("a sealed value or data key is damaged: {0}")]
    Damaged(&'static str),
    /// The tenant id cannot be written into a sealed value.
    #[error("a tenant id longer than 255 bytes cannot be sealed for")]
    TenantTooLong,
}

impl From<Error> for crate::store::Error {
    fn from(e: Error) -> Self {
        crate::store::Error::Backend(e.to_string())
    }
}

/// This module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a sealed value holds: part of what it is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A delivery's raw body.
    Body,
    /// A recorded HTTP answer's body.
    Response,
    /// An invocation's log.
    Log,
    /// An outbox event's payload.
    Payload,
    /// What replays an invocation: the state it read, its seed and clock readings.
    Replay,
}

impl Purpose {
    fn tag(self) -> u8 {
        match self {
            Self::Body => 1,
            Self::Response => 2,
            Self::Log => 3,
            Self::Payload => 4,
            Self::Replay => 5,
        }
    }
}

/// A stored value, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened<T> {
    /// Its plaintext (a value stored before encryption reads as it is).
    Plain(T),
    /// Its tenant's key was destroyed: the value is gone for good.
    Erased,
}

impl<T> Opened<T> {
    /// The plaintext, or `erased` for an erased value, and whether it was erased.
    pub fn or_erased(self, erased: T) -> (T, bool) {
        match self {
            Self::Plain(value) => (value, false),
            Self::Erased => (erased, true),
        }
    }
}

/// One tenant's key as this node last read it.
struct Cached {
    /// `None`: the tenant had no key.
    key: Option<Arc<DataKey>>,
    read_at: Instant,
}

struct DataKey {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
}

/// Seals and opens tenants' payloads; see the module docs.
pub struct Vault {
    /// `None`: nothing is sealed (a store opened by a tool or a test without secrets).
    secrets: Option<Arc<dyn SecretStore>>,
    keys: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("sealing", &self.secrets.is_some())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Seals under keys kept in `secrets`.
    pub fn new(secrets: Arc<dyn SecretStore>) -> Self {
        Self {
            secrets: Some(secrets),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Seals nothing: values are stored as they are, and sealed ones read as erased (there is
    /// no key here to open them with).
    pub fn disabled() -> Self {
        Self {
            secrets: None,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Whether values are sealed.
    pub fn seals(&self) -> bool {
        self.secrets.is_some()
    }

    /// `plaintext` sealed for `tenant` (as it is when sealing is disabled). Blocking (secret
    /// store) when the tenant's key was not read in the last [`REREAD_AFTER`].
    pub fn seal(&self, tenant: &str, purpose: Purpose, plaintext: &[u8]) -> Result<Vec<u8>> {
        if self.secrets.is_none() {
            return Ok(plaintext.to_vec());
        }
        let key = self.key_for_writing(tenant)?;
        let tenant_len = u8::try_from(tenant.len()).map_err(|_| Error::TenantTooLong)?;
        let header_len = MAGIC.len() + 1 + tenant.len() + KEY_ID_LEN;
        let mut sealed = Vec::with_capacity(header_len + NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.extend_from_slice(&MAGIC);
        sealed.push(tenant_len);
        sealed.extend_from_slice(tenant.as_bytes());
        sealed.extend_from_slice(&key.id);
        let nonce = XNonce::try_generate().map_err(|_| secrets::Error::Random)?;
        let aad = associated_data(&sealed, purpose);
        sealed.extend_from_slice(&nonce);
        let mut ciphertext = plaintext.to_vec();
        key.cipher
            .encrypt_in_place(&nonce, &aad, &mut ciphertext)
            .map_err(|_| Error::Damaged("the cipher refused to seal"))?;
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// `text` sealed for `tenant`, as text (as it is when sealing is disabled).
    pub fn seal_text(&self, tenant: &str, purpose: Purpose, text: &str) -> Result<String> {
        if self.secrets.is_none() {
            return Ok(text.to_owned());
        }
        let sealed = self.seal(tenant, purpose, text.as_bytes())?;
        let mut out = String::with_capacity(TEXT_PREFIX.len() + sealed.len() * 4 / 3 + 4);
        out.push_str(TEXT_PREFIX);
        B64.encode_string(&sealed, &mut out);
        Ok(out)
    }

    /// A stored value opened: its plaintext, or erased when its tenant's key is gone. A value
    /// that is not sealed reads as it is.
    pub fn open(&self, purpose: Purpose, stored: Vec<u8>) -> Result<Opened<Vec<u8>>> {
        if !stored.starts_with(&MAGIC) {
            return Ok(Opened::Plain(stored));
        }
        let header = Header::parse(&stored)?;
        let Some(key) = self.key_for_reading(header.tenant, header.key_id)? else {
            return Ok(Opened::Erased);
        };
        let (nonce, ciphertext) = stored[header.len..].split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).expect("the length was checked");
        let aad = associated_data(&stored[..header.len], purpose);
        let mut plaintext = ciphertext.to_vec();
        key.cipher
            .decrypt_in_place(&nonce, &aad, &mut plaintext)
            .map_err(|_| Error::Damaged("a sealed value does not open under its tenant's key"))?;
        Ok(Opened::Plain(plaintext))
    }

    /// A stored text value opened (see [`Self::open`]).
    pub fn open_text(&self, purpose: Purpose, stored: String) -> Result<Opened<String>> {
        if stored == ERASED_TEXT {
            return Ok(Opened::Erased);
        }
        let Some(encoded) = stored.strip_prefix(TEXT_PREFIX) else {
            return Ok(Opened::Plain(stored));
        };
        let sealed = B64
            .decode(encoded)
            .map_err(|_| Error::Damaged("a sealed text value is not base64"))?;
        if !sealed.starts_with(&MAGIC) {
            return Err(Error::Damaged("a sealed text value lacks its header"));
        }
        Ok(match self.open(purpose, sealed)? {
            Opened::Plain(bytes) => Opened::Plain(
                String::from_utf8(bytes)
                    .map_err(|_| Error::Damaged("a sealed text value is not UTF-8"))?,
            ),
            Opened::Erased => Opened::Erased,
        })
    }

    /// What overwrites a value of `tenant` stored in the clear (before encryption, or by a
    /// store that does not seal) when the tenant is erased: a sealed value under a key id no key
    /// has, which reads as [`Opened::Erased`] whatever key the tenant has now or later.
    pub fn tombstone(tenant: &str) -> Result<Vec<u8>> {
        let tenant_len = u8::try_from(tenant.len()).map_err(|_| Error::TenantTooLong)?;
        let mut tomb = Vec::with_capacity(MAGIC.len() + 1 + tenant.len() + TOMBSTONE_KEY_ID.len());
        tomb.extend_from_slice(&MAGIC);
        tomb.push(tenant_len);
        tomb.extend_from_slice(tenant.as_bytes());
        tomb.extend_from_slice(&TOMBSTONE_KEY_ID);
        tomb.resize(tomb.len() + NONCE_LEN + TAG_LEN, 0);
        Ok(tomb)
    }

    /// What overwrites an erased value in a text column (a log, an event payload), whoever's
    /// it is: [`ERASED_TEXT`]. The outbox lets a payload change to this and nothing else.
    pub fn tombstone_text() -> &'static str {
        ERASED_TEXT
    }

    /// Destroys `tenant`'s data key: everything sealed under it is erased. Returns whether
    /// there was a key. Blocking (secret store).
    pub fn shred(&self, tenant: &str) -> Result<bool> {
        let Some(secrets) = &self.secrets else {
            return Ok(false);
        };
        let existed = secrets.delete(&key_name(tenant))?;
        self.cache().remove(tenant);
        Ok(existed)
    }

    /// The id of `tenant`'s current key (hex), if it has one. Blocking (secret store).
    pub fn key_id(&self, tenant: &str) -> Result<Option<String>> {
        Ok(self.read_key(tenant)?.map(|key| hex::encode(key.id)))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key as last read, if read recently.
    fn fresh(&self, tenant: &str) -> Option<Option<Arc<DataKey>>> {
        let cache = self.cache();
        let cached = cache.get(tenant)?;
        (cached.read_at.elapsed() < REREAD_AFTER).then(|| cached.key.clone())
    }

    /// The tenant's key from the secret store (remembered).
    fn read_key(&self, tenant: &str) -> Result<Option<Arc<DataKey>>> {
        let Some(secrets) = &self.secrets else {
            return Ok(None);
        };
        let key = match secrets.get(&key_name(tenant), SystemTime::now())? {
            Some(stored) => Some(Arc::new(data_key(stored.current.expose())?)),
            None => None,
        };
        self.cache().insert(
            tenant.to_owned(),
            Cached {
                key: key.clone(),
                read_at: Instant::now(),
            },
        );
        Ok(key)
    }

    fn key_for_writing(&self, tenant: &str) -> Result<Arc<DataKey>> {
        if let Some(Some(key)) = self.fresh(tenant) {
            return Ok(key);
        }
        if let Some(key) = self.read_key(tenant)? {
            return Ok(key);
        }
        let secrets = self
            .secrets
            .as_ref()
            .expect("only a sealing vault writes keys");
        let bytes: [u8; KEY_LEN] = secrets::random_bytes()?;
        // Another node (or task) may have made one meanwhile: theirs is the key, then.
        secrets.create(
            &key_name(tenant),
            SecretValue::new(bytes.to_vec()),
            SystemTime::now(),
        )?;
        self.read_key(tenant)?
            .ok_or(Error::Damaged("the data key vanished as it was made"))
    }

    /// The tenant's key if it is the one with `id`; `None`: that key was destroyed.
    fn key_for_reading(&self, tenant: &str, id: [u8; KEY_ID_LEN]) -> Result<Option<Arc<DataKey>>> {
        let matching = |key: Option<Arc<DataKey>>| key.filter(|key| key.id == id);
        if let Some(key) = self.fresh(tenant) {
            if let Some(key) = matching(key) {
                return Ok(Some(key));
            }
            // A key another node made after this one read "none" is worth one more read.
            if self.cache().get(tenant).is_some_and(|c| c.key.is_some()) {
                return Ok(None);
            }
        }
        Ok(matching(self.read_key(tenant)?))
    }
}

/// A sealed value's header.
struct Header<'a> {
    tenant: &'a str,
    key_id: [u8; KEY_ID_LEN],
    /// Its length (where the nonce starts).
    len: usize,
}

impl<'a> Header<'a> {
    fn parse(sealed: &'a [u8]) -> Result<Self> {
        let damaged = Error::Damaged("a sealed value is truncated");
        let rest = &sealed[MAGIC.len()..];
        let (&tenant_len, rest) = rest.split_first().ok_or(damaged)?;
        let tenant_len = usize::from(tenant_len);
        if rest.len() < tenant_len + KEY_ID_LEN + NONCE_LEN + TAG_LEN {
            return Err(Error::Damaged("a sealed value is truncated"));
        }
        let tenant = std::str::from_utf8(&rest[..tenant_len])
            .map_err(|_| Error::Damaged("a sealed value's tenant is not UTF-8"))?;
        let key_id = rest[tenant_len..tenant_len + KEY_ID_LEN]
            .try_into()
            .expect("the length was checked");
        Ok(Self {
            tenant,
            key_id,
            len: MAGIC.len() + 1 + tenant_len + KEY_ID_LEN,
        })
    }
}

fn associated_data(header: &[u8], purpose: Purpose) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + 1);
    aad.extend_from_slice(header);
    aad.push(purpose.tag());
    aad
}

fn key_name(tenant: &str) -> String {
    format!("{KEYS_PREFIX}{}", sha256_hex(tenant.as_bytes()))
}

fn data_key(bytes: &[u8]) -> Result<DataKey> {
    if bytes.len() != KEY_LEN {
        return Err(Error::Damaged("a tenant's data key has the wrong length"));
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(bytes)
        .map_err(|_| Error::Damaged("a tenant's data key is unusable"))?;
    mac.update(KEY_ID_LABEL);
    let id = mac.finalize().into_bytes()[..KEY_ID_LEN]
        .try_into()
        .expect("HMAC-SHA256 is longer than a key id");
    Ok(DataKey {
        id,
        cipher: XChaCha20Poly1305::new_from_slice(bytes)
            .map_err(|_| Error::Damaged("a tenant's data key is unusable"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::InMemorySecretStore;

    fn vault() -> (Vault, Arc<InMemorySecretStore>) {
        let secrets = Arc::new(InMemorySecretStore::new());
        (Vault::new(secrets.clone()), secrets)
    }

    fn plain<T: std::fmt::Debug>(opened: Opened<T>) -> T {
        match opened {
            Opened::Plain(value) => value,
            Opened::Erased => panic!("erased"),
        }
    }

    #[test]
    fn a_sealed_value_opens_and_holds_no_plaintext() {
        let (vault, _) = vault();
        let body = br#"{"email":"ada@example.com"}"#;
        let sealed = vault.seal("t1", Purpose::Body, body).unwrap();
        assert!(sealed.starts_with(&MAGIC));
        assert!(!sealed.windows(5).any(|w| w == b"email"));
        assert_eq!(plain(vault.open(Purpose::Body, sealed).unwrap()), body);

        let text = vault
            .seal_text("t1", Purpose::Payload, r#"{"a":"1"}"#)
            .unwrap();
        assert!(text.starts_with(TEXT_PREFIX), "{text}");
        assert_eq!(
            plain(vault.open_text(Purpose::Payload, text).unwrap()),
            r#"{"a":"1"}"#
        );
    }

    #[test]
    fn two_seals_of_one_value_differ_and_each_tenant_has_its_own_key() {
        let (vault, secrets) = vault();
        let a = vault.seal("t1", Purpose::Log, b"same").unwrap();
        let b = vault.seal("t1", Purpose::Log, b"same").unwrap();
        assert_ne!(a, b, "a fresh nonce each time");
        vault.seal("t2", Purpose::Log, b"same").unwrap();
        assert_ne!(vault.key_id("t1").unwrap(), vault.key_id("t2").unwrap());
        let names: Vec<String> = secrets
            .list(KEYS_PREFIX, SystemTime::now())
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names.len(), 2);
        assert!(
            names.iter().all(|n| !n.contains("t1") && !n.contains("t2")),
            "{names:?}"
        );
    }

    #[test]
    fn plaintext_stored_before_encryption_reads_as_it_is() {
        let (vault, _) = vault();
        assert_eq!(
            plain(vault.open(Purpose::Body, b"raw".to_vec()).unwrap()),
            b"raw"
        );
        assert_eq!(
            plain(vault.open_text(Purpose::Log, "{}".into()).unwrap()),
            "{}"
        );
        let disabled = Vault::disabled();
        assert_eq!(disabled.seal("t1", Purpose::Body, b"x").unwrap(), b"x");
        assert_eq!(disabled.seal_text("t1", Purpose::Log, "{}").unwrap(), "{}");
    }

    #[test]
    fn a_value_moved_to_another_tenant_or_purpose_or_altered_does_not_open() {
        let (vault, _) = vault();
        vault.seal("t2", Purpose::Body, b"other").unwrap();
        let sealed = vault.seal("t1", Purpose::Body, b"secret body").unwrap();

        let err = vault.open(Purpose::Payload, sealed.clone()).unwrap_err();
        assert!(matches!(err, Error::Damaged(_)), "{err}");

        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(vault.open(Purpose::Body, flipped).is_err());

        // The same length of tenant id, another tenant: its key's id does not match.
        let mut moved = sealed.clone();
        moved[MAGIC.len() + 2] = b'2';
        assert_eq!(vault.open(Purpose::Body, moved).unwrap(), Opened::Erased);

        let truncated = sealed[..MAGIC.len() + 4].to_vec();
        assert!(vault.open(Purpose::Body, truncated).is_err());
        assert!(
            vault
                .open_text(Purpose::Log, format!("{TEXT_PREFIX}!!"))
                .is_err()
        );
    }

    #[test]
    fn shredding_erases_one_tenant_and_a_new_key_serves_its_next_writes() {
        let (vault, _) = vault();
        let one = vault.seal("t1", Purpose::Payload, b"one").unwrap();
        let other = vault.seal("t2", Purpose::Payload, b"other").unwrap();
        let old_key = vault.key_id("t1").unwrap();
        assert!(vault.shred("t1").unwrap());
        assert!(!vault.shred("t1").unwrap(), "the key is gone already");
        assert_eq!(
            vault.open(Purpose::Payload, one.clone()).unwrap(),
            Opened::Erased
        );
        assert_eq!(
            plain(vault.open(Purpose::Payload, other).unwrap()),
            b"other"
        );

        let next = vault.seal("t1", Purpose::Payload, b"next").unwrap();
        assert_ne!(vault.key_id("t1").unwrap(), old_key);
        assert_eq!(plain(vault.open(Purpose::Payload, next).unwrap()), b"next");
        assert_eq!(vault.open(Purpose::Payload, one).unwrap(), Opened::Erased);
    }

    #[test]
    fn a_tombstone_reads_as_erased_with_a_key_without_one_and_disabled() {
        let (vault, _) = vault();
        vault.seal("t1", Purpose::Log, b"makes a key").unwrap();
        let tomb = Vault::tombstone("t1").unwrap();
        let text = Vault::tombstone_text().to_owned();
        for vault in [&vault, &Vault::disabled()] {
            for purpose in [Purpose::Body, Purpose::Log, Purpose::Payload] {
                assert_eq!(vault.open(purpose, tomb.clone()).unwrap(), Opened::Erased);
                assert_eq!(
                    vault.open_text(purpose, text.clone()).unwrap(),
                    Opened::Erased
                );
            }
        }
        assert!(vault.shred("t1").unwrap());
        assert_eq!(vault.open(Purpose::Body, tomb).unwrap(), Opened::Erased);
        assert!(Vault::tombstone(&"t".repeat(256)).is_err());
    }

    #[test]
    fn a_node_sees_another_nodes_shred_and_key_once_it_reads_again() {
        let secrets: Arc<dyn SecretStore> = Arc::new(InMemorySecretStore::new());
        let (a, b) = (Vault::new(secrets.clone()), Vault::new(secrets));
        let sealed = a.seal("t1", Purpose::Body, b"x").unwrap();
        assert_eq!(plain(b.open(Purpose::Body, sealed.clone()).unwrap()), b"x");
        // b made no key of its own: it opens what a seals, and seals under the same key.
        let by_b = b.seal("t1", Purpose::Body, b"y").unwrap();
        assert_eq!(plain(a.open(Purpose::Body, by_b).unwrap()), b"y");

        assert!(a.shred("t1").unwrap());
        b.cache().clear();
        assert_eq!(b.open(Purpose::Body, sealed).unwrap(), Opened::Erased);
    }

    #[test]
    fn a_damaged_key_in_the_secret_store_is_an_error_not_an_erasure() {
        let (vault, secrets) = vault();
        let sealed = vault.seal("t1", Purpose::Body, b"x").unwrap();
        secrets
            .put(
                &key_name("t1"),
                SecretValue::new(b"short".to_vec()),
                Duration::ZERO,
                SystemTime::now(),
            )
            .unwrap();
        vault.cache().clear();
        assert!(matches!(
            vault.open(Purpose::Body, sealed),
            Err(Error::Damaged(_))
        ));
    }
}
