use serde::de::DeserializeOwned;

use crate::AdapterError;

/// A point in time: seconds and nanoseconds since the Unix epoch, UTC.
///
/// ```
/// use crm_adapter_sdk::Timestamp;
///
/// let t = Timestamp { seconds: 1_764_583_200, nanoseconds: 0 };
/// assert_eq!(t.to_rfc3339(), "2025-12-01T10:00:00Z");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub seconds: u64,
    /// Nanoseconds within the second (below 1,000,000,000).
    pub nanoseconds: u32,
}

impl Timestamp {
    /// The time in RFC 3339 form, UTC (`2025-12-01T10:00:00Z`), with a fraction only when the
    /// nanoseconds are not zero (`2025-12-01T10:00:00.5Z`).
    ///
    /// ```
    /// use crm_adapter_sdk::Timestamp;
    ///
    /// let t = Timestamp { seconds: 0, nanoseconds: 250_000_000 };
    /// assert_eq!(t.to_rfc3339(), "1970-01-01T00:00:00.25Z");
    /// ```
    pub fn to_rfc3339(&self) -> String {
        let days = self.seconds / 86_400;
        let secs = self.seconds % 86_400;
        let (year, month, day) = civil_from_days(days);
        let mut out = format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        if self.nanoseconds != 0 {
            let frac = format!("{:09}", self.nanoseconds.min(999_999_999));
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push('Z');
        out
    }
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// One HTTP header. The host lower-cases names; a header sent several times appears several
/// times, in the order received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name, lower case.
    pub name: String,
    /// The value, as received.
    pub value: String,
}

/// A webhook delivery exactly as the host received it (after signature verification).
///
/// In unit tests, build one with [`crate::testing::webhook`].
///
/// ```
/// use crm_adapter_sdk::testing;
///
/// let req = testing::webhook(r#"{"event": "agent.created"}"#)
///     .with_header("X-Champion-Event", "agent.created");
/// assert_eq!(req.header("x-champion-event"), Some("agent.created"));
/// let body: serde_json::Value = req.json().unwrap();
/// assert_eq!(body["event"], "agent.created");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookRequest {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// The request path, without the query string.
    pub path: String,
    /// The raw query string without the leading `?`; empty when there is none.
    pub query: String,
    /// The headers, names lower-cased by the host.
    pub headers: Vec<Header>,
    /// The body, byte for byte as received.
    pub body: Vec<u8>,
    /// When the host received the delivery.
    pub received_at: Timestamp,
}

impl WebhookRequest {
    /// The first value of a header; the name is compared case-insensitively.
    ///
    /// ```
    /// let req = crm_adapter_sdk::testing::webhook("{}").with_header("content-type", "application/json");
    /// assert_eq!(req.header("Content-Type"), Some("application/json"));
    /// assert_eq!(req.header("x-missing"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every value of a header, in the order received; the name is compared
    /// case-insensitively.
    ///
    /// ```
    /// let req = crm_adapter_sdk::testing::webhook("{}")
    ///     .with_header("x-tag", "a")
    ///     .with_header("X-Tag", "b");
    /// assert_eq!(req.header_values("x-tag").collect::<Vec<_>>(), ["a", "b"]);
    /// ```
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The body as UTF-8 text, or [`AdapterError::BadRequest`].
    ///
    /// ```
    /// let req = crm_adapter_sdk::testing::webhook("ok");
    /// assert_eq!(req.body_text().unwrap(), "ok");
    /// let req = crm_adapter_sdk::testing::webhook(vec![0xff, 0xfe]);
    /// assert!(req.body_text().is_err());
    /// ```
    pub fn body_text(&self) -> Result<&str, AdapterError> {
        body_text(&self.body, "request body")
    }

    /// Parses the body as JSON into `T` (for example [`serde_json::Value`] or a
    /// `#[derive(Deserialize)]` struct), or answers [`AdapterError::BadRequest`] saying why.
    ///
    /// ```
    /// use crm_adapter_sdk::AdapterError;
    /// use serde_json::Value;
    ///
    /// let req = crm_adapter_sdk::testing::webhook(r#"{"id": 7"#);
    /// let err = req.json::<Value>().unwrap_err();
    /// assert!(matches!(&err, AdapterError::BadRequest(m) if m.starts_with("request body is not valid JSON")), "{err}");
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, AdapterError> {
        parse_json(&self.body, "request body")
    }

    /// Replaces the method (for tests).
    ///
    /// ```
    /// let req = crm_adapter_sdk::testing::webhook("{}").with_method("PUT");
    /// assert_eq!(req.method, "PUT");
    /// ```
    pub fn with_method(mut self, method: impl Into<String>) -> Self {
        self.method = method.into();
        self
    }

    /// Replaces the path (for tests).
    ///
    /// ```
    /// let req = crm_adapter_sdk::testing::webhook("{}").with_path("/hooks/champion");
    /// assert_eq!(req.path, "/hooks/champion");
    /// ```
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Replaces the query string, without the leading `?` (for tests).
    ///
    /// ```
    /// let req = crm_adapter_sdk::testing::webhook("{}").with_query("a=1&b=2");
    /// assert_eq!(req.query, "a=1&b=2");
    /// ```
    pub fn with_query(mut self, query: impl Into<String>) -> Self {
        self.query = query.into();
        self
    }

    /// Adds a header; the name is lower-cased as the host does (for tests).
    ///
    /// ```
    /// let req = crm_adapter_sdk::testing::webhook("{}").with_header("X-Id", "1");
    /// assert_eq!(req.headers[0].name, "x-id");
    /// ```
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push(Header {
            name: name.to_ascii_lowercase(),
            value: value.into(),
        });
        self
    }

    /// Replaces the reception time (for tests).
    ///
    /// ```
    /// use crm_adapter_sdk::Timestamp;
    /// let at = Timestamp { seconds: 1, nanoseconds: 0 };
    /// assert_eq!(crm_adapter_sdk::testing::webhook("{}").with_received_at(at).received_at, at);
    /// ```
    pub fn with_received_at(mut self, at: Timestamp) -> Self {
        self.received_at = at;
        self
    }
}

/// The connection an invocation runs for. Secrets are never part of it.
///
/// In unit tests, build one with [`crate::testing::context`].
///
/// ```
/// let ctx = crm_adapter_sdk::testing::context()
///     .with_org("org-456")
///     .with_setting("default_org_id", "org-456");
/// assert!(ctx.allows_org("org-456"));
/// assert_eq!(ctx.setting("default_org_id"), Some("org-456"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Context {
    /// The connection's id (stable, opaque).
    pub connection_id: String,
    /// The tenant that owns the connection. Events are always emitted for this tenant.
    pub tenant_id: String,
    /// The org the connection belongs to; `None` for a platform-level connection. Only a
    /// platform-level connection may emit platform-level events (an event without an org).
    pub org_id: Option<String>,
    /// The CRM provider, e.g. `"salesforce"` or `"custom"`.
    pub provider: String,
    /// Organisations an event may be scoped to.
    pub allowed_org_ids: Vec<String>,
    /// The connection's non-secret settings (key, value), as configured by the tenant.
    pub settings: Vec<(String, String)>,
    /// The CRM API's base URL that request paths are relative to, when the connection has
    /// API access (never holds a credential).
    pub api_base_url: Option<String>,
}

impl Context {
    /// The value of a connection setting (the first one if the key repeats).
    ///
    /// ```
    /// let ctx = crm_adapter_sdk::testing::context().with_setting("region", "eu");
    /// assert_eq!(ctx.setting("region"), Some("eu"));
    /// assert_eq!(ctx.setting("missing"), None);
    /// ```
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a connection setting, or [`AdapterError::Failed`] naming it: a missing
    /// setting is a configuration problem, and the delivery can be redriven once it is set.
    ///
    /// ```
    /// use crm_adapter_sdk::AdapterError;
    ///
    /// let ctx = crm_adapter_sdk::testing::context();
    /// assert_eq!(
    ///     ctx.require_setting("account"),
    ///     Err(AdapterError::Failed("connection setting `account` is not configured".into()))
    /// );
    /// ```
    pub fn require_setting(&self, key: &str) -> Result<&str, AdapterError> {
        self.setting(key).ok_or_else(|| {
            AdapterError::Failed(format!("connection setting `{key}` is not configured"))
        })
    }

    /// Whether an event may be scoped to `org_id` on this connection.
    ///
    /// ```
    /// let ctx = crm_adapter_sdk::testing::context().with_org("org-1");
    /// assert!(ctx.allows_org("org-1"));
    /// assert!(!ctx.allows_org("org-2"));
    /// ```
    pub fn allows_org(&self, org_id: &str) -> bool {
        self.allowed_org_ids.iter().any(|o| o == org_id)
    }

    /// Replaces the connection id (for tests).
    ///
    /// ```
    /// let ctx = crm_adapter_sdk::testing::context().with_connection_id("conn-9");
    /// assert_eq!(ctx.connection_id, "conn-9");
    /// ```
    pub fn with_connection_id(mut self, id: impl Into<String>) -> Self {
        self.connection_id = id.into();
        self
    }

    /// Replaces the tenant id (for tests).
    ///
    /// ```
    /// let ctx = crm_adapter_sdk::testing::context().with_tenant("acme");
    /// assert_eq!(ctx.tenant_id, "acme");
    /// ```
    pub fn with_tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = tenant_id.into();
        self
    }

    /// Replaces the provider (for tests).
    ///
    /// ```
    /// let ctx = crm_adapter_sdk::testing::context().with_provider("hubspot");
    /// assert_eq!(ctx.provider, "hubspot");
    /// ```
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = provider.into();
        self
    }

    /// Allows one more org (for tests).
    ///
    /// ```
    /// let ctx = crm_adapter_sdk::testing::context().with_org("a").with_org("b");
    /// assert_eq!(ctx.allowed_org_ids, ["a", "b"]);
    /// ```
    pub fn with_org(mut self, org_id: impl Into<String>) -> Self {
        self.allowed_org_ids.push(org_id.into());
        self
    }

    /// Makes the connection belong to `org_id` (and allows it), as an org's own connection
    /// is (for tests).
    ///
    /// ```
    /// let ctx = crm_adapter_sdk::testing::context().with_connection_org("org-1");
    /// assert_eq!(ctx.org_id.as_deref(), Some("org-1"));
    /// assert!(ctx.allows_org("org-1"));
    /// ```
    pub fn with_connection_org(mut self, org_id: impl Into<String>) -> Self {
        let org_id = org_id.into();
        if !self.allows_org(&org_id) {
            self.allowed_org_ids.push(org_id.clone());
        }
        self.org_id = Some(org_id);
        self
    }

    /// Sets the CRM API's base URL (for tests).
    ///
    /// ```
    /// let ctx = crm_adapter_sdk::testing::context().with_api_base_url("https://api.hubapi.com");
    /// assert_eq!(ctx.api_base_url.as_deref(), Some("https://api.hubapi.com"));
    /// ```
    pub fn with_api_base_url(mut self, url: impl Into<String>) -> Self {
        self.api_base_url = Some(url.into());
        self
    }

    /// Adds a setting (for tests).
    ///
    /// ```
    /// let ctx = crm_adapter_sdk::testing::context().with_setting("k", "v");
    /// assert_eq!(ctx.setting("k"), Some("v"));
    /// ```
    pub fn with_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }
}

/// A page of records fetched from a CRM API (or pushed by an external poller).
///
/// In unit tests, build one with [`crate::testing::poll_page`].
///
/// ```
/// let page = crm_adapter_sdk::testing::poll_page(r#"{"data": []}"#).with_cursor("c1");
/// assert_eq!(page.cursor.as_deref(), Some("c1"));
/// let body: serde_json::Value = page.json().unwrap();
/// assert!(body["data"].is_array());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollPage {
    /// The page, byte for byte as fetched (usually JSON).
    pub body: Vec<u8>,
    /// The media type of `body` when known, e.g. `application/json`.
    pub content_type: Option<String>,
    /// The cursor saved after the previous page; `None` before the first page ever.
    pub cursor: Option<String>,
    /// When the page was fetched.
    pub fetched_at: Timestamp,
    /// The request the host made for this page (the one [`crate::Adapter::poll_request`]
    /// returned); `None` for a page an external poller pushed.
    pub request: Option<crate::HttpRequest>,
    /// The HTTP status of the answer (200 for a pushed page).
    pub status: u16,
    /// The answer's headers (empty for a pushed page).
    pub headers: Vec<Header>,
}

impl PollPage {
    /// The first value of one of the answer's headers (the name compared case-insensitively).
    ///
    /// ```
    /// let page = crm_adapter_sdk::testing::poll_page("{}").with_header("Retry-After", "30");
    /// assert_eq!(page.header("retry-after"), Some("30"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Adds a header to the answer, lower-cased as the host does (for tests).
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push(Header {
            name: name.to_ascii_lowercase(),
            value: value.into(),
        });
        self
    }

    /// Sets the request this page answers (for tests).
    pub fn with_request(mut self, request: crate::HttpRequest) -> Self {
        self.request = Some(request);
        self
    }

    /// Sets the answer's status (for tests).
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The body as UTF-8 text, or [`AdapterError::BadRequest`].
    ///
    /// ```
    /// assert_eq!(crm_adapter_sdk::testing::poll_page("[]").body_text().unwrap(), "[]");
    /// ```
    pub fn body_text(&self) -> Result<&str, AdapterError> {
        body_text(&self.body, "poll page")
    }

    /// Parses the body as JSON into `T`, or answers [`AdapterError::BadRequest`] saying why.
    ///
    /// ```
    /// let page = crm_adapter_sdk::testing::poll_page("not json");
    /// let err = page.json::<serde_json::Value>().unwrap_err();
    /// assert!(err.message().starts_with("poll page is not valid JSON"), "{err}");
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, AdapterError> {
        parse_json(&self.body, "poll page")
    }

    /// Sets the cursor of the previous page (for tests).
    ///
    /// ```
    /// let page = crm_adapter_sdk::testing::poll_page("{}").with_cursor("abc");
    /// assert_eq!(page.cursor.as_deref(), Some("abc"));
    /// ```
    pub fn with_cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Sets the content type (for tests).
    ///
    /// ```
    /// let page = crm_adapter_sdk::testing::poll_page("{}").with_content_type("text/csv");
    /// assert_eq!(page.content_type.as_deref(), Some("text/csv"));
    /// ```
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Replaces the fetch time (for tests).
    ///
    /// ```
    /// use crm_adapter_sdk::Timestamp;
    /// let at = Timestamp { seconds: 5, nanoseconds: 0 };
    /// assert_eq!(crm_adapter_sdk::testing::poll_page("{}").with_fetched_at(at).fetched_at, at);
    /// ```
    pub fn with_fetched_at(mut self, at: Timestamp) -> Self {
        self.fetched_at = at;
        self
    }
}

/// What [`crate::Adapter::handle_poll`] returns: the page's events and the cursor to pass next
/// time.
///
/// ```
/// use crm_adapter_sdk::PollOutput;
///
/// let out = PollOutput::new(Vec::new()).next_cursor("page-2");
/// assert_eq!(out.next_cursor.as_deref(), Some("page-2"));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PollOutput {
    /// The events of the page.
    pub events: Vec<crate::Event>,
    /// The cursor for the next page; `None` keeps the previous one.
    pub next_cursor: Option<String>,
    /// Whether another page follows now: the host commits this page's events and cursor, then
    /// asks [`crate::Adapter::poll_request`] again. `false` ends the poll run.
    pub more: bool,
    /// How many records the page held, changed or not (the host shows it with the poll run,
    /// beside the events); `None` when not counted.
    pub records: Option<u32>,
}

impl PollOutput {
    /// Events with no new cursor (the previous one is kept).
    ///
    /// ```
    /// let out = crm_adapter_sdk::PollOutput::new(Vec::new());
    /// assert!(out.events.is_empty() && out.next_cursor.is_none());
    /// ```
    pub fn new(events: Vec<crate::Event>) -> Self {
        Self {
            events,
            next_cursor: None,
            more: false,
            records: None,
        }
    }

    /// Sets the cursor for the next page.
    ///
    /// ```
    /// let out = crm_adapter_sdk::PollOutput::new(Vec::new()).next_cursor("c2");
    /// assert_eq!(out.next_cursor.as_deref(), Some("c2"));
    /// ```
    pub fn next_cursor(mut self, cursor: impl Into<String>) -> Self {
        self.next_cursor = Some(cursor.into());
        self
    }

    /// Says whether more pages follow now.
    ///
    /// ```
    /// let out = crm_adapter_sdk::PollOutput::new(Vec::new()).next_cursor("c2").more(true);
    /// assert!(out.more);
    /// ```
    pub fn more(mut self, more: bool) -> Self {
        self.more = more;
        self
    }

    /// Says how many records the page held, changed or not.
    ///
    /// ```
    /// let out = crm_adapter_sdk::PollOutput::new(Vec::new()).records(200);
    /// assert_eq!(out.records, Some(200));
    /// ```
    pub fn records(mut self, records: usize) -> Self {
        self.records = Some(u32::try_from(records).unwrap_or(u32::MAX));
        self
    }
}

/// One event type an adapter may emit, with the JSON pointers (relative to the payload) of its
/// decimal fields. A segment `*` matches any array index or object key.
///
/// ```
/// use crm_adapter_sdk::EventTypeDecl;
///
/// let decl = EventTypeDecl::new("member.enrolled")
///     .decimal_field("/pepm_rate")
///     .decimal_field("/splits/*/split_pct");
/// assert_eq!(decl.decimal_fields, ["/pepm_rate", "/splits/*/split_pct"]);
///
/// // A type without decimals converts from its name.
/// let plain: EventTypeDecl = "agent.created".into();
/// assert!(plain.decimal_fields.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypeDecl {
    /// `entity.action`, e.g. `deal.won`.
    pub name: String,
    /// JSON pointers of the fields that hold decimals, e.g. `/amount`.
    pub decimal_fields: Vec<String>,
    /// JSON pointers of the fields that hold personal data (emails, phone numbers, birth
    /// dates): the host masks them wherever it shows payloads to someone who may not see them.
    pub pii_fields: Vec<String>,
}

impl EventTypeDecl {
    /// An event type with no decimal fields.
    ///
    /// ```
    /// assert_eq!(crm_adapter_sdk::EventTypeDecl::new("deal.won").name, "deal.won");
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            decimal_fields: Vec::new(),
            pii_fields: Vec::new(),
        }
    }

    /// Declares one personal-data field (a JSON pointer relative to the payload, `*` allowed).
    ///
    /// ```
    /// let decl = crm_adapter_sdk::EventTypeDecl::new("contact.created").pii_field("/email");
    /// assert_eq!(decl.pii_fields, ["/email"]);
    /// ```
    pub fn pii_field(mut self, pointer: impl Into<String>) -> Self {
        self.pii_fields.push(pointer.into());
        self
    }

    /// Declares one decimal field (a JSON pointer relative to the payload).
    ///
    /// ```
    /// let decl = crm_adapter_sdk::EventTypeDecl::new("deal.won").decimal_field("/amount");
    /// assert_eq!(decl.decimal_fields, ["/amount"]);
    /// ```
    pub fn decimal_field(mut self, pointer: impl Into<String>) -> Self {
        self.decimal_fields.push(pointer.into());
        self
    }

    /// Declares several decimal fields.
    ///
    /// ```
    /// let decl = crm_adapter_sdk::EventTypeDecl::new("deal.won").decimal_fields(["/a", "/b"]);
    /// assert_eq!(decl.decimal_fields, ["/a", "/b"]);
    /// ```
    pub fn decimal_fields<I, S>(mut self, pointers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.decimal_fields
            .extend(pointers.into_iter().map(Into::into));
        self
    }
}

impl From<&str> for EventTypeDecl {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for EventTypeDecl {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

/// What an adapter says about itself in [`crate::Adapter::describe`].
///
/// ```
/// use crm_adapter_sdk::{AdapterInfo, EventTypeDecl};
///
/// let info = AdapterInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), "custom")
///     .event_type("agent.created")
///     .event_type(EventTypeDecl::new("deal.won").decimal_field("/amount"));
/// assert_eq!(info.event_types.len(), 2);
/// assert!(info.declares("deal.won"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterInfo {
    /// The adapter's name.
    pub name: String,
    /// The adapter's version.
    pub version: String,
    /// The provider it is written for, e.g. `"salesforce"` or `"custom"`.
    pub provider: String,
    /// The event types it may emit.
    pub event_types: Vec<EventTypeDecl>,
}

impl AdapterInfo {
    /// An adapter that declares no event types yet.
    ///
    /// ```
    /// let info = crm_adapter_sdk::AdapterInfo::new("x", "1.0.0", "custom");
    /// assert!(info.event_types.is_empty());
    /// ```
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        provider: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            provider: provider.into(),
            event_types: Vec::new(),
        }
    }

    /// Declares an event type: a name (`"deal.won"`) or an [`EventTypeDecl`] with decimal
    /// fields.
    ///
    /// ```
    /// use crm_adapter_sdk::{AdapterInfo, EventTypeDecl};
    /// let info = AdapterInfo::new("x", "1", "custom")
    ///     .event_type("noop.done")
    ///     .event_type(EventTypeDecl::new("deal.won").decimal_field("/amount"));
    /// assert_eq!(info.event_types[1].decimal_fields, ["/amount"]);
    /// ```
    pub fn event_type(mut self, decl: impl Into<EventTypeDecl>) -> Self {
        self.event_types.push(decl.into());
        self
    }

    /// Whether `event_type` is declared.
    ///
    /// ```
    /// let info = crm_adapter_sdk::AdapterInfo::new("x", "1", "custom").event_type("a.b");
    /// assert!(info.declares("a.b") && !info.declares("a.c"));
    /// ```
    pub fn declares(&self, event_type: &str) -> bool {
        self.decl(event_type).is_some()
    }

    /// The declaration of `event_type`, if any.
    ///
    /// ```
    /// use crm_adapter_sdk::{AdapterInfo, EventTypeDecl};
    /// let info = AdapterInfo::new("x", "1", "custom")
    ///     .event_type(EventTypeDecl::new("deal.won").decimal_field("/amount"));
    /// assert_eq!(info.decl("deal.won").unwrap().decimal_fields, ["/amount"]);
    /// ```
    pub fn decl(&self, event_type: &str) -> Option<&EventTypeDecl> {
        self.event_types.iter().find(|d| d.name == event_type)
    }
}

fn body_text<'a>(body: &'a [u8], what: &str) -> Result<&'a str, AdapterError> {
    std::str::from_utf8(body)
        .map_err(|e| AdapterError::BadRequest(format!("{what} is not UTF-8 text: {e}")))
}

fn parse_json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, AdapterError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(AdapterError::BadRequest(format!(
            "{what} is empty; expected JSON"
        )));
    }
    serde_json::from_slice(body)
        .map_err(|e| AdapterError::BadRequest(format!("{what} is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339_utc() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00Z"),
            (951_782_400, 0, "2000-02-29T00:00:00Z"),
            (1_764_583_200, 0, "2025-12-01T10:00:00Z"),
            (4_102_444_799, 123_000_000, "2099-12-31T23:59:59.123Z"),
            (1, 1, "1970-01-01T00:00:01.000000001Z"),
        ];
        for (seconds, nanoseconds, expected) in cases {
            let t = Timestamp {
                seconds,
                nanoseconds,
            };
            assert_eq!(t.to_rfc3339(), expected);
        }
    }

    #[test]
    fn json_errors_say_what_was_wrong() {
        let err = parse_json::<serde_json::Value>(b"  ", "request body").unwrap_err();
        assert_eq!(
            err,
            AdapterError::BadRequest("request body is empty; expected JSON".into())
        );
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Need {
            id: String,
        }
        let err = parse_json::<Need>(br#"{"x":1}"#, "request body").unwrap_err();
        assert!(err.message().contains("missing field `id`"), "{err}");
    }
}
