//! Stripe (<https://docs.stripe.com/webhooks#verify-manually>):
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=...]`, where each `v1` is the
//! hex HMAC-SHA256 of `<t>.<body>` keyed with the endpoint secret as written (`whsec_...`, not
//! decoded). Stripe lists several `v1` while its own secret rolls. The event id is in the body
//! only, so no delivery id is surfaced.

use std::time::{Duration, SystemTime};

use super::{
    MAX_SIGNATURES, RawRequest, Result, Secret, SignatureError, TimeUnit, Verified, check_window,
    decode_hex, first_match, hmac_sha256, parse_timestamp,
};

const SIGNATURE: &str = "Stripe-Signature";

pub(super) fn verify(
    tolerance: Duration,
    secrets: &[Secret],
    request: &RawRequest<'_>,
    now: SystemTime,
) -> Result<Verified> {
    let header = request.required_header(SIGNATURE)?;
    let parsed = parse_header(header)?;
    let timestamp = parse_timestamp(parsed.raw_timestamp, TimeUnit::Seconds)?;
    let secret_index = first_match(secrets, &parsed.candidates, |secret| {
        hmac_sha256(
            secret.expose(),
            &[parsed.raw_timestamp.as_bytes(), b".", request.body],
        )
    })?;
    check_window(timestamp, now, tolerance)?;
    Ok(Verified {
        delivery_id: None,
        timestamp: Some(timestamp),
        secret_index: Some(secret_index),
    })
}

struct Parsed<'a> {
    raw_timestamp: &'a str,
    candidates: Vec<Vec<u8>>,
}

/// `t` exactly once, at least one `v1`; other keys (`v0`) are skipped, and so is a `v1` that
/// is not hex (it cannot match).
fn parse_header(header: &str) -> Result<Parsed<'_>> {
    let mut raw_timestamp = None;
    let mut candidates = Vec::new();
    let mut seen_v1 = false;
    for (count, item) in header.split(',').enumerate() {
        if count == MAX_SIGNATURES + 2 {
            return Err(SignatureError::Malformed("too many Stripe-Signature items"));
        }
        let (key, value) =
            item.trim_matches([' ', '\t'])
                .split_once('=')
                .ok_or(SignatureError::Malformed(
                    "Stripe-Signature items must be <key>=<value>",
                ))?;
        match key {
            "t" if raw_timestamp.is_some() => {
                return Err(SignatureError::Malformed(
                    "Stripe-Signature has more than one timestamp",
                ));
            }
            "t" => raw_timestamp = Some(value),
            "v1" => {
                seen_v1 = true;
                candidates.extend(decode_hex(value));
            }
            _ => {}
        }
    }
    let raw_timestamp = raw_timestamp.ok_or(SignatureError::Malformed(
        "Stripe-Signature has no timestamp",
    ))?;
    if !seen_v1 {
        return Err(SignatureError::Malformed(
            "Stripe-Signature has no v1 signature",
        ));
    }
    Ok(Parsed {
        raw_timestamp,
        candidates,
    })
}
