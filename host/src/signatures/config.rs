//! Per-connection signature configuration: which scheme a connection's CRM signs with, and the
//! scheme's few settings. Stored as JSON next to the connection; the secrets themselves are not
//! part of it (they live in the secret store, DESIGN.md section 3).

use serde::{Deserialize, Serialize};

/// Default timestamp tolerance, in seconds: five minutes, the default of every vendor here that
/// signs a timestamp (Standard Webhooks, HubSpot v3, Stripe, Slack).
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// Largest tolerance a connection may configure. A wider window only widens the replay window;
/// an hour covers any sane clock skew.
pub const MAX_TOLERANCE_SECS: u64 = 3600;
/// Longest configured header name or prefix, in bytes.
const MAX_NAME_LEN: usize = 64;

/// How a connection's webhooks are authenticated. Internally tagged by `scheme`:
///
/// ```json
/// {"scheme": "standard_webhooks", "tolerance_secs": 300}
/// {"scheme": "hubspot", "version": "v3", "tolerance_secs": 300}
/// {"scheme": "stripe", "tolerance_secs": 300}
/// {"scheme": "github"}
/// {"scheme": "shopify"}
/// {"scheme": "slack", "tolerance_secs": 300}
/// {"scheme": "zoho_token", "field": "token", "channel_id": "1000000068001"}
/// {"scheme": "salesforce_outbound", "organization_id": "00D000000000062EAA"}
/// {"scheme": "unsigned"}
/// {"scheme": "generic_hmac", "header": "x-signature", "prefix": "sha256=", "encoding": "hex",
///  "delivery_id_header": "x-request-id"}
/// ```
///
/// Tolerances are optional and default to [`DEFAULT_TOLERANCE_SECS`]. Unknown fields are
/// refused, so that a misspelt setting is not silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum SchemeConfig {
    /// [Standard Webhooks](https://www.standardwebhooks.com/): `webhook-id`,
    /// `webhook-timestamp` and `webhook-signature: v1,<base64>` (several, space separated),
    /// HMAC-SHA256 keyed with the base64-decoded `whsec_` secret.
    StandardWebhooks {
        /// Largest accepted distance between the signed timestamp and now, either way.
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// HubSpot's request signatures: v1 and v2 (`X-HubSpot-Signature`, SHA-256 of the client
    /// secret and the request, no timestamp) or v3 (`X-HubSpot-Signature-v3`, HMAC-SHA256,
    /// millisecond timestamp).
    #[serde(rename = "hubspot")]
    HubSpot {
        /// Which signature the connection checks.
        version: HubSpotVersion,
        /// v3 only: the timestamp window; defaults to HubSpot's five minutes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tolerance_secs: Option<u64>,
    },
    /// Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, HMAC-SHA256 of
    /// `<t>.<body>` keyed with the `whsec_` secret as is.
    Stripe {
        /// Largest accepted distance between the signed timestamp and now, either way.
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// GitHub style: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(rename = "github")]
    GitHub {},
    /// Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`.
    Shopify {},
    /// Slack v0: `X-Slack-Signature: v0=<hex HMAC-SHA256 of v0:<timestamp>:<body>>`.
    Slack {
        /// Largest accepted distance between the signed timestamp and now, either way.
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// Zoho CRM notifications: the body is JSON carrying the token set when the notification
    /// channel was enabled; it must equal the secret.
    ZohoToken {
        /// The top-level body field holding the token.
        #[serde(default = "default_token_field")]
        field: String,
        /// The channel the connection is bound to: a notification whose `channel_id` is
        /// another (or absent) is refused, whatever its token. Digits, as given to Zoho's
        /// `actions/watch`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_id: Option<String>,
    },
    /// Salesforce outbound messages (SOAP): the envelope's `OrganizationId` must be the
    /// connection's org. Salesforce does not sign these messages, so no secret is involved.
    SalesforceOutbound {
        /// The org id, 15 or 18 characters; compared on its case-sensitive 15-character form.
        organization_id: String,
    },
    /// The sender signs nothing (Zenoti, whose signature algorithm is not published): the
    /// connection must then be guarded by a capability URL or a source allow list (its
    /// `webhook` settings), and a connection without either is refused.
    Unsigned {},
    /// HMAC-SHA256 of the raw body in one header, for home-grown CRMs.
    GenericHmac {
        /// The header carrying the signature (case-insensitive).
        header: String,
        /// A literal the header value starts with, e.g. `sha256=`; may be empty.
        #[serde(default)]
        prefix: String,
        /// How the MAC is written after the prefix.
        encoding: SignatureEncoding,
        /// A header carrying the sender's delivery id, used to drop retried deliveries.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivery_id_header: Option<String>,
    },
}

/// The HubSpot signature version a connection checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HubSpotVersion {
    /// `sha256(client_secret + body)`, hex.
    V1,
    /// `sha256(client_secret + method + url + body)`, hex.
    V2,
    /// `base64(hmac_sha256(client_secret, method + url + body + timestamp))`.
    V3,
}

/// How a generic HMAC is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    /// Hexadecimal, either case.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Why a [`SchemeConfig`] is unusable. The message names the setting and never holds a secret
/// (configurations hold none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn default_tolerance() -> u64 {
    DEFAULT_TOLERANCE_SECS
}

fn default_token_field() -> String {
    "token".to_owned()
}

impl SchemeConfig {
    /// The scheme's stable name (its `scheme` tag), for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::StandardWebhooks { .. } => "standard_webhooks",
            Self::HubSpot { .. } => "hubspot",
            Self::Stripe { .. } => "stripe",
            Self::GitHub {} => "github",
            Self::Shopify {} => "shopify",
            Self::Slack { .. } => "slack",
            Self::ZohoToken { .. } => "zoho_token",
            Self::SalesforceOutbound { .. } => "salesforce_outbound",
            Self::Unsigned {} => "unsigned",
            Self::GenericHmac { .. } => "generic_hmac",
        }
    }

    /// Whether the scheme needs a signing secret. Salesforce's org-id check and unsigned
    /// connections do not.
    pub fn needs_secret(&self) -> bool {
        !matches!(self, Self::SalesforceOutbound { .. } | Self::Unsigned {})
    }

    /// Whether the scheme proves who sent a request by itself. Salesforce's org id is in every
    /// message of the org, so anyone who knows it can forge one: like an unsigned connection,
    /// it needs a capability URL or an allow list to be safe, but is not refused without
    /// (connections made before these existed keep working).
    pub fn authenticates(&self) -> bool {
        !matches!(self, Self::Unsigned {})
    }

    /// The HTTP methods a request of this scheme may use: those whose requests it can verify
    /// and its senders use. HubSpot's v2 and v3 signatures cover the method and the URL, so
    /// they verify workflow GET calls (whose data is in the query); v1 covers the body only.
    /// Unsigned and generic connections take POST, PUT and PATCH (Zenoti lets its user pick
    /// one). Every other sender POSTs.
    pub fn methods(&self) -> &'static [&'static str] {
        match self {
            Self::HubSpot {
                version: HubSpotVersion::V2 | HubSpotVersion::V3,
                ..
            } => &["GET", "POST"],
            Self::Unsigned {} | Self::GenericHmac { .. } => &["POST", "PUT", "PATCH"],
            _ => &["POST"],
        }
    }

    /// Checks the settings (tolerances, names, org id) before the configuration is stored;
    /// [`verify`](super::verify) checks again and refuses an invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Self::StandardWebhooks { tolerance_secs }
            | Self::Stripe { tolerance_secs }
            | Self::Slack { tolerance_secs } => check_tolerance(*tolerance_secs),
            Self::HubSpot {
                version,
                tolerance_secs,
            } => match (version, tolerance_secs) {
                (HubSpotVersion::V3, Some(tolerance)) => check_tolerance(*tolerance),
                (HubSpotVersion::V1 | HubSpotVersion::V2, Some(_)) => Err(ConfigError(
                    "tolerance_secs applies to HubSpot v3 only: v1 and v2 sign no timestamp"
                        .to_owned(),
                )),
                (_, None) => Ok(()),
            },
            Self::GitHub {} | Self::Shopify {} | Self::Unsigned {} => Ok(()),
            Self::ZohoToken { field, channel_id } => {
                if field.is_empty() || field.len() > MAX_NAME_LEN {
                    return Err(ConfigError(format!(
                        "field must be 1 to {MAX_NAME_LEN} bytes long"
                    )));
                }
                if field == "channel_id" {
                    return Err(ConfigError(
                        "field names the token, and channel_id is Zoho's channel".to_owned(),
                    ));
                }
                match channel_id {
                    Some(id) if !is_channel_id(id) => Err(ConfigError(
                        "channel_id must be Zoho's channel id: 1 to 20 digits".to_owned(),
                    )),
                    _ => Ok(()),
                }
            }
            Self::SalesforceOutbound { organization_id } => {
                if is_salesforce_id(organization_id) {
                    Ok(())
                } else {
                    Err(ConfigError(
                        "organization_id must be a Salesforce id: 15 or 18 letters and digits"
                            .to_owned(),
                    ))
                }
            }
            Self::GenericHmac {
                header,
                prefix,
                encoding: _,
                delivery_id_header,
            } => {
                check_header_name("header", header)?;
                if let Some(name) = delivery_id_header {
                    check_header_name("delivery_id_header", name)?;
                    if name.eq_ignore_ascii_case(header) {
                        return Err(ConfigError(
                            "delivery_id_header must differ from header".to_owned(),
                        ));
                    }
                }
                if prefix.len() > MAX_NAME_LEN || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ConfigError(format!(
                        "prefix must be at most {MAX_NAME_LEN} visible ASCII characters"
                    )));
                }
                Ok(())
            }
        }
    }
}

fn check_tolerance(secs: u64) -> Result<(), ConfigError> {
    if (1..=MAX_TOLERANCE_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "tolerance_secs must be between 1 and {MAX_TOLERANCE_SECS}"
        )))
    }
}

/// An HTTP field name (RFC 9110 `token`), bounded.
fn check_header_name(setting: &str, name: &str) -> Result<(), ConfigError> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.bytes().all(is_tchar) {
        return Err(ConfigError(format!(
            "{setting} must be an HTTP header name of at most {MAX_NAME_LEN} characters"
        )));
    }
    Ok(())
}

/// 1 to 20 ASCII digits (a Zoho channel id is a long).
pub(super) fn is_channel_id(id: &str) -> bool {
    (1..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// 15 or 18 ASCII letters and digits.
pub(super) fn is_salesforce_id(id: &str) -> bool {
    matches!(id.len(), 15 | 18) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}
