//! Zoho CRM notifications. Zoho publishes no verification vector (there is no MAC: the token
//! is echoed back as set); the body below is shaped like the documented notification callback.

use super::*;

const TOKEN: &str = "TOKEN_FOR_VERIFICATION_OF_1000000068001";

fn body_with(token_json: &str) -> Vec<u8> {
    format!(
        r#"{{"server_time":1700000000000,"query_params":{{}},"module":"Deals","resource_uri":"https://www.zohoapis.com/crm/v8/Deals","ids":["4150868000001234567"],"affected_fields":[],"operation":"update","channel_id":"1000000068001","token":{token_json}}}"#
    )
    .into_bytes()
}

fn config() -> SchemeConfig {
    SchemeConfig::ZohoToken {
        field: "token".to_owned(),
        channel_id: None,
    }
}

fn check(body: &[u8], keys: &[&str]) -> Result<Verified> {
    verify(&config(), &secrets(keys), &post(&[], body), at(0))
}

#[test]
fn the_channel_token_verifies() {
    let verified = check(&body_with(&format!("\"{TOKEN}\"")), &[TOKEN]).unwrap();
    assert_eq!(
        verified,
        Verified {
            delivery_id: None,
            timestamp: None,
            secret_index: Some(0),
        }
    );
}

#[test]
fn a_wrong_token_does_not_verify_and_is_not_echoed() {
    for token in [
        "TOKEN_FOR_VERIFICATION_OF_1000000068002",
        "",
        "T",
        &TOKEN.to_lowercase(),
    ] {
        let body = body_with(&format!("\"{token}\""));
        let error = check(&body, &[TOKEN]).unwrap_err();
        assert_eq!(error, SignatureError::Mismatch, "{token:?}");
        assert_reveals_nothing(&error, &[TOKEN]);
    }
    // One tampered byte of the token.
    let body = body_with(&format!("\"{TOKEN}\""));
    let at_token = body
        .windows(TOKEN.len())
        .position(|w| w == TOKEN.as_bytes())
        .unwrap();
    let mut changed = body.clone();
    changed[at_token + 3] ^= 0x01;
    assert_eq!(check(&changed, &[TOKEN]), Err(SignatureError::Mismatch));
}

#[test]
fn the_token_authenticates_the_sender_not_the_body() {
    // Zoho signs nothing: with the right token, any other field can differ. This is the
    // scheme's documented limit, kept visible here.
    let body = body_with(&format!("\"{TOKEN}\""));
    let edited = String::from_utf8(body)
        .unwrap()
        .replace("\"update\"", "\"delete\"");
    check(edited.as_bytes(), &[TOKEN]).unwrap();
}

#[test]
fn json_escapes_in_the_token_are_read_as_json() {
    check(&body_with(r#""\u0054OKEN""#), &["TOKEN"]).unwrap();
}

#[test]
fn both_tokens_verify_during_a_rotation() {
    let body = body_with(&format!("\"{TOKEN}\""));
    assert_eq!(
        check(&body, &["NEW_TOKEN", TOKEN]).unwrap().secret_index,
        Some(1)
    );
    assert_eq!(
        check(&body, &[TOKEN, "OLD_TOKEN"]).unwrap().secret_index,
        Some(0)
    );
}

#[test]
fn the_field_name_is_configurable() {
    let config = SchemeConfig::ZohoToken {
        field: "verify_token".to_owned(),
        channel_id: None,
    };
    let body = format!(r#"{{"token":"decoy","verify_token":"{TOKEN}"}}"#);
    verify(
        &config,
        &secrets(&[TOKEN]),
        &post(&[], body.as_bytes()),
        at(0),
    )
    .unwrap();
}

#[test]
fn a_missing_repeated_or_non_string_token_is_malformed() {
    let missing = br#"{"channel_id":"1000000068001","ids":["1"]}"#.to_vec();
    let nested = br#"{"data":{"token":"TOKEN_FOR_VERIFICATION_OF_1000000068001"}}"#.to_vec();
    let repeated = format!(r#"{{"token":"{TOKEN}","token":"{TOKEN}"}}"#).into_bytes();
    for body in [
        missing,
        nested,
        repeated,
        body_with("1000000068001"),
        body_with("null"),
        body_with(&format!("[\"{TOKEN}\"]")),
    ] {
        let error = check(&body, &[TOKEN]).unwrap_err();
        assert_eq!(
            error.code(),
            "malformed",
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_reveals_nothing(&error, &[TOKEN]);
    }
}

#[test]
fn a_body_that_is_not_one_json_object_is_malformed() {
    let token_body = format!(r#"{{"token":"{TOKEN}"}}"#);
    for body in [
        String::new(),
        "token=abc".to_owned(),
        format!("[{token_body}]"),
        format!("{token_body} {{}}"),
        format!("{token_body}x"),
        token_body[..token_body.len() - 1].to_owned(),
        "[".repeat(10_000),
        format!("{{\"a\":{}, \"token\":\"{TOKEN}\"}}", "[".repeat(100_000)),
    ] {
        assert_eq!(
            check(body.as_bytes(), &[TOKEN]).unwrap_err().code(),
            "malformed",
            "{}",
            &body[..body.len().min(60)]
        );
    }
    assert_eq!(
        check(b"\xff\xfe{}", &[TOKEN]).unwrap_err().code(),
        "malformed"
    );
}

#[test]
fn deeply_nested_values_beside_the_token_do_not_overflow_the_stack() {
    for depth in [200, 100_000] {
        let body = format!(
            "{{\"a\":{}{}, \"token\":\"{TOKEN}\"}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        // serde_json skips nested values without recursing, so even a very deep one is read.
        check(body.as_bytes(), &[TOKEN]).unwrap();
    }
}

#[test]
fn redaction_blanks_the_token_and_keeps_every_other_byte() {
    // An escaped token: its JSON text differs from its value.
    let escaped = r#""TOKEN\u005fWITH\"QUOTE""#;
    for token_json in [format!("\"{TOKEN}\""), escaped.to_owned()] {
        let body = body_with(&token_json);
        let redacted = redact(&config(), body.clone());
        assert_eq!(
            String::from_utf8(redacted).unwrap(),
            String::from_utf8(body)
                .unwrap()
                .replace(&token_json, r#""[redacted]""#)
        );
    }
    // A body without a usable token (verification refuses it anyway) is left alone.
    for body in [body_with("42"), b"not json".to_vec()] {
        assert_eq!(redact(&config(), body.clone()), body);
    }
    // Other schemes never touch the body.
    let body = body_with(&format!("\"{TOKEN}\""));
    assert_eq!(redact(&SchemeConfig::GitHub {}, body.clone()), body);
}

fn bound(channel: &str) -> SchemeConfig {
    SchemeConfig::ZohoToken {
        field: "token".to_owned(),
        channel_id: Some(channel.to_owned()),
    }
}

fn check_bound(channel: &str, body: &[u8]) -> Result<Verified> {
    verify(&bound(channel), &secrets(&[TOKEN]), &post(&[], body), at(0))
}

#[test]
fn a_connection_bound_to_a_channel_takes_only_that_channels_notifications() {
    // The fixture body is from channel 1000000068001, written as a string.
    let body = body_with(&format!("\"{TOKEN}\""));
    check_bound("1000000068001", &body).unwrap();
    // Zoho also writes the id as a number.
    let as_number = String::from_utf8(body.clone()).unwrap().replace(
        r#""channel_id":"1000000068001""#,
        r#""channel_id":1000000068001"#,
    );
    check_bound("1000000068001", as_number.as_bytes()).unwrap();
    // The same token on another channel's notification is refused, whatever the token says.
    let error = check_bound("1000000068002", &body).unwrap_err();
    assert_eq!(error, SignatureError::ChannelMismatch);
    assert_eq!(error.code(), "channel_mismatch");
    assert_reveals_nothing(&error, &[TOKEN]);
    // No channel at all is another channel.
    let without = format!(r#"{{"ids":["1"],"token":"{TOKEN}"}}"#);
    assert_eq!(
        check_bound("1000000068001", without.as_bytes()),
        Err(SignatureError::ChannelMismatch)
    );
    // A channel id that is not one is malformed.
    let odd = format!(r#"{{"channel_id":"abc","token":"{TOKEN}"}}"#);
    assert_eq!(
        check_bound("1000000068001", odd.as_bytes())
            .unwrap_err()
            .code(),
        "malformed"
    );
    // The token is checked first: a wrong one is a mismatch, not a channel question.
    let wrong = body_with("\"not-the-token\"");
    assert_eq!(
        check_bound("1000000068002", &wrong),
        Err(SignatureError::Mismatch)
    );
    // An unbound connection takes any channel (as before).
    check(&body, &[TOKEN]).unwrap();
}

#[test]
fn a_channel_binding_must_be_a_channel_id() {
    for bad in ["", "10000x", "123456789012345678901"] {
        assert!(bound(bad).validate().is_err(), "{bad:?}");
    }
    assert!(bound("1000000068001").validate().is_ok());
    let config: SchemeConfig =
        serde_json::from_str(r#"{"scheme":"zoho_token","channel_id":"1000000068001"}"#).unwrap();
    assert_eq!(config, bound("1000000068001"));
}
