//! The management API: what a tenant admin configures over HTTP (adapters and their versions,
//! connections, secrets), every call authenticated by a JWT ([`super::auth`]) and held to the
//! org-scope contract ([`super::scope`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ApiError;
use super::audit::{Target, changed_fields};
use super::auth::{self, AuthConfig, Caller};
use super::connections::check_allowed_orgs;
use super::scope::Scope;
use crate::pipeline::Host;
use crate::sandbox::{self, Limits};
use crate::secrets::{MAX_GRACE, SecretValue};
use crate::store::{
    self, Adapter, AdapterVersion, DeliveryFilter, NewAdapter, NewAdapterVersion, NewSubscriber,
    OutboxFilter, OutboxRow, Page, PageRequest, Subscriber, SubscriberDeliveryFilter,
    SubscriberUpdate,
};

/// What the management handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The host.
    pub host: Host,
    /// How tokens are verified.
    pub auth: Arc<AuthConfig>,
}

/// The management routes.
pub fn router(state: ApiState) -> Router {
    let max_component =
        usize::try_from(state.host.sandbox().platform().max_component_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/v1/adapters", post(create_adapter).get(list_adapters))
        .route("/v1/adapters/{adapter_id}", get(get_adapter))
        .route(
            "/v1/adapters/{adapter_id}/versions",
            post(upload_version)
                .get(list_versions)
                .layer(DefaultBodyLimit::max(max_component)),
        )
        .route(
            "/v1/adapters/{adapter_id}/versions/{version}",
            get(get_version),
        )
        .route(
            "/v1/adapters/{adapter_id}/versions/{version}/test",
            post(test_version),
        )
        .route("/v1/secrets/{*name}", put(put_secret))
        .route(
            "/v1/subscribers",
            post(create_subscriber).get(list_subscribers),
        )
        .route(
            "/v1/subscribers/{subscriber_id}",
            get(get_subscriber)
                .patch(update_subscriber)
                .delete(delete_subscriber),
        )
        .route(
            "/v1/subscribers/{subscriber_id}/deliveries",
            get(subscriber_deliveries),
        )
        .route(
            "/v1/subscribers/{subscriber_id}/deliveries/{seq}/retry",
            post(retry_subscriber_delivery),
        )
        .route("/v1/deliveries", get(list_deliveries))
        .route("/v1/deliveries/redrive", post(redrive_deliveries))
        .route("/v1/deliveries/{delivery_id}", get(get_delivery))
        .route(
            "/v1/deliveries/{delivery_id}/redrive",
            post(redrive_delivery),
        )
        .route("/v1/replays", post(start_replay).get(list_replays))
        .route("/v1/replays/{replay_id}", get(get_replay))
        .route("/v1/events", get(list_events))
        .route("/v1/events/{event_id}", get(get_event))
        .with_state(state.clone())
        .merge(super::connections::router(state.clone()))
        .merge(super::audit::router(state.clone()))
        .merge(super::orgs::router(state.clone()))
        .merge(super::erasure::router(state.clone()))
        .merge(super::invocations::router(state.clone()))
        .merge(super::retention::router(state.clone()))
        .merge(super::identities::router(state.clone()))
        .merge(super::health::router(state.clone()))
        .merge(super::provenance::router(state))
}

impl FromRequestParts<ApiState> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let caller = auth::authenticate(&state.auth, &parts.headers)?;
        Scope::new(caller, &parts.headers)
    }
}

pub(super) fn internal(error: store::Error) -> ApiError {
    ApiError::internal(error)
}

/// A store error of a list: a cursor it did not make is the caller's mistake.
pub(super) fn list_error(error: store::Error) -> ApiError {
    match error {
        store::Error::Invalid(why) => ApiError::BadRequest(why),
        other => internal(other),
    }
}

/// The page parameters every list takes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Page size: 1 to 1000, default 100.
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The largest page a list answers.
pub const MAX_PAGE: usize = 1000;

/// A list's page size: 1 to [`MAX_PAGE`], 100 when not given.
pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::BadRequest(format!(
            "`limit` must be 1 to {MAX_PAGE}"
        ))),
    }
}

pub(super) fn list_query(
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<PageRequest, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(PageRequest {
        limit: page_limit(query.limit)?,
        cursor: query.cursor,
    })
}

// --- Adapters ----------------------------------------------------------------------------

/// `POST /v1/adapters`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewAdapterRequest {
    /// Unique within the tenant.
    name: String,
    /// Visible to every org of the tenant (platform-level tokens only).
    #[serde(default)]
    platform_level: bool,
}

/// An adapter as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AdapterView {
    id: String,
    name: String,
    org_id: Option<String>,
    created_at: store::Millis,
    latest_version: Option<u32>,
}

impl AdapterView {
    fn new(adapter: Adapter, latest_version: Option<u32>) -> Self {
        Self {
            id: adapter.id,
            name: adapter.name,
            org_id: adapter.org_id,
            created_at: adapter.created_at,
            latest_version,
        }
    }
}

/// An adapter version as the API shows it: the declarations and limits as JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct VersionView {
    adapter_id: String,
    version: u32,
    sha256: String,
    size_bytes: u64,
    /// `compiling` (an upload answered before its compile ended), `ready` (connections may
    /// run it) or `failed` (see `failure`).
    status: store::VersionStatus,
    /// Why it failed to compile.
    failure: Option<String>,
    /// What it declares (empty until it is ready).
    info: Value,
    /// The adapter world version it implements (`0.1.0`, `0.2.0`), once ready.
    #[schema(value_type = Option<String>)]
    world: Option<sandbox::WorldVersion>,
    /// The interfaces it imports, sorted, once ready: those of our world (`crm:adapter/...`)
    /// and of WASI it was checked to use, nothing else.
    imports: Vec<String>,
    limits: Value,
    created_at: store::Millis,
    created_by: String,
}

impl From<AdapterVersion> for VersionView {
    fn from(v: AdapterVersion) -> Self {
        // A version still compiling, or failed, records `{}`: it declares nothing yet.
        let (info, world, imports) =
            match serde_json::from_str::<sandbox::VersionRecord>(&v.info_json) {
                Ok(record) => (
                    serde_json::to_value(record.info).unwrap_or(Value::Null),
                    record.world,
                    record.imports,
                ),
                Err(_) => (
                    serde_json::from_str(&v.info_json).unwrap_or(Value::Null),
                    None,
                    Vec::new(),
                ),
            };
        Self {
            adapter_id: v.adapter_id,
            version: v.version,
            sha256: v.sha256,
            size_bytes: v.size_bytes,
            status: v.status,
            failure: v.failure,
            info,
            world,
            imports,
            limits: serde_json::from_str(&v.limits_json).unwrap_or(Value::Null),
            created_at: v.created_at,
            created_by: v.created_by,
        }
    }
}

/// A name of an adapter or secret: 1 to 128 of `A-Z a-z 0-9 . _ -` (and `/` in secret names),
/// no segment of which is `.` or `..` (a name is a path in the secret store's namespace).
pub(super) fn check_name(what: &str, name: &str, slash: bool) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || (slash && b == b'/'))
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && name
            .split('/')
            .all(|segment| segment != "." && segment != "..");
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{what} must be 1 to 128 characters of A-Z, a-z, 0-9, `.`, `_`, `-`{}, and no part of \
             it `.` or `..`",
            if slash { " and inner `/`" } else { "" }
        )))
    }
}

#[utoipa::path(
    post,
    path = "/v1/adapters",
    tag = "adapters",
    request_body = NewAdapterRequest,
    responses(
        (status = 201, description = "Created", body = AdapterView),
        super::openapi::Problems,
    ),
)]
async fn create_adapter(
    State(state): State<ApiState>,
    scope: Scope,
    body: Result<Json<NewAdapterRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    scope.require_write()?;
    let Json(request) = body?;
    check_name("`name`", &request.name, false)?;
    let org_id = scope.new_row_org(request.platform_level)?;
    let adapter = state
        .host
        .store()
        .create_adapter(NewAdapter {
            tenant_id: scope.tenant_id().to_owned(),
            org_id,
            name: request.name,
            created_at: store::now_millis(),
        })
        .await
        .map_err(|e| match e {
            // Names are unique per tenant: an adapter of another org may hold it. Say so
            // without naming it.
            store::Error::Conflict(_) => {
                ApiError::Conflict("the tenant already has an adapter of this name".into())
            }
            other => internal(other),
        })?;
    scope
        .audit(
            &state,
            StatusCode::CREATED,
            "adapter.create",
            Target::new("adapter", &adapter.id, adapter.org_id.as_deref()),
            json!({"name": adapter.name}),
        )
        .await;
    Ok((StatusCode::CREATED, Json(AdapterView::new(adapter, None))).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/adapters",
    tag = "adapters",
    params(ListQuery),
    responses(
        (status = 200, description = "One page, by name", body = Page<AdapterView>),
        super::openapi::Problems,
    ),
)]
async fn list_adapters(
    State(state): State<ApiState>,
    scope: Scope,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<AdapterView>>, ApiError> {
    let store = state.host.store();
    let page = store
        .list_adapters(scope.tenant_id(), Some(&scope.org_id), list_query(query)?)
        .await
        .map_err(list_error)?;
    let mut items = Vec::with_capacity(page.items.len());
    for adapter in page.items {
        let latest = store
            .latest_adapter_version(&adapter.id)
            .await
            .map_err(internal)?;
        items.push(AdapterView::new(adapter, latest));
    }
    Ok(Json(Page {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// The adapter, when the scope sees it; 404 otherwise.
pub(super) async fn visible_adapter(
    state: &ApiState,
    scope: &Scope,
    id: &str,
) -> Result<Adapter, ApiError> {
    state
        .host
        .store()
        .get_adapter(id)
        .await
        .map_err(internal)?
        .filter(|a| scope.sees(&a.tenant_id, a.org_id.as_deref()))
        .ok_or_else(|| ApiError::NotFound(format!("no adapter `{id}`")))
}

#[utoipa::path(
    get,
    path = "/v1/adapters/{adapter_id}",
    tag = "adapters",
    params(("adapter_id" = String, Path, description = "The adapter's id")),
    responses(
        (status = 200, description = "The adapter", body = AdapterView),
        super::openapi::Problems,
    ),
)]
async fn get_adapter(
    State(state): State<ApiState>,
    scope: Scope,
    Path(adapter_id): Path<String>,
) -> Result<Json<AdapterView>, ApiError> {
    let adapter = visible_adapter(&state, &scope, &adapter_id).await?;
    let latest = state
        .host
        .store()
        .latest_adapter_version(&adapter.id)
        .await
        .map_err(internal)?;
    Ok(Json(AdapterView::new(adapter, latest)))
}

/// `POST /v1/adapters/{id}/versions`: the component as the body; per-version limits as query
/// parameters (`?deadline_ms=50&fuel=2000000`), within the platform's maximums.
#[utoipa::path(
    post,
    path = "/v1/adapters/{adapter_id}/versions",
    tag = "adapters",
    params(("adapter_id" = String, Path, description = "The adapter's id"), sandbox::Limits),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "A new version", body = VersionView),
        (status = 200, description = "The same component with the same limits: the existing version", body = VersionView),
        super::openapi::Problems,
    ),
)]
async fn upload_version(
    State(state): State<ApiState>,
    scope: Scope,
    Path(adapter_id): Path<String>,
    limits: Result<Query<Limits>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let adapter = visible_adapter(&state, &scope, &adapter_id).await?;
    scope.check_write(&adapter.tenant_id, adapter.org_id.as_deref(), || {
        format!("adapter `{adapter_id}`")
    })?;
    let Query(limits) = limits.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let wasm = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "the component exceeds the limit of {} bytes",
                state.host.sandbox().platform().max_component_bytes
            ))
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })?;
    let wasm = wasm.to_vec();
    // What can be judged without compiling is, at once: nothing is stored for a refusal.
    state
        .host
        .sandbox()
        .precheck(&wasm, &limits)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let sha256 = sandbox::sha256_hex(&wasm);
    let size_bytes = wasm.len() as u64;
    let store = state.host.store();
    // The same component with the same limits is the same version: uploading twice is a no-op
    // (unless it failed: uploading it again compiles it again).
    let existing = store
        .adapter_versions_of(&adapter.id, &sha256)
        .await
        .map_err(internal)?;
    let limits_json = serde_json::to_string(&limits).map_err(ApiError::internal)?;
    if let Some(same) = existing
        .into_iter()
        .find(|v| v.limits_json == limits_json && v.status != store::VersionStatus::Failed)
    {
        return Ok((StatusCode::OK, Json(VersionView::from(same))).into_response());
    }
    state.host.blobs().put(wasm).await.map_err(internal)?;
    let version = store
        .add_adapter_version(NewAdapterVersion {
            adapter_id: adapter.id.clone(),
            sha256,
            size_bytes,
            info_json: "{}".to_owned(),
            limits_json,
            created_at: store::now_millis(),
            created_by: scope.caller.subject.clone(),
            status: store::VersionStatus::Compiling,
        })
        .await
        .map_err(internal)?;
    tracing::info!(adapter = %adapter.id, version = version.version, by = %scope.caller.subject, "adapter version uploaded");
    scope
        .audit(
            &state,
            StatusCode::CREATED,
            "adapter_version.upload",
            Target::new("adapter", &adapter.id, adapter.org_id.as_deref()),
            json!({
                "version": version.version,
                "sha256": version.sha256,
                "size_bytes": version.size_bytes,
            }),
        )
        .await;
    // Compiled off the request: a small component is answered ready (201), a slow one is
    // answered `compiling` (202) and its version read until it is `ready` or `failed`.
    let host = state.host.clone();
    let (id, number) = (adapter.id.clone(), version.version);
    let compile = tokio::spawn(async move { host.compile_version(&id, number).await });
    let location = format!("/v1/adapters/{}/versions/{}", adapter.id, version.version);
    let wait = state.host.settings().upload_compile_wait;
    let compiled = match tokio::time::timeout(wait, compile).await {
        Err(_still_compiling) => {
            return Ok((
                StatusCode::ACCEPTED,
                [(axum::http::header::LOCATION, location)],
                Json(VersionView::from(version)),
            )
                .into_response());
        }
        Ok(joined) => joined
            .map_err(|e| ApiError::internal(format!("the compile task failed: {e}")))?
            .map_err(internal)?,
    };
    match compiled.status {
        store::VersionStatus::Failed => Err(ApiError::BadRequest(format!(
            "version {} failed to compile: {}",
            compiled.version,
            compiled.failure.as_deref().unwrap_or("no reason recorded")
        ))),
        _ => Ok((
            StatusCode::CREATED,
            [(axum::http::header::LOCATION, location)],
            Json(VersionView::from(compiled)),
        )
            .into_response()),
    }
}

#[utoipa::path(
    get,
    path = "/v1/adapters/{adapter_id}/versions",
    tag = "adapters",
    params(("adapter_id" = String, Path, description = "The adapter's id"), ListQuery),
    responses(
        (status = 200, description = "One page, oldest first", body = Page<VersionView>),
        super::openapi::Problems,
    ),
)]
async fn list_versions(
    State(state): State<ApiState>,
    scope: Scope,
    Path(adapter_id): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<VersionView>>, ApiError> {
    let adapter = visible_adapter(&state, &scope, &adapter_id).await?;
    let page = state
        .host
        .store()
        .list_adapter_versions(&adapter.id, list_query(query)?)
        .await
        .map_err(list_error)?;
    Ok(Json(page.map(VersionView::from)))
}

#[utoipa::path(
    get,
    path = "/v1/adapters/{adapter_id}/versions/{version}",
    tag = "adapters",
    params(("adapter_id" = String, Path, description = "The adapter's id"), ("version" = u32, Path, description = "The version number")),
    responses(
        (status = 200, description = "The version", body = VersionView),
        super::openapi::Problems,
    ),
)]
async fn get_version(
    State(state): State<ApiState>,
    scope: Scope,
    Path((adapter_id, version)): Path<(String, u32)>,
) -> Result<Json<VersionView>, ApiError> {
    let adapter = visible_adapter(&state, &scope, &adapter_id).await?;
    state
        .host
        .store()
        .get_adapter_version(&adapter.id, version)
        .await
        .map_err(internal)?
        .map(|v| Json(v.into()))
        .ok_or_else(|| {
            ApiError::NotFound(format!("adapter `{adapter_id}` has no version {version}"))
        })
}

// --- Secrets -----------------------------------------------------------------------------

/// `PUT /v1/secrets/{name}`: write-only.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SecretRequest {
    value: String,
    /// How long the previous value keeps verifying, in seconds (rotation).
    #[serde(default)]
    grace_secs: u64,
    #[serde(default)]
    platform_level: bool,
}

/// A secret written: its name, scope and version (never its value).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SecretWritten {
    name: String,
    /// 1, 2, ... per write.
    version: u64,
    /// The org whose namespace holds it; null: platform level.
    org_id: Option<String>,
}

#[utoipa::path(
    put,
    path = "/v1/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "The secret's name (`A-Z a-z 0-9 . _ -`, inner `/`)")),
    request_body = SecretRequest,
    responses(
        (status = 200, description = "Written; the value is never returned", body = SecretWritten),
        super::openapi::Problems,
    ),
)]
async fn put_secret(
    State(state): State<ApiState>,
    scope: Scope,
    Path(name): Path<String>,
    body: Result<Json<SecretRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    scope.require_write()?;
    check_name("the secret's name", &name, true)?;
    if name.starts_with("connections/") {
        // Where the host keeps connections' OAuth tokens.
        return Err(ApiError::BadRequest(
            "names starting with `connections/` are the host's (connections' OAuth tokens)".into(),
        ));
    }
    let Json(request) = body?;
    if request.value.is_empty() {
        return Err(ApiError::BadRequest("`value` must not be empty".into()));
    }
    let grace = Duration::from_secs(request.grace_secs);
    if grace > MAX_GRACE {
        return Err(ApiError::BadRequest(format!(
            "`grace_secs` is at most {}",
            MAX_GRACE.as_secs()
        )));
    }
    let org_id = scope.new_row_org(request.platform_level)?;
    let secret_ref = Scope::secret_ref(scope.tenant_id(), org_id.as_deref(), &name);
    let secrets = state.host.secrets().clone();
    let value = SecretValue::new(request.value);
    let version = tokio::task::spawn_blocking(move || {
        secrets.put(&secret_ref, value, grace, SystemTime::now())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e {
        invalid @ (crate::secrets::Error::InvalidName(_)
        | crate::secrets::Error::InvalidValue(_)
        | crate::secrets::Error::InvalidGrace(_)) => ApiError::BadRequest(invalid.to_string()),
        other => ApiError::internal(other),
    })?;
    tracing::info!(secret = %name, by = %scope.caller.subject, version, "secret written");
    // The name and version only: the value never leaves the secret store.
    scope
        .audit(
            &state,
            StatusCode::OK,
            "secret.put",
            Target::new("secret", &name, org_id.as_deref()),
            json!({"version": version, "grace_secs": request.grace_secs}),
        )
        .await;
    Ok((
        StatusCode::OK,
        Json(SecretWritten {
            name,
            version,
            org_id,
        }),
    )
        .into_response())
}

// --- Events ------------------------------------------------------------------------------

/// Filters of `GET /v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    event_type: Option<String>,
    entity_type: Option<String>,
    entity_id: Option<String>,
    /// `pending`, `published` or `dead`.
    status: Option<String>,
    connection_id: Option<String>,
    /// Created at or after (Unix milliseconds).
    since: Option<store::Millis>,
    /// Created before (Unix milliseconds).
    until: Option<store::Millis>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// An outbox event as the API shows it: the payload and metadata as JSON, exactly as stored
/// (decimals stay strings).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EventView {
    seq: i64,
    event_id: String,
    org_id: Option<String>,
    event_type: String,
    entity_type: String,
    entity_id: String,
    /// The event's payload, exactly as stored (decimals are strings).
    #[schema(value_type = Object)]
    payload: Box<serde_json::value::RawValue>,
    /// Whether the payload was erased (the tenant's data key destroyed): `payload` is null.
    payload_erased: bool,
    /// The payload fields (JSON pointers) shown as `"~masked"`: personal data, as the adapter
    /// declares it, which only a caller with the `pii_reader` role sees.
    masked: Vec<String>,
    /// Trace id, source, actor (adapter id@version), timestamp, provenance; `personal_data`
    /// lists where the payload holds personal data, `withheld` the fields the connection kept
    /// out of the export.
    #[schema(value_type = Object)]
    metadata: Box<serde_json::value::RawValue>,
    delivery_id: String,
    connection_id: String,
    created_at: store::Millis,
    status: store::OutboxStatus,
    attempts: u32,
    published_at: Option<store::Millis>,
    last_error: Option<String>,
}

impl EventView {
    /// The view of `row` for `caller`: personal data masked unless the caller may see it.
    fn new(row: OutboxRow, caller: &Caller) -> Result<Self, ApiError> {
        let raw = |text: String| {
            serde_json::value::RawValue::from_string(text).map_err(ApiError::internal)
        };
        let (payload_json, masked) = if caller.sees_personal_data {
            (row.payload_json, Vec::new())
        } else {
            masked_payload(row.payload_json, &row.metadata_json)?
        };
        Ok(Self {
            masked,
            seq: row.seq,
            event_id: row.event_id,
            org_id: row.org_id,
            event_type: row.event_type,
            entity_type: row.entity_type,
            entity_id: row.entity_id,
            payload: raw(payload_json)?,
            payload_erased: row.payload_erased,
            metadata: raw(row.metadata_json)?,
            delivery_id: row.delivery_id,
            connection_id: row.connection_id,
            created_at: row.created_at,
            status: row.status,
            attempts: row.attempts,
            published_at: row.published_at,
            last_error: row.last_error,
        })
    }
}

/// `payload_json` with the personal data its event's metadata names (`personal_data`) masked,
/// and the pointers masked.
fn masked_payload(
    payload_json: String,
    metadata_json: &str,
) -> Result<(String, Vec<String>), ApiError> {
    #[derive(Deserialize)]
    struct Personal {
        #[serde(default)]
        personal_data: Vec<String>,
    }
    let personal = serde_json::from_str::<Personal>(metadata_json)
        .map_err(ApiError::internal)?
        .personal_data;
    if personal.is_empty() {
        return Ok((payload_json, Vec::new()));
    }
    let mut payload: Value = serde_json::from_str(&payload_json).map_err(ApiError::internal)?;
    let masked = crate::contracts::mask(&mut payload, &personal);
    Ok((payload.to_string(), masked))
}

#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "One page, newest first", body = Page<EventView>),
        super::openapi::Problems,
    ),
)]
async fn list_events(
    State(state): State<ApiState>,
    scope: Scope,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Page<EventView>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let status = query
        .status
        .map(|text| text.parse())
        .transpose()
        .map_err(|_| {
            ApiError::BadRequest("`status` must be `pending`, `published` or `dead`".into())
        })?;
    let page = state
        .host
        .store()
        .list_outbox(OutboxFilter {
            tenant_id: scope.tenant_id().to_owned(),
            org_id: Some(scope.org_id.clone()),
            event_type: query.event_type,
            entity_type: query.entity_type,
            entity_id: query.entity_id,
            status,
            connection_id: query.connection_id,
            since: query.since,
            until: query.until,
            limit: page_limit(query.limit)?,
            cursor: query.cursor,
        })
        .await
        .map_err(list_error)?;
    let items = page
        .items
        .into_iter()
        .map(|row| EventView::new(row, &scope.caller))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(Page {
        items,
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/events/{event_id}",
    tag = "events",
    params(("event_id" = String, Path, description = "The event's id")),
    responses(
        (status = 200, description = "The event", body = EventView),
        super::openapi::Problems,
    ),
)]
async fn get_event(
    State(state): State<ApiState>,
    scope: Scope,
    Path(event_id): Path<String>,
) -> Result<Json<EventView>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no event `{event_id}`"));
    let store = state.host.store();
    let row = store
        .get_event(&event_id)
        .await
        .map_err(internal)?
        .filter(|row| scope.sees(&row.tenant_id, row.org_id.as_deref()))
        .ok_or_else(not_found)?;
    // An event without an org is platform level only when its connection is: one an org's
    // connection emitted (before that was refused) stays that org's, like its connection.
    if row.org_id.is_none() {
        let connection = store
            .get_connection(&row.connection_id)
            .await
            .map_err(internal)?;
        if connection.is_some_and(|c| !scope.sees(&c.tenant_id, c.org_id.as_deref())) {
            return Err(not_found());
        }
    }
    Ok(Json(EventView::new(row, &scope.caller)?))
}

// --- Deliveries --------------------------------------------------------------------------

/// Filters of `GET /v1/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeliveriesQuery {
    connection_id: Option<String>,
    /// `received`, `processed`, `ignored`, `failed` or `rejected`.
    status: Option<String>,
    /// Received at or after (Unix milliseconds).
    since: Option<store::Millis>,
    /// Received before (Unix milliseconds).
    until: Option<store::Millis>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/deliveries",
    tag = "deliveries",
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "One page, newest first", body = Page<store::DeliveryInfo>),
        super::openapi::Problems,
    ),
)]
async fn list_deliveries(
    State(state): State<ApiState>,
    scope: Scope,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<Page<store::DeliveryInfo>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let status = query
        .status
        .map(|text| text.parse())
        .transpose()
        .map_err(|_| {
            ApiError::BadRequest(
                "`status` must be `received`, `processed`, `ignored`, `failed` or `rejected`"
                    .into(),
            )
        })?;
    let page = state
        .host
        .store()
        .list_deliveries(DeliveryFilter {
            tenant_id: Some(scope.tenant_id().to_owned()),
            org_id: Some(scope.org_id.clone()),
            connection_id: query.connection_id,
            status,
            since: query.since,
            until: query.until,
            limit: page_limit(query.limit)?,
            cursor: query.cursor,
        })
        .await
        .map_err(list_error)?;
    Ok(Json(page))
}

/// A delivery, why it failed, and every invocation run on it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DeliveryView {
    delivery: store::DeliveryInfo,
    /// Whether the body was erased (the tenant's data key destroyed): it cannot be redriven.
    body_erased: bool,
    /// Why it failed or was rejected (the adapter's error or the contract violations).
    reason: Option<Value>,
    /// The org of the delivery's connection; null: platform level.
    connection_org_id: Option<String>,
    /// Oldest first: the first run, then each redrive or recovery.
    invocations: Vec<store::Invocation>,
    /// Every request made for it, in order: a poll page's own fetch, and the adapter's
    /// `http.fetch` calls (credentials never recorded). Bodies are not shown.
    #[schema(value_type = Vec<Object>)]
    exchanges: Vec<store::StoredExchange>,
}

/// `GET /v1/deliveries/{id}`: the delivery, why it failed, and every invocation run on it
/// (usage, violations, logs). The body is not shown: it is the CRM's data, kept for redrive.
#[utoipa::path(
    get,
    path = "/v1/deliveries/{delivery_id}",
    tag = "deliveries",
    params(("delivery_id" = String, Path, description = "The delivery's id")),
    responses(
        (status = 200, description = "The delivery and its invocations", body = DeliveryView),
        super::openapi::Problems,
    ),
)]
async fn get_delivery(
    State(state): State<ApiState>,
    scope: Scope,
    Path(delivery_id): Path<String>,
) -> Result<Json<DeliveryView>, ApiError> {
    let store = state.host.store();
    let not_found = || ApiError::NotFound(format!("no delivery `{delivery_id}`"));
    let delivery = store
        .get_delivery(&delivery_id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let connection = store
        .get_connection(&delivery.info.connection_id)
        .await
        .map_err(internal)?
        .filter(|c| scope.sees(&c.tenant_id, c.org_id.as_deref()))
        .ok_or_else(not_found)?;
    let invocations = store
        .list_invocations(&delivery.info.id)
        .await
        .map_err(internal)?;
    let exchanges = store
        .list_exchanges(&delivery.info.id)
        .await
        .map_err(internal)?;
    let reason: Option<Value> = delivery
        .info
        .reason_json
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok());
    Ok(Json(DeliveryView {
        body_erased: delivery.body_erased,
        delivery: delivery.info,
        reason,
        connection_org_id: connection.org_id,
        invocations,
        exchanges,
    }))
}

// --- Redrive -----------------------------------------------------------------------------

/// The most deliveries one redrive call re-runs.
pub const MAX_REDRIVE_BATCH: usize = 100;

/// A delivery run again, and where it is now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Redriven {
    delivery_id: String,
    /// `processed`, `ignored`, `failed` or `rejected`.
    status: store::DeliveryStatus,
    /// Events appended to the outbox by this run (events of an earlier run are not repeated).
    events: usize,
}

/// Re-runs a failed or rejected delivery the scope may change through its connection's
/// current adapter version.
async fn redrive_one(
    state: &ApiState,
    scope: &Scope,
    delivery_id: &str,
    batch: bool,
) -> Result<Redriven, ApiError> {
    let store = state.host.store();
    let not_found = || ApiError::NotFound(format!("no delivery `{delivery_id}`"));
    let delivery = store
        .get_delivery(delivery_id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let connection = store
        .get_connection(&delivery.info.connection_id)
        .await
        .map_err(internal)?
        .filter(|c| scope.sees(&c.tenant_id, c.org_id.as_deref()))
        .ok_or_else(not_found)?;
    scope.check_write(&connection.tenant_id, connection.org_id.as_deref(), || {
        format!("delivery `{delivery_id}`")
    })?;
    let ack = state.host.redrive(delivery_id).await?;
    tracing::info!(delivery = %delivery_id, status = %ack.status, events = ack.events, by = %scope.caller.subject, "delivery redriven");
    scope
        .audit(
            state,
            StatusCode::OK,
            "delivery.redrive",
            Target::new("delivery", delivery_id, connection.org_id.as_deref()),
            json!({
                "connection_id": connection.id,
                "status": ack.status,
                "events": ack.events,
                "batch": batch,
            }),
        )
        .await;
    Ok(Redriven {
        delivery_id: ack.delivery_id,
        status: ack.status,
        events: ack.events,
    })
}

/// `POST /v1/deliveries/{id}/redrive`: 200 with the new outcome, which may be a failure
/// again (the invocation is recorded either way); 409 when the delivery did not fail.
#[utoipa::path(
    post,
    path = "/v1/deliveries/{delivery_id}/redrive",
    tag = "deliveries",
    params(("delivery_id" = String, Path, description = "The delivery's id")),
    responses(
        (status = 200, description = "Run again; its new outcome", body = Redriven),
        super::openapi::Problems,
    ),
)]
async fn redrive_delivery(
    State(state): State<ApiState>,
    scope: Scope,
    Path(delivery_id): Path<String>,
) -> Result<Json<Redriven>, ApiError> {
    redrive_one(&state, &scope, &delivery_id, false)
        .await
        .map(Json)
}

/// `POST /v1/deliveries/redrive`: the deliveries named, or those a filter selects.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    /// These deliveries (1 to 100); excludes the filter fields.
    #[serde(default)]
    delivery_ids: Option<Vec<String>>,
    /// Filter: only this connection's.
    #[serde(default)]
    connection_id: Option<String>,
    /// Filter: `failed` (default) or `rejected`.
    #[serde(default)]
    status: Option<String>,
    /// Filter: received at or after (Unix milliseconds).
    #[serde(default)]
    since: Option<store::Millis>,
    /// Filter: received before (Unix milliseconds).
    #[serde(default)]
    until: Option<store::Millis>,
    /// Filter: at most this many, newest first (1 to 100, default 100).
    #[serde(default)]
    limit: Option<usize>,
}

/// The outcome of one delivery of a batch: where it is now, or why it was not run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum RedriveResult {
    Ran(Redriven),
    Refused {
        delivery_id: String,
        error: super::problem::Problem,
    },
}

/// What a batch redrive did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RedriveBatch {
    /// Deliveries run again.
    redriven: usize,
    /// Deliveries not run (each result says why).
    refused: usize,
    /// One per delivery, in the order asked (or listed, newest first).
    results: Vec<RedriveResult>,
}

#[utoipa::path(
    post,
    path = "/v1/deliveries/redrive",
    tag = "deliveries",
    request_body = RedriveRequest,
    responses(
        (status = 200, description = "A result or a problem per delivery", body = RedriveBatch),
        super::openapi::Problems,
    ),
)]
async fn redrive_deliveries(
    State(state): State<ApiState>,
    scope: Scope,
    body: Result<Json<RedriveRequest>, JsonRejection>,
) -> Result<Json<RedriveBatch>, ApiError> {
    scope.require_write()?;
    let Json(request) = body?;
    let filtered = request.connection_id.is_some()
        || request.status.is_some()
        || request.since.is_some()
        || request.until.is_some()
        || request.limit.is_some();
    let ids = match request.delivery_ids {
        Some(_) if filtered => {
            return Err(ApiError::BadRequest(
                "name `delivery_ids` or filter (`connection_id`, `status`, `since`, `until`, \
                 `limit`), not both"
                    .into(),
            ));
        }
        Some(ids) if ids.is_empty() || ids.len() > MAX_REDRIVE_BATCH => {
            return Err(ApiError::BadRequest(format!(
                "`delivery_ids` names 1 to {MAX_REDRIVE_BATCH} deliveries"
            )));
        }
        Some(ids) => ids,
        None => {
            let status = match request.status.as_deref() {
                None | Some("failed") => store::DeliveryStatus::Failed,
                Some("rejected") => store::DeliveryStatus::Rejected,
                Some(_) => {
                    return Err(ApiError::BadRequest(
                        "`status` must be `failed` or `rejected`: only those are redriven".into(),
                    ));
                }
            };
            let limit = request.limit.unwrap_or(MAX_REDRIVE_BATCH);
            if !(1..=MAX_REDRIVE_BATCH).contains(&limit) {
                return Err(ApiError::BadRequest(format!(
                    "`limit` must be 1 to {MAX_REDRIVE_BATCH}"
                )));
            }
            state
                .host
                .store()
                .list_deliveries(DeliveryFilter {
                    tenant_id: Some(scope.tenant_id().to_owned()),
                    org_id: Some(scope.org_id.clone()),
                    connection_id: request.connection_id,
                    status: Some(status),
                    since: request.since,
                    until: request.until,
                    limit,
                    cursor: None,
                })
                .await
                .map_err(list_error)?
                .items
                .into_iter()
                .map(|d| d.id)
                .collect()
        }
    };
    // One at a time: a batch must not take every sandbox slot from live deliveries.
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        results.push(match redrive_one(&state, &scope, &id, true).await {
            Ok(ran) => RedriveResult::Ran(ran),
            Err(e) => RedriveResult::Refused {
                delivery_id: id,
                error: e.problem(),
            },
        });
    }
    let redriven = results
        .iter()
        .filter(|r| matches!(r, RedriveResult::Ran(_)))
        .count();
    Ok(Json(RedriveBatch {
        redriven,
        refused: results.len() - redriven,
        results,
    }))
}

// --- Replay ------------------------------------------------------------------------------

/// The longest time range one replay covers.
pub const MAX_REPLAY_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many replays a tenant may start an hour (one runs at a time).
pub const MAX_REPLAYS_PER_HOUR: u32 = 10;

/// `POST /v1/replays`: re-publish the published events created in `[from, to)`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// Created at or after (Unix milliseconds).
    from: store::Millis,
    /// Created before (Unix milliseconds); at most 7 days after `from`.
    to: store::Millis,
    /// Only events of this type.
    #[serde(default)]
    event_type: Option<String>,
    /// Replay the platform-level events (org id null) instead of the org's (platform-level
    /// tokens only).
    #[serde(default)]
    platform_level: bool,
    /// Whom to re-send to: `all` (the default: the bus, and every subscriber that wants the
    /// events, whether or not it had them), `bus`, or `subscribers`.
    #[serde(default)]
    target: Option<store::ReplayTarget>,
    /// Only this subscriber (the target is then `subscribers`).
    #[serde(default)]
    subscriber_id: Option<String>,
}

/// Starts a replay: 202 with its record, which `GET /v1/replays/{id}` follows to its end.
/// 429 while another of the tenant's runs, or past the hourly allowance.
#[utoipa::path(
    post,
    path = "/v1/replays",
    tag = "replays",
    request_body = ReplayRequest,
    responses(
        (status = 202, description = "Recorded and running", body = store::Replay),
        super::openapi::Problems,
    ),
)]
async fn start_replay(
    State(state): State<ApiState>,
    scope: Scope,
    body: Result<Json<ReplayRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    scope.require_write()?;
    let Json(request) = body?;
    let window = i128::from(request.to) - i128::from(request.from);
    if window <= 0 {
        return Err(ApiError::BadRequest("`to` must be after `from`".into()));
    }
    if window > i128::from(store::millis(MAX_REPLAY_WINDOW)) {
        return Err(ApiError::BadRequest(format!(
            "a replay covers at most {} days; split the range",
            MAX_REPLAY_WINDOW.as_secs() / 86_400
        )));
    }
    if request.event_type.as_deref().is_some_and(str::is_empty) {
        return Err(ApiError::BadRequest(
            "`event_type` must not be empty".into(),
        ));
    }
    let org_id = scope.new_row_org(request.platform_level)?;
    let target = match (&request.subscriber_id, request.target) {
        (None, target) => target.unwrap_or(store::ReplayTarget::All),
        (Some(_), None | Some(store::ReplayTarget::Subscribers)) => {
            store::ReplayTarget::Subscribers
        }
        (Some(_), Some(other)) => {
            return Err(ApiError::BadRequest(format!(
                "`subscriber_id` goes with the target `subscribers`, not `{other}`"
            )));
        }
    };
    if let Some(id) = &request.subscriber_id {
        let subscriber = visible_subscriber(&state, &scope, id).await?;
        if !subscriber.enabled {
            return Err(ApiError::Conflict(format!(
                "subscriber `{id}` is disabled: enable it before replaying to it"
            )));
        }
    }
    let store = state.host.store().clone();
    let replay = store
        .start_replay(
            store::NewReplay {
                tenant_id: scope.tenant_id().to_owned(),
                org_id,
                from: request.from,
                to: request.to,
                event_type: request.event_type,
                target,
                subscriber_id: request.subscriber_id,
                requested_by: scope.caller.subject.clone(),
                requested_at: store::now_millis(),
            },
            MAX_REPLAYS_PER_HOUR,
        )
        .await
        .map_err(|e| match e {
            store::Error::Limited(why) => ApiError::TooManyRequests(why),
            other => internal(other),
        })?;
    tracing::info!(replay = %replay.id, from = replay.from, to = replay.to, by = %replay.requested_by, "replay started");
    scope
        .audit(
            &state,
            StatusCode::ACCEPTED,
            "replay.create",
            Target::new("replay", &replay.id, replay.org_id.as_deref()),
            json!({
                "from": replay.from, "to": replay.to, "event_type": replay.event_type,
                "target": replay.target, "subscriber_id": replay.subscriber_id,
            }),
        )
        .await;
    let bus = state.host.bus().clone();
    let running = replay.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::relay::run_replay(store.as_ref(), bus.as_ref(), &running).await {
            // The record stays `running` until the next start marks it interrupted.
            tracing::error!(replay = %running.id, error = %e, "recording the end of a replay failed");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(replay)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/replays",
    tag = "replays",
    params(ListQuery),
    responses(
        (status = 200, description = "One page, newest first", body = Page<store::Replay>),
        super::openapi::Problems,
    ),
)]
async fn list_replays(
    State(state): State<ApiState>,
    scope: Scope,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<store::Replay>>, ApiError> {
    let page = state
        .host
        .store()
        .list_replays(scope.tenant_id(), Some(&scope.org_id), list_query(query)?)
        .await
        .map_err(list_error)?;
    Ok(Json(page))
}

#[utoipa::path(
    get,
    path = "/v1/replays/{replay_id}",
    tag = "replays",
    params(("replay_id" = String, Path, description = "The replay's id")),
    responses(
        (status = 200, description = "The replay", body = store::Replay),
        super::openapi::Problems,
    ),
)]
async fn get_replay(
    State(state): State<ApiState>,
    scope: Scope,
    Path(replay_id): Path<String>,
) -> Result<Json<store::Replay>, ApiError> {
    state
        .host
        .store()
        .get_replay(&replay_id)
        .await
        .map_err(internal)?
        .filter(|r| scope.sees(&r.tenant_id, r.org_id.as_deref()))
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no replay `{replay_id}`")))
}

// --- Outgoing webhook subscribers --------------------------------------------------------

/// `POST /v1/subscribers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSubscriberRequest {
    /// Where events are POSTed.
    url: String,
    /// Event types (`deal.won`, `deal.*`, `*`); empty: all.
    #[serde(default)]
    event_types: Vec<String>,
    /// Name of its signing secret in its scope (see `PUT /v1/secrets/{name}`).
    secret: String,
    /// Receives every org's events (platform-level tokens only).
    #[serde(default)]
    platform_level: bool,
    #[serde(default = "crate::config::yes")]
    enabled: bool,
}

/// `PATCH /v1/subscribers/{id}`: what is present changes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SubscriberPatch {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[utoipa::path(
    post,
    path = "/v1/subscribers",
    tag = "subscribers",
    request_body = NewSubscriberRequest,
    responses(
        (status = 201, description = "Created", body = store::Subscriber),
        super::openapi::Problems,
    ),
)]
async fn create_subscriber(
    State(state): State<ApiState>,
    scope: Scope,
    body: Result<Json<NewSubscriberRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    scope.require_write()?;
    let Json(request) = body?;
    let org_id = scope.new_row_org(request.platform_level)?;
    crate::relay::check_subscriber(&request.url, &request.event_types)
        .map_err(ApiError::BadRequest)?;
    check_name("`secret`", &request.secret, true)?;
    let secret_name = request.secret.clone();
    let secret_ref = Scope::secret_ref(scope.tenant_id(), org_id.as_deref(), &request.secret);
    check_subscriber_secret(&state, &secret_ref, &secret_name)?;
    let subscriber = state
        .host
        .store()
        .create_subscriber(NewSubscriber {
            tenant_id: scope.tenant_id().to_owned(),
            secret_ref,
            org_id,
            url: request.url,
            event_types: request.event_types,
            enabled: request.enabled,
            created_at: store::now_millis(),
        })
        .await
        .map_err(internal)?;
    tracing::info!(subscriber = %subscriber.id, by = %scope.caller.subject, "subscriber created");
    // Not the URL: a receiver's URL may carry a token of its own.
    scope
        .audit(
            &state,
            StatusCode::CREATED,
            "subscriber.create",
            Target::new("subscriber", &subscriber.id, subscriber.org_id.as_deref()),
            json!({
                "event_types": subscriber.event_types,
                "secret": secret_name,
                "enabled": subscriber.enabled,
            }),
        )
        .await;
    Ok((StatusCode::CREATED, Json(subscriber)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/subscribers",
    tag = "subscribers",
    params(ListQuery),
    responses(
        (status = 200, description = "One page, oldest first", body = Page<store::Subscriber>),
        super::openapi::Problems,
    ),
)]
async fn list_subscribers(
    State(state): State<ApiState>,
    scope: Scope,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<Subscriber>>, ApiError> {
    let page = state
        .host
        .store()
        .list_subscribers(scope.tenant_id(), Some(&scope.org_id), list_query(query)?)
        .await
        .map_err(list_error)?;
    Ok(Json(page))
}

/// The subscriber, when the scope sees it; 404 otherwise.
async fn visible_subscriber(
    state: &ApiState,
    scope: &Scope,
    id: &str,
) -> Result<Subscriber, ApiError> {
    state
        .host
        .store()
        .get_subscriber(id)
        .await
        .map_err(internal)?
        .filter(|s| scope.sees(&s.tenant_id, s.org_id.as_deref()))
        .ok_or_else(|| ApiError::NotFound(format!("no subscriber `{id}`")))
}

#[utoipa::path(
    get,
    path = "/v1/subscribers/{subscriber_id}",
    tag = "subscribers",
    params(("subscriber_id" = String, Path, description = "The subscriber's id")),
    responses(
        (status = 200, description = "The subscriber", body = store::Subscriber),
        super::openapi::Problems,
    ),
)]
async fn get_subscriber(
    State(state): State<ApiState>,
    scope: Scope,
    Path(subscriber_id): Path<String>,
) -> Result<Json<Subscriber>, ApiError> {
    visible_subscriber(&state, &scope, &subscriber_id)
        .await
        .map(Json)
}

/// A subscriber's secret must be written, and be a Standard Webhooks key, before a subscriber
/// names it: otherwise every delivery to it would fail.
fn check_subscriber_secret(state: &ApiState, secret_ref: &str, name: &str) -> Result<(), ApiError> {
    crate::relay::check_signing_secret(state.host.secrets().as_ref(), secret_ref).map_err(|why| {
        ApiError::BadRequest(if why.starts_with("no signing secret") {
            format!(
                "secret: no secret `{name}` in this scope: write it with PUT /v1/secrets/{name} \
                 (a Standard Webhooks key, `whsec_<base64>`) before a subscriber names it"
            )
        } else {
            format!("secret `{name}` cannot sign Standard Webhooks deliveries: {why}")
        })
    })
}

#[utoipa::path(
    patch,
    path = "/v1/subscribers/{subscriber_id}",
    tag = "subscribers",
    params(("subscriber_id" = String, Path, description = "The subscriber's id")),
    request_body = SubscriberPatch,
    responses(
        (status = 200, description = "The subscriber as changed", body = store::Subscriber),
        super::openapi::Problems,
    ),
)]
async fn update_subscriber(
    State(state): State<ApiState>,
    scope: Scope,
    Path(subscriber_id): Path<String>,
    body: Result<Json<SubscriberPatch>, JsonRejection>,
) -> Result<Json<Subscriber>, ApiError> {
    let current = visible_subscriber(&state, &scope, &subscriber_id).await?;
    scope.check_write(&current.tenant_id, current.org_id.as_deref(), || {
        format!("subscriber `{subscriber_id}`")
    })?;
    let Json(patch) = body?;
    let detail = changed_fields(&[
        ("url", patch.url.is_some()),
        ("event_types", patch.event_types.is_some()),
        ("secret", patch.secret.is_some()),
        ("enabled", patch.enabled.is_some()),
    ]);
    let secret_ref = match &patch.secret {
        Some(name) => {
            check_name("`secret`", name, true)?;
            let secret_ref = Scope::secret_ref(&current.tenant_id, current.org_id.as_deref(), name);
            check_subscriber_secret(&state, &secret_ref, name)?;
            secret_ref
        }
        None => current.secret_ref,
    };
    let update = SubscriberUpdate {
        url: patch.url.unwrap_or(current.url),
        event_types: patch.event_types.unwrap_or(current.event_types),
        secret_ref,
        enabled: patch.enabled.unwrap_or(current.enabled),
    };
    crate::relay::check_subscriber(&update.url, &update.event_types)
        .map_err(ApiError::BadRequest)?;
    let updated = state
        .host
        .store()
        .update_subscriber(&current.id, update)
        .await
        .map_err(internal)?;
    scope
        .audit(
            &state,
            StatusCode::OK,
            "subscriber.update",
            Target::new("subscriber", &updated.id, updated.org_id.as_deref()),
            detail,
        )
        .await;
    Ok(Json(updated))
}

#[utoipa::path(
    delete,
    path = "/v1/subscribers/{subscriber_id}",
    tag = "subscribers",
    params(("subscriber_id" = String, Path, description = "The subscriber's id")),
    responses(
        (status = 204, description = "Deleted"),
        super::openapi::Problems,
    ),
)]
async fn delete_subscriber(
    State(state): State<ApiState>,
    scope: Scope,
    Path(subscriber_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let current = visible_subscriber(&state, &scope, &subscriber_id).await?;
    scope.check_write(&current.tenant_id, current.org_id.as_deref(), || {
        format!("subscriber `{subscriber_id}`")
    })?;
    state
        .host
        .store()
        .delete_subscriber(&current.id)
        .await
        .map_err(internal)?;
    scope
        .audit(
            &state,
            StatusCode::NO_CONTENT,
            "subscriber.delete",
            Target::new("subscriber", &current.id, current.org_id.as_deref()),
            json!({}),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Filters of a subscriber's delivery list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct SubscriberDeliveriesQuery {
    /// `pending`, `delivered` or `dead`.
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// A subscriber's deliveries and their last attempt, newest event first.
#[utoipa::path(
    get,
    path = "/v1/subscribers/{subscriber_id}/deliveries",
    tag = "subscribers",
    params(("subscriber_id" = String, Path, description = "The subscriber's id"), SubscriberDeliveriesQuery),
    responses(
        (status = 200, description = "One page, newest event first", body = Page<store::SubscriberDelivery>),
        super::openapi::Problems,
    ),
)]
async fn subscriber_deliveries(
    State(state): State<ApiState>,
    scope: Scope,
    Path(subscriber_id): Path<String>,
    query: Result<Query<SubscriberDeliveriesQuery>, QueryRejection>,
) -> Result<Json<Page<store::SubscriberDelivery>>, ApiError> {
    let subscriber = visible_subscriber(&state, &scope, &subscriber_id).await?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let status = query
        .status
        .map(|text| text.parse())
        .transpose()
        .map_err(|_| {
            ApiError::BadRequest("`status` must be `pending`, `delivered` or `dead`".into())
        })?;
    let page = state
        .host
        .store()
        .list_subscriber_deliveries(SubscriberDeliveryFilter {
            subscriber_id: subscriber.id,
            status,
            limit: page_limit(query.limit)?,
            cursor: query.cursor,
        })
        .await
        .map_err(list_error)?;
    Ok(Json(page))
}

/// A subscriber delivery made due now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Retried {
    retried: bool,
    /// The event's outbox sequence number.
    outbox_seq: i64,
}

/// Makes a dead (or waiting) delivery to a subscriber due now, with its attempts reset.
#[utoipa::path(
    post,
    path = "/v1/subscribers/{subscriber_id}/deliveries/{seq}/retry",
    tag = "subscribers",
    params(("subscriber_id" = String, Path, description = "The subscriber's id"), ("seq" = i64, Path, description = "The event's outbox sequence number")),
    responses(
        (status = 200, description = "Due now", body = Retried),
        super::openapi::Problems,
    ),
)]
async fn retry_subscriber_delivery(
    State(state): State<ApiState>,
    scope: Scope,
    Path((subscriber_id, seq)): Path<(String, String)>,
) -> Result<Json<Retried>, ApiError> {
    let subscriber = visible_subscriber(&state, &scope, &subscriber_id).await?;
    scope.check_write(&subscriber.tenant_id, subscriber.org_id.as_deref(), || {
        format!("subscriber `{subscriber_id}`")
    })?;
    let seq: i64 = seq
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("`{seq}` is not an event sequence number")))?;
    state
        .host
        .store()
        .retry_subscriber_delivery(&subscriber.id, seq, store::now_millis())
        .await
        .map_err(|e| match e {
            store::Error::NotFound(_) => ApiError::NotFound(format!(
                "subscriber `{subscriber_id}` has no delivery of event {seq}"
            )),
            store::Error::Conflict(why) => ApiError::Conflict(why),
            other => internal(other),
        })?;
    // The delivery is due now: wake the relay.
    state.host.outbox_appended().notify_one();
    tracing::info!(subscriber = %subscriber_id, seq, by = %scope.caller.subject, "subscriber delivery retried by hand");
    scope
        .audit(
            &state,
            StatusCode::OK,
            "subscriber_delivery.retry",
            Target::new("subscriber", &subscriber.id, subscriber.org_id.as_deref()),
            json!({"outbox_seq": seq}),
        )
        .await;
    Ok(Json(Retried {
        retried: true,
        outbox_seq: seq,
    }))
}

// --- Dry run -----------------------------------------------------------------------------

/// `POST /v1/adapters/{id}/versions/{v}/test`: a sample input and connection context.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    /// `webhook` or `poll`.
    kind: TestKind,
    /// The request body or poll page, as text.
    body: String,
    /// Webhook headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Webhook method (default POST).
    #[serde(default)]
    method: Option<String>,
    /// The poll page's content type.
    #[serde(default)]
    content_type: Option<String>,
    /// The poll cursor.
    #[serde(default)]
    cursor: Option<String>,
    /// The connection's provider (default: the adapter's).
    #[serde(default)]
    provider: Option<String>,
    /// The orgs the connection allows (default: the caller's org).
    #[serde(default)]
    allowed_org_ids: Option<Vec<String>>,
    /// Run as a platform-level connection, which may emit platform-level events (`org_id`
    /// null); by default the connection belongs to the caller's org, and may not.
    #[serde(default)]
    platform_level: bool,
    /// The connection's settings.
    #[serde(default)]
    settings: BTreeMap<String, String>,
    /// The connection's state before the run (text values).
    #[serde(default)]
    state: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum TestKind {
    Webhook,
    Poll,
}

/// What a dry run did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TestReport {
    /// `accepted` with its events, `ignored`, `adapter_error`, `rejected` with its contract
    /// violations, or `failed` (trap, deadline, limit).
    outcome: Value,
    /// Duration, fuel, peak memory, bytes in and out.
    usage: Value,
    /// The adapter's log lines (truncated past the log limit).
    log: Value,
    /// The connection's state after the run (text values); null when the run kept none.
    state_after: Option<BTreeMap<String, String>>,
    /// The events' payload fields shown as `"~masked"`: personal data, as the version declares
    /// it, which only a caller with the `pii_reader` role sees.
    masked: Vec<MaskedFields>,
}

/// The masked payload fields of one event of a dry run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct MaskedFields {
    /// The event's position in `outcome.accepted.events`, from 0.
    event: usize,
    /// JSON pointers into its payload.
    fields: Vec<String>,
}

/// Masks the personal data `declaration` names in the payloads of `outcome`'s events.
fn mask_outcome(
    outcome: &mut sandbox::Outcome,
    declaration: &crate::contracts::Declaration,
) -> Vec<MaskedFields> {
    let sandbox::Outcome::Accepted { events, .. } = outcome else {
        return Vec::new();
    };
    let mut masked = Vec::new();
    for (index, event) in events.iter_mut().enumerate() {
        let Some(fields) = declaration
            .personal_fields(&event.event_type)
            .filter(|f| !f.is_empty())
        else {
            continue;
        };
        let Ok(mut payload) = serde_json::from_str::<Value>(&event.payload) else {
            continue;
        };
        let found = fields.locate(&payload);
        if found.is_empty() {
            continue;
        }
        let fields = crate::contracts::mask(&mut payload, &found);
        event.payload = payload.to_string();
        masked.push(MaskedFields {
            event: index,
            fields,
        });
    }
    masked
}

/// Runs a version against a sample in the sandbox and answers what it would do: events,
/// violations, logs, usage and the state after. Writes nothing anywhere.
#[utoipa::path(
    post,
    path = "/v1/adapters/{adapter_id}/versions/{version}/test",
    tag = "adapters",
    params(("adapter_id" = String, Path, description = "The adapter's id"), ("version" = u32, Path, description = "The version number")),
    request_body = TestRequest,
    responses(
        (status = 200, description = "What the adapter did; nothing was written", body = TestReport),
        super::openapi::Problems,
    ),
)]
async fn test_version(
    State(state): State<ApiState>,
    scope: Scope,
    Path((adapter_id, version)): Path<(String, u32)>,
    body: Result<Json<TestRequest>, JsonRejection>,
) -> Result<Json<TestReport>, ApiError> {
    let adapter = visible_adapter(&state, &scope, &adapter_id).await?;
    // It writes nothing, but it is adapter development and takes a sandbox slot: an admin's.
    scope.require_write()?;
    let Json(request) = body?;
    let stored = state
        .host
        .store()
        .get_adapter_version(&adapter.id, version)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            ApiError::NotFound(format!("adapter `{adapter_id}` has no version {version}"))
        })?;
    match stored.status {
        store::VersionStatus::Ready => {}
        store::VersionStatus::Compiling => {
            return Err(ApiError::Conflict(format!(
                "version {version} is still compiling: try it once it is `ready`"
            )));
        }
        store::VersionStatus::Failed => {
            return Err(ApiError::BadRequest(format!(
                "version {version} failed to compile: {}",
                stored.failure.as_deref().unwrap_or("no reason recorded")
            )));
        }
    }
    let loaded = state
        .host
        .adapter(&adapter.id, version)
        .await
        .map_err(ApiError::internal)?;
    let allowed = request
        .allowed_org_ids
        .unwrap_or_else(|| vec![scope.org_id.clone()]);
    check_allowed_orgs(Some(&scope.org_id), &allowed)?;
    let now = SystemTime::now();
    let input = match request.kind {
        TestKind::Webhook => sandbox::Input::Webhook(sandbox::WebhookRequest {
            method: request.method.unwrap_or_else(|| "POST".into()),
            path: "/v1/hooks/dry-run".into(),
            query: String::new(),
            headers: request.headers.into_iter().collect(),
            body: request.body.into_bytes(),
            received_at: now,
        }),
        TestKind::Poll => sandbox::Input::Poll(sandbox::PollPage::pushed(
            request.body.into_bytes(),
            request.content_type,
            request.cursor,
            now,
        )),
    };
    let context = sandbox::ConnectionContext {
        connection_id: "dry-run".into(),
        tenant_id: scope.tenant_id().to_owned(),
        org_id: (!request.platform_level).then(|| scope.org_id.clone()),
        provider: request
            .provider
            .unwrap_or_else(|| loaded.info().provider.clone()),
        allowed_org_ids: allowed,
        settings: request.settings.into_iter().collect(),
        api_base_url: None,
    };
    let before = request
        .state
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    let mut report = state
        .host
        .run_isolated(&loaded, &input, &context, sandbox::Env::with_state(before))
        .await
        .map_err(ApiError::internal)?;
    let masked = if scope.caller.sees_personal_data {
        Vec::new()
    } else {
        mask_outcome(&mut report.outcome, loaded.declaration())
    };
    let state_after = report.state.as_ref().map(|s| {
        s.iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect::<BTreeMap<_, _>>()
    });
    Ok(Json(TestReport {
        outcome: serde_json::to_value(&report.outcome).map_err(ApiError::internal)?,
        usage: serde_json::to_value(&report.usage).map_err(ApiError::internal)?,
        log: serde_json::to_value(&report.log).map_err(ApiError::internal)?,
        state_after,
        masked,
    }))
}
