//! The same behaviour suite runs against every backend; the local store's file, key and
//! tamper handling have their own tests below.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::local::{HEADER_LEN, KEY_ID_LEN};
use super::*;
use crate::signatures::{self, RawRequest, SchemeConfig, SignatureError};

const HOUR: Duration = Duration::from_secs(3600);
const NAME: &str = "tenants/acme/connections/c1/signing";
const SECRET: &str = "whsec_SUPERSECRET_old_5f2b9c";
const NEW_SECRET: &str = "whsec_SUPERSECRET_new_81d4ae";

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn value(text: &str) -> SecretValue {
    SecretValue::new(text)
}

fn text(value: &SecretValue) -> &str {
    std::str::from_utf8(value.expose()).unwrap()
}

// --- Fixtures

/// A data directory in a temporary folder.
struct DataDir {
    _tmp: tempfile::TempDir,
    dir: Dir,
}

impl DataDir {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        Self { _tmp: tmp, dir }
    }

    fn open(&self, key: [u8; MASTER_KEY_LEN]) -> Result<LocalSecretStore> {
        LocalSecretStore::open(&self.dir, MasterKey::from_bytes(key))
    }

    fn file(&self) -> Vec<u8> {
        self.dir.read(SECRETS_FILE).unwrap()
    }

    fn names(&self) -> BTreeSet<String> {
        self.dir
            .entries()
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }
}

const KEY: [u8; MASTER_KEY_LEN] = [7; MASTER_KEY_LEN];
const OTHER_KEY: [u8; MASTER_KEY_LEN] = [9; MASTER_KEY_LEN];

/// Runs each behaviour test against both backends: `in_memory::<test>` and `local::<test>`.
macro_rules! backend_tests {
    ($($test:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[test]
                fn $test() {
                    super::$test(std::sync::Arc::new(super::InMemorySecretStore::new()));
                }
            )*
        }
        mod local {
            $(
                #[test]
                fn $test() {
                    let data = super::DataDir::new();
                    super::$test(std::sync::Arc::new(data.open(super::KEY).unwrap()));
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $test() {
                    let db = super::Pg::new();
                    super::$test(std::sync::Arc::new(db.open(super::KEY, &[])));
                }
            )*
        }
    };
}

/// A schema of its own in the test database (`ADAPTER_HOST_TEST_POSTGRES_URL`, default
/// `postgres://postgres@127.0.0.1:5432/test`), dropped at the end.
struct Pg {
    settings: PostgresSecretSettings,
}

impl Pg {
    fn new() -> Self {
        let url = std::env::var("ADAPTER_HOST_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("secrets_test_{}", hex::encode(random_bytes::<6>().unwrap()));
        Self {
            settings: PostgresSecretSettings { url, schema },
        }
    }

    fn try_open(
        &self,
        key: [u8; MASTER_KEY_LEN],
        previous: &[[u8; MASTER_KEY_LEN]],
    ) -> Result<PostgresSecretStore> {
        let ring = Keyring::new(
            MasterKey::from_bytes(key),
            previous.iter().map(|k| MasterKey::from_bytes(*k)).collect(),
        );
        PostgresSecretStore::open(&self.settings, ring)
    }

    fn open(
        &self,
        key: [u8; MASTER_KEY_LEN],
        previous: &[[u8; MASTER_KEY_LEN]],
    ) -> PostgresSecretStore {
        self.try_open(key, previous)
            .unwrap_or_else(|e| panic!("these tests need PostgreSQL at {}: {e}", self.settings.url))
    }

    /// Every column of every row, as psql would print it.
    fn dump(&self) -> String {
        let output = std::process::Command::new("psql")
            .args([&self.settings.url, "-At", "-c"])
            .arg(format!(
                "SELECT name, encode(kek_id, 'hex'), encode(wrapped_dek, 'hex'), encode(sealed, 'hex'), \
                 version, rotated_at, previous_valid_until FROM \"{}\".secrets",
                self.settings.schema
            ))
            .output()
            .expect("psql");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn sql(&self, sql: &str) {
        let output = std::process::Command::new("psql")
            .args([&self.settings.url, "-At", "-c"])
            .arg(sql.replace("SCHEMA", &format!("\"{}\"", self.settings.schema)))
            .output()
            .expect("psql");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([&self.settings.url, "-q", "-c"])
            .arg(format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.settings.schema
            ))
            .output();
    }
}

backend_tests!(
    put_then_get_round_trips,
    rotation_keeps_the_previous_value_during_the_grace_period_only,
    zero_grace_invalidates_the_old_value_at_once,
    rotating_again_keeps_only_the_latest_previous_value,
    end_grace_drops_the_previous_value,
    delete_removes_the_secret,
    metadata_and_lists_carry_no_values,
    invalid_input_is_refused,
    gets_stay_consistent_while_puts_happen,
    create_keeps_the_first_value_whoever_races_it,
    webhooks_signed_with_either_secret_verify_during_the_grace_period,
);

type Store = Arc<dyn SecretStore>;

// --- Behaviour, against every backend

fn put_then_get_round_trips(store: Store) {
    assert!(store.get(NAME, t0()).unwrap().is_none());
    assert_eq!(store.put(NAME, value(SECRET), HOUR, t0()).unwrap(), 1);
    let active = store.get(NAME, t0() + HOUR).unwrap().unwrap();
    assert_eq!(text(&active.current), SECRET);
    assert!(active.previous.is_none());
    assert_eq!(active.previous_valid_until, None);
    assert_eq!(active.version, 1);
    assert_eq!(active.rotated_at, t0());
    // Binary values survive too.
    let bytes: Vec<u8> = (0..=255).collect();
    store
        .put(
            "api/key",
            SecretValue::new(bytes.clone()),
            Duration::ZERO,
            t0(),
        )
        .unwrap();
    let active = store.get("api/key", t0()).unwrap().unwrap();
    assert_eq!(active.current.expose(), bytes);
}

fn rotation_keeps_the_previous_value_during_the_grace_period_only(store: Store) {
    store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
    let t1 = t0() + 24 * HOUR;
    assert_eq!(store.put(NAME, value(NEW_SECRET), HOUR, t1).unwrap(), 2);

    let during = store.get(NAME, t1 + HOUR - Duration::from_nanos(1));
    let during = during.unwrap().unwrap();
    assert_eq!(text(&during.current), NEW_SECRET);
    assert_eq!(during.previous.as_ref().map(text), Some(SECRET));
    assert_eq!(during.previous_valid_until, Some(t1 + HOUR));
    assert_eq!((during.version, during.rotated_at), (2, t1));
    let values = during.into_values();
    assert_eq!(
        values.iter().map(text).collect::<Vec<_>>(),
        [NEW_SECRET, SECRET]
    );

    // The grace period ends at `previous_valid_until` exactly.
    let after = store.get(NAME, t1 + HOUR).unwrap().unwrap();
    assert_eq!(text(&after.current), NEW_SECRET);
    assert!(after.previous.is_none());
    assert_eq!(after.previous_valid_until, None);
    assert_eq!(after.into_values().len(), 1);
}

fn zero_grace_invalidates_the_old_value_at_once(store: Store) {
    store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
    store
        .put(NAME, value(NEW_SECRET), Duration::ZERO, t0() + HOUR)
        .unwrap();
    for at in [t0() + HOUR, t0()] {
        let active = store.get(NAME, at).unwrap().unwrap();
        assert_eq!(text(&active.current), NEW_SECRET);
        assert!(active.previous.is_none(), "no grace, at {at:?}");
    }
    assert!(!store.end_grace(NAME).unwrap());
}

fn rotating_again_keeps_only_the_latest_previous_value(store: Store) {
    store.put(NAME, value("first"), HOUR, t0()).unwrap();
    store.put(NAME, value("second"), HOUR, t0()).unwrap();
    let third = store.put(NAME, value("third"), HOUR, t0()).unwrap();
    assert_eq!(third, 3);
    let active = store.get(NAME, t0()).unwrap().unwrap();
    assert_eq!(text(&active.current), "third");
    assert_eq!(active.previous.as_ref().map(text), Some("second"));
}

fn end_grace_drops_the_previous_value(store: Store) {
    store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
    store.put(NAME, value(NEW_SECRET), HOUR, t0()).unwrap();
    assert!(store.end_grace(NAME).unwrap());
    let active = store.get(NAME, t0()).unwrap().unwrap();
    assert_eq!(text(&active.current), NEW_SECRET);
    assert!(active.previous.is_none());
    assert_eq!(active.version, 2);
    assert!(!store.end_grace(NAME).unwrap());
    assert!(!store.end_grace("missing").unwrap());
}

fn delete_removes_the_secret(store: Store) {
    store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
    store.put("other", value("kept"), HOUR, t0()).unwrap();
    assert!(store.delete(NAME).unwrap());
    assert!(store.get(NAME, t0()).unwrap().is_none());
    assert!(store.meta(NAME, t0()).unwrap().is_none());
    assert!(!store.delete(NAME).unwrap());
    assert_eq!(
        text(&store.get("other", t0()).unwrap().unwrap().current),
        "kept"
    );
    // A new secret under the name starts again at version 1.
    assert_eq!(store.put(NAME, value(NEW_SECRET), HOUR, t0()).unwrap(), 1);
}

fn metadata_and_lists_carry_no_values(store: Store) {
    let a = "tenants/acme/connections/a/signing";
    let b = "tenants/acme/connections/b/api_key";
    let other = "tenants/acme2/connections/z/signing";
    store.put(a, value(SECRET), HOUR, t0()).unwrap();
    store.put(a, value(NEW_SECRET), HOUR, t0() + HOUR).unwrap();
    store.put(b, value("sk_SUPERSECRET_b"), HOUR, t0()).unwrap();
    store
        .put(other, value("sk_SUPERSECRET_z"), HOUR, t0())
        .unwrap();

    let now = t0() + HOUR + Duration::from_secs(1);
    let meta = store.meta(a, now).unwrap().unwrap();
    assert_eq!(
        meta,
        SecretMeta {
            name: a.to_owned(),
            version: 2,
            rotated_at: t0() + HOUR,
            previous_valid_until: Some(t0() + 2 * HOUR),
        }
    );
    let later = store.meta(a, t0() + 2 * HOUR).unwrap().unwrap();
    assert_eq!(later.previous_valid_until, None);

    let listed = store.list("tenants/acme/", now).unwrap();
    let names: Vec<_> = listed.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, [a, b]);
    assert_eq!(store.list("", now).unwrap().len(), 3);
    assert!(store.list("tenants/nobody/", now).unwrap().is_empty());

    let printed = format!("{:?}{:?}", store.list("", now).unwrap(), meta);
    assert!(!printed.contains("SUPERSECRET"), "{printed}");
}

fn invalid_input_is_refused(store: Store) {
    let long = "a".repeat(MAX_NAME_LEN + 1);
    for name in [
        "",
        "/leading",
        "trailing/",
        "double//slash",
        "../escape",
        "a/./b",
        "a/..",
        "with space",
        "semi;colon",
        "ünïcode",
        "nul\0byte",
        long.as_str(),
    ] {
        let put = store.put(name, value(SECRET), HOUR, t0());
        assert!(
            matches!(put, Err(Error::InvalidName(_))),
            "{name:?}: {put:?}"
        );
        assert!(put.unwrap_err().is_invalid_input());
        assert!(matches!(store.get(name, t0()), Err(Error::InvalidName(_))));
        assert!(matches!(store.delete(name), Err(Error::InvalidName(_))));
    }
    let longest = "a".repeat(MAX_NAME_LEN);
    for name in [
        "a",
        "A.b_c-d/e.f",
        "tenants/0192-ab/connections/x/oauth.refresh",
        &longest,
    ] {
        store.put(name, value(SECRET), HOUR, t0()).unwrap();
    }
    assert!(matches!(
        store.list("bad prefix", t0()),
        Err(Error::InvalidName(_))
    ));

    let empty = store.put(NAME, SecretValue::new(""), HOUR, t0());
    assert!(matches!(empty, Err(Error::InvalidValue(_))), "{empty:?}");
    let huge = SecretValue::new(vec![b'x'; MAX_VALUE_LEN + 1]);
    let huge = store.put(NAME, huge, HOUR, t0());
    assert!(matches!(huge, Err(Error::InvalidValue(_))), "{huge:?}");
    let grace = store.put(
        NAME,
        value(SECRET),
        MAX_GRACE + Duration::from_secs(1),
        t0(),
    );
    assert!(matches!(grace, Err(Error::InvalidGrace(_))), "{grace:?}");
    let time = store.put(NAME, value(SECRET), HOUR, UNIX_EPOCH - HOUR);
    assert!(matches!(time, Err(Error::InvalidTime(_))), "{time:?}");
    // Nothing was stored by the refused puts.
    assert!(store.get(NAME, t0()).unwrap().is_none());
    store.put(NAME, value(SECRET), MAX_GRACE, t0()).unwrap();
}

/// `create` writes only where nothing is: of several threads creating one name at once, exactly
/// one wins, and every one of them then reads the winner's value.
fn create_keeps_the_first_value_whoever_races_it(store: Store) {
    assert!(store.create(NAME, value(SECRET), t0()).unwrap());
    assert!(!store.create(NAME, value(NEW_SECRET), t0()).unwrap());
    let kept = store.get(NAME, t0()).unwrap().unwrap();
    assert_eq!((text(&kept.current), kept.version), (SECRET, 1));
    assert!(store.create("bad name", value(SECRET), t0()).is_err());

    let winners = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..4)
            .map(|n| {
                let store = &store;
                scope.spawn(move || {
                    let mine = format!("racer-{n}");
                    let won = store.create("race", value(&mine), t0()).unwrap();
                    let read = store.get("race", t0()).unwrap().unwrap();
                    (won, mine, text(&read.current).to_owned())
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|racer| racer.join().unwrap())
            .collect::<Vec<_>>()
    });
    let won: Vec<_> = winners.iter().filter(|(won, ..)| *won).collect();
    assert_eq!(won.len(), 1, "one creator wins: {winners:?}");
    assert!(winners.iter().all(|(_, _, read)| *read == won[0].1));
}

/// Readers on other threads always see a whole secret: the version's value, with the version
/// before as the previous one; and never go back in time.
fn gets_stay_consistent_while_puts_happen(store: Store) {
    const ROTATIONS: u64 = 30;
    let value_of = |version: u64| format!("value-{version}");
    store.put(NAME, value(&value_of(1)), HOUR, t0()).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let (mut last, mut reads) = (0, 0u64);
                    while !done.load(Ordering::Relaxed) || reads < 100 {
                        let active = store.get(NAME, t0()).unwrap().unwrap();
                        assert!(active.version >= last, "went back from {last}");
                        last = active.version;
                        assert_eq!(text(&active.current), value_of(active.version));
                        let previous = active.previous.as_ref().map(text);
                        let expected = (active.version > 1).then(|| value_of(active.version - 1));
                        assert_eq!(previous, expected.as_deref());
                        reads += 1;
                    }
                    (last, reads)
                })
            })
            .collect();
        for version in 2..=ROTATIONS {
            let put = store.put(NAME, value(&value_of(version)), HOUR, t0());
            assert_eq!(put.unwrap(), version);
        }
        done.store(true, Ordering::Relaxed);
        for reader in readers {
            let (last, reads) = reader.join().unwrap();
            assert!(last <= ROTATIONS && reads >= 100);
        }
    });
    let last = store.get(NAME, t0()).unwrap().unwrap();
    assert_eq!(last.version, ROTATIONS);
}

fn github_request(secret: &str, body: &[u8]) -> Vec<(String, String)> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let signature = hex::encode(mac.finalize().into_bytes());
    vec![(
        "X-Hub-Signature-256".to_owned(),
        format!("sha256={signature}"),
    )]
}

fn webhooks_signed_with_either_secret_verify_during_the_grace_period(store: Store) {
    let config = SchemeConfig::GitHub {};
    let config = &config;
    let body = br#"{"action":"opened"}"#;
    let verify = |at: SystemTime, signed_with: &str| {
        let headers = github_request(signed_with, body);
        let active = store.get(NAME, at).unwrap().unwrap();
        let secrets: Vec<signatures::Secret> =
            active.into_values().into_iter().map(Into::into).collect();
        let request = RawRequest {
            method: "POST",
            url: "https://host/webhooks/c1",
            headers: &headers,
            body,
        };
        signatures::verify(config, &secrets, &request, at).map(|v| v.secret_index)
    };
    store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
    store.put(NAME, value(NEW_SECRET), HOUR, t0()).unwrap();
    let during = t0() + HOUR / 2;
    assert_eq!(verify(during, NEW_SECRET), Ok(Some(0)));
    assert_eq!(verify(during, SECRET), Ok(Some(1)));
    let after = t0() + HOUR;
    assert_eq!(verify(after, NEW_SECRET), Ok(Some(0)));
    assert_eq!(verify(after, SECRET), Err(SignatureError::Mismatch));
}

// --- Redaction

#[test]
fn debug_output_never_shows_secret_bytes() {
    let key = MasterKey::from_bytes(KEY);
    let key_text = key.to_base64();
    let active = ActiveSecret {
        current: value(NEW_SECRET),
        previous: Some(value(SECRET)),
        previous_valid_until: Some(t0()),
        version: 2,
        rotated_at: t0(),
    };
    let data = DataDir::new();
    let local = data.open(KEY).unwrap();
    let memory = InMemorySecretStore::new();
    for store in [&local as &dyn SecretStore, &memory] {
        store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
        store.put(NAME, value(NEW_SECRET), HOUR, t0()).unwrap();
    }
    let printed = [
        format!("{:?}", value(SECRET)),
        format!("{active:?}"),
        format!("{active:#?}"),
        format!("{key:?}"),
        format!("{local:?}"),
        format!("{memory:?}"),
        format!("{:?}", signatures::Secret::from(value(SECRET))),
    ];
    assert_eq!(
        printed[0],
        format!("SecretValue(redacted, {} bytes)", SECRET.len())
    );
    for printed in printed {
        assert!(!printed.contains("SUPERSECRET"), "{printed}");
        assert!(!printed.contains(key_text.as_str()), "{printed}");
        assert!(!printed.contains("7, 7, 7"), "{printed}");
    }
}

#[test]
fn errors_never_echo_the_key_they_refuse() {
    let not_base64 = "SUPERSECRET-master-key-not-base64!!";
    let short = STANDARD.encode(b"SUPERSECRET 16 b");
    for text in [not_base64, short.as_str(), "", "   "] {
        let err = MasterKey::from_base64(text).unwrap_err();
        assert!(matches!(err, Error::InvalidMasterKey { .. }), "{err:?}");
        for printed in [err.to_string(), format!("{err:?}")] {
            assert!(!printed.contains("SUPERSECRET"), "{printed}");
            assert!(
                text.trim().is_empty() || !printed.contains(text.trim()),
                "{printed}"
            );
        }
    }
}

// --- The local store's file

#[test]
fn secrets_persist_across_reopening_with_the_same_key() {
    let data = DataDir::new();
    {
        let store = data.open(KEY).unwrap();
        store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
        store
            .put(NAME, value(NEW_SECRET), HOUR, t0() + HOUR)
            .unwrap();
        store
            .put("api/key", SecretValue::new(vec![0, 255, 10]), HOUR, t0())
            .unwrap();
        store.put("gone", value("x"), HOUR, t0()).unwrap();
        store.delete("gone").unwrap();
    }
    let store = data.open(KEY).unwrap();
    let active = store.get(NAME, t0() + HOUR).unwrap().unwrap();
    assert_eq!(text(&active.current), NEW_SECRET);
    assert_eq!(active.previous.as_ref().map(text), Some(SECRET));
    assert_eq!(active.previous_valid_until, Some(t0() + 2 * HOUR));
    assert_eq!((active.version, active.rotated_at), (2, t0() + HOUR));
    let api = store.get("api/key", t0()).unwrap().unwrap();
    assert_eq!(api.current.expose(), [0, 255, 10]);
    assert!(store.get("gone", t0()).unwrap().is_none());
    assert_eq!(store.list("", t0()).unwrap().len(), 2);
    // And the rotation carries on from the stored version.
    assert_eq!(store.put(NAME, value("third"), HOUR, t0()).unwrap(), 3);
}

#[test]
fn the_file_holds_neither_values_nor_names_in_the_clear() {
    let data = DataDir::new();
    let store = data.open(KEY).unwrap();
    store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
    store.put(NAME, value(NEW_SECRET), HOUR, t0()).unwrap();
    let file = data.file();
    let contains = |needle: &[u8]| file.windows(needle.len()).any(|w| w == needle);
    for needle in [
        SECRET,
        NEW_SECRET,
        "SUPERSECRET",
        "acme",
        "connections",
        "version",
    ] {
        assert!(!contains(needle.as_bytes()), "{needle} is in the file");
    }
    for secret in [SECRET, NEW_SECRET] {
        assert!(
            !contains(STANDARD.encode(secret).as_bytes()),
            "base64 of {secret}"
        );
        assert!(!contains(hex::encode(secret).as_bytes()), "hex of {secret}");
    }
    assert!(!contains(&KEY[..8]), "the master key is in the file");
    assert_eq!(&file[..8], b"ahsecret");
    assert_eq!(file[8], 1, "format version");
}

#[test]
fn every_write_uses_a_fresh_nonce_and_leaves_no_temporary_file() {
    let data = DataDir::new();
    let store = data.open(KEY).unwrap();
    let mut files = Vec::new();
    for _ in 0..3 {
        // The same contents each time (the same value, version and time after a delete).
        store
            .put(NAME, value(SECRET), Duration::ZERO, t0())
            .unwrap();
        files.push(data.file());
        store.delete(NAME).unwrap();
    }
    let nonces: BTreeSet<_> = files.iter().map(|f| f[18..HEADER_LEN].to_vec()).collect();
    assert_eq!(nonces.len(), 3, "a nonce was reused");
    let bodies: BTreeSet<_> = files.iter().map(|f| f[HEADER_LEN..].to_vec()).collect();
    assert_eq!(bodies.len(), 3);
    assert_eq!(data.names(), BTreeSet::from([SECRETS_FILE.to_owned()]));
    #[cfg(unix)]
    {
        use cap_std::fs::PermissionsExt as _;
        let mode = data
            .dir
            .metadata(SECRETS_FILE)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_wrong_key_is_refused_and_the_file_left_as_it_is() {
    let data = DataDir::new();
    let store = data.open(KEY).unwrap();
    store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
    drop(store);
    let before = data.file();
    let err = data.open(OTHER_KEY).unwrap_err();
    assert!(matches!(err, Error::WrongMasterKey), "{err:?}");
    assert!(
        err.to_string()
            .contains("cannot decrypt secrets.enc: wrong master key"),
        "{err}"
    );
    assert!(!err.is_invalid_input());
    assert_eq!(data.file(), before);
    // The right key still opens it.
    let store = data.open(KEY).unwrap();
    assert!(store.get(NAME, t0()).unwrap().is_some());
}

#[test]
fn a_tampered_or_damaged_file_is_refused_and_left_as_it_is() {
    let data = DataDir::new();
    let store = data.open(KEY).unwrap();
    store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
    drop(store);
    let good = data.file();
    let flipped = |at: usize| {
        let mut file = good.clone();
        file[at] ^= 0x01;
        file
    };
    let last = good.len() - 1;
    let corrupted = "secrets_corrupted";
    let cases = [
        ("ciphertext", flipped(HEADER_LEN + 3), corrupted),
        ("tag", flipped(last), corrupted),
        ("nonce", flipped(HEADER_LEN - 1), corrupted),
        ("magic", flipped(0), corrupted),
        ("version", flipped(8), "secrets_unsupported_format"),
        ("algorithm", flipped(9), "secrets_unsupported_format"),
        ("key id", flipped(10 + KEY_ID_LEN - 1), "wrong_master_key"),
        ("truncated", good[..HEADER_LEN + 4].to_vec(), corrupted),
        ("cut short", good[..good.len() - 1].to_vec(), corrupted),
        ("empty", Vec::new(), corrupted),
        ("extended", [&good[..], b"x"].concat(), corrupted),
    ];
    for (case, file, expected) in cases {
        data.dir.write(SECRETS_FILE, &file).unwrap();
        let err = data.open(KEY).unwrap_err();
        assert_eq!(err.code(), expected, "{case}: {err:?}");
        assert!(!err.to_string().contains("SUPERSECRET"), "{case}: {err}");
        assert_eq!(data.file(), file, "{case}: the file changed");
    }
    data.dir.write(SECRETS_FILE, &good).unwrap();
    assert!(data.open(KEY).is_ok());
}

#[test]
fn a_failed_write_changes_nothing() {
    let data = DataDir::new();
    let store = data.open(KEY).unwrap();
    store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
    let before = data.file();
    // A directory where the temporary file goes makes the next write fail.
    let tmp = format!("{SECRETS_FILE}.tmp-{}", std::process::id());
    data.dir.create_dir(&tmp).unwrap();
    let err = store.put(NAME, value(NEW_SECRET), HOUR, t0()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(!err.to_string().contains("SUPERSECRET"), "{err}");
    let err = store.delete(NAME).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let active = store.get(NAME, t0()).unwrap().unwrap();
    assert_eq!((text(&active.current), active.version), (SECRET, 1));
    assert_eq!(data.file(), before);
    data.dir.remove_dir(&tmp).unwrap();
    assert_eq!(store.put(NAME, value(NEW_SECRET), HOUR, t0()).unwrap(), 2);
}

#[test]
fn expired_previous_values_are_purged_from_the_file_at_the_next_write() {
    let data = DataDir::new();
    let store = data.open(KEY).unwrap();
    store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
    store.put(NAME, value(NEW_SECRET), HOUR, t0()).unwrap();
    let key = MasterKey::from_bytes(KEY);
    let stored = |name: &str| {
        let map = super::local::unseal(&key.cipher(), &key.key_id(), &data.file()).unwrap();
        map[name].previous.as_ref().map(|v| text(v).to_owned())
    };
    assert_eq!(stored(NAME).as_deref(), Some(SECRET));
    // A write during the grace period keeps it; the first one after drops it.
    store
        .put("other", value("x"), HOUR, t0() + HOUR / 2)
        .unwrap();
    assert_eq!(stored(NAME).as_deref(), Some(SECRET));
    store.put("other", value("y"), HOUR, t0() + HOUR).unwrap();
    assert_eq!(stored(NAME), None);
}

// --- The master key

fn env(text: &str) -> Option<OsString> {
    Some(OsString::from(text))
}

#[test]
fn a_master_key_is_generated_once_with_owner_only_permissions() {
    let data = DataDir::new();
    let key = MasterKey::from_env_value_or_file(None, &data.dir).unwrap();
    assert_eq!(data.names(), BTreeSet::from([MASTER_KEY_FILE.to_owned()]));
    let stored = data.dir.read_to_string(MASTER_KEY_FILE).unwrap();
    assert_eq!(stored.trim(), key.to_base64().as_str());
    assert_eq!(
        STANDARD.decode(stored.trim()).unwrap().len(),
        MASTER_KEY_LEN
    );
    #[cfg(unix)]
    {
        use cap_std::fs::PermissionsExt as _;
        let mode = data
            .dir
            .metadata(MASTER_KEY_FILE)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = MasterKey::from_env_value_or_file(None, &data.dir).unwrap();
    assert_eq!(again.to_base64(), key.to_base64());
    // Two generated keys differ.
    assert_ne!(MasterKey::generate().unwrap().to_base64(), key.to_base64());
}

#[test]
fn no_key_is_generated_when_secrets_exist_without_one() {
    let data = DataDir::new();
    let key = MasterKey::from_env_value_or_file(None, &data.dir).unwrap();
    let store = LocalSecretStore::open(&data.dir, key).unwrap();
    store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
    data.dir.remove_file(MASTER_KEY_FILE).unwrap();
    let err = MasterKey::from_env_value_or_file(None, &data.dir).unwrap_err();
    assert!(matches!(err, Error::MissingMasterKey), "{err:?}");
    assert!(!data.dir.exists(MASTER_KEY_FILE));
}

#[test]
fn the_environment_variable_wins_and_is_never_replaced_by_a_fallback() {
    let data = DataDir::new();
    let from_file = MasterKey::from_env_value_or_file(None, &data.dir).unwrap();
    let from_env = MasterKey::from_bytes(OTHER_KEY);
    let chosen = MasterKey::from_env_value_or_file(env(&from_env.to_base64()), &data.dir);
    assert_eq!(chosen.unwrap().to_base64(), from_env.to_base64());
    assert_ne!(from_env.to_base64(), from_file.to_base64());
    // Surrounding whitespace (a trailing newline from a secret manager) is fine.
    let padded = format!("  {}\n", from_env.to_base64().as_str());
    let padded = MasterKey::from_env_value_or_file(env(&padded), &data.dir);
    assert_eq!(padded.unwrap().to_base64(), from_env.to_base64());
    // Set but unusable is an error, not a fallback to the file.
    for bad in [
        "",
        "SUPERSECRET!",
        &STANDARD.encode([1; 31]),
        &STANDARD.encode([1; 33]),
    ] {
        let err = MasterKey::from_env_value_or_file(env(bad), &data.dir).unwrap_err();
        match &err {
            Error::InvalidMasterKey { origin, .. } => assert_eq!(*origin, MASTER_KEY_ENV),
            other => panic!("{bad:?}: {other:?}"),
        }
        assert!(!err.to_string().contains("SUPERSECRET"), "{err}");
    }
}

#[test]
fn a_damaged_key_file_is_an_error() {
    let data = DataDir::new();
    data.dir.write(MASTER_KEY_FILE, "not a key\n").unwrap();
    let err = MasterKey::from_env_value_or_file(None, &data.dir).unwrap_err();
    match err {
        Error::InvalidMasterKey { origin, .. } => assert_eq!(origin, MASTER_KEY_FILE),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        data.dir.read_to_string(MASTER_KEY_FILE).unwrap(),
        "not a key\n"
    );
}

#[test]
fn renames_are_made_durable() {
    // cap-std opens directories with O_PATH, which cannot be synced: this checks the store's
    // way of syncing the directory actually works (a failure would only be logged).
    let data = DataDir::new();
    super::local::sync_dir(&data.dir).unwrap();
}

// --- The PostgreSQL store: what the database holds, master key rotation, several nodes

#[test]
fn the_database_holds_no_value_and_no_key_in_the_clear() {
    let db = Pg::new();
    let store = db.open(KEY, &[]);
    store.put(NAME, value(SECRET), HOUR, t0()).unwrap();
    store.put(NAME, value(NEW_SECRET), HOUR, t0()).unwrap();
    let dump = db.dump();
    assert!(dump.contains(NAME), "names are keys: {dump}");
    // Bytes are dumped as hex: a value (or a key) in the clear would show as its hex.
    for needle in [
        hex::encode("SUPERSECRET"),
        hex::encode(STANDARD.encode(SECRET)),
        hex::encode(KEY),
    ] {
        assert!(!dump.contains(&needle), "{needle} in {dump}");
    }
    // The next put on another name gets its own data key.
    store
        .put("tenants/acme/other", value(SECRET), Duration::ZERO, t0())
        .unwrap();
    let dump = db.dump();
    let wrapped: BTreeSet<&str> = dump.lines().map(|l| l.split('|').nth(2).unwrap()).collect();
    assert_eq!(wrapped.len(), 2, "{dump}");
}

#[test]
fn a_row_moved_to_another_name_does_not_open() {
    let db = Pg::new();
    let store = db.open(KEY, &[]);
    store
        .put(NAME, value(SECRET), Duration::ZERO, t0())
        .unwrap();
    store
        .put("tenants/evil/signing", value("mine"), Duration::ZERO, t0())
        .unwrap();
    // Someone with write access to the table swaps the sealed columns of two rows.
    db.sql(&format!(
        "UPDATE SCHEMA.secrets SET sealed = (SELECT sealed FROM SCHEMA.secrets WHERE name = '{NAME}'), \
         wrapped_dek = (SELECT wrapped_dek FROM SCHEMA.secrets WHERE name = '{NAME}') \
         WHERE name = 'tenants/evil/signing'"
    ));
    let error = store.get("tenants/evil/signing", t0()).unwrap_err();
    assert!(matches!(error, Error::Corrupted(_)), "{error}");
    assert_eq!(
        text(&store.get(NAME, t0()).unwrap().unwrap().current),
        SECRET
    );
}

#[test]
fn the_master_key_rotates_without_downtime() {
    let db = Pg::new();
    let old = db.open(KEY, &[]);
    old.put(NAME, value(SECRET), HOUR, t0()).unwrap();
    old.put("tenants/acme/api-key", value("key-1"), Duration::ZERO, t0())
        .unwrap();

    // A node with only the new key cannot open the rows yet, and says which key they need.
    let error = db
        .try_open(OTHER_KEY, &[])
        .unwrap()
        .get(NAME, t0())
        .unwrap_err();
    assert!(error.to_string().contains("does not hold"), "{error}");

    // Step 1: the nodes learn the new key, still sealing under the old one.
    let learning = db.open(KEY, &[OTHER_KEY]);
    learning
        .put("tenants/acme/later", value("v"), Duration::ZERO, t0())
        .unwrap();
    // Step 2: a node with the new key current rewraps every data key at open, while the nodes
    // of step 1 still open every row.
    let new = db.open(OTHER_KEY, &[KEY]);
    assert_eq!(new.rows_under_other_keys().unwrap(), 0);
    assert_eq!(text(&new.get(NAME, t0()).unwrap().unwrap().current), SECRET);
    assert_eq!(
        text(&learning.get(NAME, t0()).unwrap().unwrap().current),
        SECRET
    );
    assert_eq!(
        text(
            &learning
                .get("tenants/acme/later", t0())
                .unwrap()
                .unwrap()
                .current
        ),
        "v"
    );
    assert!(
        old.get(NAME, t0()).is_err(),
        "a node that skipped step 1 cannot"
    );
    assert_eq!(new.rewrap().unwrap(), 0, "rewrapping again changes nothing");

    // The old key can leave the ring.
    let only_new = db.open(OTHER_KEY, &[]);
    assert_eq!(
        text(
            &only_new
                .get("tenants/acme/api-key", t0())
                .unwrap()
                .unwrap()
                .current
        ),
        "key-1"
    );
    assert_eq!(only_new.get(NAME, t0()).unwrap().unwrap().version, 1);
}

#[test]
fn nodes_sharing_the_database_see_each_others_writes_at_once() {
    let db = Pg::new();
    let (a, b) = (Arc::new(db.open(KEY, &[])), Arc::new(db.open(KEY, &[])));
    a.put(NAME, value(SECRET), Duration::ZERO, t0()).unwrap();
    assert_eq!(text(&b.get(NAME, t0()).unwrap().unwrap().current), SECRET);
    // Rotations on both at once: every version is given once, and the last one stands.
    let threads: Vec<_> = (0..8)
        .map(|n| {
            let store = if n % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                store
                    .put(NAME, value(&format!("value-{n}")), Duration::ZERO, t0())
                    .unwrap()
            })
        })
        .collect();
    let versions: BTreeSet<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(versions, (2..=9).collect());
    assert_eq!(a.meta(NAME, t0()).unwrap().unwrap().version, 9);
    assert!(b.delete(NAME).unwrap());
    assert!(a.get(NAME, t0()).unwrap().is_none());
}

#[test]
fn a_database_that_is_not_there_is_a_clear_error() {
    let mut db = Pg::new();
    db.settings.url = "postgres://postgres@127.0.0.1:1/test".into();
    let error = db.try_open(KEY, &[]).unwrap_err();
    assert!(
        error.to_string().contains("connecting to PostgreSQL"),
        "{error}"
    );
    db.settings.schema = "Bad-Name".into();
    let error = db.try_open(KEY, &[]).unwrap_err();
    assert!(error.to_string().contains("schema name"), "{error}");
}
