//! Salesforce outbound messages
//! (<https://developer.salesforce.com/docs/platform/api/guide/sforce-api-om-outboundmessaging-wsdl.html>):
//! a SOAP 1.1 envelope whose `notifications` element (namespace
//! `http://soap.sforce.com/2005/09/outbound`) names the sending `OrganizationId`. Salesforce
//! signs nothing, so the check is that the org is the connection's; Salesforce's own security
//! advice pairs it with TLS and, where possible, its client certificate or IP ranges.
//!
//! The envelope is read with a namespace-aware pull parser, element by element, without
//! building a tree: a DOCTYPE is refused (no entity games), nesting is bounded, and the org id
//! must appear exactly once at `Envelope/Body/notifications/OrganizationId`.

use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::reader::NsReader;

use super::config::is_salesforce_id;
use super::{RawRequest, Result, SignatureError, Verified};

const SOAP_ENVELOPE_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";
/// Deepest element nesting accepted; real messages nest about six levels.
const MAX_DEPTH: usize = 32;

pub(super) fn verify(organization_id: &str, request: &RawRequest<'_>) -> Result<Verified> {
    let received = organization_id_of(request.body)?;
    // The 18-character form only appends a case checksum to the 15-character one.
    if received.as_bytes()[..15] != organization_id.as_bytes()[..15] {
        return Err(SignatureError::OrganizationMismatch);
    }
    Ok(Verified {
        delivery_id: None,
        timestamp: None,
        secret_index: None,
    })
}

const NOT_XML: SignatureError = SignatureError::Malformed("the body is not well-formed XML");
const NOT_OUTBOUND: SignatureError =
    SignatureError::Malformed("the body is not a Salesforce outbound message");

/// The element path a message must follow, by depth (1 = root), as (namespace, local name).
const PATH: [(&str, &str); 4] = [
    (SOAP_ENVELOPE_NS, "Envelope"),
    (SOAP_ENVELOPE_NS, "Body"),
    (OUTBOUND_NS, "notifications"),
    (OUTBOUND_NS, "OrganizationId"),
];

/// The text of the single `Envelope/Body/notifications/OrganizationId`, checked to be an id.
fn organization_id_of(body: &[u8]) -> Result<String> {
    let mut reader = NsReader::from_reader(body);
    // `depth` elements are open; the outermost `on_path` of them follow PATH.
    let mut depth = 0usize;
    let mut on_path = 0usize;
    let mut root_closed = false;
    let mut found: Option<String> = None;
    let mut text = String::new();
    loop {
        let (namespace, event) = reader.read_resolved_event().map_err(|_| NOT_XML)?;
        match event {
            Event::Start(ref element) | Event::Empty(ref element) => {
                if root_closed {
                    return Err(NOT_XML);
                }
                let is_empty = matches!(event, Event::Empty(_));
                let matches_path = on_path == depth
                    && PATH.get(depth).is_some_and(|&(ns, local)| {
                        matches!(namespace, ResolveResult::Bound(Namespace(bound)) if bound == ns)
                            && element.local_name().as_ref() == local
                    });
                if depth == 0 && !matches_path {
                    return Err(NOT_OUTBOUND);
                }
                if on_path == PATH.len() {
                    // OrganizationId has child elements.
                    return Err(NOT_OUTBOUND);
                }
                if is_empty {
                    if depth == 0 {
                        root_closed = true;
                    }
                    if matches_path && depth + 1 == PATH.len() {
                        // <OrganizationId/>: present but empty.
                        return Err(NOT_OUTBOUND);
                    }
                    continue;
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(SignatureError::Malformed("the XML is nested too deeply"));
                }
                if matches_path {
                    on_path = depth;
                    if depth == PATH.len() {
                        if found.is_some() {
                            return Err(SignatureError::Malformed(
                                "the message names more than one OrganizationId",
                            ));
                        }
                        text.clear();
                    }
                }
            }
            Event::End(_) => {
                if on_path == PATH.len() && depth == PATH.len() {
                    found = Some(text.trim().to_owned());
                }
                if on_path == depth {
                    on_path -= 1;
                }
                depth = depth.checked_sub(1).ok_or(NOT_XML)?;
                if depth == 0 {
                    root_closed = true;
                }
            }
            Event::Text(content) => {
                if depth == 0 && !content.trim_ascii().is_empty() {
                    // Only markup may surround the root element.
                    return Err(NOT_XML);
                }
                if on_path == PATH.len() && depth == PATH.len() {
                    let content = content.xml10_content();
                    if text.len() + content.len() > 64 {
                        return Err(NOT_OUTBOUND);
                    }
                    text.push_str(&content);
                }
            }
            Event::GeneralRef(_) | Event::CData(_) => {
                if on_path == PATH.len() && depth == PATH.len() {
                    return Err(NOT_OUTBOUND);
                }
            }
            Event::DocType(_) => {
                return Err(SignatureError::Malformed("a DOCTYPE is not accepted"));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if depth != 0 || !root_closed {
        return Err(NOT_XML);
    }
    match found {
        Some(id) if is_salesforce_id(&id) => Ok(id),
        Some(_) => Err(SignatureError::Malformed(
            "OrganizationId is not a Salesforce id",
        )),
        None => Err(SignatureError::Malformed(
            "the message has no OrganizationId",
        )),
    }
}
