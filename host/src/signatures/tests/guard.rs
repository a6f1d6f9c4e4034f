//! The webhook guard: source allow lists (with and without trusted proxies), capability tokens
//! and methods.

use std::net::IpAddr;

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn ranges(list: &[&str]) -> Vec<IpRange> {
    list.iter().map(|r| r.parse().unwrap()).collect()
}

fn guard(allowed: &[&str]) -> WebhookGuard {
    WebhookGuard {
        allowed_ips: ranges(allowed),
        ..WebhookGuard::default()
    }
}

fn proxies(list: &[&str], header: ForwardedHeader) -> TrustedProxies {
    TrustedProxies {
        proxies: ranges(list),
        header,
    }
}

const SALESFORCE: &str = "13.108.0.0/14";

#[test]
fn ranges_parse_cidr_and_single_addresses_of_both_families() {
    let list = ranges(&[
        SALESFORCE,
        "2001:db8::/32",
        "198.51.100.7",
        "2001:db8:ffff::1",
    ]);
    assert!(list[0].contains(ip("13.110.54.1")));
    assert!(!list[0].contains(ip("13.112.0.1")));
    assert!(list[1].contains(ip("2001:db8:1234::9")));
    assert!(!list[1].contains(ip("2001:db9::1")));
    assert!(list[2].contains(ip("198.51.100.7")));
    assert!(!list[2].contains(ip("198.51.100.8")));
    assert!(list[3].contains(ip("2001:db8:ffff::1")));
    // An IPv4 peer seen through a dual-stack socket is still IPv4.
    assert!(list[0].contains(ip("::ffff:13.108.1.1")));
    // Host bits are cleared; the range prints as it is kept.
    assert_eq!(
        "10.1.2.3/8".parse::<IpRange>().unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert_eq!(
        serde_json::to_string(&list[2]).unwrap(),
        r#""198.51.100.7/32""#
    );
}

#[test]
fn ranges_that_are_not_addresses_or_allow_everything_are_refused_clearly() {
    for bad in [
        "",
        "salesforce",
        "13.108.0.0/33",
        "300.1.1.1",
        "2001:db8::/129",
        "::/0",
    ] {
        let error = bad.parse::<IpRange>().unwrap_err();
        assert!(error.0.contains(&format!("`{bad}`")), "{bad}: {error}");
    }
    assert!(
        "0.0.0.0/0"
            .parse::<IpRange>()
            .unwrap_err()
            .0
            .contains("every address")
    );
    let refused =
        serde_json::from_str::<WebhookGuard>(r#"{"allowed_ips":["10.0.0.0/8","x"]}"#).unwrap_err();
    assert!(
        refused.to_string().contains("`x` is not an IP address"),
        "{refused}"
    );
    assert!(serde_json::from_str::<WebhookGuard>(r#"{"allowed":[]}"#).is_err());
}

#[test]
fn without_trusted_proxies_the_peer_is_the_source_and_forwarding_headers_are_ignored() {
    let none = TrustedProxies::default();
    // A caller outside the list writes an allowed address in the header: not believed.
    let spoofed = headers(&[
        ("X-Forwarded-For", "13.108.0.9"),
        ("Forwarded", "for=13.108.0.9"),
    ]);
    let source = none.source(ip("203.0.113.66"), &spoofed).unwrap();
    assert_eq!(source, ip("203.0.113.66"));
    assert_eq!(
        guard(&[SALESFORCE]).check_source(Some(source)),
        Err(GuardError::SourceRefused(ip("203.0.113.66")))
    );
    // The allowed peer itself passes.
    let source = none.source(ip("13.109.4.4"), &[]).unwrap();
    assert_eq!(guard(&[SALESFORCE]).check_source(Some(source)), Ok(()));
}

#[test]
fn an_untrusted_peer_is_the_source_even_with_proxies_configured() {
    let lb = proxies(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
    let spoofed = headers(&[("X-Forwarded-For", "13.108.0.9")]);
    assert_eq!(
        lb.source(ip("203.0.113.66"), &spoofed).unwrap(),
        ip("203.0.113.66")
    );
}

#[test]
fn through_a_trusted_proxy_the_right_most_untrusted_hop_is_the_source() {
    let lb = proxies(&["10.0.0.0/8", "fd00::/8"], ForwardedHeader::XForwardedFor);
    // The client wrote a fake first hop; the balancer appended the address it saw.
    let chain = headers(&[("X-Forwarded-For", "13.108.0.9, 203.0.113.66")]);
    assert_eq!(
        lb.source(ip("10.1.1.1"), &chain).unwrap(),
        ip("203.0.113.66")
    );
    // Two proxies of ours, and the header split over two lines.
    let chain = headers(&[
        ("x-forwarded-for", "198.51.100.1, 13.109.0.1"),
        ("X-Forwarded-For", "10.2.2.2"),
    ]);
    assert_eq!(lb.source(ip("fd00::1"), &chain).unwrap(), ip("13.109.0.1"));
    // With ports and brackets, as some proxies write them.
    for hop in ["13.109.0.1:51234", "[2001:db8::5]:443", "2001:db8::5"] {
        let chain = headers(&[("X-Forwarded-For", hop)]);
        let source = lb.source(ip("10.0.0.1"), &chain).unwrap();
        assert!(
            source == ip("13.109.0.1") || source == ip("2001:db8::5"),
            "{hop}: {source}"
        );
    }
    // No header: the proxy itself.
    assert_eq!(lb.source(ip("10.0.0.1"), &[]).unwrap(), ip("10.0.0.1"));
    // Every hop ours: the furthest one.
    let chain = headers(&[("X-Forwarded-For", "10.9.9.9, 10.8.8.8")]);
    assert_eq!(lb.source(ip("10.0.0.1"), &chain).unwrap(), ip("10.9.9.9"));
    // Garbage left of the right-most untrusted hop does not matter; garbage right of it does.
    let chain = headers(&[("X-Forwarded-For", "unknown, 13.109.0.1")]);
    assert_eq!(lb.source(ip("10.0.0.1"), &chain).unwrap(), ip("13.109.0.1"));
    let chain = headers(&[("X-Forwarded-For", "13.109.0.1, bogus")]);
    assert_eq!(
        lb.source(ip("10.0.0.1"), &chain),
        Err(GuardError::UnreadableForwarding("X-Forwarded-For"))
    );
}

#[test]
fn the_forwarded_header_is_read_only_when_configured() {
    let lb = proxies(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
    let chain = headers(&[
        ("X-Forwarded-For", "13.108.0.9"),
        (
            "Forwarded",
            r#"for=198.51.100.1;proto=https, for="[2001:db8:cafe::17]:4711";by=10.0.0.1"#,
        ),
    ]);
    assert_eq!(
        lb.source(ip("10.0.0.1"), &chain).unwrap(),
        ip("2001:db8:cafe::17")
    );
    let chain = headers(&[("Forwarded", "For=\"13.109.0.2:80\";proto=https")]);
    assert_eq!(lb.source(ip("10.0.0.1"), &chain).unwrap(), ip("13.109.0.2"));
    // An obfuscated or missing `for` where the source should be is refused, not guessed.
    for hidden in ["for=_hidden", "for=unknown", "proto=https"] {
        let chain = headers(&[("Forwarded", hidden)]);
        assert_eq!(
            lb.source(ip("10.0.0.1"), &chain),
            Err(GuardError::UnreadableForwarding("Forwarded")),
            "{hidden}"
        );
    }
    // And X-Forwarded-For is not looked at: only the header the proxy writes.
    let chain = headers(&[("X-Forwarded-For", "13.108.0.9")]);
    assert_eq!(lb.source(ip("10.0.0.1"), &chain).unwrap(), ip("10.0.0.1"));
}

#[test]
fn an_unknown_source_is_refused_by_an_allow_list_and_passes_an_empty_one() {
    assert_eq!(
        guard(&[SALESFORCE]).check_source(None),
        Err(GuardError::SourceUnknown)
    );
    assert_eq!(guard(&[]).check_source(None), Ok(()));
}

const TOKEN: &str = "k7Qw2mZp9Xv4Lr8Tn3Bc6Hd1Fs5Jg0Ya-_.~";
const NEW_TOKEN: &str = "f3b1c0de9a8e7d6c5b4a39281706f5e4d3c2b1a0";

#[test]
fn capability_tokens_match_the_current_or_the_previous_value() {
    let tokens = secrets(&[NEW_TOKEN, TOKEN]);
    assert_eq!(verify_capability(&Secret::new(NEW_TOKEN), &tokens), Ok(0));
    assert_eq!(verify_capability(&Secret::new(TOKEN), &tokens), Ok(1));
    for wrong in [
        "",
        "k7Qw2mZp9Xv4Lr8Tn3Bc6Hd1Fs5Jg0Ya-_.",
        "K7Qw2mZp9Xv4Lr8Tn3Bc6Hd1Fs5Jg0Ya-_.~",
        "k7Qw2mZp9Xv4Lr8Tn3Bc6Hd1Fs5Jg0Ya-_.~x",
    ] {
        assert_eq!(
            verify_capability(&Secret::new(wrong), &tokens),
            Err(GuardError::CapabilityMismatch),
            "{wrong}"
        );
    }
    // After the grace period only the new one is handed out.
    assert_eq!(
        verify_capability(&Secret::new(TOKEN), &secrets(&[NEW_TOKEN])),
        Err(GuardError::CapabilityMismatch)
    );
}

#[test]
fn a_token_too_short_or_not_url_safe_is_never_usable() {
    assert!(usable_token(TOKEN.as_bytes()));
    assert!(!usable_token(b"short-token"));
    assert!(!usable_token("a".repeat(257).as_bytes()));
    assert!(!usable_token(b"k7Qw2mZp9Xv4Lr8Tn3Bc6Hd1Fs5Jg0Ya/slash"));
    assert!(!usable_token(b"k7Qw2mZp9Xv4Lr8Tn3Bc6Hd1Fs5Jg0Ya%20sp"));
    // A secret holding such a value verifies nothing, even itself.
    assert_eq!(
        verify_capability(&Secret::new("short-token"), &secrets(&["short-token"])),
        Err(GuardError::NoToken)
    );
    // A usable previous value still works while an unusable new one is fixed.
    assert_eq!(
        verify_capability(&Secret::new(TOKEN), &secrets(&["short", TOKEN])),
        Ok(1)
    );
}

#[test]
fn refusals_never_hold_the_token_or_the_allow_list() {
    let errors = [
        GuardError::SourceUnknown,
        GuardError::SourceRefused(ip("203.0.113.66")),
        GuardError::UnreadableForwarding("X-Forwarded-For"),
        GuardError::CapabilityMissing,
        GuardError::CapabilityMismatch,
        GuardError::NoToken,
    ];
    for error in errors {
        let text = error.to_string();
        assert!(!text.contains(TOKEN) && !text.contains("13.108"), "{text}");
        assert!(!error.code().is_empty());
    }
}

#[test]
fn each_scheme_takes_the_methods_it_can_verify() {
    let hubspot = |version| SchemeConfig::HubSpot {
        version,
        tolerance_secs: None,
    };
    assert_eq!(hubspot(HubSpotVersion::V3).methods(), ["GET", "POST"]);
    assert_eq!(hubspot(HubSpotVersion::V2).methods(), ["GET", "POST"]);
    assert_eq!(hubspot(HubSpotVersion::V1).methods(), ["POST"]);
    assert_eq!(
        SchemeConfig::Unsigned {}.methods(),
        ["POST", "PUT", "PATCH"]
    );
    assert_eq!(SchemeConfig::GitHub {}.methods(), ["POST"]);

    let zenoti = WebhookGuard {
        capability_secret: Some("zenoti-token".into()),
        methods: Some(vec!["PUT".into()]),
        ..WebhookGuard::default()
    };
    assert_eq!(zenoti.validate(&SchemeConfig::Unsigned {}), Ok(()));
    assert_eq!(zenoti.methods(&SchemeConfig::Unsigned {}), ["PUT"]);
    assert_eq!(
        WebhookGuard::default().methods(&hubspot(HubSpotVersion::V3)),
        ["GET", "POST"]
    );
    // A method the scheme cannot verify, an empty list and a repeated one are refused.
    let with = |methods: &[&str]| WebhookGuard {
        methods: Some(methods.iter().map(|m| (*m).to_owned()).collect()),
        ..WebhookGuard::default()
    };
    let error = with(&["PUT"])
        .validate(&hubspot(HubSpotVersion::V3))
        .unwrap_err();
    assert!(
        error.0.contains("`PUT`") && error.0.contains("GET, POST"),
        "{error}"
    );
    assert!(
        with(&["get"])
            .validate(&hubspot(HubSpotVersion::V3))
            .is_err()
    );
    assert!(with(&[]).validate(&SchemeConfig::GitHub {}).is_err());
    assert!(
        with(&["POST", "POST"])
            .validate(&SchemeConfig::GitHub {})
            .is_err()
    );
}

#[test]
fn an_unsigned_connection_needs_a_capability_url_or_an_allow_list() {
    let error = WebhookGuard::default()
        .validate(&SchemeConfig::Unsigned {})
        .unwrap_err();
    assert!(
        error.0.contains("capability_secret or allowed_ips"),
        "{error}"
    );
    assert_eq!(
        guard(&["198.51.100.0/24"]).validate(&SchemeConfig::Unsigned {}),
        Ok(())
    );
    // An unsigned request passes the signature check: the guard is what checks it.
    assert!(verify(&SchemeConfig::Unsigned {}, &[], &post(&[], b"{}"), at(0)).is_ok());
    assert!(!SchemeConfig::Unsigned {}.needs_secret());
    assert_eq!(
        serde_json::from_str::<SchemeConfig>(r#"{"scheme":"unsigned"}"#).unwrap(),
        SchemeConfig::Unsigned {}
    );
}

#[test]
fn the_proxy_settings_parse_from_the_command_line_forms() {
    assert_eq!(
        "X-Forwarded-For".parse::<ForwardedHeader>(),
        Ok(ForwardedHeader::XForwardedFor)
    );
    assert_eq!(
        "forwarded".parse::<ForwardedHeader>(),
        Ok(ForwardedHeader::Forwarded)
    );
    assert!("x-real-ip".parse::<ForwardedHeader>().is_err());
}
