//! The OpenAPI 3.1 document of the host's HTTP API, generated from the handlers' annotations
//! and the types they take and answer. Served at `/openapi.json`, printed by
//! `adapter-host openapi`, and committed as `openapi.json` (a test fails when the committed
//! document and the code disagree).

use std::collections::BTreeMap;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, ObjectBuilder, Ref, RefOr, Required, ResponseBuilder, Type,
    path::{ParameterBuilder, ParameterIn},
};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::problem::Problem;
use super::{connections, manage, polls};

/// The error answers every operation may give: problem+json, with a stable `type` per kind.
#[derive(Debug)]
pub struct Problems;

impl IntoResponses for Problems {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
                .into()
        };
        BTreeMap::from([
            (
                "4XX".to_owned(),
                problem(
                    "The request cannot be served as it is: malformed (400), no valid token \
                     (401), not allowed (403), not found or not visible (404), in conflict with \
                     the resource's state (409), too large (413), too many (429)",
                ),
            ),
            (
                "5XX".to_owned(),
                problem("A fault of the host (500) or a moment it cannot serve (503)"),
            ),
        ])
    }
}

/// Adds the bearer JWT scheme and the `X-Org-Id` and `X-Support-Tenant` headers of the
/// management operations.
struct Additions;

impl Modify for Additions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 (embedded default) or RS256/ES256 (JWKS); claims: sub, \
                         tenant_id, optional org_id, roles (tenant_admin, viewer, admin), exp",
                    ))
                    .build(),
            ),
        );
        let org_header = ParameterBuilder::new()
            .name("X-Org-Id")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "The org a token without org_id acts in (required of such tokens; ignored \
                 for tokens that carry one)",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(128)),
            ))
            .build();
        let support_header = ParameterBuilder::new()
            .name("X-Support-Tenant")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Support mode: the tenant a platform-level `admin` token acts for (403 with any \
                 other token); every change so made is marked `support` in the audit log",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(128)),
            ))
            .build();
        let bearer =
            utoipa::openapi::security::SecurityRequirement::new("bearer_jwt", Vec::<String>::new());
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") || is_public(path) {
                continue;
            }
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let parameters = operation.parameters.get_or_insert_with(Vec::new);
                parameters.push(RefOr::T(org_header.clone()));
                parameters.push(RefOr::T(support_header.clone()));
                operation.security = Some(vec![bearer.clone()]);
            }
        }
    }
}

/// Paths under `/v1/` that take no management token: CRMs' webhooks, and the OAuth
/// provider's redirect (its `state` is the proof).
fn is_public(path: &str) -> bool {
    path.starts_with("/v1/hooks/") || path == "/v1/oauth/callback"
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "adapter-host",
        description = "Hosted CRM webhooks run through tenants' sandboxed WebAssembly adapters, \
                       and the management API of tenants' adapters, connections, secrets, \
                       deliveries, events, replays and outgoing webhook subscribers.",
    ),
    paths(
        crate::server::receive_webhook,
        crate::server::receive_capability_webhook,
        crate::server::healthz,
        crate::server::readyz,
        crate::server::metrics,
        crate::server::openapi_json,
        manage::create_adapter,
        manage::list_adapters,
        manage::get_adapter,
        manage::upload_version,
        manage::list_versions,
        manage::get_version,
        manage::test_version,
        connections::create_connection,
        connections::list_connections,
        connections::get_connection,
        connections::update_connection,
        connections::delete_connection,
        polls::poll_now,
        super::drift::list_drifts,
        polls::list_polls,
        super::oauth::start,
        super::oauth::disconnect,
        super::oauth::callback,
        polls::get_poll,
        polls::push_page,
        manage::put_secret,
        manage::list_events,
        manage::get_event,
        manage::list_deliveries,
        manage::get_delivery,
        manage::redrive_delivery,
        manage::redrive_deliveries,
        manage::start_replay,
        manage::list_replays,
        manage::get_replay,
        manage::create_subscriber,
        manage::list_subscribers,
        manage::get_subscriber,
        manage::update_subscriber,
        manage::delete_subscriber,
        manage::subscriber_deliveries,
        manage::retry_subscriber_delivery,
        super::audit::list_audit,
        super::orgs::list_orgs,
        super::invocations::export_invocation,
        super::invocations::replay_invocation,
        super::erasure::erase_tenant,
        super::erasure::erase_subject,
        super::retention::get_retention,
        super::retention::put_retention,
        super::identities::list_identities,
        super::health::tenant_health,
        super::health::connection_health,
        super::health::get_rules,
        super::health::put_rules,
        super::health::list_alerts,
        super::provenance::key_set,
        super::provenance::rotate,
    ),
    components(schemas(Problem)),
    modifiers(&Additions),
)]
struct ApiDoc;

/// The document, as served and committed (pretty JSON, a trailing newline).
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_document_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == document(),
            "openapi.json does not match the code: regenerate it with \
             `cargo run -p adapter-host -- openapi > openapi.json`"
        );
    }

    #[test]
    fn every_management_operation_is_authenticated_and_every_answer_documented() {
        let document: serde_json::Value = serde_json::from_str(&document()).unwrap();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                assert!(
                    responses.contains_key("4XX") || !path.starts_with("/v1/"),
                    "{method} {path} documents no problems"
                );
                let secured = operation["security"][0].get("bearer_jwt").is_some();
                assert_eq!(
                    secured,
                    !super::is_public(path) && path.starts_with("/v1/"),
                    "{method} {path}"
                );
            }
        }
    }
}
