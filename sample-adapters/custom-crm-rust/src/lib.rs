//! The custom CRM's webhook, turned into the platform's events.
//!
//! A delivery holds one notification or a batch `{"events": [...]}`; each notification is
//! `{"event_id", "type", "org_id"?, "data": {...}}`. Amounts may arrive as JSON numbers or
//! strings: the SDK reads both exactly (never through `f64`) and writes a canonical decimal
//! string, as the platform's contract requires. The same adapter exists in Python and
//! JavaScript beside this one, with the same fixtures and golden cases.

use crm_adapter_sdk::serde_json::{Map, Value, json};
use crm_adapter_sdk::{
    Adapter, AdapterError, AdapterInfo, Context, Decimal, Event, EventTypeDecl, WebhookRequest,
};

pub struct CustomCrm;

crm_adapter_sdk::export_adapter!(CustomCrm);

const NAME: &str = "custom-crm-rust";

impl Adapter for CustomCrm {
    fn describe() -> AdapterInfo {
        AdapterInfo::new(NAME, env!("CARGO_PKG_VERSION"), "custom")
            .event_type(deal("deal.won"))
            .event_type(deal("deal.updated"))
            .event_type(
                EventTypeDecl::new("contact.created")
                    .pii_field("/email")
                    .pii_field("/phone"),
            )
    }

    fn handle_webhook(req: &WebhookRequest, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
        let body: Value = req.json()?;
        let Some(document) = body.as_object() else {
            return Err(AdapterError::bad_request("the body must be a JSON object"));
        };
        let notifications: Vec<&Value> = match document.get("events") {
            Some(Value::Array(batch)) => batch.iter().collect(),
            Some(_) => return Err(AdapterError::bad_request("`events` must be an array")),
            None => vec![&body],
        };
        let mut events = Vec::new();
        for notification in notifications {
            let Some(notification) = notification.as_object() else {
                return Err(AdapterError::bad_request(
                    "every notification must be a JSON object",
                ));
            };
            if let Some(event) = event(notification, ctx.setting("default_org_id"))? {
                events.push(event);
            }
        }
        if events.is_empty() {
            return Err(AdapterError::ignored(
                "no notification of a type this adapter emits",
            ));
        }
        crm_adapter_sdk::info!("{} event(s)", events.len());
        Ok(events)
    }
}

fn deal(name: &str) -> EventTypeDecl {
    EventTypeDecl::new(name)
        .decimal_field("/amount")
        .pii_field("/owner_email")
}

fn required<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a str, AdapterError> {
    object
        .get(field)
        .and_then(Value::as_str)
        .filter(|value| !value.trim().is_empty())
        .ok_or_else(|| AdapterError::bad_request(format!("`{field}` is missing or not a string")))
}

/// The event of one notification, or none for a type this adapter does not emit.
fn event(
    notification: &Map<String, Value>,
    default_org: Option<&str>,
) -> Result<Option<Event>, AdapterError> {
    let kind = notification
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !matches!(kind, "deal.won" | "deal.updated" | "contact.created") {
        return Ok(None);
    }
    let event_id = required(notification, "event_id")?;
    let Some(data) = notification.get("data").and_then(Value::as_object) else {
        return Err(AdapterError::bad_request(format!(
            "event {event_id}: `data` must be an object"
        )));
    };
    let (entity_id, payload) = if kind.starts_with("deal.") {
        let id = required(data, "deal_id")?;
        let amount = Decimal::from_json(data.get("amount").unwrap_or(&Value::Null))
            .map_err(|e| e.in_field("data.amount"))?;
        let payload = json!({
            "deal_id": id, "name": data.get("name"), "amount": amount,
            "currency": data.get("currency"), "owner_email": data.get("owner_email"),
        });
        (id, payload)
    } else {
        let id = required(data, "contact_id")?;
        let payload = json!({
            "contact_id": id, "email": data.get("email"), "phone": data.get("phone"),
        });
        (id, payload)
    };
    let org = notification
        .get("org_id")
        .and_then(Value::as_str)
        .filter(|org| !org.is_empty())
        .or(default_org);
    Ok(Some(
        Event::new(kind, entity_id)?
            .org_opt(org)
            // The CRM's event id names the fact: re-sent later, it is the same event.
            .idempotency_key(format!("event:{event_id}"))
            .payload(without_nulls(payload))?,
    ))
}

/// `payload` without its absent (null) fields.
fn without_nulls(payload: Value) -> Value {
    match payload {
        Value::Object(fields) => fields.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_adapter_sdk::testing;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn run(name: &str, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
        testing::run_webhook::<CustomCrm>(&testing::webhook(fixture(name)), ctx)
    }

    #[test]
    fn a_won_deal_becomes_one_event_with_its_amount_as_a_string() {
        let events = run("deal-won.json", &testing::context().with_org("org-1")).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type(), "deal.won");
        assert_eq!(events[0].entity_id(), "D-42");
        assert_eq!(events[0].idempotency_key_str(), Some("event:evt-1001"));
        assert_eq!(events[0].payload_value()["amount"], "1234.50");
    }

    #[test]
    fn an_amount_sent_as_a_number_keeps_its_exact_digits() {
        let events = run(
            "amount-as-number.json",
            &testing::context().with_org("org-1"),
        )
        .unwrap();
        assert!(events[0].payload_json().contains(r#""amount":"0.10""#));
    }

    #[test]
    fn a_batch_keeps_the_known_types_in_order() {
        let ctx = testing::context()
            .with_org("org-1")
            .with_org("org-2")
            .with_setting("default_org_id", "org-1");
        let events = run("batch.json", &ctx).unwrap();
        let types: Vec<&str> = events.iter().map(Event::event_type).collect();
        assert_eq!(types, ["contact.created", "deal.updated"]);
        assert_eq!(events[0].org_id(), Some("org-1"));
    }

    #[test]
    fn malformed_input_is_a_bad_request_naming_the_field() {
        let err = run(
            "amount-not-decimal.json",
            &testing::context().with_org("org-1"),
        )
        .unwrap_err();
        assert!(err.message().contains("data.amount"), "{err:?}");
    }

    #[test]
    fn a_type_it_does_not_emit_is_ignored() {
        let err = run("task-completed.json", &testing::context()).unwrap_err();
        assert!(matches!(err, AdapterError::Ignored(_)), "{err:?}");
    }
}
