//! Builds the guest workspace (`sample-adapters/`) for wasm32-wasip2 and writes the paths of
//! the components into `$OUT_DIR/guests.rs`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
/// Components the tests name by constant: (constant name, component file stem). Every other
/// adapter (each folder of `sample-adapters/` or `sample-adapters/test-guests/` with a
/// `Cargo.toml`) is built too and found by stem through `ALL`.
const NAMED: [(&str, &str); 5] = [
    ("CHAMPION_HEALTH", "champion_health"),
    ("NOOP", "noop"),
    ("HOSTILE", "hostile"),
    ("LEGACY_V0_1", "legacy_v0_1"),
    ("POLLER", "poller"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    let guests = root.join("sample-adapters");
    watch(&root.join("wit"));
    watch(&root.join("guest-sdk"));
    watch(&guests);

    ensure_target();
    // A target folder of its own: the outer cargo holds a lock on the workspace's.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&guests)
        .args(["build", "--release", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    let packages = guest_packages(&guests);
    for package in &packages {
        command.args(["-p", package]);
    }
    // Flags meant for the host build must not reach the guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .expect("running cargo to build the test guests");
    assert!(
        status.success(),
        "building the guests in sample-adapters/ failed (see above)"
    );

    let mut out = String::new();
    let mut by_name = String::new();
    for package in &packages {
        let stem = package.replace('-', "_");
        let path = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{stem}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        let path = path.display().to_string();
        by_name.push_str(&format!("    ({stem:?}, {path:?}),\n"));
        if let Some((constant, _)) = NAMED.iter().find(|(_, named)| *named == stem) {
            out.push_str(&format!(
                "/// The `{stem}` component.\npub const {constant}: &str = {path:?};\n"
            ));
        }
    }
    for (constant, stem) in NAMED {
        assert!(
            out.contains(&format!("pub const {constant}:")),
            "no guest crate builds {stem}.wasm"
        );
    }
    let polyglot = target_dir.join("polyglot").display().to_string();
    out.push_str(&format!(
        "/// Where scripts/build-polyglot.sh puts the Python and JavaScript samples.\n\
         pub const POLYGLOT_DIR: &str = {polyglot:?};\n"
    ));
    out.push_str(&format!(
        "/// Every component by its file stem.\npub const ALL: &[(&str, &str)] = &[\n{by_name}];\n"
    ));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::write(out_dir.join("guests.rs"), out).unwrap();
}

/// The guest crates: every folder of `sample-adapters/` and `sample-adapters/test-guests/`
/// holding a `Cargo.toml` (its package name is the folder's name), sorted.
fn guest_packages(guests: &Path) -> Vec<String> {
    let mut packages = Vec::new();
    for dir in [guests.to_path_buf(), guests.join("test-guests")] {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.join("Cargo.toml").is_file() {
                packages.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    packages.sort();
    packages
}

/// Installs the wasm target through rustup when it is missing, so `cargo test` needs no step
/// of its own on a fresh machine.
fn ensure_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = sysroot.is_some_and(|root| root.join("lib/rustlib").join(TARGET).exists());
    if installed {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "the {TARGET} target is missing and `rustup target add {TARGET}` failed"
    );
}

/// Re-runs this script when anything under `dir` changes, except build output.
fn watch(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        println!("cargo:rerun-if-changed={}", dir.display());
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|name| name == "target") {
            continue;
        }
        if path.is_dir() {
            watch(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
