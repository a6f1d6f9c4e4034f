//! The HTTP API.

pub mod problem;

pub use problem::ApiError;
