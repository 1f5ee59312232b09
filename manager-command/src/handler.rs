//! Running commands: load the aggregate, decide, append, retry on conflict.
//!
//! [`CommandHandler::execute`] loads the aggregate's state — from an in-memory
//! cache brought up to date by reading the events after the cached version, or
//! from its whole stream — asks it to decide, and appends the decided events
//! with the version it decided on as the expected version. If another writer
//! got there first the append fails with a conflict; the handler reloads and
//! decides again, a bounded number of times, then gives up with
//! [`CommandError::Conflict`] (HTTP 409).
//!
//! With an idempotency key, a command already carried out returns the first
//! result without deciding again (deciding again would see the first attempt's
//! effect and refuse, e.g. "already exists").

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use manager_events::{
    AppendBatch, EventMetadata, EventStore, EventStoreError, ExpectedVersion, NewEvent, Problem,
    ProblemKind,
};

use manager_events::codec::{CodecError, decode, encode};

use crate::aggregate::Aggregate;

/// Attempts before a command that keeps conflicting is answered with 409.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Aggregates kept in memory; past this many the cache is emptied.
pub const DEFAULT_CACHE_ENTRIES: usize = 50_000;

/// What became of a command.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The events appended (empty when there was nothing to do, or when this
    /// is the replay of an idempotent retry).
    pub events: Vec<A::Event>,
    /// The aggregate's state after the command.
    pub state: A,
    /// The stream's version after the command.
    pub version: u64,
    /// Log position of the last event appended; `None` when nothing was
    /// appended. Queries use it for read-your-writes.
    pub position: Option<u64>,
    /// True when an earlier command with the same idempotency key did the work.
    pub deduplicated: bool,
}

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused it (an invariant). Answer with the domain error.
    #[error(transparent)]
    Rejected(E),
    /// The stream kept changing under us: 409, the client may retry.
    #[error("{stream_id} changed concurrently {attempts} times in a row")]
    Conflict {
        /// The contended stream.
        stream_id: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The log refused or failed the append.
    #[error(transparent)]
    Store(#[from] EventStoreError),
    /// A stored event could not be decoded (a bug, or a schema change without
    /// an upcaster).
    #[error("event {position} of {stream_id} could not be decoded: {source}")]
    Codec {
        /// The stream.
        stream_id: String,
        /// The event's position.
        position: u64,
        /// What went wrong.
        source: CodecError,
    },
}

impl<E: std::error::Error + Into<Problem>> From<CommandError<E>> for Problem {
    fn from(err: CommandError<E>) -> Problem {
        match err {
            CommandError::Rejected(e) => e.into(),
            CommandError::Conflict { .. } => {
                Problem::new(ProblemKind::Conflict).msg(err.to_string())
            }
            CommandError::Store(EventStoreError::Invalid(invalid)) => {
                Problem::new(ProblemKind::InvalidApiParams).msg(invalid.to_string())
            }
            CommandError::Store(EventStoreError::WrongExpectedVersion { .. }) => {
                Problem::new(ProblemKind::Conflict).msg(err.to_string())
            }
            CommandError::Store(
                EventStoreError::Pool(_)
                | EventStoreError::ShuttingDown
                | EventStoreError::CommitUncertain(_),
            ) => Problem::new(ProblemKind::ServiceUnavailable).msg(err.to_string()),
            other => Problem::new(ProblemKind::InternalServerError).msg(other.to_string()),
        }
    }
}

struct Cached {
    state: Arc<dyn Any + Send + Sync>,
    version: u64,
}

/// Executes commands against aggregates stored in the event log.
#[derive(Clone)]
pub struct CommandHandler {
    store: EventStore,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    max_attempts: u32,
    cache_entries: usize,
}

impl CommandHandler {
    /// A handler over `store` with the default limits.
    pub fn new(store: EventStore) -> Self {
        CommandHandler {
            store,
            cache: Arc::new(Mutex::new(HashMap::new())),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            cache_entries: DEFAULT_CACHE_ENTRIES,
        }
    }

    /// Sets the number of attempts before a conflicting command gives up.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The event store.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The aggregate's current state and version (0 when it has no events).
    pub async fn load<A: Aggregate>(
        &self,
        stream_id: &str,
    ) -> Result<(A, u64), CommandError<A::Error>> {
        let cached = self.cached::<A>(stream_id);
        let (mut state, mut version) = cached.unwrap_or_default();
        let newer = self.store.read_stream(stream_id, version).await?;
        for recorded in &newer {
            let event: A::Event =
                decode(&recorded.event_type, &recorded.payload).map_err(|source| {
                    CommandError::Codec {
                        stream_id: stream_id.to_owned(),
                        position: recorded.position,
                        source,
                    }
                })?;
            state.apply(&event);
            version = recorded.stream_version;
        }
        if !newer.is_empty() {
            self.remember(stream_id, &state, version);
        }
        Ok((state, version))
    }

    /// Decides `command` against the aggregate at `stream_id` and appends the
    /// result, retrying on conflicts; see the module docs.
    pub async fn execute<A: Aggregate>(
        &self,
        stream_id: &str,
        command: A::Command,
        metadata: EventMetadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        if let Some(key) = &metadata.idempotency_key
            && let Some(first) = self.store.idempotent_result(key).await?
        {
            let (state, version) = self.load::<A>(stream_id).await?;
            return Ok(Executed {
                events: Vec::new(),
                state,
                version,
                position: Some(first.last_position),
                deduplicated: true,
            });
        }
        for attempt in 0..self.max_attempts {
            let (mut state, version) = self.load::<A>(stream_id).await?;
            let events = state.decide(&command).map_err(CommandError::Rejected)?;
            if events.is_empty() {
                return Ok(Executed {
                    events,
                    state,
                    version,
                    position: None,
                    deduplicated: false,
                });
            }
            let mut new_events = Vec::with_capacity(events.len());
            for event in &events {
                let (event_type, payload) =
                    encode(event).map_err(|source| CommandError::Codec {
                        stream_id: stream_id.to_owned(),
                        position: 0,
                        source,
                    })?;
                new_events.push(NewEvent::new(event_type, payload));
            }
            let expected = if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            };
            let batch = AppendBatch::single(stream_id, A::STREAM_TYPE, expected, new_events)
                .with_metadata(metadata.clone());
            match self.store.append(batch).await {
                Ok(result) => {
                    for event in &events {
                        state.apply(event);
                    }
                    let version = result.streams.first().map_or(version, |s| s.version);
                    if result.deduplicated {
                        // A concurrent twin with the same key won the race.
                        let (state, version) = self.load::<A>(stream_id).await?;
                        return Ok(Executed {
                            events: Vec::new(),
                            state,
                            version,
                            position: Some(result.last_position),
                            deduplicated: true,
                        });
                    }
                    self.remember(stream_id, &state, version);
                    return Ok(Executed {
                        events,
                        state,
                        version,
                        position: Some(result.last_position),
                        deduplicated: false,
                    });
                }
                Err(EventStoreError::WrongExpectedVersion { .. }) => {
                    metrics::counter!("command_conflicts_total", "aggregate" => A::STREAM_TYPE)
                        .increment(1);
                    // Jittered, growing pause, so that writers contending for
                    // one aggregate do not retry in lockstep.
                    let ceiling_ms = 1u64 << attempt.min(6);
                    let pause = rand::random_range(0..=ceiling_ms * 1000);
                    tokio::time::sleep(std::time::Duration::from_micros(pause)).await;
                    continue;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(CommandError::Conflict {
            stream_id: stream_id.to_owned(),
            attempts: self.max_attempts,
        })
    }

    fn cached<A: Aggregate>(&self, stream_id: &str) -> Option<(A, u64)> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(stream_id)?;
        let state = entry.state.downcast_ref::<A>()?.clone();
        Some((state, entry.version))
    }

    fn remember<A: Aggregate>(&self, stream_id: &str, state: &A, version: u64) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= self.cache_entries && !cache.contains_key(stream_id) {
            // Crude but bounded: the cache is only a shortcut, the log is the truth.
            cache.clear();
        }
        let fresher = cache.get(stream_id).is_none_or(|c| c.version < version);
        if fresher {
            cache.insert(
                stream_id.to_owned(),
                Cached {
                    state: Arc::new(state.clone()),
                    version,
                },
            );
        }
    }
}
