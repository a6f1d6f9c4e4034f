//! Adapter components as files: `blobs/<sha256>.wasm` under the data directory, opened through
//! `cap-std` so that no name can reach outside it.

use std::io::{ErrorKind, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use cap_std::ambient_authority;
use cap_std::fs::Dir;

use super::{BlobStore, Error, Result, sha256_hex};

/// A [`BlobStore`] in a folder of the data directory.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    dir: Arc<Dir>,
}

/// Distinguishes the temporary files of concurrent writes within this process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::Backend(format!("{what}: {e}"))
}

/// Refuses anything but 64 lower-case hex digits: the name becomes a file name.
pub(super) fn check_hash(sha256: &str) -> Result<()> {
    let ok = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "not a lower-case hex sha256: {sha256:?}"
        )))
    }
}

impl FsBlobStore {
    /// Opens (creating it if needed) the `blobs` folder of `data_dir`.
    pub fn open(data_dir: &Dir) -> Result<Self> {
        data_dir
            .create_dir_all("blobs")
            .and_then(|()| data_dir.open_dir("blobs"))
            .map(|dir| Self { dir: Arc::new(dir) })
            .map_err(|e| io_error("opening the blob folder", e))
    }

    /// Opens the blob folder of the data directory at `path` (created if needed).
    pub fn open_path(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path)
            .and_then(|()| Dir::open_ambient_dir(path, ambient_authority()))
            .map_err(|e| io_error(&format!("opening {}", path.display()), e))
            .and_then(|dir| Self::open(&dir))
    }

    fn put_blocking(dir: &Dir, bytes: &[u8]) -> Result<String> {
        let sha256 = sha256_hex(bytes);
        let name = format!("{sha256}.wasm");
        if dir.exists(&name) {
            return Ok(sha256);
        }
        // Write, sync, rename, sync the folder: a crash leaves either no file or the whole
        // file, never a torn one under the final name.
        let tmp = format!(
            "{name}.tmp-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let written = dir.create(&tmp).and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| dir.rename(&tmp, dir, &name)) {
            let _ = dir.remove_file(&tmp);
            return Err(io_error("writing a blob", e));
        }
        // The rename is durable once the folder itself is synced.
        dir.open(".")
            .and_then(|folder| folder.sync_all())
            .map_err(|e| io_error("syncing the blob folder", e))?;
        Ok(sha256)
    }

    fn get_blocking(dir: &Dir, sha256: &str) -> Result<Option<Vec<u8>>> {
        check_hash(sha256)?;
        let bytes = match dir.read(format!("{sha256}.wasm")) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("reading a blob", e)),
        };
        if sha256_hex(&bytes) != sha256 {
            return Err(Error::Backend(format!(
                "the blob {sha256} is corrupted (its content has another hash)"
            )));
        }
        Ok(Some(bytes))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Backend(format!("blob task failed: {e}")))?
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn put(&self, bytes: Vec<u8>) -> Result<String> {
        let dir = Arc::clone(&self.dir);
        blocking(move || Self::put_blocking(&dir, &bytes)).await
    }

    async fn get(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        let dir = Arc::clone(&self.dir);
        let sha256 = sha256.to_owned();
        blocking(move || Self::get_blocking(&dir, &sha256)).await
    }

    async fn contains(&self, sha256: &str) -> Result<bool> {
        check_hash(sha256)?;
        let dir = Arc::clone(&self.dir);
        let name = format!("{sha256}.wasm");
        blocking(move || {
            dir.try_exists(&name)
                .map_err(|e| io_error("looking up a blob", e))
        })
        .await
    }
}
