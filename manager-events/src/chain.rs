//! The hash chain that lets an audit prove the log was not edited.
//!
//! Each event stores `SHA-256(previous hash ‖ encoding of the event)`, the first
//! event chaining to 32 zero bytes. The encoding covers every stored column: the
//! position, stream id, type and version, event id and type, schema version, the
//! payload's exact stored text (the column is `json`, which keeps the bytes it is
//! given), each metadata field, the recorded time in microseconds and the writing
//! transaction's id. Strings are length-prefixed and optional fields carry a
//! presence byte, so no two different events encode alike.
//!
//! The database refuses UPDATE, DELETE and TRUNCATE on the log; the chain
//! catches what a superuser could still do with the guard disabled: an edited
//! row, a deleted row (a gap in the dense positions), or a truncated tail (the
//! head row no longer matches the last event).

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::append::EventMetadata;

/// The chain's anchor: the "previous hash" of the first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// The fields of one event that its hash covers.
pub(crate) struct ChainFields<'a> {
    pub position: i64,
    pub stream_id: &'a str,
    pub stream_type: &'a str,
    pub stream_version: i64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub payload: &'a str,
    pub metadata: &'a EventMetadata,
    pub recorded_at: DateTime<Utc>,
    pub xact_id: i64,
}

/// The hash of an event given the hash of the one before it.
pub(crate) fn link(previous: &[u8; 32], e: &ChainFields<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(e.position.to_be_bytes());
    text(&mut h, e.stream_id);
    text(&mut h, e.stream_type);
    h.update(e.stream_version.to_be_bytes());
    h.update(e.event_id.as_bytes());
    text(&mut h, e.event_type);
    h.update(e.schema_version.to_be_bytes());
    text(&mut h, e.payload);
    optional(
        &mut h,
        e.metadata.actor_access_key.as_deref().map(str::as_bytes),
    );
    optional(&mut h, e.metadata.request_id.as_deref().map(str::as_bytes));
    optional(
        &mut h,
        e.metadata.causation_id.as_ref().map(|u| &u.as_bytes()[..]),
    );
    optional(
        &mut h,
        e.metadata
            .correlation_id
            .as_ref()
            .map(|u| &u.as_bytes()[..]),
    );
    optional(
        &mut h,
        e.metadata.idempotency_key.as_deref().map(str::as_bytes),
    );
    h.update(e.recorded_at.timestamp_micros().to_be_bytes());
    h.update(e.xact_id.to_be_bytes());
    h.finalize().into()
}

fn text(h: &mut Sha256, s: &str) {
    bytes(h, s.as_bytes());
}

fn bytes(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_be_bytes());
    h.update(b);
}

fn optional(h: &mut Sha256, b: Option<&[u8]>) {
    match b {
        None => h.update([0u8]),
        Some(b) => {
            h.update([1u8]);
            bytes(h, b);
        }
    }
}

/// What [`crate::EventStore::verify_chain`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events whose hash was recomputed and matched.
    pub verified: u64,
    /// The head row's position (the last committed event when it started).
    pub head_position: u64,
    /// The head row's hash. Record it with the position: if the event at that
    /// position later has another hash, history before it was rewritten.
    pub head_hash: [u8; 32],
    /// The first problem found, if any; verification stops there.
    pub problem: Option<ChainProblem>,
}

impl ChainReport {
    /// True when the whole log verified.
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// A break in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// A row's stored hash does not match its content and its predecessor:
    /// the row (or an earlier one) was edited.
    HashMismatch {
        /// Position of the first row that does not verify.
        position: u64,
    },
    /// A position is missing: a row was deleted.
    Gap {
        /// The position that should have come next.
        expected: u64,
        /// The position found instead.
        found: u64,
    },
    /// The head row does not match the last event: rows were removed from the
    /// tail, or the head was edited.
    HeadMismatch {
        /// Position recorded in the head row.
        head_position: u64,
        /// Position of the last event actually present.
        last_position: u64,
    },
}

impl std::fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainProblem::HashMismatch { position } => {
                write!(
                    f,
                    "event {position} does not match its hash: it or an earlier event was edited"
                )
            }
            ChainProblem::Gap { expected, found } => {
                write!(
                    f,
                    "event {expected} is missing (next present is {found}): events were deleted"
                )
            }
            ChainProblem::HeadMismatch {
                head_position,
                last_position,
            } => write!(
                f,
                "the log head says {head_position} but the last event present is {last_position}: the tail was removed or the head edited"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(payload: &'a str, metadata: &'a EventMetadata) -> ChainFields<'a> {
        ChainFields {
            position: 1,
            stream_id: "s-1",
            stream_type: "thing",
            stream_version: 1,
            event_id: Uuid::nil(),
            event_type: "Made",
            schema_version: 1,
            payload,
            metadata,
            recorded_at: DateTime::<Utc>::UNIX_EPOCH,
            xact_id: 7,
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let m = EventMetadata::default();
        let base = link(&GENESIS, &fields("{}", &m));
        assert_ne!(base, link(&[1; 32], &fields("{}", &m)), "previous hash");
        assert_ne!(base, link(&GENESIS, &fields("{ }", &m)), "payload bytes");
        let with_key = EventMetadata {
            idempotency_key: Some(String::new()),
            ..EventMetadata::default()
        };
        assert_ne!(
            base,
            link(&GENESIS, &fields("{}", &with_key)),
            "empty vs absent"
        );
        let mut f = fields("{}", &m);
        f.xact_id = 8;
        assert_ne!(base, link(&GENESIS, &f), "xact id");
        assert_eq!(base, link(&GENESIS, &fields("{}", &m)), "deterministic");
    }
}
