//! `adapter-host replay INVOCATION.json ADAPTER.wasm`: re-runs one recorded invocation (the
//! export of `GET /v1/invocations/{id}/export`) exactly as it ran, on this machine, and says
//! whether it computes the same outcome byte for byte; with another component
//! (`--any-component`), what a fix would change for that input.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::{EXIT_DIFFERENT, EXIT_OK, SandboxArgs, load};
use crate::replay::{self, InvocationExport};

#[derive(Debug, Args)]
pub(super) struct ReplayArgs {
    /// The exported invocation (`GET /v1/invocations/{id}/export`).
    invocation: PathBuf,
    /// The adapter component (.wasm): the one that ran, unless --any-component.
    adapter: PathBuf,
    /// Replay on a component other than the one that ran (a fix to test against it).
    #[arg(long)]
    any_component: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

/// Prints what the replay computed and where it differs; the exit status says whether it is
/// the same.
pub(super) async fn replay(args: &ReplayArgs) -> anyhow::Result<u8> {
    let text = std::fs::read(&args.invocation)
        .with_context(|| format!("reading {}", args.invocation.display()))?;
    let export: InvocationExport = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not an exported invocation (the JSON of GET /v1/invocations/{{id}}/export)",
            args.invocation.display()
        )
    })?;
    let adapter = load(&args.adapter, &args.sandbox, export.limits.clone()).await?;
    let replayed = replay::replay(&adapter, &export, args.any_component)
        .await
        .map_err(|why| anyhow::anyhow!(why))?;
    if args.sandbox.json {
        println!("{}", serde_json::to_string_pretty(&replayed)?);
    } else {
        if replayed.identical {
            println!(
                "identical: invocation {} computes the same outcome (sha256 {})",
                export.invocation_id, replayed.replayed_sha256
            );
        } else {
            println!(
                "different: invocation {} computed sha256 {}, the replay {}",
                export.invocation_id, replayed.recorded_sha256, replayed.replayed_sha256
            );
            for pointer in &replayed.differences {
                println!("  differs at {pointer}");
            }
        }
        for divergence in &replayed.divergences {
            println!("  note: {divergence}");
        }
    }
    Ok(if replayed.identical {
        EXIT_OK
    } else {
        EXIT_DIFFERENT
    })
}
