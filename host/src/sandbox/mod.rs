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
mod deadline;
mod determinism;
mod engine;
pub mod http;
mod limits;
mod logs;
mod personal;
mod report;
mod state;
mod world;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::contracts::{self, Declaration, EmittedEvent, Scope};
pub use cache::{ArtifactCache, sha256_hex};
pub use determinism::{Determinism, MAX_CLOCK_READINGS};
pub use engine::EPOCH_TICK;
pub use http::{Fetch, FetchError, HttpRequest, HttpResponse};
pub use limits::{Limits, PlatformLimits};
pub use logs::{Log, LogLevel, LogLine};
pub use report::{AdapterErrorKind, Failure, FailureKind, Outcome, Report, Usage};
pub use state::{StateAccess, StateError, StateMap};
pub use world::{AdapterInfo, EventTypeInfo, VersionRecord, WORLD_EXPORT, WorldVersion};

use deadline::Deadline;
use limits::Limiter;
use logs::LogSink;
use personal::PersonalValues;
use state::State;
use world::{v1, v2};

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
    inner: Arc<SandboxInner>,
}

struct SandboxInner {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<ArtifactCache>,
    platform: PlatformLimits,
    /// Compiled components in use, by the sha256 of their bytes: every version (of any
    /// adapter, of any tenant) with the same bytes shares one compiled code and one instance
    /// template, and they go when the last such version is dropped.
    compiled: Mutex<HashMap<String, Weak<Compiled>>>,
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
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| {
                v1::CrmAdapter::add_to_linker::<HostState, HasSelf<HostState>>(
                    &mut linker,
                    |state| state,
                )
            })
            .and_then(|()| {
                v2::CrmAdapter::add_to_linker::<HostState, HasSelf<HostState>>(
                    &mut linker,
                    |state| state,
                )
            })
            .map_err(|e| Error::Engine(format!("linking host functions: {e:#}")))?;
        let cache = cache
            .map(|path| ArtifactCache::open_path(path, &engine))
            .transpose()?;
        Ok(Self {
            inner: Arc::new(SandboxInner {
                engine,
                linker,
                cache,
                platform,
                compiled: Mutex::default(),
            }),
        })
    }

    /// The platform limits this sandbox enforces.
    pub fn platform(&self) -> &PlatformLimits {
        &self.inner.platform
    }

    /// Checks, compiles (or loads from the cache) and describes a component, ready to invoke.
    /// Compiling runs on a blocking thread: it can take seconds for a large component.
    pub async fn load(&self, wasm: &[u8], limits: Limits) -> Result<Adapter> {
        let sandbox = self.clone();
        let wasm = wasm.to_vec();
        let compiled = tokio::task::spawn_blocking(move || sandbox.compile(&wasm, limits))
            .await
            .map_err(|e| Error::Engine(format!("the compiler thread failed: {e}")))??;
        let sha256 = compiled.sha256().to_owned();
        compiled.describe().await.inspect_err(|_| {
            // An adapter whose `describe` fails is refused: its artifact is not kept either.
            if let Some(cache) = &self.inner.cache {
                cache.forget(&sha256);
            }
        })
    }

    /// What can be checked of a component without compiling it, in milliseconds: its limits
    /// against the platform's, its size, the names it imports and exports against the world,
    /// and the core instances, tables and memories it creates against its limits. A component
    /// refused here costs no compile and leaves nothing in the cache.
    pub fn precheck(&self, wasm: &[u8], limits: &Limits) -> Result<WorldVersion> {
        let inner = &self.inner;
        limits.validate(&inner.platform).map_err(Error::Limits)?;
        if wasm.len() as u64 > inner.platform.max_component_bytes {
            return Err(Error::Invalid(format!(
                "the component is {} bytes; the limit is {}",
                wasm.len(),
                inner.platform.max_component_bytes
            )));
        }
        let (version, footprint) = world::precheck(wasm)?;
        let platform = &inner.platform;
        let over: Vec<String> = [
            (
                "core instances",
                "instances",
                footprint.instances,
                limits.instances,
                platform.max_instances,
            ),
            (
                "tables",
                "tables",
                footprint.tables,
                limits.tables,
                platform.max_tables,
            ),
            (
                "linear memories",
                "memories",
                footprint.memories,
                limits.memories,
                platform.max_memories,
            ),
        ]
        .into_iter()
        .filter(|(_, _, count, limit, _)| count > limit)
        .map(|(what, name, count, limit, max)| {
            format!(
                "the component creates {count} {what}, over its `{name}` limit of {limit} \
                 (the platform allows up to {max})"
            )
        })
        .collect();
        if over.is_empty() {
            version
        } else {
            Err(Error::Limits(over.join("; ")))
        }
    }

    /// Checks and compiles (or loads from the cache) a component: CPU-bound, blocks the thread.
    /// A component whose bytes are already loaded is not compiled again: the new version
    /// shares its code and instance template (its limits are its own, checked here).
    fn compile(&self, wasm: &[u8], limits: Limits) -> Result<Adapter> {
        let inner = &self.inner;
        self.precheck(wasm, &limits)?;
        let sha256 = sha256_hex(wasm);
        let shared = inner.compiled().get(&sha256).and_then(Weak::upgrade);
        let compiled = match shared {
            Some(compiled) => compiled,
            None => {
                let compiled = Arc::new(self.compile_new(wasm, sha256)?);
                let mut loaded = inner.compiled();
                // Two loads of the same bytes at once both compile; either result serves.
                loaded.retain(|_, weak| weak.strong_count() > 0);
                loaded.insert(compiled.sha256.clone(), Arc::downgrade(&compiled));
                compiled
            }
        };
        Ok(Adapter {
            loaded: Arc::new(Loaded {
                compiled,
                limits,
                info: AdapterInfo::default(),
                declaration: Declaration::new(Vec::new()).expect("an empty declaration is valid"),
            }),
        })
    }

    /// Compiles (or loads from the cache) a component and links its instance template.
    fn compile_new(&self, wasm: &[u8], sha256: String) -> Result<Compiled> {
        let inner = &self.inner;
        let component = match &inner.cache {
            Some(cache) => cache.load_or_compile(&inner.engine, &sha256, wasm)?,
            None => Component::new(&inner.engine, wasm)
                .map_err(|e| Error::Invalid(format!("not a valid component: {e:#}")))?,
        };
        let linked =
            world::check_component(&inner.engine, &component).and_then(|(version, imports)| {
                let pre = inner
                    .linker
                    .instantiate_pre(&component)
                    .map_err(|e| Error::World(format!("{e:#}")))?;
                match version {
                    WorldVersion::V0_1 => v1::CrmAdapterPre::new(pre).map(Pre::V1),
                    WorldVersion::V0_2 => v2::CrmAdapterPre::new(pre).map(Pre::V2),
                }
                .map(|pre| (version, imports, pre))
                .map_err(|e| Error::World(format!("{e:#}")))
            });
        match linked {
            Ok((version, imports, pre)) => Ok(Compiled {
                pre,
                version,
                imports,
                sha256,
                size_bytes: wasm.len() as u64,
            }),
            Err(refused) => {
                if let Some(cache) = &inner.cache {
                    cache.forget(&sha256);
                }
                Err(refused)
            }
        }
    }
}

impl SandboxInner {
    fn compiled(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Compiled>>> {
        // The map holds only weak handles: a panic elsewhere cannot leave it inconsistent.
        self.compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A loaded adapter version: a pre-linked instance template, its declaration and its limits.
/// Cheap to clone (one reference count): the webhook path takes one per invocation.
#[derive(Clone)]
pub struct Adapter {
    loaded: Arc<Loaded>,
}

/// The instance template, by world version.
enum Pre {
    V1(v1::CrmAdapterPre<HostState>),
    V2(v2::CrmAdapterPre<HostState>),
}

/// One version: the compiled component (shared by every version with the same bytes), and
/// this version's limits and declaration.
struct Loaded {
    compiled: Arc<Compiled>,
    limits: Limits,
    info: AdapterInfo,
    declaration: Declaration,
}

/// A compiled component and its pre-linked instance template.
struct Compiled {
    pre: Pre,
    version: WorldVersion,
    /// The names it imports, sorted.
    imports: Vec<String>,
    sha256: String,
    size_bytes: u64,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("sha256", &self.loaded.compiled.sha256)
            .field("version", &self.loaded.compiled.version)
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
    /// The org owning the connection; `None` for a platform-level connection (the only kind
    /// that may emit platform-level events).
    #[serde(default)]
    pub org_id: Option<String>,
    /// The CRM provider.
    pub provider: String,
    /// The org ids events may be scoped to.
    pub allowed_org_ids: Vec<String>,
    /// Non-secret settings.
    pub settings: Vec<(String, String)>,
    /// The CRM API's base URL, when the connection has API access (0.2.0 adapters see it).
    #[serde(default)]
    pub api_base_url: Option<String>,
}

impl ConnectionContext {
    /// Who events of this connection may be emitted for.
    pub fn scope(&self) -> Scope {
        Scope {
            tenant_id: self.tenant_id.clone(),
            allowed_org_ids: self
                .allowed_org_ids
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            platform_level: self.org_id.is_none(),
        }
    }
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

/// A page of records from a CRM API: the answer to the adapter's poll request, or a page an
/// external poller pushed.
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
    /// The request the host made for it; `None` for a pushed page.
    pub request: Option<HttpRequest>,
    /// The answer's HTTP status (200 for a pushed page).
    pub status: u16,
    /// The answer's headers (credentials never among them).
    pub headers: Vec<(String, String)>,
}

impl PollPage {
    /// A page pushed by an external poller: body and cursor, nothing about a request.
    pub fn pushed(
        body: Vec<u8>,
        content_type: Option<String>,
        cursor: Option<String>,
        at: SystemTime,
    ) -> Self {
        Self {
            body,
            content_type,
            cursor,
            fetched_at: at,
            request: None,
            status: 200,
            headers: Vec::new(),
        }
    }

    /// The answer `response` to `request`, which the host performed for the page after
    /// `cursor` at `at`.
    pub fn fetched(
        request: HttpRequest,
        response: HttpResponse,
        cursor: Option<String>,
        at: SystemTime,
    ) -> Self {
        let content_type = response
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.clone());
        Self {
            body: response.body,
            content_type,
            cursor,
            fetched_at: at,
            request: Some(request),
            status: response.status,
            headers: response.headers,
        }
    }
}

/// What an invocation is asked to handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A webhook delivery.
    Webhook(WebhookRequest),
    /// A poll page.
    Poll(PollPage),
    /// The next request of a poll run, from the saved cursor (0.2.0 adapters only).
    PollRequest {
        /// The cursor saved after the last page; `None` before the first poll ever.
        cursor: Option<String>,
    },
}

impl Input {
    fn len(&self) -> usize {
        match self {
            Input::Webhook(request) => request.body.len(),
            Input::Poll(page) => page.body.len(),
            Input::PollRequest { cursor } => cursor.as_ref().map_or(0, String::len),
        }
    }
}

/// What an invocation may reach besides its input: the connection's state, and for 0.2.0
/// adapters the host's HTTP client bound to the connection.
#[derive(Debug, Default)]
pub struct Env {
    /// The connection's state as the invocation starts.
    pub state: StateMap,
    /// Performs `http.fetch`; `None`: the connection has no API access (fetch is refused).
    pub http: Option<Arc<dyn Fetch>>,
    /// The seed and clock readings of a recorded invocation to replay; `None`: a live one (a
    /// fresh seed, the real clocks).
    pub replay: Option<Determinism>,
}

impl Env {
    /// The environment of an invocation that sees `state` and no API.
    pub fn with_state(state: StateMap) -> Self {
        Self {
            state,
            ..Self::default()
        }
    }
}

/// What an adapter returned, before limits and contracts.
#[derive(Debug, Default)]
struct Output {
    events: Vec<EmittedEvent>,
    next_cursor: Option<String>,
    more: bool,
    records: Option<u32>,
    request: Option<HttpRequest>,
}

impl Output {
    fn events(events: Vec<EmittedEvent>) -> Self {
        Self {
            events,
            ..Self::default()
        }
    }
}

/// An adapter's own error (the WIT `adapter-error`, the same in every version).
#[derive(Debug)]
enum AdapterFailure {
    BadRequest(String),
    Ignored(String),
    Failed(String),
}

impl Adapter {
    /// The sha256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.loaded.compiled.sha256
    }

    /// The component's size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.loaded.compiled.size_bytes
    }

    /// The world version the component implements.
    pub fn world_version(&self) -> WorldVersion {
        self.loaded.compiled.version
    }

    /// What the adapter declared about itself.
    pub fn info(&self) -> &AdapterInfo {
        &self.loaded.info
    }

    /// What the host records of this version once it is ready.
    pub fn record(&self) -> VersionRecord {
        VersionRecord {
            info: self.loaded.info.clone(),
            world: Some(self.loaded.compiled.version),
            imports: self.loaded.compiled.imports.clone(),
        }
    }

    /// The limits every invocation runs under.
    pub fn limits(&self) -> &Limits {
        &self.loaded.limits
    }

    /// The declaration built from `describe`, which the contracts check events against.
    pub fn declaration(&self) -> &Declaration {
        &self.loaded.declaration
    }

    /// Runs the adapter on `input` for `context`, in `env`, in a fresh instance. Returns within
    /// about the adapter's deadline (plus the time its `http.fetch` calls wait, which the fetch's
    /// own limits bound), whatever the guest does.
    pub async fn invoke(&self, input: &Input, context: &ConnectionContext, mut env: Env) -> Report {
        let for_polls;
        let limits = match input {
            Input::Webhook(_) => &self.loaded.limits,
            Input::Poll(_) | Input::PollRequest { .. } => {
                for_polls = self.loaded.limits.for_polls();
                &for_polls
            }
        };
        let log = LogSink::new(limits.log_bytes);
        let bytes_in = input.len() as u64;
        let mut usage = Usage {
            bytes_in,
            fuel_limit: limits.fuel,
            ..Usage::default()
        };
        let refused = if bytes_in > limits.input_bytes {
            Some(Failure::new(
                FailureKind::InputTooLarge,
                format!(
                    "the input is {bytes_in} bytes; this adapter accepts at most {}",
                    limits.input_bytes
                ),
            ))
        } else if matches!(input, Input::PollRequest { .. })
            && !self.loaded.compiled.version.polls_through_host()
        {
            Some(Failure::new(
                FailureKind::Unsupported,
                format!(
                    "the adapter implements crm:adapter@{}, which cannot poll through the host \
                     (no poll-request): rebuild it against 0.2.0, or push its pages to \
                     POST /v1/connections/{{id}}/poll-results",
                    self.loaded.compiled.version
                ),
            ))
        } else {
            None
        };
        if let Some(failure) = refused {
            return Report::new(Outcome::Failed { failure }, usage, log.finish(), None);
        }

        let deadline = Deadline::starting_now(limits.deadline());
        let source = match env.replay.take() {
            Some(recorded) => determinism::Source::replaying(recorded),
            None => determinism::Source::live(),
        };
        let mut store = self.new_store(&log, env, deadline.clone(), &source);
        let started = Instant::now();
        let result = tokio::select! {
            biased;
            result = self.call(&mut store, input, context) => Some(result),
            // The guest is blocked in a host call (a sleep, a poll of a clock): no epoch check
            // can stop it there, so the call is dropped, which unwinds the guest.
            () = deadline.passed() => None,
        };
        usage.duration = started.elapsed();
        usage.fuel_consumed = self.fuel_consumed(&store);
        usage.peak_memory_bytes = store.data().limiter.peak_memory_bytes as u64;

        // The personal data in what the adapter returned: masked in its log and its violations.
        let mut personal = None;
        let outcome = match result {
            None => Outcome::Failed {
                failure: Failure::new(
                    FailureKind::Deadline,
                    format!(
                        "the adapter ran past its deadline of {} ms while blocked in a host call \
                         (a sleep or a wait on a clock) and was stopped",
                        limits.deadline_ms
                    ),
                ),
            },
            Some(Err(error)) => Outcome::Failed {
                failure: classify_trap(&error, &store.data().limiter, &log, limits),
            },
            Some(Ok(Err(error))) => Outcome::from_adapter_error(error),
            Some(Ok(Ok(output))) => {
                personal = PersonalValues::of(&output.events, &self.loaded.declaration);
                self.check_output(output, context, &mut usage, personal.as_ref())
            }
        };
        let HostState { state, .. } = store.into_data();
        let (changed, access) = state.finish();
        let changed = if outcome.is_success() { changed } else { None };
        let mut log = log.finish();
        if let Some(personal) = &personal {
            log.mask(personal);
        }
        usage.log_bytes = log.bytes;
        let mut report = Report::new(outcome, usage, log, changed);
        report.state_access = access;
        report.determinism = source.finish();
        report
    }

    /// Instantiates a fresh copy of the adapter and calls the export `input` asks for.
    async fn call(
        &self,
        store: &mut Store<HostState>,
        input: &Input,
        context: &ConnectionContext,
    ) -> wasmtime::Result<std::result::Result<Output, AdapterFailure>> {
        match &self.loaded.compiled.pre {
            Pre::V1(pre) => {
                use v1::crm::adapter::types::WebhookRequest as Wit;
                let instance = pre.instantiate_async(&mut *store).await?;
                let adapter = instance.crm_adapter_adapter();
                let context = world::v1_context(context);
                Ok(match input {
                    Input::Webhook(request) => adapter
                        .call_handle_webhook(&mut *store, &Wit::from_host(request), &context)
                        .await?
                        .map(|events| {
                            Output::events(events.into_iter().map(world::v1_event).collect())
                        })
                        .map_err(AdapterFailure::from),
                    Input::Poll(page) => adapter
                        .call_handle_poll(&mut *store, &world::v1_page(page), &context)
                        .await?
                        .map(world::v1_poll_output)
                        .map_err(AdapterFailure::from),
                    Input::PollRequest { .. } => unreachable!("refused before instantiation"),
                })
            }
            Pre::V2(pre) => {
                use v2::crm::adapter::types::WebhookRequest as Wit;
                let instance = pre.instantiate_async(&mut *store).await?;
                let adapter = instance.crm_adapter_adapter();
                let context = world::v2_context(context);
                Ok(match input {
                    Input::Webhook(request) => adapter
                        .call_handle_webhook(&mut *store, &Wit::from_host(request), &context)
                        .await?
                        .map(|events| {
                            Output::events(events.into_iter().map(world::v2_event).collect())
                        })
                        .map_err(AdapterFailure::from),
                    Input::Poll(page) => adapter
                        .call_handle_poll(&mut *store, &world::v2_page(page), &context)
                        .await?
                        .map(world::v2_poll_output)
                        .map_err(AdapterFailure::from),
                    Input::PollRequest { cursor } => adapter
                        .call_poll_request(&mut *store, cursor.as_deref(), &context)
                        .await?
                        .map(|request| Output {
                            request: request.map(world::v2_request_from_wit),
                            ..Output::default()
                        })
                        .map_err(AdapterFailure::from),
                })
            }
        }
    }

    fn new_store(
        &self,
        log: &LogSink,
        env: Env,
        deadline: Deadline,
        source: &determinism::Source,
    ) -> Store<HostState> {
        let limits = &self.loaded.limits;
        let mut wasi = WasiCtx::builder();
        source.install(&mut wasi);
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
            state: State::new(env.state, limits),
            http: env.http,
            deadline,
        };
        let mut store = Store::new(self.loaded.pre_engine(), host);
        store.limiter(|host| &mut host.limiter);
        store
            .set_fuel(limits.fuel.unwrap_or(u64::MAX))
            .expect("fuel metering is enabled on the engine");
        // What the host copies out of the guest in one go (the events it returns, one log line,
        // one state value) is bounded by the adapter's own limits, not wasmtime's 128 MiB.
        store.set_hostcall_fuel(limits.hostcall_bytes());
        // Checked at every epoch tick: past the deadline the guest traps (`Trap::Interrupt`);
        // before it, the guest yields so that a long computation shares its thread.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|store| {
            Ok(if store.data().deadline.expired() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store
    }

    fn fuel_consumed(&self, store: &Store<HostState>) -> u64 {
        let start = self.loaded.limits.fuel.unwrap_or(u64::MAX);
        start.saturating_sub(store.get_fuel().unwrap_or(0))
    }

    /// Applies the output limits, then the contracts, to what the adapter returned.
    fn check_output(
        &self,
        output: Output,
        context: &ConnectionContext,
        usage: &mut Usage,
        personal: Option<&PersonalValues>,
    ) -> Outcome {
        let Output {
            events,
            next_cursor,
            more,
            records,
            request,
        } = output;
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
        let mut violations =
            contracts::check_events(&events, &self.loaded.declaration, &context.scope());
        if let Some(personal) = personal {
            for violation in &mut violations {
                violation.message = personal.mask(&violation.message);
                violation.value = violation.value.as_deref().map(|v| personal.mask(v));
            }
        }
        if violations.is_empty() {
            Outcome::Accepted {
                events,
                next_cursor,
                more,
                records,
                request,
            }
        } else {
            Outcome::Rejected { violations }
        }
    }

    /// Calls `describe` and builds the declaration the contracts check against. It runs once
    /// per load, under the poll deadline (2 s by default) rather than the webhook one: the first
    /// call into a large guest (Python, JavaScript) is slow, slower still while other adapters
    /// compile on the same cores.
    async fn describe(mut self) -> Result<Self> {
        let limits = self.loaded.limits.for_polls();
        let log = LogSink::new(limits.log_bytes);
        let deadline = Deadline::starting_now(limits.deadline());
        let mut store = self.new_store(
            &log,
            Env::default(),
            deadline.clone(),
            &determinism::Source::live(),
        );
        let called = tokio::select! {
            biased;
            info = self.call_describe(&mut store) => Some(info),
            () = deadline.passed() => None,
        };
        let info = match called {
            Some(Ok(info)) => info,
            Some(Err(e)) => {
                let failure = classify_trap(&e, &store.data().limiter, &log, &limits);
                return Err(Error::Describe(failure.message));
            }
            None => {
                return Err(Error::Describe(format!(
                    "describe did not return within the deadline of {} ms",
                    limits.deadline_ms
                )));
            }
        };
        if info.name.trim().is_empty() {
            return Err(Error::Describe("the adapter's name is empty".into()));
        }
        let declaration =
            Declaration::from_types(info.event_types.iter().map(|t| contracts::EventTypeFields {
                name: t.name.clone(),
                decimal_fields: t.decimal_fields.clone(),
                personal_fields: t.pii_fields.clone(),
            }))
            .map_err(|e| Error::Describe(e.to_string()))?;
        let loaded =
            Arc::get_mut(&mut self.loaded).expect("an adapter is described before it is shared");
        loaded.declaration = declaration;
        loaded.info = info;
        Ok(self)
    }

    async fn call_describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<AdapterInfo> {
        Ok(match &self.loaded.compiled.pre {
            Pre::V1(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                world::v1_info(
                    instance
                        .crm_adapter_adapter()
                        .call_describe(&mut *store)
                        .await?,
                )
            }
            Pre::V2(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                world::v2_info(
                    instance
                        .crm_adapter_adapter()
                        .call_describe(&mut *store)
                        .await?,
                )
            }
        })
    }
}

impl Loaded {
    fn pre_engine(&self) -> &Engine {
        match &self.compiled.pre {
            Pre::V1(pre) => pre.engine(),
            Pre::V2(pre) => pre.engine(),
        }
    }
}

/// Pieces of an invocation, exposed for the benchmarks only (they measure the sandbox's
/// overhead against its floor). Tenants' invocations always go through [`Adapter::invoke`].
#[doc(hidden)]
pub mod bench {
    use super::*;

    fn store(adapter: &Adapter) -> Store<HostState> {
        let log = LogSink::new(adapter.loaded.limits.log_bytes);
        let deadline = Deadline::starting_now(adapter.loaded.limits.deadline());
        adapter.new_store(&log, Env::default(), deadline, &determinism::Source::live())
    }

    /// A fresh store and instance, without calling anything.
    pub async fn instantiate(adapter: &Adapter) {
        let mut store = store(adapter);
        match &adapter.loaded.compiled.pre {
            Pre::V1(pre) => drop(
                pre.instantiate_async(&mut store)
                    .await
                    .expect("instantiates"),
            ),
            Pre::V2(pre) => drop(
                pre.instantiate_async(&mut store)
                    .await
                    .expect("instantiates"),
            ),
        }
    }

    /// A fresh store and instance, then one call; no contract check.
    pub async fn fresh_call(
        adapter: &Adapter,
        input: &Input,
        context: &ConnectionContext,
    ) -> usize {
        let mut store = store(adapter);
        let result = adapter
            .call(&mut store, input, context)
            .await
            .expect("no trap");
        result.map_or(0, |output| output.events.len())
    }

    /// One instance kept across calls: the floor of a call's cost. Never used for tenants,
    /// whose invocations must not share an instance.
    pub struct Warm {
        store: Store<HostState>,
        instance: v2::CrmAdapter,
    }

    impl std::fmt::Debug for Warm {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Warm").finish_non_exhaustive()
        }
    }

    /// Instantiates a 0.2.0 `adapter` once for repeated calls.
    pub async fn warm(adapter: &Adapter) -> Warm {
        let mut store = store(adapter);
        // The deadline is far away: the bench measures calls, not deadlines.
        store.data_mut().deadline = Deadline::starting_now(Duration::from_secs(3600));
        let Pre::V2(pre) = &adapter.loaded.compiled.pre else {
            panic!("the warm floor is measured on 0.2.0 adapters")
        };
        let instance = pre
            .instantiate_async(&mut store)
            .await
            .expect("instantiates");
        Warm { store, instance }
    }

    impl Warm {
        /// Calls `handle-webhook` on the warm instance.
        pub async fn call(&mut self, input: &Input, context: &ConnectionContext) -> usize {
            use v2::crm::adapter::types::WebhookRequest as Wit;
            let Input::Webhook(request) = input else {
                panic!("webhook inputs only")
            };
            self.store.set_fuel(u64::MAX).expect("fuel is enabled");
            self.instance
                .crm_adapter_adapter()
                .call_handle_webhook(
                    &mut self.store,
                    &Wit::from_host(request),
                    &world::v2_context(context),
                )
                .await
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
        + optional(&event.dedupe_key)
        + optional(&event.idempotency_key)) as u64
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
    // wasmtime's own guard on what the host copies out of the guest in one go, sized from the
    // adapter's limits (see `Limits::hostcall_bytes`); its error type is private.
    let copied_too_much = trap.is_none()
        && format!("{error:#}").contains("too much data is being copied between the host");
    let (kind, message) = match trap {
        _ if copied_too_much && frames.is_empty() => (
            FailureKind::OutputLimit,
            format!(
                "the adapter returned more than the host copies out of it ({} bytes: its output \
                 limit of {} bytes plus room for {} events); nothing of it was kept",
                limits.hostcall_bytes(),
                limits.output_bytes,
                limits.max_events
            ),
        ),
        _ if copied_too_much => (
            FailureKind::OutputLimit,
            format!(
                "the adapter passed more than {} bytes to one host call (a log line, a state \
                 value or a request); nothing of it was kept",
                limits.hostcall_bytes()
            ),
        ),
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
    http: Option<Arc<dyn Fetch>>,
    deadline: Deadline,
}

impl HostState {
    /// `http.fetch`: the connection's egress client performs the request while the
    /// invocation's compute deadline is paused.
    async fn perform_fetch(&mut self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        let Some(http) = self.http.clone() else {
            return Err(FetchError::NotAllowed(
                "this connection has no API access (no API base URL is configured)".to_owned(),
            ));
        };
        let paused_at = self.deadline.pause();
        let response = http.fetch(request).await;
        self.deadline.resume(paused_at);
        response
    }
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
