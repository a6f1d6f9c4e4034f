//! The adapter host: runs tenants' CRM adapters (WebAssembly components) in a sandbox and
//! enforces the platform's event contracts on everything they emit.
//!
//! - [`sandbox`]: loads components and runs each invocation in a fresh, bounded instance.
//! - [`contracts`]: the checks every emitted event must pass (envelope, decimals, scope).
//! - [`signatures`]: verifies CRM webhook signatures by each connection's scheme.
//! - [`secrets`]: the secret store: signing secrets, API keys and tokens, sealed, rotatable.
//! - [`store`]: durable storage: connections, adapters, the inbox, the outbox, subscribers.
//! - [`metrics`], [`telemetry`]: Prometheus metrics; logs and OpenTelemetry traces.
//! - [`cli`]: the `adapter-host` command line, including the local runner for adapter authors.

pub mod api;
pub mod bus;
pub mod cli;
pub mod config;
pub mod drift;
pub mod egress;
pub mod export;
pub mod health;
pub mod metrics;
pub mod oauth;
pub mod pipeline;
pub mod poll;
pub mod provenance;
pub mod relay;
pub mod replay;
pub mod retention;
pub use adapter_contracts as contracts;
pub mod sandbox;
pub mod secrets;
pub mod serve;
pub mod server;
pub mod signatures;
pub mod store;
pub mod telemetry;
pub mod vault;
