//! What an append is made of: batches of streams, expected versions, events and
//! their metadata, and the checks a batch passes before it reaches the database.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::InvalidAppend;

/// The version a stream must be at for an append to it to be accepted.
///
/// Versions count a stream's events: a stream that does not exist is at 0, and
/// its first event has version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check: append whatever the stream's version.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must be exactly at this version (`Exact(0)` is `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    pub fn admits(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(n) => actual == n,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(n) => write!(f, "version {n}"),
        }
    }
}

/// An event to append: its id, type, schema version and JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique id of the event. Side effects it causes (agent RPCs) use it as
    /// their idempotency key, so callers may need it before the append.
    pub event_id: Uuid,
    /// The event's type name, e.g. `SessionCreated`.
    pub event_type: String,
    /// Version of the payload's schema, starting at 1; old versions are upcast
    /// on read, never rewritten.
    pub schema_version: u32,
    /// The payload.
    pub payload: serde_json::Value,
}

impl NewEvent {
    /// An event of schema version 1 with a fresh time-ordered (v7) id.
    pub fn new(event_type: impl Into<String>, payload: serde_json::Value) -> Self {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
        }
    }

    /// Sets the schema version.
    pub fn with_schema_version(mut self, schema_version: u32) -> Self {
        self.schema_version = schema_version;
        self
    }
}

/// Who and what caused a batch; copied onto each of its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Access key of the user or service that issued the command.
    pub actor_access_key: Option<String>,
    /// Id of the HTTP request (or other request) that carried the command.
    pub request_id: Option<String>,
    /// Id of the event that caused this command, if an event did.
    pub causation_id: Option<Uuid>,
    /// Id shared by everything done for one user action.
    pub correlation_id: Option<Uuid>,
    /// Makes the append idempotent: a second append with the same key appends
    /// nothing and returns the first append's result. Keys are kept forever.
    pub idempotency_key: Option<String>,
}

/// The events to append to one stream, and the version it must be at.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    /// The stream's id, e.g. `session-0190f3b4-...`.
    pub stream_id: String,
    /// The kind of aggregate the stream belongs to, e.g. `session`.
    pub stream_type: String,
    /// The version the stream must be at.
    pub expected: ExpectedVersion,
    /// The events, in order. May be empty: the stream's version is then only
    /// checked, which lets one decision depend on a stream it does not change.
    pub events: Vec<NewEvent>,
}

/// One atomic append: all streams' events are committed together, or none is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppendBatch {
    /// The streams, each with its expected version and events.
    pub streams: Vec<StreamAppend>,
    /// Metadata copied onto every event of the batch.
    pub metadata: EventMetadata,
}

impl AppendBatch {
    /// An empty batch; add streams with [`AppendBatch::stream`].
    pub fn new() -> Self {
        AppendBatch::default()
    }

    /// A batch of events for a single stream.
    pub fn single(
        stream_id: impl Into<String>,
        stream_type: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Self {
        AppendBatch::new().stream(stream_id, stream_type, expected, events)
    }

    /// Adds a stream to the batch.
    pub fn stream(
        mut self,
        stream_id: impl Into<String>,
        stream_type: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Self {
        self.streams.push(StreamAppend {
            stream_id: stream_id.into(),
            stream_type: stream_type.into(),
            expected,
            events,
        });
        self
    }

    /// Sets the batch's metadata.
    pub fn with_metadata(mut self, metadata: EventMetadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.metadata.idempotency_key = Some(key.into());
        self
    }

    /// Number of events in the batch.
    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|s| s.events.len()).sum()
    }
}

/// What an append did to one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamAppended {
    /// The stream.
    pub stream_id: String,
    /// Its version after the append (unchanged for a stream given no events).
    pub version: u64,
}

/// The result of an accepted append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// Position of the batch's first event in the log.
    pub first_position: u64,
    /// Position of its last event. Positions of one batch are contiguous.
    pub last_position: u64,
    /// Each stream's new version, in the batch's order.
    pub streams: Vec<StreamAppended>,
    /// True when this is the stored result of an earlier append with the same
    /// idempotency key, and nothing was appended now.
    #[serde(skip)]
    pub deduplicated: bool,
}

/// Limits a batch must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest serialized payload of one event, in bytes.
    pub max_payload_bytes: usize,
    /// Most events in one append.
    pub max_events_per_append: usize,
}

/// Longest stream id, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 200;
/// Longest metadata string or idempotency key, in bytes.
pub const MAX_METADATA_LEN: usize = 255;

/// A batch that passed validation, with each payload serialized once, so that the
/// bytes that are hashed are exactly the bytes that are stored.
#[derive(Debug)]
pub(crate) struct PreparedBatch {
    pub streams: Vec<PreparedStream>,
    pub metadata: EventMetadata,
    pub event_count: usize,
    /// Serialized payload bytes, for the writer's group size limit.
    pub payload_bytes: usize,
}

#[derive(Debug)]
pub(crate) struct PreparedStream {
    pub stream_id: String,
    pub stream_type: String,
    pub expected: ExpectedVersion,
    pub events: Vec<PreparedEvent>,
}

#[derive(Debug)]
pub(crate) struct PreparedEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: String,
}

/// Checks every rule and serializes the payloads.
pub(crate) fn prepare(batch: AppendBatch, limits: &Limits) -> Result<PreparedBatch, InvalidAppend> {
    let event_count = batch.event_count();
    if event_count == 0 {
        return Err(InvalidAppend::EmptyBatch);
    }
    if event_count > limits.max_events_per_append
        || batch.streams.len() > limits.max_events_per_append
    {
        return Err(InvalidAppend::BatchTooLarge {
            events: event_count,
            limit: limits.max_events_per_append,
        });
    }
    validate_metadata(&batch.metadata)?;
    let mut seen = HashSet::with_capacity(batch.streams.len());
    let mut streams = Vec::with_capacity(batch.streams.len());
    for stream in batch.streams {
        validate_stream_id(&stream.stream_id)?;
        if !valid_stream_type(&stream.stream_type) {
            return Err(InvalidAppend::StreamType(truncated(&stream.stream_type)));
        }
        if !seen.insert(stream.stream_id.clone()) {
            return Err(InvalidAppend::DuplicateStream(stream.stream_id));
        }
        let mut events = Vec::with_capacity(stream.events.len());
        for event in stream.events {
            if !valid_event_type(&event.event_type) {
                return Err(InvalidAppend::EventType(truncated(&event.event_type)));
            }
            let schema_version = i32::try_from(event.schema_version)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| InvalidAppend::SchemaVersion(event.event_type.clone()))?;
            let payload = event.payload.to_string();
            if payload.len() > limits.max_payload_bytes {
                return Err(InvalidAppend::PayloadTooLarge {
                    stream_id: stream.stream_id,
                    event_type: event.event_type,
                    size: payload.len(),
                    limit: limits.max_payload_bytes,
                });
            }
            events.push(PreparedEvent {
                event_id: event.event_id,
                event_type: event.event_type,
                schema_version,
                payload,
            });
        }
        streams.push(PreparedStream {
            stream_id: stream.stream_id,
            stream_type: stream.stream_type,
            expected: match stream.expected {
                ExpectedVersion::Exact(0) => ExpectedVersion::NoStream,
                other => other,
            },
            events,
        });
    }
    let payload_bytes = streams
        .iter()
        .flat_map(|s| &s.events)
        .map(|e| e.payload.len())
        .sum();
    Ok(PreparedBatch {
        streams,
        metadata: batch.metadata,
        event_count,
        payload_bytes,
    })
}

/// Stream ids: 1 to 200 bytes of ASCII letters, digits and `-_.:@`, starting
/// with a letter or digit. Ids appear in URLs, logs and metrics labels; the
/// rule keeps them safe to print and to quote.
pub fn validate_stream_id(stream_id: &str) -> Result<(), InvalidAppend> {
    let reason = if stream_id.is_empty() {
        Some("it is empty")
    } else if stream_id.len() > MAX_STREAM_ID_LEN {
        Some("it is longer than 200 bytes")
    } else if !stream_id.as_bytes()[0].is_ascii_alphanumeric() {
        Some("it must start with a letter or digit")
    } else if !stream_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
    {
        Some("only ASCII letters, digits and - _ . : @ are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(InvalidAppend::StreamId {
            stream_id: truncated(stream_id),
            reason,
        }),
        None => Ok(()),
    }
}

fn valid_stream_type(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_event_type(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

fn validate_metadata(m: &EventMetadata) -> Result<(), InvalidAppend> {
    let fields = [
        ("actor_access_key", &m.actor_access_key),
        ("request_id", &m.request_id),
        ("idempotency_key", &m.idempotency_key),
    ];
    for (field, value) in fields {
        let Some(value) = value else { continue };
        let reason = if value.is_empty() {
            Some("it is empty")
        } else if value.len() > MAX_METADATA_LEN {
            Some("it is longer than 255 bytes")
        } else if value.chars().any(char::is_control) {
            Some("it contains control characters")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(InvalidAppend::Metadata { field, reason });
        }
    }
    Ok(())
}

/// Cuts an offending value to a printable length for an error message.
fn truncated(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: Limits = Limits {
        max_payload_bytes: 64,
        max_events_per_append: 3,
    };

    fn ev() -> NewEvent {
        NewEvent::new("Thing", json!({"a": 1}))
    }

    #[test]
    fn stream_id_rules() {
        for ok in ["a", "session-0190f3b4", "agent:i-ag1", "user@x.y", "9_z"] {
            assert!(validate_stream_id(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(201);
        for bad in ["", "-a", "a b", "a/b", "é", long.as_str(), "a\0b"] {
            assert!(validate_stream_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let empty = AppendBatch::single("s-1", "thing", ExpectedVersion::Any, vec![]);
        assert_eq!(
            prepare(empty, &LIMITS).unwrap_err(),
            InvalidAppend::EmptyBatch
        );

        let big = AppendBatch::single("s-1", "thing", ExpectedVersion::Any, vec![ev(); 4]);
        assert!(matches!(
            prepare(big, &LIMITS).unwrap_err(),
            InvalidAppend::BatchTooLarge {
                events: 4,
                limit: 3
            }
        ));

        let fat = NewEvent::new("Thing", json!({"x": "y".repeat(64)}));
        let batch = AppendBatch::single("s-1", "thing", ExpectedVersion::Any, vec![fat]);
        assert!(matches!(
            prepare(batch, &LIMITS).unwrap_err(),
            InvalidAppend::PayloadTooLarge {
                size: 72,
                limit: 64,
                ..
            }
        ));

        let dup = AppendBatch::new()
            .stream("s-1", "thing", ExpectedVersion::Any, vec![ev()])
            .stream("s-1", "thing", ExpectedVersion::Any, vec![]);
        assert_eq!(
            prepare(dup, &LIMITS).unwrap_err(),
            InvalidAppend::DuplicateStream("s-1".into())
        );

        let zero = AppendBatch::single(
            "s-1",
            "thing",
            ExpectedVersion::Any,
            vec![ev().with_schema_version(0)],
        );
        assert!(matches!(
            prepare(zero, &LIMITS).unwrap_err(),
            InvalidAppend::SchemaVersion(_)
        ));

        let key = AppendBatch::single("s-1", "thing", ExpectedVersion::Any, vec![ev()])
            .with_idempotency_key("a\nb");
        assert!(matches!(
            prepare(key, &LIMITS).unwrap_err(),
            InvalidAppend::Metadata {
                field: "idempotency_key",
                ..
            }
        ));

        for bad_type in ["", "Thing", "a-b", "9z"] {
            let b = AppendBatch::single("s-1", bad_type, ExpectedVersion::Any, vec![ev()]);
            assert!(prepare(b, &LIMITS).is_err(), "{bad_type:?}");
        }
        for bad_event in ["", "1A", "A B", "A-B"] {
            let b = AppendBatch::single(
                "s-1",
                "thing",
                ExpectedVersion::Any,
                vec![NewEvent::new(bad_event, json!(null))],
            );
            assert!(
                matches!(
                    prepare(b, &LIMITS).unwrap_err(),
                    InvalidAppend::EventType(_)
                ),
                "{bad_event:?}"
            );
        }
    }

    #[test]
    fn exact_zero_means_no_stream() {
        let b = AppendBatch::single("s-1", "thing", ExpectedVersion::Exact(0), vec![ev()]);
        assert_eq!(
            prepare(b, &LIMITS).unwrap().streams[0].expected,
            ExpectedVersion::NoStream
        );
    }

    #[test]
    fn expected_version_admits() {
        assert!(ExpectedVersion::Any.admits(0) && ExpectedVersion::Any.admits(7));
        assert!(ExpectedVersion::NoStream.admits(0) && !ExpectedVersion::NoStream.admits(1));
        assert!(ExpectedVersion::Exact(3).admits(3) && !ExpectedVersion::Exact(3).admits(2));
    }
}
