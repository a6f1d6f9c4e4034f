//! HubSpot's CRM object types this adapter maps, and their property values.

use crm_adapter_sdk::fields::Obj;
use crm_adapter_sdk::serde_json::{self, Map, Value};
use crm_adapter_sdk::{AdapterError, Decimal};

/// `external_source` of every payload.
pub const SOURCE: &str = "hubspot";

/// A HubSpot CRM object type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Contact,
    Company,
    Deal,
}

/// Money properties of deals (HubSpot's default ones): exact decimal strings in payloads.
const DEAL_MONEY: [&str; 10] = [
    "amount",
    "amount_in_home_currency",
    "hs_acv",
    "hs_arr",
    "hs_mrr",
    "hs_tcv",
    "hs_closed_amount",
    "hs_closed_amount_in_home_currency",
    "hs_projected_amount",
    "hs_projected_amount_in_home_currency",
];
/// Money properties of companies.
const COMPANY_MONEY: [&str; 3] = ["annualrevenue", "total_revenue", "recent_deal_amount"];
/// Money properties of contacts (calculated from their deals). A contact's `annualrevenue` is
/// free text in HubSpot ("1M-5M"), so it stays a plain string.
const CONTACT_MONEY: [&str; 2] = ["total_revenue", "recent_deal_amount"];

/// Properties HubSpot rewrites on every save, even when nothing a consumer reads changed: left
/// out of fingerprints so that a touched record is not reported as updated.
pub const VOLATILE: [&str; 2] = ["lastmodifieddate", "hs_lastmodifieddate"];

impl Object {
    /// Every type.
    pub const ALL: [Object; 3] = [Object::Contact, Object::Company, Object::Deal];

    /// The platform's entity type: `contact`, `company`, `deal`.
    pub fn entity(self) -> &'static str {
        match self {
            Object::Contact => "contact",
            Object::Company => "company",
            Object::Deal => "deal",
        }
    }

    /// The payload field holding the record's id: `contact_id`...
    pub fn id_field(self) -> &'static str {
        match self {
            Object::Contact => "contact_id",
            Object::Company => "company_id",
            Object::Deal => "deal_id",
        }
    }

    /// The CRM v3 path segment (`/crm/v3/objects/deals`), also used in cursors and state keys.
    pub fn plural(self) -> &'static str {
        match self {
            Object::Contact => "contacts",
            Object::Company => "companies",
            Object::Deal => "deals",
        }
    }

    /// The property holding the time of the last change: what search filters and sorts on.
    pub fn modified_property(self) -> &'static str {
        match self {
            Object::Contact => "lastmodifieddate",
            Object::Company | Object::Deal => "hs_lastmodifieddate",
        }
    }

    /// The type named by a CRM v3 path segment.
    pub fn from_plural(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.plural() == name)
    }

    /// The type named by the prefix of a legacy subscription type (`deal.propertyChange`).
    pub fn from_singular(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.entity() == name)
    }

    /// The type of a generic (`object.*`) subscription's `objectTypeId`.
    pub fn from_type_id(type_id: &str) -> Option<Self> {
        match type_id {
            "0-1" => Some(Object::Contact),
            "0-2" => Some(Object::Company),
            "0-3" => Some(Object::Deal),
            _ => None,
        }
    }

    /// The properties whose values are money, carried as exact decimal strings.
    pub fn money_properties(self) -> &'static [&'static str] {
        match self {
            Object::Contact => &CONTACT_MONEY,
            Object::Company => &COMPANY_MONEY,
            Object::Deal => &DEAL_MONEY,
        }
    }

    /// The JSON pointers of the money properties in payloads, for `describe`.
    pub fn decimal_fields(self) -> impl Iterator<Item = String> {
        self.money_properties()
            .iter()
            .map(|name| format!("/properties/{name}"))
    }

    /// A property's value as payloads carry it: `null` when HubSpot sends nothing or an empty
    /// string (a cleared property), an exact decimal string for a money property, else the text
    /// as HubSpot sent it. `field` names the value in error messages.
    pub fn property_value(
        self,
        name: &str,
        text: Option<String>,
        field: &str,
    ) -> Result<Value, AdapterError> {
        let Some(text) = text else {
            return Ok(Value::Null);
        };
        if !self.money_properties().contains(&name) {
            return Ok(Value::String(text));
        }
        let decimal = money(&text).map_err(|e| {
            AdapterError::bad_request(format!(
                "`{field}` ({} property `{name}`): {e}",
                self.entity()
            ))
        })?;
        Ok(Value::String(decimal.to_string()))
    }

    /// The `properties` object of a CRM v3 record, each value normalised by
    /// [`Object::property_value`].
    pub fn properties(self, properties: &Obj<'_>) -> Result<Map<String, Value>, AdapterError> {
        properties
            .keys()
            .map(|name| {
                let text = properties.opt_string(name)?;
                let value = self.property_value(name, text, &properties.name(name))?;
                Ok((name.to_owned(), value))
            })
            .collect()
    }
}

/// A money property's text as an exact decimal. HubSpot stores number properties as text, in
/// canonical form (`"1500.00"`) and, for some large values, in exponent form (`"1.5E7"`): both
/// are read exactly, never through a float.
fn money(text: &str) -> Result<Decimal, String> {
    let canonical = match Decimal::parse(text) {
        Ok(decimal) => return Ok(decimal),
        Err(e) => e.to_string(),
    };
    let looks_like_a_number = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'e' | b'E' | b'+'));
    if looks_like_a_number
        && let Ok(number @ Value::Number(_)) = serde_json::from_str::<Value>(text)
    {
        return Decimal::from_json(&number).map_err(|e| e.to_string());
    }
    Err(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_read_exactly_in_canonical_and_exponent_form() {
        assert_eq!(money("1500.00").unwrap().to_string(), "1500.00");
        assert_eq!(money("-12.5").unwrap().to_string(), "-12.5");
        assert_eq!(money("1.5E7").unwrap().to_string(), "15000000");
        assert_eq!(money("2.75e-1").unwrap().to_string(), "0.275");
        for bad in ["12,50", "1 500", "$1500", "NaN", "1e", "+5", "0x10", ""] {
            assert!(money(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn only_money_properties_become_decimals() {
        let deal = Object::Deal;
        let value = |name: &str, text: &str| deal.property_value(name, Some(text.into()), "f");
        assert_eq!(value("amount", "1.5E3").unwrap(), "1500");
        // Not money: kept as HubSpot sent it, even when it looks like a number.
        assert_eq!(
            value("hs_deal_stage_probability", "0.9000000000000000222").unwrap(),
            "0.9000000000000000222"
        );
        assert_eq!(
            deal.property_value("amount", None, "f").unwrap(),
            Value::Null
        );
        assert_eq!(
            value("amount", "12,50").unwrap_err().message(),
            "`f` (deal property `amount`): `12,50` is not a canonical decimal (expected \
             -?digits(.digits)?, e.g. \"12.50\")"
        );
        // A contact's annualrevenue is free text.
        assert_eq!(
            Object::Contact
                .property_value("annualrevenue", Some("1M-5M".into()), "f")
                .unwrap(),
            "1M-5M"
        );
    }
}
