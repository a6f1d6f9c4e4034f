//! What a connection keeps out of the events it exports: the tenant's choice, per connection,
//! of payload fields (personal data, typically) that never reach the outbox, the bus or a
//! subscriber. They are dropped after the contracts passed and before the event is signed and
//! stored, so no copy of them is kept anywhere; the event's metadata names what was withheld.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::contracts::{self, Fields};

/// The most fields one connection withholds.
pub const MAX_WITHHELD: usize = 128;

/// A connection's export policy (`export` of a connection).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportPolicy {
    /// Payload fields dropped from its events before they are stored and published.
    #[serde(default)]
    pub withhold: Vec<Withheld>,
}

/// One field a connection withholds from export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Withheld {
    /// The event type whose payloads lose the field (`contact.created`), or `*` for all.
    pub event_type: String,
    /// A JSON pointer relative to the payload; a segment `*` matches any array index or object
    /// key (`/email`, `/contacts/*/phone`). An array element is removed from its array.
    pub field: String,
}

impl ExportPolicy {
    /// Whether it withholds nothing.
    pub fn is_empty(&self) -> bool {
        self.withhold.is_empty()
    }

    /// Says what is wrong with the policy, naming the entry.
    pub fn validate(&self) -> Result<(), String> {
        if self.withhold.len() > MAX_WITHHELD {
            return Err(format!(
                "`withhold` lists {} fields, at most {MAX_WITHHELD} allowed",
                self.withhold.len()
            ));
        }
        for (index, entry) in self.withhold.iter().enumerate() {
            if entry.event_type != "*"
                && let Err(e) = contracts::Declaration::new([(entry.event_type.clone(), vec![])])
            {
                return Err(format!(
                    "`withhold[{index}].event_type`: {e}, or `*` for all"
                ));
            }
            if let Err((_, reason)) = Fields::parse(&[&entry.field]) {
                return Err(format!("`withhold[{index}].field` {reason}"));
            }
        }
        Ok(())
    }

    /// The policy compiled for use on every event.
    pub fn compile(&self) -> Withholding {
        let mut by_type: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for entry in &self.withhold {
            by_type
                .entry(entry.event_type.as_str())
                .or_default()
                .push(entry.field.as_str());
        }
        let fields = |patterns: &[&str]| Fields::parse(patterns).unwrap_or_default();
        Withholding {
            all: by_type.get("*").map(|p| fields(p)).unwrap_or_default(),
            by_type: by_type
                .iter()
                .filter(|(event_type, _)| **event_type != "*")
                .map(|(event_type, patterns)| ((*event_type).to_owned(), fields(patterns)))
                .collect(),
        }
    }
}

/// A compiled [`ExportPolicy`].
#[derive(Debug, Clone, Default)]
pub struct Withholding {
    all: Fields,
    by_type: BTreeMap<String, Fields>,
}

impl Withholding {
    /// The policy stored on a connection (`export_json`), compiled; a policy that no longer
    /// parses (it was checked when stored) is an error rather than an export of everything.
    pub fn of_stored(export_json: Option<&str>) -> anyhow::Result<Self> {
        let Some(text) = export_json else {
            return Ok(Self::default());
        };
        let policy: ExportPolicy = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("the connection's export policy does not parse: {e}"))?;
        policy
            .validate()
            .map_err(|e| anyhow::anyhow!("the connection's export policy is invalid: {e}"))?;
        Ok(policy.compile())
    }

    /// Whether it withholds anything from events of `event_type`.
    pub fn applies_to(&self, event_type: &str) -> bool {
        !self.all.is_empty() || self.by_type.contains_key(event_type)
    }

    /// Drops the withheld fields of an `event_type` payload; the pointers dropped, sorted.
    pub fn apply(&self, event_type: &str, payload: &mut serde_json::Value) -> Vec<String> {
        let mut removed = self.all.remove(payload);
        if let Some(fields) = self.by_type.get(event_type) {
            removed.extend(fields.remove(payload));
        }
        removed.sort_unstable();
        removed.dedup();
        removed
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy(entries: &[(&str, &str)]) -> ExportPolicy {
        ExportPolicy {
            withhold: entries
                .iter()
                .map(|(event_type, field)| Withheld {
                    event_type: (*event_type).into(),
                    field: (*field).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn fields_are_withheld_by_event_type_and_for_all() {
        let withholding = policy(&[("contact.created", "/phone"), ("*", "/owner_email")]).compile();
        assert!(withholding.applies_to("deal.won"));
        let mut contact = json!({"phone": "+1 555 0100", "owner_email": "o@x.test", "name": "Ada"});
        assert_eq!(
            withholding.apply("contact.created", &mut contact),
            ["/owner_email", "/phone"]
        );
        assert_eq!(contact, json!({"name": "Ada"}));
        let mut deal = json!({"phone": "kept", "owner_email": "o@x.test"});
        assert_eq!(withholding.apply("deal.won", &mut deal), ["/owner_email"]);
        assert_eq!(deal, json!({"phone": "kept"}));

        let only_contacts = policy(&[("contact.created", "/phone")]).compile();
        assert!(!only_contacts.applies_to("deal.won"));
        assert!(Withholding::of_stored(None).unwrap().by_type.is_empty());
    }

    #[test]
    fn bad_entries_are_named() {
        let err = policy(&[("contact.created", "/ok"), ("Contact", "/x")])
            .validate()
            .unwrap_err();
        assert!(err.starts_with("`withhold[1].event_type`"), "{err}");
        let err = policy(&[("*", "phone")]).validate().unwrap_err();
        assert!(err.starts_with("`withhold[0].field`"), "{err}");
        let many: Vec<(&str, &str)> = vec![("*", "/a"); MAX_WITHHELD + 1];
        assert!(
            policy(&many)
                .validate()
                .unwrap_err()
                .contains("at most 128")
        );
        assert!(policy(&[("*", "/a/*/b")]).validate().is_ok());
        assert!(
            Withholding::of_stored(Some(r#"{"withhold":[{"event_type":"*","field":"x"}]}"#))
                .is_err()
        );
    }
}
