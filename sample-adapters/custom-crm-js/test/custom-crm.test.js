// The adapter's logic, natively: `npm test` in this folder.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { BadRequest, Ignored, handleWebhook, numberText, payloadJson } from "../src/custom-crm.js";

const fixture = (name) => readFileSync(new URL(`../fixtures/${name}`, import.meta.url));
const none = new Map();

test("a won deal becomes one event with its amount as a string", () => {
  const [event] = handleWebhook(fixture("deal-won.json"), none);
  assert.equal(event.eventType, "deal.won");
  assert.equal(event.entityId, "D-42");
  assert.equal(event.idempotencyKey, "event:evt-1001");
  assert.equal(event.payload.amount, "1234.50");
});

test("an amount sent as a number keeps its exact digits", () => {
  const [event] = handleWebhook(fixture("amount-as-number.json"), none);
  assert.equal(event.payload.amount, "0.10");
  assert.match(payloadJson(event.payload), /"amount":"0.10"/);
});

test("numbers in exponent form become plain decimals exactly", () => {
  assert.equal(numberText("1.5e3"), "1500");
  assert.equal(numberText("-25E-4"), "-0.0025");
  assert.equal(numberText("0.10"), "0.10");
  assert.equal(numberText("12345678901234567890.01"), "12345678901234567890.01");
});

test("a batch keeps the known types in order", () => {
  const events = handleWebhook(fixture("batch.json"), new Map([["default_org_id", "org-1"]]));
  assert.deepEqual(
    events.map((e) => e.eventType),
    ["contact.created", "deal.updated"],
  );
  assert.equal(events[0].orgId, "org-1");
});

test("malformed input is a bad request naming the field", () => {
  assert.throws(() => handleWebhook(fixture("amount-not-decimal.json"), none), BadRequest);
  assert.throws(() => handleWebhook(new TextEncoder().encode("{"), none), /not JSON/);
});

test("a type it does not emit is ignored", () => {
  const body = new TextEncoder().encode('{"event_id":"e","type":"task.done","data":{}}');
  assert.throws(() => handleWebhook(body, none), Ignored);
});
