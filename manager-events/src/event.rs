//! Events as they are read back from the log.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Binary, Integer, Nullable, Text, Timestamptz};
use uuid::Uuid;

use crate::append::EventMetadata;
use crate::error::EventStoreError;

/// An event as recorded in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Global position: dense (1, 2, 3, ...) and in commit order.
    pub position: u64,
    /// The stream the event belongs to.
    pub stream_id: String,
    /// The stream's type.
    pub stream_type: String,
    /// The event's version within its stream (1 for the first).
    pub stream_version: u64,
    /// The event's unique id.
    pub event_id: Uuid,
    /// The event's type name.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload.
    pub payload: serde_json::Value,
    /// Who and what caused it.
    pub metadata: EventMetadata,
    /// When its transaction took the log's lock (database clock).
    pub recorded_at: DateTime<Utc>,
    /// The writing transaction's id (`pg_current_xact_id()`); events appended
    /// in one transaction share it.
    pub xact_id: u64,
    /// SHA-256 chaining this event to the previous one (see [`crate::chain`]).
    pub hash: [u8; 32],
}

/// The columns every read selects, in the order of [`EventRow`].
pub(crate) const EVENT_COLUMNS: &str = "position, stream_id, stream_type, stream_version, \
     event_id, event_type, schema_version, payload::text AS payload, actor_access_key, \
     request_id, causation_id, correlation_id, idempotency_key, recorded_at, \
     xact_id::text::bigint AS xact_id, hash";

/// A row of `events` as selected with [`EVENT_COLUMNS`]; the payload is kept as
/// the exact stored text so that the chain can be verified.
#[derive(Debug, QueryableByName)]
pub(crate) struct EventRow {
    #[diesel(sql_type = BigInt)]
    pub position: i64,
    #[diesel(sql_type = Text)]
    pub stream_id: String,
    #[diesel(sql_type = Text)]
    pub stream_type: String,
    #[diesel(sql_type = BigInt)]
    pub stream_version: i64,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Integer)]
    pub schema_version: i32,
    #[diesel(sql_type = Text)]
    pub payload: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub actor_access_key: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub request_id: Option<String>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    pub causation_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    pub correlation_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    pub idempotency_key: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub recorded_at: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    pub xact_id: i64,
    #[diesel(sql_type = Binary)]
    pub hash: Vec<u8>,
}

impl EventRow {
    pub(crate) fn metadata(&self) -> EventMetadata {
        EventMetadata {
            actor_access_key: self.actor_access_key.clone(),
            request_id: self.request_id.clone(),
            causation_id: self.causation_id,
            correlation_id: self.correlation_id,
            idempotency_key: self.idempotency_key.clone(),
        }
    }
}

impl TryFrom<EventRow> for RecordedEvent {
    type Error = EventStoreError;

    fn try_from(row: EventRow) -> Result<Self, Self::Error> {
        let position = to_u64(row.position);
        let corrupt = |reason: String| EventStoreError::Corrupt { position, reason };
        let payload = serde_json::from_str(&row.payload).map_err(|e| corrupt(e.to_string()))?;
        let hash: [u8; 32] = row
            .hash
            .as_slice()
            .try_into()
            .map_err(|_| corrupt(format!("hash has {} bytes", row.hash.len())))?;
        let metadata = row.metadata();
        Ok(RecordedEvent {
            position,
            stream_version: to_u64(row.stream_version),
            schema_version: u32::try_from(row.schema_version).unwrap_or(0),
            xact_id: to_u64(row.xact_id),
            stream_id: row.stream_id,
            stream_type: row.stream_type,
            event_id: row.event_id,
            event_type: row.event_type,
            payload,
            metadata,
            recorded_at: row.recorded_at,
            hash,
        })
    }
}

/// Database integers are `bigint`; the log's counters are never negative
/// (CHECK constraints), so a negative value maps to 0 rather than wrapping.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Positions and versions as `bigint`; they stay far below `i64::MAX`.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
