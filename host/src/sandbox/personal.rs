//! The personal data in what an adapter returned, kept out of everything else the invocation
//! leaves behind: its log lines (every level, stdout and stderr) and its contract violations.
//!
//! The adapter declares which payload fields hold personal data (`pii-fields`); the values found
//! there are masked wherever they appear verbatim in the invocation's log and violations, since
//! a guest may log what it emits. A value shorter than [`MIN_MASKED_CHARS`] characters is left
//! alone: masking `"UK"` or `"7"` everywhere would garble every line and protect nobody.

use aho_corasick::{AhoCorasick, MatchKind};

use super::logs::Log;
use crate::contracts::{Declaration, EmittedEvent, MASKED};

/// Values shorter than this (in characters) are not masked in free text.
pub const MIN_MASKED_CHARS: usize = 4;

/// The personal-data values of one invocation's events, ready to mask text with.
#[derive(Debug)]
pub(crate) struct PersonalValues {
    matcher: AhoCorasick,
}

impl PersonalValues {
    /// The values at the declared personal-data fields of `events` (a payload that is not JSON
    /// has none), or `None` when there are none. Bounded by the events' size, which the
    /// adapter's output limit bounds.
    pub(crate) fn of(events: &[EmittedEvent], declaration: &Declaration) -> Option<Self> {
        let mut values: Vec<String> = Vec::new();
        for event in events {
            let Some(fields) = declaration.personal_fields(&event.event_type) else {
                continue;
            };
            if fields.is_empty() {
                continue;
            }
            let Ok(payload) = serde_json::from_str::<serde_json::Value>(&event.payload) else {
                continue;
            };
            values.extend(
                fields
                    .values(&payload)
                    .into_iter()
                    .filter(|value| value.chars().count() >= MIN_MASKED_CHARS),
            );
        }
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        values.dedup();
        // Leftmost-longest: of two values where one contains the other, the longer is masked.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&values)
            .ok()?;
        Some(Self { matcher })
    }

    /// `text` with every personal-data value in it replaced by [`MASKED`].
    pub(crate) fn mask(&self, text: &str) -> String {
        let mut masked = String::with_capacity(text.len());
        self.matcher
            .replace_all_with(text, &mut masked, |_, _, out| {
                out.push_str(MASKED);
                true
            });
        masked
    }
}

impl Log {
    /// Masks every personal-data value in the log's lines.
    pub(crate) fn mask(&mut self, personal: &PersonalValues) {
        for line in &mut self.lines {
            if personal.matcher.is_match(&line.message) {
                line.message = personal.mask(&line.message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::EventTypeFields;
    use crate::sandbox::{LogLevel, LogLine};

    fn declaration() -> Declaration {
        Declaration::from_types([
            EventTypeFields {
                name: "contact.created".into(),
                decimal_fields: vec![],
                personal_fields: vec!["/email".into(), "/phones/*".into(), "/initials".into()],
            },
            EventTypeFields {
                name: "deal.won".into(),
                decimal_fields: vec!["/amount".into()],
                personal_fields: vec![],
            },
        ])
        .unwrap()
    }

    fn event(event_type: &str, payload: &str) -> EmittedEvent {
        EmittedEvent {
            event_type: event_type.into(),
            entity_type: event_type.split('.').next().unwrap().into(),
            entity_id: "1".into(),
            payload: payload.into(),
            ..EmittedEvent::default()
        }
    }

    #[test]
    fn declared_values_are_masked_in_every_line_and_nothing_else_is() {
        let events = [
            event(
                "contact.created",
                r#"{"email":"ada@example.com","phones":["+1 555 0100"],"initials":"AL","name":"Ada"}"#,
            ),
            event(
                "deal.won",
                r#"{"amount":"12.50","email":"not@declared.test"}"#,
            ),
            event("contact.created", "not json"),
        ];
        let personal = PersonalValues::of(&events, &declaration()).unwrap();
        let mut log = Log {
            lines: [LogLevel::Debug, LogLevel::Error, LogLevel::Stdout]
                .into_iter()
                .map(|level| LogLine {
                    level,
                    message: "sending ada@example.com (+1 555 0100) as AL, Ada; ada@example.com"
                        .into(),
                })
                .collect(),
            ..Log::default()
        };
        log.mask(&personal);
        for line in &log.lines {
            assert_eq!(
                line.message, "sending ~masked (~masked) as AL, Ada; ~masked",
                "{:?}",
                line.level
            );
        }
        // Only declared fields count: the deal's email is not personal data by its declaration.
        assert_eq!(personal.mask("not@declared.test"), "not@declared.test");
    }

    #[test]
    fn the_longest_value_wins_and_nothing_declared_means_nothing_to_mask() {
        let events = [event(
            "contact.created",
            r#"{"email":"ada@example.com","phones":["example"]}"#,
        )];
        let personal = PersonalValues::of(&events, &declaration()).unwrap();
        assert_eq!(
            personal.mask("x ada@example.com y example"),
            "x ~masked y ~masked"
        );
        let plain = [event("deal.won", r#"{"amount":"1.00"}"#)];
        assert!(PersonalValues::of(&plain, &declaration()).is_none());
    }
}
