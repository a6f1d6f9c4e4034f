//! Logging to the host.
//!
//! Each invocation has a log budget; past it the host drops messages and marks the log as
//! truncated, so log what helps a tenant understand a delivery, not every step. The macros
//! ([`crate::trace!`], [`crate::debug!`], [`crate::info!`], [`crate::warn!`], [`crate::error!`])
//! take `format!` arguments.
//!
//! ```
//! use crm_adapter_sdk::log::{self, Level};
//!
//! log::info("received a delivery");
//! crm_adapter_sdk::warn!("unknown field `{}` ignored", "nickname");
//!
//! // Natively, the messages are kept for tests to inspect.
//! let logs = crm_adapter_sdk::testing::logs();
//! assert_eq!(logs[1].level, Level::Warn);
//! assert_eq!(logs[1].message, "unknown field `nickname` ignored");
//! ```

/// How important a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Fine-grained detail.
    Trace,
    /// Detail useful when debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the adapter coped with.
    Warn,
    /// Something that made the invocation fail.
    Error,
}

/// Logs `message` at `level`.
///
/// ```
/// crm_adapter_sdk::log::log(crm_adapter_sdk::log::Level::Debug, "cursor is c_17");
/// ```
pub fn log(level: Level, message: &str) {
    backend::log(level, message);
}

/// Logs at [`Level::Trace`].
///
/// ```
/// crm_adapter_sdk::log::trace("parsing member 3 of 10");
/// ```
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Logs at [`Level::Debug`].
///
/// ```
/// crm_adapter_sdk::log::debug("cursor is c_17");
/// ```
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs at [`Level::Info`].
///
/// ```
/// crm_adapter_sdk::log::info("3 events");
/// ```
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs at [`Level::Warn`].
///
/// ```
/// crm_adapter_sdk::log::warn("unknown kind `member.note_added`, ignored");
/// ```
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs at [`Level::Error`].
///
/// ```
/// crm_adapter_sdk::log::error("state is full");
/// ```
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Logs a `format!` message at trace level.
///
/// ```
/// crm_adapter_sdk::trace!("record {} of {}", 3, 10);
/// ```
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::trace(&::std::format!($($arg)+)) };
}

/// Logs a `format!` message at debug level.
///
/// ```
/// crm_adapter_sdk::debug!("cursor is {}", "c_17");
/// ```
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::debug(&::std::format!($($arg)+)) };
}

/// Logs a `format!` message at info level.
///
/// ```
/// crm_adapter_sdk::info!("{} events", 3);
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::info(&::std::format!($($arg)+)) };
}

/// Logs a `format!` message at warn level.
///
/// ```
/// crm_adapter_sdk::warn!("unknown kind `{}`, ignored", "member.note_added");
/// ```
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::warn(&::std::format!($($arg)+)) };
}

/// Logs a `format!` message at error level.
///
/// ```
/// crm_adapter_sdk::error!("state is full: {}", "too many keys");
/// ```
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::error(&::std::format!($($arg)+)) };
}

#[cfg(target_arch = "wasm32")]
mod backend {
    use super::Level;
    use crate::bindings::crm::adapter::log as wit;

    pub(super) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(level, message);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod backend {
    use super::Level;

    pub(super) fn log(level: Level, message: &str) {
        crate::testing::memory::log(level, message);
    }
}
