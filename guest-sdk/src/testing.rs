//! Unit-testing adapters natively, with plain `cargo test`.
//!
//! Off `wasm32`, [`crate::log`] and [`crate::state`] use an in-memory implementation kept per
//! thread; the test harness runs each `#[test]` on its own thread, so tests do not see each
//! other's state. This module builds inputs, inspects that state and those logs, runs an adapter
//! the way the host does, and checks its events against the host's contracts.
//!
//! ```
//! use crm_adapter_sdk::{Adapter, AdapterError, AdapterInfo, Context, Event, WebhookRequest, state, testing};
//!
//! struct Counter;
//!
//! impl Adapter for Counter {
//!     fn describe() -> AdapterInfo {
//!         AdapterInfo::new("counter", "0.1.0", "custom").event_type("counter.bumped")
//!     }
//!     fn handle_webhook(_: &WebhookRequest, _: &Context) -> Result<Vec<Event>, AdapterError> {
//!         let n: u64 = state::get_json("n")?.unwrap_or(0) + 1;
//!         state::set_json("n", &n)?;
//!         Ok(vec![Event::new("counter.bumped", n.to_string())?])
//!     }
//! }
//!
//! let ctx = testing::context();
//! testing::run_webhook::<Counter>(&testing::webhook("{}"), &ctx).unwrap();
//! let events = testing::run_webhook::<Counter>(&testing::webhook("{}"), &ctx).unwrap();
//! assert_eq!(events[0].entity_id(), "2");
//! assert_eq!(testing::state()["n"], b"2");
//! ```
//!
//! On `wasm32` the builders still work, but [`state`], [`logs`] and [`reset`] only see the
//! in-memory implementation, which the SDK does not use there.

use std::collections::BTreeMap;

use crate::log::Level;
use crate::{
    Adapter, AdapterError, AdapterInfo, Context, Event, Header, HttpRequest, HttpResponse,
    PollOutput, PollPage, Timestamp, WebhookRequest,
};
use adapter_contracts::{
    Declaration, DeclarationError, EmittedEvent, Scope, check_events as check,
};

/// The reception time the builders use: 2025-12-01T10:00:00Z.
pub const TEST_TIME: Timestamp = Timestamp {
    seconds: 1_764_583_200,
    nanoseconds: 0,
};

/// A `POST /` webhook delivery with `body`, no headers, received at [`TEST_TIME`]. Refine it with
/// the `with_*` methods of [`WebhookRequest`].
///
/// ```
/// let req = crm_adapter_sdk::testing::webhook(r#"{"id": 1}"#).with_header("x-event", "ping");
/// assert_eq!(req.method, "POST");
/// assert_eq!(req.body, br#"{"id": 1}"#);
/// ```
pub fn webhook(body: impl Into<Vec<u8>>) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: Vec::new(),
        body: body.into(),
        received_at: TEST_TIME,
    }
}

/// A platform-level connection `conn-test` of tenant `tenant-test`, provider `custom`, with no
/// allowed orgs, no settings and no API access. Refine it with the `with_*` methods of
/// [`Context`].
///
/// ```
/// let ctx = crm_adapter_sdk::testing::context().with_org("org-1");
/// assert_eq!(ctx.tenant_id, "tenant-test");
/// assert_eq!(ctx.allowed_org_ids, ["org-1"]);
/// ```
pub fn context() -> Context {
    Context {
        connection_id: "conn-test".into(),
        tenant_id: "tenant-test".into(),
        org_id: None,
        provider: "custom".into(),
        allowed_org_ids: Vec::new(),
        settings: Vec::new(),
        api_base_url: None,
    }
}

/// A poll page with `body`, status 200, content type `application/json`, no cursor, no
/// request (as an external poller pushes it), fetched at [`TEST_TIME`]. Refine it with the
/// `with_*` methods of [`PollPage`].
///
/// ```
/// let page = crm_adapter_sdk::testing::poll_page("{}").with_cursor("c1");
/// assert_eq!(page.content_type.as_deref(), Some("application/json"));
/// assert_eq!(page.cursor.as_deref(), Some("c1"));
/// ```
pub fn poll_page(body: impl Into<Vec<u8>>) -> PollPage {
    PollPage {
        body: body.into(),
        content_type: Some("application/json".into()),
        cursor: None,
        fetched_at: TEST_TIME,
        request: None,
        status: 200,
        headers: Vec::new(),
    }
}

/// A copy of this thread's in-memory state.
///
/// ```
/// use crm_adapter_sdk::{state, testing};
/// state::set("cursor", "c_9").unwrap();
/// assert_eq!(testing::state().get("cursor").map(Vec::as_slice), Some(&b"c_9"[..]));
/// ```
pub fn state() -> BTreeMap<String, Vec<u8>> {
    memory::with(|m| m.state.clone())
}

/// Replaces this thread's in-memory state, e.g. with a [`state`] snapshot taken earlier.
///
/// ```
/// use crm_adapter_sdk::{state, testing};
/// state::set("a", "1").unwrap();
/// let snapshot = testing::state();
/// state::set("a", "2").unwrap();
/// testing::set_state(snapshot);
/// assert_eq!(state::get("a"), Some(b"1".to_vec()));
/// ```
pub fn set_state(entries: BTreeMap<String, Vec<u8>>) {
    memory::with(|m| m.state = entries);
}

/// The messages logged on this thread so far, oldest first.
///
/// ```
/// use crm_adapter_sdk::{log::Level, testing};
/// crm_adapter_sdk::info!("hello {}", 1);
/// assert_eq!(testing::logs(), [testing::LogRecord { level: Level::Info, message: "hello 1".into() }]);
/// ```
pub fn logs() -> Vec<LogRecord> {
    memory::with(|m| m.logs.clone())
}

/// Queues the answer the next [`crate::http::fetch`] on this thread gets (answers are handed out
/// in the order queued; a fetch with none queued is refused as `not-allowed`, like a
/// connection without API access).
///
/// ```
/// use crm_adapter_sdk::{http, testing};
/// testing::respond(503, Vec::new());
/// let answer = http::fetch(&http::HttpRequest::get("/x")).unwrap();
/// assert_eq!(answer.status, 503);
/// assert!(http::fetch(&http::HttpRequest::get("/y")).is_err());
/// ```
pub fn respond(status: u16, body: impl Into<Vec<u8>>) {
    memory::with(|m| {
        m.responses.push_back(Ok(HttpResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
        }))
    });
}

/// Queues a JSON answer (with `content-type: application/json`); see [`respond`].
pub fn respond_json(status: u16, body: &str) {
    memory::with(|m| {
        m.responses.push_back(Ok(HttpResponse {
            status,
            headers: vec![Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            body: body.as_bytes().to_vec(),
        }))
    });
}

/// Queues a failure for the next fetch; see [`respond`].
pub fn respond_error(error: crate::FetchError) {
    memory::with(|m| m.responses.push_back(Err(error)));
}

/// The requests fetched on this thread so far, oldest first.
pub fn requests() -> Vec<HttpRequest> {
    memory::with(|m| m.requests.clone())
}

/// Clears this thread's state and logs and restores the default [`StateLimits`].
///
/// ```
/// use crm_adapter_sdk::{state, testing};
/// state::set("a", "1").unwrap();
/// crm_adapter_sdk::log::info("x");
/// testing::reset();
/// assert!(testing::state().is_empty() && testing::logs().is_empty());
/// ```
pub fn reset() {
    memory::with(|m| *m = memory::Memory::default());
}

/// Sets the limits the in-memory state enforces on this thread.
///
/// ```
/// use crm_adapter_sdk::{StateError, state, testing};
/// testing::set_state_limits(testing::StateLimits { max_keys: 1, ..Default::default() });
/// state::set("a", "1").unwrap();
/// assert!(matches!(state::set("b", "2"), Err(StateError::TooManyKeys(_))));
/// ```
pub fn set_state_limits(limits: StateLimits) {
    memory::with(|m| m.limits = limits);
}

/// One logged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its level.
    pub level: Level,
    /// Its text.
    pub message: String,
}

/// The bounds of the in-memory state. The defaults are the host's defaults.
///
/// ```
/// let limits = crm_adapter_sdk::testing::StateLimits::default();
/// assert_eq!(limits.max_value_bytes, 64 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// Keys the state may hold (default 1,024).
    pub max_keys: usize,
    /// Length of one key, in bytes (default 256).
    pub max_key_bytes: usize,
    /// Size of one value, in bytes (default 64 KiB).
    pub max_value_bytes: usize,
    /// Size of all keys and values together, in bytes (default 1 MiB).
    pub max_total_bytes: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        Self {
            max_keys: 1024,
            max_key_bytes: 256,
            max_value_bytes: 64 * 1024,
            max_total_bytes: 1024 * 1024,
        }
    }
}

/// Checks what an adapter says about itself, with the host's own rules: non-empty name,
/// version and provider; event type names in `entity.action` form, each declared once; decimal
/// fields as JSON pointers.
///
/// ```
/// use crm_adapter_sdk::{AdapterInfo, EventTypeDecl, testing};
///
/// let good = AdapterInfo::new("a", "1.0.0", "custom")
///     .event_type(EventTypeDecl::new("deal.won").decimal_field("/lines/*/price"));
/// assert!(testing::check_info(&good).is_ok());
///
/// let bad = AdapterInfo::new("", "1.0.0", "custom").event_type("DealWon");
/// assert_eq!(testing::check_info(&bad).unwrap_err().len(), 2);
/// ```
pub fn check_info(info: &AdapterInfo) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for (field, value) in [
        ("name", &info.name),
        ("version", &info.version),
        ("provider", &info.provider),
    ] {
        if value.trim().is_empty() {
            problems.push(format!("describe: `{field}` is empty"));
        }
    }
    if let Err(e) = declaration(info) {
        problems.push(format!("describe: {e}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn declaration(info: &AdapterInfo) -> Result<Declaration, DeclarationError> {
    Declaration::new(
        info.event_types
            .iter()
            .map(|decl| (decl.name.clone(), decl.decimal_fields.clone())),
    )
}

/// Checks events exactly as the host does before it accepts them (this is the host's own
/// contract checker, `adapter-contracts`), and returns every violation as
/// `event N: POINTER RULE: MESSAGE`:
///
/// - the event type is `entity.action` in lower snake case and declared in `info`, and the
///   entity type is its part before the dot; the entity id is non-empty and at most 256 bytes;
/// - the org is absent or one of the connection's allowed orgs;
/// - the payload is a JSON object with no number that has a fraction or an exponent, no
///   integer beyond ±(2^53 - 1), no duplicate key, and no `tenant_id` other than the
///   connection's (nor an `org_id` outside the allowed orgs) at any depth;
/// - every value at a declared decimal field is null or a canonical decimal string (`"12.50"`)
///   that `rust_decimal` holds; an absent field is fine.
///
/// ```
/// use crm_adapter_sdk::{AdapterInfo, Event, EventTypeDecl, testing};
/// use serde_json::json;
///
/// let info = AdapterInfo::new("a", "1", "custom")
///     .event_type(EventTypeDecl::new("deal.won").decimal_field("/amount"));
/// let ctx = testing::context().with_org("org-1");
///
/// let ok = Event::new("deal.won", "1")?.org("org-1").payload(json!({"amount": "9.90"}))?;
/// assert!(testing::check_events(&info, &ctx, &[ok]).is_ok());
///
/// let bad = Event::new("deal.won", "1")?.org("org-2").payload(json!({"amount": "9,90"}))?;
/// let violations = testing::check_events(&info, &ctx, &[bad]).unwrap_err();
/// assert_eq!(violations.len(), 2);
/// assert!(violations[0].starts_with("event 0: /org_id org_not_allowed: "));
/// assert!(violations[1].starts_with("event 0: /payload/amount decimal_not_canonical: "));
/// # Ok::<(), crm_adapter_sdk::EventError>(())
/// ```
pub fn check_events(
    info: &AdapterInfo,
    ctx: &Context,
    events: &[Event],
) -> Result<(), Vec<String>> {
    let declaration = declaration(info).map_err(|e| vec![format!("describe: {e}")])?;
    let scope = Scope {
        tenant_id: ctx.tenant_id.clone(),
        allowed_org_ids: ctx.allowed_org_ids.iter().cloned().collect(),
        platform_level: ctx.org_id.is_none(),
    };
    let emitted: Vec<EmittedEvent> = events
        .iter()
        .map(|event| EmittedEvent {
            event_type: event.event_type().to_owned(),
            entity_type: event.entity_type().to_owned(),
            entity_id: event.entity_id().to_owned(),
            org_id: event.org_id().map(str::to_owned),
            payload: event.payload_json(),
            dedupe_key: event.dedupe_key_str().map(str::to_owned),
            idempotency_key: event.idempotency_key_str().map(str::to_owned),
        })
        .collect();
    let violations: Vec<String> = check(&emitted, &declaration, &scope)
        .into_iter()
        .map(|v| {
            format!(
                "event {}: {} {}: {}",
                v.event_index, v.pointer, v.rule, v.message
            )
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// Runs [`Adapter::handle_webhook`] the way the host does: on an error, the state changes of the
/// invocation are rolled back; on success, [`describe`](Adapter::describe) and the events are
/// checked with [`check_info`] and [`check_events`].
///
/// # Panics
///
/// When the adapter's description or events break a contract: that is a bug in the adapter,
/// and the panic message lists every violation.
///
/// ```
/// use crm_adapter_sdk::{Adapter, AdapterError, AdapterInfo, Context, Event, WebhookRequest, state, testing};
///
/// struct Fussy;
/// impl Adapter for Fussy {
///     fn describe() -> AdapterInfo { AdapterInfo::new("fussy", "1", "custom") }
///     fn handle_webhook(_: &WebhookRequest, _: &Context) -> Result<Vec<Event>, AdapterError> {
///         state::set("touched", "yes")?;
///         Err(AdapterError::failed("changed my mind"))
///     }
/// }
///
/// let result = testing::run_webhook::<Fussy>(&testing::webhook("{}"), &testing::context());
/// assert_eq!(result, Err(AdapterError::failed("changed my mind")));
/// assert_eq!(state::get("touched"), None); // rolled back, as the host does
/// ```
pub fn run_webhook<A: Adapter>(
    req: &WebhookRequest,
    ctx: &Context,
) -> Result<Vec<Event>, AdapterError> {
    let before = state();
    match A::handle_webhook(req, ctx) {
        Ok(events) => {
            assert_contracts::<A>(ctx, &events);
            Ok(events)
        }
        Err(err) => {
            set_state(before);
            Err(err)
        }
    }
}

/// Runs [`Adapter::handle_poll`] the way the host does; see [`run_webhook`].
///
/// # Panics
///
/// When the adapter's description or events break a contract.
///
/// ```
/// use crm_adapter_sdk::{Adapter, AdapterError, AdapterInfo, Context, Event, PollOutput, PollPage, WebhookRequest, testing};
///
/// struct Pager;
/// impl Adapter for Pager {
///     fn describe() -> AdapterInfo { AdapterInfo::new("pager", "1", "custom") }
///     fn handle_webhook(_: &WebhookRequest, _: &Context) -> Result<Vec<Event>, AdapterError> {
///         Ok(Vec::new())
///     }
///     fn handle_poll(page: &PollPage, _: &Context) -> Result<PollOutput, AdapterError> {
///         let next = format!("{}+", page.cursor.as_deref().unwrap_or(""));
///         Ok(PollOutput::new(Vec::new()).next_cursor(next))
///     }
/// }
///
/// let page = testing::poll_page("{}").with_cursor("c");
/// let out = testing::run_poll::<Pager>(&page, &testing::context()).unwrap();
/// assert_eq!(out.next_cursor.as_deref(), Some("c+"));
/// ```
pub fn run_poll<A: Adapter>(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
    let before = state();
    match A::handle_poll(page, ctx) {
        Ok(output) => {
            assert_contracts::<A>(ctx, &output.events);
            Ok(output)
        }
        Err(err) => {
            set_state(before);
            Err(err)
        }
    }
}

fn assert_contracts<A: Adapter>(ctx: &Context, events: &[Event]) {
    let info = A::describe();
    let mut violations = check_info(&info).err().unwrap_or_default();
    violations.extend(check_events(&info, ctx, events).err().unwrap_or_default());
    assert!(
        violations.is_empty(),
        "the host would refuse this invocation:\n  {}",
        violations.join("\n  ")
    );
}

/// The in-memory log and state used off `wasm32`.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) mod memory {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::{LogRecord, StateLimits};
    use crate::log::Level;
    use crate::{FetchError, HttpRequest, HttpResponse, StateError};

    #[derive(Default)]
    pub(crate) struct Memory {
        pub(crate) state: BTreeMap<String, Vec<u8>>,
        pub(crate) logs: Vec<LogRecord>,
        pub(crate) limits: StateLimits,
        pub(crate) responses: std::collections::VecDeque<Result<HttpResponse, FetchError>>,
        pub(crate) requests: Vec<HttpRequest>,
    }

    pub(crate) fn fetch(request: &HttpRequest) -> Result<HttpResponse, FetchError> {
        with(|m| {
            m.requests.push(request.clone());
            m.responses.pop_front().unwrap_or_else(|| {
                Err(FetchError::NotAllowed(
                    "no answer is queued (crm_adapter_sdk::testing::respond)".into(),
                ))
            })
        })
    }

    thread_local! {
        static MEMORY: RefCell<Memory> = RefCell::new(Memory::default());
    }

    pub(crate) fn with<R>(f: impl FnOnce(&mut Memory) -> R) -> R {
        MEMORY.with(|m| f(&mut m.borrow_mut()))
    }

    pub(crate) fn log(level: Level, message: &str) {
        with(|m| {
            m.logs.push(LogRecord {
                level,
                message: message.to_owned(),
            });
        });
    }

    pub(crate) fn get(key: &str) -> Option<Vec<u8>> {
        with(|m| m.state.get(key).cloned())
    }

    pub(crate) fn set(key: &str, value: &[u8]) -> Result<(), StateError> {
        with(|m| {
            let limits = m.limits;
            if key.is_empty() {
                return Err(StateError::InvalidKey("the key is empty".into()));
            }
            if key.len() > limits.max_key_bytes {
                return Err(StateError::InvalidKey(format!(
                    "the key is {} bytes long; the limit is {}",
                    key.len(),
                    limits.max_key_bytes
                )));
            }
            if value.len() > limits.max_value_bytes {
                return Err(StateError::TooLarge(format!(
                    "the value of `{key}` is {} bytes; the limit is {}",
                    value.len(),
                    limits.max_value_bytes
                )));
            }
            let previous = m.state.get(key).map(|v| key.len() + v.len());
            if previous.is_none() && m.state.len() >= limits.max_keys {
                return Err(StateError::TooManyKeys(format!(
                    "the state holds {} keys; the limit is {}",
                    m.state.len(),
                    limits.max_keys
                )));
            }
            let total: usize = m.state.iter().map(|(k, v)| k.len() + v.len()).sum();
            let after = total - previous.unwrap_or(0) + key.len() + value.len();
            if after > limits.max_total_bytes {
                return Err(StateError::TooLarge(format!(
                    "the state would be {after} bytes; the limit is {}",
                    limits.max_total_bytes
                )));
            }
            m.state.insert(key.to_owned(), value.to_vec());
            Ok(())
        })
    }

    pub(crate) fn delete(key: &str) {
        with(|m| {
            m.state.remove(key);
        });
    }

    pub(crate) fn keys(prefix: &str) -> Vec<String> {
        with(|m| {
            m.state
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| k.clone())
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventTypeDecl, StateError, state};
    use serde_json::json;

    #[test]
    fn state_limits_are_enforced_like_the_host() {
        set_state_limits(StateLimits {
            max_keys: 3,
            max_key_bytes: 4,
            max_value_bytes: 10,
            max_total_bytes: 20,
        });
        assert!(matches!(
            state::set("", "x"),
            Err(StateError::InvalidKey(_))
        ));
        assert!(matches!(
            state::set("12345", "x"),
            Err(StateError::InvalidKey(_))
        ));
        assert!(matches!(
            state::set("a", [0u8; 11]),
            Err(StateError::TooLarge(_))
        ));
        state::set("a", [0u8; 9]).unwrap(); // 10 bytes
        state::set("b", [0u8; 8]).unwrap(); // 19 bytes
        assert!(matches!(
            state::set("c", "xy"),
            Err(StateError::TooLarge(_))
        ));
        state::set("a", [0u8; 1]).unwrap(); // replacing frees room: 11 bytes
        state::set("c", "x").unwrap();
        assert!(matches!(
            state::set("d", ""),
            Err(StateError::TooManyKeys(_))
        ));
        state::set("c", "y").unwrap(); // replacing is fine at the key limit
        assert_eq!(state::keys(""), ["a", "b", "c"]);
        reset();
        assert_eq!(StateLimits::default(), memory::with(|m| m.limits));
    }

    #[test]
    fn keys_lists_a_prefix_in_order() {
        for key in ["b/2", "a", "b/1", "b", "c/1", "b/10"] {
            state::set(key, "x").unwrap();
        }
        assert_eq!(state::keys("b/"), ["b/1", "b/10", "b/2"]);
        assert_eq!(state::keys("b"), ["b", "b/1", "b/10", "b/2"]);
        assert_eq!(state::keys("z"), Vec::<String>::new());
    }

    #[test]
    fn wildcards_reach_array_items_and_object_values() {
        let info = AdapterInfo::new("a", "1", "custom").event_type(
            EventTypeDecl::new("deal.won").decimal_fields(["/lines/*/price", "/by_org/*"]),
        );
        let event = Event::new("deal.won", "1")
            .unwrap()
            .payload(json!({
                "lines": [{"price": "1.00"}, {"price": 2}, {"qty": 1}],
                "by_org": {"a": "1e3", "b": null},
            }))
            .unwrap();
        let violations = check_events(&info, &context(), &[event]).unwrap_err();
        let found: Vec<&str> = violations
            .iter()
            .map(|v| v.split(':').take(2).collect::<Vec<_>>()[1].trim())
            .collect();
        // In document order (`json!` sorts keys); `null` counts as an absent value.
        assert_eq!(
            found,
            [
                "/payload/by_org/a decimal_not_canonical",
                "/payload/lines/1/price decimal_not_string",
            ],
            "{violations:#?}"
        );
    }

    #[test]
    fn unchecked_events_are_checked_like_the_host() {
        let info = AdapterInfo::new("a", "1", "custom").event_type("test.ok");
        let events = [
            Event::unchecked("nodot", "nodot", "1", "{}"),
            Event::unchecked("ghost.appeared", "ghost", "1", "{}"),
            Event::unchecked("test.ok", "other", "", "[1]"),
            Event::unchecked(
                "test.ok",
                "test",
                "1",
                r#"{"ratio": 12.5, "n": 9007199254740993}"#,
            ),
            Event::unchecked("test.ok", "test", "1", r#"{"tenant_id": "someone-else"}"#),
        ];
        let violations = check_events(&info, &context(), &events).unwrap_err();
        let expected = [
            "event 0: /event_type event_type_format",
            "event 1: /event_type undeclared_event_type",
            "event 2: /entity_type entity_type_mismatch",
            "event 2: /entity_id entity_id_invalid",
            "event 2: /payload payload_not_object",
            "event 3: /payload/ratio fractional_number",
            "event 3: /payload/n unsafe_integer",
            "event 4: /payload/tenant_id tenant_mismatch",
        ];
        assert_eq!(violations.len(), expected.len(), "{violations:#?}");
        for (v, e) in violations.iter().zip(expected) {
            assert!(v.starts_with(e), "{v} does not start with {e}");
        }
    }

    #[test]
    #[should_panic(expected = "event 0: /event_type undeclared_event_type")]
    fn run_webhook_panics_on_a_contract_violation() {
        struct Ghost;
        impl Adapter for Ghost {
            fn describe() -> AdapterInfo {
                AdapterInfo::new("ghost", "1", "custom")
            }
            fn handle_webhook(_: &WebhookRequest, _: &Context) -> Result<Vec<Event>, AdapterError> {
                Ok(vec![Event::new("ghost.appeared", "1")?])
            }
        }
        let _ = run_webhook::<Ghost>(&webhook("{}"), &context());
    }
}
