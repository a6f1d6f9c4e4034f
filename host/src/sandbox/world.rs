//! Our WIT world on the host side: generated bindings, the host's imports, conversions, and the
//! check that a component imports nothing outside the world.

use serde::{Deserialize, Serialize};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::{ConnectionContext, Error, HostState, PollPage, Result, WebhookRequest, unix_time};
use crate::contracts::EmittedEvent;
use crate::sandbox::logs::LogLevel;

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "crm:adapter/crm-adapter",
    });

    pub use crm::adapter::types::{AdapterError, AdapterInfo, ConnectionContext, Event};
}

use bindings::crm::adapter::{log, state, types};

/// The interface every adapter must export.
pub const WORLD_EXPORT: &str = "crm:adapter/adapter@0.1.0";

/// Our own interfaces a component may import.
const WORLD_IMPORTS: [&str; 3] = [
    "crm:adapter/types@0.1.0",
    "crm:adapter/log@0.1.0",
    "crm:adapter/state@0.1.0",
];

/// WASI packages a guest's standard library may import. They are linked with nothing behind
/// them: no preopened directories, no environment, no arguments, no network.
const WASI_PACKAGES: [&str; 6] = ["cli", "clocks", "filesystem", "io", "random", "sockets"];

fn import_allowed(name: &str) -> bool {
    if WORLD_IMPORTS.contains(&name) {
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

/// Refuses a component that imports anything outside the world or does not export the adapter
/// interface; the message names every offending import and the missing export.
pub(super) fn check_component(engine: &Engine, component: &Component) -> Result<()> {
    let ty = component.component_type();
    let mut problems: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !import_allowed(name))
        .map(|name| format!("imports `{name}`, which the adapter world does not provide"))
        .collect();
    if !ty.exports(engine).any(|(name, _)| name == WORLD_EXPORT) {
        problems.push(format!("does not export `{WORLD_EXPORT}`"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::World(problems.join("; ")))
    }
}

/// One event type an adapter declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTypeInfo {
    /// `entity.action`.
    pub name: String,
    /// JSON pointers (relative to the payload) of its decimal fields.
    pub decimal_fields: Vec<String>,
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

pub(super) fn from_wit_info(info: bindings::AdapterInfo) -> AdapterInfo {
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
            })
            .collect(),
    }
}

pub(super) fn from_wit_event(event: bindings::Event) -> EmittedEvent {
    EmittedEvent {
        event_type: event.event_type,
        entity_type: event.entity_type,
        entity_id: event.entity_id,
        org_id: event.org_id,
        payload: event.payload,
        dedupe_key: event.dedupe_key,
    }
}

fn to_wit_timestamp(time: std::time::SystemTime) -> types::Timestamp {
    let since = unix_time(time);
    types::Timestamp {
        seconds: since.as_secs(),
        nanoseconds: since.subsec_nanos(),
    }
}

pub(super) fn to_wit_context(context: &ConnectionContext) -> bindings::ConnectionContext {
    bindings::ConnectionContext {
        connection_id: context.connection_id.clone(),
        tenant_id: context.tenant_id.clone(),
        provider: context.provider.clone(),
        allowed_org_ids: context.allowed_org_ids.clone(),
        settings: context.settings.clone(),
    }
}

pub(super) fn to_wit_request(request: &WebhookRequest) -> types::WebhookRequest {
    types::WebhookRequest {
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers: request
            .headers
            .iter()
            .map(|(name, value)| types::Header {
                name: name.to_ascii_lowercase(),
                value: value.clone(),
            })
            .collect(),
        body: request.body.clone(),
        received_at: to_wit_timestamp(request.received_at),
    }
}

pub(super) fn to_wit_page(page: &PollPage) -> types::PollPage {
    types::PollPage {
        body: page.body.clone(),
        content_type: page.content_type.clone(),
        cursor: page.cursor.clone(),
        fetched_at: to_wit_timestamp(page.fetched_at),
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.log.push(level, &message);
    }
}

impl state::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&key).map(<[u8]>::to_vec)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> std::result::Result<(), state::StateError> {
        use super::state::StateError as E;
        self.state.set(key, value).map_err(|e| match e {
            E::InvalidKey(m) => state::StateError::InvalidKey(m),
            E::TooLarge(m) => state::StateError::TooLarge(m),
            E::TooManyKeys(m) => state::StateError::TooManyKeys(m),
        })
    }

    fn delete(&mut self, key: String) {
        self.state.delete(&key);
    }

    fn keys(&mut self, prefix: String) -> Vec<String> {
        self.state.keys(&prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::import_allowed;

    #[test]
    fn allows_the_world_and_the_wasi_a_standard_library_needs() {
        for name in [
            "crm:adapter/log@0.1.0",
            "crm:adapter/state@0.1.0",
            "crm:adapter/types@0.1.0",
            "wasi:cli/environment@0.2.6",
            "wasi:io/streams@0.2.0",
            "wasi:filesystem/preopens@0.2.3",
            "wasi:sockets/tcp@0.2.6",
        ] {
            assert!(import_allowed(name), "{name}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for name in [
            "crm:adapter/log@0.2.0",
            "crm:adapter/secrets@0.1.0",
            "wasi:http/outgoing-handler@0.2.6",
            "wasi:cli/environment@0.3.0",
            "evil:net/raw",
            "wasi:cli",
            "",
        ] {
            assert!(!import_allowed(name), "{name}");
        }
    }
}
