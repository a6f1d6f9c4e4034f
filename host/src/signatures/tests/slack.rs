//! Slack v0. The published vector is the worked example of Slack's "Verifying requests from
//! Slack" page (api.slack.com/authentication/verifying-requests-from-slack): signing secret
//! `8f742231b10e8888abcd99yyyzzz85a5`, timestamp 1531420618, a slash-command body, signature
//! `v0=a2114d57…9c69b503`.

use super::*;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const OTHER_SECRET: &str = "0123456789abcdef0123456789abcdef";
const TIMESTAMP: u64 = 1_531_420_618;
const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

fn config() -> SchemeConfig {
    SchemeConfig::Slack {
        tolerance_secs: DEFAULT_TOLERANCE_SECS,
    }
}

fn slack_headers(signature: &str, timestamp: &str) -> Vec<(String, String)> {
    headers(&[
        ("X-Slack-Signature", signature),
        ("X-Slack-Request-Timestamp", timestamp),
    ])
}

fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut message = format!("v0:{timestamp}:").into_bytes();
    message.extend_from_slice(body);
    format!("v0={}", hex::encode(hmac(secret.as_bytes(), &message)))
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
fn the_published_example_verifies() {
    assert_eq!(sign(SECRET, "1531420618", BODY), SIGNATURE);
    let verified = check(
        &slack_headers(SIGNATURE, "1531420618"),
        BODY,
        &[SECRET],
        TIMESTAMP,
    )
    .unwrap();
    assert_eq!(
        verified,
        Verified {
            delivery_id: None,
            timestamp: Some(at(TIMESTAMP)),
            secret_index: Some(0),
        }
    );
}

#[test]
fn a_wrong_secret_or_a_tampered_byte_does_not_verify() {
    let request_headers = slack_headers(SIGNATURE, "1531420618");
    let error = check(&request_headers, BODY, &[OTHER_SECRET], TIMESTAMP).unwrap_err();
    assert_eq!(error, SignatureError::Mismatch);
    assert_reveals_nothing(&error, &[SECRET, OTHER_SECRET, SIGNATURE]);
    assert_eq!(
        check(&request_headers, &tampered(BODY), &[SECRET], TIMESTAMP),
        Err(SignatureError::Mismatch)
    );
    let moved = slack_headers(SIGNATURE, "1531420619");
    assert_eq!(
        check(&moved, BODY, &[SECRET], TIMESTAMP),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn stale_and_future_timestamps_are_refused_beyond_the_tolerance() {
    let request_headers = slack_headers(SIGNATURE, "1531420618");
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
fn both_secrets_verify_during_a_rotation() {
    let request_headers = slack_headers(SIGNATURE, "1531420618");
    assert_eq!(
        check(&request_headers, BODY, &[OTHER_SECRET, SECRET], TIMESTAMP)
            .unwrap()
            .secret_index,
        Some(1)
    );
    let by_current = slack_headers(&sign(OTHER_SECRET, "1531420618", BODY), "1531420618");
    assert_eq!(
        check(&by_current, BODY, &[OTHER_SECRET, SECRET], TIMESTAMP)
            .unwrap()
            .secret_index,
        Some(0)
    );
}

#[test]
fn missing_headers_are_named() {
    let request_headers = slack_headers(SIGNATURE, "1531420618");
    for name in ["X-Slack-Signature", "X-Slack-Request-Timestamp"] {
        assert_eq!(
            check(&without(&request_headers, name), BODY, &[SECRET], TIMESTAMP),
            Err(SignatureError::MissingHeader(name.to_owned()))
        );
    }
}

#[test]
fn malformed_headers_are_refused() {
    let hex_part = SIGNATURE.trim_start_matches("v0=");
    let cases = [
        (hex_part.to_owned(), "1531420618"),
        (format!("v1={hex_part}"), "1531420618"),
        (format!("v0={hex_part}z"), "1531420618"),
        (format!("{SIGNATURE},{SIGNATURE}"), "1531420618"),
        (format!("{SIGNATURE} {SIGNATURE}"), "1531420618"),
        (SIGNATURE.to_owned(), "1531420618.0"),
        (SIGNATURE.to_owned(), "yesterday"),
    ];
    for (signature, timestamp) in cases {
        let error = check(
            &slack_headers(&signature, timestamp),
            BODY,
            &[SECRET],
            TIMESTAMP,
        )
        .unwrap_err();
        assert_eq!(error.code(), "malformed", "{signature:?} {timestamp:?}");
        assert_reveals_nothing(&error, &[SECRET, hex_part]);
    }
}
