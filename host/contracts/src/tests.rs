//! End-to-end tests of [`check_events`]: one section per rule, plus ordering and reporting.

use super::*;

const TENANT: &str = "tenant-a";

/// A platform-level connection's scope: platform-level events (org null) are allowed.
fn scope() -> Scope {
    Scope {
        tenant_id: TENANT.to_owned(),
        allowed_org_ids: ["org-1", "org-2"].map(String::from).into(),
        platform_level: true,
    }
}

/// The scope of a connection that belongs to `org-1` (and may also emit for `org-2`).
fn org_scope() -> Scope {
    Scope {
        platform_level: false,
        ..scope()
    }
}

fn declaration() -> Declaration {
    Declaration::new([
        (
            "deal.won".to_owned(),
            vec![
                "/amount".to_owned(),
                "/lines/*/price".to_owned(),
                "/splits/0/pct".to_owned(),
                "/a~1b/c~0d".to_owned(),
                "/rates/*".to_owned(),
                "/deep/*/*/value".to_owned(),
            ],
        ),
        ("deal.lost".to_owned(), vec![]),
        ("contact.created".to_owned(), vec![]),
    ])
    .unwrap()
}

/// A valid `deal.won` event with the given payload.
fn event(payload: &str) -> EmittedEvent {
    EmittedEvent {
        event_type: "deal.won".to_owned(),
        entity_type: "deal".to_owned(),
        entity_id: "006Qy00000AbCdE".to_owned(),
        org_id: None,
        payload: payload.to_owned(),
        dedupe_key: None,
        idempotency_key: None,
    }
}

fn check(events: &[EmittedEvent]) -> Vec<Violation> {
    check_events(events, &declaration(), &scope())
}

/// The violations of a single `deal.won` event with `payload`, as (pointer, rule, value).
fn payload_violations(payload: &str) -> Vec<(String, Rule, Option<String>)> {
    check(&[event(payload)])
        .into_iter()
        .map(|v| {
            assert_eq!(v.event_index, 0);
            (v.pointer, v.rule, v.value)
        })
        .collect()
}

fn found(pointer: &str, rule: Rule, value: &str) -> (String, Rule, Option<String>) {
    (pointer.to_owned(), rule, Some(value.to_owned()))
}

fn rules(violations: &[Violation]) -> Vec<Rule> {
    violations.iter().map(|v| v.rule).collect()
}

/// `{"a":{"a":...{"a":1}...}}` with `levels` objects in all.
fn nested_objects(levels: usize) -> String {
    let mut payload = "1".to_owned();
    for _ in 0..levels {
        payload = format!(r#"{{"a":{payload}}}"#);
    }
    payload
}

// ---------------------------------------------------------------------------------------------
// Accepted events

#[test]
fn a_valid_invocation_is_accepted() {
    let payload = r#"{
        "amount": "12.50",
        "currency": "EUR",
        "count": 3,
        "big_but_safe": 9007199254740991,
        "small_but_safe": -9007199254740991,
        "won": true,
        "note": null,
        "tenant_id": "tenant-a",
        "owner": {"orgId": "org-2", "tenantId": "tenant-a", "org_id": null},
        "lines": [{"price": "0.50"}, {"price": "-0"}, {"price": null}, {"sku": "x"}],
        "splits": [{"pct": "100"}],
        "rates": {"eur": "1.0842", "usd": "1"},
        "a/b": {"c~d": "79228162514264337593543950335"},
        "deep": [[{"value": "0.0000000000000000000000000001"}]],
        "escaped": "caf\u00e9 \ud83d\ude00 \n"
    }"#;
    let events = [
        EmittedEvent {
            org_id: Some("org-1".to_owned()),
            dedupe_key: Some("evt-1".to_owned()),
            ..event(payload)
        },
        EmittedEvent {
            event_type: "contact.created".to_owned(),
            entity_type: "contact".to_owned(),
            dedupe_key: Some("evt-2".to_owned()),
            ..event("{}")
        },
        // Events without dedupe keys never collide.
        event(" {} "),
        event("{}"),
    ];
    assert_eq!(check(&events), []);
}

#[test]
fn no_events_is_accepted() {
    assert_eq!(check(&[]), []);
}

#[test]
fn decimals_keep_their_scale_and_the_event_is_untouched() {
    let original = event(r#"{"amount":"12.50","lines":[{"price":"1.000"}]}"#);
    let events = [original.clone()];
    assert_eq!(check(&events), []);
    // The checker only reads: what is stored is byte for byte what the adapter emitted.
    assert_eq!(events[0], original);
    assert!(events[0].payload.contains(r#""12.50""#));
}

// ---------------------------------------------------------------------------------------------
// Envelope

#[test]
fn event_type_format() {
    for bad in [
        "deal",
        "Deal.won",
        "deal.won.x",
        "deal-x.won",
        "",
        "deal.",
        "déal.won",
    ] {
        let violations = check(&[EmittedEvent {
            event_type: bad.to_owned(),
            ..event("{}")
        }]);
        // Only the format is reported: an invalid type can be neither declared nor compared.
        assert_eq!(rules(&violations), [Rule::EventTypeFormat], "{bad:?}");
        assert_eq!(violations[0].pointer, "/event_type");
        assert_eq!(
            violations[0].value.as_deref(),
            Some(format!("{bad:?}").as_str())
        );
    }
    let long = format!("deal.{}", "w".repeat(124));
    assert_eq!(
        rules(&check(&[EmittedEvent {
            event_type: long,
            ..event("{}")
        }])),
        [Rule::EventTypeFormat]
    );
}

#[test]
fn entity_type_must_be_the_part_before_the_dot() {
    for bad in ["contact", "", "Deal", "deal.won", "deal "] {
        let violations = check(&[EmittedEvent {
            entity_type: bad.to_owned(),
            ..event("{}")
        }]);
        assert_eq!(rules(&violations), [Rule::EntityTypeMismatch], "{bad:?}");
        assert_eq!(violations[0].pointer, "/entity_type");
    }
}

#[test]
fn undeclared_event_types_are_refused_and_their_payload_still_checked() {
    let violations = check(&[EmittedEvent {
        event_type: "deal.reopened".to_owned(),
        // Undeclared: `amount` is no decimal field here, but a float is still a float.
        ..event(r#"{"amount": 1.5}"#)
    }]);
    assert_eq!(
        violations
            .iter()
            .map(|v| (v.pointer.as_str(), v.rule))
            .collect::<Vec<_>>(),
        [
            ("/event_type", Rule::UndeclaredEventType),
            ("/payload/amount", Rule::FractionalNumber),
        ]
    );
    assert_eq!(violations[0].value.as_deref(), Some(r#""deal.reopened""#));
}

#[test]
fn entity_id_invalid() {
    let ok = ["x", &"x".repeat(256), "ünï 006 / ~"];
    for id in ok {
        let e = EmittedEvent {
            entity_id: id.to_owned(),
            ..event("{}")
        };
        assert_eq!(check(&[e]), [], "{id:?}");
    }
    for bad in ["", &"x".repeat(257), "a\nb", "a\u{0}", "\u{9b}x"] {
        let violations = check(&[EmittedEvent {
            entity_id: bad.to_owned(),
            ..event("{}")
        }]);
        assert_eq!(rules(&violations), [Rule::EntityIdInvalid], "{bad:?}");
        assert_eq!(violations[0].pointer, "/entity_id");
    }
    // The value is quoted as JSON, so a control character cannot forge a log line.
    let violations = check(&[EmittedEvent {
        entity_id: "a\nb".to_owned(),
        ..event("{}")
    }]);
    assert_eq!(violations[0].value.as_deref(), Some(r#""a\nb""#));
}

#[test]
fn event_org_must_be_absent_or_allowed() {
    for ok in [None, Some("org-1"), Some("org-2")] {
        let e = EmittedEvent {
            org_id: ok.map(String::from),
            ..event("{}")
        };
        assert_eq!(check(&[e]), [], "{ok:?}");
    }
    for bad in ["org-3", "", "ORG-1", "org-1 "] {
        let violations = check(&[EmittedEvent {
            org_id: Some(bad.to_owned()),
            ..event("{}")
        }]);
        assert_eq!(rules(&violations), [Rule::OrgNotAllowed], "{bad:?}");
        assert_eq!(violations[0].pointer, "/org_id");
        assert_eq!(
            violations[0].value.as_deref(),
            Some(format!("{bad:?}").as_str())
        );
    }
}

#[test]
fn an_empty_scope_allows_only_platform_level_events() {
    let scope = Scope {
        tenant_id: TENANT.to_owned(),
        allowed_org_ids: BTreeSet::new(),
        platform_level: true,
    };
    assert_eq!(check_events(&[event("{}")], &declaration(), &scope), []);
    let e = EmittedEvent {
        org_id: Some("org-1".to_owned()),
        ..event("{}")
    };
    assert_eq!(
        rules(&check_events(&[e], &declaration(), &scope)),
        [Rule::OrgNotAllowed]
    );
}

#[test]
fn idempotency_keys_are_identifiers_and_unique_within_an_invocation() {
    let keyed = |key: &str| EmittedEvent {
        idempotency_key: Some(key.to_owned()),
        ..event("{}")
    };
    assert_eq!(
        check(&[keyed("bookmark:company:42"), keyed("hubspot:evt:7")]),
        []
    );
    for bad in ["", " ", "a\nb", "evil\u{202E}", &"k".repeat(257)] {
        assert_eq!(
            rules(&check(&[keyed(bad)])),
            [Rule::IdempotencyKeyInvalid],
            "{bad:?}"
        );
    }
    let violations = check(&[keyed("fact-1"), keyed("fact-2"), keyed("fact-1")]);
    assert_eq!(rules(&violations), [Rule::DuplicateIdempotencyKey]);
    assert_eq!(violations[0].event_index, 2);
    assert_eq!(violations[0].pointer, "/idempotency_key");
    // The same key as a dedupe key and as an idempotency key is no clash: they are two rules.
    let both = EmittedEvent {
        dedupe_key: Some("k".to_owned()),
        ..keyed("k")
    };
    assert_eq!(check(&[both]), []);
}

#[test]
fn dedupe_key_invalid() {
    for ok in ["k", &"k".repeat(256), "hubspot:evt/123~4"] {
        let e = EmittedEvent {
            dedupe_key: Some(ok.to_owned()),
            ..event("{}")
        };
        assert_eq!(check(&[e]), [], "{ok:?}");
    }
    for bad in ["", &"k".repeat(257), "a\rb", "\t"] {
        let violations = check(&[EmittedEvent {
            dedupe_key: Some(bad.to_owned()),
            ..event("{}")
        }]);
        assert_eq!(rules(&violations), [Rule::DedupeKeyInvalid], "{bad:?}");
        assert_eq!(violations[0].pointer, "/dedupe_key");
    }
}

#[test]
fn duplicate_dedupe_keys_in_one_invocation_are_refused() {
    let keyed = |key: &str| EmittedEvent {
        dedupe_key: Some(key.to_owned()),
        ..event("{}")
    };
    let violations = check(&[keyed("a"), keyed("b"), keyed("a"), event("{}"), keyed("a")]);
    assert_eq!(
        violations
            .iter()
            .map(|v| (v.event_index, v.pointer.as_str(), v.rule))
            .collect::<Vec<_>>(),
        [
            (2, "/dedupe_key", Rule::DuplicateDedupeKey),
            (4, "/dedupe_key", Rule::DuplicateDedupeKey),
        ]
    );
    // Both name the first event, where the key was first used.
    assert!(violations.iter().all(|v| v.message.starts_with("event 0 ")));
    assert_eq!(violations[0].value.as_deref(), Some(r#""a""#));
    // Keys differ by case or whitespace: no collision.
    assert_eq!(check(&[keyed("a"), keyed("A"), keyed("a ")]), []);
}

// ---------------------------------------------------------------------------------------------
// Payload shape

#[test]
fn payload_invalid_json() {
    for bad in [
        "",
        "   ",
        "{",
        r#"{"a":1,}"#,
        r#"{"a":1} x"#,
        r#"{"a":1}{}"#,
        r#"{'a':1}"#,
        r#"{"a":NaN}"#,
        r#"{"a":Infinity}"#,
        r#"{"a":01}"#,
        r#"{"a":+1}"#,
        r#"{"a":.5}"#,
        r#"{"a":"\x"}"#,
        "{\"a\":\"line\nbreak\"}",
        r#"{a:1}"#,
    ] {
        let violations = check(&[event(bad)]);
        assert_eq!(rules(&violations), [Rule::PayloadInvalidJson], "{bad:?}");
        assert_eq!(violations[0].pointer, "/payload");
        assert_eq!(violations[0].value, None);
    }
    // serde_json's position is relative to the payload: useful here, kept.
    let violations = check(&[event("{\n\"a\":1,\n}")]);
    assert!(
        violations[0].message.contains("line 3"),
        "{}",
        violations[0].message
    );
}

#[test]
fn lone_surrogates_are_invalid_where_they_are() {
    // The raw parse accepts `\ud800` syntactically; it is not text, and strict consumers
    // (serde_json into a String, for one) refuse it.
    assert_eq!(
        payload_violations(r#"{"ok":"\ud83d\ude00","note":["x","\ud800"]}"#),
        [("/payload/note/1".to_owned(), Rule::PayloadInvalidJson, None)]
    );
    assert_eq!(
        payload_violations(r#"{"o":{"\udc00":1}}"#),
        [("/payload/o".to_owned(), Rule::PayloadInvalidJson, None)]
    );
    // In a decimal field or a tenant key, reported once, as invalid JSON.
    assert_eq!(
        payload_violations(r#"{"amount":"1\ud800","tenant_id":"\ud800"}"#),
        [
            ("/payload/amount".to_owned(), Rule::PayloadInvalidJson, None),
            (
                "/payload/tenant_id".to_owned(),
                Rule::PayloadInvalidJson,
                None
            ),
        ]
    );
    let violations = check(&[event(r#"{"n":"\ud800"}"#)]);
    assert!(
        !violations[0].message.contains("line"),
        "{}",
        violations[0].message
    );
}

#[test]
fn payload_not_object() {
    for (bad, kind) in [
        ("[]", "an array"),
        (r#"[{"a":1}]"#, "an array"),
        (r#""{}""#, "a string"),
        ("42", "a number"),
        ("null", "null"),
        ("true", "a boolean"),
    ] {
        let violations = check(&[event(bad)]);
        assert_eq!(rules(&violations), [Rule::PayloadNotObject], "{bad:?}");
        assert_eq!(violations[0].pointer, "/payload");
        assert_eq!(violations[0].value.as_deref(), Some(bad));
        assert!(
            violations[0].message.ends_with(kind),
            "{}",
            violations[0].message
        );
    }
}

#[test]
fn duplicate_keys_are_refused_at_any_depth() {
    assert_eq!(
        payload_violations(r#"{"a":1,"b":2,"a":3}"#),
        [found("/payload/a", Rule::DuplicateKey, r#""a""#)]
    );
    assert_eq!(
        payload_violations(r#"{"x":[{"k":1},{"k":1,"k":1,"k":2}]}"#),
        [
            found("/payload/x/1/k", Rule::DuplicateKey, r#""k""#),
            found("/payload/x/1/k", Rule::DuplicateKey, r#""k""#),
        ]
    );
    // Keys are compared decoded: `\u0061` is `a`.
    assert_eq!(
        payload_violations(r#"{"a":1,"\u0061":2}"#),
        [found("/payload/a", Rule::DuplicateKey, r#""a""#)]
    );
    // Distinct keys that look alike are fine.
    assert_eq!(payload_violations(r#"{"a":1,"A":1,"a ":1,"":1}"#), []);
}

#[test]
fn duplicate_keys_are_found_in_large_objects_too() {
    // Past the linear-scan threshold the hashed path is used: same result.
    let members: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
    let unique = format!("{{{}}}", members.join(","));
    assert_eq!(payload_violations(&unique), []);
    let duplicated = format!(r#"{{{},"k7":0}}"#, members.join(","));
    assert_eq!(
        payload_violations(&duplicated),
        [found("/payload/k7", Rule::DuplicateKey, r#""k7""#)]
    );
}

#[test]
fn depth_is_bounded() {
    assert_eq!(payload_violations(&nested_objects(MAX_DEPTH)), []);
    let violations = payload_violations(&nested_objects(MAX_DEPTH + 1));
    assert_eq!(violations.len(), 1);
    let (pointer, rule, value) = &violations[0];
    assert_eq!(*rule, Rule::TooDeep);
    // The payload is level 1, so the first container too deep is `a` repeated MAX_DEPTH times.
    assert_eq!(*pointer, format!("/payload{}", "/a".repeat(MAX_DEPTH)));
    assert_eq!(value.as_deref(), Some(r#"{"a":1}"#));

    // Arrays count like objects, and a deeply nested scalar is fine.
    let arrays =
        |levels: usize| format!(r#"{{"a":{}1{}}}"#, "[".repeat(levels), "]".repeat(levels));
    assert_eq!(payload_violations(&arrays(MAX_DEPTH - 1)), []);
    let violations = payload_violations(&arrays(MAX_DEPTH));
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].1, Rule::TooDeep);
    assert_eq!(
        violations[0].0,
        format!("/payload/a{}", "/0".repeat(MAX_DEPTH - 1))
    );
}

#[test]
fn very_deep_payloads_neither_overflow_nor_report_more_than_once() {
    // Far beyond serde_json's own recursion limit: the raw parse is iterative and the walk
    // stops at MAX_DEPTH, so this is one violation, not a stack overflow.
    let levels = 10_000;
    let payload = format!(r#"{{"a":{}{}}}"#, "[".repeat(levels), "]".repeat(levels));
    let violations = payload_violations(&payload);
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].1, Rule::TooDeep);
    // The quoted value is cut and says so.
    assert!(violations[0].2.as_ref().unwrap().contains("…[truncated, "));
}

// ---------------------------------------------------------------------------------------------
// Numbers

#[test]
fn fractional_numbers_are_refused_with_their_exact_text() {
    for text in [
        "12.5", "1.0", "1.10", "0.0", "-0.0", "1e3", "1E3", "1e-7", "2.5E+10", "0e0",
    ] {
        assert_eq!(
            payload_violations(&format!(r#"{{"x":{text}}}"#)),
            [found("/payload/x", Rule::FractionalNumber, text)],
            "{text}"
        );
    }
    // Exact source text, not what a double would print.
    let text = "12345678901234567890.123";
    assert_eq!(
        payload_violations(&format!(r#"{{"x":{text}}}"#)),
        [found("/payload/x", Rule::FractionalNumber, text)]
    );
}

#[test]
fn integers_beyond_2_pow_53_are_refused() {
    for ok in [
        "0",
        "-0",
        "1",
        "-1",
        "9007199254740991",
        "-9007199254740991",
    ] {
        assert_eq!(payload_violations(&format!(r#"{{"x":{ok}}}"#)), [], "{ok}");
    }
    for bad in [
        "9007199254740992",
        "-9007199254740992",
        "9007199254740993",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
    ] {
        assert_eq!(
            payload_violations(&format!(r#"{{"x":{bad}}}"#)),
            [found("/payload/x", Rule::UnsafeInteger, bad)],
            "{bad}"
        );
    }
}

#[test]
fn numbers_are_checked_in_nested_arrays_and_objects() {
    assert_eq!(
        payload_violations(r#"{"a":[[1,2.5],[[3,{"b":[4e1]}]]],"c":{"d":{"e":9007199254740992}}}"#),
        [
            found("/payload/a/0/1", Rule::FractionalNumber, "2.5"),
            found("/payload/a/1/0/1/b/0", Rule::FractionalNumber, "4e1"),
            found("/payload/c/d/e", Rule::UnsafeInteger, "9007199254740992"),
        ]
    );
}

#[test]
fn numbers_inside_strings_are_just_strings() {
    assert_eq!(
        payload_violations(r#"{"note":"12.5","big":"9007199254740993"}"#),
        []
    );
}

// ---------------------------------------------------------------------------------------------
// Declared decimal fields

#[test]
fn canonical_decimal_strings_are_accepted() {
    for ok in [
        "0",
        "-0",
        "0.50",
        "12.50",
        "-12.5",
        "100",
        "0.000",
        "-0.0",
        "79228162514264337593543950335",
        "0.0000000000000000000000000001",
    ] {
        assert_eq!(
            payload_violations(&format!(r#"{{"amount":"{ok}"}}"#)),
            [],
            "{ok}"
        );
    }
    // Null and absent are fine: the field is optional unless the consumer says otherwise.
    assert_eq!(payload_violations(r#"{"amount":null}"#), []);
    assert_eq!(payload_violations(r#"{}"#), []);
    // Escapes are decoded before judging: "\u0031.5" is "1.5".
    assert_eq!(payload_violations(r#"{"amount":"\u0031.5"}"#), []);
}

#[test]
fn decimal_not_string() {
    assert_eq!(
        payload_violations(r#"{"amount":12}"#),
        [found("/payload/amount", Rule::DecimalNotString, "12")]
    );
    // A float is both: the decimal rule first, then the number rule, always in that order.
    assert_eq!(
        payload_violations(r#"{"amount":12.5}"#),
        [
            found("/payload/amount", Rule::DecimalNotString, "12.5"),
            found("/payload/amount", Rule::FractionalNumber, "12.5"),
        ]
    );
    assert_eq!(
        payload_violations(r#"{"amount":true}"#),
        [found("/payload/amount", Rule::DecimalNotString, "true")]
    );
    // A container there is wrong, and its content is still checked.
    assert_eq!(
        payload_violations(r#"{"amount":{"value":"1","x":1.5}}"#),
        [
            found(
                "/payload/amount",
                Rule::DecimalNotString,
                r#"{"value":"1","x":1.5}"#
            ),
            found("/payload/amount/x", Rule::FractionalNumber, "1.5"),
        ]
    );
    assert_eq!(
        payload_violations(r#"{"amount":["1"]}"#),
        [found("/payload/amount", Rule::DecimalNotString, r#"["1"]"#)]
    );
}

#[test]
fn decimal_not_canonical() {
    for bad in [
        "007.5", "00", "-01", "+1", "1e3", "1E-2", " 1", "1 ", "", "NaN", "Infinity", ".5", "5.",
        "1,5", "1_000", "12.5.0", "0x1F",
    ] {
        let quoted = format!("{bad:?}");
        assert_eq!(
            payload_violations(&format!(r#"{{"amount":{quoted}}}"#)),
            [found("/payload/amount", Rule::DecimalNotCanonical, &quoted)],
            "{bad:?}"
        );
    }
}

#[test]
fn decimal_out_of_range() {
    for bad in [
        "79228162514264337593543950336",
        "-79228162514264337593543950336",
        "0.00000000000000000000000000001",
        "1.00000000000000000000000000000",
    ] {
        assert_eq!(
            payload_violations(&format!(r#"{{"amount":"{bad}"}}"#)),
            [found(
                "/payload/amount",
                Rule::DecimalOutOfRange,
                &format!("\"{bad}\"")
            )],
            "{bad}"
        );
    }
}

#[test]
fn wildcard_patterns_match_every_index_and_key() {
    assert_eq!(
        payload_violations(
            r#"{"lines":[{"price":"1.0"},{"price":1.5},{"price":"007"},{"other":2.5}],
                "rates":{"eur":"1.08","usd":1,"chf":"x"}}"#
        ),
        [
            found("/payload/lines/1/price", Rule::DecimalNotString, "1.5"),
            found("/payload/lines/1/price", Rule::FractionalNumber, "1.5"),
            found(
                "/payload/lines/2/price",
                Rule::DecimalNotCanonical,
                r#""007""#
            ),
            found("/payload/lines/3/other", Rule::FractionalNumber, "2.5"),
            found("/payload/rates/usd", Rule::DecimalNotString, "1"),
            found("/payload/rates/chf", Rule::DecimalNotCanonical, r#""x""#),
        ]
    );
    // `*` also walks objects where an array was expected, and over several levels.
    assert_eq!(
        payload_violations(r#"{"lines":{"first":{"price":2}},"deep":[{"k":{"value":3}}]}"#),
        [
            found("/payload/lines/first/price", Rule::DecimalNotString, "2"),
            found("/payload/deep/0/k/value", Rule::DecimalNotString, "3"),
        ]
    );
}

#[test]
fn literal_index_patterns_match_only_that_index() {
    // `/splits/0/pct` is declared; `/splits/1/pct` is not a decimal field.
    assert_eq!(
        payload_violations(r#"{"splits":[{"pct":50},{"pct":50}]}"#),
        [found("/payload/splits/0/pct", Rule::DecimalNotString, "50")]
    );
    // ...and it matches an object key "0" as well (RFC 6901 does not tell them apart).
    assert_eq!(
        payload_violations(r#"{"splits":{"0":{"pct":50},"00":{"pct":50}}}"#),
        [found("/payload/splits/0/pct", Rule::DecimalNotString, "50")]
    );
}

#[test]
fn escaped_pattern_segments_match_and_pointers_are_escaped() {
    // The pattern `/a~1b/c~0d` is the key "a/b", then the key "c~d".
    assert_eq!(
        payload_violations(r#"{"a/b":{"c~d":1.5}}"#),
        [
            found("/payload/a~1b/c~0d", Rule::DecimalNotString, "1.5"),
            found("/payload/a~1b/c~0d", Rule::FractionalNumber, "1.5"),
        ]
    );
    // Not a decimal field when the key differs; the pointer still escapes `~` before `/`.
    assert_eq!(
        payload_violations(r#"{"~1":{"x/y~z":1.5}}"#),
        [found("/payload/~01/x~1y~0z", Rule::FractionalNumber, "1.5")]
    );
}

#[test]
fn decimal_fields_belong_to_their_event_type() {
    // `amount` is a decimal field of deal.won, not of deal.lost: an integer is fine there.
    let e = EmittedEvent {
        event_type: "deal.lost".to_owned(),
        ..event(r#"{"amount":12,"lines":[{"price":1}]}"#)
    };
    assert_eq!(check(&[e]), []);
    assert_eq!(
        rules(&check(&[event(r#"{"amount":12}"#)])),
        [Rule::DecimalNotString]
    );
}

// ---------------------------------------------------------------------------------------------
// Scope inside the payload

#[test]
fn payload_tenant_keys_must_name_the_connection_tenant() {
    assert_eq!(
        payload_violations(
            r#"{"tenant_id":"tenant-b","x":{"tenantId":"tenant-a"},
                "list":[{"tenantId":7},{"tenant_id":null},{"tenant_id":"TENANT-A"}]}"#
        ),
        [
            found("/payload/tenant_id", Rule::TenantMismatch, r#""tenant-b""#),
            found("/payload/list/0/tenantId", Rule::TenantMismatch, "7"),
            found("/payload/list/1/tenant_id", Rule::TenantMismatch, "null"),
            found(
                "/payload/list/2/tenant_id",
                Rule::TenantMismatch,
                r#""TENANT-A""#
            ),
        ]
    );
    // Keys are compared decoded, so an escaped key cannot slip past.
    assert_eq!(
        payload_violations(r#"{"tenant\u005fid":"tenant-b"}"#),
        [found(
            "/payload/tenant_id",
            Rule::TenantMismatch,
            r#""tenant-b""#
        )]
    );
    // Other keys are not scope keys.
    assert_eq!(
        payload_violations(r#"{"tenant":"x","tenant_ids":["x"],"my_tenant_id":"x"}"#),
        []
    );
}

#[test]
fn lookalike_scope_keys_are_scope_keys() {
    // Case, separators, fullwidth forms, invisible characters and lookalike letters of other
    // scripts: none of them lets a foreign tenant or org through.
    let payload = r#"{"TenantId":"t-x","TENANT_ID":"t-x","tenant-id":"t-x",
        "ｔｅｎａｎｔ＿ｉｄ":"t-x","tenant\u200b_id":"t-x","t\u0435nant_id":"t-x",
        "OrgId":"org-9","ORG-ID":"org-9","org\u2060id":"org-9","\u043erg_id":"org-9"}"#;
    let found: Vec<Rule> = payload_violations(payload)
        .into_iter()
        .map(|(_, rule, _)| rule)
        .collect();
    assert_eq!(
        found,
        [
            [Rule::TenantMismatch; 6].as_slice(),
            &[Rule::OrgNotAllowed; 4]
        ]
        .concat(),
        "{payload}"
    );
    // The right values under lookalike keys are fine.
    assert_eq!(
        payload_violations(r#"{"TenantId":"tenant-a","ORG_ID":"org-2","Org-Id":null}"#),
        []
    );
}

#[test]
fn an_org_connection_cannot_emit_platform_level_events() {
    let check = |events: &[EmittedEvent]| check_events(events, &declaration(), &org_scope());
    let platform = event("{}");
    let violations = check(std::slice::from_ref(&platform));
    assert_eq!(rules(&violations), [Rule::OrgNotAllowed]);
    assert_eq!(violations[0].pointer, "/org_id");
    assert_eq!(violations[0].value.as_deref(), Some("null"));
    assert!(
        violations[0].message.contains("belongs to an org"),
        "{}",
        violations[0].message
    );
    let own = EmittedEvent {
        org_id: Some("org-1".to_owned()),
        ..event("{}")
    };
    assert_eq!(check(std::slice::from_ref(&own)), []);
    // Nor smuggle a platform-level org into its payload.
    let nested = EmittedEvent {
        org_id: Some("org-2".to_owned()),
        ..event(r#"{"owner":{"org_id":null},"OrgId":"org-1"}"#)
    };
    let violations = check(&[nested]);
    assert_eq!(rules(&violations), [Rule::OrgNotAllowed]);
    assert_eq!(violations[0].pointer, "/payload/owner/org_id");
}

#[test]
fn a_tenant_key_with_a_float_reports_both() {
    assert_eq!(
        payload_violations(r#"{"tenant_id":1.5}"#),
        [
            found("/payload/tenant_id", Rule::TenantMismatch, "1.5"),
            found("/payload/tenant_id", Rule::FractionalNumber, "1.5"),
        ]
    );
}

#[test]
fn payload_org_keys_must_be_null_or_allowed() {
    assert_eq!(
        payload_violations(
            r#"{"org_id":"org-1","orgId":null,"nested":[{"org_id":"org-9"},{"orgId":"org-2"},
                {"orgId":1},{"org_id":["org-1"]}]}"#
        ),
        [
            found(
                "/payload/nested/0/org_id",
                Rule::OrgNotAllowed,
                r#""org-9""#
            ),
            found("/payload/nested/2/orgId", Rule::OrgNotAllowed, "1"),
            found(
                "/payload/nested/3/org_id",
                Rule::OrgNotAllowed,
                r#"["org-1"]"#
            ),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Reporting

#[test]
fn violations_come_in_event_order_then_field_order() {
    let events = [
        event("{}"),
        EmittedEvent {
            event_type: "deal.reopened".to_owned(),
            entity_type: "contact".to_owned(),
            entity_id: String::new(),
            org_id: Some("org-9".to_owned()),
            payload: r#"{"b":1.5,"a":[2.5]}"#.to_owned(),
            dedupe_key: Some(String::new()),
            idempotency_key: None,
        },
        event("[]"),
    ];
    let violations = check(&events);
    assert_eq!(
        violations
            .iter()
            .map(|v| (v.event_index, v.pointer.as_str(), v.rule))
            .collect::<Vec<_>>(),
        [
            (1, "/event_type", Rule::UndeclaredEventType),
            (1, "/entity_type", Rule::EntityTypeMismatch),
            (1, "/entity_id", Rule::EntityIdInvalid),
            (1, "/org_id", Rule::OrgNotAllowed),
            (1, "/payload/b", Rule::FractionalNumber),
            (1, "/payload/a/0", Rule::FractionalNumber),
            (1, "/dedupe_key", Rule::DedupeKeyInvalid),
            (2, "/payload", Rule::PayloadNotObject),
        ]
    );
    // Deterministic: the same input gives the same report.
    assert_eq!(check(&events), violations);
}

#[test]
fn the_report_is_capped() {
    let many = format!("{{\"x\":[{}]}}", vec!["1.5"; MAX_VIOLATIONS + 50].join(","));
    let violations = check(&[event("{}"), event(&many), event("[]")]);
    assert_eq!(violations.len(), MAX_VIOLATIONS + 1);
    assert!(
        violations[..MAX_VIOLATIONS]
            .iter()
            .all(|v| v.rule == Rule::FractionalNumber && v.event_index == 1)
    );
    let last = violations.last().unwrap();
    assert_eq!(last.rule, Rule::TooManyViolations);
    assert_eq!(last.event_index, 1);
    assert_eq!(last.pointer, "");
    // Exactly at the cap: no closing violation.
    let exact = format!("{{\"x\":[{}]}}", vec!["1.5"; MAX_VIOLATIONS].join(","));
    let violations = check(&[event(&exact)]);
    assert_eq!(violations.len(), MAX_VIOLATIONS);
    assert!(violations.iter().all(|v| v.rule == Rule::FractionalNumber));
}

#[test]
fn long_values_are_cut_and_marked() {
    let long = format!("\"{}\"", "9".repeat(500));
    let violations = payload_violations(&format!(r#"{{"amount":{long}}}"#));
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].1, Rule::DecimalOutOfRange);
    let value = violations[0].2.as_deref().unwrap();
    assert_eq!(
        value,
        format!("\"{}…[truncated, 502 bytes]", "9".repeat(119))
    );

    // Cut on a character boundary, never inside a multi-byte character.
    let entity_id = "é".repeat(300);
    let violations = check(&[EmittedEvent {
        entity_id,
        ..event("{}")
    }]);
    let value = violations[0].value.as_deref().unwrap();
    assert!(value.starts_with(&format!("\"{}", "é".repeat(119))));
    assert!(value.ends_with("…[truncated, 602 bytes]"), "{value}");
}

#[test]
fn rules_serialize_as_their_stable_codes() {
    for rule in Rule::ALL {
        let json = serde_json::to_string(&rule).unwrap();
        assert_eq!(json, format!("\"{}\"", rule.as_str()));
        assert_eq!(rule.to_string(), rule.as_str());
        assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), rule);
    }
    let codes: BTreeSet<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(codes.len(), Rule::ALL.len(), "codes are unique");
    assert_eq!(Rule::FractionalNumber.as_str(), "fractional_number");
    assert_eq!(Rule::DuplicateDedupeKey.as_str(), "duplicate_dedupe_key");
}

#[test]
fn a_violation_serializes_to_a_stable_shape() {
    let violations = check(&[event(r#"{"split_pct":12.5}"#)]);
    assert_eq!(
        serde_json::to_value(&violations).unwrap(),
        serde_json::json!([{
            "event_index": 0,
            "pointer": "/payload/split_pct",
            "rule": "fractional_number",
            "message": violations[0].message,
            "value": "12.5",
        }])
    );
}

#[test]
fn a_huge_key_cannot_bloat_the_report() {
    // A lookalike tenant key padded with a megabyte of zero-width spaces, and a long key
    // holding a float: pointers, messages and values all stay small.
    let padded = format!("tenant{}id", "\u{200b}".repeat(350_000));
    let long = "k".repeat(1_000_000);
    let payload = format!(r#"{{"{padded}":"other","{long}":1.5}}"#);
    let violations = check(&[event(&payload)]);
    assert_eq!(
        rules(&violations),
        [Rule::TenantMismatch, Rule::FractionalNumber]
    );
    for v in &violations {
        assert!(
            v.pointer.len() < 1024,
            "pointer of {} bytes",
            v.pointer.len()
        );
        assert!(
            v.message.len() < 1024,
            "message of {} bytes",
            v.message.len()
        );
        assert!(v.value.as_ref().is_none_or(|value| value.len() < 1024));
    }
}
