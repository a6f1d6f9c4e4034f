//! A secret store in memory, for tests of other modules. Same semantics as the local store,
//! nothing persisted.

use std::sync::{PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use super::{
    ActiveSecret, Result, SecretMap, SecretMeta, SecretStore, SecretValue, apply_end_grace,
    apply_put, list_map, validate_name, validate_prefix, validate_put,
};

/// A [`SecretStore`] that keeps everything in memory. Its `Debug` shows no values.
#[derive(Debug, Default)]
pub struct InMemorySecretStore {
    secrets: RwLock<SecretMap>,
}

impl InMemorySecretStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while holding the lock cannot leave the map half-updated (every update is one
    // insert or field assignment), so a poisoned lock is used as is.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, SecretMap> {
        self.secrets.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SecretMap> {
        self.secrets.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SecretStore for InMemorySecretStore {
    fn get(&self, name: &str, now: SystemTime) -> Result<Option<ActiveSecret>> {
        validate_name(name)?;
        Ok(self.read().get(name).map(|entry| entry.active(now)))
    }

    fn put(&self, name: &str, value: SecretValue, grace: Duration, now: SystemTime) -> Result<u64> {
        validate_put(name, &value, grace, now)?;
        Ok(apply_put(&mut self.write(), name, value, grace, now))
    }

    fn create(&self, name: &str, value: SecretValue, now: SystemTime) -> Result<bool> {
        validate_put(name, &value, Duration::ZERO, now)?;
        let mut map = self.write();
        if map.contains_key(name) {
            return Ok(false);
        }
        apply_put(&mut map, name, value, Duration::ZERO, now);
        Ok(true)
    }

    fn end_grace(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        Ok(apply_end_grace(&mut self.write(), name))
    }

    fn delete(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        Ok(self.write().remove(name).is_some())
    }

    fn meta(&self, name: &str, now: SystemTime) -> Result<Option<SecretMeta>> {
        validate_name(name)?;
        Ok(self.read().get(name).map(|entry| entry.meta(name, now)))
    }

    fn list(&self, prefix: &str, now: SystemTime) -> Result<Vec<SecretMeta>> {
        validate_prefix(prefix)?;
        Ok(list_map(&self.read(), prefix, now))
    }
}
