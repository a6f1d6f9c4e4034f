//! Our WIT worlds on the host side: generated bindings of every version served, the host's
//! imports, conversions to the host's own types, and the check that a component imports nothing
//! outside its world.
//!
//! A published version is frozen and keeps being served: `crm:adapter@0.1.0` (webhooks, pushed
//! poll pages, log, state) from `wit/deps/crm-adapter@0.1.0`, and the current
//! `crm:adapter@0.2.0` from `wit/` (adds polling through the host, `http.fetch`, idempotency
//! keys, personal-data fields). A component is bound to the version it exports.

use serde::{Deserialize, Serialize};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::http::{FetchError, HttpRequest, HttpResponse};
use super::{
    AdapterFailure, ConnectionContext, Error, HostState, Output, PollPage, Result, WebhookRequest,
    unix_time,
};
use crate::contracts::EmittedEvent;
use crate::sandbox::logs::LogLevel;

pub(super) mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit/deps/crm-adapter@0.1.0",
        world: "crm:adapter/crm-adapter@0.1.0",
        exports: { default: async },
    });
}

pub(super) mod v2 {
    wasmtime::component::bindgen!({
        // The file, not the folder: the folder's `deps/` holds 0.1.0, whose presence would make
        // every generated name carry a version.
        path: "../wit/adapter.wit",
        world: "crm:adapter/crm-adapter@0.2.0",
        imports: { "crm:adapter/http.fetch": async },
        exports: { default: async },
    });
}

/// A version of the adapter world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorldVersion {
    /// `crm:adapter@0.1.0` (frozen).
    #[serde(rename = "0.1.0")]
    V0_1,
    /// `crm:adapter@0.2.0` (current).
    #[serde(rename = "0.2.0")]
    V0_2,
}

impl WorldVersion {
    /// Every version served, oldest first.
    pub const ALL: [WorldVersion; 2] = [WorldVersion::V0_1, WorldVersion::V0_2];

    /// The version's text, `0.1.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_1 => "0.1.0",
            Self::V0_2 => "0.2.0",
        }
    }

    /// The interface an adapter of this version exports.
    pub fn export(self) -> &'static str {
        match self {
            Self::V0_1 => "crm:adapter/adapter@0.1.0",
            Self::V0_2 => "crm:adapter/adapter@0.2.0",
        }
    }

    /// Our own interfaces an adapter of this version may import.
    fn own_imports(self) -> &'static [&'static str] {
        match self {
            Self::V0_1 => &[
                "crm:adapter/types@0.1.0",
                "crm:adapter/log@0.1.0",
                "crm:adapter/state@0.1.0",
            ],
            Self::V0_2 => &[
                "crm:adapter/types@0.2.0",
                "crm:adapter/log@0.2.0",
                "crm:adapter/state@0.2.0",
                "crm:adapter/http@0.2.0",
            ],
        }
    }

    /// Whether the host can drive a poll through this version (`poll-request`).
    pub fn polls_through_host(self) -> bool {
        self >= Self::V0_2
    }
}

impl std::fmt::Display for WorldVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The export every adapter of the current world version implements.
pub const WORLD_EXPORT: &str = "crm:adapter/adapter@0.2.0";

/// WASI packages a guest's standard library may import. They are linked with nothing behind
/// them: no preopened directories, no environment, no arguments, no network.
const WASI_PACKAGES: [&str; 6] = ["cli", "clocks", "filesystem", "io", "random", "sockets"];

fn import_allowed(version: WorldVersion, name: &str) -> bool {
    if version.own_imports().contains(&name) {
        return true;
    }
    let Some(rest) = name.strip_prefix("wasi:") else {
        return false;
    };
    let Some((package, version)) = rest.split_once('/').and_then(|(package, rest)| {
        rest.split_once('@')
            .map(|(_interface, version)| (package, version))
    }) else {
        return false;
    };
    WASI_PACKAGES.contains(&package) && version.starts_with("0.2.")
}

/// The world version a component targets (by the adapter interface it exports) and the names
/// it imports, sorted, after checking that it imports nothing outside that world; the message
/// names every offending import, or the missing export.
pub(super) fn check_component(
    engine: &Engine,
    component: &Component,
) -> Result<(WorldVersion, Vec<String>)> {
    let ty = component.component_type();
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let mut imports: Vec<&str> = ty.imports(engine).map(|(name, _)| name).collect();
    imports.sort_unstable();
    let version = judge(&imports, &exports)?;
    Ok((version, imports.into_iter().map(str::to_owned).collect()))
}

/// What a component creates when instantiated, counted from its sections: core instances
/// (every instantiation of a core module, nested components included), and the tables and
/// linear memories its core modules define.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Footprint {
    /// Core module instantiations.
    pub(super) instances: u32,
    /// Tables defined by its core modules.
    pub(super) tables: u32,
    /// Linear memories defined by its core modules.
    pub(super) memories: u32,
}

/// [`check_component`] before compiling: the names a component imports and exports, read
/// from its outer sections in a few milliseconds, judged the same way (the inner result), and
/// its [`Footprint`]; the outer error is for bytes that are not a component.
/// A component the world refuses is refused without the compiler's seconds of CPU, and
/// nothing of it is cached. Nested modules and components are not judged: their imports are
/// satisfied inside the component, and compiling it checks the types.
pub(super) fn precheck(wasm: &[u8]) -> Result<(Result<WorldVersion>, Footprint)> {
    use wasmparser::{Encoding, Instance, Parser, Payload};
    let invalid =
        |e: wasmparser::BinaryReaderError| Error::Invalid(format!("not a valid component: {e}"));
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut footprint = Footprint::default();
    // The encoding of every enclosing component or module, outermost first.
    let mut nesting: Vec<Encoding> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(invalid)?;
        let depth = nesting.len();
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err(Error::Invalid(
                        "not a valid component: this is a core WebAssembly module (build the \
                         adapter as a component, e.g. for cargo's wasm32-wasip2 target)"
                            .into(),
                    ));
                }
                nesting.push(encoding);
            }
            Payload::End(_) => {
                nesting.pop();
            }
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    imports.push(import.map_err(invalid)?.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    exports.push(export.map_err(invalid)?.name.name.to_owned());
                }
            }
            Payload::InstanceSection(section) => {
                for instance in section {
                    if let Instance::Instantiate { .. } = instance.map_err(invalid)? {
                        footprint.instances = footprint.instances.saturating_add(1);
                    }
                }
            }
            Payload::TableSection(section) if nesting.last() == Some(&Encoding::Module) => {
                footprint.tables = footprint.tables.saturating_add(section.count());
            }
            Payload::MemorySection(section) if nesting.last() == Some(&Encoding::Module) => {
                footprint.memories = footprint.memories.saturating_add(section.count());
            }
            _ => {}
        }
    }
    let imports: Vec<&str> = imports.iter().map(String::as_str).collect();
    let exports: Vec<&str> = exports.iter().map(String::as_str).collect();
    Ok((judge(&imports, &exports), footprint))
}

/// The world version of a component importing `imports` and exporting `exports`, or every
/// reason it is not an adapter.
fn judge(imports: &[&str], exports: &[&str]) -> Result<WorldVersion> {
    let version = WorldVersion::ALL
        .into_iter()
        .rev()
        .find(|v| exports.contains(&v.export()));
    // Without the export, imports are judged against the current world.
    let judged_by = version.unwrap_or(WorldVersion::V0_2);
    let mut problems: Vec<String> = imports
        .iter()
        .filter(|name| !import_allowed(judged_by, name))
        .map(|name| {
            format!("imports `{name}`, which the adapter world {judged_by} does not provide")
        })
        .collect();
    if version.is_none() {
        let wanted: Vec<String> = WorldVersion::ALL
            .iter()
            .map(|v| format!("`{}`", v.export()))
            .collect();
        problems.push(format!("does not export {}", wanted.join(" or ")));
    }
    match version {
        Some(version) if problems.is_empty() => Ok(version),
        _ => Err(Error::World(problems.join("; "))),
    }
}

/// One event type an adapter declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTypeInfo {
    /// `entity.action`.
    pub name: String,
    /// JSON pointers (relative to the payload) of its decimal fields.
    pub decimal_fields: Vec<String>,
    /// JSON pointers (relative to the payload) of its personal-data fields (0.2.0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pii_fields: Vec<String>,
}

/// What the host records of a ready version: what it declares (`describe`), flattened, beside
/// the world version it implements and the names it imports (versions recorded before these
/// two were kept read back without them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// What it declared.
    #[serde(flatten)]
    pub info: AdapterInfo,
    /// The world version it implements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world: Option<WorldVersion>,
    /// The interfaces it imports (ours and WASI's), sorted.
    #[serde(default)]
    pub imports: Vec<String>,
}

/// What an adapter says about itself (`describe`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterInfo {
    /// Its name.
    pub name: String,
    /// Its own version string.
    pub version: String,
    /// The provider it is written for.
    pub provider: String,
    /// The event types it may emit.
    pub event_types: Vec<EventTypeInfo>,
}

/// Conversions and host imports that the two versions share to the letter: the generated types
/// of each version are distinct Rust types with the same fields.
macro_rules! shared_conversions {
    ($v:ident) => {
        impl $v::crm::adapter::types::Host for HostState {}

        impl $v::crm::adapter::log::Host for HostState {
            fn log(&mut self, level: $v::crm::adapter::log::Level, message: String) {
                use $v::crm::adapter::log::Level;
                let level = match level {
                    Level::Trace => LogLevel::Trace,
                    Level::Debug => LogLevel::Debug,
                    Level::Info => LogLevel::Info,
                    Level::Warn => LogLevel::Warn,
                    Level::Error => LogLevel::Error,
                };
                self.log.push(level, &message);
            }
        }

        impl $v::crm::adapter::state::Host for HostState {
            fn get(&mut self, key: String) -> Option<Vec<u8>> {
                self.state.get(&key).map(<[u8]>::to_vec)
            }

            fn set(
                &mut self,
                key: String,
                value: Vec<u8>,
            ) -> std::result::Result<(), $v::crm::adapter::state::StateError> {
                use super::state::StateError as E;
                use $v::crm::adapter::state::StateError as W;
                self.state.set(key, value).map_err(|e| match e {
                    E::InvalidKey(m) => W::InvalidKey(m),
                    E::TooLarge(m) => W::TooLarge(m),
                    E::TooManyKeys(m) => W::TooManyKeys(m),
                })
            }

            fn delete(&mut self, key: String) {
                self.state.delete(&key);
            }

            fn keys(&mut self, prefix: String) -> Vec<String> {
                self.state.keys(&prefix)
            }
        }

        impl $v::crm::adapter::types::Timestamp {
            pub(super) fn from_time(time: std::time::SystemTime) -> Self {
                let since = unix_time(time);
                Self {
                    seconds: since.as_secs(),
                    nanoseconds: since.subsec_nanos(),
                }
            }
        }

        impl $v::crm::adapter::types::WebhookRequest {
            pub(super) fn from_host(request: &WebhookRequest) -> Self {
                Self {
                    method: request.method.clone(),
                    path: request.path.clone(),
                    query: request.query.clone(),
                    headers: request
                        .headers
                        .iter()
                        .map(|(name, value)| $v::crm::adapter::types::Header {
                            name: name.to_ascii_lowercase(),
                            value: value.clone(),
                        })
                        .collect(),
                    body: request.body.clone(),
                    received_at: $v::crm::adapter::types::Timestamp::from_time(request.received_at),
                }
            }
        }

        impl From<$v::crm::adapter::types::AdapterError> for AdapterFailure {
            fn from(error: $v::crm::adapter::types::AdapterError) -> Self {
                use $v::crm::adapter::types::AdapterError as E;
                match error {
                    E::BadRequest(m) => Self::BadRequest(m),
                    E::Ignored(m) => Self::Ignored(m),
                    E::Failed(m) => Self::Failed(m),
                }
            }
        }
    };
}

shared_conversions!(v1);
shared_conversions!(v2);

// --- 0.1.0 -----------------------------------------------------------------------------------

pub(super) fn v1_info(info: v1::crm::adapter::types::AdapterInfo) -> AdapterInfo {
    AdapterInfo {
        name: info.name,
        version: info.version,
        provider: info.provider,
        event_types: info
            .event_types
            .into_iter()
            .map(|t| EventTypeInfo {
                name: t.name,
                decimal_fields: t.decimal_fields,
                pii_fields: Vec::new(),
            })
            .collect(),
    }
}

pub(super) fn v1_event(event: v1::crm::adapter::types::Event) -> EmittedEvent {
    EmittedEvent {
        event_type: event.event_type,
        entity_type: event.entity_type,
        entity_id: event.entity_id,
        org_id: event.org_id,
        payload: event.payload,
        dedupe_key: event.dedupe_key,
        idempotency_key: None,
    }
}

pub(super) fn v1_context(
    context: &ConnectionContext,
) -> v1::crm::adapter::types::ConnectionContext {
    v1::crm::adapter::types::ConnectionContext {
        connection_id: context.connection_id.clone(),
        tenant_id: context.tenant_id.clone(),
        provider: context.provider.clone(),
        allowed_org_ids: context.allowed_org_ids.clone(),
        settings: context.settings.clone(),
    }
}

pub(super) fn v1_page(page: &PollPage) -> v1::crm::adapter::types::PollPage {
    v1::crm::adapter::types::PollPage {
        body: page.body.clone(),
        content_type: page.content_type.clone(),
        cursor: page.cursor.clone(),
        fetched_at: v1::crm::adapter::types::Timestamp::from_time(page.fetched_at),
    }
}

pub(super) fn v1_poll_output(output: v1::crm::adapter::types::PollOutput) -> Output {
    Output {
        events: output.events.into_iter().map(v1_event).collect(),
        next_cursor: output.next_cursor,
        // A 0.1.0 adapter only handles pushed pages: one page at a time.
        more: false,
        records: None,
        request: None,
    }
}

// --- 0.2.0 -----------------------------------------------------------------------------------

use v2::crm::adapter::types as t2;

pub(super) fn v2_info(info: t2::AdapterInfo) -> AdapterInfo {
    AdapterInfo {
        name: info.name,
        version: info.version,
        provider: info.provider,
        event_types: info
            .event_types
            .into_iter()
            .map(|t| EventTypeInfo {
                name: t.name,
                decimal_fields: t.decimal_fields,
                pii_fields: t.pii_fields,
            })
            .collect(),
    }
}

pub(super) fn v2_event(event: t2::Event) -> EmittedEvent {
    EmittedEvent {
        event_type: event.event_type,
        entity_type: event.entity_type,
        entity_id: event.entity_id,
        org_id: event.org_id,
        payload: event.payload,
        dedupe_key: event.dedupe_key,
        idempotency_key: event.idempotency_key,
    }
}

pub(super) fn v2_context(context: &ConnectionContext) -> t2::ConnectionContext {
    t2::ConnectionContext {
        connection_id: context.connection_id.clone(),
        tenant_id: context.tenant_id.clone(),
        org_id: context.org_id.clone(),
        provider: context.provider.clone(),
        allowed_org_ids: context.allowed_org_ids.clone(),
        settings: context.settings.clone(),
        api_base_url: context.api_base_url.clone(),
    }
}

fn v2_headers(headers: &[(String, String)]) -> Vec<t2::Header> {
    headers
        .iter()
        .map(|(name, value)| t2::Header {
            name: name.to_ascii_lowercase(),
            value: value.clone(),
        })
        .collect()
}

pub(super) fn v2_request_to_wit(request: &HttpRequest) -> t2::HttpRequest {
    t2::HttpRequest {
        method: request.method.clone(),
        url: request.url.clone(),
        query: request.query.clone(),
        headers: v2_headers(&request.headers),
        body: request.body.clone(),
    }
}

pub(super) fn v2_request_from_wit(request: t2::HttpRequest) -> HttpRequest {
    HttpRequest {
        method: request.method,
        url: request.url,
        query: request.query,
        headers: request
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect(),
        body: request.body,
    }
}

pub(super) fn v2_page(page: &PollPage) -> t2::PollPage {
    t2::PollPage {
        cursor: page.cursor.clone(),
        request: page.request.as_ref().map(v2_request_to_wit),
        status: page.status,
        headers: v2_headers(&page.headers),
        body: page.body.clone(),
        content_type: page.content_type.clone(),
        fetched_at: t2::Timestamp::from_time(page.fetched_at),
    }
}

pub(super) fn v2_poll_output(output: t2::PollOutput) -> Output {
    Output {
        events: output.events.into_iter().map(v2_event).collect(),
        next_cursor: output.next_cursor,
        more: output.more,
        records: output.records,
        request: None,
    }
}

impl v2::crm::adapter::http::Host for HostState {
    async fn fetch(
        &mut self,
        request: t2::HttpRequest,
    ) -> std::result::Result<t2::HttpResponse, v2::crm::adapter::http::FetchError> {
        use v2::crm::adapter::http::FetchError as W;
        let request = v2_request_from_wit(request);
        match self.perform_fetch(request).await {
            Ok(HttpResponse {
                status,
                headers,
                body,
            }) => Ok(t2::HttpResponse {
                status,
                headers: v2_headers(&headers),
                body,
            }),
            Err(error) => Err(match error {
                FetchError::NotAllowed(m) => W::NotAllowed(m),
                FetchError::LimitExceeded(m) => W::LimitExceeded(m),
                FetchError::Timeout(m) => W::Timeout(m),
                FetchError::TooLarge(m) => W::TooLarge(m),
                FetchError::Unavailable(m) => W::Unavailable(m),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{WorldVersion, import_allowed};

    #[test]
    fn allows_the_world_and_the_wasi_a_standard_library_needs() {
        for (version, name) in [
            (WorldVersion::V0_1, "crm:adapter/log@0.1.0"),
            (WorldVersion::V0_1, "crm:adapter/state@0.1.0"),
            (WorldVersion::V0_1, "crm:adapter/types@0.1.0"),
            (WorldVersion::V0_2, "crm:adapter/http@0.2.0"),
            (WorldVersion::V0_2, "crm:adapter/log@0.2.0"),
            (WorldVersion::V0_2, "wasi:cli/environment@0.2.6"),
            (WorldVersion::V0_1, "wasi:io/streams@0.2.0"),
            (WorldVersion::V0_1, "wasi:filesystem/preopens@0.2.3"),
            (WorldVersion::V0_2, "wasi:sockets/tcp@0.2.6"),
        ] {
            assert!(import_allowed(version, name), "{version} {name}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for (version, name) in [
            // A 0.1.0 adapter cannot reach the 0.2.0 host fetch, nor mix versions.
            (WorldVersion::V0_1, "crm:adapter/http@0.2.0"),
            (WorldVersion::V0_1, "crm:adapter/log@0.2.0"),
            (WorldVersion::V0_2, "crm:adapter/log@0.1.0"),
            (WorldVersion::V0_2, "crm:adapter/secrets@0.2.0"),
            (WorldVersion::V0_2, "wasi:http/outgoing-handler@0.2.6"),
            (WorldVersion::V0_2, "wasi:cli/environment@0.3.0"),
            (WorldVersion::V0_2, "evil:net/raw"),
            (WorldVersion::V0_2, "wasi:cli"),
            (WorldVersion::V0_2, ""),
        ] {
            assert!(!import_allowed(version, name), "{version} {name}");
        }
    }
}
