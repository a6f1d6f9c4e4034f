//! Builds the guest workspace (`sample-adapters/`) for wasm32-wasip2 and writes the paths of
//! the components into `$OUT_DIR/guests.rs`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
/// (constant name, cargo package, component file stem)
const GUESTS: [(&str, &str, &str); 3] = [
    ("CHAMPION_HEALTH", "champion-health", "champion_health"),
    ("NOOP", "noop", "noop"),
    ("HOSTILE", "hostile", "hostile"),
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
    for (_, package, _) in GUESTS {
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
    for (constant, _, stem) in GUESTS {
        by_name.push_str(&format!("    ({stem:?}, {constant}),\n"));
        let path = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{stem}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        out.push_str(&format!(
            "/// The `{stem}` component.\npub const {constant}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    out.push_str(&format!(
        "/// Every component by its file stem.\npub const ALL: &[(&str, &str)] = &[\n{by_name}];\n"
    ));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::write(out_dir.join("guests.rs"), out).unwrap();
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
