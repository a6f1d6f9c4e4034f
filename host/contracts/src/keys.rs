//! Which payload keys carry scope (a tenant or an org), however they are spelled.
//!
//! An adapter could smuggle another tenant's id past an exact-match check by spelling the key
//! differently: `TenantId`, `TENANT_ID`, `tenant-id`, fullwidth `ｔｅｎａｎｔ＿ｉｄ`, a zero-width
//! space inside `tenant<U+200B>_id`, or a Cyrillic `е` in `tеnant_id`. Consumers that match keys loosely
//! (case-insensitive lookups, "normalising" ORMs, people reading a payload) would then act on the
//! foreign id. So a key counts as a scope key when its *skeleton* is `tenantid` or `orgid`:
//!
//! 1. Unicode normalization form NFKC (fullwidth and other compatibility forms become plain),
//! 2. every character that is not a letter or a digit is dropped (separators such as `_`, `-`,
//!    `.`, spaces, and invisible characters such as zero-width spaces, joiners and bidi marks),
//! 3. lower-cased,
//! 4. mapped through the confusables skeleton of Unicode TS #39 (lookalike letters of other
//!    scripts become the Latin ones they imitate).
//!
//! ASCII keys (the usual case) take a fast path that gives the same answer.

use unicode_normalization::UnicodeNormalization;
use unicode_security::confusable_detection::skeleton;

/// A payload key that carries scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKey {
    /// Its value must be the connection's tenant.
    Tenant,
    /// Its value must be one of the connection's orgs (or null from a platform-level one).
    Org,
}

/// Whether `key` is a tenant or an org key (see the module documentation for the rule).
pub fn scope_key(key: &str) -> Option<ScopeKey> {
    if key.is_ascii() {
        return classify(
            key.bytes()
                .filter(u8::is_ascii_alphanumeric)
                .map(|b| char::from(b.to_ascii_lowercase())),
        );
    }
    classify(
        key.nfkc()
            .filter(|c| c.is_alphanumeric())
            .map(fold_lookalike),
    )
}

/// `c` lower-cased, or, when that is not ASCII, the ASCII letter or digit it imitates: the
/// confusables skeleton of `c` in either case (Cyrillic `Т` is Latin `T`, small `т` only via
/// its capital), lower-cased. Anything else is kept lower-cased.
fn fold_lookalike(c: char) -> char {
    let lower = only(c.to_lowercase());
    if let Some(l) = lower
        && l.is_ascii_alphanumeric()
    {
        return l;
    }
    std::iter::once(c)
        .chain(c.to_uppercase())
        .chain(c.to_lowercase())
        .find_map(|variant| {
            only(skeleton(variant.encode_utf8(&mut [0; 4])).flat_map(char::to_lowercase))
                .filter(char::is_ascii_alphanumeric)
        })
        .or(lower)
        .unwrap_or(c)
}

/// The one item of `chars`, when there is exactly one.
fn only(chars: impl IntoIterator<Item = char>) -> Option<char> {
    let mut chars = chars.into_iter();
    let first = chars.next()?;
    chars.next().is_none().then_some(first)
}

fn classify(chars: impl Iterator<Item = char>) -> Option<ScopeKey> {
    // Longest key skeleton is "tenantid": stop collecting past it.
    let mut buffer = [0 as char; 9];
    let mut len = 0;
    for c in chars {
        if len == buffer.len() {
            return None;
        }
        buffer[len] = c;
        len += 1;
    }
    match &buffer[..len] {
        ['t', 'e', 'n', 'a', 'n', 't', 'i', 'd'] => Some(ScopeKey::Tenant),
        ['o', 'r', 'g', 'i', 'd'] => Some(ScopeKey::Org),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_the_tenant_key_counts() {
        for key in [
            "tenant_id",
            "tenantId",
            "TenantId",
            "TENANT_ID",
            "tenant-id",
            "tenant.id",
            "tenant id",
            "__tenant__id__",
            "ｔｅｎａｎｔ＿ｉｄ",        // fullwidth
            "tenant\u{200b}_id",         // zero-width space
            "ten\u{200d}ant\u{feff}id",  // zero-width joiner, BOM
            "tenant\u{202e}_id",         // right-to-left override
            "t\u{0435}nant_id",          // Cyrillic е
            "\u{0442}enant_id",          // Cyrillic т
            "TENANT\u{2010}ID",          // hyphen
            "tenant\u{00ad}id",          // soft hyphen
            "\u{1d42d}\u{1d41e}nant_id", // mathematical bold
        ] {
            assert_eq!(scope_key(key), Some(ScopeKey::Tenant), "{key:?}");
        }
    }

    #[test]
    fn every_spelling_of_the_org_key_counts() {
        for key in [
            "org_id",
            "orgId",
            "OrgId",
            "ORG-ID",
            "ｏｒｇＩｄ",
            "org\u{2060}id", // word joiner
            "\u{043e}rg_id", // Cyrillic о
            "org_\u{0456}d", // Cyrillic і
        ] {
            assert_eq!(scope_key(key), Some(ScopeKey::Org), "{key:?}");
        }
    }

    #[test]
    fn other_keys_are_not_scope_keys() {
        for key in [
            "tenant",
            "tenant_ids",
            "tenant_id_2",
            "my_tenant_id",
            "org",
            "organization_id",
            "org_ident",
            "id",
            "",
            "_",
            "tenantidtenantid",
        ] {
            assert_eq!(scope_key(key), None, "{key:?}");
        }
    }
}
