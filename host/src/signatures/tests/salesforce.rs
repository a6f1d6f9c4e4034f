//! Salesforce outbound messages. Salesforce publishes the message's WSDL rather than a signed
//! sample (there is no signature); the envelope below follows that WSDL
//! (`notifications` with `OrganizationId`, `ActionId`, `SessionId`, `EnterpriseUrl`,
//! `PartnerUrl` and `Notification` elements in `http://soap.sforce.com/2005/09/outbound`).

use super::*;

const ORG_18: &str = "00D5e000000KQ2eEAG";
const ORG_15: &str = "00D5e000000KQ2e";

fn envelope(notifications: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
{notifications}
 </soapenv:Body>
</soapenv:Envelope>"#
    )
}

fn notifications(organization_id: &str) -> String {
    format!(
        r#"  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{organization_id}</OrganizationId>
   <ActionId>04k5e000000CaRkAAK</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/59.0/00D5e000000KQ2e</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/59.0/00D5e000000KQ2e</PartnerUrl>
   <Notification>
    <Id>04l5e00000Gx7QzAAJ</Id>
    <sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>0065e00000ZkM3hAAF</sf:Id>
     <sf:Amount>1250.50</sf:Amount>
     <sf:StageName>Closed Won</sf:StageName>
     <sf:OrganizationId>00DOTHERORG00000AA</sf:OrganizationId>
    </sObject>
   </Notification>
  </notifications>"#
    )
}

fn message(organization_id: &str) -> String {
    envelope(&notifications(organization_id))
}

fn config(organization_id: &str) -> SchemeConfig {
    SchemeConfig::SalesforceOutbound {
        organization_id: organization_id.to_owned(),
    }
}

fn check(configured: &str, body: &str) -> Result<Verified> {
    let request_headers = headers(&[
        ("Content-Type", "text/xml; charset=utf-8"),
        ("SOAPAction", "\"\""),
    ]);
    verify(
        &config(configured),
        &[],
        &post(&request_headers, body.as_bytes()),
        at(0),
    )
}

#[test]
fn a_message_from_the_connections_org_verifies_without_a_secret() {
    assert_eq!(
        check(ORG_18, &message(ORG_18)).unwrap(),
        Verified {
            delivery_id: None,
            timestamp: None,
            secret_index: None,
        }
    );
    // Secrets, if the connection has some, play no part.
    let body = message(ORG_18);
    verify(
        &config(ORG_18),
        &secrets(&["x", "y", "z"]),
        &post(&[], body.as_bytes()),
        at(0),
    )
    .unwrap();
}

#[test]
fn fifteen_and_eighteen_character_ids_compare_on_their_fifteen_characters() {
    check(ORG_15, &message(ORG_18)).unwrap();
    check(ORG_18, &message(ORG_15)).unwrap();
    check(ORG_15, &message(ORG_15)).unwrap();
}

#[test]
fn another_org_is_refused() {
    for other in [
        "00D5e000000KQ2fEAG",
        "00d5e000000kq2eEAG",
        "00D5e000000KQ2E",
    ] {
        let error = check(ORG_18, &message(other)).unwrap_err();
        assert_eq!(error, SignatureError::OrganizationMismatch, "{other}");
        assert_reveals_nothing(&error, &[ORG_18, other]);
    }
}

#[test]
fn namespace_prefixes_are_resolved_not_matched_as_text() {
    // Same namespaces, other prefixes: still the message.
    let prefixed = format!(
        r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><out:notifications xmlns:out="http://soap.sforce.com/2005/09/outbound"><out:OrganizationId>{ORG_18}</out:OrganizationId></out:notifications></e:Body></e:Envelope>"#
    );
    check(ORG_18, &prefixed).unwrap();
    // The right names in the wrong namespaces are not.
    let unqualified = format!(
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notifications><OrganizationId>{ORG_18}</OrganizationId></notifications></soapenv:Body></soapenv:Envelope>"#
    );
    assert_eq!(check(ORG_18, &unqualified).unwrap_err().code(), "malformed");
    let soap12 = message(ORG_18).replace(
        "http://schemas.xmlsoap.org/soap/envelope/",
        "http://www.w3.org/2003/05/soap-envelope",
    );
    assert_eq!(check(ORG_18, &soap12).unwrap_err().code(), "malformed");
    let unbound = format!(
        "<soapenv:Envelope><soapenv:Body>{}</soapenv:Body></soapenv:Envelope>",
        notifications(ORG_18)
    );
    assert_eq!(check(ORG_18, &unbound).unwrap_err().code(), "malformed");
}

#[test]
fn an_organization_id_elsewhere_does_not_count() {
    // Only Envelope/Body/notifications/OrganizationId names the sender; the sObject's field of
    // the same name (in the fixture) is ignored, and so is one outside notifications.
    let outside = envelope(&format!(
        r#"<OrganizationId xmlns="http://soap.sforce.com/2005/09/outbound">{ORG_18}</OrganizationId>"#
    ));
    assert_eq!(
        check(ORG_18, &outside),
        Err(SignatureError::Malformed(
            "the message has no OrganizationId"
        ))
    );
}

#[test]
fn malformed_envelopes_are_refused() {
    let good = message(ORG_18);
    let cases = [
        String::new(),
        "not xml at all".to_owned(),
        "{\"OrganizationId\":\"00D5e000000KQ2eEAG\"}".to_owned(),
        good[..good.len() / 2].to_owned(),
        good.replace("</soapenv:Body>", ""),
        good.replace("</OrganizationId>", "</organizationId>"),
        format!("{good}<extra/>"),
        format!("{good}{good}"),
        message(""),
        message("   "),
        message("00D5e000000KQ2"),
        message("00D5e000000KQ2eEAGX"),
        message("00D5e000000KQ2e-AG"),
        message("00D5e000000KQ2e&amp;AG"),
        message("<![CDATA[00D5e000000KQ2eEAG]]>"),
        message(&format!("<b>{ORG_18}</b>")),
        message(&"0".repeat(100)),
        envelope(&format!(
            "{}{}",
            notifications(ORG_18),
            notifications(ORG_18)
        )),
        good.replace(
            &format!("<OrganizationId>{ORG_18}</OrganizationId>"),
            &format!(
                "<OrganizationId>{ORG_18}</OrganizationId><OrganizationId>{ORG_18}</OrganizationId>"
            ),
        ),
        good.replace(
            &format!("<OrganizationId>{ORG_18}</OrganizationId>"),
            "<OrganizationId/>",
        ),
        good.replace(&format!("<OrganizationId>{ORG_18}</OrganizationId>"), ""),
        good.replace("<soapenv:Envelope", "<soapenv:Letter")
            .replace("</soapenv:Envelope>", "</soapenv:Letter>"),
        format!(
            "<!DOCTYPE lol [<!ENTITY lol \"{ORG_18}\">]>{}",
            message("&lol;")
        ),
        envelope(&format!(
            "{}{}{}",
            "<a>".repeat(40),
            notifications(ORG_18),
            "</a>".repeat(40)
        )),
        format!("\u{0}{good}"),
    ];
    for body in cases {
        let error = check(ORG_18, &body).unwrap_err();
        assert_eq!(
            error.code(),
            "malformed",
            "{}",
            &body[..body.len().min(200)]
        );
        assert_reveals_nothing(&error, &[ORG_18]);
    }
    let invalid_utf8 = [b"<soapenv:Envelope>".as_slice(), b"\xff\xfe"].concat();
    let request = post(&[], &invalid_utf8);
    assert_eq!(
        verify(&config(ORG_18), &[], &request, at(0))
            .unwrap_err()
            .code(),
        "malformed"
    );
}

#[test]
fn comments_and_whitespace_around_the_id_are_tolerated() {
    let commented = message(ORG_18).replace("<soapenv:Body>", "<soapenv:Body><!-- outbound -->");
    check(ORG_18, &commented).unwrap();
    check(ORG_18, &message(&format!("\n    {ORG_18}\n   "))).unwrap();
}
