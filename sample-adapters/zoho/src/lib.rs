//! A sample adapter for Zoho CRM: Contacts, Accounts and Deals become `contact.*`,
//! `account.*` and `deal.*` events, with amounts as exact decimal strings.
//!
//! Two ways in, one mapping (the field tables of [`records`]):
//!
//! - **Notification callbacks** ([`notification`]), which Zoho POSTs when records of a watched
//!   module are inserted, updated or deleted: one event per record id.
//! - **List API pages** ([`poll`]), the polling path, with change detection in the state:
//!   fetched by the host ([`api`]: the records modified, then those deleted, per module) or
//!   pushed by an external poller.
//!
//! The formats, settings and signature scheme are in README.md.

pub mod api;
pub mod memory;
pub mod notification;
pub mod poll;
pub mod records;

use crm_adapter_sdk::serde_json::{Map, Value};
use crm_adapter_sdk::{
    Adapter, AdapterError, AdapterInfo, Context, Event, EventTypeDecl, HttpRequest, PollOutput,
    PollPage, Timestamp, WebhookRequest,
};

use records::Module;

/// The adapter.
pub struct Zoho;

crm_adapter_sdk::export_adapter!(Zoho);

/// The connection setting naming the org every event is scoped to (none: platform level).
pub const DEFAULT_ORG_SETTING: &str = "default_org_id";

impl Adapter for Zoho {
    fn describe() -> AdapterInfo {
        let mut info = AdapterInfo::new("zoho", env!("CARGO_PKG_VERSION"), "zoho");
        for module in Module::ALL {
            for action in ["created", "updated", "deleted"] {
                info = info.event_type(
                    EventTypeDecl::new(format!("{}.{action}", module.entity()))
                        .decimal_fields(module.decimal_pointers()),
                );
            }
        }
        info
    }

    fn handle_webhook(req: &WebhookRequest, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
        if let Some(content_type) = req.header("content-type")
            && !content_type.to_ascii_lowercase().contains("json")
        {
            return Err(AdapterError::bad_request(format!(
                "content type `{content_type}` is not JSON; Zoho notifications are JSON"
            )));
        }
        notification::events(&req.json()?, ctx)
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
            None => poll::poll(page, ctx),
        }
    }
}

/// The org of every event: the connection's `default_org_id` setting, else the org the
/// connection belongs to, else none (platform level: only a platform-level connection may
/// emit those). Zoho records carry no platform org; an org the connection does not allow fails
/// the invocation (it is kept, and can be redriven once the org is allowed).
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
/// `Deals/5725767000001148082@2025-12-01T10:00:00Z/created` (the time in UTC).
fn version_key(module: Module, id: &str, version: Timestamp, action: &str) -> String {
    format!(
        "{}/{id}@{}/{action}",
        module.api_name(),
        version.to_rfc3339()
    )
}

/// An `<entity>.<action>` event for a record, with `occurred_at` added to its payload.
fn event(
    module: Module,
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
    Ok(Event::new(&format!("{}.{action}", module.entity()), id)?
        .org_opt(org)
        .dedupe_key(dedupe_key)
        .payload(Value::Object(payload))?)
}

#[cfg(test)]
mod tests;
