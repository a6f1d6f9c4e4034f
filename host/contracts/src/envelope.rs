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

/// Why `text` is not a valid opaque identifier, or `None` when it is valid: non-empty and not
/// blank (only spaces or invisible characters), at most `max_len` bytes, without control
/// characters, line or paragraph separators (U+2028, U+2029) or bidirectional controls. These ids
/// end up in logs, URLs, message headers and admins' screens: a control character or a line
/// separator can forge lines or break framing, and a bidi override (U+202E) can make `evil<U+202E>gpj`
/// read as another id.
pub(super) fn identifier_problem(text: &str, max_len: usize) -> Option<String> {
    if text.is_empty() {
        return Some("is empty".to_owned());
    }
    if text.len() > max_len {
        return Some(format!("is {} bytes long, more than {max_len}", text.len()));
    }
    if let Some(c) = text.chars().find(|&c| char::is_control(c)) {
        return Some(format!(
            "contains a control character (U+{:04X})",
            u32::from(c)
        ));
    }
    if let Some(c) = text.chars().find(|&c| is_line_separator(c)) {
        return Some(format!(
            "contains a line separator (U+{:04X})",
            u32::from(c)
        ));
    }
    if let Some(c) = text.chars().find(|&c| is_bidi_control(c)) {
        return Some(format!(
            "contains a bidirectional control (U+{:04X})",
            u32::from(c)
        ));
    }
    if text.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Some("is blank (only spaces or invisible characters)".to_owned());
    }
    None
}

fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

/// The bidirectional formatting characters of Unicode (UAX #9): embeddings, overrides, isolates
/// and the implicit marks.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Characters that render as nothing: zero-width spaces and joiners, the word joiner and
/// invisible operators, the BOM, the soft hyphen, the Hangul and Braille blanks, variation
/// selectors and tags.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{E0000}'..='\u{E007F}'
    )
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
            assert!(
                identifier_problem(bad, 256)
                    .unwrap()
                    .starts_with("contains a control character (U+"),
                "{bad:?}"
            );
        }
        for bad in ["a\u{2028}b", "\u{2029}"] {
            assert!(
                identifier_problem(bad, 256)
                    .unwrap()
                    .starts_with("contains a line separator"),
                "{bad:?}"
            );
        }
        for bad in [
            "evil\u{202E}gpj",
            "\u{2066}x\u{2069}",
            "a\u{200F}",
            "\u{061C}1",
        ] {
            assert!(
                identifier_problem(bad, 256)
                    .unwrap()
                    .starts_with("contains a bidirectional control"),
                "{bad:?}"
            );
        }
        for blank in [" ", "   ", "\u{3000}", "\u{200B}", " \u{FEFF} ", "\u{2800}"] {
            assert_eq!(
                identifier_problem(blank, 256).as_deref(),
                Some("is blank (only spaces or invisible characters)"),
                "{blank:?}"
            );
        }
        // Spaces and joiners inside a real id are fine.
        assert_eq!(identifier_problem(" id 7 ", 256), None);
        assert_eq!(identifier_problem("👩\u{200D}💻", 256), None);
    }
}
