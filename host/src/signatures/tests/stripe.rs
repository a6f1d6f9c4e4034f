//! Stripe. Stripe's documentation publishes no secret/signature pair (its libraries' tests
//! sign with the current time), so the vectors are computed here following the documented
//! rules: hex HMAC-SHA256 of `<t>.<body>` keyed with the `whsec_` secret as written.

use super::*;

const SECRET: &str = "whsec_test_4eC39HqLyjWDarjtT1zdp7dc";
const OTHER_SECRET: &str = "whsec_test_other_9f8e7d6c5b4a";
const T: u64 = 1_700_000_000;
const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"invoice.paid"}"#;

fn config() -> SchemeConfig {
    SchemeConfig::Stripe {
        tolerance_secs: DEFAULT_TOLERANCE_SECS,
    }
}

fn v1(secret: &str, t: &str, body: &[u8]) -> String {
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    hex::encode(hmac(secret.as_bytes(), &message))
}

fn stripe_headers(value: &str) -> Vec<(String, String)> {
    headers(&[("Stripe-Signature", value)])
}

fn signed(secret: &str) -> Vec<(String, String)> {
    stripe_headers(&format!("t={T},v1={}", v1(secret, &T.to_string(), BODY)))
}

fn check(
    request_headers: &[(String, String)],
    body: &[u8],
    keys: &[&str],
    now: u64,
) -> Result<Verified> {
    verify(
        &config(),
        &secrets(keys),
        &post(request_headers, body),
        at(now),
    )
}

#[test]
fn a_signed_event_verifies() {
    let verified = check(&signed(SECRET), BODY, &[SECRET], T).unwrap();
    assert_eq!(
        verified,
        Verified {
            delivery_id: None,
            timestamp: Some(at(T)),
            secret_index: Some(0),
        }
    );
}

#[test]
fn the_secret_is_used_as_written_not_base64_decoded() {
    // Unlike Standard Webhooks, Stripe keys the HMAC with the whole `whsec_...` string.
    let standard_style = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let key = base64::engine::general_purpose::STANDARD
        .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .unwrap();
    let mut message = format!("{T}.").into_bytes();
    message.extend_from_slice(BODY);
    let decoded_key_signature = hex::encode(hmac(&key, &message));
    let request_headers = stripe_headers(&format!("t={T},v1={decoded_key_signature}"));
    assert_eq!(
        check(&request_headers, BODY, &[standard_style], T),
        Err(SignatureError::Mismatch)
    );
    check(&signed(standard_style), BODY, &[standard_style], T).unwrap();
}

#[test]
fn a_wrong_secret_or_a_tampered_byte_does_not_verify() {
    let error = check(&signed(SECRET), BODY, &[OTHER_SECRET], T).unwrap_err();
    assert_eq!(error, SignatureError::Mismatch);
    assert_reveals_nothing(
        &error,
        &[SECRET, OTHER_SECRET, &v1(SECRET, &T.to_string(), BODY)],
    );
    assert_eq!(
        check(&signed(SECRET), &tampered(BODY), &[SECRET], T),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn the_timestamp_is_signed() {
    let signature = v1(SECRET, &T.to_string(), BODY);
    let moved = stripe_headers(&format!("t={},v1={signature}", T + 1));
    assert_eq!(
        check(&moved, BODY, &[SECRET], T),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn stale_and_future_timestamps_are_refused_beyond_the_tolerance() {
    let request_headers = signed(SECRET);
    check(&request_headers, BODY, &[SECRET], T + 300).unwrap();
    check(&request_headers, BODY, &[SECRET], T - 300).unwrap();
    assert_eq!(
        check(&request_headers, BODY, &[SECRET], T + 301),
        Err(SignatureError::TimestampTooOld)
    );
    assert_eq!(
        check(&request_headers, BODY, &[SECRET], T - 301),
        Err(SignatureError::TimestampInFuture)
    );
}

#[test]
fn one_valid_v1_among_several_is_enough_and_v0_is_ignored() {
    let t = T.to_string();
    let header = format!(
        "t={t},v1={},v0={},v1=zz-not-hex,v1={}",
        v1(OTHER_SECRET, &t, BODY),
        v1(SECRET, &t, BODY),
        v1(SECRET, &t, BODY)
    );
    check(&stripe_headers(&header), BODY, &[SECRET], T).unwrap();
    // A v0 signature alone (Stripe's legacy scheme) is not accepted.
    let v0_only = format!(
        "t={t},v0={},v1={}",
        v1(SECRET, &t, BODY),
        v1(OTHER_SECRET, &t, BODY)
    );
    assert_eq!(
        check(&stripe_headers(&v0_only), BODY, &[SECRET], T),
        Err(SignatureError::Mismatch)
    );
    // Spaces after the commas are tolerated.
    let spaced = format!("t={t}, v1={}", v1(SECRET, &t, BODY));
    check(&stripe_headers(&spaced), BODY, &[SECRET], T).unwrap();
}

#[test]
fn both_secrets_verify_during_a_rotation() {
    let current_then_previous = [OTHER_SECRET, SECRET];
    assert_eq!(
        check(&signed(OTHER_SECRET), BODY, &current_then_previous, T)
            .unwrap()
            .secret_index,
        Some(0)
    );
    assert_eq!(
        check(&signed(SECRET), BODY, &current_then_previous, T)
            .unwrap()
            .secret_index,
        Some(1)
    );
}

#[test]
fn a_missing_header_is_named() {
    assert_eq!(
        check(&[], BODY, &[SECRET], T),
        Err(SignatureError::MissingHeader("Stripe-Signature".to_owned()))
    );
    assert_eq!(
        check(&stripe_headers(""), BODY, &[SECRET], T),
        Err(SignatureError::MissingHeader("Stripe-Signature".to_owned()))
    );
}

#[test]
fn malformed_headers_are_refused() {
    let signature = v1(SECRET, &T.to_string(), BODY);
    let too_many = format!(
        "t={T}{}",
        format!(",v1={signature}").repeat(MAX_SIGNATURES + 2)
    );
    for header in [
        format!("v1={signature}"),
        format!("t={T}"),
        format!("t={T},v0={signature}"),
        format!("t={T},t={T},v1={signature}"),
        format!("t=soon,v1={signature}"),
        format!("t=-{T},v1={signature}"),
        format!("t={T},{signature}"),
        format!("t={T};v1={signature}"),
        "garbage".to_owned(),
        ",,,".to_owned(),
        too_many,
    ] {
        let error = check(&stripe_headers(&header), BODY, &[SECRET], T).unwrap_err();
        assert_eq!(error.code(), "malformed", "{header:?}");
        assert_reveals_nothing(&error, &[&signature, SECRET]);
    }
}

#[test]
fn a_repeated_header_is_refused() {
    let request_headers = doubled(&signed(SECRET), "stripe-signature", "t=1,v1=00");
    assert_eq!(
        check(&request_headers, BODY, &[SECRET], T),
        Err(SignatureError::DuplicateHeader(
            "Stripe-Signature".to_owned()
        ))
    );
}
