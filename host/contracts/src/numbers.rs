//! Numbers and decimal strings, judged on their exact source text.

use rust_decimal::Decimal;

use super::MAX_SAFE_INTEGER;

/// What a JSON number's source text says about its safety for consumers that read numbers as
/// IEEE-754 doubles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NumberClass {
    /// An integer within ±(2^53 - 1): every double reader gets it exactly.
    SafeInteger,
    /// A fraction or an exponent (`12.5`, `1.0`, `1e3`): a double cannot be trusted with money.
    Fractional,
    /// An integer beyond ±(2^53 - 1): doubles round it.
    UnsafeInteger,
}

/// Classifies the source text of a JSON number that the JSON parser already accepted (so it
/// matches `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
pub(super) fn classify_number(text: &str) -> NumberClass {
    if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return NumberClass::Fractional;
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    // JSON forbids leading zeros, so more digits means a larger magnitude: 2^53 - 1 has 16.
    if digits.len() > 16 {
        return NumberClass::UnsafeInteger;
    }
    match digits.parse::<u64>() {
        Ok(magnitude) if magnitude <= MAX_SAFE_INTEGER => NumberClass::SafeInteger,
        _ => NumberClass::UnsafeInteger,
    }
}

/// Why a decimal string is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DecimalProblem {
    /// Not of the form `-?(0|[1-9][0-9]*)(\.[0-9]+)?`; says what is wrong.
    NotCanonical(&'static str),
    /// Canonical, but `rust_decimal` cannot hold it exactly (too large, or scale above 28).
    OutOfRange(String),
}

/// The longest canonical text that can still fit a `Decimal`: a sign, 29 digits, a point, and a
/// leading `0.` when the scale reaches 28 leave us well under 64. Longer texts are refused
/// before `rust_decimal` sees them so that a megabyte of digits costs one length check.
const MAX_DECIMAL_TEXT_LEN: usize = 64;

/// Checks that `text` is a canonical decimal string that `rust_decimal` represents exactly.
/// The text is only judged, never rewritten: its scale (`"12.50"`) is the adapter's to keep.
pub(super) fn check_decimal(text: &str) -> Result<(), DecimalProblem> {
    canonical_problem(text).map_or(Ok(()), |why| Err(DecimalProblem::NotCanonical(why)))?;
    if text.len() > MAX_DECIMAL_TEXT_LEN {
        return Err(DecimalProblem::OutOfRange(format!(
            "has more digits than a decimal can hold ({} characters)",
            text.len()
        )));
    }
    // `from_str_exact` refuses what it would have to round, where `from_str` rounds silently.
    Decimal::from_str_exact(text)
        .map(drop)
        .map_err(|e| DecimalProblem::OutOfRange(e.to_string()))
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, or why not. `rust_decimal` alone is too lenient here: it
/// accepts `1_000`, `+1`, `.5` and `1e3`, which other consumers would read differently.
fn canonical_problem(text: &str) -> Option<&'static str> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (integer, fraction) = match unsigned.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (unsigned, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(integer) {
        return Some(if text.is_empty() {
            "is empty"
        } else {
            "must be digits with an optional leading '-' and an optional '.' followed by digits"
        });
    }
    if integer.len() > 1 && integer.starts_with('0') {
        return Some("has redundant leading zeros");
    }
    if fraction.is_some_and(|fraction| !all_digits(fraction)) {
        return Some(
            "must be digits with an optional leading '-' and an optional '.' followed by digits",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_integer_bounds_are_exact() {
        assert_eq!(classify_number("0"), NumberClass::SafeInteger);
        assert_eq!(classify_number("-0"), NumberClass::SafeInteger);
        assert_eq!(classify_number("42"), NumberClass::SafeInteger);
        assert_eq!(
            classify_number("9007199254740991"),
            NumberClass::SafeInteger
        );
        assert_eq!(
            classify_number("-9007199254740991"),
            NumberClass::SafeInteger
        );
        assert_eq!(
            classify_number("9007199254740992"),
            NumberClass::UnsafeInteger
        );
        assert_eq!(
            classify_number("-9007199254740992"),
            NumberClass::UnsafeInteger
        );
        assert_eq!(
            classify_number("9999999999999999"),
            NumberClass::UnsafeInteger
        );
        assert_eq!(
            classify_number("18446744073709551616"),
            NumberClass::UnsafeInteger
        );
        assert_eq!(
            classify_number(&"9".repeat(400)),
            NumberClass::UnsafeInteger
        );
    }

    #[test]
    fn any_fraction_or_exponent_is_fractional() {
        for text in [
            "12.5", "1.0", "0.0", "-0.5", "1e3", "1E3", "1e-3", "1e+3", "2.5E10",
        ] {
            assert_eq!(classify_number(text), NumberClass::Fractional, "{text}");
        }
    }

    #[test]
    fn canonical_decimals_are_accepted() {
        for text in [
            "0",
            "-0",
            "0.50",
            "12.50",
            "-12.5",
            "7",
            "1000000",
            "0.000",
            "-0.0",
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
            "0.0000000000000000000000000001",
            "7.9228162514264337593543950335",
        ] {
            assert_eq!(check_decimal(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn non_canonical_decimals_are_refused() {
        for text in [
            "",
            "-",
            "+1",
            "1e3",
            "1E3",
            "1.5e2",
            " 1",
            "1 ",
            "NaN",
            "nan",
            "Infinity",
            "-Infinity",
            "007.5",
            "00",
            "-01",
            ".5",
            "5.",
            "-.5",
            "1.2.3",
            "1,5",
            "1_000",
            "0x10",
            "--1",
            "١",
            "1.-5",
        ] {
            assert!(
                matches!(check_decimal(text), Err(DecimalProblem::NotCanonical(_))),
                "{text:?} should not be canonical"
            );
        }
    }

    #[test]
    fn decimals_beyond_rust_decimal_are_out_of_range() {
        for text in [
            "79228162514264337593543950336",
            "-79228162514264337593543950336",
            // Scale 29.
            "0.00000000000000000000000000001",
            "0.00000000000000000000000000000",
            // 30 significant digits.
            "7.92281625142643375935439503351",
        ] {
            assert!(
                matches!(check_decimal(text), Err(DecimalProblem::OutOfRange(_))),
                "{text:?} should be out of range"
            );
        }
    }

    #[test]
    fn a_huge_digit_string_is_refused_quickly() {
        let huge = "9".repeat(1_000_000);
        assert!(matches!(
            check_decimal(&huge),
            Err(DecimalProblem::OutOfRange(_))
        ));
    }
}
