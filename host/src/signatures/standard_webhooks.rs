//! [Standard Webhooks](https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md):
//! `webhook-signature` holds space-separated `v1,<base64>` signatures of
//! `<webhook-id>.<webhook-timestamp>.<body>`, HMAC-SHA256 keyed with the base64-decoded secret
//! (written `whsec_<base64>`). The id is signed, so it is a trustworthy idempotency key.

use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use super::{
    MAX_SIGNATURES, RawRequest, Result, Secret, SignatureError, TimeUnit, Verified, check_window,
    decode_base64, first_match, hmac_sha256, parse_timestamp, valid_delivery_id,
};

const ID: &str = "webhook-id";
const TIMESTAMP: &str = "webhook-timestamp";
const SIGNATURE: &str = "webhook-signature";
const SECRET_PREFIX: &[u8] = b"whsec_";

pub(super) fn verify(
    tolerance: Duration,
    secrets: &[Secret],
    request: &RawRequest<'_>,
    now: SystemTime,
) -> Result<Verified> {
    let id = request.required_header(ID)?;
    let raw_timestamp = request.required_header(TIMESTAMP)?;
    let header = request.required_header(SIGNATURE)?;
    let delivery_id =
        valid_delivery_id(id).ok_or(SignatureError::Malformed("webhook-id is not a usable id"))?;
    let timestamp = parse_timestamp(raw_timestamp, TimeUnit::Seconds)?;
    let candidates = parse_signatures(header)?;
    let keys = secrets
        .iter()
        .map(decode_secret)
        .collect::<Result<Vec<_>>>()?;
    let secret_index = first_match(&keys, &candidates, |key| {
        mac(key, id, raw_timestamp, request.body)
    })?;
    check_window(timestamp, now, tolerance)?;
    Ok(Verified {
        delivery_id: Some(delivery_id),
        timestamp: Some(timestamp),
        secret_index: Some(secret_index),
    })
}

/// The signed content: `<id>.<timestamp>.<body>`.
fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Result<[u8; 32]> {
    hmac_sha256(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    )
}

/// The `webhook-signature` value (`v1,<base64>`) of a message, for senders: the host's
/// outgoing webhooks, and tests. `timestamp` is the `webhook-timestamp` header's value.
pub fn sign(secret: &Secret, id: &str, timestamp: &str, body: &[u8]) -> Result<String> {
    use base64::Engine as _;
    let key = decode_secret(secret)?;
    let signature = mac(&key, id, timestamp, body)?;
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(signature)
    ))
}

/// The decoded `v1` signatures; other versions (`v1a`, asymmetric) are skipped, and so is a
/// `v1` entry that is not base64 (it cannot match).
fn parse_signatures(header: &str) -> Result<Vec<Vec<u8>>> {
    let mut candidates = Vec::new();
    let mut seen_v1 = false;
    for (count, entry) in header.split_ascii_whitespace().enumerate() {
        if count == MAX_SIGNATURES {
            return Err(SignatureError::Malformed("too many signatures"));
        }
        let (version, signature) = entry.split_once(',').ok_or(SignatureError::Malformed(
            "webhook-signature entries must be <version>,<signature>",
        ))?;
        if version == "v1" {
            seen_v1 = true;
            candidates.extend(decode_base64(signature));
        }
    }
    if !seen_v1 {
        return Err(SignatureError::Malformed(
            "webhook-signature has no v1 signature",
        ));
    }
    Ok(candidates)
}

/// The HMAC key: the base64 after the optional `whsec_` prefix.
fn decode_secret(secret: &Secret) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = secret.expose();
    let encoded = bytes.strip_prefix(SECRET_PREFIX).unwrap_or(bytes);
    const NOT_BASE64: SignatureError =
        SignatureError::InvalidSecret("a Standard Webhooks secret must be base64");
    let encoded = std::str::from_utf8(encoded).map_err(|_| NOT_BASE64)?;
    match decode_base64(encoded) {
        Some(key) if !key.is_empty() => Ok(Zeroizing::new(key)),
        _ => Err(NOT_BASE64),
    }
}
