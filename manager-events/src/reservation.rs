//! Reservations: uniqueness of values across aggregates (a user's email, a
//! username) without a unique index on a read model.
//!
//! Each reservable value has a stream `unique:<scope>:<sha256 of the value>`
//! (hashed, so any value fits the stream-id syntax and none is spelled out in
//! the stream id). Claiming it is an event on that stream, appended in the
//! same atomic batch as the aggregate that needs it, so two users can never
//! both get one email, even when created at the same instant on two managers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The stream type of reservations.
pub const STREAM_TYPE: &str = "unique";

/// The stream of one reservable value. Values are trimmed and compared without
/// regard to case: `Alice@Example.com` and `alice@example.com` are one email.
pub fn stream_id(scope: &str, value: &str) -> String {
    let normalized = value.trim().to_lowercase();
    format!(
        "unique:{scope}:{}",
        hex::encode(Sha256::digest(normalized.as_bytes()))
    )
}

/// Events of a reservation stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationEvent {
    /// The value now belongs to `holder` (e.g. a user's stream id).
    Claimed {
        /// Who holds it.
        holder: String,
    },
    /// The value is free again.
    Released {
        /// Who held it.
        holder: String,
    },
}
