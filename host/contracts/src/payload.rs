//! The payload walk: numbers, decimal fields, duplicate keys, depth and scope keys.
//!
//! The host builds serde_json without `arbitrary_precision` (feature unification would change
//! JSON handling everywhere), so a parsed `Value` would already have lost what we must judge:
//! `1.10` would read as `1.1` and a 20-digit integer as a rounded double. Instead the payload is
//! walked as [`RawValue`]s: an object is read as its (key, raw value) pairs in source order (which
//! also exposes duplicate keys, that a map would silently merge), an array as its raw elements,
//! and a leaf is classified by its first byte and judged on its exact source text.
//!
//! Cost: a container's text is scanned once by its parent (to delimit it) and once more when it
//! is opened, so a byte inside `d` nested containers is scanned `d` times. Payloads are shallow
//! in practice (a typical 750-byte event checks in about 3.5 µs in a release build) and [`MAX_DEPTH`] bounds the worst
//! case.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::declaration::{Pattern, Segment};
use super::keys::{ScopeKey, scope_key};
use super::numbers::{self, DecimalProblem, NumberClass};
use super::{MAX_DEPTH, Report, Rule, Scope, push_pointer_segment, quote_raw, quote_str};

/// What JSON counts as whitespace (RFC 8259), which is less than `char::is_whitespace`.
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];
/// Up to this many members, duplicate keys are found by scanning the previous keys: cheaper
/// than hashing for the small objects payloads are made of.
const LINEAR_DUPLICATE_SCAN_MAX: usize = 16;

/// Checks one event's payload text, reporting at pointers under `/payload`.
pub(super) fn check_payload(
    event_index: usize,
    payload: &str,
    patterns: &[Pattern],
    scope: &Scope,
    report: &mut Report,
) {
    let mut walker = Walker {
        event_index,
        scope,
        report,
        pointer: String::from("/payload"),
    };
    // The usual case, an object, is read as members straight away: validating the whole text
    // as a raw value first would scan every byte one more time.
    if payload.trim_start_matches(JSON_WHITESPACE).starts_with('{') {
        match serde_json::from_str::<Members<'_>>(payload) {
            Ok(Members(members)) => {
                let alive: Vec<&[Segment]> = patterns.iter().map(Pattern::segments).collect();
                walker.members(&members, 1, &alive);
            }
            Err(e) => walker.add(
                Rule::PayloadInvalidJson,
                format!("payload is not valid JSON: {e}"),
                None,
            ),
        }
        return;
    }
    match serde_json::from_str::<&RawValue>(payload) {
        Ok(root) => walker.add(
            Rule::PayloadNotObject,
            format!(
                "payload must be a JSON object, not {}",
                kind_name(root.get())
            ),
            Some(quote_raw(root.get())),
        ),
        Err(e) => walker.add(
            Rule::PayloadInvalidJson,
            format!("payload is not valid JSON: {e}"),
            None,
        ),
    }
}

/// Walks one payload, keeping the JSON pointer of the current value.
struct Walker<'r> {
    event_index: usize,
    scope: &'r Scope,
    report: &'r mut Report,
    /// The current value's pointer, rooted at the event (`/payload/lines/0`).
    pointer: String,
}

impl Walker<'_> {
    fn add(&mut self, rule: Rule, message: String, value: Option<String>) {
        self.report
            .add(self.event_index, &self.pointer, rule, message, value);
    }

    /// Checks the value at the current pointer. `depth` is its container nesting level (the
    /// payload object is 1). `alive` holds, for each decimal pattern whose leading segments
    /// match the path so far, its remaining segments: an empty remainder means this value is a
    /// declared decimal field.
    fn value(&mut self, raw: &RawValue, depth: usize, alive: &[&[Segment]]) {
        if self.report.is_full() {
            return;
        }
        let text = raw.get();
        let is_decimal_field = alive.iter().any(|rest| rest.is_empty());
        // A raw value is never empty and starts at its first significant byte.
        match text.as_bytes()[0] {
            b'"' => self.string(text, is_decimal_field),
            b'n' => {}
            first => {
                if is_decimal_field {
                    self.add(
                        Rule::DecimalNotString,
                        format!(
                            "declared decimal field holds {}; it must be a string such as \"12.50\" (or null)",
                            kind_name(text)
                        ),
                        Some(quote_raw(text)),
                    );
                }
                match first {
                    b'{' => self.object(text, depth, alive),
                    b'[' => self.array(text, depth, alive),
                    b't' | b'f' => {}
                    _ => self.number(text),
                }
            }
        }
    }

    fn object(&mut self, text: &str, depth: usize, alive: &[&[Segment]]) {
        if !self.within_depth(text, depth) {
            return;
        }
        match serde_json::from_str::<Members<'_>>(text) {
            Ok(Members(members)) => self.members(&members, depth, alive),
            Err(e) => self.invalid_json(&e),
        }
    }

    /// Checks the members of the object at the current pointer, at nesting level `depth`.
    fn members(
        &mut self,
        members: &[(Cow<'_, str>, &RawValue)],
        depth: usize,
        alive: &[&[Segment]],
    ) {
        let mut seen: Option<HashSet<&str>> =
            (members.len() > LINEAR_DUPLICATE_SCAN_MAX).then(HashSet::new);
        let base = self.pointer.len();
        for (i, (key, value)) in members.iter().enumerate() {
            push_pointer_segment(&mut self.pointer, key);
            let duplicate = match &mut seen {
                Some(seen) => !seen.insert(key),
                None => members[..i].iter().any(|(earlier, _)| earlier == key),
            };
            if duplicate {
                self.add(
                    Rule::DuplicateKey,
                    "key appears more than once in its object; consumers may keep either value"
                        .to_owned(),
                    Some(quote_str(key)),
                );
            }
            match scope_key(key) {
                Some(ScopeKey::Tenant) => self.tenant_key(key, value.get()),
                Some(ScopeKey::Org) => self.org_key(key, value.get()),
                None => {}
            }
            let child_alive = advance(alive, |segment| segment.matches_key(key));
            self.value(value, depth + 1, &child_alive);
            self.pointer.truncate(base);
        }
    }

    fn array(&mut self, text: &str, depth: usize, alive: &[&[Segment]]) {
        if !self.within_depth(text, depth) {
            return;
        }
        let elements = match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(elements) => elements,
            Err(e) => return self.invalid_json(&e),
        };
        let base = self.pointer.len();
        for (index, element) in elements.into_iter().enumerate() {
            use fmt::Write as _;
            // Writing to a String cannot fail.
            let _ = write!(self.pointer, "/{index}");
            let child_alive = advance(alive, |segment| segment.matches_index(index));
            self.value(element, depth + 1, &child_alive);
            self.pointer.truncate(base);
        }
    }

    /// Reports a container nested deeper than [`MAX_DEPTH`], whose content is then skipped.
    fn within_depth(&mut self, text: &str, depth: usize) -> bool {
        if depth <= MAX_DEPTH {
            return true;
        }
        self.add(
            Rule::TooDeep,
            format!("payload is nested more than {MAX_DEPTH} levels deep"),
            Some(quote_raw(text)),
        );
        false
    }

    fn number(&mut self, text: &str) {
        match numbers::classify_number(text) {
            NumberClass::SafeInteger => {}
            NumberClass::Fractional => self.add(
                Rule::FractionalNumber,
                "number has a fraction or an exponent; JSON numbers are doubles and lose money: \
                 send a decimal string such as \"12.50\" in a declared decimal field"
                    .to_owned(),
                Some(quote_raw(text)),
            ),
            NumberClass::UnsafeInteger => self.add(
                Rule::UnsafeInteger,
                "integer is beyond +/-(2^53 - 1), where doubles round; send it as a string"
                    .to_owned(),
                Some(quote_raw(text)),
            ),
        }
    }

    fn string(&mut self, text: &str, is_decimal_field: bool) {
        // Escapes are validated only where there are any: the raw parse accepted the string's
        // syntax but not its content (a lone surrogate such as "\ud800" is not text, and
        // strict consumers refuse it).
        if !is_decimal_field && !text.contains('\\') {
            return;
        }
        let decoded = match decode_string(text) {
            Ok(decoded) => decoded,
            Err(e) => return self.invalid_json(&e),
        };
        if !is_decimal_field {
            return;
        }
        match numbers::check_decimal(&decoded) {
            Ok(()) => {}
            Err(DecimalProblem::NotCanonical(why)) => self.add(
                Rule::DecimalNotCanonical,
                format!(
                    "decimal string {why}; expected canonical form -?digits(.digits)? such as \"12.50\""
                ),
                Some(quote_raw(text)),
            ),
            Err(DecimalProblem::OutOfRange(why)) => self.add(
                Rule::DecimalOutOfRange,
                format!("decimal is beyond what the platform's decimal type holds ({why})"),
                Some(quote_raw(text)),
            ),
        }
    }

    /// A tenant key (`tenant_id`, `TenantId`, ... see [`scope_key`]) anywhere must name the
    /// connection's tenant.
    fn tenant_key(&mut self, key: &str, text: &str) {
        let matches = if text.starts_with('"') {
            match decode_string(text) {
                Ok(tenant) => tenant == self.scope.tenant_id,
                // Reported as invalid JSON when the value itself is visited.
                Err(_) => return,
            }
        } else {
            false
        };
        if !matches {
            self.add(
                Rule::TenantMismatch,
                format!(
                    "{} must be the connection's tenant id (a string); an adapter cannot emit for another tenant",
                    quote_str(key)
                ),
                Some(quote_raw(text)),
            );
        }
    }

    /// An org key (`org_id`, `OrgId`, ... see [`scope_key`]) anywhere must be one of the
    /// connection's orgs, or null from a platform-level connection.
    fn org_key(&mut self, key: &str, text: &str) {
        let allowed = match text.as_bytes()[0] {
            b'n' => self.scope.allows_org(None),
            b'"' => match decode_string(text) {
                Ok(org) => self.scope.allows_org(Some(&org)),
                // Reported as invalid JSON when the value itself is visited.
                Err(_) => return,
            },
            _ => false,
        };
        if !allowed {
            self.add(
                Rule::OrgNotAllowed,
                if self.scope.platform_level {
                    format!(
                        "{} must be null or one of the connection's allowed org ids",
                        quote_str(key)
                    )
                } else {
                    format!(
                        "{} must be one of the connection's allowed org ids (the connection \
                         belongs to an org: null would be platform level)",
                        quote_str(key)
                    )
                },
                Some(quote_raw(text)),
            );
        }
    }

    fn invalid_json(&mut self, error: &serde_json::Error) {
        // The line and column serde_json adds are relative to this fragment, not to the
        // payload: misleading, so they are cut; the pointer says where.
        let message = error.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(head, _)| head);
        self.add(
            Rule::PayloadInvalidJson,
            format!("payload is not valid JSON here: {message}"),
            None,
        );
    }
}

/// The remainders of the `alive` patterns whose next segment selects the child.
fn advance<'s>(alive: &[&'s [Segment]], selects: impl Fn(&Segment) -> bool) -> Vec<&'s [Segment]> {
    alive
        .iter()
        .filter_map(|rest| match rest.split_first() {
            Some((segment, tail)) if selects(segment) => Some(tail),
            _ => None,
        })
        .collect()
}

/// The content of a JSON string literal already accepted by the raw parse, borrowed when it
/// has no escapes.
fn decode_string(text: &str) -> Result<Cow<'_, str>, serde_json::Error> {
    if text.contains('\\') {
        serde_json::from_str::<String>(text).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(&text[1..text.len() - 1]))
    }
}

/// "an object", "a number", ... for messages, from a raw value's first byte.
fn kind_name(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// An object's members in source order: keys decoded (borrowed when unescaped), values raw.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(Key(key)) = map.next_key()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

/// An object key, borrowed from the payload unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }

            fn visit_string<E>(self, key: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(key)))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}
