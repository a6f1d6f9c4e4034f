//! What an adapter version declares it emits: its event types and, for each, the payload fields
//! that hold decimals and those that hold personal data. Built once per adapter version from
//! `describe`, then shared by every invocation of that version.

use std::collections::BTreeMap;

use thiserror::Error;

use super::fields::Fields;
use super::{envelope, shorten};

/// At most this many event types per adapter: `describe` is adapter output, and a declaration
/// is kept in memory for as long as its version is in use.
pub const MAX_EVENT_TYPES: usize = 1024;
/// At most this many decimal field patterns per event type: every payload node is matched
/// against the live patterns, so their number multiplies the cost of a check.
pub const MAX_DECIMAL_FIELDS: usize = 128;
/// At most this many bytes per decimal field pattern.
pub const MAX_DECIMAL_FIELD_LEN: usize = 1024;
/// At most this many personal-data field patterns per event type (the same bound as decimal
/// fields, for the same reason).
pub const MAX_PERSONAL_FIELDS: usize = MAX_DECIMAL_FIELDS;

/// Why a declaration was refused. Each variant names the offending entry (shortened when
/// very long, since it comes from the adapter).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DeclarationError {
    /// An event type name is not `entity.action` in lower snake case.
    #[error("event type {name:?} {reason}")]
    InvalidEventType {
        /// The name as declared (shortened when very long).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same event type is declared twice (its decimal fields would be ambiguous).
    #[error("event type {name:?} is declared more than once")]
    DuplicateEventType {
        /// The repeated name.
        name: String,
    },
    /// A decimal field pattern is not a JSON pointer starting with `/`.
    #[error("decimal field {pattern:?} of event type {event_type:?} {reason}")]
    InvalidDecimalField {
        /// The event type declaring it.
        event_type: String,
        /// The pattern as declared (shortened when very long).
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More event types than [`MAX_EVENT_TYPES`].
    #[error("{count} event types declared, at most {max} allowed")]
    TooManyEventTypes {
        /// How many were declared.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A personal-data field pattern is not a JSON pointer starting with `/`.
    #[error("personal-data field {pattern:?} of event type {event_type:?} {reason}")]
    InvalidPersonalField {
        /// The event type declaring it.
        event_type: String,
        /// The pattern as declared (shortened when very long).
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More personal-data fields for one event type than [`MAX_PERSONAL_FIELDS`].
    #[error(
        "event type {event_type:?} declares {count} personal-data fields, at most {max} allowed"
    )]
    TooManyPersonalFields {
        /// The event type.
        event_type: String,
        /// How many it declares.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More decimal fields for one event type than [`MAX_DECIMAL_FIELDS`].
    #[error("event type {event_type:?} declares {count} decimal fields, at most {max} allowed")]
    TooManyDecimalFields {
        /// The event type.
        event_type: String,
        /// How many it declares.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// One event type as `describe` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventTypeFields {
    /// `entity.action`.
    pub name: String,
    /// JSON pointers (with `*`) of the payload fields that hold decimals.
    pub decimal_fields: Vec<String>,
    /// JSON pointers (with `*`) of the payload fields that hold personal data.
    pub personal_fields: Vec<String>,
}

/// The event types an adapter version may emit, each with its decimal field patterns and its
/// personal-data field patterns.
///
/// A pattern is a JSON pointer relative to the payload (`/amount`, `/lines/0/price`); a segment
/// `*` matches any array index or object key (`/lines/*/price`). A consequence: an object key
/// that is literally `*` can only be reached through the wildcard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declaration {
    /// Sorted, so that listings are deterministic.
    event_types: BTreeMap<String, Declared>,
}

/// What one event type declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Declared {
    decimals: Vec<Pattern>,
    personal: Fields,
}

impl Declaration {
    /// Validates and builds a declaration from `(event type, decimal field patterns)` pairs,
    /// with no personal-data fields: see [`Declaration::from_types`].
    pub fn new(
        event_types: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> Result<Self, DeclarationError> {
        Self::from_types(
            event_types
                .into_iter()
                .map(|(name, decimal_fields)| EventTypeFields {
                    name,
                    decimal_fields,
                    personal_fields: Vec::new(),
                }),
        )
    }

    /// Validates and builds a declaration from the event types `describe` lists. Event types
    /// must follow the event type grammar and be unique; patterns must be JSON pointers
    /// starting with `/`. A pattern listed twice for one event type is kept once.
    pub fn from_types(
        event_types: impl IntoIterator<Item = EventTypeFields>,
    ) -> Result<Self, DeclarationError> {
        let mut map = BTreeMap::new();
        let mut entries = event_types.into_iter();
        while let Some(entry) = entries.next() {
            let EventTypeFields {
                name,
                decimal_fields: fields,
                personal_fields,
            } = entry;
            if map.len() == MAX_EVENT_TYPES {
                return Err(DeclarationError::TooManyEventTypes {
                    count: MAX_EVENT_TYPES + 1 + entries.count(),
                    max: MAX_EVENT_TYPES,
                });
            }
            if let Some(reason) = envelope::event_type_problem(&name) {
                return Err(DeclarationError::InvalidEventType {
                    name: shorten(&name),
                    reason,
                });
            }
            if fields.len() > MAX_DECIMAL_FIELDS {
                return Err(DeclarationError::TooManyDecimalFields {
                    event_type: name,
                    count: fields.len(),
                    max: MAX_DECIMAL_FIELDS,
                });
            }
            if personal_fields.len() > MAX_PERSONAL_FIELDS {
                return Err(DeclarationError::TooManyPersonalFields {
                    event_type: name,
                    count: personal_fields.len(),
                    max: MAX_PERSONAL_FIELDS,
                });
            }
            let mut patterns: Vec<Pattern> = Vec::with_capacity(fields.len());
            for field in fields {
                let pattern = Pattern::parse(&field).map_err(|reason| {
                    DeclarationError::InvalidDecimalField {
                        event_type: name.clone(),
                        pattern: shorten(&field),
                        reason,
                    }
                })?;
                if !patterns.contains(&pattern) {
                    patterns.push(pattern);
                }
            }
            let personal = Fields::parse(&personal_fields).map_err(|(field, reason)| {
                DeclarationError::InvalidPersonalField {
                    event_type: name.clone(),
                    pattern: shorten(field),
                    reason,
                }
            })?;
            if map.contains_key(&name) {
                return Err(DeclarationError::DuplicateEventType { name });
            }
            map.insert(
                name,
                Declared {
                    decimals: patterns,
                    personal,
                },
            );
        }
        Ok(Self { event_types: map })
    }

    /// The declared event types, in lexicographic order.
    pub fn event_types(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.event_types.keys().map(String::as_str)
    }

    /// Whether `event_type` is declared.
    pub fn contains(&self, event_type: &str) -> bool {
        self.event_types.contains_key(event_type)
    }

    /// The decimal field patterns of `event_type`, as declared (without repeats), or `None`
    /// when the event type is not declared.
    pub fn decimal_fields(&self, event_type: &str) -> Option<impl ExactSizeIterator<Item = &str>> {
        self.event_types
            .get(event_type)
            .map(|declared| declared.decimals.iter().map(|p| p.text.as_str()))
    }

    /// The personal-data fields of `event_type`, or `None` when it is not declared.
    pub fn personal_fields(&self, event_type: &str) -> Option<&Fields> {
        self.event_types
            .get(event_type)
            .map(|declared| &declared.personal)
    }

    /// Whether any event type declares personal-data fields.
    pub fn has_personal_fields(&self) -> bool {
        self.event_types
            .values()
            .any(|declared| !declared.personal.is_empty())
    }

    /// The compiled patterns of `event_type`, or `None` when it is not declared.
    pub(super) fn patterns(&self, event_type: &str) -> Option<&[Pattern]> {
        self.event_types
            .get(event_type)
            .map(|declared| declared.decimals.as_slice())
    }
}

/// A compiled decimal field pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    /// `*`: any array index or object key.
    Any,
    /// A literal (unescaped) object key, which is also an array index when it is one in
    /// RFC 6901 terms (`0` or digits without a leading zero).
    Name { key: String, index: Option<usize> },
}

impl Segment {
    /// Whether this segment selects the member `key` of an object.
    pub(super) fn matches_key(&self, key: &str) -> bool {
        match self {
            Segment::Any => true,
            Segment::Name { key: name, .. } => name == key,
        }
    }

    /// Whether this segment selects element `index` of an array.
    pub(super) fn matches_index(&self, index: usize) -> bool {
        match self {
            Segment::Any => true,
            Segment::Name { index: own, .. } => *own == Some(index),
        }
    }
}

impl Pattern {
    /// Parses an RFC 6901 pointer with `*` wildcards, or says why it is not one.
    pub(super) fn parse(text: &str) -> Result<Self, &'static str> {
        if text.len() > MAX_DECIMAL_FIELD_LEN {
            return Err("is longer than 1024 bytes");
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err("is not a JSON pointer starting with '/'");
        };
        let segments: Vec<Segment> = rest
            .split('/')
            .map(|raw| {
                if raw == "*" {
                    return Ok(Segment::Any);
                }
                let key = unescape_segment(raw)?;
                let index = array_index(&key);
                Ok(Segment::Name { key, index })
            })
            .collect::<Result<_, &'static str>>()?;
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The segments, outermost first.
    pub(super) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The pattern as declared.
    pub(super) fn text(&self) -> &str {
        &self.text
    }
}

/// Undoes RFC 6901 escaping: `~1` is `/`, `~0` is `~`, any other `~` is an error.
fn unescape_segment(raw: &str) -> Result<String, &'static str> {
    if !raw.contains('~') {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => return Err("has a '~' not followed by '0' or '1'"),
        }
    }
    Ok(out)
}

/// The array index a segment denotes under RFC 6901 (`0`, or digits without a leading zero).
fn array_index(segment: &str) -> Option<usize> {
    let canonical = segment == "0"
        || (!segment.starts_with('0')
            && !segment.is_empty()
            && segment.bytes().all(|b| b.is_ascii_digit()));
    if canonical {
        segment.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(entries: &[(&str, &[&str])]) -> Result<Declaration, DeclarationError> {
        Declaration::new(entries.iter().map(|(name, fields)| {
            (
                (*name).to_owned(),
                fields.iter().map(|f| (*f).to_owned()).collect(),
            )
        }))
    }

    #[test]
    fn a_valid_declaration_lists_its_types_in_order() {
        let d = decl(&[
            ("deal.won", &["/amount", "/lines/*/price"]),
            ("contact.created", &[]),
        ])
        .unwrap();
        assert_eq!(
            d.event_types().collect::<Vec<_>>(),
            ["contact.created", "deal.won"]
        );
        assert!(d.contains("deal.won"));
        assert!(!d.contains("deal.lost"));
        assert_eq!(
            d.decimal_fields("deal.won").unwrap().collect::<Vec<_>>(),
            ["/amount", "/lines/*/price"]
        );
        assert_eq!(d.decimal_fields("contact.created").unwrap().count(), 0);
        assert!(d.decimal_fields("deal.lost").is_none());
    }

    #[test]
    fn personal_fields_are_declared_per_event_type_and_checked() {
        let typed = |name: &str, personal: &[&str]| EventTypeFields {
            name: name.into(),
            decimal_fields: vec!["/amount".into()],
            personal_fields: personal.iter().map(|p| (*p).to_owned()).collect(),
        };
        let d = Declaration::from_types([
            typed("contact.created", &["/email", "/phones/*", "/email"]),
            typed("deal.won", &[]),
        ])
        .unwrap();
        assert!(d.has_personal_fields());
        let personal = d.personal_fields("contact.created").unwrap();
        assert_eq!(
            personal.patterns().collect::<Vec<_>>(),
            ["/email", "/phones/*"]
        );
        assert!(d.personal_fields("deal.won").unwrap().is_empty());
        assert!(d.personal_fields("deal.lost").is_none());
        assert_eq!(
            d.decimal_fields("contact.created")
                .unwrap()
                .collect::<Vec<_>>(),
            ["/amount"]
        );
        assert!(
            !decl(&[("deal.won", &["/amount"])])
                .unwrap()
                .has_personal_fields()
        );

        let err = Declaration::from_types([typed("contact.created", &["email"])]).unwrap_err();
        assert!(
            matches!(&err, DeclarationError::InvalidPersonalField { event_type, pattern, .. }
                if event_type == "contact.created" && pattern == "email"),
            "{err:?}"
        );
        let many: Vec<String> = (0..=MAX_PERSONAL_FIELDS)
            .map(|i| format!("/f{i}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(
            Declaration::from_types([typed("contact.created", &many)]),
            Err(DeclarationError::TooManyPersonalFields { count: 129, .. })
        ));
    }

    #[test]
    fn an_empty_declaration_is_valid() {
        let d = decl(&[]).unwrap();
        assert_eq!(d.event_types().count(), 0);
    }

    #[test]
    fn invalid_event_type_names_the_entry() {
        let err = decl(&[("deal.won", &[]), ("Deal.Lost", &[])]).unwrap_err();
        assert!(
            matches!(&err, DeclarationError::InvalidEventType { name, .. } if name == "Deal.Lost")
        );
        assert!(err.to_string().contains("\"Deal.Lost\""), "{err}");
        assert!(matches!(
            decl(&[("deal", &[])]),
            Err(DeclarationError::InvalidEventType { .. })
        ));
    }

    #[test]
    fn a_huge_invalid_name_is_shortened_in_the_error() {
        let name = "x".repeat(100_000);
        let err = Declaration::new([(name, vec![])]).unwrap_err();
        assert!(err.to_string().len() < 400, "{}", err.to_string().len());
    }

    #[test]
    fn duplicate_event_types_are_refused() {
        let err = decl(&[("deal.won", &["/a"]), ("deal.won", &["/b"])]).unwrap_err();
        assert_eq!(
            err,
            DeclarationError::DuplicateEventType {
                name: "deal.won".into()
            }
        );
    }

    #[test]
    fn invalid_patterns_name_the_event_type_and_the_pattern() {
        for bad in ["", "amount", "*/amount", "/a~2b", "/a~", "/~x"] {
            let err = decl(&[("deal.won", &["/ok", bad])]).unwrap_err();
            match &err {
                DeclarationError::InvalidDecimalField {
                    event_type,
                    pattern,
                    ..
                } => {
                    assert_eq!(event_type, "deal.won");
                    assert_eq!(pattern, bad);
                }
                other => panic!("{bad:?}: unexpected {other:?}"),
            }
        }
        let long = format!("/{}", "a".repeat(MAX_DECIMAL_FIELD_LEN));
        assert!(matches!(
            decl(&[("deal.won", &[long.as_str()])]),
            Err(DeclarationError::InvalidDecimalField { .. })
        ));
    }

    #[test]
    fn patterns_parse_escapes_wildcards_and_indices() {
        let p = Pattern::parse("/a~1b/*/c~0d/0/01//-").unwrap();
        let name = |key: &str, index| Segment::Name {
            key: key.to_owned(),
            index,
        };
        assert_eq!(
            p.segments(),
            [
                name("a/b", None),
                Segment::Any,
                name("c~d", None),
                name("0", Some(0)),
                name("01", None),
                name("", None),
                name("-", None),
            ]
        );
        // `~01` is `~1` unescaped once, not `/`.
        assert_eq!(
            Pattern::parse("/~01").unwrap().segments(),
            [name("~1", None)]
        );
        assert_eq!(Pattern::parse("/").unwrap().segments(), [name("", None)]);
    }

    #[test]
    fn segments_match_keys_and_indices() {
        let any = Segment::Any;
        assert!(any.matches_key("x") && any.matches_index(7));
        let zero = Pattern::parse("/0").unwrap().segments()[0].clone();
        assert!(zero.matches_key("0") && zero.matches_index(0) && !zero.matches_index(1));
        let padded = Pattern::parse("/00").unwrap().segments()[0].clone();
        assert!(padded.matches_key("00") && !padded.matches_index(0));
    }

    #[test]
    fn repeated_patterns_are_kept_once() {
        let d = decl(&[("deal.won", &["/a", "/a", "/b"])]).unwrap();
        assert_eq!(
            d.decimal_fields("deal.won").unwrap().collect::<Vec<_>>(),
            ["/a", "/b"]
        );
    }

    #[test]
    fn counts_are_bounded() {
        let many = (0..=MAX_EVENT_TYPES).map(|i| (format!("e{i}.x"), vec![]));
        assert!(matches!(
            Declaration::new(many),
            Err(DeclarationError::TooManyEventTypes {
                count: 1025,
                max: 1024
            })
        ));
        let at_limit = (0..MAX_EVENT_TYPES).map(|i| (format!("e{i}.x"), vec![]));
        assert_eq!(
            Declaration::new(at_limit).unwrap().event_types().len(),
            MAX_EVENT_TYPES
        );

        let fields = (0..=MAX_DECIMAL_FIELDS).map(|i| format!("/f{i}")).collect();
        assert!(matches!(
            Declaration::new([("deal.won".to_owned(), fields)]),
            Err(DeclarationError::TooManyDecimalFields { count: 129, .. })
        ));
    }
}
