//! Small pieces shared by the projectors.

use crate::runner::ProjectionError;

/// Serializes a value for a `jsonb` column.
pub(crate) fn json(v: &impl serde::Serialize) -> Result<String, ProjectionError> {
    serde_json::to_string(v).map_err(|e| ProjectionError::Other(e.to_string()))
}

/// The event, if it belongs to a stream of `stream_type`; other streams'
/// events are not this projector's business.
pub(crate) fn decode_if<E: serde::de::DeserializeOwned>(
    e: &manager_events::RecordedEvent,
    stream_type: &str,
) -> Result<Option<E>, ProjectionError> {
    if e.stream_type != stream_type {
        return Ok(None);
    }
    manager_events::codec::decode(&e.event_type, &e.payload)
        .map(Some)
        .map_err(|source| ProjectionError::Codec {
            position: e.position,
            source,
        })
}

/// The UUID at the end of a stream id such as `user:<uuid>`.
pub(crate) fn uuid_of(stream_id: &str, prefix: &str) -> Result<uuid::Uuid, ProjectionError> {
    stream_id
        .strip_prefix(prefix)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProjectionError::Other(format!("bad stream id {stream_id:?}")))
}

/// Implements [`crate::Projector`] for a projector that applies events one by
/// one with `async fn apply_one(conn, event)`.
macro_rules! per_event_projector {
    ($ty:ty, $name:literal, [$($table:literal),+ $(,)?], $apply_one:path) => {
        impl $crate::runner::Projector for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn tables(&self) -> &'static [&'static str] {
                &[$($table),+]
            }

            fn apply<'a>(
                &'a self,
                conn: &'a mut diesel_async::AsyncPgConnection,
                events: &'a [manager_events::RecordedEvent],
            ) -> futures::future::BoxFuture<'a, Result<(), $crate::runner::ProjectionError>> {
                futures::FutureExt::boxed(async move {
                    for e in events {
                        $apply_one(conn, e).await?;
                    }
                    Ok(())
                })
            }
        }
    };
}

pub(crate) use per_event_projector;
