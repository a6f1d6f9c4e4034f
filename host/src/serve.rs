//! `adapter-host serve`: the embedded default, from one data directory and no other server; or
//! one of several nodes sharing PostgreSQL (store, blobs, secrets) and NATS JetStream (bus),
//! each keeping only its compiled-artifact cache in its data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::bus::MemoryBus;
use crate::config::{Config, provision};
use crate::metrics::Metrics;
use crate::pipeline::{Host, Settings};
use crate::relay::{Relay, RelayConfig};
use crate::sandbox::{PlatformLimits, Sandbox};
use crate::secrets::{
    Keyring, LocalSecretStore, PostgresSecretSettings, PostgresSecretStore, SecretStore,
};
use crate::server::{ServerSettings, app};
use crate::store::postgres::PostgresStore;
use crate::store::{BlobStore, FsBlobStore, SqliteStore, Store};
use crate::vault::Vault;

/// What `serve` needs to start.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Holds the database, blobs, compiled artifacts and secrets.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Provisioning file applied at start.
    pub config: Option<PathBuf>,
    /// The URL CRMs call (default: `http://<listen>`).
    pub public_base_url: Option<String>,
    /// The proxies in front of the host whose forwarding header names a request's source.
    pub trusted_proxies: crate::signatures::TrustedProxies,
    /// How the outbox relay paces itself.
    pub relay: RelayConfig,
    /// HTTP settings.
    pub server: ServerSettings,
    /// How long a delivery left `received` is leased to its invocation before recovery may
    /// take it again.
    pub recovery_lease: std::time::Duration,
    /// How the poll scheduler paces itself.
    pub poller: crate::poll::PollerSettings,
    /// How the health monitor paces itself.
    pub health: crate::health::monitor::HealthSettings,
    /// How long bodies and logs are kept.
    pub retention: crate::retention::RetentionSettings,
    /// How long an upload waits for its compile before it answers `compiling` (202).
    pub upload_compile_wait: std::time::Duration,
    /// Where the browser goes back to after an OAuth connection.
    pub oauth_return_url: Option<String>,
    /// The bus: NATS JetStream, or (`None`) the in-process bus.
    pub nats: Option<crate::bus::NatsSettings>,
    /// The store, blobs and secrets: PostgreSQL, or (`None`) SQLite, files and the sealed
    /// secrets file in the data directory.
    pub postgres: Option<PostgresOptions>,
    /// Export counters per tenant and connection too (unbounded label values: off by default).
    pub metrics_per_connection: bool,
    /// Seal tenants' payloads at rest (see `vault.rs`): on, always, for the CLI. Off only to
    /// measure what sealing costs (the webhook load bench): payloads are then stored in the
    /// clear, and values sealed before read as erased.
    pub seal_at_rest: bool,
    /// Record what replays each invocation exactly (see `replay.rs`): on, always, for the CLI.
    /// Off only to measure what recording costs (the webhook load bench).
    pub record_replays: bool,
}

/// Where the shared store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// `postgres://user@host:5432/db`.
    pub url: String,
    /// The schema of this deployment's tables (several deployments can share a database).
    pub schema: String,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            config: None,
            public_base_url: None,
            trusted_proxies: crate::signatures::TrustedProxies::default(),
            relay: RelayConfig::default(),
            server: ServerSettings::default(),
            recovery_lease: Settings::default().recovery_lease,
            poller: crate::poll::PollerSettings::default(),
            health: crate::health::monitor::HealthSettings::default(),
            retention: crate::retention::RetentionSettings::default(),
            upload_compile_wait: Settings::default().upload_compile_wait,
            oauth_return_url: None,
            nats: None,
            postgres: None,
            metrics_per_connection: false,
            seal_at_rest: true,
            record_replays: true,
        }
    }
}

/// Opens everything under `data_dir` and assembles a host (no listening yet).
pub async fn open_host(options: &ServeOptions) -> anyhow::Result<Host> {
    let data_dir = &options.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let dir = Dir::open_ambient_dir(data_dir, ambient_authority())
        .with_context(|| format!("opening {}", data_dir.display()))?;
    // Secrets first: the store seals every tenant's payloads under data keys kept there.
    let vault_of = |secrets: &Arc<dyn SecretStore>| {
        Arc::new(match options.seal_at_rest {
            true => Vault::new(Arc::clone(secrets)),
            false => Vault::disabled(),
        })
    };
    let (store, blobs, secrets): (Arc<dyn Store>, Arc<dyn BlobStore>, Arc<dyn SecretStore>) =
        match &options.postgres {
            None => {
                let secrets: Arc<dyn SecretStore> = Arc::new(
                    LocalSecretStore::open_default(&dir).context("opening the secret store")?,
                );
                let vault = vault_of(&secrets);
                (
                    Arc::new(
                        SqliteStore::open_sealed(data_dir, vault)
                            .context("opening the database")?,
                    ),
                    Arc::new(FsBlobStore::open(&dir).context("opening the blob store")?),
                    secrets,
                )
            }
            Some(pg) => {
                // The key first: nothing is created in the database for a node that cannot
                // open its secrets.
                let keys = Keyring::from_env().context("the secret store's master key")?;
                let settings = PostgresSecretSettings {
                    url: pg.url.clone(),
                    schema: pg.schema.clone(),
                };
                let secrets: Arc<dyn SecretStore> = Arc::new(
                    PostgresSecretStore::open(&settings, keys)
                        .context("opening the PostgreSQL secret store")?,
                );
                let vault = vault_of(&secrets);
                let store = PostgresStore::connect_sealed(&pg.url, &pg.schema, vault)
                    .await
                    .context("opening the PostgreSQL store")?;
                let blobs = store.blobs();
                (Arc::new(store), Arc::new(blobs), secrets)
            }
        };
    let sandbox = Sandbox::new(PlatformLimits::default(), Some(data_dir))?;
    let bus: Arc<dyn crate::bus::Bus> = match &options.nats {
        Some(nats) => Arc::new(crate::bus::NatsBus::connect(nats.clone()).await?),
        None => Arc::new(MemoryBus::new()),
    };
    let settings = Settings {
        public_base_url: options
            .public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", options.listen))
            .trim_end_matches('/')
            .to_owned(),
        public_url_set: options.public_base_url.is_some(),
        trusted_proxies: options.trusted_proxies.clone(),
        recovery_lease: options.recovery_lease,
        poller: options.poller.clone(),
        health: options.health.clone(),
        retention: options.retention.clone(),
        upload_compile_wait: options.upload_compile_wait,
        oauth_return_url: options.oauth_return_url.clone(),
        record_replays: options.record_replays,
        ..Settings::default()
    };
    let host = Host::new(
        store,
        blobs,
        secrets,
        sandbox,
        bus,
        if options.metrics_per_connection {
            Metrics::per_connection()
        } else {
            Metrics::new()
        },
        settings,
    );
    // The provenance key, made on a new installation: a node that cannot sign does not start.
    let provenance = host.provenance().clone();
    tokio::task::spawn_blocking(move || provenance.ensure_key())
        .await
        .context("the provenance key thread")?
        .context("the provenance signing key")?;
    if let Some(path) = &options.config {
        let config = Config::load(path)?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        provision(&host, &config, base)
            .await
            .with_context(|| format!("applying {}", path.display()))?;
    }
    // A replay still running was cut off by the previous stop: nothing runs it any more.
    let interrupted = host
        .store()
        .interrupt_replays(crate::store::now_millis())
        .await
        .context("closing interrupted replays")?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "replays cut off by a previous stop are marked interrupted"
        );
    }
    Ok(host)
}

/// Runs the host until Ctrl-C or SIGTERM.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let host = open_host(&options).await?;
    let (stop_relay, relay_stopped) = tokio::sync::watch::channel(false);
    let relay = Relay::new(
        host.store().clone(),
        host.bus().clone(),
        host.metrics().clone(),
        options.relay.clone(),
        host.outbox_appended(),
    )
    .with_secrets(host.secrets().clone());
    if let Some(remote) = &options.server.auth.jwks_url {
        let client = reqwest::Client::new();
        // Tokens cannot be checked before the keys are in; webhooks need no token, so a
        // provider that is down at start is logged, not fatal, and fetched again later.
        match remote.refresh(&client).await {
            Ok(keys) => tracing::info!(keys, "JWKS fetched"),
            Err(e) => {
                tracing::error!(error = %e, "the JWKS could not be fetched; retrying in the background")
            }
        }
        tokio::spawn(std::sync::Arc::clone(remote).run(client, relay_stopped.clone()));
    }
    let relay = tokio::spawn(relay.run(relay_stopped.clone()));
    let resumed = host
        .resume_compiles()
        .await
        .context("listing the versions left compiling")?;
    if resumed > 0 {
        tracing::info!(
            resumed,
            "compiling again the adapter versions a stop left compiling"
        );
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        data_dir = %options.data_dir.display(),
        "adapter host serving"
    );
    // Deliveries a previous stop cut off are run again in the background, once the host
    // listens: one that crashed the host cannot keep it from serving (and is parked after its
    // attempt limit).
    let recovery = tokio::spawn(host.clone().run_recovery(relay_stopped.clone()));
    // Scheduled polls, once the host listens, like recovery.
    let poller = tokio::spawn(host.clone().run_poller(relay_stopped.clone()));
    // Connection health and alerts, on every node (the store keeps one open alert per
    // connection and rule).
    let health = tokio::spawn(host.clone().run_health_monitor(relay_stopped.clone()));
    // Bodies and logs past their time, on every node (batches are shared out).
    let retention = tokio::spawn(host.clone().run_retention(relay_stopped));
    let connections = options.server.connections.clone();
    crate::server::listen::serve(
        listener,
        app(host, options.server),
        connections,
        shutdown_signal(),
        std::time::Duration::from_secs(30),
    )
    .await?;
    let _ = stop_relay.send(true);
    relay.await?;
    recovery.await?;
    poller.await?;
    health.await?;
    retention.await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
