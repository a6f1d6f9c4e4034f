//! The smallest adapter: declares `noop.done` and emits nothing. The host's benchmarks use it to
//! measure the sandbox's own overhead, so keep it minimal.

use crm_adapter_sdk::{Adapter, AdapterError, AdapterInfo, Context, Event, WebhookRequest};

struct Noop;

impl Adapter for Noop {
    fn describe() -> AdapterInfo {
        AdapterInfo::new("noop", env!("CARGO_PKG_VERSION"), "custom").event_type("noop.done")
    }

    fn handle_webhook(_: &WebhookRequest, _: &Context) -> Result<Vec<Event>, AdapterError> {
        Ok(Vec::new())
    }
}

crm_adapter_sdk::export_adapter!(Noop);
