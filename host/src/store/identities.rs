//! The identity map (the seed's `identity_external_id_map`): per tenant, which platform entity
//! a CRM's record is, learned from the `external_source` and `external_id` an adapter writes in
//! its events' payloads, with where the host first and last saw it (event and connection).
//! Filled in the transaction that appends the events, on the webhook and the poll path alike;
//! emptied with the rest of a tenant's data when it is erased.

use serde::{Deserialize, Serialize};

use super::Millis;

/// One CRM record as the host knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Identity {
    /// Time-ordered id (when the host first saw it).
    pub id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The org of the events that named it; `None`: platform level.
    pub org_id: Option<String>,
    /// The system the id belongs to (`external_source`: `salesforce`, `champion_health`).
    pub source: String,
    /// The entity type of the events that named it (`member`, `deal`).
    pub entity_type: String,
    /// The CRM's id of the record (`external_id`).
    pub external_id: String,
    /// The platform's entity id for it (the events' `entity_id`, the latest one's).
    pub entity_id: String,
    /// The first event that named it, when, and from which connection.
    pub first_event_id: String,
    pub first_seen_at: Millis,
    pub first_connection_id: String,
    /// The latest.
    pub last_event_id: String,
    pub last_seen_at: Millis,
    pub last_connection_id: String,
    /// Events that named it.
    pub events: u64,
}

/// Which identities to list: a tenant's, within an org, narrowed by any of the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityFilter {
    /// The tenant.
    pub tenant_id: String,
    /// `Some(org)`: that org's identities and platform-level ones; `None`: all.
    pub org_id: Option<String>,
    pub source: Option<String>,
    pub entity_type: Option<String>,
    pub external_id: Option<String>,
    pub entity_id: Option<String>,
    /// Page size (clamped to 1..=1000; 0 means 100).
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The `external_source` and `external_id` (strings, both non-empty) at the top of an event's
/// payload, if it names them.
pub fn external_identity(payload_json: &str) -> Option<(String, String)> {
    #[derive(Deserialize)]
    struct Named {
        #[serde(default)]
        external_source: Option<serde_json::Value>,
        #[serde(default)]
        external_id: Option<serde_json::Value>,
    }
    // (A derived struct would take an array too, by position.)
    if !payload_json.trim_start().starts_with('{') {
        return None;
    }
    let named: Named = serde_json::from_str(payload_json).ok()?;
    let text = |value: Option<serde_json::Value>| match value? {
        serde_json::Value::String(text) if !text.is_empty() => Some(text),
        _ => None,
    };
    Some((text(named.external_source)?, text(named.external_id)?))
}

#[cfg(test)]
mod tests {
    use super::external_identity;

    #[test]
    fn only_two_non_empty_strings_at_the_top_name_an_identity() {
        let named = r#"{"external_source":"crm","external_id":"C-1","amount":"1.00"}"#;
        assert_eq!(
            external_identity(named),
            Some(("crm".to_owned(), "C-1".to_owned()))
        );
        for not in [
            r#"{"external_id":"C-1"}"#,
            r#"{"external_source":"crm","external_id":""}"#,
            r#"{"external_source":"crm","external_id":7}"#,
            r#"{"nested":{"external_source":"crm","external_id":"C-1"}}"#,
            r#"["external_source","external_id"]"#,
            "not json",
        ] {
            assert_eq!(external_identity(not), None, "{not}");
        }
    }
}
