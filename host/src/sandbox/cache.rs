//! Compiled components, cached on disk by content hash.
//!
//! Compiling a component takes tens of milliseconds (seconds for Python or JavaScript guests);
//! loading a precompiled artifact takes a fraction of that. Artifacts live under the data
//! directory, opened through `cap-std` so that no name can reach outside it, in a folder per
//! engine fingerprint (a wasmtime upgrade or a configuration change starts a fresh folder).

use std::io::{ErrorKind, Write};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine::compatibility_fingerprint;
use super::{Error, Result};

/// The artifact cache of one engine.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: Dir,
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ArtifactCache {
    /// Opens (creating it if needed) the cache for `engine` under `data_dir/artifacts`.
    pub fn open(data_dir: &Dir, engine: &Engine) -> Result<Self> {
        let folder = format!("artifacts/{}", compatibility_fingerprint(engine));
        data_dir
            .create_dir_all(&folder)
            .and_then(|()| data_dir.open_dir(&folder))
            .map(|dir| Self { dir })
            .map_err(|e| Error::Cache(format!("opening the artifact cache {folder}: {e}")))
    }

    /// Opens the cache under the directory at `path` (created if needed).
    pub fn open_path(path: &std::path::Path, engine: &Engine) -> Result<Self> {
        std::fs::create_dir_all(path)
            .and_then(|()| Dir::open_ambient_dir(path, ambient_authority()))
            .map_err(|e| Error::Cache(format!("opening {}: {e}", path.display())))
            .and_then(|dir| Self::open(&dir, engine))
    }

    /// The component whose source has the hash `sha256`: loaded from the cache when a valid
    /// artifact is there, otherwise compiled from `wasm` and stored.
    pub fn load_or_compile(&self, engine: &Engine, sha256: &str, wasm: &[u8]) -> Result<Component> {
        if let Some(component) = self.load(engine, sha256) {
            return Ok(component);
        }
        let artifact = engine
            .precompile_component(wasm)
            .map_err(|e| Error::Invalid(format!("not a valid component: {e:#}")))?;
        // A component the engine cannot load (the pool's caps refuse it) is refused, not
        // cached: caching it would mean a recompile at every later try.
        let component = load_fresh(engine, &artifact)?;
        // Storing is an optimisation: a read-only or full disk must not stop the adapter.
        if let Err(e) = self.store(sha256, &artifact) {
            tracing::warn!(%sha256, error = %e, "could not cache a compiled adapter");
        }
        Ok(component)
    }

    /// Removes the artifact of `sha256` (a component compiled, then refused by a later check:
    /// a refused component is never kept).
    pub fn forget(&self, sha256: &str) {
        for name in [format!("{sha256}.cwasm.sha256"), format!("{sha256}.cwasm")] {
            match self.dir.remove_file(&name) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(%sha256, error = %e, "could not remove a refused artifact")
                }
            }
        }
    }

    fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let artifact = match self.dir.read(format!("{sha256}.cwasm")) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(%sha256, error = %e, "unreadable cached artifact");
                return None;
            }
        };
        // The checksum guards against a torn or corrupted file: wasmtime trusts artifact bytes.
        let expected = self
            .dir
            .read_to_string(format!("{sha256}.cwasm.sha256"))
            .ok()?;
        if expected.trim() != sha256_hex(&artifact) {
            tracing::warn!(%sha256, "cached artifact fails its checksum; recompiling");
            return None;
        }
        deserialize(engine, &artifact)
            .inspect_err(|e| tracing::warn!(%sha256, error = %e, "cached artifact not loadable"))
            .ok()
    }

    fn store(&self, sha256: &str, artifact: &[u8]) -> std::io::Result<()> {
        // Write then rename, so that a reader never sees half a file; the checksum goes last.
        for (name, bytes) in [
            (format!("{sha256}.cwasm"), artifact.to_vec()),
            (
                format!("{sha256}.cwasm.sha256"),
                sha256_hex(artifact).into_bytes(),
            ),
        ] {
            let tmp = format!("{name}.tmp-{}", std::process::id());
            let mut file = self.dir.create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            self.dir.rename(&tmp, &self.dir, &name)?;
        }
        Ok(())
    }
}

/// Loads an artifact compiled a moment ago: an error here is the component's (a cap of the
/// engine it exceeds), not the cache's.
fn load_fresh(engine: &Engine, artifact: &[u8]) -> Result<Component> {
    deserialize(engine, artifact).map_err(|e| match e {
        Error::Cache(message) => Error::Invalid(format!(
            "the engine cannot run this component: {}",
            message.trim_start_matches("loading a compiled artifact: ")
        )),
        other => other,
    })
}

/// Loads an artifact produced by `Engine::precompile_component`.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> Result<Component> {
    // SAFETY: wasmtime requires the bytes to come from `precompile_component` of a compatible
    // engine. They do: the artifact was produced by this process a moment ago, or read back
    // from this engine's own cache folder after its checksum matched. wasmtime itself rejects
    // artifacts of another version or configuration.
    unsafe { Component::deserialize(engine, artifact) }
        .map_err(|e| Error::Cache(format!("loading a compiled artifact: {e:#}")))
}
