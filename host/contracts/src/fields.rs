//! Sets of payload field patterns, and what the host does with the fields they select: find
//! them, mask them for someone who may not see them, withhold them from export.
//!
//! An adapter declares its personal-data fields per event type (`pii-fields` in `describe`); a
//! tenant names the fields a connection withholds from export. Both are [`Fields`]: JSON
//! pointers relative to the payload, where a segment `*` matches any array index or object key.

use serde_json::Value;

use super::declaration::{Pattern, Segment};

/// What a masked value reads as: a string, whatever the value was.
pub const MASKED: &str = "~masked";

/// A set of compiled field patterns (without repeats, in the order given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    patterns: Vec<Pattern>,
}

impl Fields {
    /// Compiles `patterns`, or names the first that is not a JSON pointer starting with `/`
    /// (with why). A pattern given twice is kept once.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, (&str, &'static str)> {
        let mut compiled: Vec<Pattern> = Vec::with_capacity(patterns.len());
        for text in patterns {
            let text = text.as_ref();
            let pattern = Pattern::parse(text).map_err(|reason| (text, reason))?;
            if !compiled.contains(&pattern) {
                compiled.push(pattern);
            }
        }
        Ok(Self { patterns: compiled })
    }

    /// Whether there is no pattern.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns as given.
    pub fn patterns(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.patterns.iter().map(Pattern::text)
    }

    /// The concrete RFC 6901 pointers of the values of `payload` the patterns select, sorted,
    /// each once.
    pub fn locate(&self, payload: &Value) -> Vec<String> {
        let mut found = Vec::new();
        let mut path = String::new();
        for pattern in &self.patterns {
            locate_in(payload, pattern.segments(), &mut path, &mut found);
        }
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Every string and number inside the values of `payload` the patterns select, as text:
    /// what must not show where the payload itself is not shown (a log line, an error).
    pub fn values(&self, payload: &Value) -> Vec<String> {
        let mut values = Vec::new();
        for pointer in self.locate(payload) {
            if let Some(value) = payload.pointer(&pointer) {
                leaves(value, &mut values);
            }
        }
        values
    }

    /// Removes the values the patterns select from `payload` (an array element is removed
    /// from its array, a member from its object), pattern after pattern. Returns the pointers
    /// removed, as they were before each removal, sorted.
    pub fn remove(&self, payload: &mut Value) -> Vec<String> {
        let mut removed = Vec::new();
        let mut path = String::new();
        for pattern in &self.patterns {
            remove_in(payload, pattern.segments(), &mut path, &mut removed);
        }
        removed.sort_unstable();
        removed.dedup();
        removed
    }
}

/// Replaces the value at each of `pointers` (concrete RFC 6901 pointers) in `payload` by
/// [`MASKED`]. Returns the pointers that were there.
pub fn mask(payload: &mut Value, pointers: &[String]) -> Vec<String> {
    pointers
        .iter()
        .filter(|pointer| match payload.pointer_mut(pointer) {
            Some(value) => {
                *value = Value::String(MASKED.to_owned());
                true
            }
            None => false,
        })
        .cloned()
        .collect()
}

fn locate_in(value: &Value, segments: &[Segment], path: &mut String, found: &mut Vec<String>) {
    let Some((segment, rest)) = segments.split_first() else {
        found.push(path.clone());
        return;
    };
    let at = path.len();
    match value {
        Value::Object(members) => {
            for (key, child) in members.iter().filter(|(key, _)| segment.matches_key(key)) {
                push_segment(path, key);
                locate_in(child, rest, path, found);
                path.truncate(at);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                if segment.matches_index(index) {
                    push_segment(path, &index.to_string());
                    locate_in(child, rest, path, found);
                    path.truncate(at);
                }
            }
        }
        _ => {}
    }
}

fn remove_in(
    value: &mut Value,
    segments: &[Segment],
    path: &mut String,
    removed: &mut Vec<String>,
) {
    let Some((segment, rest)) = segments.split_first() else {
        return;
    };
    let at = path.len();
    let mut note = |path: &mut String, key: &str| {
        push_segment(path, key);
        removed.push(path.clone());
        path.truncate(at);
    };
    match value {
        Value::Object(members) if rest.is_empty() => members.retain(|key, _| {
            let drop = segment.matches_key(key);
            if drop {
                note(path, key);
            }
            !drop
        }),
        Value::Array(items) if rest.is_empty() => {
            let mut index = 0;
            items.retain(|_| {
                let drop = segment.matches_index(index);
                if drop {
                    note(path, &index.to_string());
                }
                index += 1;
                !drop
            });
        }
        Value::Object(members) => {
            for (key, child) in members.iter_mut() {
                if segment.matches_key(key) {
                    push_segment(path, key);
                    remove_in(child, rest, path, removed);
                    path.truncate(at);
                }
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                if segment.matches_index(index) {
                    push_segment(path, &index.to_string());
                    remove_in(child, rest, path, removed);
                    path.truncate(at);
                }
            }
        }
        _ => {}
    }
}

/// Appends `/key`, escaped as RFC 6901 says (`~` as `~0`, `/` as `~1`).
fn push_segment(path: &mut String, key: &str) {
    path.push('/');
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

fn leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(text.clone()),
        Value::Number(number) => out.push(number.to_string()),
        Value::Array(items) => items.iter().for_each(|item| leaves(item, out)),
        Value::Object(members) => members.values().for_each(|item| leaves(item, out)),
        Value::Null | Value::Bool(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(patterns: &[&str]) -> Fields {
        Fields::parse(patterns).unwrap()
    }

    fn person() -> Value {
        json!({
            "name": "Ada",
            "email": "ada@example.com",
            "phones": ["+44 20 7946 0000", "+44 20 7946 0001"],
            "contacts": [{"email": "a@x.test", "kind": "work"}, {"kind": "none"}],
            "a/b": {"~c": "escaped"},
            "amount": "12.50",
        })
    }

    #[test]
    fn patterns_locate_concrete_pointers_through_wildcards_and_escapes() {
        let found = fields(&[
            "/email",
            "/phones/*",
            "/contacts/*/email",
            "/a~1b/~0c",
            "/gone",
        ])
        .locate(&person());
        assert_eq!(
            found,
            [
                "/a~1b/~0c",
                "/contacts/0/email",
                "/email",
                "/phones/0",
                "/phones/1",
            ]
        );
        // Each located pointer reads back through serde_json's own RFC 6901 lookup.
        for pointer in &found {
            assert!(person().pointer(pointer).is_some(), "{pointer}");
        }
    }

    #[test]
    fn values_are_every_leaf_under_the_selected_fields() {
        let mut values = fields(&["/contacts", "/email"]).values(&person());
        values.sort();
        assert_eq!(values, ["a@x.test", "ada@example.com", "none", "work"]);
        let numbers = fields(&["/n"]).values(&json!({"n": 4_155_550_100_u64}));
        assert_eq!(numbers, ["4155550100"]);
    }

    #[test]
    fn masking_replaces_exactly_the_pointers_present() {
        let mut payload = person();
        let masked = mask(
            &mut payload,
            &["/email".into(), "/phones/1".into(), "/nowhere".into()],
        );
        assert_eq!(masked, ["/email", "/phones/1"]);
        assert_eq!(payload["email"], MASKED);
        assert_eq!(payload["phones"], json!(["+44 20 7946 0000", MASKED]));
        assert_eq!(payload["name"], "Ada");
        assert_eq!(payload["amount"], "12.50");
    }

    #[test]
    fn removal_drops_members_and_elements_and_says_which() {
        let mut payload = person();
        let removed = fields(&["/email", "/contacts/*/email", "/phones/0"]).remove(&mut payload);
        assert_eq!(removed, ["/contacts/0/email", "/email", "/phones/0"]);
        assert_eq!(
            payload,
            json!({
                "name": "Ada",
                "phones": ["+44 20 7946 0001"],
                "contacts": [{"kind": "work"}, {"kind": "none"}],
                "a/b": {"~c": "escaped"},
                "amount": "12.50",
            })
        );
        let mut all = person();
        assert_eq!(
            fields(&["/phones/*"]).remove(&mut all),
            ["/phones/0", "/phones/1"]
        );
        assert_eq!(all["phones"], json!([]));
        // Nothing selected, nothing changed.
        let mut untouched = person();
        assert!(
            fields(&["/nope", "/name/deeper"])
                .remove(&mut untouched)
                .is_empty()
        );
        assert_eq!(untouched, person());
    }

    #[test]
    fn bad_patterns_are_named() {
        assert_eq!(Fields::parse(&["/ok", "email"]).unwrap_err().0, "email",);
        assert!(Fields::parse(&["/a~2"]).is_err());
        assert_eq!(fields(&["/a", "/a"]).patterns().count(), 1);
        assert!(fields(&[]).is_empty());
    }
}
