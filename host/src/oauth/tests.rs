use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;

fn config(provider: OAuthProvider) -> OAuthConfig {
    OAuthConfig {
        provider,
        client_id: "client".into(),
        client_secret: "oauth-client".into(),
        scopes: vec!["api".into(), "refresh_token".into()],
        login_url: None,
        authorize_url: None,
        token_url: None,
        revoke_url: None,
        extra_params: BTreeMap::new(),
    }
}

fn answer(json: serde_json::Value) -> TokenAnswer {
    serde_json::from_value(json).unwrap()
}

#[test]
fn the_presets_know_their_providers_endpoints() {
    let salesforce = config(OAuthProvider::Salesforce).endpoints().unwrap();
    assert_eq!(
        salesforce.authorize.as_str(),
        "https://login.salesforce.com/services/oauth2/authorize"
    );
    assert_eq!(
        salesforce.token.as_str(),
        "https://login.salesforce.com/services/oauth2/token"
    );
    assert!(matches!(
        salesforce.revoke,
        Some(Revocation::Form(ref url)) if url.as_str() == "https://login.salesforce.com/services/oauth2/revoke"
    ));

    let hubspot = config(OAuthProvider::Hubspot).endpoints().unwrap();
    assert_eq!(
        hubspot.authorize.as_str(),
        "https://app.hubspot.com/oauth/authorize"
    );
    assert_eq!(
        hubspot.token.as_str(),
        "https://api.hubapi.com/oauth/v1/token"
    );
    assert!(matches!(
        hubspot.revoke,
        Some(Revocation::Delete(ref url)) if url.as_str() == "https://api.hubapi.com/oauth/v1/refresh-tokens/"
    ));

    let zoho = config(OAuthProvider::Zoho).endpoints().unwrap();
    assert_eq!(
        zoho.authorize.as_str(),
        "https://accounts.zoho.com/oauth/v2/auth"
    );
    assert_eq!(
        zoho.token.as_str(),
        "https://accounts.zoho.com/oauth/v2/token"
    );
    assert!(matches!(
        zoho.revoke,
        Some(Revocation::Query(ref url)) if url.as_str() == "https://accounts.zoho.com/oauth/v2/token/revoke"
    ));
}

#[test]
fn a_login_url_moves_a_preset_to_a_sandbox_or_a_data_centre() {
    let mut sandbox = config(OAuthProvider::Salesforce);
    sandbox.login_url = Some("https://test.salesforce.com".into());
    let endpoints = sandbox.endpoints().unwrap();
    assert_eq!(
        endpoints.token.as_str(),
        "https://test.salesforce.com/services/oauth2/token"
    );

    let mut eu = config(OAuthProvider::Zoho);
    eu.login_url = Some("https://accounts.zoho.eu/".into());
    let endpoints = eu.endpoints().unwrap();
    assert_eq!(
        endpoints.authorize.as_str(),
        "https://accounts.zoho.eu/oauth/v2/auth"
    );
    assert!(matches!(
        endpoints.revoke,
        Some(Revocation::Query(ref url)) if url.as_str() == "https://accounts.zoho.eu/oauth/v2/token/revoke"
    ));
}

#[test]
fn overrides_keep_the_presets_way_of_revoking() {
    let mut hubspot = config(OAuthProvider::Hubspot);
    hubspot.revoke_url = Some("https://hs.example/oauth/v1/refresh-tokens".into());
    hubspot.token_url = Some("https://hs.example/oauth/v1/token".into());
    let endpoints = hubspot.endpoints().unwrap();
    assert_eq!(
        endpoints.token.as_str(),
        "https://hs.example/oauth/v1/token"
    );
    // The refresh token is appended to the path: it ends with a slash whatever was given.
    assert!(matches!(
        endpoints.revoke,
        Some(Revocation::Delete(ref url)) if url.as_str() == "https://hs.example/oauth/v1/refresh-tokens/"
    ));

    let mut custom = config(OAuthProvider::Custom);
    custom.authorize_url = Some("https://id.example/authorize".into());
    custom.token_url = Some("https://id.example/token".into());
    assert_eq!(custom.endpoints().unwrap().revoke, None);
    custom.revoke_url = Some("https://id.example/revoke".into());
    assert!(matches!(
        custom.endpoints().unwrap().revoke,
        Some(Revocation::Form(_))
    ));
}

#[test]
fn bad_settings_are_refused_with_what_is_wrong() {
    type Change = fn(&mut OAuthConfig);
    let cases: [(Change, &str); 6] = [
        (|c| c.client_id = " ".into(), "`client_id` is empty"),
        (
            |c| c.client_secret = String::new(),
            "`client_secret` names no secret",
        ),
        (|c| c.scopes = vec!["a b".into()], "has spaces"),
        (
            |c| c.provider = OAuthProvider::Custom,
            "needs `authorize_url`",
        ),
        (
            |c| c.token_url = Some("ftp://x.example/token".into()),
            "must be https, not `ftp`",
        ),
        (
            |c| c.login_url = Some("not a url".into()),
            "`login_url` is not a URL",
        ),
    ];
    for (change, expected) in cases {
        let mut config = config(OAuthProvider::Salesforce);
        change(&mut config);
        let error = config.validate().unwrap_err();
        assert!(
            error.contains(expected),
            "{error:?} should say {expected:?}"
        );
    }
    let mut custom = config(OAuthProvider::Custom);
    custom.authorize_url = Some("https://id.example/authorize".into());
    assert!(custom.validate().unwrap_err().contains("needs `token_url`"));
    custom.token_url = Some("https://id.example/token".into());
    custom.validate().unwrap();
}

#[test]
fn presets_know_their_header_and_who_names_the_api() {
    assert_eq!(
        config(OAuthProvider::Zoho).header_prefix(),
        "Zoho-oauthtoken "
    );
    assert_eq!(config(OAuthProvider::Hubspot).header_prefix(), "Bearer ");
    assert_eq!(
        config(OAuthProvider::Hubspot).default_base_url(),
        Some("https://api.hubapi.com")
    );
    assert!(config(OAuthProvider::Salesforce).names_base_url());
    assert!(config(OAuthProvider::Zoho).names_base_url());
    assert!(!config(OAuthProvider::Hubspot).names_base_url());
    assert!(!config(OAuthProvider::Custom).names_base_url());
}

#[test]
fn token_answers_in_each_providers_shape() {
    // Salesforce: no lifetime, the instance URL.
    let salesforce = token_set(
        answer(json!({"access_token": "a1", "refresh_token": "r1",
                      "instance_url": "https://na1.my.salesforce.com", "issued_at": "1764590000000"})),
        None,
    );
    assert_eq!(salesforce.expires_at, None);
    assert!(!salesforce.expiring(SystemTime::now() + Duration::from_secs(86_400)));
    assert_eq!(
        salesforce.api_base_url.as_deref(),
        Some("https://na1.my.salesforce.com")
    );

    // Zoho: the API domain; a lifetime as a number or (some providers) a string.
    let zoho = token_set(
        answer(
            json!({"access_token": "a2", "refresh_token": "r2", "expires_in": 3600,
                      "api_domain": "https://www.zohoapis.eu"}),
        ),
        None,
    );
    assert_eq!(zoho.expires_at, Some(zoho.issued_at + 3_600_000));
    assert_eq!(
        zoho.api_base_url.as_deref(),
        Some("https://www.zohoapis.eu")
    );
    let text = token_set(
        answer(json!({"access_token": "a3", "expires_in": "1800"})),
        None,
    );
    assert_eq!(text.expires_at, Some(text.issued_at + 1_800_000));

    // A refresh that sends no new refresh token (Zoho, Salesforce) keeps the old one, with
    // the scope and base URL it came with.
    let refreshed = token_set(
        answer(json!({"access_token": "a4", "expires_in": 3600})),
        Some(&zoho),
    );
    assert_eq!(refreshed.access_token, "a4");
    assert_eq!(refreshed.refresh_token.as_deref(), Some("r2"));
    assert_eq!(
        refreshed.api_base_url.as_deref(),
        Some("https://www.zohoapis.eu")
    );
    // A rotating provider's new one replaces it.
    let rotated = token_set(
        answer(json!({"access_token": "a5", "refresh_token": "r5"})),
        Some(&zoho),
    );
    assert_eq!(rotated.refresh_token.as_deref(), Some("r5"));
}

#[test]
fn a_token_is_refreshed_a_minute_early_or_a_quarter_of_its_life() {
    let issued = SystemTime::now();
    let at = |lifetime: u64| TokenSet {
        access_token: "a".into(),
        refresh_token: None,
        issued_at: system_millis(issued),
        expires_at: Some(system_millis(issued + Duration::from_secs(lifetime))),
        scope: None,
        api_base_url: None,
    };
    // An hour: refreshed from a minute before.
    let hour = at(3600);
    assert!(!hour.expiring(issued + Duration::from_secs(3539)));
    assert!(hour.expiring(issued + Duration::from_secs(3541)));
    // Two minutes: a quarter of it, 30 s before.
    let short = at(120);
    assert!(!short.expiring(issued + Duration::from_secs(89)));
    assert!(short.expiring(issued + Duration::from_secs(91)));
}

#[test]
fn tokens_never_show_in_debug_output_or_messages() {
    let tokens = TokenSet {
        access_token: "access-secret-1".into(),
        refresh_token: Some("refresh-secret-1".into()),
        issued_at: 0,
        expires_at: Some(1),
        scope: Some("api".into()),
        api_base_url: None,
    };
    let debug = format!("{tokens:?}");
    assert!(!debug.contains("secret-1"), "{debug}");

    let secret = "s3cr/t+value";
    let message = format!(
        "error sending request for url (https://x.example/?token={}) and {secret}",
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()
    );
    let clean = scrub(&message, secret);
    assert!(!clean.contains("s3cr"), "{clean}");
    assert_eq!(clean.matches("[redacted]").count(), 2, "{clean}");
}

#[test]
fn refusals_are_told_from_outages() {
    for refusal in [
        "invalid_grant",
        "invalid_token",
        "unauthorized_client",
        "token_expired",
        "grant_revoked",
    ] {
        assert!(is_refusal(refusal), "{refusal}");
    }
    for other in [
        "invalid_client",
        "invalid_request",
        "server_error",
        "temporarily_unavailable",
    ] {
        assert!(!is_refusal(other), "{other}");
    }
}

#[test]
fn a_providers_error_code_is_kept_short_and_plain_for_a_redirect() {
    assert_eq!(short_code("access_denied"), "access_denied");
    assert_eq!(
        short_code("<script>alert(1)</script>"),
        "scriptalert1script"
    );
    assert_eq!(short_code(&"x".repeat(500)).len(), 64);
    assert!(short(&"é".repeat(400)).ends_with('…'));
}
