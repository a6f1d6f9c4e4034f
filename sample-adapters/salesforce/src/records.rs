//! The Salesforce objects this adapter maps, field by field, into the platform's payloads.
//!
//! One table per object lists the Salesforce fields it reads, the payload key each one goes to
//! and how its value is read. The same tables read every source: change events, SOQL records
//! and outbound messages (whose XML text `outbound` types with these tables first). To map one
//! more field, add a line to its object's table; a money or percent field is declared as a
//! decimal field in `describe` automatically.

use crm_adapter_sdk::fields::Obj;
use crm_adapter_sdk::rust_decimal;
use crm_adapter_sdk::serde_json::{Map, Value};
use crm_adapter_sdk::{AdapterError, Decimal};
use serde::{Deserialize, Serialize};

/// `external_source` of every payload.
pub const SOURCE: &str = "salesforce";

/// The stage names a new Salesforce org ships with; used only when a record carries
/// `StageName` without `IsWon` / `IsClosed` (which Salesforce derives from the stage, whatever
/// its name).
const WON_STAGE: &str = "Closed Won";
const LOST_STAGE: &str = "Closed Lost";

/// A Salesforce object the adapter maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Account,
    Contact,
    Opportunity,
}

impl Object {
    /// Every mapped object, in `describe` order.
    pub const ALL: [Object; 3] = [Object::Account, Object::Contact, Object::Opportunity];

    /// The object named by an API name (`Account`), as change events, SOQL records and
    /// `xsi:type` name it.
    pub fn from_api_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.api_name() == name)
    }

    /// The API name, e.g. `Opportunity`.
    pub fn api_name(self) -> &'static str {
        match self {
            Object::Account => "Account",
            Object::Contact => "Contact",
            Object::Opportunity => "Opportunity",
        }
    }

    /// The platform's entity type, e.g. `opportunity`.
    pub fn entity(self) -> &'static str {
        match self {
            Object::Account => "account",
            Object::Contact => "contact",
            Object::Opportunity => "opportunity",
        }
    }

    /// The payload key holding the record's id, e.g. `opportunity_id`.
    pub fn id_key(self) -> &'static str {
        match self {
            Object::Account => "account_id",
            Object::Contact => "contact_id",
            Object::Opportunity => "opportunity_id",
        }
    }

    /// The fields read from a record of this object.
    pub fn fields(self) -> &'static [Field] {
        match self {
            Object::Account => ACCOUNT,
            Object::Contact => CONTACT,
            Object::Opportunity => OPPORTUNITY,
        }
    }

    /// A mapped field by the name Salesforce uses in a record or in a change event's field
    /// lists (`BillingCity` or `BillingAddress.City`).
    pub fn field(self, name: &str) -> Option<&'static Field> {
        self.fields().iter().find(|f| {
            f.api == name
                || f.compound
                    .is_some_and(|(parent, child)| compound_is(name, parent, child))
        })
    }

    /// JSON pointers of the payload's decimal fields.
    pub fn decimal_pointers(self) -> Vec<String> {
        self.fields()
            .iter()
            .filter(|f| matches!(f.kind, Kind::Money | Kind::Percent))
            .map(|f| format!("/{}", f.key))
            .collect()
    }
}

fn compound_is(name: &str, parent: &str, child: &str) -> bool {
    name.strip_prefix(parent)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|rest| rest == child)
}

/// How a field's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string: ids, names, picklist values, dates.
    Text,
    /// A checkbox.
    Bool,
    /// A currency amount: an exact decimal string with at least two decimals (`125000.0` ->
    /// `"125000.00"`), so that the same amount reads the same from every source.
    Money,
    /// A percentage from 0 to 100 without trailing zeros (`75.0` -> `"75"`).
    Percent,
    /// A whole number from 0 to 2^53 - 1.
    Count,
}

/// One mapped field.
#[derive(Debug)]
pub struct Field {
    /// The field's API name in SOQL records and outbound messages (`BillingCity`).
    pub api: &'static str,
    /// Where change events put it when it is part of a compound field
    /// (`BillingAddress` / `City`).
    pub compound: Option<(&'static str, &'static str)>,
    /// The payload key.
    pub key: &'static str,
    /// How its value is read.
    pub kind: Kind,
}

const fn field(api: &'static str, key: &'static str, kind: Kind) -> Field {
    Field {
        api,
        compound: None,
        key,
        kind,
    }
}

const fn part(
    api: &'static str,
    compound: (&'static str, &'static str),
    key: &'static str,
) -> Field {
    Field {
        api,
        compound: Some(compound),
        key,
        kind: Kind::Text,
    }
}

const ACCOUNT: &[Field] = &[
    field("Name", "name", Kind::Text),
    field("AccountNumber", "account_number", Kind::Text),
    field("Type", "type", Kind::Text),
    field("Industry", "industry", Kind::Text),
    field("ParentId", "parent_id", Kind::Text),
    field("OwnerId", "owner_id", Kind::Text),
    field("Phone", "phone", Kind::Text),
    field("Website", "website", Kind::Text),
    field("AnnualRevenue", "annual_revenue", Kind::Money),
    field("NumberOfEmployees", "number_of_employees", Kind::Count),
    part("BillingCity", ("BillingAddress", "City"), "billing_city"),
    part("BillingState", ("BillingAddress", "State"), "billing_state"),
    part(
        "BillingPostalCode",
        ("BillingAddress", "PostalCode"),
        "billing_postal_code",
    ),
    part(
        "BillingCountry",
        ("BillingAddress", "Country"),
        "billing_country",
    ),
    field("CurrencyIsoCode", "currency", Kind::Text),
];

const CONTACT: &[Field] = &[
    part("FirstName", ("Name", "FirstName"), "first_name"),
    part("LastName", ("Name", "LastName"), "last_name"),
    field("Email", "email", Kind::Text),
    field("Phone", "phone", Kind::Text),
    field("MobilePhone", "mobile_phone", Kind::Text),
    field("Title", "title", Kind::Text),
    field("Department", "department", Kind::Text),
    field("AccountId", "account_id", Kind::Text),
    field("OwnerId", "owner_id", Kind::Text),
    part("MailingCity", ("MailingAddress", "City"), "mailing_city"),
    part("MailingState", ("MailingAddress", "State"), "mailing_state"),
    part(
        "MailingCountry",
        ("MailingAddress", "Country"),
        "mailing_country",
    ),
];

const OPPORTUNITY: &[Field] = &[
    field("Name", "name", Kind::Text),
    field("AccountId", "account_id", Kind::Text),
    field("StageName", "stage_name", Kind::Text),
    field("Amount", "amount", Kind::Money),
    field("ExpectedRevenue", "expected_revenue", Kind::Money),
    field("Probability", "probability", Kind::Percent),
    field("CloseDate", "close_date", Kind::Text),
    field("IsClosed", "is_closed", Kind::Bool),
    field("IsWon", "is_won", Kind::Bool),
    field("Type", "type", Kind::Text),
    field("LeadSource", "lead_source", Kind::Text),
    field("ForecastCategoryName", "forecast_category", Kind::Text),
    field("OwnerId", "owner_id", Kind::Text),
    field("CurrencyIsoCode", "currency", Kind::Text),
];

/// Where a record comes from: change events nest compound fields (`BillingAddress.City`),
/// SOQL records and outbound messages flatten them (`BillingCity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    ChangeEvent,
    Flat,
}

/// The payload of one record: its id (under `<entity>_id` and `external_id`),
/// `external_source`, and every mapped field the record has a value for. Fields named in
/// `nulled` (a change event's `nulledFields`) appear as `null`; other absent or null fields
/// are left out.
pub fn payload(
    object: Object,
    id: &str,
    record: &Obj<'_>,
    shape: Shape,
    nulled: &[String],
) -> Result<Map<String, Value>, AdapterError> {
    let mut payload = Map::new();
    payload.insert(object.id_key().into(), Value::String(id.into()));
    for field in object.fields() {
        let value = match (shape, field.compound) {
            (Shape::ChangeEvent, Some((parent, child))) => match record.opt_child(parent)? {
                Some(parent) => read(&parent, child, field.kind)?,
                None => None,
            },
            _ => read(record, field.api, field.kind)?,
        };
        match value {
            Some(value) => {
                payload.insert(field.key.into(), value);
            }
            None if nulled
                .iter()
                .any(|n| object.field(n).is_some_and(|f| f.key == field.key)) =>
            {
                payload.insert(field.key.into(), Value::Null);
            }
            None => {}
        }
    }
    payload.insert("external_id".into(), Value::String(id.into()));
    payload.insert("external_source".into(), Value::String(SOURCE.into()));
    Ok(payload)
}

/// The payload of a `*.deleted` event: the record's ids only.
pub fn deleted_payload(object: Object, id: &str) -> Map<String, Value> {
    let mut payload = Map::new();
    payload.insert(object.id_key().into(), Value::String(id.into()));
    payload.insert("external_id".into(), Value::String(id.into()));
    payload.insert("external_source".into(), Value::String(SOURCE.into()));
    payload
}

fn read(record: &Obj<'_>, key: &str, kind: Kind) -> Result<Option<Value>, AdapterError> {
    Ok(match kind {
        Kind::Text => record.opt_string(key)?.map(Value::String),
        Kind::Bool => record.opt_bool(key)?.map(Value::Bool),
        Kind::Count => record.opt_count(key)?.map(Value::from),
        Kind::Money => record.opt_decimal(key)?.map(|d| decimal_value(money(d))),
        Kind::Percent => match record.opt_decimal(key)? {
            None => None,
            Some(pct) => {
                let value = pct.into_inner();
                if value.is_sign_negative() && !value.is_zero() || value > 100.into() {
                    return Err(AdapterError::bad_request(format!(
                        "`{}` is {pct}; a percentage must be between 0 and 100",
                        record.name(key)
                    )));
                }
                Some(decimal_value(Decimal::from(value.normalize())))
            }
        },
    })
}

/// An amount with at least two decimals. Only adds zeros: never rounds.
fn money(amount: Decimal) -> Decimal {
    let value = amount.into_inner();
    if value.scale() >= 2 {
        return amount;
    }
    let mut scaled: rust_decimal::Decimal = value;
    scaled.rescale(2);
    if scaled == value {
        Decimal::from(scaled)
    } else {
        amount
    }
}

fn decimal_value(decimal: Decimal) -> Value {
    Value::String(decimal.to_string())
}

/// Where an opportunity stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Open,
    Won,
    Lost,
}

/// The stage of a whole opportunity, from its payload (`is_won`, `is_closed`, else the default
/// stage names); `None` when the record carries none of them.
pub fn stage_of(payload: &Map<String, Value>) -> Option<Stage> {
    let is_won = payload.get("is_won").and_then(Value::as_bool);
    let is_closed = payload.get("is_closed").and_then(Value::as_bool);
    let stage_name = payload.get("stage_name").and_then(Value::as_str);
    match (is_closed, is_won) {
        (_, Some(true)) => Some(Stage::Won),
        (Some(true), _) => Some(Stage::Lost),
        (Some(false), _) => Some(Stage::Open),
        (None, Some(false)) if stage_name == Some(LOST_STAGE) => Some(Stage::Lost),
        (None, Some(false)) => Some(Stage::Open),
        (None, None) => stage_name.map(stage_by_name),
    }
}

/// The stage a change event moves an opportunity to, from the fields it says changed;
/// `None` when it does not close (or reopen) the opportunity.
///
/// A change event carries only what changed, so: `IsWon` turning true is a win; `IsClosed`
/// turning true without `IsWon` turning true is a loss (an open opportunity is never won);
/// `IsWon` turning false while `IsClosed` stays as it was is a won deal marked lost (a won
/// opportunity is always closed). Without either flag, the default stage names decide.
pub fn stage_change(payload: &Map<String, Value>, changed: impl Fn(&str) -> bool) -> Option<Stage> {
    let flag = |key: &str, api: &str| {
        changed(api)
            .then(|| payload.get(key).and_then(Value::as_bool))
            .flatten()
    };
    match (flag("is_closed", "IsClosed"), flag("is_won", "IsWon")) {
        (_, Some(true)) => Some(Stage::Won),
        (Some(true), _) => Some(Stage::Lost),
        (Some(false), _) => Some(Stage::Open),
        (None, Some(false)) => Some(Stage::Lost),
        (None, None) if changed("StageName") => payload
            .get("stage_name")
            .and_then(Value::as_str)
            .map(stage_by_name)
            .filter(|stage| *stage != Stage::Open),
        (None, None) => None,
    }
}

fn stage_by_name(name: &str) -> Stage {
    match name {
        WON_STAGE => Stage::Won,
        LOST_STAGE => Stage::Lost,
        _ => Stage::Open,
    }
}
