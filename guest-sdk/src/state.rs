//! The connection's own key-value state, for cursors and change detection.
//!
//! Keys and values are bounded by the host (by default 1,024 keys of at most 256 bytes, values
//! of at most 64 KiB, 1 MiB in all). Changes become visible to the next invocation only if this
//! one succeeds: an invocation that returns an error or traps leaves the state as it was.
//!
//! ```
//! use crm_adapter_sdk::state;
//!
//! state::set("cursor", "c_17")?;
//! assert_eq!(state::get_string("cursor")?.as_deref(), Some("c_17"));
//!
//! state::set_json("agent/721995", &serde_json::json!({"hash": "9f2c"}))?;
//! let seen: Option<serde_json::Value> = state::get_json("agent/721995")?;
//! assert_eq!(seen.unwrap()["hash"], "9f2c");
//! assert_eq!(state::keys("agent/"), ["agent/721995"]);
//!
//! state::delete("cursor");
//! assert_eq!(state::get("cursor"), None);
//! # Ok::<(), crm_adapter_sdk::StateError>(())
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::AdapterError;

/// Why a state operation failed.
///
/// Converts into [`AdapterError::Failed`] with `?`: the delivery is kept and can be redriven.
///
/// ```
/// use crm_adapter_sdk::{AdapterError, StateError, state};
///
/// let err = state::set("", "x").unwrap_err();
/// assert!(matches!(err, StateError::InvalidKey(_)));
/// assert!(matches!(AdapterError::from(err), AdapterError::Failed(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The key is empty or longer than the limit.
    InvalidKey(String),
    /// The value, or the state as a whole, would exceed the limit.
    TooLarge(String),
    /// The state would hold more keys than the limit.
    TooManyKeys(String),
    /// A stored value could not be decoded, or a value could not be encoded (the `_json` and
    /// `_string` helpers).
    Encoding(String),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidKey(m) => write!(f, "invalid state key: {m}"),
            Self::TooLarge(m) => write!(f, "state too large: {m}"),
            Self::TooManyKeys(m) => write!(f, "too many state keys: {m}"),
            Self::Encoding(m) => write!(f, "state encoding: {m}"),
        }
    }
}

impl std::error::Error for StateError {}

impl From<StateError> for AdapterError {
    fn from(err: StateError) -> Self {
        AdapterError::Failed(err.to_string())
    }
}

/// The value stored under `key`, if any.
///
/// ```
/// use crm_adapter_sdk::state;
/// state::set("k", [1u8, 2, 3]).unwrap();
/// assert_eq!(state::get("k"), Some(vec![1, 2, 3]));
/// assert_eq!(state::get("other"), None);
/// ```
pub fn get(key: &str) -> Option<Vec<u8>> {
    backend::get(key)
}

/// The UTF-8 text stored under `key`, if any.
///
/// ```
/// use crm_adapter_sdk::state;
/// state::set("cursor", "c_1").unwrap();
/// assert_eq!(state::get_string("cursor").unwrap().as_deref(), Some("c_1"));
/// state::set("bin", [0xffu8]).unwrap();
/// assert!(state::get_string("bin").is_err());
/// ```
pub fn get_string(key: &str) -> Result<Option<String>, StateError> {
    get(key)
        .map(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| StateError::Encoding(format!("the value of `{key}` is not UTF-8")))
        })
        .transpose()
}

/// Stores `value` under `key`, replacing what was there.
///
/// ```
/// use crm_adapter_sdk::state;
/// state::set("cursor", "c_2").unwrap();
/// state::set("bytes", vec![0u8; 4]).unwrap();
/// assert!(state::set("big", vec![0u8; 1024 * 1024]).is_err()); // beyond the value limit
/// ```
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), StateError> {
    backend::set(key, value.as_ref())
}

/// Removes `key` (nothing happens if it is absent).
///
/// ```
/// use crm_adapter_sdk::state;
/// state::set("k", "v").unwrap();
/// state::delete("k");
/// state::delete("never-set");
/// assert_eq!(state::get("k"), None);
/// ```
pub fn delete(key: &str) {
    backend::delete(key);
}

/// The keys starting with `prefix`, in lexicographic order (`""` lists every key).
///
/// ```
/// use crm_adapter_sdk::state;
/// state::set("agent/2", "x").unwrap();
/// state::set("agent/1", "x").unwrap();
/// state::set("cursor", "x").unwrap();
/// assert_eq!(state::keys("agent/"), ["agent/1", "agent/2"]);
/// ```
pub fn keys(prefix: &str) -> Vec<String> {
    backend::keys(prefix)
}

/// Decodes the JSON stored under `key` into `T`, if any.
///
/// ```
/// use crm_adapter_sdk::state;
/// state::set_json("seen", &vec!["a", "b"]).unwrap();
/// let seen: Vec<String> = state::get_json("seen").unwrap().unwrap_or_default();
/// assert_eq!(seen, ["a", "b"]);
/// state::set("seen", "not json").unwrap();
/// assert!(state::get_json::<Vec<String>>("seen").is_err());
/// ```
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, StateError> {
    get(key)
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| {
                StateError::Encoding(format!(
                    "the value of `{key}` is not the expected JSON: {e}"
                ))
            })
        })
        .transpose()
}

/// Stores `value` as JSON under `key`.
///
/// ```
/// use crm_adapter_sdk::state;
/// state::set_json("last", &serde_json::json!({"id": 7})).unwrap();
/// assert_eq!(state::get_string("last").unwrap().as_deref(), Some(r#"{"id":7}"#));
/// ```
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| StateError::Encoding(format!("the value for `{key}` is not JSON: {e}")))?;
    set(key, bytes)
}

#[cfg(target_arch = "wasm32")]
mod backend {
    use super::StateError;
    use crate::bindings::crm::adapter::state as wit;

    pub(super) fn get(key: &str) -> Option<Vec<u8>> {
        wit::get(key)
    }

    pub(super) fn set(key: &str, value: &[u8]) -> Result<(), StateError> {
        wit::set(key, value).map_err(|e| match e {
            wit::StateError::InvalidKey(m) => StateError::InvalidKey(m),
            wit::StateError::TooLarge(m) => StateError::TooLarge(m),
            wit::StateError::TooManyKeys(m) => StateError::TooManyKeys(m),
        })
    }

    pub(super) fn delete(key: &str) {
        wit::delete(key);
    }

    pub(super) fn keys(prefix: &str) -> Vec<String> {
        wit::keys(prefix)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod backend {
    pub(super) use crate::testing::memory::{delete, get, keys, set};
}
