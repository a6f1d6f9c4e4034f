//! HubSpot request signatures
//! (<https://developers.hubspot.com/docs/api/webhooks/validating-requests>):
//!
//! - v1: `X-HubSpot-Signature` = hex `sha256(client_secret + body)`;
//! - v2: `X-HubSpot-Signature` = hex `sha256(client_secret + method + url + body)`;
//!   both announce themselves in `X-HubSpot-Signature-Version`, and neither is an HMAC nor
//!   signs a timestamp (HubSpot's own choice; nothing stops a replay but idempotency);
//! - v3: `X-HubSpot-Signature-v3` = base64 `hmac_sha256(client_secret, method + url + body +
//!   timestamp)`, where the timestamp is `X-HubSpot-Request-Timestamp` in milliseconds and the
//!   URL has certain percent-encoded characters decoded first.
//!
//! HubSpot sends no delivery id header: its event ids are in the body.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::{
    HubSpotVersion, RawRequest, Result, Secret, SignatureError, TimeUnit, Verified, check_window,
    decode_base64, decode_hex, first_match, hmac_sha256, parse_timestamp,
};

const SIGNATURE: &str = "X-HubSpot-Signature";
const SIGNATURE_VERSION: &str = "X-HubSpot-Signature-Version";
const SIGNATURE_V3: &str = "X-HubSpot-Signature-v3";
const TIMESTAMP: &str = "X-HubSpot-Request-Timestamp";

pub(super) fn verify(
    version: HubSpotVersion,
    tolerance: Duration,
    secrets: &[Secret],
    request: &RawRequest<'_>,
    now: SystemTime,
) -> Result<Verified> {
    match version {
        HubSpotVersion::V1 | HubSpotVersion::V2 => verify_v1_v2(version, secrets, request),
        HubSpotVersion::V3 => verify_v3(tolerance, secrets, request, now),
    }
}

fn verify_v1_v2(
    version: HubSpotVersion,
    secrets: &[Secret],
    request: &RawRequest<'_>,
) -> Result<Verified> {
    let header = request.required_header(SIGNATURE)?;
    let expected_version = if version == HubSpotVersion::V1 {
        "v1"
    } else {
        "v2"
    };
    // HubSpot always names the version; a different one is another scheme's hash.
    if let Some(sent) = request.header(SIGNATURE_VERSION)?
        && !sent.eq_ignore_ascii_case(expected_version)
    {
        return Err(SignatureError::Malformed(
            "X-HubSpot-Signature-Version is not the configured version",
        ));
    }
    let candidate =
        decode_hex(header).ok_or(SignatureError::Malformed("X-HubSpot-Signature is not hex"))?;
    let secret_index = first_match(secrets, &[candidate], |secret| {
        let mut hash = Sha256::new();
        hash.update(secret.expose());
        if version == HubSpotVersion::V2 {
            hash.update(request.method.as_bytes());
            hash.update(request.url.as_bytes());
        }
        hash.update(request.body);
        Ok(hash.finalize().into())
    })?;
    Ok(Verified {
        delivery_id: None,
        timestamp: None,
        secret_index: Some(secret_index),
    })
}

fn verify_v3(
    tolerance: Duration,
    secrets: &[Secret],
    request: &RawRequest<'_>,
    now: SystemTime,
) -> Result<Verified> {
    let header = request.required_header(SIGNATURE_V3)?;
    let raw_timestamp = request.required_header(TIMESTAMP)?;
    let timestamp = parse_timestamp(raw_timestamp, TimeUnit::Milliseconds)?;
    let candidate = decode_base64(header).ok_or(SignatureError::Malformed(
        "X-HubSpot-Signature-v3 is not base64",
    ))?;
    let url = decode_uri(request.url);
    let secret_index = first_match(secrets, &[candidate], |secret| {
        hmac_sha256(
            secret.expose(),
            &[
                request.method.as_bytes(),
                url.as_bytes(),
                request.body,
                raw_timestamp.as_bytes(),
            ],
        )
    })?;
    check_window(timestamp, now, tolerance)?;
    Ok(Verified {
        delivery_id: None,
        timestamp: Some(timestamp),
        secret_index: Some(secret_index),
    })
}

/// Decodes, in one left-to-right pass, exactly the percent-encodings HubSpot's v3 rules list
/// (`%3A` `%2F` `%3F` `%40` `%21` `%24` `%27` `%28` `%29` `%2A` `%2C` `%3B`, hex digits of
/// either case); every other byte, `%20` included, is kept as it is.
pub(super) fn decode_uri(uri: &str) -> Cow<'_, str> {
    const DECODED: &[u8] = b":/?@!$'()*,;";
    let bytes = uri.as_bytes();
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(uri);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(&[high, low]) = bytes.get(i + 1..i + 3)
            && let (Some(high), Some(low)) = (hex_value(high), hex_value(low))
            && DECODED.contains(&(high << 4 | low))
        {
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Only ASCII was substituted for ASCII, so the result is still UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| uri.to_owned()))
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}
