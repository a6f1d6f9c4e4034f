//! Sample adapter for HubSpot.
//!
//! - **Webhooks**: HubSpot posts batches (a JSON array) of subscription events. Each event of a
//!   mapped subscription (`contact.creation`, `deal.propertyChange`... and the generic
//!   `object.*` ones for contacts, companies and deals) becomes one platform event, keyed by
//!   HubSpot's `eventId`; events of other subscriptions are skipped, not the batch.
//! - **Polling**: pages of HubSpot's CRM v3 list or search API become `*.created`,
//!   `*.updated`, `contact.deleted` and `deal.won` events for the records that are new or
//!   changed since the connection last saw them (fingerprints kept in the connection state).
//!   The host fetches the pages itself ([`api`]: a search per type for what changed, then the
//!   archived contacts), or an external poller pushes them.
//!
//! Money properties (`amount`, `hs_arr`, `annualrevenue`...) leave as exact decimal strings.
//! The formats, settings and choices are in README.md.

pub mod api;
mod objects;
mod poll;
mod webhook;

use crm_adapter_sdk::serde_json::Value;
use crm_adapter_sdk::{
    Adapter, AdapterError, AdapterInfo, Context, Event, EventTypeDecl, HttpRequest, PollOutput,
    PollPage, WebhookRequest,
};

pub use objects::Object;
pub use poll::Stage;

/// The adapter.
pub struct HubSpot;

crm_adapter_sdk::export_adapter!(HubSpot);

/// The connection setting naming the org of events whose portal is not mapped.
pub const DEFAULT_ORG_SETTING: &str = "default_org_id";
/// Prefix of the settings mapping a portal to an org: `portal_org.<portalId>` = org id.
pub const PORTAL_ORG_PREFIX: &str = "portal_org.";
/// The setting listing the deal stages that count as won (comma separated).
pub const WON_STAGES_SETTING: &str = "won_deal_stages";
/// The setting listing the lists to poll, in order (comma separated): `contacts`,
/// `companies`, `deals`, `archived-contacts`.
pub const POLL_OBJECTS_SETTING: &str = "poll_objects";

/// Event types and what they carry; every one declares the money properties of its object.
const EVENT_TYPES: [(Object, &str); 8] = [
    (Object::Contact, "created"),
    (Object::Contact, "updated"),
    (Object::Contact, "deleted"),
    (Object::Company, "created"),
    (Object::Company, "updated"),
    (Object::Deal, "created"),
    (Object::Deal, "updated"),
    (Object::Deal, "won"),
];

impl Adapter for HubSpot {
    fn describe() -> AdapterInfo {
        EVENT_TYPES.into_iter().fold(
            AdapterInfo::new("hubspot", env!("CARGO_PKG_VERSION"), "hubspot"),
            |info, (object, action)| {
                info.event_type(
                    EventTypeDecl::new(format!("{}.{action}", object.entity()))
                        .decimal_fields(object.decimal_fields()),
                )
            },
        )
    }

    fn handle_webhook(req: &WebhookRequest, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
        check_json(req.header("content-type"))?;
        let settings = Settings::new(ctx)?;
        let body: Value = req.json()?;
        webhook::events(&body, ctx, &settings)
    }

    fn poll_request(
        cursor: Option<&str>,
        ctx: &Context,
    ) -> Result<Option<HttpRequest>, AdapterError> {
        api::poll_request(cursor, ctx)
    }

    fn handle_poll(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
        if page.request.is_some() {
            // The host fetched it for `poll_request`: the cursor is the adapter's own.
            return api::handle_page(page, ctx);
        }
        check_json(page.content_type.as_deref())?;
        let settings = Settings::new(ctx)?;
        let stage = poll::stage_of(page.cursor.as_deref(), &settings)?;
        let body: Value = page.json()?;
        poll::output(&body, stage, ctx, &settings)
    }
}

fn check_json(content_type: Option<&str>) -> Result<(), AdapterError> {
    match content_type {
        Some(content_type) if !content_type.to_ascii_lowercase().contains("json") => Err(
            AdapterError::bad_request(format!("content type `{content_type}` is not JSON")),
        ),
        _ => Ok(()),
    }
}

/// The connection's settings, read once per invocation.
pub struct Settings {
    won_stages: Vec<String>,
    poll_stages: Vec<Stage>,
}

impl Settings {
    /// Reads the settings; a malformed one fails the invocation (a configuration problem: the
    /// delivery is kept and can be redriven once the setting is fixed).
    pub fn new(ctx: &Context) -> Result<Self, AdapterError> {
        let won_stages = list(ctx.setting(WON_STAGES_SETTING).unwrap_or("closedwon"));
        if won_stages.is_empty() {
            return Err(AdapterError::failed(format!(
                "connection setting `{WON_STAGES_SETTING}` names no deal stage"
            )));
        }
        let default = Stage::DEFAULT.map(Stage::name).join(",");
        let poll_stages = list(ctx.setting(POLL_OBJECTS_SETTING).unwrap_or(&default))
            .iter()
            .map(|name| {
                Stage::parse(name).ok_or_else(|| {
                    AdapterError::failed(format!(
                        "connection setting `{POLL_OBJECTS_SETTING}`: `{name}` is not one of \
                         contacts, companies, deals, archived-contacts"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if poll_stages.is_empty() {
            return Err(AdapterError::failed(format!(
                "connection setting `{POLL_OBJECTS_SETTING}` names no list"
            )));
        }
        Ok(Self {
            won_stages,
            poll_stages,
        })
    }

    /// Whether a deal in `stage` (a pipeline stage id) is won.
    pub fn is_won(&self, stage: &str) -> bool {
        self.won_stages.iter().any(|won| won == stage)
    }

    /// The lists a poll cycle walks, in order.
    pub fn poll_lists(&self) -> &[Stage] {
        &self.poll_stages
    }

    /// The list a poll run walks after `stage`; `None` after the last one.
    pub fn poll_list_after(&self, stage: Stage) -> Option<Stage> {
        let at = self.poll_stages.iter().position(|s| *s == stage)?;
        self.poll_stages.get(at + 1).copied()
    }

    /// The list to poll after `stage`: the next one, or the first after the last (or after a
    /// list no longer polled).
    pub fn poll_after(&self, stage: Stage) -> Stage {
        let next = self
            .poll_stages
            .iter()
            .position(|s| *s == stage)
            .map_or(0, |i| i + 1);
        self.poll_stages
            .get(next)
            .copied()
            .unwrap_or(self.poll_stages[0])
    }
}

/// A comma-separated setting, trimmed, without empty items.
fn list(setting: &str) -> Vec<String> {
    setting
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The org of an event from `portal` (`None` for polled records, which carry no portal id):
/// the portal's `portal_org.<portalId>` setting, else `default_org_id`, else the org the
/// connection belongs to (an org's connection may not emit platform-level events), else none
/// (platform level). A platform-level connection that maps portals must map every portal it
/// hears from (or set `default_org_id`): an unmapped one fails the invocation rather than
/// publish at platform level. An org the connection does not allow fails it too. Either way
/// the delivery is kept and can be redriven once the settings are fixed.
pub fn org_for(ctx: &Context, portal: Option<&str>) -> Result<Option<String>, AdapterError> {
    let mapped = portal.and_then(|portal| ctx.setting(&format!("{PORTAL_ORG_PREFIX}{portal}")));
    let org = match mapped
        .or_else(|| ctx.setting(DEFAULT_ORG_SETTING))
        .or(ctx.org_id.as_deref())
    {
        Some(org) => org,
        None if ctx
            .settings
            .iter()
            .any(|(key, _)| key.starts_with(PORTAL_ORG_PREFIX)) =>
        {
            return Err(AdapterError::failed(match portal {
                Some(portal) => format!(
                    "portal {portal} is not mapped to an org: set `{PORTAL_ORG_PREFIX}{portal}` \
                     (or `{DEFAULT_ORG_SETTING}`) on the connection, then redrive"
                ),
                None => format!(
                    "polled records carry no portal id: set `{DEFAULT_ORG_SETTING}` on the \
                     connection, then redrive"
                ),
            }));
        }
        None => return Ok(None),
    };
    if !ctx.allows_org(org) {
        return Err(AdapterError::failed(format!(
            "org `{org}` is not one of this connection's allowed orgs; allow it on the \
             connection, then redrive"
        )));
    }
    Ok(Some(org.to_owned()))
}

#[cfg(test)]
mod tests;
