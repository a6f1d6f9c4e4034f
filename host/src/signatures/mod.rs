//! Webhook signature verification (DESIGN.md sections 2 and 3).
//!
//! A CRM's webhook is checked here, by its connection's [`SchemeConfig`], before anything about
//! it is stored. Everything works on the raw body bytes as received (never re-serialized JSON)
//! and is pure: the clock is a parameter, there is no I/O.
//!
//! - Every comparison of a MAC, digest or token is constant-time (`subtle`).
//! - Every header is parsed defensively: bounded lengths and counts, a header sent twice is
//!   refused, and no input makes this module panic.
//! - One or two secrets verify (two while a secret is rotated, current first); [`Verified`]
//!   says which one matched so the host can tell when the previous one falls out of use.
//! - A [`SignatureError`]'s message says what is wrong, never what was expected: it carries no
//!   secret material, no computed MAC and no received header value, so it can go into a 401
//!   body and a log line as is.

mod config;
pub mod guard;
mod hmac_body;
mod hubspot;
mod salesforce;
mod slack;
mod standard_webhooks;

pub use standard_webhooks::sign as sign_standard_webhooks;
mod stripe;
mod zoho;

#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroizing;

pub use guard::{
    ForwardedHeader, GuardError, IpRange, TrustedProxies, WebhookGuard, usable_token,
    verify_capability,
};

pub use config::{
    ConfigError, DEFAULT_TOLERANCE_SECS, HubSpotVersion, MAX_TOLERANCE_SECS, SchemeConfig,
    SignatureEncoding,
};

/// At most this many secrets verify at once: the current one and, during a rotation, the
/// previous one.
pub const MAX_SECRETS: usize = 2;
/// Longest header value this module reads, in bytes.
pub const MAX_HEADER_LEN: usize = 8 * 1024;
/// At most this many signatures in one header (Standard Webhooks, Stripe).
pub const MAX_SIGNATURES: usize = 16;
/// Longest delivery id surfaced in [`Verified::delivery_id`], in bytes.
pub const MAX_DELIVERY_ID_LEN: usize = 256;

/// A signing secret (or shared token) as the secret store holds it: bytes. It is never
/// printed (`Debug` shows `Secret(..)`) and its memory is zeroed when dropped. Schemes decide
/// how to read it: Standard Webhooks base64-decodes a `whsec_` secret, every other scheme uses
/// the bytes as they are (Stripe's `whsec_` secret included).
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps a secret's bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(bytes.into()))
    }

    /// The bytes, for the code that verifies with them (never to be logged).
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A webhook request as received.
#[derive(Debug, Clone, Copy)]
pub struct RawRequest<'a> {
    /// The HTTP method, upper case as sent (`POST`).
    pub method: &'a str,
    /// The full URL the CRM called, scheme, host, path and query (HubSpot v2 and v3 sign it).
    pub url: &'a str,
    /// The request's headers; names are matched case-insensitively.
    pub headers: &'a [(String, String)],
    /// The body bytes exactly as received.
    pub body: &'a [u8],
}

impl RawRequest<'_> {
    /// The value of a header sent at most once, trimmed; `None` when absent or empty.
    fn header(&self, name: &str) -> Result<Option<&str>> {
        let mut found = None;
        for (key, value) in self.headers {
            if key.eq_ignore_ascii_case(name) {
                if found.is_some() {
                    return Err(SignatureError::DuplicateHeader(name.to_owned()));
                }
                found = Some(value.as_str());
            }
        }
        match found {
            Some(value) if value.len() > MAX_HEADER_LEN => {
                Err(SignatureError::Malformed("a signature header is too long"))
            }
            Some(value) => {
                let value = value.trim_matches([' ', '\t']);
                Ok((!value.is_empty()).then_some(value))
            }
            None => Ok(None),
        }
    }

    /// The value of a header that must be present.
    fn required_header(&self, name: &str) -> Result<&str> {
        self.header(name)?
            .ok_or_else(|| SignatureError::MissingHeader(name.to_owned()))
    }

    /// A delivery id from an optional header: `None` when absent or not a usable id.
    fn delivery_id(&self, name: &str) -> Result<Option<String>> {
        Ok(self.header(name)?.and_then(valid_delivery_id))
    }
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sender's id for this delivery, the same on its retries, when the scheme carries one
    /// in a header (`webhook-id`, `X-GitHub-Delivery`, `X-Shopify-Webhook-Id`, the generic
    /// scheme's `delivery_id_header`). Bounded and printable ASCII.
    pub delivery_id: Option<String>,
    /// The signed timestamp, for schemes that sign one.
    pub timestamp: Option<SystemTime>,
    /// Which of the given secrets matched (0: the current one); `None` for schemes without a
    /// secret (Salesforce).
    pub secret_index: Option<usize>,
}

/// Why a webhook was not accepted. Messages are safe to show the sender: they never contain
/// secrets, expected signatures or received header values.
///
/// The `is_config_error` variants are the host's (or tenant admin's) fault, not the sender's:
/// see [`SignatureError::is_config_error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header the scheme needs is absent (or empty).
    #[error("the {0} header is missing")]
    MissingHeader(String),
    /// A header the scheme reads was sent more than once.
    #[error("the {0} header was sent more than once")]
    DuplicateHeader(String),
    /// A header or the body does not have the scheme's shape.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The signature is valid but its timestamp is older than the tolerance (a replay, or a
    /// slow clock).
    #[error("the signed timestamp is too old")]
    TimestampTooOld,
    /// The signature is valid but its timestamp is further in the future than the tolerance.
    #[error("the signed timestamp is in the future")]
    TimestampInFuture,
    /// No signature (or token) matches any of the connection's secrets.
    #[error("the signature does not match")]
    Mismatch,
    /// Salesforce: the message comes from another organization.
    #[error("the message is not from the connection's organization")]
    OrganizationMismatch,
    /// Zoho: the notification is from another channel than the connection's.
    #[error("the notification is not from the connection's Zoho channel")]
    ChannelMismatch,
    /// The scheme needs a secret and the connection has none.
    #[error("no signing secret is configured")]
    NoSecret,
    /// More than [`MAX_SECRETS`] secrets were given.
    #[error("more than {MAX_SECRETS} signing secrets are configured")]
    TooManySecrets,
    /// A configured secret cannot be used by the scheme (empty, or not base64 where the scheme
    /// needs it).
    #[error("a configured signing secret is unusable: {0}")]
    InvalidSecret(&'static str),
    /// The connection's [`SchemeConfig`] is invalid.
    #[error("invalid signature configuration: {0}")]
    InvalidConfig(ConfigError),
}

impl SignatureError {
    /// A stable snake_case code, for metrics and the problem `type`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::DuplicateHeader(_) => "duplicate_header",
            Self::Malformed(_) => "malformed",
            Self::TimestampTooOld => "timestamp_too_old",
            Self::TimestampInFuture => "timestamp_in_future",
            Self::Mismatch => "mismatch",
            Self::OrganizationMismatch => "organization_mismatch",
            Self::ChannelMismatch => "channel_mismatch",
            Self::NoSecret => "no_secret",
            Self::TooManySecrets => "too_many_secrets",
            Self::InvalidSecret(_) => "invalid_secret",
            Self::InvalidConfig(_) => "invalid_config",
        }
    }

    /// True when the connection's setup, not the request, is at fault (no, too many or unusable
    /// secrets; invalid configuration). No request can pass until an admin fixes it, so the
    /// host should alert rather than only count it.
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            Self::NoSecret | Self::TooManySecrets | Self::InvalidSecret(_) | Self::InvalidConfig(_)
        )
    }
}

/// This module's result type.
pub type Result<T, E = SignatureError> = std::result::Result<T, E>;

/// Verifies `request` by `config` with `secrets` (one, or two during a rotation, current
/// first) at time `now`.
pub fn verify(
    config: &SchemeConfig,
    secrets: &[Secret],
    request: &RawRequest<'_>,
    now: SystemTime,
) -> Result<Verified> {
    config.validate().map_err(SignatureError::InvalidConfig)?;
    if config.needs_secret() {
        if secrets.is_empty() {
            return Err(SignatureError::NoSecret);
        }
        if secrets.len() > MAX_SECRETS {
            return Err(SignatureError::TooManySecrets);
        }
        if secrets.iter().any(|secret| secret.expose().is_empty()) {
            return Err(SignatureError::InvalidSecret("it is empty"));
        }
    }
    match config {
        SchemeConfig::StandardWebhooks { tolerance_secs } => {
            standard_webhooks::verify(tolerance(*tolerance_secs), secrets, request, now)
        }
        SchemeConfig::HubSpot {
            version,
            tolerance_secs,
        } => hubspot::verify(
            *version,
            tolerance(tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS)),
            secrets,
            request,
            now,
        ),
        SchemeConfig::Stripe { tolerance_secs } => {
            stripe::verify(tolerance(*tolerance_secs), secrets, request, now)
        }
        SchemeConfig::GitHub {} => hmac_body::verify(&hmac_body::GITHUB, secrets, request),
        SchemeConfig::Shopify {} => hmac_body::verify(&hmac_body::SHOPIFY, secrets, request),
        SchemeConfig::Slack { tolerance_secs } => {
            slack::verify(tolerance(*tolerance_secs), secrets, request, now)
        }
        SchemeConfig::ZohoToken { field, channel_id } => {
            zoho::verify(field, channel_id.as_deref(), secrets, request)
        }
        SchemeConfig::SalesforceOutbound { organization_id } => {
            salesforce::verify(organization_id, request)
        }
        // Nothing to check here: the connection's guard (capability URL, allow list) is.
        SchemeConfig::Unsigned {} => Ok(Verified {
            delivery_id: None,
            timestamp: None,
            secret_index: None,
        }),
        SchemeConfig::GenericHmac {
            header,
            prefix,
            encoding,
            delivery_id_header,
        } => hmac_body::verify(
            &hmac_body::BodyHmac {
                header,
                prefix,
                encoding: *encoding,
                delivery_id_header: delivery_id_header.as_deref(),
            },
            secrets,
            request,
        ),
    }
}

/// `body` as it may be kept and shown to an adapter once verified: schemes that carry their
/// secret *in* the body (Zoho's channel token) have it replaced by `"[redacted]"`; every other
/// byte, and every other scheme's body, is kept exactly as received.
pub fn redact(config: &SchemeConfig, body: Vec<u8>) -> Vec<u8> {
    match config {
        SchemeConfig::ZohoToken { field, .. } => zoho::redact(field, body),
        _ => body,
    }
}

fn tolerance(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

// --- Helpers shared by the schemes. ---

/// HMAC-SHA256 of the concatenated `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32]> {
    // HMAC takes keys of any length; the error branch cannot happen.
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|_| SignatureError::InvalidSecret("unusable as an HMAC key"))?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().into())
}

/// The index of the first key whose tag (computed by `tag`) equals one of `candidates`.
/// Every candidate is compared in constant time, and all of them are compared for each key.
fn first_match<K>(
    keys: &[K],
    candidates: &[Vec<u8>],
    mut tag: impl FnMut(&K) -> Result<[u8; 32]>,
) -> Result<usize> {
    for (index, key) in keys.iter().enumerate() {
        let expected = Zeroizing::new(tag(key)?);
        let mut matched = Choice::from(0);
        for candidate in candidates {
            matched |= expected.as_slice().ct_eq(candidate);
        }
        if bool::from(matched) {
            return Ok(index);
        }
    }
    Err(SignatureError::Mismatch)
}

/// Unit of a signed timestamp.
#[derive(Debug, Clone, Copy)]
enum TimeUnit {
    Seconds,
    Milliseconds,
}

/// A Unix timestamp written as 1 to 20 ASCII digits.
fn parse_timestamp(raw: &str, unit: TimeUnit) -> Result<SystemTime> {
    const INVALID: SignatureError = SignatureError::Malformed("the timestamp is not a Unix time");
    if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(INVALID);
    }
    let value: u64 = raw.parse().map_err(|_| INVALID)?;
    let since_epoch = match unit {
        TimeUnit::Seconds => Duration::from_secs(value),
        TimeUnit::Milliseconds => Duration::from_millis(value),
    };
    UNIX_EPOCH.checked_add(since_epoch).ok_or(INVALID)
}

/// Refuses a timestamp further than `tolerance` from `now`, either way.
fn check_window(timestamp: SystemTime, now: SystemTime, tolerance: Duration) -> Result<()> {
    match now.duration_since(timestamp) {
        Ok(age) if age > tolerance => Err(SignatureError::TimestampTooOld),
        Ok(_) => Ok(()),
        Err(ahead) if ahead.duration() > tolerance => Err(SignatureError::TimestampInFuture),
        Err(_) => Ok(()),
    }
}

/// Hex of either case, or `None`.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

/// Standard base64 with padding, or `None`.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// A delivery id if `value` is 1 to [`MAX_DELIVERY_ID_LEN`] visible ASCII characters.
fn valid_delivery_id(value: &str) -> Option<String> {
    (!value.is_empty()
        && value.len() <= MAX_DELIVERY_ID_LEN
        && value.bytes().all(|b| b.is_ascii_graphic()))
    .then(|| value.to_owned())
}
