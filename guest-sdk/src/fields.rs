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

use crate::{AdapterError, Decimal};

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
        let id = match self.get(key) {
            None => return Err(self.missing(key)),
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) if n.as_str().bytes().all(|b| b.is_ascii_digit()) => {
                n.as_str().to_owned()
            }
            Some(other) => return Err(self.wrong(key, "a string or a whole number", other)),
        };
        if id.is_empty() {
            return Err(AdapterError::bad_request(format!(
                "`{}` is empty",
                self.name(key)
            )));
        }
        if id.len() > MAX_ID_BYTES {
            return Err(AdapterError::bad_request(format!(
                "`{}` is {} bytes long; the limit is {MAX_ID_BYTES}",
                self.name(key),
                id.len()
            )));
        }
        Ok(id)
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
