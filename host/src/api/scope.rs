//! The org-scope contract of the management API, in one place:
//!
//! - the JWT's `org_id` is authoritative: an org-scoped caller acts in its org whatever
//!   `X-Org-Id` says;
//! - a caller whose JWT has no `org_id` (a platform-level caller) must name the org with
//!   `X-Org-Id`, else 400;
//! - lists hold the org's rows plus platform-level rows (`org_id` null);
//! - a row of another org, or of another tenant, is "not found" (404, never 403);
//! - writes stay in the org: an org-scoped caller can neither create nor change platform-level
//!   rows (they are every org's), only a platform-level caller can;
//! - support mode: the platform's `admin` acts in another tenant only when it names that tenant
//!   in `X-Support-Tenant` (with a platform-level token, so the org comes from `X-Org-Id`);
//!   every change it makes so is marked `support` in the audit log. Without the header an
//!   admin token is a tenant admin of its own tenant, nothing more; the header with any other
//!   role is a 403.

use axum::http::HeaderMap;

use super::ApiError;
use super::auth::{Caller, Role};

/// The header a platform-level caller names the org with.
pub const ORG_HEADER: &str = "x-org-id";

/// The header the platform's admin names the tenant it supports with.
pub const SUPPORT_HEADER: &str = "x-support-tenant";

/// Longest accepted tenant or org id.
pub const MAX_ID_BYTES: usize = 128;

/// Whether `id` can be a tenant or org id: 1 to [`MAX_ID_BYTES`] printable ASCII characters,
/// no `/` (ids name secret store namespaces).
pub fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// The tenant an `X-Support-Tenant` header names, when `caller` may act for it: a
/// platform-level token of the `admin` role, else 403 (the header never widens anyone else's
/// access, nor an org-scoped token's: its org is one of its own tenant).
fn support_tenant(caller: &Caller, header: &axum::http::HeaderValue) -> Result<String, ApiError> {
    if caller.role != Role::Admin {
        return Err(ApiError::Forbidden(format!(
            "X-Support-Tenant is for the platform's admin role; the token grants {}",
            caller.role.as_str()
        )));
    }
    if caller.org_id.is_some() {
        return Err(ApiError::Forbidden(
            "support mode needs a platform-level admin token (without org_id); name the org \
             with X-Org-Id"
                .into(),
        ));
    }
    header
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|tenant| is_id(tenant))
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "X-Support-Tenant must be 1 to {MAX_ID_BYTES} printable ASCII characters \
                 other than `/`"
            ))
        })
}

/// A caller and the org it acts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Who is calling.
    pub caller: Caller,
    /// The org: the JWT's, or for a platform-level caller the `X-Org-Id` header's.
    pub org_id: String,
    /// Whether the platform's admin acts for the tenant in support mode (`X-Support-Tenant`);
    /// the caller's `tenant_id` is then the supported tenant.
    pub support: bool,
}

impl Scope {
    /// `caller` as it acts for a tenant, before any org: for its own tenant, or in support
    /// mode for the one `X-Support-Tenant` names (then `true`). What is about the tenant
    /// itself, such as the list of its orgs, needs no org.
    pub fn tenant_caller(
        mut caller: Caller,
        headers: &HeaderMap,
    ) -> Result<(Caller, bool), ApiError> {
        let support = match headers.get(SUPPORT_HEADER) {
            None => false,
            Some(header) => {
                caller.tenant_id = support_tenant(&caller, header)?;
                true
            }
        };
        Ok((caller, support))
    }

    /// The scope of `caller` given the request's `headers`.
    pub fn new(caller: Caller, headers: &HeaderMap) -> Result<Self, ApiError> {
        let (caller, support) = Self::tenant_caller(caller, headers)?;
        let org_id = match &caller.org_id {
            Some(org) => org.clone(),
            None => {
                let header = headers.get(ORG_HEADER).ok_or_else(|| {
                    ApiError::BadRequest(
                        "the token has no org_id: send the org in the X-Org-Id header".into(),
                    )
                })?;
                let org = header
                    .to_str()
                    .ok()
                    .map(str::trim)
                    .filter(|org| is_id(org))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "X-Org-Id must be 1 to {MAX_ID_BYTES} printable ASCII characters \
                             other than `/`"
                        ))
                    })?;
                org.to_owned()
            }
        };
        Ok(Self {
            caller,
            org_id,
            support,
        })
    }

    /// The tenant.
    pub fn tenant_id(&self) -> &str {
        &self.caller.tenant_id
    }

    /// Whether a row of `tenant_id` in `org_id` (`None`: platform level) is visible.
    pub fn sees(&self, tenant_id: &str, org_id: Option<&str>) -> bool {
        tenant_id == self.caller.tenant_id && org_id.is_none_or(|org| org == self.org_id)
    }

    /// `Ok` when the caller may change configuration, else 403.
    pub fn require_write(&self) -> Result<(), ApiError> {
        if self.caller.can_write() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this needs the tenant_admin role; the token grants viewer".into(),
            ))
        }
    }

    /// The org a new row goes to: the caller's org, or platform level when asked for (only a
    /// platform-level caller may).
    pub fn new_row_org(&self, platform_level: bool) -> Result<Option<String>, ApiError> {
        if !platform_level {
            return Ok(Some(self.org_id.clone()));
        }
        if self.caller.org_id.is_some() {
            return Err(ApiError::Forbidden(
                "an org-scoped token cannot create platform-level resources".into(),
            ));
        }
        Ok(None)
    }

    /// `Ok` when the caller may change a row of `tenant_id` in `org_id`: 404 when it cannot
    /// see it (`what` names it), 403 for a platform-level row and an org-scoped caller.
    pub fn check_write(
        &self,
        tenant_id: &str,
        org_id: Option<&str>,
        what: impl FnOnce() -> String,
    ) -> Result<(), ApiError> {
        self.require_write()?;
        if !self.sees(tenant_id, org_id) {
            return Err(ApiError::NotFound(format!("no {}", what())));
        }
        if org_id.is_none() && self.caller.org_id.is_some() {
            return Err(ApiError::Forbidden(format!(
                "{} is platform-level: only a platform-level token can change it",
                what()
            )));
        }
        Ok(())
    }

    /// The secret store name of the tenant's secret `name` in `org_id` (`None`: platform
    /// level). Tenants and orgs have separate namespaces, so a connection can only ever
    /// reference its own scope's secrets.
    pub fn secret_ref(tenant_id: &str, org_id: Option<&str>, name: &str) -> String {
        match org_id {
            Some(org) => format!("tenants/{tenant_id}/orgs/{org}/{name}"),
            None => format!("tenants/{tenant_id}/platform/{name}"),
        }
    }
}
