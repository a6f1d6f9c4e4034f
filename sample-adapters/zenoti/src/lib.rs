//! Sample adapter for Zenoti (salons, spas and med spas).
//!
//! - **Webhooks**: Zenoti posts one envelope per event (`id`, `event_type` such as
//!   `AppointmentGroup.Created` or `Guest.Updated`, `event_timestamp`, `data`). Appointment
//!   envelopes become one `appointment.created`, `appointment.updated` or
//!   `appointment.completed` event per appointment of the group; guest envelopes
//!   `member.created` or `member.updated`; service envelopes `service.created` or
//!   `service.updated`. Other resources (invoices, classes, employees...) are ignored.
//! - **Polling**: pages of Zenoti's list APIs (a center's appointments over a date range, its
//!   guests, its services) become the same events for the records that are new or changed since
//!   the connection last saw them (fingerprints kept in the connection state). The host
//!   fetches each center's appointments itself ([`api`], a week at a time up to today), or
//!   an external poller pushes pages.
//!
//! Prices leave as exact decimal strings; each center maps to one of the tenant's orgs. The
//! formats, settings and choices are in README.md.

pub mod api;
mod records;

use crm_adapter_sdk::changes::{self, Change, ChangeTracker, FINGERPRINT_LEN};
use crm_adapter_sdk::fields::Obj;
use crm_adapter_sdk::serde_json::{self, Value};
use crm_adapter_sdk::{
    Adapter, AdapterError, AdapterInfo, Context, Event, EventTypeDecl, HttpRequest, PollOutput,
    PollPage, WebhookRequest,
};

use records::Inherited;

/// The adapter.
pub struct Zenoti;

crm_adapter_sdk::export_adapter!(Zenoti);

/// The connection setting naming the org of records whose center is not mapped, and of
/// records that name no center.
pub const DEFAULT_ORG_SETTING: &str = "default_org_id";
/// Prefix of the settings mapping a Zenoti center to an org: `center_org.<center id>` = org id.
pub const CENTER_ORG_PREFIX: &str = "center_org.";

/// Decimal fields of the appointment events.
const APPOINTMENT_DECIMALS: [&str; 2] = ["/price", "/final_price"];

/// Flag kept with an appointment's fingerprint once it is completed.
const COMPLETED: &str = "c";

/// The flags of a remembered mark (after its fingerprint: `c` is a hex digit too).
fn flags(mark: &str) -> &str {
    mark.get(FINGERPRINT_LEN..).unwrap_or("")
}

impl Adapter for Zenoti {
    fn describe() -> AdapterInfo {
        let appointment =
            |name: &str| EventTypeDecl::new(name).decimal_fields(APPOINTMENT_DECIMALS);
        let service = |name: &str| EventTypeDecl::new(name).decimal_field("/price");
        AdapterInfo::new("zenoti", env!("CARGO_PKG_VERSION"), "zenoti")
            .event_type(appointment("appointment.created"))
            .event_type(appointment("appointment.updated"))
            .event_type(appointment("appointment.completed"))
            .event_type("member.created")
            .event_type("member.updated")
            .event_type(service("service.created"))
            .event_type(service("service.updated"))
    }

    fn handle_webhook(req: &WebhookRequest, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
        check_json(req.header("content-type"))?;
        let body: Value = req.json()?;
        let envelope = Obj::root(&body, "a Zenoti webhook")?;
        let event_type = envelope.string("event_type")?;
        let (resource, action) = event_type.split_once('.').ok_or_else(|| {
            AdapterError::bad_request(format!(
                "`event_type` is `{event_type}`, not `Resource.Action` (e.g. `Guest.Created`)"
            ))
        })?;
        let kind = match resource {
            "AppointmentGroup" | "Appointment" if action == "Deleted" => {
                return Err(AdapterError::ignored(format!(
                    "`{event_type}`: the platform has no event for deleted appointments"
                )));
            }
            "AppointmentGroup" | "Appointment" => Kind::Appointments,
            "Guest" => Kind::Members,
            "Service" => Kind::Services,
            _ => {
                return Err(AdapterError::ignored(format!(
                    "`{event_type}` deliveries are not used by this adapter"
                )));
            }
        };
        let created = action == "Created";
        if kind != Kind::Appointments && !created && action != "Updated" {
            return Err(AdapterError::ignored(format!(
                "`{event_type}` deliveries are not used by this adapter"
            )));
        }
        let delivery_id = envelope.id("id")?;
        let occurred_at = envelope.opt_string("event_timestamp")?;
        let data = envelope.child("data")?;
        let records = match kind {
            // A group of appointments (one guest's visit), or a single appointment's event in
            // the same shape.
            Kind::Appointments => {
                let group = Inherited::group(&data)?;
                data.objects("appointments")?
                    .iter()
                    .map(|a| kind.record(a, &group))
                    .collect::<Result<Vec<_>, _>>()?
            }
            _ => vec![kind.record(&data, &Inherited::default())?],
        };
        if records.is_empty() {
            return Err(AdapterError::ignored(format!(
                "`{event_type}` carries no appointment"
            )));
        }
        let mut seen = kind.seen();
        let mut events = Vec::with_capacity(records.len());
        for mut record in records {
            let completed = kind == Kind::Appointments
                && (record.closed || matches!(action, "Completed" | "Closed"));
            let actions: &[&str] = match (created, completed) {
                // Booked and closed at once (a walk-in paid on the spot).
                (true, true) => &["created", "completed"],
                (true, false) => &["created"],
                (false, true) => &["completed"],
                (false, false) => &["updated"],
            };
            record.closed = completed;
            // Record what the webhook carried, so that the next poll does not repeat it.
            seen.observe(&record.key, &record.mark());
            if let (Some(at), Value::Object(map)) = (&occurred_at, &mut record.payload) {
                map.insert("occurred_at".into(), Value::String(at.clone()));
            }
            for (i, action) in actions.iter().enumerate() {
                // A group holds several appointments; a second event needs its own key.
                let dedupe_key = match (kind, i) {
                    (Kind::Appointments, 0) => format!("{delivery_id}/{}", record.id),
                    (Kind::Appointments, _) => format!("{delivery_id}/{}/{action}", record.id),
                    _ => delivery_id.clone(),
                };
                events.push(record.event(kind, action, dedupe_key, ctx)?);
            }
        }
        seen.save()?;
        Ok(events)
    }

    fn poll_request(
        cursor: Option<&str>,
        ctx: &Context,
    ) -> Result<Option<HttpRequest>, AdapterError> {
        api::poll_request(cursor, ctx)
    }

    fn handle_poll(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
        if page.request.is_some() {
            // The host fetched it for `poll_request`: a center's appointments.
            return api::handle_page(page, ctx);
        }
        check_json(page.content_type.as_deref())?;
        let body: Value = page.json()?;
        let root = Obj::root(&body, "a Zenoti list page")?;
        let lists: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|kind| matches!(body.get(kind.plural()), Some(v) if !v.is_null()))
            .collect();
        let kind = match lists.as_slice() {
            [kind] => *kind,
            [] => {
                return Err(AdapterError::bad_request(
                    "the page holds none of `appointments`, `guests`, `services`",
                ));
            }
            _ => {
                return Err(AdapterError::bad_request(
                    "the page holds more than one of `appointments`, `guests`, `services`",
                ));
            }
        };
        // Zenoti's list APIs are per center; their records do not always repeat it.
        let inherited = Inherited {
            center_id: records::opt_id(&root, "center_id")?,
            ..Inherited::default()
        };
        let records = root.objects(kind.plural())?;
        let events = poll_events(kind, &records, &inherited, ctx)?;
        // Zenoti's lists have no change cursor: the poller fetches a window (a center's
        // appointments for a few days, a page of guests), and change detection does the rest.
        Ok(PollOutput::new(events).records(records.len()))
    }
}

/// The events of the records of one list page: those new or changed since the connection last
/// saw them. Keyed `<list>/<key>/<fingerprint>/<action>`: Zenoti's records carry no
/// modification time, so the payload's fingerprint is the version.
fn poll_events(
    kind: Kind,
    items: &[Obj<'_>],
    inherited: &Inherited<'_>,
    ctx: &Context,
) -> Result<Vec<Event>, AdapterError> {
    let records = items
        .iter()
        .map(|item| kind.record(item, inherited))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = kind.seen();
    let mut events = Vec::new();
    let mut unchanged = 0usize;
    for record in records {
        let change = seen.observe(&record.key, &record.mark());
        let actions: &[&str] = match (change, kind) {
            (Change::Unchanged, _) => {
                unchanged += 1;
                continue;
            }
            (Change::New, Kind::Appointments) if record.closed => &["created", "completed"],
            (Change::New, _) => &["created"],
            (Change::Changed { previous }, Kind::Appointments)
                if record.closed && !flags(&previous).contains(COMPLETED) =>
            {
                &["completed"]
            }
            (Change::Changed { .. }, _) => &["updated"],
        };
        for action in actions {
            let dedupe_key = format!(
                "{}/{}/{}/{action}",
                kind.plural(),
                record.key,
                record.fingerprint
            );
            events.push(record.event(kind, action, dedupe_key, ctx)?);
        }
    }
    seen.save()?;
    crm_adapter_sdk::debug!(
        "{}: {} events, {unchanged} records without news",
        kind.plural(),
        events.len()
    );
    Ok(events)
}

fn check_json(content_type: Option<&str>) -> Result<(), AdapterError> {
    match content_type {
        Some(content_type) if !content_type.to_ascii_lowercase().contains("json") => Err(
            AdapterError::bad_request(format!("content type `{content_type}` is not JSON")),
        ),
        _ => Ok(()),
    }
}

/// The kinds of Zenoti records this adapter maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Appointments,
    Members,
    Services,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Appointments, Kind::Members, Kind::Services];

    /// What the connection saw of the records of this kind, under `seen/<plural>/<00-31>`
    /// (Zenoti ids are 36-character GUIDs: 1 MiB of state holds about 18,000 of them).
    /// Webhooks record what they carried too, so that the next poll does not repeat it.
    fn seen(self) -> ChangeTracker {
        ChangeTracker::new(format!("seen/{}/", self.plural()))
    }

    /// The list's key in Zenoti's responses, also used in state keys and dedupe keys.
    fn plural(self) -> &'static str {
        match self {
            Kind::Appointments => "appointments",
            Kind::Members => "guests",
            Kind::Services => "services",
        }
    }

    /// The platform's entity type.
    fn entity(self) -> &'static str {
        match self {
            Kind::Appointments => "appointment",
            Kind::Members => "member",
            Kind::Services => "service",
        }
    }

    /// Reads one record of this kind.
    fn record(self, item: &Obj<'_>, inherited: &Inherited<'_>) -> Result<Record, AdapterError> {
        match self {
            Kind::Appointments => {
                let a = records::appointment(item, inherited)?;
                let (id, closed) = (a.appointment_id.clone(), a.is_closed());
                Record::new(id.clone(), id, a.center_id.clone(), &a, closed)
            }
            Kind::Members => {
                let m = records::member(item, inherited)?;
                let id = m.member_id.clone();
                Record::new(id.clone(), id, m.center_id.clone(), &m, false)
            }
            Kind::Services => {
                let s = records::service(item, inherited)?;
                let id = s.service_id.clone();
                // Every center lists the same service at its own price.
                let key = match &s.center_id {
                    Some(center) => format!("{center}/{id}"),
                    None => id.clone(),
                };
                Record::new(id, key, s.center_id.clone(), &s, false)
            }
        }
    }
}

/// One record, ready to become events.
struct Record {
    id: String,
    /// Its key in the state: the id, and for a service the center whose price it carries
    /// (the same service is listed by every center, at that center's price).
    key: String,
    center_id: Option<String>,
    payload: Value,
    /// Of the payload without `occurred_at`: a record touched without changes stays the same.
    fingerprint: String,
    /// An appointment that is closed (completed).
    closed: bool,
}

impl Record {
    fn new(
        id: String,
        key: String,
        center_id: Option<String>,
        payload: &impl serde::Serialize,
        closed: bool,
    ) -> Result<Self, AdapterError> {
        let payload = serde_json::to_value(payload)
            .map_err(|e| AdapterError::failed(format!("payload does not serialize: {e}")))?;
        Ok(Self {
            fingerprint: changes::fingerprint(&payload),
            id,
            key,
            center_id,
            payload,
            closed,
        })
    }

    /// What the state remembers of it: the fingerprint, then `c` once it is completed.
    fn mark(&self) -> String {
        let flags = if self.closed { COMPLETED } else { "" };
        format!("{}{flags}", self.fingerprint)
    }

    fn event(
        &self,
        kind: Kind,
        action: &str,
        dedupe_key: String,
        ctx: &Context,
    ) -> Result<Event, AdapterError> {
        let org = org_for(ctx, self.center_id.as_deref())?;
        Ok(
            Event::new(&format!("{}.{action}", kind.entity()), self.id.as_str())?
                .org_opt(org)
                .dedupe_key(dedupe_key)
                .payload(&self.payload)?,
        )
    }
}

/// The org of a record from its `center` (`None` for a record that names none): the center's
/// `center_org.<center id>` setting, else `default_org_id`, else the org the connection belongs
/// to (an org's connection may not emit platform-level events), else none (platform level). A
/// platform-level connection that maps centers must map every center it hears from (or set
/// `default_org_id`): a record of an unmapped center fails the invocation rather than publish
/// at platform level, where every org of the tenant would see it. An org the connection does
/// not allow fails it too. Either way the delivery is kept and can be redriven once the
/// settings are fixed.
pub fn org_for(ctx: &Context, center: Option<&str>) -> Result<Option<String>, AdapterError> {
    let mapped = center.and_then(|center| ctx.setting(&format!("{CENTER_ORG_PREFIX}{center}")));
    let org = match mapped
        .or_else(|| ctx.setting(DEFAULT_ORG_SETTING))
        .or(ctx.org_id.as_deref())
    {
        Some(org) => org,
        None => match center {
            Some(center)
                if ctx
                    .settings
                    .iter()
                    .any(|(key, _)| key.starts_with(CENTER_ORG_PREFIX)) =>
            {
                return Err(AdapterError::failed(format!(
                    "center {center} is not mapped to an org: set `{CENTER_ORG_PREFIX}{center}` \
                     (or `{DEFAULT_ORG_SETTING}`) on the connection, then redrive"
                )));
            }
            _ => return Ok(None),
        },
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
