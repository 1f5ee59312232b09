//! The event store's error type.
//!
//! Each variant says what the caller should do about it. At the HTTP edge the
//! command side maps them to problem+json: [`EventStoreError::WrongExpectedVersion`]
//! to a bounded retry and then 409, the validation variants to 400, and the rest to
//! 500/503.

use crate::append::ExpectedVersion;

/// Everything that can go wrong when appending, reading or subscribing.
#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    /// The stream was not at the expected version: someone else appended first.
    ///
    /// Reload the stream, decide again and retry (a bounded number of times);
    /// at the HTTP edge answer 409 when retries are exhausted. Nothing of the
    /// batch was written.
    #[error("stream {stream_id:?} is at version {actual}, but {expected} was expected")]
    WrongExpectedVersion {
        /// The first stream of the batch whose version did not match.
        stream_id: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's actual version (0 when it does not exist).
        actual: u64,
    },

    /// The stream exists with another stream type. A programming error: stream
    /// ids must be unique across types. Nothing was written.
    #[error("stream {stream_id:?} has type {existing:?}, not {requested:?}")]
    StreamTypeMismatch {
        /// The stream.
        stream_id: String,
        /// The type it was created with.
        existing: String,
        /// The type this batch named.
        requested: String,
    },

    /// The batch breaks a limit or a syntax rule. Fix the input; retrying the
    /// same batch fails the same way. Nothing was written.
    #[error("invalid append: {0}")]
    Invalid(#[from] InvalidAppend),

    /// A snapshot names a version the stream has not reached.
    #[error("snapshot of {stream_id:?} at version {version}, but the stream is at {actual}")]
    SnapshotAheadOfStream {
        /// The stream.
        stream_id: String,
        /// The version the snapshot claims.
        version: u64,
        /// The stream's actual version.
        actual: u64,
    },

    /// The connection failed while the transaction was committing: the append
    /// may or may not have landed. Retry with the same idempotency key to find
    /// out without appending twice.
    #[error("the database connection failed during commit; the append may have landed: {0}")]
    CommitUncertain(#[source] diesel::result::Error),

    /// A database error. Usually transient (connection lost, server restarting):
    /// retry later. Nothing was written by the failed call.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),

    /// No connection could be had from the pool within its timeout.
    #[error("database pool: {0}")]
    Pool(String),

    /// The database did not answer in time (see `transaction_timeout_ms`);
    /// nothing was written. Retry later.
    #[error("the database did not answer in time: {0}")]
    Timeout(&'static str),

    /// The store's writer has shut down (the process is stopping).
    #[error("the event store is shutting down")]
    ShuttingDown,

    /// A stored row could not be decoded (should never happen; the verifier
    /// and an operator should look at this position).
    #[error("event at position {position} could not be decoded: {reason}")]
    Corrupt {
        /// Position of the row.
        position: u64,
        /// What was wrong with it.
        reason: String,
    },
}

/// Why a batch was refused before it reached the database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAppend {
    /// A batch with no events at all.
    #[error("the batch has no events")]
    EmptyBatch,
    /// Too many events in one call.
    #[error("the batch has {events} events; at most {limit} are allowed per append")]
    BatchTooLarge {
        /// Events in the batch.
        events: usize,
        /// The configured limit.
        limit: usize,
    },
    /// One event's serialized payload is larger than allowed.
    #[error(
        "event {event_type:?} on stream {stream_id:?} has a payload of {size} bytes; the limit is {limit}"
    )]
    PayloadTooLarge {
        /// The stream.
        stream_id: String,
        /// The event's type.
        event_type: String,
        /// Its serialized size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A stream id that breaks the syntax rule.
    #[error("invalid stream id {stream_id:?}: {reason}")]
    StreamId {
        /// The offending id (truncated if very long).
        stream_id: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A stream type that breaks the syntax rule.
    #[error(
        "invalid stream type {0:?}: expected 1-64 characters of a-z, 0-9 and _, starting with a letter"
    )]
    StreamType(String),
    /// An event type that breaks the syntax rule.
    #[error(
        "invalid event type {0:?}: expected 1-128 characters of A-Z, a-z, 0-9, _ and ., starting with a letter"
    )]
    EventType(String),
    /// The same stream appears twice in one batch.
    #[error("stream {0:?} appears more than once in the batch")]
    DuplicateStream(String),
    /// Schema versions start at 1.
    #[error("event {0:?} has schema version 0; schema versions start at 1")]
    SchemaVersion(String),
    /// A metadata field (or idempotency key) that is too long or holds control characters.
    #[error("invalid metadata field {field}: {reason}")]
    Metadata {
        /// The field's name.
        field: &'static str,
        /// The rule it breaks.
        reason: &'static str,
    },
}

impl From<deadpool::managed::PoolError<diesel_async::pooled_connection::PoolError>>
    for EventStoreError
{
    fn from(err: deadpool::managed::PoolError<diesel_async::pooled_connection::PoolError>) -> Self {
        EventStoreError::Pool(err.to_string())
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = EventStoreError> = std::result::Result<T, E>;
