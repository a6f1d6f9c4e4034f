//! The shape of a source's payloads, learned one payload at a time, and what a new payload
//! changes in it.
//!
//! A shape counts, for each JSON pointer of the payloads seen (array elements under `*`), in
//! how many payloads it was present, with which JSON types, and how many of its strings were
//! decimals. Once [`WARM_UP`] payloads are learned, a payload that differs is a [`Change`]:
//!
//! - `appeared`: a pointer never seen before;
//! - `disappeared`: a pointer present in every payload so far is absent (named once: the
//!   outermost such pointer, not each field under it);
//! - `type_changed`: a value of a type the pointer never had (`null` is never a change: CRMs
//!   send it for "empty");
//! - `decimal_as_number`: a pointer whose every value was a decimal string now holds a number,
//!   which is how money starts to lose precision.
//!
//! The payload is learned after it is judged, so a change is reported once: the next payload
//! like it matches the shape. A shape holds at most [`MAX_FIELDS`] pointers and walks
//! [`MAX_DEPTH`] levels, whatever a CRM (or an attacker posting to a webhook URL) sends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Payloads learned before changes are reported.
pub const WARM_UP: u64 = 20;
/// The most pointers a shape keeps; beyond them new pointers are neither learned nor reported.
pub const MAX_FIELDS: usize = 512;
/// The deepest level walked (the root is level 0).
pub const MAX_DEPTH: usize = 12;

/// A JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonType {
    /// `null`.
    Null,
    /// `true` or `false`.
    Boolean,
    /// A number.
    Number,
    /// A string.
    String,
    /// An object.
    Object,
    /// An array.
    Array,
}

impl JsonType {
    fn of(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(_) => Self::Boolean,
            Value::Number(_) => Self::Number,
            Value::String(_) => Self::String,
            Value::Object(_) => Self::Object,
            Value::Array(_) => Self::Array,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Boolean => "boolean",
            Self::Number => "number",
            Self::String => "string",
            Self::Object => "object",
            Self::Array => "array",
        }
    }
}

/// What a shape knows of one pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Payloads it was present in.
    pub present: u64,
    /// Payloads it held each type in.
    pub types: BTreeMap<JsonType, u64>,
    /// Payloads in which its strings were all decimals (`"1234.50"`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub decimal_strings: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The learned shape of a source's payloads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Payloads learned.
    pub samples: u64,
    /// By JSON pointer.
    pub fields: BTreeMap<String, Field>,
}

/// How a pointer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A pointer never seen before.
    Appeared,
    /// A pointer present in every payload so far is absent.
    Disappeared,
    /// A value of a type the pointer never had.
    TypeChanged,
    /// A pointer whose values were all decimal strings holds a number.
    DecimalAsNumber,
}

impl ChangeKind {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Appeared => "appeared",
            Self::Disappeared => "disappeared",
            Self::TypeChanged => "type_changed",
            Self::DecimalAsNumber => "decimal_as_number",
        }
    }
}

/// One change a payload makes to a shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The JSON pointer (array elements as `*`).
    pub pointer: String,
    /// How it changed.
    pub kind: ChangeKind,
    /// What it was: its types so far, `|`-separated (`string`), or `absent`.
    pub was: String,
    /// What it is now: the payload's types, or `absent`.
    pub now: String,
}

/// What one payload holds at each pointer.
#[derive(Debug, Default)]
struct Seen {
    types: Vec<JsonType>,
    /// Every string it held there was a decimal (and there was at least one).
    decimal: bool,
    strings: bool,
}

fn is_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

/// Every pointer of `payload` with what it holds there, at most `room` pointers that `known`
/// does not have yet.
fn walk(payload: &Value, known: &BTreeMap<String, Field>, room: usize) -> BTreeMap<String, Seen> {
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut new = 0usize;
    let mut stack: Vec<(String, &Value, usize)> = vec![(String::new(), payload, 0)];
    while let Some((pointer, value, depth)) = stack.pop() {
        if !seen.contains_key(&pointer) {
            if !known.contains_key(&pointer) {
                if new >= room {
                    continue;
                }
                new += 1;
            }
            seen.insert(pointer.clone(), Seen::default());
        }
        let entry = seen.get_mut(&pointer).expect("inserted above");
        let ty = JsonType::of(value);
        if !entry.types.contains(&ty) {
            entry.types.push(ty);
        }
        if let Value::String(text) = value {
            entry.decimal = (entry.decimal || !entry.strings) && is_decimal(text);
            entry.strings = true;
        }
        if depth >= MAX_DEPTH {
            continue;
        }
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let escaped = key.replace('~', "~0").replace('/', "~1");
                    stack.push((format!("{pointer}/{escaped}"), child, depth + 1));
                }
            }
            Value::Array(items) => {
                for child in items {
                    stack.push((format!("{pointer}/*"), child, depth + 1));
                }
            }
            _ => {}
        }
    }
    seen
}

fn types_text(types: impl IntoIterator<Item = JsonType>) -> String {
    let names: Vec<&str> = types.into_iter().map(JsonType::as_str).collect();
    names.join("|")
}

impl Shape {
    /// Judges `payload` against the shape (nothing while warming up), then learns it.
    pub fn observe(&mut self, payload: &Value) -> Vec<Change> {
        let room = MAX_FIELDS.saturating_sub(self.fields.len());
        let seen = walk(payload, &self.fields, room);
        let changes = if self.samples >= WARM_UP {
            self.changes(&seen)
        } else {
            Vec::new()
        };
        self.learn(seen);
        changes
    }

    fn changes(&self, seen: &BTreeMap<String, Seen>) -> Vec<Change> {
        let mut changes = Vec::new();
        for (pointer, now) in seen {
            let Some(field) = self.fields.get(pointer) else {
                changes.push(Change {
                    pointer: pointer.clone(),
                    kind: ChangeKind::Appeared,
                    was: "absent".into(),
                    now: types_text(now.types.iter().copied()),
                });
                continue;
            };
            let known: Vec<JsonType> = field
                .types
                .iter()
                .filter(|(ty, n)| **n > 0 && **ty != JsonType::Null)
                .map(|(ty, _)| *ty)
                .collect();
            let unknown: Vec<JsonType> = now
                .types
                .iter()
                .copied()
                .filter(|ty| *ty != JsonType::Null && !known.contains(ty))
                .collect();
            if unknown.is_empty() || known.is_empty() {
                continue;
            }
            let always_decimal = known == [JsonType::String]
                && field.decimal_strings == field.types[&JsonType::String];
            let kind = if always_decimal && unknown.contains(&JsonType::Number) {
                ChangeKind::DecimalAsNumber
            } else {
                ChangeKind::TypeChanged
            };
            changes.push(Change {
                pointer: pointer.clone(),
                kind,
                was: types_text(known),
                now: types_text(unknown),
            });
        }
        // Absent now, present in every payload so far: the outermost only.
        let mut gone: Vec<&String> = Vec::new();
        for (pointer, field) in &self.fields {
            if field.present < self.samples || seen.contains_key(pointer) {
                continue;
            }
            if gone
                .iter()
                .any(|outer| pointer.starts_with(&format!("{outer}/")))
            {
                continue;
            }
            gone.push(pointer);
            changes.push(Change {
                pointer: pointer.clone(),
                kind: ChangeKind::Disappeared,
                was: types_text(
                    field
                        .types
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(ty, _)| *ty),
                ),
                now: "absent".into(),
            });
        }
        changes
    }

    fn learn(&mut self, seen: BTreeMap<String, Seen>) {
        self.samples += 1;
        for (pointer, now) in seen {
            let field = self.fields.entry(pointer).or_default();
            field.present += 1;
            for ty in now.types {
                *field.types.entry(ty).or_default() += 1;
            }
            if now.decimal {
                field.decimal_strings += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn warmed(payload: &Value) -> Shape {
        let mut shape = Shape::default();
        for _ in 0..WARM_UP {
            assert!(
                shape.observe(payload).is_empty(),
                "nothing while warming up"
            );
        }
        shape
    }

    fn deal(amount: Value) -> Value {
        json!({"type": "deal.won", "data": {"deal_id": "D-1", "amount": amount, "tags": ["a", "b"]}})
    }

    fn kinds(changes: &[Change]) -> Vec<(&str, ChangeKind, &str, &str)> {
        changes
            .iter()
            .map(|c| (c.pointer.as_str(), c.kind, c.was.as_str(), c.now.as_str()))
            .collect()
    }

    #[test]
    fn a_decimal_string_turning_into_a_number_is_named_once() {
        let mut shape = warmed(&deal(json!("1234.50")));
        assert!(shape.observe(&deal(json!("99.00"))).is_empty());
        let changes = shape.observe(&deal(json!(1234.5)));
        assert_eq!(
            kinds(&changes),
            [(
                "/data/amount",
                ChangeKind::DecimalAsNumber,
                "string",
                "number"
            )]
        );
        assert!(
            shape.observe(&deal(json!(10))).is_empty(),
            "learned: the next one is no change"
        );
    }

    #[test]
    fn a_string_that_is_not_a_decimal_turning_into_a_number_is_a_type_change() {
        let mut shape = warmed(&deal(json!("Acme renewal")));
        let changes = shape.observe(&deal(json!(7)));
        assert_eq!(
            kinds(&changes),
            [("/data/amount", ChangeKind::TypeChanged, "string", "number")]
        );
    }

    #[test]
    fn fields_appear_and_disappear_outermost_first_and_null_is_no_change() {
        let mut shape = warmed(&deal(json!("1.00")));
        assert!(shape.observe(&deal(Value::Null)).is_empty(), "null: empty");
        let changes = shape.observe(&json!({"type": "deal.won", "extra": {"x": true}}));
        assert_eq!(
            kinds(&changes),
            [
                ("/extra", ChangeKind::Appeared, "absent", "object"),
                ("/extra/x", ChangeKind::Appeared, "absent", "boolean"),
                ("/data", ChangeKind::Disappeared, "object", "absent"),
            ]
        );
    }

    #[test]
    fn only_the_outermost_of_what_disappeared_is_named_whatever_sorts_between() {
        // `/data!x` sorts between `/data` and `/data/amount`.
        let full = json!({"data": {"amount": "1.00"}, "data!x": 1, "id": "a"});
        let mut shape = warmed(&full);
        let changes = shape.observe(&json!({"id": "a"}));
        assert_eq!(
            kinds(&changes),
            [
                ("/data", ChangeKind::Disappeared, "object", "absent"),
                ("/data!x", ChangeKind::Disappeared, "number", "absent"),
            ]
        );
    }

    #[test]
    fn array_elements_share_one_pointer_and_keys_are_escaped() {
        let mut shape = Shape::default();
        shape.observe(&json!([{"a/b": 1}, {"a/b": 2, "c": "x"}]));
        let pointers: Vec<&str> = shape.fields.keys().map(String::as_str).collect();
        assert_eq!(pointers, ["", "/*", "/*/a~1b", "/*/c"]);
        assert_eq!(shape.fields["/*/a~1b"].present, 1, "once per payload");
    }

    #[test]
    fn a_hostile_payload_cannot_grow_a_shape_without_bound() {
        let mut shape = Shape::default();
        for round in 0..5 {
            let wide: serde_json::Map<String, Value> = (0..1000)
                .map(|i| (format!("k{round}-{i}"), json!(i)))
                .collect();
            shape.observe(&Value::Object(wide));
        }
        assert_eq!(shape.fields.len(), MAX_FIELDS);
        let mut deep = json!(1);
        for _ in 0..1_000 {
            deep = json!([deep]);
        }
        let mut fresh = Shape::default();
        fresh.observe(&deep);
        assert_eq!(
            fresh.fields.len(),
            MAX_DEPTH + 1,
            "walked {MAX_DEPTH} levels"
        );
    }

    #[test]
    fn decimals_are_told_apart() {
        for yes in ["0", "12", "-3.50", "1234.5678"] {
            assert!(is_decimal(yes), "{yes}");
        }
        for no in ["", "-", "1.", ".5", "1e5", "12a", "1.2.3", "+1"] {
            assert!(!is_decimal(no), "{no}");
        }
    }
}
