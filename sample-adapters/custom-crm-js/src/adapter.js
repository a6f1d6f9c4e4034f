// The component's entry point: the `adapter` export of the crm-adapter world, in JavaScript.
//
// Built with componentize-js (see README.md). All logic lives in `custom-crm.js`; this module
// only converts between its objects and the WIT types: a WIT `result` is a return (ok) or a
// throw (err, the thrown value being the error variant), a variant is `{ tag, val }`, an
// `option` is `undefined` when none, `list<u8>` a Uint8Array.

import { log } from "crm:adapter/log@0.2.0";
import {
  BadRequest,
  EVENT_TYPES,
  Ignored,
  NAME,
  PROVIDER,
  VERSION,
  handleWebhook,
  payloadJson,
} from "./custom-crm.js";

function adapterError(e) {
  if (e instanceof BadRequest) return { tag: "bad-request", val: e.message };
  if (e instanceof Ignored) return { tag: "ignored", val: e.message };
  return { tag: "failed", val: String(e && e.message ? e.message : e) };
}

export const adapter = {
  describe() {
    return { name: NAME, version: VERSION, provider: PROVIDER, eventTypes: EVENT_TYPES };
  },

  handleWebhook(request, context) {
    let events;
    try {
      events = handleWebhook(request.body, new Map(context.settings));
    } catch (e) {
      throw adapterError(e);
    }
    log("info", `${events.length} event(s)`);
    return events.map((e) => ({
      eventType: e.eventType,
      entityType: e.eventType.split(".")[0],
      entityId: e.entityId,
      orgId: e.orgId,
      payload: payloadJson(e.payload),
      dedupeKey: undefined,
      idempotencyKey: e.idempotencyKey,
    }));
  },

  // This CRM only calls; it is never polled.
  pollRequest(_cursor, _context) {
    return undefined;
  },

  handlePoll(_page, _context) {
    throw { tag: "bad-request", val: "this adapter does not poll" };
  },
};
