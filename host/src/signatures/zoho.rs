//! Zoho CRM notifications (<https://www.zoho.com/crm/developer/docs/api/v8/notifications/overview.html>):
//! Zoho signs nothing; the JSON body carries back the `token` set when the notification
//! channel was enabled. It is compared with the connection's secret in constant time, through
//! SHA-256 digests of both so that not even its length leaks.

use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{RawRequest, Result, Secret, SignatureError, Verified, first_match};

pub(super) fn verify(
    field: &str,
    secrets: &[Secret],
    request: &RawRequest<'_>,
) -> Result<Verified> {
    let token = find_token(field, request.body)?;
    let candidate = Sha256::digest(token.as_bytes()).to_vec();
    let secret_index = first_match(secrets, &[candidate], |secret| {
        Ok(Sha256::digest(secret.expose()).into())
    })?;
    Ok(Verified {
        delivery_id: None,
        timestamp: None,
        secret_index: Some(secret_index),
    })
}

/// The string value of the body's top-level `field`, read in one pass without building the
/// document.
fn find_token(field: &str, body: &[u8]) -> Result<Zeroizing<String>> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let found = FindField(field)
        .deserialize(&mut deserializer)
        .and_then(|found| deserializer.end().map(|()| found))
        .map_err(|_| SignatureError::Malformed("the body is not a JSON object"))?;
    match found {
        Found::Token(token) => Ok(token),
        Found::Missing => Err(SignatureError::Malformed("the body has no token field")),
        Found::NotAString => Err(SignatureError::Malformed("the token field is not a string")),
        Found::Repeated => Err(SignatureError::Malformed(
            "the token field appears more than once",
        )),
    }
}

enum Found {
    Token(Zeroizing<String>),
    Missing,
    NotAString,
    Repeated,
}

struct FindField<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for FindField<'_> {
    type Value = Found;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Found, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FindField<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Found, A::Error> {
        let mut found = Found::Missing;
        while let Some(key) = map.next_key::<String>()? {
            if key != self.0 {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value = map.next_value::<serde_json::Value>()?;
            found = match (found, value) {
                (Found::Missing, serde_json::Value::String(token)) => {
                    Found::Token(Zeroizing::new(token))
                }
                (Found::Missing, _) => Found::NotAString,
                _ => Found::Repeated,
            };
        }
        Ok(found)
    }
}
