//! Champion Health's records, read from a delivery or a poll record, in the shape of the
//! platform's event payloads.

use crm_adapter_sdk::{AdapterError, Decimal};
use serde::Serialize;

use crm_adapter_sdk::fields::Obj;

/// `external_source` of every payload.
pub const SOURCE: &str = "champion_health";

/// Payload of `agent.created` and `agent.updated`.
#[derive(Debug, Serialize)]
pub struct Agent {
    pub agent_id: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// National Producer Number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub npn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub external_id: String,
    pub external_source: &'static str,
}

/// Reads an `agent` object.
pub fn agent(a: &Obj<'_>) -> Result<Agent, AdapterError> {
    let agent_id = a.id("agent_id")?;
    Ok(Agent {
        first_name: a.string("first_name")?,
        last_name: a.string("last_name")?,
        email: a.opt_string("email")?,
        phone: a.opt_string("phone")?,
        npn: a.opt_string("npn")?,
        status: a.opt_string("status")?,
        external_id: agent_id.clone(),
        agent_id,
        external_source: SOURCE,
    })
}

/// One agent's share of an enrollment.
#[derive(Debug, Serialize)]
pub struct Split {
    pub agent_id: String,
    pub split_pct: Decimal,
}

/// Payload of `member.enrolled` and `member.enrollment_updated`: the member and the enrollment.
#[derive(Debug, Serialize)]
pub struct Enrollment {
    pub member_id: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub employer_group: Option<String>,
    pub enrollment_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub plan_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage_tier: Option<String>,
    pub effective_date: String,
    /// Per-employee-per-month rate.
    pub pepm_rate: Decimal,
    /// The writing agent.
    pub agent_id: String,
    /// The writing agent's share, in percent.
    pub split_pct: Decimal,
    /// Every agent's share, when the enrollment is split.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<Split>,
    pub external_id: String,
    pub external_source: &'static str,
}

/// Reads the `agent`, `member` and `enrollment` objects of an enrollment delivery or record.
pub fn enrollment(root: &Obj<'_>) -> Result<Enrollment, AdapterError> {
    let agent = root.child("agent")?;
    let member = root.child("member")?;
    let e = root.child("enrollment")?;
    let member_id = member.id("member_id")?;
    let pepm_rate = e.decimal("pepm_rate")?;
    if pepm_rate.into_inner().is_sign_negative() && !pepm_rate.into_inner().is_zero() {
        return Err(AdapterError::bad_request(format!(
            "`{}` is {pepm_rate}; a rate cannot be negative",
            e.name("pepm_rate")
        )));
    }
    let splits = e
        .opt_objects("splits")?
        .iter()
        .map(|s| {
            Ok(Split {
                agent_id: s.id("agent_id")?,
                split_pct: s.percentage("split_pct")?,
            })
        })
        .collect::<Result<Vec<_>, AdapterError>>()?;
    Ok(Enrollment {
        first_name: member.string("first_name")?,
        last_name: member.string("last_name")?,
        email: member.opt_string("email")?,
        date_of_birth: member.opt_string("date_of_birth")?,
        employer_group: member.opt_string("employer_group")?,
        enrollment_id: e.id("enrollment_id")?,
        status: e.opt_string("status")?,
        plan_code: e.string("plan_code")?,
        plan_name: e.opt_string("plan_name")?,
        carrier: e.opt_string("carrier")?,
        coverage_tier: e.opt_string("coverage_tier")?,
        effective_date: e.string("effective_date")?,
        pepm_rate,
        agent_id: agent.id("agent_id")?,
        split_pct: e.percentage("split_pct")?,
        splits,
        external_id: member_id.clone(),
        member_id,
        external_source: SOURCE,
    })
}

/// Payload of `commission.calculated`.
#[derive(Debug, Serialize)]
pub struct Commission {
    pub commission_id: String,
    pub agent_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment_id: Option<String>,
    /// The month the commission is for, `YYYY-MM`.
    pub period: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pepm_rate: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_pct: Option<Decimal>,
    /// Negative for a clawback.
    pub commission_amount: Decimal,
    pub currency: String,
    pub external_id: String,
    pub external_source: &'static str,
}

/// Reads the `agent` and `commission` objects of a commission delivery.
pub fn commission(root: &Obj<'_>) -> Result<Commission, AdapterError> {
    let agent = root.child("agent")?;
    let c = root.child("commission")?;
    let commission_id = c.id("commission_id")?;
    let split_pct = match c.opt_decimal("split_pct")? {
        Some(_) => Some(c.percentage("split_pct")?),
        None => None,
    };
    Ok(Commission {
        agent_id: agent.id("agent_id")?,
        enrollment_id: c.opt_string("enrollment_id")?,
        period: c.string("period")?,
        member_count: c.opt_count("member_count")?,
        pepm_rate: c.opt_decimal("pepm_rate")?,
        split_pct,
        commission_amount: c.decimal("commission_amount")?,
        currency: c.opt_string("currency")?.unwrap_or_else(|| "USD".into()),
        external_id: commission_id.clone(),
        commission_id,
        external_source: SOURCE,
    })
}
