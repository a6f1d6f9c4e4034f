//! One HMAC of the body in one header: GitHub, Shopify, generic.
//!
//! The GitHub vector is GitHub's own, from "Validating webhook deliveries" (docs.github.com,
//! "Testing the webhook payload validation"): secret `It's a Secret to Everybody`, payload
//! `Hello, World!`, `X-Hub-Signature-256: sha256=757107ea…8b043e17`. Shopify's documentation
//! publishes no secret/HMAC pair, so its vectors (and the generic scheme's) are computed here.

use super::*;

// --- GitHub ---

const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_BODY: &[u8] = b"Hello, World!";
const GITHUB_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
const GITHUB_DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

fn github_headers(signature: &str) -> Vec<(String, String)> {
    headers(&[
        ("X-Hub-Signature-256", signature),
        ("X-GitHub-Delivery", GITHUB_DELIVERY),
        ("X-GitHub-Event", "push"),
    ])
}

fn github(request_headers: &[(String, String)], body: &[u8], keys: &[&str]) -> Result<Verified> {
    verify(
        &SchemeConfig::GitHub {},
        &secrets(keys),
        &post(request_headers, body),
        at(0),
    )
}

#[test]
fn githubs_published_example_verifies_and_surfaces_the_delivery() {
    let verified = github(
        &github_headers(GITHUB_SIGNATURE),
        GITHUB_BODY,
        &[GITHUB_SECRET],
    )
    .unwrap();
    assert_eq!(
        verified,
        Verified {
            delivery_id: Some(GITHUB_DELIVERY.to_owned()),
            timestamp: None,
            secret_index: Some(0),
        }
    );
}

#[test]
fn github_refuses_a_wrong_secret_and_a_tampered_byte() {
    let error = github(
        &github_headers(GITHUB_SIGNATURE),
        GITHUB_BODY,
        &["It's a secret to everybody"],
    )
    .unwrap_err();
    assert_eq!(error, SignatureError::Mismatch);
    assert_reveals_nothing(&error, &[GITHUB_SECRET, GITHUB_SIGNATURE, "757107ea"]);
    assert_eq!(
        github(
            &github_headers(GITHUB_SIGNATURE),
            b"Hello, World?",
            &[GITHUB_SECRET]
        ),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        github(
            &github_headers(GITHUB_SIGNATURE),
            &tampered(GITHUB_BODY),
            &[GITHUB_SECRET]
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn github_verifies_with_either_secret_during_a_rotation() {
    let verified = github(
        &github_headers(GITHUB_SIGNATURE),
        GITHUB_BODY,
        &["new secret", GITHUB_SECRET],
    )
    .unwrap();
    assert_eq!(verified.secret_index, Some(1));
}

#[test]
fn github_refuses_missing_and_malformed_signatures() {
    assert_eq!(
        github(
            &without(&github_headers(GITHUB_SIGNATURE), "X-Hub-Signature-256"),
            GITHUB_BODY,
            &[GITHUB_SECRET]
        ),
        Err(SignatureError::MissingHeader(
            "X-Hub-Signature-256".to_owned()
        ))
    );
    let hex_part = GITHUB_SIGNATURE.trim_start_matches("sha256=");
    for bad in [
        hex_part.to_owned(),
        format!("sha1={hex_part}"),
        format!("SHA256={hex_part}"),
        format!("sha256={hex_part}0"),
        format!("sha256=x{hex_part}"),
        format!("{GITHUB_SIGNATURE},{GITHUB_SIGNATURE}"),
        format!("{GITHUB_SIGNATURE} {GITHUB_SIGNATURE}"),
    ] {
        let error = github(&github_headers(&bad), GITHUB_BODY, &[GITHUB_SECRET]).unwrap_err();
        assert_eq!(error.code(), "malformed", "{bad:?}");
        assert_reveals_nothing(&error, &[hex_part, GITHUB_SECRET]);
    }
    // The legacy SHA-1 header alone is not enough.
    let sha1_only = headers(&[(
        "X-Hub-Signature",
        "sha1=0000000000000000000000000000000000000000",
    )]);
    assert_eq!(
        github(&sha1_only, GITHUB_BODY, &[GITHUB_SECRET]),
        Err(SignatureError::MissingHeader(
            "X-Hub-Signature-256".to_owned()
        ))
    );
    assert_eq!(
        github(
            &doubled(
                &github_headers(GITHUB_SIGNATURE),
                "x-hub-signature-256",
                GITHUB_SIGNATURE
            ),
            GITHUB_BODY,
            &[GITHUB_SECRET]
        ),
        Err(SignatureError::DuplicateHeader(
            "X-Hub-Signature-256".to_owned()
        ))
    );
}

#[test]
fn an_absent_or_unusable_delivery_id_is_none_but_a_repeated_one_is_refused() {
    let no_delivery = without(&github_headers(GITHUB_SIGNATURE), "X-GitHub-Delivery");
    assert_eq!(
        github(&no_delivery, GITHUB_BODY, &[GITHUB_SECRET])
            .unwrap()
            .delivery_id,
        None
    );
    for unusable in [
        "has space".to_owned(),
        "é".to_owned(),
        "d".repeat(MAX_DELIVERY_ID_LEN + 1),
    ] {
        let request_headers = with(
            &github_headers(GITHUB_SIGNATURE),
            "X-GitHub-Delivery",
            &unusable,
        );
        assert_eq!(
            github(&request_headers, GITHUB_BODY, &[GITHUB_SECRET])
                .unwrap()
                .delivery_id,
            None
        );
    }
    let longest = "d".repeat(MAX_DELIVERY_ID_LEN);
    let request_headers = with(
        &github_headers(GITHUB_SIGNATURE),
        "X-GitHub-Delivery",
        &longest,
    );
    assert_eq!(
        github(&request_headers, GITHUB_BODY, &[GITHUB_SECRET])
            .unwrap()
            .delivery_id,
        Some(longest)
    );
    let twice = doubled(
        &github_headers(GITHUB_SIGNATURE),
        "X-GitHub-Delivery",
        "other",
    );
    assert_eq!(
        github(&twice, GITHUB_BODY, &[GITHUB_SECRET]),
        Err(SignatureError::DuplicateHeader(
            "X-GitHub-Delivery".to_owned()
        ))
    );
}

// --- Shopify ---

const SHOPIFY_SECRET: &str = "shpss_0123456789abcdef0123456789abcdef";
const SHOPIFY_BODY: &[u8] =
    br#"{"id":820982911946154508,"email":"jon@example.com","total_price":"199.65"}"#;
const SHOPIFY_WEBHOOK_ID: &str = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043";

fn shopify_headers(signature: &str) -> Vec<(String, String)> {
    headers(&[
        ("X-Shopify-Hmac-Sha256", signature),
        ("X-Shopify-Webhook-Id", SHOPIFY_WEBHOOK_ID),
        ("X-Shopify-Topic", "orders/create"),
    ])
}

fn shopify(request_headers: &[(String, String)], body: &[u8], keys: &[&str]) -> Result<Verified> {
    verify(
        &SchemeConfig::Shopify {},
        &secrets(keys),
        &post(request_headers, body),
        at(0),
    )
}

fn shopify_signature(secret: &str, body: &[u8]) -> String {
    b64(&hmac(secret.as_bytes(), body))
}

#[test]
fn a_shopify_webhook_verifies_and_surfaces_its_webhook_id() {
    let signature = shopify_signature(SHOPIFY_SECRET, SHOPIFY_BODY);
    let verified = shopify(
        &shopify_headers(&signature),
        SHOPIFY_BODY,
        &[SHOPIFY_SECRET],
    )
    .unwrap();
    assert_eq!(
        verified,
        Verified {
            delivery_id: Some(SHOPIFY_WEBHOOK_ID.to_owned()),
            timestamp: None,
            secret_index: Some(0),
        }
    );
}

#[test]
fn shopify_refuses_wrong_secrets_tampering_and_rotates() {
    let signature = shopify_signature(SHOPIFY_SECRET, SHOPIFY_BODY);
    let request_headers = shopify_headers(&signature);
    let error = shopify(&request_headers, SHOPIFY_BODY, &["shpss_other"]).unwrap_err();
    assert_eq!(error, SignatureError::Mismatch);
    assert_reveals_nothing(&error, &[SHOPIFY_SECRET, &signature]);
    assert_eq!(
        shopify(&request_headers, &tampered(SHOPIFY_BODY), &[SHOPIFY_SECRET]),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        shopify(
            &request_headers,
            SHOPIFY_BODY,
            &["shpss_new", SHOPIFY_SECRET]
        )
        .unwrap()
        .secret_index,
        Some(1)
    );
}

#[test]
fn shopify_refuses_missing_and_malformed_signatures() {
    assert_eq!(
        shopify(&[], SHOPIFY_BODY, &[SHOPIFY_SECRET]),
        Err(SignatureError::MissingHeader(
            "X-Shopify-Hmac-Sha256".to_owned()
        ))
    );
    let signature = shopify_signature(SHOPIFY_SECRET, SHOPIFY_BODY);
    for bad in [
        "not base64!".to_owned(),
        format!("{signature},{signature}"),
        format!("{signature} {signature}"),
        signature.trim_end_matches('=').to_owned(),
        format!("sha256={signature}"),
    ] {
        let error = shopify(&shopify_headers(&bad), SHOPIFY_BODY, &[SHOPIFY_SECRET]).unwrap_err();
        assert_eq!(error.code(), "malformed", "{bad:?}");
        assert_reveals_nothing(&error, &[&signature, SHOPIFY_SECRET]);
    }
    // The hex form of the right MAC is not Shopify's encoding.
    let hex_form = hex::encode(hmac(SHOPIFY_SECRET.as_bytes(), SHOPIFY_BODY));
    assert_eq!(
        shopify(&shopify_headers(&hex_form), SHOPIFY_BODY, &[SHOPIFY_SECRET]),
        Err(SignatureError::Mismatch)
    );
}

// --- Generic ---

fn generic(prefix: &str, encoding: SignatureEncoding, delivery: Option<&str>) -> SchemeConfig {
    SchemeConfig::GenericHmac {
        header: "X-Crm-Signature".to_owned(),
        prefix: prefix.to_owned(),
        encoding,
        delivery_id_header: delivery.map(str::to_owned),
    }
}

#[test]
fn the_generic_scheme_reads_its_configured_header_prefix_and_encoding() {
    let secret = "crm-shared-secret";
    let body = br#"{"deal":{"id":"D-1","amount":"12.50"}}"#;
    let mac = hmac(secret.as_bytes(), body);
    let cases = [
        (
            generic("sha256=", SignatureEncoding::Hex, None),
            format!("sha256={}", hex::encode(&mac)),
        ),
        (
            generic("sha256=", SignatureEncoding::Hex, None),
            format!("sha256={}", hex::encode_upper(&mac)),
        ),
        (generic("", SignatureEncoding::Hex, None), hex::encode(&mac)),
        (generic("", SignatureEncoding::Base64, None), b64(&mac)),
        (
            generic("v1:", SignatureEncoding::Base64, None),
            format!("v1:{}", b64(&mac)),
        ),
    ];
    for (config, value) in cases {
        let request_headers = headers(&[("x-crm-signature", &value)]);
        let verified = verify(
            &config,
            &secrets(&[secret]),
            &post(&request_headers, body),
            at(0),
        )
        .unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(verified.secret_index, Some(0));
        assert_eq!(verified.delivery_id, None);
        assert_eq!(
            verify(
                &config,
                &secrets(&["other"]),
                &post(&request_headers, body),
                at(0)
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &config,
                &secrets(&[secret]),
                &post(&request_headers, &tampered(body)),
                at(0)
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &config,
                &secrets(&["new", secret]),
                &post(&request_headers, body),
                at(0)
            )
            .unwrap()
            .secret_index,
            Some(1)
        );
    }
}

#[test]
fn the_generic_scheme_surfaces_its_configured_delivery_id() {
    let secret = "crm-shared-secret";
    let body = b"{}";
    let config = generic("", SignatureEncoding::Hex, Some("X-Crm-Delivery"));
    let signature = hex::encode(hmac(secret.as_bytes(), body));
    let request_headers = headers(&[
        ("X-Crm-Signature", &signature),
        ("x-crm-delivery", "dlv-42"),
    ]);
    let verified = verify(
        &config,
        &secrets(&[secret]),
        &post(&request_headers, body),
        at(0),
    )
    .unwrap();
    assert_eq!(verified.delivery_id.as_deref(), Some("dlv-42"));
}

#[test]
fn the_generic_scheme_refuses_missing_and_malformed_headers() {
    let secret = "crm-shared-secret";
    let body = b"{}";
    let config = generic("sha256=", SignatureEncoding::Hex, None);
    let hex_mac = hex::encode(hmac(secret.as_bytes(), body));
    assert_eq!(
        verify(&config, &secrets(&[secret]), &post(&[], body), at(0)),
        Err(SignatureError::MissingHeader("X-Crm-Signature".to_owned()))
    );
    for bad in [
        hex_mac.clone(),
        format!("sha256={hex_mac}="),
        format!("sha512={hex_mac}"),
    ] {
        let request_headers = headers(&[("X-Crm-Signature", &bad)]);
        let error = verify(
            &config,
            &secrets(&[secret]),
            &post(&request_headers, body),
            at(0),
        )
        .unwrap_err();
        assert_eq!(error.code(), "malformed", "{bad:?}");
    }
}
