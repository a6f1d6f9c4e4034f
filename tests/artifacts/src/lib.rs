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

/// The path of the component whose file stem is `stem`: built from a guest crate by this
/// crate's build script (`champion_health`, `hostile`, …), or, for a sample adapter in
/// another language (`custom_crm_python`, `custom_crm_js`), by `scripts/build-polyglot.sh`
/// (which `scripts/test.sh` runs first).
pub fn component(stem: &str) -> Option<String> {
    if let Some((_, path)) = ALL.iter().find(|(name, _)| *name == stem) {
        return Some((*path).to_owned());
    }
    let path = std::path::Path::new(POLYGLOT_DIR).join(format!("{stem}.wasm"));
    path.is_file().then(|| path.display().to_string())
}
