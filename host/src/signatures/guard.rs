//! What a connection's webhook checks besides (or, for senders that sign nothing, instead of)
//! a signature: where the request comes from, the capability token in its URL, and its method.
//!
//! - **Source allow list**: CIDR ranges, IPv4 and IPv6 ([`IpRange`], parsed by `ipnet`). The
//!   source is the TCP peer, unless the peer is one of the host's [`TrustedProxies`]: then, and
//!   only then, the proxy's forwarding header is believed, read from the right (the hop the
//!   nearest proxy added) and skipping the trusted proxies, so that whatever a client wrote in
//!   the header itself is never taken for its address.
//! - **Capability URL**: `/v1/hooks/{connection_id}/{token}`, the token a secret in the secret
//!   store (rotated with a grace period like a signing secret), compared in constant time
//!   through SHA-256 digests so that not even its length leaks.
//! - **Methods**: the ones the scheme can verify ([`SchemeConfig::methods`]), or fewer.
//!
//! Like the rest of this module it is pure: addresses, headers and secrets are parameters.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ConfigError, SchemeConfig, Secret, first_match};

/// Most entries in a connection's allow list, or in the host's trusted proxies.
pub const MAX_RANGES: usize = 256;
/// Shortest capability token, in characters: 32 characters of the URL-safe alphabet carry at
/// least 192 bits when drawn at random (`openssl rand -hex 32` gives 64).
pub const MIN_TOKEN_LEN: usize = 32;
/// Longest capability token, in characters.
pub const MAX_TOKEN_LEN: usize = 256;
/// Most hops read from a forwarding header.
const MAX_HOPS: usize = 64;

/// One entry of an allow list: a CIDR range (`203.0.113.0/24`, `2001:db8::/32`) or a single
/// address (`198.51.100.7`, `2001:db8::1`). Host bits of a range are cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange(IpNet);

impl IpRange {
    /// Whether `address` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.contains(&address.to_canonical())
    }
}

impl FromStr for IpRange {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            if net.prefix_len() == 0 {
                return Err(ConfigError(format!(
                    "`{text}` allows every address: leave the allow list empty instead"
                )));
            }
            return Ok(Self(net.trunc()));
        }
        if let Ok(address) = text.parse::<IpAddr>() {
            return Ok(Self(IpNet::from(address.to_canonical())));
        }
        Err(ConfigError(format!(
            "`{text}` is not an IP address or a CIDR range (e.g. 203.0.113.0/24, 2001:db8::/32)"
        )))
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for IpRange {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The header a trusted proxy writes the client's address in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (what most load balancers write).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:4711"`.
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "X-Forwarded-For",
            Self::Forwarded => "Forwarded",
        }
    }
}

impl FromStr for ForwardedHeader {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            _ => Err(format!(
                "`{text}` is not a forwarding header: x-forwarded-for or forwarded"
            )),
        }
    }
}

/// The proxies (load balancers) in front of the host, whose forwarding header is believed.
/// None by default: the TCP peer is the source, and forwarding headers are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// Their addresses.
    pub proxies: Vec<IpRange>,
    /// The one header they write (only one is read, so that a client cannot slip the other
    /// past a proxy that does not overwrite it).
    pub header: ForwardedHeader,
}

impl TrustedProxies {
    fn trusts(&self, address: IpAddr) -> bool {
        self.proxies.iter().any(|range| range.contains(address))
    }

    /// The address a request comes from: `peer`, unless `peer` is a trusted proxy; then the
    /// right-most hop of the forwarding header that is not a trusted proxy (the left-most hop
    /// when all are; the peer itself when there is no header).
    pub fn source(&self, peer: IpAddr, headers: &[(String, String)]) -> Result<IpAddr, GuardError> {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return Ok(peer);
        }
        let name = self.header.name();
        let hops: Vec<&str> = headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .flat_map(|(_, value)| split_outside_quotes(value, ','))
            .map(str::trim)
            .filter(|hop| !hop.is_empty())
            .collect();
        let mut nearest = peer;
        for hop in hops.iter().rev().take(MAX_HOPS) {
            let address = match self.header {
                ForwardedHeader::XForwardedFor => parse_node(hop),
                ForwardedHeader::Forwarded => forwarded_for(hop).and_then(parse_node),
            }
            .ok_or(GuardError::UnreadableForwarding(name))?;
            if !self.trusts(address) {
                return Ok(address);
            }
            nearest = address;
        }
        if hops.len() > MAX_HOPS {
            return Err(GuardError::UnreadableForwarding(name));
        }
        Ok(nearest)
    }
}

/// `text` split at `separator`s that are not inside a quoted string.
fn split_outside_quotes(text: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (index, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..index]);
                start = index + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter()
}

/// The `for=` node of one `Forwarded` element, unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    split_outside_quotes(element, ';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then(|| {
            let value = value.trim();
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
        })
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`. Obfuscated nodes (`unknown`, `_hidden`) are not.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    if let Ok(address) = node.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
        .map(|address| address.to_canonical())
}

/// What a connection's webhook checks besides its signature (all optional):
///
/// ```json
/// {"allowed_ips": ["13.108.0.0/14", "2001:db8::/32"],
///  "capability_secret": "zenoti-hook-token",
///  "methods": ["PUT"]}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookGuard {
    /// Source addresses the connection takes deliveries from, as CIDR ranges or single
    /// addresses (IPv4 or IPv6); empty: any source. Behind a load balancer, the host must be
    /// told to trust it (`--trusted-proxy`), else every request comes from the balancer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub allowed_ips: Vec<IpRange>,
    /// Name of the secret holding the capability token: the webhook URL is then
    /// `/v1/hooks/{connection_id}/{token}`, and a request without it is refused. The token is
    /// 32 to 256 characters of `A-Z a-z 0-9 - _ . ~`; rotate it by writing a new value with a
    /// grace period, during which both URLs work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability_secret: Option<String>,
    /// The HTTP methods taken (the CRM's choice, e.g. Zenoti's PUT); default: every method the
    /// signature scheme can verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
}

impl WebhookGuard {
    /// Whether it checks anything at all.
    pub fn is_empty(&self) -> bool {
        self.allowed_ips.is_empty() && self.capability_secret.is_none() && self.methods.is_none()
    }

    /// Whether it authenticates the sender (an allow list or a capability URL).
    pub fn authenticates(&self) -> bool {
        !self.allowed_ips.is_empty() || self.capability_secret.is_some()
    }

    /// Checks the settings against the connection's `scheme`.
    pub fn validate(&self, scheme: &SchemeConfig) -> Result<(), ConfigError> {
        if self.allowed_ips.len() > MAX_RANGES {
            return Err(ConfigError(format!(
                "allowed_ips holds at most {MAX_RANGES} ranges"
            )));
        }
        if let Some(methods) = &self.methods {
            let allowed = scheme.methods();
            if methods.is_empty() {
                return Err(ConfigError(
                    "methods must name at least one method (leave it out for the scheme's)"
                        .to_owned(),
                ));
            }
            for (index, method) in methods.iter().enumerate() {
                if !allowed.contains(&method.as_str()) {
                    return Err(ConfigError(format!(
                        "the {} scheme cannot verify a `{method}` request: methods must be \
                         among {}",
                        scheme.name(),
                        allowed.join(", ")
                    )));
                }
                if methods[..index].contains(method) {
                    return Err(ConfigError(format!("methods names `{method}` twice")));
                }
            }
        }
        if !scheme.authenticates() && !self.authenticates() {
            return Err(ConfigError(format!(
                "the {} scheme checks nothing: give the connection a capability_secret or \
                 allowed_ips",
                scheme.name()
            )));
        }
        Ok(())
    }

    /// The methods taken, in the order of the scheme's.
    pub fn methods<'a>(&'a self, scheme: &SchemeConfig) -> Vec<&'a str> {
        let all = scheme.methods();
        match &self.methods {
            Some(chosen) => all
                .iter()
                .copied()
                .filter(|m| chosen.iter().any(|c| c == m))
                .collect(),
            None => all.to_vec(),
        }
    }

    /// Refuses a source outside the allow list (any source passes an empty one).
    pub fn check_source(&self, source: Option<IpAddr>) -> Result<(), GuardError> {
        if self.allowed_ips.is_empty() {
            return Ok(());
        }
        let source = source.ok_or(GuardError::SourceUnknown)?;
        if self.allowed_ips.iter().any(|range| range.contains(source)) {
            Ok(())
        } else {
            Err(GuardError::SourceRefused(source))
        }
    }
}

/// Whether `value` can be a capability token: 32 to 256 characters of `A-Z a-z 0-9 - _ . ~`
/// (unreserved in a URL path, so the URL carries it as is).
pub fn usable_token(value: &[u8]) -> bool {
    (MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(b))
}

/// Checks the token `sent` in the URL against the connection's `tokens` (the current one and,
/// during a rotation, the previous one): the index of the one it matches.
pub fn verify_capability(sent: &Secret, tokens: &[Secret]) -> Result<usize, GuardError> {
    let usable: Vec<&Secret> = tokens
        .iter()
        .filter(|token| usable_token(token.expose()))
        .collect();
    if usable.is_empty() {
        return Err(GuardError::NoToken);
    }
    let candidate = Sha256::digest(sent.expose()).to_vec();
    let index = first_match(&usable, &[candidate], |token| {
        Ok(Sha256::digest(token.expose()).into())
    })
    .map_err(|_| GuardError::CapabilityMismatch)?;
    // Report the index among all tokens, as signature checks do.
    Ok(tokens
        .iter()
        .position(|token| std::ptr::eq(token, usable[index]))
        .unwrap_or(index))
}

/// Why a request was refused before its signature was looked at. Messages never hold a token
/// or the allow list; a refused source is named (it is the caller's own address, as the host
/// saw it, which is what the caller needs to fix its setup).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The connection has an allow list and the request's source is unknown.
    #[error(
        "the request's source address is unknown, and this connection takes deliveries only from its allowed addresses"
    )]
    SourceUnknown,
    /// The source is not in the allow list.
    #[error("the source address {0} is not one this connection takes deliveries from")]
    SourceRefused(IpAddr),
    /// A trusted proxy's forwarding header names a hop that is not an address.
    #[error("the {0} header from the host's proxy holds a hop that is not an IP address")]
    UnreadableForwarding(&'static str),
    /// The connection has a capability URL and the request's URL carries no token.
    #[error(
        "this connection's webhook URL carries a capability token, and this request's URL has none: use the URL given for the connection, /v1/hooks/{{connection_id}}/{{token}}"
    )]
    CapabilityMissing,
    /// The token in the URL is not the connection's.
    #[error("the capability token in the URL is not this connection's (or was rotated out)")]
    CapabilityMismatch,
    /// The connection has a capability secret, but no usable token is written in it.
    #[error(
        "the connection's capability token is not written, or is not 32 to 256 URL-safe characters"
    )]
    NoToken,
}

impl GuardError {
    /// A stable snake_case code, for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::SourceUnknown => "source_unknown",
            Self::SourceRefused(_) => "source_refused",
            Self::UnreadableForwarding(_) => "unreadable_forwarding",
            Self::CapabilityMissing => "capability_missing",
            Self::CapabilityMismatch => "capability_mismatch",
            Self::NoToken => "no_capability_token",
        }
    }
}
