//! The Zoho CRM modules this adapter maps, field by field, into the platform's payloads.
//!
//! One table per module lists the fields it reads (by API name), the payload key each one goes
//! to and how its value is read. The same tables read list API records (polling) and the
//! `affected_values` of notifications. To map one more field, add a line to its module's
//! table; a money, percent or decimal field is declared as a decimal field in `describe`
//! automatically.

use crm_adapter_sdk::fields::Obj;
use crm_adapter_sdk::serde_json::{Map, Value};
use crm_adapter_sdk::{AdapterError, Decimal};

/// `external_source` of every payload.
pub const SOURCE: &str = "zoho";

/// A Zoho CRM module the adapter maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    Contacts,
    Accounts,
    Deals,
}

impl Module {
    /// Every mapped module, in `describe` order.
    pub const ALL: [Module; 3] = [Module::Contacts, Module::Accounts, Module::Deals];

    /// The module named by its API name (`Deals`), as notifications name it.
    pub fn from_api_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.api_name() == name)
    }

    /// The API name, e.g. `Deals`.
    pub fn api_name(self) -> &'static str {
        match self {
            Module::Contacts => "Contacts",
            Module::Accounts => "Accounts",
            Module::Deals => "Deals",
        }
    }

    /// The platform's entity type, e.g. `deal`.
    pub fn entity(self) -> &'static str {
        match self {
            Module::Contacts => "contact",
            Module::Accounts => "account",
            Module::Deals => "deal",
        }
    }

    /// The payload key holding the record's id, e.g. `deal_id`.
    pub fn id_key(self) -> &'static str {
        match self {
            Module::Contacts => "contact_id",
            Module::Accounts => "account_id",
            Module::Deals => "deal_id",
        }
    }

    /// The fields read from a record of this module.
    pub fn fields(self) -> &'static [Field] {
        match self {
            Module::Contacts => CONTACTS,
            Module::Accounts => ACCOUNTS,
            Module::Deals => DEALS,
        }
    }

    /// JSON pointers of the payload's decimal fields.
    pub fn decimal_pointers(self) -> Vec<String> {
        self.fields()
            .iter()
            .filter(|f| matches!(f.kind, Kind::Money | Kind::Percent | Kind::Decimal))
            .map(|f| format!("/{}", f.key))
            .collect()
    }
}

/// How a field's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string: names, picklist values, dates.
    Text,
    /// A lookup (`{"id": "...", "name": "...", "email": "..."}`): becomes `<key>_id`,
    /// `<key>_name` and, when Zoho sends one (users), `<key>_email`.
    Lookup,
    /// A currency amount: an exact decimal string with at least two decimals (`125000` ->
    /// `"125000.00"`), so that the same amount reads the same however Zoho wrote it.
    Money,
    /// A percentage from 0 to 100 without trailing zeros (`75.0` -> `"75"`).
    Percent,
    /// Any other decimal, exactly as sent (`1.0825` stays `"1.0825"`).
    Decimal,
    /// A whole number from 0 to 2^53 - 1.
    Count,
}

/// One mapped field.
#[derive(Debug)]
pub struct Field {
    /// The field's API name (`Deal_Name`).
    pub api: &'static str,
    /// The payload key (for a lookup, the prefix of its keys).
    pub key: &'static str,
    /// How its value is read.
    pub kind: Kind,
}

const fn field(api: &'static str, key: &'static str, kind: Kind) -> Field {
    Field { api, key, kind }
}

const CONTACTS: &[Field] = &[
    field("First_Name", "first_name", Kind::Text),
    field("Last_Name", "last_name", Kind::Text),
    field("Email", "email", Kind::Text),
    field("Phone", "phone", Kind::Text),
    field("Mobile", "mobile", Kind::Text),
    field("Title", "title", Kind::Text),
    field("Department", "department", Kind::Text),
    field("Lead_Source", "lead_source", Kind::Text),
    field("Mailing_City", "mailing_city", Kind::Text),
    field("Mailing_State", "mailing_state", Kind::Text),
    field("Mailing_Country", "mailing_country", Kind::Text),
    field("Account_Name", "account", Kind::Lookup),
    field("Owner", "owner", Kind::Lookup),
];

const ACCOUNTS: &[Field] = &[
    field("Account_Name", "name", Kind::Text),
    field("Account_Type", "type", Kind::Text),
    field("Industry", "industry", Kind::Text),
    field("Website", "website", Kind::Text),
    field("Phone", "phone", Kind::Text),
    field("Annual_Revenue", "annual_revenue", Kind::Money),
    field("Employees", "employees", Kind::Count),
    field("Billing_City", "billing_city", Kind::Text),
    field("Billing_State", "billing_state", Kind::Text),
    field("Billing_Country", "billing_country", Kind::Text),
    field("Parent_Account", "parent", Kind::Lookup),
    field("Owner", "owner", Kind::Lookup),
];

const DEALS: &[Field] = &[
    field("Deal_Name", "name", Kind::Text),
    field("Stage", "stage", Kind::Text),
    field("Amount", "amount", Kind::Money),
    field("Expected_Revenue", "expected_revenue", Kind::Money),
    field("Probability", "probability", Kind::Percent),
    field("Closing_Date", "closing_date", Kind::Text),
    field("Type", "type", Kind::Text),
    field("Lead_Source", "lead_source", Kind::Text),
    field("Currency", "currency", Kind::Text),
    field("Exchange_Rate", "exchange_rate", Kind::Decimal),
    field("Account_Name", "account", Kind::Lookup),
    field("Contact_Name", "contact", Kind::Lookup),
    field("Owner", "owner", Kind::Lookup),
];

/// The payload of one record: its id (under `<entity>_id` and `external_id`),
/// `external_source`, and every mapped field the record has a value for (absent and null
/// fields are left out).
pub fn payload(
    module: Module,
    id: &str,
    record: &Obj<'_>,
) -> Result<Map<String, Value>, AdapterError> {
    let mut payload = ids_payload(module, id);
    for field in module.fields() {
        read(record, field, &mut payload)?;
    }
    Ok(payload)
}

/// The ids every payload carries.
pub fn ids_payload(module: Module, id: &str) -> Map<String, Value> {
    let mut payload = Map::new();
    payload.insert(module.id_key().into(), Value::String(id.into()));
    payload.insert("external_id".into(), Value::String(id.into()));
    payload.insert("external_source".into(), Value::String(SOURCE.into()));
    payload
}

fn read(record: &Obj<'_>, field: &Field, out: &mut Map<String, Value>) -> Result<(), AdapterError> {
    let key = field.api;
    let value = match field.kind {
        Kind::Text => record.opt_string(key)?.map(Value::String),
        Kind::Count => record.opt_count(key)?.map(Value::from),
        Kind::Decimal => record.opt_decimal(key)?.map(decimal_value),
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
        Kind::Lookup => {
            if let Some(lookup) = record.opt_child(key)? {
                out.insert(format!("{}_id", field.key), Value::String(lookup.id("id")?));
                for part in ["name", "email"] {
                    if let Some(text) = lookup.opt_string(part)? {
                        out.insert(format!("{}_{part}", field.key), Value::String(text));
                    }
                }
            }
            None
        }
    };
    if let Some(value) = value {
        out.insert(field.key.into(), value);
    }
    Ok(())
}

/// An amount with at least two decimals. Only adds zeros: never rounds.
fn money(amount: Decimal) -> Decimal {
    let value = amount.into_inner();
    if value.scale() >= 2 {
        return amount;
    }
    let mut scaled = value;
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
