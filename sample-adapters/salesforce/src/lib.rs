//! A sample adapter for Salesforce: Account, Contact and Opportunity changes become
//! `account.*`, `contact.*` and `opportunity.*` events, with amounts as exact decimal strings.
//!
//! Three ways in, one mapping (the field tables of [`records`]):
//!
//! - **Change Data Capture events** ([`cdc`]), JSON POSTed by a relay that subscribes to
//!   Salesforce's streaming channels: one platform event per record id of each change event.
//! - **Outbound messages** ([`outbound`]), the SOAP notifications Salesforce POSTs itself.
//! - **SOQL query pages** ([`soql`]), the polling path: the host fetches them itself
//!   ([`api`]: `queryAll` per object, then each `nextRecordsUrl`), or an external poller
//!   pushes them.
//!
//! A webhook delivery is told apart by its content type: XML (`text/xml`, what Salesforce
//! sends) is an outbound message, JSON a delivery of change events; without a content type,
//! by its first character. The formats, settings and signature schemes are in README.md.

pub mod api;
pub mod cdc;
pub mod outbound;
pub mod records;
pub mod snapshot;
pub mod soql;

use crm_adapter_sdk::fields::Obj;
use crm_adapter_sdk::serde_json::{Map, Value};
use crm_adapter_sdk::{
    Adapter, AdapterError, AdapterInfo, Context, Event, EventTypeDecl, HttpRequest, PollOutput,
    PollPage, WebhookRequest,
};

use records::Object;

/// The adapter.
pub struct Salesforce;

crm_adapter_sdk::export_adapter!(Salesforce);

/// The connection setting naming the org every event is scoped to (none: platform level).
pub const DEFAULT_ORG_SETTING: &str = "default_org_id";

/// The actions each object's events may have, in `describe` order.
fn actions(object: Object) -> &'static [&'static str] {
    match object {
        Object::Account => &["created", "updated", "deleted"],
        Object::Contact => &["created", "updated", "deleted"],
        Object::Opportunity => &["created", "updated", "won", "lost", "deleted"],
    }
}

impl Adapter for Salesforce {
    fn describe() -> AdapterInfo {
        let mut info = AdapterInfo::new("salesforce", env!("CARGO_PKG_VERSION"), "salesforce");
        for object in Object::ALL {
            for action in actions(object) {
                info = info.event_type(
                    EventTypeDecl::new(format!("{}.{action}", object.entity()))
                        .decimal_fields(object.decimal_pointers()),
                );
            }
        }
        info
    }

    fn handle_webhook(req: &WebhookRequest, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
        match delivery_kind(req)? {
            DeliveryKind::OutboundMessage => outbound::events(req.body_text()?, ctx),
            DeliveryKind::ChangeEvents => cdc::events(&req.json()?, ctx),
        }
    }

    fn poll_request(
        cursor: Option<&str>,
        ctx: &Context,
    ) -> Result<Option<HttpRequest>, AdapterError> {
        api::poll_request(cursor, ctx)
    }

    fn handle_poll(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
        match page.request {
            // The host fetched it for `poll_request`: the cursor is the adapter's own.
            Some(_) => api::handle_page(page, ctx),
            None => soql::poll(page, ctx),
        }
    }
}

/// What a webhook delivery holds.
#[derive(Debug, PartialEq, Eq)]
enum DeliveryKind {
    OutboundMessage,
    ChangeEvents,
}

fn delivery_kind(req: &WebhookRequest) -> Result<DeliveryKind, AdapterError> {
    if let Some(content_type) = req.header("content-type") {
        // `text/xml; charset=utf-8`, `application/soap+xml`, `application/json`...
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if media_type.ends_with("/xml") || media_type.ends_with("+xml") {
            return Ok(DeliveryKind::OutboundMessage);
        }
        if media_type.ends_with("/json") || media_type.ends_with("+json") {
            return Ok(DeliveryKind::ChangeEvents);
        }
        return Err(AdapterError::bad_request(format!(
            "content type `{content_type}` is neither XML (outbound messages) nor JSON \
             (change events)"
        )));
    }
    let first = req.body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'<') => Ok(DeliveryKind::OutboundMessage),
        Some(b'{' | b'[') => Ok(DeliveryKind::ChangeEvents),
        Some(_) => Err(AdapterError::bad_request(
            "the body is neither XML (outbound messages) nor JSON (change events)",
        )),
        None => Err(AdapterError::bad_request("request body is empty")),
    }
}

/// The org of every event: the connection's `default_org_id` setting, else the org the
/// connection belongs to, else none (platform level: only a platform-level connection may
/// emit those). Salesforce records carry no platform org; an org the connection does not allow
/// fails the invocation (it is kept, and can be redriven once the org is allowed).
fn org_for(ctx: &Context) -> Result<Option<String>, AdapterError> {
    match ctx.setting(DEFAULT_ORG_SETTING) {
        Some(org) if !ctx.allows_org(org) => Err(AdapterError::failed(format!(
            "org `{org}` (setting `{DEFAULT_ORG_SETTING}`) is not one of this connection's \
             allowed orgs; allow it on the connection, then redrive"
        ))),
        Some(org) => Ok(Some(org.to_owned())),
        None => Ok(ctx.org_id.clone()),
    }
}

/// The dedupe and idempotency key of a polled record's event: its identity and version,
/// `Opportunity/0065g00000Qb2RsAAJ@2025-12-01T11:00:00Z/created`. Salesforce changes
/// `SystemModstamp` on every save, so one version of a record is one event whatever page (or
/// run) carries it again.
fn version_key(object: Object, id: &str, version: &str, action: &str) -> String {
    format!("{}/{id}@{version}/{action}", object.api_name())
}

/// An `<entity>.<action>` event for a record, with `occurred_at` added to its payload.
fn event(
    object: Object,
    action: &str,
    id: &str,
    mut payload: Map<String, Value>,
    occurred_at: Option<&str>,
    org: Option<&str>,
    dedupe_key: String,
) -> Result<Event, AdapterError> {
    if let Some(at) = occurred_at {
        payload.insert("occurred_at".into(), Value::String(at.to_owned()));
    }
    Ok(Event::new(&format!("{}.{action}", object.entity()), id)?
        .org_opt(org)
        .dedupe_key(dedupe_key)
        .payload(Value::Object(payload))?)
}

/// When a whole record last changed, as RFC 3339 UTC (`2025-12-01T11:00:00Z`, whatever the
/// form Salesforce wrote it in): its `LastModifiedDate`, else its `SystemModstamp`.
fn modified_at(record: &Obj<'_>) -> Result<Option<String>, AdapterError> {
    let at = match record.opt_timestamp("LastModifiedDate")? {
        Some(at) => Some(at),
        None => record.opt_timestamp("SystemModstamp")?,
    };
    Ok(at.map(|at| at.to_rfc3339()))
}

/// Why a delivery produced no event, bounded in length.
fn nothing_to_emit(reasons: &[String]) -> String {
    const SHOWN: usize = 3;
    match reasons {
        [] => "the delivery holds no messages".into(),
        [one] => one.clone(),
        _ => {
            let shown = reasons[..reasons.len().min(SHOWN)].join("; ");
            match reasons.len().saturating_sub(SHOWN) {
                0 => format!("nothing to emit: {shown}"),
                more => format!("nothing to emit: {shown}; and {more} more"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
