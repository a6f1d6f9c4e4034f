//! Tests of webhook signature verification: one module per scheme family, and here what every
//! scheme shares (configuration, secret handling, error codes and messages, and a garbage loop
//! that no input may panic or pass).
//!
//! Vendor vectors are used where the vendor publishes one; each module says where it comes
//! from, and which vectors are computed here instead because none is published.

mod guard;
mod hmac_body;
mod hubspot;
mod salesforce;
mod slack;
mod standard_webhooks;
mod stripe;
mod zoho;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;

/// The URL the pipeline reports for test requests.
pub(super) const URL: &str = "https://hooks.example.com/v1/hooks/conn-1";

pub(super) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub(super) fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// `headers` with `name` removed (any case).
pub(super) fn without(headers: &[(String, String)], name: &str) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(key, _)| !key.eq_ignore_ascii_case(name))
        .cloned()
        .collect()
}

/// `headers` with `name` set to `value` (replacing any previous value).
pub(super) fn with(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut out = without(headers, name);
    out.push((name.to_owned(), value.to_owned()));
    out
}

/// `headers` plus a second `name` header.
pub(super) fn doubled(
    headers: &[(String, String)],
    name: &str,
    value: &str,
) -> Vec<(String, String)> {
    let mut out = headers.to_vec();
    out.push((name.to_owned(), value.to_owned()));
    out
}

pub(super) fn post<'a>(headers: &'a [(String, String)], body: &'a [u8]) -> RawRequest<'a> {
    RawRequest {
        method: "POST",
        url: URL,
        headers,
        body,
    }
}

pub(super) fn secrets(values: &[&str]) -> Vec<Secret> {
    values.iter().map(|value| Secret::new(*value)).collect()
}

pub(super) fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `body` with one byte in the middle changed.
pub(super) fn tampered(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    let middle = out.len() / 2;
    out[middle] ^= 0x01;
    out
}

/// The error's message names no secret and no signature value.
pub(super) fn assert_reveals_nothing(error: &SignatureError, forbidden: &[&str]) {
    let message = error.to_string();
    for value in forbidden {
        assert!(
            !message.contains(value),
            "{message:?} reveals {value:?} ({})",
            error.code()
        );
    }
}

// --- Configuration. ---

const EXAMPLES: &[(&str, &str)] = &[
    (
        "standard_webhooks",
        r#"{"scheme":"standard_webhooks","tolerance_secs":300}"#,
    ),
    ("hubspot", r#"{"scheme":"hubspot","version":"v3"}"#),
    (
        "hubspot",
        r#"{"scheme":"hubspot","version":"v3","tolerance_secs":120}"#,
    ),
    ("hubspot", r#"{"scheme":"hubspot","version":"v1"}"#),
    ("stripe", r#"{"scheme":"stripe"}"#),
    ("github", r#"{"scheme":"github"}"#),
    ("shopify", r#"{"scheme":"shopify"}"#),
    ("slack", r#"{"scheme":"slack","tolerance_secs":60}"#),
    ("zoho_token", r#"{"scheme":"zoho_token"}"#),
    (
        "salesforce_outbound",
        r#"{"scheme":"salesforce_outbound","organization_id":"00D000000000062EAA"}"#,
    ),
    (
        "generic_hmac",
        r#"{"scheme":"generic_hmac","header":"x-signature","prefix":"sha256=","encoding":"hex","delivery_id_header":"x-request-id"}"#,
    ),
    (
        "generic_hmac",
        r#"{"scheme":"generic_hmac","header":"X-Sig","encoding":"base64"}"#,
    ),
];

#[test]
fn every_documented_config_parses_validates_and_round_trips() {
    for (name, json) in EXAMPLES {
        let config: SchemeConfig =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(config.name(), *name);
        config.validate().unwrap();
        let again: SchemeConfig =
            serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(again, config);
        assert_eq!(
            serde_json::to_value(&config).unwrap()["scheme"],
            serde_json::Value::from(*name)
        );
    }
}

#[test]
fn defaults_are_the_vendors() {
    let parse = |json: &str| serde_json::from_str::<SchemeConfig>(json).unwrap();
    assert_eq!(
        parse(r#"{"scheme":"standard_webhooks"}"#),
        SchemeConfig::StandardWebhooks {
            tolerance_secs: 300
        }
    );
    assert_eq!(
        parse(r#"{"scheme":"stripe"}"#),
        SchemeConfig::Stripe {
            tolerance_secs: 300
        }
    );
    assert_eq!(
        parse(r#"{"scheme":"slack"}"#),
        SchemeConfig::Slack {
            tolerance_secs: 300
        }
    );
    assert_eq!(
        parse(r#"{"scheme":"zoho_token"}"#),
        SchemeConfig::ZohoToken {
            field: "token".to_owned(),
            channel_id: None,
        }
    );
    assert_eq!(
        parse(r#"{"scheme":"generic_hmac","header":"x-sig","encoding":"hex"}"#),
        SchemeConfig::GenericHmac {
            header: "x-sig".to_owned(),
            prefix: String::new(),
            encoding: SignatureEncoding::Hex,
            delivery_id_header: None,
        }
    );
}

#[test]
fn unknown_schemes_fields_and_values_are_refused() {
    for json in [
        r#"{"scheme":"github","secret":"x"}"#,
        r#"{"scheme":"shopify","prefix":""}"#,
        r#"{"scheme":"stripe","tolerance":5}"#,
        r#"{"scheme":"hubspot"}"#,
        r#"{"scheme":"hubspot","version":"v4"}"#,
        r#"{"scheme":"generic_hmac","header":"x","encoding":"base32"}"#,
        r#"{"scheme":"salesforce_outbound"}"#,
        r#"{"scheme":"svix"}"#,
        r#"{"tolerance_secs":5}"#,
        r#"{"scheme":"stripe","tolerance_secs":-1}"#,
        r#""github""#,
    ] {
        assert!(
            serde_json::from_str::<SchemeConfig>(json).is_err(),
            "{json} was accepted"
        );
    }
}

#[test]
fn validation_refuses_unusable_settings() {
    let generic = |header: &str, prefix: &str, delivery: Option<&str>| SchemeConfig::GenericHmac {
        header: header.to_owned(),
        prefix: prefix.to_owned(),
        encoding: SignatureEncoding::Hex,
        delivery_id_header: delivery.map(str::to_owned),
    };
    let invalid = [
        SchemeConfig::StandardWebhooks { tolerance_secs: 0 },
        SchemeConfig::Stripe {
            tolerance_secs: MAX_TOLERANCE_SECS + 1,
        },
        SchemeConfig::Slack { tolerance_secs: 0 },
        SchemeConfig::HubSpot {
            version: HubSpotVersion::V3,
            tolerance_secs: Some(0),
        },
        SchemeConfig::HubSpot {
            version: HubSpotVersion::V1,
            tolerance_secs: Some(300),
        },
        SchemeConfig::ZohoToken {
            field: String::new(),
            channel_id: None,
        },
        SchemeConfig::ZohoToken {
            field: "f".repeat(65),
            channel_id: None,
        },
        SchemeConfig::SalesforceOutbound {
            organization_id: "00D00000000006".to_owned(),
        },
        SchemeConfig::SalesforceOutbound {
            organization_id: "00D-00000000062EAA".to_owned(),
        },
        generic("", "", None),
        generic("x signature", "", None),
        generic("x-sig:", "", None),
        generic(&"x".repeat(65), "", None),
        generic("x-sig", "sha256 =", None),
        generic("x-sig", "", Some("x-sig")),
        generic("x-sig", "", Some("X-SIG")),
        generic("x-sig", "", Some("bad id")),
    ];
    for config in invalid {
        assert!(config.validate().is_err(), "{config:?} validated");
        let error = verify(&config, &secrets(&["s"]), &post(&[], b""), at(0)).unwrap_err();
        assert_eq!(error.code(), "invalid_config", "{config:?}");
        assert!(error.is_config_error());
    }
    for config in [
        SchemeConfig::StandardWebhooks {
            tolerance_secs: MAX_TOLERANCE_SECS,
        },
        SchemeConfig::SalesforceOutbound {
            organization_id: "00D000000000062".to_owned(),
        },
        generic("x-sig", "", Some("x-delivery")),
    ] {
        config.validate().unwrap();
    }
}

#[test]
fn only_salesforce_needs_no_secret() {
    for (_, json) in EXAMPLES {
        let config: SchemeConfig = serde_json::from_str(json).unwrap();
        assert_eq!(
            config.needs_secret(),
            config.name() != "salesforce_outbound"
        );
    }
}

// --- Secrets. ---

#[test]
fn a_secret_never_prints() {
    let secret = Secret::new("hunter2-very-secret");
    assert_eq!(format!("{secret:?}"), "Secret(..)");
    #[derive(Debug)]
    struct Connection {
        secrets: Vec<Secret>,
    }
    let connection = Connection {
        secrets: vec![secret.clone()],
    };
    assert_eq!(
        format!("{connection:?}"),
        "Connection { secrets: [Secret(..)] }"
    );
    assert_eq!(connection.secrets.len(), 1);
    assert_eq!(format!("{secret:#?}"), "Secret(..)");
}

#[test]
fn secrets_are_required_bounded_and_non_empty() {
    let config = SchemeConfig::GitHub {};
    let request_headers = headers(&[("X-Hub-Signature-256", "sha256=00")]);
    let request = post(&request_headers, b"x");
    let check = |given: &[Secret]| verify(&config, given, &request, at(0)).unwrap_err();
    assert_eq!(check(&[]), SignatureError::NoSecret);
    assert_eq!(
        check(&secrets(&["a", "b", "c"])),
        SignatureError::TooManySecrets
    );
    assert_eq!(check(&secrets(&["a", ""])).code(), "invalid_secret");
    for error in [
        check(&[]),
        check(&secrets(&["a", "b", "c"])),
        check(&secrets(&[""])),
    ] {
        assert!(error.is_config_error(), "{error:?}");
    }
}

// --- Errors. ---

#[test]
fn error_codes_are_stable_unique_and_snake_case() {
    let all = [
        SignatureError::MissingHeader("x".to_owned()),
        SignatureError::DuplicateHeader("x".to_owned()),
        SignatureError::Malformed("x"),
        SignatureError::TimestampTooOld,
        SignatureError::TimestampInFuture,
        SignatureError::Mismatch,
        SignatureError::OrganizationMismatch,
        SignatureError::NoSecret,
        SignatureError::TooManySecrets,
        SignatureError::InvalidSecret("x"),
        SignatureError::InvalidConfig(ConfigError("x".to_owned())),
    ];
    let codes: Vec<_> = all.iter().map(SignatureError::code).collect();
    assert_eq!(
        codes,
        [
            "missing_header",
            "duplicate_header",
            "malformed",
            "timestamp_too_old",
            "timestamp_in_future",
            "mismatch",
            "organization_mismatch",
            "no_secret",
            "too_many_secrets",
            "invalid_secret",
            "invalid_config",
        ]
    );
    let config_errors: Vec<_> = all
        .iter()
        .filter(|error| error.is_config_error())
        .map(SignatureError::code)
        .collect();
    assert_eq!(
        config_errors,
        [
            "no_secret",
            "too_many_secrets",
            "invalid_secret",
            "invalid_config"
        ]
    );
}

#[test]
fn a_mismatch_message_reveals_neither_secret_nor_signature() {
    // A request correctly signed with one secret, checked against another, for every
    // HMAC-of-the-body scheme: the message must carry none of the values involved.
    let (sent_secret, configured) = ("sent-secret-123456", "configured-secret-654321");
    let body = b"{\"deal\":1}";
    let sent = hmac(sent_secret.as_bytes(), body);
    let expected = hmac(configured.as_bytes(), body);
    let forbidden = [
        sent_secret.to_owned(),
        configured.to_owned(),
        hex::encode(&sent),
        hex::encode(&expected),
        b64(&sent),
        b64(&expected),
    ];
    let forbidden: Vec<&str> = forbidden.iter().map(String::as_str).collect();
    let github = headers(&[(
        "X-Hub-Signature-256",
        &format!("sha256={}", hex::encode(&sent)),
    )]);
    let shopify = headers(&[("X-Shopify-Hmac-Sha256", &b64(&sent))]);
    for (config, request_headers) in [
        (SchemeConfig::GitHub {}, &github),
        (SchemeConfig::Shopify {}, &shopify),
    ] {
        let error = verify(
            &config,
            &secrets(&[configured]),
            &post(request_headers, body),
            at(0),
        )
        .unwrap_err();
        assert_eq!(error, SignatureError::Mismatch);
        assert_reveals_nothing(&error, &forbidden);
    }
}

// --- Garbage. ---

/// A small deterministic generator (xorshift64*), so that a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// A string built from pieces that look like the schemes' syntax, sometimes huge.
    fn text(&mut self, pieces: &[&str]) -> String {
        let mut out = String::new();
        for _ in 0..self.below(12) {
            let piece = self.pick(pieces);
            let times = if self.below(20) == 0 {
                1 + self.below(2000)
            } else {
                1
            };
            out.push_str(&piece.repeat(times));
        }
        out
    }
}

const HEADER_PIECES: &[&str] = &[
    "v1,",
    "v1a,",
    "v0=",
    "v1=",
    "t=",
    "sha256=",
    "whsec_",
    ",",
    "=",
    " ",
    "\t",
    ";",
    "0",
    "9",
    "1614265330",
    "1700000000000",
    "99999999999999999999999",
    "18446744073709551615",
    "-1",
    "abcdef",
    "ABCDEF",
    "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    "==",
    "+/",
    "%3A",
    "%",
    "msg_1",
    "é",
    "\u{0}",
    "\u{7f}",
    "💥",
    "v1,AAAA",
    "sha256=zz",
];

const BODY_PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\"token\"",
    ":",
    ",",
    "\"x\"",
    "1",
    "null",
    "\\u0000",
    "\\",
    "<?xml version=\"1.0\"?>",
    "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\">",
    "<soapenv:Body>",
    "</soapenv:Body>",
    "</soapenv:Envelope>",
    "<notifications xmlns=\"http://soap.sforce.com/2005/09/outbound\">",
    "</notifications>",
    "<OrganizationId>",
    "</OrganizationId>",
    "00D000000000062EAA",
    "<!DOCTYPE x [<!ENTITY a \"b\">]>",
    "&a;",
    "&amp;",
    "<![CDATA[x]]>",
    "<a>",
    "</a>",
    "<b/>",
    "<!--",
    "-->",
    "<?pi x?>",
    "é",
    "\u{0}",
    "\u{fffd}",
];

#[test]
fn garbage_never_panics_and_never_verifies() {
    let configs: Vec<SchemeConfig> = EXAMPLES
        .iter()
        .map(|(_, json)| serde_json::from_str(json).unwrap())
        .collect();
    let names = [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "X-HubSpot-Signature",
        "X-HubSpot-Signature-Version",
        "X-HubSpot-Signature-v3",
        "X-HubSpot-Request-Timestamp",
        "Stripe-Signature",
        "X-Hub-Signature-256",
        "X-GitHub-Delivery",
        "X-Shopify-Hmac-Sha256",
        "X-Shopify-Webhook-Id",
        "X-Slack-Signature",
        "X-Slack-Request-Timestamp",
        "x-signature",
        "x-request-id",
        "X-Sig",
    ];
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    // Both usable by every scheme (the second is base64 too, for Standard Webhooks).
    let keys = secrets(&[secret, "c2Vjb25kLXNlY3JldA=="]);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..3000 {
        let mut request_headers = Vec::new();
        for _ in 0..rng.below(8) {
            request_headers.push((rng.pick(&names).to_owned(), rng.text(HEADER_PIECES)));
        }
        let body = rng.text(BODY_PIECES);
        let url = rng.text(&["https://x/", "%3a", "%2F", "%", "%zz", "?", "&", "é"]);
        let request = RawRequest {
            method: rng.pick(&["POST", "GET", "", "pOsT"]),
            url: &url,
            headers: &request_headers,
            body: body.as_bytes(),
        };
        let now = at(rng.next() % 4_000_000_000);
        for config in &configs {
            match verify(config, &keys, &request, now) {
                Ok(verified) => panic!(
                    "round {round}: {} accepted garbage: {verified:?} {request:?}",
                    config.name()
                ),
                Err(error) => {
                    assert!(!error.is_config_error(), "round {round}: {error:?}");
                    assert_reveals_nothing(&error, &[secret, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
                    assert!(error.to_string().len() < 200);
                }
            }
        }
    }
}

#[test]
fn header_lookup_is_case_insensitive_trimmed_and_bounded() {
    let request_headers = headers(&[
        ("X-Trimmed", " \tvalue\t "),
        ("x-empty", "  "),
        ("X-Long", &"a".repeat(MAX_HEADER_LEN + 1)),
        ("X-Twice", "1"),
        ("x-twice", "2"),
    ]);
    let request = post(&request_headers, b"");
    assert_eq!(request.header("x-trimmed").unwrap(), Some("value"));
    assert_eq!(request.header("X-EMPTY").unwrap(), None);
    assert_eq!(
        request.required_header("x-empty").unwrap_err(),
        SignatureError::MissingHeader("x-empty".to_owned())
    );
    assert_eq!(request.header("x-long").unwrap_err().code(), "malformed");
    assert_eq!(
        request.header("X-Twice").unwrap_err(),
        SignatureError::DuplicateHeader("X-Twice".to_owned())
    );
    assert_eq!(request.header("x-absent").unwrap(), None);
}

#[test]
fn timestamps_parse_strictly_and_windows_are_inclusive() {
    assert_eq!(parse_timestamp("0", TimeUnit::Seconds).unwrap(), UNIX_EPOCH);
    assert_eq!(
        parse_timestamp("1500", TimeUnit::Milliseconds).unwrap(),
        UNIX_EPOCH + Duration::from_millis(1500)
    );
    for bad in [
        "",
        "-1",
        "+1",
        "1.5",
        "1e9",
        " 1",
        "0x10",
        "١٢",
        "123456789012345678901",
        "99999999999999999999",
    ] {
        assert_eq!(
            parse_timestamp(bad, TimeUnit::Seconds).unwrap_err().code(),
            "malformed",
            "{bad:?}"
        );
    }
    let tolerance = Duration::from_secs(300);
    assert!(check_window(at(1000), at(1300), tolerance).is_ok());
    assert!(check_window(at(1300), at(1000), tolerance).is_ok());
    assert_eq!(
        check_window(at(1000), at(1301), tolerance),
        Err(SignatureError::TimestampTooOld)
    );
    assert_eq!(
        check_window(at(1301), at(1000), tolerance),
        Err(SignatureError::TimestampInFuture)
    );
}

/// A correctly signed request of one MAC scheme.
struct Sample {
    config: SchemeConfig,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    secret: &'static str,
    now: SystemTime,
}

/// One correctly signed request per MAC scheme.
fn signed_samples() -> Vec<Sample> {
    let body = br#"{"deal":{"id":"D-1","amount":"12.50"},"stage":"won"}"#.to_vec();
    let secret = "c2FtcGxlLXNpZ25pbmctc2VjcmV0";
    let t = 1_700_000_000u64;
    let mac = |message: &[u8]| hmac(secret.as_bytes(), message);
    let with_body = |prefix: &str, suffix: &str| {
        let mut message = prefix.as_bytes().to_vec();
        message.extend_from_slice(&body);
        message.extend_from_slice(suffix.as_bytes());
        message
    };
    let sw_key = base64::engine::general_purpose::STANDARD
        .decode(secret)
        .unwrap();
    let sw = b64(&hmac(&sw_key, &with_body(&format!("msg_1.{t}."), "")));
    let hubspot_v1 = {
        use sha2::Digest;
        hex::encode(Sha256::digest(with_body(secret, "")))
    };
    let hubspot_v3 = b64(&mac(&with_body(&format!("POST{URL}"), &format!("{t}000"))));
    let samples = vec![
        (
            SchemeConfig::StandardWebhooks {
                tolerance_secs: 300,
            },
            headers(&[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", &t.to_string()),
                ("webhook-signature", &format!("v1,{sw}")),
            ]),
            body.clone(),
            secret,
            at(t),
        ),
        (
            SchemeConfig::HubSpot {
                version: HubSpotVersion::V1,
                tolerance_secs: None,
            },
            headers(&[
                ("X-HubSpot-Signature", &hubspot_v1),
                ("X-HubSpot-Signature-Version", "v1"),
            ]),
            body.clone(),
            secret,
            at(t),
        ),
        (
            SchemeConfig::HubSpot {
                version: HubSpotVersion::V3,
                tolerance_secs: None,
            },
            headers(&[
                ("X-HubSpot-Signature-v3", &hubspot_v3),
                ("X-HubSpot-Request-Timestamp", &format!("{t}000")),
            ]),
            body.clone(),
            secret,
            at(t),
        ),
        (
            SchemeConfig::Stripe {
                tolerance_secs: 300,
            },
            headers(&[(
                "Stripe-Signature",
                &format!(
                    "t={t},v1={}",
                    hex::encode(mac(&with_body(&format!("{t}."), "")))
                ),
            )]),
            body.clone(),
            secret,
            at(t),
        ),
        (
            SchemeConfig::GitHub {},
            headers(&[(
                "X-Hub-Signature-256",
                &format!("sha256={}", hex::encode(mac(&body))),
            )]),
            body.clone(),
            secret,
            at(t),
        ),
        (
            SchemeConfig::Shopify {},
            headers(&[("X-Shopify-Hmac-Sha256", &b64(&mac(&body)))]),
            body.clone(),
            secret,
            at(t),
        ),
        (
            SchemeConfig::Slack {
                tolerance_secs: 300,
            },
            headers(&[
                (
                    "X-Slack-Signature",
                    &format!(
                        "v0={}",
                        hex::encode(mac(&with_body(&format!("v0:{t}:"), "")))
                    ),
                ),
                ("X-Slack-Request-Timestamp", &t.to_string()),
            ]),
            body.clone(),
            secret,
            at(t),
        ),
        (
            SchemeConfig::GenericHmac {
                header: "X-Sig".to_owned(),
                prefix: "hmac=".to_owned(),
                encoding: SignatureEncoding::Base64,
                delivery_id_header: None,
            },
            headers(&[("X-Sig", &format!("hmac={}", b64(&mac(&body))))]),
            body.clone(),
            secret,
            at(t),
        ),
    ];
    samples
        .into_iter()
        .map(|(config, headers, body, secret, now)| Sample {
            config,
            headers,
            body,
            secret,
            now,
        })
        .collect()
}

#[test]
fn every_flipped_body_bit_is_detected() {
    for Sample {
        config,
        headers: request_headers,
        body,
        secret,
        now,
    } in signed_samples()
    {
        let keys = secrets(&[secret]);
        verify(&config, &keys, &post(&request_headers, &body), now)
            .unwrap_or_else(|e| panic!("{}: {e}", config.name()));
        for index in 0..body.len() {
            for bit in 0..8 {
                let mut changed = body.clone();
                changed[index] ^= 1 << bit;
                assert_eq!(
                    verify(&config, &keys, &post(&request_headers, &changed), now),
                    Err(SignatureError::Mismatch),
                    "{}: byte {index} bit {bit}",
                    config.name()
                );
            }
        }
    }
}

#[test]
fn mutated_signature_headers_never_panic_and_rarely_pass() {
    let mut rng = Rng(0xfeed_f00d_0000_0042);
    for Sample {
        config,
        headers: request_headers,
        body,
        secret,
        now,
    } in signed_samples()
    {
        let keys = secrets(&[secret]);
        for round in 0..400 {
            let mut mutated = request_headers.clone();
            let target = signature_header(&mutated);
            let value = &mut mutated[target].1;
            let cut = (0..=value.len())
                .filter(|&i| value.is_char_boundary(i))
                .nth(rng.below(value.len() + 1))
                .unwrap_or(value.len());
            match rng.below(4) {
                0 => value.insert_str(cut, &rng.text(HEADER_PIECES)),
                1 => value.truncate(cut),
                2 => {
                    let tail = value.split_off(cut);
                    value.push_str(&rng.text(HEADER_PIECES));
                    value.push_str(tail.get(1..).unwrap_or(""));
                }
                _ => mutated.push((mutated[target].0.clone(), rng.text(HEADER_PIECES))),
            }
            let result = verify(&config, &keys, &post(&mutated, &body), now);
            if let Err(error) = &result {
                assert!(!error.is_config_error(), "{}: {error:?}", config.name());
                assert_reveals_nothing(error, &[secret]);
            } else {
                // Only a mutation that kept the digest itself (say, a decoy signature added
                // beside it) may pass.
                let digest = longest_digest_run(&request_headers[target].1);
                assert!(
                    mutated[target].1.contains(digest),
                    "{} round {round}: {:?} passed",
                    config.name(),
                    mutated[target].1
                );
            }
        }
    }
}

/// The index of the header carrying the signature.
fn signature_header(request_headers: &[(String, String)]) -> usize {
    request_headers
        .iter()
        .position(|(name, _)| {
            let name = name.to_ascii_lowercase();
            (name.contains("signature") && !name.contains("version"))
                || name.contains("hmac")
                || name == "x-sig"
        })
        .unwrap()
}

/// The longest run of base64/hex characters: the digest inside a signature header.
fn longest_digest_run(value: &str) -> &str {
    value
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/'))
        .max_by_key(|run| run.len())
        .unwrap_or("")
}
