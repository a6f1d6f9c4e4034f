//! The host's configuration file (TOML): declarative provisioning of adapters, connections and
//! secrets at start, until the management API exists (and for GitOps-style setups after).
//!
//! ```toml
//! [[adapters]]
//! tenant_id = "demo-tenant"
//! name = "champion-health"
//! wasm = "sample-adapters/target/wasm32-wasip2/release/champion_health.wasm"
//!
//! [[connections]]
//! id = "demo-champion"
//! tenant_id = "demo-tenant"
//! provider = "custom"
//! adapter = "champion-health"
//! signature = { scheme = "standard_webhooks" }
//! secret = "demo/champion/signing"
//! allowed_orgs = ["org-456"]
//!
//! [[secrets]]
//! name = "demo/champion/signing"
//! value_env = "DEMO_SIGNING_SECRET"   # or value_file = "...", or value = "..." (demos only)
//!
//! [[subscribers]]                      # outgoing webhooks, signed the Standard Webhooks way
//! tenant_id = "demo-tenant"
//! url = "https://commissions.example/hooks/crm"
//! event_types = ["deal.*", "contact.created"]   # empty or absent: every event type
//! secret = "demo/subscriber/signing"
//! ```
//!
//! Connections and subscribers hold only the *name* of their secret; values go to the secret
//! store. A subscriber is identified by its tenant, org and URL: changing its event types,
//! secret or `enabled` updates it in place (its queue is kept).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::pipeline::Host;
use crate::sandbox::Limits;
use crate::secrets::SecretValue;
use crate::signatures::SchemeConfig;
use crate::store::{
    self, ConnectionSpec, ConnectionStatus, NewAdapter, NewAdapterVersion, NewSubscriber,
    SubscriberUpdate,
};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Adapters to register (a new version whenever the file's component changes).
    #[serde(default)]
    pub adapters: Vec<AdapterEntry>,
    /// Connections to create or update.
    #[serde(default)]
    pub connections: Vec<ConnectionEntry>,
    /// Secrets to put in the secret store.
    #[serde(default)]
    pub secrets: Vec<SecretEntry>,
    /// Outgoing webhook subscribers to create or update.
    #[serde(default)]
    pub subscribers: Vec<SubscriberEntry>,
}

/// An adapter and the component file of its current version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterEntry {
    /// Owning tenant.
    pub tenant_id: String,
    /// Owning org (absent: platform level).
    #[serde(default)]
    pub org_id: Option<String>,
    /// Unique within the tenant.
    pub name: String,
    /// The `.wasm` component, relative to the config file.
    pub wasm: PathBuf,
    /// Limits of its invocations (defaults for anything absent).
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// A connection: a CRM's way into one tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionEntry {
    /// Appears in the webhook URL.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Owning org (absent: platform level).
    #[serde(default)]
    pub org_id: Option<String>,
    /// `salesforce`, `hubspot`, `zoho`, `zenoti`, `custom`.
    pub provider: String,
    /// Name of an adapter of the same tenant (declared above or registered before).
    pub adapter: String,
    /// Signature scheme and its settings.
    pub signature: SchemeConfig,
    /// Name of the signing secret in the secret store.
    #[serde(default)]
    pub secret: Option<String>,
    /// Orgs its events may be scoped to.
    #[serde(default)]
    pub allowed_orgs: Vec<String>,
    /// Non-secret settings handed to the adapter.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// How the host reaches the CRM's API (secrets named in full, as `secret` is).
    #[serde(default)]
    pub api: Option<crate::egress::ApiAccess>,
    /// Polling settings.
    #[serde(default)]
    pub polling: Option<crate::poll::PollingConfig>,
    /// What the webhook checks besides the signature: source allow list, capability URL
    /// (its secret named in full, as `secret` is), methods.
    #[serde(default)]
    pub webhook: Option<crate::signatures::WebhookGuard>,
    /// Payload fields withheld from export (dropped before the outbox).
    #[serde(default)]
    pub export: crate::export::ExportPolicy,
    /// `false` makes the endpoint answer 404.
    #[serde(default = "yes")]
    pub enabled: bool,
}

pub(crate) fn yes() -> bool {
    true
}

/// An outgoing webhook subscriber: an endpoint receiving a tenant's events.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberEntry {
    /// The tenant whose events it receives.
    pub tenant_id: String,
    /// Only this org's events (and platform-level ones); absent: all the tenant's.
    #[serde(default)]
    pub org_id: Option<String>,
    /// Where events are POSTed (`http` or `https`).
    pub url: String,
    /// Event types it wants (`deal.won`, `deal.*`); empty: all.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Name of its signing secret in the secret store (a `whsec_` value, or raw bytes).
    pub secret: String,
    /// Whether it receives events.
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// A secret value to store, from the environment, a file, or (for demos) inline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretEntry {
    /// Its name in the secret store.
    pub name: String,
    /// Inline value: for demos only, the file then holds a secret.
    #[serde(default)]
    pub value: Option<String>,
    /// Name of an environment variable holding the value.
    #[serde(default)]
    pub value_env: Option<String>,
    /// A file holding the value (relative to the config file).
    #[serde(default)]
    pub value_file: Option<PathBuf>,
    /// When the value changes, how long the previous one keeps verifying (seconds).
    #[serde(default)]
    pub grace_secs: u64,
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

impl SecretEntry {
    fn value(&self, base: &Path) -> anyhow::Result<Vec<u8>> {
        match (&self.value, &self.value_env, &self.value_file) {
            (Some(value), None, None) => Ok(value.clone().into_bytes()),
            (None, Some(var), None) => std::env::var(var)
                .map(String::into_bytes)
                .with_context(|| format!("secret {}: environment variable {var}", self.name)),
            (None, None, Some(file)) => {
                let path = base.join(file);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("secret {}: reading {}", self.name, path.display()))?;
                Ok(text.trim_end().as_bytes().to_vec())
            }
            _ => bail!(
                "secret {}: give exactly one of value, value_env, value_file",
                self.name
            ),
        }
    }
}

/// Applies `config` (whose relative paths are relative to `base`) to the host: idempotent, so
/// it runs at every start.
pub async fn provision(host: &Host, config: &Config, base: &Path) -> anyhow::Result<()> {
    let now = SystemTime::now();
    for entry in &config.secrets {
        let value = entry.value(base)?;
        let secrets = host.secrets();
        let current = secrets.get(&entry.name, now)?;
        if current.is_some_and(|active| active.current.expose() == value.as_slice()) {
            continue;
        }
        let grace = Duration::from_secs(entry.grace_secs);
        secrets.put(&entry.name, SecretValue::new(value), grace, now)?;
        tracing::info!(secret = %entry.name, "secret stored");
    }

    let store = host.store();
    let mut versions = BTreeMap::new();
    for entry in &config.adapters {
        let path = base.join(&entry.wasm);
        let wasm = std::fs::read(&path)
            .with_context(|| format!("adapter {}: reading {}", entry.name, path.display()))?;
        let limits = entry.limits.clone().unwrap_or_default();
        let loaded = host
            .sandbox()
            .load(&wasm, limits)
            .await
            .with_context(|| format!("adapter {}", entry.name))?;
        let adapter = match store.find_adapter(&entry.tenant_id, &entry.name).await? {
            Some(adapter) => adapter,
            None => {
                store
                    .create_adapter(NewAdapter {
                        tenant_id: entry.tenant_id.clone(),
                        org_id: entry.org_id.clone(),
                        name: entry.name.clone(),
                        created_at: store::now_millis(),
                    })
                    .await?
            }
        };
        let existing = store
            .adapter_versions_of(&adapter.id, loaded.sha256())
            .await?;
        let version = match existing.iter().rev().find(|v| {
            serde_json::from_str::<Limits>(&v.limits_json).ok().as_ref() == Some(loaded.limits())
        }) {
            Some(version) => version.version,
            None => {
                host.blobs().put(wasm).await?;
                let version = store
                    .add_adapter_version(NewAdapterVersion {
                        status: crate::store::VersionStatus::Ready,
                        adapter_id: adapter.id.clone(),
                        sha256: loaded.sha256().to_owned(),
                        size_bytes: loaded.size_bytes(),
                        info_json: serde_json::to_string(&loaded.record())?,
                        limits_json: serde_json::to_string(loaded.limits())?,
                        created_at: store::now_millis(),
                        created_by: "config".into(),
                    })
                    .await?;
                tracing::info!(adapter = %entry.name, version = version.version, "adapter version added");
                version.version
            }
        };
        versions.insert(
            (entry.tenant_id.clone(), entry.name.clone()),
            (adapter.id, version),
        );
    }

    for entry in &config.connections {
        entry
            .signature
            .validate()
            .with_context(|| format!("connection {}: signature", entry.id))?;
        let guard = entry.webhook.clone().unwrap_or_default();
        guard
            .validate(&entry.signature)
            .with_context(|| format!("connection {}: webhook", entry.id))?;
        if let Some(name) = &guard.capability_secret {
            host.check_capability(name)
                .map_err(|e| anyhow::anyhow!("connection {}: webhook: {e}", entry.id))?;
        }
        entry
            .export
            .validate()
            .map_err(|e| anyhow::anyhow!("connection {}: export: {e}", entry.id))?;
        let key = (entry.tenant_id.clone(), entry.adapter.clone());
        let (adapter_id, version) = match versions.get(&key) {
            Some(found) => found.clone(),
            None => {
                let adapter = store
                    .find_adapter(&entry.tenant_id, &entry.adapter)
                    .await?
                    .with_context(|| {
                        format!("connection {}: no adapter {}", entry.id, entry.adapter)
                    })?;
                let latest = store
                    .latest_adapter_version(&adapter.id)
                    .await?
                    .with_context(|| format!("adapter {} has no version", entry.adapter))?;
                (adapter.id, latest)
            }
        };
        let api = entry
            .api
            .clone()
            .map(crate::egress::ApiAccess::with_defaults);
        if let Some(api) = &api {
            crate::egress::check_api(api)
                .map_err(|e| anyhow::anyhow!("connection {}: {e}", entry.id))?;
        }
        if let Some(polling) = &entry.polling {
            polling
                .validate()
                .map_err(|e| anyhow::anyhow!("connection {}: {e}", entry.id))?;
        }
        let spec = ConnectionSpec {
            id: entry.id.clone(),
            tenant_id: entry.tenant_id.clone(),
            org_id: entry.org_id.clone(),
            provider: entry.provider.clone(),
            adapter_id,
            adapter_version: version,
            signature_json: serde_json::to_string(&entry.signature)?,
            allowed_org_ids: entry.allowed_orgs.clone(),
            secret_refs_json: serde_json::to_string(&entry.secret.iter().collect::<Vec<_>>())?,
            settings_json: serde_json::to_string(&entry.settings)?,
            polling_json: entry
                .polling
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?,
            api_json: api.as_ref().map(serde_json::to_string).transpose()?,
            webhook_json: (!guard.is_empty())
                .then(|| serde_json::to_string(&guard))
                .transpose()?,
            export_json: (!entry.export.is_empty())
                .then(|| serde_json::to_string(&entry.export))
                .transpose()?,
            status: if entry.enabled {
                ConnectionStatus::Active
            } else {
                ConnectionStatus::Disabled
            },
        };
        let (_, upsert) = store
            .upsert_connection(spec, "config", store::now_millis())
            .await?;
        tracing::info!(connection = %entry.id, ?upsert, "connection provisioned");
    }

    for (position, entry) in config.subscribers.iter().enumerate() {
        // The URL may carry a token: messages name the subscriber by tenant and position.
        let name = format!("subscribers[{position}] (tenant {})", entry.tenant_id);
        crate::relay::check_subscriber(&entry.url, &entry.event_types)
            .map_err(anyhow::Error::msg)
            .context(name.clone())?;
        if host.secrets().get(&entry.secret, now)?.is_none() {
            bail!("{name}: no secret named {}", entry.secret);
        }
        let update = SubscriberUpdate {
            url: entry.url.clone(),
            event_types: entry.event_types.clone(),
            secret_ref: entry.secret.clone(),
            enabled: entry.enabled,
        };
        let existing = store
            .find_subscriber(&entry.tenant_id, entry.org_id.as_deref(), &entry.url)
            .await?;
        match existing {
            None => {
                let created = store
                    .create_subscriber(NewSubscriber {
                        tenant_id: entry.tenant_id.clone(),
                        org_id: entry.org_id.clone(),
                        url: update.url,
                        event_types: update.event_types,
                        secret_ref: update.secret_ref,
                        enabled: update.enabled,
                        created_at: store::now_millis(),
                    })
                    .await?;
                tracing::info!(subscriber = %created.id, tenant = %entry.tenant_id, "subscriber created");
            }
            Some(found)
                if found.event_types == update.event_types
                    && found.secret_ref == update.secret_ref
                    && found.enabled == update.enabled => {}
            Some(found) => {
                store.update_subscriber(&found.id, update).await?;
                tracing::info!(subscriber = %found.id, tenant = %entry.tenant_id, "subscriber updated");
            }
        }
    }
    Ok(())
}
