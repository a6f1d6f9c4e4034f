//! Conversions between the SDK's types and the generated bindings, used by
//! [`crate::export_adapter!`].

use crate::bindings::crm::adapter::types as wit;
use crate::{
    Adapter, AdapterError, AdapterInfo, Context, Event, Header, HttpRequest, PollOutput, PollPage,
    Timestamp, WebhookRequest,
};

/// `describe`, for the export.
pub fn describe<A: Adapter>() -> wit::AdapterInfo {
    let AdapterInfo {
        name,
        version,
        provider,
        event_types,
    } = A::describe();
    wit::AdapterInfo {
        name,
        version,
        provider,
        event_types: event_types
            .into_iter()
            .map(|d| wit::EventTypeDecl {
                name: d.name,
                decimal_fields: d.decimal_fields,
                pii_fields: d.pii_fields,
            })
            .collect(),
    }
}

/// `handle-webhook`, for the export.
pub fn handle_webhook<A: Adapter>(
    request: wit::WebhookRequest,
    context: wit::ConnectionContext,
) -> Result<Vec<wit::Event>, wit::AdapterError> {
    let request = WebhookRequest {
        method: request.method,
        path: request.path,
        query: request.query,
        headers: request.headers.into_iter().map(header).collect(),
        body: request.body,
        received_at: timestamp(request.received_at),
    };
    let context = self::context(context);
    A::handle_webhook(&request, &context)
        .map(|events| events.into_iter().map(event).collect())
        .map_err(error)
}

/// `poll-request`, for the export.
pub fn poll_request<A: Adapter>(
    cursor: Option<String>,
    context: wit::ConnectionContext,
) -> Result<Option<wit::HttpRequest>, wit::AdapterError> {
    let context = self::context(context);
    A::poll_request(cursor.as_deref(), &context)
        .map(|request| request.map(http_request))
        .map_err(error)
}

/// `handle-poll`, for the export.
pub fn handle_poll<A: Adapter>(
    page: wit::PollPage,
    context: wit::ConnectionContext,
) -> Result<wit::PollOutput, wit::AdapterError> {
    let page = PollPage {
        body: page.body,
        content_type: page.content_type,
        cursor: page.cursor,
        fetched_at: timestamp(page.fetched_at),
        request: page.request.map(from_wit_request),
        status: page.status,
        headers: page.headers.into_iter().map(header).collect(),
    };
    let context = self::context(context);
    A::handle_poll(&page, &context)
        .map(
            |PollOutput {
                 events,
                 next_cursor,
                 more,
                 records,
             }| wit::PollOutput {
                events: events.into_iter().map(event).collect(),
                next_cursor,
                more,
                records,
            },
        )
        .map_err(error)
}

/// A request as the WIT record (for `poll-request` and `http.fetch`).
pub(crate) fn http_request(r: HttpRequest) -> wit::HttpRequest {
    wit::HttpRequest {
        method: r.method,
        url: r.url,
        query: r.query,
        headers: r
            .headers
            .into_iter()
            .map(|h| wit::Header {
                name: h.name,
                value: h.value,
            })
            .collect(),
        body: r.body,
    }
}

fn from_wit_request(r: wit::HttpRequest) -> HttpRequest {
    HttpRequest {
        method: r.method,
        url: r.url,
        query: r.query,
        headers: r.headers.into_iter().map(header).collect(),
        body: r.body,
    }
}

fn header(h: wit::Header) -> Header {
    Header {
        name: h.name,
        value: h.value,
    }
}

fn timestamp(t: wit::Timestamp) -> Timestamp {
    Timestamp {
        seconds: t.seconds,
        nanoseconds: t.nanoseconds,
    }
}

fn context(c: wit::ConnectionContext) -> Context {
    Context {
        connection_id: c.connection_id,
        tenant_id: c.tenant_id,
        org_id: c.org_id,
        provider: c.provider,
        allowed_org_ids: c.allowed_org_ids,
        settings: c.settings,
        api_base_url: c.api_base_url,
    }
}

fn event(e: Event) -> wit::Event {
    let parts = e.into_parts();
    wit::Event {
        event_type: parts.event_type,
        entity_type: parts.entity_type,
        entity_id: parts.entity_id,
        org_id: parts.org_id,
        payload: parts.payload,
        dedupe_key: parts.dedupe_key,
        idempotency_key: parts.idempotency_key,
    }
}

fn error(e: AdapterError) -> wit::AdapterError {
    match e {
        AdapterError::BadRequest(m) => wit::AdapterError::BadRequest(m),
        AdapterError::Ignored(m) => wit::AdapterError::Ignored(m),
        AdapterError::Failed(m) => wit::AdapterError::Failed(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventTypeDecl, testing};
    use serde_json::json;

    struct Echo;

    impl Adapter for Echo {
        fn describe() -> AdapterInfo {
            AdapterInfo::new("echo", "1.2.3", "custom")
                .event_type(EventTypeDecl::new("echo.said").decimal_field("/n"))
        }

        fn handle_webhook(req: &WebhookRequest, ctx: &Context) -> Result<Vec<Event>, AdapterError> {
            if req.body.is_empty() {
                return Err(AdapterError::ignored("empty"));
            }
            let event = Event::new("echo.said", req.header("x-id").unwrap_or("none"))?
                .org_opt(ctx.allowed_org_ids.first())
                .dedupe_key(&req.path)
                .payload(json!({ "tenant": ctx.tenant_id, "setting": ctx.setting("s") }))?;
            Ok(vec![event])
        }

        fn handle_poll(page: &PollPage, _: &Context) -> Result<PollOutput, AdapterError> {
            Ok(PollOutput::new(Vec::new()).next_cursor(page.fetched_at.seconds.to_string()))
        }
    }

    fn wit_context() -> wit::ConnectionContext {
        wit::ConnectionContext {
            connection_id: "c".into(),
            tenant_id: "t".into(),
            org_id: None,
            provider: "custom".into(),
            allowed_org_ids: vec!["org-1".into()],
            settings: vec![("s".into(), "v".into())],
            api_base_url: None,
        }
    }

    #[test]
    fn a_webhook_round_trips_through_the_bindings() {
        let request = wit::WebhookRequest {
            method: "POST".into(),
            path: "/p".into(),
            query: String::new(),
            headers: vec![wit::Header {
                name: "x-id".into(),
                value: "42".into(),
            }],
            body: b"{}".to_vec(),
            received_at: wit::Timestamp {
                seconds: 1,
                nanoseconds: 2,
            },
        };
        let events = handle_webhook::<Echo>(request, wit_context()).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            (
                e.event_type.as_str(),
                e.entity_type.as_str(),
                e.entity_id.as_str()
            ),
            ("echo.said", "echo", "42")
        );
        assert_eq!(e.org_id.as_deref(), Some("org-1"));
        assert_eq!(e.dedupe_key.as_deref(), Some("/p"));
        assert_eq!(e.payload, r#"{"setting":"v","tenant":"t"}"#);
        assert!(testing::logs().is_empty());
    }

    #[test]
    fn errors_and_poll_outputs_convert() {
        let request = wit::WebhookRequest {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            received_at: wit::Timestamp {
                seconds: 0,
                nanoseconds: 0,
            },
        };
        match handle_webhook::<Echo>(request, wit_context()) {
            Err(wit::AdapterError::Ignored(m)) => assert_eq!(m, "empty"),
            other => panic!("unexpected {other:?}"),
        }
        let page = wit::PollPage {
            body: Vec::new(),
            content_type: None,
            cursor: None,
            fetched_at: wit::Timestamp {
                seconds: 99,
                nanoseconds: 0,
            },
            request: None,
            status: 200,
            headers: Vec::new(),
        };
        let out = handle_poll::<Echo>(page, wit_context()).unwrap();
        assert_eq!(out.next_cursor.as_deref(), Some("99"));
        let info = describe::<Echo>();
        assert_eq!(info.event_types[0].decimal_fields, ["/n"]);
    }
}
