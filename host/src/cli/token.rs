//! `adapter-host token`: a management API token signed with the host's own HS256 key, so that
//! a developer (and the README's walk through the API) can call a local host without an
//! identity provider. The claims are those the host checks (`sub`, `tenant_id`, `org_id`,
//! `roles`, `exp`, and `iss`/`aud` when the host requires them); the key comes from where
//! `serve` reads it, so the same settings make the same host accept the token.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;
use zeroize::Zeroizing;

/// The longest a local token may be valid for.
const MAX_TTL_SECS: u64 = 86_400;

/// How the management API's HS256 tokens are keyed and scoped (shared by `serve` and `token`).
#[derive(Debug, Args)]
pub(super) struct JwtArgs {
    /// A file holding the management API's HS256 JWT key (at least 32 bytes). The key can
    /// also come from the environment variable ADAPTER_HOST_JWT_HS256_KEY (never a flag).
    #[arg(long, env = "ADAPTER_HOST_JWT_KEY_FILE", value_name = "FILE")]
    pub(super) jwt_key_file: Option<PathBuf>,
    /// The `iss` every token must carry.
    #[arg(long, env = "ADAPTER_HOST_JWT_ISSUER")]
    pub(super) jwt_issuer: Option<String>,
    /// The `aud` every token must carry.
    #[arg(long, env = "ADAPTER_HOST_JWT_AUDIENCE")]
    pub(super) jwt_audience: Option<String>,
}

impl JwtArgs {
    /// The HS256 key, from the file or the environment (not both), if any.
    pub(super) fn hs256_key(&self) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
        let from_env = std::env::var("ADAPTER_HOST_JWT_HS256_KEY")
            .ok()
            .filter(|key| !key.is_empty());
        Ok(match (&self.jwt_key_file, from_env) {
            (Some(_), Some(_)) => anyhow::bail!(
                "give the JWT key once: --jwt-key-file or ADAPTER_HOST_JWT_HS256_KEY, not both"
            ),
            (Some(path), None) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("reading the JWT key file {}", path.display()))?;
                Some(Zeroizing::new(bytes.trim_ascii().to_vec()))
            }
            (None, Some(key)) => Some(Zeroizing::new(key.into_bytes())),
            (None, None) => None,
        })
    }
}

#[derive(Debug, Args)]
pub(super) struct TokenArgs {
    #[command(flatten)]
    jwt: JwtArgs,
    /// The tenant the token acts for.
    #[arg(long)]
    tenant: String,
    /// The org it is scoped to; without one, a platform-level token (each call names its org
    /// in `X-Org-Id`).
    #[arg(long)]
    org: Option<String>,
    /// What it may do.
    #[arg(long, default_value = "tenant_admin", value_parser = ["viewer", "tenant_admin", "admin"])]
    role: String,
    /// Also grant `pii_reader`: payload fields the adapters declare as personal data are then
    /// shown unmasked.
    #[arg(long)]
    pii_reader: bool,
    /// Who it names (`sub`: the actor in the audit log).
    #[arg(long, default_value = "local-developer")]
    subject: String,
    /// Seconds it is valid for (1 to 86400).
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
}

/// The signed token `args` describe.
pub(super) fn mint(args: &TokenArgs) -> anyhow::Result<String> {
    let key = args.jwt.hs256_key()?.ok_or_else(|| {
        anyhow::anyhow!(
            "no JWT key: give the key the host verifies with, --jwt-key-file FILE or \
             ADAPTER_HOST_JWT_HS256_KEY"
        )
    })?;
    let config = crate::api::auth::AuthConfig {
        hs256_key: Some(key.clone()),
        ..crate::api::auth::AuthConfig::default()
    };
    config.validate()?;
    if !(1..=MAX_TTL_SECS).contains(&args.ttl_secs) {
        anyhow::bail!(
            "--ttl-secs must be between 1 and {MAX_TTL_SECS}, got {}",
            args.ttl_secs
        );
    }
    for (flag, value) in [
        ("--tenant", Some(&args.tenant)),
        ("--org", args.org.as_ref()),
    ] {
        if let Some(value) = value
            && !crate::api::scope::is_id(value)
        {
            anyhow::bail!("{flag} {value:?}: 1 to 128 printable ASCII characters other than `/`");
        }
    }
    if args.subject.trim().is_empty() {
        anyhow::bail!("--subject must not be empty");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let mut claims = serde_json::json!({
        "sub": args.subject,
        "tenant_id": args.tenant,
        "roles": if args.pii_reader {
            vec![args.role.as_str(), crate::api::auth::PERSONAL_DATA_ROLE]
        } else {
            vec![args.role.as_str()]
        },
        "iat": now,
        "exp": now + args.ttl_secs,
    });
    if let Some(org) = &args.org {
        claims["org_id"] = org.clone().into();
    }
    if let Some(issuer) = &args.jwt.jwt_issuer {
        claims["iss"] = issuer.clone().into();
    }
    if let Some(audience) = &args.jwt.jwt_audience {
        claims["aud"] = audience.clone().into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&key),
    )
    .context("signing the token")
}
