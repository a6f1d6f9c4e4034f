//! How both backends store what [`crate::vault`] seals: values are sealed as they are written
//! (in the write's transaction, with the tenant it belongs to) and opened as rows are read, so
//! no caller ever sees a sealed value, and an erased one reads as its empty form with a flag.

use std::sync::Arc;

use super::{Error, Result};
use crate::vault::{Opened, Purpose, Vault};

/// Why an erased tenant's waiting events and subscriber deliveries are dead.
pub const ERASED: &str = "erased: the tenant's data key was destroyed";

/// What an erased event payload reads as.
pub const ERASED_PAYLOAD: &str = "null";

/// A stored body or answer, opened: its bytes (empty once erased) and whether it was erased.
pub fn open_bytes(
    vault: &Vault,
    purpose: Purpose,
    stored: Vec<u8>,
) -> crate::vault::Result<(Vec<u8>, bool)> {
    Ok(vault.open(purpose, stored)?.or_erased(Vec::new()))
}

/// A stored log or payload, opened: its text (`erased` once erased) and whether it was erased.
pub fn open_text(
    vault: &Vault,
    purpose: Purpose,
    stored: String,
    erased: impl FnOnce() -> String,
) -> crate::vault::Result<(String, bool)> {
    Ok(match vault.open_text(purpose, stored)? {
        Opened::Plain(text) => (text, false),
        Opened::Erased => (erased(), true),
    })
}

/// Seals what one write stores for one tenant.
#[derive(Debug, Clone, Copy)]
pub struct Sealer<'a> {
    /// The keys.
    pub vault: &'a Vault,
    /// The tenant the write's rows belong to.
    pub tenant_id: &'a str,
}

impl Sealer<'_> {
    /// A body or answer, sealed.
    pub fn bytes(self, purpose: Purpose, plaintext: &[u8]) -> Result<Vec<u8>> {
        Ok(self.vault.seal(self.tenant_id, purpose, plaintext)?)
    }

    /// A log or payload, sealed.
    pub fn text(self, purpose: Purpose, plaintext: &str) -> Result<String> {
        Ok(self.vault.seal_text(self.tenant_id, purpose, plaintext)?)
    }
}

/// Destroys `tenant_id`'s data key (on a blocking thread: the secret store may do I/O); whether
/// there was one. The first step of [`super::Store::erase_tenant`] in every backend.
pub async fn shred(vault: Arc<Vault>, tenant_id: &str) -> Result<bool> {
    let tenant = tenant_id.to_owned();
    Ok(tokio::task::spawn_blocking(move || vault.shred(&tenant))
        .await
        .map_err(|e| Error::Backend(format!("destroying the data key: {e}")))??)
}
