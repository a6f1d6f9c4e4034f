//! Zoho CRM notifications (<https://www.zoho.com/crm/developer/docs/api/v8/notifications/overview.html>):
//! Zoho signs nothing; the JSON body carries back the `token` set when the notification
//! channel was enabled. It is compared with the connection's secret in constant time, through
//! SHA-256 digests of both so that not even its length leaks. Once verified, the token is
//! blanked out of the body ([`redact`]) before the body is stored or handed to an adapter.

use std::fmt;
use std::ops::Range;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{RawRequest, Result, Secret, SignatureError, Verified, first_match};

pub(super) fn verify(
    field: &str,
    channel_id: Option<&str>,
    secrets: &[Secret],
    request: &RawRequest<'_>,
) -> Result<Verified> {
    let (token, _) = find_token(field, request.body)?;
    let candidate = Sha256::digest(token.as_bytes()).to_vec();
    let secret_index = first_match(secrets, &[candidate], |secret| {
        Ok(Sha256::digest(secret.expose()).into())
    })?;
    // A token is often reused across channels: the channel the body names must be the
    // connection's, when it is bound to one.
    if let Some(expected) = channel_id
        && channel_of(request.body)?.as_deref() != Some(expected)
    {
        return Err(SignatureError::ChannelMismatch);
    }
    Ok(Verified {
        delivery_id: None,
        timestamp: None,
        secret_index: Some(secret_index),
    })
}

/// The body's top-level `channel_id` as digits: Zoho writes it as a number or as a string of
/// digits. `None` when absent; anything else is malformed.
fn channel_of(body: &[u8]) -> Result<Option<String>> {
    #[derive(serde::Deserialize)]
    struct Channel<'a> {
        #[serde(borrow, default)]
        channel_id: Option<&'a RawValue>,
    }
    const BAD: SignatureError =
        SignatureError::Malformed("channel_id is not a Zoho channel id (a number)");
    let channel: Channel<'_> = serde_json::from_slice(body).map_err(|_| {
        SignatureError::Malformed("the body's channel_id is unreadable or appears twice")
    })?;
    let Some(raw) = channel.channel_id else {
        return Ok(None);
    };
    let text = raw.get();
    let digits = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if super::config::is_channel_id(digits) {
        Ok(Some(digits.to_owned()))
    } else {
        Err(BAD)
    }
}

/// What replaces the token's value in a verified body (a JSON string, so the body stays valid
/// JSON and keeps its shape).
pub(super) const REDACTED: &[u8] = br#""[redacted]""#;

/// `body` with the value of its top-level `field` (quotes included) replaced by [`REDACTED`];
/// every other byte stays as received. A body without a single string `field` is returned as is.
pub(super) fn redact(field: &str, mut body: Vec<u8>) -> Vec<u8> {
    if let Ok((_, span)) = find_token(field, &body) {
        body.splice(span, REDACTED.iter().copied());
    }
    body
}

/// The string value of the body's top-level `field` and where its JSON text sits in `body`,
/// read in one pass without building the document.
fn find_token(field: &str, body: &[u8]) -> Result<(Zeroizing<String>, Range<usize>)> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let found = FindField(field)
        .deserialize(&mut deserializer)
        .and_then(|found| deserializer.end().map(|()| found))
        .map_err(|_| SignatureError::Malformed("the body is not a JSON object"))?;
    match found {
        Found::Token(token, raw) => {
            // The raw value borrows from `body`: its offset is where the token's text starts.
            let start = (raw.as_ptr() as usize) - (body.as_ptr() as usize);
            Ok((token, start..start + raw.len()))
        }
        Found::Missing => Err(SignatureError::Malformed("the body has no token field")),
        Found::NotAString => Err(SignatureError::Malformed("the token field is not a string")),
        Found::Repeated => Err(SignatureError::Malformed(
            "the token field appears more than once",
        )),
    }
}

enum Found<'de> {
    /// The token and its JSON text (quotes and escapes included), borrowed from the body.
    Token(Zeroizing<String>, &'de str),
    Missing,
    NotAString,
    Repeated,
}

struct FindField<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for FindField<'_> {
    type Value = Found<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Found<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FindField<'_> {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Found<'de>, A::Error> {
        let mut found = Found::Missing;
        while let Some(key) = map.next_key::<String>()? {
            if key != self.0 {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let raw = map.next_value::<&'de RawValue>()?;
            found = match found {
                Found::Missing => match serde_json::from_str::<String>(raw.get()) {
                    Ok(token) => Found::Token(Zeroizing::new(token), raw.get()),
                    Err(_) => Found::NotAString,
                },
                _ => Found::Repeated,
            };
        }
        Ok(found)
    }
}
