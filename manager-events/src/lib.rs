//! The shared vocabulary of the manager and its event store.
//!
//! The PostgreSQL event log is the only source of truth of the cluster: every
//! change is an event appended here, and everything else (read models, the
//! scheduler's memory, Redis keys, metrics) is derived from it.
//!
//! # Layout
//! - [`auth`]: the authenticated caller ([`auth::AuthContext`]).
//! - [`append`]: batches, streams, expected versions, events and metadata, and
//!   the limits a batch must respect.
//! - [`store`]: the [`EventStore`] handle — append, read a stream, read all.
//! - `writer`: the group-commit writer every append goes through.
//! - [`subscription`]: following the log from a checkpoint, woken by
//!   LISTEN/NOTIFY with polling as the fallback.
//! - [`snapshot`]: saving and loading aggregate snapshots.
//! - [`chain`]: the SHA-256 hash chain and its verifier.
//! - [`codec`]: how typed domain events become log entries and back.
//! - [`domain`], [`project`], [`user`], [`keypair`], [`policy`],
//!   [`user_policy`], [`project_policy`], [`scaling_group`], [`agent`],
//!   [`resource_preset`], [`reservation`], [`image`], [`session`]: the vocabulary of each aggregate
//!   (its events and fields); one module per noun joins them as the domain grows.
//! - [`slots`]: the known resource slots and exact slot arithmetic.
//! - [`migrations`]: the embedded schema.
//! - [`port`]: the command port through which the read side's mutations
//!   reach the write side.
//! - [`secrets`]: envelope encryption of keypair secret keys.
//! - [`problem`]: errors as clients see them (problem+json), shared by
//!   the command and query sides.
//! - `testing` (feature `testing`): isolated test databases.
//!
//! # Guarantees
//! - **Atomic, checked appends.** A batch of one or more streams commits
//!   entirely or not at all; a stream not at its expected version fails the
//!   whole batch with [`EventStoreError::WrongExpectedVersion`], naming the
//!   stream and its actual version.
//! - **Idempotency.** A batch whose idempotency key was seen before appends
//!   nothing and returns the first result.
//! - **Dense positions in commit order.** Positions 1, 2, 3, … are assigned
//!   under one lock held until commit, so a reader that has seen position `p`
//!   will never later find a new event at or below `p`: subscribers never skip
//!   an event and never see one twice.
//! - **Immutability.** The database refuses UPDATE, DELETE and TRUNCATE on the
//!   log, and a hash chain lets [`EventStore::verify_chain`] prove the log was
//!   not edited behind the guard's back.
//! - **Throughput.** Concurrent appends share one transaction (group commit)
//!   but are judged one by one: a conflicting call fails alone.
//!
//! See `docs/decisions/001-event-log.md` for why it is built this way.

pub mod agent;
pub mod append;
pub mod auth;
pub mod chain;
pub mod codec;
pub mod config;
pub mod domain;
pub mod error;
pub mod event;
pub mod image;
pub mod keypair;
pub mod migrations;
pub mod policy;
pub mod port;
pub mod prepared;
pub mod problem;
pub mod project;
pub mod project_policy;
pub mod reservation;
pub mod resource_preset;
pub mod scaling_group;
pub mod secrets;
pub mod session;
pub mod slots;
pub mod snapshot;
pub mod store;
pub mod subscription;
#[cfg(feature = "testing")]
pub mod testing;
pub mod user;
pub mod user_policy;
mod writer;

pub use append::{
    AppendBatch, AppendResult, EventMetadata, ExpectedVersion, NewEvent, StreamAppend,
    StreamAppended,
};
pub use chain::{ChainProblem, ChainReport};
pub use config::EventStoreConfig;
pub use error::{EventStoreError, InvalidAppend};
pub use event::RecordedEvent;
pub use prepared::prepared;
pub use problem::{Problem, ProblemKind};
pub use snapshot::Snapshot;
pub use store::{EventStore, PgConn, PgPool, build_pool};
