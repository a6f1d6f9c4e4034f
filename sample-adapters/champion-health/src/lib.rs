//! The reference adapter for Champion Health, a benefits broker's home-grown CRM.
//!
//! Webhook deliveries (`agent.*`, `enrollment.*`, `commission.calculated`) and poll pages of
//! agent and enrollment records become `agent.created`, `agent.updated`, `member.enrolled`,
//! `member.enrollment_updated` and `commission.calculated` events. Rates, splits and amounts
//! arrive as JSON numbers or strings and leave as exact decimal strings. The formats are in
//! README.md.

mod records;

use crm_adapter_sdk::serde_json::{self, Value};
use crm_adapter_sdk::{
    Adapter, AdapterError, AdapterInfo, Context, Event, EventTypeDecl, PollOutput, PollPage,
    WebhookRequest, state,
};

use crm_adapter_sdk::fields::Obj;

/// The adapter.
pub struct ChampionHealth;

crm_adapter_sdk::export_adapter!(ChampionHealth);

/// Decimal fields of the enrollment events.
const ENROLLMENT_DECIMALS: [&str; 3] = ["/pepm_rate", "/split_pct", "/splits/*/split_pct"];

/// The connection setting naming the org for deliveries that carry none.
pub const DEFAULT_ORG_SETTING: &str = "default_org_id";

impl Adapter for ChampionHealth {
    fn describe() -> AdapterInfo {
        AdapterInfo::new("champion-health", env!("CARGO_PKG_VERSION"), "custom")
            .event_type("agent.created")
            .event_type("agent.updated")
            .event_type(EventTypeDecl::new("member.enrolled").decimal_fields(ENROLLMENT_DECIMALS))
            .event_type(
                EventTypeDecl::new("member.enrollment_updated").decimal_fields(ENROLLMENT_DECIMALS),
            )
            .event_type(EventTypeDecl::new("commission.calculated").decimal_fields([
                "/pepm_rate",
                "/split_pct",
                "/commission_amount",
            ]))
    }

    fn handle_webhook(req: &WebhookRequest, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
        if let Some(content_type) = req.header("content-type")
            && !content_type.to_ascii_lowercase().contains("json")
        {
            return Err(AdapterError::bad_request(format!(
                "content type `{content_type}` is not JSON"
            )));
        }
        let body: Value = req.json()?;
        let root = Obj::root(&body, "the delivery")?;
        let kind = root.string("event")?;
        if let Some(header) = req.header("x-champion-event")
            && header != kind
        {
            return Err(AdapterError::bad_request(format!(
                "header x-champion-event says `{header}` but the body says `{kind}`"
            )));
        }
        if kind == "ping" {
            return Err(AdapterError::ignored("ping delivery"));
        }
        let event_id = root.id("event_id")?;
        let org = org_for(&root, ctx)?;
        let occurred_at = root.opt_string("occurred_at")?;

        let (event_type, entity_id, payload) = match kind.as_str() {
            "agent.created" | "agent.updated" => {
                let agent = records::agent(&root.child("agent")?)?;
                let payload = to_payload(&agent)?;
                remember("agent", &agent.agent_id, &payload)?;
                (kind.as_str(), agent.agent_id, payload)
            }
            "enrollment.created" | "enrollment.updated" => {
                let enrollment = records::enrollment(&root)?;
                let payload = to_payload(&enrollment)?;
                remember("enrollment", &enrollment.enrollment_id, &payload)?;
                let event_type = if kind == "enrollment.created" {
                    "member.enrolled"
                } else {
                    "member.enrollment_updated"
                };
                (event_type, enrollment.member_id, payload)
            }
            "commission.calculated" => {
                let commission = records::commission(&root)?;
                let payload = to_payload(&commission)?;
                (kind.as_str(), commission.commission_id, payload)
            }
            other => {
                return Err(AdapterError::ignored(format!(
                    "`{other}` deliveries are not used by this adapter"
                )));
            }
        };
        let event = build(event_type, entity_id, payload, occurred_at, org)?.dedupe_key(event_id);
        Ok(vec![event])
    }

    fn handle_poll(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
        if let Some(content_type) = &page.content_type
            && !content_type.to_ascii_lowercase().contains("json")
        {
            return Err(AdapterError::bad_request(format!(
                "content type `{content_type}` is not JSON"
            )));
        }
        let body: Value = page.json()?;
        let root = Obj::root(&body, "the poll page")?;
        let records = root.objects("records")?;
        let seen = records.len();
        let mut events = Vec::new();
        let mut unchanged = 0usize;
        for record in records {
            let kind = record.string("type")?;
            let (change, created, updated, entity_id, payload, key) = match kind.as_str() {
                "agent" => {
                    let agent = records::agent(&record.child("agent")?)?;
                    let payload = to_payload(&agent)?;
                    let change = remember("agent", &agent.agent_id, &payload)?;
                    let key = format!("agent/{}", agent.agent_id);
                    (
                        change,
                        "agent.created",
                        "agent.updated",
                        agent.agent_id,
                        payload,
                        key,
                    )
                }
                "enrollment" => {
                    let enrollment = records::enrollment(&record)?;
                    let payload = to_payload(&enrollment)?;
                    let change = remember("enrollment", &enrollment.enrollment_id, &payload)?;
                    let key = format!("enrollment/{}", enrollment.enrollment_id);
                    let (created, updated) = ("member.enrolled", "member.enrollment_updated");
                    (change, created, updated, enrollment.member_id, payload, key)
                }
                other => {
                    // A new record type must not block the connection's polling.
                    crm_adapter_sdk::warn!(
                        "{}: record type `{other}` skipped",
                        record.name("type")
                    );
                    continue;
                }
            };
            let event_type = match change {
                Change::New(_) => created,
                Change::Changed(_) => updated,
                Change::Unchanged => {
                    unchanged += 1;
                    continue;
                }
            };
            let fingerprint = change.fingerprint().unwrap_or_default();
            let org = org_for(&record, ctx)?;
            let updated_at = record.opt_string("updated_at")?;
            let event = build(event_type, entity_id, payload, updated_at, org)?
                .dedupe_key(format!("{key}/{fingerprint}"));
            events.push(event);
        }
        crm_adapter_sdk::debug!("{} changed records, {unchanged} unchanged", events.len());
        // Every record counts as seen, unchanged and skipped ones too.
        let mut output = PollOutput::new(events).records(seen);
        output.next_cursor = root.opt_string("next_cursor")?;
        Ok(output)
    }
}

/// The org of a delivery or record: its `org_id`, else the connection's `default_org_id`
/// setting, else the org the connection belongs to (an org's connection may not emit
/// platform-level events), else none (platform level). An org the connection does not allow
/// fails the invocation (it is kept, and can be redriven once the org is allowed).
fn org_for(obj: &Obj<'_>, ctx: &Context) -> Result<Option<String>, AdapterError> {
    let org = match obj.opt_string("org_id")? {
        Some(org) => Some(org),
        None => ctx
            .setting(DEFAULT_ORG_SETTING)
            .map(str::to_owned)
            .or_else(|| ctx.org_id.clone()),
    };
    match org {
        Some(org) if !ctx.allows_org(&org) => Err(AdapterError::failed(format!(
            "org `{org}` is not one of this connection's allowed orgs; allow it on the \
             connection, then redrive"
        ))),
        org => Ok(org),
    }
}

fn to_payload(record: &impl serde::Serialize) -> Result<Value, AdapterError> {
    serde_json::to_value(record)
        .map_err(|e| AdapterError::failed(format!("payload does not serialize: {e}")))
}

/// The event, with `occurred_at` added to the payload (after fingerprinting, so that a record
/// touched without changes is not seen as changed).
fn build(
    event_type: &str,
    entity_id: String,
    mut payload: Value,
    occurred_at: Option<String>,
    org: Option<String>,
) -> Result<Event, AdapterError> {
    if let (Some(at), Value::Object(map)) = (occurred_at, &mut payload) {
        map.insert("occurred_at".into(), Value::String(at));
    }
    Ok(Event::new(event_type, entity_id)?
        .org_opt(org)
        .payload(payload)?)
}

/// What the state knew about a record.
enum Change {
    New(String),
    Changed(String),
    Unchanged,
}

impl Change {
    fn fingerprint(&self) -> Option<&str> {
        match self {
            Change::New(f) | Change::Changed(f) => Some(f),
            Change::Unchanged => None,
        }
    }
}

/// Compares a record's payload with the fingerprint the state holds for it, and stores the new
/// one. State key: `fp/<kind>/<id>` (the id hashed when it is long, to stay within key limits).
fn remember(kind: &str, id: &str, payload: &Value) -> Result<Change, AdapterError> {
    let fingerprint = format!("{:016x}", fnv1a(payload.to_string().as_bytes()));
    let mut key = format!("fp/{kind}/{id}");
    if key.len() > 128 {
        key = format!("fp/{kind}/#{:016x}", fnv1a(id.as_bytes()));
    }
    let previous = state::get_string(&key)?;
    if previous.as_deref() == Some(fingerprint.as_str()) {
        return Ok(Change::Unchanged);
    }
    state::set(&key, &fingerprint)?;
    Ok(match previous {
        None => Change::New(fingerprint),
        Some(_) => Change::Changed(fingerprint),
    })
}

/// 64-bit FNV-1a: small, deterministic, good enough to notice that a record changed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
