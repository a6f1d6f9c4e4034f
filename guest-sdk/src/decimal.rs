use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::AdapterError;

/// Largest exponent magnitude accepted in a JSON number: far beyond anything `rust_decimal`
/// represents (28 digits), small enough that expanding it can never allocate much.
const MAX_EXPONENT: i64 = 64;

/// An exact decimal that serializes only as a JSON string, keeping its scale.
///
/// Money and percentages must never travel as JSON numbers (IEEE-754 doubles lose digits), so
/// this type has no float conversions at all, and its [`Serialize`] writes a string in
/// canonical form (`-?digits(.digits)?`) with the scale it was given: `"12.50"` stays `"12.50"`.
///
/// ```
/// use crm_adapter_sdk::Decimal;
/// use serde_json::Value;
///
/// let rate: Decimal = "12.50".parse().unwrap();
/// assert_eq!(serde_json::to_string(&rate).unwrap(), r#""12.50""#);
///
/// // CRMs often send numbers: their exact text is kept, never rounded through f64.
/// let body: Value = serde_json::from_str(r#"{"pepm_rate": 12.50}"#).unwrap();
/// let rate = Decimal::from_json(&body["pepm_rate"]).unwrap();
/// assert_eq!(rate.to_string(), "12.50");
/// ```
///
/// Equality and ordering compare values, not text: `"12.5" == "12.50"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal(rust_decimal::Decimal);

/// Why a value is not a [`Decimal`].
///
/// Converts into [`AdapterError::BadRequest`] with `?` (a decimal usually comes from the CRM's
/// input); add the field's name with [`DecimalError::in_field`] for a clearer message.
///
/// ```
/// use crm_adapter_sdk::{AdapterError, Decimal};
///
/// let err = Decimal::parse("1e3").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "`1e3` is not a canonical decimal (expected -?digits(.digits)?, e.g. \"12.50\")"
/// );
/// let err: AdapterError = err.in_field("/pepm_rate").into();
/// assert!(matches!(err, AdapterError::BadRequest(m) if m.starts_with("/pepm_rate: `1e3`")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecimalError {
    message: String,
}

impl DecimalError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// Prefixes the message with the field the value came from.
    ///
    /// ```
    /// # use crm_adapter_sdk::Decimal;
    /// let err = Decimal::parse("abc").unwrap_err().in_field("enrollment.pepm_rate");
    /// assert!(err.to_string().starts_with("enrollment.pepm_rate: "));
    /// ```
    pub fn in_field(self, field: &str) -> Self {
        Self::new(format!("{field}: {}", self.message))
    }
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecimalError {}

impl From<DecimalError> for AdapterError {
    fn from(err: DecimalError) -> Self {
        AdapterError::BadRequest(err.message)
    }
}

/// `-?digits(.digits)?`: no exponent, no `+`, no spaces, no `NaN`.
fn is_canonical(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits)
}

impl Decimal {
    /// Parses a decimal in canonical form, `-?digits(.digits)?`, keeping its scale.
    ///
    /// Refuses exponents, `+`, spaces, `NaN`, and values `rust_decimal` cannot hold exactly
    /// (more than 28 fractional digits, or beyond about ±7.9e28).
    ///
    /// ```
    /// use crm_adapter_sdk::Decimal;
    ///
    /// assert_eq!(Decimal::parse("1234.56").unwrap().to_string(), "1234.56");
    /// assert_eq!(Decimal::parse("-0.10").unwrap().scale(), 2);
    /// for bad in ["1e3", "+1", " 1", "1.", ".5", "NaN", "1,5", ""] {
    ///     assert!(Decimal::parse(bad).is_err(), "{bad}");
    /// }
    /// ```
    pub fn parse(text: &str) -> Result<Self, DecimalError> {
        if !is_canonical(text) {
            return Err(DecimalError::new(format!(
                "`{}` is not a canonical decimal (expected -?digits(.digits)?, e.g. \"12.50\")",
                truncate(text)
            )));
        }
        rust_decimal::Decimal::from_str_exact(text)
            .map(Self)
            .map_err(|_| {
                DecimalError::new(format!(
                    "`{}` is out of range for a decimal (at most 28 fractional digits and 29 \
                     significant digits)",
                    truncate(text)
                ))
            })
    }

    /// Converts a JSON value: a string in canonical form, or a JSON number converted from its
    /// exact text (never through `f64`). Anything else is an error.
    ///
    /// A number's scale is the number of digits it was written with: `12.50` gives `"12.50"`,
    /// `1e3` gives `"1000"`, `1.5e-2` gives `"0.015"`.
    ///
    /// ```
    /// use crm_adapter_sdk::Decimal;
    /// use serde_json::{Value, json};
    ///
    /// let from = |text: &str| {
    ///     let value: Value = serde_json::from_str(text).unwrap();
    ///     Decimal::from_json(&value).map(|d| d.to_string())
    /// };
    /// assert_eq!(from("12.50").unwrap(), "12.50");
    /// assert_eq!(from("1234.56").unwrap(), "1234.56");
    /// assert_eq!(from("1e3").unwrap(), "1000");
    /// assert_eq!(from(r#""33.333333""#).unwrap(), "33.333333");
    /// assert!(from(r#""1e3""#).is_err()); // strings must be canonical
    /// assert!(from("true").is_err());
    /// assert!(from("null").is_err());
    /// ```
    pub fn from_json(value: &Value) -> Result<Self, DecimalError> {
        match value {
            Value::String(text) => Self::parse(text),
            Value::Number(number) => Self::from_json_number_text(number.as_str()),
            other => Err(DecimalError::new(format!(
                "expected a decimal (a string such as \"12.50\" or a number), got {}",
                describe_json(other)
            ))),
        }
    }

    /// Converts the text of a JSON number (`-?int(.frac)?([eE][+-]?exp)?`) exactly.
    fn from_json_number_text(text: &str) -> Result<Self, DecimalError> {
        let bad = || DecimalError::new(format!("`{}` is not a JSON number", truncate(text)));
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(at) => {
                let exp = &unsigned[at + 1..];
                let exp_digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if exp_digits.is_empty() || !exp_digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let magnitude: i64 = exp_digits.parse().unwrap_or(i64::MAX);
                if magnitude > MAX_EXPONENT {
                    return Err(DecimalError::new(format!(
                        "`{}` is out of range for a decimal",
                        truncate(text)
                    )));
                }
                let exponent = if exp.starts_with('-') {
                    -magnitude
                } else {
                    magnitude
                };
                (&unsigned[..at], exponent)
            }
            None => (unsigned, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !all_digits(int) || !all_digits(frac) || mantissa.ends_with('.') {
            return Err(bad());
        }
        let mut digits = format!("{int}{frac}");
        // The value is digits * 10^-scale.
        let mut scale = i64::try_from(frac.len()).map_err(|_| bad())? - exponent;
        if scale < 0 {
            digits.extend(std::iter::repeat_n('0', scale.unsigned_abs() as usize));
            scale = 0;
        }
        let scale = scale as usize;
        if digits.len() <= scale {
            let pad = scale + 1 - digits.len();
            digits.insert_str(0, &"0".repeat(pad));
        }
        let (int, frac) = digits.split_at(digits.len() - scale);
        let int = int.trim_start_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let sign = if negative { "-" } else { "" };
        let canonical = if frac.is_empty() {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac}")
        };
        Self::parse(&canonical)
    }

    /// The number of digits after the decimal point.
    ///
    /// ```
    /// # use crm_adapter_sdk::Decimal;
    /// assert_eq!(Decimal::parse("12.50").unwrap().scale(), 2);
    /// assert_eq!(Decimal::parse("7").unwrap().scale(), 0);
    /// ```
    pub fn scale(&self) -> u32 {
        self.0.scale()
    }

    /// The `rust_decimal` value, for arithmetic (the SDK re-exports the crate as
    /// [`crate::rust_decimal`]).
    ///
    /// ```
    /// use crm_adapter_sdk::Decimal;
    ///
    /// let rate = Decimal::parse("12.50").unwrap().into_inner();
    /// let members = crm_adapter_sdk::rust_decimal::Decimal::from(40);
    /// assert_eq!(Decimal::from(rate * members).to_string(), "500.00");
    /// ```
    pub fn into_inner(self) -> rust_decimal::Decimal {
        self.0
    }
}

impl FromStr for Decimal {
    type Err = DecimalError;

    /// Same as [`Decimal::parse`].
    fn from_str(text: &str) -> Result<Self, DecimalError> {
        Self::parse(text)
    }
}

impl TryFrom<&str> for Decimal {
    type Error = DecimalError;

    /// Same as [`Decimal::parse`].
    fn try_from(text: &str) -> Result<Self, DecimalError> {
        Self::parse(text)
    }
}

impl TryFrom<&Value> for Decimal {
    type Error = DecimalError;

    /// Same as [`Decimal::from_json`].
    fn try_from(value: &Value) -> Result<Self, DecimalError> {
        Self::from_json(value)
    }
}

impl From<rust_decimal::Decimal> for Decimal {
    fn from(value: rust_decimal::Decimal) -> Self {
        Self(value)
    }
}

impl From<i64> for Decimal {
    fn from(value: i64) -> Self {
        Self(value.into())
    }
}

impl From<u64> for Decimal {
    fn from(value: u64) -> Self {
        Self(value.into())
    }
}

impl From<i32> for Decimal {
    fn from(value: i32) -> Self {
        Self(value.into())
    }
}

impl From<u32> for Decimal {
    fn from(value: u32) -> Self {
        Self(value.into())
    }
}

impl From<Decimal> for rust_decimal::Decimal {
    fn from(value: Decimal) -> Self {
        value.0
    }
}

impl fmt::Display for Decimal {
    /// The canonical form with the decimal's scale, never an exponent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Decimal {
    /// Always a JSON string.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    /// Accepts what [`Decimal::from_json`] accepts: a canonical string or a JSON number (exact
    /// with `serde_json`, whose `arbitrary_precision` the SDK enables).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Decimal::from_json(&value).map_err(serde::de::Error::custom)
    }
}

/// A short description of a JSON value for error messages.
pub(crate) fn describe_json(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {}", truncate(n.as_str())),
        Value::String(s) => format!("the string \"{}\"", truncate(s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Keeps error messages bounded whatever the input.
fn truncate(text: &str) -> String {
    const MAX: usize = 64;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json_text(text: &str) -> Result<String, DecimalError> {
        let value: Value = serde_json::from_str(text).unwrap();
        Decimal::from_json(&value).map(|d| d.to_string())
    }

    #[test]
    fn numbers_convert_from_their_exact_text() {
        let cases = [
            ("12.50", "12.50"),
            ("33.333333", "33.333333"),
            ("1234.56", "1234.56"),
            ("1e3", "1000"),
            ("1E3", "1000"),
            ("1e+3", "1000"),
            ("1.5e-2", "0.015"),
            ("1.20e1", "12.0"),
            ("-0.5", "-0.5"),
            ("0", "0"),
            ("-7", "-7"),
            ("5e-28", "0.0000000000000000000000000005"),
            ("9007199254740993", "9007199254740993"),
            ("12345678901234567890.123", "12345678901234567890.123"),
            ("0.1", "0.1"),
        ];
        for (input, expected) in cases {
            assert_eq!(from_json_text(input).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn numbers_beyond_rust_decimal_are_refused_not_rounded() {
        for input in [
            "1e29",
            "1e-29",
            "123456789012345678901234567890",
            "0.12345678901234567890123456789",
            "1e999999999999999999999",
        ] {
            let err = from_json_text(input).unwrap_err();
            assert!(err.to_string().contains("out of range"), "{input}: {err}");
        }
    }

    #[test]
    fn strings_must_be_canonical() {
        assert_eq!(from_json_text(r#""12.50""#).unwrap(), "12.50");
        assert_eq!(from_json_text(r#""-3""#).unwrap(), "-3");
        for bad in [
            r#""1e3""#,
            r#""+1""#,
            r#"" 1""#,
            r#""1 ""#,
            r#""NaN""#,
            r#""1.""#,
            r#"".1""#,
            r#""--1""#,
            r#""1,50""#,
            r#""""#,
        ] {
            assert!(from_json_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_json_values_are_refused_with_what_they_were() {
        let err = from_json_text("true").unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected a decimal (a string such as \"12.50\" or a number), got the boolean true"
        );
        assert!(from_json_text("null").is_err());
        assert!(from_json_text("[1]").is_err());
        assert!(from_json_text(r#"{"a":1}"#).is_err());
    }

    #[test]
    fn serializes_only_as_a_string_keeping_scale() {
        let d = Decimal::parse("12.50").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), r#""12.50""#);
        let value = serde_json::json!({ "amount": d });
        assert_eq!(value.to_string(), r#"{"amount":"12.50"}"#);
        let big = Decimal::parse("79228162514264337593543950335").unwrap();
        assert_eq!(big.to_string(), "79228162514264337593543950335");
        let tiny = Decimal::parse("0.0000000000000000000000000001").unwrap();
        assert_eq!(tiny.to_string(), "0.0000000000000000000000000001");
    }

    #[test]
    fn deserializes_from_numbers_and_strings() {
        #[derive(Deserialize)]
        struct Row {
            rate: Decimal,
            pct: Decimal,
        }
        let row: Row = serde_json::from_str(r#"{"rate": 12.50, "pct": "33.333333"}"#).unwrap();
        assert_eq!(row.rate.to_string(), "12.50");
        assert_eq!(row.pct.to_string(), "33.333333");
        let value: Value = serde_json::from_str(r#"{"rate": 1.10, "pct": "1"}"#).unwrap();
        let row: Row = serde_json::from_value(value).unwrap();
        assert_eq!(row.rate.to_string(), "1.10");
        assert!(serde_json::from_str::<Row>(r#"{"rate": "1e3", "pct": "1"}"#).is_err());
    }

    #[test]
    fn long_inputs_are_truncated_in_messages() {
        let long = "9".repeat(10_000);
        let err = Decimal::parse(&format!("x{long}")).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}
