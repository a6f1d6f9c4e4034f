//! HubSpot webhook batches: a JSON array of subscription events, one platform event each.

use std::collections::BTreeMap;

use crm_adapter_sdk::fields::Obj;
use crm_adapter_sdk::serde_json::{Map, Value, json};
use crm_adapter_sdk::{AdapterError, Context, Event, Timestamp};

use crate::objects::{Object, SOURCE};
use crate::{Settings, org_for};

/// What a subscription event says happened to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Creation,
    PropertyChange,
    Deletion { privacy: bool },
}

/// The object type and action of a subscription event, or `None` for a subscription this
/// adapter does not map (those items are skipped, not the batch).
fn classify(item: &Obj<'_>, subscription: &str) -> Result<Option<(Object, Action)>, AdapterError> {
    let Some((prefix, action)) = subscription.split_once('.') else {
        return Ok(None);
    };
    let action = match action {
        "creation" => Action::Creation,
        "propertyChange" => Action::PropertyChange,
        "deletion" => Action::Deletion { privacy: false },
        "privacyDeletion" => Action::Deletion { privacy: true },
        _ => return Ok(None),
    };
    let object = if prefix == "object" {
        // Generic webhooks (the newer developer platform) name the type by its id.
        Object::from_type_id(&item.id("objectTypeId")?)
    } else {
        Object::from_singular(prefix)
    };
    Ok(match (object, action) {
        // No platform event for deleted companies or deals.
        (Some(Object::Company | Object::Deal), Action::Deletion { .. }) => None,
        (Some(object), action) => Some((object, action)),
        (None, _) => None,
    })
}

/// The events of one batch; an error if any mapped item is malformed (the whole batch is
/// refused: no partial emission), [`AdapterError::Ignored`] if no item is mapped.
pub fn events(
    body: &Value,
    ctx: &Context,
    settings: &Settings,
) -> Result<Vec<Event>, AdapterError> {
    let items = Obj::root_array(body, "a HubSpot webhook batch")?;
    if items.is_empty() {
        return Err(AdapterError::ignored("empty batch"));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    for item in &items {
        let subscription = kind_of(item)?;
        match classify(item, &subscription)? {
            Some((object, action)) => events.push(event(item, object, action, ctx, settings)?),
            None => *skipped.entry(subscription).or_default() += 1,
        }
    }
    if !skipped.is_empty() {
        let skipped = summary(&skipped);
        if events.is_empty() {
            return Err(AdapterError::ignored(format!(
                "no event of this batch is mapped by this adapter ({skipped})"
            )));
        }
        crm_adapter_sdk::info!(
            "{} of {} items skipped: not mapped by this adapter ({skipped})",
            items.len() - events.len(),
            items.len()
        );
    }
    Ok(events)
}

/// What kind of event an item is. HubSpot documents the field as `subscriptionType`, and some
/// of its own published examples (the webhooks overview's batch) name it `eventType`: either
/// is read. An item that names both must name one kind.
fn kind_of(item: &Obj<'_>) -> Result<String, AdapterError> {
    match (
        item.opt_string("subscriptionType")?,
        item.opt_string("eventType")?,
    ) {
        (Some(subscription), Some(event)) if subscription != event => {
            Err(AdapterError::bad_request(format!(
                "`{}` is `{subscription}` but `{}` is `{event}`: an event has one kind",
                item.name("subscriptionType"),
                item.name("eventType"),
            )))
        }
        (Some(kind), _) | (None, Some(kind)) => Ok(kind),
        (None, None) => Err(AdapterError::bad_request(format!(
            "`{}` is missing (HubSpot names the event's kind there, or in `eventType`)",
            item.name("subscriptionType"),
        ))),
    }
}

/// `contact.merge ×2, ticket.creation` (sorted by name).
fn summary(skipped: &BTreeMap<String, usize>) -> String {
    skipped
        .iter()
        .map(|(name, &n)| match n {
            1 => name.clone(),
            n => format!("{name} ×{n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn event(
    item: &Obj<'_>,
    object: Object,
    action: Action,
    ctx: &Context,
    settings: &Settings,
) -> Result<Event, AdapterError> {
    let object_id = item.id("objectId")?;
    let event_id = item.id("eventId")?;
    let portal_id = item.id("portalId")?;
    let occurred_at = millis_to_rfc3339(item.count("occurredAt")?);

    let mut payload = Map::new();
    payload.insert(object.id_field().into(), json!(object_id));
    payload.insert("external_id".into(), json!(object_id));
    payload.insert("external_source".into(), json!(SOURCE));
    payload.insert("portal_id".into(), json!(portal_id));
    payload.insert("source_event_id".into(), json!(event_id));
    payload.insert("occurred_at".into(), json!(occurred_at));
    if let Some(source) = item.opt_string("changeSource")? {
        payload.insert("change_source".into(), json!(source));
    }

    let event_type = match action {
        Action::Creation => "created",
        Action::Deletion { privacy } => {
            if privacy {
                payload.insert("privacy_deletion".into(), json!(true));
            }
            "deleted"
        }
        Action::PropertyChange => {
            let name = item.string("propertyName")?;
            let text = item.opt_string("propertyValue")?;
            let won = object == Object::Deal
                && name == "dealstage"
                && text.as_deref().is_some_and(|stage| settings.is_won(stage));
            let value = object.property_value(&name, text, &item.name("propertyValue"))?;
            payload.insert("changed_properties".into(), json!([name]));
            payload.insert("properties".into(), json!({ name: value }));
            if won { "won" } else { "updated" }
        }
    };
    let org = org_for(ctx, Some(&portal_id))?;
    Ok(
        Event::new(&format!("{}.{event_type}", object.entity()), object_id)?
            .org_opt(org)
            .dedupe_key(event_id.clone())
            // HubSpot re-sends an event it thinks undelivered, in a new delivery with a new
            // timestamp: its eventId names the fact, so a re-sent one is the same event.
            .idempotency_key(format!("hubspot-event:{event_id}"))
            .payload(Value::Object(payload))?,
    )
}

/// Epoch milliseconds (HubSpot's `occurredAt`) in RFC 3339, UTC.
fn millis_to_rfc3339(millis: u64) -> String {
    Timestamp {
        seconds: millis / 1000,
        // Below 1,000,000,000: (millis % 1000) < 1000.
        nanoseconds: u32::try_from(millis % 1000).unwrap_or(0) * 1_000_000,
    }
    .to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occurred_at_is_rfc3339_with_milliseconds_when_there_are_any() {
        assert_eq!(millis_to_rfc3339(1_764_583_200_000), "2025-12-01T10:00:00Z");
        assert_eq!(
            millis_to_rfc3339(1_764_583_121_120),
            "2025-12-01T09:58:41.12Z"
        );
        assert_eq!(millis_to_rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
