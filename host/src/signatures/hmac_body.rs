//! Schemes that put one HMAC-SHA256 of the raw body in one header: GitHub
//! (`X-Hub-Signature-256: sha256=<hex>`), Shopify (`X-Shopify-Hmac-Sha256: <base64>`) and the
//! configurable generic scheme. None signs a timestamp, so a captured delivery can be replayed;
//! the delivery id (when the sender gives one) is what lets the pipeline drop such repeats.

use super::{
    RawRequest, Result, Secret, SignatureEncoding, SignatureError, Verified, decode_base64,
    decode_hex, first_match, hmac_sha256,
};

/// Where one body HMAC is found and how it is written.
#[derive(Debug)]
pub(super) struct BodyHmac<'a> {
    pub header: &'a str,
    pub prefix: &'a str,
    pub encoding: SignatureEncoding,
    pub delivery_id_header: Option<&'a str>,
}

/// GitHub webhooks (<https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>).
pub(super) const GITHUB: BodyHmac<'static> = BodyHmac {
    header: "X-Hub-Signature-256",
    prefix: "sha256=",
    encoding: SignatureEncoding::Hex,
    delivery_id_header: Some("X-GitHub-Delivery"),
};

/// Shopify webhooks (<https://shopify.dev/docs/apps/build/webhooks/subscribe/https>).
pub(super) const SHOPIFY: BodyHmac<'static> = BodyHmac {
    header: "X-Shopify-Hmac-Sha256",
    prefix: "",
    encoding: SignatureEncoding::Base64,
    delivery_id_header: Some("X-Shopify-Webhook-Id"),
};

pub(super) fn verify(
    scheme: &BodyHmac<'_>,
    secrets: &[Secret],
    request: &RawRequest<'_>,
) -> Result<Verified> {
    let header = request.required_header(scheme.header)?;
    let delivery_id = match scheme.delivery_id_header {
        Some(name) => request.delivery_id(name)?,
        None => None,
    };
    let encoded = header
        .strip_prefix(scheme.prefix)
        .ok_or(SignatureError::Malformed(
            "the signature header lacks its prefix",
        ))?;
    let candidate = match scheme.encoding {
        SignatureEncoding::Hex => decode_hex(encoded),
        SignatureEncoding::Base64 => decode_base64(encoded),
    }
    .ok_or(SignatureError::Malformed(
        "the signature is not in the expected encoding",
    ))?;
    let secret_index = first_match(secrets, &[candidate], |secret| {
        hmac_sha256(secret.expose(), &[request.body])
    })?;
    Ok(Verified {
        delivery_id,
        timestamp: None,
        secret_index: Some(secret_index),
    })
}
