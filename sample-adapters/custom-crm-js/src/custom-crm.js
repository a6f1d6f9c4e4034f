// The custom CRM's webhook, turned into the platform's events: plain JavaScript, no bindings.
//
// `adapter.js` is the component's entry point and only converts between these objects and the
// WIT types, so everything here runs (and is tested) natively with `node --test`.
//
// A delivery holds one notification or a batch `{"events": [...]}`; each notification is
// `{"event_id", "type", "org_id"?, "data": {...}}`. Amounts may arrive as JSON numbers or
// strings. `JSON.parse` would turn 0.10 into the float 0.1; lossless-json keeps every number's
// text, which becomes a canonical decimal string, as the platform's contract requires.

import { isLosslessNumber, parse } from "lossless-json";

export const NAME = "custom-crm-js";
export const VERSION = "0.1.0";
export const PROVIDER = "custom";

/** The event types this adapter emits, with their decimal and personal-data fields. */
export const EVENT_TYPES = [
  { name: "deal.won", decimalFields: ["/amount"], piiFields: ["/owner_email"] },
  { name: "deal.updated", decimalFields: ["/amount"], piiFields: ["/owner_email"] },
  { name: "contact.created", decimalFields: [], piiFields: ["/email", "/phone"] },
];
const KINDS = new Set(EVENT_TYPES.map((t) => t.name));

/** The delivery is malformed: answered 400 and not retried. */
export class BadRequest extends Error {}
/** The delivery is valid but produces nothing. */
export class Ignored extends Error {}

const CANONICAL = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?$/;
const NUMBER = /^(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?$/;

/** A JSON number's text ("1.5e3") as a canonical decimal string ("1500"), exactly. */
export function numberText(text) {
  const m = NUMBER.exec(text);
  if (!m) throw new BadRequest(`not a number: ${text}`);
  const [, sign, whole, fraction = "", exponent = "0"] = m;
  let digits = whole + fraction;
  let point = whole.length + Number(exponent);
  if (point <= 0) {
    digits = "0".repeat(1 - point) + digits;
    point = 1;
  } else if (point > digits.length) {
    digits = digits + "0".repeat(point - digits.length);
  }
  let integer = digits.slice(0, point).replace(/^0+(?=[0-9])/, "");
  const rest = digits.slice(point);
  return `${sign}${integer}${rest ? `.${rest}` : ""}`;
}

/** `value` (a lossless number, or a string) as a canonical decimal string. */
export function decimalText(value, field) {
  if (isLosslessNumber(value)) return numberText(value.value);
  if (typeof value === "string" && CANONICAL.test(value)) return value;
  throw new BadRequest(`\`${field}\` is not a decimal: ${JSON.stringify(String(value))}`);
}

function required(object, field) {
  const value = object[field];
  if (typeof value !== "string" || value.trim() === "") {
    throw new BadRequest(`\`${field}\` is missing or not a string`);
  }
  return value;
}

function toEvent(notification, defaultOrg) {
  const kind = notification.type;
  if (!KINDS.has(kind)) return null;
  const eventId = required(notification, "event_id");
  const data = notification.data;
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new BadRequest(`event ${eventId}: \`data\` must be an object`);
  }
  let entityId;
  let payload;
  if (kind.startsWith("deal.")) {
    entityId = required(data, "deal_id");
    payload = {
      deal_id: entityId,
      name: data.name,
      amount: decimalText(data.amount, "data.amount"),
      currency: data.currency,
      owner_email: data.owner_email,
    };
  } else {
    entityId = required(data, "contact_id");
    payload = { contact_id: entityId, email: data.email, phone: data.phone };
  }
  return {
    eventType: kind,
    entityId,
    orgId: notification.org_id || defaultOrg,
    // The CRM's event id names the fact: re-sent later, it is the same event.
    idempotencyKey: `event:${eventId}`,
    payload,
  };
}

/** The events of one delivery (`body` as bytes), as plain objects. */
export function handleWebhook(body, settings) {
  let document;
  try {
    document = parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch (e) {
    throw new BadRequest(`the body is not JSON: ${e.message}`);
  }
  if (document === null || typeof document !== "object" || Array.isArray(document)) {
    throw new BadRequest("the body must be a JSON object");
  }
  const notifications = "events" in document ? document.events : [document];
  if (!Array.isArray(notifications)) throw new BadRequest("`events` must be an array");
  const events = [];
  for (const notification of notifications) {
    if (notification === null || typeof notification !== "object" || Array.isArray(notification)) {
      throw new BadRequest("every notification must be a JSON object");
    }
    const event = toEvent(notification, settings.get("default_org_id"));
    if (event) events.push(event);
  }
  if (events.length === 0) throw new Ignored("no notification of a type this adapter emits");
  return events;
}

/** A payload as JSON text, keys sorted, absent fields left out (decimals are strings). */
export function payloadJson(payload) {
  const sorted = Object.fromEntries(
    Object.keys(payload)
      .sort()
      .filter((k) => payload[k] !== undefined && payload[k] !== null)
      .map((k) => [k, payload[k]]),
  );
  return JSON.stringify(sorted);
}
