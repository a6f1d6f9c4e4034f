//! Paths of the guest components the tests and benchmarks use, built from source by this
//! crate's build script (so a test never runs a stale `.wasm`).

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The repository's root directory.
pub const REPO_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// A file under `sample-adapters/`, e.g. `fixture("champion-health/fixtures/x.json")`.
pub fn sample_file(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(REPO_ROOT)
        .join("sample-adapters")
        .join(relative)
}

/// The path of the component built from the guest crate whose file stem is `stem`
/// (`champion_health`, `hostile`, …).
pub fn component(stem: &str) -> Option<&'static str> {
    ALL.iter()
        .find(|(name, _)| *name == stem)
        .map(|(_, path)| *path)
}
