//! `adapter-host verify-event EVENT.json --keys KEYS.json`: checks an event's signed
//! provenance offline, and optionally that it came from a given input and adapter component.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use super::{EXIT_OK, EXIT_UNVERIFIED};
use crate::provenance::{self, KeySet};
use crate::sandbox::sha256_hex;

#[derive(Debug, Args)]
pub(super) struct VerifyArgs {
    /// The event as the management API (`GET /v1/events/{id}`), the bus or a subscriber
    /// gives it (JSON with `metadata.provenance`); `-` reads it from standard input.
    event: PathBuf,
    /// The host's public keys: the JWKS served at
    /// /.well-known/adapter-host/provenance-keys, saved to a file.
    #[arg(long, value_name = "KEYS.json")]
    keys: PathBuf,
    /// Also check that the event was produced from this input (the webhook body or the poll
    /// page, byte for byte).
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Also check that the event was produced by this adapter component.
    #[arg(long, value_name = "WASM")]
    adapter: Option<PathBuf>,
}

fn read(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .context("reading standard input")?;
        Ok(bytes)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Prints what was proved, or why not; the exit status says which.
pub(super) fn verify(args: &VerifyArgs) -> anyhow::Result<u8> {
    let event: Value = serde_json::from_slice(&read(&args.event)?)
        .with_context(|| format!("{} is not JSON", args.event.display()))?;
    let keys: KeySet = serde_json::from_slice(&read(&args.keys)?).with_context(|| {
        format!(
            "{} is not a key set (the JSON of {})",
            args.keys.display(),
            provenance::WELL_KNOWN_PATH
        )
    })?;
    let verified = match provenance::verify(&event, &keys) {
        Ok(verified) => verified,
        Err(why) => {
            println!("not verified: {why}");
            return Ok(EXIT_UNVERIFIED);
        }
    };
    let (adapter_id, version, component) = &verified.adapter;
    let mut failures = Vec::new();
    if let Some(input) = &args.input {
        let actual = sha256_hex(&read(input)?);
        if actual != verified.input_sha256 {
            failures.push(format!(
                "{} is not the input the event came from (sha256 {actual}, the record names {})",
                input.display(),
                verified.input_sha256
            ));
        }
    }
    if let Some(wasm) = &args.adapter {
        let actual = sha256_hex(&read(wasm)?);
        if &actual != component {
            failures.push(format!(
                "{} is not the component that produced the event (sha256 {actual}, the record \
                 names {component})",
                wasm.display()
            ));
        }
    }
    if !failures.is_empty() {
        for failure in failures {
            println!("not verified: {failure}");
        }
        return Ok(EXIT_UNVERIFIED);
    }
    println!(
        "verified: signed by key {} at {}; the event is unaltered",
        verified.kid, verified.signed_at
    );
    println!("adapter  {adapter_id} version {version}, component sha256 {component}");
    println!(
        "input    sha256 {}{}",
        verified.input_sha256,
        if args.input.is_some() {
            " (matches)"
        } else {
            ""
        }
    );
    if let Some(wasm) = &args.adapter {
        println!("component matches {}", wasm.display());
    }
    Ok(EXIT_OK)
}
