//! The event store handle: append, read, subscribe, snapshot, verify.

use std::sync::{Arc, Mutex};

use diesel::sql_types::{BigInt, Text};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::append::{AppendBatch, AppendResult, prepare};
use crate::chain::{self, ChainFields, ChainProblem, ChainReport};
use crate::config::EventStoreConfig;
use crate::error::{EventStoreError, Result};
use crate::event::{EVENT_COLUMNS, EventRow, RecordedEvent, to_i64, to_u64};
use crate::writer::{self, Pending, WriterMsg};

/// A pool of PostgreSQL connections (diesel-async over deadpool).
pub type PgPool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;
/// A connection taken from a [`PgPool`].
pub type PgConn = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;

/// Builds a connection pool of `size` connections for `database_url`.
///
/// Waiting for, creating and recycling a connection each time out after 10 s.
/// Each connection runs in READ COMMITTED and is set up with
/// `idle_in_transaction_session_timeout` =
/// `idle_in_transaction_ms` (0 leaves the server's setting): appends hold the
/// log's ordering lock for the length of their transaction, so a process that
/// stalls mid-transaction must not stall every writer in the cluster; the
/// server ends such a session and releases the lock.
///
/// Connections are recycled the fast way: a connection returned with an open
/// transaction or a broken socket is discarded, but no `SELECT 1` is sent on
/// every checkout (that would add a round trip to every append). A connection
/// that died while idle fails its first query, and the caller's retry gets a
/// fresh one.
pub fn build_pool(database_url: &str, size: usize, idle_in_transaction_ms: u64) -> Result<PgPool> {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        Box::pin(async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            // The log's ordering relies on READ COMMITTED (each statement
            // sees what committed before it), whatever the server's default.
            let mut setup = String::from("SET default_transaction_isolation = 'read committed';");
            if idle_in_transaction_ms > 0 {
                setup.push_str(&format!(
                    "SET idle_in_transaction_session_timeout = {idle_in_transaction_ms};"
                ));
            }
            conn.batch_execute(&setup)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    let timeout = Some(std::time::Duration::from_secs(10));
    PgPool::builder(manager)
        .max_size(size.max(1))
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| EventStoreError::Pool(e.to_string()))
}

/// A handle to the event log. Cheap to clone; all clones share one writer, one
/// pool and one notification listener.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    database_url: String,
    config: Arc<EventStoreConfig>,
    writer: mpsc::Sender<WriterMsg>,
    /// Highest position known to be committed; wakes subscribers.
    head: watch::Sender<u64>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut listener) = self.listener.lock()
            && let Some(task) = listener.take()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl EventStore {
    /// Opens a store over a new pool of `pool_size` connections. Must be called
    /// inside a tokio runtime (it starts the writer task).
    pub fn connect(database_url: &str, pool_size: usize, config: EventStoreConfig) -> Result<Self> {
        let pool = build_pool(database_url, pool_size, config.idle_in_transaction_ms)?;
        Ok(Self::new(pool, database_url, config))
    }

    /// Opens a store over an existing pool (build it with [`build_pool`] to get
    /// the transaction idle timeout). `database_url` is used for the one
    /// dedicated connection that LISTENs for new events. Must be called inside a
    /// tokio runtime (it starts the writer task).
    pub fn new(pool: PgPool, database_url: &str, config: EventStoreConfig) -> Self {
        describe_metrics();
        let config = Arc::new(config);
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let (head, _) = watch::channel(0);
        tokio::spawn(writer::run(pool.clone(), config.clone(), rx, head.clone()));
        EventStore {
            inner: Arc::new(Inner {
                pool,
                database_url: database_url.to_owned(),
                config,
                writer: tx,
                head,
                listener: Mutex::new(None),
            }),
        }
    }

    /// The store's settings.
    pub fn config(&self) -> &EventStoreConfig {
        &self.inner.config
    }

    /// The connection pool, for callers that share it (projections, queries).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Appends a batch atomically: every stream's expected version is checked
    /// and all events commit together, or nothing is written.
    ///
    /// With an idempotency key in the metadata, a key seen before returns the
    /// first append's result (with `deduplicated` set) and appends nothing.
    /// Concurrent calls are committed together by the group-commit writer, but
    /// each is judged on its own.
    pub async fn append(&self, batch: AppendBatch) -> Result<AppendResult> {
        let batch = match prepare(batch, &self.inner.config.limits()) {
            Ok(b) => b,
            Err(e) => {
                metrics::counter!("eventstore_append_calls_total", "outcome" => "invalid")
                    .increment(1);
                return Err(e.into());
            }
        };
        let (reply, answer) = oneshot::channel();
        self.inner
            .writer
            .send(WriterMsg::Append(Pending { batch, reply }))
            .await
            .map_err(|_| EventStoreError::ShuttingDown)?;
        answer.await.map_err(|_| EventStoreError::ShuttingDown)?
    }

    /// Events of one stream with a version greater than `after_version`, in
    /// order (0 reads the whole stream; after loading a snapshot at version `v`,
    /// pass `v`).
    pub async fn read_stream(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>> {
        let mut conn = self.inner.pool.get().await?;
        let rows: Vec<EventRow> = crate::prepared(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version > $2 \
             ORDER BY stream_version"
        ))
        .bind::<Text, _>(stream_id)
        .bind::<BigInt, _>(to_i64(after_version))
        .load(&mut conn)
        .await?;
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    /// Like [`EventStore::read_stream`], at most `limit` events.
    pub async fn read_stream_page(
        &self,
        stream_id: &str,
        after_version: u64,
        limit: u64,
    ) -> Result<Vec<RecordedEvent>> {
        let mut conn = self.inner.pool.get().await?;
        let rows: Vec<EventRow> = crate::prepared(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version > $2 \
             ORDER BY stream_version LIMIT $3"
        ))
        .bind::<Text, _>(stream_id)
        .bind::<BigInt, _>(to_i64(after_version))
        .bind::<BigInt, _>(to_i64(limit))
        .load(&mut conn)
        .await?;
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    /// The current version of a stream (0 when it does not exist).
    pub async fn stream_version(&self, stream_id: &str) -> Result<u64> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            stream_version: i64,
        }
        let mut conn = self.inner.pool.get().await?;
        let row: Option<Row> = crate::prepared(
            "SELECT stream_version FROM events WHERE stream_id = $1 \
             ORDER BY stream_version DESC LIMIT 1",
        )
        .bind::<Text, _>(stream_id)
        .get_result(&mut conn)
        .await
        .optional()?;
        Ok(row.map_or(0, |r| to_u64(r.stream_version)))
    }

    /// Up to `limit` events with a position greater than `after_position`, in
    /// global order. Pass the last position you processed (a checkpoint), or 0
    /// to read from the start. Positions are dense: no event committed after
    /// this call can ever get a position at or below the last one returned.
    pub async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let mut conn = self.inner.pool.get().await?;
        let rows = read_all_rows(&mut conn, after_position, limit).await?;
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    /// The stored result of an append made with this idempotency key, if any.
    /// A command handler checks it before deciding, since a retried command
    /// decided against the state its first attempt produced would be refused
    /// ("already exists") instead of answered with the first result.
    pub async fn idempotent_result(&self, key: &str) -> Result<Option<AppendResult>> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            result: String,
        }
        let mut conn = self.inner.pool.get().await?;
        let row: Option<Row> = crate::prepared(
            "SELECT result::text AS result FROM event_idempotency WHERE idempotency_key = $1",
        )
        .bind::<Text, _>(key)
        .get_result(&mut conn)
        .await
        .optional()?;
        row.map(|r| {
            let mut result: AppendResult =
                serde_json::from_str(&r.result).map_err(|e| EventStoreError::Corrupt {
                    position: 0,
                    reason: format!("stored result of idempotency key {key:?}: {e}"),
                })?;
            result.deduplicated = true;
            Ok(result)
        })
        .transpose()
    }

    /// [`EventStore::read_all`] on a connection the caller holds (e.g. inside
    /// its own transaction).
    pub async fn read_all_on(
        conn: &mut AsyncPgConnection,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let rows = read_all_rows(conn, after_position, limit).await?;
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    /// Position of the last committed event (0 for an empty log).
    pub async fn head_position(&self) -> Result<u64> {
        let mut conn = self.inner.pool.get().await?;
        Ok(to_u64(read_head(&mut conn).await?.position))
    }

    /// Asks the writer to finish the calls queued so far and stop. Later
    /// appends fail with [`EventStoreError::ShuttingDown`]; reads still work.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self
            .inner
            .writer
            .send(WriterMsg::Shutdown(done))
            .await
            .is_ok()
        {
            let _ = finished.await;
        }
    }

    /// Walks the log up to its current head and recomputes the hash chain; see
    /// [`crate::chain`]. Reads in pages, so it runs in constant memory on a log
    /// of any length, and it may run while appends go on (it checks the events
    /// up to the head it saw when it started).
    pub async fn verify_chain(&self) -> Result<ChainReport> {
        const PAGE: u64 = 1_000;
        let mut conn = self.inner.pool.get().await?;
        let head = read_head(&mut conn).await?;
        let head_position = to_u64(head.position);
        let mut previous = chain::GENESIS;
        let mut position = 0u64;
        let head_hash: [u8; 32] = head.hash.as_slice().try_into().unwrap_or([0; 32]);
        let report = |verified, problem| ChainReport {
            verified,
            head_position,
            head_hash,
            problem,
        };
        while position < head_position {
            let page = PAGE.min(head_position - position) as usize;
            let rows = read_all_rows(&mut conn, position, page).await?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let found = to_u64(row.position);
                if found > head_position {
                    break;
                }
                if found != position + 1 {
                    let problem = ChainProblem::Gap {
                        expected: position + 1,
                        found,
                    };
                    return Ok(report(position, Some(problem)));
                }
                let metadata = row.metadata();
                let fields = ChainFields {
                    position: row.position,
                    stream_id: &row.stream_id,
                    stream_type: &row.stream_type,
                    stream_version: row.stream_version,
                    event_id: row.event_id,
                    event_type: &row.event_type,
                    schema_version: row.schema_version,
                    payload: &row.payload,
                    metadata: &metadata,
                    recorded_at: row.recorded_at,
                    xact_id: row.xact_id,
                };
                let expected = chain::link(&previous, &fields);
                if row.hash.as_slice() != expected.as_slice() {
                    let problem = ChainProblem::HashMismatch { position: found };
                    return Ok(report(position, Some(problem)));
                }
                previous = expected;
                position = found;
            }
        }
        // The head must name the last event, with its hash: otherwise the tail
        // was removed or the head edited.
        if position != head_position || head.hash.as_slice() != previous.as_slice() {
            let problem = ChainProblem::HeadMismatch {
                head_position,
                last_position: position,
            };
            return Ok(report(position, Some(problem)));
        }
        Ok(report(position, None))
    }

    pub(crate) fn head_receiver(&self) -> watch::Receiver<u64> {
        self.ensure_listener();
        self.inner.head.subscribe()
    }

    pub(crate) fn database_url(&self) -> &str {
        &self.inner.database_url
    }

    /// Starts the LISTEN task the first time someone subscribes.
    fn ensure_listener(&self) {
        if !self.inner.config.listen {
            return;
        }
        let Ok(mut slot) = self.inner.listener.lock() else {
            return;
        };
        if slot.is_none() {
            let task = crate::subscription::listen(
                self.database_url().to_owned(),
                self.inner.head.clone(),
                self.inner.config.poll_interval(),
            );
            *slot = Some(tokio::spawn(task));
        }
    }
}

#[derive(QueryableByName)]
pub(crate) struct HeadState {
    #[diesel(sql_type = BigInt)]
    pub position: i64,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    pub hash: Vec<u8>,
}

async fn read_head(conn: &mut AsyncPgConnection) -> Result<HeadState> {
    Ok(crate::prepared("SELECT position, hash FROM event_log_head")
        .get_result(conn)
        .await?)
}

async fn read_all_rows(
    conn: &mut AsyncPgConnection,
    after_position: u64,
    limit: usize,
) -> Result<Vec<EventRow>> {
    Ok(crate::prepared(format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
    ))
    .bind::<BigInt, _>(to_i64(after_position))
    .bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX))
    .load(conn)
    .await?)
}

/// Names and explains the store's metrics, so that they are listed (at zero)
/// from the first scrape on, before anything happened.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "eventstore_append_calls_total",
        "Append calls by outcome: ok, deduplicated, conflict (wrong expected version), refused (other check), invalid (limits), error (database)."
    );
    describe_counter!(
        "eventstore_events_appended_total",
        "Events appended to the log."
    );
    describe_histogram!(
        "eventstore_group_calls",
        "Append calls committed together in one group-commit transaction."
    );
    describe_histogram!(
        "eventstore_group_commit_seconds",
        Unit::Seconds,
        "Duration of one group-commit transaction, lock to commit."
    );
    describe_gauge!(
        "eventstore_head_position",
        "Position of the last event this process committed."
    );
    describe_counter!(
        "eventstore_listener_failures_total",
        "Failures of the LISTEN connection; subscribers poll until it reconnects."
    );
    for outcome in [
        "ok",
        "deduplicated",
        "conflict",
        "refused",
        "invalid",
        "error",
    ] {
        metrics::counter!("eventstore_append_calls_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("eventstore_events_appended_total").increment(0);
    metrics::counter!("eventstore_listener_failures_total").increment(0);
}
