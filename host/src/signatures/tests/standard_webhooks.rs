//! Standard Webhooks. The published vector is the reference libraries' own signing test
//! (standard-webhooks/standard-webhooks, `libraries/python/tests/test_webhooks.py`,
//! `test_sign_function`; the same values appear in the other languages' tests): secret
//! `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`, id `msg_p5jXN8AQM9LWM0D4loKWxJek`, timestamp
//! 1614265330, body `{"test": 2432232314}`.

use super::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Another valid secret, from the same libraries' tests.
const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const TIMESTAMP: u64 = 1_614_265_330;
const BODY: &[u8] = br#"{"test": 2432232314}"#;
const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn config() -> SchemeConfig {
    SchemeConfig::StandardWebhooks {
        tolerance_secs: DEFAULT_TOLERANCE_SECS,
    }
}

fn vendor_headers() -> Vec<(String, String)> {
    headers(&[
        ("webhook-id", ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", SIGNATURE),
    ])
}

/// `v1,<base64>` for `secret` (a `whsec_` secret) over id, timestamp and body.
fn sign(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut message = format!("{id}.{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("v1,{}", b64(&hmac(&key, &message)))
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
fn the_published_vector_verifies_and_surfaces_the_signed_id() {
    assert_eq!(sign(SECRET, ID, "1614265330", BODY), SIGNATURE);
    let verified = check(&vendor_headers(), BODY, &[SECRET], TIMESTAMP).unwrap();
    assert_eq!(
        verified,
        Verified {
            delivery_id: Some(ID.to_owned()),
            timestamp: Some(at(TIMESTAMP)),
            secret_index: Some(0),
        }
    );
}

#[test]
fn a_secret_without_its_whsec_prefix_works_too() {
    let bare = SECRET.trim_start_matches("whsec_");
    check(&vendor_headers(), BODY, &[bare], TIMESTAMP).unwrap();
}

#[test]
fn header_names_are_case_insensitive() {
    let request_headers = headers(&[
        ("Webhook-Id", ID),
        ("WEBHOOK-TIMESTAMP", "1614265330"),
        ("Webhook-Signature", SIGNATURE),
    ]);
    check(&request_headers, BODY, &[SECRET], TIMESTAMP).unwrap();
}

#[test]
fn a_wrong_secret_does_not_verify() {
    let error = check(&vendor_headers(), BODY, &[OTHER_SECRET], TIMESTAMP).unwrap_err();
    assert_eq!(error, SignatureError::Mismatch);
    assert_reveals_nothing(&error, &[SECRET, OTHER_SECRET, SIGNATURE]);
}

#[test]
fn one_tampered_byte_does_not_verify() {
    assert_eq!(
        check(&vendor_headers(), &tampered(BODY), &[SECRET], TIMESTAMP),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn the_id_and_timestamp_are_signed() {
    let other_id = with(&vendor_headers(), "webhook-id", "msg_other");
    assert_eq!(
        check(&other_id, BODY, &[SECRET], TIMESTAMP),
        Err(SignatureError::Mismatch)
    );
    let other_time = with(&vendor_headers(), "webhook-timestamp", "1614265331");
    assert_eq!(
        check(&other_time, BODY, &[SECRET], TIMESTAMP),
        Err(SignatureError::Mismatch)
    );
    // The same number written differently is different signed text.
    let zero_padded = with(&vendor_headers(), "webhook-timestamp", "01614265330");
    assert_eq!(
        check(&zero_padded, BODY, &[SECRET], TIMESTAMP),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn stale_and_future_timestamps_are_refused_beyond_the_tolerance() {
    let request_headers = vendor_headers();
    check(&request_headers, BODY, &[SECRET], TIMESTAMP + 300).unwrap();
    check(&request_headers, BODY, &[SECRET], TIMESTAMP - 300).unwrap();
    assert_eq!(
        check(&request_headers, BODY, &[SECRET], TIMESTAMP + 301),
        Err(SignatureError::TimestampTooOld)
    );
    assert_eq!(
        check(&request_headers, BODY, &[SECRET], TIMESTAMP - 301),
        Err(SignatureError::TimestampInFuture)
    );
}

#[test]
fn the_tolerance_is_configurable() {
    let config = SchemeConfig::StandardWebhooks { tolerance_secs: 30 };
    let request_headers = vendor_headers();
    let request = post(&request_headers, BODY);
    verify(&config, &secrets(&[SECRET]), &request, at(TIMESTAMP + 30)).unwrap();
    assert_eq!(
        verify(&config, &secrets(&[SECRET]), &request, at(TIMESTAMP + 31)),
        Err(SignatureError::TimestampTooOld)
    );
}

#[test]
fn a_forged_stale_request_is_a_mismatch_not_a_timing_problem() {
    // The signature is checked before the window: "too old" means authentic but late.
    assert_eq!(
        check(&vendor_headers(), BODY, &[OTHER_SECRET], TIMESTAMP + 10_000),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn one_valid_signature_among_several_is_enough() {
    // The decoy list is the reference libraries' multi-signature test, with other versions.
    let header = format!(
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= \
         v1a,abc {SIGNATURE} v1,not-base64!"
    );
    let request_headers = with(&vendor_headers(), "webhook-signature", &header);
    check(&request_headers, BODY, &[SECRET], TIMESTAMP).unwrap();

    let decoys_only = with(
        &vendor_headers(),
        "webhook-signature",
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ=",
    );
    assert_eq!(
        check(&decoys_only, BODY, &[SECRET], TIMESTAMP),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn both_secrets_verify_during_a_rotation() {
    let body = b"{\"deal\":\"won\"}";
    let signed_with = |secret: &str| {
        headers(&[
            ("webhook-id", "msg_rotation"),
            ("webhook-timestamp", "1700000000"),
            (
                "webhook-signature",
                &sign(secret, "msg_rotation", "1700000000", body),
            ),
        ])
    };
    let current_then_previous = [OTHER_SECRET, SECRET];
    let by_current = check(
        &signed_with(OTHER_SECRET),
        body,
        &current_then_previous,
        1_700_000_000,
    )
    .unwrap();
    assert_eq!(by_current.secret_index, Some(0));
    let by_previous = check(
        &signed_with(SECRET),
        body,
        &current_then_previous,
        1_700_000_000,
    )
    .unwrap();
    assert_eq!(by_previous.secret_index, Some(1));
    // A sender that signs with both (its own rotation) verifies with either.
    let both = format!(
        "{} {}",
        sign(SECRET, "msg_rotation", "1700000000", body),
        sign(OTHER_SECRET, "msg_rotation", "1700000000", body)
    );
    let request_headers = with(&signed_with(SECRET), "webhook-signature", &both);
    assert_eq!(
        check(&request_headers, body, &[OTHER_SECRET], 1_700_000_000)
            .unwrap()
            .secret_index,
        Some(0)
    );
}

#[test]
fn missing_headers_are_named() {
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert_eq!(
            check(
                &without(&vendor_headers(), name),
                BODY,
                &[SECRET],
                TIMESTAMP
            ),
            Err(SignatureError::MissingHeader(name.to_owned()))
        );
    }
}

#[test]
fn malformed_headers_are_refused() {
    let cases = [
        ("webhook-timestamp", "hello"),
        ("webhook-timestamp", "-1614265330"),
        ("webhook-timestamp", "1614265330.5"),
        ("webhook-timestamp", "99999999999999999999"),
        (
            "webhook-signature",
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        (
            "webhook-signature",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        ("webhook-signature", "v1a,abc"),
        ("webhook-id", "msg with spaces"),
        ("webhook-id", "msg_é"),
    ];
    for (name, value) in cases {
        let error = check(
            &with(&vendor_headers(), name, value),
            BODY,
            &[SECRET],
            TIMESTAMP,
        )
        .unwrap_err();
        assert_eq!(error.code(), "malformed", "{name}: {value:?}");
        assert_reveals_nothing(&error, &[value, SECRET]);
    }
    let too_long_id = "m".repeat(MAX_DELIVERY_ID_LEN + 1);
    assert_eq!(
        check(
            &with(&vendor_headers(), "webhook-id", &too_long_id),
            BODY,
            &[SECRET],
            TIMESTAMP
        )
        .unwrap_err()
        .code(),
        "malformed"
    );
    let too_many = vec![SIGNATURE; MAX_SIGNATURES + 1].join(" ");
    assert_eq!(
        check(
            &with(&vendor_headers(), "webhook-signature", &too_many),
            BODY,
            &[SECRET],
            TIMESTAMP
        ),
        Err(SignatureError::Malformed("too many signatures"))
    );
}

#[test]
fn a_repeated_header_is_refused() {
    let request_headers = doubled(&vendor_headers(), "Webhook-Signature", SIGNATURE);
    assert_eq!(
        check(&request_headers, BODY, &[SECRET], TIMESTAMP),
        Err(SignatureError::DuplicateHeader(
            "webhook-signature".to_owned()
        ))
    );
}

#[test]
fn a_secret_that_is_not_base64_is_a_configuration_error() {
    for bad in ["whsec_not base64!", "whsec_", "whsec_\u{e9}"] {
        let error = check(&vendor_headers(), BODY, &[bad], TIMESTAMP).unwrap_err();
        assert_eq!(error.code(), "invalid_secret", "{bad:?}");
        assert!(error.is_config_error());
        assert_reveals_nothing(&error, &[bad]);
    }
}

#[test]
fn signing_reproduces_the_published_vector() {
    let signature = crate::signatures::sign_standard_webhooks(
        &Secret::new(SECRET),
        ID,
        &TIMESTAMP.to_string(),
        BODY,
    )
    .unwrap();
    assert_eq!(signature, SIGNATURE);
}
