//! A connection's key-value state as an invocation sees it.
//!
//! The invocation works on a copy; the caller persists its changes only when the invocation
//! succeeded, so a failed invocation never leaves half its changes behind. What the invocation
//! read (keys, and prefixes it listed) and wrote is recorded ([`StateAccess`]), so that its
//! changes can be committed key by key, checked against what it read: invocations of one
//! connection that touch different keys never hold each other up.

use std::collections::{BTreeMap, BTreeSet};

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

/// What one invocation did with its connection's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateAccess {
    /// Keys it read before writing them (what it saw of them mattered).
    pub reads: BTreeSet<String>,
    /// Prefixes it listed keys under.
    pub prefixes: BTreeSet<String>,
    /// The final value of each key it wrote (`None`: deleted).
    pub writes: BTreeMap<String, Option<Vec<u8>>>,
}

impl StateAccess {
    /// Whether the invocation neither read nor wrote the state.
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.prefixes.is_empty() && self.writes.is_empty()
    }
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
    access: StateAccess,
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
            access: StateAccess::default(),
        }
    }

    /// The value under `key`.
    pub fn get(&mut self, key: &str) -> Option<&[u8]> {
        // Reading back its own write depends on nothing stored.
        if !self.access.writes.contains_key(key) {
            self.access.reads.insert(key.to_owned());
        }
        self.map.get(key).map(Vec::as_slice)
    }

    /// Stores `value` under `key`, within the limits.
    pub fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), StateError> {
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
        self.access.writes.insert(key.clone(), Some(value.clone()));
        self.map.insert(key, value);
        Ok(())
    }

    /// Removes `key` (nothing happens when it is absent).
    pub fn delete(&mut self, key: &str) {
        if let Some(old) = self.map.remove(key) {
            self.total_bytes -= entry_bytes(key, &old);
            self.access.writes.insert(key.to_owned(), None);
        } else if self.access.writes.contains_key(key) {
            self.access.writes.insert(key.to_owned(), None);
        } else {
            // Deleting what is not there changes nothing, but depends on its absence.
            self.access.reads.insert(key.to_owned());
        }
    }

    /// Keys starting with `prefix`, in order.
    pub fn keys(&mut self, prefix: &str) -> Vec<String> {
        self.access.prefixes.insert(prefix.to_owned());
        self.map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The whole state after the invocation when it changed, and what it read and wrote.
    pub fn finish(self) -> (Option<StateMap>, StateAccess) {
        let changed = !self.access.writes.is_empty();
        (changed.then_some(self.map), self.access)
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
        assert_eq!(state.get("cursor"), Some(&b"1"[..]));
        let (changed, access) = state.finish();
        assert_eq!(changed, None);
        assert_eq!(access.reads, ["cursor".to_owned()].into());

        let mut state = State::new(map, &Limits::default());
        state.delete("missing");
        state.delete("cursor");
        let (changed, access) = state.finish();
        assert_eq!(changed, Some(StateMap::new()));
        assert_eq!(access.writes, [("cursor".to_owned(), None)].into());
        assert_eq!(
            access.reads,
            ["missing".to_owned()].into(),
            "deleting an absent key depends on its absence"
        );
    }

    #[test]
    fn records_what_was_read_before_it_was_written_and_the_final_writes() {
        let mut state = State::new(StateMap::new(), &Limits::default());
        assert_eq!(state.get("a"), None);
        state.set("a".into(), b"1".to_vec()).unwrap();
        state.set("b".into(), b"1".to_vec()).unwrap();
        assert_eq!(state.get("b"), Some(&b"1"[..]));
        state.set("b".into(), b"2".to_vec()).unwrap();
        state.keys("x/");
        let (_, access) = state.finish();
        assert_eq!(
            access.reads,
            ["a".to_owned()].into(),
            "b was read back, not read"
        );
        assert_eq!(access.prefixes, ["x/".to_owned()].into());
        assert_eq!(
            access.writes,
            [
                ("a".to_owned(), Some(b"1".to_vec())),
                ("b".to_owned(), Some(b"2".to_vec()))
            ]
            .into()
        );
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
