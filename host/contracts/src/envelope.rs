//! Byte-level grammar of the envelope's text fields: event type names, entity ids and dedupe
//! keys. Hand-written checks rather than regexes: the grammars are tiny and this runs on every
//! event.

use super::MAX_EVENT_TYPE_LEN;

/// Why `name` is not a valid event type (`entity.action`, each part `[a-z][a-z0-9_]*`, exactly
/// one dot, at most [`MAX_EVENT_TYPE_LEN`] bytes), or `None` when it is valid.
pub(super) fn event_type_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.len() > MAX_EVENT_TYPE_LEN {
        return Some("is longer than 128 bytes");
    }
    let Some((entity, action)) = name.split_once('.') else {
        return Some("has no dot");
    };
    if action.contains('.') {
        return Some("has more than one dot");
    }
    if !is_snake_case_word(entity) {
        return Some("has an entity part that is not lower snake case ([a-z][a-z0-9_]*)");
    }
    if !is_snake_case_word(action) {
        return Some("has an action part that is not lower snake case ([a-z][a-z0-9_]*)");
    }
    None
}

/// `[a-z][a-z0-9_]*`.
fn is_snake_case_word(word: &str) -> bool {
    let mut bytes = word.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// Why `text` is not a valid opaque identifier (non-empty, at most `max_len` bytes, no control
/// characters), or `None` when it is valid. Control characters are refused because these ids end
/// up in logs, URLs and message headers, where they can forge lines or break framing.
pub(super) fn identifier_problem(text: &str, max_len: usize) -> Option<String> {
    if text.is_empty() {
        Some("is empty".to_owned())
    } else if text.len() > max_len {
        Some(format!("is {} bytes long, more than {max_len}", text.len()))
    } else if text.chars().any(char::is_control) {
        Some("contains a control character".to_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_accepts_entity_dot_action_in_snake_case() {
        for name in [
            "deal.won",
            "a.b",
            "deal_line.split_changed",
            "v2_deal.won2",
            "x.y_",
        ] {
            assert_eq!(event_type_problem(name), None, "{name}");
        }
    }

    #[test]
    fn event_type_refuses_everything_else() {
        for name in [
            "",
            "deal",
            "deal.",
            ".won",
            "deal.won.again",
            "Deal.won",
            "deal.Won",
            "deal-x.won",
            "deal.won ",
            " deal.won",
            "2deal.won",
            "deal._won",
            "_deal.won",
            "deal..won",
            "dél.won",
        ] {
            assert!(
                event_type_problem(name).is_some(),
                "{name:?} should be refused"
            );
        }
    }

    #[test]
    fn event_type_length_is_bounded_at_128_bytes() {
        let at_limit = format!("a.{}", "b".repeat(MAX_EVENT_TYPE_LEN - 2));
        assert_eq!(event_type_problem(&at_limit), None);
        let over = format!("a.{}", "b".repeat(MAX_EVENT_TYPE_LEN - 1));
        assert_eq!(event_type_problem(&over), Some("is longer than 128 bytes"));
    }

    #[test]
    fn identifier_rules() {
        assert_eq!(identifier_problem("006Qy00000AbCdE", 256), None);
        assert_eq!(identifier_problem("ünïcödé id with spaces", 256), None);
        assert_eq!(identifier_problem(&"x".repeat(256), 256), None);
        assert!(identifier_problem("", 256).is_some());
        assert!(identifier_problem(&"x".repeat(257), 256).is_some());
        // The limit is in bytes, not characters: 129 two-byte characters are 258 bytes.
        assert!(identifier_problem(&"é".repeat(129), 256).is_some());
        for bad in ["a\nb", "a\rb", "\0", "a\tb", "a\u{7f}b", "a\u{85}b"] {
            assert_eq!(
                identifier_problem(bad, 256).as_deref(),
                Some("contains a control character"),
                "{bad:?}"
            );
        }
    }
}
