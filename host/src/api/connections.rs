//! Connections: a tenant's CRM accounts, each with its adapter version, webhook signature,
//! orgs, settings, API access and polling, and its poll runs.

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ApiError;
use super::audit::{Target, changed_fields};
use super::manage::{
    ApiState, ListQuery, check_name, internal, list_error, list_query, visible_adapter,
};
use super::scope::Scope;
use crate::egress::{self, ApiAccess};
use crate::export::ExportPolicy;
use crate::pipeline::Host;
use crate::poll::PollingConfig;
use crate::signatures::{SchemeConfig, WebhookGuard};
use crate::store::{self, Adapter, Connection, ConnectionSpec, ConnectionStatus, Page};

/// The connection routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/v1/connections",
            axum::routing::post(create_connection).get(list_connections),
        )
        .route(
            "/v1/connections/{connection_id}",
            get(get_connection)
                .patch(update_connection)
                .delete(delete_connection),
        )
        .with_state(state.clone())
        .merge(super::polls::router(state.clone()))
        .merge(super::drift::router(state.clone()))
        .merge(super::oauth::router(state))
}

// --- Connections -------------------------------------------------------------------------

/// `POST /v1/connections`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewConnectionRequest {
    provider: String,
    adapter_id: String,
    /// Defaults to the adapter's latest version.
    #[serde(default)]
    adapter_version: Option<u32>,
    signature: SchemeConfig,
    /// Name of the signing secret in the connection's scope (see `PUT /v1/secrets/{name}`).
    #[serde(default)]
    secret: Option<String>,
    /// Orgs its events may be scoped to. An org's connection may only name its own org
    /// (the default); a platform-level one any of the tenant's.
    #[serde(default)]
    allowed_org_ids: Option<Vec<String>>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    /// How the host reaches the CRM's API: base URL, other origins, rate limit, credential.
    /// Needed to poll, and for an adapter's follow-up requests (`http.fetch`).
    #[serde(default)]
    api: Option<ApiAccess>,
    /// Polling: the interval of scheduled runs (at least 60 s), pages per run, the secret a
    /// machine client pushes pages with.
    #[serde(default)]
    polling: Option<PollingConfig>,
    /// What the webhook checks besides the signature: source allow list, capability URL (the
    /// name of the secret holding its token), methods.
    #[serde(default)]
    webhook: Option<WebhookGuard>,
    /// Payload fields (personal data, typically) withheld from export: dropped from its events
    /// before they are stored, signed and published.
    #[serde(default)]
    export: Option<ExportPolicy>,
    #[serde(default)]
    platform_level: bool,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

/// `PATCH /v1/connections/{id}`: what is present changes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ConnectionPatch {
    #[serde(default)]
    adapter_version: Option<u32>,
    #[serde(default)]
    signature: Option<SchemeConfig>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    allowed_org_ids: Option<Vec<String>>,
    #[serde(default)]
    settings: Option<BTreeMap<String, String>>,
    /// New API access; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<ApiAccess>)]
    api: Option<Option<ApiAccess>>,
    /// New polling settings; `null` stops polling.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<PollingConfig>)]
    polling: Option<Option<PollingConfig>>,
    /// New webhook guard (replacing the whole of it); `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<WebhookGuard>)]
    webhook: Option<Option<WebhookGuard>>,
    /// New export policy (replacing the whole of it); `null` withholds nothing.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<ExportPolicy>)]
    export: Option<Option<ExportPolicy>>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// Checks a webhook guard given by the caller against the connection's `scheme` (and its
/// capability secret's name and value), and resolves that name to its reference: the guard
/// to store, `None` when it checks nothing.
fn resolve_guard(
    state: &ApiState,
    guard: Option<WebhookGuard>,
    scheme: &SchemeConfig,
    resolve: impl Fn(&str) -> String,
) -> Result<Option<WebhookGuard>, ApiError> {
    let mut guard = guard.unwrap_or_default();
    guard
        .validate(scheme)
        .map_err(|e| ApiError::BadRequest(format!("webhook: {e}")))?;
    if let Some(name) = &mut guard.capability_secret {
        check_name("`webhook.capability_secret`", name, true)?;
        *name = resolve(name);
        state.host.check_capability(name)?;
    }
    Ok((!guard.is_empty()).then_some(guard))
}

/// Checks an export policy given by the caller: the policy to store, `None` when it withholds
/// nothing.
fn checked_export(policy: Option<ExportPolicy>) -> Result<Option<String>, ApiError> {
    let policy = policy.unwrap_or_default();
    policy
        .validate()
        .map_err(|e| ApiError::BadRequest(format!("export: {e}")))?;
    (!policy.is_empty()).then(|| json_text(&policy)).transpose()
}

/// A field that is present (`Some`), possibly as `null` (`Some(None)`); absent fields are
/// `None` by `#[serde(default)]`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `api` with its credential's secret name resolved to its reference in the store.
fn with_secret_refs(mut api: ApiAccess, resolve: impl Fn(&str) -> String) -> ApiAccess {
    match &mut api.credential {
        egress::CredentialConfig::None => {}
        egress::CredentialConfig::ApiKey { secret, .. }
        | egress::CredentialConfig::Bearer { secret } => *secret = resolve(secret),
        egress::CredentialConfig::Oauth2(config) => {
            config.client_secret = resolve(&config.client_secret);
        }
    }
    api
}

/// `polling` with its push secret's name resolved to its reference in the store.
fn with_push_ref(mut polling: PollingConfig, resolve: impl Fn(&str) -> String) -> PollingConfig {
    if let Some(name) = &mut polling.push_secret {
        *name = resolve(name);
    }
    polling
}

/// Which settings of a check carry secret names given by the caller (the others were stored,
/// their names already turned into references).
#[derive(Debug, Clone, Copy)]
struct Given {
    api: bool,
    polling: bool,
}

/// Checks API access and polling settings together, for a connection running `adapter` at
/// `version`: what is wrong, as a 400.
async fn check_access(
    state: &ApiState,
    adapter_id: &str,
    version: u32,
    api: Option<&ApiAccess>,
    polling: Option<&PollingConfig>,
    given: Given,
) -> Result<(), ApiError> {
    if let Some(api) = api {
        egress::check_api(api).map_err(ApiError::BadRequest)?;
        let credential = if given.api {
            &api.credential
        } else {
            &egress::CredentialConfig::None
        };
        match credential {
            egress::CredentialConfig::None => {}
            egress::CredentialConfig::ApiKey {
                secret,
                header,
                query,
                ..
            } => {
                check_name("`api.credential.secret`", secret, true)?;
                if header.is_some() && query.is_some() {
                    return Err(ApiError::BadRequest(
                        "`api.credential` takes a `header` or a `query`, not both".into(),
                    ));
                }
            }
            egress::CredentialConfig::Bearer { secret } => {
                check_name("`api.credential.secret`", secret, true)?;
            }
            egress::CredentialConfig::Oauth2(config) => {
                // Its settings were checked with the rest of `api`.
                check_name(
                    "`api.credential.client_secret`",
                    &config.client_secret,
                    true,
                )?;
            }
        }
    }
    if let Some(polling) = polling {
        polling.validate().map_err(ApiError::BadRequest)?;
        if let Some(name) = polling.push_secret.as_ref().filter(|_| given.polling) {
            check_name("`polling.push_secret`", name, true)?;
        }
        if polling.interval_secs.is_some() {
            if api.is_none() {
                return Err(ApiError::BadRequest(
                    "scheduled polling needs API access: set `api.base_url`".into(),
                ));
            }
            let adapter = state
                .host
                .adapter(adapter_id, version)
                .await
                .map_err(ApiError::internal)?;
            if !adapter.world_version().polls_through_host() {
                return Err(ApiError::BadRequest(format!(
                    "adapter version {version} implements crm:adapter@{}, which cannot poll \
                     through the host: upload a 0.2.0 build, or push pages instead (leave \
                     `polling.interval_secs` out)",
                    adapter.world_version()
                )));
            }
        }
    }
    Ok(())
}

/// A connection as the API shows it, with the URL to give the CRM.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ConnectionView {
    id: String,
    org_id: Option<String>,
    provider: String,
    adapter_id: String,
    adapter_version: u32,
    signature: Value,
    secret_refs: Vec<String>,
    allowed_org_ids: Vec<String>,
    settings: Value,
    api: Option<ApiAccess>,
    polling: Option<PollingConfig>,
    /// What the webhook checks besides the signature (the capability secret by reference).
    webhook: Option<WebhookGuard>,
    /// The payload fields withheld from export; null: none.
    export: Option<ExportPolicy>,
    status: ConnectionStatus,
    /// For an OAuth 2.0 connection: whether it is connected to its CRM, or in error (a
    /// refused grant: polls pause, webhooks are still taken) and why; null before it was
    /// ever connected.
    auth: Option<store::ConnectionAuth>,
    /// Its health as the monitor last assessed it (null before its first assessment);
    /// `GET /v1/connections/{id}/health` computes it now, with the figures.
    health: Option<super::health::HealthView>,
    /// The URL to give the CRM; a connection with a capability URL takes deliveries at this
    /// URL followed by `/` and its token (which the API never shows).
    webhook_url: String,
    created_at: store::Millis,
    updated_at: store::Millis,
    last_delivery_at: Option<store::Millis>,
    version_changed_by: Option<String>,
    version_changed_at: Option<store::Millis>,
}

impl ConnectionView {
    /// The view of `c`, with where its authorization stands.
    async fn of(c: Connection, host: &Host) -> Result<Self, ApiError> {
        let auth = host
            .store()
            .connection_auth(&c.id)
            .await
            .map_err(internal)?;
        let health = host
            .store()
            .get_health(&c.id)
            .await
            .map_err(internal)?
            .and_then(super::health::HealthView::of);
        Ok(Self::new(c, auth, health, host))
    }

    fn new(
        c: Connection,
        auth: Option<store::ConnectionAuth>,
        health: Option<super::health::HealthView>,
        host: &Host,
    ) -> Self {
        Self {
            auth,
            health,
            webhook_url: format!(
                "{}/v1/hooks/{}",
                host.settings().public_base_url.trim_end_matches('/'),
                c.id
            ),
            id: c.id,
            org_id: c.org_id,
            provider: c.provider,
            adapter_id: c.adapter_id,
            adapter_version: c.adapter_version,
            signature: serde_json::from_str(&c.signature_json).unwrap_or(Value::Null),
            secret_refs: serde_json::from_str(&c.secret_refs_json).unwrap_or_default(),
            allowed_org_ids: c.allowed_org_ids,
            settings: serde_json::from_str(&c.settings_json).unwrap_or(Value::Null),
            api: c
                .api_json
                .as_deref()
                .and_then(|a| serde_json::from_str(a).ok()),
            polling: c
                .polling_json
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok()),
            webhook: c
                .webhook_json
                .as_deref()
                .and_then(|w| serde_json::from_str(w).ok()),
            export: c
                .export_json
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok()),
            status: c.status,
            created_at: c.created_at,
            updated_at: c.updated_at,
            last_delivery_at: c.last_delivery_at,
            version_changed_by: c.version_changed_by,
            version_changed_at: c.version_changed_at,
        }
    }
}

/// The orgs a connection in `org_id` may emit for: an org's connection only its own.
pub(super) fn check_allowed_orgs(org_id: Option<&str>, allowed: &[String]) -> Result<(), ApiError> {
    if let Some(bad) = allowed.iter().find(|o| !super::scope::is_id(o)) {
        return Err(ApiError::BadRequest(format!("`{bad}` is not an org id")));
    }
    match org_id {
        Some(org) if allowed.iter().any(|o| o != org) => Err(ApiError::BadRequest(format!(
            "an org's connection may only emit for its own org: allowed_org_ids must be [] or [\"{org}\"]"
        ))),
        _ => Ok(()),
    }
}

/// The version of `adapter` to run: the one asked for (it must exist) or the latest.
async fn pick_version(
    state: &ApiState,
    adapter: &Adapter,
    version: Option<u32>,
) -> Result<u32, ApiError> {
    let store = state.host.store();
    match version {
        Some(v) => match store
            .get_adapter_version(&adapter.id, v)
            .await
            .map_err(internal)?
        {
            Some(found) => match found.status {
                store::VersionStatus::Ready => Ok(found.version),
                store::VersionStatus::Compiling => Err(ApiError::Conflict(format!(
                    "version {v} of adapter `{}` is still compiling: switch to it once \
                     GET /v1/adapters/{}/versions/{v} says `ready`",
                    adapter.id, adapter.id
                ))),
                store::VersionStatus::Failed => Err(ApiError::BadRequest(format!(
                    "version {v} of adapter `{}` failed to compile: {}",
                    adapter.id,
                    found.failure.as_deref().unwrap_or("no reason recorded")
                ))),
            },
            None => Err(ApiError::BadRequest(format!(
                "adapter `{}` has no version {v}",
                adapter.id
            ))),
        },
        None => store
            .latest_adapter_version(&adapter.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "adapter `{}` has no ready version yet: upload one (or wait for its \
                     compile to end)",
                    adapter.id
                ))
            }),
    }
}

pub(super) fn json_text(value: &impl Serialize) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(ApiError::internal)
}

#[utoipa::path(
    post,
    path = "/v1/connections",
    tag = "connections",
    request_body = NewConnectionRequest,
    responses(
        (status = 201, description = "Created, with the webhook URL to give the CRM", body = ConnectionView),
        super::openapi::Problems,
    ),
)]
async fn create_connection(
    State(state): State<ApiState>,
    scope: Scope,
    body: Result<Json<NewConnectionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    scope.require_write()?;
    let Json(request) = body?;
    let org_id = scope.new_row_org(request.platform_level)?;
    request
        .signature
        .validate()
        .map_err(|e| ApiError::BadRequest(format!("signature: {e}")))?;
    if request.provider.is_empty() || request.provider.len() > 64 {
        return Err(ApiError::BadRequest(
            "`provider` must be 1 to 64 characters".into(),
        ));
    }
    let adapter = visible_adapter(&state, &scope, &request.adapter_id).await?;
    let adapter_version = pick_version(&state, &adapter, request.adapter_version).await?;
    let allowed = request
        .allowed_org_ids
        .unwrap_or_else(|| org_id.iter().cloned().collect());
    check_allowed_orgs(org_id.as_deref(), &allowed)?;
    let secret_refs: Vec<String> = match &request.secret {
        Some(name) => {
            check_name("`secret`", name, true)?;
            vec![Scope::secret_ref(
                scope.tenant_id(),
                org_id.as_deref(),
                name,
            )]
        }
        None => Vec::new(),
    };
    state
        .host
        .check_signing(&request.signature, secret_refs.first().map(String::as_str))?;
    let api = request.api.map(ApiAccess::with_defaults);
    check_access(
        &state,
        &adapter.id,
        adapter_version,
        api.as_ref(),
        request.polling.as_ref(),
        Given {
            api: true,
            polling: true,
        },
    )
    .await?;
    let resolve = |name: &str| Scope::secret_ref(scope.tenant_id(), org_id.as_deref(), name);
    let guard = resolve_guard(&state, request.webhook, &request.signature, resolve)?;
    let export_json = checked_export(request.export)?;
    let api = api.map(|api| with_secret_refs(api, resolve));
    let polling = request.polling.map(|p| with_push_ref(p, resolve));
    let spec = ConnectionSpec {
        // Ids are the host's: a client-chosen one could collide with another tenant's.
        id: store::new_id(),
        tenant_id: scope.tenant_id().to_owned(),
        org_id,
        provider: request.provider,
        adapter_id: adapter.id,
        adapter_version,
        signature_json: json_text(&request.signature)?,
        allowed_org_ids: allowed,
        secret_refs_json: json_text(&secret_refs)?,
        settings_json: json_text(&request.settings)?,
        polling_json: polling.as_ref().map(json_text).transpose()?,
        api_json: api.as_ref().map(json_text).transpose()?,
        webhook_json: guard.as_ref().map(json_text).transpose()?,
        export_json,
        status: if request.enabled {
            ConnectionStatus::Active
        } else {
            ConnectionStatus::Disabled
        },
    };
    let (connection, _) = state
        .host
        .store()
        .upsert_connection(spec, &scope.caller.subject, store::now_millis())
        .await
        .map_err(internal)?;
    tracing::info!(connection = %connection.id, by = %scope.caller.subject, "connection created");
    scope
        .audit(
            &state,
            StatusCode::CREATED,
            "connection.create",
            Target::new("connection", &connection.id, connection.org_id.as_deref()),
            json!({
                "provider": connection.provider,
                "adapter_id": connection.adapter_id,
                "adapter_version": connection.adapter_version,
                "status": connection.status,
            }),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(ConnectionView::of(connection, &state.host).await?),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/connections",
    tag = "connections",
    params(ListQuery),
    responses(
        (status = 200, description = "One page, oldest first", body = Page<ConnectionView>),
        super::openapi::Problems,
    ),
)]
async fn list_connections(
    State(state): State<ApiState>,
    scope: Scope,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<ConnectionView>>, ApiError> {
    let page = state
        .host
        .store()
        .list_connections(scope.tenant_id(), Some(&scope.org_id), list_query(query)?)
        .await
        .map_err(list_error)?;
    let mut items = Vec::with_capacity(page.items.len());
    for connection in page.items {
        items.push(ConnectionView::of(connection, &state.host).await?);
    }
    Ok(Json(Page {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// The connection, when the scope sees it; 404 otherwise.
pub(super) async fn visible_connection(
    state: &ApiState,
    scope: &Scope,
    id: &str,
) -> Result<Connection, ApiError> {
    state
        .host
        .store()
        .get_connection(id)
        .await
        .map_err(internal)?
        .filter(|c| scope.sees(&c.tenant_id, c.org_id.as_deref()))
        .ok_or_else(|| ApiError::NotFound(format!("no connection `{id}`")))
}

#[utoipa::path(
    get,
    path = "/v1/connections/{connection_id}",
    tag = "connections",
    params(("connection_id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "The connection", body = ConnectionView),
        super::openapi::Problems,
    ),
)]
async fn get_connection(
    State(state): State<ApiState>,
    scope: Scope,
    Path(connection_id): Path<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    let connection = visible_connection(&state, &scope, &connection_id).await?;
    Ok(Json(ConnectionView::of(connection, &state.host).await?))
}

#[utoipa::path(
    patch,
    path = "/v1/connections/{connection_id}",
    tag = "connections",
    params(("connection_id" = String, Path, description = "The connection's id")),
    request_body = ConnectionPatch,
    responses(
        (status = 200, description = "The connection as changed", body = ConnectionView),
        super::openapi::Problems,
    ),
)]
async fn update_connection(
    State(state): State<ApiState>,
    scope: Scope,
    Path(connection_id): Path<String>,
    body: Result<Json<ConnectionPatch>, JsonRejection>,
) -> Result<Json<ConnectionView>, ApiError> {
    let current = visible_connection(&state, &scope, &connection_id).await?;
    scope.check_write(&current.tenant_id, current.org_id.as_deref(), || {
        format!("connection `{connection_id}`")
    })?;
    let Json(mut patch) = body?;
    let mut detail = changed_fields(&[
        ("adapter_version", patch.adapter_version.is_some()),
        ("signature", patch.signature.is_some()),
        ("secret", patch.secret.is_some()),
        ("allowed_org_ids", patch.allowed_org_ids.is_some()),
        ("settings", patch.settings.is_some()),
        ("api", patch.api.is_some()),
        ("polling", patch.polling.is_some()),
        ("webhook", patch.webhook.is_some()),
        ("export", patch.export.is_some()),
        ("enabled", patch.enabled.is_some()),
    ]);
    let mut spec = current.spec();
    if let Some(version) = patch.adapter_version {
        let adapter = state
            .host
            .store()
            .get_adapter(&current.adapter_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| ApiError::internal("a connection's adapter is missing"))?;
        spec.adapter_version = pick_version(&state, &adapter, Some(version)).await?;
    }
    if let Some(signature) = &patch.signature {
        signature
            .validate()
            .map_err(|e| ApiError::BadRequest(format!("signature: {e}")))?;
        spec.signature_json = json_text(signature)?;
    }
    if let Some(name) = &patch.secret {
        check_name("`secret`", name, true)?;
        spec.secret_refs_json = json_text(&[Scope::secret_ref(
            &current.tenant_id,
            current.org_id.as_deref(),
            name,
        )])?;
    }
    if let Some(allowed) = patch.allowed_org_ids {
        check_allowed_orgs(current.org_id.as_deref(), &allowed)?;
        spec.allowed_org_ids = allowed;
    }
    if let Some(settings) = &patch.settings {
        spec.settings_json = json_text(settings)?;
    }
    if patch.api.is_some() || patch.polling.is_some() || patch.adapter_version.is_some() {
        // Names in a patch are names; what is stored already is resolved.
        let stored_api: Option<ApiAccess> = spec
            .api_json
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(ApiError::internal)?;
        let stored_polling: Option<PollingConfig> = spec
            .polling_json
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(ApiError::internal)?;
        if let Some(api) = &mut patch.api {
            *api = api.take().map(ApiAccess::with_defaults);
        }
        let api = patch.api.clone().unwrap_or(stored_api);
        let polling = patch.polling.clone().unwrap_or(stored_polling);
        // Stored references are not names: only what the patch gives is checked as names.
        check_access(
            &state,
            &spec.adapter_id,
            spec.adapter_version,
            api.as_ref(),
            polling.as_ref(),
            Given {
                api: patch.api.is_some(),
                polling: patch.polling.is_some(),
            },
        )
        .await?;
        let resolve =
            |name: &str| Scope::secret_ref(&current.tenant_id, current.org_id.as_deref(), name);
        if let Some(api) = &patch.api {
            let api = api.clone().map(|api| with_secret_refs(api, resolve));
            spec.api_json = api.as_ref().map(json_text).transpose()?;
        }
        if let Some(polling) = &patch.polling {
            let polling = polling.clone().map(|p| with_push_ref(p, resolve));
            spec.polling_json = polling.as_ref().map(json_text).transpose()?;
        }
    }
    if let Some(export) = patch.export.clone() {
        spec.export_json = checked_export(export)?;
    }
    if let Some(enabled) = patch.enabled {
        spec.status = if enabled {
            ConnectionStatus::Active
        } else {
            ConnectionStatus::Disabled
        };
    }
    if let Some(webhook) = patch.webhook.clone() {
        let scheme: SchemeConfig =
            serde_json::from_str(&spec.signature_json).map_err(ApiError::internal)?;
        let resolve =
            |name: &str| Scope::secret_ref(&current.tenant_id, current.org_id.as_deref(), name);
        let guard = resolve_guard(&state, webhook, &scheme, resolve)?;
        spec.webhook_json = guard.as_ref().map(json_text).transpose()?;
    } else if patch.signature.is_some() {
        // The stored guard must suit the new scheme (an unsigned one needs a guard, and the
        // methods must be the new scheme's).
        let scheme: SchemeConfig =
            serde_json::from_str(&spec.signature_json).map_err(ApiError::internal)?;
        let stored: WebhookGuard = spec
            .webhook_json
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(ApiError::internal)?
            .unwrap_or_default();
        stored
            .validate(&scheme)
            .map_err(|e| ApiError::BadRequest(format!("webhook: {e}")))?;
    }
    if patch.signature.is_some() || patch.secret.is_some() {
        let scheme: SchemeConfig =
            serde_json::from_str(&spec.signature_json).map_err(ApiError::internal)?;
        let refs: Vec<String> =
            serde_json::from_str(&spec.secret_refs_json).map_err(ApiError::internal)?;
        state
            .host
            .check_signing(&scheme, refs.first().map(String::as_str))?;
    }
    let (connection, _) = state
        .host
        .store()
        .upsert_connection(spec, &scope.caller.subject, store::now_millis())
        .await
        .map_err(internal)?;
    tracing::info!(connection = %connection.id, by = %scope.caller.subject, "connection updated");
    if connection.adapter_version != current.adapter_version {
        detail["adapter_version"] =
            json!({"from": current.adapter_version, "to": connection.adapter_version});
    }
    scope
        .audit(
            &state,
            StatusCode::OK,
            "connection.update",
            Target::new("connection", &connection.id, connection.org_id.as_deref()),
            detail,
        )
        .await;
    Ok(Json(ConnectionView::of(connection, &state.host).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/connections/{connection_id}",
    tag = "connections",
    params(("connection_id" = String, Path, description = "The connection's id")),
    responses(
        (status = 204, description = "Deleted"),
        super::openapi::Problems,
    ),
)]
async fn delete_connection(
    State(state): State<ApiState>,
    scope: Scope,
    Path(connection_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let current = visible_connection(&state, &scope, &connection_id).await?;
    scope.check_write(&current.tenant_id, current.org_id.as_deref(), || {
        format!("connection `{connection_id}`")
    })?;
    state
        .host
        .store()
        .delete_connection(&current.id)
        .await
        .map_err(|e| match e {
            store::Error::Conflict(why) => ApiError::Conflict(why),
            other => internal(other),
        })?;
    // Its OAuth tokens go with it (revoked first where the provider can).
    if crate::oauth::oauth_settings(&current).is_some() {
        let oauth = state.host.oauth();
        if let Err(error) = oauth.forget(&current).await {
            tracing::warn!(connection = %current.id, %error, "revoking a deleted connection's grant failed");
        }
    }
    tracing::info!(connection = %current.id, by = %scope.caller.subject, "connection deleted");
    scope
        .audit(
            &state,
            StatusCode::NO_CONTENT,
            "connection.delete",
            Target::new("connection", &current.id, current.org_id.as_deref()),
            json!({}),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}
