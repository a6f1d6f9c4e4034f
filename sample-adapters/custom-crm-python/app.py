"""The component's entry point: the `adapter` export of the crm-adapter world, in Python.

Built with componentize-py (see README.md). All logic lives in `custom_crm.py`; this module
only converts between its dictionaries and the WIT types.
"""

import custom_crm
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, types


class Adapter(exports.Adapter):
    def describe(self) -> types.AdapterInfo:
        return types.AdapterInfo(
            name=custom_crm.NAME,
            version=custom_crm.VERSION,
            provider=custom_crm.PROVIDER,
            event_types=[
                types.EventTypeDecl(name=name, decimal_fields=decimals, pii_fields=pii)
                for name, decimals, pii in custom_crm.EVENT_TYPES
            ],
        )

    def handle_webhook(self, request, context):
        settings = dict(context.settings)
        try:
            events = custom_crm.handle_webhook(request.body, settings)
        except custom_crm.BadRequest as e:
            raise Err(types.AdapterError_BadRequest(str(e)))
        except custom_crm.Ignored as e:
            raise Err(types.AdapterError_Ignored(str(e)))
        log.log(log.Level.INFO, f"{len(events)} event(s)")
        return [
            types.Event(
                event_type=e["event_type"],
                entity_type=e["event_type"].split(".")[0],
                entity_id=e["entity_id"],
                org_id=e["org_id"],
                payload=custom_crm.payload_json(e["payload"]),
                dedupe_key=None,
                idempotency_key=e["idempotency_key"],
            )
            for e in events
        ]

    def poll_request(self, cursor, context):
        # This CRM only calls; it is never polled.
        return None

    def handle_poll(self, page, context):
        raise Err(types.AdapterError_BadRequest("this adapter does not poll"))
