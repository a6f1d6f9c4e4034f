//! The `adapter-host` command line.
//!
//! `run` and `check` are the local tools of adapter authors: they use the production sandbox
//! and limits, so what passes here passes on the host.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

mod new;
mod poll;
mod replay;
mod token;
mod verify;

use crate::sandbox::{
    Adapter, ConnectionContext, Input, Limits, Outcome, PlatformLimits, PollPage, Report, Sandbox,
    StateMap, WebhookRequest,
};

/// Exit status: the adapter's events were accepted (or it deliberately ignored the input).
pub const EXIT_OK: u8 = 0;
/// Exit status: the command could not run (unreadable file, invalid component, bad input).
pub const EXIT_ERROR: u8 = 1;
/// Exit status: wrong command-line usage (reported by the argument parser).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the adapter failed (it returned an error, trapped or hit a limit).
pub const EXIT_ADAPTER_FAILED: u8 = 3;
/// Exit status: the adapter's events broke a contract.
pub const EXIT_CONTRACT_VIOLATION: u8 = 4;
/// Exit status: a request of a `--poll` run failed (refused by the egress rules, no answer,
/// or the CRM answered 429 or 5xx).
pub const EXIT_FETCH_FAILED: u8 = 5;
/// Exit status (`verify-event`): the event's provenance does not verify, or names another
/// input or component than the ones given.
pub const EXIT_UNVERIFIED: u8 = 6;
/// Exit status (`replay`): the replay computed another outcome than the recorded invocation.
pub const EXIT_DIFFERENT: u8 = 7;

#[derive(Debug, Parser)]
#[command(
    name = "adapter-host",
    version,
    about = "WebAssembly-sandboxed adapter host for CRM integrations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an adapter on a webhook body or a poll page, with the production sandbox and limits,
    /// and print its events, contract violations, logs and usage.
    ///
    /// Exit status: 0 accepted or ignored, 1 error, 2 usage, 3 adapter failed,
    /// 4 contract violation, 5 a request of a `--poll` run failed.
    Run(Box<RunArgs>),
    /// Check that a component implements the adapter world and print what it declares.
    Check(CheckArgs),
    /// Serve the hosted webhook endpoint on the embedded default (SQLite, local secret store,
    /// in-process bus), all under one data directory.
    Serve(Box<ServeArgs>),
    /// Print the OpenAPI 3.1 document of the HTTP API (as served at /openapi.json).
    Openapi,
    /// Print a management API token signed with the host's HS256 key, for local use (a
    /// deployment's tokens come from its identity provider).
    Token(token::TokenArgs),
    /// Create a ready adapter project (source, fixtures, tests, build command, README) in
    /// Rust, Python or JavaScript, from the custom CRM sample of that language.
    New(new::NewArgs),
    /// Check an event's signed provenance offline: the host's signature, that the event is
    /// unaltered, and optionally the input and adapter component it came from.
    ///
    /// Exit status: 0 verified, 1 error (unreadable file), 6 not verified.
    VerifyEvent(verify::VerifyArgs),
    /// Re-run one recorded invocation exactly (the export of
    /// GET /v1/invocations/{id}/export: input, state, seed, clock readings, recorded answers)
    /// and say whether it computes the same outcome, byte for byte.
    ///
    /// Exit status: 0 identical, 1 error, 7 different.
    Replay(replay::ReplayArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Holds the database, adapter blobs, compiled artifacts and secrets.
    #[arg(long, env = "ADAPTER_HOST_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "ADAPTER_HOST_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Provisioning file (adapters, connections, secrets) applied at start.
    #[arg(long, env = "ADAPTER_HOST_CONFIG")]
    config: Option<PathBuf>,
    /// The public URL CRMs call [default: http://LISTEN].
    #[arg(long, env = "ADAPTER_HOST_PUBLIC_URL")]
    public_url: Option<String>,
    /// A proxy (load balancer) in front of the host, as an address or CIDR range; repeat it,
    /// or separate with commas. Only a request whose TCP peer is one of them has its source
    /// read from the forwarding header (right-most hop that is not a trusted proxy); from
    /// anyone else the header is ignored. None by default.
    #[arg(
        long = "trusted-proxy",
        env = "ADAPTER_HOST_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    trusted_proxies: Vec<crate::signatures::IpRange>,
    /// The header the trusted proxies write the client's address in: `x-forwarded-for` or
    /// `forwarded` (RFC 7239). Only that one is read.
    #[arg(
        long,
        env = "ADAPTER_HOST_FORWARDED_HEADER",
        default_value = "x-forwarded-for"
    )]
    forwarded_header: crate::signatures::ForwardedHeader,
    /// Largest accepted webhook body, in bytes.
    #[arg(long, env = "ADAPTER_HOST_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Connections served at once; past it, a new one is answered 503 and closed [default:
    /// the file-descriptor limit less 128, at most 10000].
    #[arg(long, env = "ADAPTER_HOST_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a client may take to send a request's headers.
    #[arg(long, env = "ADAPTER_HOST_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds a request body may take to arrive in all.
    #[arg(long, env = "ADAPTER_HOST_BODY_TIMEOUT_SECS", default_value_t = 30)]
    body_timeout_secs: u64,
    /// How long a delivery recorded ahead of its outcome is left to its invocation before the
    /// recovery loop may run it again (after a crash, deliveries are recovered within about
    /// this time of the restart).
    #[arg(long, env = "ADAPTER_HOST_RECOVERY_LEASE_SECS", default_value_t = 15)]
    recovery_lease_secs: u64,
    /// How long the relay holds an outbox row it claimed; a relay that dies mid-publish gives
    /// its rows back when this ends.
    #[arg(long, env = "ADAPTER_HOST_RELAY_LEASE_SECS", default_value_t = 10)]
    relay_lease_secs: u64,
    /// Where the browser goes back to after connecting a CRM with OAuth, with
    /// `?oauth=connected|error&connection=<id>[&error=<code>]` [default: the callback answers
    /// a short page].
    #[arg(long, env = "ADAPTER_HOST_OAUTH_RETURN_URL", value_name = "URL")]
    oauth_return_url: Option<String>,
    /// The store: `sqlite` (in the data directory, the default) or PostgreSQL at
    /// `postgres://user@host:5432/db`, which several host nodes share (with the adapters'
    /// components and the secrets: set ADAPTER_HOST_MASTER_KEY on every node).
    #[arg(
        long,
        env = "ADAPTER_HOST_STORE",
        default_value = "sqlite",
        value_name = "sqlite|postgres://…"
    )]
    store: String,
    /// The PostgreSQL schema of this deployment's tables (created if missing).
    #[arg(
        long,
        env = "ADAPTER_HOST_STORE_SCHEMA",
        default_value = "adapter_host"
    )]
    store_schema: String,
    /// The bus events are published to: `memory` (in-process, the default) or NATS JetStream
    /// at `nats://host:4222` (what several host nodes and outside consumers share).
    #[arg(
        long,
        env = "ADAPTER_HOST_BUS",
        default_value = "memory",
        value_name = "memory|nats://…"
    )]
    bus: String,
    /// The JetStream stream events go to (created if missing).
    #[arg(long, env = "ADAPTER_HOST_NATS_STREAM", default_value = crate::bus::nats::DEFAULT_STREAM)]
    nats_stream: String,
    /// How long a stream the host creates keeps events, in seconds (0: no age limit).
    #[arg(long, env = "ADAPTER_HOST_NATS_MAX_AGE_SECS", default_value_t = 7 * 24 * 3600)]
    nats_max_age_secs: u64,
    /// A token put before every subject (`<prefix>.events.<tenant>.<type>`).
    #[arg(long, env = "ADAPTER_HOST_NATS_SUBJECT_PREFIX", value_name = "TOKEN")]
    nats_subject_prefix: Option<String>,
    /// How long a poll run holds its connection; each committed page renews it. A run cut off
    /// by a stop is taken over (from its last committed page) once this ends.
    #[arg(long, env = "ADAPTER_HOST_POLL_LEASE_SECS", default_value_t = 120)]
    poll_lease_secs: u64,
    /// Poll runs at once in this process.
    #[arg(long, env = "ADAPTER_HOST_POLL_CONCURRENCY", default_value_t = 4)]
    poll_concurrency: usize,
    /// Seconds before the next run after a failed one; doubled after each further failure,
    /// up to an hour.
    #[arg(long, env = "ADAPTER_HOST_POLL_BACKOFF_SECS", default_value_t = 60)]
    poll_backoff_secs: u64,
    /// Seconds between two health passes over every connection (each raises and resolves
    /// alerts).
    #[arg(long, env = "ADAPTER_HOST_HEALTH_INTERVAL_SECS", default_value_t = 30)]
    health_interval_secs: u64,
    /// Days raw delivery bodies and the HTTP answers recorded with them are kept (0: for
    /// good); past them a purge empties them and the delivery can no longer be redriven.
    #[arg(long, env = "ADAPTER_HOST_RETAIN_BODIES_DAYS", default_value_t = crate::retention::DEFAULT_DAYS)]
    retain_bodies_days: u64,
    /// Days invocation logs are kept (0: for good).
    #[arg(long, env = "ADAPTER_HOST_RETAIN_LOGS_DAYS", default_value_t = crate::retention::DEFAULT_DAYS)]
    retain_logs_days: u64,
    #[command(flatten)]
    jwt: token::JwtArgs,
    /// A JWKS file with the public keys (RS256, ES256) of the identity provider's tokens.
    #[arg(long, env = "ADAPTER_HOST_JWKS_FILE", value_name = "FILE")]
    jwks_file: Option<PathBuf>,
    /// A JWKS URL (https) the identity provider publishes its public keys at (RS256, ES256):
    /// fetched at start, refreshed every 5 minutes and when a token names an unknown key.
    #[arg(long, env = "ADAPTER_HOST_JWKS_URL", value_name = "URL")]
    jwks_url: Option<String>,
    /// Export OpenTelemetry traces (one per webhook delivery, pushed page and poll run) over
    /// OTLP/HTTP to this collector base URL (spans go to URL/v1/traces) [default: traces off].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Also export counters per tenant and connection (adapter_host_connection_*): one series
    /// per connection, so off by default.
    #[arg(long, env = "ADAPTER_HOST_METRICS_PER_CONNECTION")]
    metrics_per_connection: bool,
}

impl ServeArgs {
    /// How the management API verifies tokens, read from the key and JWKS files and the
    /// environment.
    fn auth(&self) -> anyhow::Result<crate::api::auth::AuthConfig> {
        use anyhow::Context as _;
        let hs256_key = self.jwt.hs256_key()?;
        let jwks = match &self.jwks_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the JWKS file {}", path.display()))?;
                Some(
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a JWKS document", path.display()))?,
                )
            }
            None => None,
        };
        let jwks_url = self
            .jwks_url
            .as_deref()
            .map(crate::api::auth::RemoteJwks::new)
            .transpose()?
            .map(std::sync::Arc::new);
        let config = crate::api::auth::AuthConfig {
            hs256_key,
            jwks,
            jwks_url,
            issuer: self.jwt.jwt_issuer.clone(),
            audience: self.jwt.jwt_audience.clone(),
        };
        config.validate()?;
        Ok(config)
    }
}

#[derive(Debug, Args)]
struct SandboxArgs {
    /// Where compiled adapters are cached [default: $XDG_CACHE_HOME/adapter-host or
    /// ~/.cache/adapter-host].
    #[arg(long, env = "ADAPTER_HOST_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile the adapter without using or filling the cache.
    #[arg(long)]
    no_cache: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The adapter component (.wasm).
    adapter: PathBuf,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["webhook", "poll"])))]
struct RunArgs {
    /// The adapter component (.wasm).
    adapter: PathBuf,
    /// Run `handle-webhook` with this file as the request body.
    #[arg(long, value_name = "BODY_FILE")]
    webhook: Option<PathBuf>,
    /// Run `handle-poll` with this file as a pushed page. Without a file, run a poll as the
    /// host does: `poll-request` names a request, it is performed (--base-url, --api or
    /// --responses), `handle-poll` takes the answer, page after page while more follow.
    #[arg(long, value_name = "PAGE_FILE", num_args = 0..=1)]
    #[allow(clippy::option_option)] // absent, `--poll`, `--poll FILE`
    poll: Option<Option<PathBuf>>,
    /// The cursor saved after the previous page (with --poll).
    #[arg(long, requires = "poll")]
    cursor: Option<String>,
    /// With --poll: the CRM's API base URL; requests go out under the host's egress rules
    /// (https, public addresses only, no redirect out of it).
    #[arg(long, value_name = "URL", requires = "poll")]
    base_url: Option<String>,
    /// With --poll: the connection's whole `api` settings as JSON (base_url,
    /// allowed_origins, allow_private, rate_limit, credential), as the API takes them.
    #[arg(long, value_name = "JSON", requires = "poll")]
    api: Option<String>,
    /// A secret the --api credential names, read from an environment variable:
    /// `NAME=ENV_VAR` (repeatable). Values never go on the command line.
    #[arg(long = "secret-env", value_name = "NAME=ENV_VAR", requires = "api")]
    secret_envs: Vec<String>,
    /// With --poll: answer the requests from this JSON file of recorded responses
    /// (`[{"method", "path", "query", "status", "headers", "body"}]`) instead of the network.
    #[arg(long, value_name = "FILE", requires = "poll", conflicts_with_all = ["base_url", "api"])]
    responses: Option<PathBuf>,
    /// With --poll: the most pages to walk.
    #[arg(long, default_value_t = 10, requires = "poll")]
    max_pages: u32,
    /// A request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The request method (with --webhook).
    #[arg(long, default_value = "POST")]
    method: String,
    /// The request path and query (with --webhook).
    #[arg(long, default_value = "/v1/hooks/local")]
    path: String,
    /// An org id events may be scoped to (repeatable).
    #[arg(long = "org", value_name = "ORG_ID")]
    orgs: Vec<String>,
    /// The org the connection belongs to (it is then allowed too). Without it the connection
    /// is platform level, the only kind that may emit platform-level events.
    #[arg(long, value_name = "ORG_ID")]
    connection_org: Option<String>,
    /// A connection setting, `key=value` (repeatable).
    #[arg(long = "setting", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// The tenant the connection belongs to.
    #[arg(long, default_value = "local-tenant")]
    tenant: String,
    /// The connection id.
    #[arg(long, default_value = "local-connection")]
    connection: String,
    /// The provider [default: the one the adapter declares].
    #[arg(long)]
    provider: Option<String>,
    /// The connection's state before the run: a JSON object of string values.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Write the state after a successful run back to the --state file.
    #[arg(long, requires = "state")]
    save_state: bool,
    /// Override the adapter's limits: a JSON object such as {"deadline_ms": 500}.
    #[arg(long, value_name = "JSON")]
    limits: Option<String>,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

/// Parses the command line, runs it, and returns the exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let otlp_endpoint = match &cli.command {
        Command::Serve(args) => args.otlp_endpoint.as_deref().filter(|url| !url.is_empty()),
        _ => None,
    };
    let telemetry = match crate::telemetry::install(default_level, otlp_endpoint) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = match cli.command {
        Command::Run(args) => block_on(run(&args)),
        Command::Check(args) => block_on(check(&args)),
        Command::Serve(args) => serve(*args, telemetry.exporting()),
        Command::Openapi => {
            print!("{}", crate::api::openapi::document());
            Ok(EXIT_OK)
        }
        Command::Token(args) => token::mint(&args).map(|token| {
            println!("{token}");
            EXIT_OK
        }),
        Command::VerifyEvent(args) => verify::verify(&args),
        Command::Replay(args) => block_on(replay::replay(&args)),
        Command::New(args) => new::create(&args).map(|project| {
            println!("created {}: see its README.md", project.display());
            EXIT_OK
        }),
    };
    // After the runtime is gone: the exporter blocks on its last requests.
    telemetry.shutdown();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn serve(args: ServeArgs, exporting_traces: bool) -> anyhow::Result<u8> {
    let auth = std::sync::Arc::new(args.auth()?);
    if !auth.enabled() {
        tracing::warn!("no JWT key configured: the management API refuses every call");
    }
    if exporting_traces {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    let options = crate::serve::ServeOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        config: args.config,
        public_base_url: args.public_url,
        trusted_proxies: crate::signatures::TrustedProxies {
            proxies: args.trusted_proxies,
            header: args.forwarded_header,
        },
        relay: crate::relay::RelayConfig {
            lease: std::time::Duration::from_secs(args.relay_lease_secs.max(1)),
            ..crate::relay::RelayConfig::default()
        },
        server: crate::server::ServerSettings {
            max_body_bytes: args.max_body_bytes,
            auth,
            requests: crate::server::RequestLimits {
                total_timeout: std::time::Duration::from_secs(args.body_timeout_secs.max(1)),
                ..crate::server::RequestLimits::default()
            },
            connections: crate::server::ConnectionSettings {
                max_connections: args.max_connections,
                header_read_timeout: std::time::Duration::from_secs(
                    args.header_timeout_secs.max(1),
                ),
                ..crate::server::ConnectionSettings::default()
            },
        },
        recovery_lease: std::time::Duration::from_secs(args.recovery_lease_secs.max(1)),
        oauth_return_url: args.oauth_return_url.clone(),
        metrics_per_connection: args.metrics_per_connection,
        postgres: match args.store.as_str() {
            "sqlite" => None,
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Some(crate::serve::PostgresOptions {
                    url: url.to_owned(),
                    schema: args.store_schema.clone(),
                })
            }
            other => anyhow::bail!(
                "--store {other:?}: give `sqlite` or a PostgreSQL URL (postgres://user@host/db)"
            ),
        },
        nats: match args.bus.as_str() {
            "memory" => None,
            url if url.starts_with("nats://") || url.starts_with("tls://") => {
                Some(crate::bus::NatsSettings {
                    url: url.to_owned(),
                    stream: args.nats_stream.clone(),
                    max_age: std::time::Duration::from_secs(args.nats_max_age_secs),
                    subject_prefix: args.nats_subject_prefix.clone(),
                })
            }
            other => {
                anyhow::bail!("--bus {other:?}: give `memory` or a NATS URL (nats://host:4222)")
            }
        },
        poller: crate::poll::PollerSettings {
            lease: std::time::Duration::from_secs(args.poll_lease_secs.max(1)),
            concurrency: args.poll_concurrency.max(1),
            backoff_base: std::time::Duration::from_secs(args.poll_backoff_secs.max(1)),
            ..crate::poll::PollerSettings::default()
        },
        health: crate::health::monitor::HealthSettings {
            tick: std::time::Duration::from_secs(args.health_interval_secs.max(1)),
        },
        retention: crate::retention::RetentionSettings {
            bodies: crate::retention::RetentionSettings::days(args.retain_bodies_days),
            logs: crate::retention::RetentionSettings::days(args.retain_logs_days),
            ..crate::retention::RetentionSettings::default()
        },
        ..crate::serve::ServeOptions::default()
    };
    tokio::runtime::Runtime::new()?.block_on(crate::serve::serve(options))?;
    Ok(EXIT_OK)
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
    Some(base.join("adapter-host"))
}

/// Runs a local command's future on a runtime of its own.
fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

async fn load(path: &Path, args: &SandboxArgs, limits: Limits) -> anyhow::Result<Adapter> {
    let wasm = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let cache = if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(default_cache_dir)
    };
    let sandbox = Sandbox::new(PlatformLimits::default(), cache.as_deref())?;
    sandbox
        .load(&wasm, limits)
        .await
        .with_context(|| format!("loading {}", path.display()))
}

async fn check(args: &CheckArgs) -> anyhow::Result<u8> {
    let adapter = load(&args.adapter, &args.sandbox, Limits::default()).await?;
    if args.sandbox.json {
        let json = serde_json::json!({
            "sha256": adapter.sha256(),
            "size_bytes": adapter.size_bytes(),
            "world": adapter.world_version(),
            "adapter": adapter.info(),
            "limits": adapter.limits(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", describe_text(&adapter));
        println!("ok: implements {}", adapter.world_version().export());
    }
    Ok(EXIT_OK)
}

fn describe_text(adapter: &Adapter) -> String {
    let info = adapter.info();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "adapter   {} {} (provider: {})",
        info.name, info.version, info.provider
    );
    let _ = writeln!(
        out,
        "component {} bytes, sha256 {}",
        adapter.size_bytes(),
        adapter.sha256()
    );
    let _ = writeln!(out, "event types:");
    for event_type in &info.event_types {
        if event_type.decimal_fields.is_empty() {
            let _ = writeln!(out, "  {}", event_type.name);
        } else {
            let _ = writeln!(
                out,
                "  {}  decimals: {}",
                event_type.name,
                event_type.decimal_fields.join(", ")
            );
        }
    }
    out
}

async fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let limits = match &args.limits {
        Some(json) => serde_json::from_str::<Limits>(json).context("parsing --limits")?,
        None => Limits::default(),
    };
    let driven = matches!(args.poll, Some(None));
    let input = if driven {
        None
    } else {
        Some(read_input(args)?)
    };
    let api = poll::api_settings(args.api.as_deref(), args.base_url.as_deref())?;
    if driven && api.is_none() && args.responses.is_none() {
        bail!("--poll without a page file needs --base-url, --api or --responses");
    }
    if !driven && (api.is_some() || args.responses.is_some()) {
        bail!("--base-url, --api and --responses go with --poll without a page file");
    }
    let state = match &args.state {
        Some(path) => read_state(path)?,
        None => StateMap::new(),
    };
    let adapter = load(&args.adapter, &args.sandbox, limits).await?;
    let mut allowed_org_ids = args.orgs.clone();
    if let Some(org) = &args.connection_org
        && !allowed_org_ids.contains(org)
    {
        allowed_org_ids.push(org.clone());
    }
    let context = ConnectionContext {
        connection_id: args.connection.clone(),
        tenant_id: args.tenant.clone(),
        org_id: args.connection_org.clone(),
        provider: args
            .provider
            .clone()
            .unwrap_or_else(|| adapter.info().provider.clone()),
        allowed_org_ids,
        settings: args
            .settings
            .iter()
            .map(|s| split_pair(s, '=', "--setting"))
            .collect::<anyhow::Result<_>>()?,
        api_base_url: api.as_ref().map(|api| api.base_url.clone()).or_else(|| {
            args.responses
                .as_ref()
                .map(|_| "https://recorded.invalid".into())
        }),
    };
    let Some(input) = input else {
        let target = match (api, &args.responses) {
            (Some(api), _) => poll::Target::Network {
                api: Box::new(api),
                secrets: args
                    .secret_envs
                    .iter()
                    .map(|pair| {
                        let (name, var) = split_pair(pair, '=', "--secret-env")?;
                        let value = std::env::var(&var)
                            .with_context(|| format!("--secret-env {name}: ${var} is not set"))?;
                        Ok((name, value))
                    })
                    .collect::<anyhow::Result<_>>()?,
            },
            (None, Some(path)) => poll::Target::Recorded(path.clone().into_boxed_path()),
            (None, None) => unreachable!("checked above"),
        };
        let (status, state) = poll::run(
            &adapter,
            &context,
            target,
            args.cursor.clone(),
            state,
            args.max_pages,
            args.sandbox.json,
        )
        .await?;
        if let (true, Some(path)) = (args.save_state, &args.state) {
            write_state(path, &state)?;
        }
        return Ok(status);
    };
    let report = adapter
        .invoke(&input, &context, crate::sandbox::Env::with_state(state))
        .await;
    if let (true, Some(path), Some(state)) = (args.save_state, &args.state, &report.state) {
        write_state(path, state)?;
    }
    if args.sandbox.json {
        let json = serde_json::json!({
            "adapter": { "sha256": adapter.sha256(), "info": adapter.info() },
            "outcome": report.outcome,
            "usage": report.usage,
            "log": report.log,
            "state": report.state.as_ref().map(state_json),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", report_text(&adapter, &report));
    }
    Ok(exit_code(&report.outcome))
}

/// The exit status for an outcome.
pub fn exit_code(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Accepted { .. } | Outcome::Ignored { .. } => EXIT_OK,
        Outcome::AdapterError { .. } | Outcome::Failed { .. } => EXIT_ADAPTER_FAILED,
        Outcome::Rejected { .. } => EXIT_CONTRACT_VIOLATION,
    }
}

fn split_pair(s: &str, separator: char, flag: &str) -> anyhow::Result<(String, String)> {
    match s.split_once(separator) {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => bail!("{flag} expects `name{separator}value`, got {s:?}"),
    }
}

fn read_input(args: &RunArgs) -> anyhow::Result<Input> {
    let read =
        |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    if let Some(Some(path)) = &args.poll {
        return Ok(Input::Poll(PollPage::pushed(
            read(path)?,
            Some("application/json".into()),
            args.cursor.clone(),
            SystemTime::now(),
        )));
    }
    let Some(path) = &args.webhook else {
        bail!("one of --webhook or --poll is required");
    };
    let headers = args
        .headers
        .iter()
        .map(|h| split_pair(h, ':', "--header"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (path_only, query) = args.path.split_once('?').unwrap_or((&args.path, ""));
    Ok(Input::Webhook(WebhookRequest {
        method: args.method.to_ascii_uppercase(),
        path: path_only.to_owned(),
        query: query.to_owned(),
        headers,
        body: read(path)?,
        received_at: SystemTime::now(),
    }))
}

fn read_state(path: &Path) -> anyhow::Result<StateMap> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let map: BTreeMap<String, String> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: the state file must be a JSON object of string values",
            path.display()
        )
    })?;
    Ok(map.into_iter().map(|(k, v)| (k, v.into_bytes())).collect())
}

fn state_json(state: &StateMap) -> BTreeMap<&str, String> {
    state
        .iter()
        .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

fn write_state(path: &Path, state: &StateMap) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&state_json(state))?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn report_text(adapter: &Adapter, report: &Report) -> String {
    let info = adapter.info();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "adapter  {} {} ({})",
        info.name,
        info.version,
        &adapter.sha256()[..12]
    );
    match &report.outcome {
        Outcome::Accepted {
            events,
            next_cursor,
            more,
            records,
            request,
        } => {
            let _ = writeln!(out, "outcome  accepted: {} event(s)", events.len());
            if let Some(records) = records {
                let _ = writeln!(out, "records  {records} on the page");
            }
            for (index, event) in events.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "\nevent {index}  {}  {}/{}  org: {}{}",
                    event.event_type,
                    event.entity_type,
                    event.entity_id,
                    event.org_id.as_deref().unwrap_or("(platform)"),
                    event
                        .dedupe_key
                        .as_ref()
                        .map(|k| format!("  dedupe: {k}"))
                        .unwrap_or_default(),
                );
                let _ = writeln!(out, "  {}", event.payload);
            }
            if let Some(cursor) = next_cursor {
                let _ = writeln!(out, "\nnext cursor: {cursor}");
            }
            if *more {
                let _ = writeln!(out, "more pages follow");
            }
            if let Some(request) = request {
                let _ = writeln!(out, "\nrequest: {} {}", request.method, request.url);
            }
        }
        Outcome::Ignored { reason } => {
            let _ = writeln!(out, "outcome  ignored: {reason}");
        }
        Outcome::AdapterError { kind, message } => {
            let kind = serde_json::to_value(kind).unwrap_or_default();
            let _ = writeln!(
                out,
                "outcome  adapter error ({}): {message}",
                kind.as_str().unwrap_or("?")
            );
        }
        Outcome::Rejected { violations } => {
            let _ = writeln!(
                out,
                "outcome  rejected: {} contract violation(s)",
                violations.len()
            );
            for v in violations {
                let _ = writeln!(
                    out,
                    "  event {} {}  {}: {}{}",
                    v.event_index,
                    v.pointer,
                    v.rule.as_str(),
                    v.message,
                    v.value
                        .as_ref()
                        .map(|value| format!(" (value: {value})"))
                        .unwrap_or_default()
                );
            }
        }
        Outcome::Failed { failure } => {
            let _ = writeln!(
                out,
                "outcome  failed ({}): {}",
                failure.kind.as_str(),
                failure.message
            );
            if !failure.backtrace.is_empty() {
                let _ = writeln!(out, "  guest stack: {}", failure.backtrace.join(" <- "));
            }
        }
    }
    let log = &report.log;
    if !log.lines.is_empty() || log.truncated {
        let _ = writeln!(
            out,
            "\nlog ({} bytes{}):",
            log.bytes,
            if log.truncated { ", truncated" } else { "" }
        );
        for line in &log.lines {
            let _ = writeln!(out, "  {:<6} {}", line.level.as_str(), line.message);
        }
        if log.truncated {
            let _ = writeln!(out, "  … {} more bytes dropped", log.dropped_bytes);
        }
    }
    if let Some(state) = &report.state {
        let _ = writeln!(out, "\nstate after the run ({} keys):", state.len());
        for (key, value) in state_json(state) {
            let _ = writeln!(out, "  {key} = {value}");
        }
    }
    let usage = &report.usage;
    let _ = writeln!(
        out,
        "\nusage    {} µs, fuel {}{}, peak memory {} KiB, in {} B, out {} B, log {} B",
        usage.duration.as_micros(),
        usage.fuel_consumed,
        usage
            .fuel_limit
            .map(|l| format!(" of {l}"))
            .unwrap_or_default(),
        usage.peak_memory_bytes / 1024,
        usage.bytes_in,
        usage.bytes_out,
        usage.log_bytes,
    );
    out
}
