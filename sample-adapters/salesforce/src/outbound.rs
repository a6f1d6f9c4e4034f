//! Outbound messages: the SOAP 1.1 notifications a workflow rule or flow sends, with the
//! fields the admin chose for the record (<https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_wsdl.htm>):
//!
//! ```xml
//! <soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
//!  <soapenv:Body>
//!   <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
//!    <OrganizationId>00D...</OrganizationId>
//!    <Notification>
//!     <Id>04l...</Id>
//!     <sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
//!      <sf:Id>006...</sf:Id>
//!      <sf:Amount>125000.0</sf:Amount>
//!     </sObject>
//!    </Notification>
//!   </notifications>
//!  </soapenv:Body>
//! </soapenv:Envelope>
//! ```
//!
//! The envelope is read with a namespace-aware pull parser, element by element: a DOCTYPE is
//! refused (no entity expansion), nesting is bounded, and anything that is not well-formed
//! XML or not an outbound message is a bad request. The host has already checked that
//! `OrganizationId` is the connection's (signature scheme `salesforce_outbound`).
//!
//! A message says nothing about what changed, and Salesforce resends it until it is
//! acknowledged, so every record goes through the change detection of [`crate::snapshot`];
//! the dedupe key is the notification's `Id`, which Salesforce keeps across resends.
//!
//! A **thin** message (an `sObject` with its `Id` alone, the cheapest to configure) says only
//! that a record changed. On a connection with API access the adapter reads the record
//! ([`api::fetch_record`]) and emits from it as from a full message; a 404 (the record was
//! deleted meanwhile) is `*.deleted`, once. Without API access it emits the ids alone.

use crm_adapter_sdk::fields::Obj;
use crm_adapter_sdk::serde_json::{self, Map, Value};
use crm_adapter_sdk::{AdapterError, Context, Event};
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event as Xml;
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::reader::NsReader;

use crate::api;
use crate::records::{self, Kind, Object, Shape};
use crate::snapshot::Memory;

const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// Deepest element nesting accepted; real messages nest six levels.
const MAX_DEPTH: usize = 32;

/// The events of an outbound message.
pub fn events(body: &str, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
    let notifications = parse(body)?;
    if notifications.is_empty() {
        return Err(AdapterError::bad_request(
            "the outbound message holds no Notification",
        ));
    }
    let org = crate::org_for(ctx)?;
    // Typed by the field tables, then read like any JSON record, with the same messages.
    let mut types = Vec::new();
    let mut thin = Vec::new();
    let mut items = Vec::new();
    for (i, notification) in notifications.into_iter().enumerate() {
        let mut item = Map::new();
        if let Some(id) = notification.id {
            item.insert("Id".into(), Value::String(id));
        }
        let object = notification
            .object_type
            .as_deref()
            .and_then(Object::from_api_name);
        thin.push(
            notification
                .fields
                .as_ref()
                .is_some_and(|fields| fields.iter().all(|(name, _)| name == "Id")),
        );
        if let Some(fields) = notification.fields {
            let path = format!("Notification[{i}].sObject");
            item.insert("sObject".into(), typed(object, fields, &path)?);
        }
        types.push(notification.object_type);
        items.push(Value::Object(item));
    }
    let document = Value::Object(Map::from_iter([(
        "Notification".to_owned(),
        Value::Array(items),
    )]));
    let root = Obj::root(&document, "the outbound message")?;

    let mut events = Vec::new();
    let mut skipped = Vec::new();
    let mut memory = Memory::default();
    for ((notification, object_type), thin) in
        root.objects("Notification")?.iter().zip(types).zip(thin)
    {
        let notification_id = notification.id("Id")?;
        let sobject = notification.child("sObject")?;
        let Some(type_name) = object_type else {
            return Err(AdapterError::bad_request(format!(
                "`{}` has no xsi:type naming its object",
                notification.name("sObject")
            )));
        };
        let Some(object) = Object::from_api_name(&type_name) else {
            skipped.push(format!(
                "outbound messages for `{type_name}` are not used by this adapter"
            ));
            continue;
        };
        let id = sobject.id("Id")?;
        let fetched = match (thin, &ctx.api_base_url) {
            (true, Some(_)) => Some(api::fetch_record(object, &id)?),
            (true, None) => {
                crm_adapter_sdk::warn!(
                    "the {} {id} message carries only its Id, and the connection has no API \
                     access to read the record: emitted with the ids alone",
                    object.api_name()
                );
                None
            }
            (false, _) => None,
        };
        let record = match &fetched {
            Some(Some(record)) => Some(Obj::root(record, "the record")?),
            Some(None) => {
                // Deleted since the message was sent: the platform learns that once.
                if memory.observe_deleted(object, &id) {
                    events.push(crate::event(
                        object,
                        "deleted",
                        &id,
                        records::deleted_payload(object, &id),
                        None,
                        org.as_deref(),
                        notification_id.clone(),
                    )?);
                } else {
                    skipped.push(format!("{} {id} is deleted", object.api_name()));
                }
                continue;
            }
            None => None,
        };
        let sobject = record.unwrap_or(sobject);
        let payload = records::payload(object, &id, &sobject, Shape::Flat, &[])?;
        let occurred_at = crate::modified_at(&sobject)?;
        let (actions, _) = memory.observe(object, &id, &payload);
        if actions.is_empty() {
            skipped.push(format!(
                "{} {id} is unchanged since it was last seen",
                object.api_name()
            ));
        }
        for (k, action) in actions.iter().enumerate() {
            // The first event of a notification is keyed by its id; a second one (an
            // opportunity created already won) by the id and its action.
            let key = match k {
                0 => notification_id.clone(),
                _ => format!("{notification_id}/{}", action.name()),
            };
            events.push(crate::event(
                object,
                action.name(),
                &id,
                payload.clone(),
                occurred_at.as_deref(),
                org.as_deref(),
                key,
            )?);
        }
    }
    memory.save()?;
    if events.is_empty() {
        return Err(AdapterError::ignored(crate::nothing_to_emit(&skipped)));
    }
    Ok(events)
}

/// One `Notification` as read from the XML.
#[derive(Debug, Default)]
struct Notification {
    /// `Notification/Id`.
    id: Option<String>,
    /// The object of `sObject`'s `xsi:type` (`sf:Account` -> `Account`).
    object_type: Option<String>,
    /// `sObject`'s fields in order, `None` for `xsi:nil="true"`; `None` without an `sObject`.
    fields: Option<Vec<(String, Option<String>)>>,
}

/// The sObject's fields as a JSON object, each value typed by the object's field table:
/// booleans (`true`, `1`), numbers kept as their exact text, strings; nil is `null`. Fields the
/// table does not map stay strings.
fn typed(
    object: Option<Object>,
    fields: Vec<(String, Option<String>)>,
    path: &str,
) -> Result<Value, AdapterError> {
    let mut map = Map::new();
    for (name, text) in fields {
        let kind = object
            .and_then(|o| o.field(&name))
            .map_or(Kind::Text, |f| f.kind);
        let value = match (text, kind) {
            (None, _) => Value::Null,
            (Some(text), Kind::Text) => Value::String(text),
            (Some(text), _) if text.trim().is_empty() => Value::Null,
            (Some(text), Kind::Bool) => match text.trim() {
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                other => {
                    return Err(AdapterError::bad_request(format!(
                        "`{path}.{name}` is `{}`, not a boolean",
                        shorten(other)
                    )));
                }
            },
            (Some(text), Kind::Money | Kind::Percent | Kind::Count) => {
                // xsd:double text (`125000.0`, `1.39E8`) is JSON number text too.
                match serde_json::from_str::<Value>(text.trim()) {
                    Ok(number @ Value::Number(_)) => number,
                    _ => {
                        return Err(AdapterError::bad_request(format!(
                            "`{path}.{name}` is `{}`, not a number",
                            shorten(text.trim())
                        )));
                    }
                }
            }
        };
        map.insert(name, value);
    }
    Ok(Value::Object(map))
}

fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

fn not_xml(detail: impl std::fmt::Display) -> AdapterError {
    AdapterError::bad_request(format!("the body is not well-formed XML: {detail}"))
}

fn not_outbound(detail: &str) -> AdapterError {
    AdapterError::bad_request(format!(
        "the body is not a Salesforce outbound message: {detail}"
    ))
}

/// An open element, by what it is in an outbound message.
enum Frame {
    Envelope,
    Body,
    Notifications,
    Notification,
    NotificationId,
    SObject,
    Field {
        name: String,
        nil: bool,
        nested: bool,
    },
    /// Anything else (a SOAP header, an element a newer API version adds): skipped whole.
    Other,
}

/// Which namespace an element is in.
#[derive(PartialEq, Eq)]
enum Ns {
    Soap,
    Outbound,
    Other,
}

/// The notifications of an outbound message.
fn parse(body: &str) -> Result<Vec<Notification>, AdapterError> {
    let mut reader = NsReader::from_str(body);
    reader.config_mut().expand_empty_elements = true;
    let mut stack: Vec<Frame> = Vec::new();
    let mut notifications: Vec<Notification> = Vec::new();
    let mut root_seen = false;
    let mut notifications_seen = false;
    let mut text = String::new();
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(not_xml)?;
        let ns = match ns {
            ResolveResult::Bound(Namespace(SOAP_NS)) => Ns::Soap,
            ResolveResult::Bound(Namespace(OUTBOUND_NS)) => Ns::Outbound,
            _ => Ns::Other,
        };
        let capturing = matches!(
            stack.last(),
            Some(Frame::NotificationId | Frame::Field { nested: false, .. })
        );
        match event {
            Xml::Start(element) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(AdapterError::bad_request("the XML is nested too deeply"));
                }
                let local = element.local_name();
                let local = local.as_ref();
                let frame = match stack.last_mut() {
                    None if root_seen => return Err(not_xml("more than one root element")),
                    None if ns == Ns::Soap && local == "Envelope" => {
                        root_seen = true;
                        Frame::Envelope
                    }
                    None => return Err(not_outbound("the root element is not a SOAP Envelope")),
                    Some(Frame::Envelope) if ns == Ns::Soap && local == "Body" => Frame::Body,
                    Some(Frame::Body) if ns == Ns::Outbound && local == "notifications" => {
                        if notifications_seen {
                            return Err(not_outbound("more than one `notifications` element"));
                        }
                        notifications_seen = true;
                        Frame::Notifications
                    }
                    Some(Frame::Notifications) if ns == Ns::Outbound && local == "Notification" => {
                        notifications.push(Notification::default());
                        Frame::Notification
                    }
                    Some(Frame::Notification) if ns == Ns::Outbound && local == "Id" => {
                        if notifications.last().is_some_and(|n| n.id.is_some()) {
                            return Err(not_outbound("a Notification has more than one Id"));
                        }
                        text.clear();
                        Frame::NotificationId
                    }
                    Some(Frame::Notification) if ns == Ns::Outbound && local == "sObject" => {
                        if notifications.last().is_some_and(|n| n.fields.is_some()) {
                            return Err(not_outbound("a Notification has more than one sObject"));
                        }
                        let mut object_type = None;
                        for attribute in element.attributes() {
                            let attribute = attribute.map_err(not_xml)?;
                            if let (ResolveResult::Bound(Namespace(XSI_NS)), name) =
                                reader.resolver().resolve_attribute(attribute.key)
                                && name.as_ref() == "type"
                            {
                                let value = attribute
                                    .normalized_value(XmlVersion::Implicit1_0)
                                    .map_err(not_xml)?;
                                // A QName: `sf:Account`; the object is its local part.
                                let local = value.rsplit(':').next().unwrap_or_default();
                                object_type = Some(local.trim().to_owned());
                            }
                        }
                        if let Some(current) = notifications.last_mut() {
                            current.object_type = object_type;
                            current.fields.get_or_insert_with(Vec::new);
                        }
                        Frame::SObject
                    }
                    Some(Frame::SObject) => {
                        text.clear();
                        Frame::Field {
                            name: local.to_owned(),
                            nil: element.attributes().has_nil(reader.resolver()),
                            nested: false,
                        }
                    }
                    Some(Frame::Field { nested, .. }) => {
                        // Outbound messages carry flat fields; anything deeper is not one.
                        *nested = true;
                        Frame::Other
                    }
                    Some(_) => Frame::Other,
                };
                stack.push(frame);
            }
            Xml::End(_) => {
                match stack.pop() {
                    Some(Frame::NotificationId) => {
                        if let Some(current) = notifications.last_mut() {
                            current.id = Some(text.trim().to_owned());
                        }
                    }
                    Some(Frame::Field { name, nil, nested }) => {
                        if let (false, Some(current)) = (nested, notifications.last_mut()) {
                            let value = (!nil).then(|| text.clone());
                            current
                                .fields
                                .get_or_insert_with(Vec::new)
                                .push((name, value));
                        }
                    }
                    Some(_) => {}
                    None => return Err(not_xml("an end tag closes nothing")),
                }
                text.clear();
            }
            Xml::Text(content) => {
                if stack.is_empty() && !content.trim().is_empty() {
                    return Err(not_xml("text outside the root element"));
                }
                if capturing {
                    text.push_str(&content.xml10_content());
                }
            }
            Xml::CData(content) => {
                if stack.is_empty() {
                    return Err(not_xml("text outside the root element"));
                }
                if capturing {
                    text.push_str(&content.xml10_content());
                }
            }
            Xml::GeneralRef(reference) => {
                if stack.is_empty() {
                    return Err(not_xml("text outside the root element"));
                }
                let resolved = match reference.resolve_char_ref().map_err(not_xml)? {
                    Some(c) => c.to_string(),
                    None => match resolve_predefined_entity(&reference) {
                        Some(s) => s.to_owned(),
                        None => {
                            return Err(not_xml(format!(
                                "unknown entity `&{};`",
                                shorten(&reference)
                            )));
                        }
                    },
                };
                if capturing {
                    text.push_str(&resolved);
                }
            }
            Xml::DocType(_) => {
                return Err(AdapterError::bad_request("a DOCTYPE is not accepted"));
            }
            // `Empty` never comes: `expand_empty_elements` turns `<a/>` into `Start` and `End`.
            Xml::Empty(_) | Xml::Decl(_) | Xml::PI(_) | Xml::Comment(_) => {}
            Xml::Eof => break,
        }
    }
    if !root_seen {
        return Err(not_xml("no root element"));
    }
    if !stack.is_empty() {
        return Err(not_xml("the document ends before its elements are closed"));
    }
    if !notifications_seen {
        return Err(not_outbound("`Envelope/Body/notifications` is missing"));
    }
    Ok(notifications)
}
