//! A connection's key-value state as an invocation sees it.
//!
//! The invocation works on a copy; the caller persists the copy only when the invocation
//! succeeded, so a failed invocation never leaves half its changes behind.

use std::collections::BTreeMap;

use super::limits::Limits;

/// A connection's state: keys to byte values, ordered by key.
pub type StateMap = BTreeMap<String, Vec<u8>>;

/// Why a state write was refused (mirrors the WIT `state-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The key is empty or too long.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The value or the whole state would be too large.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The state would hold too many keys.
    #[error("too many keys: {0}")]
    TooManyKeys(String),
}

/// The state of one invocation, bounded by its [`Limits`].
#[derive(Debug)]
pub struct State {
    map: StateMap,
    total_bytes: u64,
    max_keys: usize,
    max_key_bytes: usize,
    max_value_bytes: u64,
    max_total_bytes: u64,
    changed: bool,
    used: bool,
}

fn entry_bytes(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

impl State {
    /// The state as loaded for an invocation under `limits`.
    pub fn new(map: StateMap, limits: &Limits) -> Self {
        let total_bytes = map.iter().map(|(k, v)| entry_bytes(k, v)).sum();
        Self {
            map,
            total_bytes,
            max_keys: limits.state_keys as usize,
            max_key_bytes: limits.state_key_bytes as usize,
            max_value_bytes: limits.state_value_bytes,
            max_total_bytes: limits.state_total_bytes,
            changed: false,
            used: false,
        }
    }

    /// The value under `key`.
    pub fn get(&mut self, key: &str) -> Option<&[u8]> {
        self.used = true;
        self.map.get(key).map(Vec::as_slice)
    }

    /// Stores `value` under `key`, within the limits.
    pub fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), StateError> {
        self.used = true;
        if key.is_empty() || key.len() > self.max_key_bytes {
            return Err(StateError::InvalidKey(format!(
                "keys must be 1 to {} bytes (got {})",
                self.max_key_bytes,
                key.len()
            )));
        }
        if value.len() as u64 > self.max_value_bytes {
            return Err(StateError::TooLarge(format!(
                "a value may hold at most {} bytes (got {})",
                self.max_value_bytes,
                value.len()
            )));
        }
        let previous = self.map.get(&key).map_or(0, |old| entry_bytes(&key, old));
        if previous == 0 && self.map.len() >= self.max_keys {
            return Err(StateError::TooManyKeys(format!(
                "the state may hold at most {} keys",
                self.max_keys
            )));
        }
        let total = self.total_bytes - previous + entry_bytes(&key, &value);
        if total > self.max_total_bytes {
            return Err(StateError::TooLarge(format!(
                "the state may hold at most {} bytes in all (this write would make {total})",
                self.max_total_bytes
            )));
        }
        self.total_bytes = total;
        self.changed = true;
        self.map.insert(key, value);
        Ok(())
    }

    /// Removes `key` (nothing happens when it is absent).
    pub fn delete(&mut self, key: &str) {
        self.used = true;
        if let Some(old) = self.map.remove(key) {
            self.total_bytes -= entry_bytes(key, &old);
            self.changed = true;
        }
    }

    /// Keys starting with `prefix`, in order.
    pub fn keys(&mut self, prefix: &str) -> Vec<String> {
        self.used = true;
        self.map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether the invocation read or wrote the state (any call of the state import).
    pub fn used(&self) -> bool {
        self.used
    }

    /// The state after the invocation, or `None` when it did not change.
    pub fn into_changes(self) -> Option<StateMap> {
        self.changed.then_some(self.map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            state_keys: 2,
            state_key_bytes: 4,
            state_value_bytes: 8,
            state_total_bytes: 14,
            ..Limits::default()
        }
    }

    #[test]
    fn enforces_key_value_count_and_total_limits() {
        let mut state = State::new(StateMap::new(), &limits());
        assert!(matches!(
            state.set(String::new(), vec![]),
            Err(StateError::InvalidKey(_))
        ));
        assert!(matches!(
            state.set("toolong".into(), vec![]),
            Err(StateError::InvalidKey(_))
        ));
        assert!(matches!(
            state.set("a".into(), vec![0; 9]),
            Err(StateError::TooLarge(_))
        ));
        state.set("a".into(), vec![0; 6]).unwrap();
        assert!(matches!(
            state.set("b".into(), vec![0; 8]),
            Err(StateError::TooLarge(_))
        ));
        state.set("b".into(), vec![0; 6]).unwrap();
        assert!(matches!(
            state.set("c".into(), vec![]),
            Err(StateError::TooManyKeys(_))
        ));
        // Overwriting an existing key is not a new key.
        state.set("a".into(), vec![1]).unwrap();
        assert_eq!(state.get("a"), Some(&[1u8][..]));
    }

    #[test]
    fn reports_changes_only_when_something_changed() {
        let mut map = StateMap::new();
        map.insert("cursor".into(), b"1".to_vec());
        let mut state = State::new(map.clone(), &Limits::default());
        assert!(!state.used());
        assert_eq!(state.get("cursor"), Some(&b"1"[..]));
        assert!(state.used(), "a read is a use");
        assert_eq!(state.into_changes(), None);

        let mut state = State::new(map, &Limits::default());
        state.delete("missing");
        state.delete("cursor");
        assert_eq!(state.into_changes(), Some(StateMap::new()));
    }

    #[test]
    fn lists_keys_by_prefix_in_order() {
        let mut state = State::new(StateMap::new(), &Limits::default());
        for key in ["rec:2", "rec:1", "cursor", "rec;"] {
            state.set(key.into(), vec![]).unwrap();
        }
        assert_eq!(state.keys("rec:"), ["rec:1", "rec:2"]);
        assert_eq!(state.keys(""), ["cursor", "rec:1", "rec:2", "rec;"]);
    }
}
