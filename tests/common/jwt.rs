//! Management API tokens for tests: an HS256 key, the host's verification settings for it, and
//! tokens with valid defaults whose claims a test overrides.

#![allow(dead_code)] // Each test crate uses its own part.

use std::time::{SystemTime, UNIX_EPOCH};

use adapter_host::api::auth::AuthConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

pub const KEY: &[u8] = b"management-api-test-key-0123456789abcdef";
pub const ISSUER: &str = "https://id.example";
pub const AUDIENCE: &str = "adapter-host";

/// How the host verifies the tokens of [`token_with`].
pub fn auth_config() -> AuthConfig {
    AuthConfig {
        hs256_key: Some(zeroize::Zeroizing::new(KEY.to_vec())),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..AuthConfig::default()
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A `tenant_admin` token of tenant `t1` with these claims on top (`null` removes a claim).
pub fn token_with(overrides: Value) -> String {
    let mut claims = json!({
        "sub": "alice@example.com", "tenant_id": "t1", "roles": ["tenant_admin"],
        "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600,
    });
    for (key, value) in overrides.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(KEY),
    )
    .unwrap()
}
