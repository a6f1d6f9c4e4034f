"""The custom CRM's webhook, turned into the platform's events: plain Python, no bindings.

`app.py` is the component's entry point and only converts between these dictionaries and the
WIT types, so everything here runs (and is tested) natively with `python3 -m unittest`.

A delivery holds one notification or a batch `{"events": [...]}`; each notification is
`{"event_id", "type", "org_id"?, "data": {...}}`. Amounts may arrive as JSON numbers or
strings: both are read as `decimal.Decimal` (never through float) and emitted as canonical
decimal strings, as the platform's contract requires.
"""

import decimal
import json

NAME = "custom-crm-python"
VERSION = "0.1.0"
PROVIDER = "custom"

# The event types this adapter emits: (name, decimal fields, personal-data fields).
EVENT_TYPES = [
    ("deal.won", ["/amount"], ["/owner_email"]),
    ("deal.updated", ["/amount"], ["/owner_email"]),
    ("contact.created", [], ["/email", "/phone"]),
]
_KINDS = {name for name, _, _ in EVENT_TYPES}


class BadRequest(Exception):
    """The delivery is malformed: answered 400 and not retried."""


class Ignored(Exception):
    """The delivery is valid but produces nothing."""


def decimal_text(value, field):
    """`value` (a JSON number read as Decimal or int, or a string) as a canonical decimal
    string."""
    if isinstance(value, bool) or value is None:
        raise BadRequest(f"`{field}` must be a decimal, got {json.dumps(value)}")
    try:
        number = decimal.Decimal(value) if isinstance(value, (str, int)) else value
    except decimal.InvalidOperation:
        raise BadRequest(f"`{field}` is not a decimal: {json.dumps(str(value))}") from None
    if not isinstance(number, decimal.Decimal) or not number.is_finite():
        raise BadRequest(f"`{field}` is not a decimal: {json.dumps(str(value))}")
    return format(number, "f")


def _required(data, field):
    value = data.get(field)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"`{field}` is missing or not a string")
    return value


def _event(notification, default_org):
    kind = notification.get("type")
    if kind not in _KINDS:
        return None
    event_id = _required(notification, "event_id")
    data = notification.get("data")
    if not isinstance(data, dict):
        raise BadRequest(f"event {event_id}: `data` must be an object")
    if kind.startswith("deal."):
        entity_id = _required(data, "deal_id")
        payload = {
            "deal_id": entity_id,
            "name": data.get("name"),
            "amount": decimal_text(data.get("amount"), "data.amount"),
            "currency": data.get("currency"),
            "owner_email": data.get("owner_email"),
        }
    else:
        entity_id = _required(data, "contact_id")
        payload = {
            "contact_id": entity_id,
            "email": data.get("email"),
            "phone": data.get("phone"),
        }
    return {
        "event_type": kind,
        "entity_id": entity_id,
        "org_id": notification.get("org_id") or default_org,
        # The CRM's event id names the fact: re-sent later, it is the same event.
        "idempotency_key": f"event:{event_id}",
        "payload": {k: v for k, v in payload.items() if v is not None},
    }


def handle_webhook(body, settings):
    """The events of one delivery (`body` as bytes), as dictionaries."""
    try:
        document = json.loads(body, parse_float=decimal.Decimal)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object")
    notifications = document["events"] if "events" in document else [document]
    if not isinstance(notifications, list):
        raise BadRequest("`events` must be an array")
    default_org = settings.get("default_org_id")
    events = []
    for notification in notifications:
        if not isinstance(notification, dict):
            raise BadRequest("every notification must be a JSON object")
        event = _event(notification, default_org)
        if event is not None:
            events.append(event)
    if not events:
        raise Ignored("no notification of a type this adapter emits")
    return events


def payload_json(payload):
    """A payload as JSON text (decimals are already strings)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)
