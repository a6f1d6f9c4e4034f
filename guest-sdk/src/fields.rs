//! Reading a JSON delivery field by field, with errors that name the field
//! (`` `enrollment.pepm_rate` must be a string, got a number ``): every mistake in the input
//! becomes an [`AdapterError::bad_request`] a tenant admin can act on, never a trap.
//!
//! ```
//! use crm_adapter_sdk::fields::Obj;
//! use serde_json::json;
//!
//! let body = json!({"deal": {"id": 42, "amount": "1250.00", "stage": "won"}});
//! let root = Obj::root(&body, "the delivery")?;
//! let deal = root.child("deal")?;
//! assert_eq!(deal.id("id")?, "42");
//! assert_eq!(deal.decimal("amount")?.to_string(), "1250.00");
//! let error = deal.string("owner").unwrap_err();
//! assert_eq!(error.message(), "`deal.owner` is missing");
//! # Ok::<(), crm_adapter_sdk::AdapterError>(())
//! ```

use serde_json::{Map, Value};

use crate::{AdapterError, Decimal, Timestamp};

/// A JSON object and where it sits in the input (its dotted path, empty at the top level).
pub struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

/// Largest id [`Obj::id`] accepts (the host's limit on entity ids).
pub const MAX_ID_BYTES: usize = 256;

/// An array item that must be an object, named `path` in messages.
fn item_obj(path: String, item: &Value) -> Result<Obj<'_>, AdapterError> {
    match item {
        Value::Object(map) => Ok(Obj { path, map }),
        other => Err(AdapterError::bad_request(format!(
            "`{path}` must be an object, got {}",
            kind(other)
        ))),
    }
}

/// An identifier named `name` in messages: see [`Obj::id`].
fn id_value(name: &str, value: &Value) -> Result<String, AdapterError> {
    let id = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) if n.as_str().bytes().all(|b| b.is_ascii_digit()) => n.as_str().to_owned(),
        other => {
            return Err(AdapterError::bad_request(format!(
                "`{name}` must be a string or a whole number, got {}",
                kind(other)
            )));
        }
    };
    if id.is_empty() {
        return Err(AdapterError::bad_request(format!("`{name}` is empty")));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(AdapterError::bad_request(format!(
            "`{name}` is {} bytes long; the limit is {MAX_ID_BYTES}",
            id.len()
        )));
    }
    Ok(id)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Obj<'a> {
    /// The top-level object of a delivery or page.
    pub fn root(value: &'a Value, what: &str) -> Result<Self, AdapterError> {
        match value {
            Value::Object(map) => Ok(Self {
                path: String::new(),
                map,
            }),
            other => Err(AdapterError::bad_request(format!(
                "{what} must be a JSON object, got {}",
                kind(other)
            ))),
        }
    }

    /// The objects of a top-level JSON array, for deliveries that batch several events
    /// (HubSpot's, for one): each is named `[0]`, `[1]`... in messages.
    ///
    /// ```
    /// use crm_adapter_sdk::fields::Obj;
    /// use serde_json::json;
    ///
    /// let batch = json!([{"objectId": 1}, {"objectId": "x"}]);
    /// let items = Obj::root_array(&batch, "the batch")?;
    /// assert_eq!(items[0].id("objectId")?, "1");
    /// assert_eq!(items[1].name("objectId"), "[1].objectId");
    ///
    /// let error = Obj::root_array(&json!({"objectId": 1}), "the batch").err().unwrap();
    /// assert_eq!(error.message(), "the batch must be a JSON array, got an object");
    /// let error = Obj::root_array(&json!([{}, 7]), "the batch").err().unwrap();
    /// assert_eq!(error.message(), "`[1]` must be an object, got a number");
    /// # Ok::<(), crm_adapter_sdk::AdapterError>(())
    /// ```
    pub fn root_array(value: &'a Value, what: &str) -> Result<Vec<Self>, AdapterError> {
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| item_obj(format!("[{i}]"), item))
                .collect(),
            other => Err(AdapterError::bad_request(format!(
                "{what} must be a JSON array, got {}",
                kind(other)
            ))),
        }
    }

    /// The dotted name of `key` in this object, for messages.
    pub fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn missing(&self, key: &str) -> AdapterError {
        AdapterError::bad_request(format!("`{}` is missing", self.name(key)))
    }

    fn wrong(&self, key: &str, expected: &str, got: &Value) -> AdapterError {
        AdapterError::bad_request(format!(
            "`{}` must be {expected}, got {}",
            self.name(key),
            kind(got)
        ))
    }

    /// The value of `key`, treating `null` as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A required nested object.
    pub fn child(&self, key: &str) -> Result<Obj<'a>, AdapterError> {
        self.opt_child(key)?.ok_or_else(|| self.missing(key))
    }

    /// A nested object if present.
    pub fn opt_child(&self, key: &str) -> Result<Option<Obj<'a>>, AdapterError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj {
                path: self.name(key),
                map,
            })),
            Some(other) => Err(self.wrong(key, "an object", other)),
        }
    }

    /// The objects of a required array (named `records[1]` in messages).
    pub fn objects(&self, key: &str) -> Result<Vec<Obj<'a>>, AdapterError> {
        if self.get(key).is_none() {
            return Err(self.missing(key));
        }
        self.opt_objects(key)
    }

    /// The objects of an array (named `enrollment.splits[1]` in messages); absent is empty.
    pub fn opt_objects(&self, key: &str) -> Result<Vec<Obj<'a>>, AdapterError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| item_obj(format!("{}[{i}]", self.name(key)), item))
                .collect(),
            Some(other) => Err(self.wrong(key, "an array", other)),
        }
    }

    /// A required, non-empty string.
    pub fn string(&self, key: &str) -> Result<String, AdapterError> {
        self.opt_string(key)?.ok_or_else(|| self.missing(key))
    }

    /// A string if present and not empty.
    pub fn opt_string(&self, key: &str) -> Result<Option<String>, AdapterError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    /// A required identifier: a non-empty string, or a whole number (many CRMs send ids as
    /// numbers), trimmed, at most [`MAX_ID_BYTES`].
    pub fn id(&self, key: &str) -> Result<String, AdapterError> {
        match self.get(key) {
            None => Err(self.missing(key)),
            Some(value) => id_value(&self.name(key), value),
        }
    }

    /// The identifiers of a required, non-empty array (Salesforce's `recordIds`, Zoho's `ids`),
    /// each read as [`Obj::id`] reads one and named `ids[1]` in messages.
    ///
    /// ```
    /// use crm_adapter_sdk::fields::Obj;
    /// use serde_json::json;
    ///
    /// let body = json!({"ids": ["4150868000001148082", 17], "none": [], "bad": ["a", ""]});
    /// let root = Obj::root(&body, "the notification")?;
    /// assert_eq!(root.ids("ids")?, ["4150868000001148082", "17"]);
    /// assert_eq!(root.ids("none").unwrap_err().message(), "`none` is empty");
    /// assert_eq!(root.ids("bad").unwrap_err().message(), "`bad[1]` is empty");
    /// assert_eq!(root.ids("missing").unwrap_err().message(), "`missing` is missing");
    /// # Ok::<(), crm_adapter_sdk::AdapterError>(())
    /// ```
    pub fn ids(&self, key: &str) -> Result<Vec<String>, AdapterError> {
        match self.get(key) {
            None => Err(self.missing(key)),
            Some(Value::Array(items)) if items.is_empty() => Err(AdapterError::bad_request(
                format!("`{}` is empty", self.name(key)),
            )),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| id_value(&format!("{}[{i}]", self.name(key)), item))
                .collect(),
            Some(other) => Err(self.wrong(key, "an array", other)),
        }
    }

    /// The strings of an array (field names, tags), in order; absent is empty. Every item must
    /// be a string.
    ///
    /// ```
    /// use crm_adapter_sdk::fields::Obj;
    /// use serde_json::json;
    ///
    /// let body = json!({"changedFields": ["Amount", "StageName"], "odd": ["Name", 3]});
    /// let header = Obj::root(&body, "the header")?;
    /// assert_eq!(header.opt_strings("changedFields")?, ["Amount", "StageName"]);
    /// assert!(header.opt_strings("nulledFields")?.is_empty());
    /// assert_eq!(
    ///     header.opt_strings("odd").unwrap_err().message(),
    ///     "`odd[1]` must be a string, got a number"
    /// );
    /// # Ok::<(), crm_adapter_sdk::AdapterError>(())
    /// ```
    pub fn opt_strings(&self, key: &str) -> Result<Vec<String>, AdapterError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(AdapterError::bad_request(format!(
                        "`{}[{i}]` must be a string, got {}",
                        self.name(key),
                        kind(other)
                    ))),
                })
                .collect(),
            Some(other) => Err(self.wrong(key, "an array", other)),
        }
    }

    /// A date-time if present, read with [`parse_timestamp`] (RFC 3339, with the offsets CRMs
    /// use: `Z`, `+05:30`, and Salesforce's `+0000`).
    ///
    /// ```
    /// use crm_adapter_sdk::fields::Obj;
    /// use serde_json::json;
    ///
    /// let body = json!({"Modified_Time": "2025-12-01T15:30:00+05:30", "when": "yesterday"});
    /// let record = Obj::root(&body, "the record")?;
    /// let at = record.opt_timestamp("Modified_Time")?.unwrap();
    /// assert_eq!(at.to_rfc3339(), "2025-12-01T10:00:00Z");
    /// assert_eq!(
    ///     record.opt_timestamp("when").unwrap_err().message(),
    ///     "`when` is `yesterday`, not a date-time such as \"2025-12-01T10:00:00Z\""
    /// );
    /// # Ok::<(), crm_adapter_sdk::AdapterError>(())
    /// ```
    pub fn opt_timestamp(&self, key: &str) -> Result<Option<Timestamp>, AdapterError> {
        let Some(text) = self.opt_string(key)? else {
            return Ok(None);
        };
        match parse_timestamp(&text) {
            Some(at) => Ok(Some(at)),
            None => {
                let shown: String = text.chars().take(64).collect();
                Err(AdapterError::bad_request(format!(
                    "`{}` is `{shown}`, not a date-time such as \"2025-12-01T10:00:00Z\"",
                    self.name(key)
                )))
            }
        }
    }

    /// A required decimal: a JSON number (converted from its exact text) or a canonical decimal
    /// string.
    pub fn decimal(&self, key: &str) -> Result<Decimal, AdapterError> {
        self.opt_decimal(key)?.ok_or_else(|| self.missing(key))
    }

    /// A decimal if present.
    pub fn opt_decimal(&self, key: &str) -> Result<Option<Decimal>, AdapterError> {
        self.get(key)
            .map(|v| {
                Decimal::from_json(v)
                    .map_err(|e| e.in_field(&format!("`{}`", self.name(key))).into())
            })
            .transpose()
    }

    /// A percentage between 0 and 100.
    pub fn percentage(&self, key: &str) -> Result<Decimal, AdapterError> {
        let pct = self.decimal(key)?;
        let value = pct.into_inner();
        if value.is_sign_negative() && !value.is_zero() || value > 100.into() {
            return Err(AdapterError::bad_request(format!(
                "`{}` is {pct}; a percentage must be between 0 and 100",
                self.name(key)
            )));
        }
        Ok(pct)
    }

    /// A count if present: a whole number from 0 to 2^53 - 1.
    pub fn opt_count(&self, key: &str) -> Result<Option<u64>, AdapterError> {
        const MAX: u64 = (1 << 53) - 1;
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(count) if count <= MAX => Ok(Some(count)),
                _ => Err(AdapterError::bad_request(format!(
                    "`{}` must be a whole number from 0 to {MAX}, got {n}",
                    self.name(key)
                ))),
            },
            Some(other) => Err(self.wrong(key, "a whole number", other)),
        }
    }

    /// A required count: a whole number from 0 to 2^53 - 1 (epoch milliseconds, for one).
    ///
    /// ```
    /// use crm_adapter_sdk::fields::Obj;
    /// use serde_json::json;
    ///
    /// let body = json!({"occurredAt": 1764583200000_u64, "attempt": -1});
    /// let root = Obj::root(&body, "the event")?;
    /// assert_eq!(root.count("occurredAt")?, 1_764_583_200_000);
    /// assert_eq!(root.count("missing").unwrap_err().message(), "`missing` is missing");
    /// assert!(root.count("attempt").is_err());
    /// # Ok::<(), crm_adapter_sdk::AdapterError>(())
    /// ```
    pub fn count(&self, key: &str) -> Result<u64, AdapterError> {
        self.opt_count(key)?.ok_or_else(|| self.missing(key))
    }

    /// A whole number of either sign within ±(2^53 - 1) if present, such as a CRM's numeric
    /// status code.
    ///
    /// ```
    /// use crm_adapter_sdk::fields::Obj;
    /// use serde_json::json;
    ///
    /// let body = json!({"status": -2, "label": "closed", "ratio": 0.5});
    /// let root = Obj::root(&body, "the appointment")?;
    /// assert_eq!(root.opt_int("status")?, Some(-2));
    /// assert_eq!(root.opt_int("missing")?, None);
    /// assert_eq!(
    ///     root.opt_int("label").unwrap_err().message(),
    ///     "`label` must be a whole number, got a string"
    /// );
    /// assert!(root.opt_int("ratio").is_err());
    /// # Ok::<(), crm_adapter_sdk::AdapterError>(())
    /// ```
    pub fn opt_int(&self, key: &str) -> Result<Option<i64>, AdapterError> {
        const MAX: i64 = (1 << 53) - 1;
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(int) if (-MAX..=MAX).contains(&int) => Ok(Some(int)),
                _ => Err(AdapterError::bad_request(format!(
                    "`{}` must be a whole number from -{MAX} to {MAX}, got {n}",
                    self.name(key)
                ))),
            },
            Some(other) => Err(self.wrong(key, "a whole number", other)),
        }
    }

    /// A boolean if present.
    ///
    /// ```
    /// use crm_adapter_sdk::fields::Obj;
    /// use serde_json::json;
    ///
    /// let body = json!({"archived": false, "flag": "true"});
    /// let root = Obj::root(&body, "the record")?;
    /// assert_eq!(root.opt_bool("archived")?, Some(false));
    /// assert_eq!(root.opt_bool("missing")?, None);
    /// assert_eq!(
    ///     root.opt_bool("flag").unwrap_err().message(),
    ///     "`flag` must be a boolean, got a string"
    /// );
    /// # Ok::<(), crm_adapter_sdk::AdapterError>(())
    /// ```
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, AdapterError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong(key, "a boolean", other)),
        }
    }

    /// The keys of this object (including those whose value is `null`), for objects whose keys
    /// are data, such as a CRM record's property map.
    ///
    /// ```
    /// use crm_adapter_sdk::fields::Obj;
    /// use serde_json::json;
    ///
    /// let body = json!({"properties": {"email": "a@example.com", "phone": null}});
    /// let properties = Obj::root(&body, "the record")?.child("properties")?;
    /// let keys: Vec<&str> = properties.keys().collect();
    /// assert_eq!(keys, ["email", "phone"]);
    /// assert_eq!(properties.opt_string("phone")?, None);
    /// # Ok::<(), crm_adapter_sdk::AdapterError>(())
    /// ```
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.map.keys().map(String::as_str)
    }
}

/// Parses an RFC 3339 date-time (`2025-12-01T10:00:00Z`, `2025-12-01T15:30:00.250+05:30`) into
/// a UTC [`Timestamp`]. Also takes an offset without a colon (`+0000`, as Salesforce writes
/// it) and a space instead of the `T`. A fraction keeps up to nine digits. `None` for anything
/// else, for an impossible date (`2025-02-29`), and for a time before 1970.
///
/// ```
/// use crm_adapter_sdk::fields::parse_timestamp;
///
/// let at = parse_timestamp("2025-12-01T10:00:00.000+0000").unwrap();
/// assert_eq!(at.to_rfc3339(), "2025-12-01T10:00:00Z");
/// assert_eq!(parse_timestamp("2025-12-01T15:30:00+05:30"), Some(at));
/// assert_eq!(parse_timestamp("2025-12-01"), None);
/// ```
pub fn parse_timestamp(text: &str) -> Option<Timestamp> {
    fn number(text: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok().filter(|n| range.contains(n))
    }
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let year = number(text.get(..4)?, 0..=9999)?;
    let month = number(text.get(5..7)?, 1..=12)?;
    let day = number(text.get(8..10)?, 1..=31)?;
    let hour = number(text.get(11..13)?, 0..=23)?;
    let minute = number(text.get(14..16)?, 0..=59)?;
    let second = number(text.get(17..19)?, 0..=59)?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day > month_days {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut nanoseconds = 0u32;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &after_dot[..digits.min(9)];
        nanoseconds = u32::try_from(number(kept, 0..=999_999_999)?).ok()?
            * 10u32.pow(9 - u32::try_from(kept.len()).ok()?);
        rest = &after_dot[digits..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let zone = &rest[1..];
            let (hours, minutes) = match zone.len() {
                5 if zone.as_bytes()[2] == b':' => (zone.get(..2)?, zone.get(3..)?),
                4 => (zone.get(..2)?, zone.get(2..)?),
                _ => return None,
            };
            sign * (number(hours, 0..=23)? * 3600 + number(minutes, 0..=59)? * 60)
        }
    };
    // Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(Timestamp {
        seconds: u64::try_from(seconds).ok()?,
        nanoseconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_parse_in_the_forms_crms_send() {
        let cases = [
            ("1970-01-01T00:00:00Z", Some((0, 0))),
            ("2025-12-01T10:00:00Z", Some((1_764_583_200, 0))),
            ("2025-12-01t10:00:00z", Some((1_764_583_200, 0))),
            ("2025-12-01 10:00:00Z", Some((1_764_583_200, 0))),
            ("2025-12-01T10:00:00.000+0000", Some((1_764_583_200, 0))),
            ("2025-12-01T15:30:00+05:30", Some((1_764_583_200, 0))),
            ("2025-12-01T05:00:00-05:00", Some((1_764_583_200, 0))),
            ("2025-12-01T10:00:00.5Z", Some((1_764_583_200, 500_000_000))),
            (
                "2025-12-01T10:00:00.123456789123Z",
                Some((1_764_583_200, 123_456_789)),
            ),
            ("2000-02-29T00:00:00Z", Some((951_782_400, 0))),
            ("2099-12-31T23:59:59Z", Some((4_102_444_799, 0))),
            // Not RFC 3339, or not a real time.
            ("2025-02-29T00:00:00Z", None),
            ("2025-04-31T00:00:00Z", None),
            ("2025-13-01T00:00:00Z", None),
            ("2025-12-01T24:00:00Z", None),
            ("2025-12-01T10:00:00", None),
            ("2025-12-01T10:00:00.Z", None),
            ("2025-12-01T10:00:00+5:30", None),
            ("2025-12-01T10:00:00+05:3x", None),
            ("2025-12-01", None),
            ("+025-12-01T10:00:00Z", None),
            ("1969-12-31T23:59:59Z", None),
            ("1970-01-01T00:00:00+00:01", None),
            ("2025-12-01T10:00:00Z ", None),
            ("２０２５-12-01T10:00:00Z", None),
            ("2025-12-01T10:00:00+0é0", None),
            ("2025-12-01T10:00:00é:00", None),
        ];
        for (text, expected) in cases {
            let got = parse_timestamp(text).map(|t| (t.seconds, t.nanoseconds));
            assert_eq!(got, expected, "{text}");
        }
    }

    #[test]
    fn id_lists_apply_the_single_id_rules_to_each_item() {
        let long = "9".repeat(MAX_ID_BYTES + 1);
        let body = json!({
            "ok": [" 001 ", 42],
            "float": ["1", 1.5],
            "long": [long],
            "object": {"id": 1},
        });
        let root = Obj::root(&body, "x").unwrap();
        assert_eq!(root.ids("ok").unwrap(), ["001", "42"]);
        let message = |key: &str| root.ids(key).unwrap_err().message().to_owned();
        assert_eq!(
            message("float"),
            "`float[1]` must be a string or a whole number, got a number"
        );
        assert_eq!(
            message("long"),
            format!(
                "`long[0]` is {} bytes long; the limit is 256",
                MAX_ID_BYTES + 1
            )
        );
        assert_eq!(
            message("object"),
            "`object` must be an array, got an object"
        );
        // The single-id reader kept its messages.
        let body = json!({"rec": {"id": ""}});
        let rec = Obj::root(&body, "x").unwrap().child("rec").unwrap();
        assert_eq!(rec.id("id").unwrap_err().message(), "`rec.id` is empty");
    }

    #[test]
    fn string_lists_and_timestamps_name_the_field_in_errors() {
        let body = json!({"h": {"fields": "Name", "at": 5, "ok": null}});
        let h = Obj::root(&body, "x").unwrap().child("h").unwrap();
        assert_eq!(
            h.opt_strings("fields").unwrap_err().message(),
            "`h.fields` must be an array, got a string"
        );
        assert_eq!(
            h.opt_timestamp("at").unwrap_err().message(),
            "`h.at` must be a string, got a number"
        );
        assert_eq!(h.opt_timestamp("ok").unwrap(), None);
        assert!(h.opt_strings("ok").unwrap().is_empty());
    }
}
