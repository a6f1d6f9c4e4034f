//! Zenoti's appointments, guests and services, read from a webhook's `data` or a list page, in
//! the shape of the platform's event payloads.

use crm_adapter_sdk::fields::Obj;
use crm_adapter_sdk::{AdapterError, Decimal};
use serde::Serialize;

/// `external_source` of every payload.
pub const SOURCE: &str = "zenoti";

/// Zenoti's appointment status code for a closed (paid, completed) appointment.
pub const STATUS_CLOSED: i64 = 1;

/// The name of a Zenoti appointment status code, or `None` for a code this adapter does not
/// know (the payload then carries the code alone).
pub fn status_name(code: i64) -> Option<&'static str> {
    Some(match code {
        -2 => "no_show",
        -1 => "cancelled",
        0 => "booked",
        1 => "closed",
        2 => "checked_in",
        4 => "confirmed",
        10 => "break",
        11 => "not_specified",
        20 => "available",
        21 => "voided",
        _ => return None,
    })
}

/// What a record inherits from its container: an appointment group's ids and guest, or the
/// center a list page was fetched for.
#[derive(Default)]
pub struct Inherited<'a> {
    pub center_id: Option<String>,
    pub appointment_group_id: Option<String>,
    pub invoice_id: Option<String>,
    pub guest: Option<Obj<'a>>,
}

impl<'a> Inherited<'a> {
    /// The ids and guest of an appointment group (a webhook's `data`).
    pub fn group(group: &Obj<'a>) -> Result<Self, AdapterError> {
        Ok(Self {
            center_id: opt_id(group, "center_id")?,
            appointment_group_id: opt_id(group, "appointment_group_id")?,
            invoice_id: opt_id(group, "invoice_id")?,
            guest: group.opt_child("guest")?,
        })
    }
}

/// Payload of `appointment.*`: one appointment (a service booked for a guest).
#[derive(Debug, Serialize)]
pub struct Appointment {
    pub appointment_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appointment_group_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub center_id: Option<String>,
    /// The guest's id: `member_id` of the `member.*` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub therapist_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub therapist_name: Option<String>,
    /// As Zenoti sends it: the center's local time, without an offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
    /// The service's price before discounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    /// What the guest pays for it, after discounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_price: Option<Decimal>,
    pub external_id: String,
    pub external_source: &'static str,
}

impl Appointment {
    /// Whether the appointment is closed (completed and paid).
    pub fn is_closed(&self) -> bool {
        self.status_code == Some(STATUS_CLOSED)
    }
}

/// Reads one appointment. Zenoti's list API nests the service, guest and therapist (`service:
/// {id, name}`...); its webhooks carry them flat (`service_id`, `service_name`,
/// `therapist_name`...). Both are read.
pub fn appointment(a: &Obj<'_>, inherited: &Inherited<'_>) -> Result<Appointment, AdapterError> {
    let appointment_id = match opt_id(a, "appointment_id")? {
        Some(id) => id,
        None => a.id("id")?,
    };
    let (service_id, service_name) = match a.opt_child("service")? {
        Some(service) => (Some(service.id("id")?), service.opt_string("name")?),
        None => (opt_id(a, "service_id")?, a.opt_string("service_name")?),
    };
    let (therapist_id, therapist_name) = match a.opt_child("therapist")? {
        Some(therapist) => (Some(therapist.id("id")?), person_name(&therapist)?),
        // `TherapistId` is how Zenoti's published webhook samples spell it.
        None => (
            or(opt_id(a, "therapist_id")?, || opt_id(a, "TherapistId"))?,
            a.opt_string("therapist_name")?,
        ),
    };
    let (member_id, guest_name) = match a.opt_child("guest")?.as_ref().or(inherited.guest.as_ref())
    {
        Some(guest) => (Some(guest.id("id")?), person_name(guest)?),
        None => (opt_id(a, "guest_id")?, None),
    };
    let status_code = a.opt_int("status")?;
    let price = non_negative(a, "price")?;
    let final_price = non_negative(a, "final_price")?;
    Ok(Appointment {
        appointment_group_id: or(opt_id(a, "appointment_group_id")?, || {
            Ok(inherited.appointment_group_id.clone())
        })?,
        invoice_id: or(opt_id(a, "invoice_id")?, || {
            Ok(inherited.invoice_id.clone())
        })?,
        center_id: or(opt_id(a, "center_id")?, || Ok(inherited.center_id.clone()))?,
        member_id,
        guest_name,
        service_id,
        service_name,
        therapist_id,
        therapist_name,
        start_time: a.opt_string("start_time")?,
        end_time: a.opt_string("end_time")?,
        status: status_code.and_then(status_name),
        status_code,
        price,
        final_price,
        external_id: appointment_id.clone(),
        appointment_id,
        external_source: SOURCE,
    })
}

/// Payload of `member.*`: a Zenoti guest.
#[derive(Debug, Serialize)]
pub struct Member {
    pub member_id: String,
    /// Zenoti's guest code (the number printed on receipts), when the center uses them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_code: Option<String>,
    /// The guest's home center.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub center_id: Option<String>,
    pub first_name: String,
    pub last_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile_phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<String>,
    pub external_id: String,
    pub external_source: &'static str,
}

/// Reads a guest: `id`, `code`, `center_id` and `personal_info` (names, email, phone, date of
/// birth).
pub fn member(g: &Obj<'_>, inherited: &Inherited<'_>) -> Result<Member, AdapterError> {
    let member_id = g.id("id")?;
    let info = g.child("personal_info")?;
    let mobile_phone = match info.opt_child("mobile_phone")? {
        Some(phone) => phone.opt_string("number")?,
        None => None,
    };
    Ok(Member {
        guest_code: g.opt_string("code")?,
        center_id: or(opt_id(g, "center_id")?, || Ok(inherited.center_id.clone()))?,
        first_name: info.string("first_name")?,
        last_name: info.string("last_name")?,
        email: info.opt_string("email")?,
        mobile_phone,
        date_of_birth: info.opt_string("date_of_birth")?,
        external_id: member_id.clone(),
        member_id,
        external_source: SOURCE,
    })
}

/// Payload of `service.*`: a service of Zenoti's catalog, with a center's price when read from
/// that center's list.
#[derive(Debug, Serialize)]
pub struct Service {
    pub service_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_minutes: Option<u64>,
    /// The price the center sells it at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub center_id: Option<String>,
    pub external_id: String,
    pub external_source: &'static str,
}

/// Reads a service: `id`, `code`, `name`, `duration` (minutes), `category.name` and
/// `price_info.sale_price`.
pub fn service(s: &Obj<'_>, inherited: &Inherited<'_>) -> Result<Service, AdapterError> {
    let service_id = s.id("id")?;
    let price = match s.opt_child("price_info")? {
        Some(info) => non_negative(&info, "sale_price")?,
        None => None,
    };
    let category = match s.opt_child("category")? {
        Some(category) => category.opt_string("name")?,
        None => None,
    };
    Ok(Service {
        code: s.opt_string("code")?,
        name: s.string("name")?,
        category,
        duration_minutes: s.opt_count("duration")?,
        price,
        center_id: or(opt_id(s, "center_id")?, || Ok(inherited.center_id.clone()))?,
        external_id: service_id.clone(),
        service_id,
        external_source: SOURCE,
    })
}

/// An id if present (a GUID string, or a whole number).
pub fn opt_id(obj: &Obj<'_>, key: &str) -> Result<Option<String>, AdapterError> {
    match obj.opt_string(key) {
        Ok(None) => Ok(None),
        // Present and a string, or present and something else: `id` reads both, or says why not.
        _ => obj.id(key).map(Some),
    }
}

/// `first_name last_name`, or `display_name`/`full_name` when Zenoti sends one instead.
fn person_name(person: &Obj<'_>) -> Result<Option<String>, AdapterError> {
    let parts: Vec<String> = [
        person.opt_string("first_name")?,
        person.opt_string("last_name")?,
    ]
    .into_iter()
    .flatten()
    .collect();
    if !parts.is_empty() {
        return Ok(Some(parts.join(" ")));
    }
    or(person.opt_string("full_name")?, || {
        person.opt_string("display_name")
    })
}

/// A price if present: an exact decimal (a JSON number's text or a canonical string), never
/// negative.
fn non_negative(obj: &Obj<'_>, key: &str) -> Result<Option<Decimal>, AdapterError> {
    let price = obj.opt_decimal(key)?;
    if let Some(price) = price
        && price.into_inner().is_sign_negative()
        && !price.into_inner().is_zero()
    {
        return Err(AdapterError::bad_request(format!(
            "`{}` is {price}; a price cannot be negative",
            obj.name(key)
        )));
    }
    Ok(price)
}

fn or<T>(
    value: Option<T>,
    fallback: impl FnOnce() -> Result<Option<T>, AdapterError>,
) -> Result<Option<T>, AdapterError> {
    match value {
        Some(value) => Ok(Some(value)),
        None => fallback(),
    }
}
