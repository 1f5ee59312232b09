//! Driving projectors through the log.

use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::{Array, BigInt, Text};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, TransactionManager};
use futures::future::BoxFuture;
use manager_events::codec::CodecError;
use manager_events::{EventStore, EventStoreError, RecordedEvent};
use tokio::sync::watch;

/// Why a projector could not apply a batch. The batch is rolled back and tried
/// again later; nothing is half-applied.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] EventStoreError),
    /// An event could not be decoded.
    #[error("event {position} could not be decoded: {source}")]
    Codec {
        /// The event's position.
        position: u64,
        /// Why.
        source: CodecError,
    },
    /// A projector-specific failure.
    #[error("{0}")]
    Other(String),
}

/// Folds events into read-model tables.
pub trait Projector: Send + Sync + 'static {
    /// Unique name; the key of its checkpoint.
    fn name(&self) -> &'static str;

    /// The tables it owns.
    fn tables(&self) -> &'static [&'static str];

    /// Applies a batch of events (in log order) to its tables, inside the
    /// runner's transaction. Must ignore events it does not care about, and
    /// must have no side effect outside the connection.
    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;
}

/// Where a projector is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorStatus {
    /// Its name.
    pub name: String,
    /// The last position it applied.
    pub position: u64,
    /// The log's head.
    pub head: u64,
}

impl ProjectorStatus {
    /// Events committed to the log but not yet applied.
    pub fn lag(&self) -> u64 {
        self.head.saturating_sub(self.position)
    }
}

#[derive(QueryableByName)]
struct Checkpoint {
    #[diesel(sql_type = BigInt)]
    position: i64,
}

/// Runs projectors over the event store.
#[derive(Clone)]
pub struct ProjectionRunner {
    store: EventStore,
    projectors: Vec<Arc<dyn Projector>>,
    batch: usize,
    /// Set when a step found its checkpoint locked by another process.
    skipped: Arc<std::sync::atomic::AtomicBool>,
    /// The lowest checkpoint after each round of [`ProjectionRunner::run`].
    progress: Arc<watch::Sender<u64>>,
    /// Where each projector's last step left its checkpoint (tentatively:
    /// the step's transaction may still roll back; `run` reads it only
    /// after the commit).
    reached: Arc<std::sync::Mutex<std::collections::HashMap<&'static str, u64>>>,
    /// Set once every projector's checkpoint row is known to exist.
    checkpoints_exist: Arc<std::sync::atomic::AtomicBool>,
}

/// What one [`ProjectionRunner::round`] did.
#[derive(Debug, Default)]
pub struct Round {
    /// Events applied, summed over projectors.
    pub applied: usize,
    /// Where each projector the round held stands now.
    pub reached: Vec<(&'static str, u64)>,
    /// Some checkpoint was held by another process.
    pub skipped: bool,
}

#[derive(QueryableByName)]
struct Held {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    position: i64,
}

impl ProjectionRunner {
    /// The event store it reads.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The projectors it runs.
    pub fn projectors(&self) -> &[Arc<dyn Projector>] {
        &self.projectors
    }

    /// A runner for these projectors, reading `batch` events per transaction.
    pub fn new(store: EventStore, projectors: Vec<Arc<dyn Projector>>, batch: usize) -> Self {
        ProjectionRunner {
            store,
            projectors,
            batch: batch.max(1),
            skipped: Arc::default(),
            progress: Arc::new(watch::channel(0).0),
            reached: Arc::default(),
            checkpoints_exist: Arc::default(),
        }
    }

    async fn connection(
        &self,
    ) -> Result<diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>, ProjectionError>
    {
        self.store
            .pool()
            .get()
            .await
            .map_err(|e| ProjectionError::Store(EventStoreError::Pool(e.to_string())))
    }

    fn note_reached(&self, name: &'static str, position: u64) {
        if let Ok(mut reached) = self.reached.lock() {
            reached.insert(name, position);
        }
    }

    fn take_reached(&self, name: &'static str) -> Option<u64> {
        self.reached.lock().ok().and_then(|mut r| r.remove(name))
    }

    /// Follows the position every projector of this runner has applied (the
    /// lowest checkpoint), updated after each round of
    /// [`ProjectionRunner::run`]: readers in this process learn that their
    /// write is projected without asking the database.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Applies at most one batch for one projector. Returns how many events it
    /// applied: 0 when the projector is caught up, or when another process
    /// holds its checkpoint right now.
    pub async fn step(&self, projector: &dyn Projector) -> Result<usize, ProjectionError> {
        let mut conn = self.connection().await?;
        let conn: &mut AsyncPgConnection = &mut conn;
        AnsiTransactionManager::begin_transaction(conn).await?;
        // Read models can always be rebuilt from the log, and the checkpoint
        // commits with the rows: a batch lost in a crash is applied again.
        // So a batch need not wait for its WAL flush.
        manager_events::prepared("SET LOCAL synchronous_commit TO OFF")
            .execute(conn)
            .await?;
        let result = self.step_in(conn, projector).await;
        match result {
            Ok(0) => {
                AnsiTransactionManager::rollback_transaction(conn).await?;
                Ok(0)
            }
            Ok(n) => {
                AnsiTransactionManager::commit_transaction(conn).await?;
                Ok(n)
            }
            Err(e) => {
                let _ = AnsiTransactionManager::rollback_transaction(conn).await;
                Err(e)
            }
        }
    }

    pub(crate) async fn step_in(
        &self,
        conn: &mut AsyncPgConnection,
        projector: &dyn Projector,
    ) -> Result<usize, ProjectionError> {
        let name = projector.name();
        let lock = || {
            manager_events::prepared(
                "SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE SKIP LOCKED",
            )
            .bind::<Text, _>(name)
        };
        let mut checkpoint: Option<Checkpoint> = lock().get_result(conn).await.optional()?;
        if checkpoint.is_none() {
            // A projector's first batch (no checkpoint row yet), or another
            // process holds the row: make sure it exists, then try again.
            manager_events::prepared(
                "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .bind::<Text, _>(name)
            .execute(conn)
            .await?;
            checkpoint = lock().get_result(conn).await.optional()?;
        }
        let Some(checkpoint) = checkpoint else {
            // Another process is applying a batch of this projector.
            self.skipped
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(0);
        };
        let from = u64::try_from(checkpoint.position).unwrap_or(0);
        // Read on the transaction's own connection: one connection per step.
        let events = EventStore::read_all_on(conn, from, self.batch).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            self.note_reached(name, from);
            return Ok(0);
        };
        projector.apply(conn, &events).await?;
        manager_events::prepared(
            "UPDATE projection_checkpoints SET position = $2, updated_at = now() WHERE name = $1",
        )
        .bind::<Text, _>(name)
        .bind::<BigInt, _>(i64::try_from(last).unwrap_or(i64::MAX))
        .execute(conn)
        .await?;
        self.note_reached(name, last);
        metrics::gauge!("projection_position", "projector" => name).set(last as f64);
        metrics::counter!("projection_events_applied_total", "projector" => name)
            .increment(events.len() as u64);
        Ok(events.len())
    }

    /// Applies at most one batch to every projector whose checkpoint no other
    /// process holds, in **one** transaction: the batch is read once, each
    /// projector applies the part past its checkpoint, and the checkpoints
    /// move together. If a projector fails, the round is rolled back and made
    /// again projector by projector ([`ProjectionRunner::step`]), so one
    /// failing projector holds up no other.
    pub async fn round(&self) -> Result<Round, ProjectionError> {
        match self.round_at_once().await {
            Ok(round) => Ok(round),
            Err(failed) => {
                tracing::warn!(error = %failed, "projection round failed; applying projector by projector");
                let mut round = Round::default();
                let mut first_error = None;
                for projector in &self.projectors {
                    let r = self.step(projector.as_ref()).await;
                    match r {
                        Ok(n) => {
                            round.applied += n;
                            if let Some(p) = self.take_reached(projector.name()) {
                                round.reached.push((projector.name(), p));
                            }
                        }
                        Err(e) => {
                            metrics::counter!("projection_failures_total", "projector" => projector.name()).increment(1);
                            tracing::error!(projector = projector.name(), error = %e, "projection batch failed; retrying");
                            first_error.get_or_insert(e);
                        }
                    }
                }
                round.skipped = self
                    .skipped
                    .swap(false, std::sync::atomic::Ordering::Relaxed);
                match first_error {
                    Some(e) if round.applied == 0 => Err(e),
                    _ => Ok(round),
                }
            }
        }
    }

    async fn round_at_once(&self) -> Result<Round, ProjectionError> {
        let mut conn = self.connection().await?;
        let conn: &mut AsyncPgConnection = &mut conn;
        let names: Vec<&'static str> = self.projectors.iter().map(|p| p.name()).collect();
        if !std::sync::atomic::AtomicBool::load(
            &self.checkpoints_exist,
            std::sync::atomic::Ordering::Relaxed,
        ) {
            manager_events::prepared(
                "INSERT INTO projection_checkpoints (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            )
            .bind::<Array<Text>, _>(&names)
            .execute(conn)
            .await?;
            self.checkpoints_exist
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        AnsiTransactionManager::begin_transaction(conn).await?;
        let result = async {
            // See `step`: read models can be rebuilt, the checkpoints commit
            // with the rows.
            manager_events::prepared("SET LOCAL synchronous_commit TO OFF")
                .execute(conn)
                .await?;
            let held: Vec<Held> = manager_events::prepared(
                "SELECT name, position FROM projection_checkpoints WHERE name = ANY($1) \
                 FOR UPDATE SKIP LOCKED",
            )
            .bind::<Array<Text>, _>(&names)
            .load(conn)
            .await?;
            let mut round = Round {
                skipped: held.len() < names.len(),
                ..Round::default()
            };
            let Some(from) = held.iter().map(|h| h.position).min() else {
                return Ok(round);
            };
            let events =
                EventStore::read_all_on(conn, u64::try_from(from).unwrap_or(0), self.batch)
                    .await?;
            let mut moved: Vec<(&'static str, i64)> = Vec::new();
            for projector in &self.projectors {
                let Some(h) = held.iter().find(|h| h.name == projector.name()) else {
                    continue;
                };
                let at = u64::try_from(h.position).unwrap_or(0);
                let start = events.partition_point(|e| e.position <= at);
                let Some(last) = events.last().map(|e| e.position).filter(|_| start < events.len())
                else {
                    round.reached.push((projector.name(), at));
                    continue;
                };
                projector.apply(conn, &events[start..]).await?;
                moved.push((projector.name(), i64::try_from(last).unwrap_or(i64::MAX)));
                round.reached.push((projector.name(), last));
                round.applied += events.len() - start;
                metrics::counter!("projection_events_applied_total", "projector" => projector.name())
                    .increment((events.len() - start) as u64);
            }
            if !moved.is_empty() {
                let (names, positions): (Vec<&str>, Vec<i64>) = moved.into_iter().unzip();
                manager_events::prepared(
                    "UPDATE projection_checkpoints c SET position = m.position, updated_at = now() \
                     FROM unnest($1::text[], $2::bigint[]) AS m(name, position) WHERE c.name = m.name",
                )
                .bind::<Array<Text>, _>(names)
                .bind::<Array<BigInt>, _>(positions)
                .execute(conn)
                .await?;
            }
            Ok::<_, ProjectionError>(round)
        }
        .await;
        match result {
            Ok(round) if round.applied > 0 => {
                AnsiTransactionManager::commit_transaction(conn).await?;
                for (name, p) in &round.reached {
                    metrics::gauge!("projection_position", "projector" => *name).set(*p as f64);
                }
                Ok(round)
            }
            Ok(round) => {
                AnsiTransactionManager::rollback_transaction(conn).await?;
                Ok(round)
            }
            Err(e) => {
                let _ = AnsiTransactionManager::rollback_transaction(conn).await;
                Err(e)
            }
        }
    }

    /// Applies batches until every projector has reached the log's head as it
    /// was when called.
    pub async fn catch_up(&self) -> Result<(), ProjectionError> {
        let head = self.store.head_position().await?;
        loop {
            let round = self.round().await?;
            let behind = round.reached.len() < self.projectors.len()
                || round.reached.iter().any(|(_, p)| *p < head);
            if !behind {
                return Ok(());
            }
            if round.applied == 0 {
                // Someone else holds a checkpoint; give them a moment.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Runs until `stop` turns true: applies batches as events arrive, woken by
    /// the store's notifications, polling as a fallback. Errors are logged and
    /// retried after a pause; a failing projector does not stop the others.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.store.config().poll_interval_ms.max(1));
        while !*stop.borrow() {
            let (busy, skipped, mut reached) = match self.round().await {
                Ok(round) => (round.applied > 0, round.skipped, round.reached),
                Err(err) => {
                    tracing::error!(error = %err, "projection round failed; retrying");
                    tokio::time::sleep(poll).await;
                    (false, true, Vec::new())
                }
            };
            // Where the others are: the database only for projectors the
            // round did not reach (another process held them, or they failed).
            for projector in &self.projectors {
                if !reached.iter().any(|(n, _)| *n == projector.name())
                    && let Ok(p) = self.status_of(projector.name()).await
                {
                    reached.push((projector.name(), p));
                }
            }
            let lowest = reached.iter().map(|(_, p)| *p).min().unwrap_or(u64::MAX);
            if lowest != u64::MAX {
                self.progress.send_if_modified(|p| {
                    let moved = lowest > *p;
                    *p = (*p).max(lowest);
                    moved
                });
            }
            if skipped && !busy {
                // Another process holds a checkpoint (working through a
                // backlog, say): notifications would wake us at once, over
                // and over, so stand by for a poll interval instead.
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = stop.changed() => {}
                }
            } else if !busy {
                tokio::select! {
                    _ = self.store.wait_for_events_after(lowest, poll) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    async fn status_of(&self, name: &str) -> Result<u64, ProjectionError> {
        let mut conn = self.connection().await?;
        let row: Option<Checkpoint> =
            manager_events::prepared("SELECT position FROM projection_checkpoints WHERE name = $1")
                .bind::<Text, _>(name)
                .get_result(&mut conn)
                .await
                .optional()?;
        Ok(row.map_or(0, |r| u64::try_from(r.position).unwrap_or(0)))
    }

    /// Each projector's position and lag behind the log's head.
    pub async fn status(&self) -> Result<Vec<ProjectorStatus>, ProjectionError> {
        let head = self.store.head_position().await?;
        let mut out = Vec::with_capacity(self.projectors.len());
        for projector in &self.projectors {
            let position = self.status_of(projector.name()).await?;
            metrics::gauge!("projection_lag_events", "projector" => projector.name())
                .set(head.saturating_sub(position) as f64);
            out.push(ProjectorStatus {
                name: projector.name().to_owned(),
                position,
                head,
            });
        }
        Ok(out)
    }
}
