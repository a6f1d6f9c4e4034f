//! What the store keeps for schema drift: the learned shape of each connection's payloads per
//! source kind (`payload_shapes`), and the changes found against them (`schema_drifts`), which
//! the health monitor turns into a `schema_drift` alert while they are recent.

use serde::Serialize;

use super::Millis;

/// A learned shape to save (it replaces the one before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedShape {
    /// The connection.
    pub connection_id: String,
    /// The source kind (`webhook:deal.won`).
    pub kind: String,
    /// The shape (JSON text).
    pub shape_json: String,
    /// Payloads it was learned from.
    pub samples: u64,
    /// When it was last saved.
    pub updated_at: Millis,
}

/// A change found in a payload, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDrift {
    /// The tenant.
    pub tenant_id: String,
    /// The connection's org.
    pub org_id: Option<String>,
    /// The connection.
    pub connection_id: String,
    /// The source kind.
    pub kind: String,
    /// The JSON pointer that changed.
    pub pointer: String,
    /// `appeared`, `disappeared`, `type_changed` or `decimal_as_number`.
    pub change: String,
    /// What it was.
    pub was: String,
    /// What it is now.
    pub now: String,
    /// The delivery whose payload showed it.
    pub example_delivery_id: String,
    /// When it was found.
    pub detected_at: Millis,
}

/// A recorded drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Drift {
    /// Its id (time-ordered).
    pub id: String,
    /// The connection.
    pub connection_id: String,
    /// The source kind: the delivery's kind and the CRM's event kind (`webhook:deal.won`,
    /// `poll:*`).
    pub kind: String,
    /// The JSON pointer that changed (array elements as `*`).
    pub pointer: String,
    /// `appeared`, `disappeared`, `type_changed` or `decimal_as_number`.
    pub change: String,
    /// What it was: its JSON types so far (`string`), or `absent`.
    pub was: String,
    /// What it is now.
    pub now: String,
    /// The delivery whose payload showed it.
    pub example_delivery_id: String,
    /// When it was found.
    pub detected_at: Millis,
}
