//! `adapter-host new NAME --lang rust|python|js`: a ready adapter project in its own folder.
//!
//! A scaffold is the custom CRM sample of its language (`sample-adapters/custom-crm-*`), renamed:
//! the same source, fixtures and tests that the host's golden tests run on every change, so a
//! scaffold cannot drift from what works. Each project stands alone: a Rust one is its own
//! cargo workspace (it never joins an enclosing one, such as this checkout's), a Python or
//! JavaScript one carries the WIT it builds against.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

/// The languages a scaffold can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Lang {
    /// Rust, with the guest SDK (cargo, target wasm32-wasip2).
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    Js,
}

#[derive(Debug, Args)]
pub(super) struct NewArgs {
    /// The adapter's name: lower case letters, digits and dashes, starting with a letter
    /// (`acme-crm`). It names the folder, the package and the component.
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// Where to create the project's folder.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The guest SDK's folder (a Rust project depends on it by path) [default: the
    /// `guest-sdk` of the checkout this binary was built from].
    #[arg(long, value_name = "DIR")]
    sdk: Option<PathBuf>,
}

/// The checkout this binary was built from.
const CHECKOUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Creates the project; returns its folder.
pub(super) fn create(args: &NewArgs) -> anyhow::Result<PathBuf> {
    check_name(&args.name)?;
    let project = args.dir.join(&args.name);
    if project.exists()
        && fs::read_dir(&project)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} already exists and is not empty: choose another name or --dir",
            project.display()
        );
    }
    let names = Names::new(&args.name);
    let files = match args.lang {
        Lang::Rust => rust_files(&names, &sdk_path(args.sdk.as_deref())?),
        Lang::Python => python_files(&names),
        Lang::Js => js_files(&names),
    };
    for (relative, text) in files.iter().chain(&common_files(args.lang, &names)) {
        let path = project.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        if relative.ends_with(".sh") {
            make_executable(&path)?;
        }
    }
    Ok(project)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        bail!(
            "invalid adapter name {name:?}: use lower case letters, digits and single dashes, \
             starting with a letter, at most 64 characters (e.g. acme-crm)"
        )
    }
}

/// The guest SDK's absolute path, checked to be one.
fn sdk_path(given: Option<&Path>) -> anyhow::Result<String> {
    let path = match given {
        Some(path) => path.to_path_buf(),
        None => Path::new(CHECKOUT).join("guest-sdk"),
    };
    let manifest = path.join("Cargo.toml");
    let is_sdk = fs::read_to_string(&manifest)
        .map(|text| text.contains("name = \"crm-adapter-sdk\""))
        .unwrap_or(false);
    if !is_sdk {
        bail!(
            "no guest SDK at {} (a folder with crm-adapter-sdk's Cargo.toml): give its \
             folder with --sdk",
            path.display()
        );
    }
    let path = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    Ok(path.display().to_string())
}

/// The forms of a name the sources use.
struct Names {
    /// `acme-crm`
    kebab: String,
    /// `acme_crm`
    snake: String,
    /// `AcmeCrm`
    pascal: String,
}

impl Names {
    fn new(name: &str) -> Self {
        let pascal = name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect();
        Self {
            kebab: name.to_owned(),
            snake: name.replace('-', "_"),
            pascal,
        }
    }

    /// A sample's text with the sample's names replaced by these, and paths made local to the
    /// project (its own `wit/`).
    fn rename(&self, text: &str, sample: &str) -> String {
        text.replace(sample, &self.kebab)
            .replace(&sample.replace('-', "_"), &self.snake)
            .replace("../../wit", "wit")
    }
}

type Files = Vec<(String, String)>;

macro_rules! sample {
    ($path:literal) => {
        include_str!(concat!("../../../sample-adapters/", $path))
    };
}

/// The fixtures every language's sample shares, and the WIT of the current world.
fn common_files(lang: Lang, names: &Names) -> Files {
    let mut files: Files = [
        (
            "deal-won.json",
            sample!("custom-crm-rust/fixtures/deal-won.json"),
        ),
        (
            "amount-as-number.json",
            sample!("custom-crm-rust/fixtures/amount-as-number.json"),
        ),
        (
            "amount-not-decimal.json",
            sample!("custom-crm-rust/fixtures/amount-not-decimal.json"),
        ),
        ("batch.json", sample!("custom-crm-rust/fixtures/batch.json")),
        (
            "task-completed.json",
            sample!("custom-crm-rust/fixtures/task-completed.json"),
        ),
    ]
    .into_iter()
    .map(|(name, text)| (format!("fixtures/{name}"), text.to_owned()))
    .collect();
    if lang != Lang::Rust {
        // The SDK brings the WIT to a Rust adapter; the others build against their own copy.
        files.push((
            "wit/adapter.wit".into(),
            include_str!("../../../wit/adapter.wit").into(),
        ));
    }
    files.push(("README.md".into(), readme(lang, names)));
    files
}

fn rust_files(names: &Names, sdk: &str) -> Files {
    let lib = names
        .rename(sample!("custom-crm-rust/src/lib.rs"), "custom-crm-rust")
        .replace("CustomCrm", &names.pascal)
        .replace(
            " The same adapter exists in Python and\n//! JavaScript beside this one, with the \
             same fixtures and golden cases.",
            "",
        );
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the component; rlib: so that native tests and benchmarks can call the adapter.
crate-type = ["cdylib", "rlib"]

[dependencies]
# The SDK brings the bindings, serde_json (with arbitrary_precision) and rust_decimal.
crm-adapter-sdk = {{ path = {sdk:?} }}

# A workspace of its own: this crate never joins an enclosing one (such as the host's, whose
# build must not see arbitrary_precision).
[workspace]

[profile.release]
# Faster code in the sandbox (a quarter less time for the host's samples than "s").
opt-level = 3
lto = true
codegen-units = 1
strip = true
"#,
        name = names.kebab
    );
    vec![
        ("Cargo.toml".into(), manifest),
        ("src/lib.rs".into(), lib),
        (".gitignore".into(), "target/\n".into()),
    ]
}

fn python_files(names: &Names) -> Files {
    let sample = "custom-crm-python";
    // The logic module is `custom_crm` in the sample; `logic` here.
    let rename = |text: &str| {
        let text = text
            .replace("import custom_crm\n", "import logic\n")
            .replace("custom_crm.", "logic.");
        names.rename(&text, sample)
    };
    vec![
        ("app.py".into(), rename(sample!("custom-crm-python/app.py"))),
        (
            "logic.py".into(),
            rename(sample!("custom-crm-python/custom_crm.py")),
        ),
        (
            "test_logic.py".into(),
            rename(sample!("custom-crm-python/test_custom_crm.py")),
        ),
        (
            "build.sh".into(),
            rename(sample!("custom-crm-python/build.sh")),
        ),
        (
            "requirements.txt".into(),
            sample!("custom-crm-python/requirements.txt").into(),
        ),
        (
            ".gitignore".into(),
            sample!("custom-crm-python/.gitignore").into(),
        ),
    ]
}

fn js_files(names: &Names) -> Files {
    let sample = "custom-crm-js";
    let rename = |text: &str| names.rename(&text.replace("custom-crm.", "logic."), sample);
    vec![
        (
            "package.json".into(),
            rename(sample!("custom-crm-js/package.json")),
        ),
        (
            "package-lock.json".into(),
            rename(sample!("custom-crm-js/package-lock.json")),
        ),
        (
            "rolldown.config.js".into(),
            rename(sample!("custom-crm-js/rolldown.config.js")),
        ),
        (
            "src/adapter.js".into(),
            rename(sample!("custom-crm-js/src/adapter.js")),
        ),
        (
            "src/logic.js".into(),
            rename(sample!("custom-crm-js/src/custom-crm.js")),
        ),
        (
            "test/logic.test.js".into(),
            rename(sample!("custom-crm-js/test/custom-crm.test.js")),
        ),
        (
            ".gitignore".into(),
            sample!("custom-crm-js/.gitignore").into(),
        ),
    ]
}

fn readme(lang: Lang, names: &Names) -> String {
    let Names { kebab, snake, .. } = names;
    let (source, setup, test, build, wasm) = match lang {
        Lang::Rust => (
            "`src/lib.rs` (the adapter, with its native tests at the bottom)",
            "rustup target add wasm32-wasip2",
            "cargo test",
            "cargo build --release --target wasm32-wasip2",
            format!("target/wasm32-wasip2/release/{snake}.wasm"),
        ),
        Lang::Python => (
            "`logic.py` (plain Python, tested natively by `test_logic.py`) and `app.py` (the \
             component's entry point: it only converts to and from the WIT types)",
            "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt",
            "python3 -m unittest",
            "COMPONENTIZE_PY=.venv/bin/componentize-py ./build.sh",
            format!("dist/{snake}.wasm"),
        ),
        Lang::Js => (
            "`src/logic.js` (plain JavaScript, tested natively by `test/logic.test.js`) and \
             `src/adapter.js` (the component's entry point: it only converts to and from the \
             WIT types)",
            "npm ci",
            "npm test",
            "npm run build",
            format!("dist/{snake}.wasm"),
        ),
    };
    format!(
        "# {kebab}\n\n\
         An adapter for the adapter host, made by `adapter-host new`. It turns the custom \
         CRM's webhook (one notification or a batch; see `fixtures/`) into `deal.won`, \
         `deal.updated` and `contact.created` events. Change it to read your CRM.\n\n\
         The code: {source}.\n\n\
         ```sh\n\
         {setup}    # once\n\
         {test}    # the tests, natively\n\
         {build}    # the component: {wasm}\n\
         adapter-host check {wasm}    # what the host sees: world, declared events\n\
         adapter-host run --webhook fixtures/deal-won.json --org org-1 {wasm}\n\
         ```\n\n\
         `adapter-host run` uses the host's own sandbox, limits and contracts: what it accepts, \
         the host accepts. The guide (`guest-sdk/README.md` in the host's checkout) explains \
         the event id rule, decimals, org scope, state and polling.\n"
    )
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_take_every_form_the_sources_need() {
        let names = Names::new("acme-crm2");
        assert_eq!(names.snake, "acme_crm2");
        assert_eq!(names.pascal, "AcmeCrm2");
        assert_eq!(
            names.rename(
                "custom-crm-js custom_crm_js ../../wit/adapter.wit",
                "custom-crm-js"
            ),
            "acme-crm2 acme_crm2 wit/adapter.wit"
        );
    }

    /// An adapter crate that joined the host's workspace would unify the SDK's serde_json
    /// features into the host: the host would then keep numbers' text (`1.10` as `1.10`),
    /// which its contracts and hashing do not expect.
    #[test]
    fn no_adapter_crate_has_joined_the_host_workspace() {
        let value: serde_json::Value = serde_json::from_str("1.10").unwrap();
        assert_eq!(
            value.to_string(),
            "1.1",
            "serde_json's arbitrary_precision reached the host build: has an adapter crate \
             joined the workspace in Cargo.toml?"
        );
    }

    #[test]
    fn bad_names_are_refused_with_the_rule() {
        for name in [
            "", "Acme", "1crm", "acme_crm", "acme-", "a--b", "acme crm", "ä",
        ] {
            let err = check_name(name).unwrap_err().to_string();
            assert!(err.contains("lower case letters"), "{name}: {err}");
        }
        check_name("acme-crm").unwrap();
    }

    #[test]
    fn no_sample_name_is_left_in_a_scaffold() {
        let names = Names::new("acme-crm");
        for (lang, files) in [
            (Lang::Rust, rust_files(&names, "/sdk")),
            (Lang::Python, python_files(&names)),
            (Lang::Js, js_files(&names)),
        ] {
            for (path, text) in files.iter().chain(&common_files(lang, &names)) {
                for leftover in ["custom-crm-", "custom_crm", "CustomCrm", "../../"] {
                    assert!(
                        !text.contains(leftover),
                        "{lang:?} {path} still says {leftover}"
                    );
                }
            }
        }
    }
}
