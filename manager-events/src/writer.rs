//! The group-commit writer.
//!
//! Every append goes through one task per store. The task takes the first
//! waiting call, then every call already queued behind it (up to the group
//! limits), and commits them all in **one** transaction that holds the log's
//! ordering lock. Calls are judged one by one inside that transaction — each
//! call's idempotency key and expected versions are checked against the log
//! *and* against the calls accepted before it in the same group — so a
//! conflicting call fails alone while its neighbours commit.
//!
//! Why: positions are assigned under a lock held through commit (that is what
//! makes them dense and in commit order), and a lock held through commit stops
//! PostgreSQL from sharing one WAL flush among concurrent commits. Gathering
//! calls into one transaction gives that sharing back: N waiting calls cost one
//! flush. No artificial delay is added: a group is whatever queued while the
//! previous transaction was committing.
//!
//! If the group's transaction fails before COMMIT (nothing was written), each
//! of its calls is retried alone, so one call that trips the database cannot
//! fail the others. If it fails *during* COMMIT the outcome is unknown, and each
//! call gets [`EventStoreError::CommitUncertain`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Binary, Integer, Nullable, Text, Timestamptz};
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, TransactionManager};
use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::append::{AppendResult, PreparedBatch, StreamAppended};
use crate::chain::{self, ChainFields};
use crate::config::{EventStoreConfig, Faults};
use crate::error::{EventStoreError, Result};
use crate::event::{to_i64, to_u64};
use crate::store::PgPool;

/// A message to the writer task.
pub(crate) enum WriterMsg {
    Append(Pending),
    /// Stop after the calls queued before this one; reply when done.
    Shutdown(oneshot::Sender<()>),
}

/// One append call waiting for the writer.
pub(crate) struct Pending {
    pub batch: PreparedBatch,
    pub reply: oneshot::Sender<Result<AppendResult>>,
}

/// Runs the writer until every sender is gone or a shutdown is asked for.
pub(crate) async fn run(
    pool: PgPool,
    config: Arc<EventStoreConfig>,
    mut rx: mpsc::Receiver<WriterMsg>,
    head: watch::Sender<u64>,
) {
    let mut group: Vec<Pending> = Vec::new();
    let mut shutdown: Option<oneshot::Sender<()>> = None;
    while shutdown.is_none() {
        let Some(first) = rx.recv().await else { break };
        let mut events = 0;
        let mut bytes = 0;
        match first {
            WriterMsg::Append(p) => {
                events += p.batch.event_count;
                bytes += p.batch.payload_bytes;
                group.push(p);
            }
            WriterMsg::Shutdown(done) => shutdown = Some(done),
        }
        while shutdown.is_none()
            && group.len() < config.max_group_calls
            && events < config.max_group_events
            && bytes < config.max_group_bytes
        {
            match rx.try_recv() {
                Ok(WriterMsg::Append(p)) => {
                    events += p.batch.event_count;
                    bytes += p.batch.payload_bytes;
                    group.push(p);
                }
                Ok(WriterMsg::Shutdown(done)) => shutdown = Some(done),
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            commit_group(&pool, &config, std::mem::take(&mut group), &head).await;
        }
    }
    rx.close();
    // Calls that raced with the shutdown get a clear answer instead of a hang.
    while let Ok(msg) = rx.try_recv() {
        match msg {
            WriterMsg::Append(p) => {
                let _ = p.reply.send(Err(EventStoreError::ShuttingDown));
            }
            WriterMsg::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

/// Commits one group and answers each of its calls.
async fn commit_group(
    pool: &PgPool,
    config: &EventStoreConfig,
    group: Vec<Pending>,
    head: &watch::Sender<u64>,
) {
    let started = Instant::now();
    let calls = group.len();
    let batches: Vec<&PreparedBatch> = group.iter().map(|p| &p.batch).collect();
    match transact(pool, config, &batches).await {
        Ok((verdicts, last_position)) => {
            finish(group, verdicts, last_position, head);
            metrics::histogram!("eventstore_group_calls").record(calls as f64);
            metrics::histogram!("eventstore_group_commit_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        Err(TxError::BeforeCommit(err)) => {
            // Nothing was written. Retry each call alone, on a fresh
            // connection: the one that tripped the database fails by itself,
            // and a transient failure (a dead pooled connection) heals.
            tracing::warn!(error = %err, calls, "group append failed before commit; retrying its calls one by one");
            for pending in group {
                let single = [&pending.batch];
                match transact(pool, config, &single).await {
                    Ok((verdicts, last_position)) => {
                        finish(vec![pending], verdicts, last_position, head)
                    }
                    Err(err) => fail(pending, err.into_error()),
                }
            }
        }
        Err(TxError::AtCommit(err)) => {
            for pending in group {
                fail(pending, EventStoreError::CommitUncertain(copy_error(&err)));
            }
        }
    }
}

fn fail(pending: Pending, err: EventStoreError) {
    metrics::counter!("eventstore_append_calls_total", "outcome" => "error").increment(1);
    let _ = pending.reply.send(Err(err));
}

/// Sends each call its verdict and wakes in-process subscribers.
fn finish(
    group: Vec<Pending>,
    verdicts: Vec<Result<AppendResult>>,
    last_position: Option<u64>,
    head: &watch::Sender<u64>,
) {
    if let Some(last) = last_position {
        head.send_if_modified(|known| {
            let newer = last > *known;
            if newer {
                *known = last;
            }
            newer
        });
        metrics::gauge!("eventstore_head_position").set(last as f64);
    }
    for (pending, verdict) in group.into_iter().zip(verdicts) {
        let outcome = match &verdict {
            Ok(r) if r.deduplicated => "deduplicated",
            Ok(_) => {
                metrics::counter!("eventstore_events_appended_total")
                    .increment(pending.batch.event_count as u64);
                "ok"
            }
            Err(EventStoreError::WrongExpectedVersion { .. }) => "conflict",
            Err(_) => "refused",
        };
        metrics::counter!("eventstore_append_calls_total", "outcome" => outcome).increment(1);
        let _ = pending.reply.send(verdict);
    }
}

/// Where a group's transaction failed.
#[derive(Debug)]
enum TxError {
    /// Rolled back: nothing was written.
    BeforeCommit(EventStoreError),
    /// The COMMIT itself failed: the outcome is unknown.
    AtCommit(diesel::result::Error),
}

impl TxError {
    fn into_error(self) -> EventStoreError {
        match self {
            TxError::BeforeCommit(e) => e,
            TxError::AtCommit(e) => EventStoreError::CommitUncertain(e),
        }
    }
}

/// A copy of a database error, one for each call of a group whose COMMIT failed.
fn copy_error(e: &diesel::result::Error) -> diesel::result::Error {
    use diesel::result::Error as D;
    match e {
        D::DatabaseError(kind, info) => {
            D::DatabaseError(*kind, Box::new(info.message().to_owned()))
        }
        other => D::QueryBuilderError(other.to_string().into()),
    }
}

/// The log's head as the lock returned it.
struct Head {
    position: i64,
    hash: [u8; 32],
    now: DateTime<Utc>,
    xact_id: i64,
}

impl Head {
    fn parse(row: StateRow) -> Result<Head> {
        let corrupt = |reason: &str| EventStoreError::Corrupt {
            position: to_u64(row.version),
            reason: format!("event_log_head: {reason}"),
        };
        let hash = hex::decode(&row.value)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| corrupt("hash is not 32 bytes"))?;
        Ok(Head {
            position: row.version,
            hash,
            now: row.at.ok_or_else(|| corrupt("no clock"))?,
            xact_id: row.key.parse().map_err(|_| corrupt("bad transaction id"))?,
        })
    }
}

/// A row of `event_log_lock()`: the head, a stream's type and version, or a
/// stored idempotency result.
#[derive(QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Text)]
    value: String,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    at: Option<DateTime<Utc>>,
}

/// One transaction for a group: lock, judge each call, insert the accepted
/// ones, move the head, commit. Returns each call's verdict and the new head.
async fn transact(
    pool: &PgPool,
    config: &EventStoreConfig,
    group: &[&PreparedBatch],
) -> Result<(Vec<Result<AppendResult>>, Option<u64>), TxError> {
    let limit = Duration::from_millis(config.transaction_timeout_ms.max(1));
    let mut conn = pool
        .get()
        .await
        .map_err(|e| TxError::BeforeCommit(e.into()))?;
    let conn: &mut AsyncPgConnection = &mut conn;
    // On a timeout the future is dropped mid-transaction; the pool then
    // discards the connection (it is still inside a transaction), which
    // closes it, and the server rolls back.
    let decided = tokio::time::timeout(limit, async {
        AnsiTransactionManager::begin_transaction(conn).await?;
        match judge_and_write(conn, &config.faults, group).await {
            Ok(done) => Ok(done),
            Err(err) => {
                let _ = AnsiTransactionManager::rollback_transaction(conn).await;
                Err(err)
            }
        }
    })
    .await
    .map_err(|_| TxError::BeforeCommit(EventStoreError::Timeout("append transaction")))?
    .map_err(TxError::BeforeCommit)?;
    match decided {
        (verdicts, None) => {
            // Nothing to write (all refused or deduplicated): just let go of the lock.
            AnsiTransactionManager::rollback_transaction(conn)
                .await
                .map_err(|e| TxError::BeforeCommit(e.into()))?;
            Ok((verdicts, None))
        }
        (verdicts, Some(last)) => {
            tokio::time::timeout(limit, AnsiTransactionManager::commit_transaction(conn))
                .await
                .map_err(|_| {
                    TxError::AtCommit(diesel::result::Error::QueryBuilderError(
                        "COMMIT timed out".into(),
                    ))
                })?
                .map_err(TxError::AtCommit)?;
            Ok((verdicts, Some(last)))
        }
    }
}

/// Column-wise rows for the `unnest` insert, borrowing from the group.
#[derive(Default)]
struct Rows<'a> {
    position: Vec<i64>,
    stream_id: Vec<&'a str>,
    stream_type: Vec<&'a str>,
    stream_version: Vec<i64>,
    event_id: Vec<Uuid>,
    event_type: Vec<&'a str>,
    schema_version: Vec<i32>,
    payload: Vec<&'a str>,
    actor_access_key: Vec<Option<&'a str>>,
    request_id: Vec<Option<&'a str>>,
    causation_id: Vec<Option<Uuid>>,
    correlation_id: Vec<Option<Uuid>>,
    idempotency_key: Vec<Option<&'a str>>,
    hash: Vec<[u8; 32]>,
}

async fn judge_and_write(
    conn: &mut AsyncPgConnection,
    faults: &Faults,
    group: &[&PreparedBatch],
) -> Result<(Vec<Result<AppendResult>>, Option<u64>)> {
    let delay = injected_delay(faults);
    if let Some(d) = delay {
        tokio::time::sleep(d / 2).await;
    }
    // Take the lock and read what the log holds now for every stream and key
    // the group names, in one round trip (see `event_log_lock` in the migrations).
    let keys: Vec<&str> = group
        .iter()
        .filter_map(|b| b.metadata.idempotency_key.as_deref())
        .collect();
    let mut ids: Vec<&str> = group
        .iter()
        .flat_map(|b| b.streams.iter().map(|s| s.stream_id.as_str()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let state: Vec<StateRow> = crate::prepared("SELECT * FROM event_log_lock($1, $2)")
        .bind::<Array<Text>, _>(&ids)
        .bind::<Array<Text>, _>(&keys)
        .load(conn)
        .await?;
    if let Some(d) = delay {
        tokio::time::sleep(d / 2).await;
    }
    let mut head = None;
    let mut streams: HashMap<String, (String, u64)> = HashMap::with_capacity(state.len());
    let mut known_results: HashMap<String, AppendResult> = HashMap::new();
    for row in state {
        match row.kind.as_str() {
            "head" => head = Some(Head::parse(row)?),
            "key" => {
                let result: AppendResult =
                    serde_json::from_str(&row.value).map_err(|e| EventStoreError::Corrupt {
                        position: 0,
                        reason: format!("stored result of idempotency key {:?}: {e}", row.key),
                    })?;
                known_results.insert(row.key, result);
            }
            _ => {
                streams.insert(row.key, (row.value, to_u64(row.version)));
            }
        }
    }
    let head = head.ok_or_else(|| EventStoreError::Corrupt {
        position: 0,
        reason: "the event_log_head row is missing".into(),
    })?;

    // Judge each call against the log and the calls accepted before it.
    let mut position = to_u64(head.position);
    let mut previous = head.hash;
    let mut rows = Rows::default();
    let mut new_keys: Vec<(String, String)> = Vec::new();
    let mut verdicts = Vec::with_capacity(group.len());
    for batch in group {
        if let Some(key) = &batch.metadata.idempotency_key
            && let Some(first) = known_results.get(key)
        {
            verdicts.push(Ok(AppendResult {
                deduplicated: true,
                ..first.clone()
            }));
            continue;
        }
        if let Err(err) = check(batch, &streams) {
            verdicts.push(Err(err));
            continue;
        }
        let first_position = position + 1;
        let mut appended = Vec::with_capacity(batch.streams.len());
        for stream in &batch.streams {
            if stream.events.is_empty() {
                // A pure version check: it must not create the stream, nor
                // claim its type for the calls judged after it in this group.
                let version = streams.get(&stream.stream_id).map_or(0, |(_, v)| *v);
                appended.push(StreamAppended {
                    stream_id: stream.stream_id.clone(),
                    version,
                });
                continue;
            }
            let entry = streams
                .entry(stream.stream_id.clone())
                .or_insert_with(|| (stream.stream_type.clone(), 0));
            for event in &stream.events {
                position += 1;
                entry.1 += 1;
                let fields = ChainFields {
                    position: to_i64(position),
                    stream_id: &stream.stream_id,
                    stream_type: &stream.stream_type,
                    stream_version: to_i64(entry.1),
                    event_id: event.event_id,
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    payload: &event.payload,
                    metadata: &batch.metadata,
                    recorded_at: head.now,
                    xact_id: head.xact_id,
                };
                previous = chain::link(&previous, &fields);
                rows.push(&fields, previous);
            }
            appended.push(StreamAppended {
                stream_id: stream.stream_id.clone(),
                version: entry.1,
            });
        }
        let result = AppendResult {
            first_position,
            last_position: position,
            streams: appended,
            deduplicated: false,
        };
        if let Some(key) = &batch.metadata.idempotency_key {
            let stored = serde_json::to_string(&result).map_err(|e| EventStoreError::Corrupt {
                position: first_position,
                reason: e.to_string(),
            })?;
            new_keys.push((key.clone(), stored));
            known_results.insert(key.clone(), result.clone());
        }
        verdicts.push(Ok(result));
    }
    if rows.position.is_empty() {
        return Ok((verdicts, None));
    }

    let (keys, results): (Vec<String>, Vec<String>) = new_keys.into_iter().unzip();
    rows.write(conn, head.now, keys, results, position, previous)
        .await?;
    Ok((verdicts, Some(position)))
}

/// A call's expected versions and stream types against the current state.
fn check(batch: &PreparedBatch, streams: &HashMap<String, (String, u64)>) -> Result<()> {
    for stream in &batch.streams {
        let (existing_type, actual) = match streams.get(&stream.stream_id) {
            Some((t, v)) => (Some(t), *v),
            None => (None, 0),
        };
        if let Some(existing) = existing_type
            && *existing != stream.stream_type
        {
            return Err(EventStoreError::StreamTypeMismatch {
                stream_id: stream.stream_id.clone(),
                existing: existing.clone(),
                requested: stream.stream_type.clone(),
            });
        }
        if !stream.expected.admits(actual) {
            return Err(EventStoreError::WrongExpectedVersion {
                stream_id: stream.stream_id.clone(),
                expected: stream.expected,
                actual,
            });
        }
    }
    Ok(())
}

impl<'a> Rows<'a> {
    fn push(&mut self, f: &ChainFields<'a>, hash: [u8; 32]) {
        self.position.push(f.position);
        self.stream_id.push(f.stream_id);
        self.stream_type.push(f.stream_type);
        self.stream_version.push(f.stream_version);
        self.event_id.push(f.event_id);
        self.event_type.push(f.event_type);
        self.schema_version.push(f.schema_version);
        self.payload.push(f.payload);
        self.actor_access_key
            .push(f.metadata.actor_access_key.as_deref());
        self.request_id.push(f.metadata.request_id.as_deref());
        self.causation_id.push(f.metadata.causation_id);
        self.correlation_id.push(f.metadata.correlation_id);
        self.idempotency_key
            .push(f.metadata.idempotency_key.as_deref());
        self.hash.push(hash);
    }

    /// Writes the events, the new idempotency keys and the moved head in one
    /// statement.
    async fn write(
        self,
        conn: &mut AsyncPgConnection,
        now: DateTime<Utc>,
        keys: Vec<String>,
        results: Vec<String>,
        head_position: u64,
        head_hash: [u8; 32],
    ) -> Result<()> {
        use diesel::sql_types::Uuid as SqlUuid;
        crate::prepared(include_str!("sql/write_group.sql"))
            .bind::<Array<BigInt>, _>(self.position)
            .bind::<Array<Text>, _>(self.stream_id)
            .bind::<Array<Text>, _>(self.stream_type)
            .bind::<Array<BigInt>, _>(self.stream_version)
            .bind::<Array<SqlUuid>, _>(self.event_id)
            .bind::<Array<Text>, _>(self.event_type)
            .bind::<Array<Integer>, _>(self.schema_version)
            .bind::<Array<Text>, _>(self.payload)
            .bind::<Array<Nullable<Text>>, _>(self.actor_access_key)
            .bind::<Array<Nullable<Text>>, _>(self.request_id)
            .bind::<Array<Nullable<SqlUuid>>, _>(self.causation_id)
            .bind::<Array<Nullable<SqlUuid>>, _>(self.correlation_id)
            .bind::<Array<Nullable<Text>>, _>(self.idempotency_key)
            .bind::<Array<Binary>, _>(self.hash.iter().map(|h| h.as_slice()).collect::<Vec<_>>())
            .bind::<Timestamptz, _>(now)
            .bind::<Array<Text>, _>(keys)
            .bind::<Array<Text>, _>(results)
            .bind::<BigInt, _>(to_i64(head_position))
            .bind::<Binary, _>(head_hash.to_vec())
            .execute(conn)
            .await?;
        Ok(())
    }
}

fn injected_delay(faults: &Faults) -> Option<Duration> {
    let max = faults.max_delay_in_transaction?;
    let mut rng = rand::rng();
    if !rng.random_bool(faults.delay_share.clamp(0.0, 1.0)) {
        return None;
    }
    Some(max.mul_f64(rng.random::<f64>()))
}
