//! The sandbox: loads adapter components and runs each invocation in a fresh, bounded instance.
//!
//! One [`Sandbox`] owns the engine, the linker (our world's imports plus a WASI with no
//! files, no environment, no arguments and no network) and the artifact cache. Loading a
//! component checks it against the world, compiles it once per content hash and keeps a
//! pre-linked instance template; [`Adapter::invoke`] instantiates from that template into a new
//! `Store` bounded by the adapter's [`Limits`], so nothing survives from one invocation to the
//! next. Whatever the guest does (loop, trap, exhaust memory, flood the log), the result is a
//! [`Report`], never a host panic.

mod cache;
mod engine;
mod limits;
mod logs;
mod report;
mod state;
mod world;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, WasmBacktrace};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::contracts::{self, Declaration, EmittedEvent, Scope};
pub use cache::{ArtifactCache, sha256_hex};
pub use engine::EPOCH_TICK;
pub use limits::{Limits, PlatformLimits};
pub use logs::{Log, LogLevel, LogLine};
pub use report::{AdapterErrorKind, Failure, FailureKind, Outcome, Report, Usage};
pub use state::{StateError, StateMap};
pub use world::{AdapterInfo, EventTypeInfo, WORLD_EXPORT};

use limits::Limiter;
use logs::LogSink;
use state::State;
use world::bindings;

/// Errors of loading a component or setting up the sandbox. What a guest does while it runs is
/// never an `Error`: it is a [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine could not be created from its configuration.
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    /// The bytes are not a usable component (not wasm, not a component, too large).
    #[error("{0}")]
    Invalid(String),
    /// The component is valid wasm but not an adapter of our world.
    #[error("the component does not implement the adapter world: {0}")]
    World(String),
    /// The component's `describe` failed or returned an unusable declaration.
    #[error("the adapter's describe is unusable: {0}")]
    Describe(String),
    /// The requested limits exceed the platform's.
    #[error("invalid limits: {0}")]
    Limits(String),
    /// The artifact cache could not be used.
    #[error("artifact cache: {0}")]
    Cache(String),
}

/// This module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The engine, linker and artifact cache shared by every adapter of a host.
#[derive(Clone)]
pub struct Sandbox {
    inner: std::sync::Arc<SandboxInner>,
}

struct SandboxInner {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<ArtifactCache>,
    platform: PlatformLimits,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("platform", &self.inner.platform)
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// A sandbox with the given platform limits; compiled artifacts are cached in `cache`
    /// (`None`: compile on every load).
    pub fn new(platform: PlatformLimits, cache: Option<&std::path::Path>) -> Result<Self> {
        let engine = engine::new_engine(&platform)?;
        engine::spawn_epoch_ticker(&engine);
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| {
                bindings::CrmAdapter::add_to_linker::<HostState, HasSelf<HostState>>(
                    &mut linker,
                    |state| state,
                )
            })
            .map_err(|e| Error::Engine(format!("linking host functions: {e:#}")))?;
        let cache = cache
            .map(|path| ArtifactCache::open_path(path, &engine))
            .transpose()?;
        Ok(Self {
            inner: std::sync::Arc::new(SandboxInner {
                engine,
                linker,
                cache,
                platform,
            }),
        })
    }

    /// The platform limits this sandbox enforces.
    pub fn platform(&self) -> &PlatformLimits {
        &self.inner.platform
    }

    /// Checks, compiles (or loads from the cache) and describes a component, ready to invoke.
    pub fn load(&self, wasm: &[u8], limits: Limits) -> Result<Adapter> {
        let inner = &self.inner;
        limits.validate(&inner.platform).map_err(Error::Limits)?;
        if wasm.len() as u64 > inner.platform.max_component_bytes {
            return Err(Error::Invalid(format!(
                "the component is {} bytes; the limit is {}",
                wasm.len(),
                inner.platform.max_component_bytes
            )));
        }
        let sha256 = sha256_hex(wasm);
        let component = match &inner.cache {
            Some(cache) => cache.load_or_compile(&inner.engine, &sha256, wasm)?,
            None => Component::new(&inner.engine, wasm)
                .map_err(|e| Error::Invalid(format!("not a valid component: {e:#}")))?,
        };
        world::check_component(&inner.engine, &component)?;
        let pre = inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| Error::World(format!("{e:#}")))?;
        let pre = bindings::CrmAdapterPre::new(pre).map_err(|e| Error::World(format!("{e:#}")))?;
        let mut adapter = Adapter {
            loaded: std::sync::Arc::new(Loaded {
                pre,
                sha256,
                size_bytes: wasm.len() as u64,
                limits,
                info: AdapterInfo::default(),
                declaration: Declaration::new(Vec::new()).expect("an empty declaration is valid"),
            }),
        };
        adapter.describe()?;
        Ok(adapter)
    }
}

/// A loaded adapter version: a pre-linked instance template, its declaration and its limits.
/// Cheap to clone (one reference count): the webhook path takes one per invocation.
#[derive(Clone)]
pub struct Adapter {
    loaded: std::sync::Arc<Loaded>,
}

struct Loaded {
    pre: bindings::CrmAdapterPre<HostState>,
    sha256: String,
    size_bytes: u64,
    limits: Limits,
    info: AdapterInfo,
    declaration: Declaration,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("sha256", &self.loaded.sha256)
            .field("info", &self.loaded.info)
            .field("limits", &self.loaded.limits)
            .finish_non_exhaustive()
    }
}

/// The connection an invocation runs for (the WIT `connection-context`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectionContext {
    /// The connection's id.
    pub connection_id: String,
    /// The tenant owning the connection.
    pub tenant_id: String,
    /// The CRM provider.
    pub provider: String,
    /// The org ids events may be scoped to.
    pub allowed_org_ids: Vec<String>,
    /// Non-secret settings.
    pub settings: Vec<(String, String)>,
}

/// A webhook delivery as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    /// HTTP method.
    pub method: String,
    /// Request path without the query.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// Headers in order (names are lower-cased when handed to the adapter).
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
    /// When the host received it.
    pub received_at: SystemTime,
}

/// A page of records from a CRM API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollPage {
    /// The raw page.
    pub body: Vec<u8>,
    /// Its media type, when known.
    pub content_type: Option<String>,
    /// The cursor saved after the previous page.
    pub cursor: Option<String>,
    /// When it was fetched.
    pub fetched_at: SystemTime,
}

/// What an invocation is asked to handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A webhook delivery.
    Webhook(WebhookRequest),
    /// A poll page.
    Poll(PollPage),
}

impl Input {
    fn len(&self) -> usize {
        match self {
            Input::Webhook(request) => request.body.len(),
            Input::Poll(page) => page.body.len(),
        }
    }
}

impl Adapter {
    /// The sha256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.loaded.sha256
    }

    /// The component's size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.loaded.size_bytes
    }

    /// What the adapter declared about itself.
    pub fn info(&self) -> &AdapterInfo {
        &self.loaded.info
    }

    /// The limits every invocation runs under.
    pub fn limits(&self) -> &Limits {
        &self.loaded.limits
    }

    /// The declaration built from `describe`, which the contracts check events against.
    pub fn declaration(&self) -> &Declaration {
        &self.loaded.declaration
    }

    /// Runs the adapter on `input` for `context`, with the connection's `state`, in a fresh
    /// instance. Blocks the calling thread for at most about the adapter's deadline.
    pub fn invoke(&self, input: &Input, context: &ConnectionContext, state: StateMap) -> Report {
        let log = LogSink::new(self.loaded.limits.log_bytes);
        let bytes_in = input.len() as u64;
        let mut usage = Usage {
            bytes_in,
            fuel_limit: self.loaded.limits.fuel,
            ..Usage::default()
        };
        if bytes_in > self.loaded.limits.input_bytes {
            let failure = Failure::new(
                FailureKind::InputTooLarge,
                format!(
                    "the input is {bytes_in} bytes; this adapter accepts at most {}",
                    self.loaded.limits.input_bytes
                ),
            );
            return Report::new(Outcome::Failed { failure }, usage, log.finish(), None);
        }

        let mut store = self.new_store(&log, state);
        let started = Instant::now();
        let result = self.call(&mut store, input, context);
        usage.duration = started.elapsed();
        usage.fuel_consumed = self.fuel_consumed(&store);
        usage.peak_memory_bytes = store.data().limiter.peak_memory_bytes as u64;

        let outcome = match result {
            Err(error) => Outcome::Failed {
                failure: classify_trap(&error, &store.data().limiter, &log, &self.loaded.limits),
            },
            Ok(Err(error)) => Outcome::from_adapter_error(error),
            Ok(Ok((events, next_cursor))) => {
                self.check_output(events, next_cursor, context, &mut usage)
            }
        };
        let HostState { state, .. } = store.into_data();
        let state = outcome.is_success().then(|| state.into_changes()).flatten();
        let log = log.finish();
        usage.log_bytes = log.bytes;
        Report::new(outcome, usage, log, state)
    }

    /// Instantiates a fresh copy of the adapter and calls the export `input` asks for.
    #[allow(clippy::type_complexity)]
    fn call(
        &self,
        store: &mut Store<HostState>,
        input: &Input,
        context: &ConnectionContext,
    ) -> wasmtime::Result<
        std::result::Result<(Vec<EmittedEvent>, Option<String>), bindings::AdapterError>,
    > {
        let instance = self.loaded.pre.instantiate(&mut *store)?;
        let adapter = instance.crm_adapter_adapter();
        let context = world::to_wit_context(context);
        Ok(match input {
            Input::Webhook(request) => adapter
                .call_handle_webhook(&mut *store, &world::to_wit_request(request), &context)?
                .map(|events| {
                    (
                        events.into_iter().map(world::from_wit_event).collect(),
                        None,
                    )
                }),
            Input::Poll(page) => adapter
                .call_handle_poll(&mut *store, &world::to_wit_page(page), &context)?
                .map(|output| {
                    let events = output
                        .events
                        .into_iter()
                        .map(world::from_wit_event)
                        .collect();
                    (events, output.next_cursor)
                }),
        })
    }

    fn new_store(&self, log: &LogSink, state: StateMap) -> Store<HostState> {
        let limits = &self.loaded.limits;
        let mut wasi = WasiCtx::builder();
        // No preopened directories, no environment, no arguments, no network: the builder
        // grants none of these unless asked, and we ask for none. stdout and stderr go to the
        // tenant-visible log.
        wasi.stdout(log.stream(LogLevel::Stdout))
            .stderr(log.stream(LogLevel::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let mut table = ResourceTable::new();
        table.set_max_capacity(1_000);
        let host = HostState {
            wasi: wasi.build(),
            table,
            limiter: Limiter::new(limits),
            log: log.clone(),
            state: State::new(state, limits),
        };
        let mut store = Store::new(self.loaded.pre.engine(), host);
        store.limiter(|host| &mut host.limiter);
        store
            .set_fuel(limits.fuel.unwrap_or(u64::MAX))
            .expect("fuel metering is enabled on the engine");
        store.set_epoch_deadline(engine::deadline_ticks(limits.deadline()));
        store.epoch_deadline_trap();
        store
    }

    fn fuel_consumed(&self, store: &Store<HostState>) -> u64 {
        let start = self.loaded.limits.fuel.unwrap_or(u64::MAX);
        start.saturating_sub(store.get_fuel().unwrap_or(0))
    }

    /// Applies the output limits, then the contracts, to what the adapter returned.
    fn check_output(
        &self,
        events: Vec<EmittedEvent>,
        next_cursor: Option<String>,
        context: &ConnectionContext,
        usage: &mut Usage,
    ) -> Outcome {
        usage.events = events.len() as u64;
        usage.bytes_out = events.iter().map(event_bytes).sum();
        let limits = &self.loaded.limits;
        if events.len() as u64 > u64::from(limits.max_events) {
            let message = format!(
                "the adapter emitted {} events; at most {} are accepted per invocation",
                events.len(),
                limits.max_events
            );
            return Outcome::Failed {
                failure: Failure::new(FailureKind::OutputLimit, message),
            };
        }
        if usage.bytes_out > limits.output_bytes {
            let message = format!(
                "the adapter's events total {} bytes; at most {} are accepted per invocation",
                usage.bytes_out, limits.output_bytes
            );
            return Outcome::Failed {
                failure: Failure::new(FailureKind::OutputLimit, message),
            };
        }
        let scope = Scope {
            tenant_id: context.tenant_id.clone(),
            allowed_org_ids: context
                .allowed_org_ids
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
        };
        let violations = contracts::check_events(&events, &self.loaded.declaration, &scope);
        if violations.is_empty() {
            Outcome::Accepted {
                events,
                next_cursor,
            }
        } else {
            Outcome::Rejected { violations }
        }
    }

    /// Calls `describe` and builds the declaration the contracts check against.
    fn describe(&mut self) -> Result<()> {
        let log = LogSink::new(self.loaded.limits.log_bytes);
        let mut store = self.new_store(&log, StateMap::new());
        let info = self
            .loaded
            .pre
            .instantiate(&mut store)
            .and_then(|instance| instance.crm_adapter_adapter().call_describe(&mut store))
            .map_err(|e| {
                let failure = classify_trap(&e, &store.data().limiter, &log, &self.loaded.limits);
                Error::Describe(failure.message)
            })?;
        let info = world::from_wit_info(info);
        if info.name.trim().is_empty() {
            return Err(Error::Describe("the adapter's name is empty".into()));
        }
        let declaration = Declaration::new(
            info.event_types
                .iter()
                .map(|t| (t.name.clone(), t.decimal_fields.clone())),
        )
        .map_err(|e| Error::Describe(e.to_string()))?;
        let loaded = std::sync::Arc::get_mut(&mut self.loaded)
            .expect("an adapter is described before it is shared");
        loaded.declaration = declaration;
        loaded.info = info;
        Ok(())
    }
}

/// Pieces of an invocation, exposed for the benchmarks only (they measure the sandbox's
/// overhead against its floor). Tenants' invocations always go through [`Adapter::invoke`].
#[doc(hidden)]
pub mod bench {
    use super::*;

    /// A fresh store and instance, without calling anything.
    pub fn instantiate(adapter: &Adapter) {
        let log = LogSink::new(adapter.loaded.limits.log_bytes);
        let mut store = adapter.new_store(&log, StateMap::new());
        adapter
            .loaded
            .pre
            .instantiate(&mut store)
            .expect("instantiates");
    }

    /// A fresh store and instance, then one call; no contract check.
    pub fn fresh_call(adapter: &Adapter, input: &Input, context: &ConnectionContext) -> usize {
        let log = LogSink::new(adapter.loaded.limits.log_bytes);
        let mut store = adapter.new_store(&log, StateMap::new());
        let result = adapter.call(&mut store, input, context).expect("no trap");
        result.map_or(0, |(events, _)| events.len())
    }

    /// One instance kept across calls: the floor of a call's cost. Never used for tenants,
    /// whose invocations must not share an instance.
    pub struct Warm {
        store: Store<HostState>,
        instance: bindings::CrmAdapter,
        deadline: u64,
    }

    impl std::fmt::Debug for Warm {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Warm").finish_non_exhaustive()
        }
    }

    /// Instantiates `adapter` once for repeated calls.
    pub fn warm(adapter: &Adapter) -> Warm {
        let log = LogSink::new(u64::MAX);
        let mut store = adapter.new_store(&log, StateMap::new());
        let instance = adapter
            .loaded
            .pre
            .instantiate(&mut store)
            .expect("instantiates");
        Warm {
            store,
            instance,
            deadline: engine::deadline_ticks(adapter.loaded.limits.deadline()),
        }
    }

    impl Warm {
        /// Calls `handle-webhook` on the warm instance.
        pub fn call(&mut self, input: &Input, context: &ConnectionContext) -> usize {
            let Input::Webhook(request) = input else {
                panic!("webhook inputs only")
            };
            self.store.set_epoch_deadline(self.deadline);
            self.store.set_fuel(u64::MAX).expect("fuel is enabled");
            self.instance
                .crm_adapter_adapter()
                .call_handle_webhook(
                    &mut self.store,
                    &world::to_wit_request(request),
                    &world::to_wit_context(context),
                )
                .expect("no trap")
                .map_or(0, |events| events.len())
        }
    }
}

fn event_bytes(event: &EmittedEvent) -> u64 {
    let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    (event.event_type.len()
        + event.entity_type.len()
        + event.entity_id.len()
        + optional(&event.org_id)
        + event.payload.len()
        + optional(&event.dedupe_key)) as u64
}

/// Turns a wasmtime error raised while the guest ran into a tenant-facing failure.
fn classify_trap(
    error: &wasmtime::Error,
    limiter: &Limiter,
    log: &LogSink,
    limits: &Limits,
) -> Failure {
    let frames: Vec<String> = error
        .downcast_ref::<WasmBacktrace>()
        .map(|bt| {
            bt.frames()
                .iter()
                .map(|frame| match frame.func_name() {
                    Some(name) => format!("{:#}", rustc_demangle::demangle(name)),
                    None => "<unnamed>".to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    let trap = error.downcast_ref::<Trap>().copied();
    let (kind, message) = match trap {
        // A Rust (or C) guest keeps its own stack in linear memory; overflowing it runs the
        // stack pointer off the bottom of memory, which wasm reports as an out-of-bounds access.
        Some(Trap::MemoryOutOfBounds) if recursing(&frames).is_some() => (
            FailureKind::StackOverflow,
            format!(
                "the adapter overflowed its stack: unbounded recursion in `{}`",
                recursing(&frames).unwrap_or_default()
            ),
        ),
        Some(Trap::Interrupt) => (
            FailureKind::Deadline,
            format!(
                "the adapter ran past its deadline of {} ms",
                limits.deadline_ms
            ),
        ),
        Some(Trap::OutOfFuel) => (
            FailureKind::FuelExhausted,
            format!(
                "the adapter used up its fuel budget of {}",
                limits.fuel.unwrap_or(u64::MAX)
            ),
        ),
        Some(Trap::StackOverflow) => (
            FailureKind::StackOverflow,
            "the adapter overflowed its stack (unbounded recursion?)".to_owned(),
        ),
        // A refused growth makes a Rust guest abort ("memory allocation failed"), which traps
        // as `unreachable`: the refusal, not the trap, is the cause to report.
        _ if limiter.memory_refused.is_some() => (
            FailureKind::MemoryLimit,
            format!(
                "the adapter tried to grow its memory to {} bytes; the limit is {}",
                limiter.memory_refused.unwrap_or_default(),
                limits.memory_bytes
            ),
        ),
        Some(Trap::UnreachableCodeReached) => match panic_message(&log.finish()) {
            Some(panic) => (FailureKind::Panic, format!("the adapter panicked: {panic}")),
            None => (
                FailureKind::Trap,
                "the adapter trapped: wasm `unreachable` executed".to_owned(),
            ),
        },
        Some(trap) => (FailureKind::Trap, format!("the adapter trapped: {trap}")),
        None => (FailureKind::Trap, format!("the adapter failed: {error:#}")),
    };
    Failure {
        kind,
        message,
        backtrace: collapse_repeats(frames),
    }
}

/// Frames captured from the innermost outwards before the backtrace is cut off.
const RECURSION_FRAMES: usize = 16;

/// The function that recursed, when the innermost frames are all one or two functions
/// (direct or mutual recursion).
fn recursing(frames: &[String]) -> Option<&str> {
    if frames.len() < RECURSION_FRAMES {
        return None;
    }
    let innermost = &frames[..RECURSION_FRAMES];
    let distinct: BTreeSet<&str> = innermost.iter().map(String::as_str).collect();
    (distinct.len() <= 2).then(|| innermost[0].as_str())
}

/// `a, a, a, b` becomes `a (×3), b`: a recursion's stack is one line, not hundreds.
fn collapse_repeats(frames: Vec<String>) -> Vec<String> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for frame in frames {
        match out.last_mut() {
            Some((last, count)) if *last == frame => *count += 1,
            _ => out.push((frame, 1)),
        }
    }
    out.into_iter()
        .map(|(frame, count)| match count {
            1 => frame,
            n => format!("{frame} (×{n})"),
        })
        .collect()
}

/// The panic message a Rust guest printed on stderr ("thread '…' panicked at FILE:LINE:COL:"
/// followed by the message), as "MESSAGE (at FILE:LINE:COL)".
fn panic_message(log: &Log) -> Option<String> {
    let stderr: Vec<&str> = log
        .lines
        .iter()
        .filter(|line| line.level == LogLevel::Stderr)
        .map(|line| line.message.as_str())
        .collect();
    let at = stderr
        .iter()
        .position(|line| line.contains(" panicked at "))?;
    let location = stderr[at]
        .split(" panicked at ")
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches(':');
    let message = stderr.get(at + 1).copied().unwrap_or("(no message)");
    Some(format!("{message} (at {location})"))
}

/// What the host keeps for one invocation's store.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    log: LogSink,
    state: State,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Seconds and nanoseconds since the Unix epoch (times before it clamp to zero).
fn unix_time(time: SystemTime) -> Duration {
    time.duration_since(UNIX_EPOCH).unwrap_or_default()
}
