use std::fmt;

/// Why an adapter produced no events. The host treats each case differently.
///
/// ```
/// use crm_adapter_sdk::AdapterError;
///
/// let err = AdapterError::bad_request("`agent_id` is missing");
/// assert_eq!(err.to_string(), "bad request: `agent_id` is missing");
/// assert_eq!(err.message(), "`agent_id` is missing");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterError {
    /// The input is malformed or not what this adapter understands. Not retried.
    BadRequest(String),
    /// The input is valid but deliberately produces nothing (for example an event kind the
    /// tenant does not use). Counts as success with no events.
    Ignored(String),
    /// The adapter could not process valid input. The delivery is kept for redrive.
    Failed(String),
}

impl AdapterError {
    /// An [`AdapterError::BadRequest`].
    ///
    /// ```
    /// # use crm_adapter_sdk::AdapterError;
    /// assert!(matches!(AdapterError::bad_request("no id"), AdapterError::BadRequest(m) if m == "no id"));
    /// ```
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// An [`AdapterError::Ignored`].
    ///
    /// ```
    /// # use crm_adapter_sdk::AdapterError;
    /// assert!(matches!(AdapterError::ignored("ping"), AdapterError::Ignored(m) if m == "ping"));
    /// ```
    pub fn ignored(message: impl Into<String>) -> Self {
        Self::Ignored(message.into())
    }

    /// An [`AdapterError::Failed`].
    ///
    /// ```
    /// # use crm_adapter_sdk::AdapterError;
    /// assert!(matches!(AdapterError::failed("state full"), AdapterError::Failed(m) if m == "state full"));
    /// ```
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// The message, whatever the case.
    ///
    /// ```
    /// # use crm_adapter_sdk::AdapterError;
    /// assert_eq!(AdapterError::failed("boom").message(), "boom");
    /// ```
    pub fn message(&self) -> &str {
        match self {
            Self::BadRequest(m) | Self::Ignored(m) | Self::Failed(m) => m,
        }
    }
}

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRequest(m) => write!(f, "bad request: {m}"),
            Self::Ignored(m) => write!(f, "ignored: {m}"),
            Self::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for AdapterError {}
