//! HubSpot. The v1 and v2 vectors are HubSpot's own documentation examples
//! (developers.hubspot.com, "Validating requests from HubSpot", also the legacy
//! `faq/v1-request-validation` and `faq/v2-request-validation` pages), which HubSpot's Node
//! client tests as well (HubSpot/hubspot-api-nodejs `test/unit/signature.spec.ts`): client
//! secret `yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy`. HubSpot publishes no v3 vector (its own
//! client test signs with the current time), so the v3 vectors are computed here following
//! the documented rules.

use super::*;

const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
const OTHER_SECRET: &str = "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz";

const V1_BODY: &[u8] = br#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
const V1_SIGNATURE: &str = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de";
const V2_URL: &str = "https://www.example.com/webhook_uri";
const V2_GET_SIGNATURE: &str = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e";
const V2_POST_BODY: &[u8] = br#"{"example_field":"example_value"}"#;
const V2_POST_SIGNATURE: &str = "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900";

fn config(version: HubSpotVersion) -> SchemeConfig {
    SchemeConfig::HubSpot {
        version,
        tolerance_secs: None,
    }
}

fn check(
    version: HubSpotVersion,
    method: &str,
    url: &str,
    request_headers: &[(String, String)],
    body: &[u8],
    keys: &[&str],
    now: SystemTime,
) -> Result<Verified> {
    let request = RawRequest {
        method,
        url,
        headers: request_headers,
        body,
    };
    verify(&config(version), &secrets(keys), &request, now)
}

fn v1_headers(signature: &str) -> Vec<(String, String)> {
    headers(&[
        ("X-HubSpot-Signature", signature),
        ("X-HubSpot-Signature-Version", "v1"),
    ])
}

fn v2_headers(signature: &str) -> Vec<(String, String)> {
    headers(&[
        ("X-HubSpot-Signature", signature),
        ("X-HubSpot-Signature-Version", "v2"),
    ])
}

fn v1(request_headers: &[(String, String)], body: &[u8], keys: &[&str]) -> Result<Verified> {
    check(
        HubSpotVersion::V1,
        "POST",
        URL,
        request_headers,
        body,
        keys,
        at(0),
    )
}

// --- v1 ---

#[test]
fn the_documented_v1_example_verifies() {
    let verified = v1(&v1_headers(V1_SIGNATURE), V1_BODY, &[SECRET]).unwrap();
    assert_eq!(
        verified,
        Verified {
            delivery_id: None,
            timestamp: None,
            secret_index: Some(0),
        }
    );
    // Hex of either case.
    v1(
        &v1_headers(&V1_SIGNATURE.to_uppercase()),
        V1_BODY,
        &[SECRET],
    )
    .unwrap();
}

#[test]
fn v1_refuses_a_wrong_secret_and_a_tampered_body() {
    assert_eq!(
        v1(&v1_headers(V1_SIGNATURE), V1_BODY, &[OTHER_SECRET]),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        v1(&v1_headers(V1_SIGNATURE), &tampered(V1_BODY), &[SECRET]),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn v1_verifies_with_either_secret_during_a_rotation() {
    let verified = v1(&v1_headers(V1_SIGNATURE), V1_BODY, &[OTHER_SECRET, SECRET]).unwrap();
    assert_eq!(verified.secret_index, Some(1));
}

#[test]
fn v1_refuses_missing_and_malformed_headers() {
    assert_eq!(
        v1(
            &without(&v1_headers(V1_SIGNATURE), "X-HubSpot-Signature"),
            V1_BODY,
            &[SECRET]
        ),
        Err(SignatureError::MissingHeader(
            "X-HubSpot-Signature".to_owned()
        ))
    );
    for bad in [
        "not hex",
        "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817d",
        "sha256=232db2",
    ] {
        assert_eq!(
            v1(&v1_headers(bad), V1_BODY, &[SECRET]).unwrap_err().code(),
            "malformed",
            "{bad:?}"
        );
    }
    // Well-formed hex of the wrong length simply does not match.
    assert_eq!(
        v1(&v1_headers("232db2"), V1_BODY, &[SECRET]),
        Err(SignatureError::Mismatch)
    );
    // Two signatures in one header are not HubSpot's format.
    let two = format!("{V1_SIGNATURE},{V1_SIGNATURE}");
    assert_eq!(
        v1(&v1_headers(&two), V1_BODY, &[SECRET])
            .unwrap_err()
            .code(),
        "malformed"
    );
    assert_eq!(
        v1(
            &doubled(
                &v1_headers(V1_SIGNATURE),
                "x-hubspot-signature",
                V1_SIGNATURE
            ),
            V1_BODY,
            &[SECRET]
        ),
        Err(SignatureError::DuplicateHeader(
            "X-HubSpot-Signature".to_owned()
        ))
    );
}

#[test]
fn the_announced_version_must_be_the_configured_one() {
    let announced_v2 = with(
        &v1_headers(V1_SIGNATURE),
        "X-HubSpot-Signature-Version",
        "v2",
    );
    assert_eq!(
        v1(&announced_v2, V1_BODY, &[SECRET]).unwrap_err().code(),
        "malformed"
    );
    // Without the version header the configured version is assumed.
    let unannounced = without(&v1_headers(V1_SIGNATURE), "X-HubSpot-Signature-Version");
    v1(&unannounced, V1_BODY, &[SECRET]).unwrap();
}

// --- v2 ---

#[test]
fn the_documented_v2_examples_verify() {
    check(
        HubSpotVersion::V2,
        "GET",
        V2_URL,
        &v2_headers(V2_GET_SIGNATURE),
        b"",
        &[SECRET],
        at(0),
    )
    .unwrap();
    check(
        HubSpotVersion::V2,
        "POST",
        V2_URL,
        &v2_headers(V2_POST_SIGNATURE),
        V2_POST_BODY,
        &[SECRET],
        at(0),
    )
    .unwrap();
}

#[test]
fn v2_signs_the_method_the_url_and_the_body() {
    let post_check = |method: &str, url: &str, body: &[u8], keys: &[&str]| {
        check(
            HubSpotVersion::V2,
            method,
            url,
            &v2_headers(V2_POST_SIGNATURE),
            body,
            keys,
            at(0),
        )
    };
    for result in [
        post_check("PUT", V2_URL, V2_POST_BODY, &[SECRET]),
        post_check(
            "POST",
            "https://www.example.com/webhook_uri?x=1",
            V2_POST_BODY,
            &[SECRET],
        ),
        post_check(
            "POST",
            "http://www.example.com/webhook_uri",
            V2_POST_BODY,
            &[SECRET],
        ),
        post_check("POST", V2_URL, &tampered(V2_POST_BODY), &[SECRET]),
        post_check("POST", V2_URL, V2_POST_BODY, &[OTHER_SECRET]),
    ] {
        assert_eq!(result, Err(SignatureError::Mismatch));
    }
    assert_eq!(
        post_check("POST", V2_URL, V2_POST_BODY, &[OTHER_SECRET, SECRET])
            .unwrap()
            .secret_index,
        Some(1)
    );
}

#[test]
fn a_v1_signature_does_not_pass_as_v2() {
    // Same header, different formula: a v1 hash checked as v2 is a mismatch.
    let request_headers = without(&v1_headers(V1_SIGNATURE), "X-HubSpot-Signature-Version");
    assert_eq!(
        check(
            HubSpotVersion::V2,
            "POST",
            URL,
            &request_headers,
            V1_BODY,
            &[SECRET],
            at(0)
        ),
        Err(SignatureError::Mismatch)
    );
}

// --- v3 ---

const V3_TIMESTAMP_MS: u64 = 1_700_000_000_123;

/// base64 HMAC of method + url (as signed) + body + timestamp.
fn sign_v3(secret: &str, method: &str, signed_url: &str, body: &[u8], timestamp: &str) -> String {
    let mut message = format!("{method}{signed_url}").into_bytes();
    message.extend_from_slice(body);
    message.extend_from_slice(timestamp.as_bytes());
    b64(&hmac(secret.as_bytes(), &message))
}

fn v3_headers(signature: &str, timestamp: &str) -> Vec<(String, String)> {
    headers(&[
        ("X-HubSpot-Signature-v3", signature),
        ("X-HubSpot-Request-Timestamp", timestamp),
    ])
}

fn v3(
    url: &str,
    request_headers: &[(String, String)],
    body: &[u8],
    keys: &[&str],
    now: SystemTime,
) -> Result<Verified> {
    check(
        HubSpotVersion::V3,
        "POST",
        url,
        request_headers,
        body,
        keys,
        now,
    )
}

fn now_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[test]
fn v3_verifies_with_millisecond_timestamps() {
    let body =
        br#"[{"objectId":1246965,"propertyName":"lifecyclestage","propertyValue":"subscriber"}]"#;
    let timestamp = V3_TIMESTAMP_MS.to_string();
    let signature = sign_v3(SECRET, "POST", URL, body, &timestamp);
    let verified = v3(
        URL,
        &v3_headers(&signature, &timestamp),
        body,
        &[SECRET],
        now_ms(V3_TIMESTAMP_MS),
    )
    .unwrap();
    assert_eq!(
        verified,
        Verified {
            delivery_id: None,
            timestamp: Some(now_ms(V3_TIMESTAMP_MS)),
            secret_index: Some(0),
        }
    );
}

#[test]
fn v3_signs_the_url_with_hubspots_listed_characters_decoded() {
    let called = "https://hooks.example.com/v1/hooks/c1?email=a%40b.com&path=%2Fx%3Ay&list=%28a%2Cb%29&q=hello%20world";
    let signed =
        "https://hooks.example.com/v1/hooks/c1?email=a@b.com&path=/x:y&list=(a,b)&q=hello%20world";
    let timestamp = V3_TIMESTAMP_MS.to_string();
    let body = b"[]";
    let request_headers = v3_headers(
        &sign_v3(SECRET, "POST", signed, body, &timestamp),
        &timestamp,
    );
    v3(
        called,
        &request_headers,
        body,
        &[SECRET],
        now_ms(V3_TIMESTAMP_MS),
    )
    .unwrap();
    // A signature over the URL as called (not decoded) is not HubSpot's.
    let undecoded = v3_headers(
        &sign_v3(SECRET, "POST", called, body, &timestamp),
        &timestamp,
    );
    assert_eq!(
        v3(called, &undecoded, body, &[SECRET], now_ms(V3_TIMESTAMP_MS)),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn v3_uri_decoding_covers_exactly_the_listed_characters() {
    use crate::signatures::hubspot::decode_uri;
    assert_eq!(
        decode_uri("%3A%2F%3F%40%21%24%27%28%29%2A%2C%3B"),
        ":/?@!$'()*,;"
    );
    assert_eq!(decode_uri("%3a%2f%3f%2a%2c%3b"), ":/?*,;");
    // Everything else stays encoded, and nothing is decoded twice.
    for kept in [
        "%20", "%25", "%253A", "%26", "%3D", "%2B", "%23", "%5B", "%7E",
    ] {
        assert_eq!(decode_uri(kept), kept);
    }
    for odd in ["%", "%3", "%zz", "a%3", "100%", "%%3A"] {
        let decoded = decode_uri(odd);
        assert!(decoded.len() <= odd.len(), "{odd}");
    }
    assert_eq!(decode_uri("%%3A"), "%:");
    assert_eq!(decode_uri("é%3Aü"), "é:ü");
    assert!(matches!(
        decode_uri("https://x/y?z=1"),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn v3_refuses_stale_and_future_timestamps() {
    let body = b"[]";
    let timestamp = V3_TIMESTAMP_MS.to_string();
    let request_headers = v3_headers(&sign_v3(SECRET, "POST", URL, body, &timestamp), &timestamp);
    let check_at = |ms: u64| v3(URL, &request_headers, body, &[SECRET], now_ms(ms));
    check_at(V3_TIMESTAMP_MS + 300_000).unwrap();
    check_at(V3_TIMESTAMP_MS - 300_000).unwrap();
    assert_eq!(
        check_at(V3_TIMESTAMP_MS + 300_001),
        Err(SignatureError::TimestampTooOld)
    );
    assert_eq!(
        check_at(V3_TIMESTAMP_MS - 300_001),
        Err(SignatureError::TimestampInFuture)
    );
}

#[test]
fn v3_reads_the_timestamp_as_milliseconds() {
    // A sender that signs Unix seconds is 55 years in the past for HubSpot's rules.
    let body = b"[]";
    let seconds = (V3_TIMESTAMP_MS / 1000).to_string();
    let request_headers = v3_headers(&sign_v3(SECRET, "POST", URL, body, &seconds), &seconds);
    assert_eq!(
        v3(
            URL,
            &request_headers,
            body,
            &[SECRET],
            now_ms(V3_TIMESTAMP_MS)
        ),
        Err(SignatureError::TimestampTooOld)
    );
}

#[test]
fn v3_tolerance_is_configurable() {
    let config = SchemeConfig::HubSpot {
        version: HubSpotVersion::V3,
        tolerance_secs: Some(60),
    };
    let body = b"[]";
    let timestamp = V3_TIMESTAMP_MS.to_string();
    let request_headers = v3_headers(&sign_v3(SECRET, "POST", URL, body, &timestamp), &timestamp);
    let request = post(&request_headers, body);
    verify(
        &config,
        &secrets(&[SECRET]),
        &request,
        now_ms(V3_TIMESTAMP_MS + 60_000),
    )
    .unwrap();
    assert_eq!(
        verify(
            &config,
            &secrets(&[SECRET]),
            &request,
            now_ms(V3_TIMESTAMP_MS + 60_001)
        ),
        Err(SignatureError::TimestampTooOld)
    );
}

#[test]
fn v3_refuses_wrong_secrets_tampering_and_a_moved_timestamp() {
    let body = br#"[{"eventId":1}]"#;
    let timestamp = V3_TIMESTAMP_MS.to_string();
    let signature = sign_v3(SECRET, "POST", URL, body, &timestamp);
    let request_headers = v3_headers(&signature, &timestamp);
    let now = now_ms(V3_TIMESTAMP_MS);
    assert_eq!(
        v3(URL, &request_headers, body, &[OTHER_SECRET], now),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        v3(URL, &request_headers, &tampered(body), &[SECRET], now),
        Err(SignatureError::Mismatch)
    );
    let moved = with(
        &request_headers,
        "X-HubSpot-Request-Timestamp",
        &(V3_TIMESTAMP_MS + 1).to_string(),
    );
    assert_eq!(
        v3(URL, &moved, body, &[SECRET], now),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        v3(URL, &request_headers, body, &[OTHER_SECRET, SECRET], now)
            .unwrap()
            .secret_index,
        Some(1)
    );
}

#[test]
fn v3_refuses_missing_and_malformed_headers() {
    let timestamp = V3_TIMESTAMP_MS.to_string();
    let signature = sign_v3(SECRET, "POST", URL, b"", &timestamp);
    let good = v3_headers(&signature, &timestamp);
    let now = now_ms(V3_TIMESTAMP_MS);
    for name in ["X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"] {
        assert_eq!(
            v3(URL, &without(&good, name), b"", &[SECRET], now),
            Err(SignatureError::MissingHeader(name.to_owned()))
        );
    }
    for (name, value) in [
        ("X-HubSpot-Signature-v3", "not base64!"),
        (
            "X-HubSpot-Signature-v3",
            "s9fg/l7gop54ZS/srjGtdZr4E Gn4LNDdUEFKy6/Dlo=",
        ),
        ("X-HubSpot-Request-Timestamp", "1700000000.123"),
        ("X-HubSpot-Request-Timestamp", "soon"),
    ] {
        assert_eq!(
            v3(URL, &with(&good, name, value), b"", &[SECRET], now)
                .unwrap_err()
                .code(),
            "malformed",
            "{name}: {value:?}"
        );
    }
    // Only the v1/v2 header present: the v3 one is missing.
    assert_eq!(
        v3(URL, &v1_headers(V1_SIGNATURE), b"", &[SECRET], now),
        Err(SignatureError::MissingHeader(
            "X-HubSpot-Signature-v3".to_owned()
        ))
    );
}
