//! Signed provenance: every event an adapter emits carries, in `metadata.provenance`, a record
//! of where it came from, signed by the host with Ed25519.
//!
//! The record names the adapter's component (its sha256, id and version), the input it ran on
//! (the sha256 of the webhook body or poll page, the delivery id), the connection, tenant and
//! org, the contract it passed (world and rules version), and the event's own digest: the
//! sha256 of the JCS (RFC 8785) text of `{event_id, tenant_id, org_id, event_type,
//! entity_type, entity_id, payload}`. The signature is over the JCS text of the record without
//! its `signature` field. So a consumer holding the host's public keys can prove that this
//! event, byte for byte, was produced by that adapter version from that input, and that
//! nothing of it was altered since.
//!
//! Keys live in the secret store under [`KEYS_SECRET`]: the active private key and the public
//! halves of the retired ones. Public keys are served as a JWKS at [`WELL_KNOWN_PATH`];
//! rotating makes a new active key and keeps every old public key, so events signed before a
//! rotation keep verifying.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::sandbox::sha256_hex;
use crate::secrets::{SecretStore, SecretValue};
use crate::store::{self, Millis};

/// Where the keys are kept in the secret store (outside every tenant's namespace).
pub const KEYS_SECRET: &str = "host/provenance/signing-keys";
/// Where the public keys are served, unauthenticated, as a JWKS.
pub const WELL_KNOWN_PATH: &str = "/.well-known/adapter-host/provenance-keys";
/// The version of the record's layout.
pub const RECORD_VERSION: u32 = 1;
/// How long a node signs with the key it read before reading it again: after a rotation on
/// another node, this one may still sign with the retired key for up to this long.
const REREAD_AFTER: Duration = Duration::from_secs(5);
/// How long after a key's retirement a record it signed is still accepted (nodes' clocks and
/// [`REREAD_AFTER`]).
const RETIREMENT_SKEW: Duration = Duration::from_secs(60);

/// Why provenance could not be read, made or checked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The secret store failed.
    #[error("the provenance keys: {0}")]
    Secrets(#[from] crate::secrets::Error),
    /// The stored keys are not what this module wrote.
    #[error("the provenance keys in the secret store are unreadable: {0}")]
    Damaged(String),
}

/// The key ring as stored (one secret, JSON).
#[derive(Serialize, Deserialize)]
struct KeyRing {
    active: ActiveKey,
    #[serde(default)]
    retired: Vec<PublicKey>,
}

#[derive(Serialize, Deserialize)]
struct ActiveKey {
    kid: String,
    /// The Ed25519 seed, base64url.
    seed: String,
    created_at: Millis,
}

/// A public key, active or retired, as the JWKS shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublicKey {
    /// The key's id, named by the records it signed.
    pub kid: String,
    /// `OKP` (RFC 8037).
    #[serde(default = "okp")]
    pub kty: String,
    /// `Ed25519`.
    #[serde(default = "ed25519")]
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    /// `EdDSA`.
    #[serde(default = "eddsa")]
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use", default = "sig")]
    pub use_: String,
    /// When the key was made (Unix milliseconds).
    pub created_at: Millis,
    /// When it stopped signing; `None` for the active key. Records signed later are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Millis>,
}

fn okp() -> String {
    "OKP".into()
}
fn ed25519() -> String {
    "Ed25519".into()
}
fn eddsa() -> String {
    "EdDSA".into()
}
fn sig() -> String {
    "sig".into()
}

impl PublicKey {
    fn new(kid: &str, key: &VerifyingKey, created_at: Millis, retired_at: Option<Millis>) -> Self {
        Self {
            kid: kid.to_owned(),
            kty: okp(),
            crv: ed25519(),
            x: B64.encode(key.as_bytes()),
            alg: eddsa(),
            use_: sig(),
            created_at,
            retired_at,
        }
    }
}

/// The JWKS document of [`WELL_KNOWN_PATH`].
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeySet {
    /// The active key first, then the retired ones, newest first.
    pub keys: Vec<PublicKey>,
}

/// The host's signer: the active key, re-read from the secret store when it changes (another
/// node may have rotated it).
pub struct Provenance {
    secrets: Arc<dyn SecretStore>,
    /// The active key by the secret's version, and when that version was last read.
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provenance").finish_non_exhaustive()
    }
}

struct Cached {
    version: u64,
    signer: Arc<ActiveSigner>,
    read_at: Instant,
}

/// The key events are signed with now.
pub struct ActiveSigner {
    kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for ActiveSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Provenance {
    /// A signer over `secrets`; nothing is read until [`Self::ensure_key`] or the first
    /// signature.
    pub fn new(secrets: Arc<dyn SecretStore>) -> Self {
        Self {
            secrets,
            cached: Mutex::new(None),
        }
    }

    /// Makes the first key when there is none (a new installation). Blocking (secret store).
    pub fn ensure_key(&self) -> Result<(), Error> {
        self.signer().map(drop)
    }

    /// The active key, made on first use. Blocking (secret store), at most every few seconds:
    /// in between, the key read last.
    pub fn signer(&self) -> Result<Arc<ActiveSigner>, Error> {
        if let Some(cached) = self.cached().as_ref()
            && cached.read_at.elapsed() < REREAD_AFTER
        {
            return Ok(Arc::clone(&cached.signer));
        }
        let Some(stored) = self.secrets.get(KEYS_SECRET, SystemTime::now())? else {
            self.write(KeyRing {
                active: new_key()?,
                retired: Vec::new(),
            })?;
            return self.signer();
        };
        let mut cached = self.cached();
        if let Some(cached) = cached.as_mut()
            && cached.version == stored.version
        {
            cached.read_at = Instant::now();
            return Ok(Arc::clone(&cached.signer));
        }
        let ring = parse(&stored.current)?;
        let signer = Arc::new(ActiveSigner {
            key: signing_key(&ring.active)?,
            kid: ring.active.kid,
        });
        *cached = Some(Cached {
            version: stored.version,
            signer: Arc::clone(&signer),
            read_at: Instant::now(),
        });
        Ok(signer)
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every public key, the active one first. Blocking (secret store).
    pub fn key_set(&self) -> Result<KeySet, Error> {
        self.ensure_key()?;
        let stored = self
            .secrets
            .get(KEYS_SECRET, SystemTime::now())?
            .ok_or_else(|| Error::Damaged("the keys vanished while being read".into()))?;
        let ring = parse(&stored.current)?;
        let active = signing_key(&ring.active)?.verifying_key();
        let mut keys = vec![PublicKey::new(
            &ring.active.kid,
            &active,
            ring.active.created_at,
            None,
        )];
        keys.extend(ring.retired.into_iter().rev());
        Ok(KeySet { keys })
    }

    /// Makes a new active key; the old one's public half stays in the set, retired now.
    /// Returns the new key set. Blocking (secret store).
    pub fn rotate(&self) -> Result<KeySet, Error> {
        self.ensure_key()?;
        let stored = self
            .secrets
            .get(KEYS_SECRET, SystemTime::now())?
            .ok_or_else(|| Error::Damaged("the keys vanished while being rotated".into()))?;
        let mut ring = parse(&stored.current)?;
        let old = signing_key(&ring.active)?.verifying_key();
        ring.retired.push(PublicKey::new(
            &ring.active.kid,
            &old,
            ring.active.created_at,
            Some(store::now_millis()),
        ));
        ring.active = new_key()?;
        self.write(ring)?;
        // This node signs with the new key from now on.
        *self.cached() = None;
        self.key_set()
    }

    fn write(&self, ring: KeyRing) -> Result<(), Error> {
        let text =
            Zeroizing::new(serde_json::to_vec(&ring).map_err(|e| Error::Damaged(e.to_string()))?);
        self.secrets.put(
            KEYS_SECRET,
            SecretValue::new(text.to_vec()),
            std::time::Duration::ZERO,
            SystemTime::now(),
        )?;
        Ok(())
    }
}

fn new_key() -> Result<ActiveKey, Error> {
    let seed = Zeroizing::new(crate::secrets::random_bytes::<32>()?);
    let public = SigningKey::from_bytes(&seed).verifying_key();
    // The kid names the key by its public half: stable, unique, revealing nothing.
    let kid = hex::encode(&Sha256::digest(public.as_bytes())[..8]);
    Ok(ActiveKey {
        kid,
        seed: B64.encode(*seed),
        created_at: store::now_millis(),
    })
}

fn parse(value: &SecretValue) -> Result<KeyRing, Error> {
    serde_json::from_slice(value.expose()).map_err(|e| Error::Damaged(e.to_string()))
}

fn signing_key(active: &ActiveKey) -> Result<SigningKey, Error> {
    let seed = Zeroizing::new(
        B64.decode(&active.seed)
            .map_err(|_| Error::Damaged("the active key is not base64url".into()))?,
    );
    let seed: &[u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| Error::Damaged("the active key is not 32 bytes".into()))?;
    Ok(SigningKey::from_bytes(seed))
}

/// What an event's record says beside the event itself.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// The tenant of the connection.
    pub tenant_id: &'a str,
    /// The connection.
    pub connection_id: &'a str,
    /// The delivery (webhook or poll page) the event came from.
    pub delivery_id: &'a str,
    /// `webhook` or `poll`.
    pub input_kind: &'a str,
    /// sha256 (hex) of the delivery's body or the poll page.
    pub input_sha256: &'a str,
    /// The adapter's id.
    pub adapter_id: &'a str,
    /// The adapter's version number.
    pub adapter_version: u32,
    /// sha256 (hex) of the adapter's component.
    pub component_sha256: &'a str,
    /// The adapter world's version, `0.2.0`.
    pub world: &'a str,
}

/// The parts of an event its digest covers.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    /// The event's id.
    pub event_id: &'a str,
    /// `None`: platform level.
    pub org_id: Option<&'a str>,
    /// `entity.action`.
    pub event_type: &'a str,
    /// The part before the dot.
    pub entity_type: &'a str,
    /// The entity's id.
    pub entity_id: &'a str,
    /// The payload's JSON text, as stored.
    pub payload_json: &'a str,
}

/// sha256 (hex) of the JCS text of the event's facts under `tenant_id`.
pub fn event_digest(tenant_id: &str, event: &EventFacts<'_>) -> Result<String, String> {
    let payload: Value = serde_json::from_str(event.payload_json)
        .map_err(|e| format!("the payload is not JSON: {e}"))?;
    let facts = json!({
        "event_id": event.event_id,
        "tenant_id": tenant_id,
        "org_id": event.org_id,
        "event_type": event.event_type,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "payload": payload,
    });
    Ok(sha256_hex(&jcs(&facts)?))
}

/// The JCS (RFC 8785) text of `value`.
///
/// serde_json's compact output of a [`Value`] (whose objects are sorted maps) is already that
/// text when every number is an integer (JCS formats others as ECMAScript does) and no object
/// key holds a character at or above U+E000 (JCS sorts keys by UTF-16 code units, serde_json by
/// UTF-8 bytes: the two orders differ only there); strings are escaped alike. Events' payloads
/// are such values (the contracts refuse fractional numbers), and serde_json writes them about
/// five times faster; anything else goes through the canonicalizer.
fn jcs(value: &Value) -> Result<Vec<u8>, String> {
    fn same_in_both(value: &Value) -> bool {
        match value {
            Value::Number(n) => n.is_i64() || n.is_u64(),
            Value::Array(items) => items.iter().all(same_in_both),
            Value::Object(map) => map
                .iter()
                .all(|(k, v)| k.chars().all(|c| c < '\u{E000}') && same_in_both(v)),
            Value::Null | Value::Bool(_) | Value::String(_) => true,
        }
    }
    if same_in_both(value) {
        serde_json::to_vec(value).map_err(|e| format!("canonical JSON: {e}"))
    } else {
        serde_json_canonicalizer::to_vec(value).map_err(|e| format!("canonical JSON: {e}"))
    }
}

impl ActiveSigner {
    /// The id of this key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The signed provenance record of `event` from `origin`, as a JSON object.
    pub fn record(&self, origin: &Origin<'_>, event: &EventFacts<'_>) -> Result<Value, String> {
        let mut record = json!({
            "v": RECORD_VERSION,
            "alg": "Ed25519",
            "kid": self.kid,
            "event_sha256": event_digest(origin.tenant_id, event)?,
            "input": {
                "kind": origin.input_kind,
                "sha256": origin.input_sha256,
                "delivery_id": origin.delivery_id,
            },
            "adapter": {
                "id": origin.adapter_id,
                "version": origin.adapter_version,
                "component_sha256": origin.component_sha256,
            },
            "connection_id": origin.connection_id,
            "tenant_id": origin.tenant_id,
            "org_id": event.org_id,
            "contract": {
                "world": origin.world,
                "rules": adapter_contracts::RULES_VERSION,
            },
            "signed_at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        });
        let signature = self.key.sign(&jcs(&record)?);
        record["signature"] = Value::String(B64.encode(signature.to_bytes()));
        Ok(record)
    }
}

/// What a verified record proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The key that signed it.
    pub kid: String,
    /// When.
    pub signed_at: String,
    /// The adapter's id, version and component sha256.
    pub adapter: (String, u64, String),
    /// sha256 of the input.
    pub input_sha256: String,
}

/// Checks `event` (an event as the management API or the bus shows it: `event_id`,
/// `event_type`, `entity_type`, `entity_id`, `org_id`, `payload` and `metadata.provenance`)
/// against `keys`: the signature, the key's validity at signing time, and the event's digest.
/// The error says which check failed.
pub fn verify(event: &Value, keys: &KeySet) -> Result<Verified, String> {
    let record = event
        .pointer("/metadata/provenance")
        .and_then(Value::as_object)
        .ok_or("the event has no metadata.provenance record")?;
    let text = |name: &str| -> Result<&str, String> {
        record
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the provenance record has no `{name}`"))
    };
    if record.get("v").and_then(Value::as_u64) != Some(u64::from(RECORD_VERSION)) {
        return Err(format!(
            "the provenance record is not of version {RECORD_VERSION}"
        ));
    }
    let kid = text("kid")?;
    let key = keys
        .keys
        .iter()
        .find(|key| key.kid == kid)
        .ok_or_else(|| format!("no key `{kid}` in the key set"))?;
    let public: [u8; 32] = B64
        .decode(&key.x)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| format!("key `{kid}` is not a 32-byte Ed25519 key"))?;
    let public = VerifyingKey::from_bytes(&public)
        .map_err(|_| format!("key `{kid}` is not a valid Ed25519 key"))?;
    let signature: [u8; 64] = B64
        .decode(text("signature")?)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or("the signature is not 64 bytes of base64url")?;
    let mut unsigned = record.clone();
    unsigned.remove("signature");
    public
        .verify(
            &jcs(&Value::Object(unsigned))?,
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| {
            format!("the signature does not verify with key `{kid}`: the record was altered")
        })?;
    let signed_at = text("signed_at")?;
    if let Some(retired_at) = key.retired_at {
        let at = humantime::parse_rfc3339(signed_at)
            .map_err(|_| "`signed_at` is not an RFC 3339 time".to_owned())?;
        let at = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| {
            Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
        });
        let skew = Millis::try_from(RETIREMENT_SKEW.as_millis()).unwrap_or(Millis::MAX);
        if at > retired_at.saturating_add(skew) {
            return Err(format!(
                "signed at {signed_at}, after key `{kid}` was retired"
            ));
        }
    }
    // The record is authentic; now the event must be the one it names.
    let field = |name: &str| event.get(name).and_then(Value::as_str);
    let tenant_id = text("tenant_id")?;
    if let Some(tenant) = field("tenant_id")
        && tenant != tenant_id
    {
        return Err(format!(
            "the event's tenant_id `{tenant}` is not the record's `{tenant_id}`"
        ));
    }
    let payload = event.get("payload").ok_or("the event has no payload")?;
    let payload_json = match payload {
        // A bus envelope or an API view holds the payload as JSON; text is accepted too.
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let facts = EventFacts {
        event_id: field("event_id").ok_or("the event has no event_id")?,
        org_id: field("org_id"),
        event_type: field("event_type").ok_or("the event has no event_type")?,
        entity_type: field("entity_type").ok_or("the event has no entity_type")?,
        entity_id: field("entity_id").ok_or("the event has no entity_id")?,
        payload_json: &payload_json,
    };
    if record.get("org_id").and_then(Value::as_str) != facts.org_id {
        return Err("the event's org_id is not the record's".into());
    }
    if event_digest(tenant_id, &facts)? != text("event_sha256")? {
        return Err(
            "the event does not match its signed digest: its id, type, entity, org or \
             payload was altered"
                .into(),
        );
    }
    let adapter = record
        .get("adapter")
        .and_then(Value::as_object)
        .ok_or("the provenance record has no `adapter`")?;
    Ok(Verified {
        kid: kid.to_owned(),
        signed_at: signed_at.to_owned(),
        adapter: (
            adapter
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            adapter
                .get("version")
                .and_then(Value::as_u64)
                .unwrap_or_default(),
            adapter
                .get("component_sha256")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        ),
        input_sha256: record
            .get("input")
            .and_then(|input| input.get("sha256"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::InMemorySecretStore;

    fn origin() -> Origin<'static> {
        Origin {
            tenant_id: "tenant-a",
            connection_id: "conn-1",
            delivery_id: "dlv-1",
            input_kind: "webhook",
            input_sha256: "ab",
            adapter_id: "adp-1",
            adapter_version: 3,
            component_sha256: "cd",
            world: "0.2.0",
        }
    }

    fn event_json(provenance: Value, payload: &str) -> Value {
        json!({
            "event_id": "evt-1", "event_type": "deal.won", "entity_type": "deal",
            "entity_id": "D-1", "org_id": "org-1",
            "payload": serde_json::from_str::<Value>(payload).unwrap(),
            "metadata": {"trace_id": "t", "provenance": provenance},
        })
    }

    const PAYLOAD: &str = r#"{"amount":"1234.50","deal_id":"D-1","n":7}"#;

    fn facts() -> EventFacts<'static> {
        EventFacts {
            event_id: "evt-1",
            org_id: Some("org-1"),
            event_type: "deal.won",
            entity_type: "deal",
            entity_id: "D-1",
            payload_json: PAYLOAD,
        }
    }

    #[test]
    fn an_untampered_event_verifies_across_a_rotation_and_a_tampered_one_does_not() {
        let provenance = Provenance::new(Arc::new(InMemorySecretStore::new()));
        let before = provenance
            .signer()
            .unwrap()
            .record(&origin(), &facts())
            .unwrap();
        let keys = provenance.rotate().unwrap();
        assert_eq!(keys.keys.len(), 2);
        assert!(keys.keys[0].retired_at.is_none() && keys.keys[1].retired_at.is_some());
        let after = provenance
            .signer()
            .unwrap()
            .record(&origin(), &facts())
            .unwrap();
        assert_ne!(
            before["kid"], after["kid"],
            "a new key signs after the rotation"
        );
        for record in [&before, &after] {
            let verified = verify(&event_json(record.clone(), PAYLOAD), &keys).unwrap();
            assert_eq!(verified.adapter, ("adp-1".into(), 3, "cd".into()));
        }
        // The payload, the type, the org, the record: each altered, each caught.
        let mut tampered = event_json(
            after.clone(),
            r#"{"amount":"9234.50","deal_id":"D-1","n":7}"#,
        );
        assert!(
            verify(&tampered, &keys)
                .unwrap_err()
                .contains("signed digest")
        );
        tampered = event_json(after.clone(), PAYLOAD);
        tampered["event_type"] = json!("deal.lost");
        assert!(
            verify(&tampered, &keys)
                .unwrap_err()
                .contains("signed digest")
        );
        tampered = event_json(after.clone(), PAYLOAD);
        tampered["metadata"]["provenance"]["adapter"]["version"] = json!(4);
        assert!(
            verify(&tampered, &keys)
                .unwrap_err()
                .contains("does not verify")
        );
        tampered = event_json(after.clone(), PAYLOAD);
        tampered["org_id"] = json!("org-2");
        assert!(verify(&tampered, &keys).is_err());
        // Without the old key, the old event cannot be checked.
        let only_new = KeySet {
            keys: vec![keys.keys[0].clone()],
        };
        assert!(
            verify(&event_json(before, PAYLOAD), &only_new)
                .unwrap_err()
                .contains("no key")
        );
    }

    #[test]
    fn the_digest_is_of_the_canonical_text_whatever_the_payload_s_layout() {
        let compact = event_digest("t", &facts()).unwrap();
        let spaced = EventFacts {
            payload_json: "{ \"n\": 7, \"deal_id\": \"D-1\",\n \"amount\": \"1234.50\" }",
            ..facts()
        };
        assert_eq!(event_digest("t", &spaced).unwrap(), compact);
        assert_ne!(event_digest("other", &facts()).unwrap(), compact);
    }

    #[test]
    fn the_fast_canonical_text_is_the_canonicalizer_s() {
        let mut values = vec![
            json!({"b": [1, -2, 9007199254740991_u64, true, null], "a": {"z": "\u{1}\n\"\\/é€😀", "é": 0}}),
            json!({"\u{E000}": 1, "😀": 2, "a": 3}),
            json!({"x": 1.5, "y": 1e21, "z": -0.0}),
            json!([]),
        ];
        // Every payload of the sample adapters' golden cases.
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../sample-adapters");
        for adapter in std::fs::read_dir(root).unwrap().flatten() {
            let Ok(cases) = std::fs::read_dir(adapter.path().join("golden")) else {
                continue;
            };
            for case in cases.flatten() {
                let text = std::fs::read_to_string(case.path().join("expected.json")).unwrap();
                let expected: Value = serde_json::from_str(&text).unwrap();
                for event in expected["outcome"]["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    values.push(serde_json::from_str(event["payload"].as_str().unwrap()).unwrap());
                }
            }
        }
        assert!(values.len() > 50, "{}", values.len());
        // Where serde_json's text is not JCS's, the guard sends the value to the canonicalizer.
        for special in &values[1..3] {
            assert_ne!(
                serde_json::to_vec(special).unwrap(),
                serde_json_canonicalizer::to_vec(special).unwrap(),
                "{special}"
            );
        }
        for value in &values {
            assert_eq!(
                String::from_utf8(jcs(value).unwrap()).unwrap(),
                String::from_utf8(serde_json_canonicalizer::to_vec(value).unwrap()).unwrap(),
                "{value}"
            );
        }
    }

    #[test]
    fn a_record_signed_after_its_key_was_retired_is_refused() {
        let provenance = Provenance::new(Arc::new(InMemorySecretStore::new()));
        let record = provenance
            .signer()
            .unwrap()
            .record(&origin(), &facts())
            .unwrap();
        let mut keys = provenance.key_set().unwrap();
        keys.keys[0].retired_at = Some(store::now_millis() - 61_000);
        assert!(
            verify(&event_json(record, PAYLOAD), &keys)
                .unwrap_err()
                .contains("after key")
        );
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        let secrets: Arc<dyn SecretStore> = Arc::new(InMemorySecretStore::new());
        let kid = Provenance::new(Arc::clone(&secrets))
            .signer()
            .unwrap()
            .kid()
            .to_owned();
        // Another node (or a restart) signs with the same key.
        assert_eq!(Provenance::new(secrets).signer().unwrap().kid(), kid);
    }
}
