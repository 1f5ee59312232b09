//! Running commands: load aggregates, decide, append, retry on conflict.
//!
//! A command may touch one aggregate ([`CommandHandler::execute`]) or several
//! ([`CommandHandler::transact`] with a [`Workflow`]: creating a user joins its
//! domain, claims its email and username, and creates the user — all or
//! nothing). Either way, within one attempt:
//!
//! 1. each aggregate involved is loaded — from an in-memory cache brought up to
//!    date by reading the events after the cached version, or from its stream;
//! 2. the aggregates decide; their events are collected;
//! 3. everything is appended in **one** batch in which every aggregate that
//!    was loaded — changed or only read — must still be at the version it was
//!    loaded at. A decision is therefore never based on stale state.
//!
//! If another writer got there first, the attempt is thrown away and run again
//! on fresh state, a bounded number of times; then the command fails with 409.
//! Commands of one process that conflicted on an aggregate then queue for it
//! (a gate per aggregate, taken only after a first conflict; a command about
//! to write an aggregate whose gate is taken joins that queue instead of
//! racing it), so a burst of
//! commands on one hot aggregate — users created concurrently in one domain —
//! goes through one after the other instead of failing each other; writers
//! of other processes are out-waited with a jittered, growing pause. With an idempotency key, a command already
//! carried out returns the first result without deciding again (deciding again
//! would see the first attempt's effect and refuse, e.g. "already exists").

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use manager_events::codec::{CodecError, decode, encode};
use manager_events::{
    AppendBatch, AppendResult, EventMetadata, EventStore, EventStoreError, ExpectedVersion,
    NewEvent, Problem, ProblemKind,
};

use crate::aggregate::Aggregate;

/// Attempts before a command that keeps conflicting is answered with 409.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// Gates that commands contending for one aggregate queue at (by hash of
/// the stream id; two aggregates may share a gate, which only serialises
/// them a little more).
const GATES: usize = 64;

/// Aggregates kept in memory; past this many the cache is emptied.
pub const DEFAULT_CACHE_ENTRIES: usize = 50_000;

/// A snapshot is saved when loading an aggregate replayed this many events.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 500;

/// What became of a single-aggregate command.
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

/// What became of a workflow.
#[derive(Debug, Clone)]
pub struct Transacted<T> {
    /// The workflow's output; `None` for the replay of an idempotent retry.
    pub output: Option<T>,
    /// Log position of the last event appended, if any.
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
    /// The streams kept changing under us: 409, the client may retry.
    #[error("{stream_id} changed concurrently {attempts} times in a row")]
    Conflict {
        /// A contended stream.
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
    /// Loading the aggregate failed; the problem says how, for the client.
    #[error("{0}")]
    Failed(Problem),
}

impl<E: std::error::Error + Into<Problem>> From<CommandError<E>> for Problem {
    fn from(err: CommandError<E>) -> Problem {
        match err {
            CommandError::Rejected(e) => e.into(),
            CommandError::Conflict { .. } => {
                Problem::new(ProblemKind::Conflict).msg(err.to_string())
            }
            CommandError::Store(e) => store_problem(e),
            CommandError::Failed(p) => p,
            other => Problem::new(ProblemKind::InternalServerError).msg(other.to_string()),
        }
    }
}

fn store_problem(err: EventStoreError) -> Problem {
    use diesel::result::{DatabaseErrorKind as K, Error as D};
    match err {
        EventStoreError::Invalid(invalid) => {
            Problem::new(ProblemKind::InvalidApiParams).msg(invalid.to_string())
        }
        EventStoreError::WrongExpectedVersion { .. } => {
            Problem::new(ProblemKind::Conflict).msg(err.to_string())
        }
        EventStoreError::Pool(_)
        | EventStoreError::ShuttingDown
        | EventStoreError::Timeout(_)
        | EventStoreError::CommitUncertain(_)
        | EventStoreError::Database(D::DatabaseError(
            K::ClosedConnection | K::UnableToSendCommand,
            _,
        )) => Problem::new(ProblemKind::ServiceUnavailable).msg(err.to_string()),
        other => Problem::new(ProblemKind::InternalServerError).msg(other.to_string()),
    }
}

/// A command over several aggregates, decided in one [`Tx`] and appended
/// atomically. `run` may be called more than once (after a conflict), so it
/// must not have side effects outside the `Tx`.
pub trait Workflow: Send + Sync {
    /// What a successful run returns.
    type Output: Send;

    /// Loads and decides through `tx`.
    fn run(&self, tx: &mut Tx<'_>) -> impl Future<Output = Result<Self::Output, Problem>> + Send;
}

struct Touched {
    stream_id: String,
    stream_type: &'static str,
    version: u64,
    state: Arc<dyn Any + Send + Sync>,
    events: Vec<NewEvent>,
    /// Taken from this process's cache without asking the log: right unless
    /// another process wrote the stream since.
    from_cache: bool,
}

/// One attempt at a command: the aggregates it loaded and the events it decided.
pub struct Tx<'h> {
    handler: &'h CommandHandler,
    touched: Vec<Touched>,
    /// Whether loads may trust the cache (see [`CommandHandler::transact`]).
    optimistic: bool,
}

/// The result of [`Tx::decide`].
#[derive(Debug, Clone)]
pub struct Decided<A: Aggregate> {
    /// The aggregate's state with the new events applied.
    pub state: A,
    /// The new events.
    pub events: Vec<A::Event>,
    /// The stream's version once the attempt commits.
    pub version: u64,
}

impl Tx<'_> {
    /// The aggregate's state as this attempt sees it (including events decided
    /// earlier in it). Its version is checked when the attempt commits.
    pub async fn load<A: Aggregate>(&mut self, stream_id: &str) -> Result<A, Problem> {
        if let Some(t) = self.touched.iter().find(|t| t.stream_id == stream_id) {
            return t
                .state
                .downcast_ref::<A>()
                .cloned()
                .ok_or_else(|| internal(format!("{stream_id} loaded as two aggregate types")));
        }
        let cached = if self.optimistic {
            self.handler.cached::<A>(stream_id)
        } else {
            None
        };
        let from_cache = cached.is_some();
        let (state, version) = match cached {
            Some(hit) => hit,
            None => self
                .handler
                .load::<A>(stream_id)
                .await
                .map_err(codec_or_store)?,
        };
        self.touched.push(Touched {
            stream_id: stream_id.to_owned(),
            stream_type: A::STREAM_TYPE,
            version,
            state: Arc::new(state.clone()),
            events: Vec::new(),
            from_cache,
        });
        Ok(state)
    }

    /// Takes a stream that should not exist yet (a freshly generated id) as
    /// empty without reading it. Only on a first attempt: if it does exist,
    /// the append's "no stream" check fails, and the next attempt reads it.
    /// A refusal decided on the presumption is decided again likewise.
    pub fn presume_new<A: Aggregate>(&mut self, stream_id: &str) {
        if !self.optimistic || self.touched.iter().any(|t| t.stream_id == stream_id) {
            return;
        }
        self.touched.push(Touched {
            stream_id: stream_id.to_owned(),
            stream_type: A::STREAM_TYPE,
            version: 0,
            state: Arc::new(A::default()),
            events: Vec::new(),
            from_cache: true,
        });
    }

    /// Decides `command` on the aggregate; its events are appended when the
    /// attempt commits. A refusal is returned as the aggregate's problem.
    pub async fn decide<A: Aggregate>(
        &mut self,
        stream_id: &str,
        command: &A::Command,
    ) -> Result<Decided<A>, Problem>
    where
        A::Error: Into<Problem>,
    {
        self.try_decide::<A>(stream_id, command)
            .await?
            .map_err(Into::into)
    }

    /// Like [`Tx::decide`], but hands the aggregate's own error back to the caller.
    pub async fn try_decide<A: Aggregate>(
        &mut self,
        stream_id: &str,
        command: &A::Command,
    ) -> Result<Result<Decided<A>, A::Error>, Problem> {
        let mut state = self.load::<A>(stream_id).await?;
        let events = match state.decide(command) {
            Ok(events) => events,
            Err(e) => return Ok(Err(e)),
        };
        let mut encoded = Vec::with_capacity(events.len());
        for event in &events {
            state.apply(event);
            let (event_type, payload) = encode(event).map_err(|e| internal(e.to_string()))?;
            encoded.push(NewEvent::new(event_type, payload));
        }
        let touched = self
            .touched
            .iter_mut()
            .find(|t| t.stream_id == stream_id)
            .ok_or_else(|| internal("decided on an aggregate that was not loaded".into()))?;
        touched.events.extend(encoded);
        touched.state = Arc::new(state.clone());
        let version = touched.version + touched.events.len() as u64;
        Ok(Ok(Decided {
            state,
            events,
            version,
        }))
    }

    /// Whether anything this attempt read came from the cache unchecked.
    fn trusted_cache(&self) -> bool {
        self.touched.iter().any(|t| t.from_cache)
    }

    fn batch(&self, metadata: &EventMetadata) -> Option<AppendBatch> {
        if self.touched.iter().all(|t| t.events.is_empty()) {
            return None;
        }
        let mut batch = AppendBatch::new().with_metadata(metadata.clone());
        for t in &self.touched {
            let expected = if t.version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(t.version)
            };
            batch = batch.stream(
                t.stream_id.clone(),
                t.stream_type,
                expected,
                t.events.clone(),
            );
        }
        Some(batch)
    }
}

fn internal(msg: String) -> Problem {
    Problem::new(ProblemKind::InternalServerError).msg(msg)
}

fn codec_or_store<E: std::error::Error>(err: CommandError<E>) -> Problem {
    match err {
        CommandError::Store(e) => store_problem(e),
        other => internal(other.to_string()),
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
    gates: Arc<[Arc<tokio::sync::Mutex<()>>]>,
    max_attempts: u32,
    cache_entries: usize,
    snapshot_every: u64,
}

impl CommandHandler {
    /// A handler over `store` with the default limits.
    pub fn new(store: EventStore) -> Self {
        CommandHandler {
            store,
            cache: Arc::new(Mutex::new(HashMap::new())),
            gates: (0..GATES)
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        }
    }

    /// Sets the number of attempts before a conflicting command gives up.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Saves a snapshot whenever loading replays at least `events` events.
    pub fn with_snapshot_every(mut self, events: u64) -> Self {
        self.snapshot_every = events.max(1);
        self
    }

    /// The event store.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The aggregate's current state and version (0 when it has no events):
    /// from the cache, else from its latest snapshot, brought up to date with
    /// the events after it. Loading that replays many events saves a new
    /// snapshot (best effort), so long streams load fast the next time.
    pub async fn load<A: Aggregate>(
        &self,
        stream_id: &str,
    ) -> Result<(A, u64), CommandError<A::Error>> {
        let cached = self.cached::<A>(stream_id);
        let from_cache = cached.is_some();
        let (mut state, mut version) = cached.unwrap_or_default();
        let newer = if from_cache {
            self.store.read_stream(stream_id, version).await?
        } else {
            // Most streams are short: read from the start, and look for a
            // snapshot only when the stream turns out to be long.
            let first = self
                .store
                .read_stream_page(stream_id, 0, self.snapshot_every)
                .await?;
            if (first.len() as u64) < self.snapshot_every {
                first
            } else if let Some((snap, at)) = self.snapshot::<A>(stream_id).await {
                (state, version) = (snap, at);
                self.store.read_stream(stream_id, at).await?
            } else {
                let mut all = first;
                let last = all.last().map_or(0, |e| e.stream_version);
                all.extend(self.store.read_stream(stream_id, last).await?);
                all
            }
        };
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
        if !newer.is_empty() || !from_cache {
            self.remember(stream_id, Arc::new(state.clone()), version);
        }
        if newer.len() as u64 >= self.snapshot_every {
            self.save_snapshot(stream_id, &state, version).await;
        }
        Ok((state, version))
    }

    /// The latest usable snapshot: same stream type and state schema.
    async fn snapshot<A: Aggregate>(&self, stream_id: &str) -> Option<(A, u64)> {
        let snap = match self.store.load_snapshot(stream_id).await {
            Ok(s) => s?,
            Err(e) => {
                tracing::warn!(stream_id, error = %e, "snapshot unavailable; replaying the stream");
                return None;
            }
        };
        if snap.stream_type != A::STREAM_TYPE || snap.schema_version != A::SNAPSHOT_SCHEMA {
            return None;
        }
        match serde_json::from_value::<A>(snap.state) {
            Ok(state) => Some((state, snap.stream_version)),
            Err(e) => {
                tracing::warn!(stream_id, error = %e, "snapshot unreadable; replaying the stream");
                None
            }
        }
    }

    async fn save_snapshot<A: Aggregate>(&self, stream_id: &str, state: &A, version: u64) {
        let Ok(json) = serde_json::to_value(state) else {
            return;
        };
        let snapshot = manager_events::Snapshot {
            stream_id: stream_id.to_owned(),
            stream_type: A::STREAM_TYPE.to_owned(),
            stream_version: version,
            schema_version: A::SNAPSHOT_SCHEMA,
            state: json,
            taken_at: None,
        };
        if let Err(e) = self.store.save_snapshot(&snapshot).await {
            tracing::warn!(stream_id, error = %e, "could not save a snapshot");
        }
    }

    /// Decides `command` against one aggregate and appends the result; see the
    /// module docs.
    pub async fn execute<A: Aggregate>(
        &self,
        stream_id: &str,
        command: A::Command,
        metadata: EventMetadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        let single = Single::<A> { stream_id, command };
        let done = self.attempts(&single, &metadata).await;
        let done = match done {
            Ok(done) => done,
            Err(AttemptError::Rejected(e)) => return Err(CommandError::Rejected(e)),
            Err(AttemptError::Conflict(stream_id)) => {
                return Err(CommandError::Conflict {
                    stream_id,
                    attempts: self.max_attempts,
                });
            }
            Err(AttemptError::Store(e)) => return Err(CommandError::Store(e)),
            Err(AttemptError::Problem(p)) => return Err(CommandError::Failed(p)),
        };
        let (events, state, version) = match done.output {
            Some(decided) => (decided.events, decided.state, decided.version),
            None => {
                // An idempotent replay: report the aggregate as it is now.
                let (state, version) = self.load::<A>(stream_id).await?;
                (Vec::new(), state, version)
            }
        };
        Ok(Executed {
            events,
            state,
            version,
            position: done.position,
            deduplicated: done.deduplicated,
        })
    }

    /// Runs a workflow over several aggregates and appends its decisions
    /// atomically; see the module docs. Every error is a [`Problem`] ready for
    /// the client: the aggregates' refusals, 409 after repeated conflicts, 503
    /// when the database is unavailable.
    pub async fn transact<W: Workflow>(
        &self,
        workflow: &W,
        metadata: EventMetadata,
    ) -> Result<Transacted<W::Output>, Problem> {
        let wrapped = Wrapped(workflow);
        self.attempts(&wrapped, &metadata)
            .await
            .map_err(|e| match e {
                AttemptError::Rejected(p) | AttemptError::Problem(p) => p,
                AttemptError::Conflict(stream_id) => {
                    Problem::new(ProblemKind::Conflict).msg(format!(
                        "{stream_id} changed concurrently {} times in a row; retry the request",
                        self.max_attempts
                    ))
                }
                AttemptError::Store(e) => store_problem(e),
            })
    }

    /// The retry loop shared by `execute` and `transact`.
    async fn attempts<W: Attempt>(
        &self,
        work: &W,
        metadata: &EventMetadata,
    ) -> Result<Transacted<W::Output>, AttemptError<W::Rejection>> {
        if let Some(key) = &metadata.idempotency_key
            && let Some(first) = self
                .store
                .idempotent_result(key)
                .await
                .map_err(AttemptError::Store)?
        {
            return Ok(Transacted {
                output: None,
                position: Some(first.last_position),
                deduplicated: true,
            });
        }
        let mut contended = String::new();
        // Held from the first conflict until this command is done; a command
        // holds at most one gate and never waits for another while holding
        // it, so gates cannot deadlock.
        let mut gate: Option<tokio::sync::OwnedMutexGuard<()>> = None;
        // The first attempt trusts the cache: its versions are checked by the
        // append anyway. A refusal or a no-op decided on cached state is not
        // trusted (another process may have changed the aggregates): the
        // attempt is made again on state read from the log.
        let mut optimistic = true;
        let mut attempt = 0;
        while attempt < self.max_attempts {
            let mut tx = Tx {
                handler: self,
                touched: Vec::new(),
                optimistic,
            };
            let output = work.attempt(&mut tx).await;
            let recheck = optimistic && tx.trusted_cache();
            optimistic = false;
            let output = match output {
                Err(AttemptError::Rejected(_)) if recheck => continue,
                other => other?,
            };
            let Some(batch) = tx.batch(metadata) else {
                if recheck {
                    continue;
                }
                return Ok(Transacted {
                    output: Some(output),
                    position: None,
                    deduplicated: false,
                });
            };
            attempt += 1;
            if gate.is_none()
                && let Some(queue) = tx
                    .touched
                    .iter()
                    .filter(|t| !t.events.is_empty())
                    .map(|t| self.gate(&t.stream_id))
                    .find(|g| g.try_lock().is_err())
            {
                // Commands of this process are queued for an aggregate this
                // one writes: join the queue (behind them, on fresh state)
                // rather than race the one whose turn it is.
                gate = Some(Arc::clone(queue).lock_owned().await);
                continue;
            }
            match self.store.append(batch).await {
                Ok(result) => {
                    self.remember_all(&tx, &result);
                    return Ok(Transacted {
                        output: (!result.deduplicated).then_some(output),
                        position: Some(result.last_position),
                        deduplicated: result.deduplicated,
                    });
                }
                Err(EventStoreError::WrongExpectedVersion { stream_id, .. }) => {
                    let aggregate = tx
                        .touched
                        .iter()
                        .find(|t| t.stream_id == stream_id)
                        .map_or("", |t| t.stream_type);
                    metrics::counter!("command_conflicts_total", "aggregate" => aggregate)
                        .increment(1);
                    if gate.is_none() {
                        // Queue behind this process's other writers of the
                        // aggregate; the next attempt loads what they wrote.
                        gate = Some(Arc::clone(self.gate(&stream_id)).lock_owned().await);
                    } else {
                        // Still conflicting: a writer in another process.
                        // Jittered, growing pause, so that contenders do not
                        // retry in lockstep.
                        let ceiling_us = 1000u64 << attempt.min(6);
                        let pause = rand::random_range(0..=ceiling_us);
                        tokio::time::sleep(std::time::Duration::from_micros(pause)).await;
                    }
                    contended = stream_id;
                }
                Err(err) => return Err(AttemptError::Store(err)),
            }
        }
        Err(AttemptError::Conflict(contended))
    }

    fn gate(&self, stream_id: &str) -> &Arc<tokio::sync::Mutex<()>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        stream_id.hash(&mut h);
        let i = usize::try_from(h.finish() % GATES as u64).unwrap_or(0);
        &self.gates[i]
    }

    fn remember_all(&self, tx: &Tx<'_>, result: &AppendResult) {
        if result.deduplicated {
            return;
        }
        for (t, appended) in tx.touched.iter().zip(&result.streams) {
            if !t.events.is_empty() {
                self.remember(&t.stream_id, t.state.clone(), appended.version);
            }
        }
    }

    /// The aggregate as this process last saw it, without asking the log:
    /// possibly stale, so only for fast paths whose answer is checked again
    /// (a pre-check that lets a command proceed to an attempt that verifies).
    pub fn cached_state<A: Aggregate>(&self, stream_id: &str) -> Option<A> {
        self.cached::<A>(stream_id).map(|(state, _)| state)
    }

    fn cached<A: Aggregate>(&self, stream_id: &str) -> Option<(A, u64)> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(stream_id)?;
        let state = entry.state.downcast_ref::<A>()?.clone();
        Some((state, entry.version))
    }

    fn remember(&self, stream_id: &str, state: Arc<dyn Any + Send + Sync>, version: u64) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= self.cache_entries && !cache.contains_key(stream_id) {
            // Crude but bounded: the cache is only a shortcut, the log is the truth.
            cache.clear();
        }
        let fresher = cache.get(stream_id).is_none_or(|c| c.version < version);
        if fresher {
            cache.insert(stream_id.to_owned(), Cached { state, version });
        }
    }
}

/// Why one attempt loop ended without a result.
enum AttemptError<R> {
    Rejected(R),
    Conflict(String),
    Store(EventStoreError),
    Problem(Problem),
}

/// The common shape of `execute`'s single decision and a `Workflow`.
trait Attempt: Sync {
    type Output: Send;
    type Rejection;
    fn attempt(
        &self,
        tx: &mut Tx<'_>,
    ) -> impl Future<Output = Result<Self::Output, AttemptError<Self::Rejection>>> + Send;
}

struct Single<'a, A: Aggregate> {
    stream_id: &'a str,
    command: A::Command,
}

impl<A: Aggregate> Attempt for Single<'_, A> {
    type Output = Decided<A>;
    type Rejection = A::Error;

    async fn attempt(&self, tx: &mut Tx<'_>) -> Result<Decided<A>, AttemptError<A::Error>> {
        match tx.try_decide::<A>(self.stream_id, &self.command).await {
            Ok(Ok(decided)) => Ok(decided),
            Ok(Err(rejected)) => Err(AttemptError::Rejected(rejected)),
            Err(problem) => Err(AttemptError::Problem(problem)),
        }
    }
}

struct Wrapped<'a, W: Workflow>(&'a W);

impl<W: Workflow> Attempt for Wrapped<'_, W> {
    type Output = W::Output;
    type Rejection = Problem;

    async fn attempt(&self, tx: &mut Tx<'_>) -> Result<W::Output, AttemptError<Problem>> {
        self.0.run(tx).await.map_err(AttemptError::Rejected)
    }
}
