//! An adapter of the frozen `crm:adapter@0.1.0` world, written against its WIT with plain
//! wit-bindgen, as tenants' 0.1.0 components were: the host must keep running it unchanged.
//!
//! `handle-webhook` emits one `legacy.seen` event per call with the body as its entity id and
//! counts calls in state (`calls`), logging each; `handle-poll` emits one event and appends
//! `+` to the cursor.

// The generated bindings and export glue are `unsafe` code: allowed here, and nowhere else.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/deps/crm-adapter@0.1.0",
        world: "crm:adapter/crm-adapter@0.1.0",
    });

    use super::Legacy;
    export!(Legacy);
}

use bindings::crm::adapter::types::{
    AdapterError, AdapterInfo, ConnectionContext, Event, EventTypeDecl, PollOutput, PollPage,
    WebhookRequest,
};
use bindings::crm::adapter::{log, state};

struct Legacy;

fn event(entity_id: String, calls: u64) -> Event {
    Event {
        event_type: "legacy.seen".into(),
        entity_type: "legacy".into(),
        entity_id,
        org_id: None,
        payload: format!(r#"{{"calls":{calls},"amount":"12.50"}}"#),
        dedupe_key: None,
    }
}

impl bindings::exports::crm::adapter::adapter::Guest for Legacy {
    fn describe() -> AdapterInfo {
        AdapterInfo {
            name: "legacy".into(),
            version: "0.1.0".into(),
            provider: "custom".into(),
            event_types: vec![EventTypeDecl {
                name: "legacy.seen".into(),
                decimal_fields: vec!["/amount".into()],
            }],
        }
    }

    fn handle_webhook(
        request: WebhookRequest,
        context: ConnectionContext,
    ) -> Result<Vec<Event>, AdapterError> {
        let calls = state::get("calls")
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        state::set("calls", calls.to_string().as_bytes())
            .map_err(|_| AdapterError::Failed("state refused".into()))?;
        log::log(
            log::Level::Info,
            &format!("legacy call {calls} for {}", context.connection_id),
        );
        let id = String::from_utf8(request.body)
            .map_err(|_| AdapterError::BadRequest("the body is not text".into()))?;
        Ok(vec![event(id.trim().to_owned(), calls)])
    }

    fn handle_poll(
        page: PollPage,
        _context: ConnectionContext,
    ) -> Result<PollOutput, AdapterError> {
        let cursor = format!("{}+", page.cursor.unwrap_or_default());
        Ok(PollOutput {
            events: vec![event(format!("page{}", cursor.len()), 0)],
            next_cursor: Some(cursor),
        })
    }
}
