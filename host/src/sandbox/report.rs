//! What one invocation produced and what it used.

use std::time::Duration;

use serde::Serialize;

use super::AdapterFailure;
use super::http::HttpRequest;
use super::logs::Log;
use super::state::{StateAccess, StateMap};
use crate::contracts::{EmittedEvent, Violation};

/// The result of one invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What came out.
    pub outcome: Outcome,
    /// What it used.
    pub usage: Usage,
    /// What the adapter logged (and wrote to stdout/stderr), bounded.
    pub log: Log,
    /// The connection's state after a successful invocation that changed it; `None` when it
    /// did not change or the invocation did not succeed (its changes are then discarded).
    #[serde(skip)]
    pub state: Option<StateMap>,
    /// What the invocation read and wrote of the connection's state: its outcome depends on
    /// what it read, and is committed only while that is still what is stored.
    #[serde(skip)]
    pub state_access: StateAccess,
    /// The seed and clock readings it drew on: with its input, state and HTTP answers, what
    /// replays it exactly.
    #[serde(skip)]
    pub determinism: super::Determinism,
}

impl Report {
    pub(super) fn new(outcome: Outcome, usage: Usage, log: Log, state: Option<StateMap>) -> Self {
        Self {
            outcome,
            usage,
            log,
            state,
            state_access: StateAccess::default(),
            determinism: super::Determinism::default(),
        }
    }
}

/// Longest adapter message (an error's or an ignore's reason) kept, in bytes; past it the
/// message is cut and marked, like a log line.
pub const MAX_ADAPTER_MESSAGE_BYTES: usize = 4096;

/// `message` within [`MAX_ADAPTER_MESSAGE_BYTES`], cut on a character boundary and marked with
/// how long it was.
fn bounded_message(message: String) -> String {
    if message.len() <= MAX_ADAPTER_MESSAGE_BYTES {
        return message;
    }
    let mut cut = MAX_ADAPTER_MESSAGE_BYTES;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[truncated, {} bytes]", &message[..cut], message.len())
}

/// How an invocation ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Every event passed the contracts.
    Accepted {
        /// The events, as emitted.
        events: Vec<EmittedEvent>,
        /// For a poll page: the cursor for the next page (`None` keeps the previous one).
        next_cursor: Option<String>,
        /// For a poll page: whether another page follows now.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
        /// For a poll page: how many records it held, changed or not, when the adapter said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        records: Option<u32>,
        /// For a poll request: the request to make (`None`: nothing to fetch now).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<HttpRequest>,
    },
    /// The adapter chose to produce nothing for this input.
    Ignored {
        /// The adapter's reason.
        reason: String,
    },
    /// The adapter returned an error.
    AdapterError {
        /// Bad request (not retried) or failed (kept for redrive).
        kind: AdapterErrorKind,
        /// The adapter's message.
        message: String,
    },
    /// At least one event broke a contract; nothing of this invocation is kept.
    Rejected {
        /// Every violation, in event order.
        violations: Vec<Violation>,
    },
    /// The sandbox stopped the adapter (trap, limit) or refused its output.
    Failed {
        /// Why.
        failure: Failure,
    },
}

impl Outcome {
    /// The outcome of an adapter's own error; its message is bounded (a hostile adapter could
    /// return megabytes).
    pub(super) fn from_adapter_error(error: AdapterFailure) -> Self {
        match error {
            AdapterFailure::Ignored(reason) => Outcome::Ignored {
                reason: bounded_message(reason),
            },
            AdapterFailure::BadRequest(message) => Outcome::AdapterError {
                kind: AdapterErrorKind::BadRequest,
                message: bounded_message(message),
            },
            AdapterFailure::Failed(message) => Outcome::AdapterError {
                kind: AdapterErrorKind::Failed,
                message: bounded_message(message),
            },
        }
    }

    /// Whether the invocation succeeded (accepted or deliberately ignored).
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Accepted { .. } | Outcome::Ignored { .. })
    }

    /// The events, when accepted.
    pub fn events(&self) -> &[EmittedEvent] {
        match self {
            Outcome::Accepted { events, .. } => events,
            _ => &[],
        }
    }
}

/// The two kinds of error an adapter can return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterErrorKind {
    /// The input was malformed; retrying it cannot help.
    BadRequest,
    /// The adapter could not process valid input; it can be redriven.
    Failed,
}

/// Why the sandbox stopped an invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The kind, as a stable code.
    pub kind: FailureKind,
    /// A sentence for the tenant.
    pub message: String,
    /// Function names of the guest's stack when it trapped, innermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backtrace: Vec<String>,
}

impl Failure {
    pub fn new(kind: FailureKind, message: String) -> Self {
        Self {
            kind,
            message,
            backtrace: Vec::new(),
        }
    }
}

/// The kinds of sandbox failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The wall-clock deadline passed.
    Deadline,
    /// The fuel budget ran out.
    FuelExhausted,
    /// The adapter asked for more memory than its cap.
    MemoryLimit,
    /// The wasm stack overflowed.
    StackOverflow,
    /// The adapter panicked.
    Panic,
    /// Any other trap.
    Trap,
    /// Too many events, or too many bytes of them.
    OutputLimit,
    /// The input was larger than the adapter accepts.
    InputTooLarge,
    /// The adapter's world version cannot do what was asked (a 0.1.0 adapter asked to poll).
    Unsupported,
    /// The host stopped (a crash, a kill) while this invocation ran, too many times: the
    /// delivery is parked rather than run again.
    Interrupted,
}

impl FailureKind {
    /// The stable code of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deadline => "deadline",
            Self::FuelExhausted => "fuel_exhausted",
            Self::MemoryLimit => "memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Panic => "panic",
            Self::Trap => "trap",
            Self::OutputLimit => "output_limit",
            Self::InputTooLarge => "input_too_large",
            Self::Unsupported => "unsupported",
            Self::Interrupted => "interrupted",
        }
    }
}

/// What an invocation used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Wall-clock time from instantiation to return.
    #[serde(rename = "duration_us", serialize_with = "micros")]
    pub duration: Duration,
    /// Fuel consumed (roughly wasm instructions executed).
    pub fuel_consumed: u64,
    /// The fuel budget, when one is set.
    pub fuel_limit: Option<u64>,
    /// The largest linear memory the instance held, in bytes.
    pub peak_memory_bytes: u64,
    /// Input size, in bytes.
    pub bytes_in: u64,
    /// Size of the events returned, in bytes.
    pub bytes_out: u64,
    /// Number of events returned.
    pub events: u64,
    /// Log bytes kept.
    pub log_bytes: u64,
}

fn micros<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX))
}
