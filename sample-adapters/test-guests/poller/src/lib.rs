//! A polling guest for the host's tests, against the tests' fake CRM.
//!
//! `poll-request`: `GET /items?page=<cursor or 1>`. `handle-poll`: the page is
//! `{"items": [{"id": "A", "version": 3}, ...], "next": 2 | null}` (an answer that is not 2xx
//! fails the page); each item becomes an
//! `item.changed` event with the dedupe key `<id>@<version>` (the same record version is the
//! same event, whatever page carries it), the cursor becomes `next`, and `more` is whether there
//! is a `next`. The state counts pages handled (`pages`).
//!
//! The connection setting `mode` makes it misbehave instead (the host must refuse each with a
//! precise reason): `other-host`, `ip-literal`, `userinfo`, `redirect-out`, `many-requests`
//! (10,000 fetches), `huge` (a 100 MB answer), `echo` (reports what an answer echoing the
//! request, credential included, showed it). Misbehaving fetches happen in `handle-poll`: their
//! error is the invocation's `failed` message. The setting `fetch` makes it fetch each item
//! (`/items/<id>`) instead of taking it from the page.

use crm_adapter_sdk::http::{self, HttpRequest};
use crm_adapter_sdk::serde_json::{Value, json};
use crm_adapter_sdk::{
    Adapter, AdapterError, AdapterInfo, Context, Event, PollOutput, PollPage, WebhookRequest, state,
};

struct Poller;

impl Adapter for Poller {
    fn describe() -> AdapterInfo {
        AdapterInfo::new("poller", env!("CARGO_PKG_VERSION"), "custom")
            .event_type("item.changed")
            .event_type("probe.result")
    }

    fn handle_webhook(req: &WebhookRequest, _ctx: &Context) -> Result<Vec<Event>, AdapterError> {
        // A thin webhook: `{"ids": [...]}`; the records are fetched.
        let body: Value = req.json()?;
        let ids = body["ids"].as_array().cloned().unwrap_or_default();
        let mut events = Vec::new();
        for id in ids {
            let id = id.as_str().unwrap_or_default();
            let item: Value = http::fetch(&HttpRequest::get(format!("/items/{id}")))?
                .ok()?
                .json()?;
            events.push(item_event(&item)?);
        }
        Ok(events)
    }

    fn poll_request(
        cursor: Option<&str>,
        _ctx: &Context,
    ) -> Result<Option<HttpRequest>, AdapterError> {
        let page = cursor.unwrap_or("1");
        Ok(Some(HttpRequest::get("/items").query("page", page)))
    }

    fn handle_poll(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
        if let Some(mode) = ctx.setting("mode") {
            return misbehave(mode);
        }
        if !(200..300).contains(&page.status) {
            return Err(AdapterError::failed(format!(
                "the CRM answered {}: {}",
                page.status,
                String::from_utf8_lossy(&page.body)
            )));
        }
        let pages: u64 = state::get_json("pages")?.unwrap_or(0) + 1;
        state::set_json("pages", &pages)?;
        let body: Value = page.json()?;
        let mut events = Vec::new();
        let items = body["items"].as_array().cloned().unwrap_or_default();
        let records = items.len();
        for item in items {
            let item = if ctx.setting("fetch").is_some() {
                let id = item["id"].as_str().unwrap_or_default();
                http::fetch(&HttpRequest::get(format!("/items/{id}")))?
                    .ok()?
                    .json()?
            } else {
                item
            };
            events.push(item_event(&item)?);
        }
        let next = body["next"].as_u64().map(|n| n.to_string());
        let more = next.is_some();
        let mut output = PollOutput::new(events).more(more).records(records);
        if let Some(next) = next {
            output = output.next_cursor(next);
        }
        Ok(output)
    }
}

fn item_event(item: &Value) -> Result<Event, AdapterError> {
    let id = item["id"]
        .as_str()
        .ok_or(AdapterError::bad_request("an item without an id"))?;
    let version = item["version"].as_u64().unwrap_or(0);
    let mut payload = json!({ "id": id, "version": version });
    if let Some(echo) = item.get("echo") {
        payload["echo"] = echo.clone();
    }
    Ok(Event::new("item.changed", id)?
        .dedupe_key(format!("{id}@{version}"))
        .payload(payload)?)
}

/// One misbehaving request (or many), reported as the invocation's failure message.
fn misbehave(mode: &str) -> Result<PollOutput, AdapterError> {
    let request = match mode {
        "other-host" => HttpRequest::get("https://evil.example/steal"),
        "ip-literal" => HttpRequest::get("http://169.254.169.254/latest/meta-data/"),
        "userinfo" => HttpRequest::get("http://user:pass@127.0.0.1/items"),
        "redirect-out" => HttpRequest::get("/redirect-out"),
        "huge" => HttpRequest::get("/huge"),
        "echo" => {
            let answer = http::fetch(&HttpRequest::get("/echo"))?;
            let text = String::from_utf8_lossy(&answer.body).into_owned();
            let event = Event::new("probe.result", "echo")?.payload(json!({ "echo": text }))?;
            return Ok(PollOutput::new(vec![event]));
        }
        "many-requests" => {
            for i in 0..10_000 {
                if let Err(error) = http::fetch(&HttpRequest::get("/items").query("page", "1")) {
                    return Err(AdapterError::failed(format!("request {i}: {error}")));
                }
            }
            return Err(AdapterError::failed("10000 requests all went through"));
        }
        other => return Err(AdapterError::bad_request(format!("unknown mode `{other}`"))),
    };
    match http::fetch(&request) {
        Ok(answer) => Err(AdapterError::failed(format!(
            "the host let it through: {}",
            answer.status
        ))),
        Err(error) => Err(AdapterError::failed(error.to_string())),
    }
}

crm_adapter_sdk::export_adapter!(Poller);
