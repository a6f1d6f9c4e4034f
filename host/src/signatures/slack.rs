//! Slack (<https://api.slack.com/authentication/verifying-requests-from-slack>):
//! `X-Slack-Signature: v0=<hex HMAC-SHA256 of v0:<timestamp>:<body>>`, keyed with the app's
//! signing secret, with the Unix timestamp in `X-Slack-Request-Timestamp`. Slack sends no
//! delivery id header (the event id is in the body).

use std::time::{Duration, SystemTime};

use super::{
    RawRequest, Result, Secret, SignatureError, TimeUnit, Verified, check_window, decode_hex,
    first_match, hmac_sha256, parse_timestamp,
};

const SIGNATURE: &str = "X-Slack-Signature";
const TIMESTAMP: &str = "X-Slack-Request-Timestamp";

pub(super) fn verify(
    tolerance: Duration,
    secrets: &[Secret],
    request: &RawRequest<'_>,
    now: SystemTime,
) -> Result<Verified> {
    let header = request.required_header(SIGNATURE)?;
    let raw_timestamp = request.required_header(TIMESTAMP)?;
    let timestamp = parse_timestamp(raw_timestamp, TimeUnit::Seconds)?;
    let candidate =
        header
            .strip_prefix("v0=")
            .and_then(decode_hex)
            .ok_or(SignatureError::Malformed(
                "X-Slack-Signature is not v0=<hex>",
            ))?;
    let secret_index = first_match(secrets, &[candidate], |secret| {
        hmac_sha256(
            secret.expose(),
            &[b"v0:", raw_timestamp.as_bytes(), b":", request.body],
        )
    })?;
    check_window(timestamp, now, tolerance)?;
    Ok(Verified {
        delivery_id: None,
        timestamp: Some(timestamp),
        secret_index: Some(secret_index),
    })
}
