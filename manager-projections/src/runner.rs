//! Driving projectors through the log.

use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
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
        }
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
        let mut conn = self
            .store
            .pool()
            .get()
            .await
            .map_err(|e| ProjectionError::Store(EventStoreError::Pool(e.to_string())))?;
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

    /// Applies batches until every projector has reached the log's head as it
    /// was when called.
    pub async fn catch_up(&self) -> Result<(), ProjectionError> {
        let head = self.store.head_position().await?;
        for projector in &self.projectors {
            loop {
                let status = self.status_of(projector.name()).await?;
                if status >= head {
                    break;
                }
                if self.step(projector.as_ref()).await? == 0 {
                    // Someone else holds it; give them a moment.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        Ok(())
    }

    /// Runs until `stop` turns true: applies batches as events arrive, woken by
    /// the store's notifications, polling as a fallback. Errors are logged and
    /// retried after a pause; a failing projector does not stop the others.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.store.config().poll_interval_ms.max(1));
        while !*stop.borrow() {
            let mut busy = false;
            let mut lowest = u64::MAX;
            for projector in &self.projectors {
                let _ = self.take_reached(projector.name());
                let committed = match self.step(projector.as_ref()).await {
                    Ok(n) => {
                        busy |= n > 0;
                        true
                    }
                    Err(err) => {
                        metrics::counter!("projection_failures_total", "projector" => projector.name()).increment(1);
                        tracing::error!(projector = projector.name(), error = %err, "projection batch failed; retrying");
                        tokio::time::sleep(poll).await;
                        false
                    }
                };
                // Where the step left the checkpoint; the database only when
                // the step did not say (another process held it, or it failed).
                let reached = match self.take_reached(projector.name()).filter(|_| committed) {
                    Some(p) => Some(p),
                    None => self.status_of(projector.name()).await.ok(),
                };
                if let Some(p) = reached {
                    lowest = lowest.min(p);
                }
            }
            if lowest != u64::MAX {
                self.progress.send_if_modified(|p| {
                    let moved = lowest > *p;
                    *p = (*p).max(lowest);
                    moved
                });
            }
            if self
                .skipped
                .swap(false, std::sync::atomic::Ordering::Relaxed)
                && !busy
            {
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
        let mut conn = self
            .store
            .pool()
            .get()
            .await
            .map_err(|e| ProjectionError::Store(EventStoreError::Pool(e.to_string())))?;
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
