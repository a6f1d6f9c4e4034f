//! The HTTP API: problem+json errors, and the management API (JWT auth, org scope).

pub mod audit;
pub mod auth;
pub mod connections;
pub mod drift;
pub mod erasure;
pub mod health;
pub mod identities;
pub mod invocations;
pub mod manage;
pub mod oauth;
pub mod openapi;
pub mod orgs;
pub mod polls;
pub mod problem;
pub mod provenance;
pub mod request_id;
pub mod retention;
pub mod scope;

pub use problem::ApiError;
