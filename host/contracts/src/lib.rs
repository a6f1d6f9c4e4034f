//! The platform's contracts on the events an adapter emits (DESIGN.md section 3).
//!
//! Adapters are not trusted: every event of an invocation is checked here before anything is
//! stored, and one violation refuses the whole invocation (all-or-nothing). [`check_events`]
//! reports every violation it finds (up to [`MAX_VIOLATIONS`]), each with the JSON pointer of
//! the offending value and a stable [`Rule`] code, so that an adapter developer can fix them
//! all in one round.
//!
//! Everything here is pure: no I/O, no clock, no allocation beyond what the check needs. The
//! sandbox maps its WIT bindings onto [`EmittedEvent`] and the connection onto [`Scope`]; a
//! [`Declaration`] is built once per adapter version from its `describe` output.

mod declaration;
mod envelope;
mod fields;
mod keys;
mod numbers;
mod payload;

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

pub use declaration::{
    Declaration, DeclarationError, EventTypeFields, MAX_DECIMAL_FIELD_LEN, MAX_DECIMAL_FIELDS,
    MAX_EVENT_TYPES, MAX_PERSONAL_FIELDS,
};
pub use fields::{Fields, MASKED, mask};
pub use keys::{ScopeKey, scope_key};

/// The version of these rules, named in every event's signed provenance record: raised whenever
/// a rule is added or made stricter, so that a consumer knows which checks an event passed.
pub const RULES_VERSION: u32 = 1;

/// Longest event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;
/// Longest entity id, in bytes.
pub const MAX_ENTITY_ID_LEN: usize = 256;
/// Longest dedupe key, in bytes.
pub const MAX_DEDUPE_KEY_LEN: usize = 256;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;
/// Deepest container nesting in a payload; the payload object itself is level 1.
///
/// serde_json refuses documents nested 128 levels or more, and a consumer may embed the payload
/// in an envelope of its own: 64 leaves room for both, is far beyond what CRM events need, and
/// halves the worst-case cost of the raw-value walk.
pub const MAX_DEPTH: usize = 64;
/// Largest integer magnitude a double holds exactly: 2^53 - 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// At most this many violations are reported per invocation; past it, one
/// [`Rule::TooManyViolations`] closes the list and checking stops. The outcome (refused) is the
/// same, and a hostile adapter cannot turn one invocation into megabytes of failure records.
pub const MAX_VIOLATIONS: usize = 100;
/// Quoted values in violations are cut to this many characters.
const MAX_QUOTED_CHARS: usize = 120;

/// One event as an adapter emitted it (the WIT `event` record), before the host stamps tenant,
/// event id and metadata. Serializable for dry runs and the local runner, which show it as is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmittedEvent {
    /// `entity.action`, e.g. `deal.won`.
    pub event_type: String,
    /// The part of `event_type` before the dot.
    pub entity_type: String,
    /// The entity's id.
    pub entity_id: String,
    /// `None` for platform level, else one of the connection's orgs.
    pub org_id: Option<String>,
    /// The text of a JSON object.
    pub payload: String,
    /// Makes the event unique within its invocation; `None` means "by position".
    pub dedupe_key: Option<String>,
    /// Names the fact the event records, stable across deliveries (0.2.0): the event's id then
    /// derives from the connection and this key alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Who an invocation may emit for: the connection's tenant and orgs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The connection's tenant.
    pub tenant_id: String,
    /// The orgs an event (or a payload `org_id`) may name.
    pub allowed_org_ids: BTreeSet<String>,
    /// Whether the connection itself is platform level (it belongs to no org). Only such a
    /// connection may emit platform-level events (`org_id` null), which every org of the tenant
    /// sees: an org's connection publishing at platform level would leak to the other orgs.
    pub platform_level: bool,
}

impl Scope {
    /// Whether an event (or a payload org key) may name `org`: one of the allowed orgs, or
    /// `None` (platform level) from a platform-level connection.
    pub fn allows_org(&self, org: Option<&str>) -> bool {
        match org {
            Some(org) => self.allowed_org_ids.contains(org),
            None => self.platform_level,
        }
    }
}

/// A broken contract: which event, where in it, which rule, and what was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Position of the event in the invocation's output, from 0.
    pub event_index: usize,
    /// RFC 6901 pointer into the event: `/event_type`, `/org_id`, `/payload/lines/0/amount`.
    /// Empty for [`Rule::TooManyViolations`], which is about the invocation.
    pub pointer: String,
    /// The rule broken.
    pub rule: Rule,
    /// What is wrong and how to fix it, for the adapter developer.
    pub message: String,
    /// The offending value as JSON text: payload values exactly as emitted (`12.5`,
    /// `"007.5"`), envelope fields as JSON strings, the repeated key for
    /// [`Rule::DuplicateKey`]. Cut after 120 characters with a `…[truncated, N bytes]` mark, so
    /// a hostile value cannot bloat the report. `None` when there is no single value (invalid
    /// JSON, too many violations).
    pub value: Option<String>,
}

/// The contract rules, serialized as stable snake_case codes (see [`Rule::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The event type is not `entity.action` in lower snake case, at most 128 bytes.
    EventTypeFormat,
    /// The entity type is not the part of the event type before the dot.
    EntityTypeMismatch,
    /// The event type is not one the adapter declared in `describe`.
    UndeclaredEventType,
    /// The entity id is empty or blank, longer than 256 bytes, or has a control character, a
    /// line or paragraph separator, or a bidirectional control.
    EntityIdInvalid,
    /// The payload is not valid JSON (including strings with lone surrogates).
    PayloadInvalidJson,
    /// The payload is valid JSON but not an object.
    PayloadNotObject,
    /// An object has the same key twice.
    DuplicateKey,
    /// The payload nests containers deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A number has a fraction or an exponent.
    FractionalNumber,
    /// An integer is beyond ±(2^53 - 1).
    UnsafeInteger,
    /// A declared decimal field holds something other than a string or null.
    DecimalNotString,
    /// A declared decimal field's string is not of the form `-?digits(.digits)?`.
    DecimalNotCanonical,
    /// A declared decimal field's string is beyond what `rust_decimal` holds (scale above 28,
    /// magnitude beyond 2^96 - 1).
    DecimalOutOfRange,
    /// The event's `org_id`, or an org key in the payload (see [`scope_key`]), is not one of the
    /// allowed orgs, or is null (platform level) from a connection that belongs to an org.
    OrgNotAllowed,
    /// A tenant key in the payload (see [`scope_key`]) is not the connection's tenant.
    TenantMismatch,
    /// The dedupe key is empty, longer than 256 bytes, or has a control character.
    DedupeKeyInvalid,
    /// Two events of the invocation share a dedupe key, so they would get one event id.
    DuplicateDedupeKey,
    /// The idempotency key is empty or blank, longer than 256 bytes, or has a control
    /// character, a line separator or a bidirectional control.
    IdempotencyKeyInvalid,
    /// Two events of the invocation share an idempotency key: they name the same fact, so one
    /// of them would be dropped as a repeat.
    DuplicateIdempotencyKey,
    /// More than [`MAX_VIOLATIONS`] violations: the rest were not reported.
    TooManyViolations,
}

impl Rule {
    /// Every rule, in declaration order.
    pub const ALL: [Rule; 20] = [
        Rule::EventTypeFormat,
        Rule::EntityTypeMismatch,
        Rule::UndeclaredEventType,
        Rule::EntityIdInvalid,
        Rule::PayloadInvalidJson,
        Rule::PayloadNotObject,
        Rule::DuplicateKey,
        Rule::TooDeep,
        Rule::FractionalNumber,
        Rule::UnsafeInteger,
        Rule::DecimalNotString,
        Rule::DecimalNotCanonical,
        Rule::DecimalOutOfRange,
        Rule::OrgNotAllowed,
        Rule::TenantMismatch,
        Rule::DedupeKeyInvalid,
        Rule::DuplicateDedupeKey,
        Rule::IdempotencyKeyInvalid,
        Rule::DuplicateIdempotencyKey,
        Rule::TooManyViolations,
    ];

    /// The stable code, as serialized: `fractional_number`, `org_not_allowed`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::EventTypeFormat => "event_type_format",
            Rule::EntityTypeMismatch => "entity_type_mismatch",
            Rule::UndeclaredEventType => "undeclared_event_type",
            Rule::EntityIdInvalid => "entity_id_invalid",
            Rule::PayloadInvalidJson => "payload_invalid_json",
            Rule::PayloadNotObject => "payload_not_object",
            Rule::DuplicateKey => "duplicate_key",
            Rule::TooDeep => "too_deep",
            Rule::FractionalNumber => "fractional_number",
            Rule::UnsafeInteger => "unsafe_integer",
            Rule::DecimalNotString => "decimal_not_string",
            Rule::DecimalNotCanonical => "decimal_not_canonical",
            Rule::DecimalOutOfRange => "decimal_out_of_range",
            Rule::OrgNotAllowed => "org_not_allowed",
            Rule::TenantMismatch => "tenant_mismatch",
            Rule::DedupeKeyInvalid => "dedupe_key_invalid",
            Rule::DuplicateDedupeKey => "duplicate_dedupe_key",
            Rule::IdempotencyKeyInvalid => "idempotency_key_invalid",
            Rule::DuplicateIdempotencyKey => "duplicate_idempotency_key",
            Rule::TooManyViolations => "too_many_violations",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks every event of one invocation against the contracts. An empty result means the
/// invocation is accepted; anything else refuses all of it.
///
/// Violations come in event order, and within an event in field order (`event_type`,
/// `entity_type`, `entity_id`, `org_id`, `payload` in document order, `dedupe_key`); the
/// result is a function of the input alone.
pub fn check_events(
    events: &[EmittedEvent],
    declaration: &Declaration,
    scope: &Scope,
) -> Vec<Violation> {
    let mut report = Report::default();
    // First event index of each dedupe key, and of each idempotency key.
    let mut keys = Keys::default();
    for (index, event) in events.iter().enumerate() {
        if report.is_full() {
            break;
        }
        check_event(index, event, declaration, scope, &mut keys, &mut report);
    }
    report.violations
}

/// The keys seen so far in an invocation: each key's first event.
#[derive(Default)]
struct Keys<'e> {
    dedupe: HashMap<&'e str, usize>,
    idempotency: HashMap<&'e str, usize>,
}

fn check_event<'e>(
    index: usize,
    event: &'e EmittedEvent,
    declaration: &Declaration,
    scope: &Scope,
    keys: &mut Keys<'e>,
    report: &mut Report,
) {
    // An invalid or undeclared event type has no decimal fields: the payload is still checked
    // against every other rule, so the developer sees all problems at once.
    let mut patterns: &[declaration::Pattern] = &[];
    match envelope::event_type_problem(&event.event_type) {
        Some(why) => report.add(
            index,
            "/event_type",
            Rule::EventTypeFormat,
            format!(
                "event type {why}; expected `entity.action` in lower snake case, e.g. `deal.won`"
            ),
            Some(quote_str(&event.event_type)),
        ),
        None => {
            match declaration.patterns(&event.event_type) {
                Some(declared) => patterns = declared,
                None => report.add(
                    index,
                    "/event_type",
                    Rule::UndeclaredEventType,
                    "event type is not among those the adapter declares in `describe`".to_owned(),
                    Some(quote_str(&event.event_type)),
                ),
            }
            let (entity, _) = event
                .event_type
                .split_once('.')
                .expect("a valid event type has a dot");
            if event.entity_type != entity {
                report.add(
                    index,
                    "/entity_type",
                    Rule::EntityTypeMismatch,
                    format!(
                        "entity type must be {entity:?}, the part of the event type before the dot"
                    ),
                    Some(quote_str(&event.entity_type)),
                );
            }
        }
    }

    if let Some(why) = envelope::identifier_problem(&event.entity_id, MAX_ENTITY_ID_LEN) {
        report.add(
            index,
            "/entity_id",
            Rule::EntityIdInvalid,
            format!("entity id {why}"),
            Some(quote_str(&event.entity_id)),
        );
    }

    if !scope.allows_org(event.org_id.as_deref()) {
        let (message, value) = match &event.org_id {
            Some(org) => (
                if scope.platform_level {
                    "org id must be absent (platform level) or one of the connection's allowed org ids"
                } else {
                    "org id must be one of the connection's allowed org ids"
                },
                quote_str(org),
            ),
            None => (
                "org id is absent (platform level, seen by every org of the tenant), but this \
                 connection belongs to an org: name one of its allowed org ids",
                "null".to_owned(),
            ),
        };
        report.add(
            index,
            "/org_id",
            Rule::OrgNotAllowed,
            message.to_owned(),
            Some(value),
        );
    }

    payload::check_payload(index, &event.payload, patterns, scope, report);

    if let Some(key) = &event.dedupe_key {
        if let Some(why) = envelope::identifier_problem(key, MAX_DEDUPE_KEY_LEN) {
            report.add(
                index,
                "/dedupe_key",
                Rule::DedupeKeyInvalid,
                format!("dedupe key {why}"),
                Some(quote_str(key)),
            );
        } else if let Some(&first) = keys.dedupe.get(key.as_str()) {
            report.add(
                index,
                "/dedupe_key",
                Rule::DuplicateDedupeKey,
                format!(
                    "event {first} has the same dedupe key; both would get the same event id and one would be lost"
                ),
                Some(quote_str(key)),
            );
        } else {
            keys.dedupe.insert(key, index);
        }
    }

    if let Some(key) = &event.idempotency_key {
        if let Some(why) = envelope::identifier_problem(key, MAX_IDEMPOTENCY_KEY_LEN) {
            report.add(
                index,
                "/idempotency_key",
                Rule::IdempotencyKeyInvalid,
                format!("idempotency key {why}"),
                Some(quote_str(key)),
            );
        } else if let Some(&first) = keys.idempotency.get(key.as_str()) {
            report.add(
                index,
                "/idempotency_key",
                Rule::DuplicateIdempotencyKey,
                format!(
                    "event {first} has the same idempotency key: both name one fact, and the second would be dropped as a repeat"
                ),
                Some(quote_str(key)),
            );
        } else {
            keys.idempotency.insert(key, index);
        }
    }
}

/// Collects violations, up to [`MAX_VIOLATIONS`].
#[derive(Debug, Default)]
struct Report {
    violations: Vec<Violation>,
    full: bool,
}

impl Report {
    /// Whether the cap was reached: callers stop checking.
    fn is_full(&self) -> bool {
        self.full
    }

    fn add(
        &mut self,
        event_index: usize,
        pointer: &str,
        rule: Rule,
        message: String,
        value: Option<String>,
    ) {
        if self.full {
            return;
        }
        if self.violations.len() == MAX_VIOLATIONS {
            self.full = true;
            self.violations.push(Violation {
                event_index,
                pointer: String::new(),
                rule: Rule::TooManyViolations,
                message: format!(
                    "more than {MAX_VIOLATIONS} violations; the rest are not reported"
                ),
                value: None,
            });
            return;
        }
        self.violations.push(Violation {
            event_index,
            pointer: shorten_pointer(pointer),
            rule,
            message,
            value,
        });
    }
}

/// Appends `/key` to a JSON pointer, escaping `~` and `/` as RFC 6901 requires.
fn push_pointer_segment(pointer: &mut String, key: &str) {
    pointer.push('/');
    if !key.contains(['~', '/']) {
        pointer.push_str(key);
        return;
    }
    for c in key.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// Longest JSON pointer kept in a violation, in bytes: a hostile payload's keys can be
/// megabytes long.
const MAX_POINTER_LEN: usize = 512;

/// `pointer` cut after [`MAX_POINTER_LEN`] bytes (on a character boundary), marked.
fn shorten_pointer(pointer: &str) -> String {
    if pointer.len() <= MAX_POINTER_LEN {
        return pointer.to_owned();
    }
    let mut cut = MAX_POINTER_LEN;
    while !pointer.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[truncated, {} bytes]", &pointer[..cut], pointer.len())
}

/// A string as JSON text (quoted, escaped), shortened like [`quote_raw`].
fn quote_str(text: &str) -> String {
    shorten(&serde_json::to_string(text).expect("a string always serializes"))
}

/// JSON source text quoted as found, shortened when long.
fn quote_raw(text: &str) -> String {
    shorten(text)
}

/// `text` cut after [`MAX_QUOTED_CHARS`] characters, with a mark saying so and how long it was.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…[truncated, {} bytes]", &text[..cut], text.len()),
    }
}

#[cfg(test)]
mod tests;
