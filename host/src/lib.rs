//! The adapter host: runs tenants' CRM adapters (WebAssembly components) in a sandbox and
//! enforces the platform's event contracts on everything they emit.
//!
//! - [`sandbox`]: loads components and runs each invocation in a fresh, bounded instance.
//! - [`contracts`]: the checks every emitted event must pass (envelope, decimals, scope).
//! - [`cli`]: the `adapter-host` command line, including the local runner for adapter authors.

pub mod cli;
pub use adapter_contracts as contracts;
pub mod sandbox;
