//! Write CRM adapters for the adapter host.
//!
//! An adapter is a WebAssembly component that turns what one CRM sends (webhook deliveries,
//! pages of records fetched from its API) into the platform's canonical integration events.
//! This SDK hides the component bindings: implement [`Adapter`] with plain Rust types, add one
//! line, [`export_adapter!`], and build with `cargo build --release --target wasm32-wasip2`.
//!
//! ```
//! use crm_adapter_sdk::{
//!     Adapter, AdapterError, AdapterInfo, Context, Decimal, Event, EventTypeDecl,
//!     WebhookRequest, export_adapter,
//! };
//! use serde_json::{Value, json};
//!
//! struct Deals;
//!
//! impl Adapter for Deals {
//!     fn describe() -> AdapterInfo {
//!         AdapterInfo::new("deals", "1.0.0", "custom")
//!             .event_type(EventTypeDecl::new("deal.won").decimal_field("/amount"))
//!     }
//!
//!     fn handle_webhook(req: &WebhookRequest, _ctx: &Context) -> Result<Vec<Event>, AdapterError> {
//!         let body: Value = req.json()?;
//!         let id = body["id"].as_str().ok_or(AdapterError::bad_request("`id` is missing"))?;
//!         let amount = Decimal::from_json(&body["amount"])?;
//!         let event = Event::new("deal.won", id)?.payload(json!({ "amount": amount }))?;
//!         Ok(vec![event])
//!     }
//! }
//!
//! export_adapter!(Deals);
//!
//! // Adapter logic is unit-testable natively, without any WebAssembly runtime:
//! let req = crm_adapter_sdk::testing::webhook(r#"{"id": "D-1", "amount": 1234.50}"#);
//! let events = Deals::handle_webhook(&req, &crm_adapter_sdk::testing::context()).unwrap();
//! assert_eq!(events[0].payload_json(), r#"{"amount":"1234.50"}"#);
//! ```
//!
//! # What runs where
//!
//! On `wasm32` the [`log`] and [`state`] functions call the host's imports. On every other target
//! they use an in-memory, per-thread implementation that the [`testing`] module inspects, so
//! `cargo test` runs an adapter's logic natively.
#![deny(missing_docs)]
#![deny(unsafe_code)]

// Lets the generated bindings (and the macros expanded in adapter crates) name this crate the
// same way from inside and outside.
extern crate self as crm_adapter_sdk;

pub mod changes;
mod decimal;
mod error;
mod event;
pub mod fields;
mod glue;
pub mod http;
pub mod log;
pub mod state;
pub mod testing;
mod types;

pub use decimal::{Decimal, DecimalError};
pub use error::AdapterError;
pub use event::{Event, EventError};
pub use http::{FetchError, HttpRequest, HttpResponse};
pub use state::StateError;
pub use types::{
    AdapterInfo, Context, EventTypeDecl, Header, PollOutput, PollPage, Timestamp, WebhookRequest,
};

/// The `rust_decimal` crate, for arithmetic on [`Decimal`] values
/// ([`Decimal::into_inner`], `Decimal::from(rust_decimal::Decimal)`).
pub use rust_decimal;
/// The `serde_json` crate the SDK uses (with `arbitrary_precision`, so numbers keep their text).
pub use serde_json;

#[doc(hidden)]
pub use wit_bindgen;

/// The generated component bindings. Adapters never need them: [`export_adapter!`] does the
/// wiring.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        // The file, not the folder: `wit/deps/` holds the frozen 0.1.0.
        path: "../wit/adapter.wit",
        world: "crm:adapter/crm-adapter@0.2.0",
        pub_export_macro: true,
        export_macro_name: "__export_raw",
        default_bindings_module: "crm_adapter_sdk::bindings",
        runtime_path: "crm_adapter_sdk::wit_bindgen::rt",
    });
}

/// What an adapter implements.
///
/// The functions take no `self`: an invocation runs in a fresh instance, so there is nothing to
/// keep between calls except what [`state`] stores. Register the type with [`export_adapter!`].
///
/// ```
/// use crm_adapter_sdk::{Adapter, AdapterError, AdapterInfo, Context, Event, WebhookRequest};
///
/// struct Pings;
///
/// impl Adapter for Pings {
///     fn describe() -> AdapterInfo {
///         AdapterInfo::new("pings", "0.1.0", "custom").event_type("ping.received")
///     }
///
///     fn handle_webhook(req: &WebhookRequest, _ctx: &Context) -> Result<Vec<Event>, AdapterError> {
///         let id = req.header("x-ping-id").ok_or(AdapterError::bad_request("no x-ping-id"))?;
///         Ok(vec![Event::new("ping.received", id)?.dedupe_key(id)])
///     }
/// }
///
/// // `handle_poll` has a default: polling is not supported.
/// let page = crm_adapter_sdk::testing::poll_page("{}");
/// let err = Pings::handle_poll(&page, &crm_adapter_sdk::testing::context()).unwrap_err();
/// assert_eq!(err, AdapterError::Ignored("polling not supported".into()));
/// ```
pub trait Adapter {
    /// Name, version, provider, and the event types the adapter may emit (with their decimal
    /// fields). The host refuses any event whose type is not declared here.
    fn describe() -> AdapterInfo;

    /// Turns one webhook delivery into events.
    ///
    /// Return [`AdapterError::BadRequest`] for input the adapter does not understand,
    /// [`AdapterError::Ignored`] for valid input that produces nothing, and
    /// [`AdapterError::Failed`] when valid input could not be processed (the delivery is kept
    /// for redrive).
    fn handle_webhook(req: &WebhookRequest, ctx: &Context) -> Result<Vec<Event>, AdapterError>;

    /// The next request of a poll run, from the cursor saved after the last page (`None`
    /// before the first poll ever): the host performs it and hands the answer to
    /// [`Adapter::handle_poll`]. `Ok(None)` ends the run (nothing to fetch now).
    ///
    /// The default answers `Ok(None)`: the adapter does not poll through the host (it can
    /// still handle pages an external poller pushes).
    fn poll_request(
        cursor: Option<&str>,
        ctx: &Context,
    ) -> Result<Option<HttpRequest>, AdapterError> {
        let _ = (cursor, ctx);
        Ok(None)
    }

    /// Turns one page of records into events, the cursor for the next page, and whether more
    /// pages follow now ([`PollOutput::more`]).
    ///
    /// The default answers [`AdapterError::Ignored`] with "polling not supported".
    fn handle_poll(page: &PollPage, ctx: &Context) -> Result<PollOutput, AdapterError> {
        let _ = (page, ctx);
        Err(AdapterError::Ignored("polling not supported".into()))
    }
}

/// Exports an [`Adapter`] implementation as the component's `crm:adapter/adapter` interface.
///
/// This is the only boilerplate an adapter has. Use it once per crate, at the top level of the
/// library. The crate must be built as a `cdylib` for `wasm32-wasip2`.
///
/// ```
/// use crm_adapter_sdk::{Adapter, AdapterError, AdapterInfo, Context, Event, WebhookRequest};
///
/// struct Quiet;
///
/// impl Adapter for Quiet {
///     fn describe() -> AdapterInfo {
///         AdapterInfo::new("quiet", "0.1.0", "custom")
///     }
///     fn handle_webhook(_: &WebhookRequest, _: &Context) -> Result<Vec<Event>, AdapterError> {
///         Ok(Vec::new())
///     }
/// }
///
/// crm_adapter_sdk::export_adapter!(Quiet);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_adapter {
    ($adapter:ty) => {
        const _: () = {
            // Natively the exports below are left out; this keeps the adapter from looking
            // unused there (it is reached only through them).
            #[cfg(not(target_arch = "wasm32"))]
            let _ = (
                <$adapter as $crate::Adapter>::describe,
                <$adapter as $crate::Adapter>::handle_webhook,
                <$adapter as $crate::Adapter>::poll_request,
                <$adapter as $crate::Adapter>::handle_poll,
            );

            #[allow(dead_code)]
            struct __CrmAdapterSdkExport;

            impl $crate::__private::Guest for __CrmAdapterSdkExport {
                fn describe() -> $crate::__private::WitAdapterInfo {
                    $crate::__private::describe::<$adapter>()
                }

                fn handle_webhook(
                    request: $crate::__private::WitWebhookRequest,
                    context: $crate::__private::WitConnectionContext,
                ) -> ::core::result::Result<
                    $crate::__private::Vec<$crate::__private::WitEvent>,
                    $crate::__private::WitAdapterError,
                > {
                    $crate::__private::handle_webhook::<$adapter>(request, context)
                }

                fn poll_request(
                    cursor: ::core::option::Option<$crate::__private::String>,
                    context: $crate::__private::WitConnectionContext,
                ) -> ::core::result::Result<
                    ::core::option::Option<$crate::__private::WitHttpRequest>,
                    $crate::__private::WitAdapterError,
                > {
                    $crate::__private::poll_request::<$adapter>(cursor, context)
                }

                fn handle_poll(
                    page: $crate::__private::WitPollPage,
                    context: $crate::__private::WitConnectionContext,
                ) -> ::core::result::Result<
                    $crate::__private::WitPollOutput,
                    $crate::__private::WitAdapterError,
                > {
                    $crate::__private::handle_poll::<$adapter>(page, context)
                }
            }

            // The component's exports. Natively they are left out: their names (`crm:adapter/...`)
            // are not valid symbols for native linkers, and native builds serve unit tests only.
            #[cfg(target_arch = "wasm32")]
    $crate::bindings::__export_raw!(__CrmAdapterSdkExport with_types_in $crate::bindings);
        };
    };
}

// The README's examples are compiled as doctests so that they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Support for [`export_adapter!`]; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::crm::adapter::types::{
        AdapterError as WitAdapterError, AdapterInfo as WitAdapterInfo,
        ConnectionContext as WitConnectionContext, Event as WitEvent,
        HttpRequest as WitHttpRequest, PollOutput as WitPollOutput, PollPage as WitPollPage,
        WebhookRequest as WitWebhookRequest,
    };
    pub use crate::bindings::exports::crm::adapter::adapter::Guest;
    pub use crate::glue::{describe, handle_poll, handle_webhook, poll_request};
    pub use std::string::String;
    pub use std::vec::Vec;
}
