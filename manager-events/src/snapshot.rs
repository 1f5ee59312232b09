//! Snapshots: an aggregate's state saved at a stream version, so that loading an
//! aggregate with a long stream reads the snapshot and only the events after it.
//!
//! Snapshots are a cache, not a record: they may be replaced by newer ones or
//! thrown away, and an aggregate must load the same with or without them.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Integer, Text, Timestamptz};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::RunQueryDsl;

use crate::error::{EventStoreError, Result};
use crate::event::{to_i64, to_u64};
use crate::store::EventStore;

/// An aggregate's state as of a stream version.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The stream.
    pub stream_id: String,
    /// The stream's type.
    pub stream_type: String,
    /// The version of the last event folded into `state`.
    pub stream_version: u64,
    /// Version of the state's schema; a reader that does not know it ignores
    /// the snapshot and replays the stream.
    pub schema_version: u32,
    /// The state.
    pub state: serde_json::Value,
    /// When it was saved (set by the store).
    pub taken_at: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct SnapshotRow {
    #[diesel(sql_type = Text)]
    stream_id: String,
    #[diesel(sql_type = Text)]
    stream_type: String,
    #[diesel(sql_type = BigInt)]
    stream_version: i64,
    #[diesel(sql_type = Integer)]
    schema_version: i32,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Timestamptz)]
    taken_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Saved {
    #[diesel(sql_type = BigInt)]
    actual: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    saved: bool,
}

impl EventStore {
    /// Saves a snapshot. An older snapshot of the stream is replaced; a newer
    /// one is kept (the call then does nothing). Refused when the stream has
    /// not reached the snapshot's version.
    pub async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        crate::append::validate_stream_id(&snapshot.stream_id)?;
        let schema_version = i32::try_from(snapshot.schema_version)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| {
                EventStoreError::Invalid(crate::error::InvalidAppend::SchemaVersion(
                    snapshot.stream_id.clone(),
                ))
            })?;
        let mut conn = self.pool().get().await?;
        let row: Saved = crate::prepared(
            "WITH current AS ( \
                 SELECT coalesce(max(stream_version), 0) AS v FROM events WHERE stream_id = $1 \
             ), saved AS ( \
                 INSERT INTO snapshots (stream_id, stream_type, stream_version, schema_version, state) \
                 SELECT $1, $2, $3, $4, $5::jsonb FROM current WHERE current.v >= $3 AND $3 > 0 \
                 ON CONFLICT (stream_id) DO UPDATE SET \
                     stream_type = excluded.stream_type, stream_version = excluded.stream_version, \
                     schema_version = excluded.schema_version, state = excluded.state, taken_at = now() \
                 WHERE snapshots.stream_version <= excluded.stream_version \
                 RETURNING 1 \
             ) \
             SELECT (SELECT v FROM current) AS actual, EXISTS (SELECT 1 FROM saved) AS saved",
        )
        .bind::<Text, _>(&snapshot.stream_id)
        .bind::<Text, _>(&snapshot.stream_type)
        .bind::<BigInt, _>(to_i64(snapshot.stream_version))
        .bind::<Integer, _>(schema_version)
        .bind::<Text, _>(snapshot.state.to_string())
        .get_result(&mut conn)
        .await?;
        let actual = to_u64(row.actual);
        if !row.saved && (snapshot.stream_version > actual || snapshot.stream_version == 0) {
            return Err(EventStoreError::SnapshotAheadOfStream {
                stream_id: snapshot.stream_id.clone(),
                version: snapshot.stream_version,
                actual,
            });
        }
        Ok(())
    }

    /// The latest snapshot of a stream, if any.
    pub async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>> {
        let mut conn = self.pool().get().await?;
        let row: Option<SnapshotRow> = crate::prepared(
            "SELECT stream_id, stream_type, stream_version, schema_version, state::text AS state, \
             taken_at FROM snapshots WHERE stream_id = $1",
        )
        .bind::<Text, _>(stream_id)
        .get_result(&mut conn)
        .await
        .optional()?;
        row.map(|r| {
            let state = serde_json::from_str(&r.state).map_err(|e| EventStoreError::Corrupt {
                position: 0,
                reason: format!("snapshot of {:?}: {e}", r.stream_id),
            })?;
            Ok(Snapshot {
                stream_id: r.stream_id,
                stream_type: r.stream_type,
                stream_version: to_u64(r.stream_version),
                schema_version: u32::try_from(r.schema_version).unwrap_or(0),
                state,
                taken_at: Some(r.taken_at),
            })
        })
        .transpose()
    }
}
