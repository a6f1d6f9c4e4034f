//! CRM v3 list and search pages (`GET /crm/v3/objects/<type>`, `POST .../search`): records
//! become events when they are new or changed, and the cursor says what to fetch next.
//!
//! A page does not say which object type it holds, so the cursor does: `deals` (the first page
//! of deals) or `deals:<after>` (the page after HubSpot's `paging.next.after`); the list of
//! deleted contacts is `archived-contacts`. No cursor means the first page of the first list
//! to poll. After a list's last page the next cursor names the next list, and after the last
//! list the first again: each poll cycle walks every list once.

use crm_adapter_sdk::changes::{self, Change, ChangeTracker, FINGERPRINT_LEN};
use crm_adapter_sdk::fields::{Obj, parse_timestamp};
use crm_adapter_sdk::serde_json::{Map, Value, json};
use crm_adapter_sdk::{AdapterError, Context, Event, PollOutput, Timestamp};

use crate::objects::{Object, SOURCE, VOLATILE};
use crate::{Settings, org_for};

/// Flag kept with a deal's fingerprint while it is in a won stage.
const WON: char = 'w';
/// Flag kept with a record's fingerprint while it is archived.
const ARCHIVED: char = 'a';

/// One list of a poll cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `GET /crm/v3/objects/<type>` (or its search): the live records of a type.
    Live(Object),
    /// `GET /crm/v3/objects/contacts?archived=true`: deleted contacts, which become
    /// `contact.deleted` (the platform has no event for deleted companies or deals).
    ArchivedContacts,
}

impl Stage {
    /// The default cycle.
    pub const DEFAULT: [Stage; 4] = [
        Stage::Live(Object::Contact),
        Stage::Live(Object::Company),
        Stage::Live(Object::Deal),
        Stage::ArchivedContacts,
    ];

    /// Its name in cursors and in the `poll_objects` setting.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Live(object) => object.plural(),
            Stage::ArchivedContacts => "archived-contacts",
        }
    }

    /// The stage called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "archived-contacts" => Some(Stage::ArchivedContacts),
            _ => Object::from_plural(name).map(Stage::Live),
        }
    }

    /// The object type of its records.
    pub fn object(self) -> Object {
        match self {
            Stage::Live(object) => object,
            Stage::ArchivedContacts => Object::Contact,
        }
    }
}

/// The stage a page belongs to, from the cursor it was fetched with.
pub fn stage_of(cursor: Option<&str>, settings: &Settings) -> Result<Stage, AdapterError> {
    let Some(cursor) = cursor else {
        return Ok(settings.poll_stages[0]);
    };
    let name = cursor.split_once(':').map_or(cursor, |(name, _)| name);
    Stage::parse(name).ok_or_else(|| {
        AdapterError::bad_request(format!(
            "cursor `{cursor}` does not start with contacts, companies, deals or \
             archived-contacts"
        ))
    })
}

/// What one page holds, read and turned into events.
pub struct Page {
    /// The events of its new and changed records.
    pub events: Vec<Event>,
    /// How many records it held and read, changed or not (archived ones included; not those
    /// skipped as already read).
    pub records: usize,
    /// Every record it held, skipped ones included, in its order: the id and the modification
    /// time ([`modified_at`]).
    pub versions: Vec<(String, Option<u64>)>,
    /// `paging.next.after`: the page after this one, if any.
    pub after: Option<String>,
}

/// Reads one page of `stage`'s list, whoever fetched it. Events are keyed by the record's
/// identity and version, `<type>/<id>@<updatedAt>/<action>`, as dedupe and idempotency keys:
/// HubSpot moves `updatedAt` on every save, so one version of a record is one event whatever
/// page carries it again.
///
/// A record for which `skip(id, modified_at)` is true (a version this walk has already read)
/// is listed in [`Page::versions`] but neither read nor counted.
pub fn read_page(
    body: &Value,
    stage: Stage,
    ctx: &Context,
    settings: &Settings,
    skip: impl Fn(&str, Option<u64>) -> bool,
) -> Result<Page, AdapterError> {
    let root = Obj::root(body, "a HubSpot CRM page")?;
    // Polled records carry no portal id: the connection polls one portal.
    let org = org_for(ctx, None)?;
    let object = stage.object();
    // One state key per bucket: `seen/<type>/<00-31>`, each a JSON object from record id to
    // its fingerprint followed by the flags below.
    let mut seen = ChangeTracker::new(format!("seen/{}/", object.plural()));
    let mut events = Vec::new();
    let mut versions = Vec::new();
    let mut unchanged = 0usize;
    let mut records = 0usize;
    for record in root.objects("results")? {
        let id = record.id("id")?;
        let updated_text = record.opt_string("updatedAt")?;
        // Times are read leniently: they only order the walk and name versions.
        let updated_at = updated_text.as_deref().and_then(parse_timestamp);
        let properties = record.opt_child("properties")?;
        let modified = match &properties {
            Some(properties) => properties.opt_string(object.modified_property())?,
            None => None,
        };
        let at = modified_at(modified.as_deref(), updated_at);
        versions.push((id.clone(), at));
        if skip(&id, at) {
            continue;
        }
        records += 1;
        let archived = record
            .opt_bool("archived")?
            .unwrap_or(stage == Stage::ArchivedContacts);
        let properties = match properties {
            Some(properties) => object.properties(&properties)?,
            None => Map::new(),
        };
        let won = object == Object::Deal
            && properties
                .get("dealstage")
                .and_then(Value::as_str)
                .is_some_and(|stage| settings.is_won(stage));

        let mut payload = Map::new();
        payload.insert(object.id_field().into(), json!(id));
        payload.insert("external_id".into(), json!(id));
        payload.insert("external_source".into(), json!(SOURCE));
        if let Some(created_at) = record.opt_string("createdAt")? {
            payload.insert("created_at".into(), json!(created_at));
        }
        if archived {
            payload.insert("archived".into(), json!(true));
        }
        payload.insert("properties".into(), Value::Object(properties));

        let fingerprint = fingerprint(&payload);
        let mut flags = String::new();
        if won {
            flags.push(WON);
        }
        if archived {
            flags.push(ARCHIVED);
        }
        let change = seen.observe(&id, &format!("{fingerprint}{flags}"));
        let kinds = kinds(object, &change, won, archived);
        if kinds.is_empty() {
            unchanged += 1;
            continue;
        }
        if let Some(updated_at) = updated_text {
            payload.insert("occurred_at".into(), json!(updated_at));
        }
        let version = match updated_at {
            Some(at) => at.to_rfc3339(),
            // Without a time, the payload is the version.
            None => fingerprint,
        };
        let payload = Value::Object(payload);
        for kind in kinds {
            let key = format!("{}/{id}@{version}/{kind}", object.plural());
            let event = Event::new(&format!("{}.{kind}", object.entity()), id.as_str())?
                .org_opt(org.as_deref())
                .dedupe_key(key.clone())
                .idempotency_key(key)
                .payload(&payload)?;
            events.push(event);
        }
    }
    let after = match root.opt_child("paging")? {
        Some(paging) => match paging.opt_child("next")? {
            Some(next) => next.opt_string("after")?,
            None => None,
        },
        None => None,
    };
    seen.save()?;
    crm_adapter_sdk::debug!(
        "{}: {} events, {unchanged} records without news",
        stage.name(),
        events.len()
    );
    Ok(Page {
        events,
        records,
        versions,
        after,
    })
}

/// The events of one page an external poller pushed, and the cursor of the next.
pub fn output(
    body: &Value,
    stage: Stage,
    ctx: &Context,
    settings: &Settings,
) -> Result<PollOutput, AdapterError> {
    let page = read_page(body, stage, ctx, settings, |_, _| false)?;
    let next_cursor = match page.after {
        Some(after) => format!("{}:{after}", stage.name()),
        None => settings.poll_after(stage).name().to_owned(),
    };
    Ok(PollOutput::new(page.events)
        .next_cursor(next_cursor)
        .records(page.records))
}

/// A time in epoch milliseconds, as HubSpot's search filters take it.
pub fn millis(at: Timestamp) -> u64 {
    at.seconds * 1000 + u64::from(at.nanoseconds / 1_000_000)
}

/// A record's modification time in epoch milliseconds, what searches filter and sort on: its
/// modification property (`lastmodifieddate` for contacts, `hs_lastmodifieddate` for companies
/// and deals), else `updatedAt`.
fn modified_at(property: Option<&str>, updated_at: Option<Timestamp>) -> Option<u64> {
    property
        .and_then(parse_timestamp)
        .or(updated_at)
        .map(millis)
}

/// The payload's fingerprint, without what HubSpot rewrites on every save.
fn fingerprint(payload: &Map<String, Value>) -> String {
    let mut stable = payload.clone();
    if let Some(Value::Object(properties)) = stable.get_mut("properties") {
        for name in VOLATILE {
            properties.remove(name);
        }
    }
    changes::fingerprint(&Value::Object(stable))
}

/// What to emit for a record, by what changed:
///
/// - new: `*.created`, and `deal.won` too for a deal already won; nothing for a record that is
///   already archived (nothing to tell about a record the platform never saw);
/// - changed: `contact.deleted` when a contact was archived; `deal.won` when a deal entered a
///   won stage; else `*.updated` (a restored record included); nothing for changes to an
///   archived company or deal (the platform has no event for them);
/// - unchanged: nothing.
fn kinds(object: Object, change: &Change, won: bool, archived: bool) -> Vec<&'static str> {
    match change {
        Change::Unchanged => vec![],
        Change::New if archived => vec![],
        Change::New if won => vec!["created", "won"],
        Change::New => vec!["created"],
        Change::Changed { previous } => {
            let flags = previous.get(FINGERPRINT_LEN..).unwrap_or("");
            let was_archived = flags.contains(ARCHIVED);
            let was_won = flags.contains(WON);
            match (object, archived) {
                (Object::Contact, true) if was_archived => vec![],
                (Object::Contact, true) => vec!["deleted"],
                (_, true) => vec![],
                _ if won && !was_won => vec!["won"],
                _ => vec!["updated"],
            }
        }
    }
}
